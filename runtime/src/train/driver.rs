//! The training loop of one phase: batches in, steps, and the callbacks of the seed's
//! `Model.train` (TINYBERT_SPEC §5.3): after every sink loop (or every step without data sink)
//! log the outputs of the last step, save a checkpoint every `save_ckpt_step` steps and, when
//! an evaluator is given, evaluate and keep the best model.

use super::log::{seed_step_line, time_line, Logger, StepLog};
use super::schedule::{schedule_values, ScheduleValues, StepPlan};
use super::session::{Session, STATE_NAMES};
use super::state::{Checkpoints, TrainerState};
use crate::metrics::{EvalRecord, MetricsLine, TrainRecord};
use crate::tensor_io::RawTensor;
use plan::manifest::PhaseInfo;
use std::collections::BTreeMap;
use std::time::Instant;

/// Batches by (data epoch, index within the epoch), so a resumed run reads exactly the batches
/// an uninterrupted run would.
pub trait BatchSource {
    fn steps_per_epoch(&self) -> u64;
    fn batch(&self, epoch: u64, index: u64) -> Result<BTreeMap<String, RawTensor>, String>;
}

/// Evaluation during training: returns the named metrics and which one selects the best model.
pub trait Evaluator {
    /// `params` are the trained model's current parameters (graph input prefix stripped).
    fn evaluate(&mut self, params: &BTreeMap<String, RawTensor>) -> Result<EvalResult, String>;
}

#[derive(Clone, Debug)]
pub struct EvalResult {
    pub metrics: BTreeMap<String, f64>,
    /// The metric that picks the best model (acc, mcc, corr …).
    pub selection: String,
    pub correct: Option<u64>,
    pub num_examples: u64,
}

/// Everything a phase run needs besides the session.
pub struct PhaseRun<'a> {
    pub info: &'a PhaseInfo,
    pub plan: StepPlan,
    pub data: &'a dyn BatchSource,
    pub batch_size: usize,
    pub save_ckpt_step: u64,
    pub checkpoints: &'a Checkpoints,
    pub lr: Option<f64>,
    pub loss_scale_logs: bool,
    /// Prefix of the trained parameters among the graph inputs (`student` or `teacher`).
    pub trained: &'static str,
    pub evaluator: Option<&'a mut dyn Evaluator>,
    /// Where the best model goes and the eval log (`eval.log`) is appended.
    pub best: Option<BestModel<'a>>,
    /// Stop after this many consecutive overflowing steps at loss scale 1 (0: never).
    pub overflow_patience: u64,
}

/// Overflowing (skipped) steps of a phase run: the total, the current sink loop's, and the
/// current run of consecutive ones at loss scale 1, where scaling can do nothing more.
#[derive(Default)]
struct OverflowCount {
    total: u64,
    in_loop: u64,
    at_min_scale: u64,
    first_at_min_scale: u64,
}

impl OverflowCount {
    fn record(
        &mut self,
        step: u64,
        overflow: bool,
        scale: f64,
        patience: u64,
        phase: &str,
    ) -> Result<(), String> {
        if !overflow {
            self.at_min_scale = 0;
            return Ok(());
        }
        self.total += 1;
        self.in_loop += 1;
        if scale > 1.0 {
            self.at_min_scale = 0;
            return Ok(());
        }
        if self.at_min_scale == 0 {
            self.first_at_min_scale = step;
        }
        self.at_min_scale += 1;
        if patience > 0 && self.at_min_scale >= patience {
            return Err(format!(
                "phase {phase}: steps {}..={step} all overflowed at loss scale {scale}: the gradients are not finite even unscaled, so training cannot go on (the checkpoints written so far are kept). Check the data and the learning rate; --overflow-patience sets how many such steps are allowed (0: no limit)",
                self.first_at_min_scale
            ));
        }
        Ok(())
    }
}

/// Where the best model of an evaluated phase is kept.
pub struct BestModel<'a> {
    pub path: &'a std::path::Path,
    pub eval_log: &'a std::path::Path,
}

