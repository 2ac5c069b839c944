//! Distillation graphs (gd, td1, td2): the frozen teacher, the student with dropout and the
//! TinyBERT losses (TINYBERT_SPEC §2).

use super::bert::{self, param_specs, BertBuilder, Weights};
use super::preset::Phase;
use super::step::{finish_training, Loss, TrainInputs, Trained};
use super::{declare_batch, declare_labels, regression_mse, GraphSpec};
use ir::{Builder, CmpOp, Graph, ReduceKind, ValueId};

/// Mean of squared differences over every element.
fn mse(b: &mut Builder, x: ValueId, y: ValueId) -> ValueId {
    let d = b.sub(x, y);
    let sq = b.mul(d, d);
    b.reduce_all(ReduceKind::Mean, sq)
}

/// Attention scores with every element ≤ −100 (masked keys) set to 0.
fn zero_masked(b: &mut Builder, a: ValueId) -> ValueId {
    let lim = b.full_like(-100.0, a);
    let masked = b.compare(CmpOp::Le, a, lim);
    let z = b.full_like(0.0, a);
    b.select(masked, z, a)
}

/// `mean_{b,c}(−softmax(t/T)·log_softmax(s/T))`.
fn soft_cross_entropy(
    b: &mut Builder,
    student: ValueId,
    teacher: ValueId,
    temperature: f64,
) -> ValueId {
    let (s, t) = if temperature == 1.0 {
        (student, teacher)
    } else {
        (
            b.mul_scalar(student, 1.0 / temperature),
            b.mul_scalar(teacher, 1.0 / temperature),
        )
    };
    let pt = bert::softmax_last(b, t);
    let ls = bert::log_softmax_last(b, s);
    let prod = b.mul(pt, ls);
    let neg = b.neg(prod);
    b.reduce_all(ReduceKind::Mean, neg)
}

/// A distillation step (gd, td1, td2): frozen teacher, student with dropout, TinyBERT losses;
/// with `forward_only`, just the forward passes and losses (the `frontend` stage).
pub(super) fn distill_graph(spec: &GraphSpec, forward_only: bool) -> Graph {
    let (tc, sc, preset) = (spec.teacher, spec.student, spec.preset);
    let dt = spec.dtype;
    let mut b = Builder::new(spec.phase.name());
    let batch = declare_batch(&mut b, spec);
    let targets = spec.is_regression().then(|| declare_labels(&mut b, spec));
    let ti = TrainInputs::declare(&mut b, dt);
    let tw = Weights::declare(
        &mut b,
        "teacher",
        &param_specs(
            tc,
            spec.teacher_parts()
                .expect("distillation reads the teacher"),
        ),
        dt,
    );
    let tr = Trained::declare(&mut b, "student", &spec.model_params(), dt);
    let sw = &tr.params;

    // Frozen teacher: no dropout.
    let mut ids = 0u32;
    let mut tb = BertBuilder {
        b: &mut b,
        cfg: tc,
        w: &tw,
        dropout: None,
        next_dropout_id: &mut ids,
        dtype: dt,
    };
    let t_out = tb.encoder(&batch);
    // A regression student learns from the labels alone (PyTorch TinyBERT's td2 for STS-B).
    let t_logits = (spec.phase == Phase::Td2 && targets.is_none())
        .then(|| tb.logits(*t_out.reps.last().unwrap(), &batch));

    let mut ids = 0u32;
    let mut sb = BertBuilder {
        b: &mut b,
        cfg: sc,
        w: sw,
        dropout: ti.dropout(),
        next_dropout_id: &mut ids,
        dtype: dt,
    };
    let s_out = sb.encoder(&batch);
    let loss = if spec.phase == Phase::Td2 {
        let s_logits = sb.logits(*s_out.reps.last().unwrap(), &batch);
        let cls = match targets {
            Some(y) => regression_mse(&mut b, s_logits, y),
            None => soft_cross_entropy(&mut b, s_logits, t_logits.unwrap(), preset.temperature),
        };
        Loss {
            total: cls,
            parts: vec![("loss.cls".into(), cls)],
        }
    } else {
        // TinyBERT layer mapping: student layer i ↔ teacher layer (i+1)·k, embeddings ↔ embeddings.
        let k = tc.num_layers / sc.num_layers;
        let mut att = None;
        for (i, &sa) in s_out.atts.iter().enumerate() {
            let zs = zero_masked(&mut b, sa);
            let zt = zero_masked(&mut b, t_out.atts[(i + 1) * k - 1]);
            let l = mse(&mut b, zs, zt);
            att = Some(match att {
                Some(a) => b.add(a, l),
                None => l,
            });
        }
        let mut rep = None;
        for (i, &sr) in s_out.reps.iter().enumerate() {
            let fit = bert::linear(
                &mut b,
                sr,
                sw.get("fit_dense.weight"),
                sw.get("fit_dense.bias"),
            );
            let l = mse(&mut b, fit, t_out.reps[i * k]);
            rep = Some(match rep {
                Some(r) => b.add(r, l),
                None => l,
            });
        }
        let (att, rep) = (att.unwrap(), rep.unwrap());
        Loss {
            total: b.add(att, rep),
            parts: vec![("loss.att".into(), att), ("loss.rep".into(), rep)],
        }
    };
    finish_training(b, spec, loss, &tr, &ti, forward_only)
}
