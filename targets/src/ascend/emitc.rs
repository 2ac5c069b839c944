//! EmitC text for Ascend C kernels: fresh SSA names, the opaque Ascend C types, and the few
//! constructs every kernel class uses (variables assigned by `emitc.verbatim`, vector calls with
//! their `PipeBarrier`, GM ↔ UB copies).

use super::elem::Elem;
use super::logic::{cast_changes_value, is_logic_op};
use super::AscendError;
use ir::{BinaryOp, DType, Graph, Op, UnaryOp, ValueId};

pub(super) const LT: &str = "!emitc.opaque<\"AscendC::LocalTensor<float>\">";
pub(super) const GT: &str = "!emitc.opaque<\"AscendC::GlobalTensor<float>\">";
pub(super) const QIN: &str = "!emitc.opaque<\"AscendC::TQue<AscendC::QuePosition::VECIN, 2>\">";
pub(super) const QOUT: &str = "!emitc.opaque<\"AscendC::TQue<AscendC::QuePosition::VECOUT, 2>\">";
pub(super) const TBUF: &str = "!emitc.opaque<\"AscendC::TBuf<AscendC::TPosition::VECCALC>\">";
pub(super) const PIPE: &str = "!emitc.opaque<\"AscendC::TPipe\">";
pub(super) const GM_ADDR: &str = "!emitc.opaque<\"GM_ADDR\">";

/// How a value of the kernel is held.
#[derive(Clone, Debug)]
pub(super) enum Held {
    /// A scalar in a register (f32 SSA value).
    Scalar(String),
    /// A tile in UB (LocalTensor SSA value).
    Tile(String),
}

/// The work tiles of one step (a tile, or a row) that any op may use.
pub(super) struct Step {
    /// Elements of the step (i32 SSA value).
    pub(super) n: String,
    /// A scratch tile scalars are duplicated into.
    pub(super) dup: String,
    /// A compare's bit mask (a scratch tile seen as `uint8_t`) and its count (`n` rounded up
    /// to whole 256-byte repeats), when the kernel compares ([`super::logic::needs_mask`]).
    pub(super) mask: Option<(String, String)>,
    /// Scratch tiles of ops that need several ([`extra_tiles`]).
    pub(super) work: Vec<String>,
}

/// Scratch tiles a kernel's ops need besides one per value (`erf`'s).
pub(super) fn extra_tiles(k: &Graph) -> usize {
    let erf = k.nodes.iter().any(|n| n.op == Op::Unary(UnaryOp::Erf));
    if erf {
        super::erf::ERF_TILES
    } else {
        0
    }
}

/// EmitC text with fresh SSA names.
#[derive(Default)]
pub(super) struct Emitter {
    pub(super) body: String,
    pub(super) next: usize,
    pub(super) indent: usize,
    /// Scratch tiles the emitted kernel needs at once (its builders plan the UB with it).
    pub(super) scratch_slots: usize,
    /// The tiling planner's values the kernel reads, by field: its tiling struct.
    pub(super) tiling: Vec<(String, usize)>,
}

impl Emitter {
    pub(super) fn fresh(&mut self) -> String {
        self.next += 1;
        format!("%v{}", self.next)
    }

    pub(super) fn line(&mut self, s: &str) {
        for _ in 0..self.indent {
            self.body.push_str("  ");
        }
        self.body.push_str(s);
        self.body.push('\n');
    }

    /// `%v = "emitc.constant"() <{value = lit : ty}>`.
    pub(super) fn constant(&mut self, lit: &str, ty: &str) -> String {
        let v = self.fresh();
        self.line(&format!(
            "{v} = \"emitc.constant\"() <{{value = {lit} : {ty}}}> : () -> {ty}"
        ));
        v
    }

    /// `value`, a tiling planner's decision, as field `field` of the kernel's tiling struct
    /// (printed at the top of the kernel by [`Emitter::module`]): an i64 reading `tiling.<field>`.
    /// A field planned twice with different values gets a numbered name.
    pub(super) fn tiling(&mut self, field: &str, value: usize) -> String {
        let mut name = field.to_string();
        let mut n = 1;
        while let Some((_, v)) = self.tiling.iter().find(|(f, _)| *f == name) {
            if *v == value {
                break;
            }
            n += 1;
            name = format!("{field}{n}");
        }
        if !self.tiling.iter().any(|(f, _)| *f == name) {
            self.tiling.push((name.clone(), value));
        }
        let v = self.fresh();
        self.line(&format!("{v} = emitc.literal \"tiling.{name}\" : i64"));
        v
    }

