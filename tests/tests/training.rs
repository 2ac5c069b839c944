//! The pieces of the training step that the parity fixtures do not isolate: the LR schedules,
//! the dynamic loss scale, overflow skipping and dropout.

use compiler::frontend::preset::{LossScaleConfig, Phase, PhaseConstants, Preset, ScheduleKind};
use compiler::frontend::train::{advance_state, learning_rate, Schedule, State};
use ir::{Builder, DType, Interpreter, Tensor, TensorType};
use std::collections::HashMap;
use tbc_tests::*;

fn scalar(dtype: DType, v: f64) -> Tensor {
    Tensor::scalar_f64(dtype, v)
}

/// LR for steps 0..=40 with the given schedule parameters, through the IR.
fn lr_curve(
    kind: ScheduleKind,
    dtype: DType,
    lr0: f64,
    end: f64,
    warmup: f64,
    decay: f64,
) -> Vec<f64> {
    let mut b = Builder::new("lr");
    let s = Schedule::declare(&mut b, dtype);
    let step = b.input("step", TensorType::scalar(DType::I32));
    let step_f = b.cast(step, dtype);
    let lr = learning_rate(&mut b, kind, &s, step_f);
    b.output("lr", lr);
    let g = b.finish();
    (0..=40)
        .map(|i| {
            let feed = HashMap::from([
                ("sched.lr0".to_string(), scalar(dtype, lr0)),
                ("sched.end_lr".to_string(), scalar(dtype, end)),
                ("sched.warmup_steps".to_string(), scalar(dtype, warmup)),
                ("sched.decay_steps".to_string(), scalar(dtype, decay)),
                ("step".to_string(), scalar(DType::I32, i as f64)),
            ]);
            Interpreter::run_map(&g, &feed).unwrap()["lr"].item()
        })
        .collect()
}

#[test]
fn schedules_match_the_reference() {
    let expected = read_fixture("expected_schedule.safetensors");
    let cases = [
        (
            "polynomial",
            ScheduleKind::Polynomial,
            5e-5,
            1e-14,
            4.0,
            40.0,
        ),
        (
            "polynomial_nowarmup",
            ScheduleKind::Polynomial,
            5e-5,
            1e-14,
            0.0,
            40.0,
        ),
        (
            "warmup_linear",
            ScheduleKind::WarmupLinear,
            3e-5,
            0.0,
            4.0,
            40.0,
        ),
        ("constant", ScheduleKind::Constant, 5e-5, 0.0, 0.0, 40.0),
    ];
    for (name, kind, lr0, end, w, d) in cases {
        let e = expected[name].to_f64();
        for (dtype, tol) in [(DType::F64, 1e-15), (DType::F32, 1e-6)] {
            let ours = lr_curve(kind, dtype, lr0, end, w, d);
            for (s, (a, x)) in ours.iter().zip(&e).enumerate() {
                assert!(
                    (a - x).abs() <= tol * lr0,
                    "{name} {dtype:?} step {s}: {a} vs {x}"
                );
            }
        }
    }
}

#[test]
fn lr_override_is_constant_for_every_schedule() {
    // `tbc step --lr X` feeds lr0 = end = X, no warmup, decay 1e30.
    for kind in [
        ScheduleKind::Polynomial,
        ScheduleKind::WarmupLinear,
        ScheduleKind::Constant,
    ] {
        for v in lr_curve(kind, DType::F32, 1e-3, 1e-3, 0.0, 1e30) {
            assert_eq!(v, 1e-3f32 as f64, "{kind:?}");
        }
    }
}

#[test]
fn dynamic_loss_scale_matches_the_reference() {
    let e = read_fixture("expected_loss_scale.safetensors");
    let constants = PhaseConstants {
        schedule: ScheduleKind::Constant,
        lr: 0.0,
        end_lr: 0.0,
        loss_scale: Some(LossScaleConfig {
            init: 8.0,
            factor: 2.0,
            window: 3,
        }),
    };
    let mut b = Builder::new("scale");
    let state = State::declare(&mut b, DType::F32);
    let overflow = b.input("overflow", TensorType::scalar(DType::Bool));
    let next = advance_state(&mut b, &constants, &state, overflow);
    b.output("step", next.step);
    b.output("cur_iter", next.cur_iter);
    b.output("last", next.last_overflow_iter);
    b.output("scale", next.loss_scale);
    let g = b.finish();
    let (mut step, mut cur, mut last, mut scale) = (0.0, 1.0, 0.0, 8.0);
    let flags = e["overflow"].to_f64();
    for (i, &flag) in flags.iter().enumerate() {
        assert_eq!(
            scale,
            e["scale_before"].to_f64()[i],
            "scale before step {i}"
        );
        let feed = HashMap::from([
            ("state.step".to_string(), scalar(DType::I32, step)),
            ("state.cur_iter".to_string(), scalar(DType::I32, cur)),
            (
                "state.last_overflow_iter".to_string(),
                scalar(DType::I32, last),
            ),
            ("state.loss_scale".to_string(), scalar(DType::F32, scale)),
            ("state.seed".to_string(), scalar(DType::I32, 0.0)),
            ("overflow".to_string(), scalar(DType::Bool, flag)),
        ]);
        let out = Interpreter::run_map(&g, &feed).unwrap();
        (step, cur, last, scale) = (
            out["step"].item(),
            out["cur_iter"].item(),
            out["last"].item(),
            out["scale"].item(),
        );
        assert_eq!(step, e["step_after"].to_f64()[i], "step after {i}");
        assert_eq!(cur, e["cur_iter_after"].to_f64()[i], "cur_iter after {i}");
        assert_eq!(
            last,
            e["last_overflow_after"].to_f64()[i],
            "last overflow after {i}"
        );
        assert_eq!(scale, e["scale_after"].to_f64()[i], "scale after {i}");
    }
}

