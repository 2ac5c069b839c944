//! Text format: exact round trips, snapshots, and errors with line:col.

use ir::text::{parse, print};
use ir::{Builder, CmpOp, DType, ReduceKind, TensorType};

/// A graph that uses every op once.
fn every_op() -> ir::Graph {
    let f = |s: &[usize]| TensorType::new(DType::F32, s.to_vec());
    let mut b = Builder::new("every_op");
    let x = b.input("x", f(&[2, 3]));
    let ids = b.input("ids", TensorType::new(DType::I32, vec![4]));
    let seed = b.input("seed", TensorType::scalar(DType::I64));
    let c = b.constant(-1e-7, f(&[2, 3]));
    let inf = b.constant(f64::INFINITY, f(&[]));
    let io = b.iota(1, f(&[2, 3]));
    let mut v = b.add(x, c);
    for u in ir::UnaryOp::ALL {
        if !matches!(u, ir::UnaryOp::Not | ir::UnaryOp::IsFinite) {
            v = b.unary(u, v);
        }
    }
    let fin = b.unary(ir::UnaryOp::IsFinite, v);
    let nf = b.not(fin);
    for op in [
        ir::BinaryOp::Add,
        ir::BinaryOp::Sub,
        ir::BinaryOp::Mul,
        ir::BinaryOp::Div,
        ir::BinaryOp::Max,
        ir::BinaryOp::Min,
    ] {
        v = b.binary(op, v, io);
    }
    let mut conds = Vec::new();
    for c in CmpOp::ALL {
        conds.push(b.compare(c, v, x));
    }
    let both = b.and(conds[0], conds[1]);
    let either = b.or(both, nf);
    v = b.select(either, v, x);
    let h = b.cast(v, DType::F16);
    let back = b.cast(h, DType::F32);
    let bc = b.broadcast(back, &[4, 2, 3], &[1, 2]);
    let r = b.reshape(bc, &[4, 6]);
    let t = b.transpose(r, &[1, 0]);
    let mm = b.matmul(r, t, true, true);
    let mut red = mm;
    for k in ReduceKind::ALL {
        red = b.reduce(k, mm, &[1]);
    }
    let tab = b.reshape(t, &[6, 4]);
    let gat = b.gather(tab, ids);
    let sc = b.scatter_add(ids, gat, 6);
    let sl = b.slice(sc, &[1, 0], &[5, 4]);
    let pd = b.pad(sl, &[0, 1], &[2, 0]);
    let rnd = b.random_uniform(seed, seed, 7, f(&[6, 5]));
    let sum = b.add(pd, rnd);
    b.output("sum", sum);
    b.output("red", red);
    b.output("inf", inf);
    b.finish()
}

#[test]
fn every_op_round_trips_exactly() {
    let g = every_op();
    ir::verify(&g).unwrap();
    let text = print(&g);
    let back = parse(&text).unwrap();
    assert_eq!(back, g);
    assert_eq!(print(&back), text);
    insta::assert_snapshot!("every_op", text);
}

#[test]
fn floats_survive_bit_for_bit() {
    for v in [
        0.1,
        -1e-7,
        1e-12,
        65536.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::MIN_POSITIVE,
        1.0 / 3.0,
    ] {
        let mut b = Builder::new("c");
        let c = b.constant(v, TensorType::scalar(DType::F64));
        b.output("c", c);
        let g = b.finish();
        let back = parse(&print(&g)).unwrap();
        match back.nodes[0].op {
            ir::Op::Constant { value } => assert_eq!(value.to_bits(), v.to_bits()),
            _ => unreachable!(),
        }
    }
}

#[test]
fn names_are_renumbered_and_comments_skipped() {
    let src = "// a comment\ngraph \"g\" {\n  %a = input \"x\" : f32[2]\n  %b = exp %a : f32[2] // trailing\n  output \"y\" = %b\n}\n";
    let g = parse(src).unwrap();
    assert_eq!(print(&g), "graph \"g\" {\n  %0 = input \"x\" : f32[2]\n  %1 = exp %0 : f32[2]\n  output \"y\" = %1\n}\n");
}

fn error_of(src: &str) -> String {
    parse(src).unwrap_err().to_string()
}

#[test]
fn errors_carry_line_and_column() {
    let head = "graph \"g\" {\n  %0 = input \"x\" : f32[2,3]\n";
    assert_eq!(
        error_of(&format!("{head}  %1 = frob %0 : f32[2,3]\n}}")),
        "3:8: unknown op 'frob'"
    );
    assert_eq!(
        error_of(&format!("{head}  %1 = exp %9 : f32[2,3]\n}}")),
        "3:12: value %9 is used before it is defined"
    );
    assert_eq!(
        error_of(&format!("{head}  %1 = exp %0 : f32[3,2]\n}}")),
        "3:8: exp: result type must be f32[2,3], found f32[3,2]"
    );
    assert_eq!(
        error_of(&format!("{head}  %1 = exp %0 : q8[2,3]\n}}")),
        "3:17: unknown dtype 'q8' (expected one of f32, f16, bf16, f64, i32, i64, bool)"
    );
    assert_eq!(
        error_of(&format!("{head}  %1 = transpose %0 : f32[3,2]\n}}")),
        "3:8: 'transpose' needs the attribute 'perm'"
    );
    assert_eq!(
        error_of(&format!("{head}  %1 = exp %0 {{axis = 1}} : f32[2,3]\n}}")),
        "3:16: 'exp' has no attribute 'axis'"
    );
    assert_eq!(
        error_of(&format!("{head}  %0 = exp %0 : f32[2,3]\n}}")),
        "3:3: value %0 is defined twice"
    );
    assert_eq!(
        error_of(&format!("{head}  %1 = add %0 : f32[2,3]\n}}")),
        "3:8: add takes 2 operand(s), got 1"
    );
    assert_eq!(
        error_of(&format!("{head}  output \"y\" = %0\n")),
        "4:1: expected a node definition (%N = ...), 'output' or '}', found end of input"
    );
    assert_eq!(
        error_of("graph \"g\" {\n  %0 = input \"x : f32[2]\n}"),
        "2:14: unterminated string"
    );
    assert_eq!(error_of("graf"), "1:1: expected 'graph', found 'graf'");
    assert_eq!(
        error_of(&format!("{head}  %1 = input \"x\" : f32[1]\n}}")),
        "3:14: input \"x\" defined twice"
    );
}
