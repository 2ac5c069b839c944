//! Reverse-mode automatic differentiation as a graph-to-graph pass: appends the nodes that
//! compute `d(seed · loss)/d(wrt)` to the graph. Each op's vector-Jacobian product is written in
//! terms of other IR ops, so the gradient graph is an ordinary graph (verifiable, printable,
//! interpretable, differentiable again).

use crate::builder::Builder;
use crate::graph::ValueId;
use crate::op::{BinaryOp, CmpOp, Op, ReduceKind, UnaryOp};
use crate::types::DType;
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AutodiffError {
    #[error("loss {0} must be a float scalar, found {1}")]
    LossNotScalar(ValueId, String),
    #[error("seed {0} must have the loss type {1}, found {2}")]
    SeedType(ValueId, String, String),
}

/// Appends the gradient computation of `loss` (a float scalar) with respect to each value of
/// `wrt`, with the incoming gradient `seed` (for plain gradients pass a constant 1; for loss
/// scaling pass the scale). Returns `None` for values the loss does not depend on.
pub fn gradients(
    b: &mut Builder,
    loss: ValueId,
    seed: ValueId,
    wrt: &[ValueId],
) -> Result<Vec<Option<ValueId>>, AutodiffError> {
    let lt = b.ty(loss).clone();
    if lt.rank() != 0 || !lt.dtype.is_float() {
        return Err(AutodiffError::LossNotScalar(loss, lt.to_string()));
    }
    if *b.ty(seed) != lt {
        return Err(AutodiffError::SeedType(
            seed,
            lt.to_string(),
            b.ty(seed).to_string(),
        ));
    }
    let n = loss.index() + 1;
    // Values that depend on some `wrt` value through differentiable float edges.
    let mut depends = vec![false; n];
    for &w in wrt {
        if w.index() < n {
            depends[w.index()] = true;
        }
    }
    for i in 0..n {
        if depends[i] {
            continue;
        }
        let node = b.graph.node(ValueId(i as u32));
        if !node.ty.dtype.is_float() || matches!(node.op, Op::Unary(UnaryOp::StopGradient)) {
            continue;
        }
        depends[i] = node.inputs.iter().any(|v| depends[v.index()]);
    }
    // Values the loss depends on.
    let mut feeds = vec![false; n];
    feeds[loss.index()] = true;
    for i in (0..n).rev() {
        if feeds[i] {
            for v in b.graph.node(ValueId(i as u32)).inputs.clone() {
                feeds[v.index()] = true;
            }
        }
    }
    let active: Vec<bool> = (0..n).map(|i| depends[i] && feeds[i]).collect();

    let mut adj: HashMap<usize, ValueId> = HashMap::new();
    adj.insert(loss.index(), seed);
    for i in (0..n).rev() {
        let Some(&g) = adj.get(&i) else { continue };
        if !active[i] {
            continue;
        }
        let node = b.graph.node(ValueId(i as u32)).clone();
        for (j, &x) in node.inputs.iter().enumerate() {
            if !active[x.index()] {
                continue;
            }
            if let Some(contrib) = vjp(b, ValueId(i as u32), j, g) {
                let acc = match adj.get(&x.index()) {
                    Some(&prev) => b.add(prev, contrib),
                    None => contrib,
                };
                adj.insert(x.index(), acc);
            }
        }
    }
    Ok(wrt
        .iter()
        .map(|w| {
            if active.get(w.index()).copied().unwrap_or(false) {
                adj.get(&w.index()).copied()
            } else {
                None
            }
        })
        .collect())
}

