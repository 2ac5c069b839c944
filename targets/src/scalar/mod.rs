//! Scalar MLIR (`arith`, plus the few `math` instructions) for the element-wise ops of the IR,
//! shared by every back end that builds per-element code: the CPU emits it inside
//! `linalg.generic` bodies, the GPU inside a thread's code. A back end supplies a
//! [`ScalarSink`]; the semantics are the interpreter's (`ir::interp`), op by op.

pub mod half;
pub mod math;

use ir::{BinaryOp, CmpOp, DType, UnaryOp};

/// Where scalar ops are appended.
pub trait ScalarSink {
    /// Appends `%v = <rhs>` and returns `%v`.
    fn op(&mut self, rhs: String) -> String;
    /// The constant `lit` of register type `ty` (`arith.constant`, at most once per body).
    fn constant(&mut self, lit: String, ty: &str) -> String;
    /// How instructions that `arith` cannot spell are written.
    fn spelling(&self) -> MathSpelling;
}

/// How floor, abs, sqrt, copysign and fma are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MathSpelling {
    /// `math.*` ops, which lower to one instruction each on the CPU.
    MathDialect,
    /// PTX instructions as `llvm.inline_asm` (`convert-gpu-to-nvvm` turns `math.*` into libdevice
    /// calls, which would need the CUDA toolkit's bitcode library).
    Ptx,
}

/// Element type in registers (16-bit floats live in f32 registers, see [`half`]).
pub fn reg_ty(d: DType) -> &'static str {
    match d {
        DType::F32 | DType::F16 | DType::BF16 => "f32",
        DType::F64 => "f64",
        DType::I32 => "i32",
        DType::Bool => "i1",
        _ => unreachable!("checked by validate"),
    }
}

/// Element type in memory (memref / tensor element type): bool as `i8`, f16 as itself, bf16
/// as its bits (`i16`, see [`half`]).
pub fn mem_ty(d: DType) -> &'static str {
    match d {
        DType::Bool => "i8",
        DType::F16 => "f16",
        DType::BF16 => "i16",
        other => reg_ty(other),
    }
}

/// An MLIR float literal that parses back to exactly `v` rounded to `d`.
pub fn float_lit(v: f64, d: DType) -> String {
    match d {
        DType::F32 => {
            let x = v as f32;
            if x.is_finite() {
                let s = decimal(format!("{x:e}"));
                // MLIR parses through f64 (strtod) and then rounds to f32: check that path.
                if s.parse::<f64>().map(|p| p as f32 == x).unwrap_or(false) {
                    return s;
                }
            }
            format!("0x{:08X}", x.to_bits())
        }
        _ => {
            if v.is_finite() {
                decimal(format!("{v:e}"))
            } else {
                format!("0x{:016X}", v.to_bits())
            }
        }
    }
}

/// `1e0` → `1.0e0` (MLIR float literals need a dot).
fn decimal(s: String) -> String {
    match s.find('e') {
        Some(i) if !s[..i].contains('.') => format!("{}.0{}", &s[..i], &s[i..]),
        _ => s,
    }
}

/// A float constant of dtype `d` in registers.
pub fn fconst(s: &mut impl ScalarSink, v: f64, d: DType) -> String {
    s.constant(float_lit(v, d), reg_ty(d))
}

/// An integer constant of register type `ty` (`i32`, `i64`, `index`, `i8`).
pub fn iconst(s: &mut impl ScalarSink, v: i64, ty: &str) -> String {
    s.constant(v.to_string(), ty)
}

/// An `i1` constant.
pub fn bconst(s: &mut impl ScalarSink, v: bool) -> String {
    s.constant(v.to_string(), "i1")
}

/// The constant `value` as dtype `d` in registers.
pub fn const_of(s: &mut impl ScalarSink, value: f64, d: DType) -> String {
    match d {
        DType::F32 | DType::F64 => fconst(s, value, d),
        DType::I32 => iconst(s, value as i32 as i64, "i32"),
        DType::Bool => bconst(s, value != 0.0),
        _ => unreachable!("checked by the back end's validation"),
    }
}

