//! A row kernel → one Ascend C vector kernel: every tensor of the kernel is a whole `[rows, C]`
//! value, a per-row value `[rows]` (a reduction over the last axis, or one broadcast along it),
//! a column vector `[C]` broadcast over the rows, or a scalar. Rows split over the vector
//! cores; each step takes one row: CopyIn of the row of every full input, Compute (vector calls
//! over the row; a reduction over it is `ReduceSum`/`ReduceMax`/`ReduceMin` read on the scalar
//! unit after a V→S event, so per-row values are scalars), CopyOut of the full outputs' rows and
//! `SetValue` of the per-row outputs. Column vectors are loaded once per core. Softmax,
//! LayerNorm forward and the cross-entropy rows are this class.
//!
//! Column sums (reductions over the leading axes: bias gradients, LayerNorm backward's sums)
//! are the same kernel turned around: columns split over the cores in 32-byte multiples, each
//! core stepping through every row of its columns and adding them to accumulators in UB, written
//! out after the last row.
//!
//! Not built (clear errors): both kinds of reduction in one kernel, a column sum used by other
//! ops, column max/min, other shapes, rows longer than the UB holds.

use super::elem::Elem;
use super::emitc::{
    is_vector_op, last_uses, lv, outputs_of, Emitter, Held, Scratch, Step, GM_ADDR, GT, LT, PIPE,
    QIN, QOUT, TBUF,
};
use super::logic::needs_mask;
use super::parts::{part_dims, PartSource};
use super::tiling::{plan_cols, plan_rows, AscendSoc, StepPlan};
use super::{AscendError, AscendKernel};
use ir::{DType, Graph, Op, ReduceKind, ValueId};

/// What a value of a row kernel is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `[rows…, C]`.
    Full,
    /// `[rows…]`: one value per row.
    Row,
    /// `[C]`, the same for every row.
    Col,
    /// Varies along some leading axes and the last (`parts.rs`), loaded or computed per row.
    Part,
    Scalar,
}

/// Whether a step's copies are whole 32-byte blocks: known when the kernel is built (a step
/// of that many values), or only at run time (the last core's columns; a flag per element type).
enum Whole {
    Known(usize),
    Runtime(Vec<(Elem, String)>),
}

/// Which axis a row kernel reduces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Along the last axis (or none): rows split over the cores, a whole row per step.
    Rows,
    /// Over the leading axes (column sums: bias gradients): columns split over the cores, each
    /// core stepping through every row of its columns and accumulating in UB.
    Cols,
}

/// Builds row kernel `k` (named `name`) for `soc`.
pub fn build(k: &Graph, name: &str, soc: &AscendSoc) -> Result<AscendKernel, AscendError> {
    match fold_padded_column_sum(k) {
        Some((flat, tail)) => build_with_tail(&flat, name, soc, tail),
        None => build_with_tail(k, name, soc, 0),
    }
}

/// A sum over leading axes `0..p` whose result is padded after its first axis (the position
/// embeddings' gradient: summed over the batch, padded to the table's rows): the same bytes as
/// a column sum over `[Π shape[..p], Π shape[p..]]` followed by zeros. Returns that flat
/// kernel and the zeros' count.
fn fold_padded_column_sum(k: &Graph) -> Option<(Graph, usize)> {
    let [x, sum, pad] = k.nodes.as_slice() else {
        return None;
    };
    let (
        Op::Input { .. },
        Op::Reduce {
            kind: ReduceKind::Sum,
            axes,
        },
        Op::Pad { low, high },
    ) = (&x.op, &sum.op, &pad.op)
    else {
        return None;
    };
    let s = &x.ty.shape;
    let p = axes.len();
    let prefix = axes.iter().copied().eq(0..p) && p < s.len();
    let tail_only = low.iter().all(|l| *l == 0) && high[1..].iter().all(|h| *h == 0);
    if !prefix || !tail_only || k.outputs.len() != 1 || x.ty.dtype != DType::F32 {
        return None;
    }
    let (rows, cols) = (
        s[..p].iter().product::<usize>(),
        s[p..].iter().product::<usize>(),
    );
    let tail = pad.ty.shape.iter().product::<usize>() - cols;
    let mut b = ir::Builder::new(k.name.clone());
    let xin = b.input("in0", ir::TensorType::new(DType::F32, vec![rows, cols]));
    let y = b.sum(xin, &[0]);
    b.output(k.outputs[0].0.clone(), y);
    Some((b.finish(), tail))
}

