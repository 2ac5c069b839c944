//! End to end: `tbc compile --target cpu` links a trainer executable for the tiny configs; its
//! `step` (compiled loop kernels, library GEMMs) is compared with `tbc step` (interpreter) for
//! every phase and both presets — every output tensor within 1e-5 relative — and with the
//! PyTorch fixtures. `info` lists the phases.

use compiler::frontend::preset::Phase;
use ir::Tensor;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use tbc_tests::*;

fn compile_trainer(preset: &str, out: &Path) {
    compile_tiny_trainer(preset, "gd,td1,td2,eval,ft,eval_teacher", None, out);
}

fn trainer_step(trainer: &Path, preset: &str, phase: Phase, out: &Path) {
    let o = tiny_trainer_step(trainer, preset, phase, out)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "trainer step failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn read(p: &Path) -> BTreeMap<String, Tensor> {
    cli::tensor_file::read(p).unwrap()
}

#[test]
fn compiled_trainer_matches_the_interpreter_and_pytorch() {
    let dir = tempfile::tempdir().unwrap();
    for preset in ["mindspore", "paper"] {
        let trainer = dir.path().join(format!("trainer-{preset}"));
        compile_trainer(preset, &trainer);
        let info = Command::new(&trainer).arg("info").output().unwrap();
        let info = String::from_utf8_lossy(&info.stdout).to_string();
        for phase in ["gd", "td1", "td2", "eval", "ft", "eval_teacher"] {
            assert!(
                info.lines().any(|l| l.starts_with(phase)),
                "info lacks {phase}: {info}"
            );
        }
        for phase in Phase::ALL {
            let (a, b) = (
                dir.path().join("interp.safetensors"),
                dir.path().join("compiled.safetensors"),
            );
            interpreter_fixture_step(preset, phase, &a);
            trainer_step(&trainer, preset, phase, &b);
            let (want, got) = (read(&a), read(&b));
            assert_eq!(
                want.keys().collect::<Vec<_>>(),
                got.keys().collect::<Vec<_>>()
            );
            let cmp = OutputComparer::new(want.iter());
            let mut worst = (0.0f64, String::new());
            for (name, w) in &want {
                let err = cmp.error(name, &got[name], w);
                assert!(
                    err <= 1e-5,
                    "{preset} {phase}: {name} compiled vs interpreter error {err:.2e}"
                );
                if err > worst.0 {
                    worst = (err, name.clone());
                }
            }
            // Against PyTorch too (the fixtures were made with lr 1e-3 from zero moments).
            let mut worst_pt = 0.0f64;
            // Parameters after the update may use the Adam allowances of `match_step_output`
            // (the f32 first Adam step of the 6-layer ft teacher is conditioned at ~1e-5).
            let e = read_fixture(&format!("expected_{preset}_{}.safetensors", phase.name()));
            let cmp = OutputComparer::new(e.iter());
            for name in e.keys() {
                match match_step_output(&cmp, name, &got, &e, 1e-5) {
                    Ok(StepMatch::Error(err)) => worst_pt = worst_pt.max(err),
                    Ok(m) => println!("{preset} {phase}: {name} vs PyTorch: {m:?}"),
                    Err(msg) => panic!("{preset} {phase}: compiled vs PyTorch: {msg}"),
                }
            }
            println!("{preset:9} {:4}: compiled vs interpreter max {:.2e} ({}), vs PyTorch max {worst_pt:.2e}", phase.name(), worst.0, worst.1);
        }
    }
}
