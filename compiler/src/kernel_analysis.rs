//! What every back end needs to know about a fused loop kernel before it generates code, decided
//! once here: which values get storage of their own (*materialized*) and which are recomputed
//! inline where they are read, the reductions, and the loop nests that compute the materialized
//! values in order (consecutive elementwise values of one shape share one nest, so one pass over
//! memory writes several outputs). Tiling and thread partitioning stay with each target.
//!
//! Materialized: kernel inputs, reductions, pads and a pad's operand, kernel outputs, and
//! "shared expensive" values — nodes that two or more consumers would otherwise each recompute
//! and whose recomputation costs at least `shared_cost_limit` (an `exp`, a `tanh`, Philox…).

use ir::{BinaryOp, Graph, Op, UnaryOp, ValueId};
use std::collections::BTreeSet;

/// The analysis of one loop kernel graph (`crate::exec::kernel_graph`).
#[derive(Clone, Debug, PartialEq)]
pub struct KernelAnalysis {
    /// Per node: whether it gets a tensor of its own.
    pub materialized: Vec<bool>,
    /// The reduction nodes.
    pub reductions: Vec<ValueId>,
    /// The materialized computed values (not inputs) in graph order, as loop nests.
    pub loop_nests: Vec<LoopNest>,
}

/// One loop nest of a kernel: what a back end emits as one loop (or one generic, one launch).
#[derive(Clone, Debug, PartialEq)]
pub enum LoopNest {
    /// Consecutive materialized elementwise values of one shape, computed in one pass (a
    /// multi-output loop); each value's inline cone is recomputed inside it.
    Elementwise {
        shape: Vec<usize>,
        values: Vec<ValueId>,
    },
    /// A reduction over its operand's shape.
    Reduce(ValueId),
    /// A pad over the padded shape, reading its materialized operand.
    Pad(ValueId),
}

impl KernelAnalysis {
    pub fn new(k: &Graph, shared_cost_limit: usize) -> KernelAnalysis {
        let materialized = choose_materialized(k, shared_cost_limit);
        let mut reductions = Vec::new();
        let mut loop_nests: Vec<LoopNest> = Vec::new();
        for (i, node) in k.nodes.iter().enumerate() {
            let v = ValueId(i as u32);
            if matches!(node.op, Op::Reduce { .. }) {
                reductions.push(v);
            }
            if !materialized[i] {
                continue;
            }
            match &node.op {
                Op::Input { .. } => {}
                Op::Reduce { .. } => loop_nests.push(LoopNest::Reduce(v)),
                Op::Pad { .. } => loop_nests.push(LoopNest::Pad(v)),
                _ => match loop_nests.last_mut() {
                    Some(LoopNest::Elementwise { shape, values }) if *shape == node.ty.shape => {
                        values.push(v)
                    }
                    _ => loop_nests.push(LoopNest::Elementwise {
                        shape: node.ty.shape.clone(),
                        values: vec![v],
                    }),
                },
            }
        }
        KernelAnalysis {
            materialized,
            reductions,
            loop_nests,
        }
    }
}

/// Recomputation weight of one node per element.
fn op_weight(op: &Op) -> usize {
    match op {
        Op::Unary(UnaryOp::Exp | UnaryOp::Log | UnaryOp::Tanh | UnaryOp::Erf) => 20,
        Op::RandomUniform { .. } => 60,
        Op::Unary(UnaryOp::Sqrt | UnaryOp::Rsqrt) | Op::Binary(BinaryOp::Div) => 4,
        Op::Constant { .. }
        | Op::Broadcast { .. }
        | Op::Transpose { .. }
        | Op::Slice { .. }
        | Op::Unary(UnaryOp::StopGradient) => 0,
        _ => 1,
    }
}

/// Nodes inlined into the body that computes `start` (itself included when not materialized).
fn inline_cone(k: &Graph, materialized: &[bool], start: &[ValueId]) -> BTreeSet<usize> {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<ValueId> = start.to_vec();
    while let Some(v) = stack.pop() {
        if materialized[v.index()] || !seen.insert(v.index()) {
            continue;
        }
        stack.extend(k.node(v).inputs.iter().copied());
    }
    seen
}

