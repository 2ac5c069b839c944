//! The targets `tbc compile --target` knows, by name. `ascend` runs the target-neutral stages
//! and stops at its first back-end stage until its issue lands; `gpu` stops at `link`.

use crate::cpu::CpuTarget;
use crate::gpu::target::GpuTarget;
use compiler::driver::{PhaseArtifacts, Target, TargetError, TargetNeeds};
use compiler::fusion::KernelKind;
use ir::DType;
use plan::manifest::TrainerBundle;
use std::path::Path;

/// Every target name, in the order messages list them.
pub const TARGET_NAMES: [&str; 3] = ["cpu", "gpu", "ascend"];

/// Options of the targets that take any.
#[derive(Clone, Debug)]
pub struct TargetOptions {
    /// The LLVM CPU the `cpu` target generates code for.
    pub cpu: String,
    /// The GPU architecture the `gpu` target generates PTX for (`sm_80`, `sm_90`).
    pub gpu_arch: String,
}

/// The target called `name`, or an error that lists the known ones.
pub fn target_by_name(name: &str, options: &TargetOptions) -> Result<Box<dyn Target>, String> {
    match name {
        "cpu" => {
            crate::toolchain::check_cpu_name(&options.cpu)?;
            Ok(Box::new(CpuTarget {
                cpu: options.cpu.clone(),
            }))
        }
        "gpu" => {
            crate::gpu::check_arch(&options.gpu_arch).map_err(|e| e.to_string())?;
            Ok(Box::new(GpuTarget {
                arch: options.gpu_arch.clone(),
            }))
        }
        "ascend" => Ok(Box::new(UnbuiltTarget {
            name: "ascend",
            why: "the Ascend C back end is the Ascend target issue",
            alignment: 32,
        })),
        other => Err(format!(
            "unknown target '{other}' (known targets: {})",
            TARGET_NAMES.join(", ")
        )),
    }
}

/// A target whose back end does not exist yet: its needs shape the target-neutral stages
/// (`--compile-to plan` works), and every back-end stage is a clear error.
struct UnbuiltTarget {
    name: &'static str,
    why: &'static str,
    alignment: usize,
}

impl UnbuiltTarget {
    fn not_built(&self, stage: &'static str) -> TargetError {
        TargetError::NotBuilt {
            target: self.name,
            stage,
            why: self.why,
        }
    }
}

impl Target for UnbuiltTarget {
    fn name(&self) -> &'static str {
        self.name
    }

    fn needs(&self) -> TargetNeeds {
        TargetNeeds {
            library_kernels: KernelKind::LIBRARY.to_vec(),
            alignment: self.alignment,
            precisions: vec![DType::F32, DType::F64],
        }
    }

    fn lower(&self, _: &PhaseArtifacts) -> Result<String, TargetError> {
        Err(self.not_built("lower"))
    }

    fn codegen(&self, _: &PhaseArtifacts) -> Result<String, TargetError> {
        Err(self.not_built("codegen"))
    }

    fn link(&self, _: &[PhaseArtifacts], _: &TrainerBundle, _: &Path) -> Result<(), TargetError> {
        Err(self.not_built("link"))
    }
}
