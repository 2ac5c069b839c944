//! A kernel that reduces whole tensors to scalars → one Ascend C kernel on one vector core:
//! loss reductions, the gradient norm of clipping, the overflow check, and the kernels of
//! scalars only (learning rate, loss scale, step counters). A full reduction is complete only
//! after every tile of its tensor, so the kernel runs in rounds: round `r` streams the tensors
//! whose reduced scalars from earlier rounds it needs tile by tile (CopyIn / Compute / CopyOut,
//! double-buffered queues as in element-wise kernels), each tile `ReduceSum`/`ReduceMax`/
//! `ReduceMin`ed and added to a scalar on the scalar unit after a V→S event; between rounds
//! the scalar unit computes the scalars that became available. A tensor value a later round
//! needs is recomputed there from the inputs (streamed again), not stored.
//!
//! One core, because a reduction's scalar is needed by every core of the next round and
//! cross-core synchronisation (`SyncAll` with a GM workspace) is not built: these kernels are
//! small (a parameter's norm, a loss) next to the GEMMs. Values are f32 (bools 0/1, integers
//! exact below 2²⁴). Not built: reductions over some axes (row and column kernels do those),
//! broadcasts of tensors, tensor outputs that are inputs.

use super::elem::Elem;
use super::emitc::{
    is_vector_op, last_uses, lv, outputs_of, whole_of, Emitter, Held, Scratch, GM_ADDR, LT, PIPE,
    QIN, QOUT, TBUF,
};
use super::logic::needs_mask;
use super::tiling::{plan_elementwise, AscendSoc};
use super::{AscendError, AscendKernel};
use ir::{DType, Graph, Op, ReduceKind, ValueId};

/// Whether `k` is this class: scalars only, or full reductions to scalars.
pub fn is_whole(k: &Graph) -> bool {
    let full_reduce = k.nodes.iter().any(|n| match &n.op {
        Op::Reduce { axes, .. } => axes.len() == k.ty(n.inputs[0]).shape.len() && !axes.is_empty(),
        _ => false,
    });
    full_reduce || k.nodes.iter().all(|n| n.ty.shape.is_empty())
}

