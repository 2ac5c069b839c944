//! Hugging Face interop: load BERT weights from a transformers directory or a `.safetensors`
//! file under tbc's names, read `config.json`, and export a trained student as a directory that
//! transformers loads.
//!
//! tbc names parameters exactly as transformers' `BertForSequenceClassification`
//! (`bert.embeddings.word_embeddings.weight`, …, `bert.pooler.dense.weight`,
//! `classifier.weight`) plus TinyBERT's `fit_dense.weight/bias`.

use crate::tensor_io::{IoError, RawTensor};
use crate::tokenizer::files::TokenizerFiles;
use plan::ElemType;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

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

// ------------------------------------------------------------------------------------------
// config.json

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

// ------------------------------------------------------------------------------------------
// Loading

/// Weights read from a Hugging Face checkpoint, under tbc's names, all f32.
#[derive(Clone, Debug)]
pub struct LoadedModel {
    /// The safetensors file(s) read.
    pub files: Vec<PathBuf>,
    /// `config.json` next to the weights, when loading a directory that has one.
    pub config: Option<BertConfig>,
    pub tensors: TensorMap,
    /// Expected names not found: the caller initializes them or fails ([`Self::require_all`]).
    pub missing: Vec<String>,
    /// File keys that match no expected name (buffers such as `embeddings.position_ids`,
    /// pre-training heads, …), for the CLI to print.
    pub ignored: Vec<String>,
}

impl LoadedModel {
    /// An error naming every missing tensor, if any is.
    pub fn require_all(&self) -> Result<(), HfError> {
        if self.missing.is_empty() {
            return Ok(());
        }
        Err(HfError::Incomplete {
            source_path: self.files.first().cloned().unwrap_or_default(),
            missing: self.missing.clone(),
        })
    }
}

/// tbc's name for a checkpoint key, if it is expected: legacy `gamma`/`beta` become
/// `weight`/`bias`, and the key is tried as is, with `bert.` added (BertModel checkpoints such as
/// all-MiniLM-L6-v2) and with `bert.` removed.
pub fn normalize_key(key: &str, expected: &BTreeSet<&str>) -> Option<String> {
    let key = if let Some(s) = key.strip_suffix(".gamma") {
        format!("{s}.weight")
    } else if let Some(s) = key.strip_suffix(".beta") {
        format!("{s}.bias")
    } else {
        key.to_string()
    };
    let mut candidates = vec![key.clone(), format!("bert.{key}")];
    if let Some(s) = key.strip_prefix("bert.") {
        candidates.push(s.to_string());
    }
    candidates
        .into_iter()
        .find(|c| expected.contains(c.as_str()))
}

/// The python one-liner that converts a `pytorch_model.bin` directory in place.
fn conversion_command(dir: &Path) -> String {
    let arch = std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["architectures"][0].as_str().map(str::to_string))
        .filter(|a| a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or_else(|| "AutoModel".into());
    let d = dir.display().to_string().replace('\'', "\\'");
    format!(
        "python -c \"import transformers as t; t.{arch}.from_pretrained('{d}')\
         .save_pretrained('{d}', safe_serialization=True)\""
    )
}

/// The safetensors files of a directory: `model.safetensors` or the shards of
/// `model.safetensors.index.json`.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, HfError> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let bad = |msg: String| HfError::Config {
            file: index.clone(),
            msg,
        };
        let text = std::fs::read_to_string(&index)
            .map_err(|e| HfError::Io(IoError::Read(index.clone(), e)))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let map = v["weight_map"]
            .as_object()
            .ok_or_else(|| bad("no 'weight_map' object".into()))?;
        let mut shards = BTreeSet::new();
        for (k, f) in map {
            let f = f
                .as_str()
                .filter(|f| !f.contains('/') && !f.contains('\\'))
                .ok_or_else(|| bad(format!("weight_map['{k}'] is not a file name")))?;
            shards.insert(dir.join(f));
        }
        return Ok(shards.into_iter().collect());
    }
    if dir.join("pytorch_model.bin").is_file() {
        return Err(HfError::PytorchBin {
            dir: dir.to_path_buf(),
            command: conversion_command(dir),
        });
    }
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| HfError::Io(IoError::Read(dir.to_path_buf(), e)))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().to_string()))
        .collect();
    names.sort();
    let found = if names.is_empty() {
        " (it is empty)".to_string()
    } else {
        format!(" (it has: {})", names.join(", "))
    };
    Err(HfError::NoWeights {
        dir: dir.to_path_buf(),
        found,
    })
}

