//! A kernel that only moves data → one Ascend C kernel of strided copies: a transpose that
//! keeps the last axis (attention's head split and merge) or a slice. Every output row (the
//! last axis) is a contiguous run of the input; the rows along the output's second-to-last
//! axis sit a fixed stride apart in the input, so one `DataCopyPad` GM → UB gathers a group of
//! them (`blockCount` rows, `srcStride` the gap) and one `DataCopyPad` UB → GM writes them
//! contiguously. Groups split over the vector cores; a double-buffered queue overlaps one
//! group's write with the next one's read. A pad along the second-to-last axis is the same
//! with the group's tile zeroed first and the input rows landing `low` rows in (the `[CLS]`
//! row's gradient). Not built: moves of the last axis, other pads.

use super::elem::Elem;
use super::emitc::{lv, Emitter, GM_ADDR, LT, PIPE, QIN, TBUF};
use super::tiling::AscendSoc;
use super::{AscendError, AscendKernel};
use ir::{DType, Graph, Op};

/// Whether `k` is one transpose, slice or pad of its input, with at most a cast between f32
/// and f16 before or after it (mixed precision's head split and merge).
pub fn is_move(k: &Graph) -> bool {
    k.outputs.len() == 1 && move_node(k).is_some()
}

/// The index of `k`'s move.
fn move_node(k: &Graph) -> Option<usize> {
    let float = |d: DType| matches!(d, DType::F32 | DType::F16);
    let cast = |i: usize| k.nodes[i].op == Op::Cast && float(k.nodes[i].ty.dtype);
    let is_move = |i: usize| match &k.nodes[i].op {
        Op::Transpose { .. } | Op::Slice { .. } => true,
        Op::Pad { low, high } => pad_rows(low, high).is_some(),
        _ => false,
    };
    let input = matches!(k.nodes.first()?.op, Op::Input { .. }) && float(k.nodes[0].ty.dtype);
    match k.len() {
        2 if input && is_move(1) => Some(1),
        3 if input && is_move(1) && cast(2) => Some(1),
        3 if input && cast(1) && is_move(2) => Some(2),
        _ => None,
    }
}

/// A pad of only the second-to-last axis: its low and high.
fn pad_rows(low: &[usize], high: &[usize]) -> Option<(usize, usize)> {
    let r = low.len();
    let mut others = (0..r).filter(|&a| a + 2 != r);
    (r >= 2 && others.all(|a| low[a] == 0 && high[a] == 0)).then(|| (low[r - 2], high[r - 2]))
}

/// For each output axis: its stride in the input and the input offset of its index 0, in
/// elements; `None` when the move is not rows of the input.
fn view(k: &Graph) -> Option<Vec<(usize, usize)>> {
    let node = &k.nodes[move_node(k)?];
    let in_shape = &k.ty(node.inputs[0]).shape;
    let rank = in_shape.len();
    let mut strides = vec![1usize; rank];
    for a in (0..rank.saturating_sub(1)).rev() {
        strides[a] = strides[a + 1] * in_shape[a + 1];
    }
    let axes: Vec<(usize, usize)> = match &node.op {
        Op::Transpose { perm } => perm.iter().map(|&a| (strides[a], 0)).collect(),
        Op::Slice { start, .. } => (0..rank)
            .map(|a| (strides[a], start[a] * strides[a]))
            .collect(),
        Op::Pad { .. } => (0..rank).map(|a| (strides[a], 0)).collect(),
        _ => return None,
    };
    (rank >= 2 && axes[rank - 1].0 == 1).then_some(axes)
}

