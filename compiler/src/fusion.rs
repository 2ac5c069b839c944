//! Fusion: groups the graph's nodes into kernels.
//!
//! Rules (each decision is recorded with its reason, see [`Fusion::explain`]):
//! - `matmul` is a library GEMM kernel; `gather` and `scatter_add` are kernels of their own.
//! - The `all_reduce_mean`s of the graph are collective kernels by bucket: in the order their
//!   gradients are produced, they fill buckets of at least `bucket_bytes` (PyTorch DDP's 25 MB by
//!   default); each bucket is averaged across devices as one flat buffer, and is scheduled as
//!   soon as its gradients exist, so its all-reduce overlaps the rest of the backward where the
//!   runtime can (the host executor with MPI).
//! - `reshape` is a view: no kernel, it aliases its operand's buffer.
//! - `input` nodes are external buffers; `constant` nodes are copied into every loop kernel that
//!   reads them (a splat is free to recompute).
//! - Every other node is a loop op (elementwise, broadcast, transpose, reduce, select, cast, iota,
//!   random, slice, pad). Walking the graph backwards, a loop op joins the loop kernel of its
//!   users when all of its users are in that one kernel; otherwise it starts a new kernel, and its
//!   value becomes a kernel output (materialized in memory). This never duplicates work and keeps
//!   every kernel convex (no path leaves a kernel and re-enters it), so kernels can run in a
//!   topological order. It fuses elementwise chains, reductions with their elementwise producers
//!   and consumers (softmax, LayerNorm forward and backward, the losses, each parameter's whole
//!   clip + Adam update), and the elementwise epilogue of a GEMM (bias, GELU, residual) into the
//!   loop kernel that reads the GEMM's output.

use ir::{Graph, Op, ValueId};
use std::collections::BTreeSet;
use std::fmt::Write as _;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum KernelKind {
    /// A generated loop nest (elementwise ops, broadcasts, reductions …).
    Loop,
    /// A GEMM / batched GEMM handed to a library.
    Gemm,
    /// Row gather (embedding lookup).
    Gather,
    /// Row scatter-add (embedding gradient).
    ScatterAdd,
    /// A bucket of the all-reduces of data parallelism.
    Collective,
}

impl KernelKind {
    /// The kinds every target runs outside its generated loop kernels (libraries, runtime).
    pub const LIBRARY: [KernelKind; 4] = [
        KernelKind::Gemm,
        KernelKind::Gather,
        KernelKind::ScatterAdd,
        KernelKind::Collective,
    ];

    pub fn name(self) -> &'static str {
        match self {
            KernelKind::Loop => "loop",
            KernelKind::Gemm => "gemm",
            KernelKind::Gather => "gather",
            KernelKind::ScatterAdd => "scatter_add",
            KernelKind::Collective => "collective",
        }
    }
}

/// A group of nodes executed as one unit.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    pub kind: KernelKind,
    /// Member nodes in definition order (loop kernels include the constants they read).
    pub nodes: Vec<ValueId>,
    /// Values read from outside (kernel outputs, graph inputs, views), in first-use order.
    pub inputs: Vec<ValueId>,
    /// Member values read outside the kernel or returned by the graph.
    pub outputs: Vec<ValueId>,
}

/// The kernels of a graph, in an executable order, with the reasons for each grouping.
#[derive(Clone, Debug)]
pub struct Fusion {
    pub kernels: Vec<Kernel>,
    /// For each node: the kernel computing it (`None` for inputs, views and constants).
    pub kernel_of: Vec<Option<usize>>,
    /// Why each loop kernel starts where it does.
    pub boundaries: Vec<(ValueId, Boundary)>,
}

/// Why a node starts a new loop kernel instead of joining its users' kernel.
#[derive(Clone, Debug, PartialEq)]
pub enum Boundary {
    /// Nothing reads it; the graph returns it.
    OnlyOutput,
    /// A reshape view reads it, so it must be in memory.
    ReadThroughView,
    /// A GEMM, gather or scatter-add reads it.
    ReadByLibrary,
    /// Its users are in these different kernels (fusing would duplicate work).
    UsersIn(Vec<usize>),
    /// A constant that a library kernel, a view or the graph output needs in memory.
    MaterializedConstant,
}

