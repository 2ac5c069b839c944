//! The data-parallel group on real Open MPI (`runtime::dist`, libmpi loaded at run time):
//! `mpirun -n 2` of `dist_probe` (tests/src/bin) gives every rank the mean, the broadcast and
//! the min/max of the ranks' values; the host executor's collective step averages several
//! buffers through one flat all-reduce; a rank that panics ends the whole job in seconds with a
//! non-zero exit instead of leaving the other rank waiting; and `--distribute` outside mpirun is
//! a clear error. Skips with a message when mpirun is not installed (scripts/setup.sh installs
//! it).
//!
//! The trainer (tiny configs, CPU): `mpirun -n 2` of a batch-2 trainer with `--distribute true`
//! trains td1 and GD for 50 steps to the parameters of one process with a batch-4 trainer on
//! the same data, within 1e-6 relative per tensor (not bit for bit: a batch of 4 sums its
//! gradient rows in another order than the mean of two batches of 2); only rank 0 writes
//! metrics and checkpoints; a 2-rank job killed with SIGKILL and resumed under mpirun equals
//! the uninterrupted 2-rank run bit for bit (td1 and GD); a rank killed mid-run ends the job in
//! seconds; a rank started with other flags or another data order is refused at start; a
//! missing MPI library is a clear error.

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
    // rank 0: a = 0, b = (0, 100), c = 1; rank 1: a = (1, 2, 3), b = (-1, 101), c = inf: the
    // overflow of one rank is every rank's, so all skip the step together.
    assert_eq!(
        lines(&out, "step "),
        vec!["step [0.5, 1.0, 1.5] [-0.5, 100.5] [inf]"; 2],
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
fn a_missing_mpi_library_is_a_clear_error() {
    if !have_mpirun() {
        return;
    }
    let out = Command::new("mpirun")
        .args([
            "--allow-run-as-root",
            "-n",
            "1",
            "-x",
            "TBC_MPI_LIB=/nonexistent/libmpi.so.40",
        ])
        .arg(probe())
        .arg("collectives")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("apt-get install openmpi-bin libopenmpi3") && text.contains("TBC_MPI_LIB"),
        "{text}"
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

/// The tiny trainers (td1 and gd, mindspore preset) for batch 2 and batch 4, the data and
/// models, in one folder. The batch-2 trainer (the ranks') averages its gradients in 4 KiB
/// buckets (several all-reduces in flight during the backward), the batch-4 one (the single
/// process) in one.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        tbc_tests::compile_tiny_trainer_buckets(
            "mindspore",
            "td1,td2,eval,gd",
            2,
            4.0 / 1024.0,
            &dir.path().join("tr2"),
        );
        tbc_tests::compile_tiny_trainer_batch(
            "mindspore",
            "td1,td2,eval,gd",
            None,
            None,
            4,
            &dir.path().join("tr4"),
        );
        tbc_tests::e2e::write_data(&dir.path().join("train.tfrecord"), 40, 3);
        tbc_tests::e2e::write_data(&dir.path().join("dev.tfrecord"), 16, 9);
        tbc_tests::e2e::fixture_model("teacher", &dir.path().join("teacher.safetensors"));
        tbc_tests::e2e::fixture_model("student", &dir.path().join("student.safetensors"));
        Setup { dir }
    }

    fn path(&self, p: &str) -> String {
        self.dir.path().join(p).display().to_string()
    }

    /// td1 for 5 epochs of 10 global batches of 4 (shuffled), a checkpoint every 10 steps.
    fn td1(&self, out: &str) -> Vec<String> {
        [
            "task-distill",
            "--td-phase",
            "1",
            "--load-teacher-ckpt-path",
            &self.path("teacher.safetensors"),
            "--load-gd-ckpt-path",
            &self.path("student.safetensors"),
            "--train-data-dir",
            &self.path("train.tfrecord"),
            "--td-phase1-epoch-size",
            "5",
            "--save-ckpt-step",
            "10",
            "--max-ckpt-num",
            "3",
            "--enable-data-sink",
            "false",
            "--do-shuffle",
            "true",
            "--output-dir",
            &self.path(out),
        ]
        .map(String::from)
        .to_vec()
    }

    fn gd(&self, out: &str) -> Vec<String> {
        [
            "general-distill",
            "--load-teacher-ckpt-path",
            &self.path("teacher.safetensors"),
            "--data-dir",
            &self.path("train.tfrecord"),
            "--epoch-size",
            "5",
            "--save-ckpt-step",
            "10",
            "--output-dir",
            &self.path(out),
        ]
        .map(String::from)
        .to_vec()
    }

    fn one(&self, args: &[String]) -> Output {
        let out = Command::new(self.path("tr4")).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `mpirun -n 2 tr2 ARGS --distribute true` (MPMD `extra` flags for rank 1 when given).
    fn two(&self, args: &[String], rank1_extra: Option<&[&str]>) -> Command {
        self.two_on("tr2", args, rank1_extra)
    }

    /// [`Setup::two`] with the trainer `trainer`.
    fn two_on(&self, trainer: &str, args: &[String], rank1_extra: Option<&[&str]>) -> Command {
        let mut c = Command::new("mpirun");
        c.args(["--allow-run-as-root", "--oversubscribe"]);
        c.env("OMPI_MCA_btl", "self,vader,tcp");
        match rank1_extra {
            None => {
                c.args(["-n", "2"]).arg(self.path(trainer)).args(args);
                c.args(["--distribute", "true"]);
            }
            Some(extra) => {
                c.args(["-n", "1"]).arg(self.path("tr2")).args(args);
                c.args(["--distribute", "true", ":", "-n", "1"]);
                c.arg(self.path("tr2")).args(args).args(extra);
                c.args(["--distribute", "true"]);
            }
        }
        c
    }
}

