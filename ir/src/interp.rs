//! The reference interpreter: executes any verified graph on the host, one node at a time, in
//! plain Rust. It is the oracle every compiled target is tested against, so it favours obvious
//! correctness over speed. Semantics worth knowing:
//! - elementwise float ops compute in the tensor's dtype (f16/bf16 through f32, rounded back);
//! - sums, means, matmuls and scatter-adds accumulate in f64 and round once at the end;
//! - `max`/`min` propagate NaN; comparisons with NaN are false (except `ne`).

use crate::graph::Graph;
use crate::op::{BinaryOp, CmpOp, Op, ReduceKind, UnaryOp};
use crate::rng;
use crate::tensor::{strides, Data, Tensor};
use crate::types::TensorType;
use half::{bf16, f16};
use num_traits::Float;
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InterpError {
    #[error("missing input \"{name}\" (expected {expected})")]
    MissingInput { name: String, expected: TensorType },
    #[error("input \"{name}\": expected {expected}, found {found}")]
    InputMismatch {
        name: String,
        expected: TensorType,
        found: String,
    },
    #[error("%{node} ({op}): {message}")]
    Runtime {
        node: usize,
        op: &'static str,
        message: String,
    },
}

/// Float element types the interpreter computes in natively.
trait Real: Float {
    fn erf(self) -> Self;
}
impl Real for f32 {
    fn erf(self) -> f32 {
        libm::erff(self)
    }
}
impl Real for f64 {
    fn erf(self) -> f64 {
        libm::erf(self)
    }
}

fn nan_max<T: Float>(a: T, b: T) -> T {
    if a.is_nan() || b.is_nan() {
        T::nan()
    } else if a >= b {
        a
    } else {
        b
    }
}

fn nan_min<T: Float>(a: T, b: T) -> T {
    if a.is_nan() || b.is_nan() {
        T::nan()
    } else if a <= b {
        a
    } else {
        b
    }
}

fn unary_real<T: Real>(u: UnaryOp, a: T) -> T {
    match u {
        UnaryOp::Neg => -a,
        UnaryOp::Abs => a.abs(),
        UnaryOp::Exp => a.exp(),
        UnaryOp::Log => a.ln(),
        UnaryOp::Tanh => a.tanh(),
        UnaryOp::Erf => a.erf(),
        UnaryOp::Sqrt => a.sqrt(),
        UnaryOp::Rsqrt => T::one() / a.sqrt(),
        UnaryOp::StopGradient => a,
        UnaryOp::Not | UnaryOp::IsFinite => unreachable!("handled by the caller"),
    }
}

fn binary_real<T: Float>(b: BinaryOp, x: T, y: T) -> T {
    match b {
        BinaryOp::Add => x + y,
        BinaryOp::Sub => x - y,
        BinaryOp::Mul => x * y,
        BinaryOp::Div => x / y,
        BinaryOp::Max => nan_max(x, y),
        BinaryOp::Min => nan_min(x, y),
        BinaryOp::And | BinaryOp::Or => unreachable!("logical ops take bools"),
    }
}

fn binary_int(b: BinaryOp, x: i64, y: i64) -> i64 {
    match b {
        BinaryOp::Add => x.wrapping_add(y),
        BinaryOp::Sub => x.wrapping_sub(y),
        BinaryOp::Mul => x.wrapping_mul(y),
        BinaryOp::Max => x.max(y),
        BinaryOp::Min => x.min(y),
        _ => unreachable!("verifier rejects {b:?} on integers"),
    }
}

fn compare<T: PartialOrd>(c: CmpOp, x: T, y: T) -> bool {
    match c {
        CmpOp::Eq => x == y,
        CmpOp::Ne => x != y,
        CmpOp::Lt => x < y,
        CmpOp::Le => x <= y,
        CmpOp::Gt => x > y,
        CmpOp::Ge => x >= y,
    }
}

