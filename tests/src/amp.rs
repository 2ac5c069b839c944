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
