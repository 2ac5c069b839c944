//! The targets `tbc compile --target` knows, by name.

use crate::cpu::CpuTarget;
use crate::gpu::target::GpuTarget;
use compiler::driver::Target;

/// Every target name, in the order messages list them.
pub const TARGET_NAMES: [&str; 3] = ["cpu", "gpu", "ascend"];

/// Options of the targets that take any.
#[derive(Clone, Debug)]
pub struct TargetOptions {
    /// The LLVM CPU the `cpu` target generates code for.
    pub cpu: String,
    /// The GPU architecture the `gpu` target generates PTX for (`sm_80`, `sm_90`).
    pub gpu_arch: String,
    /// The Ascend SoC the `ascend` target plans kernels for (`ascend910b`, `ascend910`).
    pub ascend_soc: String,
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
        "ascend" => {
            let soc = crate::ascend::tiling::SOCS
                .iter()
                .find(|s| s.name == options.ascend_soc)
                .ok_or_else(|| {
                    let known: Vec<&str> =
                        crate::ascend::tiling::SOCS.iter().map(|s| s.name).collect();
                    format!(
                        "unknown --ascend-soc '{}' (known: {})",
                        options.ascend_soc,
                        known.join(", ")
                    )
                })?;
            Ok(Box::new(crate::ascend::target::AscendTarget { soc: *soc }))
        }
        other => Err(format!(
            "unknown target '{other}' (known targets: {})",
            TARGET_NAMES.join(", ")
        )),
    }
}
