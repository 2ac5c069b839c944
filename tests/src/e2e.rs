//! Helpers of the end-to-end trainer tests: a tiny trainer with every phase, deterministic
//! TFRecord data, the fixture's models as files, and running the trainer.

use crate::{compile_tiny_trainer, tiny_dir};
use runtime::checkpoint;
use runtime::data::example::{Example, Feature};
use runtime::data::tfrecord::Writer;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A tiny trainer with every phase; `student` overrides the tiny student config.
pub fn compile(preset: &str, student: Option<&Path>, out: &Path) {
    compile_tiny_trainer(preset, "ft,eval_teacher,gd,td1,td2,eval", student, out);
}

/// The test data's deterministic random numbers (a 64-bit LCG).
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Lcg {
        let mut g = Lcg(0);
        g.0 = g.step(seed);
        g
    }

    fn step(&self, x: u64) -> u64 {
        x.wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407)
    }

    /// A number in `0..m`.
    pub fn below(&mut self, m: u64) -> u64 {
        self.0 = self.step(self.0);
        (self.0 >> 33) % m
    }
}

/// Writes `n` records of a sequence length 16: `row` gives the token ids, the real length and the
/// label; the mask covers the real tokens and the second half of them is segment 1 when
/// `segments`.
pub fn write_rows(
    path: &Path,
    n: usize,
    seed: u64,
    segments: bool,
    mut row: impl FnMut(&mut Lcg) -> (Vec<i64>, usize, Feature),
) {
    let mut rng = Lcg::new(seed);
    let mut w = Writer::new(std::fs::File::create(path).unwrap());
    for _ in 0..n {
        let (ids, len, label) = row(&mut rng);
        let mask: Vec<i64> = (0..16).map(|i| (i < len) as i64).collect();
        let seg: Vec<i64> = (0..16)
            .map(|i| (segments && i >= len / 2 && i < len) as i64)
            .collect();
        let features = BTreeMap::from([
            ("input_ids".to_string(), Feature::Int64(ids)),
            ("input_mask".to_string(), Feature::Int64(mask)),
            ("segment_ids".to_string(), Feature::Int64(seg)),
            ("label_ids".to_string(), label),
        ]);
        w.write_record(&Example { features }.encode()).unwrap();
    }
}

/// Owned copies of command-line arguments.
pub fn owned(args: &[&str]) -> Vec<String> {
    args.iter().map(|x| x.to_string()).collect()
}

/// `n` examples of a learnable 3-class task: the label is the most frequent of tokens 10, 11,
/// 12 in the sentence (vocab 100, seq 16).
pub fn write_data(path: &Path, n: usize, seed: u64) {
    write_rows(path, n, seed, true, |rng| {
        let label = rng.below(3) as i64;
        let len = 6 + rng.below(9) as usize;
        let mut ids = vec![0i64; 16];
        ids[0] = 2;
        for id in ids.iter_mut().take(len).skip(1) {
            *id = if rng.below(3) == 0 {
                10 + label
            } else {
                20 + rng.below(80) as i64
            };
        }
        ids[len - 1] = 3;
        (ids, len, Feature::Int64(vec![label]))
    });
}

/// The tiny fixture's `<prefix>.*` weights saved under their Hugging Face names.
pub fn fixture_model(prefix: &str, out: &Path) {
    let all = runtime::tensor_io::read(&tiny_dir().join("weights.safetensors")).unwrap();
    let p = format!("{prefix}.");
    let map: BTreeMap<String, runtime::tensor_io::RawTensor> = all
        .into_iter()
        .filter_map(|(n, t)| Some((n.strip_prefix(&p)?.to_string(), t)))
        .collect();
    checkpoint::save_weights(out, &map).unwrap();
}

pub fn run(trainer: &Path, args: &[&str], cwd: &Path) -> Output {
    let o = Command::new(trainer)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    o
}

pub fn ok(trainer: &Path, args: &[&str], cwd: &Path) -> String {
    let o = run(trainer, args, cwd);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    );
    assert!(o.status.success(), "trainer {args:?} failed:\n{out}\n{err}");
    format!("{out}\n{err}")
}

pub fn fail(trainer: &Path, args: &[&str], cwd: &Path) -> String {
    let o = run(trainer, args, cwd);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success(), "trainer {args:?} should fail");
    assert!(
        !err.contains("panicked"),
        "trainer {args:?} panicked: {err}"
    );
    err
}

