//! Vectorizable f32 approximations of `exp`, `log`, `tanh` and `erf`, emitted as plain `arith`
//! (+ `math.floor`/`math.absf`/`math.copysign`, which lower to instructions) scalar code inside a
//! `linalg.generic` body, so that the vectorizer turns them into SIMD code. Rust cannot reach
//! MLIR's `test-math-polynomial-approximation`, and libm calls on vectors are scalarized.
//!
//! Accuracy against an f64 reference, measured by `cpu_kernels::transcendentals_are_accurate`
//! over dense sweeps (see the crate tests and the numbers in `mod.rs`):
//! - `exp`: Cephes `expf` (range reduction by ln 2 in two parts, degree-5 polynomial,
//!   2^n applied in two halves so results down to subnormals and up to overflow are right);
//!   ≤ 1 ulp. exp(+inf) = inf, exp(-inf) = 0, NaN propagates.
//! - `log`: Cephes `logf` (mantissa in [√½, √2), degree-8 polynomial); ≤ 1 ulp, subnormals
//!   handled; log(0) = -inf, log(<0) = NaN, log(inf) = inf.
//! - `tanh`: Cephes `tanhf`: odd polynomial for |x| < 0.625, `1 - 2/(exp(2|x|)+1)` above;
//!   ≤ 1.3 ulp.
//! - `erf`: our own fit (numpy, Lawson-weighted least squares): `x + x·P(x²)` (degree 6) for
//!   |x| < 1, `1 - exp(-x²)·Q(1/x - 0.6)` (degree 8, Q ≈ erfc(x)·exp(x²)) for 1 ≤ |x| ≤ 4,
//!   ±1 beyond; ≤ 1.1 ulp (≤ 1e-7 relative).
//!
//! Horner steps of the polynomials use `math.fma` (one correctly rounded fused multiply-add, an
//! instruction on every target we generate for: x86-64-v3 and up), so results are the same on
//! every supported x86-64 level; nothing else is contracted.

// The coefficient tables keep the published (Cephes) / fitted digits; Rust rounds them to f32.
#![allow(clippy::excessive_precision)]

use super::lower::{Body, Emitter};

/// Cephes `expf` polynomial, highest degree first.
const EXP_P: [f32; 6] = [
    1.987_569_150_0e-4,
    1.398_199_950_7e-3,
    8.333_451_907_3e-3,
    4.166_579_589_4e-2,
    1.666_666_545_9e-1,
    5.000_000_120_1e-1,
];

/// Cephes `logf` polynomial, highest degree first.
const LOG_P: [f32; 9] = [
    7.037_683_629_2e-2,
    -1.151_461_031_0e-1,
    1.167_699_874_0e-1,
    -1.242_014_084_6e-1,
    1.424_932_278_7e-1,
    -1.666_805_766_5e-1,
    2.000_071_476_5e-1,
    -2.499_999_399_3e-1,
    3.333_333_117_4e-1,
];

/// Cephes `tanhf` polynomial for |x| < 0.625, highest degree first.
const TANH_P: [f32; 5] = [
    -5.704_988_727_45e-3,
    2.063_908_879_54e-2,
    -5.373_971_555_31e-2,
    1.333_144_220_36e-1,
    -3.333_328_194_22e-1,
];

/// erf(x)/x - 1 = ERF_A(x²) on |x| < 1, highest degree first.
const ERF_A: [f32; 7] = [
    7.854_060_095_269_233e-5,
    -8.010_258_898_139e-4,
    5.188_336_130_231_619e-3,
    -2.685_381_658_375_263_2e-2,
    1.128_358_542_919_159e-1,
    -3.761_262_595_653_534e-1,
    1.283_791_661_262_512_2e-1,
];

