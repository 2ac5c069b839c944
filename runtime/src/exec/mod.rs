//! Runs an [`ExecutablePlan`] on the host: walks the steps over bound buffers, calls the
//! generated loop kernels through [`LoopKernels`] and runs the library steps (GEMM, gather,
//! scatter-add) with [`host_math`]. [`Runner`] binds caller slices each run (`tbc step`,
//! `trainer step`); the training driver goes through [`crate::device`] instead.

pub mod bf16;
mod host_math;
mod profile;

pub use profile::{profile_report, step_label};

use plan::exec::{
    BufferRef, CollectiveOp, ExecutablePlan, GemmEpilogue, GemmPrecision, Place, Step,
};
use plan::ElemType;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("plan \"{plan}\": expected {expected} inputs, got {got}")]
    InputCount {
        plan: String,
        expected: usize,
        got: usize,
    },
    #[error("plan \"{plan}\": input '{name}' must be {expected} bytes, got {got}")]
    InputSize {
        plan: String,
        name: String,
        expected: usize,
        got: usize,
    },
    #[error("{step}: index {index} out of range for {rows} rows")]
    IndexOutOfRange {
        step: &'static str,
        index: i64,
        rows: usize,
    },
    #[error("loop kernel {symbol}: {message}")]
    Kernel { symbol: String, message: String },
    #[error("unsupported element type {0:?} for {1}")]
    Unsupported(ElemType, &'static str),
    #[error("GEMM precision {0:?}: the host runs f32 and f64 GEMMs, and bf16 GEMMs with f32 sums")]
    Precision(GemmPrecision),
    #[error("bf16 GEMM: {0}")]
    Bf16Gemm(String),
    #[error("collective: {0}")]
    Collective(String),
}

/// A kernel argument: a buffer's address, element type and shape.
#[derive(Clone, Debug)]
pub struct KernelArg {
    pub ptr: *mut u8,
    pub elem: ElemType,
    pub shape: Vec<usize>,
}

/// The generated loop kernels, by symbol.
pub trait LoopKernels {
    /// Runs `symbol`. Inputs are only read; an output may share its bytes with an input (in
    /// place), in which case the kernel reads each element before writing it.
    ///
    /// # Safety
    /// Every pointer is valid for its shape and element type for the duration of the call.
    unsafe fn run(
        &self,
        symbol: &str,
        inputs: &[KernelArg],
        outputs: &[KernelArg],
    ) -> Result<(), String>;
}

/// Zeroed bytes aligned to 64.
pub struct AlignedBuf {
    ptr: *mut u8,
    len: usize,
}

impl AlignedBuf {
    pub fn zeroed(len: usize) -> AlignedBuf {
        let layout = std::alloc::Layout::from_size_align(len.max(1), 64).expect("buffer size");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        AlignedBuf { ptr, len }
    }
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is valid for len bytes while self lives.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let layout = std::alloc::Layout::from_size_align(self.len.max(1), 64).unwrap();
        // SAFETY: allocated in `zeroed` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, layout) }
    }
}

/// Executes one plan repeatedly (the arena is allocated once).
pub struct Runner<'k> {
    pub plan: ExecutablePlan,
    arena: AlignedBuf,
    kernels: &'k dyn LoopKernels,
    /// The output buffers, allocated once and rewritten by every run (no page faults and no
    /// zeroing per step).
    outputs: Vec<AlignedBuf>,
    /// Seconds and calls per step label, when profiling (`TBC_PROFILE=1`).
    pub profile: Option<std::collections::BTreeMap<String, (u64, f64)>>,
}

