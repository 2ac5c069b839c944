//! The runtime of the trainer executable. It shares only the serialized [`plan`] format with the
//! compiler (no IR, no MLIR, no LLVM): a list of steps over buffers that live in graph inputs,
//! graph outputs or one static arena.

pub mod checkpoint;
pub mod data;
pub mod device;
pub mod dist;
pub mod exec;
pub mod flags;
pub mod hf;
pub mod init;
pub mod interrupt;
pub mod metrics;
pub mod step_io;
pub mod temp_files;
pub mod tensor_io;
pub mod tokenizer;
pub mod train;
pub mod trainer;
