//! runtime::metrics against sklearn/scipy values (tests/fixtures/metrics, made by
//! tests/reference/make_metrics_fixture.py). Inputs go in batch by batch, as the trainer feeds
//! them, and every value must agree to 1e-12.

use runtime::metrics::{
    argmax_rows, ClassificationAccumulator, Positive, RegressionAccumulator, TaskMetrics,
};
use serde_json::Value;
use std::path::PathBuf;

const TOL: f64 = 1e-12;

fn fixture(name: &str) -> Vec<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/metrics")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let doc: Value = serde_json::from_str(&text).expect("fixture is JSON");
    doc["cases"].as_array().expect("cases").clone()
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn num(case: &Value, key: &str) -> f64 {
    case["expected"][key]
        .as_f64()
        .unwrap_or_else(|| panic!("{}: expected.{key} missing", case["name"]))
}

fn close(case: &Value, key: &str, got: f64) {
    let want = num(case, key);
    assert!(
        (got - want).abs() <= TOL,
        "{} {key}: got {got:.17}, sklearn/scipy {want:.17}",
        case["name"]
    );
}

#[test]
fn classification_matches_sklearn() {
    let cases = fixture("classification.json");
    assert!(cases.len() >= 6);
    for case in &cases {
        let k = case["num_labels"].as_u64().unwrap() as usize;
        let batch = case["batch"].as_u64().unwrap() as usize;
        let logits = f32s(&case["logits"]);
        let labels: Vec<i64> = case["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        let argmax: Vec<usize> = case["argmax"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(
            argmax_rows(&logits, k).unwrap(),
            argmax,
            "{} argmax",
            case["name"]
        );

        let mut acc = ClassificationAccumulator::new(k).unwrap();
        for (l, y) in logits.chunks(batch * k).zip(labels.chunks(batch)) {
            acc.add_logits(l, y).unwrap();
        }
        assert_eq!(acc.count(), labels.len());
        close(case, "acc", acc.accuracy());
        close(case, "mcc", acc.matthews_corrcoef());
        let sk = acc.binary_f1(Positive::LabelOne);
        close(case, "f1", sk.f1);
        close(case, "precision", sk.precision);
        close(case, "recall", sk.recall);
        let ms = acc.binary_f1(Positive::NonZero);
        close(case, "bf1_f1", ms.f1);
        close(case, "bf1_precision", ms.precision);
        close(case, "bf1_recall", ms.recall);
        let counts: Vec<u64> = case["expected"]["bf1_counts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(
            counts,
            [ms.true_positives, ms.false_positives, ms.false_negatives]
        );

        // The task-level view: MRPC for two labels, MNLI (acc only) otherwise.
        let task = if k == 2 { "mrpc" } else { "mnli" };
        let mut eval = TaskMetrics::for_task(task).unwrap().accumulator(k).unwrap();
        for (l, y) in logits.chunks(batch * k).zip(labels.chunks(batch)) {
            eval.add_logits(l, y).unwrap();
        }
        let scores = eval.scores().unwrap();
        assert_eq!(scores.num_examples, labels.len());
        close(case, "acc", scores.metrics["acc"]);
        close(case, "acc", scores.selection_value());
        if k == 2 {
            close(case, "f1", scores.metrics["f1"]);
            let mean = (num(case, "acc") + num(case, "f1")) / 2.0;
            assert!((scores.metrics["acc_and_f1"] - mean).abs() <= TOL);
        }
        let mut cola = TaskMetrics::for_task("cola")
            .unwrap()
            .accumulator(k)
            .unwrap();
        cola.add_logits(&logits, &labels).unwrap();
        close(case, "mcc", cola.scores().unwrap().metrics["mcc"]);
    }
}

#[test]
fn regression_matches_scipy() {
    let cases = fixture("regression.json");
    assert!(cases.len() >= 4);
    assert!(
        cases.iter().any(|c| c["scipy_nan"] == Value::Bool(true)),
        "a degenerate case"
    );
    for case in &cases {
        let batch = case["batch"].as_u64().unwrap() as usize;
        let pred = f32s(&case["predictions"]);
        let label = f32s(&case["labels"]);
        let mut acc = RegressionAccumulator::new();
        let mut eval = TaskMetrics::for_task("sts-b")
            .unwrap()
            .accumulator(1)
            .unwrap();
        for (p, y) in pred.chunks(batch).zip(label.chunks(batch)) {
            acc.add(p, y).unwrap();
            eval.add_regression(p, y).unwrap();
        }
        close(case, "pearson", acc.pearson());
        close(case, "spearman", acc.spearman());
        let scores = eval.scores().unwrap();
        close(case, "pearson", scores.metrics["pearson"]);
        close(case, "spearman", scores.metrics["spearmanr"]);
        let corr = (num(case, "pearson") + num(case, "spearman")) / 2.0;
        assert!(
            (scores.selection_value() - corr).abs() <= TOL,
            "{} corr",
            case["name"]
        );
    }
}
