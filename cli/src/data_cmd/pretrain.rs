//! `tbc data pretrain`: plain text → general-distillation sequences (input_ids, input_mask,
//! segment_ids; no masking, since TinyBERT's gd reads no MLM labels).
//!
//! Packing rule (deterministic; N = `--max-seq-length`, budget B = N − 3):
//! 1. Documents are separated by blank (or whitespace-only) lines; the end of an input file also
//!    ends a document. Every other line is a sentence, tokenized on its own; a sentence longer
//!    than B tokens is cut into pieces of B tokens.
//! 2. A document's sentences are packed greedily in order: a chunk takes sentences while its total
//!    stays within B, and is closed by the next sentence that would not fit, or by the document's
//!    end. Chunks never span documents.
//! 3. A chunk of k ≥ 2 sentences becomes `[CLS] a [SEP] b [SEP]` with a = its first ⌈k/2⌉
//!    sentences and b = the rest (segment ids 0 and 1); one sentence of n ≥ 2 tokens is split at
//!    ⌈n/2⌉; a single token gives `[CLS] a [SEP]`. Rows are zero-padded to N.

use super::features;
use super::tokenizer::TokenizerArgs;
use super::{write_dataset, Output};
use anyhow::{bail, Context, Result};
use clap::Args;
use runtime::data::example::Example;
use std::collections::VecDeque;
use std::io::BufRead;
use std::path::{Path, PathBuf};

#[derive(Args, Debug, Clone)]
pub struct PretrainArgs {
    #[command(flatten)]
    pub tokenizer: TokenizerArgs,
    /// Sequence length of every row.
    #[arg(long, value_parser = runtime::flags::seq_length)]
    pub max_seq_length: usize,
    /// Text files: one sentence per line, documents separated by blank lines.
    #[arg(long, num_args = 1.., required = true)]
    pub input: Vec<PathBuf>,
    /// The TFRecord file to write.
    #[arg(long)]
    pub output: PathBuf,
    /// Where to write the schema (default: schema.json in the output's directory; give each
    /// output its own when several share a directory, since numRows differs).
    #[arg(long)]
    pub schema_out: Option<PathBuf>,
}

/// Packs sentences (token ids) into rows by the module's rule.
pub struct Packer {
    budget: usize,
    chunk: Vec<Vec<u32>>,
    len: usize,
}

impl Packer {
    /// `max_seq_length >= 4`, so the budget holds at least one token.
    pub fn new(max_seq_length: usize) -> Packer {
        Packer {
            budget: max_seq_length - 3,
            chunk: Vec::new(),
            len: 0,
        }
    }

    /// Adds one sentence; returns any (a, b) segment pairs it closed.
    pub fn sentence(&mut self, ids: Vec<u32>, out: &mut Vec<(Vec<u32>, Vec<u32>)>) {
        for piece in ids.chunks(self.budget) {
            if !self.chunk.is_empty() && self.len + piece.len() > self.budget {
                self.end_document(out);
            }
            self.len += piece.len();
            self.chunk.push(piece.to_vec());
        }
    }

    /// Closes the current chunk (at a document boundary).
    pub fn end_document(&mut self, out: &mut Vec<(Vec<u32>, Vec<u32>)>) {
        let chunk = std::mem::take(&mut self.chunk);
        self.len = 0;
        match chunk.len() {
            0 => {}
            1 => {
                let mut a = chunk.into_iter().next().unwrap_or_default();
                let b = a.split_off(a.len().div_ceil(2));
                out.push((a, b));
            }
            k => {
                let a_end = k.div_ceil(2);
                let a = chunk[..a_end].concat();
                let b = chunk[a_end..].concat();
                out.push((a, b));
            }
        }
    }
}

/// Lines tokenized per batch (the tokenizer runs a batch in parallel).
const BATCH_LINES: usize = 4096;

