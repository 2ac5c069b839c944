//! The trainer executable doing the whole job on the tiny configs: teacher fine-tuning, general
//! distillation, task distillation phases 1 and 2 with evaluation, standalone evaluation, the
//! Hugging Face export; `--resume` after SIGKILL is bit-identical to an uninterrupted run; an
//! injected overflow skips the update, halves the scale and leaves the LR step; bad input is a
//! clear error.

use runtime::checkpoint;
use runtime::data::example::Feature;
use runtime::metrics::MetricsLine;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use tbc_tests::e2e::*;
use tbc_tests::*;

fn falls(v: &[f64]) -> bool {
    let k = (v.len() / 4).max(1);
    let head: f64 = v[..k].iter().sum::<f64>() / k as f64;
    let tail: f64 = v[v.len() - k..].iter().sum::<f64>() / k as f64;
    tail < head
}

/// `finetune` of `d/teacher.safetensors` on `d/train.tfrecord` (6 epochs, sink 4, lr 1e-3)
/// with evaluation on `d/dev.tfrecord`, into `d/ft`; returns stdout and stderr.
fn finetune(trainer: &Path, d: &Path, extra: &[&str]) -> String {
    let s = |p: &str| d.join(p).display().to_string();
    let base = [
        "finetune",
        "--load-teacher-ckpt-path",
        &s("teacher.safetensors"),
        "--train-data-dir",
        &s("train.tfrecord"),
        "--eval-data-dir",
        &s("dev.tfrecord"),
        "--epoch-size",
        "6",
        "--data-sink-steps",
        "4",
        "--learning-rate",
        "1e-3",
        "--output-dir",
        &s("ft"),
    ];
    ok(trainer, &[&base[..], extra].concat(), d)
}

/// `task-distill` (both phases, `epochs` each, sink 4, lr 1e-3) of the student at `d/gd` with
/// the teacher `d/ft/teacher_finetuned` on `d/train.tfrecord`, evaluated on `d/dev.tfrecord`,
/// into `d/td`; returns stdout and stderr.
fn task_distill(trainer: &Path, d: &Path, gd: &str, epochs: (u32, u32), extra: &[&str]) -> String {
    let s = |p: &str| d.join(p).display().to_string();
    let (e1, e2) = (epochs.0.to_string(), epochs.1.to_string());
    let base = [
        "task-distill",
        "--load-teacher-ckpt-path",
        &s("ft/teacher_finetuned"),
        "--load-gd-ckpt-path",
        &s(gd),
        "--train-data-dir",
        &s("train.tfrecord"),
        "--eval-data-dir",
        &s("dev.tfrecord"),
        "--td-phase1-epoch-size",
        &e1,
        "--td-phase2-epoch-size",
        &e2,
        "--data-sink-steps",
        "4",
        "--learning-rate",
        "1e-3",
        "--output-dir",
        &s("td"),
    ];
    ok(trainer, &[&base[..], extra].concat(), d)
}

/// `eval` of the best student `d/td/eval_model.safetensors` on `d/dev.tfrecord` for `task`;
/// returns the output of a run that must succeed, or the error of one that must fail.
fn eval_student(trainer: &Path, d: &Path, task: &str, succeeds: bool) -> String {
    let s = |p: &str| d.join(p).display().to_string();
    let args = [
        "eval",
        "--eval-data-dir",
        &s("dev.tfrecord"),
        "--load-td1-ckpt-path",
        &s("td/eval_model.safetensors"),
        "--task-name",
        task,
    ];
    if succeeds {
        ok(trainer, &args, d)
    } else {
        fail(trainer, &args, d)
    }
}