    pub(super) fn f32_const(&mut self, x: f64) -> String {
        self.constant(&crate::scalar::float_lit(x, DType::F32), "f32")
    }

    /// A declared, uninitialized variable of opaque type `ty`.
    pub(super) fn variable(&mut self, ty: &str) -> String {
        let v = self.fresh();
        self.line(&format!(
            "{v} = \"emitc.variable\"() <{{value = #emitc.opaque<\"\">}}> : () -> !emitc.lvalue<{ty}>"
        ));
        v
    }

    /// `emitc.verbatim` with `{}` placeholders filled by `args` (SSA name, type); a literal `{`
    /// is written `{{`.
    pub(super) fn verbatim(&mut self, text: &str, args: &[(&str, String)]) {
        let names: Vec<&str> = args.iter().map(|a| a.0).collect();
        let tys: Vec<&str> = args.iter().map(|a| a.1.as_str()).collect();
        let text = text.replace('"', "\\\"");
        if args.is_empty() {
            self.line(&format!("emitc.verbatim \"{text}\""));
        } else {
            self.line(&format!(
                "emitc.verbatim \"{text}\" args {} : {}",
                names.join(", "),
                tys.join(", ")
            ));
        }
    }

    /// A value of type `ty` assigned by `text` (whose first `{}` is the variable), loaded.
    pub(super) fn assigned(&mut self, ty: &str, text: &str, args: &[(&str, String)]) -> String {
        let var = self.variable(ty);
        let mut all = vec![(var.as_str(), lv(ty))];
        all.extend(args.iter().cloned());
        self.verbatim(text, &all);
        let v = self.fresh();
        self.line(&format!("{v} = emitc.load {var} : {}", lv(ty)));
        v
    }

    /// `AscendC::<api>(args…)` followed by `PipeBarrier<PIPE_V>`.
    pub(super) fn vector(&mut self, api: &str, args: &[(&str, &str)]) {
        let names: Vec<&str> = args.iter().map(|a| a.0).collect();
        let tys: Vec<&str> = args.iter().map(|a| a.1).collect();
        self.line(&format!(
            "emitc.call_opaque \"AscendC::{api}\"({}) : ({}) -> ()",
            names.join(", "),
            tys.join(", ")
        ));
        self.line(
            "emitc.call_opaque \"AscendC::PipeBarrier\"() {template_args = [#emitc.opaque<\"PIPE_V\">]} : () -> ()",
        );
    }

    /// `AscendC::<api>(…)` with `order` the C++ arguments: an index into `args` or an opaque
    /// spelling (an enum value), followed by `PipeBarrier<PIPE_V>`.
    pub(super) fn call_with(&mut self, api: &str, args: &[(&str, &str)], order: &[&str]) {
        let names: Vec<&str> = args.iter().map(|a| a.0).collect();
        let tys: Vec<&str> = args.iter().map(|a| a.1).collect();
        let attrs: Vec<String> = order
            .iter()
            .map(|o| match o.parse::<usize>() {
                Ok(i) => format!("{i} : index"),
                Err(_) => format!("#emitc.opaque<\"{o}\">"),
            })
            .collect();
        self.line(&format!(
            "emitc.call_opaque \"AscendC::{api}\"({}) {{args = [{}]}} : ({}) -> ()",
            names.join(", "),
            attrs.join(", "),
            tys.join(", ")
        ));
        self.line(
            "emitc.call_opaque \"AscendC::PipeBarrier\"() {template_args = [#emitc.opaque<\"PIPE_V\">]} : () -> ()",
        );
    }

    /// `n` (i32) rounded up to whole 256-byte repeats of f32 (Compare's count).
    pub(super) fn whole_repeats(&mut self, n: &str) -> String {
        let r = self.constant("64", "i32");
        let r1 = self.constant("63", "i32");
        let up = self.binop("add", n, &r1, "i32");
        let q = self.binop("div", &up, &r, "i32");
        self.binop("mul", &q, &r, "i32")
    }