impl<'k> Runner<'k> {
    pub fn new(plan: ExecutablePlan, kernels: &'k dyn LoopKernels) -> Runner<'k> {
        let arena = AlignedBuf::zeroed(plan.arena_bytes);
        let outputs = plan
            .outputs
            .iter()
            .map(|s| AlignedBuf::zeroed(s.bytes()))
            .collect();
        Runner {
            plan,
            arena,
            kernels,
            outputs,
            profile: None,
        }
    }

    /// The outputs of the last run (zeros before the first).
    pub fn outputs(&self) -> &[AlignedBuf] {
        &self.outputs
    }

    /// Runs the plan on `inputs` (raw little-endian bytes, one per input slot, in order) and
    /// returns the outputs' bytes in slot order (valid until the next run).
    pub fn run(&mut self, inputs: &[&[u8]]) -> Result<&[AlignedBuf], RuntimeError> {
        let plan = &self.plan;
        if inputs.len() != plan.inputs.len() {
            return Err(RuntimeError::InputCount {
                plan: plan.name.clone(),
                expected: plan.inputs.len(),
                got: inputs.len(),
            });
        }
        for (slot, bytes) in plan.inputs.iter().zip(inputs) {
            let expected = slot.bytes();
            if bytes.len() != expected {
                return Err(RuntimeError::InputSize {
                    plan: plan.name.clone(),
                    name: slot.name.clone(),
                    expected,
                    got: bytes.len(),
                });
            }
        }
        let mut outputs = std::mem::take(&mut self.outputs);
        let arena = self.arena.as_mut_ptr();
        let out_ptrs: Vec<*mut u8> = outputs.iter_mut().map(|o| o.as_mut_ptr()).collect();
        let in_ptrs: Vec<*mut u8> = inputs.iter().map(|b| b.as_ptr() as *mut u8).collect();
        let mut profile = self.profile.take();
        // SAFETY: the input slices were checked against their slots, the outputs and the arena
        // were allocated for this plan; kernels only read inputs.
        let r = unsafe {
            execute(
                plan,
                &Bound {
                    inputs: &in_ptrs,
                    outputs: &out_ptrs,
                    arena,
                },
                self.kernels,
                profile.as_mut(),
            )
        };
        self.profile = profile;
        self.outputs = outputs;
        r?;
        Ok(&self.outputs)
    }
}

/// Where a plan's inputs, outputs and arena are for one execution.
pub struct Bound<'a> {
    pub inputs: &'a [*mut u8],
    pub outputs: &'a [*mut u8],
    pub arena: *mut u8,
}

impl Bound<'_> {
    fn addr(&self, b: &BufferRef) -> *mut u8 {
        match b.place {
            Place::Input(i) => self.inputs[i],
            Place::Output(i) => self.outputs[i],
            // SAFETY: the compiler placed the buffer inside the arena.
            Place::Arena(off) => unsafe { self.arena.add(off) },
        }
    }
}

/// A gradient bucket's all-reduce in flight: started at its collective step, completed (and
/// unpacked into its outputs) before a later step touches those outputs, so the rest of the
/// backward runs meanwhile.
struct InFlight<'w> {
    pending: Box<dyn crate::dist::PendingAllReduce + 'w>,
    outputs: Vec<BufferRef>,
    /// The step's profile label.
    label: String,
}

/// Packs the f32 `inputs` into one flat buffer and starts averaging it over the ranks of
/// `world`.
///
/// # Safety
/// `addr` gives valid buffers of each reference's size.
unsafe fn start_all_reduce_mean<'w>(
    world: &'w dyn crate::dist::Group,
    inputs: &[BufferRef],
    outputs: &[BufferRef],
    addr: &dyn Fn(&BufferRef) -> *mut u8,
    label: String,
) -> Result<InFlight<'w>, RuntimeError> {
    if let Some(b) = inputs.iter().find(|b| b.elem != plan::ElemType::F32) {
        return Err(RuntimeError::Collective(format!(
            "the gradient all-reduce takes f32 buffers, got {}",
            b.elem.name()
        )));
    }
    let total: usize = inputs
        .iter()
        .map(|b| b.shape.iter().product::<usize>())
        .sum();
    let mut flat = vec![0f32; total];
    let mut at = 0;
    for b in inputs {
        let n: usize = b.shape.iter().product();
        // SAFETY: b holds n f32 values.
        unsafe { std::ptr::copy_nonoverlapping(addr(b) as *const f32, flat[at..].as_mut_ptr(), n) };
        at += n;
    }
    let pending = world
        .start_all_reduce_mean(flat)
        .map_err(RuntimeError::Collective)?;
    Ok(InFlight {
        pending,
        outputs: outputs.to_vec(),
        label,
    })
}

