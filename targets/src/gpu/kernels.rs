//! A fused loop kernel (`compiler::exec::kernel_graph`) as GPU launches, one per loop nest of
//! `compiler::kernel_analysis` (written through [`Writer`], so the same description is PTX on the
//! GPU and a loop program on the CPU):
//!
//! - **element-wise nest** (several outputs of one shape): a grid-stride loop over the flat
//!   index, 256 threads per block; each output's inline cone is recomputed per element;
//! - **reduction**: one block per output element (grid-stride over them); the block's threads
//!   stride over the reduced elements, then combine in a fixed tree (warp shuffles, one shared
//!   slot per warp, warp shuffles again), so every run gives the same bits. When few outputs
//!   reduce many elements (a full reduction such as a gradient norm) the work is split in two
//!   passes: `P` blocks per output write partial results to a workspace buffer, a second launch
//!   combines them. f32 sums and means accumulate in f64, like the interpreter;
//! - **pad**: element-wise over the padded shape, reading the operand at clamped indices.
//!
//! Every materialized value that is not a kernel input or output lives in a workspace buffer
//! between launches. The kernel's buffers are its inputs, its outputs, then those workspace
//! buffers, each a flat array (bool as one byte).

use super::writer::{reg_ty, BufferParam, Flavor, Reg, Shared, Writer, WARP};
use super::GpuLowerError;
use crate::scalar::half::{self, compute_ty, is_half};
use crate::scalar::{self, ScalarSink};
use compiler::kernel_analysis::{KernelAnalysis, LoopNest};
use ir::{DType, Graph, Op, ReduceKind, ValueId};
use std::collections::HashMap;

/// Threads per block of element-wise launches and the most of any launch.
pub const BLOCK: usize = 256;
/// Elements per thread and iteration of element-wise launches (16 bytes of f32).
pub const VEC: usize = 4;
/// The most blocks of a grid-stride launch.
pub const MAX_GRID: usize = 65_536;
/// A reduction of fewer outputs than this, over at least [`SPLIT_MIN_LEN`] elements each, is
/// split into two passes.
pub const SPLIT_MAX_OUTPUTS: usize = 64;
pub const SPLIT_MIN_LEN: usize = 16_384;
/// Elements per block in the first pass of a split reduction.
pub const SPLIT_CHUNK: usize = 4_096;

/// One kernel launch.
#[derive(Clone, Debug, PartialEq)]
pub struct Launch {
    /// The `gpu.func` symbol (PTX entry).
    pub entry: String,
    pub grid: usize,
    pub threads: usize,
}

/// A loop kernel built for the GPU.
#[derive(Clone, Debug)]
pub struct GpuKernel {
    pub name: String,
    /// Inputs, outputs, then workspace buffers.
    pub params: Vec<BufferParam>,
    pub inputs: usize,
    pub outputs: usize,
    pub launches: Vec<Launch>,
    /// The `gpu.func`s ([`Flavor::Gpu`]) or the one emulation `func.func` named `emu_<name>`.
    pub text: String,
}

impl GpuKernel {
    /// The workspace buffers (after inputs and outputs).
    pub fn workspace(&self) -> &[BufferParam] {
        &self.params[self.inputs + self.outputs..]
    }
}

/// Element types of GPU loop kernel values (16-bit floats: the mixed-precision pass's GEMM
/// operands and results, computed in f32 and rounded).
const DTYPES: [DType; 5] = [DType::F32, DType::F16, DType::BF16, DType::I32, DType::Bool];

/// Checks that `k` is a loop kernel the GPU back end can build.
fn validate(k: &Graph, name: &str) -> Result<(), GpuLowerError> {
    let unsupported = |i: usize, why: String| GpuLowerError::Unsupported {
        kernel: name.to_string(),
        node: i,
        op: k.nodes[i].op.mnemonic(),
        why,
    };
    let valid_name = crate::is_symbol(name);
    if !valid_name || k.outputs.is_empty() {
        return Err(GpuLowerError::Invalid {
            kernel: name.to_string(),
            message: "kernel names must match [A-Za-z_][A-Za-z0-9_]* and a kernel needs outputs"
                .into(),
        });
    }
    for (i, n) in k.nodes.iter().enumerate() {
        match &n.op {
            op if op.is_library() => {
                return Err(unsupported(
                    i,
                    "library op (GEMM / gather / scatter-add / collective kernels are not loop kernels)".into(),
                ))
            }
            Op::Reshape => {
                return Err(unsupported(
                    i,
                    "reshape is a view between kernels, not a loop op".into(),
                ))
            }
            Op::Reduce { .. } if k.ty(n.inputs[0]).dtype == DType::Bool => {
                return Err(unsupported(i, "reduction of a bool tensor".into()))
            }
            Op::Reduce { .. } if is_half(n.ty.dtype) => {
                return Err(unsupported(
                    i,
                    "a 16-bit reduction (the mixed-precision pass reduces in f32)".into(),
                ))
            }
            _ => {}
        }
        for d in std::iter::once(n.ty.dtype).chain(n.inputs.iter().map(|v| k.ty(*v).dtype)) {
            if !DTYPES.contains(&d) {
                return Err(unsupported(
                    i,
                    format!("dtype {d}: GPU loop kernels compute in f32, i32 and bool"),
                ));
            }
        }
    }
    for (oname, v) in &k.outputs {
        if matches!(k.node(*v).op, Op::Input { .. }) {
            return Err(GpuLowerError::Invalid {
                kernel: name.to_string(),
                message: format!("output {oname} is a kernel input (nothing to compute)"),
            });
        }
    }
    Ok(())
}

