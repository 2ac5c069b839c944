//! f32 approximations of `exp`, `log`, `tanh` and `erf`, emitted as plain `arith` scalar code
//! (+ floor, abs, copysign and fma, one instruction each, spelled by [`MathSpelling`]) into any
//! [`ScalarSink`]: inside a `linalg.generic` body on the CPU, so that the vectorizer turns them
//! into SIMD code, and into a GPU thread's code, so that no libdevice is needed. Rust cannot reach
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
//! Horner steps of the polynomials use a correctly rounded fused multiply-add (`math.fma`, an
//! instruction on every x86-64 level we generate for, x86-64-v3 and up; `fma.rn.f32` on the
//! GPU), so results are the same on every target; nothing else is contracted.

// The coefficient tables keep the published (Cephes) / fitted digits; Rust rounds them to f32.
#![allow(clippy::excessive_precision)]

use super::{fconst, iconst, MathSpelling, ScalarSink};

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
pub(crate) const ERF_A: [f32; 7] = [
    7.854_060_095_269_233e-5,
    -8.010_258_898_139e-4,
    5.188_336_130_231_619e-3,
    -2.685_381_658_375_263_2e-2,
    1.128_358_542_919_159e-1,
    -3.761_262_595_653_534e-1,
    1.283_791_661_262_512_2e-1,
];

