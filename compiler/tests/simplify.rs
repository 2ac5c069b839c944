//! The simplify stage: each pass on small hand-built graphs (what it removes, merges, folds or
//! rewrites, and what it must leave alone), then every phase × preset graph on the tiny configs
//! (verifier, output names, and bit-identical interpreter results on random inputs), a snapshot,
//! determinism, and the sizes and timing on the real BERT-base/TinyBERT4 td1 graph.

use compiler::frontend::config::{builtin, HfBertConfig, ModelConfig};
use compiler::frontend::preset::{Phase, Preset};
use compiler::frontend::{build_graph, GraphSpec};
use compiler::passes::simplify::{
    same_graph, simplify_pipeline, AlgebraicSimplify, CommonSubexpressionElimination,
    ConstantFolding, DeadCodeElimination, Simplify,
};
use compiler::passes::{run_passes, Pass};
use ir::{
    Builder, CmpOp, DType, Data, Graph, Interpreter, Op, ReduceKind, Tensor, TensorType, UnaryOp,
    ValueId,
};
use std::collections::HashMap;
use std::path::PathBuf;

// ---------------------------------------------------------------------------------------------
// Helpers: deterministic random inputs and bitwise comparison of interpreter results.

/// SplitMix64, plus normal draws by Box–Muller.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1).
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Random values for every input of `g`, chosen by name so that the training graphs compute
/// finite, meaningful steps: parameters ~N(0, 0.02) (LayerNorm gains around 1), Adam moments
/// small with `v ≥ 0`, token ids below the vocab (100 in the tiny configs), masks with padded
/// rows, loss scale 1, a constant finite learning rate. Inputs the names do not cover (the
/// hand-built unit-test graphs) get N(0, 1) floats, small ints and random bools.
fn random_inputs(g: &Graph, seed: u64) -> HashMap<String, Tensor> {
    let mut rng = Rng(seed);
    let mut feed = HashMap::new();
    for (name, v) in g.inputs() {
        let ty = g.ty(v).clone();
        let n = ty.numel();
        let vals: Vec<f64> = match name {
            "input_ids" => (0..n).map(|_| rng.below(100) as f64).collect(),
            "segment_ids" => (0..n).map(|_| rng.below(2) as f64).collect(),
            "input_mask" => {
                let (rows, cols) = (ty.shape[0], ty.shape[1]);
                let mut m = Vec::with_capacity(n);
                for r in 0..rows {
                    let len = if r == 0 {
                        cols
                    } else {
                        1 + rng.below(cols as u64) as usize
                    };
                    m.extend((0..cols).map(|c| (c < len) as u8 as f64));
                }
                m
            }
            "state.step" => vec![3.0],
            "state.cur_iter" => vec![4.0],
            "state.last_overflow_iter" => vec![0.0],
            "state.seed" => vec![1234.0],
            "state.loss_scale" => vec![1.0],
            "sched.lr0" | "sched.end_lr" => vec![1e-3],
            "sched.warmup_steps" => vec![0.0],
            "sched.decay_steps" => vec![1e30],
            _ if name.starts_with("adam_m.") => (0..n).map(|_| 1e-3 * rng.normal()).collect(),
            _ if name.starts_with("adam_v.") => {
                (0..n).map(|_| (1e-3 * rng.normal()).powi(2)).collect()
            }
            _ if name.ends_with("LayerNorm.weight") => {
                (0..n).map(|_| 1.0 + 0.02 * rng.normal()).collect()
            }
            _ if name.starts_with("teacher.") || name.starts_with("student.") => {
                (0..n).map(|_| 0.02 * rng.normal()).collect()
            }
            _ => match ty.dtype {
                DType::Bool => (0..n).map(|_| rng.below(2) as f64).collect(),
                d if d.is_int() => (0..n).map(|_| rng.below(5) as f64).collect(),
                _ => (0..n).map(|_| rng.normal()).collect(),
            },
        };
        feed.insert(name.to_string(), Tensor::from_f64(&ty, &vals));
    }
    feed
}

/// Each element as (is NaN, its dtype's bit pattern).
fn elem_bits(d: &Data) -> Vec<(bool, u64)> {
    match d {
        Data::F32(v) => v.iter().map(|x| (x.is_nan(), x.to_bits() as u64)).collect(),
        Data::F16(v) => v.iter().map(|x| (x.is_nan(), x.to_bits() as u64)).collect(),
        Data::BF16(v) => v.iter().map(|x| (x.is_nan(), x.to_bits() as u64)).collect(),
        Data::F64(v) => v.iter().map(|x| (x.is_nan(), x.to_bits())).collect(),
        Data::I32(v) => v.iter().map(|&x| (false, x as u32 as u64)).collect(),
        Data::I64(v) => v.iter().map(|&x| (false, x as u64)).collect(),
        Data::Bool(v) => v.iter().map(|&x| (false, x as u64)).collect(),
    }
}

