//! BERT WordPiece tokenization through the `tokenizers` crate, and the tokenizer files that travel
//! with data and exported models.
//!
//! The tokenizer is part of the model: tbc takes its settings from the model's own files
//! (`tokenizer.json`, or `vocab.txt` + `tokenizer_config.json`), records the tokenizer that made
//! a data set beside the data ([`files::DATA_SIDECAR`]), and writes it into every export. It
//! never guesses casing from a vocabulary.
//!
//! A tokenizer built from a `vocab.txt` is Hugging Face's BertTokenizerFast, which reproduces
//! google-research/bert `FullTokenizer`: BertNormalizer (clean text, CJK characters split,
//! lowercase and accent stripping per the settings), BertPreTokenizer (whitespace and
//! punctuation), WordPiece (`##` continuation, `[UNK]`, words over 100 characters become
//! `[UNK]`), the special tokens as added tokens, and `[CLS] a [SEP] b [SEP]` post-processing.
//!
//! The crate is built with `default-features = false, features = ["fancy-regex"]`: pure Rust, no
//! Oniguruma C library, no progress bars, no C++ suffix-array trainer (none of which BERT needs).

pub mod files;

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::models::ModelWrapper;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Model, Tokenizer};

/// BERT's special tokens, in the order Hugging Face lists them.
pub const SPECIAL_TOKENS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// How BERT's basic tokenizer normalizes text, under the names of `tokenizer_config.json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenizerSettings {
    pub do_lower_case: bool,
    /// `None`: strip accents exactly when lowercasing (transformers' default).
    pub strip_accents: Option<bool>,
    pub tokenize_chinese_chars: bool,
}

impl TokenizerSettings {
    /// bert-base-uncased: lowercase, strip accents, split CJK characters.
    pub const UNCASED: TokenizerSettings = TokenizerSettings {
        do_lower_case: true,
        strip_accents: None,
        tokenize_chinese_chars: true,
    };
    /// bert-base-cased: keep case and accents.
    pub const CASED: TokenizerSettings = TokenizerSettings {
        do_lower_case: false,
        strip_accents: None,
        tokenize_chinese_chars: true,
    };

    pub fn strips_accents(&self) -> bool {
        self.strip_accents.unwrap_or(self.do_lower_case)
    }

    /// The settings a `tokenizer_config.json` states, with transformers' BertTokenizer defaults
    /// for absent keys (`do_lower_case` true, `strip_accents` null, `tokenize_chinese_chars` true).
    pub fn from_tokenizer_config(v: &serde_json::Value) -> TokenizerSettings {
        TokenizerSettings {
            do_lower_case: v["do_lower_case"].as_bool().unwrap_or(true),
            strip_accents: v["strip_accents"].as_bool(),
            tokenize_chinese_chars: v["tokenize_chinese_chars"].as_bool().unwrap_or(true),
        }
    }

    /// "lowercase, strip accents, split CJK" and the like, for messages.
    pub fn describe(&self) -> String {
        let mut parts = vec![if self.do_lower_case {
            "lowercase"
        } else {
            "keep case"
        }];
        parts.push(if self.strips_accents() {
            "strip accents"
        } else {
            "keep accents"
        });
        if !self.tokenize_chinese_chars {
            parts.push("no CJK split");
        }
        parts.join(", ")
    }

    fn normalizer(&self) -> BertNormalizer {
        BertNormalizer::new(
            true,
            self.tokenize_chinese_chars,
            self.strip_accents,
            self.do_lower_case,
        )
    }
}

/// A tokenizer file that cannot be read or is not a BERT WordPiece tokenizer.
#[derive(Debug, thiserror::Error)]
#[error("{}: {msg}", path.display())]
pub struct TokenizerError {
    pub path: PathBuf,
    pub msg: String,
}

