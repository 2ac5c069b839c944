//! Tokenizer fidelity end to end: the ids `tbc data glue` writes equal, row by row, what the
//! exported directory's `tokenizer.json` gives through the `tokenizers` crate (special tokens,
//! segments and padding included), for an uncased vocabulary that contains `ℝ` (bert-base-uncased,
//! whose `ℝ` once made tbc export `do_lower_case: false`) and for a cased one. Also: the export
//! copies a teacher's own tokenizer files byte for byte, data tokenized otherwise than the teacher
//! is a warning, and `--cased` with an uncased vocabulary is a warning.

use plan::ElemType;
use runtime::data::example::{Example, Feature};
use runtime::data::tfrecord::Reader;
use runtime::hf::{export_hf_classifier, BertConfig, TensorMap};
use runtime::tensor_io::RawTensor;
use runtime::train::tokenizer_choice::{
    data_tokenizer_warning, export_tokenizer, TokenizerSources,
};
use std::path::{Path, PathBuf};
use std::process::Command;

const SEQ: usize = 96;

/// Sentence pairs (an empty second text is a single sentence): mixed case, accents,
/// punctuation, CJK, a word over 100 characters, special-token text, odd whitespace.
const ROWS: &[(&str, &str)] = &[
    ("The Quick Brown Fox jumps over the Lazy Dog.", ""),
    ("Héllo Wörld! Ça va? Naïve café, résumé and façade.", "Crème Brûlée"),
    ("U.S.A. vs. E.U.: \"quotes\", (parens), [brackets] & ampersands...", ""),
    ("東京は日本の首都です。北京 and 上海", "中文字符 mixed with English"),
    ("Supercalifragilisticexpialidocious antidisestablishmentarianism", ""),
    (
        "Pneumonoultramicroscopicsilicovolcanoconiosis-like tokens: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa end",
        "",
    ),
    ("Real numbers ℝ and ℝ-valued functions; ΑΒΓ αβγ", "McDonald's O'Neill DiCaprio iPhone"),
    ("Tabs are columns, so none here; but  double  spaces and\u{00a0}nbsp", ""),
    ("[CLS] literal [SEP] tokens and [MASK] in text", "[UNK]"),
    ("Emoji 😀 and control\u{0007}chars, ZWJ\u{200d}joined", "ÀÉÎÕÜ àéîõü Ñ ñ Ø ø"),
    ("Is this it?", "Yes, IT is; it's THE one."),
];

fn fixture_vocab() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tokenizer/vocab.txt")
}

/// A cased vocabulary: bert-base-uncased's plus the capitalised and upper-case forms of its
/// first whole-word tokens (as bert-base-cased holds both "the" and "The").
fn cased_vocab(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(fixture_vocab()).unwrap();
    let tokens: Vec<&str> = text.lines().collect();
    let known: std::collections::HashSet<&str> = tokens.iter().copied().collect();
    let mut extra = Vec::new();
    for t in tokens
        .iter()
        .filter(|t| t.chars().all(|c| c.is_ascii_lowercase()))
    {
        let mut cap = t.to_string();
        cap[..1].make_ascii_uppercase();
        for form in [cap, t.to_ascii_uppercase()] {
            if !known.contains(form.as_str()) && !extra.contains(&form) {
                extra.push(form);
            }
        }
        if extra.len() > 6000 {
            break;
        }
    }
    for w in ["Héllo", "Wörld", "Ça", "Crème", "Brûlée", "##ée", "Ñ", "Ø"] {
        extra.push(w.to_string());
    }
    let p = dir.join("cased_vocab.txt");
    std::fs::write(&p, format!("{text}{}\n", extra.join("\n"))).unwrap();
    p
}

fn write_tsv(dir: &Path) -> PathBuf {
    let p = dir.join("rows.tsv");
    let mut s = String::from("label\ta\tb\n");
    for (i, (a, b)) in ROWS.iter().enumerate() {
        s += &format!("{}\t{a}\t{b}\n", i % 2);
    }
    std::fs::write(&p, s).unwrap();
    p
}

