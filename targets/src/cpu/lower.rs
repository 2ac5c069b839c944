//! A loop kernel (`compiler::exec::kernel_graph`) as an MLIR `func.func` on tensors.
//!
//! The kernel's nodes are split into *materialized* values, which live in a tensor, and *inline*
//! values, which are recomputed inside the body of every `linalg.generic` that reads them; the
//! split is the target-neutral `compiler::kernel_analysis` (materializing the softmax `exp`
//! measured 15 % faster than recomputing it). Inline broadcast, transpose and slice only change
//! *where* a value is read: they are composed into the indexing maps of the generic's operands
//! (a slice becomes a `tensor.extract_slice` of the operand, so every map stays a projected
//! permutation that the vectorizer accepts).
//!
//! Each reduction becomes `linalg.fill` + one `linalg.generic` with reduction iterators over its
//! operand's shape; consecutive elementwise outputs of one shape become one multi-output generic
//! (so an elementwise kernel is a single pass, which also makes the planner's in-place outputs
//! safe); a pad is a generic that reads its operand with `tensor.extract`. `reduce_mean` is a
//! sum whose readers divide by the count; f32 sums accumulate in f64 (an option), like the
//! interpreter.
//!
//! Memory types: f32, f64, i32 as themselves; bool is `i8` (0/1) in memory and `i1` in
//! registers (`arith.cmpi ne` on load, `arith.extui` on store).

use super::partition::Part;
use super::{ArgLayout, KernelFunc, LowerError, LowerOptions};
use crate::scalar::half::{self, compute_ty, is_half};
use crate::scalar::{self, float_lit, mem_ty, reg_ty, MathSpelling, ScalarSink};
use compiler::kernel_analysis::{KernelAnalysis, LoopNest};
use ir::{DType, Graph, Op, ReduceKind, ValueId};
use std::collections::HashMap;
use std::fmt::Write as _;

/// Tile sizes: innermost dimension up to this many elements (a multiple of the AVX-512 width;
/// 32 and 128 measured slower on bias+GELU), or up to this many when it is reduced (whole
/// LayerNorm rows of 768 in three steps).
pub(crate) const INNER_TILE: usize = 64;
pub(crate) const INNER_REDUCTION_TILE: usize = 256;

fn shape_prefix(shape: &[usize]) -> String {
    shape.iter().map(|d| format!("{d}x")).collect()
}

pub(crate) fn tensor_ty(shape: &[usize], d: DType) -> String {
    format!("tensor<{}{}>", shape_prefix(shape), mem_ty(d))
}

pub(crate) fn memref_ty(shape: &[usize], d: DType) -> String {
    format!("memref<{}{}>", shape_prefix(shape), mem_ty(d))
}

/// A loop dimension of the enclosing generic plus a constant offset (from slices).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Ix {
    dim: u32,
    off: u32,
}

/// A materialized value: an SSA tensor.
#[derive(Clone, Debug)]
struct Mat {
    ssa: String,
    shape: Vec<usize>,
    dtype: DType,
    /// `reduce_mean` accumulators hold the sum: readers divide by this count.
    mean_count: Option<usize>,
    /// An f32 sum accumulated in f64: the tensor is f64, readers round to f32.
    wide: bool,
}

/// The body of one `linalg.generic` being built.
pub(crate) struct Body {
    space: Vec<usize>,
    lines: String,
    /// `ins` operands: tensor SSA, tensor type, indexing map, block argument, element type.
    ins: Vec<(String, String, String, String, String)>,
    in_key: HashMap<(String, Vec<u32>), usize>,
    memo: HashMap<(usize, Vec<Ix>), String>,
    consts: HashMap<(String, String), String>,
    index: HashMap<u32, String>,
}

impl Body {
    fn new(space: &[usize]) -> Body {
        Body {
            space: space.to_vec(),
            lines: String::new(),
            ins: Vec::new(),
            in_key: HashMap::new(),
            memo: HashMap::new(),
            consts: HashMap::new(),
            index: HashMap::new(),
        }
    }

    fn identity(&self) -> Vec<Ix> {
        (0..self.space.len() as u32)
            .map(|dim| Ix { dim, off: 0 })
            .collect()
    }
}

/// One linalg op's vectorization schedule, in emission order.
#[derive(Clone, Debug, PartialEq)]
pub struct OpTiling {
    pub op: &'static str,
    /// Iteration space.
    pub space: Vec<usize>,
    pub reduction: Vec<bool>,
}

pub(crate) struct Emitter<'g> {
    g: &'g Graph,
    kernel: String,
    text: String,
    next: usize,
    mat: Vec<Option<Mat>>,
    slices: HashMap<(String, Vec<u32>, Vec<usize>), String>,
    pub(crate) tilings: Vec<OpTiling>,
    /// Output index of each node that is a kernel output.
    output_of: HashMap<usize, usize>,
    out_tensor: Vec<Option<String>>,
    /// Function-level constants (fill values, pad values).
    top_consts: HashMap<(String, String), String>,
    /// The partition this function computes one part of.
    part: Option<Part>,
    /// Memref type of each output argument.
    out_memref: Vec<String>,
    f32_sums_in_f64: bool,
}

