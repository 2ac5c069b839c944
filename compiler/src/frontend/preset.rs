//! Presets: the numerics a config file does not state and the training constants of each
//! reference implementation (TINYBERT_SPEC §1–§4).

use super::config::Activation;
use std::fmt;

/// A training phase, each compiled to its own graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// General distillation (pre-trained teacher, unlabeled text).
    Gd,
    /// Task distillation phase 1: intermediate layers (same loss as gd, fine-tuned teacher).
    Td1,
    /// Task distillation phase 2: prediction layer (soft cross-entropy).
    Td2,
    /// Student logits, no training.
    Eval,
    /// Teacher fine-tuning: hard-label cross-entropy on the TinyBERT classification head, so a
    /// user without a fine-tuned teacher can make one for td.
    Ft,
    /// Teacher logits, no training (the teacher's dev accuracy).
    EvalTeacher,
}

/// The model a phase trains or evaluates; its parameters are graph inputs `<prefix>.<hf name>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Model {
    Teacher,
    Student,
}

impl Model {
    pub fn prefix(self) -> &'static str {
        match self {
            Model::Teacher => "teacher",
            Model::Student => "student",
        }
    }
}

impl Phase {
    pub const ALL: [Phase; 6] = [
        Phase::Gd,
        Phase::Td1,
        Phase::Td2,
        Phase::Eval,
        Phase::Ft,
        Phase::EvalTeacher,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Gd => "gd",
            Phase::Td1 => "td1",
            Phase::Td2 => "td2",
            Phase::Eval => "eval",
            Phase::Ft => "ft",
            Phase::EvalTeacher => "eval_teacher",
        }
    }

    pub fn parse(s: &str) -> Result<Phase, String> {
        // The student phases come first in the message, worded as before the teacher phases
        // existed (scripts and tests match on it).
        Phase::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown phase '{s}' (expected gd, td1, td2 or eval) and not a teacher phase (ft or eval_teacher)"
                )
            })
    }

    pub fn is_training(self) -> bool {
        !matches!(self, Phase::Eval | Phase::EvalTeacher)
    }

    /// The model whose parameters the phase trains (or, for an eval phase, reads).
    pub fn model(self) -> Model {
        match self {
            Phase::Ft | Phase::EvalTeacher => Model::Teacher,
            Phase::Gd | Phase::Td1 | Phase::Td2 | Phase::Eval => Model::Student,
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Per-tensor gradient clipping at norm 1.0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClipRule {
    /// MindSpore `ClipByNorm`: `g / max(‖g‖, 1)`.
    MindSpore,
    /// PyTorch `clip_grad_norm_`: `g · min(1, 1 / (‖g‖ + 1e-6))`.
    PyTorch,
}

/// What happens to a trainable parameter the phase's loss does not depend on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnusedParamRule {
    /// MindSpore: it gets a zero gradient, so AdamWeightDecay only decays it.
    DecayOnly,
    /// PyTorch: its `grad` is `None`, so the optimizer skips it (parameter and moments unchanged).
    Skip,
}

/// How the learning rate follows the optimizer step counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScheduleKind {
    /// MindSpore `BertLearningRate`: linear warmup, then polynomial (power 1) decay measured from
    /// step 0 to `end_lr`.
    Polynomial,
    /// PyTorch TinyBERT `warmup_linear`: linear warmup, then linear decay from the end of warmup
    /// to 0 at the total step count.
    WarmupLinear,
    /// PyTorch TinyBERT schedule `none`: the base rate.
    Constant,
}

/// Dynamic loss scaling (MindSpore `DynamicLossScaleUpdateCell`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossScaleConfig {
    pub init: f64,
    pub factor: f64,
    pub window: i64,
}

/// Constants of one training phase.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PhaseConstants {
    pub schedule: ScheduleKind,
    pub lr: f64,
    pub end_lr: f64,
    /// `None`: no loss scaling (the scale stays what the state says, normally 1).
    pub loss_scale: Option<LossScaleConfig>,
}

/// A named set of defaults and training constants.
#[derive(Clone, Debug, PartialEq)]
pub struct Preset {
    pub name: &'static str,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
    /// The built-in student config of this preset (`configs/`).
    pub default_student: &'static str,
    pub beta1: f64,
    pub beta2: f64,
    pub adam_eps: f64,
    pub weight_decay: f64,
    pub clip: ClipRule,
    pub unused_params: UnusedParamRule,
    /// False when the word-embedding row of `[PAD]` (id 0) never receives a gradient
    /// (PyTorch `padding_idx=0`).
    pub pad_row_gets_gradient: bool,
    /// Soft cross-entropy temperature of td2.
    pub temperature: f64,
    pub gd: PhaseConstants,
    pub td1: PhaseConstants,
    pub td2: PhaseConstants,
    /// Teacher fine-tuning (`ft`).
    pub ft: PhaseConstants,
}

