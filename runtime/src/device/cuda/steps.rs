//! What each step of a plan becomes on the GPU, decided without a GPU (so it is tested on
//! every machine): a loop, gather or scatter-add step is its kernel's launches from the
//! trainer's GPU kernel library over the step's buffers followed by the kernel's workspace
//! buffers (the kernel-library ABI), a GEMM a cuBLASLt call of its shape and precision, a copy a
//! device copy; the gradient all-reduce an NCCL all-reduce over one flat buffer (copies on one
//! GPU without NCCL).

use super::gemm::GemmShape;
use plan::exec::{BufferRef, CollectiveOp, ExecutablePlan, GemmPrecision, Step};
use plan::gpu::{GpuKernelLibrary, GpuKernelSpec, TableKernel};

/// Alignment of the workspace buffers (cuBLASLt and the kernels' 16-byte vector accesses).
pub const WORKSPACE_ALIGN: usize = 256;

/// One plan step on the GPU.
pub enum StepSpec {
    Launches {
        /// Entry, grid and block of each launch, in order.
        launches: Vec<(String, u32, u32)>,
        /// The step's buffers in the kernel's parameter order (inputs, then outputs).
        buffers: Vec<BufferRef>,
        /// Byte offsets of the kernel's workspace buffers (its last parameters) in the
        /// executable's workspace.
        workspace: Vec<usize>,
    },
    Gemm {
        shape: GemmShape,
        precision: GemmPrecision,
        a: BufferRef,
        b: BufferRef,
        c: BufferRef,
    },
    Copy {
        src: BufferRef,
        dst: BufferRef,
    },
    /// The gradient all-reduce: `outputs[i]` = the mean of `inputs[i]` over the GPUs of the
    /// job (NCCL, through one flat buffer); on one GPU without NCCL, copies.
    Collective {
        inputs: Vec<BufferRef>,
        outputs: Vec<BufferRef>,
    },
}

/// A plan's steps on the GPU and the workspace bytes its kernels need (the largest of any one
/// kernel: steps run one after another).
pub struct PlannedSteps {
    pub steps: Vec<StepSpec>,
    pub workspace_bytes: usize,
}

fn launches_of(spec: &GpuKernelSpec) -> (Vec<(String, u32, u32)>, Vec<usize>, usize) {
    let mut offsets = Vec::new();
    let mut at = 0usize;
    for w in &spec.workspace {
        offsets.push(at);
        at += w.bytes().next_multiple_of(WORKSPACE_ALIGN);
    }
    let launches = spec
        .launches
        .iter()
        .map(|l| (l.entry.clone(), l.grid, l.block))
        .collect();
    (launches, offsets, at)
}

/// Every step of `plan` on the GPU with `library`'s kernels; an error names a step whose kernel
/// the library lacks or that the GPU does not run.
pub fn plan_steps(
    plan: &ExecutablePlan,
    library: &GpuKernelLibrary,
) -> Result<PlannedSteps, String> {
    let kernel = |symbol: &str| {
        library.kernels.get(symbol).ok_or_else(|| {
            format!(
                "plan \"{}\": kernel {symbol} is not in the trainer's GPU kernel library",
                plan.name
            )
        })
    };
    let mut steps = Vec::with_capacity(plan.steps.len());
    let mut workspace_bytes = 0usize;
    let mut launch = |symbol: &str, buffers: Vec<BufferRef>| -> Result<StepSpec, String> {
        let (launches, workspace, bytes) = launches_of(kernel(symbol)?);
        workspace_bytes = workspace_bytes.max(bytes);
        Ok(StepSpec::Launches {
            launches,
            buffers,
            workspace,
        })
    };
    for step in &plan.steps {
        let spec = match step {
            Step::Loop {
                symbol,
                inputs,
                outputs,
            } => launch(symbol, inputs.iter().chain(outputs).cloned().collect())?,
            Step::Gather {
                table,
                indices,
                out,
            } => launch(
                &TableKernel::of(step).expect("a gather").symbol(),
                vec![table.clone(), indices.clone(), out.clone()],
            )?,
            Step::ScatterAdd {
                indices,
                updates,
                out,
            } => launch(
                &TableKernel::of(step).expect("a scatter-add").symbol(),
                vec![indices.clone(), updates.clone(), out.clone()],
            )?,
            Step::Gemm {
                a,
                b,
                c,
                transpose_a,
                transpose_b,
                batch,
                m,
                n,
                k,
                precision,
                epilogue,
            } => {
                if epilogue.is_some() {
                    return Err(format!(
                        "plan \"{}\": GEMM epilogues are not supported on the GPU yet",
                        plan.name
                    ));
                }
                StepSpec::Gemm {
                    shape: GemmShape {
                        m: *m,
                        n: *n,
                        k: *k,
                        batch: *batch,
                        transpose_a: *transpose_a,
                        transpose_b: *transpose_b,
                    },
                    precision: *precision,
                    a: a.clone(),
                    b: b.clone(),
                    c: c.clone(),
                }
            }
            Step::Copy { src, dst } => StepSpec::Copy {
                src: src.clone(),
                dst: dst.clone(),
            },
            Step::Collective {
                op: CollectiveOp::AllReduceMean,
                inputs,
                outputs,
            } => StepSpec::Collective {
                inputs: inputs.clone(),
                outputs: outputs.clone(),
            },
            Step::Collective { op, .. } => {
                return Err(format!(
                    "plan \"{}\": the GPU runs no {op:?} collective step",
                    plan.name
                ))
            }
        };
        steps.push(spec);
    }
    Ok(PlannedSteps {
        steps,
        workspace_bytes,
    })
}
