//! The host executor on hand-made plans: a GEMM with a bias epilogue, a copy step, collectives in
//! a group of one, and GEMM precisions the host does not have.

use plan::exec::{
    BufferRef, CollectiveOp, Donation, ExecutablePlan, GemmEpilogue, GemmPrecision, Place, Slot,
    Step, StepDefaults,
};
use plan::ElemType;
use runtime::exec::{KernelArg, LoopKernels, Runner};

struct NoKernels;

impl LoopKernels for NoKernels {
    unsafe fn run(&self, s: &str, _: &[KernelArg], _: &[KernelArg]) -> Result<(), String> {
        Err(format!("no kernel {s}"))
    }
}

fn buf(place: Place, shape: &[usize]) -> BufferRef {
    BufferRef {
        place,
        elem: ElemType::F32,
        shape: shape.to_vec(),
    }
}

fn slot(name: &str, shape: &[usize]) -> Slot {
    Slot {
        name: name.into(),
        elem: ElemType::F32,
        shape: shape.to_vec(),
    }
}

/// `c = a·b + bias` into the arena, all-reduced (one device) into a second arena buffer, copied
/// to output 0; output 1 is a copy of input `bias`.
fn plan(precision: GemmPrecision, collective: CollectiveOp) -> ExecutablePlan {
    let (m, n, k) = (3, 4, 2);
    let c = buf(Place::Arena(0), &[m, n]);
    let reduced = buf(Place::Arena(m * n * 4), &[m, n]);
    ExecutablePlan {
        name: "t".into(),
        arena_bytes: 2 * m * n * 4,
        inputs: vec![slot("a", &[m, k]), slot("b", &[k, n]), slot("bias", &[n])],
        outputs: vec![slot("c", &[m, n]), slot("bias_out", &[n])],
        steps: vec![
            Step::Gemm {
                a: buf(Place::Input(0), &[m, k]),
                b: buf(Place::Input(1), &[k, n]),
                c: c.clone(),
                transpose_a: false,
                transpose_b: false,
                batch: 1,
                m,
                n,
                k,
                precision,
                epilogue: Some(GemmEpilogue::Bias {
                    bias: buf(Place::Input(2), &[n]),
                }),
            },
            Step::Collective {
                op: collective,
                inputs: vec![c],
                outputs: vec![reduced.clone()],
            },
            Step::Copy {
                src: reduced,
                dst: buf(Place::Output(0), &[m, n]),
            },
            Step::Copy {
                src: buf(Place::Input(2), &[n]),
                dst: buf(Place::Output(1), &[n]),
            },
        ],
        defaults: StepDefaults {
            loss_scale: 1.0,
            lr0: 0.0,
            end_lr: 0.0,
        },
        donations: vec![Donation {
            output: 1,
            input: 2,
        }],
    }
}

fn bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn floats(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn gemm_bias_collective_and_copy_steps() {
    let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // 3x2
    let b = [1.0, 0.5, -1.0, 2.0, 0.0, 1.0, 3.0, -2.0]; // 2x4
    let bias = [0.25, -0.5, 1.0, 10.0];
    let mut want = Vec::new();
    for i in 0..3 {
        for j in 0..4 {
            want.push(a[i * 2] * b[j] + a[i * 2 + 1] * b[4 + j] + bias[j]);
        }
    }
    let uniform = GemmPrecision::uniform(ElemType::F32);
    for op in [
        CollectiveOp::AllReduceMean,
        CollectiveOp::Broadcast { root: 0 },
    ] {
        let p = plan(uniform, op);
        let p = ExecutablePlan::from_json(&p.to_json()).unwrap();
        let mut r = Runner::new(p, &NoKernels);
        let (a, b, bias) = (bytes(&a), bytes(&b), bytes(&bias));
        let outs = r.run(&[&a, &b, &bias]).unwrap();
        assert_eq!(floats(outs[0].as_slice()), want);
        assert_eq!(outs[1].as_slice(), bias.as_slice());
    }
}

#[test]
fn what_the_host_cannot_do_is_an_error() {
    let zeros = |n: usize| vec![0u8; n * 4];
    let (a, b, bias) = (zeros(6), zeros(8), zeros(4));
    let bf16 = GemmPrecision {
        input: ElemType::F32,
        compute: ElemType::BF16,
        accumulate: ElemType::F32,
    };
    let mut r = Runner::new(plan(bf16, CollectiveOp::AllReduceMean), &NoKernels);
    let e = r.run(&[&a, &b, &bias]).err().unwrap().to_string();
    assert!(e.contains("GEMM precision") && e.contains("BF16"), "{e}");
    let uniform = GemmPrecision::uniform(ElemType::F32);
    let mut r = Runner::new(
        plan(uniform, CollectiveOp::Broadcast { root: 1 }),
        &NoKernels,
    );
    let e = r.run(&[&a, &b, &bias]).err().unwrap().to_string();
    assert!(
        e.contains("broadcast from device 1 in a group of one"),
        "{e}"
    );
}
