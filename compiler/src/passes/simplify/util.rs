//! Helpers shared by the simplification passes: rebuilding a graph node by node, and looking at
//! splat constants with the interpreter's conversion semantics.

use ir::{DType, Data, Graph, Node, Op, ValueId};

/// What a rewrite decided for one node.
pub(super) enum Action {
    /// Append the node (operands already renumbered) unchanged.
    Keep,
    /// The node's value is this value of the new graph (an earlier node, or one the rewrite just
    /// appended).
    Use(ValueId),
}

/// Rebuilds `g` in definition order. `f` sees the new graph built so far and each old node with
/// its operands renumbered into the new graph; it may append nodes to the new graph. Returns the
/// new graph (same name, every output kept under its name) and whether any node was rewritten.
pub(super) fn rebuild(g: Graph, mut f: impl FnMut(&mut Graph, &Node) -> Action) -> (Graph, bool) {
    let mut out = Graph::new(g.name);
    out.nodes.reserve(g.nodes.len());
    let mut map: Vec<ValueId> = Vec::with_capacity(g.nodes.len());
    let mut changed = false;
    for mut node in g.nodes {
        for v in &mut node.inputs {
            *v = map[v.index()];
        }
        let id = match f(&mut out, &node) {
            Action::Keep => {
                let id = ValueId(out.nodes.len() as u32);
                out.nodes.push(node);
                id
            }
            Action::Use(v) => {
                changed = true;
                v
            }
        };
        map.push(id);
    }
    out.outputs = g
        .outputs
        .into_iter()
        .map(|(name, v)| (name, map[v.index()]))
        .collect();
    (out, changed)
}

/// The bit pattern of the one element of a one-element tensor, widened to u64 (each dtype's own
/// bits, so NaN payloads and the sign of zero count).
pub(super) fn bits0(d: &Data) -> u64 {
    match d {
        Data::F32(v) => v[0].to_bits() as u64,
        Data::F16(v) => v[0].to_bits() as u64,
        Data::BF16(v) => v[0].to_bits() as u64,
        Data::F64(v) => v[0].to_bits(),
        Data::I32(v) => v[0] as u32 as u64,
        Data::I64(v) => v[0] as u64,
        Data::Bool(v) => v[0] as u64,
    }
}

/// The bits of the element a `constant value : dtype[...]` node holds (the value converted to
/// `dtype` exactly as the interpreter converts it).
pub(super) fn splat_bits(dtype: DType, value: f64) -> u64 {
    bits0(&Data::splat(dtype, value, 1))
}

/// The element a constant node holds, as f64 (exact for every dtype except i64 beyond 2^53).
pub(super) fn effective(dtype: DType, value: f64) -> f64 {
    Data::splat(dtype, value, 1).to_f64()[0]
}

/// The literal of a constant node of `v`, if `v` is a constant.
pub(super) fn constant(g: &Graph, v: ValueId) -> Option<f64> {
    match g.node(v).op {
        Op::Constant { value } => Some(value),
        _ => None,
    }
}

/// The element of constant `v` as f64 (see [`effective`]), if `v` is a constant.
pub(super) fn constant_value(g: &Graph, v: ValueId) -> Option<f64> {
    constant(g, v).map(|c| effective(g.ty(v).dtype, c))
}

/// True when `v` is a constant whose element has exactly the bits `value` has in `v`'s dtype.
pub(super) fn is_constant_bits(g: &Graph, v: ValueId, value: f64) -> bool {
    let dt = g.ty(v).dtype;
    constant(g, v).is_some_and(|c| splat_bits(dt, c) == splat_bits(dt, value))
}

/// A literal `c` such that `constant c : <d's dtype>` holds exactly `d`'s one element: the
/// shortest decimal of the element when that round-trips (readable text), else the exact f64.
/// `None` when no f64 literal gives these bits (i64 beyond 2^53, signalling NaNs).
pub(super) fn literal_of(d: &Data) -> Option<f64> {
    let dt = d.dtype();
    let want = bits0(d);
    let short: Option<f64> = match d {
        Data::F32(v) => v[0].to_string().parse().ok(),
        Data::F16(v) => v[0].to_string().parse().ok(),
        Data::BF16(v) => v[0].to_string().parse().ok(),
        _ => None,
    };
    let exact = match d {
        Data::I64(v) => v[0] as f64,
        _ => d.to_f64()[0],
    };
    [short, Some(exact)].into_iter().flatten().find(|&c| {
        ir::verify::check_node(&Op::Constant { value: c }, &[], &ir::TensorType::scalar(dt)).is_ok()
            && splat_bits(dt, c) == want
    })
}
