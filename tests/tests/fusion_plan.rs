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
