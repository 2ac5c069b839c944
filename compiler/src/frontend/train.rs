//! The optimizer half of a training step, shared by every phase: loss scaling, overflow check,
//! per-tensor clipping, the learning-rate schedule, AdamWeightDecay without bias correction and
//! the dynamic loss-scale update (TINYBERT_SPEC §3, §4).

use super::preset::{
    ClipRule, LossScaleConfig, PhaseConstants, Preset, ScheduleKind, UnusedParamRule,
};
use ir::{Builder, CmpOp, DType, ReduceKind, TensorType, ValueId};

/// The scalar state a training graph reads and writes (same names in and out).
pub struct State {
    /// Optimizer steps taken (drives the LR schedule; not advanced on overflow), i32.
    pub step: ValueId,
    /// Steps executed, skipped ones included (MindSpore `cur_iter`; keys dropout), i32.
    pub cur_iter: ValueId,
    /// `cur_iter` of the last overflow or scale increase, i32.
    pub last_overflow_iter: ValueId,
    /// The current loss scale (float).
    pub loss_scale: ValueId,
    /// Dropout seed, i32.
    pub seed: ValueId,
}

impl State {
    pub const NAMES: [&'static str; 5] = [
        "state.step",
        "state.cur_iter",
        "state.last_overflow_iter",
        "state.loss_scale",
        "state.seed",
    ];

    pub fn declare(b: &mut Builder, dtype: DType) -> State {
        let i32s = TensorType::scalar(DType::I32);
        State {
            step: b.input("state.step", i32s.clone()),
            cur_iter: b.input("state.cur_iter", i32s.clone()),
            last_overflow_iter: b.input("state.last_overflow_iter", i32s.clone()),
            loss_scale: b.input("state.loss_scale", TensorType::scalar(dtype)),
            seed: b.input("state.seed", i32s),
        }
    }
}

/// LR schedule parameters, run-time inputs because they depend on the data set size.
pub struct Schedule {
    pub lr0: ValueId,
    pub end_lr: ValueId,
    pub warmup_steps: ValueId,
    pub decay_steps: ValueId,
}

impl Schedule {
    pub const NAMES: [&'static str; 4] = [
        "sched.lr0",
        "sched.end_lr",
        "sched.warmup_steps",
        "sched.decay_steps",
    ];

    pub fn declare(b: &mut Builder, dtype: DType) -> Schedule {
        let s = TensorType::scalar(dtype);
        Schedule {
            lr0: b.input("sched.lr0", s.clone()),
            end_lr: b.input("sched.end_lr", s.clone()),
            warmup_steps: b.input("sched.warmup_steps", s.clone()),
            decay_steps: b.input("sched.decay_steps", s),
        }
    }
}

fn scalar_like(b: &mut Builder, v: f64, like: ValueId) -> ValueId {
    let dt = b.dtype(like);
    b.scalar(v, dt)
}

/// The learning rate for optimizer step `step_f` (a float scalar).
pub fn learning_rate(
    b: &mut Builder,
    kind: ScheduleKind,
    s: &Schedule,
    step_f: ValueId,
) -> ValueId {
    match kind {
        ScheduleKind::Constant => s.lr0,
        ScheduleKind::Polynomial => {
            // warmup: lr0·min(s, W)/W while s < W; else (lr0 − end)·(1 − min(s, D)/D) + end.
            let clamped = b.min(step_f, s.warmup_steps);
            let frac = b.div(clamped, s.warmup_steps);
            let warm = b.mul(s.lr0, frac);
            let sd = b.min(step_f, s.decay_steps);
            let p = b.div(sd, s.decay_steps);
            let one = scalar_like(b, 1.0, step_f);
            let rest = b.sub(one, p);
            let span = b.sub(s.lr0, s.end_lr);
            let dec = b.mul(span, rest);
            let dec = b.add(dec, s.end_lr);
            let in_warmup = b.compare(CmpOp::Lt, step_f, s.warmup_steps);
            b.select(in_warmup, warm, dec)
        }
        ScheduleKind::WarmupLinear => {
            // p = s/D, w = W/D: lr0·(p/w if p < w else max((p − 1)/(w − 1), 0)).
            let p = b.div(step_f, s.decay_steps);
            let w = b.div(s.warmup_steps, s.decay_steps);
            let warm = b.div(p, w);
            let one = scalar_like(b, 1.0, step_f);
            let zero = scalar_like(b, 0.0, step_f);
            let num = b.sub(p, one);
            let den = b.sub(w, one);
            let lin = b.div(num, den);
            let lin = b.max(lin, zero);
            let in_warmup = b.compare(CmpOp::Lt, p, w);
            let mult = b.select(in_warmup, warm, lin);
            b.mul(s.lr0, mult)
        }
    }
}

/// The next loss scale and `last_overflow_iter` (MindSpore `DynamicLossScaleUpdateCell`).
pub fn update_loss_scale(
    b: &mut Builder,
    cfg: &LossScaleConfig,
    state: &State,
    overflow: ValueId,
) -> (ValueId, ValueId) {
    let scale = state.loss_scale;
    let factor = scalar_like(b, cfg.factor, scale);
    let one = scalar_like(b, 1.0, scale);
    let halved = b.div(scale, factor);
    let halved = b.max(halved, one);
    let after_overflow = b.select(overflow, halved, scale);
    let since = b.sub(state.cur_iter, state.last_overflow_iter);
    let window = b.scalar(cfg.window as f64, DType::I32);
    let should_inc = b.compare(CmpOp::Ge, since, window);
    let reset = b.or(overflow, should_inc);
    let last = b.select(reset, state.cur_iter, state.last_overflow_iter);
    let clean = b.not(overflow);
    let grow = b.and(should_inc, clean);
    let doubled = b.mul(after_overflow, factor);
    let next = b.select(grow, doubled, after_overflow);
    (next, last)
}