struct Builder<'g> {
    g: &'g Graph,
    name: String,
    flavor: Flavor,
    params: Vec<BufferParam>,
    /// The buffer of every materialized node.
    buf_of: Vec<Option<usize>>,
    /// Whether a materialized node's buffer holds its value yet (inputs, finished nests).
    ready: Vec<bool>,
    launches: Vec<Launch>,
    /// Finished `gpu.func`s.
    funcs: String,
    w: Writer,
    /// Values computed in the open scopes, innermost last.
    memo: Vec<HashMap<(usize, Vec<String>), String>>,
    /// In a grid-stride loop: its shape and the flat index of each element's multi-index, so a
    /// buffer of that shape read at an element's own index uses the flat index (which keeps
    /// the group's addresses visibly contiguous and aligned).
    flat: Option<FlatIndex>,
}

/// A grid-stride loop's shape and the flat index of each element of the current group.
type FlatIndex = (Vec<usize>, HashMap<Vec<String>, String>);

/// Row-major strides.
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

fn ceil_div(a: usize, b: usize) -> usize {
    a.div_ceil(b.max(1))
}

/// Elements per thread and iteration of an element-wise launch over `shape`: 4 when the
/// innermost dimension allows it (so a group never crosses a row), else 1.
fn vector_width(shape: &[usize]) -> usize {
    match shape.last() {
        Some(&d) if d % VEC == 0 => VEC,
        _ => 1,
    }
}

/// Grid and block of a grid-stride launch over `n` items: 256 threads (fewer, in whole warps,
/// for fewer items), at most [`MAX_GRID`] blocks.
pub(crate) fn grid_for(n: usize) -> (usize, usize) {
    let threads = n.next_multiple_of(WARP).clamp(WARP, BLOCK);
    (ceil_div(n, threads).clamp(1, MAX_GRID), threads)
}

/// Threads for a block that reduces `len` elements: a power of two from 32 to 256.
fn reduce_threads(len: usize) -> usize {
    len.next_power_of_two().clamp(WARP, BLOCK)
}

impl<'g> Builder<'g> {
    fn internal(&self, v: ValueId, what: &str) -> GpuLowerError {
        GpuLowerError::Invalid {
            kernel: self.name.clone(),
            message: format!(
                "internal: %{} ({}) {what}",
                v.index(),
                self.g.node(v).op.mnemonic()
            ),
        }
    }

    // ----- scopes ------------------------------------------------------------------------

    fn begin_launch(&mut self, grid: usize, threads: usize) {
        if self.flavor == Flavor::Gpu {
            self.w = Writer::new(Flavor::Gpu);
        }
        self.w.begin_launch(grid, threads);
        let entry = format!("{}_l{}", self.name, self.launches.len());
        self.launches.push(Launch {
            entry,
            grid,
            threads,
        });
        self.memo = vec![HashMap::new()];
    }

    fn end_launch(&mut self) {
        self.w.end_launch();
        if self.flavor == Flavor::Gpu {
            let w = std::mem::replace(&mut self.w, Writer::new(Flavor::Gpu));
            let l = self.launches.last().expect("a launch is open");
            self.funcs
                .push_str(&w.finish(&l.entry, &self.params, l.threads));
        }
    }

    fn begin_phase(&mut self) {
        self.w.begin_phase();
        self.memo.push(HashMap::new());
    }

    fn end_phase(&mut self) {
        self.memo.pop();
        self.w.end_phase();
    }

