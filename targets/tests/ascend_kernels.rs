//! The Ascend back end's kernels, end to end on the CPU: every loop kernel of every tiny phase
//! (both presets, dropout on in training) becomes an EmitC module, printed to Ascend C by
//! MLIR's C++ emitter, built with g++ against our emulation header, run on emulated cores over
//! the values a training step feeds it, and compared with the interpreter (≤ 1e-5 norm-wise,
//! f32; column sums within the f32 summation bound).

use compiler::frontend::preset::{Phase, Preset};
use compiler::passes::mixed_precision::Precision;
use std::fmt::Write;
use std::path::Path;
use std::process::Command;
use targets::ascend::emitc_to_cpp;
use targets::ascend::tiling::ASCEND_910B;
use targets::ascend::{build_kernel, AscendKernel};

mod common;
use common::*;

/// Kernels per translation unit: g++ compiles several at once, each in reasonable time.
const CHUNK: usize = 250;

/// Translation unit `c` of the kernel program: kernels `c·CHUNK …` (their EmitC modules
/// printed by one `mlir-translate`) and their launcher.
fn chunk_source(kernels: &[(AscendKernel, String)], c: usize) -> String {
    let mut s = String::from("#include <vector>\n#include \"kernel_operator.h\"\n");
    let range = c * CHUNK..((c + 1) * CHUNK).min(kernels.len());
    let module: String = kernels[range.clone()]
        .iter()
        .map(|(k, _)| k.mlir.as_str())
        .collect();
    let cpp = emitc_to_cpp(&module).unwrap_or_else(|e| {
        let firsts: Vec<&str> = kernels[range.clone()]
            .iter()
            .map(|k| k.1.as_str())
            .collect();
        panic!("kernels of {firsts:?}: {e}")
    });
    s.push_str(&cpp);
    writeln!(
        s,
        "int launch_chunk_{c}(int k, std::vector<GM_ADDR>& a) {{\n  switch (k) {{"
    )
    .unwrap();
    for i in range {
        let k = &kernels[i].0;
        let args: Vec<String> = (0..k.params).map(|j| format!("a[{j}]")).collect();
        writeln!(
            s,
            "    case {i}: return AscendC::EmuLaunch(\"{}\", {}, {}, {});",
            k.name,
            k.name,
            k.block_dim,
            args.join(", ")
        )
        .unwrap();
    }
    s.push_str("  }\n  return 99;\n}\n");
    s
}

/// The program's `main`: runs kernel `argv[1]` over the files `path:bytes:in|out` that follow.
fn main_source(chunks: usize) -> String {
    let mut s =
        String::from("#include <fstream>\n#include <vector>\n#include \"kernel_operator.h\"\n");
    for c in 0..chunks {
        writeln!(s, "int launch_chunk_{c}(int k, std::vector<GM_ADDR>& a);").unwrap();
    }
    s.push_str("static int launch(int k, std::vector<GM_ADDR>& a) {\n");
    for c in 0..chunks {
        writeln!(
            s,
            "  if (k / {CHUNK} == {c}) return launch_chunk_{c}(k, a);"
        )
        .unwrap();
    }
    s.push_str(
        r#"  return 99;
}
int main(int argc, char** argv) {
  std::vector<GM_ADDR> a;
  std::vector<std::pair<std::string, size_t>> outs;
  for (int i = 2; i < argc; i++) {
    std::string spec = argv[i];
    size_t c1 = spec.find(':'), c2 = spec.rfind(':');
    std::string path = spec.substr(0, c1);
    size_t bytes = std::stoul(spec.substr(c1 + 1, c2 - c1 - 1));
    GM_ADDR p = AscendC::GmAlloc(bytes);
    if (spec.substr(c2 + 1) == "in") {
      std::ifstream f(path, std::ios::binary);
      f.read((char*)p, bytes);
    } else {
      std::memset(p, 0xAB, bytes);
      outs.push_back({path, a.size()});
    }
    a.push_back(p);
  }
  int rc = launch(std::atoi(argv[1]), a);
  if (rc) return rc;
  for (auto& o : outs) {
    std::string spec = argv[2 + o.second];
    size_t c1 = spec.find(':'), c2 = spec.rfind(':');
    size_t bytes = std::stoul(spec.substr(c1 + 1, c2 - c1 - 1));
    std::ofstream f(o.first, std::ios::binary);
    f.write((const char*)a[o.second], bytes);
  }
  return 0;
}
"#,
    );
    s
}

