//! One phase's compiled step, run again and again: the session owns every input of the plan,
//! refreshes the batch before each step and feeds the step's outputs (new parameters, Adam
//! moments, loss-scale state) back into its inputs afterwards, so training state is carried
//! across steps exactly as the graph computes it.

use super::records::{Records, Source};
use crate::device::host::HostDevice;
use crate::device::{Bindings, BufferId, Device, DeviceError, ExecutableId};
use crate::exec::LoopKernels;
use crate::tensor_io::RawTensor;
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
    #[error("{origin}: tensor '{name}' holds {value} at element {index} ({count} non-finite value(s) in all, after conversion to {elem}); refusing to compute with it")]
    NonFinite {
        origin: String,
        name: String,
        index: usize,
        value: f64,
        count: usize,
        elem: &'static str,
    },
    #[error("phase {phase}: {rows} steps ran since the step records were last read, room for {capacity}")]
    RecordsFull {
        phase: String,
        rows: usize,
        capacity: usize,
    },
    #[error(transparent)]
    Device(#[from] DeviceError),
}

/// A phase's plan with all of its inputs, on a device: every input and output has a device
/// buffer bound once; the plan's donations copy new state into the inputs on the device after
/// each step, so only what the caller sets goes in and only what it reads comes out.
pub struct Session<'k> {
    device: Box<dyn Device + 'k>,
    plan: ExecutablePlan,
    exe: ExecutableId,
    bindings: Bindings,
    /// Whether each input has been set.
    set: Vec<bool>,
    input_index: HashMap<String, usize>,
    /// Whether a step has run (outputs exist).
    ran: bool,
    /// Per-step scalars kept on the device, when the caller asked for them.
    records: Option<Records>,
}

impl<'k> Session<'k> {
    /// A session on the host CPU.
    pub fn new(plan: &ExecutablePlan, kernels: &'k dyn LoopKernels) -> Session<'k> {
        Session::on_device(plan, Box::new(HostDevice::new(kernels)))
            .expect("host allocations do not fail")
    }

    /// A session on `device`: loads the plan and allocates a buffer per input and output.
    pub fn on_device(
        plan: &ExecutablePlan,
        mut device: Box<dyn Device + 'k>,
    ) -> Result<Session<'k>, SessionError> {
        let input_index: HashMap<String, usize> = plan
            .inputs
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
            .collect();
        let exe = device.load(plan)?;
        let mut alloc = |slots: &[Slot]| -> Result<Vec<BufferId>, DeviceError> {
            slots.iter().map(|s| device.allocate(s.bytes())).collect()
        };
        let bindings = Bindings {
            inputs: alloc(&plan.inputs)?,
            outputs: alloc(&plan.outputs)?,
        };
        Ok(Session {
            device,
            plan: plan.clone(),
            exe,
            bindings,
            set: vec![false; plan.inputs.len()],
            input_index,
            ran: false,
            records: None,
        })
    }