#[test]
fn finetune_gd_td1_td2_eval_chain_and_losses_fall() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let trainer = d.join("trainer");
    compile("paper", None, &trainer);
    write_data(&d.join("train.tfrecord"), 64, 1);
    write_data(&d.join("dev.tfrecord"), 32, 2);
    fixture_model("teacher", &d.join("teacher.safetensors"));
    let s = |p: &str| d.join(p).display().to_string();

    // Teacher fine-tuning with dev evaluation.
    let out = finetune(&trainer, d, &[]);
    assert!(out.contains("The best acc is"), "{out}");
    let teacher = d.join("ft/teacher_finetuned");
    assert!(teacher.join("model.safetensors").is_file());
    assert!(teacher.join("config.json").is_file());

    // General distillation on the same text (labels ignored).
    ok(
        &trainer,
        &[
            "general-distill",
            "--load-teacher-ckpt-path",
            &s("ft/teacher_finetuned"),
            "--data-dir",
            &s("train.tfrecord"),
            "--epoch-size",
            "4",
            "--data-sink-steps",
            "4",
            "--save-ckpt-step",
            "8",
            "--max-ckpt-num",
            "2",
            "--learning-rate",
            "1e-3",
            "--output-dir",
            &s("gd"),
        ],
        d,
    );
    let gd = checkpoint::list(&d.join("gd/tinybert_gd_save_ckpt")).unwrap();
    // Rotation keeps 2 of the 8 periodic checkpoints; steps are a multiple of 8, so no extra final one.
    let mut ks: Vec<u64> = gd.iter().map(|p| p.k).collect();
    ks.sort();
    assert_eq!(ks, vec![7, 8], "{gd:?}");

    // Task distillation, both phases, starting from gd's newest checkpoint.
    let out = task_distill(
        &trainer,
        d,
        "gd/tinybert_gd_save_ckpt",
        (4, 4),
        &["--task-name", "MNLI", "--export-hf", &s("td/student_hf")],
    );
    assert!(out.contains("The best acc is"), "{out}");
    assert!(out.contains("epoch: 1, step: 4, outputs are"), "{out}");
    assert!(out.contains("per step time"), "{out}");
    // stderr is not a terminal here: plain progress lines instead of the bar.
    assert!(out.contains("[td2] step 64/64 loss "), "{out}");
    assert!(out.contains("samples/s eta "), "{out}");
    assert!(d.join("td/eval_model.safetensors").is_file());
    assert!(d.join("td/student_hf/model.safetensors").is_file());
    assert!(std::fs::read_to_string(d.join("td/eval.log"))
        .unwrap()
        .contains("acc_num"));
    // td1 started from gd: its first logged loss is the gd student's, not a fresh one's.
    let l = losses(&d.join("td/metrics.jsonl"));
    for phase in ["td1", "td2"] {
        assert!(
            falls(&l[phase]),
            "{phase} loss does not fall: {:?}",
            l[phase]
        );
    }
    let l_ft = losses(&d.join("ft/metrics.jsonl"));
    assert!(
        falls(&l_ft["ft"]),
        "ft loss does not fall: {:?}",
        l_ft["ft"]
    );
    let l_gd = losses(&d.join("gd/metrics.jsonl"));
    assert!(
        falls(&l_gd["gd"]),
        "gd loss does not fall: {:?}",
        l_gd["gd"]
    );
    assert!(
        l["td1"][0] < l_gd["gd"][0],
        "td1 should start from the distilled student (td1 first {} vs gd first {})",
        l["td1"][0],
        l_gd["gd"][0]
    );

    // Standalone evaluation of the best student and of the teacher.
    let out = eval_student(&trainer, d, "MNLI", true);
    assert!(out.contains("============== acc is"), "{out}");
    let out = ok(
        &trainer,
        &[
            "eval",
            "--eval-data-dir",
            &s("dev.tfrecord"),
            "--load-teacher-ckpt-path",
            &s("ft/teacher_finetuned"),
            "--task-name",
            "MNLI",
        ],
        d,
    );
    assert!(out.contains("============== acc is"), "{out}");
}

/// `n` examples of a learnable regression task (STS-B-like scores in [0, 5]): the score is 5 × the
/// share of token 10 among the sentence's words.
fn write_scores(path: &Path, n: usize, seed: u64) {
    write_rows(path, n, seed, false, |rng| {
        let len = 6 + rng.below(9) as usize;
        let share = rng.below(5);
        let mut ids = vec![0i64; 16];
        ids[0] = 2;
        let mut tens = 0;
        for id in ids.iter_mut().take(len - 1).skip(1) {
            *id = if rng.below(4) < share {
                10
            } else {
                20 + rng.below(80) as i64
            };
            tens += (*id == 10) as usize;
        }
        ids[len - 1] = 3;
        let score = 5.0 * tens as f32 / (len - 2) as f32;
        (ids, len, Feature::Float(vec![score]))
    });
}

/// A tiny config with a one-output (regression) head.
fn regression_config(name: &str, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(tiny_dir().join(name)).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(&text).unwrap();
    cfg["num_labels"] = 1.into();
    let path = dir.join(format!("regression_{name}"));
    std::fs::write(&path, cfg.to_string()).unwrap();
    path
}

