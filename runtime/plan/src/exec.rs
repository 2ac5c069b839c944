//! The executable plan: what the compiler hands the runtime for one phase graph. Serialized with
//! serde (JSON) and embedded in the trainer executable.

use crate::ElemType;
use serde::{Deserialize, Serialize};

/// Where a buffer's bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Place {
    /// Graph input `i` (owned by the caller).
    Input(usize),
    /// Graph output `i` (allocated by the runtime).
    Output(usize),
    /// The arena, at this byte offset.
    Arena(usize),
}

/// A typed, shaped, contiguous view of bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BufferRef {
    pub place: Place,
    pub elem: ElemType,
    pub shape: Vec<usize>,
}

impl BufferRef {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn bytes(&self) -> usize {
        self.numel() * self.elem.size_bytes()
    }
}

/// A named graph input or output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    pub name: String,
    pub elem: ElemType,
    pub shape: Vec<usize>,
}

impl Slot {
    /// Bytes of the slot's tensor.
    pub fn bytes(&self) -> usize {
        self.shape.iter().product::<usize>() * self.elem.size_bytes()
    }

    /// Its type as messages write it: `f32[4,16]`.
    pub fn type_string(&self) -> String {
        let dims: Vec<String> = self.shape.iter().map(|d| d.to_string()).collect();
        format!("{}[{}]", self.elem, dims.join(","))
    }
}

/// One unit of work, in execution order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// A generated loop kernel: `symbol(inputs…, outputs…)`.
    Loop {
        symbol: String,
        inputs: Vec<BufferRef>,
        outputs: Vec<BufferRef>,
    },
    /// `c[b] = op(a[b]) · op(bm[b])` (+ the epilogue) for every batch index, row-major.
    Gemm {
        a: BufferRef,
        b: BufferRef,
        c: BufferRef,
        transpose_a: bool,
        transpose_b: bool,
        batch: usize,
        m: usize,
        n: usize,
        k: usize,
        precision: GemmPrecision,
        epilogue: Option<GemmEpilogue>,
    },
    /// `out[i, :] = table[indices[i], :]`.
    Gather {
        table: BufferRef,
        indices: BufferRef,
        out: BufferRef,
    },
    /// `out = 0; out[indices[i], :] += updates[i, :]`.
    ScatterAdd {
        indices: BufferRef,
        updates: BufferRef,
        out: BufferRef,
    },
    /// `dst = src`, same element type and size (an output that equals an input or another
    /// output is filled this way at the end of a step).
    Copy { src: BufferRef, dst: BufferRef },
    /// A collective over the devices of a data-parallel group: `outputs[i]` is `op` of
    /// `inputs[i]` (same type and shape), all of them exchanged as one flat buffer.
    Collective {
        op: CollectiveOp,
        inputs: Vec<BufferRef>,
        outputs: Vec<BufferRef>,
    },
}

/// Element types of a GEMM: of the operands, of the multiplications, of the accumulator.
/// `c` has the operands' type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GemmPrecision {
    pub input: ElemType,
    pub compute: ElemType,
    pub accumulate: ElemType,
}

impl GemmPrecision {
    /// Everything in `e` (f32 or f64 GEMMs).
    pub fn uniform(e: ElemType) -> GemmPrecision {
        GemmPrecision {
            input: e,
            compute: e,
            accumulate: e,
        }
    }
}

/// What a GEMM applies to its result before writing `c`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GemmEpilogue {
    /// `c[.., i, j] += bias[j]`.
    Bias { bias: BufferRef },
}

/// Collective operations of data-parallel training.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CollectiveOp {
    /// Every device gets the element-wise mean over the group.
    AllReduceMean,
    /// Every device gets device `root`'s values.
    Broadcast { root: usize },
}

/// Values a step uses when the user does not give them (from the compile-time preset).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepDefaults {
    pub loss_scale: f64,
    pub lr0: f64,
    pub end_lr: f64,
}

/// Everything the runtime needs to run one phase graph.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecutablePlan {
    pub name: String,
    pub arena_bytes: usize,
    pub inputs: Vec<Slot>,
    pub outputs: Vec<Slot>,
    pub steps: Vec<Step>,
    pub defaults: StepDefaults,
    /// State carried from one step to the next: after a step, each donated output becomes the
    /// input it names (new parameters, Adam moments, loss-scale and dropout state).
    pub donations: Vec<Donation>,
}

/// Output `output` of a step is input `input` of the next one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Donation {
    pub output: usize,
    pub input: usize,
}

impl ExecutablePlan {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plans serialize")
    }

    pub fn from_json(s: &str) -> Result<ExecutablePlan, serde_json::Error> {
        serde_json::from_str(s)
    }
}
