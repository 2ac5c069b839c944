//! The CUDA device of trainers compiled with `--target gpu` (cudarc over the driver API, loaded
//! at run time): buffers in device memory, the trainer's PTX module loaded once, each plan's
//! steps prepared at load (kernel functions, cuBLASLt descriptors and algorithms, resolved
//! buffer places) and enqueued in order on one stream per submission; downloads synchronize.
//!
//! Every library is probed before cudarc uses it (cudarc panics on a missing one): no driver,
//! no cuBLASLt, a GPU older than the PTX's architecture, or too little free memory for a plan
//! are errors that say what is missing.
//!
//! Not yet (the GPU-speed issue): CUDA graph capture of the steady-state step, pinned host
//! buffers with overlapped batch uploads, fused launches.

pub mod gemm;
pub mod libs;
pub mod steps;

use super::{Bindings, BufferId, Device, DeviceError, ExecutableId};
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr};
use plan::exec::{BufferRef, ExecutablePlan, Place};
use plan::gpu::GpuKernelLibrary;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Arc;
use steps::StepSpec;

fn err(device: &str, message: impl std::fmt::Display) -> DeviceError {
    DeviceError::Backend {
        device: device.to_string(),
        message: message.to_string(),
    }
}

/// The GPU, its stream, the trainer's kernels and a cuBLASLt handle: shared by every session.
pub struct CudaRuntime {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    functions: HashMap<String, CudaFunction>,
    library: GpuKernelLibrary,
    blas: cudarc::cublaslt::sys::cublasLtHandle_t,
    blas_workspace: CudaSlice<u8>,
    name: String,
}

// SAFETY: the cuBLASLt handle is used only through `&CudaRuntime` from the thread that drives
// the trainer (sessions are not shared across threads); the other fields are Send + Sync.
unsafe impl Send for CudaRuntime {}
unsafe impl Sync for CudaRuntime {}

impl CudaRuntime {
    /// Opens GPU 0 for `library`'s kernels.
    pub fn open(library: &GpuKernelLibrary) -> Result<Arc<CudaRuntime>, String> {
        if !libs::driver_present() {
            return Err(
                "no CUDA driver found (libcuda.so.1 is not on this machine's library path); this trainer was compiled for --target gpu and runs on an NVIDIA GPU with its driver installed (or recompile with --target cpu)"
                    .into(),
            );
        }
        libs::ensure_cublaslt()?;
        let count = CudaContext::device_count().map_err(|e| format!("CUDA driver: {e:?}"))?;
        if count < 1 {
            return Err("the CUDA driver reports no GPU on this machine".into());
        }
        let ctx = CudaContext::new(0).map_err(|e| format!("cannot open GPU 0: {e:?}"))?;
        let gpu_name = ctx.name().unwrap_or_else(|_| "GPU 0".into());
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| format!("{gpu_name}: {e:?}"))?;
        let want: i32 = library
            .arch
            .trim_start_matches("sm_")
            .parse()
            .map_err(|_| {
                format!(
                    "the trainer's GPU architecture '{}' is not sm_NN",
                    library.arch
                )
            })?;
        if major * 10 + minor < want {
            return Err(format!(
                "{gpu_name} is sm_{major}{minor}, older than the trainer's {} (recompile with an older --gpu-arch is not possible below sm_80)",
                library.arch
            ));
        }
        let stream = ctx.default_stream();
        let module = ctx
            .load_module(cudarc::nvrtc::Ptx::from_src(library.ptx.clone()))
            .map_err(|e| format!("{gpu_name}: the driver rejected the trainer's PTX: {e:?}"))?;
        let mut functions = HashMap::new();
        for spec in library.kernels.values() {
            for l in &spec.launches {
                let f = module
                    .load_function(&l.entry)
                    .map_err(|e| format!("PTX entry {}: {e:?}", l.entry))?;
                functions.insert(l.entry.clone(), f);
            }
        }
        let blas = cudarc::cublaslt::result::create_handle()
            .map_err(|e| format!("cuBLASLt handle: {e:?}"))?;
        let blas_workspace = stream
            .alloc_zeros::<u8>(gemm::WORKSPACE_BYTES)
            .map_err(|e| format!("{gpu_name}: cuBLASLt workspace: {e:?}"))?;
        Ok(Arc::new(CudaRuntime {
            ctx,
            stream,
            functions,
            library: library.clone(),
            blas,
            blas_workspace,
            name: format!("cuda:0 ({gpu_name})"),
        }))
    }

    /// Makes the context current on this thread (the raw driver calls below need it; cudarc's
    /// safe calls do it themselves).
    fn bind(&self) -> Result<(), DeviceError> {
        self.ctx.bind_to_thread().map_err(|e| {
            err(
                &self.name,
                format!("cannot make the CUDA context current: {e:?}"),
            )
        })
    }

    fn ptr(&self, s: &CudaSlice<u8>) -> u64 {
        let (p, _sync) = s.device_ptr(&self.stream);
        p
    }

    fn alloc(&self, bytes: usize, what: &str) -> Result<CudaSlice<u8>, DeviceError> {
        self.stream.alloc_zeros::<u8>(bytes.max(1)).map_err(|e| {
            let free = self
                .ctx
                .mem_get_info()
                .map(|(f, _)| format!("{:.1} MiB free", f as f64 / 1048576.0))
                .unwrap_or_else(|_| "free memory unknown".into());
            err(
                &self.name,
                format!(
                    "cannot allocate {:.1} MiB for {what} ({free}): {e:?}",
                    bytes as f64 / 1048576.0
                ),
            )
        })
    }
}

