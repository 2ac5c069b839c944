//! A checked builder over [`Graph`]: every method computes the result type, checks it with the
//! shared type rules and appends the node. A rule violation here is a bug in the caller (the
//! frontend validates user configs first), so it panics with the rule's message.

use crate::graph::{Graph, ValueId};
use crate::op::{BinaryOp, CmpOp, Op, ReduceKind, UnaryOp};
use crate::types::{DType, TensorType};
use crate::verify::check_node;

pub struct Builder {
    pub graph: Graph,
}

impl Builder {
    pub fn new(name: impl Into<String>) -> Self {
        Builder {
            graph: Graph::new(name),
        }
    }

    pub fn from_graph(graph: Graph) -> Self {
        Builder { graph }
    }

    pub fn finish(self) -> Graph {
        self.graph
    }

    pub fn ty(&self, v: ValueId) -> &TensorType {
        self.graph.ty(v)
    }

    pub fn shape(&self, v: ValueId) -> Vec<usize> {
        self.graph.ty(v).shape.clone()
    }

    pub fn dtype(&self, v: ValueId) -> DType {
        self.graph.ty(v).dtype
    }

    /// Appends `op` after checking it; panics on a type-rule violation (a caller bug).
    pub fn push(&mut self, op: Op, inputs: Vec<ValueId>, ty: TensorType) -> ValueId {
        let ins: Vec<&TensorType> = inputs.iter().map(|&v| self.graph.ty(v)).collect();
        if let Err(e) = check_node(&op, &ins, &ty) {
            panic!("ir builder: {e}");
        }
        self.graph.push(op, inputs, ty)
    }

    pub fn output(&mut self, name: impl Into<String>, v: ValueId) {
        self.graph.set_output(name, v);
    }

    pub fn input(&mut self, name: impl Into<String>, ty: TensorType) -> ValueId {
        self.push(Op::Input { name: name.into() }, vec![], ty)
    }

    pub fn constant(&mut self, value: f64, ty: TensorType) -> ValueId {
        self.push(Op::Constant { value }, vec![], ty)
    }

    /// A scalar constant of dtype `dtype`.
    pub fn scalar(&mut self, value: f64, dtype: DType) -> ValueId {
        self.constant(value, TensorType::scalar(dtype))
    }

    /// A constant with the type of `like`.
    pub fn full_like(&mut self, value: f64, like: ValueId) -> ValueId {
        let ty = self.ty(like).clone();
        self.constant(value, ty)
    }

    pub fn iota(&mut self, axis: usize, ty: TensorType) -> ValueId {
        self.push(Op::Iota { axis }, vec![], ty)
    }

    pub fn unary(&mut self, u: UnaryOp, x: ValueId) -> ValueId {
        let t = self.ty(x);
        let dtype = if matches!(u, UnaryOp::IsFinite) {
            DType::Bool
        } else {
            t.dtype
        };
        let ty = t.with_dtype(dtype);
        self.push(Op::Unary(u), vec![x], ty)
    }

    pub fn binary(&mut self, b: BinaryOp, x: ValueId, y: ValueId) -> ValueId {
        let ty = self.ty(x).clone();
        self.push(Op::Binary(b), vec![x, y], ty)
    }

    pub fn compare(&mut self, c: CmpOp, x: ValueId, y: ValueId) -> ValueId {
        let ty = self.ty(x).with_dtype(DType::Bool);
        self.push(Op::Compare(c), vec![x, y], ty)
    }

