#!/usr/bin/env python3
"""Reference values for runtime::metrics, computed with sklearn and scipy.

Writes tests/fixtures/metrics/{classification,regression}.json. Each case holds its inputs and the
expected values; the Rust test `runtime/tests/metrics.rs` feeds the inputs batch by batch to the
accumulators and compares with a 1e-12 tolerance.

Classification cases: float32 logits [n, num_labels] and integer labels. Expected:
  acc        sklearn.metrics.accuracy_score(labels, argmax)        (np.argmax: ties -> lowest index)
  f1/precision/recall    sklearn f1_score/precision_score/recall_score, average="binary",
             pos_label=1, zero_division=0 (the value sklearn's default "warn" also returns);
             only for num_labels == 2, where sklearn accepts "binary"
  f1_label1_ovr  the same for class 1 one-vs-rest when num_labels > 2 (sklearn labels=[1],
             average=None)
  bf1_*      MindSpore's bf1 (positive = any class >= 1), from the formula in
             src/assessment_method.py: 2TP/(2TP+FP+FN), TP/(TP+FP), TP/(TP+FN); 0 on 0/0
  mcc        sklearn.metrics.matthews_corrcoef
Regression cases: float32 predictions and labels. Expected:
  pearson    scipy.stats.pearsonr(...).statistic
  spearman   scipy.stats.spearmanr(...).statistic (average ranks for ties)
  For constant inputs scipy returns NaN; the Rust side documents 0.0 there, and the fixture
  records 0.0 with "scipy_nan": true so the substitution is visible.

Every float input is float32-representable (written as the float64 repr of a float32), so the Rust
side reads exactly the values sklearn/scipy saw.

Run: /work/venv-torch/bin/python tests/reference/make_metrics_fixture.py  (needs numpy, scipy,
scikit-learn; `pip install scikit-learn scipy`). Deterministic: a fixed numpy seed.
"""

import argparse
import json
import math
import pathlib
import warnings

import numpy as np
import scipy
import scipy.stats
import sklearn
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    matthews_corrcoef,
    precision_score,
    recall_score,
)

ROOT = pathlib.Path(__file__).resolve().parents[2]


def f32_list(a):
    return [float(np.float32(v)) for v in np.asarray(a, dtype=np.float32).reshape(-1)]


def ms_bf1(pred, label, num_labels):
    positives = list(range(1, num_labels))
    pe = np.isin(pred, positives)
    pl = np.isin(label, positives)
    tp = int(np.sum(pe & pl))
    fp = int(np.sum(pe & ~pl))
    fn = int(np.sum(~pe & pl))

    def r(a, b):
        return 0.0 if b == 0 else a / b

    return {
        "bf1_f1": r(2 * tp, 2 * tp + fp + fn),
        "bf1_precision": r(tp, tp + fp),
        "bf1_recall": r(tp, tp + fn),
        "bf1_counts": [tp, fp, fn],
    }


