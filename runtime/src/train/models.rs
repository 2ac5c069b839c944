//! Models into sessions: the teacher from a Hugging Face directory or a safetensors file, the
//! trained model from a checkpoint or fresh initialization (pooler, classifier and fit_dense
//! initialized when the source lacks them), Adam moments from zero; and the Hugging Face export.

use super::phases::resolve_checkpoint;
use super::session::Session;
use super::tokenizer_choice::{export_tokenizer, model_max_length, TokenizerSources};
use crate::checkpoint::TensorMap;
use crate::init::{init_params, InitRule};
use crate::tensor_io::RawTensor;
use plan::manifest::{InitFamily, Manifest};
use std::path::{Path, PathBuf};

/// Where the trained model's parameters come from.
#[derive(Clone, Debug)]
pub enum ModelSource {
    /// Fresh initialization (general distillation).
    Init,
    /// A checkpoint file, a checkpoint directory (its newest) or a Hugging Face directory.
    /// `from_gd`: the general-distillation student going into task distillation.
    Checkpoint { path: PathBuf, from_gd: bool },
}

/// The (name, shape) of every input `prefix.<name>`.
fn expected(session: &Session, prefix: &str) -> Vec<(String, Vec<usize>)> {
    let p = format!("{prefix}.");
    session
        .plan()
        .inputs
        .iter()
        .filter_map(|s| Some((s.name.strip_prefix(&p)?.to_string(), s.shape.clone())))
        .collect()
}

/// A Hugging Face directory or safetensors file as it is, or a checkpoint directory's newest.
fn model_path(path: &Path) -> Result<PathBuf, String> {
    if path.is_dir()
        && (path.join("model.safetensors").is_file() || path.join("pytorch_model.bin").is_file())
    {
        return Ok(path.to_path_buf());
    }
    resolve_checkpoint(path)
}

/// Loads what `path` has of `expected`; returns the tensors and the names it lacks. A model
/// directory's `config.json` must describe the model this trainer was compiled for (`compiled`,
/// the manifest's config), or the weights would be read under another architecture.
fn load(
    path: &Path,
    expected: &[(String, Vec<usize>)],
    compiled: &serde_json::Value,
) -> Result<(TensorMap, Vec<String>), String> {
    let loaded = crate::hf::load_model(path, expected).map_err(|e| e.to_string())?;
    if let Some(cfg) = &loaded.config {
        check_config_matches(cfg, compiled, &path.join("config.json"))?;
    }
    Ok((loaded.tensors, loaded.missing))
}

/// The sizes and numerics of a model directory's config against the compiled model's.
fn check_config_matches(
    cfg: &crate::hf::BertConfig,
    compiled: &serde_json::Value,
    file: &Path,
) -> Result<(), String> {
    let c = crate::hf::BertConfig::from_value(compiled, Path::new("the trainer's manifest"))
        .map_err(|e| e.to_string())?;
    let sizes = [
        ("vocab_size", cfg.vocab_size, c.vocab_size),
        ("hidden_size", cfg.hidden_size, c.hidden_size),
        (
            "num_hidden_layers",
            cfg.num_hidden_layers,
            c.num_hidden_layers,
        ),
        (
            "num_attention_heads",
            cfg.num_attention_heads,
            c.num_attention_heads,
        ),
        (
            "intermediate_size",
            cfg.intermediate_size,
            c.intermediate_size,
        ),
        (
            "max_position_embeddings",
            cfg.max_position_embeddings,
            c.max_position_embeddings,
        ),
        ("type_vocab_size", cfg.type_vocab_size, c.type_vocab_size),
    ];
    let mut differ: Vec<String> = sizes
        .iter()
        .filter(|(_, a, b)| a != b)
        .map(|(k, a, b)| format!("{k} {a} (compiled: {b})"))
        .collect();
    if let (Some(a), Some(b)) = (cfg.labels(), c.labels()) {
        if a != b {
            differ.push(format!("num_labels {a} (compiled: {b})"));
        }
    }
    // Numerics only where the file states them: an omitted value is what the compiler took
    // from the preset.
    if let Some(act) = cfg.file.hidden_act.as_ref().filter(|a| **a != c.hidden_act) {
        differ.push(format!("hidden_act {act} (compiled: {})", c.hidden_act));
    }
    if let Some(eps) = cfg.file.layer_norm_eps.filter(|e| *e != c.layer_norm_eps) {
        differ.push(format!(
            "layer_norm_eps {eps} (compiled: {})",
            c.layer_norm_eps
        ));
    }
    if differ.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{}: {}; this trainer was compiled for another model (recompile with this config.json)",
        file.display(),
        differ.join(", ")
    ))
}

