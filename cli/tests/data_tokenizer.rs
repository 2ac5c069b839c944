//! Token ids and run_classifier features vs Hugging Face (tests/fixtures/tokenizer/expected.json,
//! made by tests/reference/make_tokenizer_fixture.py with BertTokenizerFast and the uncased vocab).

use cli::data_cmd::features;
use runtime::tokenizer::{TokenizerSettings, WordPieceTokenizer};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tokenizer")
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("expected.json")).unwrap()).unwrap()
}

fn ints(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

#[test]
fn ids_match_hugging_face_uncased_and_cased() {
    let exp = expected();
    let vocab = dir().join("vocab.txt");
    for (name, settings) in [
        ("uncased", TokenizerSettings::UNCASED),
        ("cased", TokenizerSettings::CASED),
    ] {
        let tok = WordPieceTokenizer::from_vocab(&vocab, settings).unwrap();
        for row in exp["single"].as_array().unwrap() {
            let text = row["text"].as_str().unwrap();
            let ids: Vec<i64> = tok.ids(text).unwrap().into_iter().map(i64::from).collect();
            assert_eq!(ids, ints(&row[name]["ids"]), "{name}: {text:?}");
            let tokens: Vec<String> = row[name]["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_string())
                .collect();
            assert_eq!(tok.tokens(text).unwrap(), tokens, "{name}: {text:?}");
        }
    }
}

#[test]
fn batch_tokenization_equals_one_by_one() {
    let exp = expected();
    let tok = WordPieceTokenizer::from_vocab(&dir().join("vocab.txt"), TokenizerSettings::UNCASED)
        .unwrap();
    let texts: Vec<&str> = exp["single"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["text"].as_str().unwrap())
        .collect();
    let batch = tok.ids_batch(&texts).unwrap();
    for (t, ids) in texts.iter().zip(batch) {
        assert_eq!(ids, tok.ids(t).unwrap(), "{t:?}");
    }
}

#[test]
fn pair_features_match_run_classifier() {
    let exp = expected();
    let tok = WordPieceTokenizer::from_vocab(&dir().join("vocab.txt"), TokenizerSettings::UNCASED)
        .unwrap();
    let (cls, sep) = tok.cls_sep();
    for p in exp["pairs"].as_array().unwrap() {
        let a = tok.ids(p["text_a"].as_str().unwrap()).unwrap();
        let b = p["text_b"].as_str().map(|t| tok.ids(t).unwrap());
        let n = p["max_seq_length"].as_u64().unwrap() as usize;
        let f = features::build(cls, sep, a, b, n);
        let want = &p["features"];
        assert_eq!(f.input_ids, ints(&want["input_ids"]), "{p}");
        assert_eq!(f.input_mask, ints(&want["input_mask"]), "{p}");
        assert_eq!(f.segment_ids, ints(&want["segment_ids"]), "{p}");
    }
}

#[test]
fn missing_vocab_names_the_file() {
    let e = WordPieceTokenizer::from_vocab(
        Path::new("/nonexistent/vocab.txt"),
        TokenizerSettings::UNCASED,
    )
    .err()
    .unwrap();
    let e = format!("{e:#}");
    assert!(
        e.starts_with("/nonexistent/vocab.txt: cannot read vocabulary"),
        "{e}"
    );
    let d = tempfile::tempdir().unwrap();
    let v = d.path().join("v.txt");
    std::fs::write(&v, "[PAD]\n[UNK]\nhello\n").unwrap();
    let e = WordPieceTokenizer::from_vocab(&v, TokenizerSettings::UNCASED);
    let e = format!("{:#}", e.err().unwrap());
    assert!(e.contains("v.txt") && e.contains("no [CLS] token"), "{e}");
}
