//! The AVX512-BF16 GEMM, blocked for the caches as in BLIS: a 512 × `NC` block of op(B) packed
//! once per block (threads split the panels), each thread packing its own `MC` × 512 block of
//! op(A), both as bf16 pairs along k, and a 12×32 micro-kernel of `vdpbf16ps` (each multiplies
//! 16 pairs and adds both products to 16 f32 sums) over them. Sums stay f32 across k blocks (an
//! f32 accumulator the size of `c`); the last k block rounds them to bf16 as it stores.
//!
//! (The same blocking with f32 FMAs on operands widened while packing was tried for the
//! widening kernel: 8×48 and 12×32 tiles, k blocks of 128–256, reached 75–85 % of the `gemm`
//! crate's f32 rate here, below widening into copies for the `gemm` crate, so that is what the
//! widening kernel does.)

use super::{round_bf16, Shape, PARALLEL_MIN_MACS};
use rayon::prelude::*;
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Rows of the micro-kernel (12 × 2 sums in 24 of the 32 zmm registers).
const MR: usize = 12;
/// Columns of the micro-kernel (two zmm of f32).
const NR: usize = 32;
/// k per block (256 pairs): a 32-column panel of B is 32 KiB, in L1 while A's panels stream.
const KC: usize = 512;
/// Rows per A block (a multiple of MR): 96 × 512 bf16 = 96 KiB, in L2.
const MC: usize = 96;
/// Columns per B block (a multiple of NR): 512 × 2048 bf16 = 2 MiB.
const NC: usize = 2048;

thread_local! {
    static PACKED_A: RefCell<Vec<Line>> = const { RefCell::new(Vec::new()) };
    static PACKED_B: RefCell<Vec<Line>> = const { RefCell::new(Vec::new()) };
    static ACC: RefCell<Vec<Line>> = const { RefCell::new(Vec::new()) };
}

/// One cache line: scratch buffers are vectors of these, so that every 64-byte load of a packed
/// panel or of a partial-sum row is one line, not two.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Line([u32; 16]);

/// The first `len` 4-byte words of `v`, grown to hold them.
fn grown(v: &mut Vec<Line>, len: usize) -> &mut [u32] {
    let lines = len.div_ceil(16);
    if v.len() < lines {
        v.resize(lines, Line::default());
    }
    // SAFETY: `Line` is 16 u32s without padding; the vector holds at least `len` of them.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u32, len) }
}

/// An operand: its address (shared by threads as an integer) and (row, column) strides.
#[derive(Clone, Copy)]
struct Operand {
    base: usize,
    rs: usize,
    cs: usize,
}

/// Packs one panel: `width` rows of op(A) (or columns of op(B)) from `w0`, of which `valid`
/// exist, for k `p0..p0+kc`, as `[kc/2][width]` pairs (zeros past the edges). `(w_stride,
/// k_stride)` step through the operand along the panel's width and along k; a contiguous width
/// gets a loop the compiler vectorizes.
unsafe fn pack_panel(
    base: *const u16,
    (w_stride, k_stride): (usize, usize),
    (w0, width, valid): (usize, usize, usize),
    (p0, kc): (usize, usize),
    out: &mut [u32],
) {
    let at = |w: usize, p: usize| *base.add((w0 + w) * w_stride + (p0 + p) * k_stride) as u32;
    let full = kc / 2;
    if w_stride == 1 && valid == width {
        for s in 0..full {
            let lo = base.add(w0 + (p0 + 2 * s) * k_stride);
            let hi = lo.add(k_stride);
            let dst = &mut out[s * width..(s + 1) * width];
            for (w, d) in dst.iter_mut().enumerate() {
                *d = *lo.add(w) as u32 | (*hi.add(w) as u32) << 16;
            }
        }
    } else {
        for w in 0..width {
            for s in 0..full {
                out[s * width + w] = if w < valid {
                    at(w, 2 * s) | at(w, 2 * s + 1) << 16
                } else {
                    0
                };
            }
        }
    }
    if kc % 2 == 1 {
        for w in 0..width {
            out[full * width + w] = if w < valid { at(w, kc - 1) } else { 0 };
        }
    }
}

/// Packs rows `i0..i0+mc` of A for k `p0..p0+kc` as `[mc/MR][kc/2][MR]`.
unsafe fn pack_a(a: &Operand, (i0, mc): (usize, usize), (p0, kc): (usize, usize), out: &mut [u32]) {
    let slots = kc.div_ceil(2);
    for (ip, ir) in (0..mc).step_by(MR).enumerate() {
        let panel = &mut out[ip * slots * MR..(ip + 1) * slots * MR];
        let w = (i0 + ir, MR, MR.min(mc - ir));
        pack_panel(a.base as *const u16, (a.rs, a.cs), w, (p0, kc), panel);
    }
}