fn build_with_tail(
    k: &Graph,
    name: &str,
    soc: &AscendSoc,
    tail: usize,
) -> Result<AscendKernel, AscendError> {
    let unsupported = |why: String| AscendError::Unsupported {
        kernel: name.to_string(),
        why,
    };
    let full = k
        .nodes
        .iter()
        .map(|n| &n.ty.shape)
        .max_by_key(|s| (s.len(), s.iter().product::<usize>()))
        .cloned()
        .unwrap_or_default();
    if full.len() < 2 {
        return Err(unsupported("no [rows, C] tensor: not a row kernel".into()));
    }
    let lead = &full[..full.len() - 1];
    let cols = full[full.len() - 1];
    let rows: usize = lead.iter().product();
    let last = full.len() - 1;
    let reduces = |lead_axes: bool| {
        k.nodes.iter().any(|n| match &n.op {
            Op::Reduce { axes, .. } if lead_axes => axes.iter().copied().eq(0..last),
            Op::Reduce { axes, .. } => axes.as_slice() == [last],
            _ => false,
        })
    };
    let mode = match (reduces(false), reduces(true)) {
        (true, true) => {
            return Err(unsupported(
                "reductions over the last and the leading axes in one kernel".into(),
            ))
        }
        (_, true) => Mode::Cols,
        _ => Mode::Rows,
    };
    // With a square [C, C] kernel a [C] value is a row or a column value: its broadcasts say
    // which (a reduction's result is a row value; others follow their first operand).
    let ambiguous = lead == [cols];
    let broadcast_as = |v: usize| -> Option<Kind> {
        k.nodes.iter().find_map(|n| match &n.op {
            Op::Broadcast { dims } if n.inputs[0].index() == v && dims.len() == 1 => {
                Some(if dims[0] == last {
                    Kind::Col
                } else {
                    Kind::Row
                })
            }
            _ => None,
        })
    };
    let after = after_sums(k);
    let mut kinds: Vec<Kind> = Vec::with_capacity(k.len());
    let mut parts: Vec<Option<Vec<usize>>> = vec![None; k.len()];
    for (i, n) in k.nodes.iter().enumerate() {
        let s = n.ty.shape.as_slice();
        let kind = if s == full.as_slice() {
            Some(Kind::Full)
        } else if ambiguous && s == [cols] {
            Some(match &n.op {
                Op::Reduce { axes, .. } if axes.as_slice() == [last] => Kind::Row,
                Op::Reduce { .. } => Kind::Col,
                _ => broadcast_as(i)
                    .or_else(|| n.inputs.first().map(|x| kinds[x.index()]))
                    .unwrap_or(Kind::Row),
            })
        } else if s == lead {
            Some(Kind::Row)
        } else if s == [cols] {
            Some(Kind::Col)
        } else if s.is_empty() {
            Some(Kind::Scalar)
        } else if mode == Mode::Rows {
            parts[i] = part_dims(k, ValueId(i as u32), &full);
            parts[i].as_ref().map(|_| Kind::Part)
        } else {
            None
        };
        if Elem::of(n.ty.dtype).is_none() {
            return Err(unsupported(format!(
                "node %{i} ({}) is {}: Ascend kernels take f32, bool and i32",
                n.op.mnemonic(),
                n.ty.dtype
            )));
        }
        let Some(kind) = kind else {
            return Err(unsupported(format!(
                "node %{i} has shape {:?} in a row kernel over {full:?}",
                n.ty.shape
            )));
        };
        let input_kind = |j: usize| kinds_get(&kinds, n.inputs[j]);
        let ok = match &n.op {
            Op::Input { .. } | Op::Constant { .. } => true,
            // An index along a leading axis is a per-row scalar; along the last, a tile.
            Op::Iota { .. } => mode == Mode::Rows && kind == Kind::Full,
            Op::Reduce { axes, kind: rk } => {
                input_kind(0) == Kind::Full
                    && (mode == Mode::Rows || matches!(rk, ReduceKind::Sum | ReduceKind::Mean))
                    && match mode {
                        Mode::Rows => axes.as_slice() == [last],
                        // A column sum's value is ready after the last row: the ops on it
                        // run then (`after_sums`).
                        Mode::Cols => axes.iter().copied().eq(0..last),
                    }
            }
            Op::Broadcast { dims } => match input_kind(0) {
                Kind::Scalar => true,
                Kind::Row => kind == Kind::Full && dims.iter().copied().eq(0..last),
                Kind::Col => kind == Kind::Full && dims.as_slice() == [last],
                Kind::Part => {
                    let d = parts[n.inputs[0].index()].as_ref().expect("a part's axes");
                    kind == Kind::Full && dims[..dims.len() - 1] == d[..]
                }
                Kind::Full => false,
            },
            // A slice of an input gives a part row at an offset.
            Op::Slice { .. } => {
                kind == Kind::Part && matches!(k.node(n.inputs[0]).op, Op::Input { .. })
            }
            _ => is_vector_op(k, ValueId(i as u32)),
        };
        if kind == Kind::Col && n.ty.dtype != DType::F32 && matches!(n.op, Op::Input { .. }) {
            return Err(unsupported(format!(
                "node %{i}: a {} column input is not built for Ascend yet",
                n.ty.dtype
            )));
        }
        if mode == Mode::Cols && kind != Kind::Col && after[i] {
            return Err(unsupported(format!(
                "node %{i}: only column values are computed from column sums (Ascend)"
            )));
        }
        if mode == Mode::Cols && kind == Kind::Row {
            return Err(unsupported(format!(
                "node %{i}: a per-row value in a column-sum kernel is not built for Ascend yet"
            )));
        }
        if !ok {
            return Err(unsupported(format!(
                "node %{i} ({}): this kernel class is not built for Ascend yet (element-wise \
                 and row kernels are)",
                n.op.mnemonic()
            )));
        }
        kinds.push(kind);
    }
    for (o, v) in &k.outputs {
        let kd = kinds[v.index()];
        let reduced_col =
            kd == Kind::Col && (matches!(k.node(*v).op, Op::Reduce { .. }) || after[v.index()]);
        if !matches!(kd, Kind::Full | Kind::Row) && !reduced_col {
            return Err(unsupported(format!(
                "output {o} is a {kd:?} value (written by every core): not built for Ascend yet"
            )));
        }
        if matches!(k.node(*v).op, Op::Input { .. }) {
            return Err(unsupported(format!("output {o} is an input")));
        }
    }
    let inputs: Vec<ValueId> = (0..k.len())
        .map(|i| ValueId(i as u32))
        .filter(|v| matches!(k.node(*v).op, Op::Input { .. }))
        .collect();
    let full_in = inputs
        .iter()
        .filter(|v| kinds[v.index()] == Kind::Full)
        .count();
    let full_out = k
        .outputs
        .iter()
        .filter(|(_, v)| kinds[v.index()] == Kind::Full)
        .count();
    // Rows of bool, i32 or f16 inputs are widened through a conversion tile.
    let widened = inputs.iter().any(|v| {
        matches!(kinds[v.index()], Kind::Full | Kind::Part) && k.ty(*v).dtype != DType::F32
    });
    let mask = needs_mask(k);
    let conv = widened
        || k.outputs
            .iter()
            .any(|(_, v)| kinds[v.index()] == Kind::Full && k.ty(*v).dtype != DType::F32);
    let layout = Layout {
        mask,
        conv,
        parts,
        lead: lead.to_vec(),
        tail,
    };
    // A dry run counts the scratch rows (dead values' rows are reused); then the plan.
    let queues = full_in + full_out;
    let dry_bytes = (cols * 4).div_ceil(256) * 256;
    let dry_plan = StepPlan {
        block_dim: 1,
        per_block: rows.max(cols),
        step_bytes: dry_bytes,
        buffers: 2,
        // Enough for the dry run's `InitBuffer`s; the dry run counts the real need.
        ub_used: (2 * queues + 2 * k.len()) * dry_bytes,
    };
    let mut dry = Emitter::default();
    dry.rows_kernel(
        k,
        name,
        (mode, &layout),
        &inputs,
        &kinds,
        &dry_plan,
        (rows, cols),
    )?;
    let slots = (queues, dry.scratch_slots);
    let plan = match mode {
        Mode::Rows => plan_rows(soc, rows, cols, 4, slots, mask),
        Mode::Cols => plan_cols(soc, cols, 4, slots, mask),
    }
    .map_err(|why| AscendError::DoesNotFit {
        kernel: name.to_string(),
        soc: soc.name,
        why,
    })?;
    let mut e = Emitter::default();
    let mlir = e.rows_kernel(
        k,
        name,
        (mode, &layout),
        &inputs,
        &kinds,
        &plan,
        (rows, cols),
    )?;
    Ok(AscendKernel {
        name: name.to_string(),
        mlir,
        tiling: e.tiling,
        block_dim: plan.block_dim,
        ub_bytes: plan.ub_used,
        params: inputs.len() + k.outputs.len(),
    })
}