#[test]
fn overflow_skips_the_update_and_halves_the_scale() {
    let preset = Preset::mindspore();
    let g = tiny_graph(&preset, Phase::Td1, DType::F32);
    // A scale so large that the scaled gradients overflow f32.
    let out = run_with_fixture_inputs(
        &g,
        &StepInputs {
            lr: 1e-3,
            step: 7,
            loss_scale: 3e38,
        },
    );
    assert_eq!(out["overflow"].item(), 1.0);
    assert_eq!(out["state.step"].item(), 7.0, "LR step must not advance");
    assert_eq!(out["state.cur_iter"].item(), 9.0, "cur_iter advances");
    assert_eq!(out["state.loss_scale"].item(), (3e38f32 / 2.0) as f64);
    let weights = read_fixture("weights.safetensors");
    for (name, t) in &out {
        if let Some(p) = name.strip_prefix("param.") {
            assert_eq!(
                t,
                &weights[&format!("student.{p}")],
                "{name} changed despite overflow"
            );
        }
        if name.starts_with("adam_") {
            assert!(
                t.to_f64().iter().all(|&x| x == 0.0),
                "{name} changed despite overflow"
            );
        }
    }
    // The same step with a sane scale updates the parameters.
    let ok = run_with_fixture_inputs(
        &g,
        &StepInputs {
            lr: 1e-3,
            step: 7,
            loss_scale: 256.0,
        },
    );
    assert_eq!(ok["overflow"].item(), 0.0);
    assert_eq!(ok["state.step"].item(), 8.0);
    assert_ne!(
        ok["param.fit_dense.weight"],
        weights["student.fit_dense.weight"]
    );
}

/// The scale halves with a floor of 1 (§4): an overflow at scale 1 or 1.5 leaves 1.
#[test]
fn an_overflow_never_takes_the_scale_below_one() {
    let preset = Preset::mindspore();
    let g = tiny_graph(&preset, Phase::Td1, DType::F32);
    for (scale, after) in [(1.0, 1.0), (1.5, 1.0), (4.0, 2.0)] {
        let mut feed = fixture_feed(
            &g,
            &StepInputs {
                lr: 1e-3,
                step: 3,
                loss_scale: scale,
            },
        );
        // A teacher activation near f32's maximum overflows the loss at any scale.
        let name = "teacher.bert.embeddings.LayerNorm.bias";
        let t = &feed[name];
        let big = vec![3e38; t.to_f64().len()];
        let ty = TensorType::new(DType::F32, t.shape.clone());
        feed.insert(name.to_string(), Tensor::from_f64(&ty, &big));
        let out = Interpreter::run_map(&g, &feed).unwrap();
        assert_eq!(out["overflow"].item(), 1.0, "scale {scale}");
        assert_eq!(out["state.loss_scale"].item(), after, "scale {scale}");
        assert_eq!(out["state.step"].item(), 3.0, "LR step must not advance");
    }
}

#[test]
fn dropout_is_deterministic_per_seed_and_step() {
    let preset = Preset::mindspore();
    let (t, mut s) = tiny_configs(&preset);
    s.hidden_dropout = 0.1;
    s.attention_dropout = 0.1;
    let spec = compiler::frontend::GraphSpec {
        phase: Phase::Gd,
        teacher: &t,
        student: &s,
        preset: &preset,
        batch: 4,
        seq_len: 16,
        dtype: DType::F32,
        precision: Default::default(),
    };
    let g = compiler::frontend::build_graph(&spec).unwrap();
    let loss = |step: i32| {
        run_with_fixture_inputs(
            &g,
            &StepInputs {
                lr: 1e-3,
                step,
                loss_scale: 1.0,
            },
        )["loss"]
            .item()
    };
    let (a, b, c) = (loss(0), loss(0), loss(1));
    assert_eq!(a, b, "same seed and step must give the same masks");
    assert_ne!(a, c, "a new step must draw new masks");
    let no_dropout = run_with_fixture_inputs(
        &tiny_graph(&preset, Phase::Gd, DType::F32),
        &StepInputs {
            lr: 1e-3,
            step: 0,
            loss_scale: 1.0,
        },
    )["loss"]
        .item();
    assert_ne!(a, no_dropout);
}

#[test]
fn dropout_keeps_one_minus_p_and_rescales() {
    let mut b = Builder::new("dropout");
    let x = b.input("x", TensorType::new(DType::F64, vec![200, 100]));
    let seed = b.input("seed", TensorType::scalar(DType::I32));
    let step = b.input("step", TensorType::scalar(DType::I32));
    let ctx = compiler::frontend::bert::DropoutCtx {
        seed,
        counter: step,
    };
    let y = compiler::frontend::bert::dropout(&mut b, x, 0.1, ctx, 3);
    b.output("y", y);
    let g = b.finish();
    let feed = HashMap::from([
        (
            "x".to_string(),
            Tensor::from_f64(
                &TensorType::new(DType::F64, vec![200, 100]),
                &vec![1.0; 20000],
            ),
        ),
        ("seed".to_string(), scalar(DType::I32, 42.0)),
        ("step".to_string(), scalar(DType::I32, 5.0)),
    ]);
    let y = Interpreter::run_map(&g, &feed).unwrap()["y"].to_f64();
    let kept = y.iter().filter(|&&v| v != 0.0).count() as f64 / y.len() as f64;
    assert!((kept - 0.9).abs() < 0.01, "kept fraction {kept}");
    assert!(y.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.9).abs() < 1e-12));
}
