//! Evaluation metrics for the GLUE dev sets and the records of the metrics JSONL file.
//!
//! The trainer evaluates batch by batch, so every metric is computed from an accumulator that
//! takes one batch at a time: a confusion matrix for classification (accuracy, F1, MCC all
//! follow from it) and the raw values for regression (Spearman needs all of them to rank).
//!
//! The numbers match the reference implementations the spec names (TINYBERT_SPEC.md §7):
//! sklearn's `accuracy_score`, `f1_score` (binary, `pos_label=1`) and `matthews_corrcoef`,
//! scipy's `pearsonr` and `spearmanr` (average ranks for ties), and MindSpore's `bf1`.
//! Where those return NaN or warn (a constant input, a zero denominator) the value here is 0.0,
//! as sklearn's default `zero_division` does, so a metrics line never holds NaN.
//!
//! The JSONL records ([`MetricsLine`]) are shared by the trainer, which writes them, and
//! `tbc plot`, which reads them.

//!
//! - [`glue`]: the GLUE metrics and their accumulators.
//! - [`record`]: the lines of the metrics JSONL file.

mod glue;
mod record;

pub use glue::*;
pub use record::*;

/// A metric input that cannot be evaluated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricsError {
    #[error("classification needs num_labels >= 2, got {0}")]
    NumLabels(usize),
    #[error("logits have {len} values, which is not a multiple of num_labels = {num_labels}")]
    LogitsShape { len: usize, num_labels: usize },
    #[error("a batch has {predictions} predictions but {labels} labels")]
    LengthMismatch { predictions: usize, labels: usize },
    #[error("label {label} of example {index} is outside 0..{num_labels}")]
    LabelOutOfRange {
        index: usize,
        label: i64,
        num_labels: usize,
    },
    #[error("regression {what} of example {index} is {value}, expected a finite number")]
    NonFinite {
        what: &'static str,
        index: usize,
        value: f32,
    },
    #[error("unknown task '{0}': expected one of cola, sst-2, mnli, mnli-mm, qnli, rte, wnli, mrpc, qqp, sts-b, tnews, or accuracy (any other classification task)")]
    UnknownTask(String),
    #[error("task {task} is {expected}: use {method}")]
    WrongKind {
        task: &'static str,
        expected: &'static str,
        method: &'static str,
    },
    #[error("no examples were evaluated")]
    Empty,
}
