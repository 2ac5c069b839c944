//! `tbc graph`: prints the IR text of a phase graph.

use crate::model_args::ModelArgs;
use anyhow::Result;
use clap::Args;
use std::time::Instant;

#[derive(Args, Debug, Clone)]
pub struct GraphArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    #[arg(long, default_value_t = 64)]
    pub seq_len: usize,
    /// Print a summary (node count per op, inputs, outputs, build time) instead of the IR text.
    #[arg(long)]
    pub summary: bool,
}

pub fn run(args: &GraphArgs) -> Result<()> {
    let r = args.model.resolve()?;
    let start = Instant::now();
    let g = r.graph(args.batch, args.seq_len)?;
    let built = start.elapsed();
    ir::verify(&g)?;
    if args.summary {
        print!("{}", summary(&g, built));
    } else {
        print!("{}", ir::text::print(&g));
    }
    Ok(())
}

/// A few lines a person can read: size, ops, interface.
pub fn summary(g: &ir::Graph, built: std::time::Duration) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let n_inputs = g.inputs().count();
    let param_elems: usize = g
        .inputs()
        .filter(|(n, _)| n.starts_with("student."))
        .map(|(_, v)| g.ty(v).numel())
        .sum();
    writeln!(
        s,
        "graph \"{}\": {} nodes, {} inputs, {} outputs ({:.1} ms)",
        g.name,
        g.len(),
        n_inputs,
        g.outputs.len(),
        built.as_secs_f64() * 1e3
    )
    .unwrap();
    writeln!(s, "student parameters: {param_elems}").unwrap();
    let ops: Vec<String> = g
        .op_histogram()
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    writeln!(s, "ops: {}", ops.join(", ")).unwrap();
    s
}