/// Packs columns `j0..j0+nc` of B for k `p0..p0+kc` as `[nc/NR][kc/2][NR]`, the panels split
/// over the threads when `parallel`.
unsafe fn pack_b(
    b: &Operand,
    (p0, kc): (usize, usize),
    (j0, nc): (usize, usize),
    out: &mut [u32],
    parallel: bool,
) {
    let slots = kc.div_ceil(2);
    let base = b.base;
    let panel = |(jp, out): (usize, &mut [u32])| {
        let jr = jp * NR;
        let w = (j0 + jr, NR, NR.min(nc - jr));
        pack_panel(base as *const u16, (b.cs, b.rs), w, (p0, kc), out);
    };
    if parallel {
        out.par_chunks_mut(slots * NR).enumerate().for_each(panel);
    } else {
        out.chunks_mut(slots * NR).enumerate().for_each(panel);
    }
}

/// Where a micro-kernel's 12×32 sums go.
#[derive(Clone, Copy)]
enum Store {
    /// f32 at `c` (rows `ldc` apart), added to what is there when `add`.
    F32 { c: *mut f32, ldc: usize, add: bool },
    /// Added to the f32 partial sums at `acc` (when `add`), rounded to bf16 at `c`; both with
    /// rows `ldc` apart.
    Bf16 {
        acc: *const f32,
        c: *mut u16,
        ldc: usize,
        add: bool,
    },
}

/// 16 f32 → 16 bf16 bits (round to nearest even, NaN quiet), as [`round_bf16`].
#[inline(always)]
unsafe fn round16(v: __m512) -> __m256i {
    let bits = _mm512_castps_si512(v);
    let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(1));
    let bias = _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF));
    let rounded = _mm512_srli_epi32::<16>(_mm512_add_epi32(bits, bias));
    let nan = _mm512_srli_epi32::<16>(_mm512_or_si512(bits, _mm512_set1_epi32(0x0040_0000)));
    let is_nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
    _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(is_nan, rounded, nan))
}

/// [`round16`] of 16 values, for the tests.
#[cfg(test)]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn round16_of(x: [f32; 16]) -> [u16; 16] {
    std::mem::transmute(round16(_mm512_loadu_ps(x.as_ptr())))
}

/// Stores row `i` of the micro-kernel's sums (`v`: its two vectors of 16 columns).
#[inline(always)]
unsafe fn store_row(v: [__m512; 2], i: usize, out: Store) {
    match out {
        Store::F32 { c, ldc, add } => {
            let row = c.add(i * ldc);
            for (j, x) in v.into_iter().enumerate() {
                let x = if add {
                    _mm512_add_ps(_mm512_loadu_ps(row.add(16 * j)), x)
                } else {
                    x
                };
                _mm512_storeu_ps(row.add(16 * j), x);
            }
        }
        Store::Bf16 { acc, c, ldc, add } => {
            let (src, dst) = (acc.add(i * ldc), c.add(i * ldc));
            for (j, x) in v.into_iter().enumerate() {
                let x = if add {
                    _mm512_add_ps(_mm512_loadu_ps(src.add(16 * j)), x)
                } else {
                    x
                };
                _mm256_storeu_si256(dst.add(16 * j) as *mut __m256i, round16(x));
            }
        }
    }
}

/// The micro-kernel: `vdpbf16ps` over `slots` pairs of packed A and B panels.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn micro(slots: usize, a: *const u32, b: *const u32, out: Store) {
    let mut acc0 = [_mm512_setzero_ps(); MR];
    let mut acc1 = [_mm512_setzero_ps(); MR];
    for p in 0..slots {
        let bp = b.add(p * NR) as *const f32;
        let b0: __m512bh = std::mem::transmute(_mm512_loadu_ps(bp));
        let b1: __m512bh = std::mem::transmute(_mm512_loadu_ps(bp.add(16)));
        let ap = a.add(p * MR);
        for i in 0..MR {
            let ai: __m512bh = std::mem::transmute(_mm512_set1_epi32(*ap.add(i) as i32));
            acc0[i] = _mm512_dpbf16_ps(acc0[i], ai, b0);
            acc1[i] = _mm512_dpbf16_ps(acc1[i], ai, b1);
        }
    }
    for i in 0..MR {
        store_row([acc0[i], acc1[i]], i, out);
    }
}

/// One batch element's state shared by its threads (addresses as integers).
#[derive(Clone, Copy)]
struct Block {
    /// The f32 partial sums, `m × n` (empty when k is one block).
    acc: usize,
    /// The bf16 result, `m × n`.
    c: usize,
    n: usize,
    /// The k block `(p0, kc)` and whether it is the first and the last.
    k: (usize, usize),
    first: bool,
    last: bool,
    /// The column block `(j0, nc)`.
    j: (usize, usize),
}

