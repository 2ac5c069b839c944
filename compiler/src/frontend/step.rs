//! The half of a training graph after the forward pass, the same for every training phase:
//! backward of the scaled loss, unscale, the `[PAD]` row rule, the optimizer (train.rs) and the
//! state update, and the outputs in the order of the module doc.

use super::bert::{DropoutCtx, ParamSpec, Weights};
use super::train::{self, Optimizer, ParamState, Schedule, State};
use super::GraphSpec;
use ir::{Builder, CmpOp, DType, Graph, TensorType, ValueId};

/// The inputs every training graph declares after the batch.
pub(super) struct TrainInputs {
    pub(super) state: State,
    pub(super) sched: Schedule,
}

impl TrainInputs {
    pub(super) fn declare(b: &mut Builder, dtype: DType) -> TrainInputs {
        TrainInputs {
            state: State::declare(b, dtype),
            sched: Schedule::declare(b, dtype),
        }
    }

    /// Dropout keyed by the seed and the executed-step counter.
    pub(super) fn dropout(&self) -> Option<DropoutCtx> {
        Some(DropoutCtx {
            seed: self.state.seed,
            counter: self.state.cur_iter,
        })
    }
}

/// The trained model's parameters and Adam moments (`<prefix>.*`, `adam_m.*`, `adam_v.*`).
pub(super) struct Trained {
    pub(super) params: Weights,
    pub(super) m: Weights,
    pub(super) v: Weights,
}

impl Trained {
    pub(super) fn declare(
        b: &mut Builder,
        prefix: &str,
        specs: &[ParamSpec],
        dtype: DType,
    ) -> Trained {
        Trained {
            params: Weights::declare(b, prefix, specs, dtype),
            m: Weights::declare(b, "adam_m", specs, dtype),
            v: Weights::declare(b, "adam_v", specs, dtype),
        }
    }
}

/// A training phase's forward result: the loss and its named parts.
pub(super) struct Loss {
    pub(super) total: ValueId,
    pub(super) parts: Vec<(String, ValueId)>,
}

/// Everything after the forward pass, the same for every training phase: backward of the scaled
/// loss, unscale, the `[PAD]` row rule, the optimizer and the state update; then the outputs in
/// the order of the module doc. With `forward_only`, only the loss and its parts.
pub(super) fn finish_training(
    mut b: Builder,
    spec: &GraphSpec,
    loss: Loss,
    tr: &Trained,
    ti: &TrainInputs,
    forward_only: bool,
) -> Graph {
    let preset = spec.preset;
    let constants = preset.phase(spec.phase).expect("training phase");
    let (state, sched) = (&ti.state, &ti.sched);
    b.output("loss", loss.total);
    for (n, v) in &loss.parts {
        b.output(n.clone(), *v);
    }
    if forward_only {
        return b.finish();
    }

    // Backward of the scaled loss, then unscale.
    let wrt: Vec<ValueId> = tr.params.order.iter().map(|(_, v)| *v).collect();
    let grads = ir::autodiff::gradients(&mut b, loss.total, state.loss_scale, &wrt)
        .expect("loss is a float scalar");
    // Data parallelism (TINYBERT_SPEC §8): the scaled gradients are averaged across the
    // devices before unscale, the overflow check, clipping and the update, as MindSpore's
    // DistributedGradReducer does; a non-finite gradient on any device makes the mean
    // non-finite, so every device skips the step together. One process: the gradients.
    let grads: Vec<Option<ValueId>> = grads
        .into_iter()
        .map(|g| g.map(|g| b.all_reduce_mean(g)))
        .collect();
    let one = b.scalar(1.0, spec.dtype);
    let inv_scale = b.div(one, state.loss_scale);
    let mut params = Vec::new();
    for ((name, param), g) in tr.params.order.iter().zip(grads) {
        let grad = g.map(|g| {
            let s = b.shape(g);
            let inv = b.splat(inv_scale, &s);
            let g = b.mul(g, inv);
            if name == "bert.embeddings.word_embeddings.weight" && !preset.pad_row_gets_gradient {
                let rows = b.iota(0, TensorType::new(DType::I32, s.clone()));
                let zero = b.constant(0.0, TensorType::new(DType::I32, s.clone()));
                let real = b.compare(CmpOp::Ne, rows, zero);
                let z = b.full_like(0.0, g);
                b.select(real, g, z)
            } else {
                g
            }
        });
        params.push(ParamState {
            name: name.clone(),
            param: *param,
            m: tr.m.get(name),
            v: tr.v.get(name),
            grad,
        });
    }
    let opt = Optimizer { preset, constants };
    let (updates, overflow, lr) = opt.apply(&mut b, &params, state, sched);

    let next = train::advance_state(&mut b, constants, state, overflow);

    for (ps, u) in params.iter().zip(&updates) {
        b.output(format!("grad.{}", ps.name), u.grad);
    }
    for (ps, u) in params.iter().zip(&updates) {
        b.output(format!("param.{}", ps.name), u.param);
    }
    for (ps, u) in params.iter().zip(&updates) {
        b.output(format!("adam_m.{}", ps.name), u.m);
    }
    for (ps, u) in params.iter().zip(&updates) {
        b.output(format!("adam_v.{}", ps.name), u.v);
    }
    b.output("overflow", overflow);
    b.output("lr", lr);
    b.output("state.step", next.step);
    b.output("state.cur_iter", next.cur_iter);
    b.output("state.last_overflow_iter", next.last_overflow_iter);
    b.output("state.loss_scale", next.loss_scale);
    b.output("state.seed", state.seed);
    b.finish()
}
