//! The frontend: from model configs and a preset to one IR graph per phase.
//!
//! Training graphs (gd, td1, td2: distillation; ft: teacher fine-tuning) read, by name:
//! - `input_ids`, `input_mask`, `segment_ids`: i32 `[batch, seq]`; ft also `label_ids`: i32
//!   `[batch]` (class indices in `0..num_labels`);
//! - `state.step`, `state.cur_iter`, `state.last_overflow_iter`, `state.seed` (i32 scalars) and
//!   `state.loss_scale` (float scalar);
//! - `sched.lr0`, `sched.end_lr`, `sched.warmup_steps`, `sched.decay_steps` (float scalars);
//! - the trained model `<model>.<hf name>` with `adam_m.<hf name>`, `adam_v.<hf name>`, where
//!   `<model>` is `student` in gd/td1/td2 (which also read the frozen `teacher.<hf name>`) and
//!   `teacher` in ft (all of its parameters: embeddings, layers, pooler, classifier).
//!
//! and write `loss` with its parts (`loss.att`, `loss.rep`, `loss.cls` or `loss.ce`),
//! `grad.<name>` (unscaled, before clipping), `param.<name>`, `adam_m.<name>`, `adam_v.<name>`
//! of the trained model, the next `state.*` values (same names as the inputs), `overflow` (bool)
//! and `lr`.
//! The eval graphs read the batch and `student.<hf name>` (eval) or `teacher.<hf name>`
//! (eval_teacher) and write `logits`.

pub mod bert;
pub mod config;
pub mod preset;
pub mod train;

use bert::{param_specs, Batch, BertBuilder, DropoutCtx, ParamSpec, Parts, Weights};
use config::ModelConfig;
use ir::{Builder, CmpOp, DType, Graph, ReduceKind, TensorType, ValueId};
use preset::{Model, Phase, Preset};
use train::{Optimizer, ParamState, Schedule, State};

/// A teacher/student pairing that cannot be distilled, or bad step shapes.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct FrontendError(pub String);

/// Shapes and numerics of one graph.
#[derive(Clone, Debug)]
pub struct GraphSpec<'a> {
    pub phase: Phase,
    pub teacher: &'a ModelConfig,
    pub student: &'a ModelConfig,
    pub preset: &'a Preset,
    pub batch: usize,
    pub seq_len: usize,
    /// Float dtype of parameters and activations (f32; f64 for tests).
    pub dtype: DType,
}