/// The cost of recomputing `v` inline.
fn inline_cost(k: &Graph, materialized: &[bool], v: ValueId) -> usize {
    let mut m = materialized.to_vec();
    m[v.index()] = false;
    inline_cone(k, &m, &[v])
        .iter()
        .map(|&i| op_weight(&k.nodes[i].op))
        .sum()
}

/// Which nodes get a tensor of their own.
fn choose_materialized(k: &Graph, shared_cost_limit: usize) -> Vec<bool> {
    let n = k.len();
    let mut m = vec![false; n];
    for (i, node) in k.nodes.iter().enumerate() {
        match node.op {
            Op::Input { .. } | Op::Reduce { .. } => m[i] = true,
            Op::Pad { .. } => {
                m[i] = true;
                m[node.inputs[0].index()] = true;
            }
            _ => {}
        }
    }
    for (_, v) in &k.outputs {
        m[v.index()] = true;
    }
    // Shared expensive values: materialize the latest one read by several generics, repeat.
    loop {
        let mut readers = vec![0usize; n];
        for r in 0..n {
            if !m[r] || matches!(k.nodes[r].op, Op::Input { .. }) {
                continue;
            }
            for i in inline_cone(k, &m, &k.nodes[r].inputs) {
                readers[i] += 1;
            }
        }
        let pick = (0..n).rev().find(|&i| {
            !m[i]
                && readers[i] >= 2
                && !k.nodes[i].ty.shape.is_empty()
                && inline_cost(k, &m, ValueId(i as u32)) >= shared_cost_limit
        });
        match pick {
            Some(i) => m[i] = true,
            None => break,
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use ir::Builder;
    use ir::{DType, ReduceKind, TensorType};

    /// `e = exp(x)` read by two reductions: recomputing it in both costs 2 exps.
    fn softmax_like() -> Graph {
        let mut b = Builder::new("k");
        let x = b.input("in0", TensorType::new(DType::F32, vec![4, 8]));
        let e = b.exp(x);
        let s = b.sum(e, &[1]);
        let m = b.reduce(ReduceKind::Max, e, &[1]);
        b.output("sum", s);
        b.output("max", m);
        b.finish()
    }

    #[test]
    fn shared_expensive_values_are_materialized_only_above_the_limit() {
        let g = softmax_like();
        let exp = g
            .nodes
            .iter()
            .position(|n| matches!(n.op, Op::Unary(UnaryOp::Exp)))
            .unwrap();
        let a = KernelAnalysis::new(&g, 20);
        assert!(a.materialized[exp], "exp (cost 20) read by two reductions");
        assert_eq!(a.reductions.len(), 2);
        let exp = ValueId(exp as u32);
        let (s, m) = (a.reductions[0], a.reductions[1]);
        assert_eq!(
            a.loop_nests,
            [
                LoopNest::Elementwise {
                    shape: vec![4, 8],
                    values: vec![exp]
                },
                LoopNest::Reduce(s),
                LoopNest::Reduce(m)
            ]
        );
        let b = KernelAnalysis::new(&g, 21);
        assert!(
            !b.materialized[exp.index()],
            "below the limit it is recomputed"
        );
        assert_eq!(b.loop_nests, [LoopNest::Reduce(s), LoopNest::Reduce(m)]);
    }

    /// Two outputs of one shape share a nest; a value of another shape starts a new one.
    #[test]
    fn consecutive_elementwise_values_of_one_shape_share_a_loop_nest() {
        let mut b = Builder::new("k");
        let x = b.input("in0", TensorType::new(DType::F32, vec![4, 8]));
        let y = b.neg(x);
        let z = b.mul(x, x);
        let s = b.sum(z, &[1]);
        let t = b.neg(s);
        b.output("y", y);
        b.output("z", z);
        b.output("t", t);
        let g = b.finish();
        let a = KernelAnalysis::new(&g, 20);
        assert_eq!(
            a.loop_nests,
            [
                LoopNest::Elementwise {
                    shape: vec![4, 8],
                    values: vec![y, z]
                },
                LoopNest::Reduce(s),
                LoopNest::Elementwise {
                    shape: vec![4],
                    values: vec![t]
                },
            ]
        );
    }
}
