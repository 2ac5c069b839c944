//! Loading Hugging Face checkpoints: a real transformers directory (f16 BertModel, no `bert.`
//! prefix), legacy names, dtypes, extras, shards, and every error.

use plan::ElemType;
use runtime::hf::{load_model, BertConfig, HfError};
use runtime::tensor_io::{self, RawTensor};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/hf")
}

fn tiny_config() -> BertConfig {
    BertConfig::read(&fixtures().join("tiny_bertmodel_f16/config.json")).unwrap()
}

/// Writes a safetensors file from (key, dtype, shape, values).
fn write_st(path: &Path, tensors: &[(&str, ElemType, Vec<usize>, Vec<f64>)]) {
    let list: Vec<(String, RawTensor)> = tensors
        .iter()
        .map(|(k, e, s, v)| (k.to_string(), RawTensor::from_f64(*e, s.clone(), v)))
        .collect();
    tensor_io::write(path, &list, &BTreeMap::new()).unwrap();
}

fn seq(n: usize, base: f64) -> Vec<f64> {
    (0..n).map(|i| base + i as f64 * 0.5).collect()
}

#[test]
fn transformers_bertmodel_directory_loads_exactly() {
    let cfg = tiny_config();
    assert_eq!(
        (
            cfg.vocab_size,
            cfg.hidden_size,
            cfg.num_hidden_layers,
            cfg.num_attention_heads
        ),
        (100, 32, 2, 4)
    );
    assert_eq!(
        (cfg.hidden_act.as_str(), cfg.layer_norm_eps),
        ("gelu", 1e-12)
    );
    // Expect a full classifier: the BertModel directory has everything but the classifier.
    let specs = cfg.param_specs(Some(3));
    let m = load_model(&fixtures().join("tiny_bertmodel_f16"), &specs).unwrap();
    assert_eq!(m.config.as_ref(), Some(&cfg));
    assert_eq!(m.missing, ["classifier.weight", "classifier.bias"]);
    assert!(m.ignored.is_empty(), "{:?}", m.ignored);
    let e = m.require_all().unwrap_err().to_string();
    assert!(
        e.contains("classifier.weight")
            && e.contains("classifier.bias")
            && e.contains("model.safetensors"),
        "{e}"
    );

    let reference =
        tensor_io::read(&fixtures().join("tiny_bertmodel_f16.reference.safetensors")).unwrap();
    assert_eq!(reference.len(), specs.len() - 2);
    for (name, want) in &reference {
        let got = &m.tensors[name];
        assert_eq!(got.elem, ElemType::F32, "{name}");
        assert_eq!(got, want, "{name}: f16 -> f32 must be exact");
    }
}

#[test]
fn legacy_names_prefixes_dtypes_and_extras() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("old.safetensors");
    write_st(
        &f,
        &[
            (
                "bert.embeddings.LayerNorm.gamma",
                ElemType::BF16,
                vec![4],
                seq(4, 1.0),
            ),
            (
                "bert.embeddings.LayerNorm.beta",
                ElemType::F64,
                vec![4],
                seq(4, -0.125),
            ),
            (
                "pooler.dense.weight",
                ElemType::F16,
                vec![4, 4],
                seq(16, 0.25),
            ),
            (
                "bert.embeddings.position_ids",
                ElemType::I64,
                vec![1, 8],
                seq(8, 0.0),
            ),
            (
                "cls.predictions.bias",
                ElemType::F32,
                vec![10],
                seq(10, 0.0),
            ),
            ("classifier.weight", ElemType::F32, vec![2, 4], seq(8, 3.0)),
        ],
    );
    let specs: Vec<(String, Vec<usize>)> = [
        ("bert.embeddings.LayerNorm.weight", vec![4]),
        ("bert.embeddings.LayerNorm.bias", vec![4]),
        ("bert.pooler.dense.weight", vec![4, 4]),
        ("classifier.weight", vec![2, 4]),
        ("fit_dense.weight", vec![8, 4]),
    ]
    .into_iter()
    .map(|(n, s)| (n.to_string(), s))
    .collect();
    let m = load_model(&f, &specs).unwrap();
    assert_eq!(m.config, None);
    assert_eq!(m.missing, ["fit_dense.weight"]);
    assert_eq!(
        m.ignored,
        ["bert.embeddings.position_ids", "cls.predictions.bias"]
    );
    assert_eq!(m.tensors.len(), 4);
    for t in m.tensors.values() {
        assert_eq!(t.elem, ElemType::F32);
    }
    assert_eq!(
        m.tensors["bert.embeddings.LayerNorm.weight"].to_f64(),
        seq(4, 1.0)
    );
    assert_eq!(
        m.tensors["bert.embeddings.LayerNorm.bias"].to_f64(),
        seq(4, -0.125)
    );
    assert_eq!(
        m.tensors["bert.pooler.dense.weight"].to_f64(),
        seq(16, 0.25)
    );
    assert_eq!(m.tensors["classifier.weight"].to_f64(), seq(8, 3.0));
}