impl GraphSpec<'_> {
    /// Checks what the phase needs of the configs: the teacher phases read only the teacher.
    pub fn validate(&self) -> Result<(), FrontendError> {
        let (t, s) = (self.teacher, self.student);
        let fail = |m: String| Err(FrontendError(m));
        if self.batch == 0 || self.seq_len == 0 {
            return fail(format!(
                "batch ({}) and seq-len ({}) must be positive",
                self.batch, self.seq_len
            ));
        }
        let read: &[(&str, &ModelConfig)] = match self.phase {
            Phase::Ft | Phase::EvalTeacher => &[("teacher", t)],
            Phase::Eval => &[("student", s)],
            Phase::Gd | Phase::Td1 | Phase::Td2 => &[("teacher", t), ("student", s)],
        };
        for &(who, c) in read {
            if self.seq_len > c.max_position_embeddings {
                return fail(format!(
                    "seq-len {} exceeds the {who}'s max_position_embeddings {}",
                    self.seq_len, c.max_position_embeddings
                ));
            }
        }
        if !self.dtype.is_float() {
            return fail(format!(
                "graph dtype must be a float type, found {}",
                self.dtype
            ));
        }
        match self.phase {
            Phase::Eval | Phase::EvalTeacher => return Ok(()),
            Phase::Ft if t.num_labels < 2 => {
                return fail(format!(
                    "ft trains the teacher with hard-label cross-entropy and needs num_labels >= 2 in the teacher config, found {} (regression is not supported yet)",
                    t.num_labels
                ))
            }
            Phase::Ft => return Ok(()),
            Phase::Gd | Phase::Td1 | Phase::Td2 => {}
        }
        if !t.num_layers.is_multiple_of(s.num_layers) {
            return fail(format!(
                "teacher num_hidden_layers {} is not a multiple of student num_hidden_layers {} (TinyBERT maps layers uniformly)",
                t.num_layers, s.num_layers
            ));
        }
        if t.num_heads != s.num_heads {
            return fail(format!(
                "teacher and student must have the same num_attention_heads for the attention loss ({} vs {})",
                t.num_heads, s.num_heads
            ));
        }
        if t.vocab_size != s.vocab_size {
            return fail(format!(
                "teacher and student vocab_size differ ({} vs {})",
                t.vocab_size, s.vocab_size
            ));
        }
        if t.type_vocab_size != s.type_vocab_size {
            return fail(format!(
                "teacher and student type_vocab_size differ ({} vs {})",
                t.type_vocab_size, s.type_vocab_size
            ));
        }
        if self.phase == Phase::Td2 && t.num_labels != s.num_labels {
            return fail(format!(
                "teacher and student num_labels differ ({} vs {})",
                t.num_labels, s.num_labels
            ));
        }
        Ok(())
    }

    /// Parts of the teacher the phase reads (or, for ft, trains); `None` when it reads none.
    pub fn teacher_parts(&self) -> Option<Parts> {
        let head = Parts {
            pooler: true,
            classifier: true,
            fit_dense: None,
        };
        match self.phase {
            Phase::Gd | Phase::Td1 => Some(Parts {
                pooler: false,
                classifier: false,
                fit_dense: None,
            }),
            Phase::Td2 | Phase::Ft | Phase::EvalTeacher => Some(head),
            Phase::Eval => None,
        }
    }

    /// Parts of the student the phase trains (or, for eval, reads); `None` when it reads none.
    pub fn student_parts(&self) -> Option<Parts> {
        match self.phase {
            Phase::Gd => Some(Parts {
                pooler: true,
                classifier: false,
                fit_dense: Some(self.teacher.hidden_size),
            }),
            Phase::Td1 | Phase::Td2 => Some(Parts {
                pooler: true,
                classifier: true,
                fit_dense: Some(self.teacher.hidden_size),
            }),
            Phase::Eval => Some(Parts {
                pooler: true,
                classifier: true,
                fit_dense: None,
            }),
            Phase::Ft | Phase::EvalTeacher => None,
        }
    }

    /// The config of the model the phase trains or evaluates.
    fn model_config(&self) -> &ModelConfig {
        match self.phase.model() {
            Model::Teacher => self.teacher,
            Model::Student => self.student,
        }
    }

    /// The parameters of the model the phase trains or evaluates, in graph-input order.
    pub fn model_params(&self) -> Vec<ParamSpec> {
        let parts = match self.phase.model() {
            Model::Teacher => self.teacher_parts(),
            Model::Student => self.student_parts(),
        };
        param_specs(
            self.model_config(),
            parts.expect("a phase reads the model it trains or evaluates"),
        )
    }
}

/// Builds the graph of `spec.phase`.
pub fn build_graph(spec: &GraphSpec) -> Result<Graph, FrontendError> {
    build(spec, false)
}

/// The graph before autodiff: forward passes and losses (eval: the whole eval graph).
pub fn build_forward_graph(spec: &GraphSpec) -> Result<Graph, FrontendError> {
    build(spec, true)
}

fn build(spec: &GraphSpec, forward_only: bool) -> Result<Graph, FrontendError> {
    spec.validate()?;
    Ok(match spec.phase {
        Phase::Eval | Phase::EvalTeacher => eval_graph(spec),
        Phase::Ft => ft_graph(spec, forward_only),
        Phase::Gd | Phase::Td1 | Phase::Td2 => distill_graph(spec, forward_only),
    })
}

fn declare_batch(b: &mut Builder, spec: &GraphSpec) -> Batch {
    let ids = TensorType::new(DType::I32, vec![spec.batch, spec.seq_len]);
    Batch {
        input_ids: b.input("input_ids", ids.clone()),
        input_mask: b.input("input_mask", ids.clone()),
        segment_ids: b.input("segment_ids", ids),
        batch: spec.batch,
        seq: spec.seq_len,
    }
}

