//! The Ascend device of trainers compiled with `--target ascend`: ACL loaded at run time
//! (`acl.rs`), buffers in device memory, the trainer's kernel library (`libtbc_ascend_kernels.so`,
//! built from the project `tbc compile` writes beside the trainer) loaded once, and each plan's
//! steps run in order on one stream: loop kernels through their launchers, GEMMs, gathers and
//! scatter-adds through aclnn (`ops.rs`), copies as device copies.
//!
//! The same code runs on an NPU with CANN and on tbc's CPU emulation, where the ACL stand-in
//! (`targets/ascend_emu/acl/`) keeps "device" memory on the host and the kernels are built
//! against the emulation of `kernel_operator.h`. A submission ends with a stream
//! synchronization (the aclnn descriptors of its steps are freed then).

pub mod acl;
mod ops;

use super::{Bindings, BufferId, Device, DeviceError, ExecutableId};
use acl::{Acl, Stream};
use libloading::os::unix::{Library, RTLD_NOW};
use plan::ascend::AscendKernelLibrary;
use plan::exec::{BufferRef, ExecutablePlan, Place, Step};
use std::ffi::{c_void, CStr};
use std::path::PathBuf;
use std::sync::Arc;

/// A kernel library launcher: `int tbc_ascend_<kernel>(void* stream, uint8_t** args)`.
type Launcher = unsafe extern "C" fn(Stream, *mut *mut u8) -> i32;

fn err(device: &str, message: impl std::fmt::Display) -> DeviceError {
    DeviceError::Backend {
        device: device.to_string(),
        message: message.to_string(),
    }
}

/// The NPU, its stream, ACL and the trainer's kernel library: shared by every session.
pub struct AscendRuntime {
    acl: Acl,
    stream: Stream,
    ordinal: i32,
    library: AscendKernelLibrary,
    launchers: std::collections::HashMap<String, Launcher>,
    _kernels: Library,
    name: String,
}

// SAFETY: the stream and the launchers are used only through `&AscendRuntime` from the thread
// that drives the trainer (sessions are not shared across threads).
unsafe impl Send for AscendRuntime {}
unsafe impl Sync for AscendRuntime {}

/// Where the kernel library is: `TBC_ASCEND_KERNELS`, else `build/` beside the trainer.
fn kernel_library_path() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("TBC_ASCEND_KERNELS") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot locate the trainer: {e}"))?;
    let dir = exe.parent().unwrap_or(std::path::Path::new("."));
    Ok(dir.join("build").join(plan::ascend::KERNEL_LIBRARY_FILE))
}

/// The `--ascend-soc` of an SoC as ACL names it (`Ascend910B1` → `ascend910b`, `Ascend910A` →
/// `ascend910`), if tbc plans for it.
fn soc_family(soc: &str) -> Option<&'static str> {
    let s = soc.to_ascii_lowercase();
    if s.starts_with("ascend910b") || s.starts_with("ascend910_93") {
        Some("ascend910b")
    } else if s.starts_with("ascend910") {
        Some("ascend910")
    } else {
        None
    }
}

