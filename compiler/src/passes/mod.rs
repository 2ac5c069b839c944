//! Graph-to-graph passes. A pass is a small named type; a pipeline is a list of them.

pub mod mixed_precision;
pub mod simplify;

use ir::Graph;

/// A graph-to-graph transformation with a name (for `--dump-after`).
pub trait Pass {
    fn name(&self) -> &'static str;
    /// Rewrites `g`. Must keep every output's value and the set of inputs' meaning intact.
    fn run(&self, g: Graph) -> Graph;
}

/// Runs passes in order, calling `after` with each pass's name and result (for dumps).
pub fn run_passes(
    mut g: Graph,
    passes: &[Box<dyn Pass>],
    mut after: impl FnMut(&str, &Graph),
) -> Graph {
    for p in passes {
        g = p.run(g);
        after(p.name(), &g);
    }
    g
}
