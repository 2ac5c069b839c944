//! `tbc compile --target cpu --precision bf16`: the trainer's step for every phase and both
//! presets against the interpreter running the same mixed-precision graph, and against the
//! float64 PyTorch fixtures within twice PyTorch autocast-bf16's own error (`amp.rs`); both bf16
//! GEMM kernels, the widening one's notice, and a bad `TBC_BF16_GEMM`.
//!
//! Tolerance against the interpreter: the two run the same graph and differ only in rounding
//! order: a GEMM sums its exact products in f32 here and in f64 there, and the f32 loop kernels
//! differ from the interpreter by a few f32 ulps. Either can move a value across a bf16 rounding
//! boundary (one bf16 ulp, 2⁻⁷ relative), and through the chain of bf16 GEMMs that follows, each
//! flip changes later roundings: measured, the two end as far apart as two independent bf16
//! computations of the step (gradients 1–3e-3 apart on the tiny model). So each tensor is held to
//! the same rule as against float64 (twice autocast-bf16's own error, which measures how far a
//! bf16 computation of this step lands from exact; floor 2⁻⁸), with the interpreter's step as the
//! reference. What is exact is checked where it can be: every bf16 loop kernel against the
//! interpreter (`targets/tests/cpu_kernels.rs`, 2⁻⁸ norm-wise) and both bf16 GEMM kernels
//! within one bf16 rounding of the float64 product (`runtime/src/exec/bf16/tests.rs`).

use compiler::frontend::preset::{Phase, Preset};
use compiler::passes::mixed_precision::Precision;
use ir::Tensor;
use runtime::exec::bf16::cpu_has_avx512_bf16;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use tbc_tests::amp::{within_twice_autocast, Reference};
use tbc_tests::*;

const PHASES: &str = "gd,td1,td2,eval,ft,eval_teacher";

fn step(trainer: &Path, preset: &str, phase: Phase, out: &Path, kernel: Option<&str>) -> Output {
    let mut c = tiny_trainer_step(trainer, preset, phase, out);
    c.env_remove("TBC_BF16_GEMM");
    if let Some(k) = kernel {
        c.env("TBC_BF16_GEMM", k);
    }
    c.output().unwrap()
}

fn ok_step(trainer: &Path, preset: &str, phase: Phase, out: &Path, kernel: Option<&str>) -> String {
    let o = step(trainer, preset, phase, out, kernel);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "trainer step failed: {err}");
    err
}

fn read(p: &Path) -> BTreeMap<String, Tensor> {
    cli::tensor_file::read(p).unwrap()
}

fn against_interpreter(
    amp: &BTreeMap<String, Tensor>,
    got: &BTreeMap<String, Tensor>,
    want: &BTreeMap<String, Tensor>,
    preset: &str,
    phase: Phase,
) -> String {
    tbc_tests::amp::against_interpreter(amp, got, want, Precision::Bf16, preset, phase)
        .unwrap_or_else(|e| panic!("trainer vs interpreter: {e}"))
}

fn interpreter(preset: &Preset, phase: Phase) -> BTreeMap<String, Tensor> {
    tbc_tests::amp::interpreter_step(preset, phase, Precision::Bf16)
}

#[test]
fn bf16_trainer_matches_the_interpreter_and_stays_within_twice_autocast_error() {
    let dir = tempfile::tempdir().unwrap();
    let amp = read_fixture("amp_errors.safetensors");
    let out = dir.path().join("step.safetensors");
    for preset in [Preset::mindspore(), Preset::paper()] {
        let trainer = dir.path().join(format!("trainer-{}", preset.name));
        compile_tiny_trainer_precision(preset.name, PHASES, Precision::Bf16, &trainer);
        for phase in Phase::ALL {
            ok_step(&trainer, preset.name, phase, &out, None);
            let got = read(&out);
            let vs_interp =
                against_interpreter(&amp, &got, &interpreter(&preset, phase), preset.name, phase);
            let expected = read_fixture(&format!(
                "expected_{}_{}.safetensors",
                preset.name,
                phase.name()
            ));
            let line = within_twice_autocast(
                Reference::Float64,
                &amp,
                &expected,
                &got,
                Precision::Bf16,
                preset.name,
                phase,
            )
            .unwrap_or_else(|e| panic!("trainer: {e}"));
            println!("vs interpreter: {vs_interp}\nvs float64:     {line}");
        }
    }
}

