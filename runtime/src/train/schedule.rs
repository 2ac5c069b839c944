//! Step counts of a phase (data sink, TINYBERT_SPEC §5.3) and the schedule scalars the graph
//! reads (`sched.*`, §3).

use plan::manifest::{PhaseInfo, ScheduleKind, WarmupRule};

/// How a phase walks its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepPlan {
    /// Batches per data epoch (after drop_remainder and sharding).
    pub steps_per_epoch: u64,
    /// Data epochs asked for.
    pub epochs: u64,
    /// `Some(n)`: data sink, callbacks every `n` steps.
    pub sink: Option<u64>,
}

impl StepPlan {
    /// Steps the phase runs: `epochs·steps_per_epoch`, floored to whole sink loops in sink mode
    /// (MindSpore runs `epochs·dataset_size // sink` loops of `sink` steps).
    pub fn total_steps(&self) -> u64 {
        let data = self.epochs.saturating_mul(self.steps_per_epoch);
        match self.sink {
            Some(n) => data / n * n,
            None => data,
        }
    }

    /// Steps between callbacks (logging, checkpoints, evaluation).
    pub fn interval(&self) -> u64 {
        self.sink.unwrap_or(1)
    }

    /// Whether the callbacks fire after cumulative step `step` (1-based).
    pub fn is_callback(&self, step: u64) -> bool {
        step.is_multiple_of(self.interval())
    }

    /// Whether cumulative step `step` ends a "MindSpore epoch": a sink loop in sink mode, a data
    /// epoch otherwise.
    pub fn ends_epoch(&self, step: u64) -> bool {
        match self.sink {
            Some(n) => step.is_multiple_of(n),
            None => step.is_multiple_of(self.steps_per_epoch),
        }
    }

    /// The epoch number the seed prints with cumulative step `step`: the sink-loop index in
    /// sink mode, the data epoch otherwise (1-based).
    pub fn printed_epoch(&self, step: u64) -> u64 {
        match self.sink {
            Some(n) => step.div_ceil(n),
            None => (step - 1) / self.steps_per_epoch + 1,
        }
    }
}

/// The `sched.*` inputs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScheduleValues {
    pub lr0: f64,
    pub end_lr: f64,
    pub warmup_steps: f64,
    pub decay_steps: f64,
}

/// The schedule of a phase of `plan`, optionally with another base learning rate.
pub fn schedule_values(info: &PhaseInfo, plan: &StepPlan, lr: Option<f64>) -> ScheduleValues {
    // MindSpore and PyTorch both count the decay over the data steps asked for (not floored to
    // sink loops).
    let total = (plan.epochs.saturating_mul(plan.steps_per_epoch)).max(1) as f64;
    let tenth = |n: f64| match info.schedule {
        // PyTorch compares progress fractions: warmup is exactly 10 % of t_total.
        ScheduleKind::WarmupLinear => n / 10.0,
        // MindSpore: int(n / 10).
        _ => (n / 10.0).floor(),
    };
    let warmup = match info.warmup {
        WarmupRule::TenthOfTotal => tenth(total),
        WarmupRule::TenthOfOneEpoch => tenth(plan.steps_per_epoch as f64),
        WarmupRule::None => 0.0,
    };
    ScheduleValues {
        lr0: lr.unwrap_or(info.lr0),
        end_lr: info.end_lr,
        warmup_steps: warmup,
        decay_steps: total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(schedule: ScheduleKind, warmup: WarmupRule) -> PhaseInfo {
        PhaseInfo {
            name: "td1".into(),
            schedule,
            warmup,
            lr0: 5e-5,
            end_lr: 1e-14,
            loss_scale: None,
        }
    }

    #[test]
    fn sink_floors_to_whole_loops_and_prints_loop_index() {
        let p = StepPlan {
            steps_per_epoch: 250,
            epochs: 3,
            sink: Some(100),
        };
        assert_eq!(p.total_steps(), 700);
        assert!(p.is_callback(100) && !p.is_callback(150));
        assert_eq!(p.printed_epoch(100), 1);
        assert_eq!(p.printed_epoch(300), 3);
        let q = StepPlan { sink: None, ..p };
        assert_eq!(q.total_steps(), 750);
        assert_eq!(q.printed_epoch(250), 1);
        assert_eq!(q.printed_epoch(251), 2);
        assert!(q.ends_epoch(500) && !q.ends_epoch(499));
    }

    #[test]
    fn warmup_rules_follow_the_spec_table() {
        let p = StepPlan {
            steps_per_epoch: 2105,
            epochs: 10,
            sink: Some(100),
        };
        // MindSpore td1: int(dataset_size / 10) warmup, decay over all epochs.
        let s = schedule_values(
            &info(ScheduleKind::Polynomial, WarmupRule::TenthOfOneEpoch),
            &p,
            None,
        );
        assert_eq!((s.warmup_steps, s.decay_steps), (210.0, 21050.0));
        let s = schedule_values(
            &info(ScheduleKind::Polynomial, WarmupRule::TenthOfTotal),
            &p,
            Some(1e-4),
        );
        assert_eq!((s.warmup_steps, s.lr0), (2105.0, 1e-4));
        let s = schedule_values(
            &info(ScheduleKind::WarmupLinear, WarmupRule::TenthOfTotal),
            &StepPlan {
                steps_per_epoch: 33,
                epochs: 1,
                sink: None,
            },
            None,
        );
        assert_eq!(s.warmup_steps, 3.3);
    }
}
