//! The host CPU as a [`Device`]: buffers are 64-byte aligned host allocations, an executable is
//! a plan with its arena, and a submission runs the plan's steps in place with
//! [`crate::exec::execute`] (loop kernels through the linked table, GEMMs through the `gemm`
//! crate).

use super::{Bindings, BufferId, Device, DeviceError, ExecutableId};
use crate::exec::{execute, AlignedBuf, Bound, LoopKernels};
use plan::exec::ExecutablePlan;
use std::collections::BTreeMap;

struct HostExecutable {
    plan: ExecutablePlan,
    arena: AlignedBuf,
    /// The bindings last checked for this plan, with their addresses: a session binds the same
    /// buffers every step, so they are checked once, not per step.
    bound: Option<(Bindings, Vec<*mut u8>, Vec<*mut u8>)>,
}

pub struct HostDevice<'k> {
    kernels: &'k dyn LoopKernels,
    buffers: Vec<AlignedBuf>,
    executables: Vec<HostExecutable>,
    /// Seconds and calls per step label, when profiling (`TBC_PROFILE`).
    pub profile: Option<BTreeMap<String, (u64, f64)>>,
}

impl<'k> HostDevice<'k> {
    pub fn new(kernels: &'k dyn LoopKernels) -> HostDevice<'k> {
        HostDevice {
            kernels,
            buffers: Vec::new(),
            executables: Vec::new(),
            profile: None,
        }
    }

    fn buffer(&self, b: BufferId) -> Result<&AlignedBuf, DeviceError> {
        self.buffers.get(b.0).ok_or(DeviceError::NoBuffer {
            device: self.name(),
            buffer: b.0,
        })
    }

    fn check_len(&self, b: BufferId, what: &'static str, len: usize) -> Result<(), DeviceError> {
        super::check_size(self.name(), b, self.buffer(b)?.len(), what, len)
    }
}

impl Device for HostDevice<'_> {
    fn name(&self) -> String {
        "host".into()
    }

    fn allocate(&mut self, bytes: usize) -> Result<BufferId, DeviceError> {
        self.buffers.push(AlignedBuf::zeroed(bytes));
        Ok(BufferId(self.buffers.len() - 1))
    }

    fn upload(&mut self, dst: BufferId, bytes: &[u8]) -> Result<(), DeviceError> {
        self.check_len(dst, "cannot take", bytes.len())?;
        let b = &mut self.buffers[dst.0];
        // SAFETY: the buffer holds exactly bytes.len() bytes.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), b.as_mut_ptr(), bytes.len()) };
        Ok(())
    }

    fn download(&self, src: BufferId, out: &mut [u8]) -> Result<(), DeviceError> {
        self.check_len(src, "cannot fill", out.len())?;
        out.copy_from_slice(self.buffers[src.0].as_slice());
        Ok(())
    }

    fn copy(&mut self, src: BufferId, dst: BufferId) -> Result<(), DeviceError> {
        let n = self.buffer(src)?.len();
        self.check_len(dst, "cannot take", n)?;
        if src != dst {
            let from = self.buffers[src.0].as_slice().as_ptr();
            // SAFETY: distinct allocations of n bytes each.
            unsafe { std::ptr::copy_nonoverlapping(from, self.buffers[dst.0].as_mut_ptr(), n) };
        }
        Ok(())
    }

    fn copy_into(
        &mut self,
        src: BufferId,
        dst: BufferId,
        offset: usize,
    ) -> Result<(), DeviceError> {
        let n = self.buffer(src)?.len();
        let size = self.buffer(dst)?.len();
        super::check_copy_into(self.name(), src, n, dst, size, offset)?;
        let from = self.buffers[src.0].as_slice().as_ptr();
        // SAFETY: distinct allocations; dst holds offset + n bytes (checked).
        unsafe {
            std::ptr::copy_nonoverlapping(from, self.buffers[dst.0].as_mut_ptr().add(offset), n)
        };
        Ok(())
    }

    fn load(&mut self, plan: &ExecutablePlan) -> Result<ExecutableId, DeviceError> {
        self.executables.push(HostExecutable {
            plan: plan.clone(),
            arena: AlignedBuf::zeroed(plan.arena_bytes),
            bound: None,
        });
        Ok(ExecutableId(self.executables.len() - 1))
    }

    fn submit(&mut self, exe: ExecutableId, bindings: &Bindings) -> Result<(), DeviceError> {
        let checked = matches!(&self.executables[exe.0].bound, Some((b, _, _)) if b == bindings);
        if !checked {
            self.check_bindings(exe, bindings)?;
            // Buffers never move (each is its own allocation), so the addresses stay valid.
            let ptr = |b: &BufferId| self.buffers[b.0].as_slice().as_ptr() as *mut u8;
            let inputs = bindings.inputs.iter().map(ptr).collect();
            let outputs = bindings.outputs.iter().map(ptr).collect();
            self.executables[exe.0].bound = Some((bindings.clone(), inputs, outputs));
        }
        let e = &mut self.executables[exe.0];
        let (_, inputs, outputs) = e.bound.as_ref().expect("bound above");
        let bound = Bound {
            inputs,
            outputs,
            arena: e.arena.as_mut_ptr(),
        };
        // SAFETY: every bound buffer was checked to hold its slot's bytes and outputs to be
        // distinct from each other and from the inputs; the arena was allocated for this plan.
        unsafe { execute(&e.plan, &bound, self.kernels, self.profile.as_mut())? };
        Ok(())
    }
}

impl HostDevice<'_> {
    /// Every slot bound to a buffer of its size, outputs distinct from each other and the inputs.
    fn check_bindings(&self, exe: ExecutableId, bindings: &Bindings) -> Result<(), DeviceError> {
        let device = self.name();
        let plan = &self.executables[exe.0].plan;
        for (what, slots, bound) in [
            ("inputs", &plan.inputs, &bindings.inputs),
            ("outputs", &plan.outputs, &bindings.outputs),
        ] {
            if slots.len() != bound.len() {
                return Err(DeviceError::Binding {
                    device: device.clone(),
                    plan: plan.name.clone(),
                    what,
                    expected: slots.len(),
                    got: bound.len(),
                });
            }
            for (s, &b) in slots.iter().zip(bound.iter()) {
                self.check_len(b, "but the slot needs", s.bytes())?;
            }
        }
        let mut seen = std::collections::HashSet::new();
        for &b in &bindings.outputs {
            if !seen.insert(b) || bindings.inputs.contains(&b) {
                return Err(DeviceError::Aliased {
                    device,
                    plan: plan.name.clone(),
                    buffer: b.0,
                });
            }
        }
        Ok(())
    }
}
