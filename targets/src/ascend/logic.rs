//! Booleans in Ascend kernels: a bool value is held as f32 0.0 / 1.0 (a tile or a scalar), so
//! `not`, `and` and `or` are exact float arithmetic. The NPU's bit masks appear only where they
//! must: a compare writes one (`Compare` / `Compares`, over whole 256-byte repeats) and a
//! `Select` reads one — picking operands, so a NaN or ∞ in the branch not taken never leaks
//! (what the overflow-skipping optimizer update needs). On the scalar unit the same ops are
//! `emitc.cmp` and `emitc.conditional`.

use super::emitc::{Emitter, Held, Step, LT};
use super::AscendError;
use ir::{BinaryOp, CmpOp, DType, Graph, Op, UnaryOp, ValueId};

const MASK: &str = "!emitc.opaque<\"AscendC::LocalTensor<uint8_t>\">";

/// `AscendC::CMPMODE::…` of `c`, with the operands swapped when `flip`.
fn mode(c: CmpOp, flip: bool) -> String {
    let c = match (flip, c) {
        (true, CmpOp::Lt) => CmpOp::Gt,
        (true, CmpOp::Gt) => CmpOp::Lt,
        (true, CmpOp::Le) => CmpOp::Ge,
        (true, CmpOp::Ge) => CmpOp::Le,
        (_, c) => c,
    };
    format!("AscendC::CMPMODE::{}", c.name().to_uppercase())
}

/// Whether a node is a logic op this file builds (on tiles and on scalars).
pub(super) fn is_logic_op(k: &Graph, op: &Op, inputs: &[ValueId], out: DType) -> bool {
    match op {
        Op::Compare(_) | Op::Select => true,
        Op::Unary(UnaryOp::Not | UnaryOp::IsFinite) => true,
        Op::Binary(BinaryOp::And | BinaryOp::Or) => true,
        Op::Cast => {
            let from = k.ty(inputs[0]).dtype;
            const TYPES: [DType; 4] = [DType::F32, DType::F16, DType::Bool, DType::I32];
            TYPES.contains(&from) && TYPES.contains(&out)
        }
        _ => false,
    }
}

/// Whether cast node `v` changes the value held (f32 0/1 for bools, integral f32 for i32):
/// to bool is `x ≠ 0`, f32 to i32 truncates; the others keep it.
pub(super) fn cast_changes_value(k: &Graph, v: ValueId) -> bool {
    let node = k.node(v);
    let from = k.ty(node.inputs[0]).dtype;
    match node.ty.dtype {
        DType::Bool => from != DType::Bool,
        DType::I32 => matches!(from, DType::F32 | DType::F16),
        DType::F16 => from == DType::F32,
        _ => false,
    }
}

/// Whether kernel `k` needs a compare mask (a scratch tile) for its tile ops.
pub(super) fn needs_mask(k: &Graph) -> bool {
    (0..k.len()).any(|i| {
        let v = ValueId(i as u32);
        match &k.node(v).op {
            Op::Compare(_) | Op::Select | Op::Unary(UnaryOp::IsFinite | UnaryOp::Erf) => true,
            Op::Cast => cast_changes_value(k, v),
            _ => false,
        }
    })
}

impl Emitter {
    /// The mask and count of `step` (the builders give one whenever [`needs_mask`]).
    fn mask_of(step: &Step) -> (String, String) {
        step.mask
            .clone()
            .expect("a mask tile for a kernel that compares")
    }

    /// `Select(d, mask, a, b)` of two tiles.
    pub(super) fn select_tiles(&mut self, step: &Step, d: &str, a: &str, b: &str) {
        let (mask, _) = Self::mask_of(step);
        self.call_with(
            "Select",
            &[(d, LT), (&mask, MASK), (a, LT), (b, LT), (&step.n, "i32")],
            &[
                "0",
                "1",
                "2",
                "3",
                "AscendC::SELMODE::VSEL_TENSOR_TENSOR_MODE",
                "4",
            ],
        );
    }

    /// `Compares(mask, x, s, mode, count)`.
    pub(super) fn compares(&mut self, step: &Step, x: &str, s: &str, mode: &str) {
        let (mask, cnt) = Self::mask_of(step);
        self.call_with(
            "Compares",
            &[(&mask, MASK), (x, LT), (s, "f32"), (&cnt, "i32")],
            &["0", "1", "2", mode, "3"],
        );
    }

