//! tbc back ends: implementations of the compiler's [`compiler::driver::Target`], found by name
//! in [`registry`]. [`cpu`] lowers loop kernels through MLIR (melior) → LLVM IR → object code
//! (inkwell, [`toolchain`]) and links the trainer ([`link`]).

pub mod ascend;
pub mod cpu;
pub mod gpu;
pub mod link;
pub mod registry;
pub mod scalar;
pub mod toolchain;

pub use registry::{target_by_name, TargetOptions, TARGET_NAMES};

/// Whether `name` can be a kernel symbol (`[A-Za-z_][A-Za-z0-9_]*`): kernel names become
/// MLIR, object and PTX symbols.
pub(crate) fn is_symbol(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub use toolchain::{
    compile_llvm_ir_to_object, lower_mlir, mlir_to_llvm_ir, mlir_to_llvm_ir_with_pipeline,
    ToolchainError, CPU_BUFFERIZE_PASSES, CPU_LOOPS_PIPELINE, CPU_TO_LLVM_PASSES, DEFAULT_CPU,
    LLVM_OPT_PIPELINE,
};
