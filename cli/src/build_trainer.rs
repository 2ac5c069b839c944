//! The back half of `tbc compile --target cpu`: lower every loop kernel through MLIR (`lower`),
//! compile to objects (`codegen`) and link them with the glue (kernel table, serialized plans,
//! `main`) and the runtime library into one trainer executable (`link`).

use anyhow::{anyhow, bail, Context, Result};
use ir::Graph;
use runtime::manifest::{Manifest, TrainerBundle};
use runtime::plan::ExecutablePlan;
use std::path::{Path, PathBuf};
use targets::cpu::{
    compile_loop_kernels, lower_kernel_func_with, module_text, CpuOptions, Schedule,
};
use targets::link::{glue_object, link_executable};

/// One compiled phase: its executable plan and its loop kernels as standalone graphs.
pub struct PhaseArtifacts {
    pub plan: ExecutablePlan,
    pub kernels: Vec<(String, Graph)>,
}

/// The MLIR module of a phase's loop kernels (the `lower` stage's text).
pub fn lower_text(a: &PhaseArtifacts) -> Result<String> {
    let funcs = a
        .kernels
        .iter()
        .map(|(name, g)| lower_kernel_func_with(g, name, &CpuOptions::default().lower))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(module_text(&funcs, Schedule::Vectorized))
}

/// The runtime static library: `$TBC_RUNTIME_LIB`, or `libruntime.a` next to the tbc
/// executable.
pub fn runtime_library() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("TBC_RUNTIME_LIB") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("TBC_RUNTIME_LIB={} is not a file", p.display());
        }
        return Ok(p);
    }
    let exe = std::env::current_exe().context("cannot locate the tbc executable")?;
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join("libruntime.a"))
        .collect();
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        anyhow!(
            "cannot find the trainer runtime library (looked for {}); build it with `cargo build --release -p runtime` or set TBC_RUNTIME_LIB",
            candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        )
    })
}

/// Compiles every phase's kernels and links the trainer executable at `out`.
pub fn build_trainer(
    phases: &[PhaseArtifacts],
    manifest: Manifest,
    cpu: &str,
    out: &Path,
) -> Result<()> {
    let runtime_lib = runtime_library()?;
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let mut objects = Vec::new();
    let options = CpuOptions {
        cpu: cpu.to_string(),
        ..CpuOptions::default()
    };
    let mut symbols: Vec<&str> = Vec::new();
    for a in phases {
        let refs: Vec<(&Graph, &str)> = a.kernels.iter().map(|(n, g)| (g, n.as_str())).collect();
        let compiled = compile_loop_kernels(&refs, &options)?;
        let path = dir.path().join(format!("{}.o", a.plan.name));
        std::fs::write(&path, compiled.object)?;
        objects.push(path);
        symbols.extend(a.kernels.iter().map(|(n, _)| n.as_str()));
    }
    let bundle = TrainerBundle {
        manifest,
        plans: phases.iter().map(|a| a.plan.clone()).collect(),
    };
    let json = serde_json::to_vec(&bundle)?;
    let glue = glue_object(&symbols, &[("tbc_plans", &json)], cpu)?;
    let glue_path = dir.path().join("glue.o");
    std::fs::write(&glue_path, glue)?;
    objects.push(glue_path);
    link_executable(&objects, &[runtime_lib], out)?;
    Ok(())
}
