//! The `ascend` [`Target`]: every loop kernel as an EmitC module (`lower`), as Ascend C
//! (`codegen`), and as a kernel project with launchers and a CMake build for CANN or for our
//! CPU emulation (`--emit ascend-c DIR`, `project.rs`). `link` (`-o DIR`) writes that project
//! and, beside it, the trainer (`DIR/trainer`), whose runtime loads the kernel library the
//! project builds and runs the plans on its Ascend device (ACL, or our stand-in of it).

use super::tiling::AscendSoc;
use super::{build_kernel, emitc_to_cpp, project, AscendKernel, ACL_STANDIN, EMULATION_HEADER};
use crate::gpu::target::{link_bundle_trainer, write_atomic};
use compiler::driver::{PhaseArtifacts, Target, TargetError, TargetNeeds};
use compiler::fusion::KernelKind;
use ir::DType;
use plan::manifest::TrainerBundle;
use std::path::{Path, PathBuf};

/// Ascend NPUs of one SoC (`--ascend-soc`).
pub struct AscendTarget {
    pub soc: AscendSoc,
}

fn failed(e: impl std::fmt::Display) -> TargetError {
    TargetError::Failed(e.to_string())
}

impl AscendTarget {
    /// Every loop kernel of `a`, built for the SoC.
    fn kernels(&self, a: &PhaseArtifacts) -> Result<Vec<AscendKernel>, TargetError> {
        a.kernels
            .iter()
            .map(|(name, g)| build_kernel(g, name, &self.soc).map_err(failed))
            .collect()
    }
}

impl Target for AscendTarget {
    fn name(&self) -> &'static str {
        "ascend"
    }

    /// GEMMs, gathers and scatter-adds as library calls (aclnn on an NPU); 32-byte buffers
    /// (DataCopy's unit); f32, and f16 (`--precision fp16`: f16 tensors in GM, computed in f32
    /// and rounded to f16 after each op, as the interpreter does).
    fn needs(&self) -> TargetNeeds {
        TargetNeeds {
            library_kernels: KernelKind::LIBRARY.to_vec(),
            alignment: 32,
            precisions: vec![DType::F32, DType::F16],
        }
    }

    fn lower(&self, a: &PhaseArtifacts) -> Result<String, TargetError> {
        let mut text = String::new();
        for k in self.kernels(a)? {
            text.push_str(&format!(
                "// {}: {} cores, {} UB bytes\n{}",
                k.name, k.block_dim, k.ub_bytes, k.mlir
            ));
        }
        Ok(text)
    }

    fn codegen(&self, a: &PhaseArtifacts) -> Result<String, TargetError> {
        let mut text = String::new();
        for k in self.kernels(a)? {
            text.push_str(&format!("// {}: {} cores\n", k.name, k.block_dim));
            text.push_str(&emitc_to_cpp(&k.mlir).map_err(failed)?);
        }
        Ok(text)
    }

    /// The kernel project (see `project.rs`).
    fn emit(&self, phases: &[PhaseArtifacts], dir: &Path) -> Result<Vec<PathBuf>, TargetError> {
        Ok(self.project(phases, dir)?.0)
    }

    fn trainer_path(&self, out: &Path) -> PathBuf {
        out.join("trainer")
    }

    /// `out/trainer` beside the kernel project in `out`, its kernel table in the bundle.
    fn link(
        &self,
        phases: &[PhaseArtifacts],
        bundle: &TrainerBundle,
        out: &Path,
    ) -> Result<(), TargetError> {
        if out.is_file() {
            return Err(failed(format!(
                "-o {}: an Ascend trainer is a directory (the trainer and its kernel project), and this is a file",
                out.display()
            )));
        }
        let (_, kernels) = self.project(phases, out)?;
        let mut bundle = bundle.clone();
        bundle.ascend = Some(project::library(&kernels, self.soc.name));
        link_bundle_trainer(&bundle, &self.trainer_path(out))
    }
}

impl AscendTarget {
    /// Writes the kernel project of `phases` into `dir`; returns its files and kernels.
    fn project(
        &self,
        phases: &[PhaseArtifacts],
        dir: &Path,
    ) -> Result<(Vec<PathBuf>, Vec<AscendKernel>), TargetError> {
        let kernel_dir = dir.join("kernels");
        for d in [&kernel_dir, &dir.join("emulation/acl")] {
            std::fs::create_dir_all(d)
                .map_err(|e| failed(format!("cannot create {}: {e}", d.display())))?;
        }
        let mut kernels: Vec<AscendKernel> = Vec::new();
        for a in phases {
            for k in self.kernels(a)? {
                if !kernels.iter().any(|x| x.name == k.name) {
                    kernels.push(k);
                }
            }
        }
        let mut written = Vec::new();
        let mut write = |path: PathBuf, text: &str| -> Result<(), TargetError> {
            write_atomic(&path, text.as_bytes())?;
            written.push(path);
            Ok(())
        };
        for k in &kernels {
            let cpp = emitc_to_cpp(&k.mlir).map_err(failed)?;
            write(kernel_dir.join(format!("{}.cpp", k.name)), &cpp)?;
        }
        // Kernels of an earlier compile into the same DIR would be built into the library too.
        let current: std::collections::HashSet<String> =
            kernels.iter().map(|k| format!("{}.cpp", k.name)).collect();
        let stale = std::fs::read_dir(&kernel_dir)
            .map_err(|e| failed(format!("cannot list {}: {e}", kernel_dir.display())))?
            .flatten()
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.ends_with(".cpp") && !current.contains(&name)
            });
        for e in stale {
            std::fs::remove_file(e.path())
                .map_err(|err| failed(format!("cannot remove {}: {err}", e.path().display())))?;
        }
        let table = serde_json::to_string_pretty(&project::table(&kernels, self.soc.name))
            .map_err(failed)?;
        write(dir.join("kernels.json"), &table)?;
        write(dir.join("launch.cpp"), &project::launcher(&kernels))?;
        write(dir.join("CMakeLists.txt"), &project::cmake(self.soc.name))?;
        write(
            dir.join("README.md"),
            &project::readme(kernels.len(), self.soc.name),
        )?;
        write(dir.join("emulation/kernel_operator.h"), EMULATION_HEADER)?;
        for (file, text) in ACL_STANDIN {
            write(dir.join("emulation/acl").join(file), text)?;
        }
        Ok((written, kernels))
    }
}
