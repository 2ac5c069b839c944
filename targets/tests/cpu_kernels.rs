//! The CPU loop-kernel back end against the reference interpreter.
//!
//! Kernels come from the real frontend (tiny TinyBERT configs, batch 4, seq 16, f32), fused by
//! `compiler::fusion`, extracted with `compiler::exec::kernel_graph`, lowered to MLIR, compiled
//! to an object, linked into a shared library with `cc -shared` and called through its
//! `tbc_<name>(void **buffers)` entry. Inputs are the values the kernels really see in a
//! training step (the whole graph is executed kernel by kernel with the interpreter, with
//! random weights and batch), plus uniform random inputs for the per-class tests. Every float
//! output must match the interpreter to ≤ 1e-5 norm-wise relative error (f32; 1e-12 for f64),
//! with non-finite values in the same places; bool and i32 outputs must match exactly.

use compiler::frontend::config::HfBertConfig;
use compiler::frontend::preset::{Phase, Preset};
use compiler::frontend::GraphSpec;
use compiler::fusion::{Fusion, KernelKind};
use ir::{Builder, DType, Graph, Interpreter, Tensor, TensorType, UnaryOp, ValueId};
use std::collections::HashMap;
use std::path::Path;
use targets::cpu::{self, Schedule};

mod common;
use common::*;

/// Compiles for this machine, split into up to 8 parts.
fn compile(kernels: &[(&Graph, &str)], schedule: Schedule) -> Loaded {
    compile_with(kernels, schedule, cpu::LowerOptions::parallel())
}

fn compile_with(
    kernels: &[(&Graph, &str)],
    schedule: Schedule,
    lower: cpu::LowerOptions,
) -> Loaded {
    let options = cpu::CpuOptions {
        schedule,
        cpu: "native".into(),
        lower,
    };
    let obj = cpu::compile_loop_kernels(kernels, &options).unwrap_or_else(|e| {
        // Keep the module for a look with mlir-opt.
        let funcs: Vec<_> = kernels
            .iter()
            .map(|(k, n)| cpu::lower_kernel_func(k, n).unwrap())
            .collect();
        let path = std::env::temp_dir().join("tbc_failed_module.mlir");
        std::fs::write(&path, cpu::module_text(&funcs, schedule)).unwrap();
        panic!("{e}\n(module written to {})", path.display())
    });
    link(&obj.object)
}

type Entry = unsafe extern "C" fn(*const *mut u8, i64);

/// The part count a kernel exports.
fn parts_of(lib: &Loaded, name: &str) -> i64 {
    let symbol = format!("tbc_{name}_parts");
    // SAFETY: every compiled kernel exports `const int64_t tbc_<name>_parts`.
    unsafe { **lib.lib.get::<*const i64>(symbol.as_bytes()).unwrap() }
}

/// Raw pointers that may cross to the worker thread (the buffers outlive the scope).
#[derive(Clone, Copy)]
struct Ptrs(*const *mut u8);
// SAFETY: the kernel parts write disjoint bytes; the buffers live until the scope ends.
unsafe impl Send for Ptrs {}

/// Runs every part of kernel `name` on `ptrs`: odd parts on a second thread.
fn run_parts(lib: &Loaded, name: &str, ptrs: &[*mut u8]) {
    let symbol = format!("tbc_{name}");
    // SAFETY: every compiled kernel exports `tbc_<name>(void *const *, int64_t)`.
    let f: Entry = unsafe { *lib.lib.get::<Entry>(symbol.as_bytes()).unwrap() };
    let parts = parts_of(lib, name);
    assert!(parts >= 1);
    let p = Ptrs(ptrs.as_ptr());
    std::thread::scope(|s| {
        s.spawn(move || {
            let p = p;
            for part in (1..parts).step_by(2) {
                // SAFETY: live buffers of the kernel's shapes; parts are independent.
                unsafe { f(p.0, part) };
            }
        });
        for part in (0..parts).step_by(2) {
            // SAFETY: as above.
            unsafe { f(p.0, part) };
        }
    });
}

