//! An element-wise fused loop kernel → one Ascend C vector kernel, built as an MLIR EmitC module at the tile
//! level: the `extern "C" __global__ __aicore__` entry over `GM_ADDR` buffers, the multi-core
//! split by `GetBlockIdx()`, a `TPipe` with a double-buffered `TQue` per tensor input and
//! output and a `TBuf` of scratch tiles, and per tile CopyIn (`DataCopy`, or `DataCopyPad` for a
//! tail that is not whole 32-byte blocks) / Compute (count-form vector calls as
//! `emitc.call_opaque`, a `PipeBarrier<PIPE_V>` after each) / CopyOut. Queue and buffer methods
//! have no EmitC op; they are `emitc.verbatim` with SSA operands.
//!
//! Built: element-wise kernels over same-shape tensors of f32, bool and i32 (`elem.rs`), with
//! scalar operands (constants, 0-d inputs read with `GetValue`, scalar arithmetic on the scalar
//! unit), compares and selects (`logic.rs`). Other ops are an `Unsupported` error naming them.

use super::elem::Elem;
use super::emitc::{
    is_vector_op, last_uses, lv, outputs_of, whole_of, Emitter, Held, Scratch, GM_ADDR, PIPE, TBUF,
};
use super::logic::needs_mask;
use super::tiling::{plan_elementwise, AscendSoc, ElementwisePlan};
use super::AscendError;
use super::AscendKernel;
use ir::{Graph, Op, ValueId};
use std::fmt::Write;

/// Builds kernel graph `k` (named `name`) for `soc`.
pub fn build(k: &Graph, name: &str, soc: &AscendSoc) -> Result<AscendKernel, AscendError> {
    let unsupported = |why: String| AscendError::Unsupported {
        kernel: name.to_string(),
        why,
    };
    // The tensor shape every non-scalar value has.
    let mut shape: Option<&Vec<usize>> = None;
    for (i, n) in k.nodes.iter().enumerate() {
        if Elem::of(n.ty.dtype).is_none() {
            return Err(unsupported(format!(
                "node %{i} ({}) is {}: Ascend kernels take f32, bool and i32",
                n.op.mnemonic(),
                n.ty.dtype
            )));
        }
        let ok = match &n.op {
            Op::Input { .. } | Op::Constant { .. } => true,
            Op::RandomUniform { .. } => n
                .inputs
                .iter()
                .all(|x| matches!(k.node(*x).op, Op::Input { .. })),
            Op::Broadcast { .. } => k.ty(n.inputs[0]).shape.is_empty(),
            _ => is_vector_op(k, ValueId(i as u32)),
        };
        if !ok {
            return Err(unsupported(format!(
                "node %{i} ({}): this kernel class is not built for Ascend yet (element-wise \
                 kernels are)",
                n.op.mnemonic()
            )));
        }
        if !n.ty.shape.is_empty() {
            match shape {
                None => shape = Some(&n.ty.shape),
                Some(s) if s != &n.ty.shape => {
                    return Err(unsupported(format!(
                        "node %{i} has shape {:?}, others {s:?}: only same-shape element-wise \
                         kernels are built for Ascend yet",
                        n.ty.shape
                    )))
                }
                _ => {}
            }
        }
    }
    let Some(shape) = shape else {
        return Err(unsupported("a kernel of scalars only".into()));
    };
    for (o, v) in &k.outputs {
        if k.ty(*v).shape.is_empty() {
            return Err(unsupported(format!("output {o} is a scalar")));
        }
        if matches!(k.node(*v).op, Op::Input { .. }) {
            return Err(unsupported(format!("output {o} is an input")));
        }
    }
    let elements: usize = shape.iter().product();
    let inputs: Vec<ValueId> = (0..k.len())
        .map(|i| ValueId(i as u32))
        .filter(|v| matches!(k.node(*v).op, Op::Input { .. }))
        .collect();
    let mut layout = Layout::of(k, &inputs);
    // A dry run counts the scratch tiles (dead values' tiles are reused); then the plan.
    let dry_plan = ElementwisePlan {
        block_dim: 1,
        per_block: elements,
        tile: 64,
        buffers: 2,
        ub_used: 0,
    };
    let mut dry = Emitter::default();
    dry.kernel(k, name, &inputs, &layout, &dry_plan, elements)?;
    layout.scratch = dry.scratch_slots;
    let plan = plan_elementwise(
        soc,
        elements,
        4,
        layout.tensor_inputs + k.outputs.len(),
        layout.scratch,
    )
    .map_err(|why| AscendError::DoesNotFit {
        kernel: name.to_string(),
        soc: soc.name,
        why,
    })?;
    let mut e = Emitter::default();
    let mlir = e.kernel(k, name, &inputs, &layout, &plan, elements)?;
    Ok(AscendKernel {
        name: name.to_string(),
        mlir,
        tiling: e.tiling,
        block_dim: plan.block_dim,
        ub_bytes: plan.ub_used,
        params: inputs.len() + k.outputs.len(),
    })
}

