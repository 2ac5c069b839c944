//! An element-wise fused loop kernel → one Ascend C vector kernel, built as an MLIR EmitC module at the tile
//! level: the `extern "C" __global__ __aicore__` entry over `GM_ADDR` buffers, the multi-core
//! split by `GetBlockIdx()`, a `TPipe` with a double-buffered `TQue` per tensor input and
//! output and a `TBuf` of scratch tiles, and per tile CopyIn (`DataCopy`, or `DataCopyPad` for a
//! tail that is not whole 32-byte blocks) / Compute (count-form vector calls as
//! `emitc.call_opaque`, a `PipeBarrier<PIPE_V>` after each) / CopyOut. Queue and buffer methods
//! have no EmitC op; they are `emitc.verbatim` with SSA operands.
//!
//! Built: element-wise kernels over same-shape f32 tensors, with scalar operands (constants,
//! 0-d inputs read with `GetValue`, scalar arithmetic on the scalar unit). Every other kernel
//! class (reductions, softmax, LayerNorm, broadcasts of tensors, transposes, slices, random
//! numbers, compares and selects, f16) is an `Unsupported` error naming the op.

use super::emitc::{
    is_vector_op, lv, outputs_of, Emitter, Held, Scratch, GM_ADDR, GT, LT, PIPE, QIN, QOUT, TBUF,
};
use super::tiling::{plan_elementwise, AscendSoc, ElementwisePlan};
use super::AscendError;
use super::AscendKernel;
use ir::{DType, Graph, Op, ValueId};
use std::fmt::Write;

/// Builds kernel graph `k` (named `name`) for `soc`.
pub fn build(k: &Graph, name: &str, soc: &AscendSoc) -> Result<AscendKernel, AscendError> {
    let unsupported = |why: String| AscendError::Unsupported {
        kernel: name.to_string(),
        why,
    };
    // The tensor shape every non-scalar value has.
    let mut shape: Option<&Vec<usize>> = None;
    for (i, n) in k.nodes.iter().enumerate() {
        if n.ty.dtype != DType::F32 {
            return Err(unsupported(format!(
                "node %{i} ({}) is {}: only f32 element-wise kernels are built for Ascend yet",
                n.op.mnemonic(),
                n.ty.dtype
            )));
        }
        let ok = match &n.op {
            Op::Input { .. } | Op::Constant { .. } => true,
            Op::Broadcast { .. } => k.ty(n.inputs[0]).shape.is_empty(),
            op => is_vector_op(op),
        };
        if !ok {
            return Err(unsupported(format!(
                "node %{i} ({}): this kernel class is not built for Ascend yet (element-wise \
                 kernels are)",
                n.op.mnemonic()
            )));
        }
        if !n.ty.shape.is_empty() {
            match shape {
                None => shape = Some(&n.ty.shape),
                Some(s) if s != &n.ty.shape => {
                    return Err(unsupported(format!(
                        "node %{i} has shape {:?}, others {s:?}: only same-shape element-wise \
                         kernels are built for Ascend yet",
                        n.ty.shape
                    )))
                }
                _ => {}
            }
        }
    }
    let Some(shape) = shape else {
        return Err(unsupported("a kernel of scalars only".into()));
    };
    for (o, v) in &k.outputs {
        if k.ty(*v).shape.is_empty() {
            return Err(unsupported(format!("output {o} is a scalar")));
        }
        if matches!(k.node(*v).op, Op::Input { .. }) {
            return Err(unsupported(format!("output {o} is an input")));
        }
    }
    let elements: usize = shape.iter().product();
    let inputs: Vec<ValueId> = (0..k.len())
        .map(|i| ValueId(i as u32))
        .filter(|v| matches!(k.node(*v).op, Op::Input { .. }))
        .collect();
    let tensor_inputs = inputs
        .iter()
        .filter(|v| !k.ty(**v).shape.is_empty())
        .count();
    let outputs = k.outputs.len();
    // Scratch: one tile per computed tensor that is not an output, plus one for scalars
    // duplicated into a tile.
    let is_output = |v: ValueId| k.outputs.iter().any(|(_, o)| *o == v);
    let temps = (0..k.len())
        .map(|i| ValueId(i as u32))
        .filter(|&v| {
            let n = k.node(v);
            !n.ty.shape.is_empty()
                && !is_output(v)
                && !matches!(n.op, Op::Input { .. } | Op::Broadcast { .. })
        })
        .count();
    let plan =
        plan_elementwise(soc, elements, 4, tensor_inputs + outputs, temps + 1).map_err(|why| {
            AscendError::DoesNotFit {
                kernel: name.to_string(),
                soc: soc.name,
                why,
            }
        })?;
    let mut e = Emitter::default();
    let mlir = e.kernel(k, name, &inputs, &plan, elements)?;
    Ok(AscendKernel {
        name: name.to_string(),
        mlir,
        block_dim: plan.block_dim,
        ub_bytes: plan.ub_used,
        params: inputs.len() + outputs,
    })
}