    /// Tile `d` = 1.0 where the mask is set, else 0.0.
    fn mask_to_01(&mut self, step: &Step, d: &str) {
        let (mask, _) = Self::mask_of(step);
        let one = self.f32_const(1.0);
        let zero = self.f32_const(0.0);
        self.vector(
            "Duplicate",
            &[(&step.dup, LT), (&one, "f32"), (&step.n, "i32")],
        );
        self.call_with(
            "Select",
            &[
                (d, LT),
                (&mask, MASK),
                (&step.dup, LT),
                (&zero, "f32"),
                (&step.n, "i32"),
            ],
            &[
                "0",
                "1",
                "2",
                "3",
                "AscendC::SELMODE::VSEL_TENSOR_SCALAR_MODE",
                "4",
            ],
        );
    }

    /// A logic node with a tile operand into tile `d`.
    pub(super) fn logic_tile_op(
        &mut self,
        k: &Graph,
        v: ValueId,
        held: &[Option<Held>],
        d: &str,
        step: &Step,
    ) -> Result<(), AscendError> {
        let node = k.node(v);
        let get = |j: usize| {
            held[node.inputs[j].index()]
                .clone()
                .expect("operands first")
        };
        let n = step.n.as_str();
        match &node.op {
            Op::Compare(c) => {
                match (get(0), get(1)) {
                    (Held::Tile(x), Held::Tile(y)) => {
                        let (mask, cnt) = Self::mask_of(step);
                        self.call_with(
                            "Compare",
                            &[(&mask, MASK), (&x, LT), (&y, LT), (&cnt, "i32")],
                            &["0", "1", "2", &mode(*c, false), "3"],
                        );
                    }
                    (Held::Tile(x), Held::Scalar(s)) => {
                        self.compares(step, &x, &s, &mode(*c, false))
                    }
                    (Held::Scalar(s), Held::Tile(y)) => {
                        self.compares(step, &y, &s, &mode(*c, true))
                    }
                    (Held::Scalar(_), Held::Scalar(_)) => {
                        unreachable!("scalars compare on the scalar unit")
                    }
                }
                self.mask_to_01(step, d);
            }
            Op::Select => {
                let (c, a, b) = (get(0), get(1), get(2));
                // The mask says where the result is the tile operand; with only the first
                // branch a scalar, the condition is inverted and the branches swapped.
                let invert = matches!((&a, &b), (Held::Scalar(_), Held::Tile(_)));
                let cond = match c {
                    Held::Tile(t) => t,
                    Held::Scalar(s) => {
                        self.vector("Duplicate", &[(&step.dup, LT), (&s, "f32"), (n, "i32")]);
                        step.dup.clone()
                    }
                };
                let zero = self.f32_const(0.0);
                let m = if invert {
                    "AscendC::CMPMODE::EQ"
                } else {
                    "AscendC::CMPMODE::NE"
                };
                self.compares(step, &cond, &zero, m);
                let (mask, _) = Self::mask_of(step);
                let (tile, other) = match (a, b) {
                    (Held::Tile(x), Held::Tile(y)) => {
                        self.select_tiles(step, d, &x, &y);
                        return Ok(());
                    }
                    (Held::Tile(x), Held::Scalar(s)) | (Held::Scalar(s), Held::Tile(x)) => (x, s),
                    (Held::Scalar(s), Held::Scalar(t)) => {
                        self.vector("Duplicate", &[(&step.dup, LT), (&s, "f32"), (n, "i32")]);
                        (step.dup.clone(), t)
                    }
                };
                self.call_with(
                    "Select",
                    &[
                        (d, LT),
                        (&mask, MASK),
                        (&tile, LT),
                        (&other, "f32"),
                        (n, "i32"),
                    ],
                    &[
                        "0",
                        "1",
                        "2",
                        "3",
                        "AscendC::SELMODE::VSEL_TENSOR_SCALAR_MODE",
                        "4",
                    ],
                );
            }
            Op::Unary(UnaryOp::Not) => {
                let Held::Tile(x) = get(0) else {
                    unreachable!("a tile op's operand is a tile")
                };
                let minus = self.f32_const(-1.0);
                let one = self.f32_const(1.0);
                self.vector("Muls", &[(d, LT), (&x, LT), (&minus, "f32"), (n, "i32")]);
                self.vector("Adds", &[(d, LT), (d, LT), (&one, "f32"), (n, "i32")]);
            }
            Op::Unary(UnaryOp::IsFinite) => {
                // x − x is 0 for a finite x, NaN for ±∞ and NaN.
                let Held::Tile(x) = get(0) else {
                    unreachable!("a tile op's operand is a tile")
                };
                self.vector("Sub", &[(d, LT), (&x, LT), (&x, LT), (n, "i32")]);
                let zero = self.f32_const(0.0);
                self.compares(step, d, &zero, "AscendC::CMPMODE::EQ");
                self.mask_to_01(step, d);
            }
            Op::Cast => {
                let Held::Tile(x) = get(0) else {
                    unreachable!("a tile op's operand is a tile")
                };
                if node.ty.dtype == DType::Bool {
                    let zero = self.f32_const(0.0);
                    self.compares(step, &x, &zero, "AscendC::CMPMODE::NE");
                    self.mask_to_01(step, d);
                } else if node.ty.dtype == DType::F16 {
                    // f32 → f16: the value rounded (by the caller, as every f16 value).
                    let zero = self.f32_const(0.0);
                    self.vector("Adds", &[(d, LT), (&x, LT), (&zero, "f32"), (n, "i32")]);
                } else {
                    // f32 → i32: truncation toward zero, kept as an integral f32.
                    self.call_with(
                        "Cast",
                        &[(d, LT), (&x, LT), (n, "i32")],
                        &["0", "1", "AscendC::RoundMode::CAST_TRUNC", "2"],
                    );
                }
            }
            Op::Binary(b @ (BinaryOp::And | BinaryOp::Or)) => {
                // 0/1 values: `and` is the product, `or` the maximum.
                let api = if *b == BinaryOp::And { "Mul" } else { "Max" };
                match (get(0), get(1)) {
                    (Held::Tile(x), Held::Tile(y)) => {
                        self.vector(api, &[(d, LT), (&x, LT), (&y, LT), (n, "i32")])
                    }
                    (Held::Tile(t), Held::Scalar(s)) | (Held::Scalar(s), Held::Tile(t)) => {
                        let api = format!("{api}s");
                        self.vector(&api, &[(d, LT), (&t, LT), (&s, "f32"), (n, "i32")]);
                    }
                    _ => unreachable!("scalars are combined on the scalar unit"),
                }
            }
            op => unreachable!("{} is not a logic op", op.mnemonic()),
        }
        Ok(())
    }

