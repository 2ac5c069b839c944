//! BERT with Hugging Face parameter names, built into an IR graph: embeddings, encoder layers that
//! expose the hidden states and the pre-softmax attention scores TinyBERT distils, the TinyBERT
//! classification head (pooler → tanh → ReLU → classifier) and fit_dense.

use super::config::{Activation, ModelConfig};
use ir::{Builder, CmpOp, DType, ReduceKind, TensorType, ValueId};
use std::collections::HashMap;

/// Which optional parts of a model a graph uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parts {
    pub pooler: bool,
    pub classifier: bool,
    /// `Some(teacher_hidden)`: the student's `fit_dense` (hidden → teacher hidden).
    pub fit_dense: Option<usize>,
}

/// A parameter: its Hugging Face name and shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
}

/// The parameters of a `BertForSequenceClassification` (+ fit_dense), in a fixed order: the
/// runtime's list (so loaders and graphs agree by construction) plus TinyBERT's fit_dense.
pub fn param_specs(cfg: &ModelConfig, parts: Parts) -> Vec<ParamSpec> {
    let shape = ::plan::bert::BertShape {
        vocab_size: cfg.vocab_size,
        hidden_size: cfg.hidden_size,
        num_layers: cfg.num_layers,
        intermediate_size: cfg.intermediate_size,
        max_position_embeddings: cfg.max_position_embeddings,
        type_vocab_size: cfg.type_vocab_size,
    };
    let mut v: Vec<ParamSpec> = shape
        .param_specs(parts.pooler, parts.classifier.then_some(cfg.num_labels))
        .into_iter()
        .map(|(name, shape)| ParamSpec { name, shape })
        .collect();
    if let Some(t) = parts.fit_dense {
        let h = cfg.hidden_size;
        v.push(ParamSpec {
            name: "fit_dense.weight".into(),
            shape: vec![t, h],
        });
        v.push(ParamSpec {
            name: "fit_dense.bias".into(),
            shape: vec![t],
        });
    }
    v
}

/// Graph inputs for a model's parameters, by Hugging Face name.
pub struct Weights {
    pub values: HashMap<String, ValueId>,
    /// In definition order.
    pub order: Vec<(String, ValueId)>,
}

impl Weights {
    /// Declares an input `<prefix>.<name>` for every spec.
    pub fn declare(b: &mut Builder, prefix: &str, specs: &[ParamSpec], dtype: DType) -> Weights {
        let mut values = HashMap::new();
        let mut order = Vec::new();
        for s in specs {
            let v = b.input(
                format!("{prefix}.{}", s.name),
                TensorType::new(dtype, s.shape.clone()),
            );
            values.insert(s.name.clone(), v);
            order.push((s.name.clone(), v));
        }
        Weights { values, order }
    }

    pub fn get(&self, name: &str) -> ValueId {
        *self
            .values
            .get(name)
            .unwrap_or_else(|| panic!("frontend bug: parameter {name} was not declared"))
    }
}

/// Where dropout masks come from; `None` in a model that runs without dropout.
#[derive(Clone, Copy)]
pub struct DropoutCtx {
    pub seed: ValueId,
    pub counter: ValueId,
}

/// Batch tensors as graph values.
#[derive(Clone, Copy)]
pub struct Batch {
    pub input_ids: ValueId,
    pub input_mask: ValueId,
    pub segment_ids: ValueId,
    pub batch: usize,
    pub seq: usize,
}

/// What a BERT forward pass exposes.
pub struct BertOutputs {
    /// Embedding output then each layer's output, each `[B·S, H]`.
    pub reps: Vec<ValueId>,
    /// Each layer's masked, scaled attention scores before softmax, `[B, heads, S, S]`.
    pub atts: Vec<ValueId>,
}

/// Builds BERT pieces into `b`. Owns the counter that numbers dropout sites, so each site draws
/// its own mask.
pub struct BertBuilder<'a> {
    pub b: &'a mut Builder,
    pub cfg: &'a ModelConfig,
    pub w: &'a Weights,
    pub dropout: Option<DropoutCtx>,
    pub next_dropout_id: &'a mut u32,
    pub dtype: DType,
}

