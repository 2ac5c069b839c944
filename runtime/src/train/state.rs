//! What a checkpoint must hold for `--resume` to continue bit for bit: besides the weights and
//! the Adam moments, the graph's state scalars (optimizer step, loss-scale state, dropout
//! seed), the cumulative step (which is also the data cursor: batch `step % steps_per_epoch`
//! of data epoch `step / steps_per_epoch`) and the best evaluation so far.

use super::session::{Session, STATE_NAMES};
use crate::checkpoint::{self, CheckpointDir, CheckpointPair, Moments, Newest, TensorMap};
use plan::manifest::Manifest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The trainer's state in a checkpoint's state file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    pub phase: String,
    /// Steps run in this phase (skipped overflow steps included).
    pub global_step: u64,
    pub total_steps: u64,
    pub steps_per_epoch: u64,
    /// `state.*` graph inputs for the next step.
    pub scalars: BTreeMap<String, f64>,
    pub best_metric: Option<f64>,
    pub preset: String,
    pub batch: usize,
    pub seq_len: usize,
}

impl TrainerState {
    pub fn new(phase: &str, m: &Manifest, steps_per_epoch: u64) -> TrainerState {
        TrainerState {
            phase: phase.to_string(),
            global_step: 0,
            total_steps: 0,
            steps_per_epoch,
            scalars: BTreeMap::new(),
            best_metric: None,
            preset: m.preset.clone(),
            batch: m.batch,
            seq_len: m.seq_len,
        }
    }
}