/// Unary op `u` on `x` of dtype `d` (the operand's dtype).
pub fn unary(s: &mut impl ScalarSink, u: UnaryOp, x: &str, d: DType) -> String {
    let t = reg_ty(d);
    match (u, d) {
        (UnaryOp::StopGradient, _) => x.to_string(),
        (UnaryOp::Not, _) => {
            let one = bconst(s, true);
            s.op(format!("arith.xori {x}, {one} : i1"))
        }
        (UnaryOp::Neg, DType::I32) => {
            let z = iconst(s, 0, "i32");
            s.op(format!("arith.subi {z}, {x} : i32"))
        }
        (UnaryOp::Abs, DType::I32) => {
            let z = iconst(s, 0, "i32");
            let n = s.op(format!("arith.subi {z}, {x} : i32"));
            let neg = s.op(format!("arith.cmpi slt, {x}, {z} : i32"));
            s.op(format!("arith.select {neg}, {n}, {x} : i32"))
        }
        (UnaryOp::IsFinite, DType::I32) => bconst(s, true),
        (UnaryOp::IsFinite, _) => {
            let a = if d == DType::F32 {
                math::abs_f32(s, x)
            } else {
                s.op(format!("math.absf {x} : {t}"))
            };
            let inf = fconst(s, f64::INFINITY, d);
            s.op(format!("arith.cmpf olt, {a}, {inf} : {t}"))
        }
        (UnaryOp::Neg, _) => s.op(format!("arith.negf {x} : {t}")),
        (UnaryOp::Abs, DType::F32) => math::abs_f32(s, x),
        (UnaryOp::Abs, _) => s.op(format!("math.absf {x} : {t}")),
        (UnaryOp::Sqrt, DType::F32) => math::sqrt_f32(s, x),
        (UnaryOp::Sqrt, _) => s.op(format!("math.sqrt {x} : {t}")),
        (UnaryOp::Rsqrt, _) => {
            let r = if d == DType::F32 {
                math::sqrt_f32(s, x)
            } else {
                s.op(format!("math.sqrt {x} : {t}"))
            };
            let one = fconst(s, 1.0, d);
            s.op(format!("arith.divf {one}, {r} : {t}"))
        }
        (UnaryOp::Exp, DType::F32) => math::exp_f32(s, x),
        (UnaryOp::Log, DType::F32) => math::log_f32(s, x),
        (UnaryOp::Tanh, DType::F32) => math::tanh_f32(s, x),
        (UnaryOp::Erf, DType::F32) => math::erf_f32(s, x),
        (UnaryOp::Exp, _) => s.op(format!("math.exp {x} : {t}")),
        (UnaryOp::Log, _) => s.op(format!("math.log {x} : {t}")),
        (UnaryOp::Tanh, _) => s.op(format!("math.tanh {x} : {t}")),
        (UnaryOp::Erf, _) => s.op(format!("math.erf {x} : {t}")),
    }
}

pub fn binary(s: &mut impl ScalarSink, op: BinaryOp, x: &str, y: &str, d: DType) -> String {
    let t = reg_ty(d);
    let name = match (op, d) {
        (BinaryOp::And, _) | (BinaryOp::Min, DType::Bool) => "arith.andi",
        (BinaryOp::Or, _) | (BinaryOp::Max, DType::Bool) => "arith.ori",
        (BinaryOp::Add, DType::I32) => "arith.addi",
        (BinaryOp::Sub, DType::I32) => "arith.subi",
        (BinaryOp::Mul, DType::I32) => "arith.muli",
        (BinaryOp::Div, DType::I32) => "arith.divsi",
        (BinaryOp::Max, DType::I32) => "arith.maxsi",
        (BinaryOp::Min, DType::I32) => "arith.minsi",
        (BinaryOp::Add, _) => "arith.addf",
        (BinaryOp::Sub, _) => "arith.subf",
        (BinaryOp::Mul, _) => "arith.mulf",
        (BinaryOp::Div, _) => "arith.divf",
        (BinaryOp::Max, _) => "arith.maximumf",
        (BinaryOp::Min, _) => "arith.minimumf",
    };
    s.op(format!("{name} {x}, {y} : {t}"))
}

pub fn compare(s: &mut impl ScalarSink, c: CmpOp, x: &str, y: &str, od: DType) -> String {
    let t = reg_ty(od);
    match od {
        DType::F32 | DType::F64 => {
            let p = match c {
                CmpOp::Eq => "oeq",
                CmpOp::Ne => "une",
                CmpOp::Lt => "olt",
                CmpOp::Le => "ole",
                CmpOp::Gt => "ogt",
                CmpOp::Ge => "oge",
            };
            s.op(format!("arith.cmpf {p}, {x}, {y} : {t}"))
        }
        _ => {
            let signed = od != DType::Bool;
            let p = match (c, signed) {
                (CmpOp::Eq, _) => "eq",
                (CmpOp::Ne, _) => "ne",
                (CmpOp::Lt, true) => "slt",
                (CmpOp::Le, true) => "sle",
                (CmpOp::Gt, true) => "sgt",
                (CmpOp::Ge, true) => "sge",
                (CmpOp::Lt, false) => "ult",
                (CmpOp::Le, false) => "ule",
                (CmpOp::Gt, false) => "ugt",
                (CmpOp::Ge, false) => "uge",
            };
            s.op(format!("arith.cmpi {p}, {x}, {y} : {t}"))
        }
    }
}