/// Builds whole-reduction kernel `k` (named `name`) for `soc`.
pub fn build(k: &Graph, name: &str, soc: &AscendSoc) -> Result<AscendKernel, AscendError> {
    let unsupported = |why: String| AscendError::Unsupported {
        kernel: name.to_string(),
        why,
    };
    // The round each value is ready in: inputs and constants 0, a full reduction one after its
    // operand's, other values the latest of their operands'.
    let mut round = vec![0usize; k.len()];
    for (i, n) in k.nodes.iter().enumerate() {
        if Elem::of(n.ty.dtype).is_none() {
            return Err(unsupported(format!(
                "node %{i} ({}) is {}: Ascend kernels take f32, bool and i32",
                n.op.mnemonic(),
                n.ty.dtype
            )));
        }
        let operands = n.inputs.iter().map(|x| round[x.index()]).max().unwrap_or(0);
        let ok = match &n.op {
            Op::Input { .. } | Op::Constant { .. } => true,
            Op::Reduce { axes, .. } => {
                let rank = k.ty(n.inputs[0]).shape.len();
                axes.iter().copied().eq(0..rank) && n.ty.dtype == DType::F32
            }
            // A scalar's, or a per-row value's along the last axis (taken a row at a time).
            Op::Broadcast { dims } => {
                let from = &k.ty(n.inputs[0]).shape;
                from.is_empty()
                    || (dims.iter().copied().eq(0..from.len())
                        && n.ty.shape.len() == from.len() + 1)
            }
            _ => is_vector_op(k, ValueId(i as u32)),
        };
        if !ok {
            return Err(unsupported(format!(
                "node %{i} ({}): not built for Ascend yet in a kernel of full reductions",
                n.op.mnemonic()
            )));
        }
        round[i] = operands + matches!(n.op, Op::Reduce { .. }) as usize;
    }
    for (o, v) in &k.outputs {
        if matches!(k.node(*v).op, Op::Input { .. }) {
            return Err(unsupported(format!("output {o} is an input")));
        }
    }
    // Streams: (round, shape) in order; each computes the tensors of that shape it needs.
    let mut streams: Vec<(usize, Vec<usize>)> = Vec::new();
    for (i, n) in k.nodes.iter().enumerate() {
        let v = ValueId(i as u32);
        let wanted = match &n.op {
            Op::Reduce { .. } => Some((round[i] - 1, k.ty(n.inputs[0]).shape.clone())),
            _ if !n.ty.shape.is_empty() && !outputs_of(k, v).is_empty() => {
                Some((round[i], n.ty.shape.clone()))
            }
            _ => None,
        };
        if let Some(s) = wanted {
            if !streams.contains(&s) {
                streams.push(s);
            }
        }
    }
    streams.sort_by_key(|s| s.0);
    let inputs: Vec<ValueId> = (0..k.len())
        .map(|i| ValueId(i as u32))
        .filter(|v| matches!(k.node(*v).op, Op::Input { .. }))
        .collect();
    let tensor = |v: &ValueId| !k.ty(*v).shape.is_empty();
    let tensor_outputs = k.outputs.iter().filter(|(_, v)| tensor(v)).count();
    // Tensors of bool, i32 or f16 in or out go through a conversion tile.
    let conv = inputs
        .iter()
        .any(|v| tensor(v) && k.ty(*v).dtype != DType::F32)
        || k.outputs
            .iter()
            .any(|(_, v)| tensor(v) && k.ty(*v).dtype != DType::F32);
    let mask = needs_mask(k);
    let largest = streams
        .iter()
        .map(|s| s.1.iter().product::<usize>())
        .max()
        .unwrap_or(1);
    let one_core = AscendSoc {
        vector_cores: 1,
        ..*soc
    };
    let queues = inputs.iter().filter(|v| tensor(v)).count() + tensor_outputs;
    // A dry run counts the scratch tiles (dead values' tiles are reused); then the plan.
    let mut dry = Emitter::default();
    let dry_layout = Layout {
        tile: 64,
        buffers: 2,
        // Enough for the dry run's `InitBuffer`; the dry run counts the real need.
        scratch: k.len() + 8,
        mask,
        conv,
    };
    dry.whole_kernel(k, name, &inputs, &round, &streams, &dry_layout)?;
    let scratch = dry.scratch_slots.max(1);
    let plan = plan_elementwise(&one_core, largest, 4, queues, scratch).map_err(|why| {
        AscendError::DoesNotFit {
            kernel: name.to_string(),
            soc: soc.name,
            why,
        }
    })?;
    // A stream with per-row values takes a row per step: rows must fit a tile.
    for n in &k.nodes {
        if let Op::Broadcast { .. } = n.op {
            let cols = n.ty.shape.last().copied().unwrap_or(1);
            if !k.ty(n.inputs[0]).shape.is_empty() && cols > plan.tile {
                return Err(AscendError::DoesNotFit {
                    kernel: name.to_string(),
                    soc: soc.name,
                    why: format!(
                        "rows of {cols} values are longer than a tile of {}",
                        plan.tile
                    ),
                });
            }
        }
    }
    let mut e = Emitter::default();
    let layout = Layout {
        tile: plan.tile,
        buffers: plan.buffers,
        scratch,
        mask,
        conv,
    };
    let mlir = e.whole_kernel(k, name, &inputs, &round, &streams, &layout)?;
    Ok(AscendKernel {
        name: name.to_string(),
        mlir,
        tiling: e.tiling,
        block_dim: 1,
        ub_bytes: plan.ub_used,
        params: inputs.len() + k.outputs.len(),
    })
}

struct Layout {
    tile: usize,
    /// Buffers per queue (2: double buffering; 1 where that does not fit).
    buffers: usize,
    scratch: usize,
    mask: bool,
    conv: bool,
}