impl Emitter {
    fn kernel(
        &mut self,
        k: &Graph,
        name: &str,
        inputs: &[ValueId],
        plan: &ElementwisePlan,
        elements: usize,
    ) -> Result<String, AscendError> {
        self.indent = 1;
        let n_in = inputs.len();
        let params: Vec<String> = (0..n_in + k.outputs.len())
            .map(|i| format!("%p{i}: {GM_ADDR}"))
            .collect();
        let pipe = self.variable(PIPE);
        // Global views and queues of the tensor inputs and outputs.
        let mut in_q: Vec<Option<(String, String)>> = Vec::new();
        for (i, &v) in inputs.iter().enumerate() {
            in_q.push(if k.ty(v).shape.is_empty() {
                None
            } else {
                Some((self.variable(GT), self.variable(QIN)))
            });
            let _ = i;
        }
        let out_q: Vec<(String, String)> = k
            .outputs
            .iter()
            .map(|_| (self.variable(GT), self.variable(QOUT)))
            .collect();
        let scratch = self.variable(TBUF);
        let blk = self.fresh();
        self.line(&format!(
            "{blk} = emitc.call_opaque \"AscendC::GetBlockIdx\"() : () -> i64"
        ));
        let per = self.constant(&plan.per_block.to_string(), "i64");
        let total = self.constant(&elements.to_string(), "i64");
        let start = self.binop("mul", &blk, &per, "i64");
        let rem = self.binop("sub", &total, &start, "i64");
        let len = self.min_i64(&rem, &per);
        // Scalars of the inputs, read once on the scalar unit; tensor views of this block.
        let mut held: Vec<Option<Held>> = vec![None; k.len()];
        for (i, &v) in inputs.iter().enumerate() {
            let p = format!("%p{i}");
            match &in_q[i] {
                None => {
                    let g = self.variable(GT);
                    self.verbatim(
                        "{}.SetGlobalBuffer((__gm__ float*){}, 1);",
                        &[(&g, lv(GT)), (&p, GM_ADDR.into())],
                    );
                    let s = self.assigned("f32", "{} = {}.GetValue(0);", &[(&g, lv(GT))]);
                    held[v.index()] = Some(Held::Scalar(s));
                }
                Some((g, _)) => self.verbatim(
                    "{}.SetGlobalBuffer((__gm__ float*){} + {}, {});",
                    &[
                        (g, lv(GT)),
                        (&p, GM_ADDR.into()),
                        (&start, "i64".into()),
                        (&len, "i64".into()),
                    ],
                ),
            }
        }
        for (o, (g, _)) in out_q.iter().enumerate() {
            let p = format!("%p{}", n_in + o);
            self.verbatim(
                "{}.SetGlobalBuffer((__gm__ float*){} + {}, {});",
                &[
                    (g, lv(GT)),
                    (&p, GM_ADDR.into()),
                    (&start, "i64".into()),
                    (&len, "i64".into()),
                ],
            );
        }
        let tile_bytes = plan.tile * 4;
        for q in in_q
            .iter()
            .flatten()
            .map(|x| (&x.1, QIN))
            .chain(out_q.iter().map(|x| (&x.1, QOUT)))
        {
            self.verbatim(
                &format!("{{}}.InitBuffer({{}}, 2, {tile_bytes});"),
                &[(&pipe, lv(PIPE)), (q.0, lv(q.1))],
            );
        }
        let slots = plan.ub_used / tile_bytes - 2 * (in_q.iter().flatten().count() + out_q.len());
        self.verbatim(
            &format!("{{}}.InitBuffer({{}}, {});", slots * tile_bytes),
            &[(&pipe, lv(PIPE)), (&scratch, lv(TBUF))],
        );
        let c0 = self.constant("0", "i64");
        let tile = self.constant(&plan.tile.to_string(), "i64");
        let off = "%off".to_string();
        self.line(&format!(
            "emitc.for {off} = {c0} to {len} step {tile} : i64 {{"
        ));
        self.indent += 1;
        let left = self.binop("sub", &len, &off, "i64");
        let n64 = self.min_i64(&left, &tile);
        let n = self.fresh();
        self.line(&format!("{n} = emitc.cast {n64} : i64 to i32"));
        let whole = self.whole_blocks(&n);

        self.verbatim("// CopyIn", &[]);
        for (g, q) in in_q.iter().flatten() {
            let t = self.assigned(LT, "{} = {}.AllocTensor<float>();", &[(q, lv(QIN))]);
            let gs = self.assigned(GT, "{} = {}[{}];", &[(g, lv(GT)), (&off, "i64".into())]);
            self.copy(&whole, &t, &gs, &n, true);
            self.verbatim("{}.EnQue({});", &[(q, lv(QIN)), (&t, LT.into())]);
        }

        self.verbatim("// Compute", &[]);
        let mut to_free = Vec::new();
        let mut tensor_inputs = in_q.iter().flatten();
        for &v in inputs {
            if k.ty(v).shape.is_empty() {
                continue;
            }
            let (_, q) = tensor_inputs.next().expect("one queue per tensor input");
            let t = self.assigned(LT, "{} = {}.DeQue<float>();", &[(q, lv(QIN))]);
            to_free.push((q.clone(), t.clone()));
            held[v.index()] = Some(Held::Tile(t));
        }
        let mut out_tiles = Vec::new();
        for (_, q) in &out_q {
            out_tiles.push(self.assigned(LT, "{} = {}.AllocTensor<float>();", &[(q, lv(QOUT))]));
        }
        let mut scratch = Scratch::new(&scratch, plan.tile);
        let dup = scratch.take(self);
        for i in 0..k.len() {
            let v = ValueId(i as u32);
            if held[i].is_some() {
                continue;
            }
            let outs = outputs_of(k, v);
            let out = outs.first().map(|&o| out_tiles[o].clone());
            let h = self.step_value(k, v, &held, out, &mut scratch, &dup, &n, name)?;
            // An output that is a scalar or another output's value: copied into its tile.
            for &o in &outs {
                self.put_output(&h, &out_tiles[o], &n);
            }
            held[i] = Some(h);
        }
        for (q, t) in &to_free {
            self.verbatim("{}.FreeTensor({});", &[(q, lv(QIN)), (t, LT.into())]);
        }
        for ((_, q), t) in out_q.iter().zip(&out_tiles) {
            self.verbatim("{}.EnQue({});", &[(q, lv(QOUT)), (t, LT.into())]);
        }

        self.verbatim("// CopyOut", &[]);
        for (g, q) in &out_q {
            let t = self.assigned(LT, "{} = {}.DeQue<float>();", &[(q, lv(QOUT))]);
            let gs = self.assigned(GT, "{} = {}[{}];", &[(g, lv(GT)), (&off, "i64".into())]);
            self.copy(&whole, &t, &gs, &n, false);
            self.verbatim("{}.FreeTensor({});", &[(q, lv(QOUT)), (&t, LT.into())]);
        }
        self.indent -= 1;
        self.line("}");
        self.line("emitc.return");
        let mut m = String::new();
        writeln!(m, "emitc.include \"kernel_operator.h\"").unwrap();
        writeln!(
            m,
            "emitc.func @{name}({}) attributes {{specifiers = [\"extern \\\"C\\\" __global__ __aicore__\"]}} {{",
            params.join(", ")
        )
        .unwrap();
        m.push_str(&self.body);
        m.push_str("}\n");
        Ok(m)
    }
}
