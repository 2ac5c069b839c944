//! `tbc data`: make the TFRecord files the trainer reads (the seed's format: `tf.train.Example`s
//! with int64 input_ids/input_mask/segment_ids[/label_ids], plus MindSpore's `schema.json`).
//!
//! - `tbc data glue`: a GLUE or user TSV → classification features ([`glue`]).
//! - `tbc data pretrain`: plain text → general-distillation sequences ([`pretrain`]).
//!
//! Both take the tokenizer from `--tokenizer MODEL_DIR` or `--vocab FILE [--cased]`
//! ([`tokenizer`]) and record it as `tokenizer.json` beside the data.

pub mod features;
pub mod glue;
pub mod pretrain;
pub mod tokenizer;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use runtime::data::example::Example;
use runtime::data::schema::{ColumnType, Schema};
use runtime::data::tfrecord::AtomicFileWriter;
use runtime::tokenizer::files;
use runtime::tokenizer::WordPieceTokenizer;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct DataArgs {
    #[command(subcommand)]
    pub command: DataCommand,
}

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// GLUE (or any) TSV → TFRecord of BERT classification features + schema.json.
    Glue(glue::GlueArgs),
    /// Plain text → TFRecord of general-distillation sequences + schema.json.
    Pretrain(pretrain::PretrainArgs),
}

/// What a conversion wrote.
#[derive(Debug)]
pub struct Output {
    pub rows: u64,
    pub output: PathBuf,
    pub schema: PathBuf,
    /// The recorded tokenizer (`tokenizer.json` beside the data).
    pub tokenizer: PathBuf,
}

pub fn run(a: &DataArgs) -> Result<()> {
    let out = match &a.command {
        DataCommand::Glue(g) => glue::run(g)?,
        DataCommand::Pretrain(p) => pretrain::run(p)?,
    };
    println!("wrote {} rows to {}", out.rows, out.output.display());
    println!("schema: {}", out.schema.display());
    println!("tokenizer: {}", out.tokenizer.display());
    Ok(())
}

/// `schema.json` in the output's directory unless `--schema-out` says otherwise. (Its name must
/// not contain "record", or a directory scan would take it for data.)
fn schema_path(output: &Path, schema_out: Option<&Path>) -> PathBuf {
    match schema_out {
        Some(p) => p.to_path_buf(),
        None => match output.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.join("schema.json"),
            _ => PathBuf::from("schema.json"),
        },
    }
}

/// Writes the examples atomically, then the schema: the three sequence columns of `seq_len`, and
/// `label_ids` (+ `is_real_example`) when `float_label` is `Some` (`true`: a float label); then
/// records the tokenizer beside the data.
fn write_dataset(
    output: &Path,
    schema_out: Option<&Path>,
    seq_len: usize,
    float_label: Option<bool>,
    tokenizer: &WordPieceTokenizer,
    examples: impl Iterator<Item = Result<Example>>,
) -> Result<Output> {
    if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the directory {}", dir.display()))?;
    }
    files::check_data_sidecar(output, tokenizer)?;
    let mut w = AtomicFileWriter::create(output)?;
    for ex in examples {
        w.write_record(&ex?.encode())?;
    }
    let rows = w.finish()?;
    let mut cols = vec![
        ("input_ids", ColumnType::Int64, seq_len),
        ("input_mask", ColumnType::Int64, seq_len),
        ("segment_ids", ColumnType::Int64, seq_len),
    ];
    if let Some(float) = float_label {
        let ty = if float {
            ColumnType::Float32
        } else {
            ColumnType::Int64
        };
        cols.push(("label_ids", ty, 1));
        cols.push(("is_real_example", ColumnType::Int64, 1));
    }
    let schema = schema_path(output, schema_out);
    Schema::new(Some(rows), &cols)
        .write(&schema)
        .with_context(|| format!("wrote {}, but not its schema", output.display()))?;
    if let Some(w) = files::write_data_sidecar(output, tokenizer)
        .with_context(|| format!("wrote {}, but not its tokenizer", output.display()))?
    {
        eprintln!("{w}");
    }
    Ok(Output {
        rows,
        output: output.to_path_buf(),
        schema,
        tokenizer: files::sidecar_for_output(output),
    })
}

/// Refuses a data file or schema output that would replace one of `inputs` (the shared rule,
/// `runtime::train::run_guard::refuse_output_over_inputs`). A tokenizer directory counts by the
/// files it holds, so data may still be written into a model directory.
pub fn refuse_overwriting_inputs(
    inputs: &[&Path],
    output: &Path,
    schema_out: Option<&Path>,
) -> Result<()> {
    use runtime::train::run_guard::refuse_output_over_inputs;
    let mut files: Vec<PathBuf> = Vec::new();
    for &input in inputs {
        if input.is_dir() {
            files.extend(["tokenizer.json", "vocab.txt"].map(|f| input.join(f)));
        } else {
            files.push(input.to_path_buf());
        }
    }
    let files: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    refuse_output_over_inputs("--output", output, &files).map_err(anyhow::Error::msg)?;
    if let Some(schema) = schema_out {
        refuse_output_over_inputs("--schema-out", schema, &files).map_err(anyhow::Error::msg)?;
    }
    Ok(())
}