/// The tiny fixture's `<prefix>.*` weights with the one-output classifier of
/// `regression.safetensors`.
fn fixture_regression_model(prefix: &str, out: &Path) {
    fixture_model(prefix, out);
    let mut w = checkpoint::load_weights(out).unwrap();
    let reg = runtime::tensor_io::read(&tiny_dir().join("regression.safetensors")).unwrap();
    let p = format!("{prefix}.");
    for (name, t) in reg {
        if let Some(n) = name.strip_prefix(&p) {
            w.insert(n.to_string(), t);
        }
    }
    checkpoint::save_weights(out, &w).unwrap();
}

/// Eval records of a metrics file: (phase, metrics).
fn evals(metrics: &Path) -> Vec<(String, BTreeMap<String, f64>)> {
    std::fs::read_to_string(metrics)
        .unwrap()
        .lines()
        .filter_map(|line| match serde_json::from_str(line).unwrap() {
            MetricsLine::Eval(e) => Some((e.phase, e.metrics)),
            _ => None,
        })
        .collect()
}

#[test]
fn sts_b_regression_finetune_td_and_eval_report_correlations() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let trainer = d.join("trainer");
    let (tc, sc) = (
        regression_config("teacher.json", d),
        regression_config("student.json", d),
    );
    compile_tiny_trainer_configs(
        "paper",
        "ft,eval_teacher,td1,td2,eval",
        Some(&tc),
        Some(&sc),
        &trainer,
    );
    write_scores(&d.join("train.tfrecord"), 64, 1);
    write_scores(&d.join("dev.tfrecord"), 32, 2);
    fixture_regression_model("teacher", &d.join("teacher.safetensors"));
    fixture_regression_model("student", &d.join("student.safetensors"));

    // The teacher learns the scores (MSE), evaluated by Pearson/Spearman.
    let out = finetune(&trainer, d, &["--task-name", "STS-B"]);
    assert!(out.contains("The best corr is"), "{out}");
    let l = losses(&d.join("ft/metrics.jsonl"));
    assert!(falls(&l["ft"]), "ft loss does not fall: {:?}", l["ft"]);
    let e = evals(&d.join("ft/metrics.jsonl"));
    let last = &e.last().unwrap().1;
    for k in ["pearson", "spearmanr", "corr"] {
        assert!(last[k].is_finite() && last[k].abs() <= 1.0, "{k}: {last:?}");
    }
    assert!(
        last["pearson"] > 0.5,
        "the fine-tuned teacher should track the scores: {last:?}"
    );

    // Task distillation: td1 on the intermediate layers, td2 on MSE to the labels.
    let out = task_distill(
        &trainer,
        d,
        "student.safetensors",
        (2, 6),
        &["--task-name", "sts-b"],
    );
    assert!(out.contains("The best corr is"), "{out}");
    let l = losses(&d.join("td/metrics.jsonl"));
    assert!(falls(&l["td2"]), "td2 loss does not fall: {:?}", l["td2"]);
    assert!(std::fs::read_to_string(d.join("td/eval.log"))
        .unwrap()
        .contains("corr"));

    // Standalone evaluation prints the correlations.
    let out = eval_student(&trainer, d, "STS-B", true);
    assert!(out.contains("============== pearson is"), "{out}");
    assert!(out.contains("============== spearmanr is"), "{out}");
    // A classification task on a regression head, and float scores into a classifier: clear errors.
    let err = eval_student(&trainer, d, "SST-2", false);
    assert!(err.contains("one-output (regression) head"), "{err}");
}