    fn begin_for(&mut self, start: &str, end: &str, step: &str) -> String {
        let iv = self.w.begin_for(start, end, step);
        self.memo.push(HashMap::new());
        iv
    }

    fn begin_if(&mut self, cond: &str) {
        self.w.begin_if(cond);
        self.memo.push(HashMap::new());
    }

    fn end(&mut self) {
        self.memo.pop();
        self.w.end();
    }

    // ----- values ------------------------------------------------------------------------

    /// `Σ ix[d]·stride[d]` of `shape`.
    fn linear(&mut self, ix: &[String], shape: &[usize]) -> String {
        if let Some((loop_shape, flat)) = &self.flat {
            if loop_shape == shape {
                if let Some(e) = flat.get(ix) {
                    return e.clone();
                }
            }
        }
        let st = strides(shape);
        let mut acc: Option<String> = None;
        for (i, s) in ix.iter().zip(&st) {
            let term = if *s == 1 {
                i.clone()
            } else {
                let c = self.w.index(*s);
                self.w.ix("muli", i, &c)
            };
            acc = Some(match acc {
                None => term,
                Some(a) => self.w.ix("addi", &a, &term),
            });
        }
        acc.unwrap_or_else(|| self.w.index(0))
    }

    /// The multi-index of flat index `e` in `shape`.
    fn unflatten(&mut self, e: &str, shape: &[usize]) -> Vec<String> {
        let st = strides(shape);
        (0..shape.len())
            .map(|d| {
                let q = if st[d] == 1 {
                    e.to_string()
                } else {
                    let c = self.w.index(st[d]);
                    self.w.ix("divui", e, &c)
                };
                if d == 0 {
                    q
                } else {
                    let c = self.w.index(shape[d]);
                    self.w.ix("remui", &q, &c)
                }
            })
            .collect()
    }

    /// A loaded element (memory type) → register value (bool from `i8`, 16-bit floats widened).
    fn loaded_value(&mut self, x: String, d: DType) -> String {
        if d == DType::Bool {
            let z = scalar::iconst(&mut self.w, 0, "i8");
            return self.w.op(format!("arith.cmpi ne, {x}, {z} : i8"));
        }
        half::widen(&mut self.w, x, d)
    }

    /// A register value → memory element (bool to `i8`; a 16-bit float, already exact, narrowed).
    fn stored_value(&mut self, x: &str, d: DType) -> String {
        if d == DType::Bool {
            return self.w.op(format!("arith.extui {x} : i1 to i8"));
        }
        half::narrow(&mut self.w, x, d)
    }

    /// An f32 register value rounded to the nearest value of `d` ([`half::round_to`]).
    fn round_to(&mut self, x: String, d: DType) -> String {
        half::round_to(&mut self.w, x, d)
    }

    fn store_node(&mut self, v: ValueId, index: &str, x: &str) {
        let d = self.g.ty(v).dtype;
        let m = self.stored_value(x, d);
        let b = self.buf_of[v.index()].expect("materialized");
        let p = self.params[b].clone();
        self.w.store_global(b, &p, index, &m);
    }

    /// The value of node `v` at multi-index `ix`, in registers.
    fn eval(&mut self, v: ValueId, ix: &[String]) -> Result<String, GpuLowerError> {
        let key = (v.index(), ix.to_vec());
        if let Some(x) = self.memo.iter().rev().find_map(|m| m.get(&key)) {
            return Ok(x.clone());
        }
        let r = match self.buf_of[v.index()] {
            Some(b) if self.ready[v.index()] => {
                let shape = self.g.ty(v).shape.clone();
                let lin = self.linear(ix, &shape);
                let p = self.params[b].clone();
                let x = self.w.load_global(b, &p, &lin);
                self.loaded_value(x, p.dtype)
            }
            _ => self.eval_inline(v, ix)?,
        };
        self.memo
            .last_mut()
            .expect("a scope")
            .insert(key, r.clone());
        Ok(r)
    }

    /// Loads (into the memo) every materialized value that computing `v` at `ix` reads, in the
    /// order [`Self::eval`] would, without computing anything else.
    fn prefetch(&mut self, v: ValueId, ix: &[String]) {
        let key = (v.index(), ix.to_vec());
        if self.memo.iter().any(|m| m.contains_key(&key)) {
            return;
        }
        if self.buf_of[v.index()].is_some() && self.ready[v.index()] {
            let _ = self.eval(v, ix);
            return;
        }
        let g = self.g;
        let node = g.node(v);
        match &node.op {
            Op::Broadcast { dims } => {
                let inner: Vec<String> = dims.iter().map(|&r| ix[r].clone()).collect();
                self.prefetch(node.inputs[0], &inner);
            }
            Op::Transpose { perm } => {
                let mut inner = vec![String::new(); perm.len()];
                for (i, &p) in perm.iter().enumerate() {
                    inner[p] = ix[i].clone();
                }
                self.prefetch(node.inputs[0], &inner);
            }
            Op::Unary(_) | Op::Binary(_) | Op::Compare(_) | Op::Select | Op::Cast => {
                for &x in &node.inputs {
                    self.prefetch(x, ix);
                }
            }
            // Slices shift indices (computed by eval); constants, iota and random numbers
            // read nothing.
            _ => {}
        }
    }