/// `cast` with the interpreter's semantics (float → int saturates, NaN → 0; → bool is `≠ 0`).
pub fn cast(s: &mut impl ScalarSink, x: &str, from: DType, to: DType) -> String {
    if from == to {
        return x.to_string();
    }
    let (f, t) = (reg_ty(from), reg_ty(to));
    match (from, to) {
        (DType::F32, DType::F64) => s.op(format!("arith.extf {x} : f32 to f64")),
        (DType::F64, DType::F32) => s.op(format!("arith.truncf {x} : f64 to f32")),
        (DType::I32, DType::F32 | DType::F64) => s.op(format!("arith.sitofp {x} : i32 to {t}")),
        (DType::Bool, DType::F32 | DType::F64) => s.op(format!("arith.uitofp {x} : i1 to {t}")),
        (DType::Bool, DType::I32) => s.op(format!("arith.extui {x} : i1 to i32")),
        (DType::F32 | DType::F64, DType::Bool) => {
            let z = fconst(s, 0.0, from);
            s.op(format!("arith.cmpf une, {x}, {z} : {f}"))
        }
        (DType::I32, DType::Bool) => {
            let z = iconst(s, 0, "i32");
            s.op(format!("arith.cmpi ne, {x}, {z} : i32"))
        }
        (DType::F32 | DType::F64, DType::I32) => {
            // Saturating like Rust's `as i32`: clamp, convert, fix the top end and NaN.
            let lo = fconst(s, -2_147_483_648.0, from);
            let top = fconst(s, 2_147_483_648.0, from);
            let below = s.op(format!("arith.cmpf olt, {x}, {lo} : {f}"));
            let xc = s.op(format!("arith.select {below}, {lo}, {x} : {f}"));
            let above = s.op(format!("arith.cmpf oge, {x}, {top} : {f}"));
            let nan = s.op(format!("arith.cmpf uno, {x}, {x} : {f}"));
            let bad = s.op(format!("arith.ori {above}, {nan} : i1"));
            let z = fconst(s, 0.0, from);
            let xc = s.op(format!("arith.select {bad}, {z}, {xc} : {f}"));
            let r = s.op(format!("arith.fptosi {xc} : {f} to i32"));
            let max = iconst(s, i32::MAX as i64, "i32");
            s.op(format!("arith.select {above}, {max}, {r} : i32"))
        }
        _ => unreachable!("dtypes checked by validate"),
    }
}

/// Philox-4x32-10 uniform number in [0, 1) of dtype `d` for the element whose row-major index
/// in the random tensor is `lin64` (an `i64`), bit-exact with `ir::rng::uniform`.
pub fn philox_uniform<S: ScalarSink>(
    s: &mut S,
    lin64: &str,
    seed: &str,
    counter: &str,
    op_id: u32,
    d: DType,
) -> String {
    let c32 = iconst(s, 32, "i64");
    let c0 = s.op(format!("arith.trunci {lin64} : i64 to i32"));
    let hi = s.op(format!("arith.shrui {lin64}, {c32} : i64"));
    let c1 = s.op(format!("arith.trunci {hi} : i64 to i32"));
    // counter (sign-extended to 64 bits): low word, high word.
    let c2 = counter.to_string();
    let c31 = iconst(s, 31, "i32");
    let c3 = s.op(format!("arith.shrsi {counter}, {c31} : i32"));
    let mut k0 = seed.to_string();
    let mut k1 = iconst(s, op_id as i32 as i64, "i32");
    let m0 = iconst(s, 0xD251_1F53, "i64");
    let m1 = iconst(s, 0xCD9E_8D57, "i64");
    let w0 = iconst(s, 0x9E37_79B9u32 as i32 as i64, "i32");
    let w1 = iconst(s, 0xBB67_AE85u32 as i32 as i64, "i32");
    let mut c = [c0, c1, c2, c3];
    for round in 0..10 {
        if round > 0 {
            k0 = s.op(format!("arith.addi {k0}, {w0} : i32"));
            k1 = s.op(format!("arith.addi {k1}, {w1} : i32"));
        }
        let mulhilo = |s: &mut S, m: &str, a: &str| {
            let a64 = s.op(format!("arith.extui {a} : i32 to i64"));
            let p = s.op(format!("arith.muli {a64}, {m} : i64"));
            let ph = s.op(format!("arith.shrui {p}, {c32} : i64"));
            let hi = s.op(format!("arith.trunci {ph} : i64 to i32"));
            let lo = s.op(format!("arith.trunci {p} : i64 to i32"));
            (hi, lo)
        };
        let (hi0, lo0) = mulhilo(s, &m0, &c[0]);
        let (hi1, lo1) = mulhilo(s, &m1, &c[2]);
        let x0 = s.op(format!("arith.xori {hi1}, {} : i32", c[1]));
        let x0 = s.op(format!("arith.xori {x0}, {k0} : i32"));
        let x2 = s.op(format!("arith.xori {hi0}, {} : i32", c[3]));
        let x2 = s.op(format!("arith.xori {x2}, {k1} : i32"));
        c = [x0, lo1, x2, lo0];
    }
    let c8 = iconst(s, 8, "i32");
    let bits = s.op(format!("arith.shrui {}, {c8} : i32", c[0]));
    let t = reg_ty(d);
    let f = s.op(format!("arith.uitofp {bits} : i32 to {t}"));
    let scale = fconst(s, 1.0 / 16_777_216.0, d);
    s.op(format!("arith.mulf {f}, {scale} : {t}"))
}
