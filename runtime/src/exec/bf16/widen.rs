//! The widening bf16 GEMM: both operands widened to f32 (exact), one f32 GEMM through the host's
//! f32 path (the `gemm` crate), the f32 result rounded to bf16. Runs on every CPU.

use super::{round_bf16, widen_bf16, Shape, PARALLEL_MIN_MACS};
use plan::ElemType;
use rayon::prelude::*;
use std::cell::RefCell;

thread_local! {
    /// Widened a, b and the f32 result; grown to the largest GEMM, kept between calls (fresh
    /// allocations of this size would fault in new pages every step).
    static SCRATCH: RefCell<[Vec<f32>; 3]> = const { RefCell::new([Vec::new(), Vec::new(), Vec::new()]) };
}

/// Elements per task of the parallel conversions.
const CHUNK: usize = 1 << 14;

/// `dst[i] = f(src[i])`, split over the threads when `parallel`.
fn convert<S: Copy + Sync, D: Send>(
    src: &[S],
    dst: &mut [D],
    parallel: bool,
    f: impl Fn(S) -> D + Sync,
) {
    let one = |(s, d): (&[S], &mut [D])| {
        for (x, y) in s.iter().zip(d) {
            *y = f(*x);
        }
    };
    if parallel {
        src.par_chunks(CHUNK)
            .zip(dst.par_chunks_mut(CHUNK))
            .for_each(one);
    } else {
        one((src, dst));
    }
}

fn grown(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len {
        v.resize(len, 0.0);
    }
    &mut v[..len]
}

/// # Safety
/// As [`super::gemm`].
pub(super) unsafe fn gemm(a: *const u16, b: *const u16, c: *mut u16, s: &Shape) {
    if s.batch > 1 && s.macs() < PARALLEL_MIN_MACS {
        // Small GEMMs (attention heads): one per task, widened and rounded while in cache.
        let (a, b, c) = (a as usize, b as usize, c as usize);
        let one = Shape { batch: 1, ..*s };
        (0..s.batch).into_par_iter().for_each(|i| {
            let (a, b, c) = (a as *const u16, b as *const u16, c as *mut u16);
            blocks(
                a.add(i * s.m * s.k),
                b.add(i * s.k * s.n),
                c.add(i * s.m * s.n),
                &one,
                false,
            );
        });
    } else {
        blocks(a, b, c, s, s.batch * s.macs() >= PARALLEL_MIN_MACS);
    }
}

/// All of `s`'s blocks at once: widen, one (batched) f32 GEMM, round.
unsafe fn blocks(a: *const u16, b: *const u16, c: *mut u16, s: &Shape, parallel: bool) {
    let (la, lb, lc) = (
        s.batch * s.m * s.k,
        s.batch * s.k * s.n,
        s.batch * s.m * s.n,
    );
    let (a, b) = (
        std::slice::from_raw_parts(a, la),
        std::slice::from_raw_parts(b, lb),
    );
    let c = std::slice::from_raw_parts_mut(c, lc);
    SCRATCH.with(|cell| {
        let mut scratch = cell.borrow_mut();
        let [wa, wb, wc] = &mut *scratch;
        let (wa, wb, wc) = (grown(wa, la), grown(wb, lb), grown(wc, lc));
        convert(a, wa, parallel, widen_bf16);
        convert(b, wb, parallel, widen_bf16);
        // SAFETY: the widened buffers hold the same blocks as the operands, in f32.
        super::super::host_math::gemm(
            ElemType::F32,
            wa.as_mut_ptr() as *mut u8,
            wb.as_mut_ptr() as *mut u8,
            wc.as_mut_ptr() as *mut u8,
            s.ta,
            s.tb,
            s.batch,
            s.m,
            s.n,
            s.k,
        )
        .expect("f32 GEMMs run on the host");
        convert(wc, c, parallel, round_bf16);
    });
}