fn map_str(rank: usize, results: &[u32]) -> String {
    let dims: Vec<String> = (0..rank).map(|d| format!("d{d}")).collect();
    let res: Vec<String> = results.iter().map(|d| format!("d{d}")).collect();
    format!("affine_map<({}) -> ({})>", dims.join(", "), res.join(", "))
}

/// The largest divisor of `n` that is at most `cap`.
pub(crate) fn divisor_at_most(n: usize, cap: usize) -> usize {
    (1..=cap.min(n).max(1))
        .rev()
        .find(|&d| n.is_multiple_of(d))
        .unwrap_or(1)
}

/// Checks that `k` is a loop kernel the CPU back end can lower.
fn validate(k: &Graph, name: &str) -> Result<(), LowerError> {
    let unsupported = |i: usize, why: &str| LowerError::UnsupportedOp {
        kernel: name.to_string(),
        node: i,
        op: k.nodes[i].op.mnemonic(),
        why: why.to_string(),
    };
    let valid_name = crate::is_symbol(name);
    if !valid_name {
        return Err(LowerError::Invalid {
            kernel: name.to_string(),
            message: "kernel names must match [A-Za-z_][A-Za-z0-9_]* (they become symbols)".into(),
        });
    }
    if k.outputs.is_empty() {
        return Err(LowerError::Invalid {
            kernel: name.to_string(),
            message: "the kernel has no outputs".into(),
        });
    }
    for (i, n) in k.nodes.iter().enumerate() {
        match &n.op {
            op if op.is_library() => {
                return Err(unsupported(
                    i,
                    "library op (GEMM / gather / scatter-add / collective kernels are not loop kernels)",
                ))
            }
            Op::Reshape => {
                return Err(unsupported(
                    i,
                    "reshape is a view between kernels and is not lowered inside loop kernels yet",
                ))
            }
            _ => {}
        }
        for d in std::iter::once(n.ty.dtype).chain(n.inputs.iter().map(|v| k.ty(*v).dtype)) {
            if !matches!(
                d,
                DType::F32 | DType::F64 | DType::BF16 | DType::I32 | DType::Bool
            ) {
                return Err(LowerError::UnsupportedDType {
                    kernel: name.to_string(),
                    node: i,
                    op: n.op.mnemonic(),
                    dtype: d,
                });
            }
        }
        if let Op::Reduce { .. } = n.op {
            if k.ty(n.inputs[0]).dtype == DType::Bool {
                return Err(unsupported(i, "reduction of a bool tensor"));
            }
            if is_half(k.ty(n.inputs[0]).dtype) || is_half(n.ty.dtype) {
                return Err(unsupported(
                    i,
                    "reduction of 16-bit floats (the mixed-precision pass reduces in f32)",
                ));
            }
        }
    }
    for (oname, v) in &k.outputs {
        if matches!(k.node(*v).op, Op::Input { .. }) {
            return Err(LowerError::Invalid {
                kernel: name.to_string(),
                message: format!("output {oname} is a kernel input (nothing to compute)"),
            });
        }
    }
    Ok(())
}

/// What one generic of a group computes.
#[derive(Clone, Copy)]
struct Member {
    node: usize,
    /// Kernel output index, or `None` for a temporary.
    output: Option<usize>,
}

/// A `linalg.generic` body as a [`ScalarSink`].
struct CpuBody<'s, 'g> {
    e: &'s mut Emitter<'g>,
    b: &'s mut Body,
}

impl ScalarSink for CpuBody<'_, '_> {
    fn op(&mut self, rhs: String) -> String {
        self.e.op(self.b, rhs)
    }

    fn constant(&mut self, lit: String, ty: &str) -> String {
        self.e.body_const(self.b, lit, ty)
    }

    fn spelling(&self) -> MathSpelling {
        MathSpelling::MathDialect
    }
}

impl<'g> Emitter<'g> {
    /// The shape of node `v` in this function (a chunk of the partition axis).
    fn shape_of(&self, v: usize) -> Vec<usize> {
        let mut s = self.g.nodes[v].ty.shape.clone();
        if let Some(p) = &self.part {
            for (d, x) in s.iter_mut().enumerate() {
                if p.in_class[v][d] {
                    *x = p.chunk;
                }
            }
        }
        s
    }

    /// The memref type of argument node `v`: strided (the whole tensor's strides, dynamic
    /// offset) when it has the partition axis.
    fn arg_memref_ty(&self, v: usize) -> String {
        let ty = &self.g.nodes[v].ty;
        let shape = self.shape_of(v);
        if shape == ty.shape {
            return memref_ty(&shape, ty.dtype);
        }
        let strides = super::row_major_strides(&ty.shape);
        let st: Vec<String> = strides.iter().map(|x| x.to_string()).collect();
        format!(
            "memref<{}{}, strided<[{}], offset: ?>>",
            shape_prefix(&shape),
            mem_ty(ty.dtype),
            st.join(", ")
        )
    }