fn unary(u: UnaryOp, x: &Data) -> Data {
    match u {
        UnaryOp::Not => match x {
            Data::Bool(v) => Data::Bool(v.iter().map(|a| !a).collect()),
            _ => unreachable!(),
        },
        UnaryOp::IsFinite => Data::Bool(x.to_f64().iter().map(|a| a.is_finite()).collect()),
        _ => match x {
            Data::F32(v) => Data::F32(v.iter().map(|&a| unary_real(u, a)).collect()),
            Data::F64(v) => Data::F64(v.iter().map(|&a| unary_real(u, a)).collect()),
            Data::F16(v) => Data::F16(
                v.iter()
                    .map(|a| f16::from_f32(unary_real(u, a.to_f32())))
                    .collect(),
            ),
            Data::BF16(v) => Data::BF16(
                v.iter()
                    .map(|a| bf16::from_f32(unary_real(u, a.to_f32())))
                    .collect(),
            ),
            Data::I32(v) => Data::I32(v.iter().map(|&a| int_unary(u, a as i64) as i32).collect()),
            Data::I64(v) => Data::I64(v.iter().map(|&a| int_unary(u, a)).collect()),
            Data::Bool(_) => unreachable!(),
        },
    }
}

fn int_unary(u: UnaryOp, a: i64) -> i64 {
    match u {
        UnaryOp::Neg => a.wrapping_neg(),
        UnaryOp::Abs => a.wrapping_abs(),
        UnaryOp::StopGradient => a,
        _ => unreachable!("verifier rejects {u:?} on integers"),
    }
}

fn binary(b: BinaryOp, x: &Data, y: &Data) -> Data {
    fn zip<T: Copy, U>(a: &[T], b: &[T], f: impl Fn(T, T) -> U) -> Vec<U> {
        a.iter().zip(b).map(|(&p, &q)| f(p, q)).collect()
    }
    match (x, y) {
        (Data::F32(a), Data::F32(c)) => Data::F32(zip(a, c, |p, q| binary_real(b, p, q))),
        (Data::F64(a), Data::F64(c)) => Data::F64(zip(a, c, |p, q| binary_real(b, p, q))),
        (Data::F16(a), Data::F16(c)) => Data::F16(zip(a, c, |p, q| {
            f16::from_f32(binary_real(b, p.to_f32(), q.to_f32()))
        })),
        (Data::BF16(a), Data::BF16(c)) => Data::BF16(zip(a, c, |p, q| {
            bf16::from_f32(binary_real(b, p.to_f32(), q.to_f32()))
        })),
        (Data::I32(a), Data::I32(c)) => {
            Data::I32(zip(a, c, |p, q| binary_int(b, p as i64, q as i64) as i32))
        }
        (Data::I64(a), Data::I64(c)) => Data::I64(zip(a, c, |p, q| binary_int(b, p, q))),
        (Data::Bool(a), Data::Bool(c)) => Data::Bool(zip(a, c, |p, q| match b {
            BinaryOp::And => p && q,
            BinaryOp::Or => p || q,
            _ => unreachable!(),
        })),
        _ => unreachable!("verifier guarantees equal operand types"),
    }
}

fn compare_data(c: CmpOp, x: &Data, y: &Data) -> Data {
    let out = match (x, y) {
        (Data::I64(a), Data::I64(b)) => a.iter().zip(b).map(|(p, q)| compare(c, p, q)).collect(),
        _ => {
            let (a, b) = (x.to_f64(), y.to_f64());
            a.iter().zip(&b).map(|(p, q)| compare(c, p, q)).collect()
        }
    };
    Data::Bool(out)
}

fn select(c: &[bool], a: &Data, b: &Data) -> Data {
    let pick_from_b: Vec<Option<usize>> = (0..c.len()).map(Some).collect();
    let mut out = b.take(&pick_from_b);
    fn overwrite<T: Copy>(dst: &mut [T], src: &[T], c: &[bool]) {
        for i in 0..c.len() {
            if c[i] {
                dst[i] = src[i];
            }
        }
    }
    match (&mut out, a) {
        (Data::F32(d), Data::F32(s)) => overwrite(d, s, c),
        (Data::F64(d), Data::F64(s)) => overwrite(d, s, c),
        (Data::F16(d), Data::F16(s)) => overwrite(d, s, c),
        (Data::BF16(d), Data::BF16(s)) => overwrite(d, s, c),
        (Data::I32(d), Data::I32(s)) => overwrite(d, s, c),
        (Data::I64(d), Data::I64(s)) => overwrite(d, s, c),
        (Data::Bool(d), Data::Bool(s)) => overwrite(d, s, c),
        _ => unreachable!("verifier guarantees equal branch types"),
    }
    out
}

