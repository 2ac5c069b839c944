//! What the trainer executable knows besides its plans: the model configs it was compiled for,
//! the batch shape and, per training phase, the learning-rate and loss-scale constants of the
//! preset. The compiler writes it (`tbc compile`); the runtime reads it from the linked bundle.

use crate::exec::ExecutablePlan;
use serde::{Deserialize, Serialize};

/// How the learning rate follows the optimizer step (the graph computes it; the runtime only
/// supplies `sched.warmup_steps` and `sched.decay_steps`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// MindSpore `BertLearningRate`: warmup, then linear decay measured from step 0.
    Polynomial,
    /// PyTorch `warmup_linear`: warmup, then linear decay from the end of warmup to 0.
    WarmupLinear,
    /// The base rate throughout.
    Constant,
}

/// How many warmup steps a phase has, given its step counts (TINYBERT_SPEC §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WarmupRule {
    /// `int(total_steps / 10)` (gd, td2, finetune).
    TenthOfTotal,
    /// `int(steps_per_epoch / 10)`: MindSpore td1 warms up over 10 % of ONE epoch.
    TenthOfOneEpoch,
    /// No warmup (constant schedule).
    None,
}

/// Dynamic loss scaling constants (MindSpore `DynamicLossScaleUpdateCell`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossScale {
    pub init: f64,
    pub factor: f64,
    pub window: i64,
}

/// The constants of one training phase.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhaseInfo {
    pub name: String,
    pub schedule: ScheduleKind,
    pub warmup: WarmupRule,
    pub lr0: f64,
    pub end_lr: f64,
    pub loss_scale: Option<LossScale>,
}

/// Parameter initialization family (see `init`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitFamily {
    Paper,
    MindSpore,
}

/// Everything about the compiled trainer that is not a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// `mindspore` or `paper`.
    pub preset: String,
    pub batch: usize,
    pub seq_len: usize,
    /// The resolved teacher and student configs, as Hugging Face `config.json` objects.
    pub teacher_config: serde_json::Value,
    pub student_config: serde_json::Value,
    pub init: InitFamily,
    /// PyTorch TinyBERT saves fit_dense with the student, so td1 continues gd's; MindSpore does
    /// not save it, so td1 starts with a fresh one (TINYBERT_SPEC §2.4).
    pub carry_fit_dense: bool,
    /// The dynamic loss-scale log line shows `(loss, overflow, scale)` (MindSpore Ascend) rather
    /// than the loss alone.
    pub loss_scale_logs: bool,
    pub phases: Vec<PhaseInfo>,
}

impl Manifest {
    pub fn phase(&self, name: &str) -> Option<&PhaseInfo> {
        self.phases.iter().find(|p| p.name == name)
    }

    /// The student's number of labels (1 when the config does not say).
    pub fn num_labels(&self) -> usize {
        self.student_config
            .get("num_labels")
            .and_then(|v| v.as_u64())
            .unwrap_or(2) as usize
    }
}

/// What `tbc compile` links into a trainer: the manifest, one plan per phase, and for a GPU
/// trainer its kernel library, for an Ascend trainer its kernel table (a CPU trainer's loop
/// kernels are linked as native code).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainerBundle {
    pub manifest: Manifest,
    pub plans: Vec<ExecutablePlan>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<crate::gpu::GpuKernelLibrary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ascend: Option<crate::ascend::AscendKernelLibrary>,
}
