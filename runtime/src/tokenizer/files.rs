//! Tokenizer files: the sidecar that records how a data set was tokenized, and the files an
//! export carries (`tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json`,
//! `vocab.txt`), copied from the model they came from or generated from the data's tokenizer.

use super::{err, TokenizerError, TokenizerSettings, WordPieceTokenizer, SPECIAL_TOKENS};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// The tokenizer that made a data set, written by `tbc data` into the data's directory: the
/// complete `tokenizer.json` (vocabulary and settings), so any tool can re-tokenize text exactly.
pub const DATA_SIDECAR: &str = "tokenizer.json";

/// The files of an exported tokenizer, in the order they are written.
pub const EXPORT_FILES: [&str; 4] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
];

/// The settings of a `tokenizer_config.json` file.
pub fn read_tokenizer_config(path: &Path) -> Result<TokenizerSettings, TokenizerError> {
    let text = std::fs::read_to_string(path).map_err(|e| err(path, format!("cannot read: {e}")))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| err(path, format!("not JSON: {e}")))?;
    if !v.is_object() {
        return Err(err(path, "not a JSON object"));
    }
    Ok(TokenizerSettings::from_tokenizer_config(&v))
}

/// The tokenizer files of an export and where they came from.
#[derive(Clone, Debug)]
pub struct TokenizerFiles {
    pub files: Vec<(&'static str, Vec<u8>)>,
    pub settings: TokenizerSettings,
    /// "copied from DIR" or "generated from FILE", for messages and the export's README.
    pub origin: String,
}

impl TokenizerFiles {
    /// A model directory's own tokenizer files, copied byte for byte; any of the four it lacks
    /// is generated from `tok`, the tokenizer the directory describes
    /// ([`WordPieceTokenizer::from_dir`]).
    pub fn copy_from_dir(
        dir: &Path,
        tok: &WordPieceTokenizer,
        model_max_length: usize,
    ) -> Result<TokenizerFiles, TokenizerError> {
        let generated = TokenizerFiles::generate(tok, model_max_length)?;
        let mut files = Vec::new();
        for (name, made) in generated.files {
            let p = dir.join(name);
            let bytes = if p.is_file() {
                std::fs::read(&p).map_err(|e| err(&p, format!("cannot read: {e}")))?
            } else {
                made
            };
            files.push((name, bytes));
        }
        Ok(TokenizerFiles {
            files,
            settings: tok.settings(),
            origin: format!("copied from {}", dir.display()),
        })
    }

    /// All four files generated from `tok`.
    pub fn generate(
        tok: &WordPieceTokenizer,
        model_max_length: usize,
    ) -> Result<TokenizerFiles, TokenizerError> {
        let mut json_text = tok.to_json()?.into_bytes();
        json_text.push(b'\n');
        let vocab = tok.vocab();
        let files = vec![
            ("tokenizer.json", json_text),
            (
                "tokenizer_config.json",
                pretty(&tokenizer_config(tok.settings(), model_max_length)),
            ),
            (
                "special_tokens_map.json",
                pretty(&special_tokens_map(|t| vocab.contains_key(t))),
            ),
            ("vocab.txt", tok.vocab_txt()?),
        ];
        Ok(TokenizerFiles {
            files,
            settings: tok.settings(),
            origin: format!("generated from {}", tok.source().display()),
        })
    }
}

fn pretty(v: &Value) -> Vec<u8> {
    let mut s = serde_json::to_vec_pretty(v).unwrap_or_default();
    s.push(b'\n');
    s
}

fn special_tokens_map(present: impl Fn(&str) -> bool) -> Value {
    let keys = [
        "pad_token",
        "unk_token",
        "cls_token",
        "sep_token",
        "mask_token",
    ];
    let map: serde_json::Map<String, Value> = keys
        .iter()
        .zip(SPECIAL_TOKENS)
        .filter(|(_, t)| present(t))
        .map(|(k, t)| (k.to_string(), json!(t)))
        .collect();
    Value::Object(map)
}

/// transformers' BertTokenizer configuration for `settings`.
fn tokenizer_config(settings: TokenizerSettings, model_max_length: usize) -> Value {
    let mut c = special_tokens_map(|_| true)
        .as_object()
        .cloned()
        .unwrap_or_default();
    for (k, v) in [
        ("tokenizer_class", json!("BertTokenizer")),
        ("do_lower_case", json!(settings.do_lower_case)),
        ("strip_accents", json!(settings.strip_accents)),
        (
            "tokenize_chinese_chars",
            json!(settings.tokenize_chinese_chars),
        ),
        ("model_max_length", json!(model_max_length)),
        ("clean_up_tokenization_spaces", json!(true)),
    ] {
        c.insert(k.into(), v);
    }
    Value::Object(c)
}

/// Where `tbc data` records the tokenizer of data written to `output`: its directory.
pub fn sidecar_for_output(output: &Path) -> PathBuf {
    match output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.join(DATA_SIDECAR),
        _ => PathBuf::from(DATA_SIDECAR),
    }
}