#[test]
fn both_gemm_kernels_agree_and_the_widening_one_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let preset = Preset::mindspore();
    let trainer = dir.path().join("trainer");
    compile_tiny_trainer_precision(preset.name, "td1", Precision::Bf16, &trainer);
    let want = interpreter(&preset, Phase::Td1);
    let amp = read_fixture("amp_errors.safetensors");
    let out = dir.path().join("step.safetensors");

    // `info` names the kernel this CPU gets.
    let info = Command::new(&trainer)
        .arg("info")
        .env("TBC_BF16_GEMM", "widen")
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(
        info.contains(
            "bf16 GEMMs on this CPU: f32 GEMMs on operands widened to f32 (TBC_BF16_GEMM=widen)"
        ),
        "{info}"
    );

    // The fallback for CPUs without AVX512-BF16, forced: a one-line notice, then the same step.
    let err = ok_step(&trainer, "mindspore", Phase::Td1, &out, Some("widen"));
    let notice: Vec<&str> = err.lines().filter(|l| l.contains("bf16 GEMMs")).collect();
    assert_eq!(notice.len(), 1, "one notice expected: {err}");
    assert!(
        notice[0].contains("widened to f32") && notice[0].contains("TBC_BF16_GEMM=widen"),
        "{err}"
    );
    let line = against_interpreter(&amp, &read(&out), &want, "mindspore", Phase::Td1);
    println!("widen kernel, vs interpreter: {line}");

    if cpu_has_avx512_bf16() {
        let err = ok_step(&trainer, "mindspore", Phase::Td1, &out, Some("dot"));
        assert!(
            !err.contains("bf16 GEMMs"),
            "no notice with AVX512-BF16: {err}"
        );
        let line = against_interpreter(&amp, &read(&out), &want, "mindspore", Phase::Td1);
        println!("vdpbf16ps kernel, vs interpreter: {line}");
    } else {
        println!("SKIPPED: the vdpbf16ps kernel (this CPU has no AVX512-BF16)");
    }

    let o = step(&trainer, "mindspore", Phase::Td1, &out, Some("amx"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("TBC_BF16_GEMM=amx") && err.contains("expected auto, dot"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// General distillation, task distillation (both phases, with evaluation) and evaluation of the
/// tiny models in bf16 and in f32 on the same data: every logged bf16 loss within 2 % of the f32
/// run's at the same step (measured: within 0.7 %), both falling.
#[test]
fn a_bf16_distillation_tracks_the_f32_one() {
    use tbc_tests::e2e::*;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_data(&d.join("train.tfrecord"), 64, 1);
    write_data(&d.join("dev.tfrecord"), 32, 2);
    fixture_model("teacher", &d.join("teacher.safetensors"));
    let mut runs = Vec::new();
    for precision in [Precision::Fp32, Precision::Bf16] {
        let name = precision.name();
        let trainer = d.join(format!("trainer-{name}"));
        compile_tiny_trainer_precision("paper", "gd,td1,td2,eval", precision, &trainer);
        let run = |args: &[&str]| ok(&trainer, args, d);
        let common = ["--data-sink-steps", "4", "--learning-rate", "1e-3"];
        runs.push(distill(d, name, ("3", "2", "3"), &common, run).losses);
    }
    for (i, phase) in ["gd", "td1", "td2"].iter().enumerate() {
        let (f32_run, bf16_run) = (&runs[0][i], &runs[1][i]);
        assert_eq!(f32_run.len(), bf16_run.len(), "{phase}");
        assert!(f32_run.len() >= 8, "{phase}: {f32_run:?}");
        let worst = f32_run
            .iter()
            .zip(bf16_run)
            .map(|(a, b)| ((a - b) / a).abs())
            .fold(0.0, f64::max);
        println!(
            "{phase}: {} steps, bf16 vs f32 loss worst relative difference {worst:.2e} (first {:.4} / {:.4}, last {:.4} / {:.4})",
            f32_run.len(),
            bf16_run[0],
            f32_run[0],
            bf16_run[bf16_run.len() - 1],
            f32_run[f32_run.len() - 1]
        );
        assert!(
            worst <= 0.02,
            "{phase}: bf16 {bf16_run:?} vs f32 {f32_run:?}"
        );
        let (first, last) = (bf16_run[0], bf16_run[bf16_run.len() - 1]);
        assert!(
            last < first,
            "{phase}: bf16 loss does not fall: {bf16_run:?}"
        );
    }
}
