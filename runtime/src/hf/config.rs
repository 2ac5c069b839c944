//! `config.json` of a Hugging Face BERT, as tbc reads it.

use super::HfError;
use crate::tensor_io::IoError;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

fn default_type_vocab() -> usize {
    2
}
fn default_act() -> String {
    "gelu".into()
}
fn default_eps() -> f64 {
    1e-12
}
fn default_dropout() -> f64 {
    0.1
}

/// The BERT fields of a transformers `config.json`. Missing optional fields take transformers'
/// `BertConfig` defaults.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct BertConfig {
    #[serde(default)]
    pub model_type: Option<String>,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// transformers' names: "gelu" is the exact (erf) GELU, "gelu_new" the tanh approximation.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    #[serde(default)]
    pub num_labels: Option<usize>,
    #[serde(default)]
    pub id2label: Option<BTreeMap<String, String>>,
    #[serde(default)]
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
        let bad = |msg: String| HfError::Config {
            file: origin.to_path_buf(),
            msg,
        };
        let cfg: BertConfig = serde_json::from_value(value.clone())
            .map_err(|e| bad(format!("not a BERT config: {e}")))?;
        if let Some(t) = &cfg.model_type {
            if t != "bert" {
                return Err(bad(format!("model_type is '{t}', expected 'bert'")));
            }
        }
        for (field, v) in [
            ("vocab_size", cfg.vocab_size),
            ("hidden_size", cfg.hidden_size),
            ("num_hidden_layers", cfg.num_hidden_layers),
            ("num_attention_heads", cfg.num_attention_heads),
            ("intermediate_size", cfg.intermediate_size),
            ("max_position_embeddings", cfg.max_position_embeddings),
            ("type_vocab_size", cfg.type_vocab_size),
        ] {
            if v == 0 {
                return Err(bad(format!("{field} must be at least 1")));
            }
        }
        if !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads) {
            return Err(bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                cfg.hidden_size, cfg.num_attention_heads
            )));
        }
        if let (Some(n), Some(m)) = (cfg.num_labels, &cfg.id2label) {
            if n != m.len() {
                return Err(bad(format!(
                    "num_labels is {n} but id2label has {} entries",
                    m.len()
                )));
            }
        }
        Ok(cfg)
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
