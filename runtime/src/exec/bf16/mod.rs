//! bf16 GEMMs on the host CPU (`--precision bf16`): `c = bf16(op(a)·op(b))`, products exact and
//! sums in f32, as the mixed-precision graph says (the interpreter sums in f64; the result is
//! rounded to bf16 either way). Two kernels, one chosen per process by the CPU ([`kernel`]):
//!
//! - [`Bf16Kernel::Dot`]: AVX512-BF16's `vdpbf16ps` on operands packed as bf16 pairs
//!   (`packed.rs`). Twice the multiply rate of f32 FMAs where the CPU runs it at full rate (AMD
//!   Zen 4/5).
//! - [`Bf16Kernel::Widen`]: operands widened to f32 (exact), the f32 GEMM of the `gemm` crate,
//!   the result rounded (`widen.rs`). Every CPU; and the faster one where
//!   `vdpbf16ps` runs at half rate (measured on an Intel Xeon: 0.5 `vdpbf16ps` vs 2 f32 FMAs per
//!   cycle, see BENCHMARKS.md).
//!
//! The choice is fixed per machine (not timed at start-up) so that a resumed run sums in the same
//! order as the run it continues. `TBC_BF16_GEMM=dot|widen` overrides it.

#[cfg(target_arch = "x86_64")]
mod packed;
mod widen;

use std::sync::OnceLock;

/// How bf16 GEMMs multiply on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bf16Kernel {
    /// AVX512-BF16 `vdpbf16ps` on bf16 pairs.
    Dot,
    /// f32 FMAs on operands widened to f32.
    Widen,
}

/// The kernel of this process and, for the widening one, why (the trainer's one-line notice).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bf16Choice {
    pub kernel: Bf16Kernel,
    pub why: &'static str,
}

/// Whether the CPU executes AVX512-BF16 (and AVX-512F, which its registers need).
pub fn cpu_has_avx512_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the CPU is AMD's (whose Zen 4/5 run `vdpbf16ps` at the full vector rate).
fn cpu_is_amd() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // cpuid leaf 0 (the vendor) exists on every x86-64 CPU.
        let r = std::arch::x86_64::__cpuid(0);
        let mut vendor = [0u8; 12];
        vendor[..4].copy_from_slice(&r.ebx.to_le_bytes());
        vendor[4..8].copy_from_slice(&r.edx.to_le_bytes());
        vendor[8..].copy_from_slice(&r.ecx.to_le_bytes());
        &vendor == b"AuthenticAMD"
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The choice for a CPU with these properties and this `TBC_BF16_GEMM` value.
pub fn choose(has_bf16: bool, amd: bool, var: Option<&str>) -> Result<Bf16Choice, String> {
    let widen = |why| Bf16Choice {
        kernel: Bf16Kernel::Widen,
        why,
    };
    let dot = Bf16Choice {
        kernel: Bf16Kernel::Dot,
        why: "AVX512-BF16",
    };
    match var.map(str::trim) {
        None | Some("") | Some("auto") => Ok(if !has_bf16 {
            widen("this CPU has no AVX512-BF16")
        } else if amd {
            dot
        } else {
            widen("vdpbf16ps runs at half the f32 FMA rate on Intel CPUs without AMX")
        }),
        Some("widen") => Ok(widen("TBC_BF16_GEMM=widen")),
        Some("dot") if has_bf16 => Ok(dot),
        Some("dot") => Ok(widen("TBC_BF16_GEMM=dot, but this CPU has no AVX512-BF16")),
        Some(other) => Err(format!(
            "TBC_BF16_GEMM={other}: expected auto, dot (AVX512-BF16) or widen (f32 FMAs)"
        )),
    }
}

impl Bf16Choice {
    /// For `trainer info`.
    pub fn describe(&self) -> String {
        match self.kernel {
            Bf16Kernel::Dot => "vdpbf16ps (AVX512-BF16)".into(),
            Bf16Kernel::Widen => format!("f32 GEMMs on operands widened to f32 ({})", self.why),
        }
    }
}

/// The choice for this CPU and the environment's `TBC_BF16_GEMM`.
pub fn this_cpu() -> Result<Bf16Choice, String> {
    let var = std::env::var("TBC_BF16_GEMM").ok();
    choose(cpu_has_avx512_bf16(), cpu_is_amd(), var.as_deref())
}

/// This process's bf16 GEMM kernel: chosen once; the widening one says why on stderr, once.
pub fn kernel() -> Result<Bf16Kernel, String> {
    static CHOICE: OnceLock<Result<Bf16Choice, String>> = OnceLock::new();
    let choice = CHOICE.get_or_init(|| {
        let c = this_cpu()?;
        if c.kernel == Bf16Kernel::Widen {
            eprintln!(
                "tbc: bf16 GEMMs run as f32 GEMMs on operands widened to f32 ({})",
                c.why
            );
        }
        Ok(c)
    });
    choice.as_ref().map(|c| c.kernel).map_err(Clone::clone)
}

/// f32 → bf16 bits, round to nearest even, NaN kept quiet (the `half` crate's rounding, as the
/// interpreter's and the loop kernels').
#[inline(always)]
pub fn round_bf16(x: f32) -> u16 {
    half::bf16::from_f32(x).to_bits()
}

/// bf16 bits → f32 (exact).
#[inline(always)]
pub fn widen_bf16(x: u16) -> f32 {
    half::bf16::from_bits(x).to_f32()
}

/// Row-major `c[i] = bf16(op(a[i])·op(b[i]))` for every batch index `i` (bf16 bits in `u16`).
///
/// # Safety
/// `a`, `b`, `c` hold `batch` blocks of `m·k`, `k·n`, `m·n` elements; `c` overlaps neither.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm(
    kernel: Bf16Kernel,
    a: *const u16,
    b: *const u16,
    c: *mut u16,
    ta: bool,
    tb: bool,
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
) {
    let shape = Shape {
        ta,
        tb,
        batch,
        m,
        n,
        k,
    };
    #[cfg(target_arch = "x86_64")]
    if kernel == Bf16Kernel::Dot && cpu_has_avx512_bf16() {
        return packed::gemm(a, b, c, &shape);
    }
    widen::gemm(a, b, c, &shape)
}

/// The problem of one batched GEMM call.
#[derive(Clone, Copy, Debug)]
struct Shape {
    ta: bool,
    tb: bool,
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
}

impl Shape {
    /// (row stride, column stride) of op(A) `[m,k]` and op(B) `[k,n]`, in elements.
    fn strides(&self) -> ((usize, usize), (usize, usize)) {
        let a = if self.ta { (1, self.m) } else { (self.k, 1) };
        let b = if self.tb { (1, self.k) } else { (self.n, 1) };
        (a, b)
    }

    fn macs(&self) -> usize {
        self.m * self.n * self.k
    }
}

/// GEMMs smaller than this many multiply-adds run on one thread (threading costs more).
const PARALLEL_MIN_MACS: usize = 1 << 21;

#[cfg(test)]
mod tests;
