//! 16-bit floats (the mixed-precision pass's GEMM operands and results) in per-element code:
//! kept in memory as f16 or as bf16 bits (`i16`), computed in f32 registers that always hold
//! exactly a value of their type (every op that makes one rounds its f32 result). bf16 is
//! converted by integer code, so every back end rounds the same way without library calls or
//! CPU instructions that older CPUs lack.

use super::{iconst, ScalarSink};
use ir::DType;

/// A 16-bit float type.
pub fn is_half(d: DType) -> bool {
    matches!(d, DType::F16 | DType::BF16)
}

/// The type an op on `d` computes in (16-bit floats in f32).
pub fn compute_ty(d: DType) -> DType {
    if is_half(d) {
        DType::F32
    } else {
        d
    }
}

/// A loaded 16-bit element (memory type) → its exact f32 value; other types unchanged.
pub fn widen(s: &mut impl ScalarSink, x: String, d: DType) -> String {
    match d {
        DType::F16 => s.op(format!("arith.extf {x} : f16 to f32")),
        DType::BF16 => {
            let w = s.op(format!("arith.extui {x} : i16 to i32"));
            let c16 = iconst(s, 16, "i32");
            let hi = s.op(format!("arith.shli {w}, {c16} : i32"));
            s.op(format!("arith.bitcast {hi} : i32 to f32"))
        }
        _ => x,
    }
}

/// An f32 register holding a value of `d` (already exact) → its memory element; other types
/// unchanged.
pub fn narrow(s: &mut impl ScalarSink, x: &str, d: DType) -> String {
    match d {
        DType::F16 => s.op(format!("arith.truncf {x} : f32 to f16")),
        DType::BF16 => {
            let bits = s.op(format!("arith.bitcast {x} : f32 to i32"));
            let c16 = iconst(s, 16, "i32");
            let hi = s.op(format!("arith.shrui {bits}, {c16} : i32"));
            s.op(format!("arith.trunci {hi} : i32 to i16"))
        }
        _ => x.to_string(),
    }
}

/// An f32 register value rounded to the nearest value of `d` (round to nearest even), still
/// in an f32 register; other types unchanged. bf16 rounds by integer code, NaN kept quiet
/// with its sign and high payload bits (as the interpreter's `half::bf16::from_f32`).
pub fn round_to(s: &mut impl ScalarSink, x: String, d: DType) -> String {
    match d {
        DType::F16 => {
            let h = s.op(format!("arith.truncf {x} : f32 to f16"));
            s.op(format!("arith.extf {h} : f16 to f32"))
        }
        DType::BF16 => {
            let bits = s.op(format!("arith.bitcast {x} : f32 to i32"));
            let c16 = iconst(s, 16, "i32");
            let one = iconst(s, 1, "i32");
            let bias = iconst(s, 0x7FFF, "i32");
            let lsb = s.op(format!("arith.shrui {bits}, {c16} : i32"));
            let lsb = s.op(format!("arith.andi {lsb}, {one} : i32"));
            let r = s.op(format!("arith.addi {bits}, {bias} : i32"));
            let r = s.op(format!("arith.addi {r}, {lsb} : i32"));
            let mask = iconst(s, 0xFFFF_0000u32 as i32 as i64, "i32");
            let r = s.op(format!("arith.andi {r}, {mask} : i32"));
            let quiet = iconst(s, 0x0040_0000, "i32");
            let nan = s.op(format!("arith.ori {bits}, {quiet} : i32"));
            let nan = s.op(format!("arith.andi {nan}, {mask} : i32"));
            let is_nan = s.op(format!("arith.cmpf uno, {x}, {x} : f32"));
            let r = s.op(format!("arith.select {is_nan}, {nan}, {r} : i32"));
            s.op(format!("arith.bitcast {r} : i32 to f32"))
        }
        _ => x,
    }
}