/// erfc(x)·exp(x²) = ERF_B(1/x - 0.6) on 1 ≤ x ≤ 4, highest degree first.
const ERF_B: [f32; 9] = [
    -1.137_491_129_338_741_3e-2,
    -1.659_915_782_511_234_3e-2,
    4.896_836_727_857_59e-2,
    -5.488_315_969_705_582e-2,
    2.956_341_765_820_98e-2,
    4.116_926_342_248_916_6e-2,
    -1.755_807_995_796_203_6e-1,
    3.909_835_815_429_687_5e-1,
    2.962_874_770_164_49e-1,
];

impl Emitter<'_> {
    fn f(&mut self, b: &mut Body, op: &str, x: &str, y: &str) -> String {
        self.op(b, format!("{op} {x}, {y} : f32"))
    }

    fn f1(&mut self, b: &mut Body, op: &str, x: &str) -> String {
        self.op(b, format!("{op} {x} : f32"))
    }

    fn c32(&mut self, b: &mut Body, v: f32) -> String {
        self.fconst(b, v as f64, ir::DType::F32)
    }

    fn ci32(&mut self, b: &mut Body, v: i32) -> String {
        self.iconst(b, v as i64, "i32")
    }

    /// `x·y + z` rounded once.
    fn fma(&mut self, b: &mut Body, x: &str, y: &str, z: &str) -> String {
        self.op(b, format!("math.fma {x}, {y}, {z} : f32"))
    }

    /// Horner evaluation of `coeffs` (highest degree first) at `x`, one fma per step.
    fn horner(&mut self, b: &mut Body, coeffs: &[f32], x: &str) -> String {
        let mut acc = self.c32(b, coeffs[0]);
        for &c in &coeffs[1..] {
            let k = self.c32(b, c);
            acc = self.fma(b, &acc, x, &k);
        }
        acc
    }

    fn select(&mut self, b: &mut Body, c: &str, x: &str, y: &str, ty: &str) -> String {
        self.op(b, format!("arith.select {c}, {x}, {y} : {ty}"))
    }

    fn is_nan(&mut self, b: &mut Body, x: &str) -> String {
        self.op(b, format!("arith.cmpf uno, {x}, {x} : f32"))
    }

    /// 2^n for an i32 `n` in [-126, 127], as f32.
    fn pow2(&mut self, b: &mut Body, n: &str) -> String {
        let bias = self.ci32(b, 127);
        let e = self.op(b, format!("arith.addi {n}, {bias} : i32"));
        let sh = self.ci32(b, 23);
        let bits = self.op(b, format!("arith.shli {e}, {sh} : i32"));
        self.op(b, format!("arith.bitcast {bits} : i32 to f32"))
    }

    /// `exp(x)` in f32.
    pub(crate) fn exp_f32(&mut self, b: &mut Body, x: &str) -> String {
        // Clamp (NaN-ignoring) so that n stays in [-150, 129]; NaN is restored at the end.
        let lo = self.c32(b, -104.0);
        let hi = self.c32(b, 88.8);
        let xc = self.f(b, "arith.maxnumf", x, &lo);
        let xc = self.f(b, "arith.minnumf", &xc, &hi);
        let log2e = self.c32(b, std::f32::consts::LOG2_E);
        let half = self.c32(b, 0.5);
        let t = self.f(b, "arith.mulf", &xc, &log2e);
        let t = self.f(b, "arith.addf", &t, &half);
        let z = self.f1(b, "math.floor", &t);
        let c1 = self.c32(b, 0.693_359_375);
        let c2 = self.c32(b, -2.121_944_4e-4);
        let m1 = self.f(b, "arith.mulf", &z, &c1);
        let r = self.f(b, "arith.subf", &xc, &m1);
        let m2 = self.f(b, "arith.mulf", &z, &c2);
        let r = self.f(b, "arith.subf", &r, &m2);
        let n = self.op(b, format!("arith.fptosi {z} : f32 to i32"));
        let rr = self.f(b, "arith.mulf", &r, &r);
        let p = self.horner(b, &EXP_P, &r);
        let p = self.f(b, "arith.mulf", &p, &rr);
        let p = self.f(b, "arith.addf", &p, &r);
        let one = self.c32(b, 1.0);
        let p = self.f(b, "arith.addf", &p, &one);
        // 2^n = 2^(n>>1) · 2^(n - (n>>1)), both factors normal.
        let c1i = self.ci32(b, 1);
        let n1 = self.op(b, format!("arith.shrsi {n}, {c1i} : i32"));
        let n2 = self.op(b, format!("arith.subi {n}, {n1} : i32"));
        let s1 = self.pow2(b, &n1);
        let s2 = self.pow2(b, &n2);
        let y = self.f(b, "arith.mulf", &p, &s1);
        let y = self.f(b, "arith.mulf", &y, &s2);
        let nan = self.is_nan(b, x);
        self.select(b, &nan, x, &y, "f32")
    }

    /// `log(x)` in f32.
    pub(crate) fn log_f32(&mut self, b: &mut Body, x: &str) -> String {
        // Subnormals: scale by 2^23 first.
        let min_normal = self.c32(b, f32::MIN_POSITIVE);
        let sub = self.op(b, format!("arith.cmpf olt, {x}, {min_normal} : f32"));
        let scale = self.c32(b, 8_388_608.0);
        let xs = self.f(b, "arith.mulf", x, &scale);
        let xs = self.select(b, &sub, &xs, x, "f32");
        let bits = self.op(b, format!("arith.bitcast {xs} : f32 to i32"));
        let c23 = self.ci32(b, 23);
        let sh = self.op(b, format!("arith.shrui {bits}, {c23} : i32"));
        let ff = self.ci32(b, 0xff);
        let ex = self.op(b, format!("arith.andi {sh}, {ff} : i32"));
        let c126 = self.ci32(b, 126);
        let e = self.op(b, format!("arith.subi {ex}, {c126} : i32"));
        let c23b = self.ci32(b, 23);
        let zero = self.ci32(b, 0);
        let adj = self.select(b, &sub, &c23b, &zero, "i32");
        let e = self.op(b, format!("arith.subi {e}, {adj} : i32"));
        let mask = self.ci32(b, 0x807f_ffffu32 as i32);
        let mb = self.op(b, format!("arith.andi {bits}, {mask} : i32"));
        let half_bits = self.ci32(b, 0x3f00_0000);
        let mb = self.op(b, format!("arith.ori {mb}, {half_bits} : i32"));
        let m = self.op(b, format!("arith.bitcast {mb} : i32 to f32")); // [0.5, 1)
        let sqrthf = self.c32(b, std::f32::consts::FRAC_1_SQRT_2);
        let small = self.op(b, format!("arith.cmpf olt, {m}, {sqrthf} : f32"));
        let one_i = self.ci32(b, 1);
        let dec = self.select(b, &small, &one_i, &zero, "i32");
        let e = self.op(b, format!("arith.subi {e}, {dec} : i32"));
        let one = self.c32(b, 1.0);
        let m2 = self.f(b, "arith.addf", &m, &m);
        let a = self.f(b, "arith.subf", &m2, &one);
        let bb = self.f(b, "arith.subf", &m, &one);
        let f = self.select(b, &small, &a, &bb, "f32");
        let z = self.f(b, "arith.mulf", &f, &f);
        let p = self.horner(b, &LOG_P, &f);
        let p = self.f(b, "arith.mulf", &p, &f);
        let y = self.f(b, "arith.mulf", &p, &z);
        let fe = self.op(b, format!("arith.sitofp {e} : i32 to f32"));
        let q1 = self.c32(b, -2.121_944_4e-4);
        let t = self.f(b, "arith.mulf", &fe, &q1);
        let y = self.f(b, "arith.addf", &y, &t);
        let h = self.c32(b, 0.5);
        let hz = self.f(b, "arith.mulf", &h, &z);
        let y = self.f(b, "arith.subf", &y, &hz);
        let r = self.f(b, "arith.addf", &f, &y);
        let q2 = self.c32(b, 0.693_359_375);
        let t = self.f(b, "arith.mulf", &fe, &q2);
        let r = self.f(b, "arith.addf", &r, &t);
        // Special values: log(0) = -inf, log(x<0) = NaN, log(inf) = inf, NaN stays NaN.
        let zf = self.c32(b, 0.0);
        let is0 = self.op(b, format!("arith.cmpf oeq, {x}, {zf} : f32"));
        let ninf = self.c32(b, f32::NEG_INFINITY);
        let r = self.select(b, &is0, &ninf, &r, "f32");
        let neg = self.op(b, format!("arith.cmpf olt, {x}, {zf} : f32"));
        let nan = self.c32(b, f32::NAN);
        let r = self.select(b, &neg, &nan, &r, "f32");
        let inf = self.c32(b, f32::INFINITY);
        let isinf = self.op(b, format!("arith.cmpf oeq, {x}, {inf} : f32"));
        let r = self.select(b, &isinf, x, &r, "f32");
        let isnan = self.is_nan(b, x);
        self.select(b, &isnan, x, &r, "f32")
    }

    /// `tanh(x)` in f32.
    pub(crate) fn tanh_f32(&mut self, b: &mut Body, x: &str) -> String {
        let a = self.f1(b, "math.absf", x);
        let z = self.f(b, "arith.mulf", x, x);
        let p = self.horner(b, &TANH_P, &z);
        let p = self.f(b, "arith.mulf", &p, &z);
        let p = self.f(b, "arith.mulf", &p, x);
        let small = self.f(b, "arith.addf", &p, x);
        let a2 = self.f(b, "arith.addf", &a, &a);
        let e = self.exp_f32(b, &a2);
        let one = self.c32(b, 1.0);
        let two = self.c32(b, 2.0);
        let e1 = self.f(b, "arith.addf", &e, &one);
        let q = self.f(b, "arith.divf", &two, &e1);
        let big = self.f(b, "arith.subf", &one, &q);
        let big = self.f(b, "math.copysign", &big, x);
        let lim = self.c32(b, 0.625);
        let is_small = self.op(b, format!("arith.cmpf olt, {a}, {lim} : f32"));
        self.select(b, &is_small, &small, &big, "f32")
    }

    /// `erf(x)` in f32.
    pub(crate) fn erf_f32(&mut self, b: &mut Body, x: &str) -> String {
        let four = self.c32(b, 4.0);
        let a = self.f1(b, "math.absf", x);
        let a = self.f(b, "arith.minnumf", &a, &four);
        let s = self.f(b, "arith.mulf", &a, &a);
        // |x| < 1: a + a·P(a²)
        let p = self.horner(b, &ERF_A, &s);
        let ap = self.f(b, "arith.mulf", &a, &p);
        let ya = self.f(b, "arith.addf", &a, &ap);
        // 1 ≤ |x| ≤ 4: 1 - exp(-a²)·Q(1/a - 0.6)
        let one = self.c32(b, 1.0);
        let inv = self.f(b, "arith.divf", &one, &a);
        let c06 = self.c32(b, 0.6);
        let u = self.f(b, "arith.subf", &inv, &c06);
        let q = self.horner(b, &ERF_B, &u);
        let ns = self.f1(b, "arith.negf", &s);
        let e = self.exp_f32(b, &ns);
        let eq = self.f(b, "arith.mulf", &e, &q);
        let yb = self.f(b, "arith.subf", &one, &eq);
        let is_a = self.op(b, format!("arith.cmpf olt, {a}, {one} : f32"));
        let y = self.select(b, &is_a, &ya, &yb, "f32");
        let y = self.f(b, "math.copysign", &y, x);
        let nan = self.is_nan(b, x);
        self.select(b, &nan, x, &y, "f32")
    }
}
