//! The CUDA device of trainers compiled with `--target gpu` (cudarc over the driver API, loaded
//! at run time): buffers in device memory, the trainer's PTX module loaded once, each plan's
//! steps prepared at load (kernel functions, cuBLASLt descriptors and algorithms, resolved
//! buffer places) and enqueued in order on one stream. Nothing but a download waits for the
//! GPU: small uploads (the batch, scalars) go through pinned staging buffers with asynchronous
//! copies, so the host reads the next batch while the GPU computes; from its second submission
//! on, a plan's steps are captured once as a CUDA graph and replayed (`TBC_CUDA_GRAPHS=0` turns
//! that off).
//!
//! Every library is probed before cudarc uses it (cudarc panics on a missing one): no driver,
//! no cuBLASLt, a GPU older than the PTX's architecture, or too little free memory for a plan
//! are errors that say what is missing.

pub mod gemm;
pub mod libs;
pub mod nccl;
pub mod steps;

use super::{Bindings, BufferId, Device, DeviceError, ExecutableId};
use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaGraph, CudaSlice, CudaStream, DevicePtr,
};
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
    /// Whether plans are captured as CUDA graphs (`TBC_CUDA_GRAPHS=0`: no).
    graphs: bool,
    /// The job's NCCL communicator, in a data-parallel run.
    nccl: std::sync::OnceLock<Arc<nccl::NcclComm>>,
}

// SAFETY: the cuBLASLt handle is used only through `&CudaRuntime` from the thread that drives
// the trainer (sessions are not shared across threads); the other fields are Send + Sync.
unsafe impl Send for CudaRuntime {}
unsafe impl Sync for CudaRuntime {}

impl CudaRuntime {
    /// Opens GPU `ordinal` (modulo the GPUs present: a node's ranks share them out by local
    /// rank) for `library`'s kernels.
    pub fn open(library: &GpuKernelLibrary, ordinal: usize) -> Result<Arc<CudaRuntime>, String> {
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
        let ordinal = ordinal % count as usize;
        let ctx =
            CudaContext::new(ordinal).map_err(|e| format!("cannot open GPU {ordinal}: {e:?}"))?;
        let gpu_name = ctx.name().unwrap_or_else(|_| format!("GPU {ordinal}"));
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
        // One stream, ordered by us: cudarc's per-buffer event tracking would put event waits
        // into captured graphs. A non-default stream, because the legacy default stream cannot
        // be captured.
        // SAFETY: every buffer is used on this one stream only.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx
            .new_stream()
            .map_err(|e| format!("{gpu_name}: cannot create a stream: {e:?}"))?;
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
            name: format!("cuda:{ordinal} ({gpu_name})"),
            graphs: std::env::var("TBC_CUDA_GRAPHS").map_or(true, |v| v != "0"),
            nccl: std::sync::OnceLock::new(),
        }))
    }

    /// Joins the data-parallel job's NCCL communicator: `id` is rank 0's unique id (from MPI,
    /// or the same on every rank through `NCCL_COMM_ID`). From now on the plans' gradient
    /// all-reduce runs on it.
    pub fn join_nccl(
        &self,
        lib: nccl::Nccl,
        id: nccl::UniqueId,
        rank: usize,
        size: usize,
    ) -> Result<Arc<nccl::NcclComm>, String> {
        self.ctx
            .bind_to_thread()
            .map_err(|e| format!("{}: {e:?}", self.name))?;
        let comm = Arc::new(nccl::NcclComm::join(lib, id, rank, size)?);
        self.nccl
            .set(comm.clone())
            .map_err(|_| format!("{}: joined NCCL twice", self.name))?;
        Ok(comm)
    }

    /// The runtime's stream (the NCCL group's collectives run on it).
    pub fn stream(&self) -> Arc<CudaStream> {
        self.stream.clone()
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
    /// The flat buffer of the gradient all-reduce (NCCL only).
    flat: Option<CudaSlice<u8>>,
    submissions: u64,
    /// The steps captured over one set of bindings (a session binds the same buffers every
    /// step), replayed while the bindings stay the same.
    graph: Option<(Bindings, CudaGraph)>,
    /// Capture failed once: this plan runs its steps one by one.
    no_graph: bool,
}

