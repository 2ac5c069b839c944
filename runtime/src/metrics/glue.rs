//! GLUE dev-set metrics from per-batch accumulators (see the module above for the references).

use super::MetricsError;

use std::collections::BTreeMap;

// ---------------------------------------------------------------------------------------------
// Classification

/// Row-wise argmax of `[n, num_labels]` logits. Ties go to the lowest index and a NaN counts as
/// the maximum (the first NaN wins), as numpy's and torch's `argmax` do.
pub fn argmax_rows(logits: &[f32], num_labels: usize) -> Result<Vec<usize>, MetricsError> {
    if num_labels == 0 || !logits.len().is_multiple_of(num_labels) {
        return Err(MetricsError::LogitsShape {
            len: logits.len(),
            num_labels,
        });
    }
    Ok(logits.chunks_exact(num_labels).map(argmax).collect())
}

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate().skip(1) {
        if row[best].is_nan() {
            break;
        }
        if v.is_nan() || v > row[best] {
            best = i;
        }
    }
    best
}

/// Which predictions count as positive for binary F1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Positive {
    /// Class 1 only: sklearn `f1_score(average="binary", pos_label=1)` (PyTorch TinyBERT's
    /// `f1` for MRPC/QQP). With more than two classes this is class 1 one-vs-rest.
    LabelOne,
    /// Any class >= 1: MindSpore's `bf1` (`np.isin(x, range(1, num_labels))`), where a
    /// prediction of 2 for a label of 1 is a true positive.
    NonZero,
}

/// Binary F1 with its parts. Every ratio with a zero denominator is 0.0 (sklearn's default).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BinaryF1 {
    pub true_positives: u64,
    pub false_positives: u64,
    pub false_negatives: u64,
    pub precision: f64,
    pub recall: f64,
    /// 2TP / (2TP + FP + FN): the F1 MindSpore prints (its `eval()` drops the factor 2; this
    /// does not reproduce that bug).
    pub f1: f64,
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// Counts of (label, prediction) pairs over everything added so far.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassificationAccumulator {
    num_labels: usize,
    /// Row-major `[label][prediction]` counts.
    confusion: Vec<u64>,
    count: usize,
}

impl ClassificationAccumulator {
    pub fn new(num_labels: usize) -> Result<Self, MetricsError> {
        if num_labels < 2 {
            return Err(MetricsError::NumLabels(num_labels));
        }
        Ok(ClassificationAccumulator {
            num_labels,
            confusion: vec![0; num_labels * num_labels],
            count: 0,
        })
    }

    pub fn num_labels(&self) -> usize {
        self.num_labels
    }

    /// Examples added so far.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Adds a batch of `[n, num_labels]` logits (row-major) and their `n` labels.
    pub fn add_logits<L: Copy + Into<i64>>(
        &mut self,
        logits: &[f32],
        labels: &[L],
    ) -> Result<(), MetricsError> {
        let predictions = argmax_rows(logits, self.num_labels)?;
        self.add_predictions(&predictions, labels)
    }

    /// Adds a batch of predicted classes and their labels. The batch is checked whole before
    /// anything is counted, so an error leaves the accumulator unchanged.
    pub fn add_predictions<L: Copy + Into<i64>>(
        &mut self,
        predictions: &[usize],
        labels: &[L],
    ) -> Result<(), MetricsError> {
        if predictions.len() != labels.len() {
            return Err(MetricsError::LengthMismatch {
                predictions: predictions.len(),
                labels: labels.len(),
            });
        }
        let k = self.num_labels;
        for (i, (&p, &l)) in predictions.iter().zip(labels).enumerate() {
            let label: i64 = l.into();
            if label < 0 || label as u64 >= k as u64 {
                return Err(MetricsError::LabelOutOfRange {
                    index: self.count + i,
                    label,
                    num_labels: k,
                });
            }
            if p >= k {
                // A prediction is a class index too; report it the same way.
                return Err(MetricsError::LabelOutOfRange {
                    index: self.count + i,
                    label: p as i64,
                    num_labels: k,
                });
            }
        }
        for (&p, &l) in predictions.iter().zip(labels) {
            let label: i64 = l.into();
            self.confusion[label as usize * k + p] += 1;
        }
        self.count += predictions.len();
        Ok(())
    }

