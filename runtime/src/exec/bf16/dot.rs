//! The AVX512-BF16 GEMM: operands packed as bf16 pairs along k, a 12×32 micro-kernel of
//! `vdpbf16ps` (each multiplies 16 pairs and adds both products to 16 f32 sums), blocked for the
//! caches as in BLIS: a `KC×NC` block of op(B) packed once and shared by the threads, each
//! thread packing its own `MC×KC` block of op(A). Sums stay f32 across k blocks (an f32
//! accumulator the size of `c`) and are rounded to bf16 once at the end.

use super::{round_bf16, Shape, PARALLEL_MIN_MACS};
use rayon::prelude::*;
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Rows of the micro-kernel (12 × 2 accumulators of the 32 zmm registers).
const MR: usize = 12;
/// Columns of the micro-kernel (two zmm of f32).
const NR: usize = 32;
/// k per block (even): a 32×512 bf16 panel of B is 32 KiB, in L1 while A's panels stream.
const KC: usize = 512;
/// Rows per A block (a multiple of MR): 96×512 bf16 = 96 KiB in L2.
const MC: usize = 96;
/// Columns per B block (a multiple of NR): 512×2048 bf16 = 2 MiB.
const NC: usize = 2048;

thread_local! {
    static PACKED_A: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    static PACKED_B: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    static ACC: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

fn grown<T: Copy + Default>(v: &mut Vec<T>, len: usize) -> &mut [T] {
    if v.len() < len {
        v.resize(len, T::default());
    }
    &mut v[..len]
}

/// An operand: its address (shared by threads as an integer) and (row, column) strides.
#[derive(Clone, Copy)]
struct Operand {
    base: usize,
    rs: usize,
    cs: usize,
    rows: usize,
    cols: usize,
}

impl Operand {
    /// Element `(r, c)`, or 0 outside the operand.
    #[inline(always)]
    unsafe fn at(&self, r: usize, c: usize) -> u32 {
        if r < self.rows && c < self.cols {
            *(self.base as *const u16).add(r * self.rs + c * self.cs) as u32
        } else {
            0
        }
    }

    /// The pair `(r, c)`, `(r, c+1)` along a row (A) as one u32, low half first.
    #[inline(always)]
    unsafe fn row_pair(&self, r: usize, c: usize) -> u32 {
        self.at(r, c) | self.at(r, c + 1) << 16
    }

    /// The pair `(r, c)`, `(r+1, c)` down a column (B).
    #[inline(always)]
    unsafe fn col_pair(&self, r: usize, c: usize) -> u32 {
        self.at(r, c) | self.at(r + 1, c) << 16
    }
}

/// Packs rows `i0..i0+mc`, k `p0..p0+kc` of A as `[mc/MR][kc/2][MR]` pairs (zeros past the
/// edges).
unsafe fn pack_a(a: &Operand, i0: usize, mc: usize, p0: usize, kc: usize, out: &mut [u32]) {
    let kc2 = kc.div_ceil(2);
    let mut o = 0;
    for ir in (0..mc).step_by(MR) {
        for p in 0..kc2 {
            for i in 0..MR {
                let r = i0 + ir + i;
                out[o] = if ir + i < mc {
                    let c = p0 + 2 * p;
                    if 2 * p + 1 < kc {
                        a.row_pair(r, c)
                    } else {
                        a.at(r, c)
                    }
                } else {
                    0
                };
                o += 1;
            }
        }
    }
}

/// Packs k `p0..p0+kc`, columns `j0..j0+nc` of B as `[nc/NR][kc/2][NR]` pairs.
unsafe fn pack_b(b: &Operand, p0: usize, kc: usize, j0: usize, nc: usize, out: &mut [u32]) {
    let kc2 = kc.div_ceil(2);
    let mut o = 0;
    for jr in (0..nc).step_by(NR) {
        for p in 0..kc2 {
            for j in 0..NR {
                let c = j0 + jr + j;
                out[o] = if jr + j < nc {
                    let r = p0 + 2 * p;
                    if 2 * p + 1 < kc {
                        b.col_pair(r, c)
                    } else {
                        b.at(r, c)
                    }
                } else {
                    0
                };
                o += 1;
            }
        }
    }
}

/// `c[MR×NR] (+)= a-panel · b-panel` over `kc2` pairs; `c` rows `ldc` apart.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn micro(kc2: usize, a: *const u32, b: *const u32, c: *mut f32, ldc: usize, add: bool) {
    let mut acc0 = [_mm512_setzero_ps(); MR];
    let mut acc1 = [_mm512_setzero_ps(); MR];
    if add {
        for i in 0..MR {
            acc0[i] = _mm512_loadu_ps(c.add(i * ldc));
            acc1[i] = _mm512_loadu_ps(c.add(i * ldc + 16));
        }
    }
    for p in 0..kc2 {
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
        _mm512_storeu_ps(c.add(i * ldc), acc0[i]);
        _mm512_storeu_ps(c.add(i * ldc + 16), acc1[i]);
    }
}

