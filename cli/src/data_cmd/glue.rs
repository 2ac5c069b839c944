//! `tbc data glue`: a GLUE (or user) TSV file → TFRecord of BERT features + `schema.json`, the
//! features google-research/bert `run_classifier.py` `file_based_convert_examples_to_features`
//! writes (see [`super::features`]).
//!
//! Column choice per task (0-based; the first line is a header unless noted), from the processors
//! of `run_classifier.py` (MNLI, MRPC, CoLA), BERT PR #327 (SST-2), the MindSpore TinyBERT README
//! (QNLI) and TinyBERT's `task_distill.py` (QQP, RTE, STS-B):
//!
//! | task  | text_a | text_b | label | labels | test split (`--test`) |
//! |-------|--------|--------|-------|--------|-----------------------|
//! | MNLI  | 8 | 9 | last | contradiction, entailment, neutral | a 8, b 9 |
//! | MRPC  | 3 | 4 | 0 | 0, 1 | a 3, b 4 |
//! | CoLA  | 3 | – | 1 | 0, 1 (train/dev have **no header**) | header, a 1 |
//! | SST-2 | 0 | – | 1 | 0, 1 | a 1 |
//! | QNLI  | 1 | 2 | last | entailment, not_entailment | a 1, b 2 |
//! | QQP   | 3 | 4 | 5 | 0, 1 (lines with too few columns are skipped, as task_distill.py) | a 1, b 2 |
//! | RTE   | 1 | 2 | last | entailment, not_entailment | a 1, b 2 |
//! | STS-B | 7 | 8 | last | a float score, written as a `float_list` `label_ids` | a 7, b 8 |
//!
//! A test split has no labels: like `run_classifier.py`, every row gets the first label (0.0 for
//! STS-B). `run_classifier.py` has no STS-B processor; tbc writes its float label in a
//! `float_list`, which the trainer reads as f32. `--task tsv` is for user data: the columns, the
//! header and the labels are given on the command line. TSV lines are split on tabs with no
//! quoting (as `csv.reader(delimiter="\t", quotechar=None)`); empty lines are skipped.

use super::features::{self, Label};
use super::tokenizer::TokenizerArgs;
use super::{write_dataset, Output};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Args, Debug, Clone)]
pub struct GlueArgs {
    /// SST-2, QNLI, MNLI, CoLA, MRPC, QQP, RTE, STS-B, or tsv (columns given by the flags below).
    #[arg(long)]
    pub task: String,
    #[command(flatten)]
    pub tokenizer: TokenizerArgs,
    /// Sequence length of every row (padded with zeros).
    #[arg(long, value_parser = runtime::flags::seq_length)]
    pub max_seq_length: usize,
    /// The TSV file (e.g. MNLI's dev_matched.tsv).
    #[arg(long)]
    pub input: PathBuf,
    /// The TFRecord file to write.
    #[arg(long)]
    pub output: PathBuf,
    /// Label names in id order, comma-separated (overrides the task's list).
    #[arg(long, value_delimiter = ',')]
    pub labels: Option<Vec<String>>,
    /// The input is a GLUE test split (no labels): every row gets the first label.
    #[arg(long)]
    pub test: bool,
    /// Where to write the schema (default: schema.json in the output's directory; give each
    /// output its own when several share a directory, since numRows differs).
    #[arg(long)]
    pub schema_out: Option<PathBuf>,
    /// tsv: column of the first text (0-based; negative counts from the end).
    #[arg(long, allow_hyphen_values = true)]
    pub text_a_column: Option<i64>,
    /// tsv: column of the second text, for sentence pairs.
    #[arg(long, allow_hyphen_values = true)]
    pub text_b_column: Option<i64>,
    /// tsv: column of the label.
    #[arg(long, allow_hyphen_values = true)]
    pub label_column: Option<i64>,
    /// tsv: the first line is a header.
    #[arg(long)]
    pub skip_header: bool,
    /// tsv: the label is a number (regression), written as a float.
    #[arg(long)]
    pub float_label: bool,
}

/// Where a task's fields are in each line.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    pub skip_header: bool,
    pub text_a: i64,
    pub text_b: Option<i64>,
    /// `None`: no label column (test split).
    pub label: Option<i64>,
    /// Class names in id order; empty for a float label.
    pub labels: Vec<String>,
    /// Skip lines that lack a column instead of failing (QQP).
    pub skip_short_lines: bool,
}

