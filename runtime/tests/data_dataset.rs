//! The batched dataset: file selection, numRows, column checks, drop_remainder, sharding,
//! shuffling and resume by (epoch, batch).

use plan::ElemType;
use runtime::data::example::{Example, Feature};
use runtime::data::schema::{ColumnType, Schema};
use runtime::data::tfrecord::AtomicFileWriter;
use runtime::data::{Batch, Dataset, Order, Shard};
use std::collections::BTreeMap;
use std::path::Path;

const SEQ: usize = 4;
const COLS: [&str; 4] = ["input_ids", "input_mask", "segment_ids", "label_ids"];

/// Row `r` has input_ids = [100r, 100r+1, ...], label r % 3.
fn row(r: i64) -> BTreeMap<String, Feature> {
    let mut f = BTreeMap::new();
    f.insert(
        "input_ids".into(),
        Feature::Int64((0..SEQ as i64).map(|k| 100 * r + k).collect()),
    );
    f.insert("input_mask".into(), Feature::Int64(vec![1; SEQ]));
    f.insert("segment_ids".into(), Feature::Int64(vec![0, 0, 1, 1]));
    f.insert("label_ids".into(), Feature::Int64(vec![r % 3]));
    f
}

fn write_rows(path: &Path, rows: impl IntoIterator<Item = BTreeMap<String, Feature>>) {
    let mut w = AtomicFileWriter::create(path).unwrap();
    for features in rows {
        w.write_record(&Example { features }.encode()).unwrap();
    }
    w.finish().unwrap();
}

/// The row number a batch's rows came from (input_ids[0] / 100).
fn rows_of(b: &Batch) -> Vec<i64> {
    let t = &b.columns["input_ids"];
    t.to_f64()
        .chunks(SEQ)
        .map(|c| (c[0] / 100.0) as i64)
        .collect()
}

fn dataset(n: i64) -> (tempfile::TempDir, Dataset) {
    let dir = tempfile::tempdir().unwrap();
    write_rows(&dir.path().join("train.tfrecord"), (0..n).map(row));
    let ds = Dataset::open(dir.path(), None, &COLS, SEQ).unwrap();
    (dir, ds)
}

#[test]
fn batch_layout_and_values() {
    let (_d, ds) = dataset(5);
    let b = ds
        .batch(Order::Sequential, 0, 1, 2, Shard::single())
        .unwrap();
    assert_eq!(
        b.columns.keys().collect::<Vec<_>>(),
        ["input_ids", "input_mask", "label_ids", "segment_ids"]
    );
    let ids = &b.columns["input_ids"];
    assert_eq!((ids.elem, ids.shape.clone()), (ElemType::I32, vec![2, SEQ]));
    assert_eq!(
        ids.to_f64(),
        [200.0, 201.0, 202.0, 203.0, 300.0, 301.0, 302.0, 303.0]
    );
    let labels = &b.columns["label_ids"];
    assert_eq!(
        (labels.elem, labels.shape.clone()),
        (ElemType::I32, vec![2])
    );
    assert_eq!(labels.to_f64(), [2.0, 0.0]);
    assert_eq!(
        b.columns["segment_ids"].to_f64(),
        [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]
    );
}

#[test]
fn drop_remainder() {
    let (_d, ds) = dataset(10);
    assert_eq!(ds.num_batches(3, Shard::single()), 3);
    assert_eq!(ds.num_batches(10, Shard::single()), 1);
    assert_eq!(ds.num_batches(11, Shard::single()), 0);
    assert_eq!(
        rows_of(
            &ds.batch(Order::Sequential, 0, 2, 3, Shard::single())
                .unwrap()
        ),
        [6, 7, 8]
    );
    let e = ds
        .batch(Order::Sequential, 0, 3, 3, Shard::single())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("batch 3 does not exist") && e.contains("3 batches of 3"),
        "{e}"
    );
    assert!(ds
        .batch(Order::Sequential, 0, 0, 0, Shard::single())
        .is_err());
}

#[test]
fn directory_selection_follows_the_seed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_rows(&d.join("part-1.tfrecord"), (3..5).map(row));
    write_rows(&d.join("part-0.tfrecord"), (0..3).map(row));
    write_rows(&d.join("train.mindrecord.db"), (50..60).map(row)); // "db": skipped
    std::fs::write(d.join("schema.json"), "{}").unwrap(); // no "record": skipped
    std::fs::create_dir(d.join("records")).unwrap(); // a directory: skipped
    let ds = Dataset::open(d, None, &COLS, SEQ).unwrap();
    assert_eq!(ds.num_rows(), 5);
    let names: Vec<_> = ds
        .files()
        .iter()
        .map(|p| p.file_name().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["part-0.tfrecord", "part-1.tfrecord"]);
    assert_eq!(
        rows_of(
            &ds.batch(Order::Sequential, 0, 0, 5, Shard::single())
                .unwrap()
        ),
        [0, 1, 2, 3, 4]
    );
    // One file can also be named directly.
    let one = Dataset::open(&d.join("part-1.tfrecord"), None, &COLS, SEQ).unwrap();
    assert_eq!(one.num_rows(), 2);
    // A directory with nothing to read.
    let empty = tempfile::tempdir().unwrap();
    let e = Dataset::open(empty.path(), None, &COLS, SEQ)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("no TFRecord files"), "{e}");
    let e = Dataset::open(&d.join("missing"), None, &COLS, SEQ)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("missing"), "{e}");
}