impl AscendRuntime {
    /// Opens NPU `ordinal` with the kernel library of `library`.
    pub fn open(
        library: &AscendKernelLibrary,
        ordinal: usize,
    ) -> Result<Arc<AscendRuntime>, String> {
        let acl = Acl::load()?;
        let path = kernel_library_path()?;
        if !path.is_file() {
            let project = path.parent().and_then(|b| b.parent()).unwrap_or(&path);
            return Err(format!(
                "the Ascend kernel library {} is missing: build the kernel project written beside the trainer (cmake -S {p} -B {p}/build && cmake --build {p}/build -j; add -DTBC_ASCEND_EMULATION=ON for the CPU emulation; see {p}/README.md), or set TBC_ASCEND_KERNELS to the library",
                path.display(),
                p = project.display()
            ));
        }
        // SAFETY: the kernel library's initializers only register its kernels.
        let kernels = unsafe { Library::open(Some(path.as_os_str()), RTLD_NOW) }.map_err(|e| {
            format!(
                "cannot load the Ascend kernel library {}: {e}",
                path.display()
            )
        })?;
        let mut launchers = std::collections::HashMap::new();
        for (kernel, spec) in &library.kernels {
            // SAFETY: every launcher has the `Launcher` signature (project.rs writes them).
            let f: Result<libloading::os::unix::Symbol<Launcher>, _> =
                unsafe { kernels.get(spec.launcher.as_bytes()) };
            let f = f.map_err(|_| {
                format!(
                    "the Ascend kernel library {} has no {} (kernel {kernel}): it was built for another trainer; rebuild the project written beside this one",
                    path.display(),
                    spec.launcher
                )
            })?;
            launchers.insert(kernel.clone(), *f);
        }
        let api = &acl.api;
        // SAFETY: plain ACL calls with valid out-pointers.
        unsafe {
            acl.check((api.init)(std::ptr::null()), "aclInit")?;
            let mut count = 0u32;
            acl.check((api.device_count)(&mut count), "aclrtGetDeviceCount")?;
            if count == 0 {
                return Err(
                    "ACL reports no Ascend NPU on this machine (npu-smi info lists them)".into(),
                );
            }
            if ordinal >= count as usize {
                return Err(format!(
                    "NPU {ordinal} (ASCEND_DEVICE_ID) does not exist: ACL reports {count} on this machine"
                ));
            }
            let ordinal = ordinal as i32;
            acl.check((api.set_device)(ordinal), "aclrtSetDevice")?;
            let soc = {
                let p = (api.soc_name)();
                if p.is_null() {
                    "unknown SoC".to_string()
                } else {
                    CStr::from_ptr(p).to_string_lossy().into_owned()
                }
            };
            // Kernels planned for another SoC's Unified Buffer would overflow this one's.
            match soc_family(&soc) {
                Some(f) if f == library.soc => {}
                found => {
                    let _ = (api.reset_device)(ordinal);
                    return Err(format!(
                        "this trainer's kernels were planned for --ascend-soc {}, but NPU {ordinal} is {soc}{}",
                        library.soc,
                        match found {
                            Some(f) => format!(": recompile with --ascend-soc {f}"),
                            None => " (tbc plans for ascend910b and ascend910)".into(),
                        }
                    ));
                }
            }
            let mut stream: Stream = std::ptr::null_mut();
            acl.check((api.create_stream)(&mut stream), "aclrtCreateStream")?;
            Ok(Arc::new(AscendRuntime {
                name: format!("ascend:{ordinal} ({soc})"),
                acl,
                stream,
                ordinal,
                library: library.clone(),
                launchers,
                _kernels: kernels,
            }))
        }
    }

    fn check(&self, status: i32, what: &str) -> Result<(), DeviceError> {
        self.acl.check(status, what).map_err(|m| err(&self.name, m))
    }

    /// Waits for every step enqueued on the stream.
    fn synchronize(&self, what: &str) -> Result<(), DeviceError> {
        // SAFETY: the runtime's live stream.
        let status = unsafe { (self.acl.api.synchronize_stream)(self.stream) };
        self.check(status, what)
    }

    /// A zeroed device allocation of `bytes` (at least 32: ACL has no empty allocations).
    fn alloc(&self, bytes: usize, what: &str) -> Result<DeviceMemory, DeviceError> {
        let len = bytes.max(32);
        let mut ptr: *mut c_void = std::ptr::null_mut();
        // SAFETY: a fresh allocation, zeroed on the stream and waited for.
        unsafe {
            let status = (self.acl.api.malloc)(&mut ptr, len, acl::MALLOC_HUGE_FIRST);
            if status != 0 {
                let mut free = 0usize;
                let mut total = 0usize;
                let known = (self.acl.api.mem_info)(acl::HBM_MEM, &mut free, &mut total) == 0;
                let free = if known {
                    format!("{:.1} MiB free", free as f64 / 1048576.0)
                } else {
                    "free memory unknown".into()
                };
                self.check(
                    status,
                    &format!(
                        "aclrtMalloc of {:.1} MiB for {what} ({free})",
                        len as f64 / 1048576.0
                    ),
                )?;
            }
            let memory = DeviceMemory {
                rt: self as *const AscendRuntime,
                ptr,
                len,
            };
            self.check(
                (self.acl.api.memset_async)(ptr, len, 0, len, self.stream),
                "aclrtMemsetAsync",
            )?;
            self.synchronize("zeroing a new buffer")?;
            Ok(memory)
        }
    }
}

impl Drop for AscendRuntime {
    fn drop(&mut self) {
        // SAFETY: created in `open`, destroyed once, after every device of it (they hold an Arc).
        unsafe {
            (self.acl.api.synchronize_stream)(self.stream);
            (self.acl.api.destroy_stream)(self.stream);
            (self.acl.api.reset_device)(self.ordinal);
            (self.acl.api.finalize)();
        }
    }
}

/// One device allocation, freed when dropped (before its runtime, which every owner outlives
/// through an `Arc`).
struct DeviceMemory {
    rt: *const AscendRuntime,
    ptr: *mut c_void,
    len: usize,
}

impl Drop for DeviceMemory {
    fn drop(&mut self) {
        // SAFETY: allocated by aclrtMalloc in `alloc`, freed once; the runtime is alive (the
        // device holding this memory holds an Arc of it).
        unsafe { ((*self.rt).acl.api.free)(self.ptr) };
    }
}

