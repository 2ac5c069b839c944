//! Common subexpression elimination.

use super::util::{rebuild, splat_bits, Action};
use crate::passes::Pass;
use ir::{Graph, Node, Op, TensorType, ValueId};
use std::collections::HashMap;

/// Merges nodes that compute the same value: identical op and attributes, identical operands
/// (after earlier merges) and identical result type; every use of a later duplicate reads the
/// first. The frontend and autodiff repeat a lot (a `constant 0` per `select` gradient, one
/// splat per use of the learning rate, the same mask broadcast per layer), and every duplicate
/// would otherwise cost a kernel input or a recomputation.
///
/// - Constants are equal when the elements they hold are bitwise equal in their dtype (so
///   `-0.0` and `0.0` stay apart, a NaN constant merges with an identical NaN, and `0.1` and
///   `0.10000000149011612` merge in `f32`, where they are the same number).
/// - `input` nodes are never merged: each is a distinct interface slot.
/// - `random_uniform` nodes with the same `op_id`, operands and type draw the same numbers by
///   definition (Philox keyed by seed, op id, counter and element index), so they merge.
/// - Operand order is kept as is; commutative ops are not canonicalized (`max(+0, −0)` is not
///   `max(−0, +0)` bit for bit, and NaN payloads follow the first operand).
///
/// One forward sweep with a hash table, O(nodes).
#[derive(Clone, Copy, Debug, Default)]
pub struct CommonSubexpressionElimination;

impl Pass for CommonSubexpressionElimination {
    fn name(&self) -> &'static str {
        "cse"
    }

    fn run(&self, g: Graph) -> Graph {
        cse(g).0
    }
}

/// A hashable summary of an op and its attributes.
type OpKey = Vec<u64>;

fn push_list(k: &mut OpKey, v: &[usize]) {
    k.push(v.len() as u64);
    k.extend(v.iter().map(|&x| x as u64));
}

/// The key of `op` producing `ty`, or `None` for ops that must never merge (`input`).
fn op_key(op: &Op, ty: &TensorType) -> Option<OpKey> {
    let tag = |t: u64, sub: u64| vec![t, sub];
    Some(match op {
        Op::Input { .. } => return None,
        Op::Constant { value } => tag(1, splat_bits(ty.dtype, *value)),
        Op::Iota { axis } => tag(2, *axis as u64),
        Op::Unary(u) => tag(3, *u as u64),
        Op::Binary(b) => tag(4, *b as u64),
        Op::Compare(c) => tag(5, *c as u64),
        Op::Select => tag(6, 0),
        Op::Cast => tag(7, 0),
        Op::Broadcast { dims } => {
            let mut k = tag(8, 0);
            push_list(&mut k, dims);
            k
        }
        Op::Reshape => tag(9, 0),
        Op::Transpose { perm } => {
            let mut k = tag(10, 0);
            push_list(&mut k, perm);
            k
        }
        Op::Reduce { kind, axes } => {
            let mut k = tag(11, *kind as u64);
            push_list(&mut k, axes);
            k
        }
        Op::MatMul {
            transpose_a,
            transpose_b,
        } => tag(12, (*transpose_a as u64) | ((*transpose_b as u64) << 1)),
        Op::Gather => tag(13, 0),
        Op::ScatterAdd => tag(14, 0),
        Op::Slice { start, end } => {
            let mut k = tag(15, 0);
            push_list(&mut k, start);
            push_list(&mut k, end);
            k
        }
        Op::Pad { low, high } => {
            let mut k = tag(16, 0);
            push_list(&mut k, low);
            push_list(&mut k, high);
            k
        }
        Op::RandomUniform { op_id } => tag(17, *op_id as u64),
        Op::AllReduceMean => tag(18, 0),
    })
}

/// The pass, also reporting whether it merged anything.
pub(super) fn cse(g: Graph) -> (Graph, bool) {
    let mut seen: HashMap<(OpKey, Vec<ValueId>, TensorType), ValueId> = HashMap::new();
    rebuild(g, |out: &mut Graph, node: &Node| {
        let Some(k) = op_key(&node.op, &node.ty) else {
            return Action::Keep;
        };
        let next = ValueId(out.nodes.len() as u32);
        match seen.entry((k, node.inputs.clone(), node.ty.clone())) {
            std::collections::hash_map::Entry::Occupied(e) => Action::Use(*e.get()),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(next);
                Action::Keep
            }
        }
    })
}