impl Drop for CudaRuntime {
    fn drop(&mut self) {
        // SAFETY: created in `open`, destroyed once.
        unsafe {
            let _ = cudarc::cublaslt::result::destroy_handle(self.blas);
        }
    }
}

struct CudaExecutable {
    plan: ExecutablePlan,
    arena: CudaSlice<u8>,
    workspace: CudaSlice<u8>,
    steps: Vec<StepSpec>,
    /// cuBLASLt set up for each GEMM step, in step order.
    gemms: Vec<gemm::PreparedGemm>,
}

/// A device on a [`CudaRuntime`]: buffers and loaded plans of one session.
pub struct CudaDevice {
    rt: Arc<CudaRuntime>,
    buffers: Vec<CudaSlice<u8>>,
    executables: Vec<CudaExecutable>,
}

impl CudaDevice {
    pub fn new(rt: Arc<CudaRuntime>) -> CudaDevice {
        CudaDevice {
            rt,
            buffers: Vec::new(),
            executables: Vec::new(),
        }
    }

    fn buffer(&self, b: BufferId) -> Result<&CudaSlice<u8>, DeviceError> {
        self.buffers.get(b.0).ok_or(DeviceError::NoBuffer {
            device: self.name(),
            buffer: b.0,
        })
    }

    /// Buffers of 0 bytes are allocated as 1 byte (CUDA has no empty allocations).
    fn check_len(&self, b: BufferId, what: &'static str, len: usize) -> Result<(), DeviceError> {
        super::check_size(self.name(), b, self.buffer(b)?.len(), what, len.max(1))
    }

    /// The plan's steps ([`steps::plan_steps`]), cuBLASLt set up for each GEMM step, and the
    /// workspace bytes the kernels need.
    #[allow(clippy::type_complexity)]
    fn prepare(
        &self,
        plan: &ExecutablePlan,
    ) -> Result<(Vec<StepSpec>, Vec<gemm::PreparedGemm>, usize), DeviceError> {
        let name = self.name();
        let planned = steps::plan_steps(plan, &self.rt.library).map_err(|e| err(&name, e))?;
        let mut gemms = Vec::new();
        for step in &planned.steps {
            if let StepSpec::Gemm {
                shape, precision, ..
            } = step
            {
                // SAFETY: the runtime's handle lives as long as `self.rt`.
                let g = unsafe { gemm::PreparedGemm::new(self.rt.blas, shape, *precision) };
                gemms.push(g.map_err(|e| err(&name, e))?);
            }
        }
        Ok((planned.steps, gemms, planned.workspace_bytes))
    }
}

impl Device for CudaDevice {
    fn name(&self) -> String {
        self.rt.name.clone()
    }

    fn allocate(&mut self, bytes: usize) -> Result<BufferId, DeviceError> {
        let b = self.rt.alloc(bytes, "a buffer")?;
        self.buffers.push(b);
        Ok(BufferId(self.buffers.len() - 1))
    }

    fn upload(&mut self, dst: BufferId, bytes: &[u8]) -> Result<(), DeviceError> {
        self.check_len(dst, "cannot take", bytes.len())?;
        self.rt.bind()?;
        let p = self.rt.ptr(&self.buffers[dst.0]);
        // SAFETY: the buffer holds bytes.len() bytes; the copy completes before `bytes` is
        // released because the stream is synchronized before returning.
        unsafe {
            cudarc::driver::result::memcpy_htod_async(p, bytes, self.rt.stream.cu_stream())
                .map_err(|e| err(&self.name(), format!("upload: {e:?}")))?;
        }
        self.rt
            .stream
            .synchronize()
            .map_err(|e| err(&self.name(), format!("upload: {e:?}")))
    }

    fn download(&self, src: BufferId, out: &mut [u8]) -> Result<(), DeviceError> {
        self.check_len(src, "cannot fill", out.len())?;
        self.rt.bind()?;
        let p = self.rt.ptr(&self.buffers[src.0]);
        // SAFETY: as for upload; synchronized before `out` is read.
        unsafe {
            cudarc::driver::result::memcpy_dtoh_async(out, p, self.rt.stream.cu_stream())
                .map_err(|e| err(&self.name(), format!("download: {e:?}")))?;
        }
        self.rt.stream.synchronize().map_err(|e| {
            err(
                &self.name(),
                format!("download (or an earlier step): {e:?}"),
            )
        })
    }