    /// The global index of dim `d` of node `v` at loop position `ix` (the part's offset is
    /// added along the partition axis).
    fn global_index(&mut self, b: &mut Body, v: usize, d: usize, ix: Ix) -> String {
        let local = self.index_of(b, ix);
        match &self.part {
            Some(p) if p.in_class[v][d] => self.op(b, format!("arith.addi {local}, %off : index")),
            _ => local,
        }
    }

    pub(crate) fn fresh(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("%{prefix}{}", self.next)
    }

    /// Appends `%v = <rhs>` to the body.
    pub(crate) fn op(&mut self, b: &mut Body, rhs: String) -> String {
        let v = self.fresh("v");
        writeln!(b.lines, "      {v} = {rhs}").unwrap();
        v
    }

    fn top(&mut self, rhs: String) -> String {
        let v = self.fresh("t");
        writeln!(self.text, "    {v} = {rhs}").unwrap();
        v
    }

    fn body_const(&mut self, b: &mut Body, lit: String, ty: &str) -> String {
        let key = (lit, ty.to_string());
        if let Some(v) = b.consts.get(&key) {
            return v.clone();
        }
        let v = if ty == "i1" {
            self.op(b, format!("arith.constant {}", key.0))
        } else {
            self.op(b, format!("arith.constant {} : {ty}", key.0))
        };
        b.consts.insert(key, v.clone());
        v
    }