fn tensors(path: &str) -> std::collections::BTreeMap<String, runtime::tensor_io::RawTensor> {
    runtime::tensor_io::read(Path::new(path)).unwrap()
}

/// The worst per-tensor ‖a − b‖ / ‖b‖ over two checkpoints with the same tensors.
fn worst_relative(a: &str, b: &str) -> f64 {
    let (a, b) = (tensors(a), tensors(b));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    a.iter()
        .map(|(name, x)| {
            let (x, y) = (x.to_f64(), b[name].to_f64());
            let d: f64 = x.iter().zip(&y).map(|(p, q)| (p - q) * (p - q)).sum();
            let n: f64 = y.iter().map(|q| q * q).sum();
            (d / n.max(1e-300)).sqrt()
        })
        .fold(0.0, f64::max)
}

fn ckpt(dir: &str, name: &str) -> String {
    format!("{dir}/{name}")
}

#[test]
fn two_ranks_train_as_one_process_with_the_global_batch() {
    if !have_mpirun() {
        return;
    }
    let s = Setup::new();
    for (phase, args, ckpt_dir) in [
        (
            "td1",
            Setup::td1 as fn(&Setup, &str) -> Vec<String>,
            "tinybert_td_phase1_save_ckpt",
        ),
        ("gd", Setup::gd, "tinybert_gd_save_ckpt"),
    ] {
        s.one(&args(&s, &format!("{phase}_one")));
        let out = s
            .two(&args(&s, &format!("{phase}_two")), None)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("2 ranks × batch 2 = global batch 4"),
            "{stderr}"
        );
        let last = "tiny_bert_5_10.safetensors";
        let one = ckpt(&s.path(&format!("{phase}_one/{ckpt_dir}")), last);
        let two = ckpt(&s.path(&format!("{phase}_two/{ckpt_dir}")), last);
        let worst = worst_relative(&two, &one);
        println!("{phase}: 50 steps, 2 ranks x 2 vs 1 process x 4: worst relative difference per tensor {worst:.2e}");
        assert!(worst <= 1e-6, "{phase}: {worst}");
        assert!(
            worst > 0.0 || phase == "gd",
            "{phase}: expected rounding differences"
        );
        // Rank 0 alone logs: one metrics line per step.
        let lines = std::fs::read_to_string(s.path(&format!("{phase}_two/metrics.jsonl")))
            .unwrap()
            .lines()
            .count();
        assert_eq!(lines, 50, "{phase}");
        // The logged loss is the job's: the mean over the ranks, as one process logs it.
        let loss = |dir: &str| -> Vec<f64> {
            tbc_tests::e2e::losses(Path::new(&s.path(&format!("{dir}/metrics.jsonl"))))[phase]
                .clone()
        };
        let (l1, l2) = (loss(&format!("{phase}_one")), loss(&format!("{phase}_two")));
        let worst = l1
            .iter()
            .zip(&l2)
            .map(|(a, b)| ((a - b) / a).abs())
            .fold(0.0, f64::max);
        println!(
            "{phase}: logged losses, 2 ranks vs 1 process: worst relative difference {worst:.2e}"
        );
        assert!(worst < 1e-5, "{phase}: {worst}");
    }
}

