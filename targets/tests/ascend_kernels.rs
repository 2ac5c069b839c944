//! The Ascend back end's kernels, end to end on the CPU: every loop kernel of the
//! tiny td1 and td2 steps that the Ascend builder takes (the others are clear `Unsupported`
//! errors, counted) becomes an EmitC module, printed to Ascend C by MLIR's C++ emitter, built
//! with g++ against our emulation header, run on emulated cores over the values a training step
//! feeds it, and compared with the interpreter (≤ 1e-5 norm-wise, f32).

use compiler::frontend::preset::{Phase, Preset};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;
use std::process::Command;
use targets::ascend::tiling::ASCEND_910B;
use targets::ascend::{build_kernel, AscendKernel};
use targets::ascend::{emitc_to_cpp, AscendError};

mod common;
use common::*;

/// One C++ program holding `kernels` and a `main` that runs kernel `argv[1]` over the files
/// `path:bytes:in|out` that follow.
fn program(kernels: &[(AscendKernel, String)]) -> String {
    let mut s = String::from("#include <fstream>\n#include <vector>\n");
    for (_, cpp) in kernels {
        s.push_str(cpp);
    }
    s.push_str("static int launch(int k, std::vector<GM_ADDR>& a) {\n  switch (k) {\n");
    for (i, (k, _)) in kernels.iter().enumerate() {
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
    s.push_str(
        r#"  }
  return 99;
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

/// A tensor as the plan stores it: f32, bool as one byte, i32.
fn plan_bytes(t: &ir::Tensor) -> Vec<u8> {
    let v = t.to_f64();
    match t.data.dtype() {
        ir::DType::Bool => v.iter().map(|&x| (x != 0.0) as u8).collect(),
        ir::DType::I32 => v.iter().flat_map(|&x| (x as i32).to_le_bytes()).collect(),
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

fn check_phase(label: &str, preset: &Preset, phase: Phase, dir: &Path) {
    let (g, f) = tiny(preset, phase, false);
    let runs = run_kernels(&g, &f, &realistic_feed(&g, 11));
    let mut built = Vec::new();
    let mut skipped: BTreeMap<String, usize> = BTreeMap::new();
    for r in &runs {
        let name = format!("k{}", r.index);
        match build_kernel(&r.graph, &name, &ASCEND_910B) {
            Ok(k) => {
                let cpp = emitc_to_cpp(&k.mlir)
                    .unwrap_or_else(|e| panic!("{label} {name}: {e}\n{}", k.mlir));
                built.push((r, (k, cpp)));
            }
            Err(AscendError::Unsupported { why, .. }) => {
                let class = why.split(':').next().unwrap_or(&why).to_string();
                *skipped.entry(class).or_default() += 1;
            }
            Err(e) => panic!("{label} {name}: {e}"),
        }
    }
    assert!(!built.is_empty(), "{label}: no element-wise kernel");
    let kernels: Vec<(AscendKernel, String)> = built.iter().map(|(_, k)| k.clone()).collect();
    let src = dir.join(format!("{label}.cpp"));
    std::fs::write(&src, program(&kernels)).unwrap();
    let exe = dir.join(label);
    build_with_ascend_emulation(&src, &exe, &["-w"]);
    let (mut worst, mut column_sums) = (Err::default(), 0);
    for (i, (r, (k, _))) in built.iter().enumerate() {
        let mut args = vec![i.to_string()];
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
        let o = Command::new(&exe).args(&args).output().unwrap();
        assert!(
            o.status.success(),
            "{label} {}: {}\n{}",
            k.name,
            String::from_utf8_lossy(&o.stderr),
            kernels[i].1
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
        let label = format!("{label} {}", k.name);
        if has_leading_sum(&r.graph) {
            column_sums_within_f32_bound(&r.graph, &label, &r.inputs, &got, &r.outputs);
            column_sums += 1;
        } else {
            worst = worst.max(check(&r.graph, &label, &got, &r.outputs));
        }
    }
    println!(
        "{label}: {} element-wise, row, column-sum and full-reduction kernels built, run on emulated 910B cores and equal to the interpreter (worst norm-wise {:.2e}; {column_sums} column sums within the f32 summation bound); {} not built yet: {skipped:?}",
        built.len(),
        worst.norm,
        runs.len() - built.len()
    );
}

#[test]
fn element_wise_and_row_kernels_of_td1_and_td2_match_the_interpreter() {
    let dir = tempfile::tempdir().unwrap();
    check_phase("td1", &Preset::mindspore(), Phase::Td1, dir.path());
    check_phase("td2", &Preset::paper(), Phase::Td2, dir.path());
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