    /// `confusion[label][prediction]`.
    pub fn confusion(&self, label: usize, prediction: usize) -> u64 {
        self.confusion[label * self.num_labels + prediction]
    }

    fn correct(&self) -> u64 {
        (0..self.num_labels).map(|i| self.confusion(i, i)).sum()
    }

    /// Fraction of predictions equal to the label; 0.0 when empty.
    pub fn accuracy(&self) -> f64 {
        ratio(self.correct(), self.count as u64)
    }

    /// Binary F1, precision and recall with the given notion of positive.
    pub fn binary_f1(&self, positive: Positive) -> BinaryF1 {
        let is_pos = |c: usize| match positive {
            Positive::LabelOne => c == 1,
            Positive::NonZero => c >= 1,
        };
        let (mut tp, mut fp, mut fn_) = (0, 0, 0);
        for label in 0..self.num_labels {
            for pred in 0..self.num_labels {
                let n = self.confusion(label, pred);
                match (is_pos(label), is_pos(pred)) {
                    (true, true) => tp += n,
                    (false, true) => fp += n,
                    (true, false) => fn_ += n,
                    (false, false) => {}
                }
            }
        }
        BinaryF1 {
            true_positives: tp,
            false_positives: fp,
            false_negatives: fn_,
            precision: ratio(tp, tp + fp),
            recall: ratio(tp, tp + fn_),
            f1: ratio(2 * tp, 2 * tp + fp + fn_),
        }
    }

    /// Matthews correlation, multiclass form, computed in f64 exactly as sklearn's
    /// `matthews_corrcoef` does; 0.0 when either marginal is constant (sklearn's value too).
    pub fn matthews_corrcoef(&self) -> f64 {
        let k = self.num_labels;
        let t_sum: Vec<f64> = (0..k)
            .map(|l| (0..k).map(|p| self.confusion(l, p)).sum::<u64>() as f64)
            .collect();
        let p_sum: Vec<f64> = (0..k)
            .map(|p| (0..k).map(|l| self.confusion(l, p)).sum::<u64>() as f64)
            .collect();
        let n_correct = self.correct() as f64;
        let n_samples: f64 = p_sum.iter().sum();
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        let cov_ytyp = n_correct * n_samples - dot(&t_sum, &p_sum);
        let cov_ypyp = n_samples * n_samples - dot(&p_sum, &p_sum);
        let cov_ytyt = n_samples * n_samples - dot(&t_sum, &t_sum);
        let den = cov_ypyp * cov_ytyt;
        if den == 0.0 {
            0.0
        } else {
            cov_ytyp / den.sqrt()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Regression

/// Pearson correlation (scipy `pearsonr`'s statistic). 0.0 when fewer than two values or when
/// either input is constant (scipy returns NaN there).
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len());
    if n < 2 {
        return 0.0;
    }
    let (x, y) = (&x[..n], &y[..n]);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / n as f64;
    let (mx, my) = (mean(x), mean(y));
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (&a, &b) in x.iter().zip(y) {
        let (dx, dy) = (a - mx, b - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if sxx == 0.0 || syy == 0.0 {
        return 0.0;
    }
    (sxy / (sxx.sqrt() * syy.sqrt())).clamp(-1.0, 1.0)
}

/// 1-based ranks with ties given their average rank (scipy `rankdata(method="average")`).
pub fn average_ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut ranks = vec![0.0; x.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && x[order[end]] == x[order[start]] {
            end += 1;
        }
        // Positions start+1 ..= end share their mean.
        let rank = (start + 1 + end) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = rank;
        }
        start = end;
    }
    ranks
}

/// Spearman rank correlation (scipy `spearmanr`'s statistic): Pearson of the average ranks.
/// 0.0 where [`pearson`] is.
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    pearson(&average_ranks(x), &average_ranks(y))
}

/// Predictions and labels of a regression task, kept whole (ranks need all of them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RegressionAccumulator {
    predictions: Vec<f64>,
    labels: Vec<f64>,
}

impl RegressionAccumulator {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn count(&self) -> usize {
        self.labels.len()
    }