fn float_elem(d: safetensors::Dtype) -> Option<ElemType> {
    use safetensors::Dtype as D;
    Some(match d {
        D::F32 => ElemType::F32,
        D::F16 => ElemType::F16,
        D::BF16 => ElemType::BF16,
        D::F64 => ElemType::F64,
        _ => return None,
    })
}

/// Reads the expected tensors of one safetensors file into `out`.
fn load_file(
    file: &Path,
    expected: &BTreeMap<&str, &[usize]>,
    names: &BTreeSet<&str>,
    out: &mut TensorMap,
    origin: &mut HashMap<String, String>,
    ignored: &mut Vec<String>,
) -> Result<(), HfError> {
    let bytes =
        std::fs::read(file).map_err(|e| HfError::Io(IoError::Read(file.to_path_buf(), e)))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| HfError::Io(IoError::Format(file.to_path_buf(), e.to_string())))?;
    let mut keys = st.names();
    keys.sort();
    for key in keys {
        let Some(name) = normalize_key(key, names) else {
            ignored.push(key.to_string());
            continue;
        };
        if let Some(first) = origin.get(&name) {
            return Err(HfError::Duplicate {
                file: file.to_path_buf(),
                name,
                first: first.clone(),
                second: key.to_string(),
            });
        }
        let view = st
            .tensor(key)
            .map_err(|e| HfError::Io(IoError::Format(file.to_path_buf(), e.to_string())))?;
        let want = expected[name.as_str()];
        if view.shape() != want {
            return Err(HfError::Shape {
                file: file.to_path_buf(),
                key: key.to_string(),
                name,
                found: view.shape().to_vec(),
                expected: want.to_vec(),
            });
        }
        let elem = float_elem(view.dtype()).ok_or_else(|| HfError::Dtype {
            file: file.to_path_buf(),
            key: key.to_string(),
            dtype: format!("{:?}", view.dtype()),
        })?;
        let raw = RawTensor {
            elem,
            shape: view.shape().to_vec(),
            bytes: view.data().to_vec(),
        };
        origin.insert(name.clone(), key.to_string());
        out.insert(name, raw.convert(ElemType::F32));
    }
    Ok(())
}

/// Loads the `expected` (name, shape) tensors from a transformers directory (config.json +
/// model.safetensors, or a sharded index) or from one `.safetensors` file, as f32 under tbc's
/// names. Unexpected keys are listed in `ignored`, absent names in `missing`; a wrong shape,
/// a non-float expected tensor, a damaged file or a `pytorch_model.bin`-only directory is an
/// error naming the file.
pub fn load_model(path: &Path, expected: &[(String, Vec<usize>)]) -> Result<LoadedModel, HfError> {
    if !path.exists() {
        return Err(HfError::NotFound(path.to_path_buf()));
    }
    let (files, config) = if path.is_dir() {
        let cfg_path = path.join("config.json");
        let config = if cfg_path.is_file() {
            Some(BertConfig::read(&cfg_path)?)
        } else {
            None
        };
        (weight_files(path)?, config)
    } else {
        (vec![path.to_path_buf()], None)
    };
    let shapes: BTreeMap<&str, &[usize]> = expected
        .iter()
        .map(|(n, s)| (n.as_str(), s.as_slice()))
        .collect();
    let names: BTreeSet<&str> = shapes.keys().copied().collect();
    let mut tensors = TensorMap::new();
    let mut origin = HashMap::new();
    let mut ignored = Vec::new();
    for f in &files {
        load_file(f, &shapes, &names, &mut tensors, &mut origin, &mut ignored)?;
    }
    let missing = expected
        .iter()
        .filter(|(n, _)| !tensors.contains_key(n))
        .map(|(n, _)| n.clone())
        .collect();
    Ok(LoadedModel {
        files,
        config,
        tensors,
        missing,
        ignored,
    })
}

// ------------------------------------------------------------------------------------------
// Export

