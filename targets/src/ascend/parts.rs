//! Part values of a row kernel: tensors that vary along some of the full tensor's leading axes
//! and along the last one, broadcast over the others — the attention mask `[B, S]` added to
//! scores `[B, H, S, S]`, position embeddings `[S, C]` (a slice of the table) added to
//! `[B, S, C]`, the `[CLS]` row `[B, 1, C]`. Each step (one row of the full tensor) loads the
//! part's row at the offset its leading indices give (`DataCopy` GM → UB, a slice's start
//! added) and computes on it like any other row tile.

use super::elem::Elem;
use super::emitc::{lv, Emitter, LT};
use ir::{Graph, Op, ValueId};

/// The full axes the leading axes of value `v` follow, when it reaches the full tensor by a
/// broadcast ending in the last axis — directly, through element-wise ops, or through a slice
/// (of an input).
pub(super) fn part_dims(k: &Graph, v: ValueId, full: &[usize]) -> Option<Vec<usize>> {
    let last = full.len() - 1;
    let shape = &k.ty(v).shape;
    if shape.last() != full.last() || shape.len() < 2 {
        return None;
    }
    for (j, m) in k.nodes.iter().enumerate().skip(v.index() + 1) {
        if !m.inputs.contains(&v) {
            continue;
        }
        match &m.op {
            Op::Broadcast { dims } if dims.last() == Some(&last) && dims.len() == shape.len() => {
                return Some(dims[..dims.len() - 1].to_vec());
            }
            Op::Slice { end, start }
                if end.last().zip(start.last()).map(|(e, s)| e - s) == full.last().copied() =>
            {
                if let Some(d) = part_dims(k, ValueId(j as u32), full) {
                    return Some(d);
                }
            }
            Op::Broadcast { .. } | Op::Slice { .. } | Op::Reduce { .. } => {}
            _ if m.ty.shape == *shape => {
                if let Some(d) = part_dims(k, ValueId(j as u32), full) {
                    return Some(d);
                }
            }
            _ => {}
        }
    }
    None
}

/// Where a part row comes from in GM.
pub(super) struct PartSource<'a> {
    /// The GM view (an lvalue of `GlobalTensor<elem>`).
    pub(super) gm: &'a str,
    pub(super) elem: Elem,
    /// The GM tensor's shape.
    pub(super) shape: &'a [usize],
    /// A slice's start in each axis (zeros for an input read whole).
    pub(super) starts: &'a [usize],
    /// The full axes of the part's leading axes.
    pub(super) dims: &'a [usize],
}

impl Emitter {
    /// Loads the part row of full row `r` (i64) into f32 tile `dst` (`raw`: a scratch tile
    /// for rows of bool or i32, `conv` their conversion tile; `n` the row length, i32).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn load_part(
        &mut self,
        src: &PartSource,
        lead: &[usize],
        r: &str,
        dst: &str,
        raw: Option<&str>,
        conv: Option<&str>,
        n: &str,
        cols: usize,
    ) {
        let rank = src.shape.len();
        let mut strides = vec![1usize; rank];
        for a in (0..rank - 1).rev() {
            strides[a] = strides[a + 1] * src.shape[a + 1];
        }
        let base: usize = src.starts.iter().zip(&strides).map(|(s, t)| s * t).sum();
        let mut off = self.constant(&base.to_string(), "i64");
        for (a, &d) in src.dims.iter().enumerate() {
            // Lead index `d` of row r: (r / Π lead[d+1..]) % lead[d].
            let inner: usize = lead[d + 1..].iter().product();
            let inner = self.constant(&inner.to_string(), "i64");
            let size = self.constant(&lead[d].to_string(), "i64");
            let q = self.binop("div", r, &inner, "i64");
            let idx = self.binop("rem", &q, &size, "i64");
            let stride = self.constant(&strides[a].to_string(), "i64");
            let part = self.binop("mul", &idx, &stride, "i64");
            off = self.binop("add", &off, &part, "i64");
        }
        let el = src.elem;
        let g = self.assigned(
            &el.gt(),
            "{} = {}[{}];",
            &[(src.gm, lv(&el.gt())), (&off, "i64".into())],
        );
        let whole = (cols * el.bytes()).is_multiple_of(32);
        if el == Elem::F32 {
            self.copy_known(el, whole, dst, &g, n, true);
            return;
        }
        let raw = raw.expect("a raw tile for a part of bool or i32");
        let t = self.assigned(
            &el.lt(),
            &format!("{{}} = {{}}.ReinterpretCast<{}>();", el.cpp()),
            &[(raw, LT.into())],
        );
        self.copy_known(el, whole, &t, &g, n, true);
        self.event("MTE2_V");
        self.widen(el, &t, dst, conv.expect("a conversion tile"), n);
    }
}
