//! Constant folding of splats.

use super::util::{constant, effective, literal_of, rebuild, splat_bits, Action};
use crate::passes::Pass;
use ir::{DType, Data, Graph, Interpreter, Node, Op, ReduceKind, TensorType};
use std::collections::HashMap;

/// Replaces a node whose operands are all `constant` splats, and whose result is again a splat,
/// by a `constant`: elementwise ops (unary, binary, comparisons, select, cast), broadcast,
/// reshape, transpose and slice of a splat, `pad` of a zero splat, reductions of a splat
/// (sum = value·count, mean = sum/count, max/min = value) and `iota` along a size-1 axis. The
/// frontend builds scalars like `1/√d`, `1 − β` and masks from literals, and the other
/// simplifications expose more (a broadcast constant feeding a select); folding them removes
/// kernels and lets the algebraic rules see the constants.
///
/// The value is the interpreter's, bit for bit: elementwise ops are evaluated by running
/// [`ir::Interpreter`] on a one-node graph of scalars (same f32/f16 rounding, NaN rules, integer
/// wrapping, cast truncation), and reductions reproduce its f64 accumulation (a sum of `count`
/// equal terms is folded only when that sum is exact, or replayed term by term when short). A
/// node is left alone when its value has no exact `f64` literal (i64 beyond 2^53) or when the
/// fold could hide a run-time error (`gather`/`scatter_add` index checks are never folded).
/// One forward sweep, O(nodes) plus O(count) for at most short replayed sums.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConstantFolding;

impl Pass for ConstantFolding {
    fn name(&self) -> &'static str {
        "fold"
    }

    fn run(&self, g: Graph) -> Graph {
        fold(g).0
    }
}

/// The pass, also reporting whether it folded anything.
pub(super) fn fold(g: Graph) -> (Graph, bool) {
    rebuild(g, |out: &mut Graph, node: &Node| {
        match fold_node(out, node) {
            Some(value) => Action::Use(out.push(Op::Constant { value }, vec![], node.ty.clone())),
            None => Action::Keep,
        }
    })
}

/// The literal of the constant that `node` (operands in `g`) equals, if it folds.
pub(super) fn fold_node(g: &Graph, node: &Node) -> Option<f64> {
    let ty = &node.ty;
    match &node.op {
        Op::Iota { axis } if ty.shape[*axis] == 1 => return Some(0.0),
        Op::Input { .. } | Op::Constant { .. } | Op::Iota { .. } => return None,
        _ => {}
    }
    let vals: Vec<f64> = node
        .inputs
        .iter()
        .map(|&v| constant(g, v))
        .collect::<Option<_>>()?;
    let x = || (g.ty(node.inputs[0]), vals[0]);
    match &node.op {
        Op::Unary(_) | Op::Binary(_) | Op::Compare(_) | Op::Select | Op::Cast => {
            let args: Vec<(DType, f64)> = node
                .inputs
                .iter()
                .zip(&vals)
                .map(|(&v, &c)| (g.ty(v).dtype, c))
                .collect();
            eval_scalar(&node.op, &args, ty.dtype)
        }
        // Data movement of a splat is the same splat (same dtype, so the literal carries over).
        Op::Broadcast { .. } | Op::Reshape | Op::Transpose { .. } | Op::Slice { .. } => Some(x().1),
        // Padding adds (+)0 elements: a splat only when the operand holds exactly that.
        Op::Pad { .. } => {
            let (t, c) = x();
            (splat_bits(t.dtype, c) == splat_bits(t.dtype, 0.0)).then_some(0.0)
        }
        Op::Reduce { kind, .. } => {
            let (t, c) = x();
            reduce_splat(*kind, t.dtype, c, t.numel(), ty.numel())
        }
        _ => None,
    }
}

/// Evaluates an elementwise op on scalar constants with the interpreter.
fn eval_scalar(op: &Op, args: &[(DType, f64)], out: DType) -> Option<f64> {
    let mut t = Graph::new("fold");
    let ins = args
        .iter()
        .map(|&(dt, c)| t.push(Op::Constant { value: c }, vec![], TensorType::scalar(dt)))
        .collect();
    let r = t.push(op.clone(), ins, TensorType::scalar(out));
    t.outputs.push(("r".into(), r));
    let res = Interpreter::run(&t, &HashMap::new()).ok()?;
    literal_of(&res[0].1.data)
}

/// Reduction of `in_n` elements all equal to the literal `c` (dtype `dt`) into `out_n`
/// elements, as the interpreter computes it.
fn reduce_splat(kind: ReduceKind, dt: DType, c: f64, in_n: usize, out_n: usize) -> Option<f64> {
    if out_n == 0 {
        return Some(0.0);
    }
    let count = in_n / out_n;
    if count == 0 {
        return None;
    }
    let res = if dt.is_int() {
        let x = Data::splat(dt, c, 1).to_i64()?[0];
        let r = match kind {
            ReduceKind::Sum | ReduceKind::Mean => x.wrapping_mul(count as i64),
            ReduceKind::Max | ReduceKind::Min => x,
        };
        Data::I64(vec![r]).cast(dt)
    } else {
        let x = effective(dt, c);
        let r = match kind {
            ReduceKind::Max | ReduceKind::Min => {
                if x.is_nan() {
                    f64::NAN
                } else {
                    x
                }
            }
            ReduceKind::Sum | ReduceKind::Mean => {
                let s = sum_of_equal(x, count)?;
                if kind == ReduceKind::Mean {
                    s / count as f64
                } else {
                    s
                }
            }
        };
        Data::from_f64(dt, &[r])
    };
    literal_of(&res)
}

/// `0.0 + x + x + … + x` (`count` terms, left to right in f64), when it can be had exactly.
fn sum_of_equal(x: f64, count: usize) -> Option<f64> {
    const REPLAY: usize = 4096;
    if count <= REPLAY || !x.is_finite() || x == 0.0 {
        // Zeros, infinities and NaNs reach their final value after one or two terms.
        let mut acc = 0.0f64;
        for _ in 0..count.min(REPLAY) {
            acc += x;
        }
        return Some(acc);
    }
    // Every partial sum k·x (k ≤ count) is exact when the significand of x and count fit in
    // 53 bits together; then the sum is exactly x·count (an overflow is ∞ either way).
    let bits = x.to_bits();
    let frac = bits & ((1u64 << 52) - 1);
    let exp = (bits >> 52) & 0x7ff;
    let sig = if exp == 0 { frac } else { frac | (1u64 << 52) };
    let sig = sig >> sig.trailing_zeros();
    let width = |v: u64| 64 - v.leading_zeros();
    if width(sig) + width(count as u64) <= 53 {
        Some(x * count as f64)
    } else {
        None
    }
}