fn is_view(op: &Op) -> bool {
    matches!(op, Op::Reshape)
}

fn library_kind(op: &Op) -> Option<KernelKind> {
    match op {
        Op::MatMul { .. } => Some(KernelKind::Gemm),
        Op::Gather => Some(KernelKind::Gather),
        Op::ScatterAdd => Some(KernelKind::ScatterAdd),
        _ => None,
    }
}

/// Users of every node.
pub fn users(g: &Graph) -> Vec<Vec<ValueId>> {
    let mut u = vec![Vec::new(); g.len()];
    for (i, n) in g.nodes.iter().enumerate() {
        for &v in &n.inputs {
            if !u[v.index()].contains(&ValueId(i as u32)) {
                u[v.index()].push(ValueId(i as u32));
            }
        }
    }
    u
}

/// Gradient bytes per all-reduce bucket by default (PyTorch DDP's `bucket_cap_mb`, 25 MB).
pub const DEFAULT_BUCKET_BYTES: usize = 25 * 1024 * 1024;

/// Groups `g`'s nodes into kernels, all-reduces in buckets of [`DEFAULT_BUCKET_BYTES`].
pub fn fuse(g: &Graph) -> Fusion {
    fuse_with(g, DEFAULT_BUCKET_BYTES)
}

/// The all-reduce bucket of each `all_reduce_mean` node (by node index): in the order their
/// operands are produced (node order), each bucket closes once it holds `bucket_bytes`.
fn all_reduce_buckets(g: &Graph, bucket_bytes: usize) -> (Vec<Option<usize>>, usize) {
    let mut reduces: Vec<usize> = (0..g.len())
        .filter(|&i| matches!(g.nodes[i].op, Op::AllReduceMean))
        .collect();
    reduces.sort_by_key(|&i| g.nodes[i].inputs[0]);
    let mut bucket_of = vec![None; g.len()];
    let (mut bucket, mut filled) = (0, 0);
    for &i in &reduces {
        if filled >= bucket_bytes.max(1) {
            bucket += 1;
            filled = 0;
        }
        bucket_of[i] = Some(bucket);
        let ty = &g.nodes[i].ty;
        filled += ty.shape.iter().product::<usize>() * ty.dtype.size_bytes();
    }
    let buckets = if reduces.is_empty() { 0 } else { bucket + 1 };
    (bucket_of, buckets)
}