impl Emitter {
    fn whole_kernel(
        &mut self,
        k: &Graph,
        name: &str,
        inputs: &[ValueId],
        round: &[usize],
        streams: &[(usize, Vec<usize>)],
        layout: &Layout,
    ) -> Result<String, AscendError> {
        self.indent = 1;
        let n_in = inputs.len();
        let params: Vec<String> = (0..n_in + k.outputs.len())
            .map(|i| format!("%p{i}: {GM_ADDR}"))
            .collect();
        let elem = |v: ValueId| Elem::of(k.ty(v).dtype).expect("checked by build");
        let pipe = self.variable(PIPE);
        let scratch_buf = self.variable(TBUF);
        // GM views of every parameter, queues of the tensor ones.
        let mut gm = Vec::new();
        let mut queues: Vec<Option<String>> = Vec::new();
        let params_of: Vec<(ValueId, bool)> = inputs
            .iter()
            .map(|v| (*v, true))
            .chain(k.outputs.iter().map(|(_, v)| (*v, false)))
            .collect();
        for (i, &(v, input)) in params_of.iter().enumerate() {
            let el = elem(v);
            let g = self.variable(&el.gt());
            let len = k.ty(v).shape.iter().product::<usize>();
            let p = format!("%p{i}");
            self.verbatim(
                &format!("{{}}.SetGlobalBuffer((__gm__ {}*){{}}, {len});", el.cpp()),
                &[(&g, lv(&el.gt())), (&p, GM_ADDR.into())],
            );
            gm.push(g);
            queues.push(if k.ty(v).shape.is_empty() {
                None
            } else {
                let qt = if input { QIN } else { QOUT };
                let q = self.variable(qt);
                let bytes = (layout.tile * el.bytes()).div_ceil(32) * 32;
                self.verbatim(
                    &format!("{{}}.InitBuffer({{}}, {}, {bytes});", layout.buffers),
                    &[(&pipe, lv(PIPE)), (&q, lv(qt))],
                );
                Some(q)
            });
        }
        self.verbatim(
            &format!(
                "{{}}.InitBuffer({{}}, {});",
                layout.scratch * layout.tile * 4
            ),
            &[(&pipe, lv(PIPE)), (&scratch_buf, lv(TBUF))],
        );
        let mut held: Vec<Option<Held>> = vec![None; k.len()];
        for (i, &v) in inputs.iter().enumerate() {
            if !k.ty(v).shape.is_empty() {
                continue;
            }
            let zero = self.constant("0", "i64");
            let s = self.gm_get(elem(v), &gm[i], &zero);
            held[v.index()] = Some(Held::Scalar(s));
        }
        // Reductions accumulate in scalar variables.
        let mut accs: Vec<Option<String>> = vec![None; k.len()];
        for (i, n) in k.nodes.iter().enumerate() {
            if let Op::Reduce { kind, .. } = &n.op {
                let start = match kind {
                    ReduceKind::Max => f64::NEG_INFINITY,
                    ReduceKind::Min => f64::INFINITY,
                    _ => 0.0,
                };
                let c = self.f32_const(start);
                let var = self.fresh();
                self.line(&format!(
                    "{var} = \"emitc.variable\"() <{{value = #emitc.opaque<\"\">}}> : () -> !emitc.lvalue<f32>"
                ));
                self.line(&format!(
                    "emitc.assign {c} : f32 to {var} : !emitc.lvalue<f32>"
                ));
                accs[i] = Some(var);
            }
        }
        self.scalars_ready(k, &mut held, &scratch_buf, name)?;
        for (r, shape) in streams {
            self.stream(
                k,
                name,
                (*r, shape),
                round,
                inputs,
                (&gm, &queues),
                &accs,
                &mut held,
                layout,
                &scratch_buf,
            )?;
            // The reductions this stream finished, then the scalars they make ready.
            for (i, n) in k.nodes.iter().enumerate() {
                if let (Op::Reduce { kind, .. }, Some(acc)) = (&n.op, &accs[i]) {
                    let x = n.inputs[0];
                    if round[i] == r + 1 && &k.ty(x).shape == shape && held[i].is_none() {
                        let s = self.fresh();
                        self.line(&format!("{s} = emitc.load {acc} : !emitc.lvalue<f32>"));
                        let s = if *kind == ReduceKind::Mean {
                            let count = self.f32_const(shape.iter().product::<usize>() as f64);
                            self.binop("div", &s, &count, "f32")
                        } else {
                            s
                        };
                        held[i] = Some(Held::Scalar(s));
                    }
                }
            }
            self.scalars_ready(k, &mut held, &scratch_buf, name)?;
        }
        // Scalar outputs, written by the one core.
        let zero = self.constant("0", "i64");
        for (o, (_, v)) in k.outputs.iter().enumerate() {
            if let Some(Held::Scalar(s)) = &held[v.index()] {
                if k.ty(*v).shape.is_empty() {
                    let g = gm[n_in + o].clone();
                    self.gm_set(elem(*v), &g, &zero, s);
                }
            }
        }
        self.line("emitc.return");
        Ok(self.module(name, &params, ""))
    }