struct AscendExecutable {
    /// Shared with each submission, which runs the steps while it borrows the device.
    plan: Arc<ExecutablePlan>,
    arena: DeviceMemory,
    /// The launcher of each loop step (None for the other steps), in step order.
    launchers: Arc<[Option<Launcher>]>,
}

/// A device on an [`AscendRuntime`]: buffers and loaded plans of one session.
pub struct AscendDevice {
    // Field order is drop order: memory goes before the runtime.
    executables: Vec<AscendExecutable>,
    buffers: Vec<DeviceMemory>,
    /// aclnn's workspace, grown to the largest an operator asked for.
    workspace: Option<DeviceMemory>,
    rt: Arc<AscendRuntime>,
}

impl AscendDevice {
    pub fn new(rt: Arc<AscendRuntime>) -> AscendDevice {
        AscendDevice {
            executables: Vec::new(),
            buffers: Vec::new(),
            workspace: None,
            rt,
        }
    }

    fn buffer(&self, b: BufferId) -> Result<&DeviceMemory, DeviceError> {
        self.buffers.get(b.0).ok_or(DeviceError::NoBuffer {
            device: self.name(),
            buffer: b.0,
        })
    }

    fn check_len(&self, b: BufferId, what: &'static str, len: usize) -> Result<(), DeviceError> {
        super::check_size(self.name(), b, self.buffer(b)?.len, what, len)
    }

    /// A device copy of `n` bytes, enqueued on the stream.
    fn copy_bytes(
        &self,
        dst: *mut c_void,
        src: *const c_void,
        n: usize,
    ) -> Result<(), DeviceError> {
        // SAFETY: both ranges lie in live device buffers (checked by the callers).
        let status = unsafe {
            (self.rt.acl.api.memcpy_async)(dst, n, src, n, acl::DEVICE_TO_DEVICE, self.rt.stream)
        };
        self.rt.check(status, "aclrtMemcpyAsync (device to device)")
    }

    /// The workspace pointer for an operator that needs `bytes`.
    fn workspace(&mut self, bytes: u64) -> Result<*mut c_void, DeviceError> {
        if bytes == 0 {
            return Ok(std::ptr::null_mut());
        }
        if self
            .workspace
            .as_ref()
            .is_none_or(|w| (w.len as u64) < bytes)
        {
            // The old workspace may still be in use by an enqueued operator.
            self.rt.synchronize("growing the aclnn workspace")?;
            self.workspace = None;
            self.workspace = Some(self.rt.alloc(bytes as usize, "the aclnn workspace")?);
        }
        Ok(self.workspace.as_ref().expect("set above").ptr)
    }
}

impl Device for AscendDevice {
    fn name(&self) -> String {
        self.rt.name.clone()
    }

    fn allocate(&mut self, bytes: usize) -> Result<BufferId, DeviceError> {
        let mut m = self.rt.alloc(bytes, "a buffer")?;
        // A buffer's users see `bytes`; the allocation may be larger (never smaller).
        m.len = bytes;
        self.buffers.push(m);
        Ok(BufferId(self.buffers.len() - 1))
    }

    fn upload(&mut self, dst: BufferId, bytes: &[u8]) -> Result<(), DeviceError> {
        self.check_len(dst, "cannot take", bytes.len())?;
        // The buffer may still be read by an enqueued step.
        self.rt.synchronize("upload (or an earlier step)")?;
        let p = self.buffer(dst)?.ptr;
        // SAFETY: the buffer holds bytes.len() bytes; the copy is synchronous.
        let status = unsafe {
            (self.rt.acl.api.memcpy)(
                p,
                bytes.len(),
                bytes.as_ptr() as *const c_void,
                bytes.len(),
                acl::HOST_TO_DEVICE,
            )
        };
        self.rt.check(status, "aclrtMemcpy (upload)")
    }

    fn download(&self, src: BufferId, out: &mut [u8]) -> Result<(), DeviceError> {
        self.check_len(src, "cannot fill", out.len())?;
        self.rt.synchronize("download (or an earlier step)")?;
        let p = self.buffer(src)?.ptr;
        // SAFETY: the buffer holds out.len() bytes; the copy is synchronous.
        let status = unsafe {
            (self.rt.acl.api.memcpy)(
                out.as_mut_ptr() as *mut c_void,
                out.len(),
                p,
                out.len(),
                acl::DEVICE_TO_HOST,
            )
        };
        self.rt.check(status, "aclrtMemcpy (download)")
    }

    fn copy(&mut self, src: BufferId, dst: BufferId) -> Result<(), DeviceError> {
        let n = self.buffer(src)?.len;
        self.check_len(dst, "cannot take", n)?;
        if src == dst || n == 0 {
            return Ok(());
        }
        self.copy_bytes(self.buffer(dst)?.ptr, self.buffer(src)?.ptr, n)
    }