/// Builds move kernel `k` (named `name`) for `soc`.
pub fn build(k: &Graph, name: &str, soc: &AscendSoc) -> Result<AscendKernel, AscendError> {
    let unsupported = |why: &str| AscendError::Unsupported {
        kernel: name.to_string(),
        why: why.to_string(),
    };
    let node = &k.nodes[move_node(k).expect("checked by is_move")];
    let elem = |d: DType| {
        if d == DType::F16 {
            Elem::F16
        } else {
            Elem::F32
        }
    };
    let (in_el, out_el) = (elem(k.nodes[0].ty.dtype), elem(k.ty(k.outputs[0].1).dtype));
    let Some(axes) = view(k) else {
        return Err(unsupported(
            "a move of the last axis: not built for Ascend yet (rows of the input are)",
        ));
    };
    let out = &node.ty.shape;
    let rank = out.len();
    let (rows, cols) = (out[rank - 2], out[rank - 1]);
    let groups: usize = out[..rank - 2].iter().product();
    let row_bytes = (cols * in_el.bytes()).div_ceil(32) * 32;
    // A cast writes its rows into a second buffer.
    let out_row_bytes = match in_el == out_el {
        true => 0,
        false => (cols * out_el.bytes()).div_ceil(32) * 32,
    };
    let budget = soc.ub_bytes - super::tiling::UB_HEADROOM;
    // Rows per step: the whole group double-buffered, else the largest part of it (dividing
    // it) that is; else the group in one buffer.
    let fits = |r: usize, b: usize| r * (b * row_bytes + out_row_bytes) <= budget;
    let part = (1..=rows).rev().find(|&d| rows % d == 0 && fits(d, 2));
    let (chunk, buffers) = match part {
        Some(d) => (d, 2),
        None => (rows, 1),
    };
    let group_bytes = chunk * row_bytes;
    if !fits(chunk, buffers) {
        return Err(AscendError::DoesNotFit {
            kernel: name.to_string(),
            soc: soc.name,
            why: format!(
                "a group of {rows} rows of {cols} values needs {group_bytes} bytes, more than \
                 the {budget} bytes of UB available"
            ),
        });
    }
    if rows > 4095 {
        return Err(unsupported(
            "more than 4095 rows in a group (DataCopyPad's blockCount)",
        ));
    }
    let steps = groups * (rows / chunk);
    let per_block = steps.div_ceil(soc.vector_cores.min(steps).max(1));
    let block_dim = steps.div_ceil(per_block).max(1);
    let mut e = Emitter::default();
    let in_len: usize = k.ty(node.inputs[0]).shape.iter().product();
    // A pad reads fewer rows, `low` rows into the (zeroed) group.
    let read = match &node.op {
        Op::Pad { low, high } => {
            let (l, h) = pad_rows(low, high).expect("checked by is_move");
            (l, rows - l - h)
        }
        _ => (0, rows),
    };
    let mlir = e.move_kernel(
        name,
        &axes,
        out,
        (per_block, steps, chunk),
        (in_len, group_bytes, buffers),
        (read, (in_el, out_el, chunk * out_row_bytes)),
    );
    Ok(AscendKernel {
        name: name.to_string(),
        mlir,
        tiling: e.tiling,
        block_dim,
        ub_bytes: buffers * group_bytes + chunk * out_row_bytes,
        params: 2,
    })
}