    fn eval_inline(&mut self, v: ValueId, ix: &[String]) -> Result<String, GpuLowerError> {
        let g = self.g;
        let node = g.node(v);
        let d = compute_ty(node.ty.dtype);
        let arg = |i: usize| node.inputs[i];
        let value = match &node.op {
            Op::Constant { value } => scalar::const_of(&mut self.w, *value, d),
            Op::Iota { axis } => {
                let i = ix[*axis].clone();
                match d {
                    DType::I32 => self.w.op(format!("arith.index_cast {i} : index to i32")),
                    _ => {
                        let w = self.w.op(format!("arith.index_cast {i} : index to i64"));
                        self.w
                            .op(format!("arith.sitofp {w} : i64 to {}", reg_ty(d)))
                    }
                }
            }
            Op::Unary(u) => {
                let x = self.eval(arg(0), ix)?;
                scalar::unary(&mut self.w, *u, &x, compute_ty(g.ty(arg(0)).dtype))
            }
            Op::Binary(op) => {
                let x = self.eval(arg(0), ix)?;
                let y = self.eval(arg(1), ix)?;
                scalar::binary(&mut self.w, *op, &x, &y, d)
            }
            Op::Compare(c) => {
                let x = self.eval(arg(0), ix)?;
                let y = self.eval(arg(1), ix)?;
                scalar::compare(&mut self.w, *c, &x, &y, compute_ty(g.ty(arg(0)).dtype))
            }
            Op::Select => {
                let c = self.eval(arg(0), ix)?;
                let x = self.eval(arg(1), ix)?;
                let y = self.eval(arg(2), ix)?;
                self.w
                    .op(format!("arith.select {c}, {x}, {y} : {}", reg_ty(d)))
            }
            Op::Cast => {
                let x = self.eval(arg(0), ix)?;
                scalar::cast(&mut self.w, &x, compute_ty(g.ty(arg(0)).dtype), d)
            }
            Op::Broadcast { dims } => {
                let inner: Vec<String> = dims.iter().map(|&r| ix[r].clone()).collect();
                self.eval(arg(0), &inner)?
            }
            Op::Transpose { perm } => {
                let mut inner = vec![String::new(); perm.len()];
                for (i, &p) in perm.iter().enumerate() {
                    inner[p] = ix[i].clone();
                }
                self.eval(arg(0), &inner)?
            }
            Op::Slice { start, .. } => {
                let mut inner = Vec::with_capacity(ix.len());
                for (i, &s) in ix.iter().zip(start) {
                    inner.push(if s == 0 {
                        i.clone()
                    } else {
                        let c = self.w.index(s);
                        self.w.ix("addi", i, &c)
                    });
                }
                self.eval(arg(0), &inner)?
            }
            Op::RandomUniform { op_id } => {
                if g.ty(arg(0)).dtype != DType::I32 || g.ty(arg(1)).dtype != DType::I32 {
                    return Err(self.internal(v, "needs i32 seed and counter"));
                }
                let seed = self.eval(arg(0), &[])?;
                let counter = self.eval(arg(1), &[])?;
                let shape = node.ty.shape.clone();
                let lin = self.linear(ix, &shape);
                let lin64 = self.w.op(format!("arith.index_cast {lin} : index to i64"));
                scalar::philox_uniform(&mut self.w, &lin64, &seed, &counter, *op_id, d)
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
            self.round_to(value, node.ty.dtype)
        })
    }

    // ----- launches ----------------------------------------------------------------------

