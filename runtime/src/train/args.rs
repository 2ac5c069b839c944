//! The trainer's command-line flags. Names follow the seed's `run_general_distill.py` and
//! `run_task_distill.py` with dashes; the seed's underscore spellings are accepted as aliases so
//! existing scripts keep working. Booleans take `true`/`false` values as the seed's do.

use crate::flags::{learning_rate, positive_count, positive_f32_range, positive_usize};
use clap::Args;
use std::path::{Path, PathBuf};

/// Parses the seed's string booleans.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(format!("expected true or false, found '{s}'")),
    }
}

/// Flags every training command shares.
#[derive(Args, Debug, Clone)]
pub struct LoopArgs {
    /// Shuffle the training data with a seeded permutation per epoch. The seed never shuffles
    /// single-device TFRecord runs whatever --do-shuffle says (TINYBERT_SPEC §5.2), so the
    /// default is false.
    #[arg(long, alias = "do_shuffle", default_value = "false", value_parser = parse_bool, action = clap::ArgAction::Set)]
    pub do_shuffle: bool,
    /// Log, checkpoint and evaluate once per sink loop of --data-sink-steps steps.
    #[arg(long, alias = "enable_data_sink", default_value = "true", value_parser = parse_bool, action = clap::ArgAction::Set)]
    pub enable_data_sink: bool,
    #[arg(long, alias = "data_sink_steps", default_value_t = 1, value_parser = positive_count)]
    pub data_sink_steps: u64,
    /// Save a checkpoint every N steps (in sink mode only when N is a multiple of the sink).
    #[arg(
        long,
        alias = "save_ckpt_step",
        alias = "save-checkpoint-step",
        alias = "save_checkpoint_step",
        default_value_t = 100,
        value_parser = positive_count
    )]
    pub save_ckpt_step: u64,
    /// Keep the newest N checkpoints.
    #[arg(long, alias = "max_ckpt_num", default_value_t = 1, value_parser = positive_usize)]
    pub max_ckpt_num: usize,
    /// The seed's schema.json (columns, shapes and numRows) for the training data.
    #[arg(long, alias = "schema_dir")]
    pub schema_dir: Option<PathBuf>,
    /// Directory for checkpoints, eval.log, eval_model and metrics.jsonl.
    #[arg(long, default_value = ".")]
    pub output_dir: PathBuf,
    /// The metrics JSONL file (default: OUTPUT_DIR/metrics.jsonl).
    #[arg(long)]
    pub metrics_file: Option<PathBuf>,
    /// Seed of parameter initialization, dropout and shuffling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Base learning rate instead of the preset's, in (0, 1].
    #[arg(long, value_parser = learning_rate)]
    pub learning_rate: Option<f64>,
    /// Initial dynamic loss scale instead of the preset's (MindSpore's `loss_scale_value`).
    #[arg(long, alias = "loss_scale_value", value_parser = positive_f32_range)]
    pub loss_scale_value: Option<f64>,
    /// Stop with an error after this many consecutive steps overflow at loss scale 1, where
    /// scaling cannot help any more (0: never stop).
    #[arg(long, default_value_t = 100)]
    pub overflow_patience: u64,
    /// Continue from the newest checkpoint of the phase (bit-identical to a run that was never
    /// interrupted).
    #[arg(long)]
    pub resume: bool,
    /// Data parallel across the ranks of `mpirun -n N` (Open MPI): each rank trains on its part
    /// of every global batch of N × the compiled batch, gradients are averaged across ranks
    /// before the update; rank 0 writes checkpoints and logs and evaluates.
    #[arg(long, default_value = "false", value_parser = parse_bool, action = clap::ArgAction::Set)]
    pub distribute: bool,
}

impl LoopArgs {
    pub fn sink(&self) -> Option<u64> {
        self.enable_data_sink.then_some(self.data_sink_steps)
    }
    pub fn metrics_path(&self) -> PathBuf {
        self.metrics_file
            .clone()
            .unwrap_or_else(|| self.output_dir.join("metrics.jsonl"))
    }
}