fn err(path: &Path, msg: impl Into<String>) -> TokenizerError {
    TokenizerError {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// A BERT WordPiece tokenizer and where it came from.
pub struct WordPieceTokenizer {
    inner: Tokenizer,
    cls: u32,
    sep: u32,
    settings: TokenizerSettings,
    source: PathBuf,
}

impl WordPieceTokenizer {
    /// Hugging Face's BertTokenizerFast for `vocab.txt` (one token per line, id = line number, as
    /// BERT's `load_vocab`) with `settings`.
    pub fn from_vocab(
        path: &Path,
        settings: TokenizerSettings,
    ) -> Result<WordPieceTokenizer, TokenizerError> {
        let bytes =
            std::fs::read(path).map_err(|e| err(path, format!("cannot read vocabulary: {e}")))?;
        let vocab = WordPiece::read_bytes(&bytes)
            .map_err(|e| err(path, format!("not a vocabulary ({e})")))?;
        for t in ["[UNK]", "[CLS]", "[SEP]"] {
            if !vocab.contains_key(t) {
                return Err(err(path, format!("the vocabulary has no {t} token")));
            }
        }
        let special: Vec<AddedToken> = SPECIAL_TOKENS
            .iter()
            .filter(|t| vocab.contains_key(**t))
            .map(|t| AddedToken::from(*t, true))
            .collect();
        let (cls, sep) = (vocab["[CLS]"], vocab["[SEP]"]);
        let model = WordPiece::builder()
            .vocab(vocab)
            .unk_token("[UNK]".into())
            .continuing_subword_prefix("##".into())
            .max_input_chars_per_word(100)
            .build()
            .map_err(|e| err(path, e.to_string()))?;
        let post = TemplateProcessing::builder()
            .try_single("[CLS]:0 $A:0 [SEP]:0")
            .and_then(|b| b.try_pair("[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1"))
            .map_err(|e| err(path, e.to_string()))?
            .special_tokens(vec![("[CLS]", cls), ("[SEP]", sep)])
            .build()
            .map_err(|e| err(path, e.to_string()))?;
        let mut inner = Tokenizer::new(model);
        inner.with_normalizer(Some(settings.normalizer()));
        inner.with_pre_tokenizer(Some(BertPreTokenizer));
        inner.with_post_processor(Some(post));
        inner.with_decoder(Some(WordPieceDecoder::default()));
        inner.add_special_tokens(&special);
        Ok(WordPieceTokenizer {
            inner,
            cls,
            sep,
            settings,
            source: path.to_path_buf(),
        })
    }

    /// A model's `tokenizer.json`. It must be a WordPiece model with a BertNormalizer and the
    /// `[CLS]`/`[SEP]` tokens; its truncation and padding are switched off (tbc pads itself).
    pub fn from_tokenizer_json(path: &Path) -> Result<WordPieceTokenizer, TokenizerError> {
        let mut inner = Tokenizer::from_file(path)
            .map_err(|e| err(path, format!("not a tokenizer.json: {e}")))?;
        if !matches!(inner.get_model(), ModelWrapper::WordPiece(_)) {
            return Err(err(
                path,
                "not a WordPiece tokenizer (BERT models use WordPiece)",
            ));
        }
        let settings = match inner.get_normalizer() {
            Some(NormalizerWrapper::BertNormalizer(n)) => TokenizerSettings {
                do_lower_case: n.lowercase,
                strip_accents: n.strip_accents,
                tokenize_chinese_chars: n.handle_chinese_chars,
            },
            _ => {
                return Err(err(
                    path,
                    "its normalizer is not a BertNormalizer, so its casing is unknown to tbc",
                ))
            }
        };
        let id = |t: &str| {
            inner
                .token_to_id(t)
                .ok_or_else(|| err(path, format!("the vocabulary has no {t} token")))
        };
        let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
        inner
            .with_truncation(None)
            .map_err(|e| err(path, e.to_string()))?;
        inner.with_padding(None);
        Ok(WordPieceTokenizer {
            inner,
            cls,
            sep,
            settings,
            source: path.to_path_buf(),
        })
    }

    /// A model directory's tokenizer: `tokenizer.json` when present, else `vocab.txt` with the
    /// settings of `tokenizer_config.json`. Without either settings file it is an error: the
    /// casing would be a guess.
    pub fn from_dir(dir: &Path) -> Result<WordPieceTokenizer, TokenizerError> {
        let json = dir.join("tokenizer.json");
        if json.is_file() {
            return WordPieceTokenizer::from_tokenizer_json(&json);
        }
        let vocab = dir.join("vocab.txt");
        let config = dir.join("tokenizer_config.json");
        match (vocab.is_file(), config.is_file()) {
            (true, true) => {
                WordPieceTokenizer::from_vocab(&vocab, files::read_tokenizer_config(&config)?)
            }
            (true, false) => Err(err(
                dir,
                "has vocab.txt but neither tokenizer.json nor tokenizer_config.json, so its \
                 casing is unknown; use --vocab vocab.txt (uncased) or --vocab vocab.txt --cased",
            )),
            _ => Err(err(
                dir,
                "holds no tokenizer (tokenizer.json, or vocab.txt with tokenizer_config.json)",
            )),
        }
    }

    /// WordPiece ids of `text`, without special tokens.
    pub fn ids(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| err(&self.source, format!("cannot tokenize {text:?}: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// WordPiece ids of many texts (tokenized in parallel; the order is kept).
    pub fn ids_batch(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>, TokenizerError> {
        let encs = self
            .inner
            .encode_batch(texts.to_vec(), false)
            .map_err(|e| err(&self.source, format!("cannot tokenize: {e}")))?;
        Ok(encs.iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// WordPiece tokens of `text` (for messages and tests).
    pub fn tokens(&self, text: &str) -> Result<Vec<String>, TokenizerError> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| err(&self.source, format!("cannot tokenize {text:?}: {e}")))?;
        Ok(enc.get_tokens().to_vec())
    }

    /// The ids of `[CLS]` and `[SEP]`.
    pub fn cls_sep(&self) -> (u32, u32) {
        (self.cls, self.sep)
    }

    pub fn settings(&self) -> TokenizerSettings {
        self.settings
    }

    /// The file it was read from (`vocab.txt` or `tokenizer.json`).
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Token → id, special tokens included.
    pub fn vocab(&self) -> HashMap<String, u32> {
        self.inner.get_model().get_vocab()
    }

    /// `vocab.txt`: the tokens in id order, one a line. An id without a token (possible only in
    /// a hand-made tokenizer.json) is an error, since the line numbers would shift.
    pub fn vocab_txt(&self) -> Result<Vec<u8>, TokenizerError> {
        let vocab = self.vocab();
        let mut by_id = vec![None; vocab.len()];
        for (t, &i) in &vocab {
            match by_id.get_mut(i as usize) {
                Some(slot) => *slot = Some(t.as_str()),
                None => return Err(err(&self.source, format!("token id {i} is out of range"))),
            }
        }
        let mut out = Vec::new();
        for (i, t) in by_id.into_iter().enumerate() {
            let t = t.ok_or_else(|| err(&self.source, format!("no token has id {i}")))?;
            out.extend_from_slice(t.as_bytes());
            out.push(b'\n');
        }
        Ok(out)
    }

    /// The `tokenizer.json` text of this tokenizer (what transformers' fast tokenizer loads).
    pub fn to_json(&self) -> Result<String, TokenizerError> {
        self.inner
            .to_string(true)
            .map_err(|e| err(&self.source, format!("cannot serialize: {e}")))
    }
}

/// Tokens outside `[...]` with an upper-case letter, and all such tokens: a hint for a warning
/// when `--cased` or its absence contradicts the vocabulary. Never used to decide the casing.
pub fn upper_case_tokens(vocab: &HashMap<String, u32>) -> (usize, usize) {
    let words = vocab
        .keys()
        .filter(|t| !(t.starts_with('[') && t.ends_with(']')));
    let (mut upper, mut all) = (0, 0);
    for t in words {
        all += 1;
        upper += usize::from(t.chars().any(char::is_uppercase));
    }
    (upper, all)
}

/// The warning for a vocabulary whose look contradicts the requested casing, if any: an uncased
/// vocabulary (under 1 % tokens with upper case; bert-base-uncased has 2 of 30 522) used with
/// `cased`, or a cased one (over 5 %) lowercased.
pub fn casing_warning(vocab_path: &Path, tok: &WordPieceTokenizer) -> Option<String> {
    let (upper, all) = upper_case_tokens(&tok.vocab());
    let cased = !tok.settings().do_lower_case;
    if cased && upper * 100 < all {
        Some(format!(
            "warning: {} looks uncased (only {upper} of {all} tokens have upper-case letters), \
             but --cased keeps case: capitalised words will become [UNK] or pieces the model \
             never saw. Drop --cased, or use --tokenizer MODEL_DIR to take the model's own \
             settings.",
            vocab_path.display()
        ))
    } else if !cased && upper * 20 > all {
        Some(format!(
            "warning: {} looks cased ({upper} of {all} tokens have upper-case letters), but the \
             text is lowercased, so those tokens are never used. Pass --cased, or use \
             --tokenizer MODEL_DIR to take the model's own settings.",
            vocab_path.display()
        ))
    } else {
        None
    }
}
