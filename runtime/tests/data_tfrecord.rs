//! TFRecord framing and Example codec against an independent reference (Python's protobuf + a
//! bitwise CRC32C, tests/reference/make_tfrecord_fixture.py), and corrupt-file errors.

use runtime::data::example::{Example, Feature};
use runtime::data::tfrecord::{self, AtomicFileWriter, Reader};
use runtime::data::{Dataset, Order, Shard};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/tfrecord")
        .join(name)
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn reads_python_reference_file() {
    let listing: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("reference.json")).unwrap()).unwrap();
    let expected = listing["records"].as_array().unwrap();
    let path = fixture("reference.tfrecord");
    let records: Vec<Vec<u8>> = Reader::open(&path)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(records.len(), expected.len());
    for (i, (data, want)) in records.iter().zip(expected).enumerate() {
        assert_eq!(
            *data,
            hex(want["serialized_hex"].as_str().unwrap()),
            "record {i}"
        );
        let ex = Example::decode(data).unwrap();
        let feats = want["features"].as_object().unwrap();
        assert_eq!(ex.features.len(), feats.len(), "record {i}");
        for (name, values) in feats {
            let values = values.as_array().unwrap();
            let got = &ex.features[name];
            match got {
                Feature::Int64(v) => {
                    let w: Vec<i64> = values.iter().map(|x| x.as_i64().unwrap()).collect();
                    assert_eq!(*v, w, "record {i} {name}");
                }
                Feature::Float(v) => {
                    let w: Vec<f32> = values.iter().map(|x| x.as_f64().unwrap() as f32).collect();
                    assert_eq!(*v, w, "record {i} {name}");
                }
                Feature::Bytes(v) => {
                    let w: Vec<Vec<u8>> = values.iter().map(|x| hex(x.as_str().unwrap())).collect();
                    assert_eq!(*v, w, "record {i} {name}");
                }
                Feature::Empty => panic!("record {i} {name}: no kind"),
            }
        }
        // protobuf's deterministic serialization and ours agree byte for byte.
        assert_eq!(
            ex.encode(),
            *data,
            "record {i}: encoding differs from protobuf's"
        );
    }
    // Scanning finds the same records at the same places.
    let positions = tfrecord::scan(&path).unwrap();
    assert_eq!(positions.len(), records.len());
    let file = std::fs::File::open(&path).unwrap();
    for (i, p) in positions.iter().enumerate() {
        assert_eq!(
            tfrecord::read_at(&file, &path, i as u64, *p).unwrap(),
            records[i]
        );
    }
}

#[test]
fn reference_file_through_the_dataset() {
    let path = fixture("reference.tfrecord");
    let ds = Dataset::open(&path, None, &["input_ids", "input_mask", "segment_ids"], 8).unwrap();
    assert_eq!(ds.num_rows(), 3);
    let b = ds
        .batch(Order::Sequential, 0, 0, 2, Shard::single())
        .unwrap();
    let ids = b.columns["input_ids"].to_f64();
    assert_eq!(
        &ids[..8],
        &[101.0, 7592.0, 2088.0, 102.0, 0.0, 0.0, 0.0, 0.0]
    );
    // Row 2 holds 2^40, which int32 cannot hold: a clear error naming the record.
    let e = ds
        .batch(Order::Sequential, 0, 0, 3, Shard::single())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("reference.tfrecord") && e.contains("record 2"),
        "{e}"
    );
    assert!(e.contains("1099511627776") && e.contains("int32"), "{e}");
    // label_ids is an int64 in row 0 but a float in row 1.
    let ds = Dataset::open(&path, None, &["label_ids"], 8).unwrap();
    let e = ds
        .batch(Order::Sequential, 0, 0, 2, Shard::single())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("record 1") && e.contains("float_list") && e.contains("int64_list"),
        "{e}"
    );
}

fn example(i: i64) -> Vec<u8> {
    let mut f = BTreeMap::new();
    f.insert(
        "input_ids".to_string(),
        Feature::Int64(vec![i, i + 1, i + 2, i + 3]),
    );
    Example { features: f }.encode()
}

fn write(path: &Path, n: i64) -> Vec<u64> {
    let mut w = AtomicFileWriter::create(path).unwrap();
    for i in 0..n {
        w.write_record(&example(i)).unwrap();
    }
    assert_eq!(w.finish().unwrap(), n as u64);
    tfrecord::scan(path)
        .unwrap()
        .iter()
        .map(|p| p.offset)
        .collect()
}

