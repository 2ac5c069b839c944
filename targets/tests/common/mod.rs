//! Shared by the loop-kernel back-end tests: the tiny graphs and the values a training step
//! feeds their kernels, the interpreter's kernel-by-kernel results, host buffers, loading a
//! compiled object, and the comparison against the interpreter.
#![allow(dead_code)]

use compiler::frontend::config::HfBertConfig;
use compiler::frontend::preset::{Phase, Preset};
use compiler::frontend::GraphSpec;
use compiler::fusion::{Fusion, KernelKind};
use compiler::passes::mixed_precision::Precision;
use ir::{DType, Data, Graph, Interpreter, Op, Tensor, TensorType, ValueId};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

// ---------------------------------------------------------------------------------------------
// Graphs and data
// ---------------------------------------------------------------------------------------------

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("tests/fixtures")
}

/// The tiny teacher/student configs; `dropout` turns on dropout (0.1) in the student.
pub fn configs(
    dir: &str,
    preset: &Preset,
    dropout: bool,
) -> (
    compiler::frontend::config::ModelConfig,
    compiler::frontend::config::ModelConfig,
) {
    let load = |f: &str, drop: bool| {
        let path = fixtures().join(dir).join(f);
        let mut text = std::fs::read_to_string(&path).unwrap();
        if drop {
            text = text
                .replace(
                    "\"hidden_dropout_prob\": 0.0",
                    "\"hidden_dropout_prob\": 0.1",
                )
                .replace(
                    "\"attention_probs_dropout_prob\": 0.0",
                    "\"attention_probs_dropout_prob\": 0.1",
                );
        }
        HfBertConfig::from_json(&text, f)
            .unwrap()
            .resolve(preset, f)
            .unwrap()
    };
    (load("teacher.json", false), load("student.json", dropout))
}

/// The simplified training graph and its fusion (what the compiler pipeline lowers).
pub fn fused_graph(
    dir: &str,
    preset: &Preset,
    phase: Phase,
    batch: usize,
    seq: usize,
    dropout: bool,
) -> (Graph, Fusion) {
    fused_graph_precision(dir, preset, phase, batch, seq, dropout, Default::default())
}

/// [`fused_graph`] with `--precision`.
pub fn fused_graph_precision(
    dir: &str,
    preset: &Preset,
    phase: Phase,
    batch: usize,
    seq: usize,
    dropout: bool,
    precision: Precision,
) -> (Graph, Fusion) {
    let (t, s) = configs(dir, preset, dropout);
    let spec = GraphSpec {
        phase,
        teacher: &t,
        student: &s,
        preset,
        batch,
        seq_len: seq,
        dtype: DType::F32,
        precision,
    };
    let c = compiler::pipeline::compile(&spec, compiler::pipeline::Stage::Fuse, &[], |_, _| {})
        .unwrap();
    (c.graph, c.fusion.unwrap())
}

pub fn tiny(preset: &Preset, phase: Phase, dropout: bool) -> (Graph, Fusion) {
    fused_graph("tiny", preset, phase, 4, 16, dropout)
}

/// A small deterministic generator (SplitMix64).
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform().max(1e-300), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// Random but realistic values for every graph input: BERT-like weights, a padded batch, the
/// step state and a constant learning rate.
pub fn realistic_feed(g: &Graph, seed: u64) -> HashMap<String, Tensor> {
    let mut rng = Rng(seed);
    let scalars: HashMap<&str, f64> = HashMap::from([
        ("state.step", 3.0),
        ("state.cur_iter", 4.0),
        ("state.last_overflow_iter", 0.0),
        ("state.loss_scale", 256.0),
        ("state.seed", 7.0),
        ("sched.lr0", 1e-3),
        ("sched.end_lr", 1e-3),
        ("sched.warmup_steps", 0.0),
        ("sched.decay_steps", 1e30),
    ]);
    let vocab = g
        .inputs()
        .filter(|(n, _)| n.ends_with("word_embeddings.weight"))
        .map(|(_, v)| g.ty(v).shape[0] as u64)
        .min()
        .unwrap_or(1);
    let mut feed = HashMap::new();
    for (name, v) in g.inputs() {
        let ty = g.ty(v).clone();
        let n = ty.numel();
        let t = if let Some(&x) = scalars.get(name) {
            Tensor::scalar_f64(ty.dtype, x)
        } else if name == "input_ids" {
            let vals: Vec<f64> = (0..n).map(|_| (rng.next_u64() % vocab) as f64).collect();
            Tensor::from_f64(&ty, &vals)
        } else if name == "input_mask" || name == "segment_ids" {
            let (b, s) = (ty.shape[0], ty.shape[1]);
            let mut vals = vec![0.0; n];
            for r in 0..b {
                let len = s - (r * 3) % (s / 2);
                for c in 0..s {
                    vals[r * s + c] = if name == "input_mask" {
                        (c < len) as u8 as f64
                    } else {
                        (c >= len / 2 && c < len) as u8 as f64
                    };
                }
            }
            Tensor::from_f64(&ty, &vals)
        } else if name.starts_with("adam_v.") {
            let vals: Vec<f64> = (0..n).map(|_| rng.uniform() * 1e-6).collect();
            Tensor::from_f64(&ty, &vals)
        } else if name.starts_with("adam_m.") {
            let vals: Vec<f64> = (0..n).map(|_| rng.normal() * 1e-4).collect();
            Tensor::from_f64(&ty, &vals)
        } else if name.contains("LayerNorm.weight") {
            let vals: Vec<f64> = (0..n).map(|_| 1.0 + 0.1 * rng.normal()).collect();
            Tensor::from_f64(&ty, &vals)
        } else {
            let vals: Vec<f64> = (0..n).map(|_| 0.05 * rng.normal()).collect();
            Tensor::from_f64(&ty, &vals)
        };
        feed.insert(name.to_string(), t);
    }
    feed
}