/// The all-reduce buckets change when gradients are averaged, not what: 50 td1 steps on two
/// ranks with 4 KiB buckets (the bucketed all-reduces in flight during the backward) and with
/// one bucket end in bit-identical checkpoints.
#[test]
fn gradient_buckets_do_not_change_a_two_rank_run() {
    if !have_mpirun() {
        return;
    }
    let s = Setup::new();
    tbc_tests::compile_tiny_trainer_buckets(
        "mindspore",
        "td1,td2,eval,gd",
        2,
        25.0,
        &s.dir.path().join("tr2-one-bucket"),
    );
    for (trainer, out) in [("tr2", "buckets"), ("tr2-one-bucket", "one_bucket")] {
        let o = s.two_on(trainer, &s.td1(out), None).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let ckpts = ["buckets", "one_bucket"].map(|d| {
        ckpt(
            &s.path(&format!("{d}/tinybert_td_phase1_save_ckpt")),
            "tiny_bert_5_10.safetensors",
        )
    });
    let (a, b) = (tensors(&ckpts[0]), tensors(&ckpts[1]));
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        assert!(
            t.bytes == b[name].bytes,
            "{name} differs between bucketings"
        );
    }
    println!(
        "td1: 50 steps on 2 ranks, 4 KiB buckets vs one bucket: {} tensors bit-identical",
        a.len()
    );
}

#[test]
fn a_two_rank_job_killed_and_resumed_equals_the_uninterrupted_one() {
    if !have_mpirun() {
        return;
    }
    use std::os::unix::process::CommandExt;
    let s = Setup::new();
    for (phase, args, ckpt_dir) in [
        (
            "td1",
            Setup::td1 as fn(&Setup, &str) -> Vec<String>,
            "tinybert_td_phase1_save_ckpt",
        ),
        ("gd", Setup::gd, "tinybert_gd_save_ckpt"),
    ] {
        let (full, part) = (format!("{phase}_full"), format!("{phase}_part"));
        let done = s.two(&args(&s, &full), None).output().unwrap();
        assert!(
            done.status.success(),
            "{}",
            String::from_utf8_lossy(&done.stderr)
        );
        // The whole job (mpirun and its ranks) in a process group of its own, killed with
        // SIGKILL after 15 of the 50 metrics lines.
        let mut job = s.two(&args(&s, &part), None);
        job.process_group(0)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = job.spawn().unwrap();
        let metrics = s.path(&format!("{part}/metrics.jsonl"));
        let start = Instant::now();
        while std::fs::read_to_string(&metrics).map_or(0, |t| t.lines().count()) < 15
            && start.elapsed() < Duration::from_secs(60)
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", child.id())])
            .status()
            .unwrap();
        child.wait().unwrap();
        let cut = std::fs::read_to_string(&metrics).unwrap().lines().count();
        assert!(
            cut < 50,
            "{phase}: the job finished before the kill ({cut} lines)"
        );
        let mut resume = args(&s, &part);
        resume.push("--resume".into());
        let out = s.two(&resume, None).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains(&format!("resuming {phase}")), "{stderr}");
        let last = format!("{ckpt_dir}/tiny_bert_5_10.safetensors");
        assert_eq!(
            tensors(&s.path(&format!("{part}/{last}"))),
            tensors(&s.path(&format!("{full}/{last}"))),
            "{phase}: killed after {cut} of 50 metrics lines and resumed"
        );
        println!("{phase}: 2 ranks killed after {cut} of 50 steps and resumed: bit-identical to the uninterrupted job");
    }
}