    pub fn plan(&self) -> &ExecutablePlan {
        &self.plan
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
        let slot = &self.plan.inputs[i];
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
                found: t.elem.name(),
                expected: if slot.elem.is_float() {
                    "float"
                } else {
                    "integer"
                },
            });
        }
        let converted = t.convert(slot.elem);
        // NaN or infinity in weights, moments or float labels (or an f64 value past f32's
        // range) would make every step overflow; refuse it by name before the first step.
        if let Some((index, value, count)) = converted.non_finite() {
            return Err(SessionError::NonFinite {
                origin: origin.into(),
                name: name.into(),
                index,
                value,
                count,
                elem: slot.elem.name(),
            });
        }
        self.device
            .upload(self.bindings.inputs[i], &converted.bytes)?;
        self.set[i] = true;
        Ok(())
    }

    /// Sets a scalar input (no-op when the plan does not read it).
    pub fn set_scalar(&mut self, name: &str, v: f64) -> Result<(), SessionError> {
        if let Some(&i) = self.input_index.get(name) {
            let slot = &self.plan.inputs[i];
            let bytes = RawTensor::from_f64(slot.elem, slot.shape.clone(), &[v]).bytes;
            self.device.upload(self.bindings.inputs[i], &bytes)?;
            self.set[i] = true;
        }
        Ok(())
    }

    /// The current value of input `name` (read back from the device).
    pub fn input(&self, name: &str) -> Option<RawTensor> {
        let &i = self.input_index.get(name)?;
        if !self.set[i] {
            return None;
        }
        let slot = &self.plan.inputs[i];
        self.read(self.bindings.inputs[i], slot)
    }

    fn read(&self, buffer: BufferId, slot: &Slot) -> Option<RawTensor> {
        let mut bytes = vec![0u8; slot.bytes()];
        self.device.download(buffer, &mut bytes).ok()?;
        Some(RawTensor {
            elem: slot.elem,
            shape: slot.shape.clone(),
            bytes,
        })
    }

    /// Makes every set input whose name `skip` rejects equal to rank `root`'s (data
    /// parallelism: every replica starts from the same state; `skip` names what each rank sets
    /// itself, the batch).
    pub fn broadcast_inputs(
        &mut self,
        group: &dyn crate::dist::Group,
        root: usize,
        skip: &dyn Fn(&str) -> bool,
    ) -> Result<(), String> {
        for i in 0..self.plan.inputs.len() {
            let slot = &self.plan.inputs[i];
            if !self.set[i] || skip(&slot.name) {
                continue;
            }
            let name = slot.name.clone();
            let mut bytes = vec![0u8; slot.bytes()];
            let buffer = self.bindings.inputs[i];
            self.device
                .download(buffer, &mut bytes)
                .map_err(|e| e.to_string())?;
            group
                .broadcast(root, &mut bytes)
                .map_err(|e| format!("broadcast of {name}: {e}"))?;
            self.device
                .upload(buffer, &bytes)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
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
            .zip(&self.set)
            .filter(|(_, set)| !**set)
            .map(|(s, _)| s)
            .collect()
    }

    /// Runs one step on the current inputs and moves the new state into the inputs (the plan's
    /// donations), all on the device.
    pub fn step(&mut self) -> Result<(), SessionError> {
        if let Some(s) = self.unset().first() {
            return Err(SessionError::Missing {
                phase: self.plan().name.clone(),
                what: "input",
                name: s.name.clone(),
                expected: s.type_string(),
            });
        }
        self.record(|s| matches!(s, Source::Input(_)))?;
        self.device.submit(self.exe, &self.bindings)?;
        for d in &self.plan.donations {
            self.device.copy(
                self.bindings.outputs[d.output],
                self.bindings.inputs[d.input],
            )?;
        }
        self.ran = true;
        self.record(|s| matches!(s, Source::Output(_)))?;
        if let Some(r) = &mut self.records {
            r.rows += 1;
        }
        Ok(())
    }

    /// From now on every step keeps the scalar inputs (as the step read them) and outputs
    /// named in `names` on the device, room for `capacity` steps; [`Session::take_records`]
    /// reads them all at once.
    pub fn keep_records(&mut self, names: &[&str], capacity: usize) -> Result<(), SessionError> {
        self.records = Some(Records::new(
            &self.plan,
            names,
            capacity,
            self.device.as_mut(),
        )?);
        Ok(())
    }

    /// Copies this step's recorded fields of the kind `which` into the current row.
    fn record(&mut self, which: impl Fn(&Source) -> bool) -> Result<(), SessionError> {
        let Some(r) = &self.records else {
            return Ok(());
        };
        if r.rows == r.capacity {
            return Err(SessionError::RecordsFull {
                phase: self.plan.name.clone(),
                rows: r.rows + 1,
                capacity: r.capacity,
            });
        }
        for f in r.fields.iter().filter(|f| which(&f.source)) {
            let src = match f.source {
                Source::Input(i) => self.bindings.inputs[i],
                Source::Output(o) => self.bindings.outputs[o],
            };
            self.device.copy_into(src, r.buffer, r.at(f))?;
        }
        Ok(())
    }

    /// The recorded scalars of every step since the last call, oldest first (one download);
    /// empty without [`Session::keep_records`].
    pub fn take_records(&mut self) -> Result<Vec<BTreeMap<String, f64>>, SessionError> {
        let Some(r) = &mut self.records else {
            return Ok(Vec::new());
        };
        if r.rows == 0 {
            return Ok(Vec::new());
        }
        let mut bytes = vec![0u8; r.row_bytes * r.capacity];
        self.device.download(r.buffer, &mut bytes)?;
        let rows = r.decode(&bytes);
        r.rows = 0;
        Ok(rows)
    }

    /// Output `name` of the last step (read back from the device).
    pub fn output(&self, name: &str) -> Option<RawTensor> {
        let o = self.plan.outputs.iter().position(|s| s.name == name)?;
        if !self.ran {
            return None;
        }
        self.read(self.bindings.outputs[o], &self.plan.outputs[o])
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
