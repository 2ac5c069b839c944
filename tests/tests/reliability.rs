//! Wrong numbers are refused before the first step, naming where they are; files are never
//! overwritten or left half-written; SIGINT stops between steps; a second run into a busy
//! output directory is refused; overflow at loss scale 1 stops the run (issue 9).

use runtime::checkpoint;
use runtime::data::example::Feature;
use runtime::tensor_io::RawTensor;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tbc_tests::e2e::*;

/// One epoch of td1 of the tiny trainer on `data` into `out`, with `extra` flags.
fn td1(d: &Path, data: &str, out: &str, extra: &[&str]) -> Vec<String> {
    td1_epochs(d, data, out, "1", extra)
}

fn td1_epochs(d: &Path, data: &str, out: &str, epochs: &str, extra: &[&str]) -> Vec<String> {
    let s = |p: &str| d.join(p).display().to_string();
    let mut v = owned(&[
        "task-distill",
        "--td-phase",
        "1",
        "--load-teacher-ckpt-path",
        &s("teacher.safetensors"),
        "--load-gd-ckpt-path",
        &s("student.safetensors"),
        "--train-data-dir",
        &s(data),
        "--td-phase1-epoch-size",
        epochs,
        "--enable-data-sink",
        "false",
        "--output-dir",
        &s(out),
    ]);
    v.extend(extra.iter().map(|x| x.to_string()));
    v
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Every file below `dir` whose name is one of tbc's temporaries.
fn temporaries(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            }
            if runtime::temp_files::parse(&e.path()).is_some() {
                out.push(e.path().display().to_string());
            }
        }
    }
    out
}