/// The work tiles a row kernel needs besides its values.
struct Layout {
    /// A compare mask.
    mask: bool,
    /// A conversion tile (bool or i32 rows in or out).
    conv: bool,
    /// The full axes of each part value's leading axes.
    parts: Vec<Option<Vec<usize>>>,
    /// The full tensor's leading shape.
    lead: Vec<usize>,
    /// Zeros after a column-sum kernel's one output (a padded result), written by the cores.
    tail: usize,
}

/// The values computed from a reduction's result (in a column-sum kernel: after the last row).
fn after_sums(k: &Graph) -> Vec<bool> {
    let mut after = vec![false; k.len()];
    for (i, n) in k.nodes.iter().enumerate() {
        after[i] = n
            .inputs
            .iter()
            .any(|x| after[x.index()] || matches!(k.node(*x).op, Op::Reduce { .. }));
    }
    after
}

fn kinds_get(kinds: &[Kind], v: ValueId) -> Kind {
    kinds[v.index()]
}

impl Emitter {
    #[allow(clippy::too_many_arguments)]
    fn rows_kernel(
        &mut self,
        k: &Graph,
        name: &str,
        (mode, layout): (Mode, &Layout),
        inputs: &[ValueId],
        kinds: &[Kind],
        plan: &StepPlan,
        (rows, cols): (usize, usize),
    ) -> Result<String, AscendError> {
        self.indent = 1;
        let n_in = inputs.len();
        let params: Vec<String> = (0..n_in + k.outputs.len())
            .map(|i| format!("%p{i}: {GM_ADDR}"))
            .collect();
        let elem = |v: ValueId| Elem::of(k.ty(v).dtype).expect("checked by build");
        let pipe = self.variable(PIPE);
        let scratch = self.variable(TBUF);
        let blk = self.fresh();
        self.line(&format!(
            "{blk} = emitc.call_opaque \"AscendC::GetBlockIdx\"() : () -> i64"
        ));
        let per = self.tiling("perBlock", plan.per_block);
        let c64 = self.constant(&cols.to_string(), "i64");
        let total = self.constant(&rows.to_string(), "i64");
        let full_elems: Vec<Elem> = inputs
            .iter()
            .chain(k.outputs.iter().map(|(_, v)| v))
            .filter(|v| kinds[v.index()] == Kind::Full)
            .map(|v| elem(*v))
            .collect();
        // The rows this core steps through, the columns of each step (`c0` + `n`), and whether
        // a step is whole 32-byte blocks.
        let (first, end, n, c0, whole) = match mode {
            Mode::Rows => {
                let first = self.binop("mul", &blk, &per, "i64");
                let end0 = self.binop("add", &first, &per, "i64");
                let end = self.min_i64(&end0, &total);
                let n = self.constant(&cols.to_string(), "i32");
                (first, end, n, None, Whole::Known(cols))
            }
            Mode::Cols => {
                let c0 = self.binop("mul", &blk, &per, "i64");
                let rem = self.binop("sub", &c64, &c0, "i64");
                let w = self.min_i64(&rem, &per);
                let n = self.fresh();
                self.line(&format!("{n} = emitc.cast {w} : i64 to i32"));
                let mut flags = vec![(Elem::F32, self.whole_blocks(&n, Elem::F32))];
                for &el in &full_elems {
                    if !flags.iter().any(|(e, _)| *e == el) {
                        let f = self.whole_blocks(&n, el);
                        flags.push((el, f));
                    }
                }
                let first = self.constant("0", "i64");
                (first, total.clone(), n, Some(c0), Whole::Runtime(flags))
            }
        };
        let row_bytes = plan.step_bytes;
        // Global views, queues and column inputs.
        let mut gm: Vec<String> = Vec::new();
        let params_of = inputs
            .iter()
            .copied()
            .chain(k.outputs.iter().map(|(_, v)| *v));
        for (i, v) in params_of.enumerate() {
            let el = elem(v);
            let g = self.variable(&el.gt());
            let len = k.ty(v).shape.iter().product::<usize>();
            let p = format!("%p{i}");
            self.verbatim(
                &format!("{{}}.SetGlobalBuffer((__gm__ {}*){{}}, {len});", el.cpp()),
                &[(&g, lv(&el.gt())), (&p, GM_ADDR.into())],
            );
            gm.push(g);
        }
        let queue_bytes = |el: Elem| (row_bytes / 4 * el.bytes()).div_ceil(32) * 32;
        let mut held: Vec<Option<Held>> = vec![None; k.len()];
        let mut in_q: Vec<Option<String>> = vec![None; n_in];
        for (i, &v) in inputs.iter().enumerate() {
            if kinds[v.index()] == Kind::Full {
                let q = self.variable(QIN);
                self.verbatim(
                    &format!(
                        "{{}}.InitBuffer({{}}, {}, {});",
                        plan.buffers,
                        queue_bytes(elem(v))
                    ),
                    &[(&pipe, lv(PIPE)), (&q, lv(QIN))],
                );
                in_q[i] = Some(q);
            }
        }
        let mut out_q: Vec<Option<String>> = Vec::new();
        for (_, v) in &k.outputs {
            out_q.push(if kinds[v.index()] == Kind::Full {
                let q = self.variable(QOUT);
                self.verbatim(
                    &format!(
                        "{{}}.InitBuffer({{}}, {}, {});",
                        plan.buffers,
                        queue_bytes(elem(*v))
                    ),
                    &[(&pipe, lv(PIPE)), (&q, lv(QOUT))],
                );
                Some(q)
            } else {
                None
            });
        }
        let slots = plan.ub_used / row_bytes
            - plan.buffers * (in_q.iter().flatten().count() + out_q.iter().flatten().count());
        self.verbatim(
            &format!("{{}}.InitBuffer({{}}, {});", slots * row_bytes),
            &[(&pipe, lv(PIPE)), (&scratch, lv(TBUF))],
        );
        let mut scratch = Scratch::new(&scratch, row_bytes / 4);
        let last_use = last_uses(k, |_| false);
        let dup = scratch.take(self);
        let red = scratch.take(self);
        let work = scratch.take(self);
        let (conv, step) = self.step_tiles(
            k,
            &mut scratch,
            (&n, dup.clone()),
            (layout.conv, layout.mask),
        );
        // Column inputs and scalar inputs, once per core.
        let mut loaded_cols = false;
        for (i, &v) in inputs.iter().enumerate() {
            match kinds[v.index()] {
                Kind::Col => {
                    let t = scratch.take(self);
                    let g = match &c0 {
                        Some(c0) => self.assigned(
                            GT,
                            "{} = {}[{}];",
                            &[(&gm[i], lv(GT)), (c0, "i64".into())],
                        ),
                        None => self.assigned(GT, "{} = {};", &[(&gm[i], lv(GT))]),
                    };
                    self.copy_seg(Elem::F32, &whole, &t, &g, &n, true);
                    held[v.index()] = Some(Held::Tile(t));
                    loaded_cols = true;
                }
                Kind::Scalar => {
                    let zero = self.constant("0", "i64");
                    let s = self.gm_get(elem(v), &gm[i], &zero);
                    held[v.index()] = Some(Held::Scalar(s));
                }
                _ => {}
            }
        }
        if loaded_cols {
            self.event("MTE2_V");
        }
        // Column sums accumulate in UB over every row of the core's columns.
        let mut accs: Vec<Option<String>> = vec![None; k.len()];
        if mode == Mode::Cols {
            for (i, node) in k.nodes.iter().enumerate() {
                if matches!(node.op, Op::Reduce { .. }) {
                    let acc = scratch.take(self);
                    let z = self.f32_const(0.0);
                    self.vector("Duplicate", &[(&acc, LT), (&z, "f32"), (&n, "i32")]);
                    accs[i] = Some(acc);
                }
            }
        }
        let after = match mode {
            Mode::Cols => after_sums(k),
            Mode::Rows => vec![false; k.len()],
        };
        let r = "%row".to_string();
        let one = self.constant("1", "i64");
        self.line(&format!(
            "emitc.for {r} = {first} to {end} step {one} : i64 {{"
        ));
        self.indent += 1;
        let row_off = self.binop("mul", &r, &c64, "i64");
        let off = match &c0 {
            Some(c0) => self.binop("add", &row_off, c0, "i64"),
            None => row_off,
        };

        self.verbatim("// CopyIn", &[]);
        let mut deq = Vec::new();
        for (i, q) in in_q.iter().enumerate() {
            if let Some(q) = q {
                let el = elem(inputs[i]);
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
                self.copy_seg(el, &whole, &t, &gs, &n, true);
                self.verbatim("{}.EnQue({});", &[(q, lv(QIN)), (&t, el.lt())]);
                deq.push((i, q.clone()));
            }
        }

        self.verbatim("// Compute", &[]);
        let mut to_free = Vec::new();
        for (i, q) in deq {
            let el = elem(inputs[i]);
            let (t, f) = self.dequeue_input(&q, el, &mut scratch, conv.as_deref(), &n);
            held[inputs[i].index()] = Some(Held::Tile(f));
            to_free.push((q, t, el));
        }
        for (i, &v) in inputs.iter().enumerate() {
            if kinds[v.index()] == Kind::Row {
                let s = self.gm_get(elem(v), &gm[i], &r);
                held[v.index()] = Some(Held::Scalar(s));
            }
        }
        self.load_parts(
            k,
            inputs,
            kinds,
            layout,
            &gm,
            &r,
            &mut held,
            &mut scratch,
            conv.as_deref(),
            (&n, cols),
        );
        let mut out_tiles: Vec<Option<String>> = Vec::new();
        for (q, (_, v)) in out_q.iter().zip(&k.outputs) {
            let el = elem(*v);
            out_tiles.push(q.as_ref().map(|q| {
                self.assigned(
                    &el.lt(),
                    &format!("{{}} = {{}}.AllocTensor<{}>();", el.cpp()),
                    &[(q, lv(QOUT))],
                )
            }));
        }
        for i in 0..k.len() {
            let v = ValueId(i as u32);
            // (An input only slices read is not a value of its own; values of column sums
            // are computed after the last row.)
            if held[i].is_some() || matches!(k.nodes[i].op, Op::Input { .. }) || after[i] {
                continue;
            }
            let node = k.node(v);
            let outs = outputs_of(k, v);
            let h = match &node.op {
                Op::Iota { axis } => self.iota_row(*axis, &layout.lead, &r, &mut scratch, &n),
                Op::Reduce { kind, .. } => {
                    let Some(Held::Tile(x)) = held[node.inputs[0].index()].clone() else {
                        unreachable!("reductions read full rows")
                    };
                    match &accs[i] {
                        // A column sum: this row's segment added to the accumulator.
                        Some(acc) => {
                            self.vector("Add", &[(acc, LT), (acc, LT), (&x, LT), (&n, "i32")]);
                            held[i] = Some(Held::Tile(acc.clone()));
                            continue;
                        }
                        None => Held::Scalar(self.reduce_row(*kind, &x, &red, &work, &n, cols)),
                    }
                }
                _ => {
                    let out = outs
                        .first()
                        .filter(|&&o| elem(k.outputs[o].1) == Elem::F32)
                        .and_then(|&o| out_tiles[o].clone());
                    self.step_value(k, v, &held, out, &mut scratch, &step, name)?
                }
            };
            for &o in &outs {
                let el = elem(k.outputs[o].1);
                match (&h, &out_tiles[o]) {
                    (h, Some(dst)) => self.put_output(h, dst, el, conv.as_deref(), &step),
                    (Held::Scalar(s), None) => {
                        let g = gm[n_in + o].clone();
                        self.gm_set(el, &g, &r, s);
                    }
                    (Held::Tile(_), None) => unreachable!("per-row outputs are scalars"),
                }
            }
            held[i] = Some(h);
            // (Column sums' kernels keep every tile: the ops after the last row read them.)
            if mode == Mode::Rows {
                scratch.release_dead(i, &held, &last_use);
            }
        }
        for (q, t, el) in &to_free {
            self.verbatim("{}.FreeTensor({});", &[(q, lv(QIN)), (t, el.lt())]);
        }
        for ((q, t), (_, v)) in out_q.iter().zip(&out_tiles).zip(&k.outputs) {
            if let (Some(q), Some(t)) = (q, t) {
                self.verbatim("{}.EnQue({});", &[(q, lv(QOUT)), (t, elem(*v).lt())]);
            }
        }

        self.verbatim("// CopyOut", &[]);
        for (o, q) in out_q.iter().enumerate() {
            if let Some(q) = q {
                let el = elem(k.outputs[o].1);
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
                self.copy_seg(el, &whole, &t, &gs, &n, false);
                self.verbatim("{}.FreeTensor({});", &[(q, lv(QOUT)), (&t, el.lt())]);
            }
        }
        self.indent -= 1;
        self.line("}");
        let any_after = after.iter().any(|a| *a);
        if let (Some(c0), true) = (&c0, any_after) {
            self.after_column_sums(k, name, &accs, &after, &mut held, &mut scratch, &step)?;
            self.event("V_MTE3");
            for (o, (_, v)) in k.outputs.iter().enumerate() {
                let t = match held[v.index()].clone().expect("computed") {
                    Held::Tile(t) => t,
                    Held::Scalar(s) => {
                        self.vector("Duplicate", &[(&dup, LT), (&s, "f32"), (&n, "i32")]);
                        self.event("V_MTE3");
                        dup.clone()
                    }
                };
                let gs = self.assigned(
                    GT,
                    "{} = {}[{}];",
                    &[(&gm[n_in + o], lv(GT)), (c0, "i64".into())],
                );
                self.copy_seg(Elem::F32, &whole, &t, &gs, &n, false);
            }
        } else if let Some(c0) = &c0 {
            let mut written = false;
            for (o, (_, v)) in k.outputs.iter().enumerate() {
                let Some(acc) = &accs[v.index()] else {
                    continue;
                };
                if !written {
                    // The vector unit's last sums before the copy engine reads them.
                    self.event("V_MTE3");
                    written = true;
                }
                if matches!(
                    k.node(*v).op,
                    Op::Reduce {
                        kind: ReduceKind::Mean,
                        ..
                    }
                ) {
                    let count = self.f32_const(rows as f64);
                    self.vector("Duplicate", &[(&dup, LT), (&count, "f32"), (&n, "i32")]);
                    self.vector("Div", &[(acc, LT), (acc, LT), (&dup, LT), (&n, "i32")]);
                    self.event("V_MTE3");
                }
                let gs = self.assigned(
                    GT,
                    "{} = {}[{}];",
                    &[(&gm[n_in + o], lv(GT)), (c0, "i64".into())],
                );
                self.copy_seg(Elem::F32, &whole, acc, &gs, &n, false);
            }
        }
        if layout.tail > 0 {
            self.zero_tail(&params, cols, layout.tail, (&blk, plan), &dup);
        }
        self.line("emitc.return");
        self.scratch_slots = scratch.slots();
        Ok(self.module(name, &params, ""))
    }