    /// The scalar sink that appends to `b`.
    fn sink<'s>(&'s mut self, b: &'s mut Body) -> CpuBody<'s, 'g> {
        CpuBody { e: self, b }
    }

    pub(crate) fn fconst(&mut self, b: &mut Body, v: f64, d: DType) -> String {
        scalar::fconst(&mut self.sink(b), v, d)
    }

    pub(crate) fn iconst(&mut self, b: &mut Body, v: i64, ty: &str) -> String {
        scalar::iconst(&mut self.sink(b), v, ty)
    }

    /// A constant of dtype `d` in registers.
    fn const_of(&mut self, b: &mut Body, value: f64, d: DType) -> String {
        scalar::const_of(&mut self.sink(b), value, d)
    }

    fn top_const(&mut self, lit: String, ty: &str) -> String {
        let key = (lit, ty.to_string());
        if let Some(v) = self.top_consts.get(&key) {
            return v.clone();
        }
        let v = self.top(format!("arith.constant {} : {ty}", key.0));
        self.top_consts.insert(key, v.clone());
        v
    }

    /// The `index` value of loop position `ix` (a `linalg.index` plus its offset).
    fn index_of(&mut self, b: &mut Body, ix: Ix) -> String {
        let base = match b.index.get(&ix.dim) {
            Some(v) => v.clone(),
            None => {
                let v = self.op(b, format!("linalg.index {} : index", ix.dim));
                b.index.insert(ix.dim, v.clone());
                v
            }
        };
        if ix.off == 0 {
            base
        } else {
            let c = self.iconst(b, ix.off as i64, "index");
            self.op(b, format!("arith.addi {base}, {c} : index"))
        }
    }

    /// The value of materialized node `v` at `ix`: an `ins` operand of the generic.
    fn leaf(&mut self, b: &mut Body, v: usize, ix: &[Ix]) -> String {
        let m = self.mat[v].clone().expect("materialized before use");
        let store_d = if m.wide { DType::F64 } else { m.dtype };
        let sliced = ix
            .iter()
            .zip(&m.shape)
            .any(|(i, &s)| i.off != 0 || b.space[i.dim as usize] != s);
        let (tensor, tshape) = if sliced {
            let offs: Vec<u32> = ix.iter().map(|i| i.off).collect();
            let sizes: Vec<usize> = ix.iter().map(|i| b.space[i.dim as usize]).collect();
            let key = (m.ssa.clone(), offs.clone(), sizes.clone());
            let s = match self.slices.get(&key) {
                Some(s) => s.clone(),
                None => {
                    let list = |v: &[String]| v.join(", ");
                    let o: Vec<String> = offs.iter().map(|x| x.to_string()).collect();
                    let z: Vec<String> = sizes.iter().map(|x| x.to_string()).collect();
                    let one: Vec<String> = sizes.iter().map(|_| "1".to_string()).collect();
                    let s = self.top(format!(
                        "tensor.extract_slice {}[{}] [{}] [{}] : {} to {}",
                        m.ssa,
                        list(&o),
                        list(&z),
                        list(&one),
                        tensor_ty(&m.shape, store_d),
                        tensor_ty(&sizes, store_d)
                    ));
                    self.slices.insert(key, s.clone());
                    s
                }
            };
            (s, sizes)
        } else {
            (m.ssa.clone(), m.shape.clone())
        };
        let dims: Vec<u32> = ix.iter().map(|i| i.dim).collect();
        let key = (tensor.clone(), dims.clone());
        let arg = match b.in_key.get(&key) {
            Some(&i) => b.ins[i].3.clone(),
            None => {
                let arg = self.fresh("a");
                b.ins.push((
                    tensor,
                    tensor_ty(&tshape, store_d),
                    map_str(b.space.len(), &dims),
                    arg.clone(),
                    mem_ty(store_d).to_string(),
                ));
                b.in_key.insert(key, b.ins.len() - 1);
                arg
            }
        };
        self.finish_read(b, arg, &m)
    }

    /// A loaded element of `m` → the node's value in registers (bool from i8, mean division,
    /// rounding of a wide f32 sum).
    fn finish_read(&mut self, b: &mut Body, loaded: String, m: &Mat) -> String {
        let store_d = if m.wide { DType::F64 } else { m.dtype };
        let mut val = loaded;
        if m.dtype == DType::Bool {
            let z = self.iconst(b, 0, "i8");
            val = self.op(b, format!("arith.cmpi ne, {val}, {z} : i8"));
        }
        if is_half(m.dtype) {
            val = half::widen(&mut self.sink(b), val, m.dtype);
        }
        if let Some(count) = m.mean_count {
            let c = self.fconst(b, count as f64, store_d);
            val = self.op(b, format!("arith.divf {val}, {c} : {}", reg_ty(store_d)));
        }
        if m.wide {
            val = self.op(b, format!("arith.truncf {val} : f64 to f32"));
        }
        val
    }

    /// The value of node `v` at loop position `ix`, in registers.
    fn eval(&mut self, b: &mut Body, v: ValueId, ix: &[Ix]) -> Result<String, LowerError> {
        let key = (v.index(), ix.to_vec());
        if let Some(s) = b.memo.get(&key) {
            return Ok(s.clone());
        }
        let r = if self.mat[v.index()].is_some() {
            self.leaf(b, v.index(), ix)
        } else {
            self.eval_inline(b, v, ix)?
        };
        b.memo.insert(key, r.clone());
        Ok(r)
    }

    fn internal(&self, v: ValueId, what: &str) -> LowerError {
        LowerError::Invalid {
            kernel: self.kernel.clone(),
            message: format!(
                "internal: %{} ({}) {what}",
                v.index(),
                self.g.node(v).op.mnemonic()
            ),
        }
    }

    fn eval_inline(&mut self, b: &mut Body, v: ValueId, ix: &[Ix]) -> Result<String, LowerError> {
        let g = self.g;
        let node = g.node(v);
        let d = compute_ty(node.ty.dtype);
        let arg = |i: usize| node.inputs[i];
        let value = match &node.op {
            Op::Constant { value } => self.const_of(b, *value, d),
            Op::Iota { axis } => {
                let i = self.global_index(b, v.index(), *axis, ix[*axis]);
                match d {
                    DType::I32 => self.op(b, format!("arith.index_cast {i} : index to i32")),
                    _ => {
                        let w = self.op(b, format!("arith.index_cast {i} : index to i64"));
                        self.op(b, format!("arith.sitofp {w} : i64 to {}", reg_ty(d)))
                    }
                }
            }
            Op::Unary(u) => {
                let x = self.eval(b, arg(0), ix)?;
                scalar::unary(&mut self.sink(b), *u, &x, compute_ty(g.ty(arg(0)).dtype))
            }
            Op::Binary(op) => {
                let x = self.eval(b, arg(0), ix)?;
                let y = self.eval(b, arg(1), ix)?;
                scalar::binary(&mut self.sink(b), *op, &x, &y, d)
            }
            Op::Compare(c) => {
                let x = self.eval(b, arg(0), ix)?;
                let y = self.eval(b, arg(1), ix)?;
                let od = compute_ty(g.ty(arg(0)).dtype);
                scalar::compare(&mut self.sink(b), *c, &x, &y, od)
            }
            Op::Select => {
                let c = self.eval(b, arg(0), ix)?;
                let x = self.eval(b, arg(1), ix)?;
                let y = self.eval(b, arg(2), ix)?;
                self.op(b, format!("arith.select {c}, {x}, {y} : {}", reg_ty(d)))
            }
            Op::Cast => {
                let x = self.eval(b, arg(0), ix)?;
                scalar::cast(&mut self.sink(b), &x, compute_ty(g.ty(arg(0)).dtype), d)
            }
            Op::Broadcast { dims } => {
                let inner: Vec<Ix> = dims.iter().map(|&r| ix[r]).collect();
                self.eval(b, arg(0), &inner)?
            }
            Op::Transpose { perm } => {
                let mut inner = vec![Ix { dim: 0, off: 0 }; perm.len()];
                for (i, &p) in perm.iter().enumerate() {
                    inner[p] = ix[i];
                }
                self.eval(b, arg(0), &inner)?
            }
            Op::Slice { start, .. } => {
                let inner: Vec<Ix> = ix
                    .iter()
                    .zip(start)
                    .map(|(i, &s)| Ix {
                        dim: i.dim,
                        off: i.off + s as u32,
                    })
                    .collect();
                self.eval(b, arg(0), &inner)?
            }
            Op::RandomUniform { op_id } => {
                let seed = self.eval(b, arg(0), &[])?;
                let counter = self.eval(b, arg(1), &[])?;
                self.philox_uniform(b, v, ix, &seed, &counter, *op_id, d)?
            }
            Op::Input { .. } | Op::Reduce { .. } | Op::Pad { .. } => {
                return Err(self.internal(v, "read before it was materialized"))
            }
            Op::Reshape | Op::MatMul { .. } | Op::Gather | Op::ScatterAdd | Op::AllReduceMean => {
                return Err(self.internal(v, "is not a loop op"))
            }
        };
        // A 16-bit result rounds its f32 value (index-only ops pass an exact value through).
        let index_only = matches!(
            node.op,
            Op::Broadcast { .. } | Op::Transpose { .. } | Op::Slice { .. }
        );
        Ok(if index_only {
            value
        } else {
            half::round_to(&mut self.sink(b), value, node.ty.dtype)
        })
    }

    /// Philox-4x32-10 uniform number for element `ix` of the random node `v` (bit-exact with
    /// `ir::rng::uniform`).
    #[allow(clippy::too_many_arguments)]
    fn philox_uniform(
        &mut self,
        b: &mut Body,
        v: ValueId,
        ix: &[Ix],
        seed: &str,
        counter: &str,
        op_id: u32,
        d: DType,
    ) -> Result<String, LowerError> {
        let g = self.g;
        let shape = &g.ty(v).shape;
        // Row-major element index of the random tensor.
        let mut lin: Option<String> = None;
        let mut stride = 1usize;
        for (dim, &ixd) in ix.iter().enumerate().rev() {
            let i = self.global_index(b, v.index(), dim, ixd);
            let term = if stride == 1 {
                i
            } else {
                let s = self.iconst(b, stride as i64, "index");
                self.op(b, format!("arith.muli {i}, {s} : index"))
            };
            lin = Some(match lin {
                None => term,
                Some(acc) => self.op(b, format!("arith.addi {acc}, {term} : index")),
            });
            stride *= shape[dim];
        }
        let lin64 = match lin {
            Some(l) => self.op(b, format!("arith.index_cast {l} : index to i64")),
            None => self.iconst(b, 0, "i64"),
        };
        let (seed_d, ctr_d) = (
            g.ty(g.node(v).inputs[0]).dtype,
            g.ty(g.node(v).inputs[1]).dtype,
        );
        if seed_d != DType::I32 || ctr_d != DType::I32 {
            return Err(self.internal(v, "needs i32 seed and counter"));
        }
        Ok(scalar::philox_uniform(
            &mut self.sink(b),
            &lin64,
            seed,
            counter,
            op_id,
            d,
        ))
    }

    /// Register value → memory element (bool → i8, a 16-bit float narrowed).
    fn mem_value(&mut self, b: &mut Body, x: &str, d: DType) -> String {
        if d == DType::Bool {
            self.op(b, format!("arith.extui {x} : i1 to i8"))
        } else {
            half::narrow(&mut self.sink(b), x, d)
        }
    }

    /// The init tensor for a result of `shape`/`d`: the output's buffer, or a new temporary.
    fn init_tensor(&mut self, output: Option<usize>, shape: &[usize], d: DType) -> String {
        match output {
            Some(o) => {
                if let Some(t) = &self.out_tensor[o] {
                    return t.clone();
                }
                let t = self.top(format!(
                    "bufferization.to_tensor %out{o} restrict writable : {} to {}",
                    self.out_memref[o],
                    tensor_ty(shape, d)
                ));
                self.out_tensor[o] = Some(t.clone());
                t
            }
            None => self.top(format!("tensor.empty() : {}", tensor_ty(shape, d))),
        }
    }

    /// Writes the generic for `body` with the given outs (tensor SSA, tensor type, map, block
    /// arg, elem type) and yielded values; returns the result SSA names.
    fn write_generic(
        &mut self,
        body: Body,
        reduction: &[bool],
        outs: Vec<(String, String, String, String, String)>,
        yields: Vec<String>,
    ) -> Vec<String> {
        let mut maps: Vec<String> = body.ins.iter().map(|x| x.2.clone()).collect();
        maps.extend(outs.iter().map(|x| x.2.clone()));
        let iters: Vec<&str> = reduction
            .iter()
            .map(|&r| if r { "\"reduction\"" } else { "\"parallel\"" })
            .collect();
        let res = self.fresh("r");
        let mut s = String::new();
        let n_out = outs.len();
        write!(
            s,
            "    {res}{} = linalg.generic {{indexing_maps = [{}], iterator_types = [{}]}}",
            if n_out > 1 {
                format!(":{n_out}")
            } else {
                String::new()
            },
            maps.join(", "),
            iters.join(", ")
        )
        .unwrap();
        if !body.ins.is_empty() {
            let names: Vec<&str> = body.ins.iter().map(|x| x.0.as_str()).collect();
            let tys: Vec<&str> = body.ins.iter().map(|x| x.1.as_str()).collect();
            write!(s, " ins({} : {})", names.join(", "), tys.join(", ")).unwrap();
        }
        let names: Vec<&str> = outs.iter().map(|x| x.0.as_str()).collect();
        let tys: Vec<&str> = outs.iter().map(|x| x.1.as_str()).collect();
        writeln!(s, " outs({} : {}) {{", names.join(", "), tys.join(", ")).unwrap();
        let args: Vec<String> = body
            .ins
            .iter()
            .chain(outs.iter())
            .map(|x| format!("{}: {}", x.3, x.4))
            .collect();
        writeln!(s, "    ^bb0({}):", args.join(", ")).unwrap();
        s.push_str(&body.lines);
        let out_elems: Vec<&str> = outs.iter().map(|x| x.4.as_str()).collect();
        writeln!(
            s,
            "      linalg.yield {} : {}",
            yields.join(", "),
            out_elems.join(", ")
        )
        .unwrap();
        let rty = if n_out > 1 {
            format!("({})", tys.join(", "))
        } else {
            tys[0].to_string()
        };
        writeln!(s, "    }} -> {rty}").unwrap();
        self.text.push_str(&s);
        if n_out > 1 {
            (0..n_out).map(|i| format!("{res}#{i}")).collect()
        } else {
            vec![res]
        }
    }

    /// One multi-output elementwise generic over `shape` computing `members`.
    fn emit_group(&mut self, members: &[Member]) -> Result<(), LowerError> {
        let g = self.g;
        let shape = self.shape_of(members[0].node);
        let mut body = Body::new(&shape);
        let id = body.identity();
        let mut yields = Vec::new();
        for m in members {
            let v = ValueId(m.node as u32);
            let x = self.eval(&mut body, v, &id)?;
            let y = self.mem_value(&mut body, &x, g.ty(v).dtype);
            yields.push(y);
        }
        let outs: Vec<(usize, Option<usize>)> =
            members.iter().map(|m| (m.node, m.output)).collect();
        self.write_parallel_generic(body, &shape, &outs, yields);
        Ok(())
    }

    /// Writes a generic with every dim parallel over `shape` whose results (`yields`, one per
    /// `(node, output slot)`) are written with the identity map, and records them as
    /// materialized values of those nodes.
    fn write_parallel_generic(
        &mut self,
        body: Body,
        shape: &[usize],
        outs: &[(usize, Option<usize>)],
        yields: Vec<String>,
    ) {
        let identity = map_str(shape.len(), &(0..shape.len() as u32).collect::<Vec<_>>());
        let mut specs = Vec::new();
        for &(node, output) in outs {
            let d = self.g.nodes[node].ty.dtype;
            let init = self.init_tensor(output, shape, d);
            let arg = self.fresh("o");
            specs.push((
                init,
                tensor_ty(shape, d),
                identity.clone(),
                arg,
                mem_ty(d).to_string(),
            ));
        }
        self.tilings.push(OpTiling {
            op: "linalg.generic",
            space: shape.to_vec(),
            reduction: vec![false; shape.len()],
        });
        let res = self.write_generic(body, &vec![false; shape.len()], specs, yields);
        for (&(node, _), r) in outs.iter().zip(res) {
            self.mat[node] = Some(Mat {
                ssa: r,
                shape: shape.to_vec(),
                dtype: self.g.nodes[node].ty.dtype,
                mean_count: None,
                wide: false,
            });
        }
    }

    /// Emits reduction `v`; returns whether the result still has to be copied to its output
    /// (mean, or an f32 sum accumulated in f64).
    fn emit_reduce(
        &mut self,
        v: usize,
        kind: ReduceKind,
        axes: &[usize],
        output: Option<usize>,
    ) -> Result<bool, LowerError> {
        let g = self.g;
        let node = &g.nodes[v];
        let x = node.inputs[0];
        let xs = self.shape_of(x.index());
        let rs = self.shape_of(v);
        let d = node.ty.dtype;
        let red: Vec<bool> = (0..xs.len()).map(|i| axes.contains(&i)).collect();
        let kept: Vec<u32> = (0..xs.len() as u32)
            .filter(|i| !axes.contains(&(*i as usize)))
            .collect();
        // f32 sums accumulate in f64 (the interpreter's semantics): gradients that cancel to
        // almost nothing still agree.
        let wide = self.f32_sums_in_f64
            && d == DType::F32
            && matches!(kind, ReduceKind::Sum | ReduceKind::Mean);
        let ad = if wide { DType::F64 } else { d };
        let t = reg_ty(ad);
        let ident = match (kind, ad) {
            (ReduceKind::Sum | ReduceKind::Mean, DType::I32) => "0".to_string(),
            (ReduceKind::Max, DType::I32) => i32::MIN.to_string(),
            (ReduceKind::Min, DType::I32) => i32::MAX.to_string(),
            (ReduceKind::Sum | ReduceKind::Mean, _) => float_lit(0.0, ad),
            (ReduceKind::Max, _) => float_lit(f64::NEG_INFINITY, ad),
            (ReduceKind::Min, _) => float_lit(f64::INFINITY, ad),
        };
        let c = self.top_const(ident, t);
        let in_place = kind != ReduceKind::Mean && !wide;
        let init = self.init_tensor(if in_place { output } else { None }, &rs, ad);
        let ty = tensor_ty(&rs, ad);
        let filled = self.top(format!(
            "linalg.fill ins({c} : {t}) outs({init} : {ty}) -> {ty}"
        ));
        self.tilings.push(OpTiling {
            op: "linalg.fill",
            space: rs.clone(),
            reduction: vec![false; rs.len()],
        });
        let mut body = Body::new(&xs);
        let id = body.identity();
        let mut xv = self.eval(&mut body, x, &id)?;
        if wide {
            xv = self.op(&mut body, format!("arith.extf {xv} : f32 to f64"));
        }
        let acc = self.fresh("o");
        let comb = match (kind, ad) {
            (ReduceKind::Sum | ReduceKind::Mean, DType::I32) => "arith.addi",
            (ReduceKind::Max, DType::I32) => "arith.maxsi",
            (ReduceKind::Min, DType::I32) => "arith.minsi",
            (ReduceKind::Sum | ReduceKind::Mean, _) => "arith.addf",
            (ReduceKind::Max, _) => "arith.maximumf",
            (ReduceKind::Min, _) => "arith.minimumf",
        };
        let y = self.op(&mut body, format!("{comb} {xv}, {acc} : {t}"));
        self.tilings.push(OpTiling {
            op: "linalg.generic",
            space: xs.clone(),
            reduction: red.clone(),
        });
        let outs = vec![(filled, ty, map_str(xs.len(), &kept), acc, t.to_string())];
        let r = self.write_generic(body, &red, outs, vec![y]);
        let count: usize = axes.iter().map(|&a| xs[a]).product();
        self.mat[v] = Some(Mat {
            ssa: r[0].clone(),
            shape: rs,
            dtype: d,
            mean_count: (kind == ReduceKind::Mean).then_some(count),
            wide,
        });
        Ok(!in_place)
    }

    /// `pad`: one generic over the padded shape reads the (materialized) operand with
    /// `tensor.extract` at clamped indices and selects zero outside it. (A fill plus
    /// `tensor.insert_slice` would bufferize to a strided `memref.copy`, i.e. a call into MLIR's
    /// runtime library, whenever canonicalization folds the copy generic.)
    fn emit_pad(
        &mut self,
        v: usize,
        low: &[usize],
        output: Option<usize>,
    ) -> Result<(), LowerError> {
        let g = self.g;
        let node = &g.nodes[v];
        let src = self.mat[node.inputs[0].index()]
            .clone()
            .ok_or_else(|| self.internal(node.inputs[0], "pad operand not materialized"))?;
        let d = node.ty.dtype;
        let shape = self.shape_of(v);
        let mut body = Body::new(&shape);
        let mut inside: Option<String> = None;
        let mut idx = Vec::new();
        for (j, (&lo, &n)) in low.iter().zip(&src.shape).enumerate() {
            let i = self.index_of(
                &mut body,
                Ix {
                    dim: j as u32,
                    off: 0,
                },
            );
            let lo_c = self.iconst(&mut body, lo as i64, "index");
            let hi_c = self.iconst(&mut body, (lo + n) as i64, "index");
            let ge = self.op(&mut body, format!("arith.cmpi sge, {i}, {lo_c} : index"));
            let lt = self.op(&mut body, format!("arith.cmpi slt, {i}, {hi_c} : index"));
            let both = self.op(&mut body, format!("arith.andi {ge}, {lt} : i1"));
            inside = Some(match inside {
                None => both,
                Some(acc) => self.op(&mut body, format!("arith.andi {acc}, {both} : i1")),
            });
            let zero = self.iconst(&mut body, 0, "index");
            let last = self.iconst(&mut body, n as i64 - 1, "index");
            let s = self.op(&mut body, format!("arith.subi {i}, {lo_c} : index"));
            let s = self.op(&mut body, format!("arith.maxsi {s}, {zero} : index"));
            let s = self.op(&mut body, format!("arith.minsi {s}, {last} : index"));
            idx.push(s);
        }
        let store_d = if src.wide { DType::F64 } else { src.dtype };
        let raw = self.op(
            &mut body,
            format!(
                "tensor.extract {}[{}] : {}",
                src.ssa,
                idx.join(", "),
                tensor_ty(&src.shape, store_d)
            ),
        );
        let val = self.finish_read(&mut body, raw, &src);
        let zero = self.const_of(&mut body, 0.0, compute_ty(d));
        let r = match inside {
            Some(c) => self.op(
                &mut body,
                format!("arith.select {c}, {val}, {zero} : {}", reg_ty(d)),
            ),
            None => val,
        };
        let y = self.mem_value(&mut body, &r, d);
        self.write_parallel_generic(body, &shape, &[(v, output)], vec![y]);
        Ok(())
    }
}