impl BertBuilder<'_> {
    /// `x·Wᵀ + b` for `x` of shape `[N, in]` and a Hugging Face Linear named `name`.
    pub fn linear(&mut self, x: ValueId, name: &str) -> ValueId {
        let w = self.w.get(&format!("{name}.weight"));
        let bias = self.w.get(&format!("{name}.bias"));
        linear(self.b, x, w, bias)
    }

    fn layer_norm(&mut self, x: ValueId, name: &str) -> ValueId {
        let g = self.w.get(&format!("{name}.weight"));
        let beta = self.w.get(&format!("{name}.bias"));
        layer_norm(self.b, x, g, beta, self.cfg.layer_norm_eps)
    }

    fn dropout(&mut self, x: ValueId, p: f64) -> ValueId {
        match self.dropout {
            Some(ctx) if p > 0.0 => {
                let id = *self.next_dropout_id;
                *self.next_dropout_id += 1;
                dropout(self.b, x, p, ctx, id)
            }
            _ => x,
        }
    }

    /// The additive attention mask `(1 − mask)·(−10000)`, `[B, S]`.
    pub fn mask_bias(&mut self, batch: &Batch) -> ValueId {
        let m = self.b.cast(batch.input_mask, self.dtype);
        let one = self.b.full_like(1.0, m);
        let inv = self.b.sub(one, m);
        self.b.mul_scalar(inv, -10000.0)
    }

    pub fn embeddings(&mut self, batch: &Batch) -> ValueId {
        let (bs, s, h) = (batch.batch, batch.seq, self.cfg.hidden_size);
        let e = "bert.embeddings";
        let words = self.b.gather(
            self.w.get(&format!("{e}.word_embeddings.weight")),
            batch.input_ids,
        );
        let pos_table = self.w.get(&format!("{e}.position_embeddings.weight"));
        let pos = self.b.slice(pos_table, &[0, 0], &[s, h]);
        let pos = self.b.broadcast(pos, &[bs, s, h], &[1, 2]);
        let types = self.b.gather(
            self.w.get(&format!("{e}.token_type_embeddings.weight")),
            batch.segment_ids,
        );
        let sum = self.b.add(words, pos);
        let sum = self.b.add(sum, types);
        let flat = self.b.reshape(sum, &[bs * s, h]);
        let ln = self.layer_norm(flat, &format!("{e}.LayerNorm"));
        self.dropout(ln, self.cfg.hidden_dropout)
    }

    /// One encoder layer; returns (output `[B·S, H]`, attention scores `[B, heads, S, S]`).
    pub fn layer(
        &mut self,
        l: usize,
        x: ValueId,
        mask_bias: ValueId,
        batch: &Batch,
    ) -> (ValueId, ValueId) {
        let (bs, s) = (batch.batch, batch.seq);
        let (nh, d, h) = (
            self.cfg.num_heads,
            self.cfg.head_dim(),
            self.cfg.hidden_size,
        );
        let pre = format!("bert.encoder.layer.{l}");
        let heads = |me: &mut Self, which: &str| {
            let y = me.linear(x, &format!("{pre}.attention.self.{which}"));
            let y = me.b.reshape(y, &[bs, s, nh, d]);
            me.b.transpose(y, &[0, 2, 1, 3])
        };
        let q = heads(self, "query");
        let k = heads(self, "key");
        let v = heads(self, "value");
        let raw = self.b.matmul(q, k, false, true);
        let scaled = self.b.mul_scalar(raw, 1.0 / (d as f64).sqrt());
        let mb = self.b.broadcast(mask_bias, &[bs, nh, s, s], &[0, 3]);
        let scores = self.b.add(scaled, mb);
        let probs = softmax_last(self.b, scores);
        let probs = self.dropout(probs, self.cfg.attention_dropout);
        let ctx = self.b.matmul(probs, v, false, false);
        let ctx = self.b.transpose(ctx, &[0, 2, 1, 3]);
        let ctx = self.b.reshape(ctx, &[bs * s, h]);
        let attn = self.linear(ctx, &format!("{pre}.attention.output.dense"));
        let attn = self.dropout(attn, self.cfg.hidden_dropout);
        let attn = self.b.add(attn, x);
        let attn = self.layer_norm(attn, &format!("{pre}.attention.output.LayerNorm"));
        let inter = self.linear(attn, &format!("{pre}.intermediate.dense"));
        let inter = activation(self.b, inter, self.cfg.activation);
        let out = self.linear(inter, &format!("{pre}.output.dense"));
        let out = self.dropout(out, self.cfg.hidden_dropout);
        let out = self.b.add(out, attn);
        let out = self.layer_norm(out, &format!("{pre}.output.LayerNorm"));
        (out, scores)
    }

    /// Embeddings and every encoder layer.
    pub fn encoder(&mut self, batch: &Batch) -> BertOutputs {
        let mask_bias = self.mask_bias(batch);
        let mut reps = vec![self.embeddings(batch)];
        let mut atts = Vec::new();
        for l in 0..self.cfg.num_layers {
            let (out, scores) = self.layer(l, *reps.last().unwrap(), mask_bias, batch);
            reps.push(out);
            atts.push(scores);
        }
        BertOutputs { reps, atts }
    }

    /// TinyBERT head: `classifier(relu(tanh(pooler([CLS]))))`, `[B, num_labels]`.
    pub fn logits(&mut self, last: ValueId, batch: &Batch) -> ValueId {
        let h = self.cfg.hidden_size;
        let seq = self.b.reshape(last, &[batch.batch, batch.seq, h]);
        let cls = self.b.slice(seq, &[0, 0, 0], &[batch.batch, 1, h]);
        let cls = self.b.reshape(cls, &[batch.batch, h]);
        let pooled = self.linear(cls, "bert.pooler.dense");
        let pooled = self.b.tanh(pooled);
        let act = relu(self.b, pooled);
        self.linear(act, "classifier")
    }
}