    /// `a > b ? a : b` of two i64 values.
    pub(super) fn max_i64(&mut self, a: &str, b: &str) -> String {
        let gt = self.fresh();
        self.line(&format!("{gt} = emitc.cmp gt, {a}, {b} : (i64, i64) -> i1"));
        let m = self.fresh();
        self.line(&format!("{m} = emitc.conditional {gt}, {a}, {b} : i64"));
        m
    }

    /// `a < b ? a : b` of two i64 values.
    pub(super) fn min_i64(&mut self, a: &str, b: &str) -> String {
        let lt = self.fresh();
        self.line(&format!("{lt} = emitc.cmp lt, {a}, {b} : (i64, i64) -> i1"));
        let m = self.fresh();
        self.line(&format!("{m} = emitc.conditional {lt}, {a}, {b} : i64"));
        m
    }

    /// Whether `n` (i32) values of `elem` are whole 32-byte blocks.
    pub(super) fn whole_blocks(&mut self, n: &str, elem: Elem) -> String {
        let eight = self.constant(&(32 / elem.bytes()).to_string(), "i32");
        let zero = self.constant("0", "i32");
        let r = self.binop("rem", n, &eight, "i32");
        let z = self.fresh();
        self.line(&format!(
            "{z} = emitc.cmp eq, {r}, {zero} : (i32, i32) -> i1"
        ));
        z
    }

    pub(super) fn binop(&mut self, op: &str, a: &str, b: &str, ty: &str) -> String {
        let v = self.fresh();
        self.line(&format!("{v} = emitc.{op} {a}, {b} : ({ty}, {ty}) -> {ty}"));
        v
    }

    /// GM ↔ UB copy of `n` elements: `DataCopy` when they are whole 32-byte blocks (`whole`, an
    /// i1 known at run time), else `DataCopyPad`.
    pub(super) fn copy(
        &mut self,
        elem: Elem,
        whole: &str,
        t: &str,
        g: &str,
        n: &str,
        gm_to_ub: bool,
    ) {
        self.line(&format!("emitc.if {whole} {{"));
        self.indent += 1;
        self.copy_known(elem, true, t, g, n, gm_to_ub);
        self.indent -= 1;
        self.line("} else {");
        self.indent += 1;
        self.copy_known(elem, false, t, g, n, gm_to_ub);
        self.indent -= 1;
        self.line("}");
    }

    /// GM ↔ UB copy of `n` elements, `whole` known at compile time: `DataCopy`, or `DataCopyPad`
    /// (padding the UB tile's tail with zeros on the way in).
    pub(super) fn copy_known(
        &mut self,
        elem: Elem,
        whole: bool,
        t: &str,
        g: &str,
        n: &str,
        gm_to_ub: bool,
    ) {
        let (lt, gt) = (elem.lt(), elem.gt());
        let (a, at, b, bt) = if gm_to_ub {
            (t, lt.as_str(), g, gt.as_str())
        } else {
            (g, gt.as_str(), t, lt.as_str())
        };
        if whole {
            self.line(&format!(
                "emitc.call_opaque \"AscendC::DataCopy\"({a}, {b}, {n}) : ({at}, {bt}, i32) -> ()"
            ));
            return;
        }
        let (bytes, cpp) = (elem.bytes(), elem.cpp());
        let zero = if elem == Elem::F32 { "0.0f" } else { "0" };
        let pad = if gm_to_ub {
            format!("AscendC::DataCopyPad({{}}, {{}}, AscendC::DataCopyExtParams{{{{1, uint32_t({{}} * {bytes}), 0, 0, 0}}, AscendC::DataCopyPadExtParams<{cpp}>{{{{true, 0, 0, {zero}}});")
        } else {
            format!("AscendC::DataCopyPad({{}}, {{}}, AscendC::DataCopyExtParams{{{{1, uint32_t({{}} * {bytes}), 0, 0, 0}});")
        };
        self.verbatim(&pad, &[(a, at.into()), (b, bt.into()), (n, "i32".into())]);
    }