#[test]
fn a_killed_rank_ends_the_job_and_different_flags_are_refused() {
    if !have_mpirun() {
        return;
    }
    let s = Setup::new();
    // A long run; rank 1 (a child of mpirun) is killed once training is under way.
    let mut args = s.td1("killed");
    let at = args
        .iter()
        .position(|a| a == "--td-phase1-epoch-size")
        .unwrap();
    args[at + 1] = "100000".into();
    let mut job = s.two(&args, None);
    job.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = job.spawn().unwrap();
    let metrics = s.path("killed/metrics.jsonl");
    let start = Instant::now();
    while std::fs::read_to_string(&metrics).map_or(0, |t| t.lines().count()) < 5 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "training did not start"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let ranks = Command::new("pgrep")
        .args(["-P", &child.id().to_string()])
        .output()
        .unwrap();
    let ranks: Vec<String> = String::from_utf8_lossy(&ranks.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(ranks.len(), 2, "mpirun's children: {ranks:?}");
    let killed = Instant::now();
    Command::new("kill")
        .args(["-KILL", &ranks[1]])
        .status()
        .unwrap();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if killed.elapsed() > Duration::from_secs(30) {
            child.kill().unwrap();
            panic!("the job still runs 30 s after a rank was killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = killed.elapsed();
    assert!(!status.success());
    println!("a rank killed with SIGKILL: the job ended in {took:.2?} ({status})");

    // Rank 1 with another learning rate, or another shuffling seed (its shard would not be its
    // part of the same global batches): refused before the first step.
    for (case, extra) in [
        ("lr", ["--learning-rate", "0.5"]),
        ("order", ["--seed", "1"]),
    ] {
        let out = s
            .two(&s.td1(&format!("mismatch_{case}")), Some(&extra))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{case}: {stderr}");
        assert!(
            stderr.contains("differ in their configuration"),
            "{case}: {stderr}"
        );
        assert!(
            !Path::new(&s.path(&format!("mismatch_{case}/metrics.jsonl"))).exists(),
            "{case}: no step ran"
        );
    }
}

#[test]
fn both_task_distillation_phases_with_evaluation_on_two_ranks() {
    if !have_mpirun() {
        return;
    }
    let s = Setup::new();
    let mut args = s.td1("both");
    let phase = args.iter().position(|a| a == "1").unwrap();
    args[phase] = "both".into();
    args.extend(
        [
            "--td-phase2-epoch-size",
            "2",
            "--eval-data-dir",
            &s.path("dev.tfrecord"),
            "--task-name",
            "MNLI",
            "--export-hf",
            &s.path("both/student_hf"),
        ]
        .map(String::from),
    );
    let out = s.two(&args, None).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Rank 0 evaluated once per epoch of phase 2 and exported the best student.
    let evals = std::fs::read_to_string(s.path("both/eval.log")).unwrap();
    assert_eq!(evals.lines().count(), 2, "{evals}");
    assert!(Path::new(&s.path("both/student_hf/config.json")).is_file());
    assert!(Path::new(&s.path("both/tinybert_td_phase2_save_ckpt")).is_dir());
}
