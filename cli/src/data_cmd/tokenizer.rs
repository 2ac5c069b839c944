//! The tokenizer of `tbc data glue|pretrain`: the model's own (`--tokenizer DIR`) or a bare
//! vocabulary (`--vocab FILE [--cased]`). The tokenizer used is recorded beside the data
//! (`runtime::tokenizer::files::DATA_SIDECAR`) so the trainer and every export know it.

use anyhow::{bail, Result};
use clap::Args;
use runtime::tokenizer::{casing_warning, TokenizerSettings, WordPieceTokenizer};
use std::path::PathBuf;

#[derive(Args, Debug, Clone, Default)]
pub struct TokenizerArgs {
    /// The model's directory: its tokenizer.json, else vocab.txt with the settings of its
    /// tokenizer_config.json (do_lower_case, strip_accents, tokenize_chinese_chars).
    #[arg(long, conflicts_with_all = ["vocab", "cased"], required_unless_present = "vocab")]
    pub tokenizer: Option<PathBuf>,
    /// A bare BERT vocabulary (one token per line), lowercased unless --cased.
    #[arg(long)]
    pub vocab: Option<PathBuf>,
    /// With --vocab: keep case and accents (for cased vocabularies); the default lowercases and
    /// strips accents.
    #[arg(long, requires = "vocab")]
    pub cased: bool,
}

impl TokenizerArgs {
    /// A bare vocabulary with the given casing.
    pub fn vocab(path: PathBuf, cased: bool) -> TokenizerArgs {
        TokenizerArgs {
            tokenizer: None,
            vocab: Some(path),
            cased,
        }
    }

    /// The tokenizer these arguments name; a vocabulary whose look contradicts `--cased` (or
    /// its absence) is a warning on stderr.
    pub fn load(&self) -> Result<WordPieceTokenizer> {
        match (&self.tokenizer, &self.vocab) {
            (Some(dir), None) => Ok(WordPieceTokenizer::from_dir(dir)?),
            (None, Some(v)) => {
                let settings = if self.cased {
                    TokenizerSettings::CASED
                } else {
                    TokenizerSettings::UNCASED
                };
                let tok = WordPieceTokenizer::from_vocab(v, settings)?;
                if let Some(w) = casing_warning(v, &tok) {
                    eprintln!("{w}");
                }
                Ok(tok)
            }
            _ => bail!("give --tokenizer MODEL_DIR or --vocab VOCAB_FILE"),
        }
    }
}
