//! `tbc compile --target ascend -o DIR`: the trainer runs its Ascend device code path
//! (`runtime/src/device/ascend/`) on the emulation — the kernel project built with g++ against
//! our `kernel_operator.h` into the kernel library, and our stand-in for ACL and aclnn over
//! host memory (`targets/ascend_emu/acl/`), both built by the project's CMake. Its step of every
//! phase equals the interpreter, its td1 step the CPU trainer's, and a tiny general-distill →
//! task-distill → eval follows the CPU trainer's losses and accuracy; a missing runtime or
//! kernel library, a library of another trainer and `--distribute true` are clear errors.

use compiler::frontend::preset::Phase;
use compiler::passes::mixed_precision::Precision;
use ir::Tensor;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use tbc_tests::*;

const PHASES: &str = "gd,td1,td2,eval";

/// The tiny `preset` trainer for Ascend with its kernel project built on the emulation
/// (kernels and ACL stand-in in its `build/`), compiled once per preset and precision for all
/// the tests of this file, in `target/tmp` (cmake rebuilds only what changed between runs).
fn ascend_trainer(preset: &str, precision: Precision) -> PathBuf {
    static BUILT: Mutex<Vec<(String, Precision)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("ascend_trainer")
        .join(format!("{preset}-{precision}"));
    if built.contains(&(preset.to_string(), precision)) {
        return dir.join("trainer");
    }
    compile_tiny_trainer_target("ascend", preset, PHASES, precision, &dir);
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
    built.push((preset.to_string(), precision));
    dir.join("trainer")
}