/// Asserts `a` and `b` have bitwise equal elements; two NaNs count as equal (IEEE and Rust
/// leave the payload and sign of an arithmetic NaN unspecified). Returns how many NaNs it saw.
fn assert_bits_equal(what: &str, a: &Tensor, b: &Tensor) -> usize {
    assert_eq!(a.ty(), b.ty(), "{what}: type");
    let (x, y) = (elem_bits(&a.data), elem_bits(&b.data));
    let mut nans = 0;
    for (i, (p, q)) in x.iter().zip(&y).enumerate() {
        if p.0 && q.0 {
            nans += 1;
            continue;
        }
        assert_eq!(
            p,
            q,
            "{what}: element {i} differs ({:?} vs {:?})",
            a.data.to_f64()[i],
            b.data.to_f64()[i]
        );
    }
    nans
}

/// Runs `before` and `after` on the same inputs; every output must be bit-identical. Returns the
/// number of NaN elements seen.
fn assert_same_results(before: &Graph, after: &Graph, feed: &HashMap<String, Tensor>) -> usize {
    let a = Interpreter::run(before, feed).expect("original graph runs");
    let b = Interpreter::run(after, feed).expect("simplified graph runs");
    assert_eq!(a.len(), b.len());
    let mut nans = 0;
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb, "output order");
        nans += assert_bits_equal(na, ta, tb);
    }
    nans
}

