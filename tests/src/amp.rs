//! The mixed-precision accuracy rule (`--precision fp16|bf16`), shared by the interpreter's test
//! (`mixed_precision.rs`) and the CPU bf16 trainer's (`cpu_bf16.rs`): every tensor of a step
//! within twice PyTorch autocast's own error against the float64 fixtures
//! (`tests/fixtures/tiny/amp_errors.safetensors`, measured by the same [`OutputComparer`] rule),
//! or within the 16-bit type's unit roundoff where both are below what the format resolves.
//! Parameters after the update may exceed that by what their gradient's error explains through
//! Adam's first step (sensitivity 0.1·lr/eps = 100); a parameter whose reference gradient is
//! round-off of an exact zero is held to within one Adam step.

use crate::{diff_norm, l2, OutputComparer};
use compiler::frontend::preset::Phase;
use compiler::passes::mixed_precision::Precision;
use ir::Tensor;
use std::collections::BTreeMap;

/// Adam's first step from zero moments: its sensitivity to the gradient (0.1·lr/eps) and its
/// largest size (lr·0.1/√0.001), at the fixtures' lr 1e-3.
const ADAM_SENSITIVITY: f64 = 1e-3 * 0.1 / 1e-6;
const ADAM_STEP: f64 = 1e-3 * 0.1 / 0.031_622_776_601_683_79;

/// The unit roundoff of the 16-bit type (half an ulp of 1).
pub fn unit_roundoff(p: Precision) -> f64 {
    match p {
        Precision::Fp16 => 2f64.powi(-11),
        Precision::Bf16 => 2f64.powi(-8),
        Precision::Fp32 => 2f64.powi(-24),
    }
}

/// What the reference step was computed in.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Reference {
    /// The PyTorch float64 fixtures.
    Float64,
    /// A step with the same 16-bit GEMMs (the interpreter's): its round-off of an exact zero is at
    /// the 16-bit level, and a parameter driven by such a gradient moved up to one Adam step too.
    SixteenBit,
}

/// Checks `ours` (one step of `phase` with `preset`) against `expected`, computed as `reference`
/// says, under the rule; returns a summary line, or the first tensor that breaks it.
pub fn within_twice_autocast(
    reference: Reference,
    amp: &BTreeMap<String, Tensor>,
    expected: &BTreeMap<String, Tensor>,
    ours: &BTreeMap<String, Tensor>,
    precision: Precision,
    preset: &str,
    phase: Phase,
) -> Result<String, String> {
    let (cmp, adam_steps) = match reference {
        Reference::Float64 => (OutputComparer::new(expected.iter()), 1.0),
        Reference::SixteenBit => (
            OutputComparer::for_16_bit_reference(expected.iter(), unit_roundoff(precision)),
            2.0,
        ),
    };
    let (mut compared, mut worst_ratio, mut worst) = (0, 0.0f64, String::new());
    for (name, e) in expected {
        if !e.dtype().is_float() || name == "lr" {
            continue;
        }
        let key = format!("{precision}/{preset}/{}/{name}", phase.name());
        let amp_err = amp
            .get(&key)
            .ok_or_else(|| format!("amp_errors has no {key}"))?
            .to_f64()[0];
        let a = ours
            .get(name)
            .ok_or_else(|| format!("{key}: missing from our step"))?;
        let err = cmp.error(name, a, e);
        let mut bound = (2.0 * amp_err).max(unit_roundoff(precision));
        if let Some(p) = name.strip_prefix("param.") {
            let g = format!("grad.{p}");
            if cmp.is_roundoff(&g, &expected[&g]) {
                let moved = a
                    .to_f64()
                    .iter()
                    .zip(e.to_f64())
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0, f64::max);
                if moved > adam_steps * ADAM_STEP * 1.01 {
                    return Err(format!(
                        "{key}: moved {moved:.3e}, more than {adam_steps} Adam step(s)"
                    ));
                }
                compared += 1;
                continue;
            }
            bound += ADAM_SENSITIVITY * diff_norm(&ours[&g], &expected[&g]) / l2(e);
        }
        if err > bound {
            return Err(format!(
                "{key}: error {err:.3e} > bound {bound:.3e} (autocast {amp_err:.3e})"
            ));
        }
        compared += 1;
        if err / bound > worst_ratio {
            worst_ratio = err / bound;
            worst = format!("{name}: {err:.2e}, autocast {amp_err:.2e}");
        }
    }
    Ok(format!(
        "{precision} {preset:9} {:12}: {compared} tensors within bound; closest {worst_ratio:.2} of it ({worst})",
        phase.name()
    ))
}

/// A trainer's step `got` against the interpreter's step `want` of the same mixed-precision
/// graph: the training state the fixtures lack (loss scale, step counters, dropout state) is
/// not computed in 16 bits and must equal to f32 precision (1e-6); every other tensor is held
/// to [`within_twice_autocast`] with the interpreter's step as a 16-bit reference (its
/// round-off of an exact zero, as for the attention key biases' gradients, is at the 16-bit
/// level and moves those parameters too). Ok: the summary line.
pub fn against_interpreter(
    amp: &BTreeMap<String, Tensor>,
    got: &BTreeMap<String, Tensor>,
    want: &BTreeMap<String, Tensor>,
    precision: Precision,
    preset: &str,
    phase: Phase,
) -> Result<String, String> {
    if want.keys().ne(got.keys()) {
        return Err(format!(
            "outputs differ: {:?} vs {:?}",
            want.keys().collect::<Vec<_>>(),
            got.keys().collect::<Vec<_>>()
        ));
    }
    let prefix = format!("{precision}/{preset}/{}/", phase.name());
    let (graded, state): (BTreeMap<_, _>, BTreeMap<_, _>) = want
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .partition(|(k, _)| amp.contains_key(&format!("{prefix}{k}")));
    let cmp = OutputComparer::new(state.iter());
    for (name, w) in &state {
        let err = cmp.error(name, &got[name], w);
        if err > 1e-6 {
            return Err(format!(
                "{prefix}{name}: {err:.2e} from the interpreter (> 1e-6)"
            ));
        }
    }
    within_twice_autocast(
        Reference::SixteenBit,
        amp,
        &graded,
        got,
        precision,
        preset,
        phase,
    )
}

/// The interpreter's step of `phase` in `precision` on the tiny fixture weights and batch (lr
/// 1e-3; loss scale 256 for a MindSpore training phase, else 1), as `tiny_trainer_step` runs it.
pub fn interpreter_step(
    preset: &compiler::frontend::preset::Preset,
    phase: Phase,
    precision: Precision,
) -> BTreeMap<String, Tensor> {
    let g = crate::tiny_graph_precision(preset, phase, precision);
    let si = crate::StepInputs {
        lr: if phase.is_training() { 1e-3 } else { 0.0 },
        step: 0,
        loss_scale: if preset.name == "mindspore" && phase.is_training() {
            256.0
        } else {
            1.0
        },
    };
    crate::run_with_fixture_inputs(&g, &si)
        .into_iter()
        .collect()
}