fn schema_file(dir: &Path, num_rows: Option<u64>, seq: usize) -> std::path::PathBuf {
    let s = Schema::new(
        num_rows,
        &[
            ("input_ids", ColumnType::Int64, seq),
            ("input_mask", ColumnType::Int64, seq),
            ("segment_ids", ColumnType::Int64, seq),
            ("label_ids", ColumnType::Int64, 1),
        ],
    );
    let p = dir.join("schema.json");
    s.write(&p).unwrap();
    p
}

#[test]
fn schema_num_rows_limits_rows() {
    let dir = tempfile::tempdir().unwrap();
    write_rows(&dir.path().join("a.tfrecord"), (0..10).map(row));
    let s = schema_file(dir.path(), Some(7), SEQ);
    let ds = Dataset::open(dir.path(), Some(&s), &COLS, SEQ).unwrap();
    assert_eq!(ds.num_rows(), 7);
    assert_eq!(ds.num_batches(2, Shard::single()), 3);
    let s = schema_file(dir.path(), Some(0), SEQ);
    assert_eq!(
        Dataset::open(dir.path(), Some(&s), &COLS, SEQ)
            .unwrap()
            .num_rows(),
        10
    );
    let s = schema_file(dir.path(), Some(1000), SEQ);
    assert_eq!(
        Dataset::open(dir.path(), Some(&s), &COLS, SEQ)
            .unwrap()
            .num_rows(),
        10
    );
}

#[test]
fn schema_mismatches_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    write_rows(&dir.path().join("a.tfrecord"), (0..4).map(row));
    // The schema's shape disagrees with the sequence length the trainer was compiled for.
    let s = schema_file(dir.path(), None, 8);
    let e = Dataset::open(dir.path(), Some(&s), &COLS, SEQ)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("input_ids") && e.contains("[8]") && e.contains("sequence length is 4"),
        "{e}"
    );
    // The schema's shape agrees with seq_len but the records do not.
    let e = Dataset::open(dir.path(), Some(&s), &COLS, 8)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("a.tfrecord") && e.contains("record 0"), "{e}");
    assert!(e.contains("'input_ids' has 4 values, expected 8"), "{e}");
    // A requested column the schema lacks.
    let s = schema_file(dir.path(), None, SEQ);
    let e = Dataset::open(dir.path(), Some(&s), &["input_ids", "lm_label_ids"], SEQ)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("no column 'lm_label_ids'"), "{e}");
    // A malformed schema file names itself.
    std::fs::write(&s, "{\"columns\": 3}").unwrap();
    let e = Dataset::open(dir.path(), Some(&s), &COLS, SEQ)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("schema.json") && e.contains("not a valid schema"),
        "{e}"
    );
}

#[test]
fn record_errors_name_file_record_and_feature() {
    let dir = tempfile::tempdir().unwrap();
    let mut rows: Vec<_> = (0..6).map(row).collect();
    rows[3].remove("segment_ids");
    rows[4].insert("input_mask".into(), Feature::Int64(vec![1; SEQ + 1]));
    rows[5].insert("input_ids".into(), Feature::Float(vec![0.0; SEQ]));
    write_rows(&dir.path().join("bad.tfrecord"), rows);
    let ds = Dataset::open(dir.path(), None, &COLS, SEQ).unwrap();
    let err = |i| {
        ds.batch(Order::Sequential, 0, i, 1, Shard::single())
            .unwrap_err()
            .to_string()
    };
    let e = err(3);
    assert!(e.contains("bad.tfrecord") && e.contains("record 3"), "{e}");
    assert!(
        e.contains("'segment_ids' is missing") && e.contains("input_ids, input_mask, label_ids"),
        "{e}"
    );
    let e = err(4);
    assert!(
        e.contains("record 4") && e.contains("'input_mask' has 5 values, expected 4"),
        "{e}"
    );
    let e = err(5);
    assert!(
        e.contains("record 5") && e.contains("'input_ids' is a float_list, expected a int64_list"),
        "{e}"
    );
    // Row 0 is checked at open: a first record without the column fails early.
    let dir2 = tempfile::tempdir().unwrap();
    let mut r0 = row(0);
    r0.remove("label_ids");
    write_rows(&dir2.path().join("x.tfrecord"), [r0]);
    let e = Dataset::open(dir2.path(), None, &COLS, SEQ)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("record 0") && e.contains("'label_ids' is missing"),
        "{e}"
    );
}