/// The tiny student with dropout on, so resuming must also continue the dropout stream.
fn student_with_dropout(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(tiny_dir().join("student.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["hidden_dropout_prob"] = serde_json::json!(0.1);
    v["attention_probs_dropout_prob"] = serde_json::json!(0.1);
    let p = dir.join("student_dropout.json");
    std::fs::write(&p, v.to_string()).unwrap();
    p
}

fn td1_args<'a>(s: &'a dyn Fn(&str) -> String, out: &'a str) -> Vec<String> {
    owned(&[
        "task-distill",
        "--td-phase",
        "1",
        "--load-teacher-ckpt-path",
        &s("teacher.safetensors"),
        "--load-gd-ckpt-path",
        &s("student.safetensors"),
        "--train-data-dir",
        &s("train.tfrecord"),
        "--td-phase1-epoch-size",
        "3",
        "--enable-data-sink",
        "false",
        "--save-ckpt-step",
        "1",
        "--max-ckpt-num",
        "2",
        "--do-shuffle",
        "true",
        "--output-dir",
        out,
    ])
}

#[test]
fn resume_after_sigkill_is_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let trainer = d.join("trainer");
    compile("mindspore", Some(&student_with_dropout(d)), &trainer);
    write_data(&d.join("train.tfrecord"), 40, 3);
    fixture_model("teacher", &d.join("teacher.safetensors"));
    fixture_model("student", &d.join("student.safetensors"));
    let s = |p: &str| d.join(p).display().to_string();
    // td1 without data sink: a checkpoint every step, shuffled data, dropout.
    check_resume(
        &trainer,
        d,
        &|out| td1_args(&s, out),
        ("td1", "tinybert_td_phase1_save_ckpt"),
        30, // 10 batches × 3 epochs
    );
}

/// gd with data sink and the warmup + linear-decay schedule of the mindspore preset (its dynamic
/// loss scale carried through the checkpoint too).
#[test]
fn gd_resume_with_sink_is_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let trainer = d.join("trainer");
    compile_tiny_trainer("mindspore", "gd", Some(&student_with_dropout(d)), &trainer);
    write_data(&d.join("train.tfrecord"), 40, 11);
    fixture_model("teacher", &d.join("teacher.safetensors"));
    let s = |p: &str| d.join(p).display().to_string();
    let args = |out: &str| -> Vec<String> {
        owned(&[
            "general-distill",
            "--load-teacher-ckpt-path",
            &s("teacher.safetensors"),
            "--data-dir",
            &s("train.tfrecord"),
            "--epoch-size",
            "3",
            "--enable-data-sink",
            "true",
            "--data-sink-steps",
            "2",
            "--save-ckpt-step",
            "2",
            "--max-ckpt-num",
            "2",
            "--output-dir",
            out,
        ])
    };
    check_resume(&trainer, d, &args, ("gd", "tinybert_gd_save_ckpt"), 30);
}

/// td2 with data sink, dev evaluation and the best model: the resumed run also keeps the best
/// metric and ends with the same `eval_model`.
#[test]
fn td2_resume_with_sink_and_evaluation_is_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let trainer = d.join("trainer");
    compile("paper", Some(&student_with_dropout(d)), &trainer);
    write_data(&d.join("train.tfrecord"), 40, 8);
    write_data(&d.join("dev.tfrecord"), 16, 9);
    fixture_model("teacher", &d.join("teacher.safetensors"));
    fixture_model("student", &d.join("student.safetensors"));
    let s = |p: &str| d.join(p).display().to_string();
    let args = |out: &str| -> Vec<String> {
        owned(&[
            "task-distill",
            "--td-phase",
            "2",
            "--load-teacher-ckpt-path",
            &s("teacher.safetensors"),
            "--load-td1-ckpt-path",
            &s("student.safetensors"),
            "--train-data-dir",
            &s("train.tfrecord"),
            "--eval-data-dir",
            &s("dev.tfrecord"),
            "--task-name",
            "MNLI",
            "--td-phase2-epoch-size",
            "3",
            "--enable-data-sink",
            "true",
            "--data-sink-steps",
            "2",
            "--save-ckpt-step",
            "2",
            "--max-ckpt-num",
            "2",
            "--learning-rate",
            "1e-3",
            "--output-dir",
            out,
        ])
    };
    check_resume(
        &trainer,
        d,
        &args,
        ("td2", "tinybert_td_phase2_save_ckpt"),
        30,
    );
    let best = |run: &str| std::fs::read(d.join(run).join("eval_model.safetensors")).unwrap();
    assert!(
        best("full") == best("part"),
        "eval_model differs after resume"
    );
}