    /// A grid-stride launch over the `n` elements of `shape`; `body(group)` writes the group's
    /// elements, each given as its flat index and multi-index. With `vec` > 1 (a divisor of the
    /// innermost dimension) a group is `vec` consecutive elements of one row: the index
    /// arithmetic is done once per group, values that do not depend on the innermost index are
    /// computed once, and contiguous loads and stores can become vector instructions (the
    /// buffers are 16-byte aligned).
    fn grid_stride(
        &mut self,
        shape: &[usize],
        vec: usize,
        body: impl FnOnce(&mut Self, &[(String, Vec<String>)]) -> Result<(), GpuLowerError>,
    ) -> Result<(), GpuLowerError> {
        let n: usize = shape.iter().product();
        let groups = n / vec;
        let (grid, threads) = grid_for(groups);
        self.begin_launch(grid, threads);
        self.begin_phase();
        let (b, t) = (self.w.block_id(), self.w.thread_id());
        let bt = self.w.index(threads);
        let base = self.w.ix("muli", &b, &bt);
        let start = self.w.ix("addi", &base, &t);
        let (end, step) = (self.w.index(groups), self.w.index(grid * threads));
        let gi = self.begin_for(&start, &end, &step);
        let e0 = if vec == 1 {
            gi
        } else {
            let vc = self.w.index(vec);
            self.w.ix("muli", &gi, &vc)
        };
        let ix0 = self.unflatten(&e0, shape);
        let mut group = vec![(e0.clone(), ix0.clone())];
        for c in 1..vec {
            let cc = self.w.index(c);
            let mut ix = ix0.clone();
            let last = ix.len() - 1;
            ix[last] = self.w.ix("addi", &ix0[last], &cc);
            group.push((self.w.ix("addi", &e0, &cc), ix));
        }
        self.flat = Some((
            shape.to_vec(),
            group
                .iter()
                .map(|(e, ix)| (ix.clone(), e.clone()))
                .collect(),
        ));
        let done = body(self, &group);
        self.flat = None;
        done?;
        self.end();
        self.end_phase();
        self.end_launch();
        Ok(())
    }

    /// Every value of the group is computed before any is stored: the loads of a group stay
    /// together (vectorizable), and an output that shares an input's buffer (the planner's
    /// in-place rule: read and written at the same index) is still read before it is written.
    fn elementwise(&mut self, shape: &[usize], values: &[ValueId]) -> Result<(), GpuLowerError> {
        self.grid_stride(shape, vector_width(shape), |s, group| {
            // Loads first: PTX inline assembly (fma, abs, …) between loads would keep them
            // from being merged into vector loads.
            for (_, ix) in group {
                for &v in values {
                    s.prefetch(v, ix);
                }
            }
            let mut results = Vec::with_capacity(group.len() * values.len());
            for (_, ix) in group {
                for &v in values {
                    results.push(s.eval(v, ix)?);
                }
            }
            let mut r = results.into_iter();
            for (e, _) in group {
                for &v in values {
                    let x = r.next().expect("one result per element and value");
                    s.store_node(v, e, &x);
                }
            }
            Ok(())
        })
    }

    fn pad(&mut self, v: ValueId) -> Result<(), GpuLowerError> {
        let g = self.g;
        let node = g.node(v);
        let Op::Pad { low, .. } = &node.op else {
            return Err(self.internal(v, "is not a pad"));
        };
        let src = node.inputs[0];
        let src_shape = g.ty(src).shape.clone();
        let d = node.ty.dtype;
        let shape = node.ty.shape.clone();
        self.grid_stride(&shape, 1, |s, group| {
            let (e, ix) = (&group[0].0, &group[0].1);
            let mut inside: Option<String> = None;
            let mut inner = Vec::new();
            for (j, (&lo, &n)) in low.iter().zip(&src_shape).enumerate() {
                let (lo_c, hi_c) = (s.w.index(lo), s.w.index(lo + n));
                let ge = s.w.op(format!("arith.cmpi uge, {}, {lo_c} : index", ix[j]));
                let lt = s.w.op(format!("arith.cmpi ult, {}, {hi_c} : index", ix[j]));
                let both = s.w.op(format!("arith.andi {ge}, {lt} : i1"));
                inside = Some(match inside {
                    None => both,
                    Some(acc) => s.w.op(format!("arith.andi {acc}, {both} : i1")),
                });
                // Clamped into the operand: max(i, lo) - lo, at most n - 1.
                let m = s.w.ix("maxui", &ix[j], &lo_c);
                let k = s.w.ix("subi", &m, &lo_c);
                let last = s.w.index(n - 1);
                inner.push(s.w.ix("minui", &k, &last));
            }
            let val = s.eval(src, &inner)?;
            let r = match inside {
                Some(c) => {
                    let zero = scalar::const_of(&mut s.w, 0.0, compute_ty(d));
                    s.w.op(format!("arith.select {c}, {val}, {zero} : {}", reg_ty(d)))
                }
                None => val,
            };
            s.store_node(v, e, &r);
            Ok(())
        })
    }

