//! The frontend: from model configs and a preset to one IR graph per phase.
//!
//! Training graphs (gd, td1, td2) read, by name:
//! - `input_ids`, `input_mask`, `segment_ids`: i32 `[batch, seq]`;
//! - `state.step`, `state.cur_iter`, `state.last_overflow_iter`, `state.seed` (i32 scalars) and
//!   `state.loss_scale` (float scalar);
//! - `sched.lr0`, `sched.end_lr`, `sched.warmup_steps`, `sched.decay_steps` (float scalars);
//! - `teacher.<hf name>` (frozen), `student.<hf name>`, `adam_m.<hf name>`, `adam_v.<hf name>`.
//!
//! and write `loss` with its parts (`loss.att`, `loss.rep` or `loss.cls`), `grad.<name>`
//! (unscaled, before clipping), `param.<name>`, `adam_m.<name>`, `adam_v.<name>`, the next
//! `state.*` values (same names as the inputs), `overflow` (bool) and `lr`.
//! The eval graph reads the batch and `student.<hf name>` and writes `logits`.

pub mod bert;
pub mod config;
pub mod preset;
pub mod train;

use bert::{param_specs, Batch, BertBuilder, DropoutCtx, Parts, Weights};
use config::ModelConfig;
use ir::{Builder, CmpOp, DType, Graph, ReduceKind, TensorType, ValueId};
use preset::{Phase, Preset};
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
    /// Checks what the phase needs of the pairing.
    pub fn validate(&self) -> Result<(), FrontendError> {
        let (t, s) = (self.teacher, self.student);
        let fail = |m: String| Err(FrontendError(m));
        if self.batch == 0 || self.seq_len == 0 {
            return fail(format!(
                "batch ({}) and seq-len ({}) must be positive",
                self.batch, self.seq_len
            ));
        }
        for (who, c) in [("teacher", t), ("student", s)] {
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
        if self.phase == Phase::Eval {
            return Ok(());
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

    /// Parts of the teacher the phase reads.
    pub fn teacher_parts(&self) -> Parts {
        let head = self.phase == Phase::Td2;
        Parts {
            pooler: head,
            classifier: head,
            fit_dense: None,
        }
    }

    /// Parts of the student the phase trains (or, for eval, reads).
    pub fn student_parts(&self) -> Parts {
        match self.phase {
            Phase::Gd => Parts {
                pooler: true,
                classifier: false,
                fit_dense: Some(self.teacher.hidden_size),
            },
            Phase::Td1 | Phase::Td2 => Parts {
                pooler: true,
                classifier: true,
                fit_dense: Some(self.teacher.hidden_size),
            },
            Phase::Eval => Parts {
                pooler: true,
                classifier: true,
                fit_dense: None,
            },
        }
    }
}

/// Builds the graph of `spec.phase`.
pub fn build_graph(spec: &GraphSpec) -> Result<Graph, FrontendError> {
    spec.validate()?;
    Ok(match spec.phase {
        Phase::Eval => eval_graph(spec),
        _ => train_graph(spec, false),
    })
}

/// The graph before autodiff: forward passes and losses (eval: the whole eval graph).
pub fn build_forward_graph(spec: &GraphSpec) -> Result<Graph, FrontendError> {
    spec.validate()?;
    Ok(match spec.phase {
        Phase::Eval => eval_graph(spec),
        _ => train_graph(spec, true),
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

fn eval_graph(spec: &GraphSpec) -> Graph {
    let mut b = Builder::new("eval");
    let batch = declare_batch(&mut b, spec);
    let w = Weights::declare(
        &mut b,
        "student",
        &param_specs(spec.student, spec.student_parts()),
        spec.dtype,
    );
    let mut ids = 0;
    let mut sb = BertBuilder {
        b: &mut b,
        cfg: spec.student,
        w: &w,
        dropout: None,
        next_dropout_id: &mut ids,
        dtype: spec.dtype,
    };
    let out = sb.encoder(&batch);
    let logits = sb.logits(*out.reps.last().unwrap(), &batch);
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

/// The training step; with `forward_only`, just the forward pass and losses (the `frontend`
/// stage, before autodiff).
fn train_graph(spec: &GraphSpec, forward_only: bool) -> Graph {
    let (tc, sc, preset) = (spec.teacher, spec.student, spec.preset);
    let constants = preset.phase(spec.phase).expect("training phase");
    let dt = spec.dtype;
    let mut b = Builder::new(spec.phase.name());
    let batch = declare_batch(&mut b, spec);
    let state = State::declare(&mut b, dt);
    let sched = Schedule::declare(&mut b, dt);
    let tw = Weights::declare(
        &mut b,
        "teacher",
        &param_specs(tc, spec.teacher_parts()),
        dt,
    );
    let s_specs = param_specs(sc, spec.student_parts());
    let sw = Weights::declare(&mut b, "student", &s_specs, dt);
    let mw = Weights::declare(&mut b, "adam_m", &s_specs, dt);
    let vw = Weights::declare(&mut b, "adam_v", &s_specs, dt);

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

    let dropout = Some(DropoutCtx {
        seed: state.seed,
        counter: state.cur_iter,
    });
    let mut ids = 0u32;
    let mut sb = BertBuilder {
        b: &mut b,
        cfg: sc,
        w: &sw,
        dropout,
        next_dropout_id: &mut ids,
        dtype: dt,
    };
    let s_out = sb.encoder(&batch);
    let mut outputs: Vec<(String, ValueId)> = Vec::new();
    let loss = if spec.phase == Phase::Td2 {
        let s_logits = sb.logits(*s_out.reps.last().unwrap(), &batch);
        let cls = soft_cross_entropy(&mut b, s_logits, t_logits.unwrap(), preset.temperature);
        outputs.push(("loss.cls".into(), cls));
        cls
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
        outputs.push(("loss.att".into(), att));
        outputs.push(("loss.rep".into(), rep));
        b.add(att, rep)
    };

    if forward_only {
        b.output("loss", loss);
        for (n, v) in outputs {
            b.output(n, v);
        }
        return b.finish();
    }

    // Backward of the scaled loss, then unscale.
    let wrt: Vec<ValueId> = sw.order.iter().map(|(_, v)| *v).collect();
    let grads = ir::autodiff::gradients(&mut b, loss, state.loss_scale, &wrt)
        .expect("loss is a float scalar");
    let one = b.scalar(1.0, dt);
    let inv_scale = b.div(one, state.loss_scale);
    let mut params = Vec::new();
    for ((name, param), g) in sw.order.iter().zip(grads) {
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
            m: mw.get(name),
            v: vw.get(name),
            grad,
        });
    }
    let opt = Optimizer { preset, constants };
    let (updates, overflow, lr) = opt.apply(&mut b, &params, &state, &sched);

    let next = train::advance_state(&mut b, constants, &state, overflow);

    b.output("loss", loss);
    for (n, v) in outputs {
        b.output(n, v);
    }
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
