//! Exact algebraic identities.

use super::util::{constant, constant_value, is_constant_bits, rebuild, Action};
use crate::passes::Pass;
use ir::{BinaryOp, Graph, Node, Op, TensorType, UnaryOp, ValueId};

/// Rewrites that autodiff and the frontend's generic helpers leave behind, each applied only
/// where it is exact in IEEE arithmetic as the interpreter defines it — the simplified graph
/// computes every output bit for bit as before, including −0, infinities and NaN (up to NaN
/// payload/sign, which no op observes; see below):
///
/// - `x·1`, `1·x`, `x/1` → `x`;
/// - `x + (−0)`, `(−0) + x`, `x − (+0)` → `x` (for floats; for integers any 0). **`x + (+0)` is
///   not rewritten**: it turns `x = −0` into `+0`, and a later `1/x` or `select` would see
///   the difference. `x − (−0)` is `x + (+0)` and is left alone for the same reason;
/// - `(−0) − x` → `neg x` (exact: `−0 − (+0) = −0`, `−0 − (−0) = +0`);
/// - `x·(−1)` and `(−1)·x` → `neg x` (exact for every number, ±0 and ±∞; a NaN stays a NaN);
/// - `x·0` and `0·x` are **not** rewritten: `∞·0` and `NaN·0` are NaN, and the overflow check
///   (`is_finite` of every gradient) must see it;
/// - `neg(neg x)`, `not(not x)` → `x`; `stop_gradient x` → `x` (an identity once gradients have
///   been built; simplify runs on finished training-step graphs);
/// - `select(c, x, x)` → `x`; `select(true, a, b)` → `a`, `select(false, a, b)` → `b`;
///   `select(not c, a, b)` → `select(c, b, a)`;
/// - `and(x, true)`, `or(x, false)` → `x`; `and(x, false)` → `false`, `or(x, true)` → `true`;
/// - `cast` to the operand's dtype, `reshape` to the operand's shape, identity `transpose`,
///   identity `broadcast`, full-range `slice`, zero `pad` → the operand;
/// - `reshape(reshape x)` → one `reshape`; `transpose(transpose x)` → one transpose with the
///   composed permutation (or `x` when that is the identity); `broadcast(broadcast x)` → one
///   broadcast with the composed dims; `broadcast` of a constant → a constant of the broadcast
///   type.
///
/// NaN caveat: IEEE 754 (and Rust, hence the interpreter) leaves the sign and payload of a NaN
/// that arithmetic produces unspecified. `x·(−1) → neg x` and `(−0) − x → neg x` may therefore
/// flip the sign bit of a NaN element, and `x·1 → x` passes a signalling-NaN input through
/// without quieting it. Nothing in the IR tells NaNs apart (`is_finite`, comparisons and
/// `max`/`min` treat them alike), so a NaN stays a NaN and every non-NaN element is bit for bit
/// the same. None of these three fire on the tbc phase graphs today.
///
/// Rewrites see operands already rewritten (one forward sweep), so chains like
/// `transpose∘transpose∘transpose` collapse in one run. The nodes bypassed are left for
/// dead code elimination.
#[derive(Clone, Copy, Debug, Default)]
pub struct AlgebraicSimplify;

impl Pass for AlgebraicSimplify {
    fn name(&self) -> &'static str {
        "algebraic"
    }

    fn run(&self, g: Graph) -> Graph {
        algebraic(g).0
    }
}

/// The pass, also reporting whether it rewrote anything.
pub(super) fn algebraic(g: Graph) -> (Graph, bool) {
    rebuild(g, |out: &mut Graph, node: &Node| {
        match simplify_node(out, node) {
            Some(Rewrite::Value(v)) => Action::Use(v),
            Some(Rewrite::Node(op, inputs)) => {
                debug_assert!(check(out, &op, &inputs, &node.ty), "{op:?} {node:?}");
                Action::Use(out.push(op, inputs, node.ty.clone()))
            }
            None => Action::Keep,
        }
    })
}

fn check(g: &Graph, op: &Op, inputs: &[ValueId], ty: &TensorType) -> bool {
    let ins: Vec<&TensorType> = inputs.iter().map(|&v| g.ty(v)).collect();
    ir::verify::check_node(op, &ins, ty).is_ok()
}

enum Rewrite {
    /// The node equals an existing value.
    Value(ValueId),
    /// The node equals a new node with the node's result type.
    Node(Op, Vec<ValueId>),
}

fn is_one(g: &Graph, v: ValueId) -> bool {
    constant_value(g, v) == Some(1.0)
}

fn is_minus_one(g: &Graph, v: ValueId) -> bool {
    constant_value(g, v) == Some(-1.0)
}

/// A constant `z` with `x + z == x` for every `x`: −0 for floats, 0 for integers.
fn is_add_identity(g: &Graph, v: ValueId) -> bool {
    if g.ty(v).dtype.is_float() {
        is_constant_bits(g, v, -0.0)
    } else {
        constant_value(g, v) == Some(0.0)
    }
}