    /// Zeros into elements `[cols, cols + tail)` of the last parameter (the one output), each
    /// core its share, a tile of zeros (`dup`) at a time.
    fn zero_tail(
        &mut self,
        params: &[String],
        cols: usize,
        tail: usize,
        (blk, plan): (&str, &StepPlan),
        dup: &str,
    ) {
        let p = params
            .last()
            .expect("an output")
            .split(':')
            .next()
            .expect("a name")
            .to_string();
        let g = self.variable(GT);
        self.verbatim(
            &format!("{{}}.SetGlobalBuffer((__gm__ float*){{}} + {cols}, {tail});"),
            &[(&g, lv(GT)), (&p, GM_ADDR.into())],
        );
        let share = tail.div_ceil(plan.block_dim).div_ceil(8) * 8;
        let chunk = plan.step_bytes / 4;
        let share_c = self.constant(&share.to_string(), "i64");
        let total = self.constant(&tail.to_string(), "i64");
        let first = self.binop("mul", blk, &share_c, "i64");
        let end0 = self.binop("add", &first, &share_c, "i64");
        let end = self.min_i64(&end0, &total);
        let zero = self.f32_const(0.0);
        let chunk_c = self.constant(&chunk.to_string(), "i32");
        self.vector("Duplicate", &[(dup, LT), (&zero, "f32"), (&chunk_c, "i32")]);
        self.event("V_MTE3");
        let step = self.constant(&chunk.to_string(), "i64");
        let off = self.fresh();
        self.line(&format!(
            "emitc.for {off} = {first} to {end} step {step} : i64 {{"
        ));
        self.indent += 1;
        let left = self.binop("sub", &end, &off, "i64");
        let n64 = self.min_i64(&left, &step);
        let n = self.fresh();
        self.line(&format!("{n} = emitc.cast {n64} : i64 to i32"));
        let whole = self.whole_blocks(&n, Elem::F32);
        let gs = self.assigned(GT, "{} = {}[{}];", &[(&g, lv(GT)), (&off, "i64".into())]);
        self.copy(Elem::F32, &whole, dup, &gs, &n, false);
        self.indent -= 1;
        self.line("}");
    }