/// [`fuse`] with all-reduce buckets of `bucket_bytes`.
pub fn fuse_with(g: &Graph, bucket_bytes: usize) -> Fusion {
    let n = g.len();
    let users = users(g);
    let is_output: Vec<bool> = {
        let mut o = vec![false; n];
        for (_, v) in &g.outputs {
            o[v.index()] = true;
        }
        o
    };
    let mut group: Vec<Option<usize>> = vec![None; n];
    let mut kinds: Vec<KernelKind> = Vec::new();
    let mut boundaries = Vec::new();
    let (bucket_of, buckets) = all_reduce_buckets(g, bucket_bytes);
    let mut collective: Vec<Option<usize>> = vec![None; buckets];

    for i in (0..n).rev() {
        let op = &g.nodes[i].op;
        if matches!(op, Op::Input { .. } | Op::Constant { .. }) || is_view(op) {
            continue;
        }
        if matches!(op, Op::AllReduceMean) {
            let bucket = bucket_of[i].expect("every all_reduce_mean has a bucket");
            let k = *collective[bucket].get_or_insert_with(|| {
                kinds.push(KernelKind::Collective);
                kinds.len() - 1
            });
            group[i] = Some(k);
            continue;
        }
        if let Some(kind) = library_kind(op) {
            group[i] = Some(kinds.len());
            kinds.push(kind);
            continue;
        }
        if users[i].is_empty() && !is_output[i] {
            continue; // dead
        }
        let user_groups: BTreeSet<Option<usize>> =
            users[i].iter().map(|u| group[u.index()]).collect();
        let single_loop = match (user_groups.len(), user_groups.iter().next()) {
            (1, Some(Some(gid))) if kinds[*gid] == KernelKind::Loop => Some(*gid),
            _ => None,
        };
        match single_loop {
            Some(gid) => group[i] = Some(gid),
            None => {
                group[i] = Some(kinds.len());
                kinds.push(KernelKind::Loop);
                let why = if users[i].is_empty() {
                    Boundary::OnlyOutput
                } else if users[i].iter().any(|u| is_view(&g.nodes[u.index()].op)) {
                    Boundary::ReadThroughView
                } else if users[i]
                    .iter()
                    .any(|u| group[u.index()].is_some_and(|k| kinds[k] != KernelKind::Loop))
                {
                    Boundary::ReadByLibrary
                } else {
                    Boundary::UsersIn(user_groups.iter().flatten().copied().collect())
                };
                boundaries.push((ValueId(i as u32), why));
            }
        }
    }
    // Constants: copied into each loop kernel that reads them; materialized only when a library
    // kernel, a view or the graph output needs them.
    for i in 0..n {
        if !matches!(g.nodes[i].op, Op::Constant { .. }) {
            continue;
        }
        let needs_buffer = is_output[i]
            || users[i]
                .iter()
                .any(|u| group[u.index()].is_none_or(|k| kinds[k] != KernelKind::Loop));
        if needs_buffer {
            group[i] = Some(kinds.len());
            kinds.push(KernelKind::Loop);
            boundaries.push((ValueId(i as u32), Boundary::MaterializedConstant));
        }
    }

    // Members of every group, then the kernels' inputs/outputs.
    let mut members: Vec<Vec<ValueId>> = vec![Vec::new(); kinds.len()];
    for (i, k) in group.iter().enumerate() {
        if let Some(k) = k {
            members[*k].push(ValueId(i as u32));
        }
    }
    for (i, node) in g.nodes.iter().enumerate() {
        if matches!(node.op, Op::Constant { .. }) && group[i].is_none() {
            let mut ks: Vec<usize> = users[i].iter().filter_map(|u| group[u.index()]).collect();
            ks.sort_unstable();
            ks.dedup();
            for k in ks {
                members[k].push(ValueId(i as u32));
                members[k].sort_unstable();
            }
        }
    }
    let raw: Vec<Kernel> = members
        .into_iter()
        .zip(&kinds)
        .map(|(nodes, &kind)| {
            let inside: BTreeSet<ValueId> = nodes.iter().copied().collect();
            let mut inputs = Vec::new();
            let mut outputs = Vec::new();
            for &v in &nodes {
                for &x in &g.node(v).inputs {
                    if !inside.contains(&x) && !inputs.contains(&x) {
                        inputs.push(x);
                    }
                }
                let own = group[v.index()].is_some();
                let used_outside = users[v.index()].iter().any(|u| !inside.contains(u));
                if own && (is_output[v.index()] || used_outside) {
                    outputs.push(v);
                }
            }
            Kernel {
                kind,
                nodes,
                inputs,
                outputs,
            }
        })
        .collect();
    let order = schedule(g, &raw, &group);
    let mut remap = vec![0; raw.len()];
    for (new, &old) in order.iter().enumerate() {
        remap[old] = new;
    }
    let kernels: Vec<Kernel> = order.iter().map(|&k| raw[k].clone()).collect();
    let kernel_of: Vec<Option<usize>> = group.iter().map(|k| k.map(|k| remap[k])).collect();
    let boundaries = boundaries
        .into_iter()
        .map(|(v, b)| match b {
            Boundary::UsersIn(ks) => (v, Boundary::UsersIn(ks.iter().map(|&k| remap[k]).collect())),
            other => (v, other),
        })
        .collect();
    Fusion {
        kernels,
        kernel_of,
        boundaries,
    }
}

