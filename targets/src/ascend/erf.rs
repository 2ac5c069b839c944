//! `erf` on tiles, from the vector calls: the same f32 fit every target uses
//! (`scalar::math`: `a + a·P(a²)` below 1, `1 - exp(-a²)·Q(1/a - 0.6)` up to 4, `a = |x|`
//! clamped to 4), the branch picked by `Select` so the unused side's ∞ / NaN never leaks, the
//! sign put back by a second `Select`, and NaN passed through. Horner steps are `Mul` then
//! `Adds` (two roundings where the scalar code fuses: within a few ulp).

use super::emitc::{Emitter, Step, LT};
use crate::scalar::math::{ERF_A, ERF_B};

const MASK: &str = "!emitc.opaque<\"AscendC::LocalTensor<uint8_t>\">";

/// Scratch tiles `erf` needs besides its result and the step's `dup`.
pub(super) const ERF_TILES: usize = 3;

impl Emitter {
    /// `p = Σ coeffs · x^k` (highest degree first) into tile `p`.
    fn horner_tile(&mut self, coeffs: &[f32], x: &str, p: &str, n: &str) {
        let c0 = self.f32_const(coeffs[0] as f64);
        self.vector("Duplicate", &[(p, LT), (&c0, "f32"), (n, "i32")]);
        for &c in &coeffs[1..] {
            self.vector("Mul", &[(p, LT), (p, LT), (x, LT), (n, "i32")]);
            let c = self.f32_const(c as f64);
            self.vector("Adds", &[(p, LT), (p, LT), (&c, "f32"), (n, "i32")]);
        }
    }

    /// `Compares(mask, x, s, mode)` of a constant `s`.
    fn compares_const(&mut self, step: &Step, x: &str, s: f64, mode: &str) {
        let s = self.f32_const(s);
        self.compares(step, x, &s, mode);
    }

    /// `d = erf(x)`, with `work` the [`ERF_TILES`] scratch tiles and the step's `dup`.
    pub(super) fn erf_tile(&mut self, d: &str, x: &str, step: &Step, work: &[String]) {
        let n = step.n.as_str();
        let [a, sq, p, q] = [&work[0], &work[1], &work[2], &step.dup];
        let four = self.f32_const(4.0);
        self.vector("Abs", &[(a, LT), (x, LT), (n, "i32")]);
        self.vector("Mins", &[(a, LT), (a, LT), (&four, "f32"), (n, "i32")]);
        self.vector("Mul", &[(sq, LT), (a, LT), (a, LT), (n, "i32")]);
        // Below 1: a + a·P(a²), in p.
        self.horner_tile(&ERF_A, sq, p, n);
        self.vector("Mul", &[(p, LT), (a, LT), (p, LT), (n, "i32")]);
        self.vector("Add", &[(p, LT), (a, LT), (p, LT), (n, "i32")]);
        // Up to 4: 1 − exp(−a²)·Q(1/a − 0.6), in q (sq becomes exp(−a²)).
        let one = self.f32_const(1.0);
        self.vector("Duplicate", &[(d, LT), (&one, "f32"), (n, "i32")]);
        self.vector("Div", &[(d, LT), (d, LT), (a, LT), (n, "i32")]);
        let shift = self.f32_const(-0.6);
        self.vector("Adds", &[(d, LT), (d, LT), (&shift, "f32"), (n, "i32")]);
        self.horner_tile(&ERF_B, d, q, n);
        let minus = self.f32_const(-1.0);
        self.vector("Muls", &[(sq, LT), (sq, LT), (&minus, "f32"), (n, "i32")]);
        self.vector("Exp", &[(sq, LT), (sq, LT), (n, "i32")]);
        self.vector("Mul", &[(q, LT), (sq, LT), (q, LT), (n, "i32")]);
        self.vector("Muls", &[(q, LT), (q, LT), (&minus, "f32"), (n, "i32")]);
        self.vector("Adds", &[(q, LT), (q, LT), (&one, "f32"), (n, "i32")]);
        // |erf| by branch, then the sign of x, then NaN through.
        self.compares_const(step, a, 1.0, "AscendC::CMPMODE::LT");
        self.select_tiles(step, d, p, q);
        self.vector("Muls", &[(a, LT), (d, LT), (&minus, "f32"), (n, "i32")]);
        self.compares_const(step, x, 0.0, "AscendC::CMPMODE::LT");
        self.select_tiles(step, p, a, d);
        let (mask, cnt) = step.mask.clone().expect("a mask tile for erf");
        self.call_with(
            "Compare",
            &[(&mask, MASK), (x, LT), (x, LT), (&cnt, "i32")],
            &["0", "1", "2", "AscendC::CMPMODE::EQ", "3"],
        );
        self.select_tiles(step, d, p, x);
    }
}