impl Emitter {
    fn move_kernel(
        &mut self,
        name: &str,
        axes: &[(usize, usize)],
        out: &[usize],
        (per_block, groups, chunk): (usize, usize, usize),
        (in_len, group_bytes, buffers): (usize, usize, usize),
        ((low, read), (in_el, out_el, cast_bytes)): ((usize, usize), (Elem, Elem, usize)),
    ) -> String {
        self.indent = 1;
        // The queue's tiles are float (zeroed as such); copies see them as `in_el`.
        let (igt, ogt) = (in_el.gt(), out_el.gt());
        let pad_value = |el: Elem| if el == Elem::F32 { "0.0f" } else { "0" };
        let rank = out.len();
        let (rows, cols) = (chunk, out[rank - 1]);
        let out_len: usize = out.iter().product();
        let pipe = self.variable(PIPE);
        let (gi, go) = (self.variable(&igt), self.variable(&ogt));
        let q = self.variable(QIN);
        for (g, p, len, el) in [(&gi, "%p0", in_len, in_el), (&go, "%p1", out_len, out_el)] {
            self.verbatim(
                &format!("{{}}.SetGlobalBuffer((__gm__ {}*){{}}, {len});", el.cpp()),
                &[(g, lv(&el.gt())), (p, GM_ADDR.into())],
            );
        }
        let converted = (in_el != out_el).then(|| {
            let b = self.variable(TBUF);
            self.verbatim(
                &format!("{{}}.InitBuffer({{}}, {cast_bytes});"),
                &[(&pipe, lv(PIPE)), (&b, lv(TBUF))],
            );
            b
        });
        self.verbatim(
            &format!("{{}}.InitBuffer({{}}, {buffers}, {group_bytes});"),
            &[(&pipe, lv(PIPE)), (&q, lv(QIN))],
        );
        let blk = self.fresh();
        self.line(&format!(
            "{blk} = emitc.call_opaque \"AscendC::GetBlockIdx\"() : () -> i64"
        ));
        let per = self.tiling("perBlock", per_block);
        let total = self.constant(&groups.to_string(), "i64");
        let first = self.binop("mul", &blk, &per, "i64");
        let end0 = self.binop("add", &first, &per, "i64");
        let end = self.min_i64(&end0, &total);
        let one = self.constant("1", "i64");
        let g = "%grp".to_string();
        self.line(&format!(
            "emitc.for {g} = {first} to {end} step {one} : i64 {{"
        ));
        self.indent += 1;
        // The step's input offset: its group's output indices (row-major over the leading
        // axes) times their input strides, plus the slice's start, plus its part of the group.
        let base: usize = axes.iter().map(|a| a.1).sum();
        let mut src = self.constant(&base.to_string(), "i64");
        let parts = self.constant(&(out[rank - 2] / chunk).to_string(), "i64");
        let mut rest = self.binop("div", &g, &parts, "i64");
        let c = self.binop("rem", &g, &parts, "i64");
        let pad = read < out[rank - 2];
        if !pad {
            let part_stride = self.constant(&(chunk * axes[rank - 2].0).to_string(), "i64");
            let part = self.binop("mul", &c, &part_stride, "i64");
            src = self.binop("add", &src, &part, "i64");
        }
        for j in (0..rank - 2).rev() {
            let size = self.constant(&out[j].to_string(), "i64");
            let idx = self.binop("rem", &rest, &size, "i64");
            rest = self.binop("div", &rest, &size, "i64");
            let stride = self.constant(&axes[j].0.to_string(), "i64");
            let part = self.binop("mul", &idx, &stride, "i64");
            src = self.binop("add", &src, &part, "i64");
        }
        let step = self.constant(&(rows * cols).to_string(), "i64");
        let dst = self.binop("mul", &g, &step, "i64");
        let t = self.assigned(LT, "{} = {}.AllocTensor<float>();", &[(&q, lv(QIN))]);
        let gap = (axes[rank - 2].0 - cols) * in_el.bytes();
        let ext = |n: &str| {
            format!(
                "AscendC::DataCopyPad({{}}, {{}}, AscendC::DataCopyExtParams{{{{uint16_t({n}), {}, {gap}, 0, 0}}, AscendC::DataCopyPadExtParams<{}>{{{{false, 0, 0, {}}});",
                cols * in_el.bytes(),
                in_el.cpp(),
                pad_value(in_el)
            )
        };
        if pad {
            // A pad: zeros, then the input rows that fall in this part of the group, rows
            // [max(low, c·chunk), min(low + read, (c + 1)·chunk)).
            let zero = self.f32_const(0.0);
            let all = self.constant(&(group_bytes / 4).to_string(), "i32");
            self.vector("Duplicate", &[(&t, LT), (&zero, "f32"), (&all, "i32")]);
            self.event("V_MTE2");
            let chunk_c = self.tiling("chunk", chunk);
            let from = self.binop("mul", &c, &chunk_c, "i64");
            let to = self.binop("add", &from, &chunk_c, "i64");
            let low_c = self.constant(&low.to_string(), "i64");
            let high_c = self.constant(&(low + read).to_string(), "i64");
            let lo = self.max_i64(&low_c, &from);
            let hi = self.min_i64(&high_c, &to);
            let count = self.binop("sub", &hi, &lo, "i64");
            let none = self.constant("0", "i64");
            let some = self.fresh();
            self.line(&format!(
                "{some} = emitc.cmp gt, {count}, {none} : (i64, i64) -> i1"
            ));
            self.line(&format!("emitc.if {some} {{"));
            self.indent += 1;
            let row_elems = self.constant(&(group_bytes / chunk / 4).to_string(), "i64");
            let in_part = self.binop("sub", &lo, &from, "i64");
            let at64 = self.binop("mul", &in_part, &row_elems, "i64");
            let at = self.fresh();
            self.line(&format!("{at} = emitc.cast {at64} : i64 to i32"));
            let into = self.assigned(LT, "{} = {}[{}];", &[(&t, LT.into()), (&at, "i32".into())]);
            let into = self.view_as(&into, in_el);
            let cols_c = self.constant(&cols.to_string(), "i64");
            let skip = self.binop("sub", &lo, &low_c, "i64");
            let skip = self.binop("mul", &skip, &cols_c, "i64");
            let src = self.binop("add", &src, &skip, "i64");
            let gs = self.assigned(
                &igt,
                "{} = {}[{}];",
                &[(&gi, lv(&igt)), (&src, "i64".into())],
            );
            self.verbatim(
                &ext("{}"),
                &[
                    (&into, in_el.lt()),
                    (&gs, igt.clone()),
                    (&count, "i64".into()),
                ],
            );
            self.indent -= 1;
            self.line("}");
        } else {
            let gs = self.assigned(
                &igt,
                "{} = {}[{}];",
                &[(&gi, lv(&igt)), (&src, "i64".into())],
            );
            let tv = self.view_as(&t, in_el);
            self.verbatim(
                &ext(&rows.to_string()),
                &[(&tv, in_el.lt()), (&gs, igt.clone())],
            );
        }
        self.verbatim("{}.EnQue({});", &[(&q, lv(QIN)), (&t, LT.into())]);
        let t = self.assigned(LT, "{} = {}.DeQue<float>();", &[(&q, lv(QIN))]);
        // The copy engine out waits for the copy engine in.
        self.event("MTE2_MTE3");
        let gd = self.assigned(
            &ogt,
            "{} = {}[{}];",
            &[(&go, lv(&ogt)), (&dst, "i64".into())],
        );
        let written = match &converted {
            None => self.view_as(&t, out_el),
            Some(b) => {
                // Row by row (rows start on 32-byte boundaries in both buffers).
                let bt = self.assigned(LT, "{} = {}.Get<float>();", &[(b, lv(TBUF))]);
                self.cast_rows(&t, &bt, (in_el, out_el), (rows, cols), group_bytes / rows);
                self.event("V_MTE3");
                self.view_as(&bt, out_el)
            }
        };
        self.verbatim(
            &format!(
                "AscendC::DataCopyPad({{}}, {{}}, AscendC::DataCopyExtParams{{{{{rows}, {}, 0, 0, 0}});",
                cols * out_el.bytes()
            ),
            &[(&gd, ogt.clone()), (&written, out_el.lt())],
        );
        // The buffer is reused only after the write out finished.
        self.event("MTE3_MTE2");
        self.verbatim("{}.FreeTensor({});", &[(&q, lv(QIN)), (&t, LT.into())]);
        self.indent -= 1;
        self.line("}");
        self.line("emitc.return");
        let params = [format!("%p0: {GM_ADDR}"), format!("%p1: {GM_ADDR}")];
        self.module(name, &params, "")
    }
}