    pub fn neg(&mut self, x: ValueId) -> ValueId {
        self.unary(UnaryOp::Neg, x)
    }
    pub fn exp(&mut self, x: ValueId) -> ValueId {
        self.unary(UnaryOp::Exp, x)
    }
    pub fn log(&mut self, x: ValueId) -> ValueId {
        self.unary(UnaryOp::Log, x)
    }
    pub fn tanh(&mut self, x: ValueId) -> ValueId {
        self.unary(UnaryOp::Tanh, x)
    }
    pub fn erf(&mut self, x: ValueId) -> ValueId {
        self.unary(UnaryOp::Erf, x)
    }
    pub fn sqrt(&mut self, x: ValueId) -> ValueId {
        self.unary(UnaryOp::Sqrt, x)
    }
    pub fn rsqrt(&mut self, x: ValueId) -> ValueId {
        self.unary(UnaryOp::Rsqrt, x)
    }
    pub fn not(&mut self, x: ValueId) -> ValueId {
        self.unary(UnaryOp::Not, x)
    }
    pub fn stop_gradient(&mut self, x: ValueId) -> ValueId {
        self.unary(UnaryOp::StopGradient, x)
    }
    pub fn add(&mut self, x: ValueId, y: ValueId) -> ValueId {
        self.binary(BinaryOp::Add, x, y)
    }
    pub fn sub(&mut self, x: ValueId, y: ValueId) -> ValueId {
        self.binary(BinaryOp::Sub, x, y)
    }
    pub fn mul(&mut self, x: ValueId, y: ValueId) -> ValueId {
        self.binary(BinaryOp::Mul, x, y)
    }
    pub fn div(&mut self, x: ValueId, y: ValueId) -> ValueId {
        self.binary(BinaryOp::Div, x, y)
    }
    pub fn max(&mut self, x: ValueId, y: ValueId) -> ValueId {
        self.binary(BinaryOp::Max, x, y)
    }
    pub fn min(&mut self, x: ValueId, y: ValueId) -> ValueId {
        self.binary(BinaryOp::Min, x, y)
    }
    pub fn and(&mut self, x: ValueId, y: ValueId) -> ValueId {
        self.binary(BinaryOp::And, x, y)
    }
    pub fn or(&mut self, x: ValueId, y: ValueId) -> ValueId {
        self.binary(BinaryOp::Or, x, y)
    }

    pub fn select(&mut self, c: ValueId, a: ValueId, b: ValueId) -> ValueId {
        let ty = self.ty(a).clone();
        self.push(Op::Select, vec![c, a, b], ty)
    }

    pub fn cast(&mut self, x: ValueId, dtype: DType) -> ValueId {
        if self.dtype(x) == dtype {
            return x;
        }
        let ty = self.ty(x).with_dtype(dtype);
        self.push(Op::Cast, vec![x], ty)
    }

    /// Broadcasts `x` into `shape`, operand dim i going to result dim `dims[i]`.
    pub fn broadcast(&mut self, x: ValueId, shape: &[usize], dims: &[usize]) -> ValueId {
        if self.shape(x) == shape {
            return x;
        }
        let ty = TensorType::new(self.dtype(x), shape.to_vec());
        self.push(
            Op::Broadcast {
                dims: dims.to_vec(),
            },
            vec![x],
            ty,
        )
    }

    /// Broadcasts a scalar to `shape`.
    pub fn splat(&mut self, x: ValueId, shape: &[usize]) -> ValueId {
        self.broadcast(x, shape, &[])
    }

    /// Broadcasts `x` along new leading dims so it matches `shape` (numpy-style trailing
    /// alignment without size-1 stretching).
    pub fn broadcast_trailing(&mut self, x: ValueId, shape: &[usize]) -> ValueId {
        let r = self.ty(x).rank();
        let dims: Vec<usize> = (shape.len() - r..shape.len()).collect();
        self.broadcast(x, shape, &dims)
    }

    pub fn reshape(&mut self, x: ValueId, shape: &[usize]) -> ValueId {
        if self.shape(x) == shape {
            return x;
        }
        let ty = TensorType::new(self.dtype(x), shape.to_vec());
        self.push(Op::Reshape, vec![x], ty)
    }

    pub fn transpose(&mut self, x: ValueId, perm: &[usize]) -> ValueId {
        let s = self.shape(x);
        let ty = TensorType::new(
            self.dtype(x),
            perm.iter().map(|&p| s[p]).collect::<Vec<_>>(),
        );
        self.push(
            Op::Transpose {
                perm: perm.to_vec(),
            },
            vec![x],
            ty,
        )
    }

    pub fn reduce(&mut self, kind: ReduceKind, x: ValueId, axes: &[usize]) -> ValueId {
        let s = self.shape(x);
        let shape: Vec<usize> = (0..s.len())
            .filter(|d| !axes.contains(d))
            .map(|d| s[d])
            .collect();
        let ty = TensorType::new(self.dtype(x), shape);
        self.push(
            Op::Reduce {
                kind,
                axes: axes.to_vec(),
            },
            vec![x],
            ty,
        )
    }