/// The rotating checkpoints of one phase, plus its end-of-phase checkpoint
/// (`tiny_bert_{steps}_1`, so the next phase always starts from the last parameters even when
/// the step count is not a multiple of `--save-ckpt-step`).
///
/// In a data-parallel job only rank 0 writes ([`Checkpoints::new`]); the other ranks get
/// [`Checkpoints::follower`], which writes and finds nothing (rank 0's state reaches them by
/// broadcast).
pub struct Checkpoints {
    periodic: CheckpointDir,
    last: CheckpointDir,
    writes: bool,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl Checkpoints {
    pub fn new(dir: &Path, save_step: u64, max_num: usize) -> Result<Checkpoints, String> {
        Ok(Checkpoints {
            periodic: CheckpointDir::new(dir, save_step.max(1), max_num as u64).map_err(err)?,
            last: CheckpointDir::new(dir, 1, 1).map_err(err)?,
            writes: true,
        })
    }

    /// The checkpoints of a rank other than 0: nothing is written or read, no directory made.
    pub fn follower(dir: &Path, save_step: u64, max_num: usize) -> Checkpoints {
        let at = |save_step, max_num| CheckpointDir {
            dir: dir.to_path_buf(),
            save_step,
            max_num,
        };
        Checkpoints {
            periodic: at(save_step.max(1), max_num.max(1) as u64),
            last: at(1, 1),
            writes: false,
        }
    }

    fn contents(session: &Session, trained: &str) -> (TensorMap, Moments) {
        (
            session.inputs_with_prefix(trained),
            Moments {
                m: session.inputs_with_prefix("adam_m"),
                v: session.inputs_with_prefix("adam_v"),
            },
        )
    }

    /// The phase's checkpoint directory.
    pub fn dir(&self) -> &Path {
        &self.periodic.dir
    }

    /// Checkpoint `k` of the rotation.
    pub fn save(
        &self,
        k: u64,
        session: &Session,
        trained: &str,
        state: &TrainerState,
    ) -> Result<(), String> {
        if !self.writes {
            return Ok(());
        }
        let (w, m) = Self::contents(session, trained);
        self.periodic.save(k, &w, &m, state).map_err(err)?;
        Ok(())
    }

    /// The end-of-phase checkpoint.
    pub fn save_final(
        &self,
        session: &Session,
        trained: &str,
        state: &TrainerState,
    ) -> Result<(), String> {
        if !self.writes {
            return Ok(());
        }
        let (w, m) = Self::contents(session, trained);
        self.last
            .save(state.global_step, &w, &m, state)
            .map_err(err)?;
        Ok(())
    }

    /// Replaces the best model file.
    pub fn save_best(&self, path: &Path, params: &TensorMap) -> Result<(), String> {
        if !self.writes {
            return Ok(());
        }
        checkpoint::save_best(path, params).map_err(err)
    }

    /// The newest checkpoint of this phase's directory (by step); none for a follower.
    pub fn newest(&self) -> Result<Option<CheckpointPair>, String> {
        if !self.writes {
            return Ok(None);
        }
        checkpoint::newest(&self.periodic.dir, Newest::Step).map_err(err)
    }

    /// The newest checkpoint in `dir` by modification time (the seed's td1 → td2 rule).
    pub fn newest_in(dir: &Path) -> Result<Option<CheckpointPair>, String> {
        checkpoint::newest(dir, Newest::Mtime).map_err(err)
    }

    /// Loads `found` into the session and returns its state, after checking that it belongs to
    /// this phase and this trainer.
    pub fn restore(
        &self,
        found: &CheckpointPair,
        session: &mut Session,
        trained: &str,
        expected: &TrainerState,
    ) -> Result<TrainerState, String> {
        let (moments, state): (Moments, TrainerState) =
            checkpoint::load_state(&found.state).map_err(err)?;
        let what = found.state.display();
        if state.phase != expected.phase {
            return Err(format!(
                "{what}: a checkpoint of phase {}, not {}",
                state.phase, expected.phase
            ));
        }
        if (state.batch, state.seq_len, &state.preset)
            != (expected.batch, expected.seq_len, &expected.preset)
        {
            return Err(format!(
                "{what}: written by a trainer with batch {}, seq-len {}, preset {} (this one: {}, {}, {})",
                state.batch, state.seq_len, state.preset, expected.batch, expected.seq_len, expected.preset
            ));
        }
        if state.steps_per_epoch != expected.steps_per_epoch {
            return Err(format!(
                "{what}: the data had {} batches per epoch, now {}; resume needs the same data",
                state.steps_per_epoch, expected.steps_per_epoch
            ));
        }
        check_restored_state(&state, found, session)?;
        // One pass per tensor: the first negative value names the damage.
        let negative = (moments.v.iter())
            .find_map(|(name, t)| Some((name, t.to_f64().into_iter().find(|&x| x < 0.0)?)));
        if let Some((name, x)) = negative {
            return Err(format!(
                "{what}: Adam second moment '{name}' holds negative values ({x}…); the file is damaged"
            ));
        }
        let weights = checkpoint::load_weights(&found.weights).map_err(err)?;
        // A resumed run continues exactly, so nothing may silently start fresh.
        for (prefix, have, file) in [
            (trained, &weights, &found.weights),
            ("adam_m", &moments.m, &found.state),
            ("adam_v", &moments.v, &found.state),
        ] {
            let p = format!("{prefix}.");
            let missing: Vec<&str> = (session.plan().inputs.iter())
                .filter_map(|s| s.name.strip_prefix(&p))
                .filter(|n| !have.contains_key(*n))
                .collect();
            if !missing.is_empty() {
                return Err(format!(
                    "{}: lacks {} {prefix} tensor(s) that phase {} trains: {}; a resume checkpoint must hold all of them",
                    file.display(),
                    missing.len(),
                    expected.phase,
                    missing.join(", ")
                ));
            }
        }
        let origin = found.weights.display().to_string();
        for (name, t) in &weights {
            session
                .set(&format!("{trained}.{name}"), t, &origin)
                .map_err(err)?;
        }
        let origin = found.state.display().to_string();
        for (prefix, map) in [("adam_m", &moments.m), ("adam_v", &moments.v)] {
            for (name, t) in map {
                session
                    .set(&format!("{prefix}.{name}"), t, &origin)
                    .map_err(err)?;
            }
        }
        for (name, v) in &state.scalars {
            session.set_scalar(name, *v).map_err(err)?;
        }
        Ok(state)
    }
}

/// The trainer state of a checkpoint must be the one its name says and hold every state scalar
/// the phase reads, each in its range: a damaged state would resume at the wrong step or with a
/// nonsense loss scale.
fn check_restored_state(
    state: &TrainerState,
    found: &CheckpointPair,
    session: &Session,
) -> Result<(), String> {
    let what = found.state.display();
    if u128::from(state.global_step) != found.step() {
        return Err(format!(
            "{what}: records step {} but the checkpoint is step {}; the file is damaged",
            state.global_step,
            found.step()
        ));
    }
    for name in STATE_NAMES {
        if !session.plan().inputs.iter().any(|s| s.name == name) {
            continue;
        }
        let Some(&v) = state.scalars.get(name) else {
            return Err(format!("{what}: lacks the state scalar '{name}'"));
        };
        let ok = match name {
            "state.loss_scale" => v.is_finite() && v > 0.0 && v <= f32::MAX as f64,
            _ => v.is_finite() && v >= 0.0 && v.fract() == 0.0,
        };
        if !ok {
            return Err(format!(
                "{what}: state scalar '{name}' is {v}, which no run produces; the file is damaged"
            ));
        }
    }
    Ok(())
}
