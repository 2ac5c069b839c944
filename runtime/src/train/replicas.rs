//! The replicas of a data-parallel job (TINYBERT_SPEC §8, DISTRIBUTED_NOTES §6): before the
//! first step every rank checks that it runs the same configuration as the others, then takes
//! rank 0's trainer state and model (the teacher, the trained parameters, Adam moments and the
//! state scalars, so a resume needs the checkpoint only where rank 0 runs); at every checkpoint
//! the ranks compare a fingerprint of the trained parameters, so replicas that drifted apart
//! stop the job.

use super::session::Session;
use super::state::TrainerState;
use crate::dist::{self, Group};

/// Graph inputs each rank sets from its own shard of the data.
const PER_RANK: [&str; 4] = ["input_ids", "input_mask", "segment_ids", "label_ids"];

/// Makes every rank start from rank 0's `state` and session inputs, after checking that every
/// rank describes its run with the same `config` (the plan, the flags, the data layout).
pub fn start_together(
    session: &mut Session,
    state: TrainerState,
    config: &str,
) -> Result<TrainerState, String> {
    let w = dist::world();
    if w.size() == 1 {
        return Ok(state);
    }
    // Before anything of a size the ranks could disagree on is exchanged.
    dist::check_same(
        dist::fingerprint(config.as_bytes()),
        "their configuration (trainer, flags or data): every rank must run the same trainer with the same flags on the same data",
    )?;
    let mut json = serde_json::to_vec(&state).expect("trainer state serializes");
    let mut len = (json.len() as u64).to_le_bytes();
    w.broadcast(0, &mut len)?;
    json.resize(u64::from_le_bytes(len) as usize, 0);
    w.broadcast(0, &mut json)?;
    let state: TrainerState = serde_json::from_slice(&json)
        .map_err(|e| format!("rank 0's trainer state did not arrive intact: {e}"))?;
    session.broadcast_inputs(w, 0, &|name| PER_RANK.contains(&name))?;
    Ok(state)
}

/// Stops the job when the ranks' trained parameters (`prefix.*`) are not bit-identical.
pub fn check_in_step(session: &Session, prefix: &str, step: u64) -> Result<(), String> {
    let w: &dyn Group = dist::world();
    if w.size() == 1 {
        return Ok(());
    }
    let mut bytes = Vec::new();
    for (name, t) in session.inputs_with_prefix(prefix) {
        bytes.extend(name.as_bytes());
        bytes.extend(&t.bytes);
    }
    dist::check_same(
        dist::fingerprint(&bytes),
        &format!("their trained parameters after step {step}: the replicas drifted apart (a rank computed differently); the checkpoints written so far are kept"),
    )
}
