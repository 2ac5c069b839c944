//! `tbc`: the TinyBERT distillation compiler.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tbc",
    version,
    about = "Compiles TinyBERT distillation training into a trainer executable"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compile phase graphs into one trainer executable (or stop at a stage: --compile-to).
    Compile(cli::compile_cmd::CompileArgs),
    /// Print the IR of a phase's graph.
    Graph(cli::graph_cmd::GraphArgs),
    /// Run one step of a phase with the reference interpreter.
    Step(cli::step::StepArgs),
    /// Parse and verify a graph in the IR text format.
    Verify(cli::verify_cmd::VerifyArgs),
    /// Draw PNG curves (training loss, eval metrics) from the trainer's metrics JSONL.
    Plot(cli::plot_cmd::PlotArgs),
    /// Make the trainer's TFRecord data: GLUE/TSV classification features, gd text packing.
    Data(cli::data_cmd::DataArgs),
}

fn main() {
    let cli = Cli::parse();
    // A panic is a bug: one line and exit 70, never a backtrace dump (runtime::interrupt).
    let code = runtime::interrupt::run_catching_panics("tbc", || {
        let result = match &cli.command {
            Command::Compile(a) => cli::compile_cmd::run(a),
            Command::Graph(a) => cli::graph_cmd::run(a),
            Command::Step(a) => cli::step::run(a),
            Command::Verify(a) => cli::verify_cmd::run(a),
            Command::Plot(a) => cli::plot_cmd::run(a),
            Command::Data(a) => cli::data_cmd::run(a),
        };
        match result {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: {e:#}");
                1
            }
        }
    });
    std::process::exit(code);
}
