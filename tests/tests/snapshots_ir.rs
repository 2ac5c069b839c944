//! IR text of every phase graph for a micro config (teacher 2L/8, student 1L/4 with dropout,
//! batch 2, seq 4): review every change. Each snapshot also round-trips through the parser.

use compiler::frontend::config::HfBertConfig;
use compiler::frontend::preset::{Phase, Preset};
use compiler::frontend::{build_graph, GraphSpec};
use ir::DType;

fn micro_graph(preset: &Preset, phase: Phase) -> ir::Graph {
    let dir = tbc_tests::repo_root().join("tests/fixtures/micro");
    let load = |f: &str| {
        HfBertConfig::from_file(&dir.join(f))
            .unwrap()
            .resolve(preset, f)
            .unwrap()
    };
    let (t, s) = (load("teacher.json"), load("student.json"));
    build_graph(&GraphSpec {
        phase,
        teacher: &t,
        student: &s,
        preset,
        batch: 2,
        seq_len: 4,
        dtype: DType::F32,
        precision: Default::default(),
    })
    .unwrap()
}

#[test]
fn phase_graphs() {
    for (preset, phases) in [
        (
            Preset::mindspore(),
            &[
                Phase::Gd,
                Phase::Td1,
                Phase::Td2,
                Phase::Eval,
                Phase::Ft,
                Phase::EvalTeacher,
            ][..],
        ),
        (Preset::paper(), &[Phase::Td2, Phase::Ft][..]),
    ] {
        for &phase in phases {
            let g = micro_graph(&preset, phase);
            ir::verify(&g).unwrap();
            let text = ir::text::print(&g);
            assert_eq!(ir::text::parse(&text).unwrap(), g, "round trip");
            insta::assert_snapshot!(format!("{}_{}", preset.name, phase.name()), text);
        }
    }
}

#[test]
fn graphs_are_deterministic() {
    let p = Preset::mindspore();
    assert_eq!(
        ir::text::print(&micro_graph(&p, Phase::Td1)),
        ir::text::print(&micro_graph(&p, Phase::Td1))
    );
}
