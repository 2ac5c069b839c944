//! Teacher fine-tuning (`ft`): plain hard-label cross-entropy training of the teacher as
//! TinyBERT's sequence classifier (the td2 head), so a user without a fine-tuned teacher can make
//! one; a one-output head (STS-B) is a regressor trained on the mean squared error, as BERT's
//! `run_classifier` and the PyTorch TinyBERT do. Dropout follows the teacher config, keyed like
//! the student's in td.

use super::bert::{self, BertBuilder};
use super::step::{finish_training, Loss, TrainInputs, Trained};
use super::{declare_batch, declare_labels, regression_mse, GraphSpec};
use ir::{Builder, CmpOp, DType, Graph, ReduceKind, TensorType, ValueId};

/// Mean over the batch of `−log_softmax(logits)[label]`; `labels` i32 `[batch]`. A label outside
/// `0..num_labels` selects no class and contributes 0: a graph cannot raise an error, so labels
/// must be checked before the step.
fn hard_cross_entropy(b: &mut Builder, logits: ValueId, labels: ValueId) -> ValueId {
    let s = b.shape(logits);
    let ls = bert::log_softmax_last(b, logits);
    let classes = b.iota(1, TensorType::new(DType::I32, s.clone()));
    let lb = b.broadcast(labels, &s, &[0]);
    let hit = b.compare(CmpOp::Eq, classes, lb);
    let z = b.full_like(0.0, ls);
    let picked = b.select(hit, ls, z);
    let total = b.reduce_all(ReduceKind::Sum, picked);
    b.mul_scalar(total, -1.0 / s[0] as f64)
}