/// One `MC`-row block of C for a packed B block: packs the block's A, runs the micro-kernels
/// over every (column panel, row panel), edges through a full-size tile.
#[allow(clippy::too_many_arguments)]
unsafe fn a_block(
    a: &Operand,
    bp: &[u32],
    acc: usize,
    n: usize,
    (i0, mc): (usize, usize),
    (p0, kc): (usize, usize),
    (j0, nc): (usize, usize),
) {
    let kc2 = kc.div_ceil(2);
    let add = p0 > 0;
    PACKED_A.with(|cell| {
        let mut v = cell.borrow_mut();
        let ap = grown(&mut v, mc.div_ceil(MR) * MR * kc2);
        pack_a(a, i0, mc, p0, kc, ap);
        let acc = acc as *mut f32;
        let mut tile = [0f32; MR * NR];
        for (jp, jr) in (0..nc).step_by(NR).enumerate() {
            let b = bp.as_ptr().add(jp * kc2 * NR);
            let cols = NR.min(nc - jr);
            for (ip, ir) in (0..mc).step_by(MR).enumerate() {
                let rows = MR.min(mc - ir);
                let a = ap.as_ptr().add(ip * kc2 * MR);
                let c = acc.add((i0 + ir) * n + j0 + jr);
                if rows == MR && cols == NR {
                    micro(kc2, a, b, c, n, add);
                } else {
                    micro(kc2, a, b, tile.as_mut_ptr(), NR, false);
                    for r in 0..rows {
                        for j in 0..cols {
                            let x = c.add(r * n + j);
                            let t = tile[r * NR + j];
                            *x = if add { *x + t } else { t };
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
    ACC.with(|acc_cell| {
        PACKED_B.with(|b_cell| {
            let mut acc_v = acc_cell.borrow_mut();
            let acc = grown(&mut acc_v, m * n);
            let mut b_v = b_cell.borrow_mut();
            let acc_addr = acc.as_mut_ptr() as usize;
            for j0 in (0..n).step_by(NC) {
                let nc = NC.min(n - j0);
                for p0 in (0..k).step_by(KC) {
                    let kc = KC.min(k - p0);
                    let bp = grown(&mut b_v, nc.div_ceil(NR) * NR * kc.div_ceil(2));
                    pack_b(&b, p0, kc, j0, nc, bp);
                    let bp: &[u32] = bp;
                    let block = |i0: usize| {
                        let mc = MC.min(m - i0);
                        a_block(&a, bp, acc_addr, n, (i0, mc), (p0, kc), (j0, nc));
                    };
                    if parallel {
                        (0..m).into_par_iter().step_by(MC).for_each(block);
                    } else {
                        (0..m).step_by(MC).for_each(block);
                    }
                }
            }
            let c = std::slice::from_raw_parts_mut(c, m * n);
            if k == 0 {
                c.fill(0);
            } else if parallel {
                c.par_chunks_mut(1 << 14)
                    .zip(acc.par_chunks(1 << 14))
                    .for_each(|(c, x)| c.iter_mut().zip(x).for_each(|(y, &v)| *y = round_bf16(v)));
            } else {
                c.iter_mut()
                    .zip(acc.iter())
                    .for_each(|(y, &v)| *y = round_bf16(v));
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
            rows: s.m,
            cols: s.k,
        };
        let ob = Operand {
            base: b + 2 * i * s.k * s.n,
            rs: brs,
            cs: bcs,
            rows: s.k,
            cols: s.n,
        };
        one(oa, ob, (c as *mut u16).add(i * s.m * s.n), s, parallel);
    };
    if s.batch > 1 && !large {
        (0..s.batch).into_par_iter().for_each(|i| run(i, false));
    } else {
        (0..s.batch).for_each(|i| run(i, large));
    }
}
