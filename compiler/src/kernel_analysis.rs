//! What every back end needs to know about a fused loop kernel before it generates code, decided
//! once here: which values get storage of their own (*materialized*) and which are recomputed
//! inline where they are read, the reductions, and the iteration spaces (materialized values by
//! shape). Tiling and thread partitioning stay with each target.
//!
//! Materialized: kernel inputs, reductions, pads and a pad's operand, kernel outputs, and
//! "shared expensive" values — nodes that two or more consumers would otherwise each recompute
//! and whose recomputation costs at least `shared_cost_limit` (an `exp`, a `tanh`, Philox…).

use ir::{BinaryOp, Graph, Op, UnaryOp, ValueId};
use std::collections::{BTreeMap, BTreeSet};

/// The analysis of one loop kernel graph (`crate::exec::kernel_graph`).
#[derive(Clone, Debug, PartialEq)]
pub struct KernelAnalysis {
    /// Per node: whether it gets a tensor of its own.
    pub materialized: Vec<bool>,
    /// The reduction nodes.
    pub reductions: Vec<ValueId>,
    /// Materialized computed values (not inputs) by shape: each shape is one iteration space.
    pub iteration_spaces: BTreeMap<Vec<usize>, Vec<ValueId>>,
}

impl KernelAnalysis {
    pub fn new(k: &Graph, shared_cost_limit: usize) -> KernelAnalysis {
        let materialized = choose_materialized(k, shared_cost_limit);
        let mut reductions = Vec::new();
        let mut iteration_spaces: BTreeMap<Vec<usize>, Vec<ValueId>> = BTreeMap::new();
        for (i, node) in k.nodes.iter().enumerate() {
            let v = ValueId(i as u32);
            if matches!(node.op, Op::Reduce { .. }) {
                reductions.push(v);
            }
            if materialized[i] && !matches!(node.op, Op::Input { .. }) {
                iteration_spaces
                    .entry(node.ty.shape.clone())
                    .or_default()
                    .push(v);
            }
        }
        KernelAnalysis {
            materialized,
            reductions,
            iteration_spaces,
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
        assert_eq!(a.iteration_spaces[&vec![4, 8]], [ValueId(exp as u32)]);
        assert_eq!(a.iteration_spaces[&vec![4]].len(), 2);
        let b = KernelAnalysis::new(&g, 21);
        assert!(!b.materialized[exp], "below the limit it is recomputed");
        assert!(!b.iteration_spaces.contains_key(&vec![4, 8]));
    }
}
