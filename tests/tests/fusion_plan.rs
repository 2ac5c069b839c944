//! The compiler pipeline up to the memory plan (simplify, fuse, plan), executed kernel by kernel
//! with intermediates in a byte arena at their planned offsets, against the plain interpreter on
//! the unsimplified graph, for every phase and preset: outputs must be bit-identical, which also
//! proves no two live values were given overlapping bytes.

use compiler::exec::run_planned;
use compiler::frontend::preset::{Phase, Preset};
use compiler::fusion::KernelKind;
use ir::{DType, Interpreter};
use tbc_tests::*;

#[test]
fn fused_planned_execution_is_bit_identical() {
    for preset in [Preset::mindspore(), Preset::paper()] {
        for phase in Phase::ALL {
            let raw = tiny_graph(&preset, phase, DType::F32);
            let compiled = compile_tiny(&preset, phase);
            let (g, fusion, mem) = (
                &compiled.graph,
                compiled.fusion.as_ref().unwrap(),
                compiled.plan.as_ref().unwrap(),
            );
            let feed = fixture_feed(
                &raw,
                &StepInputs {
                    lr: 1e-3,
                    step: 3,
                    loss_scale: 256.0,
                },
            );
            let want = Interpreter::run(&raw, &feed).unwrap();
            let got = run_planned(g, fusion, mem, &feed).unwrap();
            assert_eq!(want.len(), got.len());
            for ((n1, a), (n2, b)) in want.iter().zip(&got) {
                assert_eq!(n1, n2);
                assert_eq!(
                    a,
                    b,
                    "{} {}: output {n1} differs",
                    preset.name,
                    phase.name()
                );
            }
            let gemms = fusion
                .kernels
                .iter()
                .filter(|k| k.kind == KernelKind::Gemm)
                .count();
            println!(
                "{:9} {:4}: {} nodes, {} simplified -> {} kernels ({} gemm), arena {} B (without reuse {} B), {} in place",
                preset.name,
                phase.name(),
                raw.len(),
                g.len(),
                fusion.kernels.len(),
                gemms,
                mem.arena_bytes,
                mem.unshared_bytes,
                mem.in_place.len()
            );
            if phase.is_training() {
                assert!(
                    mem.arena_bytes < mem.unshared_bytes,
                    "buffers must be reused"
                );
                assert!(
                    !mem.in_place.is_empty(),
                    "some elementwise kernel works in place"
                );
            }
        }
    }
}

#[test]
fn every_node_is_in_exactly_one_kernel_or_free() {
    let g = tiny_graph(&Preset::mindspore(), Phase::Td1, DType::F32);
    let fusion = compiler::fusion::fuse(&g);
    for (i, n) in g.nodes.iter().enumerate() {
        let owners = fusion
            .kernels
            .iter()
            .filter(|k| k.nodes.contains(&ir::ValueId(i as u32)) && fusion.kernel_of[i].is_some())
            .count();
        match n.op {
            ir::Op::Input { .. } | ir::Op::Reshape => assert_eq!(fusion.kernel_of[i], None),
            ir::Op::Constant { .. } => assert!(owners <= 1),
            _ => assert_eq!(owners, 1, "%{i} {}", n.op.mnemonic()),
        }
    }
}

/// All-reduce buckets: with the default 25 MiB the tiny td1's gradients are one collective
/// kernel; with 4 KiB buckets they are several, the first scheduled before the backward's last
/// GEMM (as soon as its gradients exist, so its all-reduce overlaps the rest of the backward),
/// and the planned execution still equals the interpreter bit for bit.
#[test]
fn small_all_reduce_buckets_start_during_the_backward() {
    use compiler::pipeline::{compile_lowered, Lowering, Stage};
    let preset = Preset::mindspore();
    let collectives = |f: &compiler::fusion::Fusion| -> Vec<usize> {
        (0..f.kernels.len())
            .filter(|&i| f.kernels[i].kind == KernelKind::Collective)
            .collect()
    };
    let one = compile_tiny(&preset, Phase::Td1);
    assert_eq!(collectives(one.fusion.as_ref().unwrap()).len(), 1);
    let small = with_tiny_spec(&preset, Phase::Td1, DType::F32, |spec| {
        let lowering = Lowering {
            bucket_bytes: 4096,
            ..Default::default()
        };
        compile_lowered(spec, Stage::Plan, &[], &lowering, |_, _| {}).unwrap()
    });
    let fusion = small.fusion.as_ref().unwrap();
    let at = collectives(fusion);
    let last_gemm = (0..fusion.kernels.len())
        .rev()
        .find(|&i| fusion.kernels[i].kind == KernelKind::Gemm)
        .unwrap();
    println!(
        "{} buckets at kernels {at:?} of {}; last GEMM at {last_gemm}",
        at.len(),
        fusion.kernels.len()
    );
    assert!(at.len() >= 3, "{at:?}");
    assert!(at[0] < last_gemm, "{at:?} vs {last_gemm}");
    let raw = tiny_graph(&preset, Phase::Td1, DType::F32);
    let feed = fixture_feed(
        &raw,
        &StepInputs {
            lr: 1e-3,
            step: 3,
            loss_scale: 256.0,
        },
    );
    let want = Interpreter::run(&raw, &feed).unwrap();
    let got = run_planned(&small.graph, fusion, small.plan.as_ref().unwrap(), &feed).unwrap();
    assert_eq!(want, got);
}