/// Calls kernel `name` of `lib` (graph `k`) on `inputs`; returns its outputs.
fn call(lib: &Loaded, k: &Graph, name: &str, inputs: &[Tensor]) -> Vec<Tensor> {
    let out_tys: Vec<TensorType> = k.outputs.iter().map(|(_, v)| k.ty(*v).clone()).collect();
    let ins: Vec<Buf> = inputs.iter().map(Buf::from_tensor).collect();
    // Outputs start as NaN-ish garbage (0xAB bytes) so unwritten elements are caught.
    let outs: Vec<Buf> = out_tys
        .iter()
        .map(|t| {
            let b = Buf::new(t.numel() * t.dtype.size_bytes());
            // SAFETY: fill the allocated bytes.
            unsafe { std::ptr::write_bytes(b.ptr, 0xAB, b.layout.size()) };
            if t.dtype == DType::Bool {
                // SAFETY: as above; bool outputs start at 2 (neither false nor true).
                unsafe { std::ptr::write_bytes(b.ptr, 2, b.layout.size()) };
            }
            b
        })
        .collect();
    let ptrs: Vec<*mut u8> = ins.iter().chain(outs.iter()).map(|b| b.ptr).collect();
    run_parts(lib, name, &ptrs);
    outs.iter()
        .zip(&out_tys)
        .map(|(b, t)| b.to_tensor(t))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Every loop kernel of the tiny graphs
// ---------------------------------------------------------------------------------------------

/// Lowers, compiles (one module per graph) and runs every loop kernel of `g` on the values a
/// training step feeds it.
fn check_all_kernels(
    label: &str,
    g: &Graph,
    fusion: &Fusion,
    schedule: Schedule,
    lower: cpu::LowerOptions,
) {
    let t0 = std::time::Instant::now();
    let runs = run_kernels(g, fusion, &realistic_feed(g, 11));
    let names: Vec<String> = runs.iter().map(|r| format!("k{}", r.index)).collect();
    let list: Vec<(&Graph, &str)> = runs
        .iter()
        .zip(&names)
        .map(|(r, n)| (&r.graph, n.as_str()))
        .collect();
    let t1 = std::time::Instant::now();
    let lib = compile_with(&list, schedule, lower);
    let compile_s = t1.elapsed().as_secs_f64();
    let split = names.iter().filter(|n| parts_of(&lib, n) > 1).count();
    let mut worst = Err::default();
    for (r, name) in runs.iter().zip(&names) {
        let got = call(&lib, &r.graph, name, &r.inputs);
        worst = worst.max(check(
            &r.graph,
            &format!("{label} {name}"),
            &got,
            &r.outputs,
        ));
    }
    println!(
        "{label} ({schedule:?}): {} loop kernels OK ({split} split into parts); worst norm-wise rel err {:.2e}, worst elementwise {:.2e}; compile {compile_s:.1} s, total {:.1} s",
        runs.len(),
        worst.norm,
        worst.elem,
        t0.elapsed().as_secs_f64()
    );
}

/// Split every kernel that can be split (the tiny shapes are far below the default threshold).
fn split_all() -> cpu::LowerOptions {
    cpu::LowerOptions {
        max_parts: 4,
        min_part_work: 1,
        ..cpu::LowerOptions::default()
    }
}

#[test]
fn every_loop_kernel_of_td1_matches_the_interpreter() {
    let (g, f) = tiny(&Preset::mindspore(), Phase::Td1, true);
    check_all_kernels(
        "mindspore td1 (dropout)",
        &g,
        &f,
        Schedule::Vectorized,
        split_all(),
    );
    let (g, f) = tiny(&Preset::paper(), Phase::Td1, false);
    check_all_kernels("paper td1", &g, &f, Schedule::Vectorized, split_all());
}

#[test]
fn every_loop_kernel_of_td2_matches_the_interpreter() {
    let (g, f) = tiny(&Preset::mindspore(), Phase::Td2, false);
    check_all_kernels("mindspore td2", &g, &f, Schedule::Vectorized, split_all());
    let (g, f) = tiny(&Preset::paper(), Phase::Td2, true);
    check_all_kernels(
        "paper td2 (dropout)",
        &g,
        &f,
        Schedule::Vectorized,
        split_all(),
    );
}

/// `--precision bf16`: every loop kernel of td1 (with dropout), td2 and eval reads and writes
/// bf16 where the mixed-precision graph has it (GEMM operands and results), equal to the
/// interpreter. (Every phase of both presets passed when this was written, 2 min; these three
/// cover the kernel classes in 23 s.)
#[test]
fn every_loop_kernel_of_bf16_steps_matches_the_interpreter() {
    use compiler::passes::mixed_precision::Precision;
    for (preset, phase, dropout) in [
        (Preset::mindspore(), Phase::Td1, true),
        (Preset::paper(), Phase::Td2, false),
        (Preset::paper(), Phase::Eval, false),
    ] {
        let (g, f) = fused_graph_precision("tiny", &preset, phase, 4, 16, dropout, Precision::Bf16);
        let label = format!("bf16 {} {}", preset.name, phase.name());
        check_all_kernels(&label, &g, &f, Schedule::Vectorized, split_all());
    }
}

#[test]
fn every_loop_kernel_of_td1_matches_with_the_loops_schedule() {
    let (g, f) = tiny(&Preset::mindspore(), Phase::Td1, true);
    check_all_kernels(
        "mindspore td1 (dropout)",
        &g,
        &f,
        Schedule::Loops,
        cpu::LowerOptions::default(),
    );
}

// ---------------------------------------------------------------------------------------------
// One kernel of each class, on real and on random inputs
// ---------------------------------------------------------------------------------------------

/// Op mnemonics of a kernel, without inputs and constants.
#[test]
fn each_kernel_class_matches_on_real_and_random_inputs() {
    let mut graphs: Vec<((Preset, Phase, bool), Vec<Run>)> = Vec::new();
    for class in Class::ALL {
        let src = class.source();
        if !graphs
            .iter()
            .any(|(s, _)| s.0.name == src.0.name && s.1 == src.1 && s.2 == src.2)
        {
            let (g, f) = tiny(&src.0, src.1, src.2);
            let runs = run_kernels(&g, &f, &realistic_feed(&g, 5));
            graphs.push((src, runs));
        }
    }
    for class in Class::ALL {
        let src = class.source();
        let runs = &graphs
            .iter()
            .find(|(s, _)| s.0.name == src.0.name && s.1 == src.1 && s.2 == src.2)
            .unwrap()
            .1;
        let r = find_class(runs, class);
        let name = format!("k{}", r.index);
        for schedule in [Schedule::Loops, Schedule::Vectorized] {
            let lib = compile(&[(&r.graph, &name)], schedule);
            let label = format!("{class:?} {name} {schedule:?}");
            let real = check(
                &r.graph,
                &label,
                &call(&lib, &r.graph, &name, &r.inputs),
                &r.outputs,
            );
            let inputs = random_inputs(&r.graph, 99);
            let named: HashMap<String, Tensor> = inputs
                .iter()
                .enumerate()
                .map(|(i, t)| (format!("in{i}"), t.clone()))
                .collect();
            let want: Vec<Tensor> = Interpreter::run(&r.graph, &named)
                .unwrap()
                .into_iter()
                .map(|(_, t)| t)
                .collect();
            let random = check(
                &r.graph,
                &label,
                &call(&lib, &r.graph, &name, &inputs),
                &want,
            );
            println!(
                "{label:40} real: norm {:.1e} elem {:.1e} | random: norm {:.1e} elem {:.1e}",
                real.norm, real.elem, random.norm, random.elem
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Ops and dtypes the training graphs rarely or never use
// ---------------------------------------------------------------------------------------------

fn run_synthetic(k: &Graph, inputs: &[Tensor]) {
    let want = interpret(k, inputs);
    let narrow = cpu::LowerOptions {
        f32_sums_in_f64: false,
        ..split_all()
    };
    for (schedule, lower) in [
        (Schedule::Loops, cpu::LowerOptions::default()),
        (Schedule::Vectorized, cpu::LowerOptions::default()),
        (Schedule::Vectorized, narrow),
    ] {
        let lib = compile_with(&[(k, "synthetic")], schedule, lower.clone());
        let got = call(&lib, k, "synthetic", inputs);
        check(k, &format!("synthetic {schedule:?} {lower:?}"), &got, &want);
    }
}

#[test]
fn every_op_and_dtype_matches_the_interpreter() {
    use ir::{BinaryOp, CmpOp, ReduceKind};
    let mut b = Builder::new("synthetic");
    let t = |d: DType, s: &[usize]| TensorType::new(d, s.to_vec());
    let x32 = b.input("in0", t(DType::F32, &[4, 6]));
    let x64 = b.input("in1", t(DType::F64, &[4, 6]));
    let xi = b.input("in2", t(DType::I32, &[4, 6]));
    let xb = b.input("in3", t(DType::Bool, &[4, 6]));
    let pos64 = b.input("in4", t(DType::F64, &[6]));
    let mut outs = Vec::new();
    // f64 math (libm) and elementwise ops.
    for u in [
        UnaryOp::Exp,
        UnaryOp::Tanh,
        UnaryOp::Erf,
        UnaryOp::Neg,
        UnaryOp::Abs,
    ] {
        outs.push(b.unary(u, x64));
    }
    for u in [UnaryOp::Log, UnaryOp::Sqrt, UnaryOp::Rsqrt] {
        outs.push(b.unary(u, pos64));
    }
    for op in [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Max,
        BinaryOp::Min,
    ] {
        let bc = b.broadcast(pos64, &[4, 6], &[1]);
        outs.push(b.binary(op, x64, bc));
    }
    // i32 arithmetic, comparisons, reductions.
    for op in [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Max,
        BinaryOp::Min,
    ] {
        let tr = b.transpose(xi, &[1, 0]);
        let tr = b.transpose(tr, &[1, 0]);
        outs.push(b.binary(op, xi, tr));
    }
    outs.push(b.neg(xi));
    outs.push(b.unary(UnaryOp::Abs, xi));
    for kind in [ReduceKind::Sum, ReduceKind::Max, ReduceKind::Min] {
        outs.push(b.reduce(kind, xi, &[0]));
        outs.push(b.reduce(kind, x64, &[1]));
    }
    outs.push(b.reduce(ReduceKind::Mean, x64, &[0, 1]));
    outs.push(b.reduce(ReduceKind::Mean, x32, &[0]));
    outs.push(b.reduce(ReduceKind::Max, x32, &[0, 1]));
    let seven = b.scalar(7.0, DType::I32);
    let seven = b.splat(seven, &[4, 6]);
    for c in [
        CmpOp::Eq,
        CmpOp::Ne,
        CmpOp::Lt,
        CmpOp::Le,
        CmpOp::Gt,
        CmpOp::Ge,
    ] {
        outs.push(b.compare(c, xi, seven));
        outs.push(b.compare(c, x32, x32));
        let nb = b.not(xb);
        outs.push(b.compare(c, xb, nb));
    }
    // bool logic, select, is_finite.
    let nb = b.not(xb);
    outs.push(b.and(xb, nb));
    outs.push(b.or(xb, nb));
    outs.push(b.select(xb, x32, x32));
    let fin = b.unary(UnaryOp::IsFinite, x32);
    outs.push(fin);
    outs.push(b.select(fin, xi, seven));
    // Every cast (float → int saturates, NaN → 0).
    for (from, x) in [
        (DType::F32, x32),
        (DType::F64, x64),
        (DType::I32, xi),
        (DType::Bool, xb),
    ] {
        for to in [DType::F32, DType::F64, DType::I32, DType::Bool] {
            if from != to {
                outs.push(b.cast(x, to));
            }
        }
    }
    // iota, slice, pad (float and bool), transpose, broadcast of a scalar.
    outs.push(b.iota(1, t(DType::I32, &[3, 5])));
    outs.push(b.iota(0, t(DType::F32, &[3, 5])));
    let sl = b.slice(x32, &[1, 2], &[3, 6]);
    outs.push(b.transpose(sl, &[1, 0]));
    outs.push(b.pad(sl, &[1, 0], &[2, 3]));
    outs.push(b.pad(xb, &[0, 1], &[1, 0]));
    let e = b.exp(x32);
    let sl2 = b.slice(e, &[0, 1], &[4, 5]);
    outs.push(b.pad(sl2, &[2, 2], &[0, 0]));
    let c = b.scalar(2.5, DType::F64);
    outs.push(b.splat(c, &[2, 3]));
    for (i, o) in outs.iter().enumerate() {
        b.output(format!("out{i}"), *o);
    }
    let k = b.finish();
    ir::verify(&k).unwrap();

    let mut rng = Rng(3);
    let mut f32s: Vec<f64> = (0..24).map(|_| rng.uniform() * 6.0 - 3.0).collect();
    for (i, v) in [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        3e9,
        -3e9,
        -0.0,
        2147483520.0,
        -2147483648.0,
    ]
    .into_iter()
    .enumerate()
    {
        f32s[i * 3] = v;
    }
    let inputs = vec![
        Tensor::from_f64(&t(DType::F32, &[4, 6]), &f32s),
        Tensor::from_f64(
            &t(DType::F64, &[4, 6]),
            &(0..24)
                .map(|_| rng.uniform() * 4.0 - 2.0)
                .collect::<Vec<_>>(),
        ),
        Tensor::from_f64(
            &t(DType::I32, &[4, 6]),
            &(0..24)
                .map(|i| [7.0, -5.0, 2147483647.0, -2147483648.0, 13.0, 0.0][i % 6])
                .collect::<Vec<_>>(),
        ),
        Tensor::from_f64(
            &t(DType::Bool, &[4, 6]),
            &(0..24)
                .map(|_| (rng.next_u64() & 1) as f64)
                .collect::<Vec<_>>(),
        ),
        Tensor::from_f64(
            &t(DType::F64, &[6]),
            &(0..6)
                .map(|_| rng.uniform() * 3.0 + 0.1)
                .collect::<Vec<_>>(),
        ),
    ];
    run_synthetic(&k, &inputs);
}

#[test]
fn random_uniform_is_bit_exact() {
    let mut b = Builder::new("rng");
    let seed = b.input("in0", TensorType::scalar(DType::I32));
    let ctr = b.input("in1", TensorType::scalar(DType::I32));
    let r = b.random_uniform(seed, ctr, 5, TensorType::new(DType::F32, vec![3, 37, 129]));
    let r64 = b.random_uniform(seed, ctr, 9, TensorType::new(DType::F64, vec![40]));
    let t = b.transpose(r, &[2, 0, 1]);
    let s = b.slice(t, &[3, 1, 2], &[100, 3, 30]);
    b.output("out0", r);
    b.output("out1", r64);
    b.output("out2", s);
    let k = b.finish();
    let lib = compile(&[(&k, "rng")], Schedule::Vectorized);
    for (seed, ctr) in [(0, 0), (7, 4), (-3, -1), (i32::MAX, i32::MIN), (123456, 2)] {
        let inputs = vec![
            Tensor::scalar_f64(DType::I32, seed as f64),
            Tensor::scalar_f64(DType::I32, ctr as f64),
        ];
        let named: HashMap<String, Tensor> = [
            ("in0".to_string(), inputs[0].clone()),
            ("in1".to_string(), inputs[1].clone()),
        ]
        .into();
        let want = Interpreter::run(&k, &named).unwrap();
        let got = call(&lib, &k, "rng", &inputs);
        for ((name, w), g) in want.iter().zip(&got) {
            assert_eq!(w, g, "seed {seed} counter {ctr}: {name} differs");
        }
    }
}

#[test]
fn no_tile_is_larger_than_the_limit() {
    let mut rng = Rng(8);
    for _ in 0..2000 {
        let rank = (rng.next_u64() % 5) as usize;
        let space: Vec<usize> = (0..rank)
            .map(|_| [1, 2, 3, 7, 16, 64, 97, 100, 768, 3072, 30522][rng.next_u64() as usize % 11])
            .collect();
        let reduction: Vec<bool> = (0..rank).map(|_| rng.next_u64() & 1 == 1).collect();
        let t = cpu::OpTiling {
            op: "linalg.generic",
            space: space.clone(),
            reduction,
        };
        let elems: usize = match cpu::tile_sizes(&t) {
            None => space.iter().product(),
            Some(s) => s
                .iter()
                .zip(&space)
                .map(|(&t, &d)| if t == 0 { d } else { t })
                .product(),
        };
        assert!(elems <= cpu::MAX_TILE_ELEMENTS, "{space:?}: {elems}");
    }
}

#[test]
fn unsupported_kernels_are_clear_errors() {
    let mut b = Builder::new("ok");
    let x = b.input("in0", TensorType::new(DType::F32, vec![4]));
    let y = b.neg(x);
    b.output("out0", y);
    let k = b.finish();
    for bad in ["", "1k", "k-1", "k.1", "k 1"] {
        let e = cpu::lower_loop_kernel(&k, bad).unwrap_err();
        assert!(e.to_string().contains("kernel names must match"), "{e}");
    }

    let t = |d: DType, s: &[usize]| TensorType::new(d, s.to_vec());
    let mut b = Builder::new("mm");
    let x = b.input("in0", t(DType::F32, &[4, 4]));
    let m = b.matmul(x, x, false, false);
    b.output("out0", m);
    let e = cpu::lower_loop_kernel(&b.finish(), "mm").unwrap_err();
    assert!(
        matches!(e, cpu::LowerError::UnsupportedOp { op: "matmul", .. }),
        "{e}"
    );
    assert!(e.to_string().contains("kernel mm: node %1 (matmul)"), "{e}");

    let mut b = Builder::new("rs");
    let x = b.input("in0", t(DType::F32, &[4, 4]));
    let r = b.reshape(x, &[16]);
    let r = b.exp(r);
    b.output("out0", r);
    let e = cpu::lower_loop_kernel(&b.finish(), "rs").unwrap_err();
    assert!(e.to_string().contains("reshape"), "{e}");

    for d in [DType::F16, DType::I64] {
        let mut b = Builder::new("h");
        let x = b.input("in0", t(d, &[4]));
        let y = b.neg(x);
        b.output("out0", y);
        let e = cpu::lower_loop_kernel(&b.finish(), "h").unwrap_err();
        assert!(
            matches!(e, cpu::LowerError::UnsupportedDType { dtype, .. } if dtype == d),
            "{e}"
        );
        assert!(e.to_string().contains(d.name()), "{e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Partitioning into independent parts
// ---------------------------------------------------------------------------------------------

#[test]
fn partition_axes_are_chosen_soundly() {
    use compiler::frontend::bert::{layer_norm, softmax_last};
    let t = |s: &[usize]| TensorType::new(DType::F32, s.to_vec());
    let class_dims = |k: &Graph, p: &cpu::partition::Part, v: ValueId| -> Vec<usize> {
        (0..k.ty(v).rank())
            .filter(|&d| p.in_class[v.index()][d])
            .collect()
    };
    // LayerNorm: split by rows (gamma/beta are read whole).
    let mut b = Builder::new("ln");
    let x = b.input("in0", t(&[64, 32]));
    let g = b.input("in1", t(&[32]));
    let be = b.input("in2", t(&[32]));
    let y = layer_norm(&mut b, x, g, be, 1e-12);
    b.output("out0", y);
    let k = b.finish();
    let p = cpu::partition::choose(&k, 8, 1).unwrap();
    assert_eq!((p.full, p.parts, p.chunk), (64, 8, 8));
    assert_eq!(class_dims(&k, &p, x), vec![0]);
    assert!(class_dims(&k, &p, g).is_empty());
    // Too little work per part: fewer parts, or none.
    assert_eq!(cpu::partition::choose(&k, 8, 1024).unwrap().parts, 2);
    assert!(cpu::partition::choose(&k, 8, 4096).is_none());
    // Softmax over [4, 6, 10]: the first output dim.
    let mut b = Builder::new("sm");
    let x = b.input("in0", t(&[4, 6, 10]));
    let y = softmax_last(&mut b, x);
    b.output("out0", y);
    let p = cpu::partition::choose(&b.finish(), 8, 1).unwrap();
    assert_eq!((p.full, p.parts), (4, 4));
    // A bias gradient (sum over rows) splits by columns.
    let mut b = Builder::new("bias_grad");
    let x = b.input("in0", t(&[64, 48]));
    let y = b.sum(x, &[0]);
    b.output("out0", y);
    let k = b.finish();
    let p = cpu::partition::choose(&k, 8, 1).unwrap();
    assert_eq!((p.full, p.parts), (48, 8));
    assert_eq!(class_dims(&k, &p, x), vec![1]);
    // x + transpose(x) and full reductions cannot be split.
    let mut b = Builder::new("sym");
    let x = b.input("in0", t(&[16, 16]));
    let xt = b.transpose(x, &[1, 0]);
    let y = b.add(x, xt);
    b.output("out0", y);
    assert!(cpu::partition::choose(&b.finish(), 8, 1).is_none());
    let mut b = Builder::new("norm");
    let x = b.input("in0", t(&[16, 16]));
    let y = b.reduce_all(ir::ReduceKind::Sum, x);
    b.output("out0", y);
    assert!(cpu::partition::choose(&b.finish(), 8, 1).is_none());
    // Outputs without the axis (a per-row and a per-column result) prevent splitting.
    let mut b = Builder::new("two");
    let x = b.input("in0", t(&[16, 8]));
    let r = b.sum(x, &[1]);
    let c = b.sum(x, &[0]);
    b.output("out0", r);
    b.output("out1", c);
    assert!(cpu::partition::choose(&b.finish(), 8, 1).is_none());
}

#[test]
fn partitioned_iota_pad_and_random_match() {
    // Global indices along the split axis (iota, Philox counters) and pads/slices across it.
    let t = |d: DType, s: &[usize]| TensorType::new(d, s.to_vec());
    let mut b = Builder::new("parts");
    let x = b.input("in0", t(DType::F32, &[12, 10]));
    let seed = b.input("in1", TensorType::scalar(DType::I32));
    let ctr = b.input("in2", TensorType::scalar(DType::I32));
    let r = b.random_uniform(seed, ctr, 3, t(DType::F32, &[12, 10]));
    let io = b.iota(0, t(DType::F32, &[12, 10]));
    let y = b.mul(x, r);
    let y = b.add(y, io);
    let sl = b.slice(y, &[0, 2], &[12, 9]);
    let pd = b.pad(sl, &[0, 1], &[0, 3]);
    let e = b.exp(pd);
    b.output("out0", e);
    b.output("out1", r);
    let k = b.finish();
    let p = cpu::partition::choose(&k, 4, 1).unwrap();
    assert_eq!((p.full, p.parts), (12, 4));
    let inputs = vec![
        random_inputs(&k, 4).remove(0),
        Tensor::scalar_f64(DType::I32, 5.0),
        Tensor::scalar_f64(DType::I32, 9.0),
    ];
    let named: HashMap<String, Tensor> = ["in0", "in1", "in2"]
        .iter()
        .map(|n| n.to_string())
        .zip(inputs.iter().cloned())
        .collect();
    let want: Vec<Tensor> = Interpreter::run(&k, &named)
        .unwrap()
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    for schedule in [Schedule::Loops, Schedule::Vectorized] {
        let lib = compile_with(&[(&k, "parts")], schedule, split_all());
        assert_eq!(parts_of(&lib, "parts"), 4);
        let got = call(&lib, &k, "parts", &inputs);
        check(&k, &format!("parts {schedule:?}"), &got, &want);
        assert_eq!(got[1], want[1], "random numbers must be bit-exact");
    }
}

// ---------------------------------------------------------------------------------------------
// Accuracy of the f32 polynomial math over dense sweeps
// ---------------------------------------------------------------------------------------------

/// Error in units of the last place of the f32 nearest to `want`.
fn ulps(got: f32, want: f64) -> f64 {
    let w = want as f32;
    if w.is_infinite() || got.is_infinite() {
        return if got as f64 == want || got == w {
            0.0
        } else {
            f64::INFINITY
        };
    }
    let a = w.abs();
    let ulp = if a == 0.0 || a < f32::MIN_POSITIVE {
        f32::from_bits(1) as f64
    } else {
        (f32::from_bits(a.to_bits() + 1) - a) as f64
    };
    (got as f64 - want).abs() / ulp
}

#[test]
fn transcendentals_are_accurate() {
    const N: usize = 1 << 20;
    let sweep = |lo: f64, hi: f64| -> Vec<f64> {
        (0..N)
            .map(|i| ((lo + (hi - lo) * i as f64 / (N - 1) as f64) as f32) as f64)
            .collect()
    };
    // log: exponentially spaced positives (subnormals to 3e38) and specials.
    let mut log_in: Vec<f64> = (0..N)
        .map(|i| ((-103.0 + 191.0 * i as f64 / (N - 1) as f64).exp() as f32) as f64)
        .collect();
    let specials = [
        0.0,
        -0.0,
        -1.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        1.0,
    ];
    log_in[..specials.len()].copy_from_slice(&specials);
    let mut cases: Vec<(&str, UnaryOp, Vec<f64>)> = vec![
        ("exp", UnaryOp::Exp, sweep(-104.0, 89.0)),
        ("log", UnaryOp::Log, log_in),
        ("tanh", UnaryOp::Tanh, sweep(-12.0, 12.0)),
        ("erf", UnaryOp::Erf, sweep(-6.0, 6.0)),
    ];
    for c in &mut cases {
        if c.0 != "log" {
            c.2[..specials.len()].copy_from_slice(&specials);
            c.2[specials.len()] = 1e-30;
            c.2[specials.len() + 1] = -1e-40;
        }
    }
    let mut b = Builder::new("math");
    let mut b64 = Builder::new("math64");
    for (i, (_, u, _)) in cases.iter().enumerate() {
        let x = b.input(format!("in{i}"), TensorType::new(DType::F32, vec![N]));
        let y = b.unary(*u, x);
        b.output(format!("out{i}"), y);
        let x = b64.input(format!("in{i}"), TensorType::new(DType::F64, vec![N]));
        let y = b64.unary(*u, x);
        b64.output(format!("out{i}"), y);
    }
    let (k, k64) = (b.finish(), b64.finish());
    let inputs: Vec<Tensor> = cases
        .iter()
        .map(|c| Tensor::from_f64(&TensorType::new(DType::F32, vec![N]), &c.2))
        .collect();
    let feed = |d: DType| -> HashMap<String, Tensor> {
        cases
            .iter()
            .enumerate()
            .map(|(i, c)| {
                (
                    format!("in{i}"),
                    Tensor::from_f64(&TensorType::new(d, vec![N]), &c.2),
                )
            })
            .collect()
    };
    let exact: Vec<Vec<f64>> = Interpreter::run(&k64, &feed(DType::F64))
        .unwrap()
        .into_iter()
        .map(|(_, t)| t.to_f64())
        .collect();
    let libm: Vec<Vec<f64>> = Interpreter::run(&k, &feed(DType::F32))
        .unwrap()
        .into_iter()
        .map(|(_, t)| t.to_f64())
        .collect();
    for schedule in [Schedule::Vectorized, Schedule::Loops] {
        let lib = compile(&[(&k, "math")], schedule);
        let got = call(&lib, &k, "math", &inputs);
        for (i, (name, _, xs)) in cases.iter().enumerate() {
            let g = got[i].to_f64();
            let (mut worst, mut worst_x, mut worst_rel, mut vs_libm) =
                (0.0f64, 0.0, 0.0f64, 0.0f64);
            for j in 0..N {
                let (want, gj) = (exact[i][j], g[j]);
                if want.is_nan() || gj.is_nan() {
                    assert!(
                        want.is_nan() && gj.is_nan(),
                        "{name}({}) = {gj}, want {want}",
                        xs[j]
                    );
                    continue;
                }
                let u = ulps(gj as f32, want);
                if u > worst {
                    (worst, worst_x) = (u, xs[j]);
                }
                if want != 0.0
                    && want.abs() > f32::MIN_POSITIVE as f64
                    && want.abs() <= f32::MAX as f64
                {
                    worst_rel = worst_rel.max((gj - want).abs() / want.abs());
                }
                vs_libm = vs_libm.max(ulps(gj as f32, libm[i][j]));
            }
            println!(
                "{schedule:?} {name:5}: max {worst:.2} ulp (at {worst_x:e}), max rel {worst_rel:.2e}, max {vs_libm:.1} ulp from the interpreter's libm f32"
            );
            assert!(worst <= 2.0, "{name}: {worst} ulp at {worst_x}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// MLIR snapshots (micro config: batch 2, seq 4)
// ---------------------------------------------------------------------------------------------

#[test]
fn mlir_snapshots_of_each_kernel_class() {
    let mut done = Vec::new();
    for class in Class::ALL {
        let (preset, phase, _) = class.source();
        // The micro student has dropout on; BiasGeluErf needs the paper preset.
        let (g, f) = fused_graph("micro", &preset, phase, 2, 4, true);
        let runs = run_kernels(&g, &f, &realistic_feed(&g, 1));
        let r = find_class(&runs, class);
        let name = format!("{class:?}").to_lowercase();
        let text = cpu::lower_loop_kernel(&r.graph, &name).unwrap();
        insta::assert_snapshot!(format!("mlir_{name}"), text);
        done.push((r.graph.clone(), name));
    }
    // The softmax kernel split into parts (strided memrefs, the part offset argument).
    let (k, name) = &done[2];
    let func = cpu::lower_kernel_func_with(k, name, &split_all()).unwrap();
    insta::assert_snapshot!(
        "mlir_softmax_parts",
        cpu::module_text(&[func], Schedule::Loops)
    );
    // The vectorized module (with its transform script) of the softmax kernel.
    let func = cpu::lower_kernel_func(k, name).unwrap();
    insta::assert_snapshot!(
        "mlir_softmax_vectorized",
        cpu::module_text(&[func], Schedule::Vectorized)
    );
}

// ---------------------------------------------------------------------------------------------
// Timing on BERT-base shapes (run with
// `cargo test --release -p targets --test cpu_kernels bench -- --ignored --nocapture`)
// ---------------------------------------------------------------------------------------------

/// The fastest of `iters` runs (this VM is shared: the minimum is the least disturbed).
fn best_ms(mut f: impl FnMut(), iters: usize) -> f64 {
    f();
    (0..iters)
        .map(|_| {
            let t0 = std::time::Instant::now();
            f();
            t0.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min)
}

/// A second, persistent worker thread: `run` executes the even parts of a kernel here and
/// the odd parts there (no thread spawn per call).
struct Pool2 {
    job: std::sync::Arc<std::sync::Mutex<Option<(Entry, Ptrs, i64)>>>,
    start: std::sync::Arc<std::sync::Barrier>,
    done: std::sync::Arc<std::sync::Barrier>,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl Pool2 {
    fn new() -> Pool2 {
        let job: std::sync::Arc<std::sync::Mutex<Option<(Entry, Ptrs, i64)>>> = Default::default();
        let start = std::sync::Arc::new(std::sync::Barrier::new(2));
        let done = std::sync::Arc::new(std::sync::Barrier::new(2));
        let (j, s, d) = (job.clone(), start.clone(), done.clone());
        let worker = std::thread::spawn(move || loop {
            s.wait();
            let Some((f, p, parts)) = *j.lock().unwrap() else {
                return;
            };
            for part in (1..parts).step_by(2) {
                // SAFETY: the caller keeps the buffers alive until `done`.
                unsafe { f(p.0, part) };
            }
            d.wait();
        });
        Pool2 {
            job,
            start,
            done,
            worker: Some(worker),
        }
    }

    fn run(&self, f: Entry, ptrs: &[*mut u8], parts: i64) {
        *self.job.lock().unwrap() = Some((f, Ptrs(ptrs.as_ptr()), parts));
        self.start.wait();
        for part in (0..parts).step_by(2) {
            // SAFETY: live buffers of the kernel's shapes; parts are independent.
            unsafe { f(ptrs.as_ptr(), part) };
        }
        self.done.wait();
    }
}

impl Drop for Pool2 {
    fn drop(&mut self) {
        *self.job.lock().unwrap() = None;
        self.start.wait();
        self.worker.take().unwrap().join().unwrap();
    }
}

/// The benchmark kernels, built with the frontend's own expansions.
fn bench_kernels() -> Vec<(&'static str, Graph)> {
    use compiler::frontend::bert::{activation, layer_norm, softmax_last};
    use compiler::frontend::config::Activation;
    let t = |s: &[usize]| TensorType::new(DType::F32, s.to_vec());
    let mut out = Vec::new();
    let mut b = Builder::new("layernorm");
    let x = b.input("in0", t(&[2048, 768]));
    let g = b.input("in1", t(&[768]));
    let be = b.input("in2", t(&[768]));
    let y = layer_norm(&mut b, x, g, be, 1e-12);
    b.output("out0", y);
    out.push(("layernorm 2048x768", b.finish()));
    for (name, act) in [
        ("bias+gelu(tanh) 2048x3072", Activation::GeluTanh),
        ("bias+gelu(erf) 2048x3072", Activation::GeluErf),
    ] {
        let mut b = Builder::new("gelu");
        let x = b.input("in0", t(&[2048, 3072]));
        let bias = b.input("in1", t(&[3072]));
        let bb = b.broadcast(bias, &[2048, 3072], &[1]);
        let v = b.add(x, bb);
        let y = activation(&mut b, v, act);
        b.output("out0", y);
        out.push((name, b.finish()));
    }
    let mut b = Builder::new("softmax");
    let x = b.input("in0", t(&[32, 12, 64, 64]));
    let y = softmax_last(&mut b, x);
    b.output("out0", y);
    out.push(("softmax 32x12x64x64", b.finish()));
    let mut b = Builder::new("dropout");
    let x = b.input("in0", t(&[32, 12, 64, 64]));
    let seed = b.input("in1", TensorType::scalar(DType::I32));
    let counter = b.input("in2", TensorType::scalar(DType::I32));
    let ctx = compiler::frontend::bert::DropoutCtx { seed, counter };
    let y = compiler::frontend::bert::dropout(&mut b, x, 0.1, ctx, 3);
    b.output("out0", y);
    out.push(("dropout 32x12x64x64", b.finish()));
    out
}

/// Straightforward scalar Rust for the same computations (f32, f32 accumulation).
fn naive(name: &str, ins: &[Vec<f32>], (seed, counter): (i64, i64), out: &mut [f32]) {
    if name.starts_with("layernorm") {
        let (x, g, b) = (&ins[0], &ins[1], &ins[2]);
        for r in 0..2048 {
            let row = &x[r * 768..(r + 1) * 768];
            let mean = row.iter().sum::<f32>() / 768.0;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / 768.0;
            let rstd = 1.0 / (var + 1e-12).sqrt();
            for c in 0..768 {
                out[r * 768 + c] = (row[c] - mean) * rstd * g[c] + b[c];
            }
        }
    } else if name.starts_with("bias+gelu") {
        let erf = name.contains("erf");
        let (x, b) = (&ins[0], &ins[1]);
        for r in 0..2048 {
            for c in 0..3072 {
                let v = x[r * 3072 + c] + b[c];
                let inner = if erf {
                    libm_erf(v * std::f32::consts::FRAC_1_SQRT_2)
                } else {
                    (0.797_884_6 * (v + 0.044715 * v * v * v)).tanh()
                };
                out[r * 3072 + c] = 0.5 * v * (1.0 + inner);
            }
        }
    } else if name.starts_with("dropout") {
        let x = &ins[0];
        for (i, o) in out.iter_mut().enumerate() {
            let u = ir::rng::uniform(seed, 3, counter, i as u64);
            *o = if u >= 0.1 { x[i] / 0.9 } else { 0.0 };
        }
    } else {
        let x = &ins[0];
        for r in 0..32 * 12 * 64 {
            let row = &x[r * 64..(r + 1) * 64];
            let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let mut s = 0.0;
            for c in 0..64 {
                let e = (row[c] - m).exp();
                out[r * 64 + c] = e;
                s += e;
            }
            for c in 0..64 {
                out[r * 64 + c] /= s;
            }
        }
    }
}

/// erf through the interpreter's path would be slow; a plain scalar erf (A&S 7.1.26 is too
/// inaccurate for checks but fine for timing a naive loop).
fn libm_erf(x: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let y = 1.0
        - (((((1.061_405_4 * t - 1.453_152_1) * t) + 1.421_413_8) * t - 0.284_496_74) * t
            + 0.254_829_6)
            * t
            * (-x * x).exp();
    y.copysign(x)
}

#[test]
#[ignore]
fn bench_real_shapes() {
    for (name, k) in bench_kernels() {
        let mut rng = Rng(1);
        let inputs: Vec<Tensor> = k
            .inputs()
            .map(|(_, v)| {
                let ty = k.ty(v);
                let vals: Vec<f64> = (0..ty.numel()).map(|_| rng.normal()).collect();
                Tensor::from_f64(ty, &vals)
            })
            .collect();
        let out_ty = k.ty(k.outputs[0].1).clone();
        let bytes: usize = inputs.iter().map(|t| t.numel() * 4).sum::<usize>() + out_ty.numel() * 4;
        let seed = inputs.get(1).map_or(0, |t| t.to_f64()[0] as i64);
        let counter = inputs.get(2).map_or(0, |t| t.to_f64()[0] as i64);
        let mut line = format!("{name:26}");
        for (label, schedule, lower) in [
            ("loops", Schedule::Loops, cpu::LowerOptions::default()),
            ("vec", Schedule::Vectorized, cpu::LowerOptions::default()),
            (
                "vec/parts",
                Schedule::Vectorized,
                cpu::LowerOptions::parallel(),
            ),
        ] {
            let t0 = std::time::Instant::now();
            let lib = compile_with(&[(&k, "bench")], schedule, lower);
            let compile_ms = t0.elapsed().as_secs_f64() * 1e3;
            let ins: Vec<Buf> = inputs.iter().map(Buf::from_tensor).collect();
            let out = Buf::new(out_ty.numel() * 4);
            let ptrs: Vec<*mut u8> = ins.iter().chain([&out]).map(|b| b.ptr).collect();
            // SAFETY: the kernel exports `tbc_bench`.
            let f: Entry = unsafe { *lib.lib.get::<Entry>(b"tbc_bench").unwrap() };
            let parts = parts_of(&lib, "bench");
            // SAFETY: live buffers of the kernel's shapes.
            let ms = best_ms(
                || (0..parts).for_each(|p| unsafe { f(ptrs.as_ptr(), p) }),
                15,
            );
            line += &format!(
                " | {label} {ms:6.3} ms ({:4.1} GB/s, compile {compile_ms:3.0} ms)",
                bytes as f64 / ms / 1e6
            );
            if parts > 1 {
                let pool = Pool2::new();
                let ms2 = best_ms(|| pool.run(f, &ptrs, parts), 60);
                line += &format!(" | {parts} parts on 2 threads {ms2:6.3} ms");
            }
        }
        let ins: Vec<Vec<f32>> = inputs
            .iter()
            .map(|t| t.to_f64().iter().map(|&v| v as f32).collect())
            .collect();
        let mut out = vec![0.0f32; out_ty.numel()];
        let ms = best_ms(|| naive(name, &ins, (seed, counter), &mut out), 7);
        line += &format!(" | naive Rust: {ms:7.3} ms");
        println!("{line}");
    }
}

/// Every loop kernel of the real td1 step (BERT-base teacher, `mindspore` preset student
/// 4L-384, batch 32, seq 64): compile time of the module, run time of each kernel on random
/// inputs (one part after another, then the parts on two threads), the heaviest kernels.
#[test]
#[ignore]
fn bench_td1_step_loop_kernels() {
    let preset = Preset::mindspore();
    let configs = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("configs");
    let load = |f: &str| {
        HfBertConfig::from_file(&configs.join(f))
            .unwrap()
            .resolve(&preset, f)
            .unwrap()
    };
    let (t, s) = (load("bert-base-teacher.json"), load("student-4l-384.json"));
    let spec = GraphSpec {
        phase: Phase::Td1,
        teacher: &t,
        student: &s,
        preset: &preset,
        batch: 32,
        seq_len: 64,
        dtype: DType::F32,
        precision: Default::default(),
    };
    let c = compiler::pipeline::compile(&spec, compiler::pipeline::Stage::Fuse, &[], |_, _| {})
        .unwrap();
    let (g, fusion) = (c.graph, c.fusion.unwrap());
    let kernels: Vec<(Graph, String)> = fusion
        .kernels
        .iter()
        .enumerate()
        .filter(|(_, k)| k.kind == KernelKind::Loop)
        .map(|(i, k)| {
            let name = format!("k{i}");
            (compiler::exec::kernel_graph(&g, k, &name), name)
        })
        .collect();
    let list: Vec<(&Graph, &str)> = kernels.iter().map(|(k, n)| (k, n.as_str())).collect();
    for (label, schedule, lower) in [
        (
            "vectorized, parts",
            Schedule::Vectorized,
            cpu::LowerOptions::parallel(),
        ),
        ("loops", Schedule::Loops, cpu::LowerOptions::default()),
    ] {
        let t0 = std::time::Instant::now();
        let lib = compile_with(&list, schedule, lower);
        let compile_s = t0.elapsed().as_secs_f64();
        let mut rng = Rng(2);
        let (mut total1, mut total2, mut bytes) = (0.0, 0.0, 0usize);
        let mut per: Vec<(f64, f64, i64, String, String)> = Vec::new();
        let (mut unsplit_ms, mut unsplit) = (0.0, 0);
        let pool = Pool2::new();
        for (k, name) in &kernels {
            let ins: Vec<Buf> = k
                .inputs()
                .map(|(_, v)| {
                    let ty = k.ty(v);
                    let vals: Vec<f64> = (0..ty.numel())
                        .map(|_| match ty.dtype {
                            DType::Bool => (rng.next_u64() & 1) as f64,
                            DType::I32 => (rng.next_u64() % 4) as f64,
                            _ => rng.uniform() + 0.5,
                        })
                        .collect();
                    Buf::from_tensor(&Tensor::from_f64(ty, &vals))
                })
                .collect();
            let outs: Vec<Buf> = k
                .outputs
                .iter()
                .map(|(_, v)| Buf::new(k.ty(*v).numel() * k.ty(*v).dtype.size_bytes()))
                .collect();
            let b: usize = k
                .inputs()
                .map(|(_, v)| k.ty(v))
                .chain(k.outputs.iter().map(|(_, v)| k.ty(*v)))
                .map(|t| t.numel() * t.dtype.size_bytes())
                .sum();
            let ptrs: Vec<*mut u8> = ins.iter().chain(outs.iter()).map(|b| b.ptr).collect();
            let symbol = format!("tbc_{name}");
            // SAFETY: every kernel exports `tbc_<name>`.
            let f: Entry = unsafe { *lib.lib.get::<Entry>(symbol.as_bytes()).unwrap() };
            let parts = parts_of(&lib, name);
            // SAFETY: live buffers of the kernel's shapes.
            let ms1 = best_ms(
                || (0..parts).for_each(|p| unsafe { f(ptrs.as_ptr(), p) }),
                3,
            );
            let ms2 = if parts > 1 {
                best_ms(|| pool.run(f, &ptrs, parts), 7)
            } else {
                ms1
            };
            total1 += ms1;
            total2 += ms2;
            bytes += b;
            if parts == 1 {
                unsplit_ms += ms1;
                unsplit += 1;
            }
            per.push((ms1, ms2, parts, name.clone(), ops(k).join(" ")));
        }
        println!(
            "td1 b32 s64, {label}: {} loop kernels, module compile {compile_s:.1} s; run {total1:.1} ms on 1 thread ({:.1} GB/s), {total2:.1} ms with parts on 2 threads",
            kernels.len(),
            bytes as f64 / total1 / 1e6
        );
        println!("  {unsplit} kernels not split take {unsplit_ms:.1} ms");
        per.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap());
        for (ms, ms2, parts, name, ops) in per.iter().take(16) {
            let ops: String = ops.chars().take(90).collect();
            println!("  {ms:7.3} ms, {parts} parts on 2 threads {ms2:7.3} ms  {name:6} {ops}");
        }
    }
}