/// The result of a phase.
#[derive(Clone, Debug)]
pub struct PhaseOutcome {
    pub steps: u64,
    pub last_loss: f64,
    pub best_metric: Option<f64>,
    pub seconds: f64,
}

/// Applies the schedule, then runs steps `state.global_step + 1 ..= total`.
pub fn run_phase(
    session: &mut Session,
    run: PhaseRun,
    mut state: TrainerState,
    logger: &mut Logger,
) -> Result<PhaseOutcome, String> {
    let PhaseRun {
        info,
        plan,
        data,
        batch_size,
        save_ckpt_step,
        checkpoints,
        lr,
        loss_scale_logs,
        trained,
        mut evaluator,
        best,
        overflow_patience,
    } = run;
    let total = plan.total_steps();
    if total == 0 {
        return Err(format!(
            "phase {}: nothing to run: {} batch(es) per epoch × {} epoch(s){}",
            info.name,
            plan.steps_per_epoch,
            plan.epochs,
            match plan.sink {
                Some(n) => format!(" is less than one sink loop of {n} steps"),
                None => String::new(),
            }
        ));
    }
    let sched: ScheduleValues = schedule_values(info, &plan, lr);
    for (name, v) in [
        ("sched.lr0", sched.lr0),
        ("sched.end_lr", sched.end_lr),
        ("sched.warmup_steps", sched.warmup_steps),
        ("sched.decay_steps", sched.decay_steps),
    ] {
        session.set_scalar(name, v).map_err(|e| e.to_string())?;
    }
    state.total_steps = total;

    logger.start_phase(&info.name, total, state.global_step);
    // The scalars each step logs stay on the device until the sink loop ends (one read per
    // loop, none in between).
    let loss_terms: Vec<String> = session
        .plan()
        .outputs
        .iter()
        .filter(|s| s.name.starts_with("loss."))
        .map(|s| s.name.clone())
        .collect();
    let mut recorded = vec!["state.loss_scale", "loss", "overflow", "lr"];
    recorded.extend(loss_terms.iter().map(String::as_str));
    session
        .keep_records(&recorded, plan.interval() as usize)
        .map_err(|e| e.to_string())?;
    let phase_start = Instant::now();
    let mut loop_start = Instant::now();
    let mut read_at = Instant::now();
    let mut loop_steps = 0u64;
    let mut last_loss = f64::NAN;
    let mut saved_at = state.global_step;
    let classes = class_count(session);
    let mut overflows = OverflowCount::default();
    let first_step = state.global_step;
    while state.global_step < total {
        let g = state.global_step;
        let (epoch, index) = (g / plan.steps_per_epoch, g % plan.steps_per_epoch);
        let batch = data.batch(epoch, index)?;
        let origin = format!("batch {index} of data epoch {}", epoch + 1);
        if let (Some(classes), Some(labels)) = (classes, batch.get("label_ids")) {
            check_class_labels(classes, labels, &origin)?;
        }
        for (name, t) in &batch {
            session.set(name, t, &origin).map_err(|e| e.to_string())?;
        }
        session.step().map_err(|e| e.to_string())?;
        state.global_step += 1;
        loop_steps += 1;
        let step = state.global_step;
        let callback = plan.is_callback(step);
        let interrupt = crate::interrupt::requested();
        if !callback && !interrupt {
            continue;
        }
        // A host synchronisation: the steps since the last one are logged now.
        let mut rows = session.take_records().map_err(|e| e.to_string())?;
        if callback {
            // Every rank gets here at the same steps: the logged losses become the job's.
            mean_losses_over_ranks(&mut rows)?;
        }
        let seconds = read_at.elapsed().as_secs_f64();
        read_at = Instant::now();
        let first = step + 1 - rows.len() as u64;
        let mut log = None;
        for (k, row) in rows.iter().enumerate() {
            let get = |n: &str| row.get(n).copied();
            let this = StepLog {
                phase: info.name.clone(),
                epoch: plan.printed_epoch(first + k as u64),
                step: first + k as u64,
                loss: get("loss").unwrap_or(f64::NAN),
                losses: loss_terms
                    .iter()
                    .filter_map(|n| Some((n.clone(), get(n)?)))
                    .collect(),
                overflow: get("overflow").unwrap_or(0.0) != 0.0,
                // MindSpore returns the loss scale read at the start of the step.
                scale: get("state.loss_scale").unwrap_or(1.0),
                lr: get("lr").unwrap_or(f64::NAN),
                samples_per_s: (batch_size * rows.len()) as f64 / seconds.max(1e-9),
            };
            logger.progress(&this);
            overflows.record(
                this.step,
                this.overflow,
                this.scale,
                overflow_patience,
                &info.name,
            )?;
            last_loss = this.loss;
            log = Some(this);
        }
        let Some(log) = log.filter(|_| callback) else {
            logger.finish_phase();
            return Err(interrupted(step, &info.name, checkpoints));
        };
        logger.println(&seed_step_line(&log, loss_scale_logs));
        if loop_steps > 1 && overflows.in_loop == loop_steps {
            eprintln!(
                "warning: phase {}: every one of the {loop_steps} steps of the sink loop ending at step {step} overflowed and was skipped (loss scale now {}); the parameters did not change",
                info.name,
                session.scalar("state.loss_scale").unwrap_or(f64::NAN)
            );
        }
        overflows.in_loop = 0;
        logger.record(&MetricsLine::Train(TrainRecord {
            phase: info.name.clone(),
            epoch: log.epoch,
            step,
            loss: log.loss,
            losses: log.losses.iter().cloned().collect(),
            overflow: log.overflow,
            scale: Some(log.scale),
            lr: Some(log.lr),
            samples_per_s: Some(log.samples_per_s),
            time_s: Some(phase_start.elapsed().as_secs_f64()),
        }))?;
        if plan.ends_epoch(step) {
            logger.println(&time_line(
                loop_start.elapsed().as_secs_f64() * 1e3,
                loop_steps,
            ));
            loop_start = Instant::now();
            loop_steps = 0;
        }
        let evaluate = evaluator.is_some() && plan.ends_epoch(step);
        if evaluate {
            let params = session.inputs_with_prefix(trained);
            let ev = evaluator
                .as_deref_mut()
                .expect("checked")
                .evaluate(&params)?;
            let metric = ev.metrics.get(&ev.selection).copied().unwrap_or(f64::NAN);
            if let Some(b) = &best {
                append_eval_log(b.eval_log, &ev)?;
            }
            logger.record(&MetricsLine::Eval(EvalRecord {
                phase: info.name.clone(),
                step,
                split: "dev".into(),
                metrics: ev.metrics.clone(),
                num_examples: ev.num_examples,
            }))?;
            let summary: Vec<String> = ev
                .metrics
                .iter()
                .map(|(k, v)| format!("{k} {v:.6}"))
                .collect();
            eprintln!("[{}] step {step}: dev {}", info.name, summary.join(", "));
            // Strictly greater, as the seed's EvalCallBack (§6.3).
            if metric > state.best_metric.unwrap_or(0.0) {
                state.best_metric = Some(metric);
                logger.println(&format!("The best {} is {}", ev.selection, metric));
                if let Some(b) = &best {
                    checkpoints.save_best(b.path, &params)?;
                }
            }
        }
        if step.is_multiple_of(save_ckpt_step) {
            super::replicas::check_in_step(session, trained, step)?;
            capture(session, &mut state);
            checkpoints.save(step / save_ckpt_step, session, trained, &state)?;
            saved_at = step;
        }
        if crate::interrupt::requested() {
            logger.finish_phase();
            return Err(interrupted(step, &info.name, checkpoints));
        }
    }
    if saved_at != state.global_step {
        super::replicas::check_in_step(session, trained, state.global_step)?;
        capture(session, &mut state);
        checkpoints.save_final(session, trained, &state)?;
    }
    logger.finish_phase();
    if overflows.total > 0 {
        eprintln!(
            "phase {}: {} of the {} steps run overflowed and were skipped",
            info.name,
            overflows.total,
            state.global_step - first_step
        );
    }
    Ok(PhaseOutcome {
        steps: state.global_step,
        last_loss,
        best_metric: state.best_metric,
        seconds: phase_start.elapsed().as_secs_f64(),
    })
}

