//! The trainer manifest `tbc compile` links next to the plans: resolved configs as Hugging Face
//! `config.json` objects, the batch shape and each training phase's schedule and loss-scale
//! constants from the preset.

use crate::frontend::config::ModelConfig;
use crate::frontend::preset::{Phase, Preset, ScheduleKind};
use ::plan::bert::{label_names, BertShape, ResolvedBertConfig};
use ::plan::manifest::{self, InitFamily, LossScale, Manifest, PhaseInfo, WarmupRule};
use serde_json::{json, Value};

/// `raw` (the config file as written, or `{}`) with every field tbc resolved made explicit and
/// the label names `labels`, so the trainer can export a config that means what it trained.
fn hf_config(c: &ModelConfig, raw: &Value, labels: Vec<String>) -> Value {
    ResolvedBertConfig {
        shape: BertShape {
            vocab_size: c.vocab_size,
            hidden_size: c.hidden_size,
            num_layers: c.num_layers,
            intermediate_size: c.intermediate_size,
            max_position_embeddings: c.max_position_embeddings,
            type_vocab_size: c.type_vocab_size,
        },
        num_attention_heads: c.num_heads,
        hidden_act: c.activation.hf_name().to_string(),
        layer_norm_eps: c.layer_norm_eps,
        hidden_dropout_prob: c.hidden_dropout,
        attention_probs_dropout_prob: c.attention_dropout,
        labels,
    }
    .write_over(raw)
}

fn schedule(kind: ScheduleKind) -> manifest::ScheduleKind {
    match kind {
        ScheduleKind::Polynomial => manifest::ScheduleKind::Polynomial,
        ScheduleKind::WarmupLinear => manifest::ScheduleKind::WarmupLinear,
        ScheduleKind::Constant => manifest::ScheduleKind::Constant,
    }
}

/// The constants of every training phase among `phases`.
pub fn phase_infos(preset: &Preset, phases: &[Phase]) -> Vec<PhaseInfo> {
    phases
        .iter()
        .filter_map(|&p| {
            let c = preset.phase(p)?;
            let warmup = match (c.schedule, p) {
                (ScheduleKind::Constant, _) => WarmupRule::None,
                // MindSpore td1 warms up over 10 % of one epoch (TINYBERT_SPEC §3.1).
                (ScheduleKind::Polynomial, Phase::Td1) => WarmupRule::TenthOfOneEpoch,
                _ => WarmupRule::TenthOfTotal,
            };
            Some(PhaseInfo {
                name: p.name().to_string(),
                schedule: schedule(c.schedule),
                warmup,
                lr0: c.lr,
                end_lr: c.end_lr,
                loss_scale: c.loss_scale.map(|l| LossScale {
                    init: l.init,
                    factor: l.factor,
                    window: l.window,
                }),
            })
        })
        .collect()
}

/// The manifest of a trainer compiled for these configs and phases.
#[allow(clippy::too_many_arguments)]
pub fn manifest(
    preset: &Preset,
    teacher: &ModelConfig,
    teacher_raw: &str,
    student: &ModelConfig,
    student_raw: &str,
    batch: usize,
    seq_len: usize,
    phases: &[Phase],
) -> Manifest {
    let paper = preset.name == "paper";
    let parse = |raw: &str| serde_json::from_str::<Value>(raw).unwrap_or_else(|_| json!({}));
    let (teacher_raw, student_raw) = (parse(teacher_raw), parse(student_raw));
    let teacher_labels = label_names(&teacher_raw, teacher.num_labels);
    // A student without label names takes the teacher's (same task).
    let student_labels =
        if student_raw.get("id2label").is_none() && teacher.num_labels == student.num_labels {
            teacher_labels.clone()
        } else {
            label_names(&student_raw, student.num_labels)
        };
    let teacher_config = hf_config(teacher, &teacher_raw, teacher_labels);
    let student_config = hf_config(student, &student_raw, student_labels);
    Manifest {
        preset: preset.name.to_string(),
        batch,
        seq_len,
        teacher_config,
        student_config,
        init: if paper {
            InitFamily::Paper
        } else {
            InitFamily::MindSpore
        },
        carry_fit_dense: paper,
        loss_scale_logs: !paper,
        phases: phase_infos(preset, phases),
    }
}
