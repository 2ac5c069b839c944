//! `config.json` of a Hugging Face BERT, as tbc reads it.

use super::HfError;
use crate::tensor_io::IoError;
use plan::bert::{BertConfigFile, ResolvedBertConfig};
use std::path::Path;

/// A BERT config as the file says it ([`BertConfigFile`], the one parser, reached through
/// `Deref`), with transformers' defaults for the values a file may omit that the runtime
/// reads.
#[derive(Clone, Debug, PartialEq)]
pub struct BertConfig {
    pub file: BertConfigFile,
    /// transformers' names: "gelu" (default) is the exact (erf) GELU, "gelu_new" the tanh
    /// approximation.
    pub hidden_act: String,
    /// Default 1e-12.
    pub layer_norm_eps: f64,
    /// Default 0.1.
    pub hidden_dropout_prob: f64,
}

impl std::ops::Deref for BertConfig {
    type Target = BertConfigFile;
    fn deref(&self) -> &BertConfigFile {
        &self.file
    }
}

impl BertConfig {
    /// Reads and checks `config.json`; errors name the file and the field.
    pub fn read(path: &Path) -> Result<BertConfig, HfError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                HfError::NotFound(path.to_path_buf())
            } else {
                HfError::Io(IoError::Read(path.to_path_buf(), e))
            }
        })?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| HfError::Config {
                file: path.to_path_buf(),
                msg: format!("not valid JSON: {e}"),
            })?;
        BertConfig::from_value(&value, path)
    }

    /// Parses and checks a config already in memory; `origin` names it in errors.
    pub fn from_value(value: &serde_json::Value, origin: &Path) -> Result<BertConfig, HfError> {
        let f = BertConfigFile::from_value(value).map_err(|msg| HfError::Config {
            file: origin.to_path_buf(),
            msg,
        })?;
        Ok(BertConfig {
            hidden_act: f.hidden_act.clone().unwrap_or_else(|| "gelu".into()),
            layer_norm_eps: f.layer_norm_eps.unwrap_or(1e-12),
            hidden_dropout_prob: f.hidden_dropout_prob.unwrap_or(0.1),
            file: f,
        })
    }

    /// This config with every field resolved (transformers' defaults for the omitted ones) and
    /// these label names, ready for the one writer.
    pub fn resolved(&self, labels: Vec<String>) -> ResolvedBertConfig {
        ResolvedBertConfig {
            shape: self.shape(),
            num_attention_heads: self.num_attention_heads,
            hidden_act: self.hidden_act.clone(),
            layer_norm_eps: self.layer_norm_eps,
            hidden_dropout_prob: self.hidden_dropout_prob,
            attention_probs_dropout_prob: self.file.attention_probs_dropout_prob.unwrap_or(0.1),
            labels,
        }
    }

    /// The (name, shape) list of a `BertForSequenceClassification` with this config (the same
    /// names and order as the compiler's `param_specs` without fit_dense); `num_labels = None`
    /// leaves the classifier out (a `BertModel` with pooler).
    pub fn param_specs(&self, num_labels: Option<usize>) -> Vec<(String, Vec<usize>)> {
        self.shape().param_specs(true, num_labels)
    }
}