#[test]
fn round_trip_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rt.tfrecord");
    write(&path, 50);
    let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(entries.len(), 1, "only the finished file remains");
    let got: Vec<Vec<u8>> = Reader::open(&path)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(got, (0..50).map(example).collect::<Vec<_>>());
}

#[test]
fn dropped_writer_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.tfrecord");
    let mut w = AtomicFileWriter::create(&path).unwrap();
    w.write_record(b"abc").unwrap();
    drop(w);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

fn corrupt(n: i64, at: impl Fn(&[u64]) -> usize) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.tfrecord");
    let offsets = write(&path, n);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[at(&offsets)] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();
    (dir, path)
}

#[test]
fn corrupt_length_crc_names_file_record_and_offset() {
    // Flip a bit of record 2's stored length CRC.
    let (_d, path) = corrupt(5, |o| o[2] as usize + 9);
    let off = tfrecord::scan(&path).unwrap_err().to_string();
    assert!(
        off.contains("c.tfrecord") && off.contains("record 2"),
        "{off}"
    );
    assert!(off.contains("length CRC"), "{off}");
    let e = Dataset::open(&path, None, &["input_ids"], 4)
        .err()
        .unwrap()
        .to_string();
    assert_eq!(e, off, "open reports the same error");
    let mut r = Reader::open(&path).unwrap();
    r.next_record().unwrap();
    r.next_record().unwrap();
    let e = r.next_record().unwrap_err().to_string();
    assert!(e.contains("record 2") && e.contains("length CRC"), "{e}");
}

#[test]
fn corrupt_data_crc_is_found_when_the_record_is_read() {
    // Flip a bit inside record 3's data.
    let (_d, path) = corrupt(5, |o| o[3] as usize + 14);
    let offset3 = {
        // Records are all the same size here: offset = 3 * frame size.
        let size = std::fs::metadata(&path).unwrap().len() / 5;
        3 * size
    };
    let ds = Dataset::open(&path, None, &["input_ids"], 4).unwrap();
    ds.batch(Order::Sequential, 0, 0, 3, Shard::single())
        .unwrap();
    let e = ds
        .batch(Order::Sequential, 0, 1, 2, Shard::single())
        .unwrap_err()
        .to_string();
    assert!(e.contains("c.tfrecord") && e.contains("record 3"), "{e}");
    assert!(
        e.contains(&format!("byte {offset3}")) && e.contains("data CRC"),
        "{e}"
    );
}

#[test]
fn truncated_file_names_the_last_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.tfrecord");
    write(&path, 3);
    let bytes = std::fs::read(&path).unwrap();
    for cut in [2, 5, 20] {
        std::fs::write(&path, &bytes[..bytes.len() - cut]).unwrap();
        let e = Dataset::open(&path, None, &["input_ids"], 4)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("t.tfrecord") && e.contains("record 2"),
            "cut {cut}: {e}"
        );
        assert!(e.contains("file ends inside the record"), "cut {cut}: {e}");
        let e = Reader::open(&path)
            .unwrap()
            .nth(2)
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("record 2") && e.contains("file ends"),
            "cut {cut}: {e}"
        );
    }
    // A partial header (a few bytes after the last full record).
    let mut b = bytes.clone();
    b.extend([1, 2, 3]);
    std::fs::write(&path, &b).unwrap();
    let e = tfrecord::scan(&path).unwrap_err().to_string();
    assert!(
        e.contains("record 3") && e.contains("12 more bytes, 3 left"),
        "{e}"
    );
}

#[test]
fn not_a_tfrecord_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("text.tfrecord");
    std::fs::write(&path, "sentence one\tsentence two\t1\n".repeat(10)).unwrap();
    let e = Dataset::open(&path, None, &["input_ids"], 4)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("text.tfrecord") && e.contains("record 0") && e.contains("length CRC"),
        "{e}"
    );
}

#[test]
fn a_record_that_is_not_an_example() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.tfrecord");
    let mut w = AtomicFileWriter::create(&path).unwrap();
    w.write_record(&example(0)).unwrap();
    w.write_record(&[0x0a, 0x50, 0x01]).unwrap(); // field 1, claims 80 bytes, has 1
    w.finish().unwrap();
    let ds = Dataset::open(&path, None, &["input_ids"], 4).unwrap();
    let e = ds
        .batch(Order::Sequential, 0, 0, 2, Shard::single())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("record 1") && e.contains("not a tf.train.Example"),
        "{e}"
    );
}