    /// Row `r`'s values of an index along `axis`: the lead index (a scalar) or `0, 1, …` along
    /// the row (`CreateVecIndex`).
    fn iota_row(
        &mut self,
        axis: usize,
        lead: &[usize],
        r: &str,
        scratch: &mut Scratch,
        n: &str,
    ) -> Held {
        if axis == lead.len() {
            let t = scratch.take(self);
            let zero = self.f32_const(0.0);
            self.call_with(
                "CreateVecIndex",
                &[(&t, LT), (&zero, "f32"), (n, "i32")],
                &["0", "1", "2"],
            );
            return Held::Tile(t);
        }
        let inner = self.constant(
            &lead[axis + 1..].iter().product::<usize>().to_string(),
            "i64",
        );
        let size = self.constant(&lead[axis].to_string(), "i64");
        let q = self.binop("div", r, &inner, "i64");
        let idx = self.binop("rem", &q, &size, "i64");
        let f = self.fresh();
        self.line(&format!("{f} = emitc.cast {idx} : i64 to f32"));
        Held::Scalar(f)
    }

    /// Means of the column sums, then the values computed from them.
    #[allow(clippy::too_many_arguments)]
    fn after_column_sums(
        &mut self,
        k: &Graph,
        name: &str,
        accs: &[Option<String>],
        after: &[bool],
        held: &mut [Option<Held>],
        scratch: &mut Scratch,
        step: &Step,
    ) -> Result<(), AscendError> {
        let rows_of = |x: ValueId| {
            let s = &k.ty(x).shape;
            s[..s.len() - 1].iter().product::<usize>()
        };
        for (i, node) in k.nodes.iter().enumerate() {
            if let (
                Op::Reduce {
                    kind: ReduceKind::Mean,
                    ..
                },
                Some(acc),
            ) = (&node.op, &accs[i])
            {
                let count = self.f32_const(rows_of(node.inputs[0]) as f64);
                self.vector(
                    "Duplicate",
                    &[(&step.dup, LT), (&count, "f32"), (&step.n, "i32")],
                );
                self.vector(
                    "Div",
                    &[(acc, LT), (acc, LT), (&step.dup, LT), (&step.n, "i32")],
                );
            }
        }
        for i in 0..k.len() {
            if after[i] {
                let h = self.step_value(k, ValueId(i as u32), held, None, scratch, step, name)?;
                held[i] = Some(h);
            }
        }
        Ok(())
    }