/// In a data-parallel job, each step's loss and loss terms (each rank's are over its part of
/// the global batch) become their mean over the ranks: the loss of the global batch, as one
/// process would log it. Overflow, scale and lr are the same on every rank already.
fn mean_losses_over_ranks(rows: &mut [BTreeMap<String, f64>]) -> Result<(), String> {
    let world = crate::dist::world();
    if world.size() == 1 {
        return Ok(());
    }
    let is_loss = |k: &str| k == "loss" || k.starts_with("loss.");
    let mut values: Vec<f32> = rows
        .iter()
        .flat_map(|r| r.iter().filter(|(k, _)| is_loss(k)).map(|(_, v)| *v as f32))
        .collect();
    world.all_reduce_mean(&mut values)?;
    let mut it = values.into_iter();
    for r in rows.iter_mut() {
        for (k, v) in r.iter_mut() {
            if is_loss(k) {
                *v = it.next().expect("one value per loss") as f64;
            }
        }
    }
    Ok(())
}

/// The message of a run stopped by SIGINT/SIGTERM between two steps.
fn interrupted(step: u64, phase: &str, checkpoints: &Checkpoints) -> String {
    format!(
        "interrupted after step {step} of phase {phase} (SIGINT/SIGTERM): the step finished and no file was left half-written; the checkpoints so far are in {} (run the same command with --resume to continue from the newest)",
        checkpoints.dir().display()
    )
}

