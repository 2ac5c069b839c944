//! What a training run tells its user: the seed's log lines on stdout (so existing `grep`s keep
//! working), a progress bar on stderr when it is a terminal (plain lines otherwise), and one JSON
//! object per logged step or evaluation in a metrics file (see `metrics::MetricsLine`).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The values of one logged step.
#[derive(Clone, Debug)]
pub struct StepLog {
    pub phase: String,
    /// Sink-loop index (sink mode) or data epoch, 1-based, as the seed prints it.
    pub epoch: u64,
    /// Cumulative step count in this phase.
    pub step: u64,
    pub loss: f64,
    pub losses: Vec<(String, f64)>,
    pub overflow: bool,
    pub scale: f64,
    pub lr: f64,
    pub samples_per_s: f64,
}

/// Seed-style numbers: like a MindSpore tensor repr (`28.2093`, `65536`).
fn num(x: f64) -> String {
    if x.abs() >= 1e15 || (x != 0.0 && x.abs() < 1e-4) {
        format!("{x:e}")
    } else if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        let s = format!("{x:.6}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// The MindSpore `LossCallBack` line (TINYBERT_SPEC §9).
pub fn seed_step_line(s: &StepLog, loss_scale_tuple: bool) -> String {
    let outputs = if loss_scale_tuple {
        format!(
            "(Tensor(shape=[1], dtype=Float32, {}), Tensor(shape=[], dtype=Bool, {}), Tensor(shape=[], dtype=Float32, {}))",
            num(s.loss),
            if s.overflow { "True" } else { "False" },
            num(s.scale)
        )
    } else {
        num(s.loss)
    };
    format!(
        "epoch: {}, step: {}, outputs are {}",
        s.epoch, s.step, outputs
    )
}

/// The MindSpore `TimeMonitor` line.
pub fn time_line(epoch_ms: f64, steps: u64) -> String {
    format!(
        "epoch time: {:5.3} ms, per step time: {:5.3} ms",
        epoch_ms,
        epoch_ms / steps.max(1) as f64
    )
}

/// Console and metrics-file output of a run.
pub struct Logger {
    /// A data-parallel rank other than 0: prints and records nothing.
    quiet: bool,
    metrics: Option<(PathBuf, Option<File>)>,
    bar: Option<ProgressBar>,
    plain_every: u64,
    started: Instant,
    /// The phase's total steps and the steps already run when it (re)started, for the ETA of
    /// the plain progress lines.
    total: u64,
    done_at_start: u64,
}

impl Logger {
    /// Appends to `metrics` (created with its directory at the first line, so a run that fails
    /// before training leaves nothing behind; a resumed run continues the same file).
    pub fn new(metrics: Option<&Path>) -> Result<Logger, String> {
        Ok(Logger {
            quiet: false,
            metrics: metrics.map(|p| (p.to_path_buf(), None)),
            bar: None,
            plain_every: 1,
            started: Instant::now(),
            total: 0,
            done_at_start: 0,
        })
    }

    /// The logger of a data-parallel rank other than 0: no progress, no lines, no metrics
    /// (rank 0 logs the job).
    pub fn quiet() -> Logger {
        Logger {
            quiet: true,
            ..Logger::new(None).expect("no file to open")
        }
    }

    /// Starts the progress display of a phase of `total` steps, `done` of them already run.
    pub fn start_phase(&mut self, phase: &str, total: u64, done: u64) {
        self.finish_phase();
        if self.quiet {
            return;
        }
        self.started = Instant::now();
        self.total = total;
        self.done_at_start = done;
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{prefix:>5} [{bar:30}] {pos}/{len} {msg} eta {eta}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar.set_prefix(phase.to_string());
            bar.set_position(done);
            self.bar = Some(bar);
        } else {
            // Without a terminal: about 20 plain progress lines per phase.
            self.plain_every = (total / 20).max(1);
        }
    }

    /// Progress after every step.
    pub fn progress(&mut self, s: &StepLog) {
        if self.quiet {
            return;
        }
        let msg = format!(
            "loss {:.4} scale {} lr {:.3e} {:.1} samples/s",
            s.loss,
            num(s.scale),
            s.lr,
            s.samples_per_s
        );
        match &self.bar {
            Some(bar) => {
                bar.set_position(s.step);
                bar.set_message(msg);
            }
            None => {
                if s.step.is_multiple_of(self.plain_every) || s.step == self.total {
                    eprintln!(
                        "[{}] step {}/{} {msg} eta {}",
                        s.phase,
                        s.step,
                        self.total,
                        self.eta(s.step)
                    );
                }
            }
        }
    }

    /// Time left at the mean step time since the phase (re)started, as `1h02m`, `3m05s`, `12s`.
    fn eta(&self, step: u64) -> String {
        let run = step.saturating_sub(self.done_at_start).max(1);
        let left = self.started.elapsed().as_secs_f64() / run as f64
            * self.total.saturating_sub(step) as f64;
        let secs = left.round() as u64;
        match (secs / 3600, secs / 60 % 60, secs % 60) {
            (0, 0, s) => format!("{s}s"),
            (0, m, s) => format!("{m}m{s:02}s"),
            (h, m, _) => format!("{h}h{m:02}m"),
        }
    }

    /// A line for the user (above the progress bar when there is one).
    pub fn println(&self, line: &str) {
        if self.quiet {
            return;
        }
        match &self.bar {
            Some(bar) => bar.suspend(|| println!("{line}")),
            None => println!("{line}"),
        }
    }

    /// Writes one metrics line.
    pub fn record(&mut self, line: &crate::metrics::MetricsLine) -> Result<(), String> {
        if let Some((path, file)) = &mut self.metrics {
            let f = match file {
                Some(f) => f,
                None => file.insert(open_metrics(path)?),
            };
            let mut s = serde_json::to_string(line).expect("metrics serialize");
            s.push('\n');
            f.write_all(s.as_bytes())
                .and_then(|_| f.flush())
                .map_err(|e| format!("cannot write metrics file {}: {e}", path.display()))?;
        }
        Ok(())
    }

    /// Seconds since the phase started.
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    pub fn finish_phase(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// Opens the metrics file for appending, creating it and its directory.
fn open_metrics(path: &Path) -> Result<File, String> {
    if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open metrics file {}: {e}", path.display()))
}
