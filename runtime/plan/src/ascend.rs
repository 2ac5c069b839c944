//! The Ascend kernel table of a trainer compiled with `--target ascend`: per loop kernel (named
//! as in the plan's `Step::Loop`) its launcher in the kernel library the trainer loads at run
//! time (`libtbc_ascend_kernels.so`, built from the project `tbc compile` writes beside the
//! trainer), the vector cores it runs on and its buffer count.
//!
//! A launcher is `int tbc_ascend_<kernel>(void* stream, uint8_t** args)`: `args` are the
//! kernel's buffers as device addresses (its inputs, then its outputs); 0 means launched.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The file name of the kernel library the project builds.
pub const KERNEL_LIBRARY_FILE: &str = "libtbc_ascend_kernels.so";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AscendKernelLibrary {
    /// The SoC the kernels were planned for (`ascend910b`, `ascend910`).
    pub soc: String,
    pub kernels: BTreeMap<String, AscendKernelSpec>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AscendKernelSpec {
    /// The launcher's symbol in the kernel library.
    pub launcher: String,
    /// Vector cores (blocks) of one launch.
    pub block_dim: u32,
    /// Buffers it takes: its inputs, then its outputs.
    pub buffers: usize,
}