/// A topological order of the kernels: a ready collective first (its all-reduce can then
/// overlap what follows), otherwise the kernel with the smallest member index.
fn schedule(g: &Graph, kernels: &[Kernel], group: &[Option<usize>]) -> Vec<usize> {
    // Producer kernel of a value, looking through views.
    let producer = |mut v: ValueId| -> Option<usize> {
        loop {
            let node = g.node(v);
            if is_view(&node.op) {
                v = node.inputs[0];
                continue;
            }
            return group[v.index()];
        }
    };
    let k = kernels.len();
    let mut preds: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); k];
    for (i, kern) in kernels.iter().enumerate() {
        for &x in &kern.inputs {
            if let Some(p) = producer(x) {
                if p != i {
                    preds[i].insert(p);
                }
            }
        }
    }
    let mut succs: Vec<Vec<usize>> = vec![Vec::new(); k];
    let mut indeg = vec![0; k];
    for i in 0..k {
        for &p in &preds[i] {
            succs[p].push(i);
            indeg[i] += 1;
        }
    }
    let first = |i: usize| match kernels[i].kind {
        KernelKind::Collective => 0,
        _ => kernels[i].nodes.first().map_or(0, |v| v.0),
    };
    let mut ready: BTreeSet<(u32, usize)> = (0..k)
        .filter(|&i| indeg[i] == 0)
        .map(|i| (first(i), i))
        .collect();
    let mut order = Vec::with_capacity(k);
    while let Some(&(f, i)) = ready.iter().next() {
        ready.remove(&(f, i));
        order.push(i);
        for &s in &succs[i] {
            indeg[s] -= 1;
            if indeg[s] == 0 {
                ready.insert((first(s), s));
            }
        }
    }
    assert_eq!(
        order.len(),
        k,
        "fusion produced a cycle between kernels (a bug)"
    );
    order
}

impl Fusion {
    /// The `--dump-after fuse` text: every kernel with its ops, inputs and outputs, then the
    /// reasons behind the kernel boundaries.
    pub fn explain(&self, g: &Graph) -> String {
        let mut s = String::new();
        let ids = |vs: &[ValueId]| {
            vs.iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(s, "fusion \"{}\": {} kernels", g.name, self.kernels.len()).unwrap();
        let mut per_kind = std::collections::BTreeMap::new();
        for k in &self.kernels {
            *per_kind.entry(k.kind.name()).or_insert(0) += 1;
        }
        let kinds: Vec<String> = per_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
        writeln!(s, "  by kind: {}", kinds.join(", ")).unwrap();
        for (i, k) in self.kernels.iter().enumerate() {
            let ops: Vec<String> = k
                .nodes
                .iter()
                .filter(|v| {
                    !matches!(g.node(**v).op, Op::Constant { .. })
                        || self.kernel_of[v.index()] == Some(i)
                })
                .map(|v| format!("{v}={}", g.node(*v).op.mnemonic()))
                .collect();
            writeln!(s, "k{i} {} [{}]", k.kind.name(), ops.join(" ")).unwrap();
            writeln!(s, "   in: {}  out: {}", ids(&k.inputs), ids(&k.outputs)).unwrap();
        }
        writeln!(s, "boundaries:").unwrap();
        for (v, b) in &self.boundaries {
            let why = match b {
                Boundary::OnlyOutput => "only a graph output".to_string(),
                Boundary::ReadThroughView => "read through a reshape view".to_string(),
                Boundary::ReadByLibrary => "read by a gemm/gather/scatter_add kernel".to_string(),
                Boundary::UsersIn(ks) => {
                    let ks: Vec<String> = ks.iter().map(|k| format!("k{k}")).collect();
                    format!("users in {} kernels ({})", ks.len(), ks.join(", "))
                }
                Boundary::MaterializedConstant => "constant needed in memory".to_string(),
            };
            let k = self.kernel_of[v.index()].map_or(String::new(), |k| format!("k{k} "));
            writeln!(
                s,
                "  {k}starts at {v} ({}): {why}",
                g.node(*v).op.mnemonic()
            )
            .unwrap();
        }
        s
    }
}