/// Copies the session's state scalars into `state`.
pub fn capture(session: &Session, state: &mut TrainerState) {
    for n in STATE_NAMES {
        if let Some(v) = session.scalar(n) {
            state.scalars.insert(n.to_string(), v);
        }
    }
}

/// The seed's eval.log line: `acc_num {A}, total_num{T}, accuracy{acc:.6f}`; a regression task
/// (no class counts) lists its metrics instead: `pearson {p:.6f}, spearmanr {s:.6f}, corr …`.
fn append_eval_log(path: &std::path::Path, ev: &EvalResult) -> Result<(), String> {
    use std::io::Write;
    let line = match ev.correct {
        Some(correct) => format!(
            "acc_num {correct}, total_num{}, accuracy{:.6}\n",
            ev.num_examples,
            ev.metrics.get("acc").copied().unwrap_or(f64::NAN)
        ),
        None => {
            let parts: Vec<String> = ev
                .metrics
                .iter()
                .map(|(k, v)| format!("{k} {v:.6}"))
                .collect();
            format!("{}, total_num{}\n", parts.join(", "), ev.num_examples)
        }
    };
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .map_err(|e| format!("cannot append to {}: {e}", path.display()))
}

/// The number of classes when the step reads class labels (ft): the graph cannot raise an
/// error, and a label outside `0..num_labels` would silently add nothing to the loss. `None`
/// when the step reads no labels or float targets (regression).
fn class_count(session: &Session) -> Option<usize> {
    let plan = session.plan();
    let labels = plan.inputs.iter().find(|s| s.name == "label_ids")?;
    if labels.elem.is_float() {
        return None;
    }
    let bias = plan
        .inputs
        .iter()
        .find(|s| s.name.ends_with(".classifier.bias"))?;
    Some(bias.shape.iter().product())
}

/// Every label of a batch is one of the model's `classes`.
fn check_class_labels(classes: usize, labels: &RawTensor, origin: &str) -> Result<(), String> {
    let classes = classes as f64;
    match labels
        .to_f64()
        .into_iter()
        .enumerate()
        .find(|&(_, y)| !(0.0..classes).contains(&y))
    {
        Some((row, y)) => Err(format!(
            "{origin}, row {row}: label_ids {y} is not a class of this model (0..{classes}); check --task-name and num_labels in the model's config.json"
        )),
        None => Ok(()),
    }
}
