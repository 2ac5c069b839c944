//! The names of a phase graph's inputs and outputs that carry training state, shared by the
//! compiler's frontend (which creates them) and the runtime (which loads, saves and feeds them).

/// Graph inputs of the loss-scale and dropout state.
pub const STATE_NAMES: [&str; 5] = [
    "state.step",
    "state.cur_iter",
    "state.last_overflow_iter",
    "state.loss_scale",
    "state.seed",
];

/// Prefix of the student's and the teacher's parameter inputs (`student.<HF name>`).
pub const MODEL_PREFIXES: [&str; 2] = ["student", "teacher"];

/// Prefix of the updated parameters a training graph outputs (`param.<HF name>`).
pub const PARAM_OUTPUT_PREFIX: &str = "param.";

/// Prefixes of the Adam moments (inputs and outputs under the same name).
pub const ADAM_PREFIXES: [&str; 2] = ["adam_m.", "adam_v."];

/// Prefix of the loss-scale and dropout state (inputs and outputs under the same name).
pub const STATE_PREFIX: &str = "state.";

/// Whether output `name` is state that is an input of the same name next step.
pub fn is_carried_state(name: &str) -> bool {
    ADAM_PREFIXES.iter().any(|p| name.starts_with(p)) || name.starts_with(STATE_PREFIX)
}
