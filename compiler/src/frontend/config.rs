//! Model configs as Hugging Face writes them (`config.json`), resolved against a preset.

use super::preset::Preset;
use plan::bert::BertConfigFile;
use std::path::Path;

/// The activation of the feed-forward layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `0.5·x·(1 + erf(x/√2))` (Hugging Face `gelu`, PyTorch TinyBERT).
    GeluErf,
    /// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))` (`gelu_new`, `gelu_pytorch_tanh`, MindSpore).
    GeluTanh,
}

impl Activation {
    pub fn from_hf(name: &str) -> Option<Activation> {
        match name {
            "gelu" | "gelu_python" => Some(Activation::GeluErf),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Activation::GeluTanh),
            _ => None,
        }
    }
    pub fn hf_name(self) -> &'static str {
        match self {
            Activation::GeluErf => "gelu",
            Activation::GeluTanh => "gelu_new",
        }
    }
}

/// A Hugging Face BERT `config.json` as written (the one parser, [`BertConfigFile`]); missing
/// optional fields are filled in from the preset by [`HfBertConfig::resolve`].
#[derive(Clone, Debug)]
pub struct HfBertConfig(pub BertConfigFile);

impl std::ops::Deref for HfBertConfig {
    type Target = BertConfigFile;
    fn deref(&self) -> &BertConfigFile {
        &self.0
    }
}

impl std::ops::DerefMut for HfBertConfig {
    fn deref_mut(&mut self) -> &mut BertConfigFile {
        &mut self.0
    }
}

/// A fully resolved model config.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub activation: Activation,
    pub layer_norm_eps: f64,
    pub hidden_dropout: f64,
    pub attention_dropout: f64,
    pub num_labels: usize,
}

impl ModelConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }
}

/// A config error naming the file (or "built-in") and the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{source_name}: {message}")]
pub struct ConfigError {
    pub source_name: String,
    pub message: String,
}

impl HfBertConfig {
    pub fn from_json(text: &str, source_name: &str) -> Result<HfBertConfig, ConfigError> {
        BertConfigFile::from_json(text)
            .map(HfBertConfig)
            .map_err(|message| ConfigError {
                source_name: source_name.to_string(),
                message,
            })
    }

    pub fn from_file(path: &Path) -> Result<HfBertConfig, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            source_name: name.clone(),
            message: format!("cannot read: {e}"),
        })?;
        HfBertConfig::from_json(&text, &name)
    }

    /// Fills what the file does not say from `preset` and checks the values.
    pub fn resolve(&self, preset: &Preset, source_name: &str) -> Result<ModelConfig, ConfigError> {
        let fail = |message: String| ConfigError {
            source_name: source_name.to_string(),
            message,
        };
        let activation = match &self.hidden_act {
            None => preset.hidden_act,
            Some(a) => Activation::from_hf(a).ok_or_else(|| {
                fail(format!(
                    "hidden_act \"{a}\" is not supported (expected gelu, gelu_new or gelu_pytorch_tanh)"
                ))
            })?,
        };
        let num_labels = match (self.num_labels, &self.id2label) {
            (Some(n), _) => n,
            (None, Some(m)) => m.len(),
            (None, None) => 2,
        };
        let cfg = ModelConfig {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            num_layers: self.num_hidden_layers,
            num_heads: self.num_attention_heads,
            intermediate_size: self.intermediate_size,
            max_position_embeddings: self.max_position_embeddings,
            type_vocab_size: self.type_vocab_size,
            activation,
            layer_norm_eps: self.layer_norm_eps.unwrap_or(preset.layer_norm_eps),
            hidden_dropout: self.hidden_dropout_prob.unwrap_or(0.1),
            attention_dropout: self.attention_probs_dropout_prob.unwrap_or(0.1),
            num_labels,
        };
        // The file's own values were checked when it was parsed; these are the resolved ones.
        if cfg.num_labels == 0 {
            return Err(fail(
                "num_labels must be positive (id2label is empty)".into(),
            ));
        }
        Ok(cfg)
    }
}

/// Built-in configs shipped with tbc (`configs/`).
pub mod builtin {
    /// BERT-base (uncased) teacher; activation and LayerNorm eps come from the preset.
    pub const BERT_BASE: &str = include_str!("../../../configs/bert-base-teacher.json");
    /// The MindSpore model-zoo student: 4 layers, hidden 384, 12 heads, intermediate 1536.
    pub const STUDENT_MINDSPORE: &str = include_str!("../../../configs/student-4l-384.json");
    /// The paper's TinyBERT4 student: 4 layers, hidden 312, 12 heads, intermediate 1200.
    pub const STUDENT_PAPER: &str = include_str!("../../../configs/student-4l-312.json");
}
