//! The GPU kernel library of a trainer compiled with `--target gpu`: one PTX module with every
//! kernel entry, and per kernel symbol the launches that run it in order and the workspace
//! buffers it needs between them. Loop kernels are named as in the plan's `Step::Loop`; the
//! gather and scatter-add steps' kernels by [`TableKernel::symbol`].
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

/// What a gather or scatter-add step of a plan runs on the GPU: a library kernel built for its
/// table shape, index count and element type (shared by the compiler, which builds one per
/// distinct step, and the runtime, which finds it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableKernel {
    /// `out[i, :] = table[idx[i], :]`, or `out = 0; out[idx[i], :] += upd[i, :]`.
    pub scatter_add: bool,
    /// The table (gather) or the result (scatter-add): `rows × row` elements of `elem`.
    pub rows: usize,
    pub row: usize,
    /// Indices.
    pub n: usize,
    pub elem: ElemType,
}

impl TableKernel {
    /// The kernel of `step`, when it is a gather or scatter-add.
    pub fn of(step: &crate::exec::Step) -> Option<TableKernel> {
        use crate::exec::Step;
        let (scatter_add, table, indices) = match step {
            Step::Gather { table, indices, .. } => (false, table, indices),
            Step::ScatterAdd { indices, out, .. } => (true, out, indices),
            _ => return None,
        };
        Some(TableKernel {
            scatter_add,
            rows: table.shape[0],
            row: table.shape[1..].iter().product(),
            n: indices.numel(),
            elem: table.elem,
        })
    }

    /// Its symbol in the kernel library.
    pub fn symbol(&self) -> String {
        let op = if self.scatter_add {
            "scatter_add"
        } else {
            "gather"
        };
        format!("{op}_{}x{}_n{}_{}", self.rows, self.row, self.n, self.elem)
    }
}
