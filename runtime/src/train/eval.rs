//! Evaluation with a compiled eval plan (`eval` for the student, `eval_teacher` for the
//! teacher): every batch of the dev set (drop_remainder, as the seed), logits into the task's
//! metrics. A regression task (STS-B) reads its one-output head's logits as scores.

use super::driver::{BatchSource, EvalResult, Evaluator};
use super::session::Session;
use super::source::DatasetSource;

use crate::metrics::TaskMetrics;
use crate::tensor_io::RawTensor;
use plan::exec::ExecutablePlan;
use plan::manifest::Manifest;
use plan::ElemType;
use std::collections::BTreeMap;
use std::path::Path;

pub struct PlanEvaluator<'k> {
    session: Session<'k>,
    data: DatasetSource,
    task: TaskMetrics,
    num_labels: usize,
    /// The parameter prefix the plan reads (`student` or `teacher`).
    prefix: &'static str,
    keep_logits: bool,
    logits: Vec<u8>,
    rows: usize,
}

impl<'k> PlanEvaluator<'k> {
    pub fn new(
        plan: &ExecutablePlan,
        backend: &crate::device::Backend<'k>,
        data: DatasetSource,
        task: &str,
        m: &Manifest,
    ) -> Result<PlanEvaluator<'k>, String> {
        let task = TaskMetrics::for_task(task).map_err(|e| format!("--task-name: {e}"))?;
        let logits = plan
            .outputs
            .iter()
            .find(|s| s.name == "logits")
            .ok_or_else(|| format!("plan {} has no logits output", plan.name))?;
        let num_labels = *logits.shape.last().unwrap_or(&1);
        let prefix = if plan.inputs.iter().any(|s| s.name.starts_with("teacher.")) {
            "teacher"
        } else {
            "student"
        };
        check_head(task, num_labels, prefix)?;
        let _ = m;
        Ok(PlanEvaluator {
            session: Session::on_device(plan, backend.device()).map_err(|e| e.to_string())?,
            data,
            task,
            num_labels,
            prefix,
            keep_logits: false,
            logits: Vec::new(),
            rows: 0,
        })
    }

    pub fn session(&self) -> &Session<'k> {
        &self.session
    }

    /// The metric that selects the best model.
    pub fn selection(&self) -> &'static str {
        self.task.selection_metric()
    }

    /// Keep every batch's logits for [`write_logits`](Self::write_logits).
    pub fn keep_logits(&mut self, keep: bool) {
        self.keep_logits = keep;
    }

    /// Writes the kept logits (`[rows, num_labels]` f32) to a safetensors file.
    pub fn write_logits(&self, path: &Path) -> Result<(), String> {
        let t = RawTensor {
            elem: ElemType::F32,
            shape: vec![self.rows, self.num_labels],
            bytes: self.logits.clone(),
        };
        crate::tensor_io::write(path, &[("logits".to_string(), t)], &BTreeMap::new())
            .map_err(|e| e.to_string())
    }
}

impl Evaluator for PlanEvaluator<'_> {
    fn evaluate(&mut self, params: &BTreeMap<String, RawTensor>) -> Result<EvalResult, String> {
        for (name, t) in params {
            let full = format!("{}.{name}", self.prefix);
            self.session
                .set(&full, t, "the evaluated model")
                .map_err(|e| e.to_string())?;
        }
        let mut acc = self
            .task
            .accumulator(self.num_labels)
            .map_err(|e| e.to_string())?;
        self.logits.clear();
        self.rows = 0;
        for index in 0..self.data.steps_per_epoch() {
            let batch = self.data.batch(0, index)?;
            for (name, t) in &batch {
                self.session
                    .set(name, t, &format!("eval batch {index}"))
                    .map_err(|e| e.to_string())?;
            }
            self.session.step().map_err(|e| e.to_string())?;
            let logits = self.session.output("logits").expect("checked at new");
            let labels = batch
                .get("label_ids")
                .ok_or("the eval data has no label_ids column")?;
            let l: Vec<f32> = logits.to_f64().iter().map(|&x| x as f32).collect();
            let rows = labels.numel();
            if self.task.is_regression() {
                let y: Vec<f32> = labels.to_f64().iter().map(|&x| x as f32).collect();
                acc.add_regression(&l, &y).map_err(|e| e.to_string())?;
            } else {
                if labels.elem.is_float() {
                    return Err(format!(
                        "eval batch {index}: label_ids are floats (regression scores), but task {} classifies; use --task-name sts-b for a regression head",
                        self.task.task().name()
                    ));
                }
                let y: Vec<i64> = labels.to_f64().iter().map(|&x| x as i64).collect();
                acc.add_logits(&l, &y).map_err(|e| e.to_string())?;
            }
            if self.keep_logits {
                self.logits.extend_from_slice(&logits.bytes);
                self.rows += rows;
            }
        }
        let scores = acc.scores().map_err(|e| e.to_string())?;
        let correct = acc
            .classification()
            .map(|c| (0..c.num_labels()).map(|i| c.confusion(i, i)).sum());
        Ok(EvalResult {
            metrics: scores.metrics,
            selection: scores.selection_metric.to_string(),
            correct,
            num_examples: scores.num_examples as u64,
        })
    }
}

/// A regression task needs a one-output head, a classification task at least two classes.
fn check_head(task: TaskMetrics, num_labels: usize, who: &str) -> Result<(), String> {
    let name = task.task().name();
    if task.is_regression() && num_labels != 1 {
        return Err(format!(
            "task {name} is a regression task and needs a one-output head, but the {who} has num_labels {num_labels}: set \"num_labels\": 1 in its config.json and recompile"
        ));
    }
    if !task.is_regression() && num_labels < 2 {
        return Err(format!(
            "the {who} has a one-output (regression) head, but task {name} classifies: use --task-name sts-b, or set num_labels to the number of classes and recompile"
        ));
    }
    Ok(())
}
