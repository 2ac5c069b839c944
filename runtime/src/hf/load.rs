//! Loading BERT weights from a transformers directory or a `.safetensors` file under tbc's names.

use super::BertConfig;
use super::{HfError, TensorMap};
use crate::tensor_io::{IoError, RawTensor};
use plan::ElemType;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

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