#[test]
fn float_labels_are_f32() {
    let dir = tempfile::tempdir().unwrap();
    let rows = (0..4).map(|r| {
        let mut f = row(r);
        f.insert("label_ids".into(), Feature::Float(vec![r as f32 * 1.25]));
        f
    });
    write_rows(&dir.path().join("stsb.tfrecord"), rows);
    let ds = Dataset::open(dir.path(), None, &COLS, SEQ).unwrap();
    let l = &ds
        .batch(Order::Sequential, 0, 0, 4, Shard::single())
        .unwrap()
        .columns["label_ids"];
    assert_eq!((l.elem, l.shape.clone()), (ElemType::F32, vec![4]));
    assert_eq!(l.to_f64(), [0.0, 1.25, 2.5, 3.75]);
}

#[test]
fn shards_slice_contiguously_like_mindspore() {
    let (_d, ds) = dataset(10);
    let shard = |rank| Shard { rank, count: 4 };
    // ceil(10 / 4) = 3 rows per shard; the last shard wraps to rows 0 and 1.
    let all: Vec<Vec<i64>> = (0..4)
        .map(|r| rows_of(&ds.batch(Order::Sequential, 0, 0, 3, shard(r)).unwrap()))
        .collect();
    assert_eq!(
        all,
        [vec![0, 1, 2], vec![3, 4, 5], vec![6, 7, 8], vec![9, 0, 1]]
    );
    assert_eq!(ds.num_batches(2, shard(0)), 1);
    let e = ds
        .batch(Order::Sequential, 0, 0, 1, Shard { rank: 4, count: 4 })
        .unwrap_err()
        .to_string();
    assert!(e.contains("shard rank 4 of 4"), "{e}");
    // Shuffled shards slice one permutation: together they cover every row.
    let order = Order::Shuffled { seed: 9 };
    let ds = &ds;
    let mut seen: Vec<i64> = (0..2)
        .flat_map(|r| {
            let s = Shard { rank: r, count: 2 };
            (0..5).flat_map(move |i| rows_of(&ds.batch(order, 1, i, 1, s).unwrap()))
        })
        .collect();
    seen.sort();
    assert_eq!(seen, (0..10).collect::<Vec<_>>());
}

/// Every row of an epoch, batch by batch.
fn epoch_rows(ds: &Dataset, order: Order, epoch: u64, bs: usize) -> Vec<i64> {
    (0..ds.num_batches(bs, Shard::single()))
        .flat_map(|i| rows_of(&ds.batch(order, epoch, i, bs, Shard::single()).unwrap()))
        .collect()
}

#[test]
fn shuffle_is_a_deterministic_permutation_per_epoch() {
    let (_d, ds) = dataset(40);
    let order = Order::Shuffled { seed: 1234 };
    let e0 = epoch_rows(&ds, order, 0, 1);
    let mut sorted = e0.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        (0..40).collect::<Vec<_>>(),
        "each epoch visits every row once"
    );
    assert_ne!(e0, (0..40).collect::<Vec<_>>(), "shuffled");
    assert_eq!(
        e0,
        epoch_rows(&ds, order, 0, 1),
        "same (seed, epoch), same order"
    );
    assert_ne!(e0, epoch_rows(&ds, order, 1, 1), "a new order each epoch");
    assert_ne!(
        e0,
        epoch_rows(&ds, Order::Shuffled { seed: 1235 }, 0, 1),
        "seed matters"
    );
    // The batch size only groups the same order.
    assert_eq!(epoch_rows(&ds, order, 0, 8), e0[..40].to_vec());
    assert_eq!(epoch_rows(&ds, order, 0, 3), e0[..39].to_vec());
    assert_eq!(
        epoch_rows(&ds, Order::Sequential, 5, 4),
        (0..40).collect::<Vec<_>>()
    );
}

#[test]
fn resume_by_index_equals_sequential_iteration() {
    let dir = tempfile::tempdir().unwrap();
    write_rows(&dir.path().join("a.tfrecord"), (0..13).map(row));
    write_rows(&dir.path().join("b.tfrecord"), (13..23).map(row));
    for order in [Order::Sequential, Order::Shuffled { seed: 5 }] {
        let ds = Dataset::open(dir.path(), None, &COLS, SEQ).unwrap();
        let bs = 4;
        let n = ds.num_batches(bs, Shard::single());
        let mut straight = Vec::new();
        for epoch in 0..3 {
            for i in 0..n {
                straight.push(ds.batch(order, epoch, i, bs, Shard::single()).unwrap());
            }
        }
        // A fresh process resuming at (epoch 1, batch 3).
        let again = Dataset::open(dir.path(), None, &COLS, SEQ).unwrap();
        let mut resumed = Vec::new();
        for epoch in 1..3 {
            for i in if epoch == 1 { 3 } else { 0 }..n {
                resumed.push(again.batch(order, epoch, i, bs, Shard::single()).unwrap());
            }
        }
        assert_eq!(resumed, straight[n + 3..], "{order:?}");
        // Random access out of order gives the same batches too.
        assert_eq!(
            again.batch(order, 0, 2, bs, Shard::single()).unwrap(),
            straight[2]
        );
    }
}
