//! The GPU trainer's contract, checked without a GPU: for every phase of both presets in every
//! precision, the plans (GPU alignment), the kernel library `tbc compile --target gpu` links and
//! the CUDA device's step planning (`runtime::device::cuda::steps`) agree — every step finds its
//! kernel, every launch's PTX entry takes exactly the step's buffers plus the kernel's workspace,
//! every buffer lies inside its slot or the arena and is 256-byte aligned, and every GEMM's
//! shape and types match its buffers.

use compiler::driver::phase_artifacts;
use compiler::executable::step_defaults;
use compiler::frontend::preset::{Phase, Preset};
use compiler::frontend::GraphSpec;
use compiler::passes::mixed_precision::Precision;
use compiler::pipeline::{compile_lowered, Stage};
use plan::exec::{BufferRef, ExecutablePlan, Place};
use runtime::device::cuda::steps::{plan_steps, StepSpec, WORKSPACE_ALIGN};
use std::collections::HashMap;
use tbc_tests::tiny_configs;

/// Parameters of every `.entry` in `ptx`.
fn entry_params(ptx: &str) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for part in ptx.split(".entry ").skip(1) {
        let name = part.split('(').next().unwrap().trim().to_string();
        let params = part.split(')').next().unwrap().matches(".param").count();
        out.insert(name, params);
    }
    out
}

fn check_buffer(plan: &ExecutablePlan, r: &BufferRef, what: &str) {
    match r.place {
        Place::Arena(off) => {
            assert!(
                off + r.bytes() <= plan.arena_bytes,
                "{what}: past the arena"
            );
            assert_eq!(off % 256, 0, "{what}: arena offset {off} not 256-aligned");
        }
        Place::Input(i) => assert_eq!(plan.inputs[i].bytes(), r.bytes(), "{what}: input {i}"),
        Place::Output(i) => assert_eq!(plan.outputs[i].bytes(), r.bytes(), "{what}: output {i}"),
    }
}

#[test]
fn plans_kernel_library_and_cuda_step_planning_agree() {
    for preset in [Preset::mindspore(), Preset::paper()] {
        let (t, s) = tiny_configs(&preset);
        for precision in Precision::ALL {
            let mut seen = HashMap::new();
            let mut artifacts = Vec::new();
            for phase in Phase::ALL {
                let spec = GraphSpec {
                    phase,
                    teacher: &t,
                    student: &s,
                    preset: &preset,
                    batch: 4,
                    seq_len: 16,
                    dtype: ir::DType::F32,
                    precision,
                };
                let lowering = compiler::pipeline::Lowering {
                    alignment: 256,
                    ..Default::default()
                };
                let c = compile_lowered(&spec, Stage::Plan, &[], &lowering, |_, _| {}).unwrap();
                artifacts.push(phase_artifacts(
                    &c,
                    step_defaults(&preset, phase),
                    &mut seen,
                ));
            }
            let library = targets::gpu::target::kernel_library(&artifacts, "sm_80").unwrap();
            let params = entry_params(&library.ptx);
            let (mut launches, mut gemms) = (0, 0);
            for a in &artifacts {
                let plan = &a.plan;
                let planned = plan_steps(plan, &library).unwrap();
                for (i, step) in planned.steps.iter().enumerate() {
                    let what = format!("{} {precision} {} step {i}", preset.name, plan.name);
                    match step {
                        StepSpec::Launches {
                            launches: ls,
                            buffers,
                            workspace,
                        } => {
                            for b in buffers {
                                check_buffer(plan, b, &what);
                            }
                            assert!(workspace.iter().all(|o| o % WORKSPACE_ALIGN == 0));
                            for (entry, grid, block) in ls {
                                assert_eq!(
                                    params.get(entry),
                                    Some(&(buffers.len() + workspace.len())),
                                    "{what}: entry {entry} parameters"
                                );
                                assert!(*grid >= 1 && *block >= 32 && *block <= 1024);
                                launches += 1;
                            }
                        }
                        StepSpec::Gemm {
                            shape,
                            precision: p,
                            a,
                            b,
                            c,
                        } => {
                            for r in [a, b, c] {
                                check_buffer(plan, r, &what);
                                assert_eq!(r.elem, p.input, "{what}: GEMM operand type");
                            }
                            let bmk = shape.batch * shape.m * shape.k;
                            assert_eq!(a.numel(), bmk, "{what}: a");
                            assert_eq!(b.numel(), shape.batch * shape.k * shape.n, "{what}: b");
                            assert_eq!(c.numel(), shape.batch * shape.m * shape.n, "{what}: c");
                            assert_eq!(p.accumulate, ir::DType::F32);
                            let low = precision.gemm_dtype().unwrap_or(ir::DType::F32);
                            assert_eq!(p.input, low, "{what}: GEMM precision");
                            gemms += 1;
                        }
                        StepSpec::Copy { src, dst } => {
                            check_buffer(plan, src, &what);
                            check_buffer(plan, dst, &what);
                            assert_eq!(src.bytes(), dst.bytes());
                        }
                        StepSpec::Collective { inputs, outputs } => {
                            assert_eq!(inputs.len(), outputs.len(), "{what}");
                            for (i, o) in inputs.iter().zip(outputs) {
                                check_buffer(plan, i, &what);
                                check_buffer(plan, o, &what);
                                assert_eq!((i.elem, &i.shape), (o.elem, &o.shape), "{what}");
                                assert_eq!(i.elem, ir::DType::F32, "{what}: f32 gradients");
                            }
                        }
                    }
                }
            }
            println!(
                "{} {precision}: {} kernels in the library, {launches} launches and {gemms} GEMMs planned over 6 phases",
                preset.name,
                library.kernels.len()
            );
        }
    }
}