const LAST: i64 = -1;

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The layout of a GLUE task (`test`: the test split), or of `--task tsv` from the flags.
pub fn layout(a: &GlueArgs) -> Result<Layout> {
    let key = a.task.to_ascii_lowercase().replace(['-', '_'], "");
    let pair = |b, c, l, labels: &[&str]| Layout {
        skip_header: true,
        text_a: b,
        text_b: Some(c),
        label: Some(l),
        labels: strings(labels),
        skip_short_lines: false,
    };
    let nli3 = ["contradiction", "entailment", "neutral"];
    let nli2 = ["entailment", "not_entailment"];
    let mut l = match (key.as_str(), a.test) {
        ("mnli", _) => pair(8, 9, LAST, &nli3),
        ("mrpc", _) => pair(3, 4, 0, &["0", "1"]),
        ("qnli" | "rte", _) => pair(1, 2, LAST, &nli2),
        ("qqp", false) => Layout {
            skip_short_lines: true,
            ..pair(3, 4, 5, &["0", "1"])
        },
        ("qqp", true) => pair(1, 2, LAST, &["0", "1"]),
        ("stsb", _) => pair(7, 8, LAST, &[]),
        ("cola", false) => Layout {
            skip_header: false,
            text_a: 3,
            text_b: None,
            label: Some(1),
            labels: strings(&["0", "1"]),
            skip_short_lines: false,
        },
        ("cola", true) => Layout {
            text_b: None,
            ..pair(1, 0, LAST, &["0", "1"])
        },
        ("sst2", test) => Layout {
            text_b: None,
            ..pair(if test { 1 } else { 0 }, 0, 1, &["0", "1"])
        },
        ("tsv", _) => tsv_layout(a)?,
        _ => bail!(
            "unknown task '{}': use SST-2, QNLI, MNLI, CoLA, MRPC, QQP, RTE, STS-B or tsv",
            a.task
        ),
    };
    if key != "tsv" {
        for (flag, set) in [
            ("--text-a-column", a.text_a_column.is_some()),
            ("--text-b-column", a.text_b_column.is_some()),
            ("--label-column", a.label_column.is_some()),
            ("--skip-header", a.skip_header),
            ("--float-label", a.float_label),
        ] {
            if set {
                bail!(
                    "{flag} is only for --task tsv; {} has fixed columns",
                    a.task
                );
            }
        }
        if let Some(labels) = &a.labels {
            if key == "stsb" {
                bail!("STS-B has a float label; --labels does not apply");
            }
            l.labels = labels.clone();
        }
    }
    if a.test {
        l.label = None;
    }
    Ok(l)
}

fn tsv_layout(a: &GlueArgs) -> Result<Layout> {
    let text_a = a
        .text_a_column
        .context("--task tsv needs --text-a-column (0-based)")?;
    let labels = match (&a.labels, a.float_label) {
        (Some(_), true) => bail!("--labels and --float-label exclude each other"),
        (Some(l), false) => l.clone(),
        (None, true) => Vec::new(),
        (None, false) => bail!("--task tsv needs --labels a,b,... (or --float-label)"),
    };
    let label = match (a.label_column, a.test) {
        (Some(c), _) => Some(c),
        (None, true) => None,
        (None, false) => bail!("--task tsv needs --label-column (or --test for unlabelled data)"),
    };
    Ok(Layout {
        skip_header: a.skip_header,
        text_a,
        text_b: a.text_b_column,
        label,
        labels,
        skip_short_lines: false,
    })
}

/// One parsed line.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// 1-based line number in the input, for messages.
    pub line: usize,
    pub text_a: String,
    pub text_b: Option<String>,
    pub label: Label,
}

fn column<'a>(cols: &[&'a str], c: i64) -> Option<&'a str> {
    let i = if c < 0 { cols.len() as i64 + c } else { c };
    usize::try_from(i).ok().and_then(|i| cols.get(i).copied())
}

