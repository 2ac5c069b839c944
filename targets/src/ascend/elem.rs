//! Element types at a kernel's edge. Inside a kernel every value is f32 (bools 0.0 / 1.0,
//! integers exact below 2²⁴); in GM a tensor keeps its plan type: f32, bool as one byte, i32.
//! A tile of bytes or integers is widened to f32 after CopyIn and narrowed before CopyOut with
//! `Cast` (bytes through half, the NPU having no direct u8 ↔ f32 cast).

use super::emitc::{Emitter, LT};
use ir::DType;

/// How a tensor sits in GM and in its queue's tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Elem {
    F32,
    /// f16 (`half`): widened exactly, narrowed to nearest even.
    F16,
    /// bool: one byte, 0 or 1.
    U8,
    I32,
}

const LT_HALF: &str = "!emitc.opaque<\"AscendC::LocalTensor<half>\">";

impl Elem {
    /// The element of a kernel value of type `d`, if kernels here take it.
    pub(super) fn of(d: DType) -> Option<Elem> {
        match d {
            DType::F32 => Some(Elem::F32),
            DType::F16 => Some(Elem::F16),
            DType::Bool => Some(Elem::U8),
            DType::I32 => Some(Elem::I32),
            _ => None,
        }
    }

    pub(super) fn cpp(self) -> &'static str {
        match self {
            Elem::F32 => "float",
            Elem::F16 => "half",
            Elem::U8 => "uint8_t",
            Elem::I32 => "int32_t",
        }
    }

    pub(super) fn bytes(self) -> usize {
        match self {
            Elem::U8 => 1,
            Elem::F16 => 2,
            _ => 4,
        }
    }

    /// `LocalTensor<T>` as an EmitC type.
    pub(super) fn lt(self) -> String {
        format!("!emitc.opaque<\"AscendC::LocalTensor<{}>\">", self.cpp())
    }

    /// `GlobalTensor<T>` as an EmitC type.
    pub(super) fn gt(self) -> String {
        format!("!emitc.opaque<\"AscendC::GlobalTensor<{}>\">", self.cpp())
    }
}

impl Emitter {
    /// `Cast(d, s, mode, n)` (`d`, `s` of the given EmitC types).
    fn cast(&mut self, d: (&str, &str), s: (&str, &str), mode: &str, n: &str) {
        self.call_with(
            "Cast",
            &[d, s, (n, "i32")],
            &["0", "1", &format!("AscendC::RoundMode::{mode}"), "2"],
        );
    }

    /// `conv` (a scratch f32 tile) seen as half.
    fn half_view(&mut self, conv: &str) -> String {
        self.assigned(
            LT_HALF,
            "{} = {}.ReinterpretCast<half>();",
            &[(conv, LT.into())],
        )
    }

    /// Tile `t` of `elem` values into f32 tile `d` (exact: bytes are 0/1, integers small).
    pub(super) fn widen(&mut self, elem: Elem, t: &str, d: &str, conv: &str, n: &str) {
        let lt = elem.lt();
        match elem {
            Elem::F32 => unreachable!("f32 tiles are used as they are"),
            Elem::U8 => {
                let h = self.half_view(conv);
                self.cast((&h, LT_HALF), (t, &lt), "CAST_NONE", n);
                self.cast((d, LT), (&h, LT_HALF), "CAST_NONE", n);
            }
            Elem::I32 | Elem::F16 => self.cast((d, LT), (t, &lt), "CAST_NONE", n),
        }
    }

    /// f32 tile `x` into tile `o` of `elem` values (0/1 and integral values: exact).
    pub(super) fn narrow(&mut self, elem: Elem, x: &str, o: &str, conv: &str, n: &str) {
        let lt = elem.lt();
        match elem {
            Elem::F32 => unreachable!("f32 tiles are used as they are"),
            Elem::U8 => {
                let h = self.half_view(conv);
                self.cast((&h, LT_HALF), (x, LT), "CAST_NONE", n);
                self.cast((o, &lt), (&h, LT_HALF), "CAST_NONE", n);
            }
            Elem::I32 => self.cast((o, &lt), (x, LT), "CAST_TRUNC", n),
            Elem::F16 => self.cast((o, &lt), (x, LT), "CAST_RINT", n),
        }
    }

    /// Tile `x` rounded to f16 in place (an op of f16 values: computed in f32, rounded once),
    /// through `dup` seen as half.
    pub(super) fn round_half_tile(&mut self, x: &str, dup: &str, n: &str) {
        let h = self.half_view(dup);
        self.cast((&h, LT_HALF), (x, LT), "CAST_RINT", n);
        self.cast((x, LT), (&h, LT_HALF), "CAST_NONE", n);
    }

    /// Scalar `s` rounded to f16.
    pub(super) fn round_half_scalar(&mut self, s: &str) -> String {
        self.assigned("f32", "{} = (float)(half){};", &[(s, "f32".into())])
    }

    /// Element `i` (i64) of GM view `g` of `elem` values, read on the scalar unit as f32.
    pub(super) fn gm_get(&mut self, elem: Elem, g: &str, i: &str) -> String {
        self.assigned(
            "f32",
            "{} = (float){}.GetValue({});",
            &[(g, super::emitc::lv(&elem.gt())), (i, "i64".into())],
        )
    }

    /// Writes f32 scalar `s` as element `i` (i64) of GM view `g` of `elem` values.
    pub(super) fn gm_set(&mut self, elem: Elem, g: &str, i: &str, s: &str) {
        self.verbatim(
            &format!("{{}}.SetValue({{}}, ({}){{}});", elem.cpp()),
            &[
                (g, super::emitc::lv(&elem.gt())),
                (i, "i64".into()),
                (s, "f32".into()),
            ],
        );
    }
}
