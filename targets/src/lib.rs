//! tbc back ends.
//!
//! For now this crate holds only [`toolchain`], the end-to-end proof of the
//! MLIR (melior) → LLVM IR → object code (inkwell) path that the `cpu`, `gpu`
//! and `ascend` back ends will build on.

pub mod cpu;
pub mod link;
pub mod toolchain;

pub use toolchain::{
    compile_llvm_ir_to_object, lower_mlir, mlir_to_llvm_ir, mlir_to_llvm_ir_with_pipeline,
    ToolchainError, CPU_BUFFERIZE_PASSES, CPU_LOOPS_PIPELINE, CPU_TO_LLVM_PASSES, DEFAULT_CPU,
    LLVM_OPT_PIPELINE,
};