    /// This step's rows of the part inputs and of the slices of inputs.
    #[allow(clippy::too_many_arguments)]
    fn load_parts(
        &mut self,
        k: &Graph,
        inputs: &[ValueId],
        kinds: &[Kind],
        layout: &Layout,
        gm: &[String],
        r: &str,
        held: &mut [Option<Held>],
        scratch: &mut Scratch,
        conv: Option<&str>,
        (n, cols): (&str, usize),
    ) {
        let loads: Vec<(ValueId, ValueId)> = (0..k.len())
            .map(|i| ValueId(i as u32))
            .filter(|&v| kinds[v.index()] == Kind::Part)
            .filter_map(|v| match &k.node(v).op {
                Op::Slice { .. } => Some((v, k.node(v).inputs[0])),
                // An input read whole, unless only slices read it.
                Op::Input { .. } => k
                    .nodes
                    .iter()
                    .any(|m| m.inputs.contains(&v) && !matches!(m.op, Op::Slice { .. }))
                    .then_some((v, v)),
                _ => None,
            })
            .collect();
        if loads.is_empty() {
            return;
        }
        // The vector unit is done with the last step's part rows.
        self.event("V_MTE2");
        for (v, src) in loads {
            let p = inputs
                .iter()
                .position(|x| *x == src)
                .expect("a part's source is an input");
            let elem = Elem::of(k.ty(src).dtype).expect("checked by build");
            let starts = match &k.node(v).op {
                Op::Slice { start, .. } => start.clone(),
                _ => vec![0; k.ty(src).shape.len()],
            };
            let dst = scratch.take(self);
            let raw = (elem != Elem::F32).then(|| scratch.take(self));
            let dims = layout.parts[v.index()].as_ref().expect("a part's axes");
            let source = PartSource {
                gm: &gm[p],
                elem,
                shape: &k.ty(src).shape,
                starts: &starts,
                dims,
            };
            self.load_part(
                &source,
                &layout.lead,
                r,
                &dst,
                raw.as_deref(),
                conv,
                n,
                cols,
            );
            held[v.index()] = Some(Held::Tile(dst));
        }
        self.event("MTE2_V");
    }