impl InFlight<'_> {
    /// Waits for the all-reduce and unpacks it into the outputs.
    ///
    /// # Safety
    /// `addr` gives valid buffers of each reference's size.
    unsafe fn complete(self, addr: &dyn Fn(&BufferRef) -> *mut u8) -> Result<(), RuntimeError> {
        let flat = self.pending.wait().map_err(RuntimeError::Collective)?;
        let mut at = 0;
        for b in &self.outputs {
            let n: usize = b.shape.iter().product();
            // SAFETY: b holds n f32 values; `flat` holds every output's values in order.
            unsafe { std::ptr::copy_nonoverlapping(flat[at..].as_ptr(), addr(b) as *mut f32, n) };
            at += n;
        }
        Ok(())
    }
}

/// Whether two buffers share bytes.
fn overlaps(a: &BufferRef, b: &BufferRef) -> bool {
    match (a.place, b.place) {
        (Place::Arena(x), Place::Arena(y)) => x < y + b.bytes() && y < x + a.bytes(),
        (p, q) => p == q,
    }
}

/// Every buffer `step` reads or writes.
fn step_buffers(step: &Step) -> Vec<&BufferRef> {
    match step {
        Step::Loop {
            inputs, outputs, ..
        }
        | Step::Collective {
            inputs, outputs, ..
        } => inputs.iter().chain(outputs).collect(),
        Step::Gemm {
            a, b, c, epilogue, ..
        } => {
            let mut v = vec![a, b, c];
            if let Some(GemmEpilogue::Bias { bias }) = epilogue {
                v.push(bias);
            }
            v
        }
        Step::Gather {
            table,
            indices,
            out,
        } => vec![table, indices, out],
        Step::ScatterAdd {
            indices,
            updates,
            out,
        } => vec![indices, updates, out],
        Step::Copy { src, dst } => vec![src, dst],
    }
}

/// Runs every step of `plan` over the `bound` buffers. With `profile`, adds each step's time to
/// it. Collectives run in the process's data-parallel group: a gradient bucket's all-reduce
/// starts at its step and completes before a later step touches its outputs (or at the end),
/// the steps between running meanwhile.
///
/// # Safety
/// Every bound pointer is valid for its slot's bytes (the arena for `plan.arena_bytes`), outputs
/// do not overlap inputs or each other, and nothing else accesses them during the call.
pub unsafe fn execute(
    plan: &ExecutablePlan,
    bound: &Bound,
    kernels: &dyn LoopKernels,
    mut profile: Option<&mut std::collections::BTreeMap<String, (u64, f64)>>,
) -> Result<(), RuntimeError> {
    let world = crate::dist::world();
    let addr = |b: &BufferRef| bound.addr(b);
    let mut in_flight: Vec<InFlight> = Vec::new();
    // Step labels are made only when profiling.
    let mut timed = |label: &dyn Fn() -> String, t0: std::time::Instant| {
        if let Some(p) = profile.as_mut() {
            let e = p.entry(label()).or_default();
            e.0 += 1;
            e.1 += t0.elapsed().as_secs_f64();
        }
    };
    for step in &plan.steps {
        if !in_flight.is_empty() {
            let touched = step_buffers(step);
            let mut i = 0;
            while i < in_flight.len() {
                if in_flight[i]
                    .outputs
                    .iter()
                    .any(|o| touched.iter().any(|t| overlaps(o, t)))
                {
                    let f = in_flight.remove(i);
                    let t0 = std::time::Instant::now();
                    let label = format!("{} (wait)", f.label);
                    // SAFETY: the outputs lie in the bound buffers.
                    unsafe { f.complete(&addr)? };
                    timed(&|| label.clone(), t0);
                } else {
                    in_flight[i]
                        .pending
                        .progress()
                        .map_err(RuntimeError::Collective)?;
                    i += 1;
                }
            }
        }
        let t0 = std::time::Instant::now();
        match step {
            Step::Collective {
                op: CollectiveOp::AllReduceMean,
                inputs,
                outputs,
            } if world.size() > 1 => {
                // SAFETY: the buffers hold their shapes' elements.
                in_flight.push(unsafe {
                    start_all_reduce_mean(world, inputs, outputs, &addr, step_label(step))?
                });
            }
            _ => run_step(step, bound, kernels)?,
        }
        timed(&|| step_label(step), t0);
    }
    for f in in_flight {
        let t0 = std::time::Instant::now();
        let label = format!("{} (wait)", f.label);
        // SAFETY: as above.
        unsafe { f.complete(&addr)? };
        timed(&|| label.clone(), t0);
    }
    Ok(())
}