impl Emitter {
    /// Float tile `t` seen as `el` values (itself for f32).
    fn view_as(&mut self, t: &str, el: Elem) -> String {
        if el == Elem::F32 {
            return t.to_string();
        }
        self.assigned(
            &el.lt(),
            &format!("{{}} = {{}}.ReinterpretCast<{}>();", el.cpp()),
            &[(t, LT.into())],
        )
    }

    /// Casts `rows` rows of `cols` values from tile `a` (rows `in_row` bytes apart, of `from`)
    /// to tile `b` (rows 32-byte aligned, of `to`): f16 → f32 exactly, f32 → f16 to nearest.
    fn cast_rows(
        &mut self,
        a: &str,
        b: &str,
        (from, to): (Elem, Elem),
        (rows, cols): (usize, usize),
        in_row: usize,
    ) {
        let out_row = (cols * to.bytes()).div_ceil(32) * 32;
        let mode = if to == Elem::F16 {
            "CAST_RINT"
        } else {
            "CAST_NONE"
        };
        let (c0, one) = (self.constant("0", "i64"), self.constant("1", "i64"));
        let end = self.constant(&rows.to_string(), "i64");
        let r = self.fresh();
        self.line(&format!(
            "emitc.for {r} = {c0} to {end} step {one} : i64 {{"
        ));
        self.indent += 1;
        let at = |e: &mut Emitter, t: &str, bytes: usize, el: Elem| {
            let step = e.constant(&(bytes / 4).to_string(), "i64");
            let off64 = e.binop("mul", &r, &step, "i64");
            let off = e.fresh();
            e.line(&format!("{off} = emitc.cast {off64} : i64 to i32"));
            let v = e.assigned(LT, "{} = {}[{}];", &[(t, LT.into()), (&off, "i32".into())]);
            e.view_as(&v, el)
        };
        let src = at(self, a, in_row, from);
        let dst = at(self, b, out_row, to);
        let n = self.constant(&cols.to_string(), "i32");
        self.call_with(
            "Cast",
            &[(&dst, &to.lt()), (&src, &from.lt()), (&n, "i32")],
            &["0", "1", &format!("AscendC::RoundMode::{mode}"), "2"],
        );
        self.indent -= 1;
        self.line("}");
    }
}
