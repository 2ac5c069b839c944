//! Hugging Face interop: load BERT weights from a transformers directory or a `.safetensors`
//! file under tbc's names, read `config.json`, and export a trained student as a directory that
//! transformers loads.
//!
//! tbc names parameters exactly as transformers' `BertForSequenceClassification`
//! (`bert.embeddings.word_embeddings.weight`, …, `bert.pooler.dense.weight`,
//! `classifier.weight`) plus TinyBERT's `fit_dense.weight/bias`.

//!
//! - [`config`]: `config.json` as tbc reads it.
//! - [`load`]: weights from a transformers directory or a safetensors file.
//! - [`export`]: a trained classifier as a transformers directory.

mod config;
mod export;
mod load;

pub use config::BertConfig;
pub use export::{export_hf_classifier, ExportSummary};
pub use load::{load_model, normalize_key, LoadedModel};

use crate::tensor_io::{IoError, RawTensor};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Tensors by name.
pub type TensorMap = BTreeMap<String, RawTensor>;

#[derive(Debug, thiserror::Error)]
pub enum HfError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{0}: no such file or directory")]
    NotFound(PathBuf),
    #[error(
        "{dir}: has pytorch_model.bin but no model.safetensors; tbc reads safetensors only. \
         Convert it once with:\n  {command}"
    )]
    PytorchBin { dir: PathBuf, command: String },
    #[error(
        "{dir}: no model.safetensors (or model.safetensors.index.json) in this directory{found}"
    )]
    NoWeights { dir: PathBuf, found: String },
    #[error(
        "{file}: tensor '{key}' (tbc name '{name}') has shape {found:?}, expected {expected:?}"
    )]
    Shape {
        file: PathBuf,
        key: String,
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error(
        "{file}: tensor '{key}' has dtype {dtype}, expected a float type (f32, f16, bf16, f64)"
    )]
    Dtype {
        file: PathBuf,
        key: String,
        dtype: String,
    },
    #[error("{file}: tensors '{first}' and '{second}' both map to '{name}'")]
    Duplicate {
        file: PathBuf,
        name: String,
        first: String,
        second: String,
    },
    #[error("{file}: {msg}")]
    Config { file: PathBuf, msg: String },
    #[error("{source_path}: missing {} tensor(s): {}", missing.len(), missing.join(", "))]
    Incomplete {
        source_path: PathBuf,
        missing: Vec<String>,
    },
    #[error("export to {dir}: {msg}")]
    Export { dir: PathBuf, msg: String },
}