/// The interpreter's outputs of kernel graph `k` on `inputs` (in input order).
pub fn interpret(k: &Graph, inputs: &[Tensor]) -> Vec<Tensor> {
    let named: HashMap<String, Tensor> = k
        .inputs()
        .zip(inputs)
        .map(|((n, _), t)| (n.to_string(), t.clone()))
        .collect();
    Interpreter::run(k, &named)
        .unwrap()
        .into_iter()
        .map(|(_, t)| t)
        .collect()
}

/// Uniform random values for a kernel's inputs: floats in [-2, 2), i32 in [0, 10), bools.
pub fn random_inputs(k: &Graph, seed: u64) -> Vec<Tensor> {
    let mut rng = Rng(seed);
    k.inputs()
        .map(|(_, v)| {
            let ty = k.ty(v);
            let vals: Vec<f64> = (0..ty.numel())
                .map(|_| match ty.dtype {
                    DType::Bool => (rng.next_u64() & 1) as f64,
                    DType::I32 => (rng.next_u64() % 10) as f64,
                    _ => rng.uniform() * 4.0 - 2.0,
                })
                .collect();
            Tensor::from_f64(ty, &vals)
        })
        .collect()
}

/// One executed kernel: its standalone graph, its inputs and the interpreter's outputs.
pub struct Run {
    pub index: usize,
    /// Graph output names of the kernel's outputs (`None` for intermediates).
    pub out_names: Vec<Option<String>>,
    pub graph: Graph,
    pub inputs: Vec<Tensor>,
    pub outputs: Vec<Tensor>,
}

/// Executes `g` kernel by kernel with the interpreter (like `compiler::exec::run_planned`,
/// without the arena) and records every loop kernel's inputs and outputs.
pub fn run_kernels(g: &Graph, fusion: &Fusion, feed: &HashMap<String, Tensor>) -> Vec<Run> {
    let mut store: HashMap<ValueId, Tensor> = HashMap::new();
    pub fn value(
        g: &Graph,
        store: &HashMap<ValueId, Tensor>,
        feed: &HashMap<String, Tensor>,
        v: ValueId,
    ) -> Tensor {
        match &g.node(v).op {
            Op::Input { name } => feed[name].clone(),
            Op::Reshape => {
                let t = value(g, store, feed, g.node(v).inputs[0]);
                Tensor::new(g.ty(v).shape.clone(), t.data)
            }
            _ => store[&v].clone(),
        }
    }
    let mut runs = Vec::new();
    for (ki, k) in fusion.kernels.iter().enumerate() {
        let sub = compiler::exec::kernel_graph(g, k, &format!("k{ki}"));
        let inputs: Vec<Tensor> = k
            .inputs
            .iter()
            .map(|&x| value(g, &store, feed, x))
            .collect();
        let named: HashMap<String, Tensor> = inputs
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("in{i}"), t.clone()))
            .collect();
        let outs: Vec<Tensor> = Interpreter::run(&sub, &named)
            .unwrap()
            .into_iter()
            .map(|(_, t)| t)
            .collect();
        for (&o, t) in k.outputs.iter().zip(&outs) {
            store.insert(o, t.clone());
        }
        if k.kind == KernelKind::Loop {
            let out_names = k
                .outputs
                .iter()
                .map(|o| {
                    g.outputs
                        .iter()
                        .find(|(_, v)| v == o)
                        .map(|(n, _)| n.clone())
                })
                .collect();
            runs.push(Run {
                index: ki,
                out_names,
                graph: sub,
                inputs,
                outputs: outs,
            });
        }
    }
    runs
}

// ---------------------------------------------------------------------------------------------
// Compiling, loading, calling
// ---------------------------------------------------------------------------------------------

