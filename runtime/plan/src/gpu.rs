//! The GPU kernel library of a trainer compiled with `--target gpu`: one PTX module with every
//! kernel entry, and per kernel symbol the launches that run it in order and the workspace
//! buffers it needs between them. Loop kernels are named as in the plan's `Step::Loop`; the
//! gather and scatter-add steps by [`gather_symbol`] and [`scatter_add_symbol`].
//!
//! Every entry takes the kernel's buffers as bare device pointers: its inputs, its outputs, then
//! its workspace buffers (dense, flat; bf16 as its 16-bit pattern, bool as one byte).

use crate::ElemType;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GpuKernelLibrary {
    /// The architecture the PTX was generated for (`sm_80`, `sm_90`).
    pub arch: String,
    /// The PTX text (the driver compiles it for the GPU at load).
    pub ptx: String,
    pub kernels: BTreeMap<String, GpuKernelSpec>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GpuKernelSpec {
    pub launches: Vec<GpuLaunch>,
    pub workspace: Vec<WorkspaceBuffer>,
}

/// One launch: a 1-D grid of 1-D blocks, no dynamic shared memory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuLaunch {
    pub entry: String,
    pub grid: u32,
    pub block: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceBuffer {
    pub elem: ElemType,
    pub elements: usize,
}

impl WorkspaceBuffer {
    pub fn bytes(&self) -> usize {
        self.elements.max(1) * self.elem.size_bytes()
    }
}

/// The kernel of a gather step: `out[i, :] = table[idx[i], :]` over `rows × row` table elements
/// of `elem` and `n` indices.
pub fn gather_symbol(rows: usize, row: usize, n: usize, elem: ElemType) -> String {
    format!("gather_{rows}x{row}_n{n}_{elem}")
}

/// The kernel of a scatter-add step (`out` of `rows × row`, `n` indices).
pub fn scatter_add_symbol(rows: usize, row: usize, n: usize, elem: ElemType) -> String {
    format!("scatter_add_{rows}x{row}_n{n}_{elem}")
}
