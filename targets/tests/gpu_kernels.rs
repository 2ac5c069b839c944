//! The GPU loop-kernel back end without a GPU.
//!
//! Every loop kernel of the tiny phases (both presets, batch 4, seq 16, `--precision`
//! fp32/fp16/bf16) is built twice from
//! one description: as a CPU emulation of its launches (loops over blocks, phases and threads
//! around the same per-thread code) that runs here against the interpreter on the values a
//! training step feeds it, and as PTX through MLIR's NVVM path, which `ptxas` assembles for
//! sm_80 and sm_90 when it is installed (`scripts/install-ptxas.sh`; the test says so when it
//! is not).

use compiler::frontend::preset::{Phase, Preset};
use compiler::passes::mixed_precision::Precision;
use ir::{DType, Graph, Tensor, TensorType};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use targets::gpu::{self, Flavor, GpuKernel};

mod common;
use common::*;

/// The phases every test covers, with dropout on in the student where the phase trains.
const PHASES: [(Phase, bool); 6] = [
    (Phase::Gd, true),
    (Phase::Td1, true),
    (Phase::Td2, true),
    (Phase::Ft, true),
    (Phase::Eval, false),
    (Phase::EvalTeacher, false),
];

fn presets() -> [(&'static str, Preset); 2] {
    [
        ("mindspore", Preset::mindspore()),
        ("paper", Preset::paper()),
    ]
}

/// Runs emulated kernel `k` on `inputs`: outputs and workspace start as 0xAB garbage (bools
/// as 2) so an element no launch writes is caught.
fn call_emulated(lib: &Loaded, k: &GpuKernel, graph: &Graph, inputs: &[Tensor]) -> Vec<Tensor> {
    let mut bufs: Vec<Buf> = inputs.iter().map(Buf::from_tensor).collect();
    for p in &k.params[k.inputs..] {
        let b = Buf::new(p.len.max(1) * p.dtype.size_bytes());
        let fill = if p.dtype == DType::Bool { 2 } else { 0xAB };
        // SAFETY: fill the allocated bytes.
        unsafe { std::ptr::write_bytes(b.ptr, fill, b.layout.size()) };
        bufs.push(b);
    }
    let ptrs: Vec<*mut u8> = bufs.iter().map(|b| b.ptr).collect();
    let symbol = format!("tbc_emu_{}", k.name);
    type Entry = unsafe extern "C" fn(*const *mut u8, i64);
    // SAFETY: `compile_emulation` exports `tbc_emu_<name>(void *const *, int64_t)`; the buffers
    // have the kernel's parameter sizes.
    unsafe {
        let f: Entry = *lib.lib.get::<Entry>(symbol.as_bytes()).unwrap();
        f(ptrs.as_ptr(), 0);
    }
    let out_tys: Vec<TensorType> = graph
        .outputs
        .iter()
        .map(|(_, v)| graph.ty(*v).clone())
        .collect();
    out_tys
        .iter()
        .enumerate()
        .map(|(i, t)| bufs[k.inputs + i].to_tensor(t))
        .collect()
}

/// The loop kernels of one tiny phase, run by the interpreter on a training step's values.
fn phase_runs(preset: &Preset, phase: Phase, dropout: bool, precision: Precision) -> Vec<Run> {
    let (g, f) = fused_graph_precision("tiny", preset, phase, 4, 16, dropout, precision);
    run_kernels(&g, &f, &realistic_feed(&g, 11))
}

/// The kernel text without its name: identical kernels (every layer has the same ones) are
/// built and compiled once.
fn kernel_key(g: &Graph) -> String {
    let text = ir::text::print(g);
    text.split_once('\n')
        .map_or(text.clone(), |(_, rest)| rest.to_string())
}

#[test]
fn every_loop_kernel_of_every_phase_matches_the_interpreter_in_emulation() {
    for (pname, preset) in presets() {
        let t0 = std::time::Instant::now();
        // Every loop kernel of every phase in every precision, each distinct one built once.
        let mut runs: Vec<(String, Run)> = Vec::new();
        for precision in Precision::ALL {
            for (phase, dropout) in PHASES {
                let label = format!("{precision} {phase:?}");
                runs.extend(
                    phase_runs(&preset, phase, dropout, precision)
                        .into_iter()
                        .map(|r| (label.clone(), r)),
                );
            }
        }
        let mut unique: HashMap<String, usize> = HashMap::new();
        let mut kernels: Vec<GpuKernel> = Vec::new();
        let mut which = Vec::new();
        for (_, r) in &runs {
            let next = kernels.len();
            let i = *unique.entry(kernel_key(&r.graph)).or_insert(next);
            if i == next {
                let name = format!("u{i}");
                kernels.push(gpu::build(&r.graph, &name, Flavor::CpuEmulation).unwrap());
            }
            which.push(i);
        }
        let object = gpu::compile_emulation(&kernels, "native").unwrap_or_else(|e| {
            let path = std::env::temp_dir().join("tbc_failed_emulation.mlir");
            std::fs::write(&path, gpu::emulation_module_text(&kernels)).unwrap();
            panic!("{e}\n(module written to {})", path.display())
        });
        let lib = link(&object);
        let compiled_s = t0.elapsed().as_secs_f64();
        let mut worst = Err::default();
        for ((label, r), &i) in runs.iter().zip(&which) {
            let got = call_emulated(&lib, &kernels[i], &r.graph, &r.inputs);
            worst = worst.max(check(
                &r.graph,
                &format!("{pname} {label} k{}", r.index),
                &got,
                &r.outputs,
            ));
        }
        let launches: usize = kernels.iter().map(|k| k.launches.len()).sum();
        println!(
            "{pname}: {} loop kernels of 6 phases × fp32/fp16/bf16 ({} distinct, {launches} launches) match; worst norm-wise rel err {:.2e}, elementwise {:.2e}; built in {compiled_s:.1} s, {:.1} s in all",
            runs.len(),
            kernels.len(),
            worst.norm,
            worst.elem,
            t0.elapsed().as_secs_f64()
        );
    }
}

/// `ptxas` from `$TBC_PTXAS`, the repo's tool folder, or PATH.
fn ptxas() -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let candidates = [
        std::env::var_os("TBC_PTXAS").map(PathBuf::from),
        Some(root.join(".tools/ptxas/bin/ptxas")),
        Some(PathBuf::from("ptxas")),
    ];
    candidates.into_iter().flatten().find(|p| {
        Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

#[test]
fn every_loop_kernel_of_every_phase_becomes_ptx_that_ptxas_accepts() {
    let ptxas = ptxas();
    if ptxas.is_none() {
        println!("SKIPPED ptxas checks: ptxas not found (run scripts/install-ptxas.sh or set TBC_PTXAS); PTX is still generated");
    }
    let dir = tempfile::tempdir().unwrap();
    for (pname, preset) in presets() {
        // Every distinct loop kernel of the six phases in the three precisions, in one module.
        let mut unique: HashMap<String, ()> = HashMap::new();
        let mut graphs: Vec<(String, Graph)> = Vec::new();
        for (precision, (phase, dropout)) in Precision::ALL
            .into_iter()
            .flat_map(|p| PHASES.map(|ph| (p, ph)))
        {
            let (g, f) = fused_graph_precision("tiny", &preset, phase, 4, 16, dropout, precision);
            for k in &f.kernels {
                if k.kind != compiler::fusion::KernelKind::Loop {
                    continue;
                }
                let name = format!("u{}", graphs.len());
                let kg = compiler::exec::kernel_graph(&g, k, &name);
                if unique.insert(kernel_key(&kg), ()).is_none() {
                    graphs.push((name, kg));
                }
            }
        }
        let refs: Vec<(&Graph, &str)> = graphs.iter().map(|(n, g)| (g, n.as_str())).collect();
        let kernels = gpu::build_all(&refs).unwrap();
        let module = gpu::gpu_module_text(&kernels);
        let launches: usize = kernels.iter().map(|k| k.launches.len()).sum();
        for arch in gpu::GPU_ARCHS {
            let ptx = gpu::compile_ptx(&module, arch).unwrap();
            assert_eq!(ptx.matches(".entry ").count(), launches);
            if ptx.contains("__nv_") {
                std::fs::write("/tmp/tbc_libdevice.ptx", &ptx).unwrap();
                panic!("libdevice call in the PTX (written to /tmp/tbc_libdevice.ptx)");
            }
            let Some(ptxas) = &ptxas else { continue };
            let file = dir.path().join(format!("{pname}_{arch}.ptx"));
            std::fs::write(&file, &ptx).unwrap();
            let out = Command::new(ptxas)
                .arg(format!("-arch={arch}"))
                .arg("-v")
                .arg(&file)
                .arg("-o")
                .arg(file.with_extension("cubin"))
                .output()
                .unwrap();
            let log = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success(),
                "ptxas {arch} rejected {pname}:\n{log}"
            );
            let spills: usize = log
                .lines()
                .filter(|l| l.contains("bytes spill stores"))
                .filter(|l| !l.contains(" 0 bytes spill stores"))
                .count();
            let max_regs = log
                .lines()
                .filter_map(|l| l.split("Used ").nth(1))
                .filter_map(|r| r.split(' ').next()?.parse::<usize>().ok())
                .max()
                .unwrap_or(0);
            println!(
                    "{pname} {arch}: {} distinct loop kernels of 6 phases × 3 precisions, {launches} entries assembled; most registers {max_regs}; {spills} entries spill",
                    kernels.len()
                );
            assert_eq!(spills, 0, "register spills:\n{log}");
        }
    }
}

/// Snapshots of the `gpu`-dialect MLIR and the sm_80 PTX of one kernel of each class (micro
/// config: batch 2, seq 4).
#[test]
fn mlir_and_ptx_snapshots_of_each_kernel_class() {
    for class in Class::ALL {
        let (preset, phase, _) = class.source();
        let (g, f) = fused_graph("micro", &preset, phase, 2, 4, true);
        let runs = run_kernels(&g, &f, &realistic_feed(&g, 1));
        let r = find_class(&runs, class);
        let name = format!("{class:?}").to_lowercase();
        let kernels = gpu::build_all(&[(&r.graph, name.as_str())]).unwrap();
        let module = gpu::gpu_module_text(&kernels);
        insta::assert_snapshot!(format!("gpu_mlir_{name}"), module);
        let ptx = gpu::compile_ptx(&module, "sm_80").unwrap();
        insta::assert_snapshot!(format!("gpu_ptx_{name}"), ptx);
    }
}

/// Reductions of every kind over leading, trailing and all axes, small and large enough to
/// take two passes, in emulation against the interpreter; and their PTX.
#[test]
fn reductions_of_every_shape_and_kind_match_in_one_and_two_passes() {
    use ir::{Builder, ReduceKind};
    let mut b = Builder::new("reductions");
    let t = |d: DType, s: &[usize]| TensorType::new(d, s.to_vec());
    let big = b.input("in0", t(DType::F32, &[96, 512]));
    let small = b.input("in1", t(DType::F32, &[3, 5, 7]));
    let ints = b.input("in2", t(DType::I32, &[40, 1000]));
    let mut outs = Vec::new();
    for kind in [
        ReduceKind::Sum,
        ReduceKind::Mean,
        ReduceKind::Max,
        ReduceKind::Min,
    ] {
        outs.push(b.reduce(kind, big, &[0, 1])); // full: two passes (49 152 elements)
        outs.push(b.reduce(kind, big, &[0])); // columns
        outs.push(b.reduce(kind, big, &[1])); // rows
        outs.push(b.reduce(kind, small, &[0, 2])); // non-contiguous axes, tails
        if kind != ReduceKind::Mean {
            outs.push(b.reduce(kind, ints, &[0, 1])); // i32, two passes
        }
    }
    // A full reduction read by an element-wise nest (the gradient-norm clip shape).
    let sq = b.mul(big, big);
    let norm = b.reduce(ReduceKind::Sum, sq, &[0, 1]);
    let norm = b.unary(ir::UnaryOp::Sqrt, norm);
    let norm = b.broadcast(norm, &[96, 512], &[]);
    outs.push(b.div(big, norm));
    for (i, o) in outs.into_iter().enumerate() {
        b.output(format!("out{i}"), o);
    }
    let k = b.finish();
    let inputs = random_inputs(&k, 3);
    let want = interpret(&k, &inputs);
    let built = gpu::build(&k, "red", Flavor::CpuEmulation).unwrap();
    let split = built.workspace().iter().filter(|p| p.len > 1).count();
    assert!(
        split >= 8,
        "expected two-pass reductions, workspace {:?}",
        built.workspace()
    );
    let lib = link(&gpu::compile_emulation(std::slice::from_ref(&built), "native").unwrap());
    let got = call_emulated(&lib, &built, &k, &inputs);
    let worst = check(&k, "reductions", &got, &want);
    println!(
        "{} launches; worst norm-wise rel err {:.2e}",
        built.launches.len(),
        worst.norm
    );
    let module = gpu::gpu_module_text(&gpu::build_all(&[(&k, "red")]).unwrap());
    gpu::compile_ptx(&module, "sm_90").unwrap();
}

/// Gather and scatter-add (the embedding lookup and its gradient) in emulation against the
/// interpreter, twice (the same bits both times), and as PTX.
#[test]
fn gather_and_scatter_add_match_the_interpreter() {
    use ir::Builder;
    let (rows, row, n) = (50, 24, 64);
    let mut b = Builder::new("embedding");
    let table = b.input("in0", TensorType::new(DType::F32, vec![rows, row]));
    let idx = b.input("in1", TensorType::new(DType::I32, vec![4, 16]));
    let upd = b.input("in2", TensorType::new(DType::F32, vec![4, 16, row]));
    let gathered = b.gather(table, idx);
    let summed = b.scatter_add(idx, upd, rows);
    b.output("out0", gathered);
    b.output("out1", summed);
    let k = b.finish();
    let inputs = random_inputs(&k, 9); // indices in 0..10: repeated rows
    let want = interpret(&k, &inputs);
    let g = gpu::library::gather("g", rows, row, n, DType::F32, Flavor::CpuEmulation).unwrap();
    let s = gpu::library::scatter_add("s", rows, row, n, DType::F32, Flavor::CpuEmulation).unwrap();
    let lib = link(&gpu::compile_emulation(&[g.clone(), s.clone()], "native").unwrap());
    let one = |kernel: &GpuKernel, ins: &[Tensor], out: usize| {
        let mut gk = ir::Graph::new("one");
        // A graph whose single output has the kernel's output type, for `call_emulated`.
        let v = gk.push(
            ir::Op::Input { name: "o".into() },
            vec![],
            k.ty(k.outputs[out].1).clone(),
        );
        gk.set_output("o", v);
        call_emulated(&lib, kernel, &gk, ins).remove(0)
    };
    let got_g = one(&g, &[inputs[0].clone(), inputs[1].clone()], 0);
    let got_s = one(&s, &[inputs[1].clone(), inputs[2].clone()], 1);
    assert_eq!(got_g, want[0], "gather is a copy: bit-exact");
    check(&k, "scatter-add", &[want[0].clone(), got_s.clone()], &want);
    let again = one(&s, &[inputs[1].clone(), inputs[2].clone()], 1);
    assert_eq!(again, got_s, "scatter-add: the same bits every run");
    let gpu_g = gpu::library::gather("g", rows, row, n, DType::F32, Flavor::Gpu).unwrap();
    let gpu_s = gpu::library::scatter_add("s", rows, row, n, DType::F32, Flavor::Gpu).unwrap();
    let ptx = gpu::compile_ptx(&gpu::gpu_module_text(&[gpu_g, gpu_s]), "sm_80").unwrap();
    assert_eq!(ptx.matches(".entry ").count(), 3);
}

/// Snapshots of a full reduction in two passes (a gradient norm: Σx² over 49 152 elements):
/// 12 blocks write partial sums to the workspace, one block combines them.
#[test]
fn mlir_and_ptx_snapshots_of_a_two_pass_full_reduction() {
    use ir::{Builder, ReduceKind};
    let mut b = Builder::new("norm");
    let x = b.input("in0", TensorType::new(DType::F32, vec![96, 512]));
    let sq = b.mul(x, x);
    let total = b.reduce(ReduceKind::Sum, sq, &[0, 1]);
    b.output("out0", total);
    let k = b.finish();
    let kernels = gpu::build_all(&[(&k, "full_reduction")]).unwrap();
    assert_eq!(kernels[0].launches.len(), 2);
    assert_eq!(kernels[0].launches[0].grid, 12);
    let module = gpu::gpu_module_text(&kernels);
    insta::assert_snapshot!("gpu_mlir_full_reduction", module);
    insta::assert_snapshot!(
        "gpu_ptx_full_reduction",
        gpu::compile_ptx(&module, "sm_80").unwrap()
    );
}