unsafe fn run_step(
    step: &Step,
    bound: &Bound,
    kernels: &dyn LoopKernels,
) -> Result<(), RuntimeError> {
    let addr = |b: &BufferRef| bound.addr(b);
    let arg = |b: &BufferRef| KernelArg {
        ptr: bound.addr(b),
        elem: b.elem,
        shape: b.shape.clone(),
    };
    {
        match step {
            Step::Loop {
                symbol,
                inputs: ins,
                outputs: outs,
            } => {
                let ia: Vec<KernelArg> = ins.iter().map(arg).collect();
                let oa: Vec<KernelArg> = outs.iter().map(arg).collect();
                // SAFETY: every buffer lives in the inputs, outputs or arena for this call.
                unsafe { kernels.run(symbol, &ia, &oa) }.map_err(|message| {
                    RuntimeError::Kernel {
                        symbol: symbol.clone(),
                        message,
                    }
                })?;
            }
            Step::Gemm {
                a,
                b,
                c,
                transpose_a,
                transpose_b,
                batch,
                m,
                n,
                k,
                precision,
                epilogue,
            } => {
                let bf16_mixed = GemmPrecision {
                    input: ElemType::BF16,
                    compute: ElemType::BF16,
                    accumulate: ElemType::F32,
                };
                if *precision == bf16_mixed && epilogue.is_none() {
                    let kernel = bf16::kernel().map_err(RuntimeError::Bf16Gemm)?;
                    // SAFETY: as below, bf16 elements.
                    unsafe {
                        bf16::gemm(
                            kernel,
                            addr(a) as *const u16,
                            addr(b) as *const u16,
                            addr(c) as *mut u16,
                            *transpose_a,
                            *transpose_b,
                            *batch,
                            *m,
                            *n,
                            *k,
                        )
                    }
                } else {
                    if *precision != GemmPrecision::uniform(a.elem) {
                        return Err(RuntimeError::Precision(*precision));
                    }
                    // SAFETY: a, b, c are valid for their shapes; c does not overlap a or b.
                    unsafe {
                        host_math::gemm(
                            a.elem,
                            addr(a),
                            addr(b),
                            addr(c),
                            *transpose_a,
                            *transpose_b,
                            *batch,
                            *m,
                            *n,
                            *k,
                        )?;
                        if let Some(GemmEpilogue::Bias { bias }) = epilogue {
                            host_math::add_bias(c.elem, addr(c), addr(bias), *batch * *m, *n)?;
                        }
                    }
                }
            }
            Step::Copy { src, dst } => {
                // SAFETY: both hold dst.bytes() bytes; the compiler copies between distinct
                // buffers.
                unsafe { std::ptr::copy_nonoverlapping(addr(src), addr(dst), dst.bytes()) }
            }
            Step::Collective {
                op,
                inputs,
                outputs,
            } => {
                if let CollectiveOp::Broadcast { root } = op {
                    if *root != 0 {
                        return Err(RuntimeError::Collective(format!(
                            "broadcast from device {root} in a group of one"
                        )));
                    }
                }
                // The mean over one device, or its own values: each output is its input (with
                // several ranks, `execute` runs the all-reduce).
                for (src, dst) in inputs.iter().zip(outputs) {
                    // SAFETY: both hold dst.bytes() bytes in distinct buffers (the compiler
                    // gives a collective's outputs buffers of their own).
                    unsafe { std::ptr::copy_nonoverlapping(addr(src), addr(dst), dst.bytes()) }
                }
            }
            Step::Gather {
                table,
                indices,
                out,
            } => unsafe {
                host_math::gather(table, addr(table), indices, addr(indices), out, addr(out))?
            },
            Step::ScatterAdd {
                indices,
                updates,
                out,
            } => unsafe {
                host_math::scatter_add(
                    indices,
                    addr(indices),
                    updates,
                    addr(updates),
                    out,
                    addr(out),
                )?
            },
        }
    }
    Ok(())
}