    fn copy_into(
        &mut self,
        src: BufferId,
        dst: BufferId,
        offset: usize,
    ) -> Result<(), DeviceError> {
        let n = self.buffer(src)?.len;
        let size = self.buffer(dst)?.len;
        super::check_copy_into(self.name(), src, n, dst, size, offset)?;
        // SAFETY: offset + n <= size (checked).
        let d = unsafe { (self.buffer(dst)?.ptr as *mut u8).add(offset) };
        self.copy_bytes(d as *mut c_void, self.buffer(src)?.ptr, n)
    }

    fn load(&mut self, plan: &ExecutablePlan) -> Result<ExecutableId, DeviceError> {
        let name = self.name();
        let mut launchers = Vec::new();
        for step in &plan.steps {
            launchers.push(match step {
                Step::Loop { symbol, inputs, outputs } => {
                    let spec = self.rt.library.kernels.get(symbol).ok_or_else(|| {
                        err(&name, format!("plan \"{}\": kernel {symbol} is not in the trainer's Ascend kernel table", plan.name))
                    })?;
                    if spec.buffers != inputs.len() + outputs.len() {
                        return Err(err(&name, format!("kernel {symbol} takes {} buffers, plan \"{}\" gives {}", spec.buffers, plan.name, inputs.len() + outputs.len())));
                    }
                    Some(self.rt.launchers[symbol])
                }
                Step::Gemm { epilogue: Some(_), .. } => {
                    return Err(err(&name, format!("plan \"{}\": GEMM epilogues are not built for Ascend (the compiler does not make them)", plan.name)));
                }
                _ => None,
            });
        }
        let arena = self.rt.alloc(plan.arena_bytes, "the plan's arena")?;
        self.executables.push(AscendExecutable {
            plan: Arc::new(plan.clone()),
            arena,
            launchers: launchers.into(),
        });
        Ok(ExecutableId(self.executables.len() - 1))
    }

    fn submit(&mut self, exe: ExecutableId, bindings: &Bindings) -> Result<(), DeviceError> {
        let name = self.name();
        let e = self
            .executables
            .get(exe.0)
            .ok_or_else(|| err(&name, format!("no executable {}", exe.0)))?;
        super::check_slots(name.clone(), &e.plan, bindings)?;
        let ptr = |b: &BufferId| self.buffer(*b).map(|m| m.ptr as *mut u8);
        let inputs = bindings
            .inputs
            .iter()
            .map(ptr)
            .collect::<Result<Vec<_>, _>>()?;
        let outputs = bindings
            .outputs
            .iter()
            .map(ptr)
            .collect::<Result<Vec<_>, _>>()?;
        let arena = e.arena.ptr as *mut u8;
        let at = |r: &BufferRef| -> *mut u8 {
            match r.place {
                Place::Input(i) => inputs[i],
                Place::Output(i) => outputs[i],
                // SAFETY: the plan's arena offsets lie in the arena.
                Place::Arena(off) => unsafe { arena.add(off) },
            }
        };
        let (plan, launchers) = (e.plan.clone(), e.launchers.clone());
        let mut pending = ops::Pending::default();
        let result = (|| {
            for (step, launcher) in plan.steps.iter().zip(launchers.iter()) {
                match step {
                    Step::Loop {
                        symbol,
                        inputs,
                        outputs,
                    } => {
                        let mut args: Vec<*mut u8> = inputs.iter().chain(outputs).map(at).collect();
                        let launch = launcher.expect("resolved at load");
                        // SAFETY: the launcher takes one device address per buffer of the
                        // kernel, in this order; every one is a live buffer of the plan's size.
                        let status = unsafe { launch(self.rt.stream, args.as_mut_ptr()) };
                        if status != 0 {
                            return Err(err(
                                &name,
                                format!("kernel {symbol}: its launcher returned {status} (launch failed, or on the emulation a fault it reported above)"),
                            ));
                        }
                    }
                    Step::Copy { src, dst } => self.copy_bytes(
                        at(dst) as *mut c_void,
                        at(src) as *const c_void,
                        src.bytes(),
                    )?,
                    // One process: the all-reduce mean and the broadcast are copies.
                    Step::Collective {
                        inputs, outputs, ..
                    } => {
                        for (src, dst) in inputs.iter().zip(outputs) {
                            if at(src) != at(dst) {
                                self.copy_bytes(
                                    at(dst) as *mut c_void,
                                    at(src) as *const c_void,
                                    src.bytes(),
                                )?;
                            }
                        }
                    }
                    Step::Gemm { .. } | Step::Gather { .. } | Step::ScatterAdd { .. } => {
                        ops::run(self, step, &at, &mut pending)?
                    }
                }
            }
            Ok(())
        })();
        // The steps' aclnn descriptors live until the stream has run them.
        let synced = self.rt.synchronize(&format!("plan \"{}\"", plan.name));
        pending.release(&self.rt.acl);
        result?;
        synced
    }
}