    /// A scalar node on the scalar unit.
    pub(super) fn scalar_op(
        &mut self,
        k: &Graph,
        v: ValueId,
        held: &[Option<Held>],
        name: &str,
    ) -> Result<String, AscendError> {
        let node = k.node(v);
        let s = |j: usize| match &held[node.inputs[j].index()] {
            Some(Held::Scalar(s)) => s.clone(),
            _ => unreachable!("a scalar's operands are scalars"),
        };
        Ok(match &node.op {
            Op::Unary(UnaryOp::Neg) => {
                let m = self.f32_const(-1.0);
                self.binop("mul", &s(0), &m, "f32")
            }
            Op::Binary(b @ (BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div)) => {
                let op = match b {
                    BinaryOp::Add => "add",
                    BinaryOp::Sub => "sub",
                    BinaryOp::Mul => "mul",
                    _ => "div",
                };
                self.binop(op, &s(0), &s(1), "f32")
            }
            op => {
                return Err(AscendError::Unsupported {
                    kernel: name.to_string(),
                    why: format!(
                        "scalar {} is not built for Ascend yet (vector ops are)",
                        op.mnemonic()
                    ),
                })
            }
        })
    }

    /// A tensor node into tile `d`.
    pub(super) fn tile_op(
        &mut self,
        k: &Graph,
        v: ValueId,
        held: &[Option<Held>],
        d: &str,
        step: &Step,
        name: &str,
    ) -> Result<(), AscendError> {
        let node = k.node(v);
        if is_logic_op(k, &node.op, &node.inputs, node.ty.dtype) {
            return self.logic_tile_op(k, v, held, d, step);
        }
        let (dup, n) = (step.dup.as_str(), step.n.as_str());
        let get = |j: usize| {
            held[node.inputs[j].index()]
                .clone()
                .expect("operands first")
        };
        let i32t = "i32";
        match &node.op {
            Op::Unary(u) => {
                let Held::Tile(x) = get(0) else {
                    unreachable!("a tensor's unary operand is a tensor")
                };
                match u {
                    UnaryOp::Neg => {
                        let m = self.f32_const(-1.0);
                        self.vector("Muls", &[(d, LT), (&x, LT), (&m, "f32"), (n, i32t)]);
                    }
                    UnaryOp::Tanh => {
                        // 1 − 2 / (e^{2x} + 1): exact at ±∞, no overflow to NaN.
                        let two = self.f32_const(2.0);
                        let one = self.f32_const(1.0);
                        let minus = self.f32_const(-1.0);
                        self.vector("Muls", &[(d, LT), (&x, LT), (&two, "f32"), (n, i32t)]);
                        self.vector("Exp", &[(d, LT), (d, LT), (n, i32t)]);
                        self.vector("Adds", &[(d, LT), (d, LT), (&one, "f32"), (n, i32t)]);
                        self.vector("Duplicate", &[(dup, LT), (&two, "f32"), (n, i32t)]);
                        self.vector("Div", &[(d, LT), (dup, LT), (d, LT), (n, i32t)]);
                        self.vector("Muls", &[(d, LT), (d, LT), (&minus, "f32"), (n, i32t)]);
                        self.vector("Adds", &[(d, LT), (d, LT), (&one, "f32"), (n, i32t)]);
                    }
                    UnaryOp::Erf => self.erf_tile(d, &x, step, &step.work),
                    UnaryOp::Rsqrt => {
                        // Sqrt then an exact division (the hardware Rsqrt is not accurate).
                        self.vector("Sqrt", &[(d, LT), (&x, LT), (n, i32t)]);
                        let one = self.f32_const(1.0);
                        self.vector("Duplicate", &[(dup, LT), (&one, "f32"), (n, i32t)]);
                        self.vector("Div", &[(d, LT), (dup, LT), (d, LT), (n, i32t)]);
                    }
                    u => {
                        let api = match u {
                            UnaryOp::Abs => "Abs",
                            UnaryOp::Exp => "Exp",
                            UnaryOp::Log => "Ln",
                            _ => "Sqrt",
                        };
                        self.vector(api, &[(d, LT), (&x, LT), (n, i32t)]);
                    }
                }
            }
            Op::Binary(b) => {
                let api = match b {
                    BinaryOp::Add => "Add",
                    BinaryOp::Sub => "Sub",
                    BinaryOp::Mul => "Mul",
                    BinaryOp::Div => "Div",
                    BinaryOp::Max => "Max",
                    _ => "Min",
                };
                match (get(0), get(1)) {
                    (Held::Tile(x), Held::Tile(y)) => {
                        self.vector(api, &[(d, LT), (&x, LT), (&y, LT), (n, i32t)])
                    }
                    (Held::Tile(t), Held::Scalar(s)) | (Held::Scalar(s), Held::Tile(t))
                        if matches!(
                            b,
                            BinaryOp::Add | BinaryOp::Mul | BinaryOp::Max | BinaryOp::Min
                        ) =>
                    {
                        let api = format!("{api}s");
                        self.vector(&api, &[(d, LT), (&t, LT), (&s, "f32"), (n, i32t)]);
                    }
                    (a, b2) => {
                        // Sub and Div with a scalar: the scalar duplicated into a tile (exact).
                        let tile_of = |e: &mut Emitter, h: Held| match h {
                            Held::Tile(t) => t,
                            Held::Scalar(s) => {
                                e.vector("Duplicate", &[(dup, LT), (&s, "f32"), (n, i32t)]);
                                dup.to_string()
                            }
                        };
                        let x = tile_of(self, a);
                        let y = tile_of(self, b2);
                        self.vector(api, &[(d, LT), (&x, LT), (&y, LT), (n, i32t)]);
                    }
                }
            }
            op => {
                return Err(AscendError::Unsupported {
                    kernel: name.to_string(),
                    why: format!("{} is not built for Ascend yet", op.mnemonic()),
                })
            }
        }
        Ok(())
    }