/// The model code written next to the weights. TinyBERT's head is
/// `classifier(ReLU(pooler(x)))` (PyTorch `TinyBertForSequenceClassification`; MindSpore's
/// `BertModelCLS` names its ReLU `self.dropout`), transformers' is
/// `classifier(dropout(pooler(x)))`. The subclass puts a ReLU in front of that dropout: no
/// parameter changes, so plain `BertForSequenceClassification` loads the same weights (and
/// gives different logits).
const MODELING_PY: &str = r#""""TinyBERT sequence classifier, exported by tbc.

TinyBERT computes logits = classifier(ReLU(pooler(x))); transformers' BertForSequenceClassification
computes classifier(dropout(pooler(x))). This subclass has the same parameters under the same names
and applies the ReLU before the (inactive) classifier dropout, so that

    AutoModelForSequenceClassification.from_pretrained(dir, trust_remote_code=True)

reproduces the logits tbc computed. BertForSequenceClassification.from_pretrained(dir) loads the
same weights but leaves the ReLU out.
"""

from torch import nn
from transformers import BertForSequenceClassification


class TinyBertForSequenceClassification(BertForSequenceClassification):
    def __init__(self, config):
        super().__init__(config)
        self.dropout = nn.Sequential(nn.ReLU(), self.dropout)
"#;

/// Files an export directory holds; an existing directory with only these is replaced.
const EXPORT_FILES: &[&str] = &[
    "config.json",
    "model.safetensors",
    "modeling_tinybert.py",
    "README.md",
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

/// What [`export_hf_classifier`] wrote.
#[derive(Clone, Debug)]
pub struct ExportSummary {
    pub dir: PathBuf,
    pub files: Vec<String>,
    /// Tensors given but not exported (fit_dense).
    pub dropped: Vec<String>,
    pub num_labels: usize,
}

fn export_err(dir: &Path, msg: impl Into<String>) -> HfError {
    HfError::Export {
        dir: dir.to_path_buf(),
        msg: msg.into(),
    }
}

/// The exported `config.json`: the student's config with the classifier's labels, the model
/// code of [`MODELING_PY`] and explicit activation and epsilon.
fn export_config(
    student: &serde_json::Value,
    cfg: &BertConfig,
    labels: &[String],
) -> serde_json::Value {
    use serde_json::json;
    let mut c = student.as_object().cloned().unwrap_or_default();
    let id2label: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (i.to_string(), json!(l)))
        .collect();
    let label2id: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.clone(), json!(i)))
        .collect();
    for (k, v) in [
        ("model_type", json!("bert")),
        (
            "architectures",
            json!(["TinyBertForSequenceClassification"]),
        ),
        (
            "auto_map",
            json!({"AutoModelForSequenceClassification":
                   "modeling_tinybert.TinyBertForSequenceClassification"}),
        ),
        ("num_labels", json!(labels.len())),
        ("id2label", json!(id2label)),
        ("label2id", json!(label2id)),
        ("hidden_act", json!(cfg.hidden_act)),
        ("layer_norm_eps", json!(cfg.layer_norm_eps)),
        ("type_vocab_size", json!(cfg.type_vocab_size)),
        // The weights are f32 whatever the student config said (`torch_dtype` for
        // transformers 4, `dtype` for 5).
        ("torch_dtype", json!("float32")),
        ("dtype", json!("float32")),
        // TinyBERT applies no dropout between the pooler and the classifier.
        ("classifier_dropout", json!(0.0)),
    ] {
        c.insert(k.to_string(), v);
    }
    serde_json::Value::Object(c)
}

/// Checks an export's tokenizer against the model: its vocabulary must fit the embedding table
/// and hold BERT's special tokens.
fn check_tokenizer(dir: &Path, files: &TokenizerFiles, cfg: &BertConfig) -> Result<(), HfError> {
    let bad = |msg: String| HfError::Config {
        file: dir.join("vocab.txt"),
        msg: format!("{msg} (tokenizer {})", files.origin),
    };
    let Some((_, bytes)) = files.files.iter().find(|(n, _)| *n == "vocab.txt") else {
        return Err(bad("no vocab.txt".into()));
    };
    let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8 text".into()))?;
    let tokens: BTreeSet<&str> = text.lines().collect();
    let lines = text.lines().count();
    if lines > cfg.vocab_size {
        return Err(bad(format!(
            "{lines} tokens, but the model's vocab_size is {}",
            cfg.vocab_size
        )));
    }
    let absent: Vec<&str> = crate::tokenizer::SPECIAL_TOKENS
        .into_iter()
        .filter(|t| !tokens.contains(t))
        .collect();
    if !absent.is_empty() {
        return Err(bad(format!(
            "special tokens missing: {}",
            absent.join(", ")
        )));
    }
    Ok(())
}

fn readme(cfg: &BertConfig, labels: &[String], tokenizer: Option<&TokenizerFiles>) -> String {
    let tok = match tokenizer {
        Some(t) => format!(
            "- `tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json`, `vocab.txt`: \
             the WordPiece tokenizer ({}; {}), `AutoTokenizer.from_pretrained(dir)`.\n",
            t.settings.describe(),
            t.origin
        ),
        None => "- no tokenizer: tbc found none for this model (give the trainer --tokenizer).\n"
            .to_string(),
    };
    format!(
        "# TinyBERT classifier exported by tbc\n\n\
         BERT, {layers} layers, hidden {h}, {heads} heads, intermediate {i}, {n} labels \
         ({labels}); activation `{act}`, LayerNorm epsilon {eps:e}.\n\n\
         - `model.safetensors`: the student's weights under the names of transformers' \
         `BertForSequenceClassification` (the distillation-only `fit_dense` is not included).\n\
         - `config.json`, `modeling_tinybert.py`: the model.\n{tok}\n\
         ## Loading\n\n\
         ```python\n\
         from transformers import AutoModelForSequenceClassification\n\
         model = AutoModelForSequenceClassification.from_pretrained(dir, trust_remote_code=True)\n\
         ```\n\n\
         TinyBERT's head is `classifier(ReLU(pooler(x)))`; transformers' \
         `BertForSequenceClassification` is `classifier(pooler(x))`. `modeling_tinybert.py` \
         subclasses `BertForSequenceClassification`, adding only the ReLU, so the line above \
         reproduces tbc's logits. `BertForSequenceClassification.from_pretrained(dir)` loads \
         the same weights without custom code, but its logits differ wherever a pooled feature \
         is negative.\n",
        layers = cfg.num_hidden_layers,
        h = cfg.hidden_size,
        heads = cfg.num_attention_heads,
        i = cfg.intermediate_size,
        n = labels.len(),
        labels = labels.join(", "),
        act = cfg.hidden_act,
        eps = cfg.layer_norm_eps,
    )
}

/// The bytes of `model.safetensors`: the classifier's tensors as f32, `{"format": "pt"}`.
fn model_bytes(
    dir: &Path,
    specs: &[(String, Vec<usize>)],
    tensors: &TensorMap,
) -> Result<(Vec<u8>, Vec<String>), HfError> {
    let wanted: BTreeSet<&str> = specs.iter().map(|(n, _)| n.as_str()).collect();
    let mut dropped = Vec::new();
    for name in tensors.keys() {
        if wanted.contains(name.as_str()) {
            continue;
        }
        if name.starts_with("fit_dense.") {
            dropped.push(name.clone());
        } else {
            return Err(export_err(
                dir,
                format!("tensor '{name}' is not a BertForSequenceClassification parameter"),
            ));
        }
    }
    let mut f32s = Vec::with_capacity(specs.len());
    for (name, shape) in specs {
        let t = tensors
            .get(name)
            .ok_or_else(|| export_err(dir, format!("tensor '{name}' is missing")))?;
        if &t.shape != shape {
            return Err(export_err(
                dir,
                format!(
                    "tensor '{name}' has shape {:?}, expected {shape:?}",
                    t.shape
                ),
            ));
        }
        if !matches!(
            t.elem,
            ElemType::F32 | ElemType::F16 | ElemType::BF16 | ElemType::F64
        ) {
            return Err(export_err(
                dir,
                format!("tensor '{name}' is not a float tensor"),
            ));
        }
        f32s.push((name.clone(), t.convert(ElemType::F32)));
    }
    let views = f32s
        .iter()
        .map(|(n, t)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, t.shape.clone(), &t.bytes)
                .map(|v| (n.clone(), v))
                .map_err(|e| export_err(dir, format!("tensor '{n}': {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes =
        safetensors::serialize(views, &Some(meta)).map_err(|e| export_err(dir, e.to_string()))?;
    Ok((bytes, dropped))
}

/// Writes a transformers directory for the student classifier `tensors` (tbc names; fit_dense
/// is dropped, anything else unknown is an error) with `config` (the student's HF config),
/// the `tokenizer` files when given, and `labels` (default `LABEL_i`).
///
/// `config` must state the activation and epsilon the student was trained with: the paper
/// preset is transformers' default (`"gelu"`, erf; 1e-12), the MindSpore preset needs
/// `"hidden_act": "gelu_new"` (tanh approximation) and `"layer_norm_eps": 1e-7` (checked:
/// float64 transformers logits then match the fixture's to 4e-16; with the paper settings they
/// are 2e-7 off, which a float32 comparison cannot see).
///
/// The directory appears whole or not at all: everything is written into a temporary sibling,
/// fsynced and renamed into place. An existing directory is replaced only if it holds nothing
/// but export files; otherwise it is an error and left untouched.
pub fn export_hf_classifier(
    dir: &Path,
    config: &serde_json::Value,
    tensors: &TensorMap,
    tokenizer: Option<&TokenizerFiles>,
    labels: Option<&[String]>,
) -> Result<ExportSummary, HfError> {
    let cfg = BertConfig::from_value(config, &dir.join("config.json"))?;
    let num_labels = tensors
        .get("classifier.weight")
        .and_then(|t| t.shape.first().copied())
        .ok_or_else(|| export_err(dir, "tensor 'classifier.weight' is missing"))?;
    let labels: Vec<String> = match labels {
        Some(l) if l.len() != num_labels => {
            return Err(export_err(
                dir,
                format!(
                    "{} labels given, but the classifier has {num_labels} outputs",
                    l.len()
                ),
            ))
        }
        Some(l) => l.to_vec(),
        None => match &cfg.id2label {
            Some(m)
                if m.len() == num_labels
                    && (0..num_labels).all(|i| m.contains_key(&i.to_string())) =>
            {
                (0..num_labels).map(|i| m[&i.to_string()].clone()).collect()
            }
            _ => (0..num_labels).map(|i| format!("LABEL_{i}")).collect(),
        },
    };
    if labels.iter().collect::<BTreeSet<_>>().len() != labels.len() {
        return Err(export_err(
            dir,
            format!("labels are not distinct: {labels:?}"),
        ));
    }
    let specs = cfg.param_specs(Some(num_labels));
    let (model, dropped) = model_bytes(dir, &specs, tensors)?;

    let mut files: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut conf = serde_json::to_vec_pretty(&export_config(config, &cfg, &labels))
        .map_err(|e| export_err(dir, e.to_string()))?;
    conf.push(b'\n');
    files.push(("config.json", conf));
    files.push(("model.safetensors", model));
    files.push(("modeling_tinybert.py", MODELING_PY.as_bytes().to_vec()));
    if let Some(t) = tokenizer {
        check_tokenizer(dir, t, &cfg)?;
        files.extend(t.files.iter().cloned());
    }
    files.push(("README.md", readme(&cfg, &labels, tokenizer).into_bytes()));
    write_dir_atomic(dir, &files)?;
    Ok(ExportSummary {
        dir: dir.to_path_buf(),
        files: files.iter().map(|(n, _)| n.to_string()).collect(),
        dropped,
        num_labels,
    })
}

/// Writes `files` into a fresh `dir` through a temporary sibling directory and a rename.
/// Missing parent directories are created, and removed again on failure.
fn write_dir_atomic(dir: &Path, files: &[(&str, Vec<u8>)]) -> Result<(), HfError> {
    let name = dir
        .file_name()
        .ok_or_else(|| export_err(dir, "not a directory path"))?
        .to_string_lossy()
        .to_string();
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if dir.exists() {
        check_replaceable(dir)?;
    }
    let mut created = Vec::new();
    let mut a = parent.as_path();
    while !a.exists() {
        created.push(a.to_path_buf());
        match a.parent() {
            Some(p) if !p.as_os_str().is_empty() => a = p,
            _ => break,
        }
    }
    let cleanup_parents = |created: &[PathBuf]| {
        for p in created {
            let _ = std::fs::remove_dir(p);
        }
    };
    if let Err(e) = std::fs::create_dir_all(&parent) {
        cleanup_parents(&created);
        return Err(export_err(
            dir,
            format!("cannot create {}: {e}", parent.display()),
        ));
    }
    let pid = std::process::id();
    let tmp = parent.join(format!(".{name}.tmp{pid}"));
    let old = parent.join(format!(".{name}.old{pid}"));
    let result = (|| -> Result<(), String> {
        fn at(what: &'static str, p: &Path) -> impl FnOnce(std::io::Error) -> String {
            let p = p.display().to_string();
            move |e| format!("cannot {what} {p}: {e}")
        }
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(at("remove stale", &tmp))?;
        }
        std::fs::create_dir(&tmp).map_err(at("create", &tmp))?;
        for (n, bytes) in files {
            let p = tmp.join(n);
            let mut f = std::fs::File::create(&p).map_err(at("create", &p))?;
            f.write_all(bytes).map_err(at("write", &p))?;
            f.sync_all().map_err(at("sync", &p))?;
        }
        std::fs::File::open(&tmp)
            .and_then(|d| d.sync_all())
            .map_err(at("sync", &tmp))?;
        let replacing = dir.exists();
        if replacing {
            std::fs::rename(dir, &old).map_err(at("move aside", dir))?;
        }
        if let Err(e) = std::fs::rename(&tmp, dir) {
            if replacing {
                let _ = std::fs::rename(&old, dir);
            }
            return Err(at("rename into", dir)(e));
        }
        // The export is in place; what follows only tidies up.
        if replacing {
            let _ = std::fs::remove_dir_all(&old);
        }
        if let Ok(d) = std::fs::File::open(&parent) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|msg| {
        let _ = std::fs::remove_dir_all(&tmp);
        cleanup_parents(&created);
        export_err(dir, msg)
    })
}

/// An existing export target may be replaced only if it is a directory of export files.
fn check_replaceable(dir: &Path) -> Result<(), HfError> {
    if !dir.is_dir() {
        return Err(export_err(dir, "exists and is not a directory"));
    }
    let entries = std::fs::read_dir(dir).map_err(|e| export_err(dir, e.to_string()))?;
    for e in entries {
        let e = e.map_err(|e| export_err(dir, e.to_string()))?;
        let n = e.file_name().to_string_lossy().to_string();
        if !EXPORT_FILES.contains(&n.as_str()) || !e.path().is_file() {
            return Err(export_err(
                dir,
                format!(
                    "exists and holds '{n}', which is not an export file; \
                     remove it or choose another directory"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_normalization() {
        let names = [
            "bert.embeddings.LayerNorm.weight",
            "bert.pooler.dense.bias",
            "classifier.weight",
            "fit_dense.bias",
        ];
        let set: BTreeSet<&str> = names.into_iter().collect();
        let n = |k: &str| normalize_key(k, &set);
        assert_eq!(
            n("embeddings.LayerNorm.gamma").as_deref(),
            Some("bert.embeddings.LayerNorm.weight")
        );
        assert_eq!(
            n("bert.embeddings.LayerNorm.weight").as_deref(),
            Some("bert.embeddings.LayerNorm.weight")
        );
        assert_eq!(
            n("pooler.dense.beta").as_deref(),
            Some("bert.pooler.dense.bias")
        );
        assert_eq!(
            n("bert.classifier.weight").as_deref(),
            Some("classifier.weight")
        );
        assert_eq!(n("fit_dense.bias").as_deref(), Some("fit_dense.bias"));
        assert_eq!(n("embeddings.position_ids"), None);
        assert_eq!(n("cls.predictions.bias"), None);
    }

    #[test]
    fn conversion_command_uses_the_architecture() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("config.json"),
            r#"{"architectures": ["BertForSequenceClassification"], "model_type": "bert",
               "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
               "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 8}"#,
        )
        .unwrap();
        let c = conversion_command(d.path());
        assert!(
            c.contains("t.BertForSequenceClassification.from_pretrained("),
            "{c}"
        );
        assert!(c.contains("safe_serialization=True"), "{c}");
        let e = tempfile::tempdir().unwrap();
        assert!(conversion_command(e.path()).contains("t.AutoModel.from_pretrained("));
    }
}