/// One `MC`-row block of C for a packed B block: packs the block's A and runs the micro-kernel
/// over every (column panel, row panel); edge tiles through a full-size f32 tile.
unsafe fn a_block(a: &Operand, bp: &[u32], blk: &Block, (i0, mc): (usize, usize)) {
    let (p0, kc) = blk.k;
    let (j0, nc) = blk.j;
    let slots = kc.div_ceil(2);
    PACKED_A.with(|cell| {
        let mut v = cell.borrow_mut();
        let ap = grown(&mut v, mc.div_ceil(MR) * MR * slots);
        pack_a(a, (i0, mc), (p0, kc), ap);
        let (acc, c, n) = (blk.acc as *mut f32, blk.c as *mut u16, blk.n);
        let mut tile = [0f32; MR * NR];
        for (jp, jr) in (0..nc).step_by(NR).enumerate() {
            let b = bp.as_ptr().add(jp * slots * NR);
            let cols = NR.min(nc - jr);
            for (ip, ir) in (0..mc).step_by(MR).enumerate() {
                let rows = MR.min(mc - ir);
                let a = ap.as_ptr().add(ip * slots * MR);
                let at = (i0 + ir) * n + j0 + jr;
                // (`acc` is empty when k is one block: never read or written then.)
                if rows == MR && cols == NR {
                    let out = if blk.last {
                        Store::Bf16 {
                            acc: acc.wrapping_add(at),
                            c: c.add(at),
                            ldc: n,
                            add: !blk.first,
                        }
                    } else {
                        Store::F32 {
                            c: acc.wrapping_add(at),
                            ldc: n,
                            add: !blk.first,
                        }
                    };
                    micro(slots, a, b, out);
                    continue;
                }
                let out = Store::F32 {
                    c: tile.as_mut_ptr(),
                    ldc: NR,
                    add: false,
                };
                micro(slots, a, b, out);
                for r in 0..rows {
                    for j in 0..cols {
                        let (x, t) = (acc.wrapping_add(at + r * n + j), tile[r * NR + j]);
                        let sum = if blk.first { t } else { *x + t };
                        if blk.last {
                            *c.add(at + r * n + j) = round_bf16(sum);
                        } else {
                            *x = sum;
                        }
                    }
                }
            }
        }
    });
}

/// One batch element: `c = bf16(a·b)`.
unsafe fn one(a: Operand, b: Operand, c: *mut u16, s: &Shape, parallel: bool) {
    let (m, n, k) = (s.m, s.n, s.k);
    if k == 0 {
        std::slice::from_raw_parts_mut(c, m * n).fill(0);
        return;
    }
    ACC.with(|acc_cell| {
        PACKED_B.with(|b_cell| {
            let mut acc_v = acc_cell.borrow_mut();
            let acc = grown(&mut acc_v, if k > KC { m * n } else { 0 });
            let mut b_v = b_cell.borrow_mut();
            for j0 in (0..n).step_by(NC) {
                let nc = NC.min(n - j0);
                for p0 in (0..k).step_by(KC) {
                    let kc = KC.min(k - p0);
                    let bp = grown(&mut b_v, nc.div_ceil(NR) * NR * kc.div_ceil(2));
                    pack_b(&b, (p0, kc), (j0, nc), bp, parallel);
                    let bp: &[u32] = bp;
                    let blk = Block {
                        acc: acc.as_mut_ptr() as usize,
                        c: c as usize,
                        n,
                        k: (p0, kc),
                        first: p0 == 0,
                        last: p0 + kc == k,
                        j: (j0, nc),
                    };
                    let rows = |i0: usize| a_block(&a, bp, &blk, (i0, MC.min(m - i0)));
                    if parallel {
                        (0..m).into_par_iter().step_by(MC).for_each(rows);
                    } else {
                        (0..m).step_by(MC).for_each(rows);
                    }
                }
            }
        })
    });
}

/// # Safety
/// As [`super::gemm`], on a CPU with AVX-512F and AVX512-BF16.
pub(super) unsafe fn gemm(a: *const u16, b: *const u16, c: *mut u16, s: &Shape) {
    let ((ars, acs), (brs, bcs)) = s.strides();
    let large = s.macs() >= PARALLEL_MIN_MACS;
    let (a, b, c) = (a as usize, b as usize, c as usize);
    let run = |i: usize, parallel: bool| {
        let oa = Operand {
            base: a + 2 * i * s.m * s.k,
            rs: ars,
            cs: acs,
        };
        let ob = Operand {
            base: b + 2 * i * s.k * s.n,
            rs: brs,
            cs: bcs,
        };
        one(oa, ob, (c as *mut u16).add(i * s.m * s.n), s, parallel);
    };
    if s.batch > 1 && !large {
        (0..s.batch).into_par_iter().for_each(|i| run(i, false));
    } else {
        (0..s.batch).for_each(|i| run(i, large));
    }
}