/// A command running `trainer` on the emulated Ascend (the stand-in on the loader's path).
fn on_emulation(trainer: &Path, mut c: Command) -> Command {
    c.env("LD_LIBRARY_PATH", trainer.parent().unwrap().join("build"));
    c
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
        let trainer = ascend_trainer(preset, Precision::Fp32);
        let info = Command::new(&trainer).arg("info").output().unwrap();
        let info = String::from_utf8_lossy(&info.stdout);
        assert!(info.contains("target ascend (ascend910b)"), "{info}");
        for phase in [Phase::Gd, Phase::Td1, Phase::Td2, Phase::Eval] {
            let (a, b) = (d.join("interp.safetensors"), d.join("ascend.safetensors"));
            interpreter_fixture_step(preset, phase, &a);
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
    let trainer = ascend_trainer("mindspore", Precision::Fp32);
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

/// `--precision fp16` on the emulated Ascend (f16 GEMM operands through aclnnMatmul, f16 loop
/// kernels): every training phase's step against the interpreter's step of the same
/// mixed-precision graph under the autocast rule (`tbc_tests::amp`), and against the float64
/// fixtures within twice PyTorch autocast-fp16's own error.
#[test]
fn the_fp16_ascend_trainer_stays_within_twice_autocast_error() {
    use compiler::frontend::preset::Preset;
    use tbc_tests::amp::{against_interpreter, interpreter_step, within_twice_autocast, Reference};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let amp = read_fixture("amp_errors.safetensors");
    let preset = Preset::mindspore();
    let trainer = ascend_trainer(preset.name, Precision::Fp16);
    let out = d.join("step.safetensors");
    for phase in [Phase::Gd, Phase::Td1, Phase::Td2, Phase::Eval] {
        let o = on_emulation(
            &trainer,
            tiny_trainer_step(&trainer, preset.name, phase, &out),
        )
        .output()
        .unwrap();
        assert!(
            o.status.success(),
            "{phase}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let got = read(&out);
        let want = interpreter_step(&preset, phase, Precision::Fp16);
        let vs_interp = against_interpreter(&amp, &got, &want, Precision::Fp16, preset.name, phase)
            .unwrap_or_else(|e| panic!("{phase}: ascend fp16 vs interpreter: {e}"));
        let expected = read_fixture(&format!(
            "expected_{}_{}.safetensors",
            preset.name,
            phase.name()
        ));
        let vs_f64 = within_twice_autocast(
            Reference::Float64,
            &amp,
            &expected,
            &got,
            Precision::Fp16,
            preset.name,
            phase,
        )
        .unwrap_or_else(|e| panic!("{phase}: ascend fp16 vs float64: {e}"));
        println!("{phase}: vs interpreter: {vs_interp}\n{phase}: vs float64:     {vs_f64}");
    }
}

/// Runs `trainer` with `args` in `cwd` (on the emulation when `emulated`); stdout and stderr.
fn run_ok(trainer: &Path, args: &[&str], cwd: &Path, emulated: bool) -> String {
    let mut c = Command::new(trainer);
    c.args(args).current_dir(cwd);
    if emulated {
        c = on_emulation(trainer, c);
    }
    let o = c.output().unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(
        o.status.success(),
        "{} {args:?} failed:\n{out}\n{err}",
        trainer.display()
    );
    format!("{out}\n{err}")
}

/// general-distill → task-distill (td1, td2 with evaluation) → eval of the tiny MindSpore
/// models on the emulated Ascend and with the CPU trainer, on the same data: every logged loss
/// within 1e-4 relative of the CPU run's at the same step, the same accuracies, checkpoints
/// written.
#[test]
fn a_tiny_distillation_on_the_emulated_ascend_follows_the_cpu_trainer() {
    use tbc_tests::e2e::{distill, fixture_model, write_data};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_data(&d.join("train.tfrecord"), 48, 1);
    write_data(&d.join("dev.tfrecord"), 16, 2);
    fixture_model("teacher", &d.join("teacher.safetensors"));
    let cpu = d.join("trainer-cpu");
    compile_tiny_trainer_precision("mindspore", PHASES, Precision::Fp32, &cpu);
    let ascend = ascend_trainer("mindspore", Precision::Fp32);
    let mut runs = Vec::new();
    let mut accuracies = Vec::new();
    for (name, trainer, emulated) in [("cpu", &cpu, false), ("ascend", &ascend, true)] {
        let run = |args: &[&str]| run_ok(trainer, args, d, emulated);
        let common = ["--data-sink-steps", "3", "--learning-rate", "1e-3"];
        let done = distill(d, name, ("2", "2", "2"), &common, run);
        runs.push(done.losses);
        accuracies.push(done.accuracy);
    }
    assert_eq!(accuracies[0], accuracies[1], "eval accuracy, cpu vs ascend");
    for (i, phase) in ["gd", "td1", "td2"].iter().enumerate() {
        let (cpu_run, ascend_run) = (&runs[0][i], &runs[1][i]);
        assert_eq!(cpu_run.len(), ascend_run.len(), "{phase}");
        assert!(cpu_run.len() >= 4, "{phase}: {cpu_run:?}");
        let worst = cpu_run
            .iter()
            .zip(ascend_run)
            .map(|(a, b)| ((a - b) / a).abs())
            .fold(0.0, f64::max);
        println!("{phase}: {} logged losses, ascend (emulated) vs cpu worst relative difference {worst:.2e}", cpu_run.len());
        assert!(
            worst <= 1e-4,
            "{phase}: ascend {ascend_run:?} vs cpu {cpu_run:?}"
        );
    }
}

/// What a user without the Ascend runtime, without the built kernel library, with the library
/// of another trainer, on another chip than the kernels were planned for, or asking for data
/// parallelism is told.
#[test]
fn a_missing_ascend_runtime_or_kernel_library_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let trainer = ascend_trainer("paper", Precision::Fp32);
    let out = d.join("out.safetensors");
    let step = |env: &[(&str, PathBuf)], ld: bool| {
        let mut c = tiny_trainer_step(&trainer, "paper", Phase::Td1, &out);
        if ld {
            c = on_emulation(&trainer, c);
        } else {
            c.env_remove("LD_LIBRARY_PATH");
        }
        for (k, v) in env {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(!o.status.success() && !err.contains("panicked"), "{err}");
        err
    };
    let err = step(&[], false);
    assert!(
        err.contains("the Ascend runtime is missing: cannot load libascendcl.so")
            && err.contains("install CANN"),
        "{err}"
    );
    let err = step(&[("TBC_ASCEND_KERNELS", d.join("nowhere.so"))], true);
    assert!(
        err.contains("nowhere.so is missing: build the kernel project")
            && err.contains("TBC_ASCEND_EMULATION=ON"),
        "{err}"
    );
    // A library without this trainer's launchers (here: the ACL stand-in itself).
    let other = trainer.parent().unwrap().join("build/libopapi.so");
    let err = step(&[("TBC_ASCEND_KERNELS", other)], true);
    assert!(
        err.contains("has no tbc_ascend_") && err.contains("built for another trainer"),
        "{err}"
    );
    // A kernel fault on the emulation (a Unified Buffer too small for the plan) stops the step.
    let err = step(&[("TBC_ASCEND_UB_BYTES", PathBuf::from("2048"))], true);
    assert!(
        err.contains("Unified Buffer overflow") && err.contains("its launcher returned 1"),
        "{err}"
    );
    let err = step(&[("ASCEND_DEVICE_ID", PathBuf::from("3"))], true);
    assert!(
        err.contains("NPU 3 (ASCEND_DEVICE_ID) does not exist: ACL reports 1"),
        "{err}"
    );
    // Kernels planned for another chip's Unified Buffer are refused.
    let err = step(
        &[("TBC_ACL_STANDIN_SOC", PathBuf::from("Ascend910A"))],
        true,
    );
    assert!(
        err.contains("planned for --ascend-soc ascend910b, but NPU 0 is Ascend910A: recompile with --ascend-soc ascend910"),
        "{err}"
    );
    let err = step(
        &[("TBC_ACL_STANDIN_SOC", PathBuf::from("Ascend310P3"))],
        true,
    );
    assert!(
        err.contains("tbc plans for ascend910b and ascend910"),
        "{err}"
    );
    // `info` needs no device.
    let o = Command::new(&trainer)
        .arg("info")
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = on_emulation(&trainer, {
        let mut c = Command::new(&trainer);
        c.args([
            "general-distill",
            "--distribute",
            "true",
            "--data-dir",
            "x",
            "--load-teacher-ckpt-path",
            "y",
        ]);
        c
    })
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("--distribute true is not built for Ascend"),
        "{err}"
    );
}