pub struct Loaded {
    pub _dir: tempfile::TempDir,
    pub lib: libloading::Library,
}

pub fn link(object: &[u8]) -> Loaded {
    let dir = tempfile::tempdir().unwrap();
    let obj = dir.path().join("kernels.o");
    let so = dir.path().join("libkernels.so");
    std::fs::write(&obj, object).unwrap();
    let out = Command::new("cc")
        .arg("-shared")
        .arg("-o")
        .arg(&so)
        .arg(&obj)
        .arg("-lm")
        .output()
        .expect("run the system `cc`");
    assert!(
        out.status.success(),
        "cc -shared failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // SAFETY: the library is the object just compiled (plain kernels, no initializers).
    let lib = unsafe { libloading::Library::new(&so).unwrap() };
    Loaded { _dir: dir, lib }
}

/// A 64-byte aligned, zero-initialized host buffer.
pub struct Buf {
    pub ptr: *mut u8,
    pub layout: std::alloc::Layout,
}

impl Buf {
    pub fn new(bytes: usize) -> Buf {
        let layout = std::alloc::Layout::from_size_align(bytes.max(1), 64).unwrap();
        // SAFETY: non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null());
        Buf { ptr, layout }
    }
    pub fn from_tensor(t: &Tensor) -> Buf {
        let bytes = t.data.to_le_bytes();
        let b = Buf::new(bytes.len());
        // SAFETY: `b` holds at least `bytes.len()` bytes.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), b.ptr, bytes.len()) };
        b
    }
    pub fn to_tensor(&self, ty: &TensorType) -> Tensor {
        let n = ty.numel() * ty.dtype.size_bytes();
        // SAFETY: the buffer was allocated with at least `n` bytes.
        let bytes = unsafe { std::slice::from_raw_parts(self.ptr, n) };
        Tensor::new(ty.shape.clone(), Data::from_le_bytes(ty.dtype, bytes))
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

// ---------------------------------------------------------------------------------------------
// Comparison
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, Default)]
pub struct Err {
    /// ‖got − want‖₂ / ‖want‖₂ over finite elements (absolute when ‖want‖ = 0).
    pub norm: f64,
    /// max |got − want| / |want| over elements with |want| ≥ 1e-3 · max |want|.
    pub elem: f64,
}

impl Err {
    pub fn max(self, o: Err) -> Err {
        Err {
            norm: self.norm.max(o.norm),
            elem: self.elem.max(o.elem),
        }
    }
}

pub fn compare(got: &Tensor, want: &Tensor) -> Result<Err, String> {
    assert_eq!(got.shape, want.shape);
    assert_eq!(got.dtype(), want.dtype());
    match want.dtype() {
        DType::Bool | DType::I32 => {
            let (a, b) = (got.to_f64(), want.to_f64());
            if let Some(i) = (0..a.len()).find(|&i| a[i] != b[i]) {
                let bad = (0..a.len()).filter(|&i| a[i] != b[i]).count();
                return Err(format!(
                    "{bad} of {} elements differ; first at {i}: got {}, want {}",
                    a.len(),
                    a[i],
                    b[i]
                ));
            }
            Ok(Err::default())
        }
        _ => {
            let (a, b) = (got.to_f64(), want.to_f64());
            let (mut dd, mut ee) = (0.0, 0.0);
            let amax = b
                .iter()
                .filter(|x| x.is_finite())
                .fold(0.0f64, |m, x| m.max(x.abs()));
            let mut elem = 0.0f64;
            for i in 0..a.len() {
                if !b[i].is_finite() || !a[i].is_finite() {
                    let same = (a[i].is_nan() && b[i].is_nan()) || a[i] == b[i];
                    if !same {
                        return Err(format!("element {i}: got {}, want {}", a[i], b[i]));
                    }
                    continue;
                }
                dd += (a[i] - b[i]).powi(2);
                ee += b[i].powi(2);
                if b[i].abs() >= 1e-3 * amax && b[i] != 0.0 {
                    elem = elem.max((a[i] - b[i]).abs() / b[i].abs());
                }
            }
            let norm = if ee == 0.0 {
                dd.sqrt()
            } else {
                (dd / ee).sqrt()
            };
            Ok(Err { norm, elem })
        }
    }
}

/// Norm-wise tolerance by output type: f64 1e-12, f32 1e-5, and for 16-bit outputs (computed in
/// f32 and rounded) the type's unit roundoff, since an f32 difference of one ulp can move an
/// element across a rounding boundary.
pub fn tolerance(d: DType) -> f64 {
    match d {
        DType::F64 => 1e-12,
        DType::F16 => 2f64.powi(-11),
        DType::BF16 => 2f64.powi(-8),
        _ => 1e-5,
    }
}

/// Compares every output; panics with the kernel's IR on a mismatch. Returns the worst errors.
pub fn check(k: &Graph, label: &str, got: &[Tensor], want: &[Tensor]) -> Err {
    let mut worst = Err::default();
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        match compare(g, w) {
            Ok(e) if e.norm <= tolerance(w.dtype()) => worst = worst.max(e),
            Ok(e) => panic!(
                "{label}: out{i} norm-wise relative error {:.3e} > {:.0e} (elementwise {:.3e})\n{}",
                e.norm,
                tolerance(w.dtype()),
                e.elem,
                ir::text::print(k)
            ),
            Err(msg) => panic!("{label}: out{i}: {msg}\n{}", ir::text::print(k)),
        }
    }
    worst
}