    pub fn sum(&mut self, x: ValueId, axes: &[usize]) -> ValueId {
        self.reduce(ReduceKind::Sum, x, axes)
    }

    pub fn mean(&mut self, x: ValueId, axes: &[usize]) -> ValueId {
        self.reduce(ReduceKind::Mean, x, axes)
    }

    /// Reduces over every axis to a scalar.
    pub fn reduce_all(&mut self, kind: ReduceKind, x: ValueId) -> ValueId {
        let axes: Vec<usize> = (0..self.ty(x).rank()).collect();
        self.reduce(kind, x, &axes)
    }

    pub fn matmul(
        &mut self,
        a: ValueId,
        b: ValueId,
        transpose_a: bool,
        transpose_b: bool,
    ) -> ValueId {
        let (sa, sb) = (self.shape(a), self.shape(b));
        let r = sa.len();
        let m = if transpose_a { sa[r - 1] } else { sa[r - 2] };
        let n = if transpose_b { sb[r - 2] } else { sb[r - 1] };
        let mut shape = sa[..r - 2].to_vec();
        shape.extend([m, n]);
        let ty = TensorType::new(self.dtype(a), shape);
        self.push(
            Op::MatMul {
                transpose_a,
                transpose_b,
            },
            vec![a, b],
            ty,
        )
    }

    pub fn gather(&mut self, table: ValueId, idx: ValueId) -> ValueId {
        let mut shape = self.shape(idx);
        shape.extend_from_slice(&self.shape(table)[1..]);
        let ty = TensorType::new(self.dtype(table), shape);
        self.push(Op::Gather, vec![table, idx], ty)
    }

    pub fn scatter_add(&mut self, idx: ValueId, upd: ValueId, rows: usize) -> ValueId {
        let ir = self.ty(idx).rank();
        let mut shape = vec![rows];
        shape.extend_from_slice(&self.shape(upd)[ir..]);
        let ty = TensorType::new(self.dtype(upd), shape);
        self.push(Op::ScatterAdd, vec![idx, upd], ty)
    }

    pub fn slice(&mut self, x: ValueId, start: &[usize], end: &[usize]) -> ValueId {
        let ty = TensorType::new(
            self.dtype(x),
            start
                .iter()
                .zip(end)
                .map(|(s, e)| e - s)
                .collect::<Vec<_>>(),
        );
        self.push(
            Op::Slice {
                start: start.to_vec(),
                end: end.to_vec(),
            },
            vec![x],
            ty,
        )
    }

    pub fn pad(&mut self, x: ValueId, low: &[usize], high: &[usize]) -> ValueId {
        let s = self.shape(x);
        let ty = TensorType::new(
            self.dtype(x),
            (0..s.len())
                .map(|d| low[d] + s[d] + high[d])
                .collect::<Vec<_>>(),
        );
        self.push(
            Op::Pad {
                low: low.to_vec(),
                high: high.to_vec(),
            },
            vec![x],
            ty,
        )
    }

    pub fn random_uniform(
        &mut self,
        seed: ValueId,
        counter: ValueId,
        op_id: u32,
        ty: TensorType,
    ) -> ValueId {
        self.push(Op::RandomUniform { op_id }, vec![seed, counter], ty)
    }

    /// The mean of `x` over the devices of a data-parallel group.
    pub fn all_reduce_mean(&mut self, x: ValueId) -> ValueId {
        let ty = self.graph.ty(x).clone();
        self.push(Op::AllReduceMean, vec![x], ty)
    }

    /// `x * c` for a float constant `c` (broadcast to x's type).
    pub fn mul_scalar(&mut self, x: ValueId, c: f64) -> ValueId {
        let k = self.full_like(c, x);
        self.mul(x, k)
    }

    /// `x + c` for a float constant `c`.
    pub fn add_scalar(&mut self, x: ValueId, c: f64) -> ValueId {
        let k = self.full_like(c, x);
        self.add(x, k)
    }
}