/// Builds the kernel program from `kernels` in `dir`: its translation units compiled two at a
/// time (unoptimized: the tiny kernels run in milliseconds either way), then linked.
fn build_program(kernels: &[(AscendKernel, String)], dir: &Path) -> std::path::PathBuf {
    let chunks = kernels.len().div_ceil(CHUNK);
    let mut sources = vec![dir.join("main.cpp")];
    std::fs::write(&sources[0], main_source(chunks)).unwrap();
    for c in 0..chunks {
        let p = dir.join(format!("chunk{c}.cpp"));
        std::fs::write(&p, chunk_source(kernels, c)).unwrap();
        sources.push(p);
    }
    let compile = |src: &Path| {
        let obj = src.with_extension("o");
        let o = gpp_with_ascend_emulation("-O0")
            .args(["-w", "-c"])
            .arg(src)
            .arg("-o")
            .arg(&obj)
            .output()
            .expect("g++ (scripts/setup.sh installs it)");
        assert!(
            o.status.success(),
            "g++ {}:\n{}",
            src.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        obj
    };
    let objects: Vec<std::path::PathBuf> = std::thread::scope(|scope| {
        let (a, b): (Vec<_>, Vec<_>) = sources.iter().enumerate().partition(|(i, _)| i % 2 == 0);
        let compile = &compile;
        let left = scope.spawn(move || a.iter().map(|(_, s)| compile(s)).collect::<Vec<_>>());
        let mut objs: Vec<_> = b.iter().map(|(_, s)| compile(s)).collect();
        objs.extend(left.join().unwrap());
        objs
    });
    let exe = dir.join("kernels");
    let o = Command::new("g++")
        .args(&objects)
        .arg("-o")
        .arg(&exe)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "link: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    exe
}

/// A tensor as the plan stores it: f32, f16, bool as one byte, i32.
fn plan_bytes(t: &ir::Tensor) -> Vec<u8> {
    let v = t.to_f64();
    match t.data.dtype() {
        ir::DType::Bool => v.iter().map(|&x| (x != 0.0) as u8).collect(),
        ir::DType::I32 => v.iter().flat_map(|&x| (x as i32).to_le_bytes()).collect(),
        ir::DType::F16 => v
            .iter()
            .flat_map(|&x| half::f16::from_f64(x).to_le_bytes())
            .collect(),
        _ => v.iter().flat_map(|&x| (x as f32).to_le_bytes()).collect(),
    }
}

/// [`plan_bytes`] read back as a tensor of type `ty`.
fn from_plan_bytes(b: &[u8], ty: &ir::TensorType) -> ir::Tensor {
    let v: Vec<f64> = match ty.dtype {
        ir::DType::Bool => b.iter().map(|&x| x as f64).collect(),
        ir::DType::I32 => b
            .chunks(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        ir::DType::F16 => b
            .chunks(2)
            .map(|c| half::f16::from_le_bytes(c.try_into().unwrap()).to_f64())
            .collect(),
        _ => b
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
    };
    ir::Tensor::from_f64(ty, &v)
}

/// Whether `g` sums over leading axes but not all (a column-sum kernel).
fn has_leading_sum(g: &ir::Graph) -> bool {
    g.nodes.iter().any(|n| match &n.op {
        ir::Op::Reduce { axes, .. } => {
            let rank = g.ty(n.inputs[0]).shape.len();
            axes.as_slice() != [rank - 1] && axes.len() < rank
        }
        _ => false,
    })
}

/// Column sums accumulate in f32 on the NPU (no f64 vectors), the interpreter in f64: where the
/// summands cancel, the relative error of the sum is unbounded. Each element is held to
/// 1e-5 of the sum plus the bound of recursive f32 summation, rows · 2⁻²⁴ · Σ|summand| (Σ|x|
/// from the same kernel with every reduced value's absolute value).
fn column_sums_within_f32_bound(
    g: &ir::Graph,
    label: &str,
    inputs: &[ir::Tensor],
    got: &[ir::Tensor],
    want: &[ir::Tensor],
) {
    let (abs, rows) = rebuild_with_abs(g);
    let magnitude = interpret(&abs, inputs);
    for (o, ((a, w), m)) in got.iter().zip(want).zip(&magnitude).enumerate() {
        let (a, w, m) = (a.to_f64(), w.to_f64(), m.to_f64());
        for i in 0..w.len() {
            let bound = 1e-5 * w[i].abs() + rows as f64 * 2f64.powi(-24) * m[i] + 1e-30;
            assert!(
                (a[i] - w[i]).abs() <= bound,
                "{label}: out{o}[{i}] = {} vs {} (bound {bound:.3e})",
                a[i],
                w[i]
            );
        }
    }
}

/// `g` with each reduction reading the absolute value of its operand, and the largest number
/// of values a reduction sums.
fn rebuild_with_abs(g: &ir::Graph) -> (ir::Graph, usize) {
    use ir::{Graph, Op, UnaryOp, ValueId};
    let mut out = Graph::new(g.name.clone());
    let mut map: Vec<ValueId> = Vec::with_capacity(g.len());
    let mut rows = 1usize;
    for n in &g.nodes {
        let mut ins: Vec<ValueId> = n.inputs.iter().map(|v| map[v.index()]).collect();
        if let Op::Reduce { axes, .. } = &n.op {
            let x = n.inputs[0];
            rows = rows.max(axes.iter().map(|&a| g.ty(x).shape[a]).product());
            ins = vec![out.push(Op::Unary(UnaryOp::Abs), ins, g.ty(x).clone())];
        }
        map.push(out.push(n.op.clone(), ins, n.ty.clone()));
    }
    for (name, v) in &g.outputs {
        out.set_output(name.clone(), map[v.index()]);
    }
    (out, rows)
}

/// Kernels shared by several phases (the student's in gd, td1 and td2) are built, compiled
/// and listed once.
#[derive(Default)]
struct Distinct {
    /// Each kernel and the first run it came from.
    kernels: Vec<(AscendKernel, String)>,
}

impl Distinct {
    /// The index of kernel graph `g`'s Ascend kernel, built if new; every kernel must build.
    fn index(&mut self, g: &ir::Graph, label: &str) -> usize {
        let k = build_kernel(g, "k", &ASCEND_910B)
            .unwrap_or_else(|e| panic!("{label}: not built: {e}"));
        if let Some(at) = self.kernels.iter().position(|(u, _)| u.mlir == k.mlir) {
            return at;
        }
        // The kernel under its own name (the name appears only in its function's symbol).
        let name = format!("k{}", self.kernels.len());
        let mlir = k
            .mlir
            .replacen("emitc.func @k(", &format!("emitc.func @{name}("), 1);
        assert_ne!(mlir, k.mlir, "{label}: the symbol was not renamed");
        let k = AscendKernel { name, mlir, ..k };
        self.kernels.push((k, label.to_string()));
        self.kernels.len() - 1
    }
}

/// Runs kernel `at` of program `exe` over run `r`'s inputs and compares its outputs with the
/// interpreter's: the norm-wise error, or `None` for column sums (held to their f32 bound).
fn run_and_compare(
    (exe, dir): (&Path, &Path),
    kernels: &Distinct,
    r: &Run,
    at: usize,
    label: &str,
) -> Option<Err> {
    let (k, _) = &kernels.kernels[at];
    let mut args = vec![at.to_string()];
    for (j, t) in r.inputs.iter().enumerate() {
        let p = dir.join(format!("in{j}"));
        let bytes = plan_bytes(t);
        std::fs::write(&p, &bytes).unwrap();
        args.push(format!("{}:{}:in", p.display(), bytes.len()));
    }
    for (j, t) in r.outputs.iter().enumerate() {
        let p = dir.join(format!("out{j}"));
        args.push(format!("{}:{}:out", p.display(), plan_bytes(t).len()));
    }
    let o = Command::new(exe).args(&args).output().unwrap();
    assert!(
        o.status.success(),
        "{label} {}: {}\n{}",
        k.name,
        String::from_utf8_lossy(&o.stderr),
        k.mlir,
    );
    let got: Vec<ir::Tensor> = r
        .outputs
        .iter()
        .enumerate()
        .map(|(j, t)| {
            let b = std::fs::read(dir.join(format!("out{j}"))).unwrap();
            from_plan_bytes(&b, &ir::TensorType::new(t.data.dtype(), t.shape.clone()))
        })
        .collect();
    let label = format!("{label} k{} ({})", r.index, k.name);
    if has_leading_sum(&r.graph) {
        column_sums_within_f32_bound(&r.graph, &label, &r.inputs, &got, &r.outputs);
        None
    } else {
        Some(check(&r.graph, &label, &got, &r.outputs))
    }
}

#[test]
fn every_kernel_of_every_tiny_phase_matches_the_interpreter() {
    let dir = tempfile::tempdir().unwrap();
    let mut distinct = Distinct::default();
    let mut phases = Vec::new();
    let presets = [
        ("mindspore", Preset::mindspore()),
        ("paper", Preset::paper()),
    ];
    for ((name, preset), precision) in presets
        .iter()
        .flat_map(|p| [Precision::Fp32, Precision::Fp16].map(|q| (p, q)))
    {
        for phase in Phase::ALL {
            // Dropout on in the training phases (their random masks are kernels too).
            let dropout = !matches!(phase, Phase::Eval | Phase::EvalTeacher);
            let label = format!("{}-{name}-{}", phase.name(), precision.name());
            let (g, f) = fused_graph_precision("tiny", preset, phase, 4, 16, dropout, precision);
            let runs = run_kernels(&g, &f, &realistic_feed(&g, 11));
            let at: Vec<usize> = runs
                .iter()
                .map(|r| distinct.index(&r.graph, &format!("{label} k{}", r.index)))
                .collect();
            phases.push((label, runs, at));
        }
    }
    let exe = build_program(&distinct.kernels, dir.path());
    for (label, runs, at) in &phases {
        let (mut worst, mut column_sums) = (Err::default(), 0);
        for (r, &at) in runs.iter().zip(at) {
            match run_and_compare((&exe, dir.path()), &distinct, r, at, label) {
                Some(e) => worst = worst.max(e),
                None => column_sums += 1,
            }
        }
        println!(
            "{label}: all {} kernels built, run on emulated 910B cores and equal to the \
             interpreter (worst norm-wise {:.2e}; {column_sums} column sums within the f32 \
             summation bound)",
            runs.len(),
            worst.norm,
        );
    }
    println!("{} distinct kernels in all", distinct.kernels.len());
}

/// The EmitC module and the Ascend C it prints, for an element-wise kernel with a scalar input,
/// constants, a `DataCopyPad` tail (111 floats) and two outputs.
#[test]
fn snapshots_of_an_element_wise_kernel() {
    use ir::{Builder, DType, TensorType};
    let mut b = Builder::new("ew");
    let t = TensorType::new(DType::F32, vec![3, 37]);
    let x = b.input("in0", t.clone());
    let y = b.input("in1", t.clone());
    let s = b.input("in2", TensorType::new(DType::F32, vec![]));
    let e = b.exp(x);
    let p = b.mul(e, y);
    let s2 = b.mul_scalar(s, 2.0);
    let s2 = b.broadcast(s2, &[3, 37], &[]);
    let out0 = b.sub(p, s2);
    let y1 = b.add_scalar(y, 1.0);
    let out1 = b.rsqrt(y1);
    b.output("out0", out0);
    b.output("out1", out1);
    let k = build_kernel(&b.finish(), "ew", &ASCEND_910B).unwrap();
    assert_eq!(k.block_dim, 2);
    insta::assert_snapshot!("ascend_emitc_elementwise", k.mlir);
    insta::assert_snapshot!("ascend_cpp_elementwise", emitc_to_cpp(&k.mlir).unwrap());
}

/// The EmitC module and Ascend C of a row kernel: softmax over rows of 40 values (160 bytes,
/// whole 32-byte blocks) with the reductions read after V→S events.
#[test]
fn snapshots_of_a_row_kernel() {
    use ir::{Builder, DType, TensorType};
    let mut b = Builder::new("softmax");
    let x = b.input("in0", TensorType::new(DType::F32, vec![6, 40]));
    let y = compiler::frontend::bert::softmax_last(&mut b, x);
    b.output("out0", y);
    let g = b.finish();
    let k = build_kernel(&g, "softmax", &ASCEND_910B).unwrap();
    assert_eq!(k.block_dim, 6);
    insta::assert_snapshot!("ascend_emitc_softmax", k.mlir);
    insta::assert_snapshot!("ascend_cpp_softmax", emitc_to_cpp(&k.mlir).unwrap());
}

/// The EmitC module and Ascend C of a column-sum kernel (a bias gradient over 64 rows of 36
/// columns: 8 columns per core, the last core's 4 through `DataCopyPad`).
#[test]
fn snapshots_of_a_column_sum_kernel() {
    use ir::{Builder, DType, TensorType};
    let mut b = Builder::new("bias_grad");
    let x = b.input("in0", TensorType::new(DType::F32, vec![64, 36]));
    let y = b.sum(x, &[0]);
    b.output("out0", y);
    let k = build_kernel(&b.finish(), "bias_grad", &ASCEND_910B).unwrap();
    assert_eq!(k.block_dim, 5);
    insta::assert_snapshot!("ascend_emitc_column_sum", k.mlir);
    insta::assert_snapshot!("ascend_cpp_column_sum", emitc_to_cpp(&k.mlir).unwrap());
}

/// The EmitC module and Ascend C of a full-reduction kernel: gradient clipping by the global
/// norm (x / max(‖x‖, 1)) over 100 × 32 values on one core — a stream that sums the squares
/// tile by tile on the scalar unit, then a stream that divides.
#[test]
fn snapshots_of_a_full_reduction_kernel() {
    use ir::{Builder, DType, TensorType};
    let mut b = Builder::new("clip");
    let x = b.input("in0", TensorType::new(DType::F32, vec![100, 32]));
    let sq = b.mul(x, x);
    let s = b.sum(sq, &[0, 1]);
    let norm = b.sqrt(s);
    let one = b.scalar(1.0, DType::F32);
    let d = b.max(norm, one);
    let d = b.splat(d, &[100, 32]);
    let y = b.div(x, d);
    b.output("out0", y);
    let k = build_kernel(&b.finish(), "clip", &ASCEND_910B).unwrap();
    assert_eq!(k.block_dim, 1);
    insta::assert_snapshot!("ascend_emitc_full_reduction", k.mlir);
    insta::assert_snapshot!("ascend_cpp_full_reduction", emitc_to_cpp(&k.mlir).unwrap());
}

/// The EmitC module and Ascend C of an optimizer update that skips on overflow: the bool flag
/// tensor (bytes in GM) widened to f32, a `Compares` mask, `Select` keeping the old parameter.
#[test]
fn snapshots_of_an_optimizer_update_kernel() {
    use ir::{Builder, DType, TensorType};
    let mut b = Builder::new("update");
    let t = TensorType::new(DType::F32, vec![48, 40]);
    let p = b.input("in0", t.clone());
    let m = b.input("in1", t.clone());
    let v = b.input("in2", t.clone());
    let skip = b.input("in3", TensorType::new(DType::Bool, vec![48, 40]));
    let lr = b.input("in4", TensorType::new(DType::F32, vec![]));
    let r = b.sqrt(v);
    let r = b.add_scalar(r, 1e-6);
    let u = b.div(m, r);
    let lr = b.splat(lr, &[48, 40]);
    let u = b.mul(u, lr);
    let next = b.sub(p, u);
    let y = b.select(skip, p, next);
    b.output("out0", y);
    let k = build_kernel(&b.finish(), "update", &ASCEND_910B).unwrap();
    insta::assert_snapshot!("ascend_emitc_optimizer_update", k.mlir);
    insta::assert_snapshot!(
        "ascend_cpp_optimizer_update",
        emitc_to_cpp(&k.mlir).unwrap()
    );
}

/// Moves whose row groups do not fit the 910B Unified Buffer twice (BERT-base's `[CLS]` pad
/// gradient, 64 rows of 768 values; a head merge with rows of 768) are split into parts of a
/// group, and still equal the interpreter on the emulation.
#[test]
fn big_moves_are_split_into_parts_that_fit() {
    use ir::{Builder, DType, TensorType};
    let mut graphs = Vec::new();
    let mut b = Builder::new("cls_pad");
    let x = b.input("in0", TensorType::new(DType::F32, vec![2, 1, 768]));
    let y = b.pad(x, &[0, 0, 0], &[0, 63, 0]);
    b.output("out0", y);
    graphs.push(b.finish());
    let mut b = Builder::new("mid_pad");
    let x = b.input("in0", TensorType::new(DType::F32, vec![2, 20, 768]));
    let y = b.pad(x, &[0, 30, 0], &[0, 14, 0]);
    b.output("out0", y);
    graphs.push(b.finish());
    let mut b = Builder::new("merge");
    let x = b.input("in0", TensorType::new(DType::F32, vec![2, 64, 3, 768]));
    let y = b.transpose(x, &[0, 2, 1, 3]);
    b.output("out0", y);
    graphs.push(b.finish());
    let dir = tempfile::tempdir().unwrap();
    let mut distinct = Distinct::default();
    let mut runs = Vec::new();
    for (i, g) in graphs.into_iter().enumerate() {
        let k = build_kernel(&g, "probe", &ASCEND_910B).unwrap();
        assert!(
            k.ub_bytes <= 192 * 1024 - 8 * 1024,
            "{}: {} bytes",
            g.name,
            k.ub_bytes
        );
        let at = distinct.index(&g, &g.name);
        let inputs = random_inputs(&g, 5 + i as u64);
        let outputs = interpret(&g, &inputs);
        runs.push((
            Run {
                index: i,
                out_names: vec![None],
                graph: g,
                inputs,
                outputs,
            },
            at,
        ));
    }
    let exe = build_program(&distinct.kernels, dir.path());
    for (r, at) in &runs {
        let e = run_and_compare((&exe, dir.path()), &distinct, r, *at, &r.graph.name).unwrap();
        assert!(e.norm == 0.0, "{}: {e:?}", r.graph.name);
    }
}

/// Builds `g`, runs it on the emulation over random inputs and returns it with its norm-wise
/// error against the interpreter (the snapshot kernels below are checked, not only printed).
fn built_and_checked(g: ir::Graph, block_dim: usize) -> (AscendKernel, f64) {
    let dir = tempfile::tempdir().unwrap();
    let k = build_kernel(&g, &g.name, &ASCEND_910B).unwrap();
    assert_eq!(k.block_dim, block_dim, "{}", g.name);
    let mut distinct = Distinct::default();
    let at = distinct.index(&g, &g.name);
    let inputs = random_inputs(&g, 11);
    let outputs = interpret(&g, &inputs);
    let name = g.name.clone();
    let run = Run {
        index: 0,
        out_names: vec![None; outputs.len()],
        graph: g,
        inputs,
        outputs,
    };
    let exe = build_program(&distinct.kernels, dir.path());
    let e = run_and_compare((&exe, dir.path()), &distinct, &run, at, &name).unwrap();
    assert!(e.norm <= 1e-6, "{name}: {e:?}");
    (k, e.norm)
}

/// LayerNorm forward over rows of 40 (BERT's, eps 1e-12): mean and variance as row
/// reductions read after V→S events, γ and β broadcast along the rows.
#[test]
fn snapshots_of_a_layer_norm_forward_kernel() {
    use ir::{Builder, DType, TensorType};
    let mut b = Builder::new("layer_norm");
    let x = b.input("in0", TensorType::new(DType::F32, vec![6, 40]));
    let gamma = b.input("in1", TensorType::new(DType::F32, vec![40]));
    let beta = b.input("in2", TensorType::new(DType::F32, vec![40]));
    let y = compiler::frontend::bert::layer_norm(&mut b, x, gamma, beta, 1e-12);
    b.output("out0", y);
    let (k, err) = built_and_checked(b.finish(), 6);
    println!("layer_norm: {err:.2e} from the interpreter");
    insta::assert_snapshot!("ascend_emitc_layer_norm", k.mlir);
    insta::assert_snapshot!("ascend_cpp_layer_norm", emitc_to_cpp(&k.mlir).unwrap());
}

/// LayerNorm backward to the input over rows of 40: with x̂ = (x − mean)·rstd and g = dy·γ,
/// dx = rstd·(g − mean(g) − x̂·mean(g·x̂)) — three row reductions and their broadcasts.
#[test]
fn snapshots_of_a_layer_norm_backward_kernel() {
    use ir::{Builder, DType, TensorType};
    let mut b = Builder::new("layer_norm_grad");
    let t = TensorType::new(DType::F32, vec![6, 40]);
    let x = b.input("in0", t.clone());
    let dy = b.input("in1", t);
    let gamma = b.input("in2", TensorType::new(DType::F32, vec![40]));
    let s = vec![6, 40];
    let mean = b.mean(x, &[1]);
    let mean = b.broadcast(mean, &s, &[0]);
    let xc = b.sub(x, mean);
    let sq = b.mul(xc, xc);
    let var = b.mean(sq, &[1]);
    let var = b.add_scalar(var, 1e-12);
    let rstd = b.rsqrt(var);
    let rstd = b.broadcast(rstd, &s, &[0]);
    let xhat = b.mul(xc, rstd);
    let gm = b.broadcast(gamma, &s, &[1]);
    let g = b.mul(dy, gm);
    let mg = b.mean(g, &[1]);
    let mg = b.broadcast(mg, &s, &[0]);
    let gx = b.mul(g, xhat);
    let mgx = b.mean(gx, &[1]);
    let mgx = b.broadcast(mgx, &s, &[0]);
    let t1 = b.sub(g, mg);
    let t2 = b.mul(xhat, mgx);
    let d = b.sub(t1, t2);
    let dx = b.mul(rstd, d);
    b.output("out0", dx);
    let (k, err) = built_and_checked(b.finish(), 6);
    println!("layer_norm_grad: {err:.2e} from the interpreter");
    insta::assert_snapshot!("ascend_emitc_layer_norm_grad", k.mlir);
    insta::assert_snapshot!("ascend_cpp_layer_norm_grad", emitc_to_cpp(&k.mlir).unwrap());
}

/// The prediction-layer loss of task distillation per example: soft cross-entropy
/// −Σ softmax(t/T)·log_softmax(s/T) over rows of 2 logits (temperature 1), for 8 examples, one
/// per core — rows of 8 bytes, under one 32-byte block, through `DataCopyPad`.
#[test]
fn snapshots_of_a_loss_kernel() {
    use compiler::frontend::bert::{log_softmax_last, softmax_last};
    use ir::{Builder, DType, TensorType};
    let mut b = Builder::new("soft_ce");
    let t = TensorType::new(DType::F32, vec![8, 2]);
    let s = b.input("in0", t.clone());
    let te = b.input("in1", t);
    let p = softmax_last(&mut b, te);
    let lq = log_softmax_last(&mut b, s);
    let pl = b.mul(p, lq);
    let row = b.sum(pl, &[1]);
    let loss = b.neg(row);
    b.output("out0", loss);
    let (k, err) = built_and_checked(b.finish(), 8);
    println!("soft_ce: {err:.2e} from the interpreter");
    insta::assert_snapshot!("ascend_emitc_soft_ce", k.mlir);
    insta::assert_snapshot!("ascend_cpp_soft_ce", emitc_to_cpp(&k.mlir).unwrap());
}

/// A row kernel whose queues fit the 910B Unified Buffer only single-buffered (seven inputs and
/// an output in rows of 3072 floats: 16 double-buffered rows of 12 KiB are 192 KiB) runs with
/// one buffer per queue, and still equals the interpreter; one with fewer inputs is
/// double-buffered.
#[test]
fn queues_are_single_buffered_only_where_double_buffering_does_not_fit() {
    use ir::{Builder, DType, TensorType};
    for (inputs, buffers) in [(7, 1), (3, 2)] {
        let mut b = Builder::new(format!("rows{inputs}"));
        let t = TensorType::new(DType::F32, vec![4, 3072]);
        let mut acc = b.input("in0", t.clone());
        for i in 1..inputs {
            let x = b.input(format!("in{i}"), t.clone());
            acc = b.add(acc, x);
        }
        let m = b.mean(acc, &[1]);
        let m = b.broadcast(m, &[4, 3072], &[0]);
        let y = b.sub(acc, m);
        b.output("out0", y);
        let (k, err) = built_and_checked(b.finish(), 4);
        let cpp = emitc_to_cpp(&k.mlir).unwrap();
        let queues = cpp.matches(&format!(", {buffers}, 12288);")).count();
        assert_eq!(queues, inputs + 1, "{inputs} inputs:\n{cpp}");
        println!("{inputs} inputs: {buffers} buffer(s) per queue, {} UB bytes, {err:.2e} from the interpreter", k.ub_bytes);
    }
}