    /// A logic node of scalar operands on the scalar unit.
    pub(super) fn logic_scalar_op(
        &mut self,
        k: &Graph,
        v: ValueId,
        held: &[Option<Held>],
    ) -> String {
        let node = k.node(v);
        let s = |j: usize| match &held[node.inputs[j].index()] {
            Some(Held::Scalar(s)) => s.clone(),
            _ => unreachable!("operands are scalars"),
        };
        let one = self.f32_const(1.0);
        let zero = self.f32_const(0.0);
        let as_01 = |e: &mut Emitter, b: &str| {
            let r = e.fresh();
            e.line(&format!("{r} = emitc.conditional {b}, {one}, {zero} : f32"));
            r
        };
        let cmp = |e: &mut Emitter, p: &str, x: &str, y: &str| {
            let b = e.fresh();
            e.line(&format!("{b} = emitc.cmp {p}, {x}, {y} : (f32, f32) -> i1"));
            b
        };
        match &node.op {
            Op::Compare(c) => {
                let b = cmp(self, c.name(), &s(0), &s(1));
                as_01(self, &b)
            }
            Op::Select => {
                let b = cmp(self, "ne", &s(0), &zero);
                let r = self.fresh();
                self.line(&format!(
                    "{r} = emitc.conditional {b}, {}, {} : f32",
                    s(1),
                    s(2)
                ));
                r
            }
            Op::Unary(UnaryOp::Not) => self.binop("sub", &one, &s(0), "f32"),
            Op::Unary(UnaryOp::IsFinite) => {
                let d = self.binop("sub", &s(0), &s(0), "f32");
                let b = cmp(self, "eq", &d, &zero);
                as_01(self, &b)
            }
            Op::Binary(BinaryOp::And) => self.binop("mul", &s(0), &s(1), "f32"),
            Op::Binary(BinaryOp::Or) => {
                let sum = self.binop("add", &s(0), &s(1), "f32");
                let b = cmp(self, "ne", &sum, &zero);
                as_01(self, &b)
            }
            Op::Cast if node.ty.dtype == DType::Bool => {
                let b = cmp(self, "ne", &s(0), &zero);
                as_01(self, &b)
            }
            // Rounded by the caller, as every f16 value.
            Op::Cast if node.ty.dtype == DType::F16 => s(0),
            Op::Cast => {
                let i = self.fresh();
                self.line(&format!("{i} = emitc.cast {} : f32 to i32", s(0)));
                let r = self.fresh();
                self.line(&format!("{r} = emitc.cast {i} : i32 to f32"));
                r
            }
            op => unreachable!("{} is not a logic op", op.mnemonic()),
        }
    }
}
