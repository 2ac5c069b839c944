//! The `gpu` [`Target`]: every loop kernel as `gpu`-dialect MLIR (`lower`) and PTX (`codegen`,
//! `--emit ptx DIR`); `link` builds the trainer's GPU kernel library (every loop kernel of every
//! phase, a gather or scatter-add kernel per distinct step shape, one PTX module) into the
//! bundle and links it with the runtime, which runs it on its CUDA device.

use super::{build_all, compile_ptx, gpu_module_text, launch_table, GpuKernel};
use compiler::driver::{PhaseArtifacts, Target, TargetError, TargetNeeds};
use compiler::fusion::KernelKind;
use ir::{DType, Graph};
use plan::manifest::TrainerBundle;
use std::path::{Path, PathBuf};

/// NVIDIA GPUs, generating PTX for `arch` (`sm_80`, `sm_90`).
pub struct GpuTarget {
    pub arch: String,
}

fn failed(e: impl std::fmt::Display) -> TargetError {
    TargetError::Failed(e.to_string())
}

/// The kernels of one phase built for the GPU.
fn phase_kernels(a: &PhaseArtifacts) -> Result<Vec<GpuKernel>, TargetError> {
    let refs: Vec<(&Graph, &str)> = a.kernels.iter().map(|(n, g)| (g, n.as_str())).collect();
    build_all(&refs).map_err(failed)
}