/// Lowers kernel graph `k` to the text of one `func.func @name` (memref ABI), plus the
/// schedule of its linalg ops.
pub(crate) fn lower_func(
    k: &Graph,
    name: &str,
    options: &LowerOptions,
) -> Result<KernelFunc, LowerError> {
    validate(k, name)?;
    let analysis = KernelAnalysis::new(k, options.shared_cost_limit);
    let part = super::partition::choose(k, options.max_parts, options.min_part_work);
    let mut e = Emitter {
        g: k,
        kernel: name.to_string(),
        text: String::new(),
        next: 0,
        mat: vec![None; k.len()],
        slices: HashMap::new(),
        tilings: Vec::new(),
        output_of: HashMap::new(),
        out_tensor: vec![None; k.outputs.len()],
        top_consts: HashMap::new(),
        part,
        out_memref: Vec::new(),
        f32_sums_in_f64: options.f32_sums_in_f64,
    };
    for (i, (_, v)) in k.outputs.iter().enumerate() {
        if e.output_of.insert(v.index(), i).is_some() {
            return Err(LowerError::Invalid {
                kernel: name.to_string(),
                message: format!("node %{} is returned twice", v.index()),
            });
        }
    }
    // Signature and input tensors.
    let mut params = Vec::new();
    let mut args = Vec::new();
    let layout = |e: &Emitter, v: usize| {
        let full = &k.nodes[v].ty.shape;
        let strides = super::row_major_strides(full);
        let part_offset = match &e.part {
            Some(p) => (0..full.len())
                .find(|&d| p.in_class[v][d])
                .map_or(0, |d| p.chunk * strides[d]),
            None => 0,
        };
        ArgLayout {
            shape: e.shape_of(v),
            strides,
            part_offset,
        }
    };
    let inputs: Vec<(usize, ValueId)> = k.inputs().map(|(_, v)| v).enumerate().collect();
    for (i, v) in &inputs {
        let ty = k.ty(*v);
        let mty = e.arg_memref_ty(v.index());
        let shape = e.shape_of(v.index());
        params.push(format!("%in{i}: {mty}"));
        args.push(layout(&e, v.index()));
        let t = e.top(format!(
            "bufferization.to_tensor %in{i} restrict : {mty} to {}",
            tensor_ty(&shape, ty.dtype)
        ));
        e.mat[v.index()] = Some(Mat {
            ssa: t,
            shape,
            dtype: ty.dtype,
            mean_count: None,
            wide: false,
        });
    }
    for (i, (_, v)) in k.outputs.iter().enumerate() {
        let mty = e.arg_memref_ty(v.index());
        params.push(format!("%out{i}: {mty}"));
        args.push(layout(&e, v.index()));
        e.out_memref.push(mty);
    }
    if e.part.is_some() {
        params.push("%off: index".to_string());
    }
    // The analysis's loop nests in order. A reduction whose result must be copied to an output
    // joins the next elementwise nest when that nest has its shape.
    let mut pending: Option<Member> = None;
    let flush = |e: &mut Emitter, pending: &mut Option<Member>| match pending.take() {
        Some(m) => e.emit_group(&[m]),
        None => Ok(()),
    };
    for nest in &analysis.loop_nests {
        match nest {
            LoopNest::Reduce(v) => {
                flush(&mut e, &mut pending)?;
                let i = v.index();
                let output = e.output_of.get(&i).copied();
                let Op::Reduce { kind, axes } = &k.nodes[i].op else {
                    return Err(e.internal(*v, "is not a reduction"));
                };
                let copy_out = e.emit_reduce(i, *kind, axes, output)?;
                if copy_out && output.is_some() {
                    pending = Some(Member { node: i, output });
                }
            }
            LoopNest::Pad(v) => {
                flush(&mut e, &mut pending)?;
                let i = v.index();
                let Op::Pad { low, .. } = &k.nodes[i].op else {
                    return Err(e.internal(*v, "is not a pad"));
                };
                let output = e.output_of.get(&i).copied();
                e.emit_pad(i, low, output)?;
            }
            LoopNest::Elementwise { shape, values } => {
                let mut group: Vec<Member> = Vec::new();
                if let Some(m) = pending.take() {
                    if k.nodes[m.node].ty.shape == *shape {
                        group.push(m);
                    } else {
                        e.emit_group(&[m])?;
                    }
                }
                group.extend(values.iter().map(|v| Member {
                    node: v.index(),
                    output: e.output_of.get(&v.index()).copied(),
                }));
                e.emit_group(&group)?;
            }
        }
    }
    flush(&mut e, &mut pending)?;
    // Results into the output buffers.
    for (i, (_, v)) in k.outputs.iter().enumerate() {
        let m = e.mat[v.index()].clone().expect("outputs are materialized");
        let ty = k.ty(*v);
        writeln!(
            e.text,
            "    bufferization.materialize_in_destination {} in restrict writable %out{i} : ({}, {}) -> ()",
            m.ssa,
            tensor_ty(&m.shape, ty.dtype),
            e.out_memref[i]
        )
        .unwrap();
    }
    let text = format!(
        "  func.func @{name}({}) attributes {{llvm.emit_c_interface}} {{\n{}    return\n  }}\n",
        params.join(", "),
        e.text
    );
    let (parts, part_chunk) = e.part.as_ref().map_or((1, 0), |p| (p.parts, p.chunk));
    Ok(KernelFunc {
        name: name.to_string(),
        text,
        tilings: e.tilings,
        parts,
        part_chunk,
        args,
    })
}