    /// `SetFlag` / `WaitFlag` of a fresh event of `HardEvent::<kind>`.
    pub(super) fn event(&mut self, kind: &str) {
        const EVENT: &str = "!emitc.opaque<\"event_t\">";
        let e = self.assigned(
            EVENT,
            &format!(
                "{{}} = static_cast<event_t>(AscendC::GetTPipePtr()->FetchEventID(AscendC::HardEvent::{kind}));"
            ),
            &[],
        );
        for f in ["SetFlag", "WaitFlag"] {
            self.line(&format!(
                "emitc.call_opaque \"AscendC::{f}\"({e}) {{template_args = [#emitc.opaque<\"AscendC::HardEvent::{kind}\">]}} : ({EVENT}) -> ()"
            ));
        }
    }

    /// A scalar (or per-row) op: `+ - × ÷` and negation on the scalar unit; the others as a
    /// vector op on one 32-byte block of `dup`, read back after a V→S event.
    pub(super) fn any_scalar_op(
        &mut self,
        k: &Graph,
        v: ValueId,
        held: &[Option<Held>],
        dup: &str,
        name: &str,
    ) -> Result<String, AscendError> {
        let node = k.node(v);
        if is_logic_op(k, &node.op, &node.inputs, node.ty.dtype) {
            return Ok(self.logic_scalar_op(k, v, held));
        }
        let s = |j: usize| match &held[node.inputs[j].index()] {
            Some(Held::Scalar(s)) => s.clone(),
            _ => unreachable!("operands are scalars"),
        };
        let api = match &node.op {
            Op::Unary(UnaryOp::Abs) => "Abs",
            Op::Unary(UnaryOp::Exp) => "Exp",
            Op::Unary(UnaryOp::Log) => "Ln",
            Op::Unary(UnaryOp::Sqrt) | Op::Unary(UnaryOp::Rsqrt) => "Sqrt",
            Op::Binary(BinaryOp::Max) | Op::Binary(BinaryOp::Min) => {
                let (x, y) = (s(0), s(1));
                let api = if node.op == Op::Binary(BinaryOp::Max) {
                    "Maxs"
                } else {
                    "Mins"
                };
                let eight = self.constant("8", "i32");
                self.vector("Duplicate", &[(dup, LT), (&x, "f32"), (&eight, "i32")]);
                self.vector(api, &[(dup, LT), (dup, LT), (&y, "f32"), (&eight, "i32")]);
                self.event("V_S");
                return Ok(self.assigned("f32", "{} = {}.GetValue(0);", &[(dup, LT.into())]));
            }
            _ => return self.scalar_op(k, v, held, name),
        };
        let eight = self.constant("8", "i32");
        self.vector("Duplicate", &[(dup, LT), (&s(0), "f32"), (&eight, "i32")]);
        self.vector(api, &[(dup, LT), (dup, LT), (&eight, "i32")]);
        self.event("V_S");
        let r = self.assigned("f32", "{} = {}.GetValue(0);", &[(dup, LT.into())]);
        Ok(if node.op == Op::Unary(UnaryOp::Rsqrt) {
            let one = self.f32_const(1.0);
            self.binop("div", &one, &r, "f32")
        } else {
            r
        })
    }