/// How many queues and scratch tiles a kernel takes.
struct Layout {
    tensor_inputs: usize,
    /// Scratch tiles: counted by a dry run of the emission (`build`).
    scratch: usize,
    mask: bool,
    conv: bool,
}

impl Layout {
    fn of(k: &Graph, inputs: &[ValueId]) -> Layout {
        let tensor = |v: &ValueId| !k.ty(*v).shape.is_empty();
        let widened = inputs
            .iter()
            .filter(|v| tensor(v) && k.ty(**v).dtype != ir::DType::F32)
            .count();
        let conv = widened > 0
            || k.outputs
                .iter()
                .any(|(_, v)| k.ty(*v).dtype != ir::DType::F32);
        let mask = needs_mask(k);
        Layout {
            tensor_inputs: inputs.iter().filter(|v| tensor(v)).count(),
            // Enough for the dry run's `InitBuffer`; the dry run counts the real need.
            scratch: k.len(),
            mask,
            conv,
        }
    }
}

/// `TQue<VECIN|VECOUT, 2>` as an EmitC type.
fn queue(input: bool) -> &'static str {
    if input {
        super::emitc::QIN
    } else {
        super::emitc::QOUT
    }
}

impl Emitter {
    fn kernel(
        &mut self,
        k: &Graph,
        name: &str,
        inputs: &[ValueId],
        layout: &Layout,
        plan: &ElementwisePlan,
        elements: usize,
    ) -> Result<String, AscendError> {
        self.indent = 1;
        let n_in = inputs.len();
        let params: Vec<String> = (0..n_in + k.outputs.len())
            .map(|i| format!("%p{i}: {GM_ADDR}"))
            .collect();
        let elem = |v: ValueId| Elem::of(k.ty(v).dtype).expect("checked by build");
        let pipe = self.variable(PIPE);
        // Global views and queues of the tensor inputs and outputs.
        let mut in_q: Vec<Option<(String, String, Elem)>> = Vec::new();
        for &v in inputs {
            in_q.push(if k.ty(v).shape.is_empty() {
                None
            } else {
                Some((
                    self.variable(&elem(v).gt()),
                    self.variable(queue(true)),
                    elem(v),
                ))
            });
        }
        let out_q: Vec<(String, String, Elem)> = k
            .outputs
            .iter()
            .map(|(_, v)| {
                (
                    self.variable(&elem(*v).gt()),
                    self.variable(queue(false)),
                    elem(*v),
                )
            })
            .collect();
        let scratch = self.variable(TBUF);
        let blk = self.fresh();
        self.line(&format!(
            "{blk} = emitc.call_opaque \"AscendC::GetBlockIdx\"() : () -> i64"
        ));
        let per = self.tiling("perBlock", plan.per_block);
        let total = self.constant(&elements.to_string(), "i64");
        let start = self.binop("mul", &blk, &per, "i64");
        let rem = self.binop("sub", &total, &start, "i64");
        let len = self.min_i64(&rem, &per);
        // Scalars of the inputs, read once on the scalar unit; tensor views of this block.
        let mut held: Vec<Option<Held>> = vec![None; k.len()];
        let mut exact: Vec<(ValueId, String)> = Vec::new();
        let set_global = |e: &mut Emitter, g: &str, el: Elem, p: &str, at: Option<(&str, &str)>| {
            let gt = lv(&el.gt());
            match at {
                None => e.verbatim(
                    &format!("{{}}.SetGlobalBuffer((__gm__ {}*){{}}, 1);", el.cpp()),
                    &[(g, gt), (p, GM_ADDR.into())],
                ),
                Some((start, len)) => e.verbatim(
                    &format!(
                        "{{}}.SetGlobalBuffer((__gm__ {}*){{}} + {{}}, {{}});",
                        el.cpp()
                    ),
                    &[
                        (g, gt),
                        (p, GM_ADDR.into()),
                        (start, "i64".into()),
                        (len, "i64".into()),
                    ],
                ),
            }
        };
        for (i, &v) in inputs.iter().enumerate() {
            let p = format!("%p{i}");
            match &in_q[i] {
                None => {
                    let g = self.variable(&elem(v).gt());
                    set_global(self, &g, elem(v), &p, None);
                    let zero = self.constant("0", "i64");
                    let s = self.gm_get(elem(v), &g, &zero);
                    held[v.index()] = Some(Held::Scalar(s));
                    if elem(v) == Elem::I32 {
                        // Exact, for random numbers' seed and counter.
                        let x = self.assigned(
                            "i64",
                            "{} = (int64_t){}.GetValue(0);",
                            &[(&g, lv(&Elem::I32.gt()))],
                        );
                        exact.push((v, x));
                    }
                }
                Some((g, _, el)) => set_global(self, g, *el, &p, Some((&start, &len))),
            }
        }
        for (o, (g, _, el)) in out_q.iter().enumerate() {
            let p = format!("%p{}", n_in + o);
            set_global(self, g, *el, &p, Some((&start, &len)));
        }
        for (q, el, input) in in_q
            .iter()
            .flatten()
            .map(|x| (&x.1, x.2, true))
            .chain(out_q.iter().map(|x| (&x.1, x.2, false)))
        {
            let bytes = (plan.tile * el.bytes()).div_ceil(32) * 32;
            self.verbatim(
                &format!("{{}}.InitBuffer({{}}, {}, {bytes});", plan.buffers),
                &[(&pipe, lv(PIPE)), (q, lv(queue(input)))],
            );
        }
        self.verbatim(
            &format!("{{}}.InitBuffer({{}}, {});", layout.scratch * plan.tile * 4),
            &[(&pipe, lv(PIPE)), (&scratch, lv(TBUF))],
        );
        let off = "%off".to_string();
        let elems = in_q
            .iter()
            .flatten()
            .map(|x| x.2)
            .chain(out_q.iter().map(|x| x.2));
        let (n64, n, whole) = self.open_tile_loop(&off, (&len, plan.tile), elems);
        let whole_of = |el: Elem| whole_of(&whole, el);
        self.verbatim("// CopyIn", &[]);
        for (g, q, el) in in_q.iter().flatten() {
            let t = self.assigned(
                &el.lt(),
                &format!("{{}} = {{}}.AllocTensor<{}>();", el.cpp()),
                &[(q, lv(queue(true)))],
            );
            let gs = self.assigned(
                &el.gt(),
                "{} = {}[{}];",
                &[(g, lv(&el.gt())), (&off, "i64".into())],
            );
            self.copy(*el, &whole_of(*el), &t, &gs, &n, true);
            self.verbatim("{}.EnQue({});", &[(q, lv(queue(true))), (&t, el.lt())]);
        }

        self.verbatim("// Compute", &[]);
        let mut scratch = Scratch::new(&scratch, plan.tile);
        let last_use = last_uses(k, |_| false);
        let dup = scratch.take(self);
        let (conv, step) = self.step_tiles(k, &mut scratch, (&n, dup), (layout.conv, layout.mask));
        let mut to_free = Vec::new();
        let mut tensor_inputs = in_q.iter().flatten();
        for &v in inputs {
            if k.ty(v).shape.is_empty() {
                continue;
            }
            let (_, q, el) = tensor_inputs.next().expect("one queue per tensor input");
            let (t, f) = self.dequeue_input(q, *el, &mut scratch, conv.as_deref(), &n);
            to_free.push((q.clone(), t, *el));
            held[v.index()] = Some(Held::Tile(f));
        }
        let mut out_tiles = Vec::new();
        for (_, q, el) in &out_q {
            out_tiles.push(self.assigned(
                &el.lt(),
                &format!("{{}} = {{}}.AllocTensor<{}>();", el.cpp()),
                &[(q, lv(queue(false)))],
            ));
        }
        for i in 0..k.len() {
            let v = ValueId(i as u32);
            if held[i].is_some() {
                continue;
            }
            let outs = outputs_of(k, v);
            let out = outs
                .first()
                .filter(|&&o| out_q[o].2 == Elem::F32)
                .map(|&o| out_tiles[o].clone());
            let h = match &k.node(v).op {
                Op::RandomUniform { op_id } => {
                    let exact_of = |x: ValueId| {
                        exact
                            .iter()
                            .find(|e| e.0 == x)
                            .expect("an i32 scalar input")
                            .1
                            .clone()
                    };
                    let node = k.node(v);
                    let (seed, counter) = (exact_of(node.inputs[0]), exact_of(node.inputs[1]));
                    let first = self.binop("add", &start, &off, "i64");
                    let t = scratch.take(self);
                    self.uniform_tile(&t, (&seed, &counter), *op_id, &first, &n64);
                    Held::Tile(t)
                }
                _ => self.step_value(k, v, &held, out, &mut scratch, &step, name)?,
            };
            // An output that is a scalar or another output's value: copied into its tile.
            for &o in &outs {
                self.put_output(&h, &out_tiles[o], out_q[o].2, conv.as_deref(), &step);
            }
            held[i] = Some(h);
            scratch.release_dead(i, &held, &last_use);
        }
        self.scratch_slots = scratch.slots();
        for (q, t, el) in &to_free {
            self.verbatim("{}.FreeTensor({});", &[(q, lv(queue(true))), (t, el.lt())]);
        }
        for ((_, q, el), t) in out_q.iter().zip(&out_tiles) {
            self.verbatim("{}.EnQue({});", &[(q, lv(queue(false))), (t, el.lt())]);
        }

        self.verbatim("// CopyOut", &[]);
        for (g, q, el) in &out_q {
            let t = self.assigned(
                &el.lt(),
                &format!("{{}} = {{}}.DeQue<{}>();", el.cpp()),
                &[(q, lv(queue(false)))],
            );
            let gs = self.assigned(
                &el.gt(),
                "{} = {}[{}];",
                &[(g, lv(&el.gt())), (&off, "i64".into())],
            );
            self.copy(*el, &whole_of(*el), &t, &gs, &n, false);
            self.verbatim(
                "{}.FreeTensor({});",
                &[(q, lv(queue(false))), (&t, el.lt())],
            );
        }
        self.indent -= 1;
        self.line("}");
        self.line("emitc.return");
        let mut prelude = String::new();
        if k.nodes
            .iter()
            .any(|n| matches!(n.op, Op::RandomUniform { .. }))
        {
            let f = super::random::UNIFORM_FN.replace('"', "\\\"");
            // Once per translation unit however many kernels draw.
            writeln!(prelude, "emitc.verbatim \"#ifndef TBC_UNIFORM_FN\"").unwrap();
            writeln!(prelude, "emitc.verbatim \"#define TBC_UNIFORM_FN\"").unwrap();
            writeln!(prelude, "emitc.verbatim \"{f}\"").unwrap();
            writeln!(prelude, "emitc.verbatim \"#endif\"").unwrap();
        }
        Ok(self.module(name, &params, &prelude))
    }
}