    /// Reduction node `v`, in one or two passes.
    fn reduce(&mut self, v: ValueId) -> Result<(), GpuLowerError> {
        let g = self.g;
        let node = g.node(v);
        let Op::Reduce { kind, axes } = &node.op else {
            return Err(self.internal(v, "is not a reduction"));
        };
        let x = node.inputs[0];
        let xs = g.ty(x).shape.clone();
        let d = node.ty.dtype;
        let kept: Vec<usize> = (0..xs.len()).filter(|a| !axes.contains(a)).collect();
        let kept_shape: Vec<usize> = kept.iter().map(|&a| xs[a]).collect();
        let red_shape: Vec<usize> = axes.iter().map(|&a| xs[a]).collect();
        let m: usize = kept_shape.iter().product();
        let len: usize = red_shape.iter().product();
        let acc = Accumulator::new(*kind, d);
        let parts = if m < SPLIT_MAX_OUTPUTS && len >= SPLIT_MIN_LEN {
            ceil_div(len, SPLIT_CHUNK)
        } else {
            1
        };
        let chunk = ceil_div(len, parts);
        let partials = (parts > 1).then(|| {
            self.params.push(BufferParam {
                dtype: acc.dtype,
                len: m * parts,
            });
            self.params.len() - 1
        });

        // Pass 1: work item w = (output o, part p), one block each, over the elements
        // [p·chunk, min((p+1)·chunk, len)) of output o.
        self.reduction_launch(
            &acc,
            m * parts,
            reduce_threads(chunk),
            |s, w| {
                let pc = s.w.index(parts);
                let p = s.w.ix("remui", w, &pc);
                let cc = s.w.index(chunk);
                let lo = s.w.ix("muli", &p, &cc);
                let hi = s.w.ix("addi", &lo, &cc);
                let lc = s.w.index(len);
                let hi = s.w.ix("minui", &hi, &lc);
                (lo, hi)
            },
            |s, w, r| {
                let pc = s.w.index(parts);
                let o = s.w.ix("divui", w, &pc);
                let kept_ix = s.unflatten(&o, &kept_shape);
                let red_ix = s.unflatten(r, &red_shape);
                let mut ix = vec![String::new(); xs.len()];
                for (a, i) in kept.iter().zip(kept_ix) {
                    ix[*a] = i;
                }
                for (a, i) in axes.iter().zip(red_ix) {
                    ix[*a] = i;
                }
                let xv = s.eval(x, &ix)?;
                Ok(acc.widen(&mut s.w, &xv))
            },
            |s, w, total| match partials {
                Some(pb) => {
                    let pp = s.params[pb].clone();
                    s.w.store_global(pb, &pp, w, &total);
                }
                None => {
                    let pc = s.w.index(parts);
                    let o = s.w.ix("divui", w, &pc);
                    let y = acc.finish(&mut s.w, &total, len);
                    s.store_node(v, &o, &y);
                }
            },
        )?;
        // Pass 2: one block per output combines its parts in order.
        if let Some(pb) = partials {
            self.reduction_launch(
                &acc,
                m,
                reduce_threads(parts),
                |s, o| {
                    let pc = s.w.index(parts);
                    let lo = s.w.ix("muli", o, &pc);
                    let hi = s.w.ix("addi", &lo, &pc);
                    (lo, hi)
                },
                |s, _, j| {
                    let pp = s.params[pb].clone();
                    Ok(s.w.load_global(pb, &pp, j))
                },
                |s, o, total| {
                    let y = acc.finish(&mut s.w, &total, len);
                    s.store_node(v, o, &y);
                },
            )?;
        }
        Ok(())
    }