    fn copy(&mut self, src: BufferId, dst: BufferId) -> Result<(), DeviceError> {
        let n = self.buffer(src)?.len();
        self.check_len(dst, "cannot take", n)?;
        if src != dst {
            self.rt.bind()?;
            let (s, d) = (
                self.rt.ptr(&self.buffers[src.0]),
                self.rt.ptr(&self.buffers[dst.0]),
            );
            // SAFETY: distinct device buffers of n bytes each.
            unsafe {
                cudarc::driver::result::memcpy_dtod_async(d, s, n, self.rt.stream.cu_stream())
                    .map_err(|e| err(&self.name(), format!("copy: {e:?}")))?;
            }
        }
        Ok(())
    }

    fn load(&mut self, plan: &ExecutablePlan) -> Result<ExecutableId, DeviceError> {
        let (steps, gemms, workspace_bytes) = self.prepare(plan)?;
        let needs = plan.arena_bytes + workspace_bytes;
        if let Ok((free, _)) = self.rt.ctx.mem_get_info() {
            if needs > free {
                return Err(err(
                    &self.name(),
                    format!(
                        "out of device memory: plan \"{}\" needs {:.1} MiB (arena and kernel workspace), {:.1} MiB are free",
                        plan.name,
                        needs as f64 / 1048576.0,
                        free as f64 / 1048576.0
                    ),
                ));
            }
        }
        let arena = self.rt.alloc(plan.arena_bytes, "the plan's arena")?;
        let workspace = self.rt.alloc(workspace_bytes, "kernel workspace")?;
        self.executables.push(CudaExecutable {
            plan: plan.clone(),
            arena,
            workspace,
            steps,
            gemms,
        });
        Ok(ExecutableId(self.executables.len() - 1))
    }

    fn submit(&mut self, exe: ExecutableId, bindings: &Bindings) -> Result<(), DeviceError> {
        let name = self.name();
        self.rt.bind()?;
        let e = &self.executables[exe.0];
        if bindings.inputs.len() != e.plan.inputs.len()
            || bindings.outputs.len() != e.plan.outputs.len()
        {
            return Err(DeviceError::Binding {
                device: name,
                plan: e.plan.name.clone(),
                what: "slots",
                expected: e.plan.inputs.len() + e.plan.outputs.len(),
                got: bindings.inputs.len() + bindings.outputs.len(),
            });
        }
        let rt = &self.rt;
        let bound = |ids: &[BufferId]| -> Result<Vec<u64>, DeviceError> {
            ids.iter()
                .map(|b| {
                    self.buffers
                        .get(b.0)
                        .map(|s| rt.ptr(s))
                        .ok_or(DeviceError::NoBuffer {
                            device: name.clone(),
                            buffer: b.0,
                        })
                })
                .collect()
        };
        let inputs = bound(&bindings.inputs)?;
        let outputs = bound(&bindings.outputs)?;
        let arena = rt.ptr(&e.arena);
        let workspace = rt.ptr(&e.workspace);
        let at = |r: &BufferRef| -> u64 {
            match r.place {
                Place::Input(i) => inputs[i],
                Place::Output(i) => outputs[i],
                Place::Arena(off) => arena + off as u64,
            }
        };
        let stream = rt.stream.cu_stream();
        let mut gemms = e.gemms.iter();
        for step in &e.steps {
            match step {
                StepSpec::Launches {
                    launches,
                    buffers,
                    workspace: ws,
                } => {
                    let mut args: Vec<u64> = buffers.iter().map(at).collect();
                    args.extend(ws.iter().map(|o| workspace + *o as u64));
                    let mut params: Vec<*mut c_void> = args
                        .iter_mut()
                        .map(|a| a as *mut u64 as *mut c_void)
                        .collect();
                    for (entry, grid, block) in launches {
                        let f = &rt.functions[entry];
                        // SAFETY: the entry takes one device pointer per buffer in this order
                        // (the kernel library's ABI); every pointer is a live buffer of the
                        // plan's size; `params` outlives the call, which copies the arguments.
                        unsafe {
                            cudarc::driver::result::launch_kernel(
                                f.cu_function(),
                                (*grid, 1, 1),
                                (*block, 1, 1),
                                0,
                                stream,
                                &mut params,
                            )
                        }
                        .map_err(|err_| err(&name, format!("launch {entry}: {err_:?}")))?;
                    }
                }
                StepSpec::Gemm { a, b, c, .. } => {
                    let gemm = gemms.next().expect("one prepared GEMM per GEMM step");
                    // SAFETY: buffers of the prepared shapes; the workspace is WORKSPACE_BYTES.
                    unsafe {
                        gemm.run(
                            rt.blas,
                            at(a),
                            at(b),
                            at(c),
                            rt.ptr(&rt.blas_workspace),
                            stream as cudarc::cublaslt::sys::cudaStream_t,
                        )
                    }
                    .map_err(|m| err(&name, m))?;
                }
                StepSpec::Copy { src, dst } => {
                    // SAFETY: plan buffers of src.bytes() each.
                    unsafe {
                        cudarc::driver::result::memcpy_dtod_async(
                            at(dst),
                            at(src),
                            src.bytes(),
                            stream,
                        )
                    }
                    .map_err(|err_| err(&name, format!("copy: {err_:?}")))?;
                }
                StepSpec::Nothing => {}
            }
        }
        Ok(())
    }
}