/// Parses the TSV text with a layout; returns the rows and the number of skipped short lines.
pub fn parse_rows(text: &str, l: &Layout, input: &Path) -> Result<(Vec<Row>, usize)> {
    let mut rows = Vec::new();
    let mut skipped = 0;
    // With a header, a line with fewer columns would shift the columns counted from the end
    // (MNLI's label is the last one): it is an error (or skipped, for QQP's broken lines).
    let mut header_columns = None;
    for (i, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if i == 0 && l.skip_header {
            header_columns = Some(line.split('\t').count());
            continue;
        }
        if line.is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        if let Some(n) = header_columns.filter(|&n| cols.len() < n) {
            if l.skip_short_lines {
                skipped += 1;
                continue;
            }
            bail!(
                "{}:{}: the line has {} column(s) but the header has {n}",
                input.display(),
                i + 1,
                cols.len()
            );
        }
        let get = |c: i64, what: &str| {
            column(&cols, c).with_context(|| {
                format!(
                    "{}:{}: {what} is column {c}, but the line has {} column(s)",
                    input.display(),
                    i + 1,
                    cols.len()
                )
            })
        };
        let parsed = (|| -> Result<Row> {
            let text_a = get(l.text_a, "text_a")?.to_string();
            let text_b = l
                .text_b
                .map(|c| get(c, "text_b"))
                .transpose()?
                .map(str::to_string);
            let label = match l.label {
                None if l.labels.is_empty() => Label::Score(0.0),
                None => Label::Class(0),
                Some(c) => label_of(get(c, "the label")?, l, input, i + 1)?,
            };
            Ok(Row {
                line: i + 1,
                text_a,
                text_b,
                label,
            })
        })();
        match parsed {
            Ok(r) => rows.push(r),
            Err(_) if l.skip_short_lines && cols.len() < 6 => skipped += 1,
            Err(e) => return Err(e),
        }
    }
    Ok((rows, skipped))
}

fn label_of(s: &str, l: &Layout, input: &Path, line: usize) -> Result<Label> {
    if l.labels.is_empty() {
        let v: f32 = s
            .trim()
            .parse()
            .with_context(|| format!("{}:{line}: label '{s}' is not a number", input.display()))?;
        if !v.is_finite() {
            bail!(
                "{}:{line}: label '{s}' is not a finite number (a float32 score is expected)",
                input.display()
            );
        }
        return Ok(Label::Score(v));
    }
    match l.labels.iter().position(|x| x == s) {
        Some(i) => Ok(Label::Class(i as i64)),
        None => bail!(
            "{}:{line}: label '{s}' is not one of [{}] (set the list with --labels)",
            input.display(),
            l.labels.join(", ")
        ),
    }
}

pub fn run(a: &GlueArgs) -> Result<Output> {
    if a.max_seq_length < 3 {
        bail!("--max-seq-length must be at least 3 ([CLS] a [SEP] b [SEP] needs room)");
    }
    let l = layout(a)?;
    let mut inputs = vec![a.input.as_path()];
    inputs.extend(a.tokenizer.vocab.as_deref());
    inputs.extend(a.tokenizer.tokenizer.as_deref());
    super::refuse_overwriting_inputs(&inputs, &a.output, a.schema_out.as_deref())?;
    let tok = a.tokenizer.load()?;
    let text = std::fs::read_to_string(&a.input)
        .with_context(|| format!("cannot read {}", a.input.display()))?;
    let (rows, skipped) = parse_rows(&text, &l, &a.input)?;
    if rows.is_empty() {
        bail!("{}: no data rows", a.input.display());
    }
    if skipped > 0 {
        eprintln!(
            "{}: skipped {skipped} line(s) with too few columns",
            a.input.display()
        );
    }
    let (cls, sep) = tok.cls_sep();
    let float = l.labels.is_empty();
    let examples = rows.iter().map(|r| {
        let ids_a = tok
            .ids(&r.text_a)
            .with_context(|| format!("{}:{}", a.input.display(), r.line))?;
        // run_classifier: `if example.text_b:` — an empty text is no second segment.
        let ids_b = match r.text_b.as_deref() {
            Some(t) if !t.is_empty() => Some(
                tok.ids(t)
                    .with_context(|| format!("{}:{}", a.input.display(), r.line))?,
            ),
            _ => None,
        };
        let f = features::build(cls, sep, ids_a, ids_b, a.max_seq_length);
        Ok(features::example(&f, Some(r.label)))
    });
    write_dataset(
        &a.output,
        a.schema_out.as_deref(),
        a.max_seq_length,
        Some(float),
        &tok,
        examples,
    )
}