#[test]
fn f64_values_are_rounded_to_f32() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("w.safetensors");
    let v = vec![0.1, 1.0 / 3.0, -2.5e-8];
    write_st(
        &f,
        &[("classifier.bias", ElemType::F64, vec![3], v.clone())],
    );
    let m = load_model(&f, &[("classifier.bias".into(), vec![3])]).unwrap();
    let want: Vec<f64> = v.iter().map(|&x| x as f32 as f64).collect();
    assert_eq!(m.tensors["classifier.bias"].to_f64(), want);
}

#[test]
fn sharded_directory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_st(
        &d.join("model-00001-of-00002.safetensors"),
        &[(
            "embeddings.LayerNorm.weight",
            ElemType::F32,
            vec![2],
            seq(2, 1.0),
        )],
    );
    write_st(
        &d.join("model-00002-of-00002.safetensors"),
        &[("pooler.dense.bias", ElemType::F32, vec![2], seq(2, 2.0))],
    );
    std::fs::write(
        d.join("model.safetensors.index.json"),
        r#"{"metadata": {}, "weight_map": {
            "embeddings.LayerNorm.weight": "model-00001-of-00002.safetensors",
            "pooler.dense.bias": "model-00002-of-00002.safetensors"}}"#,
    )
    .unwrap();
    let specs = vec![
        ("bert.embeddings.LayerNorm.weight".to_string(), vec![2]),
        ("bert.pooler.dense.bias".to_string(), vec![2]),
    ];
    let m = load_model(d, &specs).unwrap();
    assert!(m.missing.is_empty());
    assert_eq!(m.files.len(), 2);
    assert_eq!(m.tensors["bert.pooler.dense.bias"].to_f64(), seq(2, 2.0));
}

#[test]
fn wrong_shape_names_file_tensor_and_shapes() {
    let cfg = tiny_config();
    let mut specs = cfg.param_specs(None);
    for s in specs.iter_mut() {
        if s.0 == "bert.encoder.layer.1.intermediate.dense.weight" {
            s.1 = vec![128, 32];
        }
    }
    let e = load_model(&fixtures().join("tiny_bertmodel_f16"), &specs).unwrap_err();
    assert!(matches!(e, HfError::Shape { .. }));
    let e = e.to_string();
    for part in [
        "model.safetensors",
        "encoder.layer.1.intermediate.dense.weight",
        "[64, 32]",
        "[128, 32]",
    ] {
        assert!(e.contains(part), "'{part}' not in: {e}");
    }
}

#[test]
fn truncated_and_garbage_files_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(fixtures().join("tiny_bertmodel_f16/model.safetensors")).unwrap();
    let specs = tiny_config().param_specs(None);
    for (name, bytes) in [
        ("truncated.safetensors", good[..good.len() / 2].to_vec()),
        (
            "garbage.safetensors",
            b"PK\x03\x04 this is a zip, not safetensors".to_vec(),
        ),
        ("empty.safetensors", Vec::new()),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        let e = load_model(&p, &specs).unwrap_err().to_string();
        assert!(e.contains(name), "{e}");
    }
    // In a directory too.
    let d = dir.path().join("model_dir");
    std::fs::create_dir(&d).unwrap();
    std::fs::write(d.join("model.safetensors"), &good[..100]).unwrap();
    let e = load_model(&d, &specs).unwrap_err().to_string();
    assert!(e.contains("model_dir/model.safetensors"), "{e}");
}

#[test]
fn pytorch_bin_only_directory_says_how_to_convert() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::copy(
        fixtures().join("tiny_bertmodel_f16/config.json"),
        d.join("config.json"),
    )
    .unwrap();
    std::fs::write(d.join("pytorch_model.bin"), b"not read").unwrap();
    let e = load_model(d, &[]).unwrap_err();
    assert!(matches!(e, HfError::PytorchBin { .. }));
    let e = e.to_string();
    assert!(e.contains("pytorch_model.bin"), "{e}");
    assert!(e.contains("t.BertModel.from_pretrained("), "{e}");
    assert!(
        e.contains("save_pretrained(") && e.contains("safe_serialization=True"),
        "{e}"
    );
    assert!(e.contains(&d.display().to_string()), "{e}");
}

