//! The inputs of one step, bound from the files and flags of the `step` contract (shared by
//! `tbc step` and `./trainer step`): batch tensors from `--batch`, parameters from `--weights`,
//! Adam moments from `--weights` or zeros, state and schedule scalars from flags.

use crate::tensor_io::{self, IoError, RawTensor};
use plan::exec::{Slot, StepDefaults};
use plan::ElemType;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{0}: missing tensor '{1}' (expected {2})")]
    Missing(PathBuf, String, String),
    #[error("{0}: tensor '{1}' has shape {2:?}, expected {3:?}")]
    Shape(PathBuf, String, Vec<usize>, Vec<usize>),
    #[error("{0}: tensor '{1}' has dtype {2}, expected {3}")]
    Dtype(PathBuf, String, &'static str, &'static str),
    #[error("{0}: tensor '{1}' holds {2} at element {3}, expected {4}")]
    Value(PathBuf, String, String, usize, String),
}

/// The rows of the first input slot whose name ends with `suffix` (the smallest, when the
/// teacher's and the student's differ).
fn table_rows(slots: &[Slot], suffix: &str) -> Option<usize> {
    (slots.iter())
        .filter(|s| s.name.ends_with(suffix))
        .filter_map(|s| s.shape.first().copied())
        .min()
}

/// Checks a tensor's values before it is bound: floats finite; batch ids inside the tables
/// they index (a gather would otherwise read out of range), the mask 0/1, class labels below
/// the classifier's rows.
fn check_values(slots: &[Slot], name: &str, t: &RawTensor, file: &Path) -> Result<(), BindError> {
    let bad = |value: String, index: usize, expected: String| {
        BindError::Value(file.to_path_buf(), name.into(), value, index, expected)
    };
    if let Some((index, value, _)) = t.non_finite() {
        return Err(bad(value.to_string(), index, "a finite number".into()));
    }
    if !is_int(t.elem) {
        return Ok(());
    }
    let limit = match name {
        "input_ids" => table_rows(slots, "embeddings.word_embeddings.weight")
            .map(|n| (n, "below the model's vocab_size")),
        "segment_ids" => table_rows(slots, "embeddings.token_type_embeddings.weight")
            .map(|n| (n, "below the model's type_vocab_size")),
        "input_mask" => Some((2, "0 or 1")),
        "label_ids" => table_rows(slots, "classifier.bias").map(|n| (n, "below num_labels")),
        _ => None,
    };
    let Some((n, what)) = limit else {
        return Ok(());
    };
    match t
        .to_f64()
        .iter()
        .position(|&v| !(0.0..n as f64).contains(&v))
    {
        Some(i) => Err(bad(
            t.to_f64()[i].to_string(),
            i,
            format!("0 <= value < {n} ({what})"),
        )),
        None => Ok(()),
    }
}

/// The flags of a step.
#[derive(Clone, Debug)]
pub struct StepFlags {
    /// The learning rate applied in this step (overrides the schedule).
    pub lr: Option<f64>,
    pub step: i32,
    pub loss_scale: Option<f64>,
    pub warmup_steps: f64,
    pub decay_steps: f64,
    pub seed: i32,
}

/// Batch tensor names (`label_ids`: the hard labels ft trains on).
pub const BATCH_NAMES: [&str; 4] = ["input_ids", "input_mask", "segment_ids", "label_ids"];

/// The scalar inputs (state and schedule) of a step.
pub fn scalars(defaults: &StepDefaults, f: &StepFlags) -> BTreeMap<&'static str, f64> {
    let (lr0, end_lr, warmup, decay) = match f.lr {
        Some(lr) => (lr, lr, 0.0, 1e30),
        None => (defaults.lr0, defaults.end_lr, f.warmup_steps, f.decay_steps),
    };
    BTreeMap::from([
        ("state.step", f.step as f64),
        ("state.cur_iter", f.step as f64 + 1.0),
        ("state.last_overflow_iter", 0.0),
        (
            "state.loss_scale",
            f.loss_scale.unwrap_or(defaults.loss_scale),
        ),
        ("state.seed", f.seed as f64),
        ("sched.lr0", lr0),
        ("sched.end_lr", end_lr),
        ("sched.warmup_steps", warmup),
        ("sched.decay_steps", decay),
    ])
}

fn is_int(e: ElemType) -> bool {
    matches!(e, ElemType::I32 | ElemType::I64)
}

/// One tensor per input slot, in slot order.
pub fn bind_inputs(
    slots: &[Slot],
    defaults: &StepDefaults,
    flags: &StepFlags,
    weights: &Path,
    batch: &Path,
) -> Result<Vec<RawTensor>, BindError> {
    let w = tensor_io::read(weights)?;
    let b = tensor_io::read(batch)?;
    let scalars = scalars(defaults, flags);
    slots
        .iter()
        .map(|slot| {
            let name = slot.name.as_str();
            if let Some(&v) = scalars.get(name) {
                return Ok(RawTensor::from_f64(slot.elem, slot.shape.clone(), &[v]));
            }
            let (file, found) = if BATCH_NAMES.contains(&name) {
                (batch, b.get(name))
            } else {
                (weights, w.get(name))
            };
            let Some(t) = found else {
                if name.starts_with("adam_m.") || name.starts_with("adam_v.") {
                    let n = slot.shape.iter().product::<usize>();
                    return Ok(RawTensor::from_f64(
                        slot.elem,
                        slot.shape.clone(),
                        &vec![0.0; n],
                    ));
                }
                return Err(BindError::Missing(
                    file.to_path_buf(),
                    name.into(),
                    slot.type_string(),
                ));
            };
            let compatible = (is_int(t.elem) && is_int(slot.elem))
                || (t.elem.is_float() && slot.elem.is_float());
            if !compatible {
                return Err(BindError::Dtype(
                    file.to_path_buf(),
                    name.into(),
                    t.elem.name(),
                    slot.elem.name(),
                ));
            }
            if t.shape != slot.shape {
                return Err(BindError::Shape(
                    file.to_path_buf(),
                    name.into(),
                    t.shape.clone(),
                    slot.shape.clone(),
                ));
            }
            check_values(slots, name, t, file)?;
            Ok(t.convert(slot.elem))
        })
        .collect()
}

/// One line per scalar output (losses, overflow, lr, state) and the global gradient norm.
pub fn report(phase: &str, engine: &str, outputs: &[(String, RawTensor)]) -> String {
    let mut lines = vec![format!("{phase} step ({engine}):")];
    let mut grad_sq = 0.0;
    for (name, t) in outputs {
        if t.numel() == 1 && name != "state.seed" {
            lines.push(format!("  {name:28} {}", t.to_f64()[0]));
        }
        if name.starts_with("grad.") {
            grad_sq += t.to_f64().iter().map(|x| x * x).sum::<f64>();
        }
    }
    if grad_sq > 0.0 {
        lines.push(format!("  {:28} {:.6}", "global grad norm", grad_sq.sqrt()));
    }
    lines.join("\n")
}