    /// Computes every scalar whose operands are held (on the scalar unit).
    fn scalars_ready(
        &mut self,
        k: &Graph,
        held: &mut [Option<Held>],
        scratch_buf: &str,
        name: &str,
    ) -> Result<(), AscendError> {
        for i in 0..k.len() {
            let n = &k.nodes[i];
            if held[i].is_some()
                || !n.ty.shape.is_empty()
                || matches!(n.op, Op::Reduce { .. } | Op::Input { .. })
                || n.inputs.iter().any(|x| held[x.index()].is_none())
            {
                continue;
            }
            let v = ValueId(i as u32);
            held[i] = Some(match &n.op {
                Op::Constant { value } => Held::Scalar(self.f32_const(*value)),
                Op::Broadcast { .. } | Op::Unary(ir::UnaryOp::StopGradient) => {
                    held[n.inputs[0].index()].clone().expect("held")
                }
                Op::Cast if !super::logic::cast_changes_value(k, v) => {
                    held[n.inputs[0].index()].clone().expect("held")
                }
                _ => {
                    // Scalar vector ops use a one-block scratch at the buffer's start.
                    let dup =
                        self.assigned(LT, "{} = {}.Get<float>();", &[(scratch_buf, lv(TBUF))]);
                    Held::Scalar(self.any_scalar_op(k, v, held, &dup, name)?)
                }
            });
        }
        Ok(())
    }

