//! One phase's compiled step, run again and again: the session owns every input of the plan,
//! refreshes the batch before each step and feeds the step's outputs (new parameters, Adam
//! moments, loss-scale state) back into its inputs afterwards, so training state is carried
//! across steps exactly as the graph computes it.

use crate::exec::{LoopKernels, Runner};
use crate::tensor_io::{elem_name, RawTensor};
use plan::exec::{ExecutablePlan, Slot};
use std::collections::{BTreeMap, HashMap};

/// The graph input names of the loss-scale and dropout state.
pub use plan::names::STATE_NAMES;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("phase {phase}: missing {what} '{name}' (expected {expected})")]
    Missing {
        phase: String,
        what: &'static str,
        name: String,
        expected: String,
    },
    #[error("{origin}: tensor '{name}' has shape {found:?}, expected {expected:?}")]
    Shape {
        origin: String,
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("{origin}: tensor '{name}' has dtype {found}, expected a {expected} type")]
    Dtype {
        origin: String,
        name: String,
        found: &'static str,
        expected: &'static str,
    },
    #[error(transparent)]
    Run(#[from] crate::exec::RuntimeError),
}

fn describe(s: &Slot) -> String {
    let dims: Vec<String> = s.shape.iter().map(|d| d.to_string()).collect();
    format!("{}[{}]", elem_name(s.elem), dims.join(","))
}

/// A phase's plan with all of its inputs.
pub struct Session<'k> {
    runner: Runner<'k>,
    inputs: Vec<Option<Vec<u8>>>,
    input_index: HashMap<String, usize>,
    /// `(output, input)` pairs copied after every step: the plan's donations.
    feedback: Vec<(usize, usize)>,
    /// Whether a step has run (outputs exist).
    ran: bool,
}

impl<'k> Session<'k> {
    pub fn new(plan: &ExecutablePlan, kernels: &'k dyn LoopKernels) -> Session<'k> {
        let input_index: HashMap<String, usize> = plan
            .inputs
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
            .collect();
        let feedback = plan.donations.iter().map(|d| (d.output, d.input)).collect();
        Session {
            runner: Runner::new(plan.clone(), kernels),
            inputs: vec![None; plan.inputs.len()],
            input_index,
            feedback,
            ran: false,
        }
    }

    pub fn plan(&self) -> &ExecutablePlan {
        &self.runner.plan
    }

    pub fn has_input(&self, name: &str) -> bool {
        self.input_index.contains_key(name)
    }

    /// The input slot `name`, if the plan has it.
    pub fn slot(&self, name: &str) -> Option<&Slot> {
        self.input_index.get(name).map(|&i| &self.plan().inputs[i])
    }

    /// Sets input `name` from a tensor of the same shape and a compatible type (converted).
    /// `origin` names where the tensor came from, for errors.
    pub fn set(&mut self, name: &str, t: &RawTensor, origin: &str) -> Result<(), SessionError> {
        let Some(&i) = self.input_index.get(name) else {
            return Ok(());
        };
        let slot = &self.runner.plan.inputs[i];
        if t.shape != slot.shape && !(t.numel() == 1 && slot.shape.iter().product::<usize>() == 1) {
            return Err(SessionError::Shape {
                origin: origin.into(),
                name: name.into(),
                found: t.shape.clone(),
                expected: slot.shape.clone(),
            });
        }
        if t.elem.is_float() != slot.elem.is_float() {
            return Err(SessionError::Dtype {
                origin: origin.into(),
                name: name.into(),
                found: elem_name(t.elem),
                expected: if slot.elem.is_float() {
                    "float"
                } else {
                    "integer"
                },
            });
        }
        self.inputs[i] = Some(t.convert(slot.elem).bytes);
        Ok(())
    }

    /// Sets a scalar input (no-op when the plan does not read it).
    pub fn set_scalar(&mut self, name: &str, v: f64) {
        if let Some(&i) = self.input_index.get(name) {
            let slot = &self.runner.plan.inputs[i];
            self.inputs[i] = Some(RawTensor::from_f64(slot.elem, slot.shape.clone(), &[v]).bytes);
        }
    }

    /// The current value of input `name`.
    pub fn input(&self, name: &str) -> Option<RawTensor> {
        let &i = self.input_index.get(name)?;
        let slot = &self.runner.plan.inputs[i];
        self.inputs[i].as_ref().map(|b| RawTensor {
            elem: slot.elem,
            shape: slot.shape.clone(),
            bytes: b.clone(),
        })
    }

    /// The current value of a scalar input as f64.
    pub fn scalar(&self, name: &str) -> Option<f64> {
        self.input(name).map(|t| t.to_f64()[0])
    }

    /// Every current input whose name starts with `prefix.`, keyed by the rest of the name.
    pub fn inputs_with_prefix(&self, prefix: &str) -> BTreeMap<String, RawTensor> {
        let p = format!("{prefix}.");
        self.plan()
            .inputs
            .iter()
            .filter_map(|s| {
                let rest = s.name.strip_prefix(&p)?;
                Some((rest.to_string(), self.input(&s.name)?))
            })
            .collect()
    }

    /// Input slots that are still unset.
    pub fn unset(&self) -> Vec<&Slot> {
        self.plan()
            .inputs
            .iter()
            .zip(&self.inputs)
            .filter(|(_, b)| b.is_none())
            .map(|(s, _)| s)
            .collect()
    }

    /// Runs one step on the current inputs and feeds the new state back.
    pub fn step(&mut self) -> Result<(), SessionError> {
        if let Some(s) = self.unset().first() {
            return Err(SessionError::Missing {
                phase: self.plan().name.clone(),
                what: "input",
                name: s.name.clone(),
                expected: describe(s),
            });
        }
        let refs: Vec<&[u8]> = self
            .inputs
            .iter()
            .map(|b| b.as_deref().expect("checked above"))
            .collect();
        let outs = self.runner.run(&refs)?;
        for &(o, i) in &self.feedback {
            let dst = self.inputs[i].as_mut().expect("set");
            dst.copy_from_slice(outs[o].as_slice());
        }
        self.ran = true;
        Ok(())
    }

    /// Output `name` of the last step.
    pub fn output(&self, name: &str) -> Option<RawTensor> {
        let plan = self.plan();
        let o = plan.outputs.iter().position(|s| s.name == name)?;
        let buf = self.ran.then(|| &self.runner.outputs()[o])?;
        let s = &plan.outputs[o];
        Some(RawTensor {
            elem: s.elem,
            shape: s.shape.clone(),
            bytes: buf.as_slice().to_vec(),
        })
    }

    /// Scalar output `name` of the last step as f64.
    pub fn output_scalar(&self, name: &str) -> Option<f64> {
        self.output(name).map(|t| t.to_f64()[0])
    }
}

/// The input prefix of the parameters a training plan updates (`student` or `teacher`): where
/// its `param.<name>` outputs are donated.
pub fn trained_prefix(plan: &ExecutablePlan) -> Option<&'static str> {
    let d = plan.donations.iter().find(|d| {
        plan.outputs[d.output]
            .name
            .starts_with(plan::names::PARAM_OUTPUT_PREFIX)
    })?;
    let input = &plan.inputs[d.input].name;
    plan::names::MODEL_PREFIXES
        .into_iter()
        .find(|p| input.strip_prefix(p).is_some_and(|r| r.starts_with('.')))
}
