//! Memory planning: every value that lives between kernels gets a place. Graph inputs and
//! outputs are external buffers owned by the runtime; every other materialized value gets an
//! offset in one static arena. Offsets come from liveness over the kernel order (greedy,
//! largest buffer first, lowest free offset), so buffers whose lifetimes do not overlap share
//! memory; an elementwise kernel writes its output over an input that dies there when the
//! sizes match (in place).

use crate::fusion::{Fusion, KernelKind};
use ir::{Graph, Op, ValueId};
use std::collections::BTreeMap;

/// Alignment of every arena buffer in bytes (a cache line; enough for AVX-512 and GPU loads).
pub const ALIGN: usize = 64;

/// Where a value lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Location {
    /// The graph input with this index (in `Graph::inputs()` order).
    Input(usize),
    /// The graph output with this index (in `Graph::outputs` order).
    Output(usize),
    /// Bytes at this offset of the arena.
    Arena { offset: usize },
}

/// The places of all materialized values.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryPlan {
    /// For every node: where its value lives (`None` for values that only exist inside a kernel).
    pub location: Vec<Option<Location>>,
    /// Size of the arena in bytes (the peak of intermediate memory).
    pub arena_bytes: usize,
    /// Sum of the arena buffers' sizes, i.e. the arena size without any reuse.
    pub unshared_bytes: usize,
    /// Kernel outputs written over a dying input: (kernel, output, input).
    pub in_place: Vec<(usize, ValueId, ValueId)>,
}

fn bytes_of(g: &Graph, v: ValueId) -> usize {
    let t = g.ty(v);
    t.numel() * t.dtype.size_bytes()
}

fn align_to(x: usize, alignment: usize) -> usize {
    x.div_ceil(alignment) * alignment
}

/// The value whose storage `v` uses (through reshape views).
pub fn storage_root(g: &Graph, mut v: ValueId) -> ValueId {
    while matches!(g.node(v).op, Op::Reshape) {
        v = g.node(v).inputs[0];
    }
    v
}

/// True when output `out` of the kernel may overwrite input `inp`: every node reading `inp` in
/// the kernel is elementwise with `inp`'s shape, and the kernel has no reductions, transposes,
/// broadcasts of `inp`, slices or pads — so element i of the output only needs element i of the
/// input, read before it is written.
fn in_place_safe(g: &Graph, nodes: &[ValueId], inp: ValueId, out: ValueId) -> bool {
    if g.ty(inp).shape != g.ty(out).shape || bytes_of(g, inp) != bytes_of(g, out) {
        return false;
    }
    let shape = &g.ty(out).shape;
    nodes.iter().all(|&v| {
        let n = g.node(v);
        let elementwise_same_shape = n.op.is_elementwise() && n.ty.shape == *shape;
        let harmless = matches!(
            n.op,
            Op::Constant { .. } | Op::Broadcast { .. } | Op::Iota { .. } | Op::RandomUniform { .. }
        ) && !n.inputs.contains(&inp);
        elementwise_same_shape || harmless
    })
}

/// Plans memory for `g` executed as `fusion`'s kernels in order, buffers aligned to [`ALIGN`].
pub fn plan(g: &Graph, fusion: &Fusion) -> MemoryPlan {
    plan_aligned(g, fusion, ALIGN)
}