    /// Adds a batch of predictions (the `[n, 1]` output squeezed) and labels. Non-finite values
    /// are an error (they have no rank); an error leaves the accumulator unchanged.
    pub fn add(&mut self, predictions: &[f32], labels: &[f32]) -> Result<(), MetricsError> {
        if predictions.len() != labels.len() {
            return Err(MetricsError::LengthMismatch {
                predictions: predictions.len(),
                labels: labels.len(),
            });
        }
        for (what, values) in [("prediction", predictions), ("label", labels)] {
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return Err(MetricsError::NonFinite {
                    what,
                    index: self.count() + i,
                    value: values[i],
                });
            }
        }
        self.predictions
            .extend(predictions.iter().map(|&v| f64::from(v)));
        self.labels.extend(labels.iter().map(|&v| f64::from(v)));
        Ok(())
    }

    pub fn pearson(&self) -> f64 {
        pearson(&self.predictions, &self.labels)
    }

    pub fn spearman(&self) -> f64 {
        spearman(&self.predictions, &self.labels)
    }
}

// ---------------------------------------------------------------------------------------------
// Tasks

/// The tasks whose metrics are known: GLUE as PyTorch TinyBERT's `compute_metrics` (§7.2) and
/// MindSpore's TNEWS (accuracy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    Cola,
    Sst2,
    Mnli,
    MnliMm,
    Qnli,
    Rte,
    Wnli,
    Mrpc,
    Qqp,
    StsB,
    Tnews,
    /// Any other single-label classification task (a user's own data): accuracy.
    Accuracy,
}

impl Task {
    /// Parses a task name, case-insensitively; `sst2`, `stsb`, `mnli-m` are accepted too.
    pub fn from_name(name: &str) -> Result<Task, MetricsError> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "cola" => Task::Cola,
            "sst-2" | "sst2" => Task::Sst2,
            "mnli" | "mnli-m" => Task::Mnli,
            "mnli-mm" => Task::MnliMm,
            "qnli" => Task::Qnli,
            "rte" => Task::Rte,
            "wnli" => Task::Wnli,
            "mrpc" => Task::Mrpc,
            "qqp" => Task::Qqp,
            "sts-b" | "stsb" => Task::StsB,
            "tnews" => Task::Tnews,
            "accuracy" | "acc" | "classification" => Task::Accuracy,
            _ => return Err(MetricsError::UnknownTask(name.to_string())),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Task::Cola => "cola",
            Task::Sst2 => "sst-2",
            Task::Mnli => "mnli",
            Task::MnliMm => "mnli-mm",
            Task::Qnli => "qnli",
            Task::Rte => "rte",
            Task::Wnli => "wnli",
            Task::Mrpc => "mrpc",
            Task::Qqp => "qqp",
            Task::StsB => "sts-b",
            Task::Tnews => "tnews",
            Task::Accuracy => "accuracy",
        }
    }
}

/// The metrics a task reports and the one that selects the best model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskMetrics {
    task: Task,
}

impl TaskMetrics {
    pub fn new(task: Task) -> Self {
        TaskMetrics { task }
    }

    pub fn for_task(name: &str) -> Result<Self, MetricsError> {
        Task::from_name(name).map(Self::new)
    }

    pub fn task(&self) -> Task {
        self.task
    }

    /// STS-B predicts a score; every other task a class.
    pub fn is_regression(&self) -> bool {
        self.task == Task::StsB
    }

