//! The runtime executing the compiler's executable plan (library GEMM / gather / scatter-add in
//! the runtime; loop kernels run by the interpreter behind the `LoopKernels` interface) against
//! the interpreter on the whole graph, for every phase and preset. Also: the plan survives a
//! JSON round trip.

use compiler::executable::executable_plan;
use compiler::frontend::preset::{Phase, Preset};
use ir::{Data, Interpreter, Tensor};
use plan::exec::ExecutablePlan;
use runtime::exec::Runner;
use tbc_tests::*;

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
            let kernels = InterpretedKernels::of(&c);
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

/// The plan states which outputs carry over to the next step: for a training phase every updated
/// parameter goes to the trained model's input, every Adam moment and `state.*` output to the
/// input of its name, and nothing else; an eval plan donates nothing.
#[test]
fn plans_donate_exactly_the_training_state() {
    for phase in Phase::ALL {
        let preset = Preset::paper();
        let c = compile_tiny(&preset, phase);
        let plan = executable_plan(
            &c.graph,
            c.fusion.as_ref().unwrap(),
            c.plan.as_ref().unwrap(),
            compiler::executable::step_defaults(&preset, phase),
        );
        let trained = match phase.name() {
            "ft" => "teacher",
            _ => "student",
        };
        let mut expected = Vec::new();
        for (o, s) in plan.outputs.iter().enumerate() {
            let target = if let Some(n) = s.name.strip_prefix("param.") {
                format!("{trained}.{n}")
            } else if s.name.starts_with("adam_") || s.name.starts_with("state.") {
                s.name.clone()
            } else {
                continue;
            };
            let i = plan.inputs.iter().position(|x| x.name == target);
            let i = i.unwrap_or_else(|| panic!("{}: no input {target}", phase.name()));
            expected.push((o, i));
        }
        let got: Vec<(usize, usize)> = plan.donations.iter().map(|d| (d.output, d.input)).collect();
        assert_eq!(got, expected, "{}", phase.name());
        let params = plan
            .outputs
            .iter()
            .filter(|s| s.name.starts_with("param."))
            .count();
        let is_training = !phase.name().starts_with("eval");
        assert_eq!(params > 0, is_training, "{}", phase.name());
        assert_eq!(plan.donations.is_empty(), !is_training, "{}", phase.name());
        for d in &plan.donations {
            let (o, i) = (&plan.outputs[d.output], &plan.inputs[d.input]);
            assert_eq!(
                (o.elem, &o.shape),
                (i.elem, &i.shape),
                "{} -> {}",
                o.name,
                i.name
            );
        }
    }
}
