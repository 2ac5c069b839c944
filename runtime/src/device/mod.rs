//! The device layer the training driver runs on (after IREE's HAL: device → executable →
//! submission): buffers allocated once at stable addresses, uploads and downloads, executables
//! loaded from plans, and submissions of a plan's steps over bound buffers. Training state stays
//! in device buffers between steps (the plan's donations are device copies); per step only the
//! batch goes in and the logged scalars come out.
//!
//! [`host::HostDevice`] is the host CPU, [`cuda::CudaDevice`] an NVIDIA GPU,
//! [`ascend::AscendDevice`] an Ascend NPU (or tbc's CPU emulation of one); the tests add a
//! recorder. Every one implements [`Device`] the same way.

pub mod ascend;
pub mod cuda;
pub mod host;

use plan::exec::ExecutablePlan;

/// A buffer on a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufferId(pub usize);

/// A plan loaded on a device (its kernels resolved, its arena allocated).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ExecutableId(pub usize);

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("{device}: buffer {buffer} holds {size} bytes, {what} {len}")]
    Size {
        device: String,
        buffer: usize,
        size: usize,
        what: &'static str,
        len: usize,
    },
    #[error("{device}: buffer {buffer} holds {size} bytes, cannot take {len} at byte {offset}")]
    Range {
        device: String,
        buffer: usize,
        size: usize,
        offset: usize,
        len: usize,
    },
    #[error("{device}: no buffer {buffer}")]
    NoBuffer { device: String, buffer: usize },
    #[error("{device}: plan \"{plan}\" binds {expected} {what}, got {got}")]
    Binding {
        device: String,
        plan: String,
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{device}: plan \"{plan}\" binds buffer {buffer} twice, or as an output and an input")]
    Aliased {
        device: String,
        plan: String,
        buffer: usize,
    },
    #[error(transparent)]
    Run(#[from] crate::exec::RuntimeError),
    /// A failure of a device's own API (the CUDA driver, cuBLASLt).
    #[error("{device}: {message}")]
    Backend { device: String, message: String },
}

/// `Ok` when buffer `buffer` of `device` holds `size` bytes and the caller needs `len`; else the
/// size error every device reports the same way.
pub(crate) fn check_size(
    device: String,
    buffer: BufferId,
    size: usize,
    what: &'static str,
    len: usize,
) -> Result<(), DeviceError> {
    if size == len {
        return Ok(());
    }
    Err(DeviceError::Size {
        device,
        buffer: buffer.0,
        size,
        what,
        len,
    })
}

/// `Ok` when `src` (of `len` bytes) can be copied into `dst` (of `dst_size` bytes) at byte
/// `offset`: the range fits and the buffers differ (the checks of [`Device::copy_into`]).
pub(crate) fn check_copy_into(
    device: String,
    src: BufferId,
    len: usize,
    dst: BufferId,
    dst_size: usize,
    offset: usize,
) -> Result<(), DeviceError> {
    if src == dst {
        return Err(DeviceError::Backend {
            device,
            message: format!("copy_into: buffer {} into itself", src.0),
        });
    }
    if offset.checked_add(len).is_some_and(|end| end <= dst_size) {
        return Ok(());
    }
    Err(DeviceError::Range {
        device,
        buffer: dst.0,
        size: dst_size,
        offset,
        len,
    })
}

/// `Ok` when `bindings` give `plan` one buffer per input and per output slot.
pub(crate) fn check_slots(
    device: String,
    plan: &ExecutablePlan,
    bindings: &Bindings,
) -> Result<(), DeviceError> {
    if bindings.inputs.len() == plan.inputs.len() && bindings.outputs.len() == plan.outputs.len() {
        return Ok(());
    }
    Err(DeviceError::Binding {
        device,
        plan: plan.name.clone(),
        what: "slots",
        expected: plan.inputs.len() + plan.outputs.len(),
        got: bindings.inputs.len() + bindings.outputs.len(),
    })
}

/// Which buffers a submission's plan inputs and outputs are (slot order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bindings {
    pub inputs: Vec<BufferId>,
    pub outputs: Vec<BufferId>,
}

/// Where a trainer's sessions run: the host CPU with the linked loop kernels, the GPU of a
/// trainer compiled with `--target gpu`, or the NPU of one compiled with `--target ascend`.
/// Every session gets a device of its own from it.
#[derive(Clone)]
pub enum Backend<'k> {
    Host(&'k dyn crate::exec::LoopKernels),
    Cuda(std::sync::Arc<cuda::CudaRuntime>),
    Ascend(std::sync::Arc<ascend::AscendRuntime>),
}

impl<'k> Backend<'k> {
    /// A new device on this backend.
    pub fn device(&self) -> Box<dyn Device + 'k> {
        match self {
            Backend::Host(k) => Box::new(host::HostDevice::new(*k)),
            Backend::Cuda(rt) => Box::new(cuda::CudaDevice::new(rt.clone())),
            Backend::Ascend(rt) => Box::new(ascend::AscendDevice::new(rt.clone())),
        }
    }
}

/// A device that runs executable plans.
pub trait Device {
    /// For messages: `host`, `cuda:0`, …
    fn name(&self) -> String;
    /// A zeroed buffer of `bytes` bytes, at an address that stays the same until the device is
    /// dropped.
    fn allocate(&mut self, bytes: usize) -> Result<BufferId, DeviceError>;
    /// Host → device: `bytes` become the whole buffer.
    fn upload(&mut self, dst: BufferId, bytes: &[u8]) -> Result<(), DeviceError>;
    /// Device → host: the whole buffer into `out`.
    fn download(&self, src: BufferId, out: &mut [u8]) -> Result<(), DeviceError>;
    /// Device → device, whole buffers of equal size.
    fn copy(&mut self, src: BufferId, dst: BufferId) -> Result<(), DeviceError>;
    /// Device → device: all of `src` into `dst` from byte `offset` on (`dst` holds at least
    /// `offset + len(src)` bytes). Keeps per-step scalars on the device until a sink loop ends.
    fn copy_into(&mut self, src: BufferId, dst: BufferId, offset: usize)
        -> Result<(), DeviceError>;
    /// Loads `plan` (resolves its kernels, allocates its arena).
    fn load(&mut self, plan: &ExecutablePlan) -> Result<ExecutableId, DeviceError>;
    /// Runs every step of the executable over `bindings`.
    fn submit(&mut self, exe: ExecutableId, bindings: &Bindings) -> Result<(), DeviceError>;
}