/// The launch table of `kernels` as JSON: per kernel its buffers (inputs, outputs, workspace)
/// and its launches in order — what a runtime needs besides the PTX.
pub fn launch_table_json(kernels: &[GpuKernel]) -> serde_json::Value {
    let list: Vec<serde_json::Value> = kernels
        .iter()
        .map(|k| {
            serde_json::json!({
                "kernel": k.name,
                "inputs": k.inputs,
                "outputs": k.outputs,
                "buffers": k.params.iter().map(|p| serde_json::json!({
                    "dtype": p.dtype.name(),
                    "elements": p.len,
                })).collect::<Vec<_>>(),
                "launches": k.launches.iter().map(|l| serde_json::json!({
                    "entry": l.entry,
                    "grid": l.grid,
                    "block": l.threads,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::Value::Array(list)
}

impl Target for GpuTarget {
    fn name(&self) -> &'static str {
        "gpu"
    }

    /// GEMMs through cuBLASLt, gathers and scatter-adds as runtime kernels; 256-byte buffers
    /// (cuBLASLt's preferred alignment); f32, and f16/bf16 GEMMs (tensor cores) for
    /// `--precision fp16|bf16`.
    fn needs(&self) -> TargetNeeds {
        TargetNeeds {
            library_kernels: KernelKind::LIBRARY.to_vec(),
            alignment: 256,
            precisions: vec![DType::F32, DType::F16, DType::BF16],
        }
    }

    fn lower(&self, a: &PhaseArtifacts) -> Result<String, TargetError> {
        Ok(gpu_module_text(&phase_kernels(a)?))
    }

    fn codegen(&self, a: &PhaseArtifacts) -> Result<String, TargetError> {
        let kernels = phase_kernels(a)?;
        let ptx = compile_ptx(&gpu_module_text(&kernels), &self.arch).map_err(failed)?;
        Ok(format!("{}{ptx}", launch_table(&kernels)))
    }

    /// `<phase>.ptx` and `<phase>.launches.json` for every phase.
    fn emit(&self, phases: &[PhaseArtifacts], dir: &Path) -> Result<Vec<PathBuf>, TargetError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| failed(format!("cannot create {}: {e}", dir.display())))?;
        let mut written = Vec::new();
        for a in phases {
            let kernels = phase_kernels(a)?;
            let ptx = compile_ptx(&gpu_module_text(&kernels), &self.arch).map_err(failed)?;
            let table =
                serde_json::to_string_pretty(&launch_table_json(&kernels)).map_err(failed)?;
            for (file, text) in [
                (format!("{}.ptx", a.plan.name), ptx),
                (format!("{}.launches.json", a.plan.name), table),
            ] {
                let path = dir.join(file);
                write_atomic(&path, text.as_bytes())?;
                written.push(path);
            }
        }
        Ok(written)
    }

    fn link(
        &self,
        phases: &[PhaseArtifacts],
        bundle: &TrainerBundle,
        out: &Path,
    ) -> Result<(), TargetError> {
        let mut bundle = bundle.clone();
        bundle.gpu = Some(kernel_library(phases, &self.arch)?);
        link_bundle_trainer(&bundle, out)
    }
}

/// The GPU kernel library of `phases`: their loop kernels and a kernel per distinct gather and
/// scatter-add step, in one PTX module for `arch`.
pub fn kernel_library(
    phases: &[PhaseArtifacts],
    arch: &str,
) -> Result<plan::gpu::GpuKernelLibrary, TargetError> {
    let mut kernels = Vec::new();
    for a in phases {
        kernels.extend(phase_kernels(a)?);
    }
    let mut seen = std::collections::BTreeSet::new();
    for step in phases.iter().flat_map(|a| &a.plan.steps) {
        let Some(t) = plan::gpu::TableKernel::of(step) else {
            continue;
        };
        let symbol = t.symbol();
        if !seen.insert(symbol.clone()) {
            continue;
        }
        let build = if t.scatter_add {
            super::library::scatter_add
        } else {
            super::library::gather
        };
        kernels
            .push(build(&symbol, t.rows, t.row, t.n, t.elem, super::Flavor::Gpu).map_err(failed)?);
    }
    let ptx = compile_ptx(&gpu_module_text(&kernels), arch).map_err(failed)?;
    let specs = kernels
        .iter()
        .map(|k| {
            let spec = plan::gpu::GpuKernelSpec {
                launches: k
                    .launches
                    .iter()
                    .map(|l| plan::gpu::GpuLaunch {
                        entry: l.entry.clone(),
                        grid: l.grid as u32,
                        block: l.threads as u32,
                    })
                    .collect(),
                workspace: k
                    .workspace()
                    .iter()
                    .map(|p| plan::gpu::WorkspaceBuffer {
                        elem: p.dtype,
                        elements: p.len,
                    })
                    .collect(),
            };
            (k.name.clone(), spec)
        })
        .collect();
    Ok(plan::gpu::GpuKernelLibrary {
        arch: arch.to_string(),
        ptx,
        kernels: specs,
    })
}
/// Links a trainer whose kernels are not native code (they come with `bundle`, or from a
/// library loaded at run time): the bundle in a glue object, linked with the runtime into `out`.
pub(crate) fn link_bundle_trainer(bundle: &TrainerBundle, out: &Path) -> Result<(), TargetError> {
    let runtime_lib = crate::link::runtime_library().map_err(failed)?;
    let json = serde_json::to_vec(bundle).map_err(failed)?;
    let dir = tempfile::tempdir()
        .map_err(|e| failed(format!("cannot create a temporary directory: {e}")))?;
    let glue = crate::link::glue_object(
        &[],
        &[(plan::abi::PLANS_BLOB, &json)],
        crate::toolchain::DEFAULT_CPU,
    )
    .map_err(failed)?;
    let glue_path = dir.path().join("glue.o");
    std::fs::write(&glue_path, &glue)
        .map_err(|e| failed(format!("cannot write {}: {e}", glue_path.display())))?;
    crate::link::link_executable(&[glue_path], &[runtime_lib], out).map_err(failed)
}

/// Writes `bytes` to `path` through a temporary in the same directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TargetError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| failed(format!("cannot write in {}: {e}", dir.display())))?;
    std::io::Write::write_all(&mut tmp, bytes)
        .map_err(|e| failed(format!("cannot write {}: {e}", path.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))
            .map_err(|e| failed(format!("cannot write {}: {e}", path.display())))?;
    }
    tmp.persist(path)
        .map_err(|e| failed(format!("cannot write {}: {}", path.display(), e.error)))?;
    Ok(())
}