#[derive(Args, Debug, Clone)]
pub struct GeneralDistillArgs {
    #[command(flatten)]
    pub common: LoopArgs,
    /// Training data: a directory of *record* files or one TFRecord file.
    #[arg(long, alias = "data_dir")]
    pub data_dir: PathBuf,
    /// The pre-trained teacher: a Hugging Face BERT directory or a .safetensors file.
    #[arg(long, alias = "load_teacher_ckpt_path")]
    pub load_teacher_ckpt_path: PathBuf,
    #[arg(long, alias = "epoch_size", default_value_t = 1, value_parser = positive_count)]
    pub epoch_size: u64,
    /// Checkpoint directory (default: OUTPUT_DIR/tinybert_gd_save_ckpt).
    #[arg(long, alias = "save_ckpt_path")]
    pub save_ckpt_path: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct TaskDistillArgs {
    #[command(flatten)]
    pub common: LoopArgs,
    #[arg(long, alias = "do_train", default_value = "true", value_parser = parse_bool, action = clap::ArgAction::Set)]
    pub do_train: bool,
    #[arg(long, alias = "do_eval", default_value = "true", value_parser = parse_bool, action = clap::ArgAction::Set)]
    pub do_eval: bool,
    /// Which phases to train: 1, 2 or both.
    #[arg(long, default_value = "both")]
    pub td_phase: String,
    #[arg(long, alias = "td_phase1_epoch_size", default_value_t = 10, value_parser = positive_count)]
    pub td_phase1_epoch_size: u64,
    #[arg(long, alias = "td_phase2_epoch_size", default_value_t = 3, value_parser = positive_count)]
    pub td_phase2_epoch_size: u64,
    /// The fine-tuned teacher: a Hugging Face BERT directory or a .safetensors file.
    #[arg(long, alias = "load_teacher_ckpt_path")]
    pub load_teacher_ckpt_path: PathBuf,
    /// The general-distillation student (a checkpoint file or a directory: its newest).
    #[arg(long, alias = "load_gd_ckpt_path")]
    pub load_gd_ckpt_path: Option<PathBuf>,
    /// The phase-1 student for phase 2 or evaluation (default: the newest in
    /// OUTPUT_DIR/tinybert_td_phase1_save_ckpt).
    #[arg(long, alias = "load_td1_ckpt_path")]
    pub load_td1_ckpt_path: Option<PathBuf>,
    #[arg(long, alias = "train_data_dir")]
    pub train_data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub task: TaskArgs,
}

/// The dev set, the task's metrics and the export of the trained model (task distillation and
/// fine-tuning).
#[derive(Args, Debug, Clone)]
pub struct TaskArgs {
    #[arg(long, alias = "eval_data_dir")]
    pub eval_data_dir: Option<PathBuf>,
    /// The task (SST-2, QNLI, MNLI, CoLA, MRPC, QQP, RTE, …, or `accuracy` for your own
    /// classification data): picks the metrics.
    #[arg(long, alias = "task_name", default_value = "SST-2")]
    pub task_name: String,
    /// Export the best model as a Hugging Face directory here (fine-tuning default:
    /// OUTPUT_DIR/teacher_finetuned).
    #[arg(long)]
    pub export_hf: Option<PathBuf>,
    /// The tokenizer to put in the export: a model directory (tokenizer.json, or vocab.txt with
    /// tokenizer_config.json) or a data directory `tbc data` wrote (default: the teacher
    /// directory's tokenizer, else the training data's).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// vocab.txt to put in the export, with the teacher's or the data's tokenizer settings.
    #[arg(long)]
    pub vocab: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct FinetuneArgs {
    #[command(flatten)]
    pub common: LoopArgs,
    /// The pre-trained model to fine-tune (Hugging Face BERT directory or .safetensors).
    #[arg(long, alias = "load_teacher_ckpt_path")]
    pub load_teacher_ckpt_path: PathBuf,
    #[arg(long, alias = "train_data_dir")]
    pub train_data_dir: PathBuf,
    #[arg(long, alias = "epoch_size", default_value_t = 3, value_parser = positive_count)]
    pub epoch_size: u64,
    #[command(flatten)]
    pub task: TaskArgs,
}

#[derive(Args, Debug, Clone)]
pub struct EvalArgs {
    #[arg(long, alias = "eval_data_dir")]
    pub eval_data_dir: PathBuf,
    #[arg(long, alias = "schema_dir")]
    pub schema_dir: Option<PathBuf>,
    /// The student to evaluate (checkpoint file, directory or Hugging Face export).
    #[arg(long, alias = "load_td1_ckpt_path")]
    pub load_td1_ckpt_path: Option<PathBuf>,
    /// Evaluate this teacher instead of a student.
    #[arg(long, alias = "load_teacher_ckpt_path")]
    pub load_teacher_ckpt_path: Option<PathBuf>,
    #[arg(long, alias = "task_name", default_value = "SST-2")]
    pub task_name: String,
    /// Write the logits of every evaluated example to this safetensors file.
    #[arg(long)]
    pub dump_logits: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct ExportArgs {
    /// A student checkpoint (safetensors).
    #[arg(long)]
    pub ckpt: PathBuf,
    /// The Hugging Face directory to write.
    #[arg(long, short = 'o')]
    pub output: PathBuf,
    /// The tokenizer to put in the export: a model directory (tokenizer.json, or vocab.txt with
    /// tokenizer_config.json) or the data directory `tbc data` wrote.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// vocab.txt to put in the export (settings: transformers' default, uncased; prefer
    /// --tokenizer).
    #[arg(long, conflicts_with = "tokenizer")]
    pub vocab: Option<PathBuf>,
}

impl TaskArgs {
    /// Where the export's tokenizer may come from, for a run with this teacher and data.
    pub fn tokenizer_sources<'a>(
        &'a self,
        teacher: &'a Path,
        data: &'a Path,
    ) -> super::tokenizer_choice::TokenizerSources<'a> {
        super::tokenizer_choice::TokenizerSources {
            explicit: self.tokenizer.as_deref(),
            vocab: self.vocab.as_deref(),
            teacher: Some(teacher),
            data: Some(data),
        }
    }
}