impl Preset {
    /// The MindSpore model-zoo TinyBERT (the seed).
    pub fn mindspore() -> Preset {
        let ls = |init: f64, window: i64| {
            Some(LossScaleConfig {
                init,
                factor: 2.0,
                window,
            })
        };
        Preset {
            name: "mindspore",
            hidden_act: Activation::GeluTanh,
            layer_norm_eps: 1e-7,
            default_student: super::config::builtin::STUDENT_MINDSPORE,
            beta1: 0.9,
            beta2: 0.999,
            adam_eps: 1e-6,
            weight_decay: 1e-4,
            clip: ClipRule::MindSpore,
            unused_params: UnusedParamRule::DecayOnly,
            pad_row_gets_gradient: true,
            temperature: 1.0,
            gd: PhaseConstants {
                schedule: ScheduleKind::Polynomial,
                lr: 5e-5,
                end_lr: 1e-14,
                loss_scale: ls(65536.0, 1000),
            },
            td1: PhaseConstants {
                schedule: ScheduleKind::Polynomial,
                lr: 5e-5,
                end_lr: 1e-14,
                loss_scale: ls(256.0, 50),
            },
            td2: PhaseConstants {
                schedule: ScheduleKind::Polynomial,
                lr: 2e-5,
                end_lr: 1e-14,
                loss_scale: ls(65536.0, 50),
            },
            // MindSpore's TinyBERT has no fine-tuning script (its td teacher comes fine-tuned
            // from elsewhere); these are BERT fine-tuning defaults with this preset's schedule
            // family: lr 2e-5 decayed to 0, fp32 without loss scaling (as on GPU/CPU).
            ft: PhaseConstants {
                schedule: ScheduleKind::Polynomial,
                lr: 2e-5,
                end_lr: 0.0,
                loss_scale: None,
            },
        }
    }

    /// The original PyTorch TinyBERT (huawei-noah), as in the paper.
    pub fn paper() -> Preset {
        Preset {
            name: "paper",
            hidden_act: Activation::GeluErf,
            layer_norm_eps: 1e-12,
            default_student: super::config::builtin::STUDENT_PAPER,
            beta1: 0.9,
            beta2: 0.999,
            adam_eps: 1e-6,
            weight_decay: 0.01,
            clip: ClipRule::PyTorch,
            unused_params: UnusedParamRule::Skip,
            pad_row_gets_gradient: false,
            temperature: 1.0,
            gd: PhaseConstants {
                schedule: ScheduleKind::WarmupLinear,
                lr: 5e-5,
                end_lr: 0.0,
                loss_scale: None,
            },
            td1: PhaseConstants {
                schedule: ScheduleKind::Constant,
                lr: 5e-5,
                end_lr: 0.0,
                loss_scale: None,
            },
            td2: PhaseConstants {
                schedule: ScheduleKind::WarmupLinear,
                lr: 3e-5,
                end_lr: 0.0,
                loss_scale: None,
            },
            // BERT's GLUE fine-tuning defaults (lr 2e-5, warmup_linear; the warmup fraction is
            // a run-time input), fp32.
            ft: PhaseConstants {
                schedule: ScheduleKind::WarmupLinear,
                lr: 2e-5,
                end_lr: 0.0,
                loss_scale: None,
            },
        }
    }

    pub fn by_name(name: &str) -> Result<Preset, String> {
        match name {
            "mindspore" => Ok(Preset::mindspore()),
            "paper" => Ok(Preset::paper()),
            _ => Err(format!(
                "unknown preset '{name}' (expected mindspore or paper)"
            )),
        }
    }

    /// The constants of a training phase (`None` for the eval phases).
    pub fn phase(&self, phase: Phase) -> Option<&PhaseConstants> {
        match phase {
            Phase::Gd => Some(&self.gd),
            Phase::Td1 => Some(&self.td1),
            Phase::Td2 => Some(&self.td2),
            Phase::Ft => Some(&self.ft),
            Phase::Eval | Phase::EvalTeacher => None,
        }
    }
}