/// Logits of the phase's model (student for eval, teacher for eval_teacher), no dropout.
fn eval_graph(spec: &GraphSpec) -> Graph {
    let mut b = Builder::new(spec.phase.name());
    let batch = declare_batch(&mut b, spec);
    let w = Weights::declare(
        &mut b,
        spec.phase.model().prefix(),
        &spec.model_params(),
        spec.dtype,
    );
    let mut ids = 0;
    let mut mb = BertBuilder {
        b: &mut b,
        cfg: spec.model_config(),
        w: &w,
        dropout: None,
        next_dropout_id: &mut ids,
        dtype: spec.dtype,
    };
    let out = mb.encoder(&batch);
    let logits = mb.logits(*out.reps.last().unwrap(), &batch);
    b.output("logits", logits);
    b.finish()
}

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

/// Mean over the batch of `−log_softmax(logits)[label]`; `labels` i32 `[batch]`. A label outside
/// `0..num_labels` selects no class and contributes 0 (the data reader rejects such labels).
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

/// The inputs every training graph declares after the batch.
struct TrainInputs {
    state: State,
    sched: Schedule,
}

impl TrainInputs {
    fn declare(b: &mut Builder, dtype: DType) -> TrainInputs {
        TrainInputs {
            state: State::declare(b, dtype),
            sched: Schedule::declare(b, dtype),
        }
    }

    fn dropout(&self) -> Option<DropoutCtx> {
        Some(DropoutCtx {
            seed: self.state.seed,
            counter: self.state.cur_iter,
        })
    }
}

/// The trained model's parameters and Adam moments (`<prefix>.*`, `adam_m.*`, `adam_v.*`).
struct Trained {
    params: Weights,
    m: Weights,
    v: Weights,
}

impl Trained {
    fn declare(b: &mut Builder, prefix: &str, specs: &[ParamSpec], dtype: DType) -> Trained {
        Trained {
            params: Weights::declare(b, prefix, specs, dtype),
            m: Weights::declare(b, "adam_m", specs, dtype),
            v: Weights::declare(b, "adam_v", specs, dtype),
        }
    }
}

/// A training phase's forward result: the loss and its named parts.
struct Loss {
    total: ValueId,
    parts: Vec<(String, ValueId)>,
}

/// Teacher fine-tuning: the teacher with dropout, the TinyBERT head and hard-label
/// cross-entropy; with `forward_only`, just the forward pass and loss.
fn ft_graph(spec: &GraphSpec, forward_only: bool) -> Graph {
    let dt = spec.dtype;
    let mut b = Builder::new(spec.phase.name());
    let batch = declare_batch(&mut b, spec);
    let labels = b.input("label_ids", TensorType::new(DType::I32, vec![spec.batch]));
    let ti = TrainInputs::declare(&mut b, dt);
    let tr = Trained::declare(&mut b, "teacher", &spec.model_params(), dt);
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
    let ce = hard_cross_entropy(&mut b, logits, labels);
    let loss = Loss {
        total: ce,
        parts: vec![("loss.ce".into(), ce)],
    };
    finish_training(b, spec, loss, &tr, &ti, forward_only)
}

/// A distillation step (gd, td1, td2): frozen teacher, student with dropout, TinyBERT losses;
/// with `forward_only`, just the forward passes and losses (the `frontend` stage).
fn distill_graph(spec: &GraphSpec, forward_only: bool) -> Graph {
    let (tc, sc, preset) = (spec.teacher, spec.student, spec.preset);
    let dt = spec.dtype;
    let mut b = Builder::new(spec.phase.name());
    let batch = declare_batch(&mut b, spec);
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
    let t_logits =
        (spec.phase == Phase::Td2).then(|| tb.logits(*t_out.reps.last().unwrap(), &batch));

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
        let cls = soft_cross_entropy(&mut b, s_logits, t_logits.unwrap(), preset.temperature);
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

/// Everything after the forward pass, the same for every training phase: backward of the scaled
/// loss, unscale, the `[PAD]` row rule, the optimizer and the state update; then the outputs in
/// the order of the module doc. With `forward_only`, only the loss and its parts.
fn finish_training(
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
