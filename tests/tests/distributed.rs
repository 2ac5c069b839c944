//! The data-parallel group on real Open MPI (`runtime::dist`, libmpi loaded at run time):
//! `mpirun -n 2` of `dist_probe` (tests/src/bin) gives every rank the mean, the broadcast and
//! the min/max of the ranks' values; the host executor's collective step averages several
//! buffers through one flat all-reduce; a rank that panics ends the whole job in seconds with a
//! non-zero exit instead of leaving the other rank waiting; and `--distribute` outside mpirun is
//! a clear error. Skips with a message when mpirun is not installed (scripts/setup.sh installs
//! it).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn probe() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_dist_probe"));
    assert!(bin.is_file(), "{} missing", bin.display());
    bin.to_path_buf()
}

fn have_mpirun() -> bool {
    let ok = Command::new("mpirun").arg("--version").output().is_ok();
    if !ok {
        println!("SKIPPED: mpirun not found (apt-get install openmpi-bin libopenmpi3)");
    }
    ok
}

/// `mpirun -n N dist_probe ARGS`, killed after `limit`.
fn mpirun(n: usize, args: &[&str], limit: Duration) -> (Output, Duration) {
    let start = Instant::now();
    let out = Command::new("timeout")
        .arg("-s")
        .arg("KILL")
        .arg(limit.as_secs().to_string())
        .args(["mpirun", "--allow-run-as-root", "--oversubscribe", "-n"])
        .arg(n.to_string())
        .arg(probe())
        .args(args)
        .env("OMPI_MCA_btl", "self,vader,tcp")
        .output()
        .unwrap();
    (out, start.elapsed())
}

fn lines(out: &Output, key: &str) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(key))
        .map(str::to_string)
        .collect()
}

#[test]
fn two_ranks_average_broadcast_and_compare() {
    if !have_mpirun() {
        return;
    }
    let (out, _) = mpirun(2, &["collectives"], Duration::from_secs(60));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert_eq!(lines(&out, "rank ").len(), 2, "{text}");
    assert_eq!(lines(&out, "mean "), vec!["mean 1.5 15"; 2], "{text}");
    assert_eq!(
        lines(&out, "broadcast "),
        vec!["broadcast root"; 2],
        "{text}"
    );
    assert_eq!(lines(&out, "minmax "), vec!["minmax 100 101"; 2], "{text}");
    assert_eq!(
        lines(&out, "check_same "),
        vec!["check_same true true"; 2],
        "{text}"
    );
}

#[test]
fn the_collective_step_averages_every_buffer() {
    if !have_mpirun() {
        return;
    }
    let (out, _) = mpirun(2, &["step"], Duration::from_secs(60));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    // rank 0: a = 0, b = (0, 100); rank 1: a = (1, 2, 3), b = (-1, 101).
    assert_eq!(
        lines(&out, "step "),
        vec!["step [0.5, 1.0, 1.5] [-0.5, 100.5]"; 2],
        "{text}"
    );
}

#[test]
fn a_panicking_rank_ends_the_job_in_seconds() {
    if !have_mpirun() {
        return;
    }
    let (out, took) = mpirun(2, &["panic-on", "1"], Duration::from_secs(60));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the job must fail: {text}");
    assert_ne!(
        out.status.code(),
        Some(137),
        "killed by the timeout (a hang): {text}"
    );
    assert!(took < Duration::from_secs(20), "took {took:?}: {text}");
    assert!(text.contains("fails on purpose"), "{text}");
    assert!(lines(&out, "survived").is_empty());
    println!(
        "a panic on rank 1 ended the job in {took:.2?} (exit {:?})",
        out.status.code()
    );
}

#[test]
fn distribute_outside_mpirun_is_a_clear_error() {
    let out = Command::new(probe())
        .arg("collectives")
        .env_remove("OMPI_COMM_WORLD_SIZE")
        .env_remove("PMIX_RANK")
        .env_remove("WORLD_SIZE")
        .env_remove("PMI_SIZE")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("mpirun -n N"), "{text}");
}
