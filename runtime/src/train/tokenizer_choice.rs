//! Which tokenizer an export carries, and whether the training data was tokenized as the
//! teacher expects. The tokenizer is part of the model: it is taken from the model's own files
//! or from the tokenizer recorded beside the data, never guessed.

use crate::tokenizer::files::{data_sidecar, TokenizerFiles};
use crate::tokenizer::{TokenizerSettings, WordPieceTokenizer};
use std::path::{Path, PathBuf};

/// Where an export's tokenizer may come from.
#[derive(Clone, Copy, Debug, Default)]
pub struct TokenizerSources<'a> {
    /// `--tokenizer DIR`: a model directory, or a data directory with its recorded tokenizer.
    pub explicit: Option<&'a Path>,
    /// `--vocab FILE`: the vocabulary to export.
    pub vocab: Option<&'a Path>,
    /// The teacher (a model directory or a file in one).
    pub teacher: Option<&'a Path>,
    /// The training data (a directory or a file in one).
    pub data: Option<&'a Path>,
}

/// The directory of a model path (itself, or a file's directory).
fn model_dir(p: &Path) -> Option<PathBuf> {
    if p.is_dir() {
        Some(p.to_path_buf())
    } else {
        p.parent()
            .map(|d| {
                if d.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    d
                }
            })
            .map(Path::to_path_buf)
    }
}

/// A directory that states its tokenizer's settings (not just a bare `vocab.txt`).
fn has_tokenizer_settings(dir: &Path) -> bool {
    dir.join("tokenizer.json").is_file() || dir.join("tokenizer_config.json").is_file()
}

/// The teacher's own tokenizer, when its directory states one.
fn teacher_tokenizer(teacher: &Path) -> Option<(PathBuf, Result<WordPieceTokenizer, String>)> {
    let dir = model_dir(teacher)?;
    has_tokenizer_settings(&dir).then(|| {
        let t = WordPieceTokenizer::from_dir(&dir).map_err(|e| e.to_string());
        (dir, t)
    })
}

/// The tokenizer files for an export, the first that applies:
/// 1. `--tokenizer DIR`, copied;
/// 2. without `--vocab`: the teacher directory's tokenizer, copied, else the data's recorded
///    tokenizer, generated from it;
/// 3. `--vocab FILE` or the teacher's `vocab.txt`, with the settings of the teacher's tokenizer,
///    else the data's, else transformers' default (uncased), which a warning states.
///
/// `Ok(None)` (with a warning) when there is no vocabulary anywhere.
pub fn export_tokenizer(
    s: &TokenizerSources,
    model_max_length: usize,
) -> Result<Option<TokenizerFiles>, String> {
    let fail = |e: crate::tokenizer::TokenizerError| e.to_string();
    if let Some(d) = s.explicit {
        return WordPieceTokenizer::from_dir(d)
            .and_then(|t| TokenizerFiles::copy_from_dir(d, &t, model_max_length))
            .map(Some)
            .map_err(|e| format!("--tokenizer: {e}"));
    }
    let teacher = s.teacher.and_then(teacher_tokenizer);
    let data = s.data.and_then(data_sidecar);
    if s.vocab.is_none() {
        if let Some((dir, t)) = &teacher {
            let t = t
                .as_ref()
                .map_err(|e| format!("the teacher's tokenizer: {e}"))?;
            return TokenizerFiles::copy_from_dir(dir, t, model_max_length)
                .map(Some)
                .map_err(fail);
        }
        if let Some(p) = &data {
            let t = WordPieceTokenizer::from_tokenizer_json(p).map_err(fail)?;
            return TokenizerFiles::generate(&t, model_max_length)
                .map(Some)
                .map_err(fail);
        }
    }
    let vocab = match (s.vocab, s.teacher.and_then(model_dir)) {
        (Some(v), _) => v.to_path_buf(),
        (None, Some(d)) if d.join("vocab.txt").is_file() => d.join("vocab.txt"),
        _ => {
            eprintln!(
                "warning: the export has no tokenizer: no --tokenizer, no tokenizer files beside \
                 the teacher or the data, no --vocab"
            );
            return Ok(None);
        }
    };
    let settings = match (&teacher, &data) {
        (Some((_, Ok(t))), _) => t.settings(),
        (_, Some(p)) => WordPieceTokenizer::from_tokenizer_json(p)
            .map_err(fail)?
            .settings(),
        _ => {
            eprintln!(
                "warning: {} comes without tokenizer settings; the export lowercases \
                 (transformers' default for BERT). If the model is cased, export with \
                 --tokenizer DIR (a directory with the model's tokenizer_config.json or \
                 tokenizer.json, or the data directory `tbc data` wrote)",
                vocab.display()
            );
            TokenizerSettings::UNCASED
        }
    };
    let t = WordPieceTokenizer::from_vocab(&vocab, settings).map_err(fail)?;
    TokenizerFiles::generate(&t, model_max_length)
        .map(Some)
        .map_err(fail)
}

/// A warning when the data at `data` was tokenized otherwise than the teacher's own tokenizer
/// does (other settings or another vocabulary): the model would train on ids it does not expect.
pub fn data_tokenizer_warning(teacher: &Path, data: &Path) -> Option<String> {
    let (dir, Ok(t)) = teacher_tokenizer(teacher)? else {
        return None;
    };
    let side = data_sidecar(data)?;
    let d = WordPieceTokenizer::from_tokenizer_json(&side).ok()?;
    let mut diffs = Vec::new();
    if t.settings() != d.settings() {
        diffs.push(format!(
            "the data was tokenized with \"{}\", the teacher's tokenizer does \"{}\"",
            d.settings().describe(),
            t.settings().describe()
        ));
    }
    let (tv, dv) = (t.vocab(), d.vocab());
    if tv != dv {
        let differing = tv.iter().filter(|(k, v)| dv.get(*k) != Some(v)).count()
            + dv.keys().filter(|k| !tv.contains_key(*k)).count();
        diffs.push(format!(
            "the vocabularies differ ({} vs {} tokens, {differing} entries differ)",
            dv.len(),
            tv.len()
        ));
    }
    (!diffs.is_empty()).then(|| {
        format!(
            "warning: {} does not match the teacher's tokenizer in {}: {}. Remake the data with \
             `tbc data ... --tokenizer {}`.",
            side.display(),
            dir.display(),
            diffs.join("; "),
            dir.display()
        )
    })
}

/// `max_position_embeddings` of a model config (transformers' default 512).
pub fn model_max_length(config: &serde_json::Value) -> usize {
    config["max_position_embeddings"].as_u64().unwrap_or(512) as usize
}
