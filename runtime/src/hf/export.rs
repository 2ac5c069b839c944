//! Exporting a trained classifier as a directory transformers loads (weights, config, model
//! code, tokenizer), written whole or not at all.

use super::BertConfig;
use super::{HfError, TensorMap};
use crate::tokenizer::files::TokenizerFiles;
use plan::ElemType;
use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

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

/// The exported `config.json`: the trained config through the one writer
/// ([`plan::bert::ResolvedBertConfig::write_over`]) with the export's labels, plus what the exported model
/// class needs.
fn export_config(
    student: &serde_json::Value,
    cfg: &BertConfig,
    labels: &[String],
) -> serde_json::Value {
    use serde_json::json;
    let mut c = cfg.resolved(labels.to_vec()).write_over(student);
    let o = c.as_object_mut().expect("the writer returns an object");
    for (k, v) in [
        (
            "architectures",
            json!(["TinyBertForSequenceClassification"]),
        ),
        (
            "auto_map",
            json!({"AutoModelForSequenceClassification":
                   "modeling_tinybert.TinyBertForSequenceClassification"}),
        ),
        // The weights are f32 whatever the student config said (`torch_dtype` for
        // transformers 4, `dtype` for 5).
        ("torch_dtype", json!("float32")),
        ("dtype", json!("float32")),
        // TinyBERT applies no dropout between the pooler and the classifier.
        ("classifier_dropout", json!(0.0)),
    ] {
        o.insert(k.to_string(), v);
    }
    c
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
        None => plan::bert::label_names(config, num_labels),
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
    let (tmp, old) = (
        crate::temp_files::sibling(&parent.join(&name), crate::temp_files::Kind::New),
        crate::temp_files::sibling(&parent.join(&name), crate::temp_files::Kind::Old),
    );
    let _registered = (
        crate::temp_files::Registered::new(&tmp),
        crate::temp_files::Registered::new(&old),
    );
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