/// A constant `z` with `x − z == x` for every `x`: +0 for floats, 0 for integers.
fn is_sub_identity(g: &Graph, v: ValueId) -> bool {
    if g.ty(v).dtype.is_float() {
        is_constant_bits(g, v, 0.0)
    } else {
        constant_value(g, v) == Some(0.0)
    }
}

fn bool_const(g: &Graph, v: ValueId) -> Option<bool> {
    constant_value(g, v).map(|c| c != 0.0)
}

fn op_of(g: &Graph, v: ValueId) -> &Op {
    &g.node(v).op
}

fn simplify_node(g: &Graph, node: &Node) -> Option<Rewrite> {
    use Rewrite::{Node as New, Value};
    let ins = &node.inputs;
    let ty = &node.ty;
    let neg = |x: ValueId| New(Op::Unary(UnaryOp::Neg), vec![x]);
    match &node.op {
        Op::Binary(b) => {
            let (x, y) = (ins[0], ins[1]);
            match b {
                BinaryOp::Mul => {
                    if is_one(g, y) {
                        return Some(Value(x));
                    }
                    if is_one(g, x) {
                        return Some(Value(y));
                    }
                    if is_minus_one(g, y) {
                        return Some(neg(x));
                    }
                    if is_minus_one(g, x) {
                        return Some(neg(y));
                    }
                }
                BinaryOp::Div if is_one(g, y) => return Some(Value(x)),
                BinaryOp::Add => {
                    if is_add_identity(g, y) {
                        return Some(Value(x));
                    }
                    if is_add_identity(g, x) {
                        return Some(Value(y));
                    }
                }
                BinaryOp::Sub => {
                    if is_sub_identity(g, y) {
                        return Some(Value(x));
                    }
                    if is_add_identity(g, x) {
                        return Some(neg(y));
                    }
                }
                BinaryOp::And | BinaryOp::Or => {
                    let absorbing = *b == BinaryOp::Or;
                    for (c, other) in [(x, y), (y, x)] {
                        match bool_const(g, c) {
                            Some(v) if v == absorbing => return Some(Value(c)),
                            Some(_) => return Some(Value(other)),
                            None => {}
                        }
                    }
                }
                _ => {}
            }
            None
        }
        Op::Unary(u @ (UnaryOp::Neg | UnaryOp::Not)) => match op_of(g, ins[0]) {
            Op::Unary(inner) if inner == u => Some(Value(g.node(ins[0]).inputs[0])),
            _ => None,
        },
        Op::Unary(UnaryOp::StopGradient) => Some(Value(ins[0])),
        Op::Select => {
            let (c, a, b) = (ins[0], ins[1], ins[2]);
            if a == b {
                return Some(Value(a));
            }
            if let Some(v) = bool_const(g, c) {
                return Some(Value(if v { a } else { b }));
            }
            if let Op::Unary(UnaryOp::Not) = op_of(g, c) {
                return Some(New(Op::Select, vec![g.node(c).inputs[0], b, a]));
            }
            None
        }
        Op::Cast if g.ty(ins[0]) == ty => Some(Value(ins[0])),
        Op::Reshape => {
            let x = ins[0];
            if g.ty(x) == ty {
                return Some(Value(x));
            }
            if let Op::Reshape = op_of(g, x) {
                let inner = g.node(x).inputs[0];
                return Some(if g.ty(inner) == ty {
                    Value(inner)
                } else {
                    New(Op::Reshape, vec![inner])
                });
            }
            None
        }
        Op::Transpose { perm } => {
            let x = ins[0];
            if is_identity(perm) {
                return Some(Value(x));
            }
            if let Op::Transpose { perm: inner } = op_of(g, x) {
                let composed: Vec<usize> = perm.iter().map(|&p| inner[p]).collect();
                let src = g.node(x).inputs[0];
                return Some(if is_identity(&composed) {
                    Value(src)
                } else {
                    New(Op::Transpose { perm: composed }, vec![src])
                });
            }
            None
        }
        Op::Broadcast { dims } => {
            let x = ins[0];
            if g.ty(x) == ty && is_identity(dims) {
                return Some(Value(x));
            }
            if let Some(value) = constant(g, x) {
                return Some(New(Op::Constant { value }, vec![]));
            }
            if let Op::Broadcast { dims: inner } = op_of(g, x) {
                let composed: Vec<usize> = inner.iter().map(|&d| dims[d]).collect();
                return Some(New(
                    Op::Broadcast { dims: composed },
                    vec![g.node(x).inputs[0]],
                ));
            }
            None
        }
        Op::Slice { start, end } => {
            let x = ins[0];
            (start.iter().all(|&s| s == 0) && *end == g.ty(x).shape).then_some(Value(x))
        }
        Op::Pad { low, high } => (low.iter().chain(high).all(|&p| p == 0)).then_some(Value(ins[0])),
        _ => None,
    }
}

fn is_identity(perm: &[usize]) -> bool {
    perm.iter().enumerate().all(|(i, &p)| i == p)
}
