//! From the fused, planned graph to the runtime's [`ExecutablePlan`]: every kernel becomes a step
//! over buffer references (graph input, graph output or arena offset). Loop kernels are named
//! `<phase>_k<index>`, the symbol their generated code will have.

use crate::frontend::preset::{Phase, Preset};
use crate::fusion::{Fusion, KernelKind};
use crate::plan::{Location, MemoryPlan};
pub use ::plan::abi::loop_symbol;
use ::plan::exec::{
    BufferRef, CollectiveOp, Donation, ExecutablePlan, GemmPrecision, Place, Slot, Step,
    StepDefaults,
};
use ::plan::names;
use ir::{Graph, Op, ValueId};

/// The preset's defaults for a phase: initial loss scale (1 without scaling) and base LRs.
pub fn step_defaults(preset: &Preset, phase: Phase) -> StepDefaults {
    match preset.phase(phase) {
        Some(c) => StepDefaults {
            loss_scale: c.loss_scale.map_or(1.0, |l| l.init),
            lr0: c.lr,
            end_lr: c.end_lr,
        },
        None => StepDefaults {
            loss_scale: 1.0,
            lr0: 0.0,
            end_lr: 0.0,
        },
    }
}

pub fn executable_plan(
    g: &Graph,
    fusion: &Fusion,
    mem: &MemoryPlan,
    defaults: StepDefaults,
) -> ExecutablePlan {
    let buf = |v: ValueId| {
        let place = match mem.location[v.index()].expect("materialized value") {
            Location::Input(i) => Place::Input(i),
            Location::Output(i) => Place::Output(i),
            Location::Arena { offset } => Place::Arena(offset),
        };
        let t = g.ty(v);
        BufferRef {
            place,
            elem: t.dtype,
            shape: t.shape.clone(),
        }
    };
    let slot = |name: &str, v: ValueId| {
        let t = g.ty(v);
        Slot {
            name: name.to_string(),
            elem: t.dtype,
            shape: t.shape.clone(),
        }
    };
    let steps = fusion
        .kernels
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let node = g.node(k.nodes[0]);
            match k.kind {
                KernelKind::Loop => Step::Loop {
                    symbol: loop_symbol(&g.name, i),
                    inputs: k.inputs.iter().map(|&v| buf(v)).collect(),
                    outputs: k.outputs.iter().map(|&v| buf(v)).collect(),
                },
                KernelKind::Gemm => {
                    let Op::MatMul {
                        transpose_a,
                        transpose_b,
                    } = node.op
                    else {
                        unreachable!("gemm kernels hold one matmul")
                    };
                    let (a, b) = (node.inputs[0], node.inputs[1]);
                    let sa = &g.ty(a).shape;
                    let r = sa.len();
                    let k_dim = if transpose_a { sa[r - 2] } else { sa[r - 1] };
                    let out = &node.ty.shape;
                    Step::Gemm {
                        a: buf(a),
                        b: buf(b),
                        c: buf(k.nodes[0]),
                        transpose_a,
                        transpose_b,
                        batch: out[..r - 2].iter().product(),
                        m: out[r - 2],
                        n: out[r - 1],
                        k: k_dim,
                        precision: gemm_precision(node.ty.dtype),
                        epilogue: None,
                    }
                }
                KernelKind::Gather => Step::Gather {
                    table: buf(node.inputs[0]),
                    indices: buf(node.inputs[1]),
                    out: buf(k.nodes[0]),
                },
                KernelKind::ScatterAdd => Step::ScatterAdd {
                    indices: buf(node.inputs[0]),
                    updates: buf(node.inputs[1]),
                    out: buf(k.nodes[0]),
                },
                KernelKind::Collective => Step::Collective {
                    op: CollectiveOp::AllReduceMean,
                    inputs: k
                        .outputs
                        .iter()
                        .map(|&v| buf(g.node(v).inputs[0]))
                        .collect(),
                    outputs: k.outputs.iter().map(|&v| buf(v)).collect(),
                },
            }
        })
        .collect::<Vec<Step>>();
    // An output that equals an input or another output is copied once the steps are done.
    let mut steps = steps;
    for (i, (_, v)) in g.outputs.iter().enumerate() {
        let src = buf(*v);
        if src.place != Place::Output(i) {
            let dst = BufferRef {
                place: Place::Output(i),
                ..src.clone()
            };
            steps.push(Step::Copy { src, dst });
        }
    }
    let inputs: Vec<Slot> = g.inputs().map(|(n, v)| slot(n, v)).collect();
    let outputs: Vec<Slot> = g.outputs.iter().map(|(n, v)| slot(n, *v)).collect();
    ExecutablePlan {
        name: g.name.clone(),
        arena_bytes: mem.arena_bytes,
        donations: donations(&inputs, &outputs),
        inputs,
        outputs,
        steps,
        defaults,
    }
}

/// Which outputs become which inputs next step: `param.X` the trained model's `X` (the student,
/// or the teacher when fine-tuning: the model whose every `X` is an input), Adam moments and
/// `state.*` the input of the same name.
pub fn donations(inputs: &[Slot], outputs: &[Slot]) -> Vec<Donation> {
    let input = |name: &str| inputs.iter().position(|s| s.name == name);
    let params: Vec<&str> = outputs
        .iter()
        .filter_map(|s| s.name.strip_prefix(names::PARAM_OUTPUT_PREFIX))
        .collect();
    let trained = names::MODEL_PREFIXES.into_iter().find(|p| {
        !params.is_empty() && params.iter().all(|n| input(&format!("{p}.{n}")).is_some())
    });
    outputs
        .iter()
        .enumerate()
        .filter_map(|(o, s)| {
            let target = match s.name.strip_prefix(names::PARAM_OUTPUT_PREFIX) {
                Some(n) => format!("{}.{n}", trained?),
                None if names::is_carried_state(&s.name) => s.name.clone(),
                None => return None,
            };
            input(&target).map(|i| Donation {
                output: o,
                input: i,
            })
        })
        .collect()
}

/// A GEMM's precision from its result type: f32 and f64 throughout; 16-bit operands and result
/// (the mixed-precision pass) multiply exactly and accumulate in f32.
fn gemm_precision(d: ir::DType) -> GemmPrecision {
    match d {
        ir::DType::F16 | ir::DType::BF16 => GemmPrecision {
            input: d,
            compute: d,
            accumulate: ir::DType::F32,
        },
        _ => GemmPrecision::uniform(d),
    }
}
