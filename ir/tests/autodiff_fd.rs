//! Every op's vector-Jacobian product checked against central finite differences in f64,
//! through the interpreter.

use ir::autodiff::grad;
use ir::interp::Interpreter;
use ir::{Builder, CmpOp, DType, ReduceKind, Tensor, TensorType, UnaryOp, ValueId};
use std::collections::HashMap;

/// Deterministic pseudo-random numbers in [lo, hi).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, lo: f64, hi: f64) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        lo + (hi - lo) * ((self.0 >> 11) as f64 / (1u64 << 53) as f64)
    }
    fn vec(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n).map(|_| self.next(lo, hi)).collect()
    }
}

fn f64t(shape: &[usize]) -> TensorType {
    TensorType::new(DType::F64, shape.to_vec())
}

/// Builds `loss = sum(f(x...) * w)` for random `w`, differentiates w.r.t. every float input and
/// compares each gradient element with central differences.
fn check(
    name: &str,
    inputs: Vec<(TensorType, Vec<f64>)>,
    f: impl Fn(&mut Builder, &[ValueId]) -> ValueId,
) {
    let mut rng = Lcg(name.len() as u64 * 7919 + 17);
    let mut b = Builder::new(name);
    let xs: Vec<ValueId> = inputs
        .iter()
        .enumerate()
        .map(|(i, (t, _))| b.input(format!("x{i}"), t.clone()))
        .collect();
    let y = f(&mut b, &xs);
    let yt = b.ty(y).clone();
    let w = b.input("w", yt.clone());
    let yw = b.mul(y, w);
    let loss = b.reduce_all(ReduceKind::Sum, yw);
    b.output("loss", loss);
    let float_inputs: Vec<usize> = (0..xs.len())
        .filter(|&i| inputs[i].0.dtype.is_float())
        .collect();
    let wrt: Vec<ValueId> = float_inputs.iter().map(|&i| xs[i]).collect();
    let grads = grad(&mut b, loss, &wrt).unwrap();
    for (k, g) in grads.iter().enumerate() {
        let g = g.unwrap_or_else(|| panic!("{name}: no gradient for input {}", float_inputs[k]));
        b.output(format!("g{}", float_inputs[k]), g);
    }
    let graph = b.finish();
    ir::verify(&graph).unwrap_or_else(|e| panic!("{name}: {e}"));

    let mut feed: HashMap<String, Tensor> = inputs
        .iter()
        .enumerate()
        .map(|(i, (t, v))| (format!("x{i}"), Tensor::from_f64(t, v)))
        .collect();
    feed.insert(
        "w".into(),
        Tensor::from_f64(&yt, &rng.vec(yt.numel(), -1.0, 1.0)),
    );
    let out = Interpreter::run_map(&graph, &feed).unwrap();
    for &i in &float_inputs {
        let analytic = out[&format!("g{i}")].to_f64();
        let (t, v) = &inputs[i];
        for e in 0..v.len() {
            let eval = |delta: f64| {
                let mut f2 = feed.clone();
                let mut v2 = v.clone();
                v2[e] += delta;
                f2.insert(format!("x{i}"), Tensor::from_f64(t, &v2));
                Interpreter::run_map(&graph, &f2).unwrap()["loss"].item()
            };
            let h = 1e-6;
            let numeric = (eval(h) - eval(-h)) / (2.0 * h);
            let err = (numeric - analytic[e]).abs();
            assert!(
                err <= 1e-6 * (1.0 + numeric.abs()),
                "{name}: d/dx{i}[{e}] analytic {} vs numeric {numeric}",
                analytic[e]
            );
        }
    }
}

fn rand_input(seed: u64, shape: &[usize], lo: f64, hi: f64) -> (TensorType, Vec<f64>) {
    let n = shape.iter().product();
    (f64t(shape), Lcg(seed).vec(n, lo, hi))
}

#[test]
fn unary_ops() {
    let cases: [(UnaryOp, f64, f64); 8] = [
        (UnaryOp::Neg, -2.0, 2.0),
        (UnaryOp::Abs, -2.0, 2.0),
        (UnaryOp::Exp, -2.0, 2.0),
        (UnaryOp::Log, 0.2, 3.0),
        (UnaryOp::Tanh, -2.0, 2.0),
        (UnaryOp::Erf, -2.0, 2.0),
        (UnaryOp::Sqrt, 0.2, 3.0),
        (UnaryOp::Rsqrt, 0.2, 3.0),
    ];
    for (u, lo, hi) in cases {
        check(u.name(), vec![rand_input(3, &[3, 4], lo, hi)], |b, x| {
            b.unary(u, x[0])
        });
    }
}

#[test]
fn binary_ops() {
    let two = || {
        vec![
            rand_input(1, &[2, 5], -2.0, 2.0),
            rand_input(2, &[2, 5], 0.5, 2.0),
        ]
    };
    check("add", two(), |b, x| b.add(x[0], x[1]));
    check("sub", two(), |b, x| b.sub(x[0], x[1]));
    check("mul", two(), |b, x| b.mul(x[0], x[1]));
    check("div", two(), |b, x| b.div(x[0], x[1]));
    check("max", two(), |b, x| b.max(x[0], x[1]));
    check("min", two(), |b, x| b.min(x[0], x[1]));
    // The same operand twice accumulates both contributions.
    check("mul_self", vec![rand_input(4, &[6], -2.0, 2.0)], |b, x| {
        b.mul(x[0], x[0])
    });
}

#[test]
fn select_and_compare() {
    let ins = vec![
        rand_input(5, &[4, 3], -1.0, 1.0),
        rand_input(6, &[4, 3], -1.0, 1.0),
    ];
    check("select", ins, |b, x| {
        let c = b.compare(CmpOp::Gt, x[0], x[1]);
        let t = b.tanh(x[0]);
        b.select(c, t, x[1])
    });
}