/// erfc(x)·exp(x²) = ERF_B(1/x - 0.6) on 1 ≤ x ≤ 4, highest degree first.
pub(crate) const ERF_B: [f32; 9] = [
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

fn fop(s: &mut impl ScalarSink, op: &str, x: &str, y: &str) -> String {
    s.op(format!("{op} {x}, {y} : f32"))
}

fn f1(s: &mut impl ScalarSink, op: &str, x: &str) -> String {
    s.op(format!("{op} {x} : f32"))
}

fn c32(s: &mut impl ScalarSink, v: f32) -> String {
    fconst(s, v as f64, ir::DType::F32)
}

fn ci32(s: &mut impl ScalarSink, v: i32) -> String {
    iconst(s, v as i64, "i32")
}

/// An f32 instruction as the MLIR op `mlir` (`math.fma`, `arith.maxnumf`: one instruction on
/// the CPU), or as the PTX instruction `ptx` in inline assembly (`convert-gpu-to-nvvm` would make
/// these ops libdevice calls). `ptx` names its result `$0` and the operands `$1…`.
fn instruction(s: &mut impl ScalarSink, mlir: &str, ptx: &str, args: &[&str]) -> String {
    match s.spelling() {
        MathSpelling::MathDialect => s.op(format!("{mlir} {} : f32", args.join(", "))),
        MathSpelling::Ptx => {
            let constraints = std::iter::once("=f")
                .chain(args.iter().map(|_| "f"))
                .collect::<Vec<_>>()
                .join(",");
            let types = vec!["f32"; args.len()].join(", ");
            s.op(format!(
                "llvm.inline_asm \"{ptx}\", \"{constraints}\" {} : ({types}) -> f32",
                args.join(", ")
            ))
        }
    }
}

/// `x·y + z` rounded once.
pub fn fma(s: &mut impl ScalarSink, x: &str, y: &str, z: &str) -> String {
    instruction(s, "math.fma", "fma.rn.f32 $0, $1, $2, $3;", &[x, y, z])
}

/// `|x|` (sign bit cleared, NaN stays NaN).
pub fn abs_f32(s: &mut impl ScalarSink, x: &str) -> String {
    instruction(s, "math.absf", "abs.f32 $0, $1;", &[x])
}

/// Correctly rounded square root.
pub fn sqrt_f32(s: &mut impl ScalarSink, x: &str) -> String {
    instruction(s, "math.sqrt", "sqrt.rn.f32 $0, $1;", &[x])
}

/// Round toward −∞.
fn floor_f32(s: &mut impl ScalarSink, x: &str) -> String {
    instruction(s, "math.floor", "cvt.rmi.f32.f32 $0, $1;", &[x])
}

/// The larger of `x` and `y`, the other one when one is NaN (IEEE `maxNum`).
fn maxnum_f32(s: &mut impl ScalarSink, x: &str, y: &str) -> String {
    instruction(s, "arith.maxnumf", "max.f32 $0, $1, $2;", &[x, y])
}

/// The smaller of `x` and `y`, the other one when one is NaN (IEEE `minNum`).
fn minnum_f32(s: &mut impl ScalarSink, x: &str, y: &str) -> String {
    instruction(s, "arith.minnumf", "min.f32 $0, $1, $2;", &[x, y])
}

/// The magnitude of `x` with the sign of `y` (PTX's `copysign` takes the sign operand first).
fn copysign_f32(s: &mut impl ScalarSink, x: &str, y: &str) -> String {
    instruction(s, "math.copysign", "copysign.f32 $0, $2, $1;", &[x, y])
}

/// Horner evaluation of `coeffs` (highest degree first) at `x`, one fma per step.
fn horner(s: &mut impl ScalarSink, coeffs: &[f32], x: &str) -> String {
    let mut acc = c32(s, coeffs[0]);
    for &c in &coeffs[1..] {
        let k = c32(s, c);
        acc = fma(s, &acc, x, &k);
    }
    acc
}

fn select(s: &mut impl ScalarSink, c: &str, x: &str, y: &str, ty: &str) -> String {
    s.op(format!("arith.select {c}, {x}, {y} : {ty}"))
}

fn is_nan(s: &mut impl ScalarSink, x: &str) -> String {
    s.op(format!("arith.cmpf uno, {x}, {x} : f32"))
}

/// 2^n for an i32 `n` in [-126, 127], as f32.
fn pow2(s: &mut impl ScalarSink, n: &str) -> String {
    let bias = ci32(s, 127);
    let e = s.op(format!("arith.addi {n}, {bias} : i32"));
    let sh = ci32(s, 23);
    let bits = s.op(format!("arith.shli {e}, {sh} : i32"));
    s.op(format!("arith.bitcast {bits} : i32 to f32"))
}

/// `exp(x)` in f32.
pub fn exp_f32(s: &mut impl ScalarSink, x: &str) -> String {
    // Clamp (NaN-ignoring) so that n stays in [-150, 129]; NaN is restored at the end.
    let lo = c32(s, -104.0);
    let hi = c32(s, 88.8);
    let xc = maxnum_f32(s, x, &lo);
    let xc = minnum_f32(s, &xc, &hi);
    let log2e = c32(s, std::f32::consts::LOG2_E);
    let half = c32(s, 0.5);
    let t = fop(s, "arith.mulf", &xc, &log2e);
    let t = fop(s, "arith.addf", &t, &half);
    let z = floor_f32(s, &t);
    let c1 = c32(s, 0.693_359_375);
    let c2 = c32(s, -2.121_944_4e-4);
    let m1 = fop(s, "arith.mulf", &z, &c1);
    let r = fop(s, "arith.subf", &xc, &m1);
    let m2 = fop(s, "arith.mulf", &z, &c2);
    let r = fop(s, "arith.subf", &r, &m2);
    let n = s.op(format!("arith.fptosi {z} : f32 to i32"));
    let rr = fop(s, "arith.mulf", &r, &r);
    let p = horner(s, &EXP_P, &r);
    let p = fop(s, "arith.mulf", &p, &rr);
    let p = fop(s, "arith.addf", &p, &r);
    let one = c32(s, 1.0);
    let p = fop(s, "arith.addf", &p, &one);
    // 2^n = 2^(n>>1) · 2^(n - (n>>1)), both factors normal.
    let c1i = ci32(s, 1);
    let n1 = s.op(format!("arith.shrsi {n}, {c1i} : i32"));
    let n2 = s.op(format!("arith.subi {n}, {n1} : i32"));
    let s1 = pow2(s, &n1);
    let s2 = pow2(s, &n2);
    let y = fop(s, "arith.mulf", &p, &s1);
    let y = fop(s, "arith.mulf", &y, &s2);
    let nan = is_nan(s, x);
    select(s, &nan, x, &y, "f32")
}

/// `log(x)` in f32.
pub fn log_f32(s: &mut impl ScalarSink, x: &str) -> String {
    // Subnormals: scale by 2^23 first.
    let min_normal = c32(s, f32::MIN_POSITIVE);
    let sub = s.op(format!("arith.cmpf olt, {x}, {min_normal} : f32"));
    let scale = c32(s, 8_388_608.0);
    let xs = fop(s, "arith.mulf", x, &scale);
    let xs = select(s, &sub, &xs, x, "f32");
    let bits = s.op(format!("arith.bitcast {xs} : f32 to i32"));
    let c23 = ci32(s, 23);
    let sh = s.op(format!("arith.shrui {bits}, {c23} : i32"));
    let ff = ci32(s, 0xff);
    let ex = s.op(format!("arith.andi {sh}, {ff} : i32"));
    let c126 = ci32(s, 126);
    let e = s.op(format!("arith.subi {ex}, {c126} : i32"));
    let c23b = ci32(s, 23);
    let zero = ci32(s, 0);
    let adj = select(s, &sub, &c23b, &zero, "i32");
    let e = s.op(format!("arith.subi {e}, {adj} : i32"));
    let mask = ci32(s, 0x807f_ffffu32 as i32);
    let mb = s.op(format!("arith.andi {bits}, {mask} : i32"));
    let half_bits = ci32(s, 0x3f00_0000);
    let mb = s.op(format!("arith.ori {mb}, {half_bits} : i32"));
    let m = s.op(format!("arith.bitcast {mb} : i32 to f32")); // [0.5, 1)
    let sqrthf = c32(s, std::f32::consts::FRAC_1_SQRT_2);
    let small = s.op(format!("arith.cmpf olt, {m}, {sqrthf} : f32"));
    let one_i = ci32(s, 1);
    let dec = select(s, &small, &one_i, &zero, "i32");
    let e = s.op(format!("arith.subi {e}, {dec} : i32"));
    let one = c32(s, 1.0);
    let m2 = fop(s, "arith.addf", &m, &m);
    let a = fop(s, "arith.subf", &m2, &one);
    let bb = fop(s, "arith.subf", &m, &one);
    let f = select(s, &small, &a, &bb, "f32");
    let z = fop(s, "arith.mulf", &f, &f);
    let p = horner(s, &LOG_P, &f);
    let p = fop(s, "arith.mulf", &p, &f);
    let y = fop(s, "arith.mulf", &p, &z);
    let fe = s.op(format!("arith.sitofp {e} : i32 to f32"));
    let q1 = c32(s, -2.121_944_4e-4);
    let t = fop(s, "arith.mulf", &fe, &q1);
    let y = fop(s, "arith.addf", &y, &t);
    let h = c32(s, 0.5);
    let hz = fop(s, "arith.mulf", &h, &z);
    let y = fop(s, "arith.subf", &y, &hz);
    let r = fop(s, "arith.addf", &f, &y);
    let q2 = c32(s, 0.693_359_375);
    let t = fop(s, "arith.mulf", &fe, &q2);
    let r = fop(s, "arith.addf", &r, &t);
    // Special values: log(0) = -inf, log(x<0) = NaN, log(inf) = inf, NaN stays NaN.
    let zf = c32(s, 0.0);
    let is0 = s.op(format!("arith.cmpf oeq, {x}, {zf} : f32"));
    let ninf = c32(s, f32::NEG_INFINITY);
    let r = select(s, &is0, &ninf, &r, "f32");
    let neg = s.op(format!("arith.cmpf olt, {x}, {zf} : f32"));
    let nan = c32(s, f32::NAN);
    let r = select(s, &neg, &nan, &r, "f32");
    let inf = c32(s, f32::INFINITY);
    let isinf = s.op(format!("arith.cmpf oeq, {x}, {inf} : f32"));
    let r = select(s, &isinf, x, &r, "f32");
    let isnan = is_nan(s, x);
    select(s, &isnan, x, &r, "f32")
}

/// `tanh(x)` in f32.
pub fn tanh_f32(s: &mut impl ScalarSink, x: &str) -> String {
    let a = abs_f32(s, x);
    let z = fop(s, "arith.mulf", x, x);
    let p = horner(s, &TANH_P, &z);
    let p = fop(s, "arith.mulf", &p, &z);
    let p = fop(s, "arith.mulf", &p, x);
    let small = fop(s, "arith.addf", &p, x);
    let a2 = fop(s, "arith.addf", &a, &a);
    let e = exp_f32(s, &a2);
    let one = c32(s, 1.0);
    let two = c32(s, 2.0);
    let e1 = fop(s, "arith.addf", &e, &one);
    let q = fop(s, "arith.divf", &two, &e1);
    let big = fop(s, "arith.subf", &one, &q);
    let big = copysign_f32(s, &big, x);
    let lim = c32(s, 0.625);
    let is_small = s.op(format!("arith.cmpf olt, {a}, {lim} : f32"));
    select(s, &is_small, &small, &big, "f32")
}

/// `erf(x)` in f32.
pub fn erf_f32(s: &mut impl ScalarSink, x: &str) -> String {
    let four = c32(s, 4.0);
    let a = abs_f32(s, x);
    let a = minnum_f32(s, &a, &four);
    let sq = fop(s, "arith.mulf", &a, &a);
    // |x| < 1: a + a·P(a²)
    let p = horner(s, &ERF_A, &sq);
    let ap = fop(s, "arith.mulf", &a, &p);
    let ya = fop(s, "arith.addf", &a, &ap);
    // 1 ≤ |x| ≤ 4: 1 - exp(-a²)·Q(1/a - 0.6)
    let one = c32(s, 1.0);
    let inv = fop(s, "arith.divf", &one, &a);
    let c06 = c32(s, 0.6);
    let u = fop(s, "arith.subf", &inv, &c06);
    let q = horner(s, &ERF_B, &u);
    let ns = f1(s, "arith.negf", &sq);
    let e = exp_f32(s, &ns);
    let eq = fop(s, "arith.mulf", &e, &q);
    let yb = fop(s, "arith.subf", &one, &eq);
    let is_a = s.op(format!("arith.cmpf olt, {a}, {one} : f32"));
    let y = select(s, &is_a, &ya, &yb, "f32");
    let y = copysign_f32(s, &y, x);
    let nan = is_nan(s, x);
    select(s, &nan, x, &y, "f32")
}