/// For every element of `out_shape` (row-major), the flat source index produced by `src` from
/// the output multi-index.
fn index_map(
    out_shape: &[usize],
    mut src: impl FnMut(&[usize]) -> Option<usize>,
) -> Vec<Option<usize>> {
    let n: usize = out_shape.iter().product();
    let mut idx = vec![0usize; out_shape.len()];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(src(&idx));
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            if idx[d] < out_shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

fn reduce(kind: ReduceKind, x: &Tensor, axes: &[usize], out_ty: &TensorType) -> Data {
    let out_n = out_ty.numel();
    let in_shape = &x.shape;
    let kept: Vec<usize> = (0..in_shape.len()).filter(|d| !axes.contains(d)).collect();
    let out_strides = strides(&out_ty.shape);
    // Output position of every input element.
    let mut pos = Vec::with_capacity(x.numel());
    let mut idx = vec![0usize; in_shape.len()];
    for _ in 0..x.numel() {
        pos.push(
            kept.iter()
                .zip(&out_strides)
                .map(|(&d, &s)| idx[d] * s)
                .sum::<usize>(),
        );
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            if idx[d] < in_shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    let count = (x.numel() / out_n.max(1)) as f64;
    match &x.data {
        Data::I32(_) | Data::I64(_) => {
            let v = x.data.to_i64().unwrap();
            let init = match kind {
                ReduceKind::Sum | ReduceKind::Mean => 0,
                ReduceKind::Max => i64::MIN,
                ReduceKind::Min => i64::MAX,
            };
            let mut acc = vec![init; out_n];
            for (i, &a) in v.iter().enumerate() {
                let o = &mut acc[pos[i]];
                *o = match kind {
                    ReduceKind::Sum | ReduceKind::Mean => o.wrapping_add(a),
                    ReduceKind::Max => (*o).max(a),
                    ReduceKind::Min => (*o).min(a),
                };
            }
            Data::I64(acc).cast(out_ty.dtype)
        }
        _ => {
            let v = x.to_f64();
            let init = match kind {
                ReduceKind::Sum | ReduceKind::Mean => 0.0,
                ReduceKind::Max => f64::NEG_INFINITY,
                ReduceKind::Min => f64::INFINITY,
            };
            let mut acc = vec![init; out_n];
            for (i, &a) in v.iter().enumerate() {
                let o = &mut acc[pos[i]];
                *o = match kind {
                    ReduceKind::Sum | ReduceKind::Mean => *o + a,
                    ReduceKind::Max => nan_max(*o, a),
                    ReduceKind::Min => nan_min(*o, a),
                };
            }
            if kind == ReduceKind::Mean {
                for a in &mut acc {
                    *a /= count;
                }
            }
            Data::from_f64(out_ty.dtype, &acc)
        }
    }
}

/// Transposes the last two dims of a flat row-major buffer of shape `[batch, r, c]`.
fn transpose_last2(v: &[f64], batch: usize, r: usize, c: usize) -> Vec<f64> {
    let mut out = vec![0.0; v.len()];
    for b in 0..batch {
        for i in 0..r {
            for j in 0..c {
                out[b * r * c + j * r + i] = v[b * r * c + i * c + j];
            }
        }
    }
    out
}

fn matmul(a: &Tensor, b: &Tensor, ta: bool, tb: bool, out_ty: &TensorType) -> Data {
    let r = a.shape.len();
    let batch: usize = a.shape[..r - 2].iter().product();
    let (ar, ac) = (a.shape[r - 2], a.shape[r - 1]);
    let (br, bc) = (b.shape[r - 2], b.shape[r - 1]);
    let mut av = a.to_f64();
    let mut bv = b.to_f64();
    let (m, k) = if ta {
        av = transpose_last2(&av, batch, ar, ac);
        (ac, ar)
    } else {
        (ar, ac)
    };
    let n = if tb {
        bv = transpose_last2(&bv, batch, br, bc);
        br
    } else {
        bc
    };
    let mut out = vec![0.0f64; batch * m * n];
    for bi in 0..batch {
        let a0 = bi * m * k;
        let b0 = bi * k * n;
        let o0 = bi * m * n;
        for i in 0..m {
            let acc = &mut out[o0 + i * n..o0 + (i + 1) * n];
            for kk in 0..k {
                let x = av[a0 + i * k + kk];
                let row = &bv[b0 + kk * n..b0 + (kk + 1) * n];
                for (o, &y) in acc.iter_mut().zip(row) {
                    *o += x * y;
                }
            }
        }
    }
    Data::from_f64(out_ty.dtype, &out)
}

/// Runs graphs on the host.
pub struct Interpreter;

impl Interpreter {
    /// Executes `g` with the named inputs; returns the named outputs in graph order.
    pub fn run(
        g: &Graph,
        inputs: &HashMap<String, Tensor>,
    ) -> Result<Vec<(String, Tensor)>, InterpError> {
        // Last use of every value, so intermediates are freed as soon as possible.
        let mut last_use = vec![0usize; g.len()];
        for (i, n) in g.nodes.iter().enumerate() {
            for v in &n.inputs {
                last_use[v.index()] = i;
            }
        }
        for (_, v) in &g.outputs {
            last_use[v.index()] = usize::MAX;
        }
        let mut vals: Vec<Option<Tensor>> = vec![None; g.len()];
        for (i, node) in g.nodes.iter().enumerate() {
            let t = {
                let args: Vec<&Tensor> = node
                    .inputs
                    .iter()
                    .map(|v| vals[v.index()].as_ref().expect("operand alive"))
                    .collect();
                eval_node(i, &node.op, &args, &node.ty, inputs)?
            };
            vals[i] = Some(t);
            for v in &node.inputs {
                if last_use[v.index()] == i {
                    vals[v.index()] = None;
                }
            }
            if last_use[i] == 0 && !g.outputs.iter().any(|(_, o)| o.index() == i) {
                vals[i] = None;
            }
        }
        Ok(g.outputs
            .iter()
            .map(|(name, v)| (name.clone(), vals[v.index()].clone().expect("output alive")))
            .collect())
    }

    /// Like [`Interpreter::run`] but returns a map.
    pub fn run_map(
        g: &Graph,
        inputs: &HashMap<String, Tensor>,
    ) -> Result<HashMap<String, Tensor>, InterpError> {
        Ok(Self::run(g, inputs)?.into_iter().collect())
    }
}

fn runtime_err(node: usize, op: &Op, message: String) -> InterpError {
    InterpError::Runtime {
        node,
        op: op.mnemonic(),
        message,
    }
}

fn eval_node(
    i: usize,
    op: &Op,
    args: &[&Tensor],
    ty: &TensorType,
    inputs: &HashMap<String, Tensor>,
) -> Result<Tensor, InterpError> {
    let data = match op {
        Op::Input { name } => {
            let t = inputs.get(name).ok_or_else(|| InterpError::MissingInput {
                name: name.clone(),
                expected: ty.clone(),
            })?;
            if t.ty() != *ty {
                return Err(InterpError::InputMismatch {
                    name: name.clone(),
                    expected: ty.clone(),
                    found: t.describe(),
                });
            }
            return Ok(t.clone());
        }
        Op::Constant { value } => Data::splat(ty.dtype, *value, ty.numel()),
        Op::Iota { axis } => {
            let st = strides(&ty.shape);
            let v: Vec<f64> = (0..ty.numel())
                .map(|f| ((f / st[*axis]) % ty.shape[*axis]) as f64)
                .collect();
            Data::from_f64(ty.dtype, &v)
        }
        Op::Unary(u) => unary(*u, &args[0].data),
        Op::Binary(b) => binary(*b, &args[0].data, &args[1].data),
        Op::Compare(c) => compare_data(*c, &args[0].data, &args[1].data),
        Op::Select => match &args[0].data {
            Data::Bool(c) => select(c, &args[1].data, &args[2].data),
            _ => unreachable!(),
        },
        Op::Cast => args[0].data.cast(ty.dtype),
        Op::Reshape => args[0].data.clone(),
        Op::Broadcast { dims } => {
            let xs = strides(&args[0].shape);
            let idx = index_map(&ty.shape, |o| {
                Some(dims.iter().zip(&xs).map(|(&d, &s)| o[d] * s).sum())
            });
            args[0].data.take(&idx)
        }
        Op::Transpose { perm } => {
            let xs = strides(&args[0].shape);
            let idx = index_map(&ty.shape, |o| {
                Some(perm.iter().enumerate().map(|(i, &p)| o[i] * xs[p]).sum())
            });
            args[0].data.take(&idx)
        }
        Op::Slice { start, .. } => {
            let xs = strides(&args[0].shape);
            let idx = index_map(&ty.shape, |o| {
                Some(
                    o.iter()
                        .enumerate()
                        .map(|(d, &x)| (x + start[d]) * xs[d])
                        .sum(),
                )
            });
            args[0].data.take(&idx)
        }
        Op::Pad { low, .. } => {
            let x = args[0];
            let xs = strides(&x.shape);
            let idx = index_map(&ty.shape, |o| {
                let mut f = 0;
                for d in 0..o.len() {
                    if o[d] < low[d] || o[d] - low[d] >= x.shape[d] {
                        return None;
                    }
                    f += (o[d] - low[d]) * xs[d];
                }
                Some(f)
            });
            x.data.take(&idx)
        }
        Op::Reduce { kind, axes } => reduce(*kind, args[0], axes, ty),
        Op::MatMul {
            transpose_a,
            transpose_b,
        } => matmul(args[0], args[1], *transpose_a, *transpose_b, ty),
        Op::Gather => {
            let (table, idx) = (args[0], args[1]);
            let rows = table.shape[0];
            let row: usize = table.shape[1..].iter().product();
            let ids = idx.data.to_i64().expect("int indices");
            let mut pick = Vec::with_capacity(ids.len() * row);
            for &id in &ids {
                if id < 0 || id as usize >= rows {
                    return Err(runtime_err(
                        i,
                        op,
                        format!("index {id} out of range for a table of {rows} rows"),
                    ));
                }
                pick.extend((0..row).map(|j| Some(id as usize * row + j)));
            }
            table.data.take(&pick)
        }
        Op::ScatterAdd => {
            let (idx, upd) = (args[0], args[1]);
            let rows = ty.shape[0];
            let row: usize = ty.shape[1..].iter().product();
            let ids = idx.data.to_i64().expect("int indices");
            let u = upd.to_f64();
            let mut acc = vec![0.0f64; rows * row];
            for (n, &id) in ids.iter().enumerate() {
                if id < 0 || id as usize >= rows {
                    return Err(runtime_err(
                        i,
                        op,
                        format!("index {id} out of range for {rows} rows"),
                    ));
                }
                let dst = &mut acc[id as usize * row..(id as usize + 1) * row];
                for (d, s) in dst.iter_mut().zip(&u[n * row..(n + 1) * row]) {
                    *d += s;
                }
            }
            Data::from_f64(ty.dtype, &acc)
        }
        // The interpreter is one process: a group of one device.
        Op::AllReduceMean => args[0].data.clone(),
        Op::RandomUniform { op_id } => {
            let seed = args[0].data.to_i64().expect("int seed")[0];
            let counter = args[1].data.to_i64().expect("int counter")[0];
            let v: Vec<f64> = (0..ty.numel() as u64)
                .map(|e| rng::uniform(seed, *op_id, counter, e) as f64)
                .collect();
            Data::from_f64(ty.dtype, &v)
        }
    };
    Ok(Tensor::new(ty.shape.clone(), data))
}

/// Runs `g` and returns the one output named `output`.
pub fn run_one(
    g: &Graph,
    inputs: &HashMap<String, Tensor>,
    output: &str,
) -> Result<Tensor, InterpError> {
    let mut outs = Interpreter::run_map(g, inputs)?;
    Ok(outs
        .remove(output)
        .unwrap_or_else(|| panic!("graph has no output \"{output}\"")))
}
