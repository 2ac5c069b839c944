//! `tbc step`: one training (or eval) step of a phase graph with the reference interpreter.
//!
//! Contract (kept stable; `./trainer step` will follow it too):
//! - `--weights W`: `teacher.<hf name>` and `student.<hf name>` (Hugging Face
//!   `BertForSequenceClassification` names, plus `student.fit_dense.weight|bias`; ft and
//!   eval_teacher read only `teacher.*`); optional
//!   `adam_m.<name>` / `adam_v.<name>` (zeros when absent). Extra tensors are ignored.
//! - `--batch B`: `input_ids`, `input_mask`, `segment_ids` (int32 or int64, `[batch, seq]`);
//!   ft also reads `label_ids` (`[batch]`); other phases ignore it.
//! - `--out O`: every graph output: `loss`, `loss.att`/`loss.rep`, `loss.cls` or `loss.ce`, `grad.<name>`
//!   (unscaled, before clipping), `param.<name>`, `adam_m.<name>`, `adam_v.<name>` after the
//!   update, `overflow`, `lr`, `state.*`; eval and eval_teacher write `logits`.

use crate::model_args::ModelArgs;
use anyhow::{bail, Result};
use clap::Args;
use compiler::executable::step_defaults;
use ir::{Interpreter, Tensor};
use plan::exec::Slot;
use runtime::step_io::{bind_inputs, report, StepFlags};
use runtime::tensor_io::RawTensor;
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
    #[arg(long, value_parser = runtime::flags::learning_rate)]
    pub lr: Option<f64>,
    /// Optimizer step counter (drives the schedule).
    #[arg(long, default_value_t = 0, value_parser = runtime::flags::step_counter)]
    pub step: i32,
    /// Current loss scale; default: the preset's initial scale for the phase (1 without scaling).
    #[arg(long, value_parser = runtime::flags::positive_f32_range)]
    pub loss_scale: Option<f64>,
    /// Schedule warmup steps (when --lr is not given).
    #[arg(long, default_value_t = 0.0, value_parser = runtime::flags::non_negative)]
    pub warmup_steps: f64,
    /// Schedule decay (total) steps (when --lr is not given); default: no decay.
    #[arg(long, default_value_t = 1e30, value_parser = runtime::flags::positive_or_inf)]
    pub decay_steps: f64,
    /// Dropout seed.
    #[arg(long, default_value_t = 0)]
    pub seed: i32,
}

pub fn run(args: &StepArgs) -> Result<()> {
    runtime::train::run_guard::refuse_output_over_inputs(
        "--out",
        &args.out,
        &[args.weights.as_path(), args.batch.as_path()],
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    let r = args.model.resolve()?;
    let batch = runtime::tensor_io::read(&args.batch)?;
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
    let slots: Vec<Slot> = graph
        .inputs()
        .map(|(n, v)| Slot {
            name: n.to_string(),
            elem: graph.ty(v).dtype,
            shape: graph.ty(v).shape.clone(),
        })
        .collect();
    let inputs = bind_inputs(
        &slots,
        &step_defaults(&r.preset, r.phase),
        &args.flags(),
        &args.weights,
        &args.batch,
    )?;
    let feed: HashMap<String, Tensor> = slots
        .iter()
        .zip(&inputs)
        .map(|(s, t)| (s.name.clone(), crate::tensor_file::to_tensor(t)))
        .collect();
    let outputs = Interpreter::run(&graph, &feed)?;
    let raw: Vec<(String, RawTensor)> = outputs
        .iter()
        .map(|(n, t)| (n.clone(), crate::tensor_file::to_raw(t)))
        .collect();
    let meta = BTreeMap::from([
        ("phase".to_string(), r.phase.name().to_string()),
        ("preset".to_string(), r.preset.name.to_string()),
        ("producer".to_string(), "tbc step (interpreter)".to_string()),
    ]);
    runtime::tensor_io::write(&args.out, &raw, &meta)?;
    eprintln!("{}", report(r.phase.name(), "interpreter", &raw));
    eprintln!("wrote {} tensors to {}", raw.len(), args.out.display());
    Ok(())
}

impl StepArgs {
    pub fn flags(&self) -> StepFlags {
        StepFlags {
            lr: self.lr,
            step: self.step,
            loss_scale: self.loss_scale,
            warmup_steps: self.warmup_steps,
            decay_steps: self.decay_steps,
            seed: self.seed,
        }
    }
}