    /// The keys of [`EvalScores::metrics`], as PyTorch TinyBERT names them.
    pub fn metric_names(&self) -> &'static [&'static str] {
        match self.task {
            Task::Cola => &["mcc"],
            Task::Mrpc | Task::Qqp => &["acc", "f1", "acc_and_f1"],
            Task::StsB => &["pearson", "spearmanr", "corr"],
            _ => &["acc"],
        }
    }

    /// The model-selection metric (§7.2: acc for MRPC/QQP, not F1; corr for STS-B; mcc for
    /// CoLA; acc otherwise). Higher is better.
    pub fn selection_metric(&self) -> &'static str {
        match self.task {
            Task::Cola => "mcc",
            Task::StsB => "corr",
            _ => "acc",
        }
    }

    /// A fresh accumulator; `num_labels` is ignored for regression.
    pub fn accumulator(&self, num_labels: usize) -> Result<EvalAccumulator, MetricsError> {
        let inner = if self.is_regression() {
            Inner::Regression(RegressionAccumulator::new())
        } else {
            Inner::Classification(ClassificationAccumulator::new(num_labels)?)
        };
        Ok(EvalAccumulator {
            metrics: *self,
            inner,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Inner {
    Classification(ClassificationAccumulator),
    Regression(RegressionAccumulator),
}

/// One evaluation pass of one task, fed batch by batch.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalAccumulator {
    metrics: TaskMetrics,
    inner: Inner,
}

impl EvalAccumulator {
    /// Adds a batch of `[n, num_labels]` logits and labels (classification tasks).
    pub fn add_logits<L: Copy + Into<i64>>(
        &mut self,
        logits: &[f32],
        labels: &[L],
    ) -> Result<(), MetricsError> {
        match &mut self.inner {
            Inner::Classification(c) => c.add_logits(logits, labels),
            Inner::Regression(_) => Err(self.wrong_kind()),
        }
    }

    /// Adds a batch of predicted scores and labels (regression tasks).
    pub fn add_regression(
        &mut self,
        predictions: &[f32],
        labels: &[f32],
    ) -> Result<(), MetricsError> {
        match &mut self.inner {
            Inner::Regression(r) => r.add(predictions, labels),
            Inner::Classification(_) => Err(self.wrong_kind()),
        }
    }

    fn wrong_kind(&self) -> MetricsError {
        let (expected, method) = if self.metrics.is_regression() {
            ("a regression task", "add_regression")
        } else {
            ("a classification task", "add_logits")
        };
        MetricsError::WrongKind {
            task: self.metrics.task.name(),
            expected,
            method,
        }
    }

    pub fn num_examples(&self) -> usize {
        match &self.inner {
            Inner::Classification(c) => c.count(),
            Inner::Regression(r) => r.count(),
        }
    }

    /// The classification counts, for metrics beyond the task's (e.g. MindSpore's `bf1`).
    pub fn classification(&self) -> Option<&ClassificationAccumulator> {
        match &self.inner {
            Inner::Classification(c) => Some(c),
            Inner::Regression(_) => None,
        }
    }

    /// The task's metrics over everything added so far.
    pub fn scores(&self) -> Result<EvalScores, MetricsError> {
        if self.num_examples() == 0 {
            return Err(MetricsError::Empty);
        }
        let mut metrics = BTreeMap::new();
        match &self.inner {
            Inner::Classification(c) => {
                for &name in self.metrics.metric_names() {
                    let value = match name {
                        "mcc" => c.matthews_corrcoef(),
                        "acc" => c.accuracy(),
                        "f1" => c.binary_f1(Positive::LabelOne).f1,
                        _ => (c.accuracy() + c.binary_f1(Positive::LabelOne).f1) / 2.0,
                    };
                    metrics.insert(name.to_string(), value);
                }
            }
            Inner::Regression(r) => {
                let (p, s) = (r.pearson(), r.spearman());
                metrics.insert("pearson".into(), p);
                metrics.insert("spearmanr".into(), s);
                metrics.insert("corr".into(), (p + s) / 2.0);
            }
        }
        Ok(EvalScores {
            metrics,
            num_examples: self.num_examples(),
            selection_metric: self.metrics.selection_metric(),
        })
    }
}

/// The result of one evaluation pass.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalScores {
    /// Metric name → value (names as [`TaskMetrics::metric_names`]).
    pub metrics: BTreeMap<String, f64>,
    pub num_examples: usize,
    pub selection_metric: &'static str,
}

impl EvalScores {
    /// The value of the model-selection metric.
    pub fn selection_value(&self) -> f64 {
        self.metrics
            .get(self.selection_metric)
            .copied()
            .unwrap_or(0.0)
    }

    /// Whether this pass beats `best` strictly (§6.3 and PyTorch both save only on `>`);
    /// `None` (nothing yet) is always beaten. MindSpore starts from `Some(0.0)`.
    pub fn improves_on(&self, best: Option<f64>) -> bool {
        best.is_none_or(|b| self.selection_value() > b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_ties_take_lowest_index_and_nan_wins() {
        let logits = [1.0, 3.0, 3.0, f32::NAN, 0.0, 5.0, 2.0, 2.0, 2.0];
        assert_eq!(argmax_rows(&logits, 3).unwrap(), vec![1, 0, 0]);
        let logits = [0.0, f32::NAN, f32::NAN];
        assert_eq!(argmax_rows(&logits, 3).unwrap(), vec![1]);
        assert!(matches!(
            argmax_rows(&[1.0; 5], 2),
            Err(MetricsError::LogitsShape { len: 5, .. })
        ));
    }

    #[test]
    fn bad_labels_leave_the_accumulator_unchanged() {
        let mut acc = ClassificationAccumulator::new(2).unwrap();
        acc.add_predictions(&[0, 1], &[0i32, 1]).unwrap();
        let before = acc.clone();
        let err = acc.add_predictions(&[0, 1], &[1i32, 2]).unwrap_err();
        assert_eq!(
            err,
            MetricsError::LabelOutOfRange {
                index: 3,
                label: 2,
                num_labels: 2
            }
        );
        assert_eq!(acc, before);
        assert!(acc.add_predictions(&[0], &[0i64, 1]).is_err());
        assert!(ClassificationAccumulator::new(1).is_err());
    }

    #[test]
    fn ms_bf1_counts_any_nonzero_class_as_positive() {
        let mut acc = ClassificationAccumulator::new(3).unwrap();
        // label 1 predicted 2: TP for bf1, FN for pos_label=1.
        acc.add_predictions(&[2, 1, 0, 2], &[1u8, 1, 2, 0]).unwrap();
        let ms = acc.binary_f1(Positive::NonZero);
        assert_eq!(
            (ms.true_positives, ms.false_positives, ms.false_negatives),
            (2, 1, 1)
        );
        let sk = acc.binary_f1(Positive::LabelOne);
        assert_eq!(
            (sk.true_positives, sk.false_positives, sk.false_negatives),
            (1, 0, 1)
        );
        assert_eq!(sk.precision, 1.0);
        assert_eq!(sk.recall, 0.5);
    }

    #[test]
    fn zero_denominators_are_zero() {
        let mut acc = ClassificationAccumulator::new(2).unwrap();
        acc.add_predictions(&[0, 0], &[0i32, 0]).unwrap();
        let f = acc.binary_f1(Positive::LabelOne);
        assert_eq!((f.precision, f.recall, f.f1), (0.0, 0.0, 0.0));
        assert_eq!(acc.matthews_corrcoef(), 0.0);
        assert_eq!(pearson(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]), 0.0);
        assert_eq!(spearman(&[1.0], &[2.0]), 0.0);
    }

    #[test]
    fn average_ranks_share_ties() {
        assert_eq!(
            average_ranks(&[3.0, 1.0, 3.0, 2.0, 3.0]),
            vec![4.0, 1.0, 4.0, 2.0, 4.0]
        );
    }

    #[test]
    fn task_selector() {
        let m = TaskMetrics::for_task("MRPC").unwrap();
        assert_eq!(m.metric_names(), &["acc", "f1", "acc_and_f1"]);
        assert_eq!(m.selection_metric(), "acc");
        assert_eq!(
            TaskMetrics::for_task("sts-b").unwrap().selection_metric(),
            "corr"
        );
        assert_eq!(
            TaskMetrics::for_task("cola").unwrap().selection_metric(),
            "mcc"
        );
        assert!(matches!(
            TaskMetrics::for_task("squad"),
            Err(MetricsError::UnknownTask(_))
        ));
        let mut acc = TaskMetrics::for_task("sts-b")
            .unwrap()
            .accumulator(1)
            .unwrap();
        assert!(matches!(
            acc.add_logits(&[0.0, 1.0], &[0i32]),
            Err(MetricsError::WrongKind { .. })
        ));
        assert_eq!(acc.scores().unwrap_err(), MetricsError::Empty);
        assert!(matches!(
            acc.add_regression(&[f32::NAN], &[1.0]),
            Err(MetricsError::NonFinite {
                what: "prediction",
                index: 0,
                ..
            })
        ));
    }

    #[test]
    fn model_selection_is_strict() {
        let mut acc = TaskMetrics::for_task("sst-2")
            .unwrap()
            .accumulator(2)
            .unwrap();
        acc.add_logits(&[0.0, 1.0, 1.0, 0.0], &[1i32, 1]).unwrap();
        let s = acc.scores().unwrap();
        assert_eq!(s.selection_value(), 0.5);
        assert!(s.improves_on(None));
        assert!(s.improves_on(Some(0.4)));
        assert!(!s.improves_on(Some(0.5)));
    }
}