/// Runs `args(out)` to the end in `full`; runs it in `part`, SIGKILLs it at a step chosen from
/// the clock, resumes with `--resume`; then the last checkpoints (weights, Adam moments, state)
/// of both runs must be bit-identical.
fn check_resume(
    trainer: &Path,
    d: &Path,
    args: &dyn Fn(&str) -> Vec<String>,
    (phase, ckpt): (&str, &str),
    total: u64,
) {
    let s = |p: &str| d.join(p).display().to_string();
    let full = s("full");
    let a = args(&full);
    ok(
        trainer,
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        d,
    );

    // Kill at a point chosen from the clock, counted in metrics lines (one per logged step or
    // evaluation: as many as the full run wrote), then resume until done.
    let lines = std::fs::read_to_string(d.join("full/metrics.jsonl"))
        .unwrap()
        .lines()
        .count() as u64;
    // Within the first two thirds, so that the run is still going when the kill arrives.
    assert!(lines >= 9, "too few metrics lines to cut a run: {lines}");
    let cut = 3
        + (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64)
            % (lines * 2 / 3 - 3);
    let part = s("part");
    let mut a = args(&part);
    let mut child = Command::new(trainer)
        .args(&a)
        .current_dir(d)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let metrics = d.join("part/metrics.jsonl");
    let start = std::time::Instant::now();
    loop {
        let n = std::fs::read_to_string(&metrics)
            .map(|t| t.lines().count() as u64)
            .unwrap_or(0);
        if n >= cut || start.elapsed().as_secs() > 120 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let at_kill = checkpoint::newest(&d.join("part").join(ckpt), checkpoint::Newest::Step)
        .unwrap()
        .map_or(0, |p| p.step());
    assert!(
        (at_kill as u64) < total,
        "the run finished before it was killed (cut at {cut})"
    );
    a.push("--resume".into());
    let out = ok(
        trainer,
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        d,
    );
    assert!(out.contains(&format!("resuming {phase}")), "{out}");

    let last = |root: &str| {
        let p = checkpoint::newest(&Path::new(root).join(ckpt), checkpoint::Newest::Step)
            .unwrap()
            .unwrap();
        assert_eq!(p.step() as u64, total);
        (
            checkpoint::load_weights(&p.weights).unwrap(),
            checkpoint::load_state::<serde_json::Value>(&p.state).unwrap(),
        )
    };
    let (wa, (ma, sa)) = last(&full);
    let (wb, (mb, sb)) = last(&part);
    assert_eq!(wa.keys().collect::<Vec<_>>(), wb.keys().collect::<Vec<_>>());
    for (name, t) in &wa {
        assert!(
            t.bytes == wb[name].bytes,
            "{name} differs after resume (killed at step {at_kill})"
        );
    }
    assert!(ma == mb, "Adam moments differ after resume");
    assert_eq!(sa, sb, "trainer state differs after resume");
    println!(
        "{phase}: killed at checkpoint step {at_kill} (cut {cut}), resumed to {total}: bit-identical"
    );
}

#[test]
fn injected_overflow_skips_the_update_halves_the_scale_and_keeps_the_lr_step() {
    let w = Workdir::new("mindspore", 4, 4);
    let (d, trainer) = (w.path(), &w.trainer);
    let s = |p: &str| d.join(p).display().to_string();
    // The injection: the hidden-state loss and every gradient overflow in the first step.
    make_teacher_overflow(&d.join("teacher.safetensors"));
    let out = ok(
        trainer,
        &[
            "task-distill",
            "--td-phase",
            "1",
            "--load-teacher-ckpt-path",
            &s("teacher.safetensors"),
            "--load-gd-ckpt-path",
            &s("student.safetensors"),
            "--train-data-dir",
            &s("train.tfrecord"),
            "--td-phase1-epoch-size",
            "1",
            "--enable-data-sink",
            "false",
            "--save-ckpt-step",
            "1",
            "--loss-scale-value",
            "1048576",
            "--output-dir",
            &s("o"),
        ],
        d,
    );
    assert!(
        out.contains("Tensor(shape=[], dtype=Bool, True)"),
        "overflow not reported: {out}"
    );
    let p = checkpoint::newest(
        &d.join("o/tinybert_td_phase1_save_ckpt"),
        checkpoint::Newest::Step,
    )
    .unwrap()
    .unwrap();
    let (_, state) = checkpoint::load_state::<serde_json::Value>(&p.state).unwrap();
    let sc = &state["scalars"];
    assert_eq!(sc["state.loss_scale"].as_f64().unwrap(), 524288.0);
    assert_eq!(sc["state.step"].as_f64().unwrap(), 0.0, "LR step advanced");
    assert_eq!(sc["state.cur_iter"].as_f64().unwrap(), 2.0);
    let before = runtime::tensor_io::read(&d.join("student.safetensors")).unwrap();
    let after = checkpoint::load_weights(&p.weights).unwrap();
    for (name, t) in &before {
        if !name.starts_with("fit_dense") {
            assert!(
                t.bytes == after[name].bytes,
                "{name} was updated on overflow"
            );
        }
    }
}

#[test]
fn bad_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let trainer = d.join("trainer");
    compile("paper", None, &trainer);
    write_data(&d.join("train.tfrecord"), 8, 5);
    fixture_model("teacher", &d.join("teacher.safetensors"));
    let s = |p: &str| d.join(p).display().to_string();
    let gd = |data: &str, teacher: &str, out: &str| -> Vec<String> {
        owned(&[
            "general-distill",
            "--data-dir",
            data,
            "--load-teacher-ckpt-path",
            teacher,
            "--output-dir",
            out,
        ])
    };
    let check = |args: Vec<String>, needles: &[&str]| {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = fail(&trainer, &argv, d);
        for n in needles {
            assert!(err.contains(n), "expected '{n}' in: {err}");
        }
    };
    // A corrupt record: flip one byte inside record 3's data.
    let mut bytes = std::fs::read(d.join("train.tfrecord")).unwrap();
    let rec = bytes.len() / 8;
    bytes[3 * rec + 20] ^= 0xff;
    std::fs::write(d.join("corrupt.tfrecord"), &bytes).unwrap();
    check(
        gd(&s("corrupt.tfrecord"), &s("teacher.safetensors"), &s("o1")),
        &["corrupt.tfrecord", "record 3"],
    );
    // A schema whose shapes disagree with the records.
    std::fs::write(
        d.join("schema.json"),
        r#"{"datasetType":"TF","numRows":8,"columns":{"input_ids":{"type":"int64","rank":1,"shape":[128]},"input_mask":{"type":"int64","rank":1,"shape":[128]},"segment_ids":{"type":"int64","rank":1,"shape":[128]}}}"#,
    )
    .unwrap();
    let mut a = gd(&s("train.tfrecord"), &s("teacher.safetensors"), &s("o2"));
    a.extend(["--schema-dir".to_string(), s("schema.json")]);
    check(a, &["128"]);
    // A truncated teacher file.
    let t = std::fs::read(d.join("teacher.safetensors")).unwrap();
    std::fs::write(d.join("truncated.safetensors"), &t[..t.len() / 2]).unwrap();
    check(
        gd(&s("train.tfrecord"), &s("truncated.safetensors"), &s("o3")),
        &["truncated.safetensors"],
    );
    // A teacher without one of its tensors.
    let mut w = checkpoint::load_weights(&d.join("teacher.safetensors")).unwrap();
    w.remove("bert.encoder.layer.3.output.dense.weight");
    checkpoint::save_weights(&d.join("partial.safetensors"), &w).unwrap();
    check(
        gd(&s("train.tfrecord"), &s("partial.safetensors"), &s("o4")),
        &["bert.encoder.layer.3.output.dense.weight"],
    );
    // A teacher tensor of the wrong dtype.
    let mut w = checkpoint::load_weights(&d.join("teacher.safetensors")).unwrap();
    let name = "bert.embeddings.LayerNorm.weight";
    let n = w[name].numel();
    w.insert(
        name.into(),
        runtime::tensor_io::RawTensor::from_f64(plan::ElemType::I32, vec![n], &vec![1.0; n]),
    );
    checkpoint::save_weights(&d.join("wrong_dtype.safetensors"), &w).unwrap();
    check(
        gd(
            &s("train.tfrecord"),
            &s("wrong_dtype.safetensors"),
            &s("o5"),
        ),
        &[name],
    );
    // An output directory that cannot be written: nothing is left behind.
    let ro = d.join("readonly");
    std::fs::create_dir(&ro).unwrap();
    let mut perm = std::fs::metadata(&ro).unwrap().permissions();
    use std::os::unix::fs::PermissionsExt;
    perm.set_mode(0o555);
    std::fs::set_permissions(&ro, perm).unwrap();
    let probe = ro.join("probe");
    if std::fs::write(&probe, b"x").is_ok() {
        // Running as root: permissions do not stop writes; nothing to test here.
        let _ = std::fs::remove_file(&probe);
        println!("skipping the read-only directory case: this user can write anywhere");
    } else {
        check(
            gd(
                &s("train.tfrecord"),
                &s("teacher.safetensors"),
                &s("readonly/out"),
            ),
            &["readonly"],
        );
        assert_eq!(std::fs::read_dir(&ro).unwrap().count(), 0);
    }
    // An output directory below a regular file (fails for root too).
    check(
        gd(
            &s("train.tfrecord"),
            &s("teacher.safetensors"),
            &s("train.tfrecord/out"),
        ),
        &["train.tfrecord/out"],
    );
    // A missing data path.
    check(
        gd(&s("nothing.tfrecord"), &s("teacher.safetensors"), &s("o6")),
        &["nothing.tfrecord"],
    );
    // Input errors found before training leave no output directory behind; the corrupt record
    // (found while training) leaves no file.
    for o in ["o2", "o3", "o4", "o5", "o6"] {
        assert!(!d.join(o).exists(), "{o} was created by a failed run");
    }
    assert_eq!(files_below(&d.join("o1")), Vec::<PathBuf>::new());
}

