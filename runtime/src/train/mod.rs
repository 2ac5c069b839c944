//! Training with the compiled plans: sessions that carry state across steps, the data-sink
//! loop with its callbacks (logs, checkpoints, evaluation), and the trainer's commands.
//!
//! - [`session`]: one plan with all of its inputs; outputs fed back after every step.
//! - [`records`]: per-step scalars kept on the device for a sink loop.
//! - [`replicas`]: the ranks of a data-parallel job start together and stay equal.
//! - [`schedule`]: step counts (data sink) and the `sched.*` inputs.
//! - [`driver`]: the loop of one phase.
//! - [`state`]: checkpoints with everything `--resume` needs.
//! - [`models`]: teacher and student into sessions; Hugging Face export.
//! - [`eval`]: dev-set metrics with an eval plan.
//! - [`log`]: seed log lines, progress bar, metrics JSONL.
//! - [`tokenizer_choice`]: the export's tokenizer; data tokenized as the teacher expects.
//! - [`args`], [`phases`]: the commands.

pub mod args;
pub mod driver;
pub mod eval;
pub mod log;
pub mod models;
pub mod phases;
pub mod records;
pub mod replicas;
pub mod run_guard;
pub mod schedule;
pub mod session;
pub mod source;
pub mod state;
pub mod tokenizer_choice;