    /// One reduction launch: block `b` takes the work items `b, b + grid, …` below `items`; for
    /// each, every thread accumulates `element(item, j)` over `j` in the item's `range` (block
    /// level, start and end) strided by the block's threads, the block combines them in a fixed
    /// order ([`Self::block_reduce`]), and thread 0 hands the total to `write(item, total)`.
    #[allow(clippy::too_many_arguments)]
    fn reduction_launch(
        &mut self,
        acc: &Accumulator,
        items: usize,
        threads: usize,
        range: impl Fn(&mut Self, &str) -> (String, String),
        mut element: impl FnMut(&mut Self, &str, &str) -> Result<String, GpuLowerError>,
        write: impl FnOnce(&mut Self, &str, String),
    ) -> Result<(), GpuLowerError> {
        let grid = items.clamp(1, MAX_GRID);
        self.begin_launch(grid, threads);
        let (r_acc, r_tmp) = (self.w.register(acc.ty()), self.w.register(acc.ty()));
        let shared = (threads > WARP).then(|| self.w.shared(acc.ty(), threads / WARP));
        let (b, end, step) = (self.w.block_id(), self.w.index(items), self.w.index(grid));
        let item = self.begin_for(&b, &end, &step);
        let (lo, hi) = range(self, &item);
        self.begin_phase();
        let ident = acc.identity(&mut self.w);
        self.w.store_reg(&r_acc, &ident);
        let t = self.w.thread_id();
        let start = self.w.ix("addi", &lo, &t);
        let tc = self.w.index(threads);
        let j = self.begin_for(&start, &hi, &tc);
        let xv = element(self, &item, &j)?;
        let a0 = self.w.load_reg(&r_acc);
        let a1 = acc.combine(&mut self.w, &a0, &xv);
        self.w.store_reg(&r_acc, &a1);
        self.end();
        self.end_phase();
        self.block_reduce(acc, &r_acc, &r_tmp, shared.as_ref(), threads);
        self.begin_phase();
        let t = self.w.thread_id();
        let zero = self.w.index(0);
        let first = self.w.op(format!("arith.cmpi eq, {t}, {zero} : index"));
        self.begin_if(&first);
        let total = self.w.load_reg(&r_acc);
        write(self, &item, total);
        self.end();
        self.end_phase();
        // Every thread has read the shared slots before the next item writes them.
        self.w.barrier();
        self.end();
        self.end_launch();
        Ok(())
    }

    /// Combines every thread's `acc` into thread 0's, in a fixed order: shuffles within each
    /// warp (offsets 16, 8, …, 1), one shared slot per warp, then the same in warp 0.
    fn block_reduce(
        &mut self,
        acc: &Accumulator,
        r_acc: &Reg,
        r_tmp: &Reg,
        shared: Option<&Shared>,
        threads: usize,
    ) {
        self.warp_reduce(acc, r_acc, r_tmp);
        let Some(sh) = shared else { return };
        let warps = threads / WARP;
        self.begin_phase();
        let t = self.w.thread_id();
        let wc = self.w.index(WARP);
        let lane = self.w.ix("remui", &t, &wc);
        let zero = self.w.index(0);
        let lane0 = self.w.op(format!("arith.cmpi eq, {lane}, {zero} : index"));
        self.begin_if(&lane0);
        let warp = self.w.ix("divui", &t, &wc);
        let a = self.w.load_reg(r_acc);
        self.w.store_shared(sh, &warp, &a);
        self.end();
        self.end_phase();
        self.w.barrier();
        self.begin_phase();
        let t = self.w.thread_id();
        let nw = self.w.index(warps);
        let last = self.w.index(warps - 1);
        let slot = self.w.ix("minui", &t, &last);
        let x = self.w.load_shared(sh, &slot);
        let has = self.w.op(format!("arith.cmpi ult, {t}, {nw} : index"));
        let ident = acc.identity(&mut self.w);
        let y = self
            .w
            .op(format!("arith.select {has}, {x}, {ident} : {}", acc.ty()));
        self.w.store_reg(r_acc, &y);
        self.end_phase();
        self.warp_reduce(acc, r_acc, r_tmp);
    }

    fn warp_reduce(&mut self, acc: &Accumulator, r_acc: &Reg, r_tmp: &Reg) {
        let mut offset = WARP / 2;
        while offset > 0 {
            self.w.shuffle_xor(r_acc, r_tmp, offset);
            self.begin_phase();
            let a = self.w.load_reg(r_acc);
            let b = self.w.load_reg(r_tmp);
            let c = acc.combine(&mut self.w, &a, &b);
            self.w.store_reg(r_acc, &c);
            self.end_phase();
            offset /= 2;
        }
    }
}

/// How a reduction accumulates.
struct Accumulator {
    kind: ReduceKind,
    /// The node's dtype.
    out: DType,
    /// The accumulator's dtype (f64 for f32 sums and means).
    dtype: DType,
}

impl Accumulator {
    fn new(kind: ReduceKind, out: DType) -> Accumulator {
        let wide = out == DType::F32 && matches!(kind, ReduceKind::Sum | ReduceKind::Mean);
        Accumulator {
            kind,
            out,
            dtype: if wide { DType::F64 } else { out },
        }
    }

