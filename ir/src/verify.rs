//! Type rules of every op and the graph verifier. The builder, the parser and the verifier all
//! use [`check_node`], so the rules live in one place.

use crate::graph::Graph;
use crate::op::{BinaryOp, Op, UnaryOp};
use crate::types::{shape_str, DType, TensorType};
use std::collections::HashSet;

/// A verifier error naming the node.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{location}: {message}")]
pub struct VerifyError {
    pub location: String,
    pub message: String,
}

fn err<T>(msg: impl Into<String>) -> Result<T, String> {
    Err(msg.into())
}

fn same_shape(a: &TensorType, b: &TensorType, what: &str) -> Result<(), String> {
    if a.shape != b.shape {
        return err(format!(
            "{what}: operand shapes differ ({} vs {})",
            shape_str(&a.shape),
            shape_str(&b.shape)
        ));
    }
    Ok(())
}

fn axes_ok(axes: &[usize], rank: usize, what: &str) -> Result<(), String> {
    let mut seen = HashSet::new();
    for &a in axes {
        if a >= rank {
            return err(format!("{what}: axis {a} out of range for rank {rank}"));
        }
        if !seen.insert(a) {
            return err(format!("{what}: axis {a} repeated"));
        }
    }
    Ok(())
}

/// Checks that `op` applied to operands of types `ins` may produce `out`.
pub fn check_node(op: &Op, ins: &[&TensorType], out: &TensorType) -> Result<(), String> {
    let name = op.mnemonic();
    if ins.len() != op.arity() {
        return err(format!(
            "{name} takes {} operand(s), got {}",
            op.arity(),
            ins.len()
        ));
    }
    let expect_out = |shape: Vec<usize>, dtype: DType| -> Result<(), String> {
        let want = TensorType::new(dtype, shape);
        if *out != want {
            return err(format!("{name}: result type must be {want}, found {out}"));
        }
        Ok(())
    };
    match op {
        Op::Input { name: n } => {
            if n.is_empty() {
                return err("input: empty name");
            }
            Ok(())
        }
        Op::Constant { value } => {
            if out.dtype.is_int() && value.fract() != 0.0 {
                return err(format!("constant: {value} is not an integer for {out}"));
            }
            if out.dtype == DType::Bool && *value != 0.0 && *value != 1.0 {
                return err(format!(
                    "constant: bool constant must be 0 or 1, found {value}"
                ));
            }
            Ok(())
        }
        Op::Iota { axis } => {
            if *axis >= out.rank() {
                return err(format!("iota: axis {axis} out of range for {out}"));
            }
            if out.dtype == DType::Bool {
                return err("iota: result must be numeric");
            }
            Ok(())
        }
        Op::Unary(u) => {
            let x = ins[0];
            match u {
                UnaryOp::Not => {
                    if x.dtype != DType::Bool {
                        return err(format!("not: operand must be bool, found {x}"));
                    }
                    expect_out(x.shape.clone(), DType::Bool)
                }
                UnaryOp::IsFinite => {
                    if !x.dtype.is_float() {
                        return err(format!("is_finite: operand must be float, found {x}"));
                    }
                    expect_out(x.shape.clone(), DType::Bool)
                }
                UnaryOp::Neg | UnaryOp::Abs | UnaryOp::StopGradient => {
                    if x.dtype == DType::Bool {
                        return err(format!("{name}: operand must be numeric, found {x}"));
                    }
                    expect_out(x.shape.clone(), x.dtype)
                }
                _ => {
                    if !x.dtype.is_float() {
                        return err(format!("{name}: operand must be float, found {x}"));
                    }
                    expect_out(x.shape.clone(), x.dtype)
                }
            }
        }
        Op::Binary(b) => {
            let (a, c) = (ins[0], ins[1]);
            if a != c {
                return err(format!("{name}: operand types differ ({a} vs {c})"));
            }
            if b.is_logical() != (a.dtype == DType::Bool) {
                return err(format!("{name}: operand dtype {} not allowed", a.dtype));
            }
            if *b == BinaryOp::Div && !a.dtype.is_float() {
                return err(format!("div: operands must be float, found {a}"));
            }
            expect_out(a.shape.clone(), a.dtype)
        }
        Op::Compare(_) => {
            let (a, c) = (ins[0], ins[1]);
            if a != c {
                return err(format!("{name}: operand types differ ({a} vs {c})"));
            }
            expect_out(a.shape.clone(), DType::Bool)
        }
        Op::Select => {
            let (c, a, b) = (ins[0], ins[1], ins[2]);
            if c.dtype != DType::Bool {
                return err(format!("select: condition must be bool, found {c}"));
            }
            if a != b {
                return err(format!("select: branch types differ ({a} vs {b})"));
            }
            same_shape(c, a, "select")?;
            expect_out(a.shape.clone(), a.dtype)
        }
        Op::Cast => same_shape(ins[0], out, "cast"),
        Op::Broadcast { dims } => {
            let x = ins[0];
            if out.dtype != x.dtype {
                return err(format!("broadcast: dtype changes ({x} to {out})"));
            }
            if dims.len() != x.rank() {
                return err(format!(
                    "broadcast: dims {dims:?} must have one entry per operand dim ({x})"
                ));
            }
            if dims.windows(2).any(|w| w[0] >= w[1]) {
                return err(format!(
                    "broadcast: dims {dims:?} must be strictly increasing"
                ));
            }
            for (i, &d) in dims.iter().enumerate() {
                if d >= out.rank() || out.shape[d] != x.shape[i] {
                    return err(format!(
                        "broadcast: operand dim {i} (size {}) does not match result dim {d} of {out}",
                        x.shape[i]
                    ));
                }
            }
            Ok(())
        }
        Op::Reshape => {
            let x = ins[0];
            if out.dtype != x.dtype || out.numel() != x.numel() {
                return err(format!("reshape: {x} cannot become {out}"));
            }
            Ok(())
        }
        Op::Transpose { perm } => {
            let x = ins[0];
            let mut sorted = perm.clone();
            sorted.sort_unstable();
            if sorted != (0..x.rank()).collect::<Vec<_>>() {
                return err(format!(
                    "transpose: {perm:?} is not a permutation of rank {}",
                    x.rank()
                ));
            }
            expect_out(perm.iter().map(|&p| x.shape[p]).collect(), x.dtype)
        }
        Op::Reduce { axes, .. } => {
            let x = ins[0];
            if x.dtype == DType::Bool {
                return err(format!("{name}: operand must be numeric, found {x}"));
            }
            axes_ok(axes, x.rank(), name)?;
            if matches!(
                op,
                Op::Reduce {
                    kind: crate::op::ReduceKind::Mean,
                    ..
                }
            ) && !x.dtype.is_float()
            {
                return err("reduce_mean: operand must be float");
            }
            let shape = (0..x.rank())
                .filter(|d| !axes.contains(d))
                .map(|d| x.shape[d])
                .collect();
            expect_out(shape, x.dtype)
        }
        Op::MatMul {
            transpose_a,
            transpose_b,
        } => {
            let (a, b) = (ins[0], ins[1]);
            if a.dtype != b.dtype || !a.dtype.is_float() {
                return err(format!(
                    "matmul: operands must be the same float type ({a}, {b})"
                ));
            }
            if a.rank() < 2 || a.rank() != b.rank() {
                return err(format!(
                    "matmul: operands must have equal rank >= 2 ({a}, {b})"
                ));
            }
            let r = a.rank();
            if a.shape[..r - 2] != b.shape[..r - 2] {
                return err(format!("matmul: batch dims differ ({a}, {b})"));
            }
            let (m, ka) = if *transpose_a {
                (a.shape[r - 1], a.shape[r - 2])
            } else {
                (a.shape[r - 2], a.shape[r - 1])
            };
            let (kb, n) = if *transpose_b {
                (b.shape[r - 1], b.shape[r - 2])
            } else {
                (b.shape[r - 2], b.shape[r - 1])
            };
            if ka != kb {
                return err(format!(
                    "matmul: contracting dims differ ({ka} vs {kb}) for {a} x {b}"
                ));
            }
            let mut shape = a.shape[..r - 2].to_vec();
            shape.extend([m, n]);
            expect_out(shape, a.dtype)
        }
        Op::Gather => {
            let (t, i) = (ins[0], ins[1]);
            if !i.dtype.is_int() {
                return err(format!("gather: indices must be i32 or i64, found {i}"));
            }
            if t.rank() < 1 {
                return err("gather: table must have rank >= 1");
            }
            let mut shape = i.shape.clone();
            shape.extend_from_slice(&t.shape[1..]);
            expect_out(shape, t.dtype)
        }
        Op::ScatterAdd => {
            let (i, u) = (ins[0], ins[1]);
            if !i.dtype.is_int() {
                return err(format!(
                    "scatter_add: indices must be i32 or i64, found {i}"
                ));
            }
            if u.shape.len() < i.shape.len() || u.shape[..i.rank()] != i.shape[..] {
                return err(format!(
                    "scatter_add: updates {u} do not start with index shape {i}"
                ));
            }
            if out.rank() < 1 || out.dtype != u.dtype || out.shape[1..] != u.shape[i.rank()..] {
                return err(format!(
                    "scatter_add: result {out} does not fit updates {u}"
                ));
            }
            Ok(())
        }
        Op::Slice { start, end } => {
            let x = ins[0];
            if start.len() != x.rank() || end.len() != x.rank() {
                return err(format!("slice: start/end need {} entries", x.rank()));
            }
            for d in 0..x.rank() {
                if start[d] > end[d] || end[d] > x.shape[d] {
                    return err(format!(
                        "slice: range {}..{} invalid for dim {d} of {x}",
                        start[d], end[d]
                    ));
                }
            }
            expect_out((0..x.rank()).map(|d| end[d] - start[d]).collect(), x.dtype)
        }
        Op::Pad { low, high } => {
            let x = ins[0];
            if low.len() != x.rank() || high.len() != x.rank() {
                return err(format!("pad: low/high need {} entries", x.rank()));
            }
            expect_out(
                (0..x.rank())
                    .map(|d| low[d] + x.shape[d] + high[d])
                    .collect(),
                x.dtype,
            )
        }
        Op::AllReduceMean => {
            if !ins[0].dtype.is_float() {
                return err(format!(
                    "all_reduce_mean: operand must be float, found {}",
                    ins[0]
                ));
            }
            expect_out(ins[0].shape.clone(), ins[0].dtype)
        }
        Op::RandomUniform { .. } => {
            for (what, t) in [("seed", ins[0]), ("counter", ins[1])] {
                if !t.dtype.is_int() || t.rank() != 0 {
                    return err(format!(
                        "random_uniform: {what} must be an integer scalar, found {t}"
                    ));
                }
            }
            if !out.dtype.is_float() {
                return err(format!("random_uniform: result must be float, found {out}"));
            }
            Ok(())
        }
    }
}

