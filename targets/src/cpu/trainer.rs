//! The `cpu` [`Target`]: lower every loop kernel through MLIR (`lower`), compile to host objects
//! (`codegen`) and link them with the glue (kernel table, serialized plans, `main`) and the
//! runtime library into one trainer executable (`link`).

use super::{compile_loop_kernels, lower_kernel_func_with, module_text, CpuOptions, Schedule};
use crate::link::{glue_object, link_executable};
use compiler::driver::{PhaseArtifacts, Target, TargetError, TargetNeeds};
use compiler::fusion::KernelKind;
use ir::{DType, Graph};
use plan::abi::PLANS_BLOB;
use plan::manifest::TrainerBundle;
use std::path::Path;

/// The host CPU, generating code for the LLVM CPU `cpu` (`x86-64-v3`, `native`, …).
pub struct CpuTarget {
    pub cpu: String,
}

fn failed(e: impl std::fmt::Display) -> TargetError {
    TargetError::Failed(e.to_string())
}

impl CpuTarget {
    fn options(&self) -> CpuOptions {
        CpuOptions {
            cpu: self.cpu.clone(),
            ..CpuOptions::default()
        }
    }
}

impl Target for CpuTarget {
    fn name(&self) -> &'static str {
        "cpu"
    }

    /// GEMMs, gathers and scatter-adds run in the runtime (the `gemm` crate, the bf16 GEMMs of
    /// `runtime::exec::bf16` and plain loops); 64-byte buffers suit AVX-512 loads; f32 (and f64
    /// for tests) throughout, or bf16 GEMMs with `--precision bf16`. No f16: few CPUs multiply
    /// it natively (AVX512-FP16), and none of this project's machines.
    fn needs(&self) -> TargetNeeds {
        TargetNeeds {
            library_kernels: KernelKind::LIBRARY.to_vec(),
            alignment: 64,
            precisions: vec![DType::F32, DType::F64, DType::BF16],
        }
    }

    fn lower(&self, a: &PhaseArtifacts) -> Result<String, TargetError> {
        let funcs = a
            .kernels
            .iter()
            .map(|(name, g)| lower_kernel_func_with(g, name, &self.options().lower))
            .collect::<Result<Vec<_>, _>>()
            .map_err(failed)?;
        Ok(module_text(&funcs, Schedule::Vectorized))
    }

    fn codegen(&self, a: &PhaseArtifacts) -> Result<String, TargetError> {
        crate::toolchain::mlir_to_llvm_ir_with_pipeline(
            &self.lower(a)?,
            &super::pipeline(Schedule::Vectorized),
        )
        .map_err(failed)
    }

    fn link(
        &self,
        phases: &[PhaseArtifacts],
        bundle: &TrainerBundle,
        out: &Path,
    ) -> Result<(), TargetError> {
        let runtime_lib = crate::link::runtime_library().map_err(failed)?;
        let dir = tempfile::tempdir()
            .map_err(|e| failed(format!("cannot create a temporary directory: {e}")))?;
        let mut objects = Vec::new();
        let options = self.options();
        let mut symbols: Vec<&str> = Vec::new();
        for a in phases {
            let refs: Vec<(&Graph, &str)> =
                a.kernels.iter().map(|(n, g)| (g, n.as_str())).collect();
            let compiled = compile_loop_kernels(&refs, &options).map_err(failed)?;
            let path = dir.path().join(format!("{}.o", a.plan.name));
            write(&path, &compiled.object)?;
            objects.push(path);
            symbols.extend(a.kernels.iter().map(|(n, _)| n.as_str()));
        }
        let json = serde_json::to_vec(bundle).map_err(failed)?;
        let glue = glue_object(&symbols, &[(PLANS_BLOB, &json)], &self.cpu).map_err(failed)?;
        let glue_path = dir.path().join("glue.o");
        write(&glue_path, &glue)?;
        objects.push(glue_path);
        link_executable(&objects, &[runtime_lib], out).map_err(failed)
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), TargetError> {
    std::fs::write(path, bytes).map_err(|e| failed(format!("cannot write {}: {e}", path.display())))
}