fn set_all(
    session: &mut Session,
    prefix: &str,
    map: &TensorMap,
    origin: &Path,
) -> Result<(), String> {
    let origin = origin.display().to_string();
    for (name, t) in map {
        session
            .set(&format!("{prefix}.{name}"), t, &origin)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Loads every `prefix.*` input from `path`; anything missing is an error naming it.
pub fn load_required(
    session: &mut Session,
    prefix: &str,
    path: &Path,
    phase: &str,
    compiled: &serde_json::Value,
) -> Result<(), String> {
    let path = model_path(path)?;
    let exp = expected(session, prefix);
    let (tensors, missing) = load(&path, &exp, compiled)?;
    if !missing.is_empty() {
        let head = if missing.iter().any(|n| n.starts_with("classifier.")) {
            " (phase td2 needs a fine-tuned teacher with a classifier: make one with `./trainer finetune`)"
        } else {
            ""
        };
        return Err(format!(
            "{}: the {prefix} for phase {phase} lacks {} tensor(s): {}{head}",
            path.display(),
            missing.len(),
            missing.join(", ")
        ));
    }
    set_all(session, prefix, &tensors, &path)
}

fn rule(m: &Manifest) -> InitRule {
    match m.init {
        InitFamily::Paper => InitRule::Paper,
        InitFamily::MindSpore => InitRule::MindSpore,
    }
}

/// Sets the trained parameters (`prefix.*`) from `source`, initializing what it lacks, and
/// zeroes the Adam moments.
pub fn load_trained(
    session: &mut Session,
    prefix: &str,
    source: &ModelSource,
    m: &Manifest,
    seed: u64,
) -> Result<(), String> {
    let exp = expected(session, prefix);
    let (loaded, origin) = match source {
        ModelSource::Init => (TensorMap::new(), None),
        ModelSource::Checkpoint { path, .. } => {
            let path = model_path(path)?;
            let compiled = if prefix == "teacher" {
                &m.teacher_config
            } else {
                &m.student_config
            };
            let (mut t, _) = load(&path, &exp, compiled)?;
            // MindSpore never saves fit_dense, so each phase starts with a fresh one (§2.4).
            if !m.carry_fit_dense {
                t.retain(|n, _| !n.starts_with("fit_dense."));
            }
            (t, Some(path))
        }
    };
    let missing: Vec<(String, Vec<usize>)> = exp
        .iter()
        .filter(|(n, _)| !loaded.contains_key(n))
        .cloned()
        .collect();
    if let (Some(origin), false) = (&origin, missing.is_empty()) {
        let names: Vec<&str> = missing.iter().map(|(n, _)| n.as_str()).collect();
        let loaded_encoder = loaded.keys().any(|n| n.starts_with("bert.encoder."));
        if !loaded_encoder {
            return Err(format!(
                "{}: holds none of the {prefix}'s encoder parameters (expected Hugging Face BERT names such as bert.encoder.layer.0.attention.self.query.weight)",
                origin.display()
            ));
        }
        // Only the heads a checkpoint may lack start fresh (a gd student has no pooler or
        // classifier; the mindspore preset never saves fit_dense): a missing encoder or
        // embedding tensor means a wrong or damaged file.
        let fresh_allowed = |n: &str| {
            ["bert.pooler.", "classifier.", "fit_dense."]
                .iter()
                .any(|p| n.starts_with(p))
        };
        let must_have: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| !fresh_allowed(n))
            .collect();
        if !must_have.is_empty() {
            return Err(format!(
                "{}: lacks {} {prefix} tensor(s) that cannot start fresh: {} (only the pooler, the classifier and fit_dense may be missing)",
                origin.display(),
                must_have.len(),
                must_have.join(", ")
            ));
        }
        eprintln!(
            "{}: initializing {} tensor(s) it does not have: {}",
            origin.display(),
            names.len(),
            names.join(", ")
        );
    }
    let fresh = init_params(&missing, rule(m), seed).map_err(|e| e.to_string())?;
    let origin_path = origin.unwrap_or_else(|| PathBuf::from("initialization"));
    set_all(session, prefix, &loaded, &origin_path)?;
    set_all(session, prefix, &fresh, Path::new("initialization"))?;
    for (name, shape) in &exp {
        let zeros = RawTensor::from_f64(
            plan::ElemType::F32,
            shape.clone(),
            &vec![0.0; shape.iter().product()],
        );
        for mp in ["adam_m", "adam_v"] {
            session
                .set(&format!("{mp}.{name}"), &zeros, "zero moments")
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// The parameters an eval plan reads (`prefix.*`), all required.
pub fn load_for_eval(
    session: &Session,
    prefix: &str,
    path: &Path,
    compiled: &serde_json::Value,
) -> Result<TensorMap, String> {
    let path = model_path(path)?;
    let exp = expected(session, prefix);
    let (tensors, missing) = load(&path, &exp, compiled)?;
    if !missing.is_empty() {
        return Err(format!(
            "{}: lacks {} tensor(s) the evaluated model needs: {}",
            path.display(),
            missing.len(),
            missing.join(", ")
        ));
    }
    Ok(tensors)
}

pub fn save_weights(path: &Path, map: &TensorMap) -> Result<(), String> {
    crate::checkpoint::save_weights(path, map).map_err(|e| e.to_string())
}

/// Writes the weights of `ckpt` as a Hugging Face sequence classifier directory.
pub fn export(
    ckpt: &Path,
    dir: &Path,
    config: &serde_json::Value,
    tokenizer: &TokenizerSources,
) -> Result<(), String> {
    let tok = export_tokenizer(tokenizer, model_max_length(config))?;
    let weights = crate::checkpoint::load_weights(ckpt).map_err(|e| e.to_string())?;
    for (name, t) in &weights {
        if let Some((index, value, count)) = t.non_finite() {
            return Err(format!(
                "{}: tensor '{name}' holds {value} at element {index} ({count} non-finite value(s) in all); refusing to export it",
                ckpt.display()
            ));
        }
    }
    crate::hf::export_hf_classifier(dir, config, &weights, tok.as_ref(), None)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(v: serde_json::Value) -> crate::hf::BertConfig {
        crate::hf::BertConfig::from_value(&v, Path::new("config.json")).unwrap()
    }

    /// A model directory's config must be the compiled one where it says something; what it
    /// omits is the compiler's choice.
    #[test]
    fn a_model_directory_config_must_match_the_compiled_model() {
        let compiled = serde_json::json!({"vocab_size": 100, "hidden_size": 8,
            "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16,
            "max_position_embeddings": 32, "hidden_act": "gelu_new", "layer_norm_eps": 1e-7});
        let mut same = compiled.clone();
        same.as_object_mut().unwrap().remove("hidden_act");
        assert!(check_config_matches(&config(same), &compiled, Path::new("c.json")).is_ok());
        let mut other = compiled.clone();
        other["max_position_embeddings"] = 15.into();
        other["hidden_act"] = "gelu".into();
        let err = check_config_matches(&config(other), &compiled, Path::new("c.json")).unwrap_err();
        assert!(
            err.contains("max_position_embeddings 15 (compiled: 32)")
                && err.contains("hidden_act gelu (compiled: gelu_new)"),
            "{err}"
        );
    }
}