// ---------------------------------------------------------------------------------------------
// Kernel classes
// ---------------------------------------------------------------------------------------------

pub fn ops(k: &Graph) -> Vec<&'static str> {
    k.nodes
        .iter()
        .filter(|n| !matches!(n.op, Op::Input { .. } | Op::Constant { .. }))
        .map(|n| n.op.mnemonic())
        .collect()
}

pub fn count(k: &Graph, m: &str) -> usize {
    ops(k).iter().filter(|o| **o == m).count()
}

/// The kernel classes the tests pick from a fused training graph.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Class {
    BiasGeluTanh,
    BiasGeluErf,
    Softmax,
    LayerNorm,
    LayerNormBackward,
    Loss,
    Clip,
    Adam,
    Dropout,
}

impl Class {
    pub const ALL: [Class; 9] = [
        Class::BiasGeluTanh,
        Class::BiasGeluErf,
        Class::Softmax,
        Class::LayerNorm,
        Class::LayerNormBackward,
        Class::Loss,
        Class::Clip,
        Class::Adam,
        Class::Dropout,
    ];

    /// Which graph holds the class (GELU form and dropout depend on the preset/config).
    pub fn source(self) -> (Preset, Phase, bool) {
        match self {
            Class::BiasGeluErf => (Preset::paper(), Phase::Td1, false),
            Class::Dropout => (Preset::mindspore(), Phase::Td1, true),
            Class::Loss => (Preset::mindspore(), Phase::Td2, false),
            _ => (Preset::mindspore(), Phase::Td1, false),
        }
    }

    pub fn matches(self, k: &Graph, out_names: &[Option<String>]) -> bool {
        let has = |m: &str| count(k, m) > 0;
        let named = |p: &str| out_names.iter().flatten().any(|n| n.starts_with(p));
        let no_reduce = !ops(k).iter().any(|o| o.starts_with("reduce"));
        match self {
            Class::BiasGeluTanh => has("tanh") && has("broadcast") && no_reduce,
            Class::BiasGeluErf => has("erf") && has("broadcast") && no_reduce,
            Class::Softmax => has("reduce_max") && has("exp") && has("reduce_sum") && has("div"),
            Class::LayerNorm => count(k, "reduce_mean") == 2 && has("rsqrt") && !has("exp"),
            Class::LayerNormBackward => {
                count(k, "reduce_sum") >= 2
                    && has("neg")
                    && k.outputs.iter().all(|(_, v)| k.ty(*v).rank() == 2)
            }
            Class::Loss => named("loss"),
            Class::Clip => has("sqrt") && has("reduce_sum") && has("max") && has("div"),
            Class::Adam => named("param.bert.encoder.layer.0.attention.self.query.weight"),
            Class::Dropout => has("random_uniform"),
        }
    }
}

pub fn find_class(runs: &[Run], class: Class) -> &Run {
    runs.iter()
        .find(|r| class.matches(&r.graph, &r.out_names))
        .unwrap_or_else(|| panic!("no {class:?} kernel"))
}

/// g++ for C++17 at optimization `opt` with the Ascend C emulation header on the include path.
pub fn gpp_with_ascend_emulation(opt: &str) -> std::process::Command {
    let mut c = std::process::Command::new("g++");
    c.args(["-std=c++17", opt, "-I"])
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ascend_emu"));
    c
}

/// Builds the C++ program `src` with g++ (C++17, `-O1`, `warnings`) against the Ascend C
/// emulation header (`targets/ascend_emu/`) into `exe`.
pub fn build_with_ascend_emulation(
    src: &std::path::Path,
    exe: &std::path::Path,
    warnings: &[&str],
) {
    let o = gpp_with_ascend_emulation("-O1")
        .args(warnings)
        .arg(src)
        .arg("-o")
        .arg(exe)
        .output()
        .expect("g++ (scripts/setup.sh installs it)");
    assert!(
        o.status.success(),
        "g++ {}:\n{}",
        src.display(),
        String::from_utf8_lossy(&o.stderr)
    );
}