#[test]
fn bad_values_and_unsafe_outputs_are_refused_before_the_first_step() {
    let w = Workdir::new("mindspore", 8, 5);
    let (d, trainer) = (w.path(), &w.trainer);
    let fails = |data: &str, extra: &[&str]| fail(trainer, &args(&td1(d, data, "o", extra)), d);

    // Numeric flags: the range is in the message.
    for (flag, value, says) in [
        ("--learning-rate", "nan", "finite"),
        ("--learning-rate", "-1e-5", "(0, 1]"),
        ("--learning-rate", "5e5", "(0, 1]"),
        ("--loss-scale-value", "inf", "finite"),
        ("--data-sink-steps", "0", "at least 1"),
        ("--save-ckpt-step", "0", "at least 1"),
        ("--max-ckpt-num", "0", "at least 1"),
    ] {
        let err = fails("train.tfrecord", &[&format!("{flag}={value}")]);
        assert!(
            err.contains(flag) && err.contains(says),
            "{flag} {value}: {err}"
        );
    }
    let zero_epochs = td1_epochs(d, "train.tfrecord", "o", "0", &[]);
    let err = fail(trainer, &args(&zero_epochs), d);
    assert!(err.contains("at least 1"), "{err}");

    // Data: a token id past the vocabulary (100) in record 5, named with file, record, feature.
    let mut row = 0;
    write_rows(&d.join("bad_ids.tfrecord"), 8, 1, false, |_| {
        row += 1;
        let mut ids = vec![5i64; 16];
        if row == 6 {
            ids[3] = 5000;
        }
        (ids, 16, Feature::Int64(vec![1]))
    });
    let err = fails("bad_ids.tfrecord", &[]);
    for part in [
        "bad_ids.tfrecord",
        "record 5",
        "'input_ids'",
        "5000",
        "vocab_size",
    ] {
        assert!(err.contains(part), "{part}: {err}");
    }
    assert!(!d.join("o/tinybert_td_phase1_save_ckpt").exists() || temporaries(d).is_empty());
    // Labels outside the 3 classes (td1 reads none, ft does).
    write_rows(&d.join("bad_labels.tfrecord"), 8, 1, false, |_| {
        (vec![5; 16], 16, Feature::Int64(vec![7]))
    });
    let s = |p: &str| d.join(p).display().to_string();
    let err = fail(
        trainer,
        &[
            "finetune",
            "--load-teacher-ckpt-path",
            &s("teacher.safetensors"),
            "--train-data-dir",
            &s("bad_labels.tfrecord"),
            "--output-dir",
            &s("ft"),
        ],
        d,
    );
    assert!(
        err.contains("'label_ids'") && err.contains("num_labels"),
        "{err}"
    );

    // A teacher with NaN: refused by tensor name.
    let mut t = checkpoint::load_weights(&d.join("teacher.safetensors")).unwrap();
    let name = "bert.encoder.layer.0.output.dense.bias";
    let n = t[name].numel();
    let mut v = vec![0.5; n];
    v[2] = f64::NAN;
    t.insert(
        name.into(),
        RawTensor::from_f64(plan::ElemType::F32, vec![n], &v),
    );
    checkpoint::save_weights(&d.join("nan_teacher.safetensors"), &t).unwrap();
    let err = fail(
        trainer,
        &args(&td1(d, "train.tfrecord", "o", &[]))
            .iter()
            .map(|a| {
                if a.ends_with("/teacher.safetensors") {
                    s("nan_teacher.safetensors")
                } else {
                    a.to_string()
                }
            })
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        d,
    );
    assert!(err.contains(name) && err.contains("NaN"), "{err}");

    // A resume checkpoint that lacks a trained tensor is an error, not a fresh start.
    let with_ckpts = td1(d, "train.tfrecord", "o3", &["--save-ckpt-step", "1"]);
    ok(trainer, &args(&with_ckpts), d);
    let ckdir = d.join("o3/tinybert_td_phase1_save_ckpt");
    let newest = checkpoint::newest(&ckdir, checkpoint::Newest::Step)
        .unwrap()
        .unwrap();
    let mut w = checkpoint::load_weights(&newest.weights).unwrap();
    w.remove("bert.encoder.layer.0.output.dense.bias");
    checkpoint::save_weights(&newest.weights, &w).unwrap();
    let mut resume = with_ckpts.clone();
    resume.push("--resume".into());
    let err = fail(trainer, &args(&resume), d);
    assert!(
        err.contains("lacks 1 student tensor(s)")
            && err.contains("bert.encoder.layer.0.output.dense.bias"),
        "{err}"
    );

    // `trainer step` checks a safetensors batch: an id past the vocabulary, by element.
    let mut batch =
        runtime::tensor_io::read(&tbc_tests::tiny_dir().join("batch.safetensors")).unwrap();
    let ids = batch.get_mut("input_ids").unwrap();
    ids.bytes[4 * 19..4 * 20].copy_from_slice(&5000i32.to_le_bytes());
    let bad_batch = d.join("bad_batch.safetensors");
    let tensors: Vec<(String, RawTensor)> = batch.into_iter().collect();
    runtime::tensor_io::write(&bad_batch, &tensors, &Default::default()).unwrap();
    let err = fail(
        trainer,
        &[
            "step",
            "--phase",
            "td1",
            "--weights",
            &tbc_tests::tiny_dir()
                .join("weights.safetensors")
                .display()
                .to_string(),
            "--batch",
            &s("bad_batch.safetensors"),
            "--out",
            &s("step_out.safetensors"),
        ],
        d,
    );
    assert!(
        err.contains("'input_ids' holds 5000 at element 19") && err.contains("vocab_size"),
        "{err}"
    );

    // Exports never replace an input.
    let err = fails(
        "train.tfrecord",
        &["--export-hf", &s("teacher.safetensors")],
    );
    assert!(
        err.contains("--export-hf") && err.contains("reads"),
        "{err}"
    );
    let err = fail(
        trainer,
        &[
            "export-hf",
            "--ckpt",
            &s("student.safetensors"),
            "-o",
            &s("student.safetensors"),
        ],
        d,
    );
    assert!(err.contains("would replace"), "{err}");
    assert!(checkpoint::load_weights(&d.join("student.safetensors")).is_ok());

    // A data directory: files named like "imdb" are data; MindRecord .db index files are not;
    // the run lists what it reads; a stale temporary from a killed run is swept.
    let data = d.join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::copy(d.join("train.tfrecord"), data.join("imdb_train.tfrecord")).unwrap();
    std::fs::write(data.join("train.mindrecord.db"), b"not a tfrecord").unwrap();
    std::fs::create_dir_all(d.join("o2")).unwrap();
    std::fs::write(d.join("o2/.metrics.jsonl.tmp4194305"), b"stale").unwrap();
    let out = ok(trainer, &args(&td1(d, "data", "o2", &[])), d);
    assert!(
        out.contains("8 rows from 1 file(s): imdb_train.tfrecord"),
        "{out}"
    );
    assert!(out.contains("removed 1 temporary file(s)"), "{out}");
    assert!(temporaries(d).is_empty(), "{:?}", temporaries(d));
}

#[test]
fn overflow_at_loss_scale_one_stops_the_run_with_a_clear_error() {
    let w = Workdir::new("mindspore", 24, 4);
    let (d, trainer) = (w.path(), &w.trainer);
    make_teacher_overflow(&d.join("teacher.safetensors"));
    let extra = ["--loss-scale-value", "2", "--overflow-patience", "3"];
    let err = fail(trainer, &args(&td1(d, "train.tfrecord", "o", &extra)), d);
    // Step 1 at scale 2 halves it; steps 2..=4 overflow at scale 1.
    assert!(
        err.contains("steps 2..=4 all overflowed at loss scale 1"),
        "{err}"
    );
}

