//! Bad input reaches the user as a clear error and a non-zero exit code, never a panic.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn tiny(f: &str) -> String {
    root()
        .join("tests/fixtures/tiny")
        .join(f)
        .display()
        .to_string()
}

/// Runs tbc; asserts failure without a panic; returns stderr.
fn fails(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tbc"))
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "expected failure for {args:?}");
    assert!(!stderr.contains("panicked"), "panic for {args:?}: {stderr}");
    stderr
}

fn step_args<'a>(weights: &'a str, out: &'a str, teacher: &'a str) -> Vec<&'a str> {
    vec![
        "step",
        "--phase",
        "td1",
        "--teacher-config",
        teacher,
        "--student-config",
        Box::leak(tiny("student.json").into_boxed_str()),
        "--weights",
        weights,
        "--batch",
        Box::leak(tiny("batch.safetensors").into_boxed_str()),
        "--out",
        out,
    ]
}

/// Writes a copy of the tiny weights with `edit` applied.
fn edited_weights(
    dir: &Path,
    edit: impl Fn(&mut std::collections::BTreeMap<String, ir::Tensor>),
) -> String {
    let mut w = cli::tensor_file::read(Path::new(&tiny("weights.safetensors"))).unwrap();
    edit(&mut w);
    let path = dir.join("w.safetensors");
    let list: Vec<(String, ir::Tensor)> = w.into_iter().collect();
    cli::tensor_file::write(&path, &list, &Default::default()).unwrap();
    path.display().to_string()
}

#[test]
fn malformed_ir_text_reports_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.ir");
    std::fs::write(
        &f,
        "graph \"g\" {\n  %0 = input \"x\" : f32[2]\n  %1 = exp %0 : f32[3]\n}\n",
    )
    .unwrap();
    let err = fails(&["verify", f.to_str().unwrap()]);
    assert!(
        err.contains("bad.ir:3:8: exp: result type must be f32[2], found f32[3]"),
        "{err}"
    );
}

#[test]
fn printed_graph_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tbc"))
        .args([
            "graph",
            "--phase",
            "td2",
            "--teacher-config",
            &tiny("teacher.json"),
            "--student-config",
            &tiny("student.json"),
            "--batch",
            "2",
            "--seq-len",
            "8",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let f = dir.path().join("td2.ir");
    std::fs::write(&f, &out.stdout).unwrap();
    let v = Command::new(env!("CARGO_BIN_EXE_tbc"))
        .args(["verify", f.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("graph \"td2\""));
}

#[test]
fn weights_missing_a_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let w = edited_weights(dir.path(), |w| {
        w.remove("teacher.bert.encoder.layer.3.attention.self.key.weight");
    });
    let out = dir.path().join("o.safetensors");
    let err = fails(&step_args(&w, out.to_str().unwrap(), &tiny("teacher.json")));
    assert!(
        err.contains("w.safetensors: missing tensor 'teacher.bert.encoder.layer.3.attention.self.key.weight' (expected f32[64,64])"),
        "{err}"
    );
    assert!(!out.exists(), "no output may be written on error");
}

#[test]
fn weights_with_a_wrong_shape() {
    let dir = tempfile::tempdir().unwrap();
    let w = edited_weights(dir.path(), |w| {
        let t = ir::Tensor::from_f64(
            &ir::TensorType::new(ir::DType::F32, vec![32, 3]),
            &[0.0; 96],
        );
        w.insert("student.classifier.weight".into(), t);
    });
    let out = dir.path().join("o.safetensors");
    let err = fails(&step_args(&w, out.to_str().unwrap(), &tiny("teacher.json")));
    assert!(
        err.contains("tensor 'student.classifier.weight' has shape [32, 3], expected [3, 32]"),
        "{err}"
    );
}

#[test]
fn weights_file_that_is_not_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("w.safetensors");
    std::fs::write(&w, b"definitely not safetensors").unwrap();
    let out = dir.path().join("o.safetensors");
    let err = fails(&step_args(
        w.to_str().unwrap(),
        out.to_str().unwrap(),
        &tiny("teacher.json"),
    ));
    assert!(
        err.contains("w.safetensors: not a valid safetensors file"),
        "{err}"
    );
}

