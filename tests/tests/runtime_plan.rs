//! The runtime executing the compiler's executable plan (library GEMM / gather / scatter-add in
//! the runtime; loop kernels run by the interpreter behind the `LoopKernels` interface) against
//! the interpreter on the whole graph, for every phase and preset. Also: the plan survives a
//! JSON round trip.

use compiler::exec::kernel_graph;
use compiler::executable::{executable_plan, loop_symbol};
use compiler::frontend::preset::{Phase, Preset};
use compiler::fusion::KernelKind;
use ir::{DType, Data, Graph, Interpreter, Tensor, TensorType};
use runtime::exec::{KernelArg, LoopKernels, Runner};
use runtime::plan::ExecutablePlan;
use std::collections::HashMap;
use tbc_tests::*;

/// Loop kernels run by the reference interpreter.
struct InterpretedKernels {
    graphs: HashMap<String, Graph>,
}

fn dtype_of(e: runtime::plan::ElemType) -> DType {
    use runtime::plan::ElemType as E;
    match e {
        E::F32 => DType::F32,
        E::F16 => DType::F16,
        E::BF16 => DType::BF16,
        E::F64 => DType::F64,
        E::I32 => DType::I32,
        E::I64 => DType::I64,
        E::Bool => DType::Bool,
    }
}

impl LoopKernels for InterpretedKernels {
    unsafe fn run(
        &self,
        symbol: &str,
        inputs: &[KernelArg],
        outputs: &[KernelArg],
    ) -> Result<(), String> {
        let g = self
            .graphs
            .get(symbol)
            .ok_or_else(|| format!("no kernel {symbol}"))?;
        let mut feed = HashMap::new();
        for (i, a) in inputs.iter().enumerate() {
            let ty = TensorType::new(dtype_of(a.elem), a.shape.clone());
            let bytes = std::slice::from_raw_parts(a.ptr, ty.numel() * ty.dtype.size_bytes());
            feed.insert(
                format!("in{i}"),
                Tensor::new(ty.shape.clone(), Data::from_le_bytes(ty.dtype, bytes)),
            );
        }
        let outs = Interpreter::run(g, &feed).map_err(|e| e.to_string())?;
        for ((_, t), a) in outs.iter().zip(outputs) {
            let bytes = t.data.to_le_bytes();
            std::ptr::copy(bytes.as_ptr(), a.ptr, bytes.len());
        }
        Ok(())
    }
}

#[test]
fn runtime_runs_the_executable_plan() {
    for preset in [Preset::mindspore(), Preset::paper()] {
        for phase in Phase::ALL {
            let c = compile_tiny(&preset, phase);
            let (g, fusion, mem) = (
                &c.graph,
                c.fusion.as_ref().unwrap(),
                c.plan.as_ref().unwrap(),
            );
            let plan = executable_plan(
                g,
                fusion,
                mem,
                compiler::executable::step_defaults(&preset, phase),
            );
            let plan = ExecutablePlan::from_json(&plan.to_json()).unwrap();
            let graphs = fusion
                .kernels
                .iter()
                .enumerate()
                .filter(|(_, k)| k.kind == KernelKind::Loop)
                .map(|(i, k)| {
                    (
                        loop_symbol(&g.name, i),
                        kernel_graph(g, k, &loop_symbol(&g.name, i)),
                    )
                })
                .collect();
            let kernels = InterpretedKernels { graphs };
            let feed = fixture_feed(
                g,
                &StepInputs {
                    lr: 1e-3,
                    step: 2,
                    loss_scale: 256.0,
                },
            );
            let input_bytes: Vec<Vec<u8>> = g
                .inputs()
                .map(|(n, _)| feed[n].data.to_le_bytes())
                .collect();
            let refs: Vec<&[u8]> = input_bytes.iter().map(|b| b.as_slice()).collect();
            let mut runner = Runner::new(plan, &kernels);
            // Twice: the arena is reused across steps.
            runner.run(&refs).unwrap();
            let outs = runner.run(&refs).unwrap();
            let want = Interpreter::run(g, &feed).unwrap();
            let cmp = OutputComparer::new(want.iter().map(|(n, t)| (n, t)));
            let mut worst = 0.0f64;
            for ((name, w), o) in want.iter().zip(outs) {
                let got = Tensor::new(
                    w.shape.clone(),
                    Data::from_le_bytes(w.dtype(), o.as_slice()),
                );
                let err = cmp.error(name, &got, w);
                assert!(
                    err <= 1e-5,
                    "{} {}: {name} error {err:.2e}",
                    preset.name,
                    phase.name()
                );
                worst = worst.max(err);
            }
            println!(
                "{:9} {:4}: {} steps, worst rel err {worst:.2e}",
                preset.name,
                phase.name(),
                runner.plan.steps.len()
            );
        }
    }
}
