//! BERT WordPiece tokenization from a `vocab.txt`, through the `tokenizers` crate: BertNormalizer
//! (clean text, CJK characters split, lowercase and accent stripping unless cased),
//! BertPreTokenizer (whitespace and punctuation), WordPiece (`##` continuation, `[UNK]`, words over
//! 100 characters become `[UNK]`). This is Hugging Face's BertTokenizerFast, which reproduces
//! google-research/bert `FullTokenizer`.
//!
//! The crate is built with `default-features = false, features = ["fancy-regex"]`: pure Rust, no
//! Oniguruma C library, no progress bars, no C++ suffix-array trainer (none of which BERT needs).

use anyhow::{anyhow, Context, Result};
use std::path::Path;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::Tokenizer;

pub struct BertTokenizer {
    inner: Tokenizer,
    cls: u32,
    sep: u32,
}

impl BertTokenizer {
    /// Reads `vocab.txt` (one token per line, id = line number, as BERT's `load_vocab`).
    /// `cased` turns off both lowercasing and accent stripping (BERT's `do_lower_case=False`).
    pub fn from_vocab(path: &Path, cased: bool) -> Result<BertTokenizer> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read vocabulary {}", path.display()))?;
        let vocab = WordPiece::read_bytes(&bytes)
            .map_err(|e| anyhow!("{}: not a vocabulary ({e})", path.display()))?;
        let id = |t: &str| match vocab.get(t) {
            Some(&i) => Ok(i),
            None => Err(anyhow!(
                "{}: the vocabulary has no {t} token",
                path.display()
            )),
        };
        let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
        id("[UNK]")?;
        let model = WordPiece::builder()
            .vocab(vocab)
            .unk_token("[UNK]".into())
            .continuing_subword_prefix("##".into())
            .max_input_chars_per_word(100)
            .build()
            .map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let mut inner = Tokenizer::new(model);
        let lower = !cased;
        inner.with_normalizer(Some(BertNormalizer::new(true, true, Some(lower), lower)));
        inner.with_pre_tokenizer(Some(BertPreTokenizer));
        Ok(BertTokenizer { inner, cls, sep })
    }

    /// WordPiece ids of `text`, without special tokens.
    pub fn ids(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| anyhow!("cannot tokenize {text:?}: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// WordPiece ids of many texts (tokenized in parallel; the order is kept).
    pub fn ids_batch(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        let encs = self
            .inner
            .encode_batch(texts.to_vec(), false)
            .map_err(|e| anyhow!("{e}"))?;
        Ok(encs.iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// WordPiece tokens of `text` (for messages and tests).
    pub fn tokens(&self, text: &str) -> Result<Vec<String>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| anyhow!("cannot tokenize {text:?}: {e}"))?;
        Ok(enc.get_tokens().to_vec())
    }

    /// The ids of `[CLS]` and `[SEP]`.
    pub fn cls_sep(&self) -> (u32, u32) {
        (self.cls, self.sep)
    }
}
