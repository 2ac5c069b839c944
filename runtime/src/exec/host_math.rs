//! The library steps on the host CPU: GEMM through the `gemm` crate, row gather and
//! scatter-add.

use super::RuntimeError;
use plan::exec::BufferRef;
use plan::ElemType;

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

/// `c[r, j] += bias[j]` for `rows` rows of `n` (a GEMM's bias epilogue).
pub(crate) unsafe fn add_bias(
    elem: ElemType,
    c: *mut u8,
    bias: *mut u8,
    rows: usize,
    n: usize,
) -> Result<(), RuntimeError> {
    unsafe fn rows_plus<T: Copy + std::ops::AddAssign>(
        c: *mut T,
        b: *const T,
        rows: usize,
        n: usize,
    ) {
        let b = std::slice::from_raw_parts(b, n);
        for r in 0..rows {
            let row = std::slice::from_raw_parts_mut(c.add(r * n), n);
            for (x, &y) in row.iter_mut().zip(b) {
                *x += y;
            }
        }
    }
    match elem {
        ElemType::F32 => rows_plus(c as *mut f32, bias as *const f32, rows, n),
        ElemType::F64 => rows_plus(c as *mut f64, bias as *const f64, rows, n),
        e => return Err(RuntimeError::Unsupported(e, "gemm bias")),
    }
    Ok(())
}

/// GEMMs smaller than this many multiply-adds run on one thread (threading costs more).
const PARALLEL_GEMM_MIN_MACS: usize = 1 << 21;

/// Row-major `c = op(a)·op(b)` for each batch index, through the `gemm` crate (strides make
/// the transposes free). Large GEMMs are threaded inside the library; batches of small ones
/// (attention heads) are spread over the threads one GEMM each.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm(
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

pub(crate) unsafe fn gather(
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

pub(crate) unsafe fn scatter_add(
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