    /// Node `v` of kernel `k` for one step, its operands held: constants and aliases (broadcasts,
    /// casts, stop-gradient) as they are, a value of scalars on the scalar unit, a tensor op into
    /// `out` (the tile of the output it is) or a fresh scratch tile.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn step_value(
        &mut self,
        k: &Graph,
        v: ValueId,
        held: &[Option<Held>],
        out: Option<String>,
        scratch: &mut Scratch,
        step: &Step,
        name: &str,
    ) -> Result<Held, AscendError> {
        let node = k.node(v);
        let arg = |j: usize| {
            held[node.inputs[j].index()]
                .clone()
                .expect("operands first")
        };
        // A value whose operands are all scalars (a splat constant's arithmetic, a broadcast
        // scalar's) stays a scalar until an output needs its tile.
        let all_scalar = node
            .inputs
            .iter()
            .all(|x| matches!(held[x.index()], Some(Held::Scalar(_))));
        Ok(match &node.op {
            Op::Constant { value } => Held::Scalar(self.f32_const(*value)),
            Op::Broadcast { .. } | Op::Unary(UnaryOp::StopGradient) => arg(0),
            Op::Cast if !cast_changes_value(k, v) => arg(0),
            _ if all_scalar => {
                let s = self.any_scalar_op(k, v, held, &step.dup, name)?;
                if node.ty.dtype == DType::F16 {
                    Held::Scalar(self.round_half_scalar(&s))
                } else {
                    Held::Scalar(s)
                }
            }
            _ => {
                let d = match out {
                    Some(t) => t,
                    None => scratch.take_value(self),
                };
                self.tile_op(k, v, held, &d, step, name)?;
                if node.ty.dtype == DType::F16 {
                    self.round_half_tile(&d, &step.dup, &step.n);
                }
                Held::Tile(d)
            }
        })
    }

    /// Puts `h` into output tile `dst` of `elem` values (nothing to do when it was computed
    /// there); `conv` is the kernel's conversion tile (for outputs that are not f32).
    pub(super) fn put_output(
        &mut self,
        h: &Held,
        dst: &str,
        elem: Elem,
        conv: Option<&str>,
        step: &Step,
    ) {
        let n = step.n.as_str();
        if elem != Elem::F32 {
            let src = match h {
                Held::Tile(t) => t.clone(),
                Held::Scalar(s) => {
                    self.vector("Duplicate", &[(&step.dup, LT), (s, "f32"), (n, "i32")]);
                    step.dup.clone()
                }
            };
            let conv = conv.expect("a conversion tile for a kernel with a non-f32 output");
            self.narrow(elem, &src, dst, conv, n);
            return;
        }
        match h {
            Held::Tile(t) if t == dst => {}
            Held::Tile(t) => {
                let z = self.f32_const(0.0);
                self.vector("Adds", &[(dst, LT), (t, LT), (&z, "f32"), (n, "i32")]);
            }
            Held::Scalar(s) => self.vector("Duplicate", &[(dst, LT), (s, "f32"), (n, "i32")]),
        }
    }
}

impl Emitter {
    /// The EmitC module of kernel `name` with `params` (`%pN: GM_ADDR`) and the body emitted
    /// so far; `prelude` are module-level ops before the function.
    pub(super) fn module(&self, name: &str, params: &[String], prelude: &str) -> String {
        // The tiling struct: the planner's values, compile-time constants (the kernel is built
        // for its shapes), first in the function. (A verbatim without arguments has no
        // placeholders: its braces are written as they are.)
        let tiling = if self.tiling.is_empty() {
            String::new()
        } else {
            let fields: Vec<String> = self
                .tiling
                .iter()
                .map(|(f, _)| format!("int64_t {f};"))
                .collect();
            let values: Vec<String> = self.tiling.iter().map(|(_, v)| v.to_string()).collect();
            format!(
                "  emitc.verbatim \"constexpr struct {{ {} }} tiling = {{{}}};\"\n",
                fields.join(" "),
                values.join(", ")
            )
        };
        format!(
            "emitc.include \"kernel_operator.h\"\n{prelude}emitc.func @{name}({}) attributes {{specifiers = [\"extern \\\"C\\\" __global__ __aicore__\"]}} {{\n{tiling}{}}}\n",
            params.join(", "),
            self.body
        )
    }

