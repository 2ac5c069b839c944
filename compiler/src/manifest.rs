//! The trainer manifest `tbc compile` links next to the plans: resolved configs as Hugging Face
//! `config.json` objects, the batch shape and each training phase's schedule and loss-scale
//! constants from the preset.

use crate::frontend::config::ModelConfig;
use crate::frontend::preset::{Phase, Preset, ScheduleKind};
use ::plan::manifest::{self, InitFamily, LossScale, Manifest, PhaseInfo, WarmupRule};
use serde_json::{json, Value};

/// `raw` (the config file as written, or `{}`) with every field tbc resolved made explicit, so
/// the trainer can export a config that means what it trained.
pub fn hf_config(c: &ModelConfig, raw: &str) -> Value {
    let mut v: Value = serde_json::from_str(raw).unwrap_or_else(|_| json!({}));
    if !v.is_object() {
        v = json!({});
    }
    let o = v.as_object_mut().expect("object");
    let set = |o: &mut serde_json::Map<String, Value>, k: &str, x: Value| {
        o.insert(k.to_string(), x);
    };
    set(o, "model_type", json!("bert"));
    set(o, "vocab_size", json!(c.vocab_size));
    set(o, "hidden_size", json!(c.hidden_size));
    set(o, "num_hidden_layers", json!(c.num_layers));
    set(o, "num_attention_heads", json!(c.num_heads));
    set(o, "intermediate_size", json!(c.intermediate_size));
    set(
        o,
        "max_position_embeddings",
        json!(c.max_position_embeddings),
    );
    set(o, "type_vocab_size", json!(c.type_vocab_size));
    set(o, "hidden_act", json!(c.activation.hf_name()));
    set(o, "layer_norm_eps", json!(c.layer_norm_eps));
    set(o, "hidden_dropout_prob", json!(c.hidden_dropout));
    set(
        o,
        "attention_probs_dropout_prob",
        json!(c.attention_dropout),
    );
    set(o, "num_labels", json!(c.num_labels));
    let has_labels = o
        .get("id2label")
        .and_then(|m| m.as_object())
        .is_some_and(|m| m.len() == c.num_labels);
    if !has_labels {
        let id2label: serde_json::Map<String, Value> = (0..c.num_labels)
            .map(|i| (i.to_string(), json!(format!("LABEL_{i}"))))
            .collect();
        set(o, "id2label", Value::Object(id2label));
    }
    let label2id: serde_json::Map<String, Value> = o["id2label"]
        .as_object()
        .expect("set above")
        .iter()
        .filter_map(|(k, v)| Some((v.as_str()?.to_string(), json!(k.parse::<u64>().ok()?))))
        .collect();
    set(o, "label2id", Value::Object(label2id));
    v
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
    let teacher_config = hf_config(teacher, teacher_raw);
    let mut student_config = hf_config(student, student_raw);
    // A student without label names takes the teacher's (same task).
    let student_names_labels = serde_json::from_str::<Value>(student_raw)
        .ok()
        .and_then(|v| v.get("id2label").cloned())
        .is_some();
    if !student_names_labels && teacher.num_labels == student.num_labels {
        for k in ["id2label", "label2id"] {
            student_config[k] = teacher_config[k].clone();
        }
    }
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