    /// One stream: the tensors of `shape` round `r` needs, tile by tile.
    #[allow(clippy::too_many_arguments)]
    fn stream(
        &mut self,
        k: &Graph,
        name: &str,
        (r, shape): (usize, &[usize]),
        round: &[usize],
        inputs: &[ValueId],
        (gm, queues): (&[String], &[Option<String>]),
        accs: &[Option<String>],
        held: &mut [Option<Held>],
        layout: &Layout,
        scratch_buf: &str,
    ) -> Result<(), AscendError> {
        let elem = |v: ValueId| Elem::of(k.ty(v).dtype).expect("checked by build");
        let n_in = inputs.len();
        let elements: usize = shape.iter().product();
        // What this stream computes: the operands of the reductions it finishes and the tensor
        // outputs of its round, with every tensor of `shape` they depend on.
        let mut need = vec![false; k.len()];
        let mut roots: Vec<ValueId> = Vec::new();
        for (i, n) in k.nodes.iter().enumerate() {
            let v = ValueId(i as u32);
            match &n.op {
                Op::Reduce { .. } if round[i] == r + 1 && k.ty(n.inputs[0]).shape == shape => {
                    roots.push(n.inputs[0])
                }
                _ if n.ty.shape == shape && round[i] == r && !outputs_of(k, v).is_empty() => {
                    roots.push(v)
                }
                _ => {}
            }
        }
        while let Some(v) = roots.pop() {
            if need[v.index()] || k.ty(v).shape.is_empty() {
                continue;
            }
            need[v.index()] = true;
            roots.extend(k.node(v).inputs.iter().copied());
        }
        // Per-row values (of the leading shape) make the stream take one row per step, they
        // being scalars there.
        let rank = shape.len();
        let lead = &shape[..rank.saturating_sub(1)];
        let row_mode =
            rank >= 2 && (0..k.len()).any(|i| need[i] && k.ty(ValueId(i as u32)).shape == lead);
        for (i, _) in need.iter().enumerate().filter(|(_, n)| **n) {
            let s = &k.ty(ValueId(i as u32)).shape;
            if s != shape && !(row_mode && s == lead) {
                return Err(AscendError::Unsupported {
                    kernel: name.to_string(),
                    why: format!(
                        "node %{i} has shape {s:?} in a stream over {shape:?}: not built for \
                         Ascend yet"
                    ),
                });
            }
        }
        let step_len = if row_mode {
            shape[rank - 1]
        } else {
            layout.tile
        };
        let total = self.constant(&elements.to_string(), "i64");
        let off = self.fresh();
        let streamed: Vec<usize> = (0..params_count(k, inputs))
            .filter(|&i| {
                let v = param_value(k, inputs, i);
                need[v.index()] && k.ty(v).shape == shape && (i < n_in || round[v.index()] == r)
            })
            .collect();
        let elems = streamed.iter().map(|&i| elem(param_value(k, inputs, i)));
        let (_, n, whole) = self.open_tile_loop(&off, (&total, step_len), elems);
        let whole_of = |el: Elem| whole_of(&whole, el);
        self.verbatim("// CopyIn", &[]);
        for &i in streamed.iter().filter(|&&i| i < n_in) {
            let el = elem(inputs[i]);
            let q = queues[i].as_ref().expect("a tensor input's queue");
            let t = self.assigned(
                &el.lt(),
                &format!("{{}} = {{}}.AllocTensor<{}>();", el.cpp()),
                &[(q, lv(QIN))],
            );
            let gs = self.assigned(
                &el.gt(),
                "{} = {}[{}];",
                &[(&gm[i], lv(&el.gt())), (&off, "i64".into())],
            );
            self.copy(el, &whole_of(el), &t, &gs, &n, true);
            self.verbatim("{}.EnQue({});", &[(q, lv(QIN)), (&t, el.lt())]);
        }
        self.verbatim("// Compute", &[]);
        let mut scratch = Scratch::new(scratch_buf, layout.tile);
        // Reductions read their operands' tiles after the node loop.
        let reduced = |v: ValueId| {
            k.nodes
                .iter()
                .any(|n| matches!(n.op, Op::Reduce { .. }) && n.inputs[0] == v)
        };
        let last_use = last_uses(k, reduced);
        let dup = scratch.take(self);
        let red = scratch.take(self);
        let work = scratch.take(self);
        let (conv, step) = self.step_tiles(k, &mut scratch, (&n, dup), (layout.conv, layout.mask));
        let mut tile_held = held.to_vec();
        if row_mode {
            let cols = self.constant(&shape[rank - 1].to_string(), "i64");
            let row = self.binop("div", &off, &cols, "i64");
            for (i, &v) in inputs.iter().enumerate() {
                if need[v.index()] && k.ty(v).shape == lead {
                    let s = self.gm_get(elem(v), &gm[i], &row);
                    tile_held[v.index()] = Some(Held::Scalar(s));
                }
            }
        }
        let mut to_free = Vec::new();
        for &i in streamed.iter().filter(|&&i| i < n_in) {
            let el = elem(inputs[i]);
            let q = queues[i].clone().expect("a queue");
            let (t, f) = self.dequeue_input(&q, el, &mut scratch, conv.as_deref(), &n);
            tile_held[inputs[i].index()] = Some(Held::Tile(f));
            to_free.push((q, t, el));
        }
        let mut out_tiles: Vec<(usize, String)> = Vec::new();
        for &i in streamed.iter().filter(|&&i| i >= n_in) {
            let el = elem(param_value(k, inputs, i));
            let q = queues[i].as_ref().expect("a tensor output's queue");
            out_tiles.push((
                i - n_in,
                self.assigned(
                    &el.lt(),
                    &format!("{{}} = {{}}.AllocTensor<{}>();", el.cpp()),
                    &[(q, lv(QOUT))],
                ),
            ));
        }
        for i in 0..k.len() {
            if !need[i] || tile_held[i].is_some() {
                continue;
            }
            let v = ValueId(i as u32);
            let out = out_tiles
                .iter()
                .find(|(o, _)| k.outputs[*o].1 == v && elem(v) == Elem::F32)
                .map(|(_, t)| t.clone());
            let h = self.step_value(k, v, &tile_held, out, &mut scratch, &step, name)?;
            for (o, t) in &out_tiles {
                if k.outputs[*o].1 == v {
                    self.put_output(&h, t, elem(v), conv.as_deref(), &step);
                }
            }
            tile_held[i] = Some(h);
            scratch.release_dead(i, &tile_held, &last_use);
        }
        // This tile's part of each reduction the stream finishes.
        for (i, node) in k.nodes.iter().enumerate() {
            let (Op::Reduce { kind, .. }, Some(acc)) = (&node.op, &accs[i]) else {
                continue;
            };
            let x = node.inputs[0];
            if round[i] != r + 1 || k.ty(x).shape != shape {
                continue;
            }
            let t = match tile_held[x.index()].clone().expect("computed") {
                Held::Tile(t) => t,
                Held::Scalar(s) => {
                    self.vector("Duplicate", &[(&step.dup, LT), (&s, "f32"), (&n, "i32")]);
                    step.dup.clone()
                }
            };
            let api = match kind {
                ReduceKind::Max => "ReduceMax",
                ReduceKind::Min => "ReduceMin",
                _ => "ReduceSum",
            };
            self.vector(api, &[(&red, LT), (&t, LT), (&work, LT), (&n, "i32")]);
            self.event("V_S");
            let part = self.assigned("f32", "{} = {}.GetValue(0);", &[(&red, LT.into())]);
            let sofar = self.fresh();
            self.line(&format!("{sofar} = emitc.load {acc} : !emitc.lvalue<f32>"));
            let next = match kind {
                ReduceKind::Max | ReduceKind::Min => {
                    let p = if *kind == ReduceKind::Max { "gt" } else { "lt" };
                    let b = self.fresh();
                    self.line(&format!(
                        "{b} = emitc.cmp {p}, {part}, {sofar} : (f32, f32) -> i1"
                    ));
                    let m = self.fresh();
                    self.line(&format!(
                        "{m} = emitc.conditional {b}, {part}, {sofar} : f32"
                    ));
                    m
                }
                _ => self.binop("add", &sofar, &part, "f32"),
            };
            self.line(&format!(
                "emitc.assign {next} : f32 to {acc} : !emitc.lvalue<f32>"
            ));
            // The vector unit may reuse `red` only after the scalar unit read it.
            self.event("S_V");
        }
        for (q, t, el) in &to_free {
            self.verbatim("{}.FreeTensor({});", &[(q, lv(QIN)), (t, el.lt())]);
        }
        for (o, t) in &out_tiles {
            let q = queues[n_in + o].as_ref().expect("a queue");
            self.verbatim(
                "{}.EnQue({});",
                &[(q, lv(QOUT)), (t, elem(k.outputs[*o].1).lt())],
            );
        }
        self.verbatim("// CopyOut", &[]);
        for (o, _) in &out_tiles {
            let v = k.outputs[*o].1;
            let el = elem(v);
            let q = queues[n_in + o].as_ref().expect("a queue");
            let t = self.assigned(
                &el.lt(),
                &format!("{{}} = {{}}.DeQue<{}>();", el.cpp()),
                &[(q, lv(QOUT))],
            );
            let gs = self.assigned(
                &el.gt(),
                "{} = {}[{}];",
                &[(&gm[n_in + o], lv(&el.gt())), (&off, "i64".into())],
            );
            self.copy(el, &whole_of(el), &t, &gs, &n, false);
            self.verbatim("{}.FreeTensor({});", &[(q, lv(QOUT)), (&t, el.lt())]);
        }
        self.indent -= 1;
        self.line("}");
        self.scratch_slots = self.scratch_slots.max(scratch.slots());
        Ok(())
    }
}

/// Parameters: the inputs, then the outputs.
fn params_count(k: &Graph, inputs: &[ValueId]) -> usize {
    inputs.len() + k.outputs.len()
}

fn param_value(k: &Graph, inputs: &[ValueId], i: usize) -> ValueId {
    if i < inputs.len() {
        inputs[i]
    } else {
        k.outputs[i - inputs.len()].1
    }
}