#[test]
fn directories_without_weights_and_missing_paths() {
    let dir = tempfile::tempdir().unwrap();
    let e = load_model(dir.path(), &[]).unwrap_err().to_string();
    assert!(
        e.contains("no model.safetensors") && e.contains("empty"),
        "{e}"
    );
    std::fs::write(dir.path().join("tf_model.h5"), b"").unwrap();
    let e = load_model(dir.path(), &[]).unwrap_err().to_string();
    assert!(e.contains("tf_model.h5"), "{e}");
    let e = load_model(&dir.path().join("nope"), &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope") && e.contains("no such file"), "{e}");
}

#[test]
fn non_float_expected_tensor_and_duplicates_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("w.safetensors");
    write_st(
        &f,
        &[("classifier.bias", ElemType::I32, vec![2], vec![1.0, 2.0])],
    );
    let e = load_model(&f, &[("classifier.bias".into(), vec![2])])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("w.safetensors") && e.contains("classifier.bias") && e.contains("I32"),
        "{e}"
    );

    write_st(
        &f,
        &[
            (
                "embeddings.LayerNorm.weight",
                ElemType::F32,
                vec![2],
                seq(2, 0.0),
            ),
            (
                "bert.embeddings.LayerNorm.gamma",
                ElemType::F32,
                vec![2],
                seq(2, 0.0),
            ),
        ],
    );
    let e = load_model(&f, &[("bert.embeddings.LayerNorm.weight".into(), vec![2])]).unwrap_err();
    assert!(matches!(e, HfError::Duplicate { .. }), "{e}");
    let e = e.to_string();
    assert!(
        e.contains("embeddings.LayerNorm.weight") && e.contains("bert.embeddings.LayerNorm.gamma"),
        "{e}"
    );
}

#[test]
fn config_errors_name_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("config.json");
    let base: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("tiny_bertmodel_f16/config.json")).unwrap(),
    )
    .unwrap();
    let mut cases: Vec<(serde_json::Value, &str)> = Vec::new();
    let mut v = base.clone();
    v.as_object_mut().unwrap().remove("hidden_size");
    cases.push((v, "hidden_size"));
    let mut v = base.clone();
    v["num_attention_heads"] = 5.into();
    cases.push((v, "not a multiple of num_attention_heads 5"));
    let mut v = base.clone();
    v["model_type"] = "roberta".into();
    cases.push((v, "roberta"));
    let mut v = base.clone();
    v["vocab_size"] = "many".into();
    cases.push((v, "invalid type"));
    let mut v = base.clone();
    v["num_labels"] = 3.into();
    v["id2label"] = serde_json::json!({"0": "a", "1": "b"});
    cases.push((v, "id2label has 2"));
    for (v, want) in cases {
        std::fs::write(&p, serde_json::to_string(&v).unwrap()).unwrap();
        let e = BertConfig::read(&p).unwrap_err().to_string();
        assert!(
            e.contains("config.json") && e.contains(want),
            "'{want}' not in: {e}"
        );
    }
    std::fs::write(&p, "{ not json").unwrap();
    let e = BertConfig::read(&p).unwrap_err().to_string();
    assert!(e.contains("config.json") && e.contains("JSON"), "{e}");
    // A directory whose config.json is bad fails before any weights are read.
    let e = load_model(dir.path(), &[]).unwrap_err().to_string();
    assert!(e.contains("config.json"), "{e}");
}

#[test]
fn labels_from_config() {
    let v = serde_json::json!({
        "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 16, "max_position_embeddings": 8,
        "id2label": {"0": "neg", "1": "pos"}, "label2id": {"neg": 0, "pos": 1}
    });
    let c = BertConfig::from_value(&v, Path::new("mem")).unwrap();
    assert_eq!(c.labels(), Some(2));
    assert_eq!((c.type_vocab_size, c.hidden_dropout_prob), (2, 0.1));
    let specs: HashMap<String, Vec<usize>> = c.param_specs(Some(2)).into_iter().collect();
    assert_eq!(specs.len(), 5 + 16 + 2 + 2);
    assert_eq!(
        specs["bert.encoder.layer.0.intermediate.dense.weight"],
        [16, 8]
    );
    assert_eq!(specs["classifier.weight"], [2, 8]);
}