/// The recorded tokenizer of the data at `data` (a directory, or a file in one), if any.
pub fn data_sidecar(data: &Path) -> Option<PathBuf> {
    let dir = if data.is_dir() { data } else { data.parent()? };
    let p = dir.join(DATA_SIDECAR);
    p.is_file().then_some(p)
}

/// Files whose presence marks a directory as a model's (its `tokenizer.json` is the model's own).
const MODEL_FILES: [&str; 4] = [
    "config.json",
    "model.safetensors",
    "tokenizer_config.json",
    "vocab.txt",
];

/// What recording `tok` beside data written to `output` would do.
enum SidecarAction {
    /// The file already records this tokenizer.
    Keep,
    /// Write it (`Some`: a warning, it replaces another tokenizer's record).
    Write(Vec<u8>, Option<String>),
}

fn sidecar_action(path: &Path, tok: &WordPieceTokenizer) -> Result<SidecarAction, TokenizerError> {
    let same_file = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same_file(tok.source(), path) {
        // The data was tokenized with this very file: it already records the tokenizer.
        return Ok(SidecarAction::Keep);
    }
    let mut text = tok.to_json()?.into_bytes();
    text.push(b'\n');
    match std::fs::read(path) {
        Ok(old) if old == text => Ok(SidecarAction::Keep),
        Ok(_) => {
            let dir = path.parent().unwrap_or(Path::new("."));
            if let Some(f) = MODEL_FILES.iter().find(|f| dir.join(f).is_file()) {
                return Err(err(
                    path,
                    format!(
                        "belongs to the model in this directory (it has {f}) and differs from the \
                         tokenizer used; write the data to another directory"
                    ),
                ));
            }
            let warning = format!(
                "warning: replaced {}, which recorded another tokenizer: data written to this \
                 directory before was tokenized differently; keep data sets made with different \
                 tokenizers in different directories",
                path.display()
            );
            Ok(SidecarAction::Write(text, Some(warning)))
        }
        Err(_) => Ok(SidecarAction::Write(text, None)),
    }
}

/// Checks, before any data is written, that `tok` can be recorded beside `output` (a model
/// directory's own `tokenizer.json` is never replaced).
pub fn check_data_sidecar(output: &Path, tok: &WordPieceTokenizer) -> Result<(), TokenizerError> {
    sidecar_action(&sidecar_for_output(output), tok).map(|_| ())
}

/// Records `tok` beside data written to `output` (atomically). Returns a warning when it
/// replaced the record of a different tokenizer: data made earlier in that directory was
/// tokenized otherwise. A model directory's own `tokenizer.json` is never replaced: data written
/// into a model directory with another tokenizer is an error.
pub fn write_data_sidecar(
    output: &Path,
    tok: &WordPieceTokenizer,
) -> Result<Option<String>, TokenizerError> {
    let path = sidecar_for_output(output);
    let SidecarAction::Write(text, warning) = sidecar_action(&path, tok)? else {
        return Ok(None);
    };
    crate::tensor_io::write_atomic(&path, &text).map_err(|e| match e {
        crate::tensor_io::IoError::Write(_, msg) => err(&path, format!("cannot write: {msg}")),
        other => err(&path, other.to_string()),
    })?;
    Ok(warning)
}
