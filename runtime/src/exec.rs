//! Runs an [`ExecutablePlan`]: allocates the arena and the outputs, walks the steps, calls the
//! generated loop kernels through [`LoopKernels`] and runs the library steps (GEMM, gather,
//! scatter-add) itself.

use plan::exec::{BufferRef, ExecutablePlan, Place, Step};
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

/// What a step is, for the profile: the loop kernel's symbol, or the GEMM's shape.
fn step_label(step: &Step) -> String {
    match step {
        Step::Loop { symbol, .. } => format!("loop {symbol}"),
        Step::Gemm {
            batch,
            m,
            n,
            k,
            transpose_a,
            transpose_b,
            ..
        } => format!(
            "gemm {batch}x[{m}x{k}]{}·[{k}x{n}]{}",
            if *transpose_a { "ᵀ" } else { "" },
            if *transpose_b { "ᵀ" } else { "" }
        ),
        Step::Gather { .. } => "gather".into(),
        Step::ScatterAdd { .. } => "scatter-add".into(),
    }
}

/// The profile as a table, largest total first, with each kind's share.
pub fn profile_report(
    profile: &std::collections::BTreeMap<String, (u64, f64)>,
    top: usize,
) -> String {
    use std::fmt::Write;
    let total: f64 = profile.values().map(|v| v.1).sum();
    let mut kinds: std::collections::BTreeMap<&str, f64> = std::collections::BTreeMap::new();
    for (label, (_, t)) in profile {
        *kinds
            .entry(label.split(' ').next().unwrap_or(""))
            .or_default() += t;
    }
    let mut s = format!("profile: {total:.4} s in steps\n");
    for (k, t) in &kinds {
        writeln!(s, "  {k:12} {t:8.4} s {:5.1} %", 100.0 * t / total).unwrap();
    }
    let mut rows: Vec<(&String, &(u64, f64))> = profile.iter().collect();
    rows.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
    for (label, (n, t)) in rows.into_iter().take(top) {
        writeln!(s, "  {t:8.4} s {:5.1} % {n:5}x  {label}", 100.0 * t / total).unwrap();
    }
    s
}