pub fn run(a: &PretrainArgs) -> Result<Output> {
    if a.max_seq_length < 4 {
        bail!("--max-seq-length must be at least 4 ([CLS] a [SEP] b [SEP] needs room)");
    }
    let mut inputs: Vec<&Path> = a.input.iter().map(|p| p.as_path()).collect();
    inputs.extend(a.tokenizer.vocab.as_deref());
    inputs.extend(a.tokenizer.tokenizer.as_deref());
    super::refuse_overwriting_inputs(&inputs, &a.output, a.schema_out.as_deref())?;
    let tokenizer = a.tokenizer.load()?;
    let tok = &tokenizer;
    // Open every input first, so a missing file fails before any work.
    let mut readers = VecDeque::new();
    for p in &a.input {
        let f = std::fs::File::open(p).with_context(|| format!("cannot read {}", p.display()))?;
        readers.push_back((p.clone(), std::io::BufReader::new(f).lines(), 0usize));
    }
    let ((cls, sep), n) = (tok.cls_sep(), a.max_seq_length);
    let mut packer = Packer::new(n);
    let mut ready: VecDeque<(Vec<u32>, Vec<u32>)> = VecDeque::new();
    // Reads a batch of lines, tokenizes them and packs; yields finished rows in order.
    let mut refill = move || -> Result<Option<(Vec<u32>, Vec<u32>)>> {
        while ready.is_empty() {
            let Some((path, lines, line_no)) = readers.front_mut() else {
                return Ok(None);
            };
            let mut batch: Vec<String> = Vec::with_capacity(BATCH_LINES);
            let mut eof = false;
            while batch.len() < BATCH_LINES {
                match lines.next() {
                    Some(l) => {
                        *line_no += 1;
                        batch.push(l.with_context(|| {
                            format!("cannot read {} (line {line_no})", path.display())
                        })?);
                    }
                    None => {
                        eof = true;
                        break;
                    }
                }
            }
            let texts: Vec<&str> = batch.iter().map(|s| s.trim()).collect();
            let ids = tok
                .ids_batch(&texts)
                .with_context(|| format!("cannot tokenize {}", path.display()))?;
            let mut out = Vec::new();
            for (text, ids) in texts.iter().zip(ids) {
                if text.is_empty() {
                    packer.end_document(&mut out);
                } else if !ids.is_empty() {
                    packer.sentence(ids, &mut out);
                }
            }
            if eof {
                packer.end_document(&mut out);
                readers.pop_front();
            }
            ready.extend(out);
        }
        Ok(ready.pop_front())
    };
    let examples =
        std::iter::from_fn(move || refill().transpose()).map(move |r| -> Result<Example> {
            let (seg_a, seg_b) = r?;
            let f = features::build(cls, sep, seg_a, Some(seg_b), n);
            Ok(features::example(&f, None))
        });
    write_dataset(&a.output, a.schema_out.as_deref(), n, None, tok, examples)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(n: usize, docs: &[&[usize]]) -> Vec<(usize, usize)> {
        let mut p = Packer::new(n);
        let mut out = Vec::new();
        let mut next = 0u32;
        for doc in docs {
            for &len in *doc {
                p.sentence((next..next + len as u32).collect(), &mut out);
                next += len as u32;
            }
            p.end_document(&mut out);
        }
        out.iter().map(|(a, b)| (a.len(), b.len())).collect()
    }

    #[test]
    fn packing_rule() {
        // Budget 7: [3, 3] fits (6), the next 2 does not -> new chunk.
        assert_eq!(pack(10, &[&[3, 3, 2, 1]]), [(3, 3), (2, 1)]);
        // Three sentences: a = first two.
        assert_eq!(pack(10, &[&[2, 2, 2]]), [(4, 2)]);
        // One sentence splits at ceil(n/2); one token has no b.
        assert_eq!(pack(10, &[&[5], &[1]]), [(3, 2), (1, 0)]);
        // A long sentence is cut into budget-sized pieces; chunks never span documents.
        assert_eq!(pack(10, &[&[16], &[2]]), [(4, 3), (4, 3), (1, 1), (1, 1)]);
    }
}
