//! The fuzzing campaign that stays (issue 9): every parser and loader of user input gets
//! thousands of inputs — mutations of the committed corpus (`tests/fuzz/corpus/`) and random
//! bytes — from a fixed seed, so `make test` runs the same bounded campaign every time. Each
//! target must return a value or an error: a panic fails the test (proptest reports the input),
//! and an allocation larger than [`ALLOC_LIMIT`] — which no input of a few KiB justifies, so it
//! can only come from a length field — aborts the test binary.
//!
//! `TBC_FUZZ_CASES=N` runs N cases per target instead of the default.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use runtime::data::example::Example;
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// No single allocation may exceed this while a target runs (inputs are at most 64 KiB).
const ALLOC_LIMIT: usize = 64 << 20;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, refusing any single allocation past [`ALLOC_LIMIT`] (which aborts the
/// process: the test fails loudly instead of swapping).
struct Capped;

unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        if layout.size() > ALLOC_LIMIT {
            return std::ptr::null_mut();
        }
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        if new_size > ALLOC_LIMIT {
            return std::ptr::null_mut();
        }
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Capped = Capped;

fn cases() -> u32 {
    std::env::var("TBC_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000)
}

fn runner() -> TestRunner {
    let config = Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha))
}

fn corpus(kind: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: empty corpus", dir.display());
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

/// Values that break size arithmetic, as text and as little-endian bytes.
const INTERESTING: [u64; 10] = [
    0,
    1,
    0x7f,
    0xff,
    0x7fff_ffff,
    0xffff_ffff,
    1 << 32,
    1 << 62,
    i64::MAX as u64,
    u64::MAX,
];
const INTERESTING_TEXT: [&str; 12] = [
    "0",
    "-1",
    "4294967296",
    "18446744073709551616",
    "9223372036854775807",
    "nan",
    "inf",
    "-inf",
    "1e400",
    "[]",
    "{}",
    "\"\"",
];

/// One edit of a corpus file.
#[derive(Clone, Debug)]
enum Edit {
    Set(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
    Remove(prop::sample::Index),
    Word(prop::sample::Index, usize),
    Text(prop::sample::Index, usize),
    Truncate(prop::sample::Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    let i = any::<prop::sample::Index>;
    prop_oneof![
        (i(), any::<u8>()).prop_map(|(p, b)| Edit::Set(p, b)),
        (i(), any::<u8>()).prop_map(|(p, b)| Edit::Insert(p, b)),
        i().prop_map(Edit::Remove),
        (i(), 0..INTERESTING.len()).prop_map(|(p, k)| Edit::Word(p, k)),
        (i(), 0..INTERESTING_TEXT.len()).prop_map(|(p, k)| Edit::Text(p, k)),
        i().prop_map(Edit::Truncate),
    ]
}

fn apply(mut b: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let at = |p: &prop::sample::Index, len: usize| p.index(len + 1);
        match e {
            Edit::Set(p, v) if !b.is_empty() => {
                let i = p.index(b.len());
                b[i] = *v;
            }
            Edit::Insert(p, v) => {
                let i = at(p, b.len());
                b.insert(i, *v);
            }
            Edit::Remove(p) if !b.is_empty() => {
                let i = p.index(b.len());
                b.remove(i);
            }
            Edit::Word(p, k) => {
                let i = at(p, b.len());
                let w = INTERESTING[*k].to_le_bytes();
                let end = (i + 8).min(b.len());
                b.splice(i..end, w);
            }
            Edit::Text(p, k) => {
                let i = at(p, b.len());
                b.splice(i..i, INTERESTING_TEXT[*k].bytes());
            }
            Edit::Truncate(p) => {
                let i = at(p, b.len());
                b.truncate(i);
            }
            _ => {}
        }
    }
    b
}

/// Mutated corpus files (most cases) and random bytes.
fn inputs(kind: &str) -> impl Strategy<Value = Vec<u8>> {
    let files = corpus(kind);
    let n = files.len();
    let mutated = (0..n, prop::collection::vec(edit(), 1..6))
        .prop_map(move |(i, edits)| apply(files[i].clone(), &edits));
    prop_oneof![
        9 => mutated,
        1 => prop::collection::vec(any::<u8>(), 0..512),
    ]
}

/// Runs `target` on the inputs of `kind`; a panic fails the test with the input.
fn campaign(kind: &str, target: impl Fn(&[u8]) -> bool) {
    let (ok, err) = (std::cell::Cell::new(0u32), std::cell::Cell::new(0u32));
    runner()
        .run(&inputs(kind), |bytes| {
            let c = if target(&bytes) { &ok } else { &err };
            c.set(c.get() + 1);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{kind}: {e}"));
    println!(
        "{kind}: {} inputs, {} accepted, {} clean errors, largest allocation so far {} bytes",
        ok.get() + err.get(),
        ok.get(),
        err.get(),
        LARGEST.load(Ordering::Relaxed)
    );
    assert!(
        err.get() > 0,
        "{kind}: the mutations never produced an error"
    );
}

/// Writes `bytes` to a fresh file named `name` in a per-thread temporary directory.
fn as_file(name: &str, bytes: &[u8]) -> PathBuf {
    thread_local! {
        static DIR: tempfile::TempDir = tempfile::tempdir().unwrap();
    }
    let p = DIR.with(|d| d.path().join(name));
    std::fs::write(&p, bytes).unwrap();
    p
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn ir_text() {
    campaign("ir", |b| match ir::text::parse(&text(b)) {
        Ok(g) => ir::verify(&g).is_ok(),
        Err(_) => false,
    });
}

#[test]
fn safetensors_files_and_model_loading() {
    let expected = vec![
        ("input_ids".to_string(), vec![4usize, 16]),
        ("input_mask".to_string(), vec![4, 16]),
    ];
    campaign("safetensors", |b| {
        let p = as_file("model.safetensors", b);
        let read = runtime::tensor_io::read(&p).is_ok();
        let loaded = runtime::hf::load_model(&p, &expected).is_ok();
        let weights = runtime::checkpoint::load_weights(&p).is_ok();
        read && loaded && weights
    });
}

#[test]
fn tfrecord_records_and_examples() {
    campaign("tfrecord", |b| {
        let p = as_file("data.tfrecord", b);
        let Ok(records) = runtime::data::tfrecord::scan(&p) else {
            return false;
        };
        let f = std::fs::File::open(&p).unwrap();
        records.iter().enumerate().all(|(i, pos)| {
            runtime::data::tfrecord::read_at(&f, &p, i as u64, *pos)
                .is_ok_and(|data| Example::decode(&data).is_ok())
        })
    });
    // The Example decoder on its own, on mutated record payloads and random bytes.
    campaign("example", |b| Example::decode(b).is_ok());
}

#[test]
fn schema_json_and_datasets() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/tfrecord");
    let first = data.join("glue.tfrecord");
    campaign("schema", |b| {
        let p = as_file("schema.json", b);
        let parsed = runtime::data::schema::Schema::read(&p).is_ok();
        let columns = ["input_ids", "input_mask", "segment_ids", "label_ids"];
        let opened = runtime::data::Dataset::open(&first, Some(&p), &columns, 16)
            .is_ok_and(|ds| ds.check_all_rows().is_ok());
        parsed && opened
    });
}

#[test]
fn config_json() {
    campaign("config", |b| {
        plan::bert::BertConfigFile::from_json(&text(b)).is_ok()
    });
}

#[test]
fn glue_tsv() {
    let layout = cli::data_cmd::glue::Layout {
        skip_header: true,
        text_a: 8,
        text_b: Some(9),
        label: Some(-1),
        labels: vec![
            "contradiction".into(),
            "entailment".into(),
            "neutral".into(),
        ],
        skip_short_lines: false,
    };
    let scores = cli::data_cmd::glue::Layout {
        labels: vec![],
        ..layout.clone()
    };
    campaign("tsv", |b| {
        let t = text(b);
        let p = Path::new("input.tsv");
        let classes = cli::data_cmd::glue::parse_rows(&t, &layout, p).is_ok();
        let floats = cli::data_cmd::glue::parse_rows(&t, &scores, p).is_ok();
        classes && floats
    });
}

#[test]
fn numeric_flags() {
    use runtime::flags::*;
    campaign("flags", |b| {
        let s = text(b);
        let results = [
            positive_count(&s).is_ok(),
            positive_usize(&s).is_ok(),
            positive_f32_range(&s).is_ok_and(|v| v.is_finite() && v > 0.0),
            non_negative(&s).is_ok_and(|v| v.is_finite() && v >= 0.0),
            positive_or_inf(&s).is_ok_and(|v| v > 0.0),
        ];
        results.iter().all(|&r| r)
    });
}