/// The contribution of output gradient `g` of node `y` to its operand `j`.
fn vjp(b: &mut Builder, y: ValueId, j: usize, g: ValueId) -> Option<ValueId> {
    let node = b.graph.node(y).clone();
    let x = |k: usize| node.inputs[k];
    let zeros_like = |b: &mut Builder, v: ValueId| b.full_like(0.0, v);
    Some(match &node.op {
        Op::Input { .. }
        | Op::Constant { .. }
        | Op::Iota { .. }
        | Op::Compare(_)
        | Op::RandomUniform { .. } => return None,
        Op::Unary(u) => {
            let a = x(0);
            match u {
                UnaryOp::Neg => b.neg(g),
                UnaryOp::Abs => {
                    let z = zeros_like(b, a);
                    let pos = b.compare(CmpOp::Gt, a, z);
                    let neg = b.compare(CmpOp::Lt, a, z);
                    let ng = b.neg(g);
                    let inner = b.select(neg, ng, z);
                    b.select(pos, g, inner)
                }
                UnaryOp::Exp => b.mul(g, y),
                UnaryOp::Log => b.div(g, a),
                UnaryOp::Tanh => {
                    let yy = b.mul(y, y);
                    let one = b.full_like(1.0, y);
                    let d = b.sub(one, yy);
                    b.mul(g, d)
                }
                UnaryOp::Erf => {
                    let aa = b.mul(a, a);
                    let naa = b.neg(aa);
                    let e = b.exp(naa);
                    let d = b.mul_scalar(e, std::f64::consts::FRAC_2_SQRT_PI);
                    b.mul(g, d)
                }
                UnaryOp::Sqrt => {
                    let gh = b.mul_scalar(g, 0.5);
                    b.div(gh, y)
                }
                UnaryOp::Rsqrt => {
                    let yy = b.mul(y, y);
                    let yyy = b.mul(yy, y);
                    let d = b.mul_scalar(yyy, -0.5);
                    b.mul(g, d)
                }
                UnaryOp::StopGradient | UnaryOp::Not | UnaryOp::IsFinite => return None,
            }
        }
        Op::Binary(op) => {
            let (p, q) = (x(0), x(1));
            match op {
                BinaryOp::Add => g,
                BinaryOp::Sub => {
                    if j == 0 {
                        g
                    } else {
                        b.neg(g)
                    }
                }
                BinaryOp::Mul => b.mul(g, if j == 0 { q } else { p }),
                BinaryOp::Div => {
                    if j == 0 {
                        b.div(g, q)
                    } else {
                        let gy = b.mul(g, y);
                        let t = b.div(gy, q);
                        b.neg(t)
                    }
                }
                BinaryOp::Max | BinaryOp::Min => {
                    // The larger (smaller) operand takes the gradient; ties split it evenly.
                    let (me, other) = if j == 0 { (p, q) } else { (q, p) };
                    let wins = if *op == BinaryOp::Max {
                        CmpOp::Gt
                    } else {
                        CmpOp::Lt
                    };
                    let win = b.compare(wins, me, other);
                    let tie = b.compare(CmpOp::Eq, me, other);
                    let half = b.mul_scalar(g, 0.5);
                    let z = zeros_like(b, g);
                    let tied = b.select(tie, half, z);
                    b.select(win, g, tied)
                }
                BinaryOp::And | BinaryOp::Or => return None,
            }
        }
        Op::Select => {
            if j == 0 {
                return None;
            }
            let z = zeros_like(b, g);
            if j == 1 {
                b.select(x(0), g, z)
            } else {
                b.select(x(0), z, g)
            }
        }
        Op::Cast => {
            let dt = b.dtype(x(0));
            if !dt.is_float() {
                return None;
            }
            b.cast(g, dt)
        }
        Op::Broadcast { dims } => {
            let rank = node.ty.rank();
            let axes: Vec<usize> = (0..rank).filter(|d| !dims.contains(d)).collect();
            if axes.is_empty() {
                g
            } else {
                b.sum(g, &axes)
            }
        }
        Op::Reshape => {
            let s = b.shape(x(0));
            b.reshape(g, &s)
        }
        Op::Transpose { perm } => {
            let mut inv = vec![0; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inv[p] = i;
            }
            b.transpose(g, &inv)
        }
        Op::Reduce { kind, axes } => {
            let a = x(0);
            let s = b.shape(a);
            let kept: Vec<usize> = (0..s.len()).filter(|d| !axes.contains(d)).collect();
            let gb = b.broadcast(g, &s, &kept);
            match kind {
                ReduceKind::Sum => gb,
                ReduceKind::Mean => {
                    let count: usize = axes.iter().map(|&d| s[d]).product();
                    b.mul_scalar(gb, 1.0 / count as f64)
                }
                ReduceKind::Max | ReduceKind::Min => {
                    let yb = b.broadcast(y, &s, &kept);
                    let hit = b.compare(CmpOp::Eq, a, yb);
                    let dt = b.dtype(a);
                    let hitf = b.cast(hit, dt);
                    let count = b.sum(hitf, axes);
                    let countb = b.broadcast(count, &s, &kept);
                    let share = b.div(gb, countb);
                    let z = zeros_like(b, a);
                    b.select(hit, share, z)
                }
            }
        }
        Op::MatMul {
            transpose_a,
            transpose_b,
        } => {
            let (a, c) = (x(0), x(1));
            match (j, *transpose_a, *transpose_b) {
                (0, false, false) => b.matmul(g, c, false, true),
                (1, false, false) => b.matmul(a, g, true, false),
                (0, true, false) => b.matmul(c, g, false, true),
                (1, true, false) => b.matmul(a, g, false, false),
                (0, false, true) => b.matmul(g, c, false, false),
                (1, false, true) => b.matmul(g, a, true, false),
                (0, true, true) => b.matmul(c, g, true, true),
                (1, true, true) => b.matmul(g, a, true, true),
                _ => unreachable!(),
            }
        }
        Op::Gather => {
            if j != 0 {
                return None;
            }
            let rows = b.shape(x(0))[0];
            b.scatter_add(x(1), g, rows)
        }
        Op::ScatterAdd => {
            if j != 1 {
                return None;
            }
            b.gather(g, x(0))
        }
        // The adjoint of a mean over the group is the mean over the group.
        Op::AllReduceMean => b.all_reduce_mean(g),
        Op::Slice { start, end } => {
            let s = b.shape(x(0));
            let high: Vec<usize> = (0..s.len()).map(|d| s[d] - end[d]).collect();
            b.pad(g, start, &high)
        }
        Op::Pad { low, .. } => {
            let s = b.shape(x(0));
            let end: Vec<usize> = (0..s.len()).map(|d| low[d] + s[d]).collect();
            b.slice(g, low, &end)
        }
    })
}

/// Convenience: plain gradients (seed 1) of `loss`.
pub fn grad(
    b: &mut Builder,
    loss: ValueId,
    wrt: &[ValueId],
) -> Result<Vec<Option<ValueId>>, AutodiffError> {
    let dt: DType = b.dtype(loss);
    let one = b.scalar(1.0, dt);
    gradients(b, loss, one, wrt)
}
