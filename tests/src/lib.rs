//! Shared helpers for the integration tests: the tiny fixture configs, running a phase through
//! the interpreter with the fixture inputs, and tolerance-based comparison.

pub mod amp;
pub mod e2e;

use compiler::frontend::config::{HfBertConfig, ModelConfig};
use compiler::frontend::preset::{Phase, Preset};
use compiler::frontend::{build_graph, GraphSpec};
use ir::{DType, Graph, Interpreter, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn tiny_dir() -> PathBuf {
    repo_root().join("tests/fixtures/tiny")
}

/// The debug runtime library the tests link trainers with (`make test` builds it first).
pub fn runtime_lib() -> PathBuf {
    let lib = repo_root().join("target/debug/libruntime.a");
    assert!(
        lib.is_file(),
        "{} is missing: run `cargo build -p runtime` first (make test does)",
        lib.display()
    );
    lib
}

/// Compiles the tiny configs' `phases` (batch 4, seq 16) into a trainer at `out`; `student`
/// replaces the tiny student config.
pub fn compile_tiny_trainer(preset: &str, phases: &str, student: Option<&Path>, out: &Path) {
    compile_tiny_trainer_configs(preset, phases, None, student, out)
}

/// [`compile_tiny_trainer`] where `teacher` may replace the tiny teacher config too.
pub fn compile_tiny_trainer_configs(
    preset: &str,
    phases: &str,
    teacher: Option<&Path>,
    student: Option<&Path>,
    out: &Path,
) {
    compile_tiny_trainer_batch(preset, phases, teacher, student, 4, out)
}

/// [`compile_tiny_trainer_configs`] for batch `batch` (sequence length 16).
pub fn compile_tiny_trainer_batch(
    preset: &str,
    phases: &str,
    teacher: Option<&Path>,
    student: Option<&Path>,
    batch: usize,
    out: &Path,
) {
    compile_tiny_trainer_full(
        "cpu",
        preset,
        phases,
        teacher,
        student,
        batch,
        Default::default(),
        out,
    )
}

/// [`compile_tiny_trainer`] with `--precision`.
pub fn compile_tiny_trainer_precision(
    preset: &str,
    phases: &str,
    precision: compiler::passes::mixed_precision::Precision,
    out: &Path,
) {
    compile_tiny_trainer_full("cpu", preset, phases, None, None, 4, precision, out)
}

/// [`compile_tiny_trainer_precision`] for `--target target` (`-o out`: for `ascend` a folder).
pub fn compile_tiny_trainer_target(
    target: &str,
    preset: &str,
    phases: &str,
    precision: compiler::passes::mixed_precision::Precision,
    out: &Path,
) {
    compile_tiny_trainer_full(target, preset, phases, None, None, 4, precision, out)
}

/// [`compile_tiny_trainer_batch`] with all-reduce buckets of `bucket_mb` MiB.
pub fn compile_tiny_trainer_buckets(
    preset: &str,
    phases: &str,
    batch: usize,
    bucket_mb: f64,
    out: &Path,
) {
    std::env::set_var("TBC_RUNTIME_LIB", runtime_lib());
    let mut args = tiny_compile_args(
        "cpu",
        preset,
        phases,
        None,
        None,
        batch,
        Default::default(),
        out,
    );
    args.allreduce_bucket_mb = bucket_mb;
    cli::compile_cmd::run(&args).unwrap();
}

#[allow(clippy::too_many_arguments)]
fn tiny_compile_args(
    target: &str,
    preset: &str,
    phases: &str,
    teacher: Option<&Path>,
    student: Option<&Path>,
    batch: usize,
    precision: compiler::passes::mixed_precision::Precision,
    out: &Path,
) -> cli::compile_cmd::CompileArgs {
    let t = tiny_dir();
    cli::compile_cmd::CompileArgs {
        target: target.into(),
        phases: phases.into(),
        configs: cli::model_args::ConfigArgs {
            teacher_config: Some(teacher.map_or(t.join("teacher.json"), Path::to_path_buf)),
            student_config: Some(student.map_or(t.join("student.json"), Path::to_path_buf)),
            preset: preset.into(),
        },
        batch,
        seq_len: 16,
        compile_to: None,
        dump_after: vec![],
        output: Some(out.to_path_buf()),
        cpu: "x86-64-v3".into(),
        gpu_arch: "sm_80".into(),
        ascend_soc: "ascend910b".into(),
        emit: None,
        precision,
        allreduce_bucket_mb: 25.0,
    }
}

#[allow(clippy::too_many_arguments)]
fn compile_tiny_trainer_full(
    target: &str,
    preset: &str,
    phases: &str,
    teacher: Option<&Path>,
    student: Option<&Path>,
    batch: usize,
    precision: compiler::passes::mixed_precision::Precision,
    out: &Path,
) {
    std::env::set_var("TBC_RUNTIME_LIB", runtime_lib());
    let args = tiny_compile_args(
        target, preset, phases, teacher, student, batch, precision, out,
    );
    cli::compile_cmd::run(&args).unwrap();
}

/// `trainer step` of `phase` on the tiny fixture weights and batch (lr 1e-3, the loss scale of
/// the fixtures: 256 for `mindspore`, 1 for `paper`), writing `out`.
pub fn tiny_trainer_step(
    trainer: &Path,
    preset: &str,
    phase: Phase,
    out: &Path,
) -> std::process::Command {
    let t = tiny_dir();
    let scale = if preset == "mindspore" { "256" } else { "1" };
    let mut c = std::process::Command::new(trainer);
    c.args([
        "step",
        "--phase",
        phase.name(),
        "--lr",
        "1e-3",
        "--loss-scale",
        scale,
    ])
    .arg("--weights")
    .arg(t.join("weights.safetensors"))
    .arg("--batch")
    .arg(t.join("batch.safetensors"))
    .arg("--out")
    .arg(out);
    c
}

/// `tbc step` (the interpreter, f32) of `phase` on the tiny fixture weights and batch with the
/// settings of [`tiny_trainer_step`], writing `out`.
pub fn interpreter_fixture_step(preset: &str, phase: Phase, out: &Path) {
    let t = tiny_dir();
    let args = cli::step::StepArgs {
        model: cli::model_args::ModelArgs {
            phase: phase.name().into(),
            configs: cli::model_args::ConfigArgs {
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

/// The tiny teacher and student configs resolved with `preset`.
pub fn tiny_configs(preset: &Preset) -> (ModelConfig, ModelConfig) {
    let load = |f: &str| {
        let p = tiny_dir().join(f);
        HfBertConfig::from_file(&p)
            .unwrap()
            .resolve(preset, f)
            .unwrap()
    };
    (load("teacher.json"), load("student.json"))
}

/// Which classifier head the tiny models have: the fixtures' 3 classes, or one output (a
/// regression head, as STS-B) with `regression.safetensors`' classifiers and float targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Head {
    Classes,
    Regression,
}

/// Calls `f` with the graph spec of the tiny configs (batch 4, seq 16).
pub fn with_tiny_spec<R>(
    preset: &Preset,
    phase: Phase,
    dtype: DType,
    f: impl FnOnce(&GraphSpec) -> R,
) -> R {
    with_tiny_spec_head(preset, phase, dtype, Head::Classes, f)
}

fn with_tiny_spec_head<R>(
    preset: &Preset,
    phase: Phase,
    dtype: DType,
    head: Head,
    f: impl FnOnce(&GraphSpec) -> R,
) -> R {
    let (mut t, mut s) = tiny_configs(preset);
    if head == Head::Regression {
        t.num_labels = 1;
        s.num_labels = 1;
    }
    f(&GraphSpec {
        phase,
        teacher: &t,
        student: &s,
        preset,
        batch: 4,
        seq_len: 16,
        dtype,
        precision: Default::default(),
    })
}

pub fn tiny_graph(preset: &Preset, phase: Phase, dtype: DType) -> Graph {
    with_tiny_spec(preset, phase, dtype, |spec| build_graph(spec).unwrap())
}

/// [`tiny_graph`] with the given classifier head.
pub fn tiny_graph_head(preset: &Preset, phase: Phase, dtype: DType, head: Head) -> Graph {
    with_tiny_spec_head(preset, phase, dtype, head, |spec| {
        build_graph(spec).unwrap()
    })
}

/// The tiny f32 graph of `phase` (classes head) after autodiff and the mixed-precision pass of
/// `precision`, as the pipeline makes it.
pub fn tiny_graph_precision(
    preset: &Preset,
    phase: Phase,
    precision: compiler::passes::mixed_precision::Precision,
) -> Graph {
    with_tiny_spec(preset, phase, DType::F32, |spec| {
        let spec = GraphSpec {
            precision,
            ..spec.clone()
        };
        compiler::pipeline::compile(&spec, compiler::pipeline::Stage::Autodiff, &[], |_, _| {})
            .unwrap()
            .graph
    })
}

/// The tiny graph of `phase` through the target-neutral pipeline (simplify, fuse, plan).
pub fn compile_tiny(preset: &Preset, phase: Phase) -> compiler::pipeline::Compiled {
    with_tiny_spec(preset, phase, DType::F32, |spec| {
        compiler::pipeline::compile(spec, compiler::pipeline::Stage::Plan, &[], |_, _| {}).unwrap()
    })
}

pub fn read_fixture(name: &str) -> BTreeMap<String, Tensor> {
    cli::tensor_file::read(&tiny_dir().join(name)).unwrap()
}

/// State and schedule values of one step: a constant `lr` (warmup 0, no decay).
pub struct StepInputs {
    pub lr: f64,
    pub step: i32,
    pub loss_scale: f64,
}

/// Feeds every graph input from the fixture weights and batch (moments zero) and runs the graph.
pub fn run_with_fixture_inputs(g: &Graph, si: &StepInputs) -> HashMap<String, Tensor> {
    Interpreter::run_map(g, &fixture_feed(g, si)).unwrap()
}

/// Every graph input from the fixture weights and batch, the step scalars, zero moments.
pub fn fixture_feed(g: &Graph, si: &StepInputs) -> HashMap<String, Tensor> {
    fixture_feed_head(g, si, Head::Classes)
}

/// [`fixture_feed`] for the given head: `Regression` takes the classifiers and `label_ids`
/// from `regression.safetensors`.
pub fn fixture_feed_head(g: &Graph, si: &StepInputs, head: Head) -> HashMap<String, Tensor> {
    let mut weights = read_fixture("weights.safetensors");
    let mut batch = read_fixture("batch.safetensors");
    if head == Head::Regression {
        for (name, t) in read_fixture("regression.safetensors") {
            if name == "label_ids" {
                batch.insert(name, t);
            } else {
                weights.insert(name, t);
            }
        }
    }
    let scalars: HashMap<&str, f64> = HashMap::from([
        ("state.step", si.step as f64),
        ("state.cur_iter", si.step as f64 + 1.0),
        ("state.last_overflow_iter", 0.0),
        ("state.loss_scale", si.loss_scale),
        ("state.seed", 0.0),
        ("sched.lr0", si.lr),
        ("sched.end_lr", si.lr),
        ("sched.warmup_steps", 0.0),
        ("sched.decay_steps", 1e30),
    ]);
    let mut feed = HashMap::new();
    for (name, v) in g.inputs() {
        let ty = g.ty(v).clone();
        let t = if let Some(&x) = scalars.get(name) {
            Tensor::scalar_f64(ty.dtype, x)
        } else if let Some(t) = batch.get(name).or_else(|| weights.get(name)) {
            Tensor::new(t.shape.clone(), t.data.cast(ty.dtype))
        } else if name.starts_with("adam_") {
            Tensor::zeros(&ty)
        } else {
            panic!("fixture has no input {name}");
        };
        assert_eq!(t.shape, ty.shape, "{name}");
        feed.insert(name.to_string(), t);
    }
    feed
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// Norm-wise relative error `‖a − e‖₂ / ‖e‖₂` (the absolute error `‖a − e‖₂` when `e` is 0).
pub fn rel_err(a: &Tensor, e: &Tensor) -> f64 {
    assert_eq!(a.shape, e.shape);
    let (d, ne) = (diff_norm(a, e), l2(e));
    if ne == 0.0 {
        d
    } else {
        d / ne
    }
}

/// `‖a − e‖₂`.
pub fn diff_norm(a: &Tensor, e: &Tensor) -> f64 {
    let d: Vec<f64> = a
        .to_f64()
        .iter()
        .zip(e.to_f64())
        .map(|(x, y)| x - y)
        .collect();
    norm(&d)
}

pub fn l2(t: &Tensor) -> f64 {
    norm(&t.to_f64())
}

/// Compares outputs against reference values. Tensors that are round-off of an exact zero in the
/// reference (norm below 1e-12 (f64) or 1e-6 (f32) of the largest tensor of the same kind, e.g.
/// `grad.`; `adam_m.` and `adam_v.` of such a parameter are then round-off too) are compared
/// absolutely against that largest norm; all others by [`rel_err`].
pub struct OutputComparer {
    max_norm: HashMap<String, f64>,
    /// Round-off level of an f32 reference (1e-6, or the unit roundoff of a 16-bit step).
    f32_level: f64,
}

fn kind_of(name: &str) -> &str {
    name.split_once('.').map_or(name, |(k, _)| k)
}

impl OutputComparer {
    pub fn new<'a>(reference: impl IntoIterator<Item = (&'a String, &'a Tensor)>) -> Self {
        let mut max_norm: HashMap<String, f64> = HashMap::new();
        for (n, t) in reference {
            if t.dtype().is_float() {
                let e = max_norm.entry(kind_of(n).to_string()).or_insert(0.0);
                *e = e.max(l2(t));
            }
        }
        OutputComparer {
            max_norm,
            f32_level: 1e-6,
        }
    }

    /// A comparer whose f32 reference was computed with 16-bit GEMMs: round-off of an exact zero
    /// is then up to `unit_roundoff` of the largest tensor of its kind.
    pub fn for_16_bit_reference<'a>(
        reference: impl IntoIterator<Item = (&'a String, &'a Tensor)>,
        unit_roundoff: f64,
    ) -> Self {
        OutputComparer {
            f32_level: unit_roundoff,
            ..OutputComparer::new(reference)
        }
    }

    /// True when the reference tensor `name` is round-off of an exact zero.
    pub fn is_roundoff(&self, name: &str, e: &Tensor) -> bool {
        let m = self.max_norm.get(kind_of(name)).copied().unwrap_or(0.0);
        let level = if e.dtype() == DType::F64 {
            1e-12
        } else {
            self.f32_level
        };
        l2(e) < level * m
    }

    pub fn error(&self, name: &str, a: &Tensor, e: &Tensor) -> f64 {
        if !e.dtype().is_float() {
            return if a == e { 0.0 } else { f64::INFINITY };
        }
        if self.is_roundoff(name, e) {
            diff_norm(a, e) / self.max_norm[kind_of(name)]
        } else {
            rel_err(a, e)
        }
    }
}

/// How one output of an f32 training step compares with a PyTorch float64 fixture made with lr
/// 1e-3 from zero Adam moments.
#[derive(Debug, Clone, PartialEq)]
pub enum StepMatch {
    /// Error by [`OutputComparer::error`].
    Error(f64),
    /// A parameter whose reference gradient is round-off of an exact zero, updated by at most
    /// one Adam step away from the reference (the largest per-element distance).
    WithinOneAdamStep(f64),
    /// A parameter above the tolerance by no more than what its gradient's (checked) error
    /// explains through Adam's first step: (error, explained).
    ExplainedByGradient(f64, f64),
}

/// The first Adam step from zero moments is `lr·0.1g/(√0.001·|g| + eps)` per element: at most
/// 0.1/√0.001 ≈ 3.17 steps of lr whatever `g` is (so a round-off gradient in f32 still moves the
/// parameter that far), and its sensitivity to `g` reaches 0.1·lr/eps (= 100 at lr 1e-3,
/// eps 1e-6) for small gradients.
const FIXTURE_LR: f64 = 1e-3;
const ADAM_EPS: f64 = 1e-6;

/// Compares output `name` of an f32 step (`ours`) with the fixture (`expected`) under `tol`; a
/// parameter above it gets the two Adam allowances of [`StepMatch`]. Err names what is off.
pub fn match_step_output(
    cmp: &OutputComparer,
    name: &str,
    ours: &BTreeMap<String, Tensor>,
    expected: &BTreeMap<String, Tensor>,
    tol: f64,
) -> Result<StepMatch, String> {
    let (a, e) = (&ours[name], &expected[name]);
    let err = cmp.error(name, a, e);
    if err <= tol {
        return Ok(StepMatch::Error(err));
    }
    if let Some(p) = name.strip_prefix("param.") {
        let g = format!("grad.{p}");
        if cmp.is_roundoff(&g, &expected[&g]) {
            let step = FIXTURE_LR * 0.1 / 0.001f64.sqrt();
            let worst = a
                .to_f64()
                .iter()
                .zip(e.to_f64())
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f64::max);
            return if worst <= step * 1.01 {
                Ok(StepMatch::WithinOneAdamStep(worst))
            } else {
                Err(format!("{name}: moved {worst:.3e} from the reference, more than one Adam step {step:.3e}"))
            };
        }
        let dg = diff_norm(&ours[&g], &expected[&g]);
        let explained = FIXTURE_LR * 0.1 / ADAM_EPS * dg / l2(e);
        return if err <= tol + explained {
            Ok(StepMatch::ExplainedByGradient(err, explained))
        } else {
            Err(format!(
                "{name}: error {err:.3e} > {tol:.0e} (+ {explained:.1e} explained by its gradient)"
            ))
        };
    }
    Err(format!("{name}: error {err:.3e} > {tol:.0e}"))
}

/// Loop kernels run by the reference interpreter.
pub struct InterpretedKernels {
    graphs: HashMap<String, Graph>,
}

impl InterpretedKernels {
    /// Kernel graphs by symbol (as `compiler::exec::kernel_graph` makes them).
    pub fn new(graphs: HashMap<String, Graph>) -> InterpretedKernels {
        InterpretedKernels { graphs }
    }

    /// The loop kernels of a planned phase, each as its own graph under its symbol.
    pub fn of(c: &compiler::pipeline::Compiled) -> InterpretedKernels {
        use compiler::fusion::KernelKind;
        let g = &c.graph;
        let graphs = c
            .fusion
            .as_ref()
            .expect("fused")
            .kernels
            .iter()
            .enumerate()
            .filter(|(_, k)| k.kind == KernelKind::Loop)
            .map(|(i, k)| {
                let name = compiler::executable::loop_symbol(&g.name, i);
                let kg = compiler::exec::kernel_graph(g, k, &name);
                (name, kg)
            })
            .collect();
        InterpretedKernels { graphs }
    }
}

impl runtime::exec::LoopKernels for InterpretedKernels {
    unsafe fn run(
        &self,
        symbol: &str,
        inputs: &[runtime::exec::KernelArg],
        outputs: &[runtime::exec::KernelArg],
    ) -> Result<(), String> {
        let g = self
            .graphs
            .get(symbol)
            .ok_or_else(|| format!("no kernel {symbol}"))?;
        let mut feed = HashMap::new();
        for (i, a) in inputs.iter().enumerate() {
            let ty = ir::TensorType::new(a.elem, a.shape.clone());
            let bytes = std::slice::from_raw_parts(a.ptr, ty.numel() * ty.dtype.size_bytes());
            feed.insert(
                format!("in{i}"),
                Tensor::new(ty.shape.clone(), ir::Data::from_le_bytes(ty.dtype, bytes)),
            );
        }
        let outs = Interpreter::run(g, &feed).map_err(|e| e.to_string())?;
        for ((_, t), a) in outs.iter().zip(outputs) {
            let bytes = t.data.to_le_bytes();
            std::ptr::copy(bytes.as_ptr(), a.ptr, bytes.len());
        }
        Ok(())
    }
}