    fn ty(&self) -> &'static str {
        reg_ty(self.dtype)
    }

    fn identity(&self, s: &mut impl ScalarSink) -> String {
        let v = match (self.kind, self.dtype) {
            (ReduceKind::Sum | ReduceKind::Mean, _) => 0.0,
            (ReduceKind::Max, DType::I32) => i32::MIN as f64,
            (ReduceKind::Min, DType::I32) => i32::MAX as f64,
            (ReduceKind::Max, _) => f64::NEG_INFINITY,
            (ReduceKind::Min, _) => f64::INFINITY,
        };
        scalar::const_of(s, v, self.dtype)
    }

    fn widen(&self, s: &mut impl ScalarSink, x: &str) -> String {
        if self.dtype == self.out {
            x.to_string()
        } else {
            s.op(format!("arith.extf {x} : f32 to f64"))
        }
    }

    fn combine(&self, s: &mut impl ScalarSink, a: &str, b: &str) -> String {
        let op = match (self.kind, self.dtype) {
            (ReduceKind::Sum | ReduceKind::Mean, DType::I32) => "arith.addi",
            (ReduceKind::Max, DType::I32) => "arith.maxsi",
            (ReduceKind::Min, DType::I32) => "arith.minsi",
            (ReduceKind::Sum | ReduceKind::Mean, _) => "arith.addf",
            (ReduceKind::Max, _) => "arith.maximumf",
            (ReduceKind::Min, _) => "arith.minimumf",
        };
        s.op(format!("{op} {a}, {b} : {}", self.ty()))
    }

    /// The reduced value as the node's dtype (a mean divided by the count `len`).
    fn finish(&self, s: &mut impl ScalarSink, total: &str, len: usize) -> String {
        let mut x = total.to_string();
        if self.kind == ReduceKind::Mean {
            if self.dtype == DType::I32 {
                let c = scalar::iconst(s, len as i64, "i32");
                x = s.op(format!("arith.divsi {x}, {c} : i32"));
            } else {
                let c = scalar::fconst(s, len as f64, self.dtype);
                x = s.op(format!("arith.divf {x}, {c} : {}", self.ty()));
            }
        }
        if self.dtype != self.out {
            x = s.op(format!("arith.truncf {x} : f64 to f32"));
        }
        x
    }
}

/// Builds loop kernel `k` as GPU launches in `flavor`.
pub fn build(k: &Graph, name: &str, flavor: Flavor) -> Result<GpuKernel, GpuLowerError> {
    validate(k, name)?;
    let analysis = KernelAnalysis::new(k, super::SHARED_COST_LIMIT);
    let mut params = Vec::new();
    let mut buf_of = vec![None; k.len()];
    let param = |v: ValueId| BufferParam {
        dtype: k.ty(v).dtype,
        len: k.ty(v).numel(),
    };
    let inputs: Vec<ValueId> = k.inputs().map(|(_, v)| v).collect();
    for &v in &inputs {
        buf_of[v.index()] = Some(params.len());
        params.push(param(v));
    }
    for (_, v) in &k.outputs {
        if buf_of[v.index()].is_some() {
            return Err(GpuLowerError::Invalid {
                kernel: name.to_string(),
                message: format!("node %{} is returned twice", v.index()),
            });
        }
        buf_of[v.index()] = Some(params.len());
        params.push(param(*v));
    }
    for (i, &m) in analysis.materialized.iter().enumerate() {
        if m && buf_of[i].is_none() {
            buf_of[i] = Some(params.len());
            params.push(param(ValueId(i as u32)));
        }
    }
    let mut b = Builder {
        g: k,
        name: name.to_string(),
        flavor,
        params,
        buf_of,
        ready: (0..k.len())
            .map(|i| matches!(k.nodes[i].op, Op::Input { .. }))
            .collect(),
        launches: Vec::new(),
        funcs: String::new(),
        w: Writer::new(flavor),
        memo: vec![HashMap::new()],
        flat: None,
    };
    for nest in &analysis.loop_nests {
        match nest {
            LoopNest::Elementwise { shape, values } => {
                b.elementwise(shape, values)?;
                for v in values {
                    b.ready[v.index()] = true;
                }
            }
            LoopNest::Reduce(v) => {
                b.reduce(*v)?;
                b.ready[v.index()] = true;
            }
            LoopNest::Pad(v) => {
                b.pad(*v)?;
                b.ready[v.index()] = true;
            }
        }
    }
    let text = match flavor {
        Flavor::Gpu => b.funcs,
        Flavor::CpuEmulation => {
            let w = std::mem::replace(&mut b.w, Writer::new(flavor));
            w.finish(&format!("emu_{name}"), &b.params, 0)
        }
    };
    Ok(GpuKernel {
        name: name.to_string(),
        params: b.params,
        inputs: inputs.len(),
        outputs: k.outputs.len(),
        launches: b.launches,
        text,
    })
}
