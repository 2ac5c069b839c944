//! The operation set. Every op has one result; composite operations (softmax, layernorm, GELU)
//! are expansions into these primitives so that fusion only has to understand elementwise ops,
//! broadcasts and reductions.

/// Elementwise ops with one operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Neg,
    Abs,
    Exp,
    Log,
    Tanh,
    Erf,
    Sqrt,
    Rsqrt,
    /// Logical not of a bool tensor.
    Not,
    /// `true` where the value is neither infinite nor NaN (float operand, bool result).
    IsFinite,
    /// Identity whose gradient is zero (e.g. the max subtracted inside softmax).
    StopGradient,
}

/// Elementwise ops with two operands of identical type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
    /// Logical and of bool tensors.
    And,
    /// Logical or of bool tensors.
    Or,
}

/// Elementwise comparisons with a bool result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// Reductions over a set of axes (the reduced axes are removed from the shape).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceKind {
    Sum,
    Max,
    Min,
    Mean,
}

/// An operation. Result types are stored on the node; the attributes here are what the type does
/// not already say.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// A named graph input (parameter, optimizer state, batch tensor, scalar state).
    Input {
        name: String,
    },
    /// A scalar value splatted to the result type.
    Constant {
        value: f64,
    },
    /// The index along `axis`, for every element of the result.
    Iota {
        axis: usize,
    },
    Unary(UnaryOp),
    Binary(BinaryOp),
    Compare(CmpOp),
    /// `select(cond, a, b)`: `a` where `cond`, else `b`.
    Select,
    /// Element type conversion to the result dtype (floats round to nearest even; float → int
    /// truncates toward zero; bool is 0/1).
    Cast,
    /// Operand dimension `i` becomes result dimension `dims[i]` (same size, `dims` strictly
    /// increasing); the other result dimensions repeat the operand.
    Broadcast {
        dims: Vec<usize>,
    },
    /// Same elements in row-major order, new shape.
    Reshape,
    /// `result.shape[i] = operand.shape[perm[i]]`.
    Transpose {
        perm: Vec<usize>,
    },
    Reduce {
        kind: ReduceKind,
        axes: Vec<usize>,
    },
    /// `[..., M, K] x [..., K, N] -> [..., M, N]` with equal batch dims; the transposes apply to
    /// the last two dims of the operand.
    MatMul {
        transpose_a: bool,
        transpose_b: bool,
    },
    /// `gather(table[V, r...], idx[i...]) -> [i..., r...]`: rows of the table (embedding lookup).
    Gather,
    /// `scatter_add(idx[i...], upd[i..., r...]) -> [V, r...]`: zeros with `upd` rows added at
    /// `idx` (the gradient of gather). `V` comes from the result type.
    ScatterAdd,
    /// `x[start[d]..end[d]]` in every dim `d`.
    Slice {
        start: Vec<usize>,
        end: Vec<usize>,
    },
    /// Zero padding: `low[d]` zeros before and `high[d]` after, in every dim `d`.
    Pad {
        low: Vec<usize>,
        high: Vec<usize>,
    },
    /// Uniform numbers in [0, 1) from Philox-4x32-10 keyed by (seed operand, `op_id`) with the
    /// counter (element index, counter operand). Same numbers on every target.
    RandomUniform {
        op_id: u32,
    },
    /// The element-wise mean of the operand over the devices of a data-parallel group (the
    /// gradient all-reduce). One process is a group of one: the operand itself.
    AllReduceMean,
}

impl UnaryOp {
    pub const ALL: [UnaryOp; 11] = [
        UnaryOp::Neg,
        UnaryOp::Abs,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Tanh,
        UnaryOp::Erf,
        UnaryOp::Sqrt,
        UnaryOp::Rsqrt,
        UnaryOp::Not,
        UnaryOp::IsFinite,
        UnaryOp::StopGradient,
    ];
    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Abs => "abs",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Erf => "erf",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Rsqrt => "rsqrt",
            UnaryOp::Not => "not",
            UnaryOp::IsFinite => "is_finite",
            UnaryOp::StopGradient => "stop_gradient",
        }
    }
}