#[test]
fn cast_round_trip() {
    // f64 -> f32 -> f64: the gradient is the identity up to f32 rounding of the seed values.
    let mut b = Builder::new("cast");
    let x = b.input("x", f64t(&[3]));
    let c = b.cast(x, DType::F32);
    let back = b.cast(c, DType::F64);
    let loss = b.reduce_all(ReduceKind::Sum, back);
    let g = grad(&mut b, loss, &[x]).unwrap()[0].unwrap();
    b.output("g", g);
    let g = b.finish();
    let feed = HashMap::from([(
        "x".to_string(),
        Tensor::from_f64(&f64t(&[3]), &[0.1, 0.2, 0.3]),
    )]);
    assert_eq!(
        Interpreter::run_map(&g, &feed).unwrap()["g"].to_f64(),
        vec![1.0; 3]
    );
}

#[test]
fn shape_ops() {
    check("broadcast", vec![rand_input(7, &[3], -1.0, 1.0)], |b, x| {
        b.broadcast(x[0], &[2, 3, 4], &[1])
    });
    check(
        "broadcast_scalar",
        vec![rand_input(8, &[], -1.0, 1.0)],
        |b, x| b.splat(x[0], &[2, 2]),
    );
    check(
        "reshape",
        vec![rand_input(9, &[2, 6], -1.0, 1.0)],
        |b, x| b.reshape(x[0], &[3, 4]),
    );
    check(
        "transpose",
        vec![rand_input(10, &[2, 3, 4], -1.0, 1.0)],
        |b, x| b.transpose(x[0], &[2, 0, 1]),
    );
    check("slice", vec![rand_input(11, &[4, 5], -1.0, 1.0)], |b, x| {
        b.slice(x[0], &[1, 0], &[3, 4])
    });
    check("pad", vec![rand_input(12, &[2, 3], -1.0, 1.0)], |b, x| {
        b.pad(x[0], &[1, 0], &[0, 2])
    });
}

#[test]
fn reductions() {
    for kind in ReduceKind::ALL {
        check(
            kind.name(),
            vec![rand_input(13, &[3, 4, 5], -1.0, 1.0)],
            |b, x| b.reduce(kind, x[0], &[0, 2]),
        );
        check(
            kind.name(),
            vec![rand_input(14, &[3, 4], -1.0, 1.0)],
            |b, x| b.reduce_all(kind, x[0]),
        );
    }
}

#[test]
fn matmuls() {
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let sa: &[usize] = if ta { &[4, 3] } else { &[3, 4] };
        let sb: &[usize] = if tb { &[5, 4] } else { &[4, 5] };
        check(
            "matmul",
            vec![rand_input(15, sa, -1.0, 1.0), rand_input(16, sb, -1.0, 1.0)],
            |b, x| b.matmul(x[0], x[1], ta, tb),
        );
        let sa: Vec<usize> = [&[2usize, 3][..], sa].concat();
        let sb: Vec<usize> = [&[2usize, 3][..], sb].concat();
        check(
            "batch_matmul",
            vec![
                rand_input(17, &sa, -1.0, 1.0),
                rand_input(18, &sb, -1.0, 1.0),
            ],
            |b, x| b.matmul(x[0], x[1], ta, tb),
        );
    }
}

#[test]
fn gather_and_scatter_add() {
    let idx = (
        TensorType::new(DType::I32, vec![2, 3]),
        vec![0.0, 4.0, 4.0, 1.0, 0.0, 2.0],
    );
    check(
        "gather",
        vec![rand_input(19, &[5, 3], -1.0, 1.0), idx.clone()],
        |b, x| b.gather(x[0], x[1]),
    );
    check(
        "scatter_add",
        vec![idx, rand_input(20, &[2, 3, 4], -1.0, 1.0)],
        |b, x| b.scatter_add(x[0], x[1], 6),
    );
}

#[test]
fn non_differentiable_ops_give_no_gradient() {
    let mut b = Builder::new("nd");
    let x = b.input("x", f64t(&[3]));
    let s = b.stop_gradient(x);
    let loss = b.reduce_all(ReduceKind::Sum, s);
    assert_eq!(grad(&mut b, loss, &[x]).unwrap(), vec![None]);

    let mut b = Builder::new("nd2");
    let x = b.input("x", f64t(&[3]));
    let seed = b.input("seed", TensorType::scalar(DType::I32));
    let r = b.random_uniform(seed, seed, 0, f64t(&[3]));
    let it = b.iota(0, f64t(&[3]));
    let c = b.full_like(2.0, x);
    let s = b.add(r, it);
    let s = b.add(s, c);
    let loss = b.reduce_all(ReduceKind::Sum, s);
    assert_eq!(grad(&mut b, loss, &[x]).unwrap(), vec![None]);
}

#[test]
fn scaled_seed_scales_the_gradient() {
    let mut b = Builder::new("seed");
    let x = b.input("x", f64t(&[2]));
    let sq = b.mul(x, x);
    let loss = b.reduce_all(ReduceKind::Sum, sq);
    let seed = b.scalar(256.0, DType::F64);
    let g = ir::autodiff::gradients(&mut b, loss, seed, &[x]).unwrap()[0].unwrap();
    b.output("g", g);
    let g = b.finish();
    let feed = HashMap::from([("x".to_string(), Tensor::from_f64(&f64t(&[2]), &[1.5, -2.0]))]);
    assert_eq!(
        Interpreter::run_map(&g, &feed).unwrap()["g"].to_f64(),
        vec![768.0, -1024.0]
    );
}
