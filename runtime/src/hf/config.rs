//! `config.json` of a Hugging Face BERT, as tbc reads it.

use super::HfError;
use crate::tensor_io::IoError;
use plan::bert::BertConfigFile;
use std::collections::BTreeMap;
use std::path::Path;

/// A BERT config with transformers' defaults for what the file omits (`gelu`, epsilon 1e-12,
/// dropout 0.1), parsed and checked by the one parser, [`plan::bert::BertConfigFile`].
#[derive(Clone, Debug, PartialEq)]
pub struct BertConfig {
    pub model_type: Option<String>,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    /// transformers' names: "gelu" is the exact (erf) GELU, "gelu_new" the tanh approximation.
    pub hidden_act: String,
    pub layer_norm_eps: f64,
    pub hidden_dropout_prob: f64,
    pub attention_probs_dropout_prob: f64,
    pub num_labels: Option<usize>,
    pub id2label: Option<BTreeMap<String, String>>,
    pub label2id: Option<BTreeMap<String, usize>>,
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
            model_type: f.model_type,
            vocab_size: f.vocab_size,
            hidden_size: f.hidden_size,
            num_hidden_layers: f.num_hidden_layers,
            num_attention_heads: f.num_attention_heads,
            intermediate_size: f.intermediate_size,
            max_position_embeddings: f.max_position_embeddings,
            type_vocab_size: f.type_vocab_size,
            hidden_act: f.hidden_act.unwrap_or_else(|| "gelu".into()),
            layer_norm_eps: f.layer_norm_eps.unwrap_or(1e-12),
            hidden_dropout_prob: f.hidden_dropout_prob.unwrap_or(0.1),
            attention_probs_dropout_prob: f.attention_probs_dropout_prob.unwrap_or(0.1),
            num_labels: f.num_labels,
            id2label: f.id2label,
            label2id: f.label2id,
        })
    }

    /// num_labels, or the size of id2label (transformers stores only the latter).
    pub fn labels(&self) -> Option<usize> {
        self.num_labels
            .or_else(|| self.id2label.as_ref().map(|m| m.len()))
    }

    /// The (name, shape) list of a `BertForSequenceClassification` with this config (the same
    /// names and order as the compiler's `param_specs` without fit_dense); `num_labels = None`
    /// leaves the classifier out (a `BertModel` with pooler).
    pub fn param_specs(&self, num_labels: Option<usize>) -> Vec<(String, Vec<usize>)> {
        plan::bert::BertShape {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            num_layers: self.num_hidden_layers,
            intermediate_size: self.intermediate_size,
            max_position_embeddings: self.max_position_embeddings,
            type_vocab_size: self.type_vocab_size,
        }
        .param_specs(true, num_labels)
    }
}