/// Verifies the whole graph: operands defined before use, every node's type rule, unique input
/// and output names, outputs defined.
pub fn verify(g: &Graph) -> Result<(), VerifyError> {
    let mut input_names = HashSet::new();
    for (i, node) in g.nodes.iter().enumerate() {
        let loc = || format!("%{i} ({})", node.op.mnemonic());
        for &v in &node.inputs {
            if v.index() >= i {
                return Err(VerifyError {
                    location: loc(),
                    message: format!("operand {v} is not defined before use"),
                });
            }
        }
        if let Op::Input { name } = &node.op {
            if !input_names.insert(name.as_str()) {
                return Err(VerifyError {
                    location: loc(),
                    message: format!("input name \"{name}\" used twice"),
                });
            }
        }
        let ins: Vec<&TensorType> = node.inputs.iter().map(|&v| g.ty(v)).collect();
        check_node(&node.op, &ins, &node.ty).map_err(|message| VerifyError {
            location: loc(),
            message,
        })?;
    }
    let mut out_names = HashSet::new();
    for (name, v) in &g.outputs {
        if v.index() >= g.nodes.len() {
            return Err(VerifyError {
                location: format!("output \"{name}\""),
                message: format!("{v} is not defined"),
            });
        }
        if !out_names.insert(name.as_str()) {
            return Err(VerifyError {
                location: format!("output \"{name}\""),
                message: "output name used twice".into(),
            });
        }
    }
    Ok(())
}