    /// A step's GM ↔ UB copy of `n` values of `elem`.
    fn copy_seg(&mut self, elem: Elem, whole: &Whole, t: &str, g: &str, n: &str, gm_to_ub: bool) {
        match whole {
            Whole::Known(cols) => self.copy_known(
                elem,
                (cols * elem.bytes()).is_multiple_of(32),
                t,
                g,
                n,
                gm_to_ub,
            ),
            Whole::Runtime(flags) => {
                let w = &flags
                    .iter()
                    .find(|(e, _)| *e == elem)
                    .expect("a flag per element type")
                    .1;
                self.copy(elem, w, t, g, n, gm_to_ub)
            }
        }
    }

    /// A reduction of row tile `x` over its `cols` values into `red[0]`, read on the scalar
    /// unit after a V→S event; a mean divides by `cols` there.
    fn reduce_row(
        &mut self,
        kind: ReduceKind,
        x: &str,
        red: &str,
        work: &str,
        n: &str,
        cols: usize,
    ) -> String {
        let api = match kind {
            ReduceKind::Max => "ReduceMax",
            ReduceKind::Min => "ReduceMin",
            ReduceKind::Sum | ReduceKind::Mean => "ReduceSum",
        };
        self.vector(api, &[(red, LT), (x, LT), (work, LT), (n, "i32")]);
        self.event("V_S");
        let s = self.assigned("f32", "{} = {}.GetValue(0);", &[(red, LT.into())]);
        if kind == ReduceKind::Mean {
            let c = self.f32_const(cols as f64);
            self.binop("div", &s, &c, "f32")
        } else {
            s
        }
    }
}