/// Repeated uploads up to this size are staged in pinned memory and copied asynchronously.
const STAGED_MAX_BYTES: usize = 8 << 20;

/// A pinned host buffer an upload is copied from, and the event of its last copy: the buffer
/// is written again only once that copy has finished.
struct Staging {
    ptr: *mut u8,
    len: usize,
    copied: CudaEvent,
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = self.copied.synchronize();
        // SAFETY: allocated by malloc_host in `upload`, freed once, after its last copy.
        unsafe {
            let _ = cudarc::driver::result::free_host(self.ptr as *mut c_void);
        }
    }
}

/// A device on a [`CudaRuntime`]: buffers and loaded plans of one session.
pub struct CudaDevice {
    rt: Arc<CudaRuntime>,
    // Field order is drop order: staging waits for its copies before the buffers go.
    staging: HashMap<usize, Staging>,
    /// Buffers uploaded once: their next upload gets a staging buffer (parameters, uploaded
    /// once at start, never hold pinned memory; the batch does from its second step on).
    uploaded: std::collections::HashSet<usize>,
    executables: Vec<CudaExecutable>,
    buffers: Vec<CudaSlice<u8>>,
    /// The device address of each buffer (stable until the device is dropped).
    ptrs: Vec<u64>,
}

impl CudaDevice {
    pub fn new(rt: Arc<CudaRuntime>) -> CudaDevice {
        CudaDevice {
            rt,
            staging: HashMap::new(),
            uploaded: std::collections::HashSet::new(),
            executables: Vec::new(),
            buffers: Vec::new(),
            ptrs: Vec::new(),
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

    /// The device addresses of `ids`.
    fn addresses(&self, ids: &[BufferId]) -> Result<Vec<u64>, DeviceError> {
        ids.iter()
            .map(|b| {
                self.ptrs.get(b.0).copied().ok_or(DeviceError::NoBuffer {
                    device: self.name(),
                    buffer: b.0,
                })
            })
            .collect()
    }

    /// The pinned staging buffer of `dst` (`len` bytes), allocated on first use.
    fn staging(&mut self, dst: BufferId, len: usize) -> Result<&mut Staging, DeviceError> {
        let name = self.name();
        if !self.staging.contains_key(&dst.0) {
            // SAFETY: a fresh page-locked allocation of `len` bytes, written before it is read.
            let ptr = unsafe {
                cudarc::driver::result::malloc_host(
                    len.max(1),
                    cudarc::driver::sys::CU_MEMHOSTALLOC_WRITECOMBINED,
                )
            }
            .map_err(|e| err(&name, format!("pinned host memory ({len} bytes): {e:?}")))?;
            let copied = self
                .rt
                .ctx
                .new_event(None)
                .map_err(|e| err(&name, format!("event: {e:?}")))?;
            self.staging.insert(
                dst.0,
                Staging {
                    ptr: ptr as *mut u8,
                    len,
                    copied,
                },
            );
        }
        Ok(self.staging.get_mut(&dst.0).expect("inserted above"))
    }
}

/// Enqueues every step of `e` on the runtime's stream, its slots at `inputs` and `outputs`.
fn enqueue(
    rt: &CudaRuntime,
    e: &CudaExecutable,
    inputs: &[u64],
    outputs: &[u64],
) -> Result<(), DeviceError> {
    let name = &rt.name;
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
                    .map_err(|err_| err(name, format!("launch {entry}: {err_:?}")))?;
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
                .map_err(|m| err(name, m))?;
            }
            StepSpec::Copy { src, dst } => {
                // SAFETY: plan buffers of src.bytes() each.
                unsafe {
                    cudarc::driver::result::memcpy_dtod_async(at(dst), at(src), src.bytes(), stream)
                }
                .map_err(|err_| err(name, format!("copy: {err_:?}")))?;
            }
            StepSpec::Collective { inputs, outputs } => match (rt.nccl.get(), &e.flat) {
                (Some(comm), Some(flat)) => {
                    // Pack, average on the GPUs, unpack.
                    let flat = rt.ptr(flat);
                    let copy = |dst: u64, src: u64, n: usize| {
                        // SAFETY: both ranges lie in live buffers (the flat buffer holds every
                        // input, in order).
                        unsafe { cudarc::driver::result::memcpy_dtod_async(dst, src, n, stream) }
                            .map_err(|err_| err(name, format!("all-reduce copy: {err_:?}")))
                    };
                    let mut offset = 0u64;
                    for i in inputs {
                        copy(flat + offset, at(i), i.bytes())?;
                        offset += i.bytes() as u64;
                    }
                    // SAFETY: the flat buffer holds offset / 4 f32 values.
                    unsafe { comm.all_reduce_avg(flat, offset as usize / 4, stream as _) }
                        .map_err(|m| err(name, m))?;
                    let mut offset = 0u64;
                    for o in outputs {
                        copy(at(o), flat + offset, o.bytes())?;
                        offset += o.bytes() as u64;
                    }
                }
                (Some(_), None) => {
                    return Err(err(
                        name,
                        "the plan was loaded before NCCL was joined (no all-reduce buffer)",
                    ))
                }
                _ => {
                    for (src, dst) in inputs.iter().zip(outputs) {
                        // SAFETY: plan buffers of src.bytes() each.
                        unsafe {
                            cudarc::driver::result::memcpy_dtod_async(
                                at(dst),
                                at(src),
                                src.bytes(),
                                stream,
                            )
                        }
                        .map_err(|err_| err(name, format!("copy: {err_:?}")))?;
                    }
                }
            },
        }
    }
    Ok(())
}