impl<'k> Runner<'k> {
    pub fn new(plan: ExecutablePlan, kernels: &'k dyn LoopKernels) -> Runner<'k> {
        let arena = AlignedBuf::zeroed(plan.arena_bytes);
        let outputs = plan
            .outputs
            .iter()
            .map(|s| AlignedBuf::zeroed(s.shape.iter().product::<usize>() * s.elem.size_bytes()))
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
            let expected = slot.shape.iter().product::<usize>() * slot.elem.size_bytes();
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
        let addr = |b: &BufferRef| -> *mut u8 {
            match b.place {
                Place::Input(i) => inputs[i].as_ptr() as *mut u8,
                Place::Output(i) => out_ptrs[i],
                // SAFETY: the compiler placed the buffer inside the arena.
                Place::Arena(off) => unsafe { arena.add(off) },
            }
        };
        let arg = |b: &BufferRef| KernelArg {
            ptr: addr(b),
            elem: b.elem,
            shape: b.shape.clone(),
        };
        let mut profile = self.profile.take();
        for step in &plan.steps {
            let started = profile.as_ref().map(|_| std::time::Instant::now());
            self.run_step(step, &addr, &arg)?;
            if let (Some(p), Some(t0)) = (profile.as_mut(), started) {
                let e = p.entry(step_label(step)).or_default();
                e.0 += 1;
                e.1 += t0.elapsed().as_secs_f64();
            }
        }
        self.profile = profile;
        // Outputs that equal an input or another output.
        for (i, src) in plan.output_sources.iter().enumerate() {
            if src.place != Place::Output(i) {
                let from = addr(src);
                let n = outputs[i].len();
                // SAFETY: both buffers hold n bytes; a different output or an input never
                // overlaps output i.
                unsafe { std::ptr::copy_nonoverlapping(from, outputs[i].as_mut_ptr(), n) };
            }
        }
        self.outputs = outputs;
        Ok(&self.outputs)
    }

    fn run_step(
        &self,
        step: &Step,
        addr: &dyn Fn(&BufferRef) -> *mut u8,
        arg: &dyn Fn(&BufferRef) -> KernelArg,
    ) -> Result<(), RuntimeError> {
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
                    unsafe { self.kernels.run(symbol, &ia, &oa) }.map_err(|message| {
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
                } => {
                    // SAFETY: a, b, c are valid for their shapes; c does not overlap a or b.
                    unsafe {
                        gemm(
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
                        )?
                    }
                }
                Step::Gather {
                    table,
                    indices,
                    out,
                } => unsafe { gather(table, addr(table), indices, addr(indices), out, addr(out))? },
                Step::ScatterAdd {
                    indices,
                    updates,
                    out,
                } => unsafe {
                    scatter_add(
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
}

/// Reads integer indices.
unsafe fn indices_of(b: &BufferRef, p: *mut u8) -> Result<Vec<i64>, RuntimeError> {
    let n = b.numel();
    Ok(match b.elem {
        ElemType::I32 => std::slice::from_raw_parts(p as *const i32, n)
            .iter()
            .map(|&x| x as i64)
            .collect(),
        ElemType::I64 => std::slice::from_raw_parts(p as *const i64, n).to_vec(),
        e => return Err(RuntimeError::Unsupported(e, "indices")),
    })
}

/// GEMMs smaller than this many multiply-adds run on one thread (threading costs more).
const PARALLEL_GEMM_MIN_MACS: usize = 1 << 21;

/// Row-major `c = op(a)·op(b)` for each batch index, through the `gemm` crate (strides make
/// the transposes free). Large GEMMs are threaded inside the library; batches of small ones
/// (attention heads) are spread over the threads one GEMM each.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm(
    elem: ElemType,
    a: *mut u8,
    b: *mut u8,
    c: *mut u8,
    ta: bool,
    tb: bool,
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
) -> Result<(), RuntimeError> {
    if !matches!(elem, ElemType::F32 | ElemType::F64) {
        return Err(RuntimeError::Unsupported(elem, "gemm"));
    }
    // (column stride, row stride) of op(A) [m,k] and op(B) [k,n].
    let (a_cs, a_rs) = if ta { (m as isize, 1) } else { (1, k as isize) };
    let (b_cs, b_rs) = if tb { (k as isize, 1) } else { (1, n as isize) };
    let large = m * n * k >= PARALLEL_GEMM_MIN_MACS;
    let par = if large {
        gemm::Parallelism::Rayon(std::thread::available_parallelism().map_or(1, |p| p.get()))
    } else {
        gemm::Parallelism::None
    };
    let (a, b, c) = (a as usize, b as usize, c as usize);
    let one = |i: usize| match elem {
        ElemType::F32 => gemm_one::<f32>(a, b, c, i, m, n, k, (a_cs, a_rs, b_cs, b_rs), par),
        _ => gemm_one::<f64>(a, b, c, i, m, n, k, (a_cs, a_rs, b_cs, b_rs), par),
    };
    if batch > 1 && !large {
        use rayon::prelude::*;
        (0..batch).into_par_iter().for_each(one);
    } else {
        (0..batch).for_each(one);
    }
    Ok(())
}

/// Batch element `i` of a strided GEMM; pointers are passed as addresses so the closure can be
/// shared by threads (each element writes its own `c` block).
#[allow(clippy::too_many_arguments)]
fn gemm_one<T: 'static + Copy + num_zero::Zero>(
    a: usize,
    b: usize,
    c: usize,
    i: usize,
    m: usize,
    n: usize,
    k: usize,
    (a_cs, a_rs, b_cs, b_rs): (isize, isize, isize, isize),
    par: gemm::Parallelism,
) {
    let (a, b, c) = (a as *const T, b as *const T, c as *mut T);
    // SAFETY: the caller guarantees the buffers hold `batch` blocks of these shapes.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.add(i * m * n),
            1,
            n as isize,
            false,
            a.add(i * m * k),
            a_cs,
            a_rs,
            b.add(i * k * n),
            b_cs,
            b_rs,
            T::zero(),
            T::one(),
            false,
            false,
            false,
            par,
        )
    }
}

/// The 0 and 1 of the GEMM element types.
mod num_zero {
    pub trait Zero {
        fn zero() -> Self;
        fn one() -> Self;
    }
    impl Zero for f32 {
        fn zero() -> Self {
            0.0
        }
        fn one() -> Self {
            1.0
        }
    }
    impl Zero for f64 {
        fn zero() -> Self {
            0.0
        }
        fn one() -> Self {
            1.0
        }
    }
}

unsafe fn gather(
    table: &BufferRef,
    tp: *mut u8,
    idx: &BufferRef,
    ip: *mut u8,
    out: &BufferRef,
    op: *mut u8,
) -> Result<(), RuntimeError> {
    let rows = table.shape[0];
    let row_bytes = table.bytes() / rows.max(1);
    for (i, &id) in indices_of(idx, ip)?.iter().enumerate() {
        if id < 0 || id as usize >= rows {
            return Err(RuntimeError::IndexOutOfRange {
                step: "gather",
                index: id,
                rows,
            });
        }
        std::ptr::copy_nonoverlapping(
            tp.add(id as usize * row_bytes),
            op.add(i * row_bytes),
            row_bytes,
        );
    }
    let _ = out;
    Ok(())
}

/// `out = 0; out[ids[i], :] += upd[i, :]` for one element type.
unsafe fn scatter_rows<T: Copy + std::ops::AddAssign>(
    ids: &[i64],
    upd: *const T,
    out: *mut T,
    rows: usize,
    row: usize,
) -> Result<(), RuntimeError> {
    for (i, &id) in ids.iter().enumerate() {
        if id < 0 || id as usize >= rows {
            return Err(RuntimeError::IndexOutOfRange {
                step: "scatter_add",
                index: id,
                rows,
            });
        }
        for j in 0..row {
            *out.add(id as usize * row + j) += *upd.add(i * row + j);
        }
    }
    Ok(())
}

unsafe fn scatter_add(
    idx: &BufferRef,
    ip: *mut u8,
    upd: &BufferRef,
    up: *mut u8,
    out: &BufferRef,
    op: *mut u8,
) -> Result<(), RuntimeError> {
    let rows = out.shape[0];
    let row = out.numel() / rows.max(1);
    let ids = indices_of(idx, ip)?;
    std::ptr::write_bytes(op, 0, out.bytes());
    match upd.elem {
        ElemType::F32 => scatter_rows(&ids, up as *const f32, op as *mut f32, rows, row),
        ElemType::F64 => scatter_rows(&ids, up as *const f64, op as *mut f64, rows, row),
        e => Err(RuntimeError::Unsupported(e, "scatter_add")),
    }
}
