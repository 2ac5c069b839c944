//! Exporting the student as a transformers directory.
//!
//! `TBC_HF_EXPORT_OUT=<dir>` additionally writes `<dir>/model` (the export of the tiny fixture
//! student), `<dir>/batch.safetensors` and `<dir>/logits.safetensors` (PyTorch's eval logits for
//! that batch, paper preset), the inputs of `tests/reference/check_hf_export.py`.

use plan::ElemType;
use runtime::hf::{export_hf_classifier, load_model, BertConfig, TensorMap};
use runtime::tensor_io;
use runtime::tokenizer::files::TokenizerFiles;
use runtime::tokenizer::{TokenizerSettings, WordPieceTokenizer};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn student_config() -> serde_json::Value {
    let p = root().join("tests/fixtures/tiny/student.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// The tiny fixture student (`student.*` in weights.safetensors), fit_dense included.
fn student_weights() -> TensorMap {
    tensor_io::read(&root().join("tests/fixtures/tiny/weights.safetensors"))
        .unwrap()
        .into_iter()
        .filter_map(|(n, t)| n.strip_prefix("student.").map(|s| (s.to_string(), t)))
        .collect()
}

fn vocab() -> PathBuf {
    root().join("tests/fixtures/hf/vocab.txt")
}

/// The export files of an uncased tokenizer for `vocab`.
fn tok_files(vocab: &Path) -> TokenizerFiles {
    let t = WordPieceTokenizer::from_vocab(vocab, TokenizerSettings::UNCASED).unwrap();
    TokenizerFiles::generate(&t, 512).unwrap()
}

fn labels() -> Vec<String> {
    ["negative", "neutral", "positive"]
        .map(String::from)
        .to_vec()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn export_writes_a_transformers_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("out/model");
    let w = student_weights();
    let s = export_hf_classifier(
        &dir,
        &student_config(),
        &w,
        Some(&tok_files(&vocab())),
        Some(&labels()),
    )
    .unwrap();
    assert_eq!(s.num_labels, 3);
    assert_eq!(s.dropped, ["fit_dense.bias", "fit_dense.weight"]);
    assert_eq!(
        names(&dir),
        [
            "README.md",
            "config.json",
            "model.safetensors",
            "modeling_tinybert.py",
            "special_tokens_map.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "vocab.txt",
        ]
    );
    assert_eq!(
        names(&tmp.path().join("out")),
        ["model"],
        "no temporary directory is left"
    );

    let c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(c["model_type"], "bert");
    assert_eq!(c["architectures"][0], "TinyBertForSequenceClassification");
    assert_eq!(
        c["auto_map"]["AutoModelForSequenceClassification"],
        "modeling_tinybert.TinyBertForSequenceClassification"
    );
    assert_eq!(c["num_labels"], 3);
    assert_eq!(c["id2label"]["2"], "positive");
    assert_eq!(c["label2id"]["neutral"], 1);
    assert_eq!(c["hidden_act"], "gelu");
    assert_eq!(c["layer_norm_eps"], 1e-12);
    assert_eq!(c["hidden_size"], 32);
    let py = std::fs::read_to_string(dir.join("modeling_tinybert.py")).unwrap();
    assert!(py.contains("class TinyBertForSequenceClassification(BertForSequenceClassification)"));
    assert!(py.contains("nn.ReLU()"));
    let tc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer_config.json")).unwrap())
            .unwrap();
    assert_eq!(tc["tokenizer_class"], "BertTokenizer");
    assert_eq!(tc["do_lower_case"], true);
    assert_eq!(
        std::fs::read(dir.join("vocab.txt")).unwrap(),
        std::fs::read(vocab()).unwrap()
    );

    // The weights: f32, HF names, {"format": "pt"}, no fit_dense, equal to what was given.
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(meta.metadata().as_ref().unwrap()["format"], "pt");
    let written = tensor_io::read(&dir.join("model.safetensors")).unwrap();
    assert_eq!(written.len(), w.len() - 2);
    for (n, t) in &written {
        assert_eq!(t, &w[n], "{n}");
    }
    // And the loader reads the export back, config included.
    let cfg = BertConfig::read(&dir.join("config.json")).unwrap();
    assert_eq!(cfg.labels(), Some(3));
    let m = load_model(&dir, &cfg.param_specs(cfg.labels())).unwrap();
    assert!(m.missing.is_empty() && m.ignored.is_empty());
    assert_eq!(m.tensors, written);

    if let Ok(out) = std::env::var("TBC_HF_EXPORT_OUT") {
        let out = PathBuf::from(out);
        std::fs::create_dir_all(&out).unwrap();
        let model = out.join("model");
        export_hf_classifier(
            &model,
            &student_config(),
            &w,
            Some(&tok_files(&vocab())),
            Some(&labels()),
        )
        .unwrap();
        let fx = root().join("tests/fixtures/tiny");
        std::fs::copy(fx.join("batch.safetensors"), out.join("batch.safetensors")).unwrap();
        std::fs::copy(
            fx.join("expected_paper_eval.safetensors"),
            out.join("logits.safetensors"),
        )
        .unwrap();
        eprintln!("wrote {}", out.display());
    }
}

#[test]
fn export_replaces_a_previous_export_and_defaults_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    let mut w = student_weights();
    export_hf_classifier(
        &dir,
        &student_config(),
        &w,
        Some(&tok_files(&vocab())),
        None,
    )
    .unwrap();
    let c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(c["id2label"]["0"], "LABEL_0");

    // A second export (f64 weights this time: converted to f32) replaces the first.
    let bias = w["classifier.bias"].convert(ElemType::F64);
    let bias = tensor_io::RawTensor::from_f64(ElemType::F64, bias.shape.clone(), &[9.0, 8.0, 7.0]);
    w.insert("classifier.bias".into(), bias);
    export_hf_classifier(&dir, &student_config(), &w, None, Some(&labels())).unwrap();
    let got = tensor_io::read(&dir.join("model.safetensors")).unwrap();
    assert_eq!(got["classifier.bias"].elem, ElemType::F32);
    assert_eq!(got["classifier.bias"].to_f64(), [9.0, 8.0, 7.0]);
    assert!(
        !dir.join("vocab.txt").exists(),
        "the old export's files are gone"
    );
    assert_eq!(names(tmp.path()), ["model"]);
}

#[test]
fn export_errors_leave_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let w = student_weights();
    let cfg = student_config();

    // Output under a regular file: cannot be created.
    let file = tmp.path().join("plain_file");
    std::fs::write(&file, b"x").unwrap();
    let e = export_hf_classifier(&file.join("model"), &cfg, &w, None, None).unwrap_err();
    assert!(e.to_string().contains("plain_file"), "{e}");

    // A missing parameter, a wrong shape, an unknown tensor, a wrong label count.
    let dir = tmp.path().join("a/b/model");
    let mut missing = w.clone();
    missing.remove("bert.encoder.layer.1.output.dense.bias");
    let mut shaped = w.clone();
    let t = shaped["bert.pooler.dense.bias"].clone();
    shaped.insert(
        "bert.pooler.dense.bias".into(),
        tensor_io::RawTensor {
            shape: vec![2, 16],
            ..t
        },
    );
    let mut extra = w.clone();
    extra.insert(
        "teacher.classifier.bias".into(),
        w["classifier.bias"].clone(),
    );
    let two = vec!["a".to_string(), "b".to_string()];
    let cases: Vec<(TensorMap, Option<&[String]>, &str)> = vec![
        (missing, None, "layer.1.output.dense.bias' is missing"),
        (shaped, None, "[2, 16], expected [32]"),
        (extra, None, "teacher.classifier.bias"),
        (
            w.clone(),
            Some(&two),
            "2 labels given, but the classifier has 3",
        ),
    ];
    for (t, l, want) in cases {
        let e = export_hf_classifier(&dir, &cfg, &t, None, l)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(want) && e.contains("a/b/model"),
            "'{want}' not in: {e}"
        );
    }
    // A bad vocab: too many tokens for the embedding.
    let big = tmp.path().join("big_vocab.txt");
    let toks: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .map(String::from)
        .into_iter()
        .chain((0..200).map(|i| format!("w{i}")))
        .collect();
    std::fs::write(&big, toks.join("\n")).unwrap();
    let e = export_hf_classifier(&dir, &cfg, &w, Some(&tok_files(&big)), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("big_vocab.txt") && e.contains("vocab_size is 100"),
        "{e}"
    );

    assert_eq!(
        names(tmp.path()),
        ["big_vocab.txt", "plain_file"],
        "nothing half written"
    );
}

#[test]
fn export_refuses_to_replace_a_foreign_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), b"mine").unwrap();
    let e = export_hf_classifier(&dir, &student_config(), &student_weights(), None, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("notes.txt"), "{e}");
    assert_eq!(names(&dir), ["notes.txt"]);
    assert_eq!(names(tmp.path()), ["model"]);
}

#[cfg(unix)]
#[test]
fn export_into_a_read_only_directory_fails_cleanly() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let ro = tmp.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    if std::fs::write(ro.join("probe"), b"").is_ok() {
        eprintln!("skipped: permission bits are not enforced for this user");
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
        return;
    }
    let e = export_hf_classifier(
        &ro.join("model"),
        &student_config(),
        &student_weights(),
        None,
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("ro/model") && e.contains("ermission"), "{e}");
    assert!(names(&ro).is_empty());
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
}
