//! Dead code elimination.

use crate::passes::Pass;
use ir::{Graph, Op, ValueId};

/// Removes every node no graph output depends on, so later stages (fusion, planning, lowering)
/// never see work whose result is thrown away — the other simplifications leave such nodes
/// behind (folded operands, forwarded identities, merged duplicates), and autodiff and the
/// frontend create some too. `input` nodes are always kept, used or not: they are the graph's
/// interface (the trainer feeds them by name). Surviving nodes keep their definition order and
/// are renumbered densely. One backward sweep, O(nodes + edges).
#[derive(Clone, Copy, Debug, Default)]
pub struct DeadCodeElimination;

impl Pass for DeadCodeElimination {
    fn name(&self) -> &'static str {
        "dce"
    }

    fn run(&self, g: Graph) -> Graph {
        dce(g).0
    }
}

/// The pass, also reporting whether it removed anything.
pub(super) fn dce(g: Graph) -> (Graph, bool) {
    let n = g.nodes.len();
    let mut live = vec![false; n];
    for (_, v) in &g.outputs {
        live[v.index()] = true;
    }
    for i in (0..n).rev() {
        if matches!(g.nodes[i].op, Op::Input { .. }) {
            live[i] = true;
        }
        if live[i] {
            for v in &g.nodes[i].inputs {
                live[v.index()] = true;
            }
        }
    }
    if live.iter().all(|&l| l) {
        return (g, false);
    }
    let mut map = vec![ValueId(u32::MAX); n];
    let mut out = Graph::new(g.name);
    for (i, mut node) in g.nodes.into_iter().enumerate() {
        if !live[i] {
            continue;
        }
        for v in &mut node.inputs {
            *v = map[v.index()];
        }
        map[i] = ValueId(out.nodes.len() as u32);
        out.nodes.push(node);
    }
    out.outputs = g
        .outputs
        .into_iter()
        .map(|(name, v)| (name, map[v.index()]))
        .collect();
    (out, true)
}