/// The state after a step.
pub struct NextState {
    pub step: ValueId,
    pub cur_iter: ValueId,
    pub last_overflow_iter: ValueId,
    pub loss_scale: ValueId,
}

/// Advances the counters (the optimizer step only without overflow) and, with dynamic loss
/// scaling, the scale.
pub fn advance_state(
    b: &mut Builder,
    constants: &PhaseConstants,
    state: &State,
    overflow: ValueId,
) -> NextState {
    let one = b.scalar(1.0, DType::I32);
    let advanced = b.add(state.step, one);
    let step = b.select(overflow, state.step, advanced);
    let cur_iter = b.add(state.cur_iter, one);
    let (loss_scale, last_overflow_iter) = match &constants.loss_scale {
        Some(cfg) => update_loss_scale(b, cfg, state, overflow),
        None => (state.loss_scale, state.last_overflow_iter),
    };
    NextState {
        step,
        cur_iter,
        last_overflow_iter,
        loss_scale,
    }
}

/// True when AdamWeightDecay decays this parameter (both references use this filter).
pub fn is_decayed(name: &str) -> bool {
    let lower = name.to_lowercase();
    !lower.contains("layernorm") && !lower.contains("bias")
}

/// Per-tensor clip-by-norm at 1.0.
pub fn clip(b: &mut Builder, rule: ClipRule, g: ValueId) -> ValueId {
    let sq = b.mul(g, g);
    let sum = b.reduce_all(ReduceKind::Sum, sq);
    let norm = b.sqrt(sum);
    let one = scalar_like(b, 1.0, norm);
    let s = b.shape(g);
    match rule {
        ClipRule::MindSpore => {
            let d = b.max(norm, one);
            let db = b.splat(d, &s);
            b.div(g, db)
        }
        ClipRule::PyTorch => {
            let eps = scalar_like(b, 1e-6, norm);
            let d = b.add(norm, eps);
            let coef = b.div(one, d);
            let coef = b.min(coef, one);
            let cb = b.splat(coef, &s);
            b.mul(g, cb)
        }
    }
}

/// One parameter's trainable state.
pub struct ParamState {
    pub name: String,
    pub param: ValueId,
    pub m: ValueId,
    pub v: ValueId,
    /// Unscaled gradient; `None` when the loss does not depend on the parameter.
    pub grad: Option<ValueId>,
}

/// The values a parameter has after the step.
pub struct ParamUpdate {
    pub grad: ValueId,
    pub param: ValueId,
    pub m: ValueId,
    pub v: ValueId,
}

/// Everything after the backward pass: unscale, overflow, clip, Adam, state update.
pub struct Optimizer<'a> {
    pub preset: &'a Preset,
    pub constants: &'a PhaseConstants,
}

impl Optimizer<'_> {
    /// Applies the update to every parameter; returns the per-parameter results, the overflow
    /// flag and the learning rate used.
    pub fn apply(
        &self,
        b: &mut Builder,
        params: &[ParamState],
        state: &State,
        sched: &Schedule,
    ) -> (Vec<ParamUpdate>, ValueId, ValueId) {
        let p = self.preset;
        // Overflow: any non-finite value in any gradient.
        let mut all_finite: Option<ValueId> = None;
        for ps in params {
            if let Some(g) = ps.grad {
                let fin = b.unary(ir::UnaryOp::IsFinite, g);
                let dt = b.dtype(g);
                let fin = b.cast(fin, dt);
                let m = b.reduce_all(ReduceKind::Min, fin);
                all_finite = Some(match all_finite {
                    Some(a) => b.min(a, m),
                    None => m,
                });
            }
        }
        let overflow = match all_finite {
            Some(a) => {
                let one = scalar_like(b, 1.0, a);
                b.compare(CmpOp::Lt, a, one)
            }
            None => b.scalar(0.0, DType::Bool),
        };
        let step_f = b.cast(state.step, b.dtype(state.loss_scale));
        let lr = learning_rate(b, self.constants.schedule, sched, step_f);

        let mut out = Vec::new();
        for ps in params {
            let s = b.shape(ps.param);
            let grad = match ps.grad {
                Some(g) => g,
                None => b.full_like(0.0, ps.param),
            };
            if ps.grad.is_none() && p.unused_params == UnusedParamRule::Skip {
                out.push(ParamUpdate {
                    grad,
                    param: ps.param,
                    m: ps.m,
                    v: ps.v,
                });
                continue;
            }
            let gc = clip(b, p.clip, grad);
            let m1 = b.mul_scalar(ps.m, p.beta1);
            let g1 = b.mul_scalar(gc, 1.0 - p.beta1);
            let m = b.add(m1, g1);
            let v1 = b.mul_scalar(ps.v, p.beta2);
            let gg = b.mul(gc, gc);
            let g2 = b.mul_scalar(gg, 1.0 - p.beta2);
            let v = b.add(v1, g2);
            let sv = b.sqrt(v);
            let den = b.add_scalar(sv, p.adam_eps);
            let mut u = b.div(m, den);
            if is_decayed(&ps.name) && p.weight_decay != 0.0 {
                let wd = b.mul_scalar(ps.param, p.weight_decay);
                u = b.add(u, wd);
            }
            let lrb = b.splat(lr, &s);
            let delta = b.mul(lrb, u);
            let w = b.sub(ps.param, delta);
            let ob = b.splat(overflow, &s);
            out.push(ParamUpdate {
                grad,
                param: b.select(ob, ps.param, w),
                m: b.select(ob, ps.m, m),
                v: b.select(ob, ps.v, v),
            });
        }
        (out, overflow, lr)
    }
}
