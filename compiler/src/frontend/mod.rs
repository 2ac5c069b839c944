//! The frontend: from model configs and a preset to one IR graph per phase.
//!
//! Training graphs (gd, td1, td2: distillation; ft: teacher fine-tuning) read, by name:
//! - `input_ids`, `input_mask`, `segment_ids`: i32 `[batch, seq]`; ft also `label_ids`: i32
//!   `[batch]` (class indices in `0..num_labels`), or, for a regression head (`num_labels` 1, as
//!   STS-B), float `[batch]` targets, which td2 then reads too (TINYBERT_SPEC §2: the PyTorch
//!   TinyBERT trains a regression student on `MSE(logits, label)`, without the teacher);
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

mod distill;
mod ft;
mod step;

use bert::{param_specs, Batch, BertBuilder, ParamSpec, Parts, Weights};
use config::ModelConfig;
use distill::distill_graph;
use ft::ft_graph;
use ir::{Builder, DType, Graph, TensorType};
use preset::{Model, Phase, Preset};

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
    /// GEMMs in full precision or in a 16-bit type (the mixed-precision pass, after autodiff).
    pub precision: crate::passes::mixed_precision::Precision,
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
            // The largest activations: attention scores and the feed-forward hidden layer.
            let (b, n) = (self.batch, self.seq_len);
            for (what, shape) in [
                ("attention scores", [b, c.num_heads, n, n]),
                ("feed-forward activations", [b, n, c.intermediate_size, 1]),
            ] {
                if ir::checked_numel(&shape).is_none() {
                    return fail(format!(
                        "batch {b} with seq-len {n}: the {who}'s {what} would have more than 2^40 elements"
                    ));
                }
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
            Phase::Ft if t.num_labels == 0 => {
                return fail(
                    "ft trains the teacher's classifier and needs num_labels >= 1 in the teacher config (1: regression, >= 2: classification), found 0".into(),
                )
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

    /// Whether the phase trains a regression head (`num_labels` 1): ft and td2 then read float
    /// targets and train on the mean squared error to them.
    pub fn is_regression(&self) -> bool {
        match self.phase {
            Phase::Ft => self.teacher.num_labels == 1,
            Phase::Td2 => self.student.num_labels == 1,
            _ => false,
        }
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

/// `label_ids` `[batch]`: class indices (i32), or float targets for a regression head.
fn declare_labels(b: &mut Builder, spec: &GraphSpec) -> ir::ValueId {
    let dtype = if spec.is_regression() {
        spec.dtype
    } else {
        DType::I32
    };
    b.input("label_ids", TensorType::new(dtype, vec![spec.batch]))
}

/// Mean over the batch of `(logits[:, 0] − target)²` for a one-output head (PyTorch's
/// `MSELoss()(logits.view(-1), labels.view(-1))`).
fn regression_mse(b: &mut Builder, logits: ir::ValueId, targets: ir::ValueId) -> ir::ValueId {
    let n = b.shape(targets)[0];
    let pred = b.reshape(logits, &[n]);
    let d = b.sub(pred, targets);
    let sq = b.mul(d, d);
    b.reduce_all(ir::ReduceKind::Mean, sq)
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
