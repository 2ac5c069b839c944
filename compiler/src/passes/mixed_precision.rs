//! Mixed precision (`--precision fp16|bf16`), a target-neutral pass on the finished training
//! graph (after autodiff): every GEMM whose operands are f32 takes them rounded to the 16-bit
//! type, multiplies them (products exact, f32 accumulation on every target) and rounds its
//! result to the 16-bit type, which is then widened back to f32 for everything else:
//!
//! ```text
//! matmul(a: f32, b: f32) : f32   →   cast(matmul(cast(a): f16, cast(b): f16) : f16) : f32
//! ```
//!
//! This is what PyTorch autocast does to a model written with `@`/`matmul` and what the seed's
//! `compute_type=float16` does to its Dense and attention GEMMs: the forward *and* backward GEMMs
//! (autodiff made those GEMMs of f32 gradients, so rewriting after autodiff is the same as
//! differentiating the rewritten forward pass, since a cast's gradient is the cast back). Softmax,
//! LayerNorm statistics, GELU, the losses, loss scaling, the overflow check and the optimizer stay
//! f32 on f32 master weights and moments. Dynamic loss scaling keeps small gradients above the
//! 16-bit range's floor; a GEMM that overflows makes an infinite gradient, which the overflow
//! check sees. The interpreter runs the rewritten graph, so it stays every target's oracle.

use super::Pass;
use ir::{DType, Graph, Op, ValueId};

/// How a training step computes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// Everything in the graph's float type.
    #[default]
    Fp32,
    /// GEMMs on f16 operands and results (the seed's `compute_type=float16`).
    Fp16,
    /// GEMMs on bf16 operands and results.
    Bf16,
}

impl Precision {
    pub const ALL: [Precision; 3] = [Precision::Fp32, Precision::Fp16, Precision::Bf16];

    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
            Precision::Bf16 => "bf16",
        }
    }

    pub fn parse(s: &str) -> Result<Precision, String> {
        Precision::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("unknown precision '{s}' (expected fp32, fp16 or bf16)"))
    }

    /// The 16-bit type of GEMM operands, or `None` for full precision.
    pub fn gemm_dtype(self) -> Option<DType> {
        match self {
            Precision::Fp32 => None,
            Precision::Fp16 => Some(DType::F16),
            Precision::Bf16 => Some(DType::BF16),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Rewrites every f32 GEMM to take and give `low` values (see the module doc).
#[derive(Clone, Copy, Debug)]
pub struct MixedPrecision {
    pub low: DType,
}

impl Pass for MixedPrecision {
    fn name(&self) -> &'static str {
        "mixed_precision"
    }

    fn run(&self, g: Graph) -> Graph {
        let mut out = Graph::new(g.name.clone());
        let mut map: Vec<ValueId> = Vec::with_capacity(g.len());
        // One cast per value, however many GEMMs read it.
        let mut low_of: Vec<Option<ValueId>> = vec![None; g.len()];
        for node in &g.nodes {
            let ins: Vec<ValueId> = node.inputs.iter().map(|v| map[v.index()]).collect();
            let is_f32_gemm = matches!(node.op, Op::MatMul { .. })
                && node.ty.dtype == DType::F32
                && node.inputs.iter().all(|v| g.ty(*v).dtype == DType::F32);
            if !is_f32_gemm {
                map.push(out.push(node.op.clone(), ins, node.ty.clone()));
                continue;
            }
            let mut low_ins = Vec::with_capacity(2);
            for (orig, new) in node.inputs.iter().zip(&ins) {
                let cast = *low_of[orig.index()].get_or_insert_with(|| {
                    out.push(Op::Cast, vec![*new], g.ty(*orig).with_dtype(self.low))
                });
                low_ins.push(cast);
            }
            let product = out.push(node.op.clone(), low_ins, node.ty.with_dtype(self.low));
            map.push(out.push(Op::Cast, vec![product], node.ty.clone()));
        }
        for (name, v) in &g.outputs {
            out.set_output(name.clone(), map[v.index()]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ir::{Builder, Interpreter, Tensor, TensorType};
    use std::collections::HashMap;

    #[test]
    fn gemms_take_and_give_16_bit_values_and_nothing_else_changes() {
        let mut b = Builder::new("g");
        let x = b.input("x", TensorType::new(DType::F32, vec![2, 3]));
        let w = b.input("w", TensorType::new(DType::F32, vec![4, 3]));
        let y = b.matmul(x, w, false, true);
        let z = b.matmul(y, y, true, false);
        let e = b.exp(z);
        b.output("y", y);
        b.output("e", e);
        let g = b.finish();
        let m = MixedPrecision { low: DType::F16 }.run(g.clone());
        ir::verify(&m).unwrap();
        let casts = m.nodes.iter().filter(|n| n.op == Op::Cast).count();
        // x, w, y (once for both operands of the second GEMM), and the two results.
        assert_eq!(casts, 5, "{}", ir::text::print(&m));
        assert_eq!(
            m.nodes
                .iter()
                .filter(|n| matches!(n.op, Op::MatMul { .. }))
                .map(|n| n.ty.dtype)
                .collect::<Vec<_>>(),
            vec![DType::F16, DType::F16]
        );
        // The interpreter sees the rounding: the result is x·wᵀ of the rounded values, rounded.
        let xs = [0.1, 0.2, 0.3, 1.0 / 3.0, 1e-3, 7.0];
        let ws: Vec<f64> = (0..12).map(|i| 0.37 * i as f64 - 1.1).collect();
        let feed = HashMap::from([
            (
                "x".to_string(),
                Tensor::from_f64(&TensorType::new(DType::F32, vec![2, 3]), &xs),
            ),
            (
                "w".to_string(),
                Tensor::from_f64(&TensorType::new(DType::F32, vec![4, 3]), &ws),
            ),
        ]);
        let got = Interpreter::run(&m, &feed).unwrap();
        let y = got.iter().find(|(n, _)| n == "y").unwrap().1.to_f64();
        let h = |v: f64| half::f16::from_f64(v).to_f64();
        for i in 0..2 {
            for j in 0..4 {
                let dot: f64 = (0..3).map(|k| h(xs[i * 3 + k]) * h(ws[j * 3 + k])).sum();
                assert_eq!(y[i * 4 + j], h(dot));
            }
        }
        // f64 graphs and already-16-bit GEMMs are left alone.
        let again = MixedPrecision { low: DType::F16 }.run(m.clone());
        assert_eq!(ir::text::print(&again), ir::text::print(&m));
    }

    #[test]
    fn precision_names_parse_back() {
        for p in Precision::ALL {
            assert_eq!(Precision::parse(p.name()).unwrap(), p);
        }
        assert!(Precision::parse("fp8")
            .unwrap_err()
            .contains("fp32, fp16 or bf16"));
    }
}