impl BinaryOp {
    pub const ALL: [BinaryOp; 8] = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Max,
        BinaryOp::Min,
        BinaryOp::And,
        BinaryOp::Or,
    ];
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Max => "max",
            BinaryOp::Min => "min",
            BinaryOp::And => "and",
            BinaryOp::Or => "or",
        }
    }
    pub fn is_logical(self) -> bool {
        matches!(self, BinaryOp::And | BinaryOp::Or)
    }
}

impl CmpOp {
    pub const ALL: [CmpOp; 6] = [
        CmpOp::Eq,
        CmpOp::Ne,
        CmpOp::Lt,
        CmpOp::Le,
        CmpOp::Gt,
        CmpOp::Ge,
    ];
    pub fn name(self) -> &'static str {
        match self {
            CmpOp::Eq => "eq",
            CmpOp::Ne => "ne",
            CmpOp::Lt => "lt",
            CmpOp::Le => "le",
            CmpOp::Gt => "gt",
            CmpOp::Ge => "ge",
        }
    }
}

impl ReduceKind {
    pub const ALL: [ReduceKind; 4] = [
        ReduceKind::Sum,
        ReduceKind::Max,
        ReduceKind::Min,
        ReduceKind::Mean,
    ];
    pub fn name(self) -> &'static str {
        match self {
            ReduceKind::Sum => "reduce_sum",
            ReduceKind::Max => "reduce_max",
            ReduceKind::Min => "reduce_min",
            ReduceKind::Mean => "reduce_mean",
        }
    }
}

impl Op {
    /// The op's mnemonic in the text format.
    pub fn mnemonic(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Constant { .. } => "constant",
            Op::Iota { .. } => "iota",
            Op::Unary(u) => u.name(),
            Op::Binary(b) => b.name(),
            Op::Compare(c) => c.name(),
            Op::Select => "select",
            Op::Cast => "cast",
            Op::Broadcast { .. } => "broadcast",
            Op::Reshape => "reshape",
            Op::Transpose { .. } => "transpose",
            Op::Reduce { kind, .. } => kind.name(),
            Op::MatMul { .. } => "matmul",
            Op::Gather => "gather",
            Op::ScatterAdd => "scatter_add",
            Op::Slice { .. } => "slice",
            Op::Pad { .. } => "pad",
            Op::RandomUniform { .. } => "random_uniform",
            Op::AllReduceMean => "all_reduce_mean",
        }
    }

    /// Number of operands the op takes.
    pub fn arity(&self) -> usize {
        match self {
            Op::Input { .. } | Op::Constant { .. } | Op::Iota { .. } => 0,
            Op::Unary(_)
            | Op::Cast
            | Op::Broadcast { .. }
            | Op::Reshape
            | Op::Transpose { .. }
            | Op::Reduce { .. }
            | Op::Slice { .. }
            | Op::Pad { .. }
            | Op::AllReduceMean => 1,
            Op::Binary(_)
            | Op::Compare(_)
            | Op::MatMul { .. }
            | Op::Gather
            | Op::ScatterAdd
            | Op::RandomUniform { .. } => 2,
            Op::Select => 3,
        }
    }

    /// True for ops that a library or the runtime runs, never a generated loop kernel (GEMM,
    /// gather, scatter-add, the data-parallel all-reduce).
    pub fn is_library(&self) -> bool {
        matches!(
            self,
            Op::MatMul { .. } | Op::Gather | Op::ScatterAdd | Op::AllReduceMean
        )
    }

    /// True for ops that map elements one to one (useful to fusion).
    pub fn is_elementwise(&self) -> bool {
        matches!(
            self,
            Op::Unary(_) | Op::Binary(_) | Op::Compare(_) | Op::Select | Op::Cast
        )
    }
}