    /// Opens `emitc.for off = 0 to len step tile` (`len` an i64 SSA value; `off` the loop
    /// variable's name) and returns this step's count as i64 and i32, with the whole-32-byte-blocks flag
    /// of each element type in `elems` (see [`whole_of`]).
    pub(super) fn open_tile_loop(
        &mut self,
        off: &str,
        (len, tile): (&str, usize),
        elems: impl IntoIterator<Item = Elem>,
    ) -> (String, String, Vec<(Elem, String)>) {
        let c0 = self.constant("0", "i64");
        let tile = &self.tiling("tile", tile);
        self.line(&format!(
            "emitc.for {off} = {c0} to {len} step {tile} : i64 {{"
        ));
        self.indent += 1;
        let left = self.binop("sub", len, off, "i64");
        let n64 = self.min_i64(&left, tile);
        let n = self.fresh();
        self.line(&format!("{n} = emitc.cast {n64} : i64 to i32"));
        let mut whole: Vec<(Elem, String)> = Vec::new();
        for el in elems {
            if !whole.iter().any(|(e, _)| *e == el) {
                let w = self.whole_blocks(&n, el);
                whole.push((el, w));
            }
        }
        (n64, n, whole)
    }

    /// DeQue of an input tile of `el` values from `q`, and the f32 tile the kernel computes
    /// on: the tile itself, or a scratch tile it is widened into (`conv` the conversion tile).
    pub(super) fn dequeue_input(
        &mut self,
        q: &str,
        el: Elem,
        scratch: &mut Scratch,
        conv: Option<&str>,
        n: &str,
    ) -> (String, String) {
        let t = self.assigned(
            &el.lt(),
            &format!("{{}} = {{}}.DeQue<{}>();", el.cpp()),
            &[(q, lv(QIN))],
        );
        if el == Elem::F32 {
            return (t.clone(), t);
        }
        let w = scratch.take(self);
        self.widen(el, &t, &w, conv.expect("a conversion tile"), n);
        (t, w)
    }

    /// The step's work tiles after `dup` (and any class-specific ones): the conversion tile
    /// when `conv`, the compare mask when `mask` (its count from `n`), `erf`'s tiles.
    pub(super) fn step_tiles(
        &mut self,
        k: &Graph,
        scratch: &mut Scratch,
        (n, dup): (&str, String),
        (conv, mask): (bool, bool),
    ) -> (Option<String>, Step) {
        let conv = conv.then(|| scratch.take(self));
        let mask = if mask {
            let t = scratch.take(self);
            let m = self.assigned(
                &Elem::U8.lt(),
                "{} = {}.ReinterpretCast<uint8_t>();",
                &[(&t, LT.into())],
            );
            Some((m, self.whole_repeats(n)))
        } else {
            None
        };
        let work = (0..extra_tiles(k)).map(|_| scratch.take(self)).collect();
        let step = Step {
            n: n.to_string(),
            dup,
            mask,
            work,
        };
        (conv, step)
    }
}

/// The whole-blocks flag of `el` among `flags` ([`Emitter::open_tile_loop`]).
pub(super) fn whole_of(flags: &[(Elem, String)], el: Elem) -> String {
    flags
        .iter()
        .find(|(e, _)| *e == el)
        .expect("a flag per element type")
        .1
        .clone()
}

/// The kernel's `TBuf` of scratch tiles, handed out one after another.
pub(super) struct Scratch {
    buf: String,
    tile_elems: usize,
    /// Slots handed out so far (the kernel's need is the most of them at once).
    next: usize,
    /// Slots of values that died, for reuse.
    free: Vec<usize>,
    /// Tiles of values (releasable once their values die) and their slots.
    values: Vec<(String, usize)>,
}

impl Scratch {
    /// Tiles of `tile_elems` f32 values in the `TBuf` variable `buf`.
    pub(super) fn new(buf: &str, tile_elems: usize) -> Scratch {
        Scratch {
            buf: buf.to_string(),
            tile_elems,
            next: 0,
            free: Vec::new(),
            values: Vec::new(),
        }
    }

    /// A tile for the kernel's whole run (a `LocalTensor` view at its offset).
    pub(super) fn take(&mut self, e: &mut Emitter) -> String {
        let slot = self.next;
        self.next += 1;
        self.view(e, slot)
    }

