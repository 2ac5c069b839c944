//! `tbc data pretrain`: packing plain text into gd rows, deterministic, readable by the trainer.

use cli::data_cmd::pretrain::{self, PretrainArgs};
use cli::data_cmd::tokenizer::TokenizerArgs;
use runtime::data::{Dataset, Order, Shard};
use runtime::tokenizer::{TokenizerSettings, WordPieceTokenizer};
use std::path::{Path, PathBuf};

fn vocab() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tokenizer/vocab.txt")
}

const DOC: &str = "The first sentence of the first document.\n\
Another short sentence follows here.\n\
A third one, to fill the chunk.\n\
\n   \n\
Second document, single line.\n";

fn args(inputs: Vec<PathBuf>, out: &Path, n: usize) -> PretrainArgs {
    PretrainArgs {
        tokenizer: TokenizerArgs::vocab(vocab(), false),
        max_seq_length: n,
        input: inputs,
        output: out.into(),
        schema_out: None,
    }
}

#[test]
fn packs_documents_into_pairs() {
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("a.txt");
    std::fs::write(&a, DOC).unwrap();
    let b = d.path().join("b.txt");
    std::fs::write(&b, "One more file without a trailing newline").unwrap();
    let out = d.path().join("gd.tfrecord");
    let n = 24;
    let w = pretrain::run(&args(vec![a.clone(), b.clone()], &out, n)).unwrap();

    let tok = WordPieceTokenizer::from_vocab(&vocab(), TokenizerSettings::UNCASED).unwrap();
    let ids = |t: &str| {
        tok.ids(t)
            .unwrap()
            .into_iter()
            .map(i64::from)
            .collect::<Vec<_>>()
    };
    let lines: Vec<&str> = DOC.lines().collect();
    let (l0, l1, l2) = (ids(lines[0]), ids(lines[1]), ids(lines[2]));
    // Budget 21: l0 + l1 fit, l2 does not -> one chunk of two sentences; then l2 alone; the
    // second document; the second file.
    assert!(l0.len() + l1.len() <= n - 3 && l0.len() + l1.len() + l2.len() > n - 3);
    assert_eq!(w.rows, 4);

    let ds = Dataset::open(
        &out,
        Some(&w.schema),
        &["input_ids", "input_mask", "segment_ids"],
        n,
    )
    .unwrap();
    assert_eq!(ds.num_rows(), 4);
    let batch = ds
        .batch(Order::Sequential, 0, 0, 4, Shard::single())
        .unwrap();
    let to_i = |name: &str| -> Vec<Vec<i64>> {
        batch.columns[name]
            .to_f64()
            .chunks(n)
            .map(|c| c.iter().map(|&x| x as i64).collect())
            .collect()
    };
    let (rows, masks, segs) = (to_i("input_ids"), to_i("input_mask"), to_i("segment_ids"));
    let (cls, sep) = (101, 102);
    let row = |a: &[i64], b: &[i64]| {
        let mut r = vec![cls];
        r.extend(a);
        r.push(sep);
        let seg_a = r.len();
        if !b.is_empty() {
            r.extend(b);
            r.push(sep);
        }
        let real = r.len();
        r.resize(n, 0);
        (r, real, seg_a)
    };
    let half = |v: &[i64]| {
        let k = v.len().div_ceil(2);
        (v[..k].to_vec(), v[k..].to_vec())
    };
    let (l2a, l2b) = half(&l2);
    let doc2 = ids(lines[5]);
    let (d2a, d2b) = half(&doc2);
    let file2 = ids("One more file without a trailing newline");
    let (f2a, f2b) = half(&file2);
    let want = [
        row(&l0, &l1),
        row(&l2a, &l2b),
        row(&d2a, &d2b),
        row(&f2a, &f2b),
    ];
    for (i, (r, real, seg_a)) in want.iter().enumerate() {
        assert_eq!(rows[i], *r, "row {i}");
        let mask: Vec<i64> = (0..n).map(|k| (k < *real) as i64).collect();
        assert_eq!(masks[i], mask, "row {i}");
        let seg: Vec<i64> = (0..n).map(|k| (k >= *seg_a && k < *real) as i64).collect();
        assert_eq!(segs[i], seg, "row {i}");
    }

    // Deterministic: the same inputs give the same bytes.
    let out2 = d.path().join("gd2.tfrecord");
    let mut a2 = args(vec![a, b], &out2, n);
    a2.schema_out = Some(d.path().join("gd2_schema.json"));
    pretrain::run(&a2).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&out2).unwrap());
}

#[test]
fn long_lines_are_cut_not_dropped() {
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("long.txt");
    let words: Vec<String> = (0..50).map(|i| format!("word{i}")).collect();
    std::fs::write(&a, words.join(" ")).unwrap();
    // The output's directory is created.
    let out = d.path().join("new/dir/gd.tfrecord");
    let n = 16;
    let w = pretrain::run(&args(vec![a.clone()], &out, n)).unwrap();
    let tok = WordPieceTokenizer::from_vocab(&vocab(), TokenizerSettings::UNCASED).unwrap();
    let total = tok
        .ids(&std::fs::read_to_string(&a).unwrap())
        .unwrap()
        .len();
    let ds = Dataset::open(&out, Some(&w.schema), &["input_ids", "input_mask"], n).unwrap();
    let rows = ds.num_rows();
    let b = ds
        .batch(Order::Sequential, 0, 0, rows, Shard::single())
        .unwrap();
    let real: f64 = b.columns["input_mask"].to_f64().iter().sum();
    // Every token is kept, in pieces of n - 3 = 13: real positions = tokens + 3 specials per
    // row, less one when the last piece is a single token (no second segment).
    assert_eq!(rows, total.div_ceil(n - 3));
    let single_token_tail = (total % (n - 3) == 1) as usize;
    assert_eq!(real as usize, total + 3 * rows - single_token_tail);
}

#[test]
fn errors() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("gd.tfrecord");
    let e = format!(
        "{:#}",
        pretrain::run(&args(vec![d.path().join("nope.txt")], &out, 16)).unwrap_err()
    );
    assert!(e.contains("cannot read") && e.contains("nope.txt"), "{e}");
    let a = d.path().join("a.txt");
    std::fs::write(&a, "text").unwrap();
    let e = format!("{:#}", pretrain::run(&args(vec![a], &out, 3)).unwrap_err());
    assert!(e.contains("at least 4"), "{e}");
    assert!(!out.exists());
}