/// [`plan`] with every arena buffer aligned to `alignment` bytes (a power of two: what the
/// target's loads need).
pub fn plan_aligned(g: &Graph, fusion: &Fusion, alignment: usize) -> MemoryPlan {
    assert!(alignment.is_power_of_two(), "alignment {alignment}");
    let n = g.len();
    let mut location: Vec<Option<Location>> = vec![None; n];
    for (i, (_, v)) in g.inputs().enumerate() {
        location[v.index()] = Some(Location::Input(i));
    }
    for (i, (_, v)) in g.outputs.iter().enumerate() {
        let root = storage_root(g, *v);
        if location[root.index()].is_none() {
            location[root.index()] = Some(Location::Output(i));
        }
    }
    // Arena candidates: kernel outputs without an external home.
    let mut def = BTreeMap::new();
    for (k, kern) in fusion.kernels.iter().enumerate() {
        for &o in &kern.outputs {
            if location[o.index()].is_none() {
                def.insert(o, k);
            }
        }
    }
    let mut last_use: BTreeMap<ValueId, usize> = def.iter().map(|(&v, &k)| (v, k)).collect();
    for (k, kern) in fusion.kernels.iter().enumerate() {
        for &x in &kern.inputs {
            let root = storage_root(g, x);
            if let Some(l) = last_use.get_mut(&root) {
                *l = (*l).max(k);
            }
        }
    }
    // In place: an output takes over an input that dies in the same elementwise kernel.
    let mut alias_of: BTreeMap<ValueId, ValueId> = BTreeMap::new();
    let mut in_place = Vec::new();
    let mut taken = std::collections::BTreeSet::new();
    for (k, kern) in fusion.kernels.iter().enumerate() {
        if kern.kind != KernelKind::Loop {
            continue;
        }
        for &o in &kern.outputs {
            if !def.contains_key(&o) {
                continue;
            }
            let donor = kern.inputs.iter().copied().find(|&x| {
                let r = storage_root(g, x);
                x == r
                    && def.contains_key(&r)
                    && last_use[&r] == k
                    && !taken.contains(&r)
                    && in_place_safe(g, &kern.nodes, r, o)
            });
            if let Some(d) = donor {
                taken.insert(d);
                alias_of.insert(o, d);
                in_place.push((k, o, d));
            }
        }
    }
    // Buffers: a root value plus everything aliased onto it; lifetime is the union.
    let resolve = |mut v: ValueId| {
        while let Some(&d) = alias_of.get(&v) {
            v = d;
        }
        v
    };
    let mut buffers: BTreeMap<ValueId, (usize, usize, usize)> = BTreeMap::new(); // root -> (start, end, bytes)
    for (&v, &k) in &def {
        let r = resolve(v);
        let e = buffers
            .entry(r)
            .or_insert((k, last_use[&v], bytes_of(g, r)));
        e.0 = e.0.min(k);
        e.1 = e.1.max(last_use[&v]);
    }
    let unshared_bytes = def
        .keys()
        .filter(|v| !alias_of.contains_key(v))
        .map(|&v| align_to(bytes_of(g, v), alignment))
        .sum();
    // Greedy placement: largest first, lowest offset not overlapping a live placed buffer.
    let mut order: Vec<(ValueId, (usize, usize, usize))> = buffers.into_iter().collect();
    order.sort_by(|a, b| b.1 .2.cmp(&a.1 .2).then(a.0.cmp(&b.0)));
    let mut placed: Vec<(usize, usize, usize, usize)> = Vec::new(); // (start, end, offset, size)
    let mut offsets = BTreeMap::new();
    let mut arena_bytes = 0;
    for (root, (s, e, bytes)) in order {
        let size = align_to(bytes.max(1), alignment);
        let mut live: Vec<(usize, usize)> = placed
            .iter()
            .filter(|p| p.0 <= e && s <= p.1)
            .map(|p| (p.2, p.2 + p.3))
            .collect();
        live.sort_unstable();
        let mut off = 0;
        for (a, b) in live {
            if off + size <= a {
                break;
            }
            off = off.max(b);
        }
        placed.push((s, e, off, size));
        offsets.insert(root, off);
        arena_bytes = arena_bytes.max(off + size);
    }
    for &v in def.keys() {
        location[v.index()] = Some(Location::Arena {
            offset: offsets[&resolve(v)],
        });
    }
    // Views live where their root lives.
    for i in 0..n {
        if matches!(g.nodes[i].op, Op::Reshape) && location[i].is_none() {
            location[i] = location[storage_root(g, ValueId(i as u32)).index()];
        }
    }
    MemoryPlan {
        location,
        arena_bytes,
        unshared_bytes,
        in_place,
    }
}

impl MemoryPlan {
    /// The `--dump-after plan` text.
    pub fn explain(&self, g: &Graph) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        writeln!(
            s,
            "memory plan \"{}\": arena {} bytes ({:.2} MiB; {:.2} MiB without reuse), {} in-place outputs",
            g.name,
            self.arena_bytes,
            self.arena_bytes as f64 / 1048576.0,
            self.unshared_bytes as f64 / 1048576.0,
            self.in_place.len()
        )
        .unwrap();
        for (i, loc) in self.location.iter().enumerate() {
            if let Some(Location::Arena { offset }) = loc {
                if !matches!(g.nodes[i].op, Op::Reshape) {
                    writeln!(s, "  %{i} {} @ {offset}", g.nodes[i].ty).unwrap();
                }
            }
        }
        for (k, o, d) in &self.in_place {
            writeln!(s, "  in place: k{k} writes {o} over {d}").unwrap();
        }
        s
    }
}
