//! `tbc verify FILE`: parses and verifies IR text, then prints its summary.

use anyhow::{anyhow, Context, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
pub struct VerifyArgs {
    /// A file in the IR text format (as `tbc graph` prints it).
    pub file: PathBuf,
}

pub fn run(args: &VerifyArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let start = std::time::Instant::now();
    let g = ir::text::parse(&text).map_err(|e| anyhow!("{}:{e}", args.file.display()))?;
    print!("{}", crate::graph_cmd::summary(&g, start.elapsed()));
    Ok(())
}
