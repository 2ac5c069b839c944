//! `tbc step`: one training (or eval) step of a phase graph with the reference interpreter.
//!
//! Contract (kept stable; `./trainer step` will follow it too):
//! - `--weights W`: `teacher.<hf name>` and `student.<hf name>` (Hugging Face
//!   `BertForSequenceClassification` names, plus `student.fit_dense.weight|bias`); optional
//!   `adam_m.<name>` / `adam_v.<name>` (zeros when absent). Extra tensors are ignored.
//! - `--batch B`: `input_ids`, `input_mask`, `segment_ids` (int32 or int64, `[batch, seq]`);
//!   `label_ids` may be present (no phase's loss reads it).
//! - `--out O`: every graph output: `loss`, `loss.att`/`loss.rep` or `loss.cls`, `grad.<name>`
//!   (unscaled, before clipping), `param.<name>`, `adam_m.<name>`, `adam_v.<name>` after the
//!   update, `overflow`, `lr`, `state.*`; eval writes `logits`.

use crate::model_args::ModelArgs;
use crate::tensor_file;
use anyhow::{bail, Result};
use clap::Args;
use ir::{DType, Interpreter, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
pub struct StepArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// safetensors with teacher.* and student.* tensors.
    #[arg(long)]
    pub weights: PathBuf,
    /// safetensors with input_ids, input_mask, segment_ids.
    #[arg(long)]
    pub batch: PathBuf,
    /// Where to write the outputs (safetensors).
    #[arg(long)]
    pub out: PathBuf,
    /// The learning rate applied in this step (overrides the schedule).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Optimizer step counter (drives the schedule).
    #[arg(long, default_value_t = 0)]
    pub step: i32,
    /// Current loss scale; default: the preset's initial scale for the phase (1 without scaling).
    #[arg(long)]
    pub loss_scale: Option<f64>,
    /// Schedule warmup steps (when --lr is not given).
    #[arg(long, default_value_t = 0.0)]
    pub warmup_steps: f64,
    /// Schedule decay (total) steps (when --lr is not given); default: no decay.
    #[arg(long, default_value_t = 1e30)]
    pub decay_steps: f64,
    /// Dropout seed.
    #[arg(long, default_value_t = 0)]
    pub seed: i32,
}

pub fn run(args: &StepArgs) -> Result<()> {
    let r = args.model.resolve()?;
    let batch = tensor_file::read(&args.batch)?;
    let ids = batch
        .get("input_ids")
        .ok_or_else(|| anyhow::anyhow!("{}: missing tensor 'input_ids'", args.batch.display()))?;
    if ids.shape.len() != 2 {
        bail!(
            "{}: tensor 'input_ids' must have shape [batch, seq], found {:?}",
            args.batch.display(),
            ids.shape
        );
    }
    let graph = r.graph(ids.shape[0], ids.shape[1])?;
    let weights = tensor_file::read(&args.weights)?;

    let constants = r.preset.phase(r.phase);
    let scale = args
        .loss_scale
        .unwrap_or_else(|| constants.and_then(|c| c.loss_scale).map_or(1.0, |l| l.init));
    let (lr0, end_lr, warmup, decay) = match (args.lr, constants) {
        (Some(lr), _) => (lr, lr, 0.0, 1e30),
        (None, Some(c)) => (c.lr, c.end_lr, args.warmup_steps, args.decay_steps),
        (None, None) => (0.0, 0.0, 0.0, 1e30),
    };
    let scalars: HashMap<&str, f64> = HashMap::from([
        ("state.step", args.step as f64),
        ("state.cur_iter", args.step as f64 + 1.0),
        ("state.last_overflow_iter", 0.0),
        ("state.loss_scale", scale),
        ("state.seed", args.seed as f64),
        ("sched.lr0", lr0),
        ("sched.end_lr", end_lr),
        ("sched.warmup_steps", warmup),
        ("sched.decay_steps", decay),
    ]);

    let mut feed: HashMap<String, Tensor> = HashMap::new();
    for (name, v) in graph.inputs() {
        let ty = graph.ty(v).clone();
        let t = if let Some(&x) = scalars.get(name) {
            Tensor::scalar_f64(ty.dtype, x)
        } else if ["input_ids", "input_mask", "segment_ids"].contains(&name) {
            let t = batch.get(name).ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: missing tensor '{name}' (expected int32 {:?})",
                    args.batch.display(),
                    ty.shape
                )
            })?;
            checked(
                tensor_file::convert_for_input(t, DType::I32, &args.batch, name)?,
                &ty.shape,
                &args.batch,
                name,
            )?
        } else if let Some(t) = weights.get(name) {
            checked(
                tensor_file::convert_for_input(t, ty.dtype, &args.weights, name)?,
                &ty.shape,
                &args.weights,
                name,
            )?
        } else if name.starts_with("adam_m.") || name.starts_with("adam_v.") {
            Tensor::zeros(&ty)
        } else {
            bail!(
                "{}: missing tensor '{name}' (expected {ty})",
                args.weights.display()
            );
        };
        feed.insert(name.to_string(), t);
    }
    let outputs = Interpreter::run(&graph, &feed)?;
    let meta = BTreeMap::from([
        ("phase".to_string(), r.phase.name().to_string()),
        ("preset".to_string(), r.preset.name.to_string()),
        ("producer".to_string(), "tbc step (interpreter)".to_string()),
    ]);
    tensor_file::write(&args.out, &outputs, &meta)?;
    eprintln!("{}", report(r.phase.name(), &outputs));
    eprintln!("wrote {} tensors to {}", outputs.len(), args.out.display());
    Ok(())
}

fn checked(t: Tensor, shape: &[usize], file: &std::path::Path, name: &str) -> Result<Tensor> {
    if t.shape != shape {
        bail!(
            "{}: tensor '{name}' has shape {:?}, expected {:?}",
            file.display(),
            t.shape,
            shape
        );
    }
    Ok(t)
}

/// One line per scalar output (losses, overflow, lr, state) and the global gradient norm.
fn report(phase: &str, outputs: &[(String, Tensor)]) -> String {
    let mut lines = vec![format!("{phase} step (interpreter):")];
    let mut grad_sq = 0.0;
    for (name, t) in outputs {
        if t.numel() == 1 && !name.starts_with("state.seed") {
            lines.push(format!("  {name:28} {}", t.item()));
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