/// Runs `pass` on `g` and checks the contract: verifies, same output names in the same order,
/// same inputs (names and types), and bit-identical results on random inputs.
fn check_pass(pass: &dyn Pass, g: &Graph) -> Graph {
    ir::verify(g).expect("test graph verifies");
    let out = pass.run(g.clone());
    ir::verify(&out).unwrap_or_else(|e| panic!("{} broke the graph: {e}", pass.name()));
    let names = |g: &Graph| g.outputs.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(g), names(&out), "{}: output names", pass.name());
    let inputs = |g: &Graph| {
        g.inputs()
            .map(|(n, v)| (n.to_string(), g.ty(v).clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(inputs(g), inputs(&out), "{}: inputs", pass.name());
    for seed in [1, 2] {
        assert_same_results(g, &out, &random_inputs(g, seed));
    }
    out
}

fn count(g: &Graph, pred: impl Fn(&Op) -> bool) -> usize {
    g.nodes.iter().filter(|n| pred(&n.op)).count()
}

fn count_mnemonic(g: &Graph, m: &str) -> usize {
    count(g, |op| op.mnemonic() == m)
}

fn f32t(shape: &[usize]) -> TensorType {
    TensorType::new(DType::F32, shape.to_vec())
}

// ---------------------------------------------------------------------------------------------
// Dead code elimination.

#[test]
fn dce_removes_unused_nodes_and_keeps_inputs() {
    let mut b = Builder::new("dce");
    let x = b.input("x", f32t(&[3]));
    let _unused = b.input("unused", f32t(&[3]));
    let e = b.exp(x);
    let dead1 = b.log(e); // only feeds dead2
    let _dead2 = b.mul(dead1, x);
    let y = b.add(e, x);
    b.output("y", y);
    b.output("x_again", x);
    let g = b.finish();
    let out = check_pass(&DeadCodeElimination, &g);
    assert_eq!(out.len(), g.len() - 2);
    assert_eq!(count_mnemonic(&out, "log"), 0);
    assert_eq!(count_mnemonic(&out, "mul"), 0);
    assert_eq!(
        out.input("unused"),
        Some(ValueId(1)),
        "unused input kept in place"
    );
    assert_eq!(out.output("x_again"), Some(ValueId(0)));
    // Definition order kept, renumbered densely.
    let ops: Vec<&str> = out.nodes.iter().map(|n| n.op.mnemonic()).collect();
    assert_eq!(ops, ["input", "input", "exp", "add"]);
    // Nothing left to remove.
    assert!(same_graph(&DeadCodeElimination.run(out.clone()), &out));
}

// ---------------------------------------------------------------------------------------------
// Common subexpression elimination.

#[test]
fn cse_merges_identical_nodes() {
    let mut b = Builder::new("cse");
    let x = b.input("x", f32t(&[2, 3]));
    let y = b.input("y", f32t(&[2, 3]));
    let a1 = b.add(x, y);
    let a2 = b.add(x, y);
    let m1 = b.mul(a1, a1);
    let m2 = b.mul(a2, a2); // equal once a2 is merged into a1
    let c1 = b.constant(0.1, f32t(&[2, 3]));
    let c2 = b.constant(0.1f32 as f64, f32t(&[2, 3])); // the same f32 number
    let s1 = b.sub(m1, c1);
    let s2 = b.sub(m2, c2);
    let t1 = b.transpose(s1, &[1, 0]);
    let t2 = b.transpose(s2, &[1, 0]);
    let r1 = b.reduce(ReduceKind::Sum, t1, &[0]);
    let r2 = b.reduce(ReduceKind::Sum, t2, &[0]);
    b.output("r1", r1);
    b.output("r2", r2);
    let g = b.finish();
    let out = check_pass(&CommonSubexpressionElimination, &g);
    assert_eq!(out.output("r1"), out.output("r2"));
    let out = DeadCodeElimination.run(out);
    for m in ["add", "mul", "constant", "sub", "transpose", "reduce_sum"] {
        assert_eq!(count_mnemonic(&out, m), 1, "{m}");
    }
}

#[test]
fn cse_keeps_what_differs() {
    let mut b = Builder::new("cse_keep");
    let x = b.input("x", f32t(&[2, 2]));
    let x2 = b.input("x2", f32t(&[2, 2])); // same type as x: inputs never merge
    let seed = b.input("seed", TensorType::scalar(DType::I32));
    let ctr = b.input("ctr", TensorType::scalar(DType::I32));
    let pz = b.constant(0.0, f32t(&[2, 2]));
    let nz = b.constant(-0.0, f32t(&[2, 2])); // differs from +0 in bits
    let one3 = b.constant(1.0, f32t(&[2]));
    let one2 = b.constant(1.0, f32t(&[2, 1])); // same value, other type
    let nan1 = b.constant(f64::NAN, f32t(&[2, 2]));
    let nan2 = b.constant(f64::NAN, f32t(&[2, 2])); // same bits: merges
    let xy = b.add(x, x2);
    let yx = b.add(x2, x); // commutative operands are not reordered
    let mx = b.max(x, pz);
    let mn = b.max(x, nz);
    let t01 = b.transpose(x, &[1, 0]);
    let t00 = b.transpose(x, &[0, 1]);
    let s0 = b.sum(x, &[0]);
    let s1 = b.sum(x, &[1]);
    let u1 = b.random_uniform(seed, ctr, 1, f32t(&[2, 2]));
    let u1b = b.random_uniform(seed, ctr, 1, f32t(&[2, 2])); // same draws: merges
    let u2 = b.random_uniform(seed, ctr, 2, f32t(&[2, 2]));
    let n1 = b.add(x, nan1);
    let n2 = b.add(x, nan2);
    for (i, v) in [
        x, x2, one3, one2, xy, yx, mx, mn, t01, t00, s0, s1, u1, u1b, u2, n1, n2,
    ]
    .into_iter()
    .enumerate()
    {
        b.output(format!("o{i}"), v);
    }
    let g = b.finish();
    let out = check_pass(&CommonSubexpressionElimination, &g);
    let o = |i: usize| out.output(&format!("o{i}")).unwrap();
    assert_ne!(o(0), o(1), "inputs");
    assert_ne!(o(2), o(3), "types");
    assert_ne!(o(4), o(5), "operand order");
    assert_ne!(o(6), o(7), "+0 vs -0");
    assert_ne!(o(8), o(9), "perm");
    assert_ne!(o(10), o(11), "axes");
    assert_eq!(o(12), o(13), "same random draws");
    assert_ne!(o(12), o(14), "op_id");
    assert_eq!(o(15), o(16), "NaN constants with equal bits");
    assert_eq!(count(&out, |op| matches!(op, Op::Input { .. })), 4);
}

// ---------------------------------------------------------------------------------------------
// Constant folding.

/// Builds `f(b)` → output "r", folds, and checks the result is one constant whose value the
/// interpreter agrees with bit for bit.
fn folds_to_constant(f: impl FnOnce(&mut Builder) -> ValueId) -> Graph {
    let mut b = Builder::new("fold");
    let r = f(&mut b);
    b.output("r", r);
    let g = b.finish();
    let out = check_pass(&ConstantFolding, &g);
    let out = DeadCodeElimination.run(out);
    let v = out.output("r").unwrap();
    assert!(
        matches!(out.node(v).op, Op::Constant { .. }),
        "not folded:\n{}",
        ir::text::print(&out)
    );
    out
}

fn folded_literal(g: &Graph) -> f64 {
    match g.node(g.output("r").unwrap()).op {
        Op::Constant { value } => value,
        _ => unreachable!(),
    }
}

#[test]
fn fold_elementwise_with_interpreter_rounding() {
    // f32 rounding: 0.1f32 + 0.2f32 is the f32 sum, not the f64 one.
    let g = folds_to_constant(|b| {
        let p = b.constant(0.1, f32t(&[4]));
        let q = b.constant(0.2, f32t(&[4]));
        b.add(p, q)
    });
    assert_eq!(folded_literal(&g) as f32, 0.1f32 + 0.2f32);
    assert_ne!((0.1f32 + 0.2f32) as f64, 0.1 + 0.2);
    // The literal is the shortest decimal of the f32 result, so dumps stay readable.
    assert!(ir::text::print(&g).contains("constant 0.3 : f32[4]"));
    // Integer wrapping and float → int truncation.
    let g = folds_to_constant(|b| {
        let m = b.scalar(i32::MAX as f64, DType::I32);
        let one = b.scalar(1.0, DType::I32);
        b.add(m, one)
    });
    assert_eq!(folded_literal(&g), i32::MIN as f64);
    let g = folds_to_constant(|b| {
        let c = b.scalar(-2.7, DType::F32);
        b.cast(c, DType::I64)
    });
    assert_eq!(folded_literal(&g), -2.0);
    // Division by zero, NaN operands, f16 arithmetic, comparisons and select.
    let g = folds_to_constant(|b| {
        let one = b.scalar(1.0, DType::F32);
        let z = b.scalar(0.0, DType::F32);
        b.div(one, z)
    });
    assert_eq!(folded_literal(&g), f64::INFINITY);
    let g = folds_to_constant(|b| {
        let nan = b.scalar(f64::NAN, DType::F32);
        let one = b.scalar(1.0, DType::F32);
        b.add(nan, one)
    });
    assert!(folded_literal(&g).is_nan());
    folds_to_constant(|b| {
        let p = b.constant(1.0 / 3.0, TensorType::new(DType::F16, vec![2]));
        let e = b.exp(p);
        b.rsqrt(e)
    });
    let g = folds_to_constant(|b| {
        let p = b.constant(2.0, f32t(&[3]));
        let q = b.constant(3.0, f32t(&[3]));
        let lt = b.compare(CmpOp::Lt, p, q);
        b.select(lt, q, p)
    });
    assert_eq!(folded_literal(&g), 3.0);
    folds_to_constant(|b| {
        let c = b.scalar(0.5, DType::F32);
        let t = b.tanh(c);
        let fin = b.unary(UnaryOp::IsFinite, t);
        b.not(fin)
    });
}

#[test]
fn fold_data_movement_and_reductions() {
    folds_to_constant(|b| {
        let c = b.scalar(1.5, DType::F32);
        let s = b.splat(c, &[2, 3, 4]);
        let t = b.transpose(s, &[2, 0, 1]);
        let r = b.reshape(t, &[4, 6]);
        b.slice(r, &[1, 2], &[3, 5])
    });
    folds_to_constant(|b| {
        let z = b.constant(0.0, f32t(&[2, 2]));
        b.pad(z, &[1, 0], &[0, 2])
    });
    // Sums accumulate in f64 like the interpreter: 0.1f32 · 1000 rounded once.
    let g = folds_to_constant(|b| {
        let c = b.constant(0.1, f32t(&[10, 100]));
        b.sum(c, &[0, 1])
    });
    assert_eq!(folded_literal(&g) as f32, (0.1f32 as f64 * 1000.0) as f32);
    folds_to_constant(|b| {
        let c = b.constant(0.1, f32t(&[64, 3, 768]));
        b.mean(c, &[0, 2])
    });
    // Long f64 sums: exact when the significand allows, replayed when short.
    folds_to_constant(|b| {
        let c = b.constant(0.75, TensorType::new(DType::F64, vec![1 << 20]));
        b.sum(c, &[0])
    });
    folds_to_constant(|b| {
        let c = b.constant(0.1, TensorType::new(DType::F64, vec![4096]));
        b.sum(c, &[0])
    });
    // −0 summed is +0; max of NaN is NaN; integer sums wrap.
    let g = folds_to_constant(|b| {
        let c = b.constant(-0.0, f32t(&[5]));
        b.sum(c, &[0])
    });
    assert_eq!(folded_literal(&g).to_bits(), 0.0f64.to_bits());
    folds_to_constant(|b| {
        let c = b.constant(f64::NAN, f32t(&[5, 2]));
        b.reduce(ReduceKind::Max, c, &[1])
    });
    folds_to_constant(|b| {
        let c = b.constant(1e9, TensorType::new(DType::I32, vec![7]));
        b.sum(c, &[0])
    });
    folds_to_constant(|b| b.iota(1, TensorType::new(DType::I32, vec![3, 1])));
}

#[test]
fn fold_leaves_non_splats_and_risky_nodes() {
    let mut b = Builder::new("nofold");
    let x = b.input("x", f32t(&[3]));
    let z = b.constant(0.0, f32t(&[3]));
    let x0 = b.mul(x, z); // not all-constant: never folded (x may be inf/NaN)
    let io = b.iota(0, f32t(&[3])); // not a splat
    let table = b.constant(1.0, f32t(&[4, 2]));
    let ids = b.constant(2.0, TensorType::new(DType::I32, vec![3]));
    let gathered = b.gather(table, ids); // index checks stay
    let one = b.constant(1.0, f32t(&[3]));
    let padded = b.pad(one, &[1], &[1]); // zeros around ones: not a splat
                                         // A long f64 sum whose terms do not add exactly is left to run time.
    let tenth = b.constant(0.1, TensorType::new(DType::F64, vec![1 << 13]));
    let long = b.sum(tenth, &[0]);
    b.output("x0", x0);
    b.output("io", io);
    b.output("gathered", gathered);
    b.output("padded", padded);
    b.output("long", long);
    let g = b.finish();
    let out = check_pass(&ConstantFolding, &g);
    assert!(same_graph(&g, &out), "{}", ir::text::print(&out));
}

// ---------------------------------------------------------------------------------------------
// Algebraic simplification.

/// Runs the algebraic rules then DCE and returns the result (contract checked for both).
fn algebraic(g: &Graph) -> Graph {
    let out = check_pass(&AlgebraicSimplify, g);
    check_pass(&DeadCodeElimination, &out)
}

#[test]
fn algebraic_identities_are_removed() {
    let mut b = Builder::new("alg");
    let x = b.input("x", f32t(&[2, 3]));
    let c = b.input("c", TensorType::new(DType::Bool, vec![2, 3]));
    let one = b.constant(1.0, f32t(&[2, 3]));
    let mz = b.constant(-0.0, f32t(&[2, 3]));
    let pz = b.constant(0.0, f32t(&[2, 3]));
    let r1 = b.mul(x, one);
    let r2 = b.mul(one, r1);
    let r3 = b.div(r2, one);
    let r4 = b.add(r3, mz);
    let r5 = b.add(mz, r4);
    let r6 = b.sub(r5, pz);
    let r7 = b.neg(r6);
    let r8 = b.neg(r7);
    let r9 = b.select(c, r8, r8);
    let r10 = b.stop_gradient(r9);
    let r11 = b.graph.push(Op::Cast, vec![r10], f32t(&[2, 3])); // cast to its own dtype
    let r12 = b.reshape(r11, &[3, 2]);
    let r13 = b.reshape(r12, &[6]);
    let r14 = b.reshape(r13, &[2, 3]); // back to x's shape: no reshape at all
    let r15 = b.transpose(r14, &[1, 0]);
    let r16 = b.transpose(r15, &[1, 0]);
    let r17 = b.slice(r16, &[0, 0], &[2, 3]);
    let r18 = b.pad(r17, &[0, 0], &[0, 0]);
    let r19 = b
        .graph
        .push(Op::Broadcast { dims: vec![0, 1] }, vec![r18], f32t(&[2, 3]));
    b.output("r", r19);
    let g = b.finish();
    let out = algebraic(&g);
    assert_eq!(out.output("r"), out.input("x"), "{}", ir::text::print(&out));
    assert_eq!(out.len(), 2);
}

#[test]
fn algebraic_structural_rewrites() {
    let mut b = Builder::new("alg2");
    let x = b.input("x", f32t(&[2, 3, 4]));
    let c = b.input("c", TensorType::new(DType::Bool, vec![2, 3, 4]));
    let y = b.input("y", f32t(&[2, 3, 4]));
    let ints = b.input("i", TensorType::new(DType::I32, vec![2, 3, 4]));
    let t1 = b.transpose(x, &[1, 2, 0]);
    let t2 = b.transpose(t1, &[2, 0, 1]); // identity
    let t3 = b.transpose(t1, &[0, 2, 1]); // composed: [1, 0, 2]
    let bc = b.broadcast(x, &[5, 2, 3, 4], &[1, 2, 3]);
    let bb = b.broadcast(bc, &[5, 2, 6, 3, 4], &[0, 1, 3, 4]); // composed dims [1, 3, 4]
    let k = b.scalar(2.5, DType::F32);
    let kb = b.splat(k, &[2, 3, 4]); // a constant of the broadcast type
    let xk = b.mul(x, kb);
    let nc = b.not(c);
    let sw = b.select(nc, x, y); // select(c, y, x)
    let nn = b.not(nc); // not(not c) = c
    let m1 = b.constant(-1.0, f32t(&[2, 3, 4]));
    let negx = b.mul(x, m1);
    let mz = b.constant(-0.0, f32t(&[2, 3, 4]));
    let negy = b.sub(mz, y);
    let iz = b.constant(0.0, TensorType::new(DType::I32, vec![2, 3, 4]));
    let i_plus_0 = b.add(ints, iz); // integer + 0 is exact
    let t = b.constant(1.0, TensorType::new(DType::Bool, vec![2, 3, 4]));
    let f = b.constant(0.0, TensorType::new(DType::Bool, vec![2, 3, 4]));
    let and_t = b.and(c, t);
    let or_t = b.or(c, t);
    let sel_t = b.select(t, x, y);
    let and_f = b.and(c, f);
    for (n, v) in [
        ("t2", t2),
        ("t3", t3),
        ("bb", bb),
        ("xk", xk),
        ("sw", sw),
        ("nn", nn),
        ("negx", negx),
        ("negy", negy),
        ("i_plus_0", i_plus_0),
        ("and_t", and_t),
        ("or_t", or_t),
        ("and_f", and_f),
        ("sel_t", sel_t),
    ] {
        b.output(n, v);
    }
    let g = b.finish();
    let out = algebraic(&g);
    let node = |n: &str| out.node(out.output(n).unwrap());
    assert_eq!(out.output("t2"), out.input("x"));
    assert_eq!(
        node("t3").op,
        Op::Transpose {
            perm: vec![1, 0, 2]
        }
    );
    assert_eq!(node("t3").inputs, vec![out.input("x").unwrap()]);
    assert_eq!(
        node("bb").op,
        Op::Broadcast {
            dims: vec![1, 3, 4]
        }
    );
    assert_eq!(node("bb").inputs, vec![out.input("x").unwrap()]);
    assert!(matches!(out.node(node("xk").inputs[1]).op, Op::Constant { value } if value == 2.5));
    assert_eq!(node("sw").op, Op::Select);
    assert_eq!(
        node("sw").inputs,
        ["c", "y", "x"].map(|n| out.input(n).unwrap()).to_vec()
    );
    assert_eq!(out.output("nn"), out.input("c"));
    assert_eq!(node("negx").op, Op::Unary(UnaryOp::Neg));
    assert_eq!(node("negy").op, Op::Unary(UnaryOp::Neg));
    assert_eq!(out.output("i_plus_0"), out.input("i"));
    assert_eq!(out.output("and_t"), out.input("c"));
    assert!(matches!(node("or_t").op, Op::Constant { value } if value == 1.0));
    assert_eq!(out.output("sel_t"), out.input("x"));
    assert!(matches!(node("and_f").op, Op::Constant { value } if value == 0.0));
    assert_eq!(count_mnemonic(&out, "not"), 0);
}

#[test]
fn algebraic_leaves_inexact_rewrites_alone() {
    let mut b = Builder::new("alg_keep");
    let x = b.input("x", f32t(&[4]));
    let pz = b.constant(0.0, f32t(&[4]));
    let mz = b.constant(-0.0, f32t(&[4]));
    let one = b.constant(1.0, f32t(&[4]));
    let x_plus_pz = b.add(x, pz); // −0 + +0 = +0: not x
    let pz_plus_x = b.add(pz, x);
    let x_minus_mz = b.sub(x, mz); // x − (−0) = x + (+0): not x
    let pz_minus_x = b.sub(pz, x); // +0 − (+0) = +0 but neg(+0) = −0
    let x_times_0 = b.mul(x, pz); // ∞·0 and NaN·0 are NaN: not 0
    let zero_times_x = b.mul(pz, x);
    let x_div_x = b.div(x, x); // not 1 (0/0, ∞/∞)
    let one_div_x = b.div(one, x); // only x/1 is an identity
    let mx = b.max(x, x); // canonicalizes NaN: left alone
    for (i, v) in [
        x_plus_pz,
        pz_plus_x,
        x_minus_mz,
        pz_minus_x,
        x_times_0,
        zero_times_x,
        x_div_x,
        one_div_x,
        mx,
    ]
    .into_iter()
    .enumerate()
    {
        b.output(format!("o{i}"), v);
    }
    let g = b.finish();
    let out = check_pass(&AlgebraicSimplify, &g);
    assert!(same_graph(&g, &out), "{}", ir::text::print(&out));
    // And the whole pipeline keeps them too, with −0, ±∞ and NaN flowing through.
    let simplified = check_pass(&Simplify, &g);
    assert_eq!(simplified.len(), g.len());
    let special = Tensor::from_f64(&f32t(&[4]), &[-0.0, f64::INFINITY, f64::NAN, 2.0]);
    let feed = HashMap::from([("x".to_string(), special)]);
    let nans = assert_same_results(&g, &simplified, &feed);
    assert!(nans > 0);
    let outs = Interpreter::run_map(&simplified, &feed).unwrap();
    assert_eq!(
        outs["o0"].to_f64()[0].to_bits(),
        0.0f64.to_bits(),
        "-0 + +0"
    );
    assert!(outs["o4"].to_f64()[1].is_nan(), "inf * 0");
}

#[test]
fn algebraic_other_dtypes() {
    for dt in [DType::F16, DType::BF16, DType::F64, DType::I64] {
        let ty = TensorType::new(dt, vec![3]);
        let mut b = Builder::new("dtypes");
        let x = b.input("x", ty.clone());
        let one = b.constant(1.0, ty.clone());
        let m1 = b.constant(-1.0, ty.clone());
        let y = b.mul(x, one);
        let y = b.mul(y, m1);
        let y = b.neg(y);
        b.output("y", y);
        let g = b.finish();
        let out = algebraic(&g);
        assert_eq!(out.output("y"), out.input("x"), "{dt}");
    }
}

// ---------------------------------------------------------------------------------------------
// The pipeline on a small differentiated graph: snapshot, fixed point, determinism.

/// `loss = mean(softmax(tanh(x·w)) · t)` and its gradient with respect to `w` (autodiff with a
/// constant seed of 1), a miniature of what the frontend builds.
fn small_training_graph() -> Graph {
    let mut b = Builder::new("small");
    let x = b.input("x", f32t(&[2, 3]));
    let w = b.input("w", f32t(&[4, 3]));
    let t = b.input("t", f32t(&[2, 4]));
    let y = b.matmul(x, w, false, true);
    let y = b.tanh(y);
    let p = compiler::frontend::bert::softmax_last(&mut b, y);
    let pt = b.mul(p, t);
    let loss = b.reduce_all(ReduceKind::Mean, pt);
    let grads = ir::autodiff::grad(&mut b, loss, &[w]).unwrap();
    b.output("loss", loss);
    b.output("grad.w", grads[0].unwrap());
    b.finish()
}

#[test]
fn simplify_small_graph_snapshot() {
    let g = small_training_graph();
    let out = check_pass(&Simplify, &g);
    assert!(out.len() < g.len());
    insta::assert_snapshot!("small_training_graph", ir::text::print(&out));
}

#[test]
fn simplify_reaches_a_fixed_point_deterministically() {
    let g = small_training_graph();
    let (once, rounds) = Simplify.run_counted(g.clone());
    assert!(rounds < Simplify::MAX_ROUNDS);
    assert!(same_graph(&Simplify.run(once.clone()), &once), "idempotent");
    let again = Simplify.run(g.clone());
    assert_eq!(ir::text::print(&once), ir::text::print(&again));
    // The text round-trips, so the simplified graph can be dumped and reloaded.
    let text = ir::text::print(&once);
    assert_eq!(ir::text::print(&ir::text::parse(&text).unwrap()), text);
    // The pass list, one round of it, and each pass's dump hook.
    let names: Vec<&str> = simplify_pipeline().iter().map(|p| p.name()).collect();
    assert_eq!(names, ["fold", "algebraic", "cse", "dce"]);
    let mut seen = Vec::new();
    let one_round = run_passes(g.clone(), &simplify_pipeline(), |name, g| {
        ir::verify(g).unwrap();
        seen.push(name.to_string());
    });
    assert_eq!(seen, names);
    assert!(one_round.len() <= g.len());
}

// ---------------------------------------------------------------------------------------------
// The phase graphs.

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn tiny_configs(preset: &Preset, dropout: Option<f64>) -> (ModelConfig, ModelConfig) {
    let dir = repo_root().join("tests/fixtures/tiny");
    let load = |f: &str| {
        let mut hf = HfBertConfig::from_file(&dir.join(f)).unwrap();
        if let Some(p) = dropout {
            hf.hidden_dropout_prob = Some(p);
            hf.attention_probs_dropout_prob = Some(p);
        }
        hf.resolve(preset, f).unwrap()
    };
    (load("teacher.json"), load("student.json"))
}

fn tiny_graph(preset: &Preset, phase: Phase, dtype: DType, dropout: Option<f64>) -> Graph {
    let (t, s) = tiny_configs(preset, dropout);
    build_graph(&GraphSpec {
        phase,
        teacher: &t,
        student: &s,
        preset,
        batch: 4,
        seq_len: 16,
        dtype,
        precision: Default::default(),
    })
    .unwrap()
}

/// Simplifies `g`, checks the contract and bit-identical results on `seeds`; returns
/// `(nodes before, nodes after, rounds)`.
fn check_phase(label: &str, g: &Graph, seeds: &[u64]) -> (usize, usize, usize) {
    ir::verify(g).unwrap();
    let (out, rounds) = Simplify.run_counted(g.clone());
    ir::verify(&out).unwrap_or_else(|e| panic!("{label}: {e}"));
    assert_eq!(g.outputs.len(), out.outputs.len(), "{label}");
    for ((a, _), (b, _)) in g.outputs.iter().zip(&out.outputs) {
        assert_eq!(a, b, "{label}: output names");
    }
    assert_eq!(g.inputs().count(), out.inputs().count(), "{label}: inputs");
    assert!(rounds <= 3, "{label}: {rounds} rounds");
    for &seed in seeds {
        let nans = assert_same_results(g, &out, &random_inputs(g, seed));
        assert_eq!(nans, 0, "{label}: the random step should be finite");
    }
    eprintln!(
        "{label}: {} -> {} nodes ({} rounds)",
        g.len(),
        out.len(),
        rounds
    );
    (g.len(), out.len(), rounds)
}

#[test]
fn phases_simplify_exactly() {
    for preset in [Preset::mindspore(), Preset::paper()] {
        for phase in Phase::ALL {
            let g = tiny_graph(&preset, phase, DType::F32, None);
            let (before, after, _) =
                check_phase(&format!("{} {}", preset.name, phase.name()), &g, &[11]);
            assert!(after < before);
        }
    }
}

#[test]
fn phases_with_dropout_and_f64_simplify_exactly() {
    for preset in [Preset::mindspore(), Preset::paper()] {
        for phase in [Phase::Gd, Phase::Td2, Phase::Ft] {
            let g = tiny_graph(&preset, phase, DType::F32, Some(0.1));
            assert!(count_mnemonic(&g, "random_uniform") > 0);
            check_phase(
                &format!("{} {} dropout", preset.name, phase.name()),
                &g,
                &[5],
            );
        }
    }
    let g = tiny_graph(&Preset::paper(), Phase::Td1, DType::F64, None);
    check_phase("paper td1 f64", &g, &[6]);
}

/// A step whose gradients overflow (an infinite weight, large loss scale): the NaNs and the
/// skipped update come out the same after simplification (x·0 is never folded away).
#[test]
fn overflowing_step_simplifies_exactly() {
    let preset = Preset::mindspore();
    let g = tiny_graph(&preset, Phase::Td1, DType::F32, None);
    let out = Simplify.run(g.clone());
    let mut feed = random_inputs(&g, 9);
    feed.insert(
        "state.loss_scale".into(),
        Tensor::scalar_f64(DType::F32, 65536.0),
    );
    let name = "student.bert.encoder.layer.0.intermediate.dense.weight";
    let w = &feed[name];
    let mut vals = w.to_f64();
    vals[3] = f64::INFINITY;
    feed.insert(name.into(), Tensor::from_f64(&w.ty(), &vals));
    let nans = assert_same_results(&g, &out, &feed);
    assert!(nans > 0);
    let r = Interpreter::run_map(&out, &feed).unwrap();
    assert_eq!(r["overflow"].to_f64(), [1.0]);
}

/// Node counts and time on the real shapes (BERT-base teacher, TinyBERT4 student, batch 32,
/// seq 64). The graph is never interpreted here (too large); the verifier and the output names
/// are checked. Prints the numbers (`--nocapture`).
#[test]
fn real_td1_graph() {
    let preset = Preset::paper();
    let load = |text: &str, name: &str| {
        HfBertConfig::from_json(text, name)
            .unwrap()
            .resolve(&preset, name)
            .unwrap()
    };
    let t = load(builtin::BERT_BASE, "bert-base-teacher.json");
    let s = load(builtin::STUDENT_PAPER, "student-4l-312.json");
    let g = build_graph(&GraphSpec {
        phase: Phase::Td1,
        teacher: &t,
        student: &s,
        preset: &preset,
        batch: 32,
        seq_len: 64,
        dtype: DType::F32,
        precision: Default::default(),
    })
    .unwrap();
    let start = std::time::Instant::now();
    let (out, rounds) = Simplify.run_counted(g.clone());
    let took = start.elapsed();
    ir::verify(&out).unwrap();
    assert_eq!(
        g.outputs.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        out.outputs.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    assert!(out.len() < g.len());
    assert!(rounds <= 3);
    // Generous bound (debug build, shared machine); a quadratic algorithm would blow it.
    assert!(took.as_secs_f64() < 5.0, "simplify took {took:?}");
    eprintln!(
        "real paper td1 (b32, s64): {} -> {} nodes, {rounds} rounds, {took:?}",
        g.len(),
        out.len()
    );
    let mut hist: HashMap<&str, (usize, usize)> = HashMap::new();
    for n in &g.nodes {
        hist.entry(n.op.mnemonic()).or_default().0 += 1;
    }
    for n in &out.nodes {
        hist.entry(n.op.mnemonic()).or_default().1 += 1;
    }
    let mut rows: Vec<_> = hist.into_iter().filter(|(_, (a, b))| a != b).collect();
    rows.sort();
    for (op, (a, b)) in rows {
        eprintln!("  {op}: {a} -> {b}");
    }
}