/// Captures `e`'s steps as a CUDA graph. The stream leaves capture mode whatever happens.
fn capture(
    rt: &CudaRuntime,
    e: &CudaExecutable,
    inputs: &[u64],
    outputs: &[u64],
) -> Result<CudaGraph, String> {
    rt.stream
        .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
        .map_err(|e| format!("begin capture: {e:?}"))?;
    let enqueued = enqueue(rt, e, inputs, outputs);
    let ended = rt.stream.end_capture(CUgraphInstantiate_flags(0));
    enqueued.map_err(|e| e.to_string())?;
    match ended {
        Ok(Some(g)) => Ok(g),
        Ok(None) => Err("the capture recorded nothing".into()),
        Err(e) => Err(format!("end capture: {e:?}")),
    }
}

impl Device for CudaDevice {
    fn name(&self) -> String {
        self.rt.name.clone()
    }

    fn allocate(&mut self, bytes: usize) -> Result<BufferId, DeviceError> {
        let b = self.rt.alloc(bytes, "a buffer")?;
        self.ptrs.push(self.rt.ptr(&b));
        self.buffers.push(b);
        Ok(BufferId(self.buffers.len() - 1))
    }

    fn upload(&mut self, dst: BufferId, bytes: &[u8]) -> Result<(), DeviceError> {
        self.check_len(dst, "cannot take", bytes.len())?;
        self.rt.bind()?;
        let name = self.name();
        let p = self.ptrs[dst.0];
        let stream = self.rt.stream.cu_stream();
        if bytes.len() > STAGED_MAX_BYTES || self.uploaded.insert(dst.0) {
            // First and large uploads (weights at start) copy from pageable memory and wait.
            // SAFETY: the buffer holds bytes.len() bytes; synchronized before `bytes` goes.
            unsafe { cudarc::driver::result::memcpy_htod_async(p, bytes, stream) }
                .map_err(|e| err(&name, format!("upload: {e:?}")))?;
            return self
                .rt
                .stream
                .synchronize()
                .map_err(|e| err(&name, format!("upload: {e:?}")));
        }
        let rt_stream = self.rt.stream.clone();
        let st = self.staging(dst, bytes.len())?;
        // The previous copy out of this staging buffer must be done before it is rewritten
        // (long done in a training loop: it was enqueued a step ago).
        st.copied
            .synchronize()
            .map_err(|e| err(&name, format!("upload (or an earlier step): {e:?}")))?;
        // SAFETY: the staging buffer holds st.len == bytes.len() bytes (a buffer's uploads
        // all have its size) and no copy reads it now; the async copy reads it after this
        // call returns, and the event keeps it from being rewritten until that copy is done.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), st.ptr, bytes.len());
            let pinned = std::slice::from_raw_parts(st.ptr, st.len);
            cudarc::driver::result::memcpy_htod_async(p, pinned, stream)
                .map_err(|e| err(&name, format!("upload: {e:?}")))?;
        }
        st.copied
            .record(&rt_stream)
            .map_err(|e| err(&name, format!("upload: {e:?}")))
    }

    fn download(&self, src: BufferId, out: &mut [u8]) -> Result<(), DeviceError> {
        self.check_len(src, "cannot fill", out.len())?;
        self.rt.bind()?;
        let p = self.ptrs[src.0];
        // SAFETY: the buffer holds out.len() bytes; synchronized before `out` is read.
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
            self.copy_bytes(src, dst, 0, n)?;
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
        self.copy_bytes(src, dst, offset, n)
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
        let flat_bytes: usize = steps
            .iter()
            .map(|s| match s {
                StepSpec::Collective { inputs, .. } => inputs.iter().map(|b| b.bytes()).sum(),
                _ => 0,
            })
            .max()
            .unwrap_or(0);
        let flat = match self.rt.nccl.get() {
            Some(_) if flat_bytes > 0 => Some(
                self.rt
                    .alloc(flat_bytes, "the gradient all-reduce buffer")?,
            ),
            _ => None,
        };
        self.executables.push(CudaExecutable {
            plan: plan.clone(),
            arena,
            workspace,
            steps,
            gemms,
            flat,
            submissions: 0,
            graph: None,
            no_graph: false,
        });
        Ok(ExecutableId(self.executables.len() - 1))
    }

    fn submit(&mut self, exe: ExecutableId, bindings: &Bindings) -> Result<(), DeviceError> {
        let name = self.name();
        self.rt.bind()?;
        let e = &self.executables[exe.0];
        super::check_slots(name.clone(), &e.plan, bindings)?;
        if let Some((bound, graph)) = &e.graph {
            if bound == bindings {
                return graph
                    .launch()
                    .map_err(|err_| err(&name, format!("graph launch: {err_:?}")));
            }
        }
        let inputs = self.addresses(&bindings.inputs)?;
        let outputs = self.addresses(&bindings.outputs)?;
        let rt = self.rt.clone();
        let e = &mut self.executables[exe.0];
        e.submissions += 1;
        // The first submission runs eagerly (cuBLASLt and the module finish their lazy
        // set-up outside any capture); the second is captured and replayed from then on.
        if rt.graphs && !e.no_graph && e.submissions >= 2 {
            match capture(&rt, e, &inputs, &outputs) {
                Ok(graph) => {
                    graph
                        .launch()
                        .map_err(|err_| err(&name, format!("graph launch: {err_:?}")))?;
                    e.graph = Some((bindings.clone(), graph));
                    return Ok(());
                }
                Err(why) => {
                    eprintln!(
                        "warning: {name}: plan \"{}\" could not be captured as a CUDA graph ({why}); its steps are launched one by one",
                        e.plan.name
                    );
                    e.no_graph = true;
                }
            }
        }
        enqueue(&rt, e, &inputs, &outputs)
    }
}

impl CudaDevice {
    /// Enqueues a copy of `n` bytes from the start of `src` to byte `offset` of `dst`.
    fn copy_bytes(
        &mut self,
        src: BufferId,
        dst: BufferId,
        offset: usize,
        n: usize,
    ) -> Result<(), DeviceError> {
        self.rt.bind()?;
        let (s, d) = (self.ptrs[src.0], self.ptrs[dst.0] + offset as u64);
        // SAFETY: distinct device buffers; src holds n bytes, dst offset + n (checked).
        unsafe {
            cudarc::driver::result::memcpy_dtod_async(d, s, n, self.rt.stream.cu_stream())
                .map_err(|e| err(&self.name(), format!("copy: {e:?}")))
        }
    }
}
