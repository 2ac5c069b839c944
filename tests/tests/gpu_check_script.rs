//! The prepared GPU check's scripts stay working: `scripts/gpu-check-prepare.sh --target cpu`
//! (with this build's `tbc`) and `gpu-check.sh` run the whole check on CPU trainers — every
//! comparison, the end-to-end runs, the SIGKILL + `--resume` equality and the cross-target
//! runs — and it passes.

use std::path::Path;
use std::process::Command;

#[test]
fn the_gpu_check_runs_and_passes_on_cpu_trainers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let bin = root.join("target/debug");
    for needed in ["tbc", "libruntime.a", "gpu_check_data"] {
        assert!(
            bin.join(needed).is_file(),
            "{} missing: `cargo build -p runtime` and `cargo test --workspace` build it (make test does)",
            bin.join(needed).display()
        );
    }
    if Command::new("strip").arg("--version").output().is_err()
        || Command::new("python3").arg("--version").output().is_err()
    {
        println!("SKIPPED: the GPU check needs strip and python3");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    let prep = Command::new("bash")
        .arg(root.join("scripts/gpu-check-prepare.sh"))
        .args(["--target", "cpu"])
        .arg(&bundle)
        .current_dir(root)
        .env("TBC_BIN_DIR", &bin)
        .output()
        .unwrap();
    assert!(
        prep.status.success(),
        "prepare failed:\n{}{}",
        String::from_utf8_lossy(&prep.stdout),
        String::from_utf8_lossy(&prep.stderr)
    );
    let report = dir.path().join("report.txt");
    let run = Command::new("bash")
        .arg(bundle.join("gpu-check.sh"))
        .arg(&bundle)
        .arg(&report)
        .output()
        .unwrap();
    let text = std::fs::read_to_string(&report).unwrap_or_default();
    assert!(run.status.success(), "gpu-check failed:\n{text}");
    assert!(
        text.contains(" 0 failed") && !text.contains("FAIL "),
        "{text}"
    );
    for check in [
        "graph replay equals one-by-one launches",
        "td1 with a data sink of 4: GPU vs CPU trainer",
        "td1 killed on the CPU, resumed on the GPU",
        "td1 killed on the GPU, resumed on the CPU",
    ] {
        assert!(
            text.contains(&format!("PASS {check}")) || text.contains(check),
            "{check} did not run:\n{text}"
        );
    }
    let passed = text.lines().filter(|l| l.starts_with("PASS ")).count();
    assert!(passed >= 30, "only {passed} checks ran:\n{text}");
    for line in text
        .lines()
        .filter(|l| l.contains("td1") || l.contains("gpu-check:"))
    {
        println!("{line}");
    }
}