/// `x·Wᵀ + b` for `x` `[N, in]`, `w` `[out, in]`, `bias` `[out]`.
pub fn linear(b: &mut Builder, x: ValueId, w: ValueId, bias: ValueId) -> ValueId {
    let y = b.matmul(x, w, false, true);
    let s = b.shape(y);
    let bb = b.broadcast(bias, &s, &[1]);
    b.add(y, bb)
}

/// LayerNorm over the last axis of `[N, H]` with biased variance.
pub fn layer_norm(b: &mut Builder, x: ValueId, gamma: ValueId, beta: ValueId, eps: f64) -> ValueId {
    let s = b.shape(x);
    let mean = b.mean(x, &[1]);
    let mean_b = b.broadcast(mean, &s, &[0]);
    let xc = b.sub(x, mean_b);
    let sq = b.mul(xc, xc);
    let var = b.mean(sq, &[1]);
    let var_eps = b.add_scalar(var, eps);
    let rstd = b.rsqrt(var_eps);
    let rstd_b = b.broadcast(rstd, &s, &[0]);
    let norm = b.mul(xc, rstd_b);
    let g = b.broadcast(gamma, &s, &[1]);
    let scaled = b.mul(norm, g);
    let bt = b.broadcast(beta, &s, &[1]);
    b.add(scaled, bt)
}

pub fn activation(b: &mut Builder, x: ValueId, act: Activation) -> ValueId {
    let half_x = b.mul_scalar(x, 0.5);
    let inner = match act {
        Activation::GeluErf => {
            let z = b.mul_scalar(x, std::f64::consts::FRAC_1_SQRT_2);
            b.erf(z)
        }
        Activation::GeluTanh => {
            let x2 = b.mul(x, x);
            let x3 = b.mul(x2, x);
            let c = b.mul_scalar(x3, 0.044715);
            let z = b.add(x, c);
            let z = b.mul_scalar(z, (2.0 / std::f64::consts::PI).sqrt());
            b.tanh(z)
        }
    };
    let one_plus = b.add_scalar(inner, 1.0);
    b.mul(half_x, one_plus)
}

/// `max(x, 0)` written as a select, so the gradient at 0 is 0 as in PyTorch.
pub fn relu(b: &mut Builder, x: ValueId) -> ValueId {
    let z = b.full_like(0.0, x);
    let pos = b.compare(CmpOp::Gt, x, z);
    b.select(pos, x, z)
}

/// Softmax over the last axis; the subtracted max carries no gradient.
pub fn softmax_last(b: &mut Builder, x: ValueId) -> ValueId {
    let (_, e, sum, s, kept) = exp_shifted(b, x);
    let sum_b = b.broadcast(sum, &s, &kept);
    b.div(e, sum_b)
}

/// Log-softmax over the last axis.
pub fn log_softmax_last(b: &mut Builder, x: ValueId) -> ValueId {
    let (z, _, sum, s, kept) = exp_shifted(b, x);
    let lse = b.log(sum);
    let lse_b = b.broadcast(lse, &s, &kept);
    b.sub(z, lse_b)
}

/// Over the last axis: `z = x − max` (no gradient through the max), `exp(z)` and its row sum,
/// plus the shape and the kept axes for broadcasting back.
fn exp_shifted(b: &mut Builder, x: ValueId) -> (ValueId, ValueId, ValueId, Vec<usize>, Vec<usize>) {
    let s = b.shape(x);
    let last = s.len() - 1;
    let kept: Vec<usize> = (0..last).collect();
    let m = b.reduce(ReduceKind::Max, x, &[last]);
    let m = b.stop_gradient(m);
    let mb = b.broadcast(m, &s, &kept);
    let z = b.sub(x, mb);
    let e = b.exp(z);
    let sum = b.sum(e, &[last]);
    (z, e, sum, s, kept)
}

/// Inverted dropout: keeps an element when its uniform draw is ≥ p and scales it by 1/(1−p).
pub fn dropout(b: &mut Builder, x: ValueId, p: f64, ctx: DropoutCtx, op_id: u32) -> ValueId {
    let ty = b.ty(x).clone();
    let u = b.random_uniform(ctx.seed, ctx.counter, op_id, ty);
    let pv = b.full_like(p, u);
    let keep = b.compare(CmpOp::Ge, u, pv);
    let scaled = b.mul_scalar(x, 1.0 / (1.0 - p));
    let z = b.full_like(0.0, x);
    b.select(keep, scaled, z)
}
