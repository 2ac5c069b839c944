//! `tbc compile --target ascend -o DIR`: the trainer runs its Ascend device code path
//! (`runtime/src/device/ascend/`) on the emulation — the kernel project built with g++ against
//! our `kernel_operator.h` into the kernel library, and our stand-in for ACL and aclnn over
//! host memory (`targets/ascend_emu/acl/`), both built by the project's CMake. Its step of every
//! phase equals the interpreter, its td1 step the CPU trainer's, and a tiny general-distill →
//! task-distill → eval follows the CPU trainer's losses and accuracy; a missing runtime or
//! kernel library, a library of another trainer and `--distribute true` are clear errors.

use cli::model_args::{ConfigArgs, ModelArgs};
use cli::step::StepArgs;
use compiler::frontend::preset::Phase;
use compiler::passes::mixed_precision::Precision;
use ir::Tensor;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use tbc_tests::e2e::*;
use tbc_tests::*;

const PHASES: &str = "gd,td1,td2,eval";

/// Compiles the tiny `preset` trainer for Ascend into `dir` and builds its kernel project on the
/// emulation (kernels and ACL stand-in in `dir/build`); returns the trainer.
fn ascend_trainer(preset: &str, dir: &Path) -> PathBuf {
    compile_tiny_trainer_target("ascend", preset, PHASES, Precision::Fp32, dir);
    let build = dir.join("build");
    for args in [
        vec![
            "-S".into(),
            dir.display().to_string(),
            "-B".into(),
            build.display().to_string(),
            "-DTBC_ASCEND_EMULATION=ON".into(),
        ],
        vec!["--build".into(), build.display().to_string(), "-j2".into()],
    ] {
        let o = Command::new("cmake")
            .args(&args)
            .output()
            .expect("cmake (scripts/setup.sh installs it)");
        assert!(
            o.status.success(),
            "cmake {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    dir.join("trainer")
}

/// A command running `trainer` on the emulated Ascend (the stand-in on the loader's path).
fn on_emulation(trainer: &Path, mut c: Command) -> Command {
    c.env("LD_LIBRARY_PATH", trainer.parent().unwrap().join("build"));
    c
}

fn interpreter_step(preset: &str, phase: Phase, out: &Path) {
    let t = tiny_dir();
    let args = StepArgs {
        model: ModelArgs {
            phase: phase.name().into(),
            configs: ConfigArgs {
                teacher_config: Some(t.join("teacher.json")),
                student_config: Some(t.join("student.json")),
                preset: preset.into(),
            },
            dtype: "f32".into(),
            precision: Default::default(),
        },
        weights: t.join("weights.safetensors"),
        batch: t.join("batch.safetensors"),
        out: out.to_path_buf(),
        lr: Some(1e-3),
        step: 0,
        loss_scale: Some(if preset == "mindspore" { 256.0 } else { 1.0 }),
        warmup_steps: 0.0,
        decay_steps: 1e30,
        seed: 0,
    };
    cli::step::run(&args).unwrap();
}

fn read(p: &Path) -> BTreeMap<String, Tensor> {
    cli::tensor_file::read(p).unwrap()
}

/// The largest per-tensor relative error of `got` against `want` (every tensor ≤ `tol`).
fn worst_error(
    label: &str,
    got: &BTreeMap<String, Tensor>,
    want: &BTreeMap<String, Tensor>,
    tol: f64,
) -> (f64, String) {
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>(),
        "{label}"
    );
    let cmp = OutputComparer::new(want.iter());
    let mut worst = (0.0f64, String::new());
    for (name, w) in want {
        let err = cmp.error(name, &got[name], w);
        assert!(err <= tol, "{label}: {name} error {err:.2e} > {tol:.0e}");
        if err > worst.0 {
            worst = (err, name.clone());
        }
    }
    worst
}

#[test]
fn the_ascend_trainer_steps_equal_the_interpreter_and_the_cpu_trainer() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for preset in ["mindspore", "paper"] {
        let trainer = ascend_trainer(preset, &d.join(format!("ascend-{preset}")));
        let info = Command::new(&trainer).arg("info").output().unwrap();
        let info = String::from_utf8_lossy(&info.stdout);
        assert!(info.contains("target ascend (ascend910b)"), "{info}");
        for phase in [Phase::Gd, Phase::Td1, Phase::Td2, Phase::Eval] {
            let (a, b) = (d.join("interp.safetensors"), d.join("ascend.safetensors"));
            interpreter_step(preset, phase, &a);
            let o = on_emulation(&trainer, tiny_trainer_step(&trainer, preset, phase, &b))
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                o.status.success(),
                "{preset} {phase}: ascend trainer step failed: {err}"
            );
            let (e, name) = worst_error(
                &format!("{preset} {phase} ascend vs interpreter"),
                &read(&b),
                &read(&a),
                1e-5,
            );
            println!(
                "{preset:9} {:4}: ascend (emulated) vs interpreter max {e:.2e} ({name})",
                phase.name()
            );
        }
    }
    // td1 against the CPU trainer's step on the same weights and batch.
    let cpu = d.join("trainer-cpu");
    compile_tiny_trainer_precision("mindspore", "td1", Precision::Fp32, &cpu);
    let (a, b) = (d.join("cpu.safetensors"), d.join("ascend.safetensors"));
    let o = tiny_trainer_step(&cpu, "mindspore", Phase::Td1, &a)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let trainer = d.join("ascend-mindspore/trainer");
    let o = on_emulation(
        &trainer,
        tiny_trainer_step(&trainer, "mindspore", Phase::Td1, &b),
    )
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (e, name) = worst_error("td1 ascend vs cpu trainer", &read(&b), &read(&a), 1e-5);
    println!("mindspore td1 : ascend (emulated) vs CPU trainer max {e:.2e} ({name})");
}