    /// A tile for a value: a dead value's slot when there is one.
    pub(super) fn take_value(&mut self, e: &mut Emitter) -> String {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.next += 1;
            self.next - 1
        });
        let t = self.view(e, slot);
        self.values.push((t.clone(), slot));
        t
    }

    fn view(&self, e: &mut Emitter, slot: usize) -> String {
        let at = e.constant(&(slot * self.tile_elems).to_string(), "i32");
        e.assigned(
            LT,
            "{} = {}.Get<float>()[{}];",
            &[(&self.buf, lv(TBUF)), (&at, "i32".into())],
        )
    }

    /// The slots this scratch needs.
    pub(super) fn slots(&self) -> usize {
        self.next
    }

    /// After node `i`: frees the tiles of values no later node reads (`last_use`, from
    /// [`last_uses`]); aliases share a tile, which lives while any of them does.
    pub(super) fn release_dead(&mut self, i: usize, held: &[Option<Held>], last_use: &[usize]) {
        let mut live = Vec::new();
        for (t, slot) in std::mem::take(&mut self.values) {
            let needed = held[..=i]
                .iter()
                .enumerate()
                .any(|(v, h)| matches!(h, Some(Held::Tile(x)) if *x == t) && last_use[v] > i);
            if needed {
                live.push((t, slot));
            } else {
                self.free.push(slot);
            }
        }
        self.values = live;
    }
}

/// For each value of `k`, the last node that reads it; `usize::MAX` for outputs and for the
/// values `keep` names (read after the node loop).
pub(super) fn last_uses(k: &Graph, keep: impl Fn(ValueId) -> bool) -> Vec<usize> {
    let mut last: Vec<usize> = (0..k.len()).collect();
    for (i, n) in k.nodes.iter().enumerate() {
        for x in &n.inputs {
            last[x.index()] = last[x.index()].max(i);
        }
    }
    for (v, l) in last.iter_mut().enumerate() {
        let v = ValueId(v as u32);
        if keep(v) || k.outputs.iter().any(|(_, o)| *o == v) {
            *l = usize::MAX;
        }
    }
    last
}

/// Whether element-wise node `v` of kernel `k` has vector calls here (both kernel classes
/// share them: [`Emitter::tile_op`], [`Emitter::any_scalar_op`]), its element types included.
pub(super) fn is_vector_op(k: &Graph, v: ValueId) -> bool {
    let node = k.node(v);
    if is_logic_op(k, &node.op, &node.inputs, node.ty.dtype) {
        return true;
    }
    // f16 values are computed in f32 and rounded to f16 after each op (`step_value`).
    let float = |d: DType| matches!(d, DType::F32 | DType::F16);
    let all_f32 = float(node.ty.dtype) && node.inputs.iter().all(|x| float(k.ty(*x).dtype));
    // Integers are held as integral f32: sums, differences, products and extrema stay exact
    // below 2^24 (step counters); integer division would need its own rounding.
    let all_i32 =
        node.ty.dtype == DType::I32 && node.inputs.iter().all(|x| k.ty(*x).dtype == DType::I32);
    if all_i32 {
        return matches!(
            node.op,
            Op::Binary(
                BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Max | BinaryOp::Min
            ) | Op::Unary(UnaryOp::Neg)
        );
    }
    all_f32
        && match &node.op {
            Op::Unary(u) => matches!(
                u,
                UnaryOp::Neg
                    | UnaryOp::Abs
                    | UnaryOp::Exp
                    | UnaryOp::Log
                    | UnaryOp::Sqrt
                    | UnaryOp::Rsqrt
                    | UnaryOp::Tanh
                    | UnaryOp::Erf
                    | UnaryOp::StopGradient
            ),
            Op::Binary(b) => !matches!(b, BinaryOp::And | BinaryOp::Or),
            _ => false,
        }
}

/// The indices of the outputs of `k` that are value `v`.
pub(super) fn outputs_of(k: &Graph, v: ValueId) -> Vec<usize> {
    k.outputs
        .iter()
        .enumerate()
        .filter(|(_, (_, o))| *o == v)
        .map(|(j, _)| j)
        .collect()
}

/// The lvalue type of `ty`.
pub(super) fn lv(ty: &str) -> String {
    format!("!emitc.lvalue<{ty}>")
}
