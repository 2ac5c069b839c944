//! Splitting a loop kernel into independent parts for threads.
//!
//! Two dims are *linked* when one op maps one to the other (an elementwise op links each
//! operand dim with the same result dim, broadcast and transpose by their maps, a reduction its
//! kept dims). A class of linked dims is a *partition axis* when no op reduces over it, slices
//! or pads it, and every kernel output has it. Then the kernel restricted to a chunk of that axis
//! reads and writes only that chunk of every tensor that has the axis (other inputs are read
//! whole, other temporaries recomputed per part), so the chunks can run on different threads
//! with no synchronization. `iota` and `random_uniform` along the axis use the global index
//! (the part's offset is a kernel argument), so results are identical for any part count.

use ir::{Graph, Op};

/// How a kernel is split: the dims in the axis class, per node, and the chunking.
#[derive(Clone, Debug)]
pub struct Part {
    /// `in_class[node][dim]`: that dim of that node is (a chunk of) the partition axis.
    pub in_class: Vec<Vec<bool>>,
    /// Extent of the axis in the whole kernel.
    pub full: usize,
    /// Extent of one part.
    pub chunk: usize,
    /// Number of parts (`full / chunk`).
    pub parts: usize,
}

struct UnionFind(Vec<usize>);

impl UnionFind {
    fn find(&mut self, mut x: usize) -> usize {
        while self.0[x] != x {
            self.0[x] = self.0[self.0[x]];
            x = self.0[x];
        }
        x
    }
    fn union(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        if a != b {
            self.0[a.max(b)] = a.min(b);
        }
    }
}

/// Elements in the largest iteration space of the kernel (a work estimate).
pub fn work(k: &Graph) -> usize {
    k.nodes
        .iter()
        .map(|n| match n.op {
            Op::Reduce { .. } => k.ty(n.inputs[0]).numel(),
            _ => n.ty.numel(),
        })
        .max()
        .unwrap_or(0)
}

/// Chooses a partition of `k` into at most `max_parts` parts of at least `min_work` elements
/// of work each; `None` when the kernel has no partition axis or is too small to split.
pub fn choose(k: &Graph, max_parts: usize, min_work: usize) -> Option<Part> {
    if max_parts < 2 {
        return None;
    }
    let mut base = Vec::with_capacity(k.len());
    let mut n_ids = 0;
    for n in &k.nodes {
        base.push(n_ids);
        n_ids += n.ty.rank();
    }
    let id = |v: usize, d: usize| base[v] + d;
    let mut uf = UnionFind((0..n_ids).collect());
    let mut bad = Vec::new();
    for (i, n) in k.nodes.iter().enumerate() {
        let ins: Vec<usize> = n.inputs.iter().map(|v| v.index()).collect();
        match &n.op {
            Op::Unary(_) | Op::Binary(_) | Op::Compare(_) | Op::Select | Op::Cast => {
                for &o in &ins {
                    for d in 0..n.ty.rank() {
                        uf.union(id(o, d), id(i, d));
                    }
                }
            }
            Op::Broadcast { dims } => {
                for (j, &d) in dims.iter().enumerate() {
                    uf.union(id(ins[0], j), id(i, d));
                }
            }
            Op::Transpose { perm } => {
                for (j, &p) in perm.iter().enumerate() {
                    uf.union(id(i, j), id(ins[0], p));
                }
            }
            Op::Reduce { axes, .. } => {
                let x = k.ty(n.inputs[0]);
                let mut j = 0;
                for d in 0..x.rank() {
                    if axes.contains(&d) {
                        bad.push(id(ins[0], d));
                    } else {
                        uf.union(id(ins[0], d), id(i, j));
                        j += 1;
                    }
                }
            }
            Op::Slice { start, end } => {
                let x = k.ty(n.inputs[0]);
                for d in 0..x.rank() {
                    if start[d] == 0 && end[d] == x.shape[d] {
                        uf.union(id(ins[0], d), id(i, d));
                    } else {
                        bad.push(id(ins[0], d));
                        bad.push(id(i, d));
                    }
                }
            }
            Op::Pad { low, high } => {
                for d in 0..n.ty.rank() {
                    if low[d] == 0 && high[d] == 0 {
                        uf.union(id(ins[0], d), id(i, d));
                    } else {
                        bad.push(id(ins[0], d));
                        bad.push(id(i, d));
                    }
                }
            }
            // Inputs, constants, iota and random numbers impose nothing; library ops and
            // reshapes are not in loop kernels.
            _ => {}
        }
    }
    let bad_roots: Vec<usize> = bad.iter().map(|&b| uf.find(b)).collect();
    // Classes present in every output, in the order of the first output's dims.
    let (_, first) = k.outputs.first()?;
    let candidates: Vec<(usize, usize)> = (0..k.ty(*first).rank())
        .map(|d| (uf.find(id(first.index(), d)), k.ty(*first).shape[d]))
        .collect();
    let total = work(k);
    for (class, extent) in candidates {
        if bad_roots.contains(&class) || extent < 2 {
            continue;
        }
        // A node with two dims in the class (x + transpose(x)) would read across chunks.
        let twice = k.nodes.iter().enumerate().any(|(i, n)| {
            (0..n.ty.rank())
                .filter(|&d| uf.find(id(i, d)) == class)
                .count()
                > 1
        });
        if twice {
            continue;
        }
        let in_all = k
            .outputs
            .iter()
            .all(|(_, v)| (0..k.ty(*v).rank()).any(|d| uf.find(id(v.index(), d)) == class));
        if !in_all {
            continue;
        }
        let parts = (2..=max_parts.min(extent))
            .rev()
            .find(|&p| extent.is_multiple_of(p) && total / p >= min_work);
        let Some(parts) = parts else { continue };
        let in_class = k
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (0..n.ty.rank())
                    .map(|d| uf.find(id(i, d)) == class)
                    .collect()
            })
            .collect();
        return Some(Part {
            in_class,
            full: extent,
            chunk: extent / parts,
            parts,
        });
    }
    None
}