/// A temporary directory holding a tiny trainer of every phase (`preset`), `rows` records of
/// training data in `train.tfrecord` and the fixture's models in `teacher.safetensors` and
/// `student.safetensors`: the start of most end-to-end tests.
pub struct Workdir {
    pub dir: tempfile::TempDir,
    pub trainer: PathBuf,
}

impl Workdir {
    pub fn new(preset: &str, rows: usize, seed: u64) -> Workdir {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let trainer = d.join("trainer");
        compile(preset, None, &trainer);
        write_data(&d.join("train.tfrecord"), rows, seed);
        fixture_model("teacher", &d.join("teacher.safetensors"));
        fixture_model("student", &d.join("student.safetensors"));
        Workdir { dir, trainer }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Replaces the teacher in `path` with one whose embedding LayerNorm bias is near f32's
/// maximum: finite weights whose activations overflow, so every gradient overflows.
pub fn make_teacher_overflow(path: &Path) {
    let mut t = checkpoint::load_weights(path).unwrap();
    let name = "bert.embeddings.LayerNorm.bias";
    let n = t[name].numel();
    t.insert(
        name.into(),
        runtime::tensor_io::RawTensor::from_f64(plan::ElemType::F32, vec![n], &vec![3e38; n]),
    );
    checkpoint::save_weights(path, &t).unwrap();
}

/// Training losses per phase from a metrics file, in order.
pub fn losses(metrics: &Path) -> BTreeMap<String, Vec<f64>> {
    use runtime::metrics::{read_metrics_jsonl, MetricsLine};
    let mut out: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for (_, line) in read_metrics_jsonl(metrics).unwrap() {
        if let MetricsLine::Train(t) = line {
            out.entry(t.phase).or_default().push(t.loss);
        }
    }
    out
}

/// What a tiny distillation run logged ([`distill`]).
pub struct Distilled {
    /// The logged losses of gd, td1 and td2.
    pub losses: [Vec<f64>; 3],
    /// `eval`'s accuracy lines.
    pub accuracy: Vec<String>,
}

/// general-distill (`epochs.0` epochs) → task-distill (td1 `epochs.1`, td2 `epochs.2`
/// epochs, evaluating) → eval of the resulting model, on `d`'s `train.tfrecord`,
/// `dev.tfrecord` and `teacher.safetensors`, into `d/gd-{name}` and `d/td-{name}`, with the
/// `common` flags on both training commands. `run(args)` runs the trainer (failing the test on
/// an error) and returns its output.
pub fn distill(
    d: &Path,
    name: &str,
    epochs: (&str, &str, &str),
    common: &[&str],
    run: impl Fn(&[&str]) -> String,
) -> Distilled {
    let s = |p: &str| d.join(p).display().to_string();
    let (gd, td) = (s(&format!("gd-{name}")), s(&format!("td-{name}")));
    let gd_args = [
        "general-distill",
        "--load-teacher-ckpt-path",
        &s("teacher.safetensors"),
        "--data-dir",
        &s("train.tfrecord"),
        "--epoch-size",
        epochs.0,
        "--output-dir",
        &gd,
    ];
    run(&[&gd_args[..], common].concat());
    let td_args = [
        "task-distill",
        "--load-teacher-ckpt-path",
        &s("teacher.safetensors"),
        "--load-gd-ckpt-path",
        &format!("{gd}/tinybert_gd_save_ckpt"),
        "--train-data-dir",
        &s("train.tfrecord"),
        "--eval-data-dir",
        &s("dev.tfrecord"),
        "--td-phase1-epoch-size",
        epochs.1,
        "--td-phase2-epoch-size",
        epochs.2,
        "--output-dir",
        &td,
    ];
    let out = run(&[&td_args[..], common].concat());
    assert!(out.contains("The best acc is"), "{out}");
    let model = format!("{td}/eval_model.safetensors");
    assert!(Path::new(&model).is_file(), "{model} not written");
    let eval = run(&[
        "eval",
        "--eval-data-dir",
        &s("dev.tfrecord"),
        "--load-td1-ckpt-path",
        &model,
    ]);
    let accuracy: Vec<String> = eval
        .lines()
        .filter(|l| l.contains("acc is"))
        .map(str::to_string)
        .collect();
    assert!(!accuracy.is_empty(), "{eval}");
    let gd = losses(&d.join(format!("gd-{name}/metrics.jsonl")));
    let mut td = losses(&d.join(format!("td-{name}/metrics.jsonl")));
    Distilled {
        losses: [
            gd["gd"].clone(),
            td.remove("td1").unwrap_or_default(),
            td.remove("td2").unwrap_or_default(),
        ],
        accuracy,
    }
}