def classification_case(name, logits, labels, batch):
    logits = np.asarray(logits, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    n, k = logits.shape
    pred = np.argmax(logits, axis=1)
    exp = {"acc": float(accuracy_score(labels, pred))}
    with warnings.catch_warnings():
        # Degenerate cases make sklearn warn (one label only, 0/0); the values are what we test.
        warnings.simplefilter("ignore")
        exp["mcc"] = float(matthews_corrcoef(labels, pred))
        if k == 2:
            kw = dict(average="binary", pos_label=1, zero_division=0)
            exp["f1"] = float(f1_score(labels, pred, **kw))
            exp["precision"] = float(precision_score(labels, pred, **kw))
            exp["recall"] = float(recall_score(labels, pred, **kw))
        else:
            kw = dict(labels=[1], average=None, zero_division=0)
            exp["f1"] = float(f1_score(labels, pred, **kw)[0])
            exp["precision"] = float(precision_score(labels, pred, **kw)[0])
            exp["recall"] = float(recall_score(labels, pred, **kw)[0])
    exp.update(ms_bf1(pred, labels, k))
    return {
        "name": name,
        "num_labels": int(k),
        "batch": int(batch),
        "logits": f32_list(logits),
        "labels": [int(v) for v in labels],
        "argmax": [int(v) for v in pred],
        "expected": exp,
    }


def regression_case(name, pred, label, batch):
    pred = np.asarray(pred, dtype=np.float32).astype(np.float64)
    label = np.asarray(label, dtype=np.float32).astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = float(scipy.stats.pearsonr(pred, label).statistic)
        s = float(scipy.stats.spearmanr(pred, label).statistic)
    nan = math.isnan(p) or math.isnan(s)
    return {
        "name": name,
        "batch": int(batch),
        "predictions": f32_list(pred),
        "labels": f32_list(label),
        "expected": {
            "pearson": 0.0 if math.isnan(p) else p,
            "spearman": 0.0 if math.isnan(s) else s,
        },
        "scipy_nan": nan,
    }


def make(rng):
    cls = []
    # Random binary, like MRPC/QQP.
    logits = rng.normal(size=(53, 2))
    labels = rng.integers(0, 2, size=53)
    cls.append(classification_case("binary_random", logits, labels, 8))
    # Mostly right binary, like SST-2 after training.
    labels = rng.integers(0, 2, size=64)
    logits = rng.normal(size=(64, 2)) * 0.5
    logits[np.arange(64), labels] += rng.uniform(0, 1.5, size=64)
    cls.append(classification_case("binary_mostly_right", logits, labels, 32))
    # Three classes (MNLI), where pos_label=1 and bf1 differ.
    logits = rng.normal(size=(47, 3))
    labels = rng.integers(0, 3, size=47)
    cls.append(classification_case("three_class", logits, labels, 10))
    # Ties in the logits: quantized values so many rows have equal maxima.
    logits = rng.integers(0, 3, size=(40, 3)).astype(np.float32)
    labels = rng.integers(0, 3, size=40)
    cls.append(classification_case("ties", logits, labels, 7))
    # Degenerate: every prediction is class 0 (no positive predictions: precision 0/0,
    # MCC's prediction marginal constant).
    logits = np.stack([np.ones(12), np.zeros(12)], axis=1)
    labels = rng.integers(0, 2, size=12)
    cls.append(classification_case("all_predicted_negative", logits, labels, 5))
    # Degenerate: every label is 0 and every prediction 0 (F1 0/0, MCC 0).
    labels = np.zeros(9, dtype=np.int64)
    cls.append(classification_case("all_negative", np.stack([np.ones(9), np.zeros(9)], 1), labels, 4))
    # Perfect and perfectly wrong.
    labels = rng.integers(0, 2, size=20)
    logits = np.eye(2)[labels]
    cls.append(classification_case("perfect", logits, labels, 6))
    cls.append(classification_case("inverted", np.eye(2)[1 - labels], labels, 6))

    reg = []
    label = rng.uniform(0, 5, size=61)
    pred = label + rng.normal(scale=1.0, size=61)
    reg.append(regression_case("stsb_like", pred, label, 16))
    # STS-B labels come in steps of 0.2, so ties are everywhere; round predictions too.
    label = np.round(rng.uniform(0, 5, size=50) * 5) / 5
    pred = np.round((label + rng.normal(scale=0.8, size=50)) * 2) / 2
    reg.append(regression_case("ties", pred, label, 9))
    reg.append(regression_case("anticorrelated", -label + 0.1 * rng.normal(size=50), label, 50))
    reg.append(regression_case("constant_prediction", np.full(10, 2.5), rng.uniform(0, 5, 10), 3))
    reg.append(regression_case("two_values", [1.0, 2.0], [3.0, 1.0], 1))
    return cls, reg


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "tests/fixtures/metrics")
    args = ap.parse_args()
    cls, reg = make(np.random.default_rng(20240611))
    versions = {"numpy": np.__version__, "scipy": scipy.__version__, "sklearn": sklearn.__version__}
    args.out.mkdir(parents=True, exist_ok=True)
    for name, cases in [("classification", cls), ("regression", reg)]:
        path = args.out / f"{name}.json"
        doc = {"generator": "tests/reference/make_metrics_fixture.py", "versions": versions, "cases": cases}
        path.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"{path}: {len(cases)} cases, {path.stat().st_size} bytes")
    for c in cls:
        e = c["expected"]
        print(f"  {c['name']:24} acc={e['acc']:.6f} f1={e['f1']:.6f} bf1={e['bf1_f1']:.6f} mcc={e['mcc']:.6f}")
    for c in reg:
        e = c["expected"]
        print(f"  {c['name']:24} pearson={e['pearson']:.6f} spearman={e['spearman']:.6f} nan={c['scipy_nan']}")


if __name__ == "__main__":
    main()