/// Every file below `dir` (none when it does not exist), sorted.
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_below(&p));
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// On a terminal the progress is an indicatif bar with loss, scale, LR, samples/s and ETA
/// (`script` gives the trainer a pseudo-terminal), not the plain lines.
#[test]
fn a_terminal_gets_the_progress_bar() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let trainer = d.join("trainer");
    compile_tiny_trainer("paper", "gd", None, &trainer);
    write_data(&d.join("train.tfrecord"), 16, 10);
    fixture_model("teacher", &d.join("teacher.safetensors"));
    let s = |p: &str| d.join(p).display().to_string();
    let cmd = format!(
        "{} general-distill --data-dir {} --load-teacher-ckpt-path {} --epoch-size 2 --output-dir {}",
        trainer.display(),
        s("train.tfrecord"),
        s("teacher.safetensors"),
        s("o")
    );
    let o = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("COLUMNS", "160")
        .current_dir(d)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{out}");
    for needle in ["gd [", "] 8/8 loss ", " scale ", " lr ", " samples/s eta "] {
        assert!(
            out.contains(needle),
            "no '{needle}' in the terminal output: {out}"
        );
    }
    assert!(
        !out.contains("[gd] step "),
        "plain progress lines on a terminal: {out}"
    );
}

/// A checkpoint that cannot be written completely (the file-size limit stands in for a full
/// disk, and works for root too) is a clear error naming the file; the earlier checkpoints stay
/// as they were and no partial or temporary file is left.
#[test]
fn a_failed_checkpoint_write_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let trainer = d.join("trainer");
    compile_tiny_trainer("paper", "gd", None, &trainer);
    write_data(&d.join("train.tfrecord"), 8, 7);
    fixture_model("teacher", &d.join("teacher.safetensors"));
    let s = |p: &str| d.join(p).display().to_string();
    let args = |epochs: &str| -> Vec<String> {
        owned(&[
            "general-distill",
            "--data-dir",
            &s("train.tfrecord"),
            "--load-teacher-ckpt-path",
            &s("teacher.safetensors"),
            "--epoch-size",
            epochs,
            "--enable-data-sink",
            "false",
            "--save-ckpt-step",
            "1",
            "--max-ckpt-num",
            "1",
            "--output-dir",
            &s("o"),
        ])
    };
    let first: Vec<String> = args("1");
    ok(
        &trainer,
        &first.iter().map(String::as_str).collect::<Vec<_>>(),
        d,
    );
    let ckpt_dir = d.join("o/tinybert_gd_save_ckpt");
    let snapshot = |dir: &Path| -> Vec<(PathBuf, Vec<u8>)> {
        files_below(dir)
            .into_iter()
            .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
            .collect()
    };
    let before = snapshot(&ckpt_dir);
    assert!(!before.is_empty());
    // Resume for one more epoch with files limited to 8 KiB: the next checkpoint cannot be written.
    let mut resumed = args("2");
    resumed.push("--resume".into());
    let o = Command::new("bash")
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 8; exec \"$0\" \"$@\"")
        .arg(&trainer)
        .args(&resumed)
        .current_dir(d)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success(), "the limited run should fail: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("tinybert_gd_save_ckpt") && err.contains("File too large"),
        "the error should name the checkpoint and the cause: {err}"
    );
    assert_eq!(
        snapshot(&ckpt_dir),
        before,
        "the checkpoints changed after a failed write"
    );
}