#[test]
fn unknown_phase_preset_and_dtype() {
    let err = fails(&["graph", "--phase", "td3"]);
    assert!(
        err.contains("unknown phase 'td3' (expected gd, td1, td2 or eval)"),
        "{err}"
    );
    let err = fails(&["graph", "--phase", "td1", "--preset", "tensorflow"]);
    assert!(
        err.contains("unknown preset 'tensorflow' (expected mindspore or paper)"),
        "{err}"
    );
    let err = fails(&["graph", "--phase", "td1", "--dtype", "f8"]);
    assert!(err.contains("unknown --dtype 'f8'"), "{err}");
}

#[test]
fn inconsistent_configs() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, edit: &dyn Fn(&mut serde_json::Value)| {
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(tiny("teacher.json")).unwrap()).unwrap();
        edit(&mut v);
        let p = dir.path().join(name);
        std::fs::write(&p, v.to_string()).unwrap();
        p.display().to_string()
    };
    let heads = write("heads.json", &|v| v["num_attention_heads"] = 5.into());
    let err = fails(&[
        "graph",
        "--phase",
        "td1",
        "--teacher-config",
        &heads,
        "--student-config",
        &tiny("student.json"),
    ]);
    assert!(
        err.contains("heads.json: hidden_size 64 is not a multiple of num_attention_heads 5"),
        "{err}"
    );
    let layers = write("layers.json", &|v| v["num_hidden_layers"] = 5.into());
    let err = fails(&[
        "graph",
        "--phase",
        "gd",
        "--teacher-config",
        &layers,
        "--student-config",
        &tiny("student.json"),
        "--batch",
        "2",
        "--seq-len",
        "8",
    ]);
    assert!(
        err.contains(
            "teacher num_hidden_layers 5 is not a multiple of student num_hidden_layers 2"
        ),
        "{err}"
    );
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, "{\"hidden_size\": 64,").unwrap();
    let err = fails(&[
        "graph",
        "--phase",
        "gd",
        "--teacher-config",
        broken.to_str().unwrap(),
    ]);
    assert!(
        err.contains("broken.json: not a valid BERT config.json"),
        "{err}"
    );
    let err = fails(&[
        "graph",
        "--phase",
        "gd",
        "--teacher-config",
        &tiny("teacher.json"),
        "--student-config",
        &tiny("student.json"),
        "--seq-len",
        "64",
    ]);
    assert!(
        err.contains("seq-len 64 exceeds the teacher's max_position_embeddings 32"),
        "{err}"
    );
}

#[test]
fn missing_batch_tensor_and_bad_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = cli::tensor_file::read(Path::new(&tiny("batch.safetensors"))).unwrap();
    b.remove("segment_ids");
    let bp = dir.path().join("b.safetensors");
    cli::tensor_file::write(
        &bp,
        &b.clone().into_iter().collect::<Vec<_>>(),
        &Default::default(),
    )
    .unwrap();
    let out = dir.path().join("o.safetensors");
    let mut args = step_args(
        Box::leak(tiny("weights.safetensors").into_boxed_str()),
        out.to_str().unwrap(),
        Box::leak(tiny("teacher.json").into_boxed_str()),
    );
    let bs = bp.display().to_string();
    let pos = args.iter().position(|a| *a == "--batch").unwrap();
    args[pos + 1] = &bs;
    let err = fails(&args);
    assert!(
        err.contains("b.safetensors: missing tensor 'segment_ids'"),
        "{err}"
    );

    let mut b2 = b;
    let ids = &b2["input_ids"];
    b2.insert(
        "segment_ids".into(),
        ir::Tensor::new(ids.shape.clone(), ids.data.cast(ir::DType::F32)),
    );
    cli::tensor_file::write(
        &bp,
        &b2.into_iter().collect::<Vec<_>>(),
        &Default::default(),
    )
    .unwrap();
    let err = fails(&args);
    assert!(
        err.contains("b.safetensors: tensor 'segment_ids' has dtype f32, expected i32"),
        "{err}"
    );
}