/// `tbc data glue --task tsv` through the binary, with the given tokenizer flags; its stderr.
fn tbc_data(tsv: &Path, out: &Path, tokenizer: &[&str]) -> String {
    let (ok, err) = tbc_glue(tsv, out, tokenizer);
    assert!(ok, "{err}");
    err
}

/// [`tbc_data`] that may fail: success and stderr.
fn tbc_glue(tsv: &Path, out: &Path, tokenizer: &[&str]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_tbc"))
        .args(["data", "glue", "--task", "tsv", "--skip-header"])
        .args([
            "--label-column",
            "0",
            "--text-a-column",
            "1",
            "--text-b-column",
            "2",
        ])
        .args(["--labels", "0,1", "--max-seq-length", &SEQ.to_string()])
        .args(tokenizer)
        .arg("--input")
        .arg(tsv)
        .arg("--output")
        .arg(out)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

fn column(ex: &Example, name: &str) -> Vec<i64> {
    match &ex.features[name] {
        Feature::Int64(v) => v.clone(),
        f => panic!("{name} is {f:?}"),
    }
}

fn records(path: &Path) -> Vec<Example> {
    Reader::open(path)
        .unwrap()
        .map(|r| Example::decode(&r.unwrap()).unwrap())
        .collect()
}

/// A one-layer classifier whose embedding table fits `vocab_size` (zeros: only the tokenizer
/// files matter here).
fn model(vocab_size: usize) -> (serde_json::Value, TensorMap) {
    let config = serde_json::json!({
        "vocab_size": vocab_size, "hidden_size": 8, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 128,
        "num_labels": 2
    });
    let cfg = BertConfig::from_value(&config, Path::new("config.json")).unwrap();
    let tensors = cfg
        .param_specs(Some(2))
        .into_iter()
        .map(|(n, shape)| {
            let zeros = vec![0.0; shape.iter().product()];
            (n, RawTensor::from_f64(ElemType::F32, shape, &zeros))
        })
        .collect();
    (config, tensors)
}

/// Exports a model with the tokenizer the trainer picks for data at `data` (no teacher
/// tokenizer: the data's recorded one).
fn export_with_data_tokenizer(data: &Path, export: &Path, vocab_size: usize) {
    let (config, tensors) = model(vocab_size);
    let sources = TokenizerSources {
        data: Some(data),
        ..Default::default()
    };
    let tok = export_tokenizer(&sources, 128)
        .unwrap()
        .expect("a tokenizer");
    export_hf_classifier(export, &config, &tensors, Some(&tok), None).unwrap();
}

fn lines(p: &Path) -> usize {
    std::fs::read_to_string(p).unwrap().lines().count()
}

/// Row by row: the data's features vs the export's tokenizer.json through the crate.
fn assert_export_reproduces_data(data: &Path, export: &Path) {
    let tok = tokenizers::Tokenizer::from_file(export.join("tokenizer.json")).unwrap();
    let got = records(data);
    assert_eq!(got.len(), ROWS.len());
    for (ex, (a, b)) in got.iter().zip(ROWS) {
        let enc = if b.is_empty() {
            tok.encode(*a, true)
        } else {
            tok.encode((*a, *b), true)
        }
        .unwrap();
        let pad = |v: Vec<i64>| {
            let mut v = v;
            assert!(v.len() <= SEQ, "{a:?}: {} tokens", v.len());
            v.resize(SEQ, 0);
            v
        };
        let ids = pad(enc.get_ids().iter().map(|&i| i64::from(i)).collect());
        let types = pad(enc.get_type_ids().iter().map(|&i| i64::from(i)).collect());
        let mask = pad(enc
            .get_attention_mask()
            .iter()
            .map(|&i| i64::from(i))
            .collect());
        assert_eq!(column(ex, "input_ids"), ids, "{a:?} / {b:?}");
        assert_eq!(column(ex, "segment_ids"), types, "{a:?} / {b:?}");
        assert_eq!(column(ex, "input_mask"), mask, "{a:?} / {b:?}");
    }
}

fn tokenizer_config(export: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(export.join("tokenizer_config.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn uncased_vocabulary_with_double_struck_r_round_trips() {
    let d = tempfile::tempdir().unwrap();
    let vocab = fixture_vocab();
    assert!(std::fs::read_to_string(&vocab)
        .unwrap()
        .lines()
        .any(|t| t == "ℝ"));
    let tsv = write_tsv(d.path());
    let data = d.path().join("data/train.tfrecord");
    let warnings = tbc_data(&tsv, &data, &["--vocab", vocab.to_str().unwrap()]);
    assert!(!warnings.contains("warning"), "{warnings}");
    assert!(d.path().join("data/tokenizer.json").is_file());

    let export = d.path().join("student_hf");
    export_with_data_tokenizer(&data, &export, lines(&vocab));
    let tc = tokenizer_config(&export);
    assert_eq!(tc["do_lower_case"], true, "{tc}");
    assert_eq!(tc["tokenize_chinese_chars"], true, "{tc}");
    assert_eq!(
        std::fs::read(export.join("vocab.txt")).unwrap(),
        std::fs::read(&vocab).unwrap()
    );
    assert_export_reproduces_data(&data, &export);

    // Re-tokenizing with the export's directory gives the same bytes.
    let again = d.path().join("again/train.tfrecord");
    tbc_data(&tsv, &again, &["--tokenizer", export.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(&again).unwrap(),
        std::fs::read(&data).unwrap()
    );
}

#[test]
fn cased_vocabulary_round_trips() {
    let d = tempfile::tempdir().unwrap();
    let vocab = cased_vocab(d.path());
    let tsv = write_tsv(d.path());
    let data = d.path().join("data/train.tfrecord");
    let warnings = tbc_data(
        &tsv,
        &data,
        &["--vocab", vocab.to_str().unwrap(), "--cased"],
    );
    assert!(!warnings.contains("warning"), "{warnings}");
    let export = d.path().join("student_hf");
    export_with_data_tokenizer(&data, &export, lines(&vocab));
    let tc = tokenizer_config(&export);
    assert_eq!(tc["do_lower_case"], false, "{tc}");
    assert_export_reproduces_data(&data, &export);
    // Case is kept: "The" and "the" are different ids.
    let tok = tokenizers::Tokenizer::from_file(export.join("tokenizer.json")).unwrap();
    let ids = tok.encode("The the", false).unwrap().get_ids().to_vec();
    assert_ne!(ids[0], ids[1]);
}

#[test]
fn a_teachers_tokenizer_files_are_copied_and_a_mismatch_is_a_warning() {
    let d = tempfile::tempdir().unwrap();
    let tsv = write_tsv(d.path());
    // A "teacher": an export with an uncased tokenizer.
    let uncased = d.path().join("uncased/train.tfrecord");
    tbc_data(
        &tsv,
        &uncased,
        &["--vocab", fixture_vocab().to_str().unwrap()],
    );
    let teacher = d.path().join("teacher");
    export_with_data_tokenizer(&uncased, &teacher, lines(&fixture_vocab()));
    // Its tokenizer_config.json says more than tbc writes: the copy keeps it byte for byte.
    let mut tc = tokenizer_config(&teacher);
    tc["model_max_length"] = serde_json::json!(512);
    tc["custom_field"] = serde_json::json!("kept");
    std::fs::write(teacher.join("tokenizer_config.json"), tc.to_string()).unwrap();

    // Data made with --cased from the same vocabulary: training warns, the export follows the
    // teacher.
    let cased = d.path().join("cased/train.tfrecord");
    let w = tbc_data(
        &tsv,
        &cased,
        &["--vocab", fixture_vocab().to_str().unwrap(), "--cased"],
    );
    assert!(w.contains("looks uncased") && w.contains("--cased"), "{w}");
    let warning = data_tokenizer_warning(&teacher, &cased).expect("a warning");
    assert!(
        warning.contains("keep case") && warning.contains("lowercase"),
        "{warning}"
    );
    assert!(data_tokenizer_warning(&teacher, &uncased).is_none());

    let sources = TokenizerSources {
        teacher: Some(&teacher),
        data: Some(&cased),
        ..Default::default()
    };
    let files = export_tokenizer(&sources, 128).unwrap().unwrap();
    for (name, bytes) in &files.files {
        assert_eq!(bytes, &std::fs::read(teacher.join(name)).unwrap(), "{name}");
    }
    assert!(files.origin.contains("copied from"), "{}", files.origin);

    // A teacher directory with vocab.txt and tokenizer_config.json but no tokenizer.json: the
    // tokenizer.json is generated with the config's settings.
    std::fs::remove_file(teacher.join("tokenizer.json")).unwrap();
    let files = export_tokenizer(&sources, 128).unwrap().unwrap();
    let json = &files
        .files
        .iter()
        .find(|(n, _)| *n == "tokenizer.json")
        .unwrap()
        .1;
    let tok = tokenizers::Tokenizer::from_bytes(json).unwrap();
    assert_eq!(
        tok.encode("HELLO", false).unwrap().get_tokens(),
        ["hello"],
        "lowercases, as the teacher's tokenizer_config.json says"
    );
}

#[test]
fn a_directory_without_tokenizer_settings_is_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    let tsv = write_tsv(d.path());
    let model = d.path().join("model");
    std::fs::create_dir(&model).unwrap();
    std::fs::copy(fixture_vocab(), model.join("vocab.txt")).unwrap();
    let out = d.path().join("o.tfrecord");
    let flags = ["--tokenizer", model.to_str().unwrap()];
    let (ok, e) = tbc_glue(&tsv, &out, &flags);
    assert!(
        !ok && e.contains("neither tokenizer.json nor tokenizer_config.json")
            && e.contains("--cased"),
        "{e}"
    );
    std::fs::remove_file(model.join("vocab.txt")).unwrap();
    let (ok, e) = tbc_glue(&tsv, &out, &flags);
    assert!(!ok && e.contains("holds no tokenizer"), "{e}");
    assert!(!out.exists(), "no data is written");
}

#[test]
fn data_written_into_a_model_directory_never_replaces_its_tokenizer() {
    let d = tempfile::tempdir().unwrap();
    let tsv = write_tsv(d.path());
    // A model directory: an uncased export with its own tokenizer.json.
    let first = d.path().join("first/train.tfrecord");
    tbc_data(
        &tsv,
        &first,
        &["--vocab", fixture_vocab().to_str().unwrap()],
    );
    let model = d.path().join("model");
    export_with_data_tokenizer(&first, &model, lines(&fixture_vocab()));
    let before = std::fs::read(model.join("tokenizer.json")).unwrap();

    // Its own tokenizer, data into the same directory: the file already records it.
    let out = model.join("train.tfrecord");
    tbc_data(&tsv, &out, &["--tokenizer", model.to_str().unwrap()]);
    assert_eq!(std::fs::read(model.join("tokenizer.json")).unwrap(), before);

    // Another tokenizer (cased): an error before any data is written; the model is untouched.
    let cased = model.join("cased.tfrecord");
    let vocab = fixture_vocab();
    let flags = ["--vocab", vocab.to_str().unwrap(), "--cased"];
    let (ok, e) = tbc_glue(&tsv, &cased, &flags);
    assert!(
        !ok && e.contains("belongs to the model in this directory")
            && e.contains("another directory"),
        "{e}"
    );
    assert!(!cased.exists());
    assert_eq!(std::fs::read(model.join("tokenizer.json")).unwrap(), before);
}