#[test]
fn sigint_stops_between_steps_a_busy_output_dir_is_refused_and_resume_continues() {
    let w = Workdir::new("mindspore", 64, 4);
    let (d, trainer) = (w.path(), &w.trainer);
    // 16 steps per epoch × 100 000 epochs: far longer than the test waits.
    let long = td1_epochs(
        d,
        "train.tfrecord",
        "o",
        "100000",
        &["--save-ckpt-step", "7"],
    );
    let start = |a: &[String]| {
        Command::new(trainer)
            .args(a)
            .current_dir(d)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut child = start(&long);
    // Wait until the first checkpoint exists: the run holds the lock and is stepping.
    let ckpts = d.join("o/tinybert_td_phase1_save_ckpt");
    let t0 = Instant::now();
    while checkpoint::list(&ckpts).map_or(true, |l| l.is_empty()) {
        if let Some(status) = child.try_wait().unwrap() {
            let o = child.wait_with_output().unwrap();
            panic!(
                "the run ended ({status}): {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no checkpoint after 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let busy = fail(trainer, &args(&long), d);
    assert!(busy.contains("in use by another tbc run"), "{busy}");
    let kill = |pid: u32, sig: &str| {
        Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
    };
    kill(child.id(), "-INT");
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "an interrupted run exits non-zero");
    assert!(err.contains("interrupted after step"), "{err}");
    assert!(err.contains("--resume"), "{err}");
    assert!(temporaries(d).is_empty(), "{:?}", temporaries(d));
    // The same command with --resume continues from the newest checkpoint.
    let mut resumed = long.clone();
    resumed.push("--resume".into());
    let child = start(&resumed);
    std::thread::sleep(Duration::from_millis(1500));
    kill(child.id(), "-TERM");
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("resuming td1 from"), "{err}");
    assert!(temporaries(d).is_empty(), "{:?}", temporaries(d));
}

/// The newest checkpoint pair of `dir`: weights and moments with the state, tensor by tensor.
fn newest_checkpoint(dir: &Path) -> (u64, Vec<(String, Vec<u8>)>) {
    let found = checkpoint::newest(dir, checkpoint::Newest::Step)
        .unwrap()
        .expect("a checkpoint");
    let mut tensors: Vec<(String, Vec<u8>)> = Vec::new();
    for path in [&found.weights, &found.state] {
        for (name, t) in runtime::tensor_io::read(path).unwrap() {
            tensors.push((name, t.bytes));
        }
    }
    let step = found.step() as u64;
    (step, tensors)
}

#[test]
fn sigint_then_twenty_sigkills_each_resumed_end_bit_identical_to_an_uninterrupted_run() {
    let w = Workdir::new("mindspore", 40, 9);
    let (d, trainer) = (w.path(), &w.trainer);
    // 10 batches × 40 epochs, a checkpoint every step, shuffled.
    let run_args = |out: &str| {
        td1_epochs(
            d,
            "train.tfrecord",
            out,
            "40",
            &[
                "--save-ckpt-step",
                "1",
                "--max-ckpt-num",
                "2",
                "--do-shuffle",
                "true",
            ],
        )
    };
    let reference = run_args("uninterrupted");
    ok(trainer, &args(&reference), d);
    let ckpts = "tinybert_td_phase1_save_ckpt";
    let (steps, expected) = newest_checkpoint(&d.join("uninterrupted").join(ckpts));
    assert_eq!(steps, 400);

    let mut resumed = run_args("interrupted");
    resumed.push("--resume".into());
    let start = || {
        Command::new(trainer)
            .args(&resumed)
            .current_dir(d)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let signal = |pid: u32, sig: &str| {
        Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
    };
    let mut rng = Lcg::new(2026);
    let mut stops = Vec::new();
    let newest = || {
        checkpoint::newest(&d.join("interrupted").join(ckpts), checkpoint::Newest::Step)
            .ok()
            .flatten()
            .map_or(0, |c| c.step() as u64)
    };
    for round in 0..21 {
        let mut child = start();
        // A random point: after 1 to 25 more checkpoints, then 0 to 20 ms more (mid-step or
        // mid-write as it falls).
        let target = newest() + 1 + rng.below(25);
        let t0 = Instant::now();
        while newest() < target && child.try_wait().unwrap().is_none() {
            assert!(t0.elapsed() < Duration::from_secs(60), "no progress");
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(rng.below(21)));
        let finished = child.try_wait().unwrap().is_some();
        signal(child.id(), if round == 0 { "-INT" } else { "-KILL" });
        let o = child.wait_with_output().unwrap();
        if !finished {
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(!err.contains("panicked"), "{err}");
        }
        stops.push(newest());
    }
    println!("newest checkpoint after each stop: {stops:?}");
    assert!(
        stops[20] < 400,
        "the kills came too late to interrupt: {stops:?}"
    );
    // Finish, then compare with the uninterrupted run bit for bit.
    let o = start().wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (steps, got) = newest_checkpoint(&d.join("interrupted").join(ckpts));
    assert_eq!(steps, 400);
    assert_eq!(got.len(), expected.len());
    for ((n, a), (m, b)) in got.iter().zip(&expected) {
        assert_eq!(n, m);
        assert!(a == b, "{n} differs from the uninterrupted run");
    }
    assert!(temporaries(d).is_empty(), "{:?}", temporaries(d));
}