/// Teacher fine-tuning: the teacher with dropout, the TinyBERT head and hard-label
/// cross-entropy; with `forward_only`, just the forward pass and loss.
pub(super) fn ft_graph(spec: &GraphSpec, forward_only: bool) -> Graph {
    let dt = spec.dtype;
    let mut b = Builder::new(spec.phase.name());
    let batch = declare_batch(&mut b, spec);
    let labels = declare_labels(&mut b, spec);
    let ti = TrainInputs::declare(&mut b, dt);
    let tr = Trained::declare(
        &mut b,
        spec.phase.model().prefix(),
        &spec.model_params(),
        dt,
    );
    let mut ids = 0u32;
    let mut tb = BertBuilder {
        b: &mut b,
        cfg: spec.teacher,
        w: &tr.params,
        dropout: ti.dropout(),
        next_dropout_id: &mut ids,
        dtype: dt,
    };
    let out = tb.encoder(&batch);
    let logits = tb.logits(*out.reps.last().unwrap(), &batch);
    let (part, total) = if spec.is_regression() {
        ("loss.mse", regression_mse(&mut b, logits, labels))
    } else {
        ("loss.ce", hard_cross_entropy(&mut b, logits, labels))
    };
    let loss = Loss {
        total,
        parts: vec![(part.into(), total)],
    };
    finish_training(b, spec, loss, &tr, &ti, forward_only)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::config::{HfBertConfig, ModelConfig};
    use crate::frontend::preset::{Phase, Preset};
    use crate::frontend::{build_forward_graph, build_graph};
    use ir::{Interpreter, Op, Tensor};
    use std::collections::HashMap;

    fn config(layers: usize, dropout: f64, num_labels: usize) -> ModelConfig {
        let text = format!(
            r#"{{"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": {layers},
                "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 8,
                "hidden_dropout_prob": {dropout}, "attention_probs_dropout_prob": {dropout},
                "num_labels": {num_labels}}}"#
        );
        HfBertConfig::from_json(&text, "test")
            .unwrap()
            .resolve(&Preset::paper(), "test")
            .unwrap()
    }

    fn spec<'a>(
        phase: Phase,
        teacher: &'a ModelConfig,
        student: &'a ModelConfig,
        preset: &'a Preset,
    ) -> GraphSpec<'a> {
        GraphSpec {
            phase,
            teacher,
            student,
            preset,
            batch: 2,
            seq_len: 4,
            dtype: DType::F64,
            precision: Default::default(),
        }
    }

    #[test]
    fn hard_cross_entropy_is_the_mean_negative_log_likelihood() {
        let mut b = Builder::new("ce");
        let logits = b.input("logits", TensorType::new(DType::F64, vec![3, 3]));
        let labels = b.input("labels", TensorType::new(DType::I32, vec![3]));
        let ce = hard_cross_entropy(&mut b, logits, labels);
        b.output("ce", ce);
        let g = b.finish();
        let z = [[1.0, 2.0, 0.5], [-1.0, 0.0, 3.0], [0.2, 0.2, 0.2]];
        let y = [1usize, 0, 2];
        let feed = |labels: &[f64]| {
            HashMap::from([
                (
                    "logits".to_string(),
                    Tensor::from_f64(&TensorType::new(DType::F64, vec![3, 3]), &z.concat()),
                ),
                (
                    "labels".to_string(),
                    Tensor::from_f64(&TensorType::new(DType::I32, vec![3]), labels),
                ),
            ])
        };
        let nll = |r: &[f64; 3], k: usize| {
            let lse = r.iter().map(|x| x.exp()).sum::<f64>().ln();
            lse - r[k]
        };
        let want = (0..3).map(|i| nll(&z[i], y[i])).sum::<f64>() / 3.0;
        let got = Interpreter::run_map(&g, &feed(&[1.0, 0.0, 2.0])).unwrap()["ce"].to_f64()[0];
        assert!((got - want).abs() < 1e-14, "{got} vs {want}");
        // A label outside 0..num_labels picks no class (documented; checked before the step).
        let got = Interpreter::run_map(&g, &feed(&[1.0, 0.0, 7.0])).unwrap()["ce"].to_f64()[0];
        let want = (nll(&z[0], 1) + nll(&z[1], 0)) / 3.0;
        assert!((got - want).abs() < 1e-14, "{got} vs {want}");
    }

    #[test]
    fn ft_trains_every_teacher_parameter_and_reads_no_student() {
        let preset = Preset::mindspore();
        // The student is incompatible for distillation (3 layers vs 2): ft must not care.
        let (t, s) = (config(2, 0.0, 3), config(3, 0.0, 5));
        let sp = spec(Phase::Ft, &t, &s, &preset);
        let g = build_graph(&sp).unwrap();
        assert_eq!(
            g.ty(g.input("label_ids").unwrap()),
            &TensorType::new(DType::I32, vec![2])
        );
        assert!(g.inputs().all(|(n, _)| !n.starts_with("student.")));
        let params = sp.model_params();
        assert!(params.iter().any(|p| p.name == "classifier.weight"));
        assert!(params.iter().any(|p| p.name == "bert.pooler.dense.bias"));
        for p in &params {
            for pre in ["teacher", "adam_m", "adam_v"] {
                assert!(
                    g.input(&format!("{pre}.{}", p.name)).is_some(),
                    "{pre}.{}",
                    p.name
                );
            }
            for pre in ["grad", "param", "adam_m", "adam_v"] {
                assert!(
                    g.output(&format!("{pre}.{}", p.name)).is_some(),
                    "{pre}.{}",
                    p.name
                );
            }
        }
        for o in [
            "loss",
            "loss.ce",
            "overflow",
            "lr",
            "state.step",
            "state.loss_scale",
        ] {
            assert!(g.output(o).is_some(), "{o}");
        }
        let fwd = build_forward_graph(&sp).unwrap();
        let names: Vec<&str> = fwd.outputs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["loss", "loss.ce"]);
    }

    #[test]
    fn ft_dropout_follows_the_teacher_config_keyed_by_seed_and_cur_iter() {
        let preset = Preset::paper();
        let s = config(1, 0.0, 3);
        let random = |g: &Graph| {
            g.nodes
                .iter()
                .filter_map(|n| match n.op {
                    Op::RandomUniform { op_id } => Some((op_id, n.inputs.clone())),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        let t = config(2, 0.0, 3);
        assert!(random(&build_graph(&spec(Phase::Ft, &t, &s, &preset)).unwrap()).is_empty());
        let t = config(2, 0.1, 3);
        let g = build_graph(&spec(Phase::Ft, &t, &s, &preset)).unwrap();
        let sites = random(&g);
        // Embeddings, then per layer: attention probabilities, attention output, FFN output.
        assert_eq!(sites.len(), 1 + 3 * 2);
        let (seed, iter) = (
            g.input("state.seed").unwrap(),
            g.input("state.cur_iter").unwrap(),
        );
        for (i, (id, inputs)) in sites.iter().enumerate() {
            assert_eq!(*id, i as u32);
            assert_eq!(inputs, &vec![seed, iter]);
        }
        // The eval graph of the same teacher draws nothing.
        let e = build_graph(&spec(Phase::EvalTeacher, &t, &s, &preset)).unwrap();
        assert!(random(&e).is_empty());
    }

    #[test]
    fn ft_step_defaults_are_bert_fine_tuning_without_loss_scaling() {
        use crate::executable::step_defaults;
        use crate::frontend::preset::ScheduleKind;
        for (preset, schedule) in [
            (Preset::mindspore(), ScheduleKind::Polynomial),
            (Preset::paper(), ScheduleKind::WarmupLinear),
        ] {
            let d = step_defaults(&preset, Phase::Ft);
            assert_eq!((d.lr0, d.end_lr, d.loss_scale), (2e-5, 0.0, 1.0));
            assert_eq!(preset.ft.schedule, schedule);
            let e = step_defaults(&preset, Phase::EvalTeacher);
            assert_eq!((e.lr0, e.loss_scale), (0.0, 1.0));
        }
    }

    #[test]
    fn eval_teacher_reads_the_teacher_and_writes_its_logits() {
        let preset = Preset::mindspore();
        let (t, s) = (config(2, 0.1, 3), config(1, 0.0, 5));
        let g = build_graph(&spec(Phase::EvalTeacher, &t, &s, &preset)).unwrap();
        assert_eq!(g.name, "eval_teacher");
        assert!(g.inputs().all(|(n, _)| !n.starts_with("student.")));
        assert!(g.input("teacher.classifier.weight").is_some());
        assert!(g.input("label_ids").is_none());
        let names: Vec<&str> = g.outputs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["logits"]);
        assert_eq!(
            g.ty(g.output("logits").unwrap()),
            &TensorType::new(DType::F64, vec![2, 3])
        );
    }

    #[test]
    fn a_one_output_teacher_is_fine_tuned_as_a_regressor() {
        let preset = Preset::paper();
        let s = config(1, 0.0, 3);
        let t = config(2, 0.0, 1);
        let sp = spec(Phase::Ft, &t, &s, &preset);
        assert!(sp.is_regression());
        let g = build_graph(&sp).unwrap();
        // Float targets, and the loss is the mean squared error to them.
        assert_eq!(
            g.ty(g.input("label_ids").unwrap()),
            &TensorType::new(DType::F64, vec![2])
        );
        let fwd = build_forward_graph(&sp).unwrap();
        let names: Vec<&str> = fwd.outputs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["loss", "loss.mse"]);
        let mut b = Builder::new("mse");
        let logits = b.input("logits", TensorType::new(DType::F64, vec![3, 1]));
        let y = b.input("y", TensorType::new(DType::F64, vec![3]));
        let l = crate::frontend::regression_mse(&mut b, logits, y);
        b.output("l", l);
        let g = b.finish();
        let feed = HashMap::from([
            (
                "logits".to_string(),
                Tensor::from_f64(&TensorType::new(DType::F64, vec![3, 1]), &[1.0, 2.0, 0.5]),
            ),
            (
                "y".to_string(),
                Tensor::from_f64(&TensorType::new(DType::F64, vec![3]), &[0.0, 4.0, 0.5]),
            ),
        ]);
        let got = Interpreter::run_map(&g, &feed).unwrap()["l"].to_f64()[0];
        assert!((got - 5.0 / 3.0).abs() < 1e-15, "{got}");
        // eval_teacher of a regression head only writes its [batch, 1] logits.
        assert!(build_graph(&spec(Phase::EvalTeacher, &t, &s, &preset)).is_ok());
    }

    #[test]
    fn ft_checks_only_the_teacher() {
        let preset = Preset::paper();
        let s = config(1, 0.0, 3);
        // seq-len is checked against the teacher only.
        let t = config(2, 0.0, 3);
        let mut short = config(1, 0.0, 3);
        short.max_position_embeddings = 2;
        assert!(build_graph(&spec(Phase::Ft, &t, &short, &preset)).is_ok());
        let err = build_graph(&spec(Phase::Ft, &short, &s, &preset)).unwrap_err();
        assert!(err.0.contains("teacher's max_position_embeddings"), "{err}");
        let mut none = config(2, 0.0, 3);
        none.num_labels = 0;
        let err = build_graph(&spec(Phase::Ft, &none, &s, &preset)).unwrap_err();
        assert!(err.0.contains("num_labels >= 1"), "{err}");
    }
}
