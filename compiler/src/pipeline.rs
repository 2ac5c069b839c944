//! The compiler as an ordered list of named stages, each of which can be the last one run
//! (`--compile-to`) and dumped (`--dump-after`). Deterministic: the same input gives
//! byte-identical text at every stage.

use crate::frontend::{build_forward_graph, build_graph, FrontendError, GraphSpec};
use crate::fusion::{fuse_with, Fusion};
use crate::passes::mixed_precision::MixedPrecision;
use crate::passes::simplify::{simplify_pipeline, Simplify};
use crate::passes::{run_passes, Pass};
use crate::plan::{plan_aligned, MemoryPlan};
use ir::{DType, Graph};

/// The stages, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    Frontend,
    Autodiff,
    Simplify,
    Fuse,
    Plan,
    Lower,
    Codegen,
    Link,
}

impl Stage {
    pub const ALL: [Stage; 8] = [
        Stage::Frontend,
        Stage::Autodiff,
        Stage::Simplify,
        Stage::Fuse,
        Stage::Plan,
        Stage::Lower,
        Stage::Codegen,
        Stage::Link,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Frontend => "frontend",
            Stage::Autodiff => "autodiff",
            Stage::Simplify => "simplify",
            Stage::Fuse => "fuse",
            Stage::Plan => "plan",
            Stage::Lower => "lower",
            Stage::Codegen => "codegen",
            Stage::Link => "link",
        }
    }

    /// What the stage does (also the CLI's documentation).
    pub fn description(self) -> &'static str {
        match self {
            Stage::Frontend => "forward passes of teacher and student and the TinyBERT losses, as IR",
            Stage::Autodiff => "backward of the scaled loss, unscale, overflow, clipping, Adam, LR and loss-scale state",
            Stage::Simplify => "constant folding, algebraic cleanups, CSE and DCE to a fixed point",
            Stage::Fuse => "groups nodes into loop, GEMM, gather and scatter-add kernels",
            Stage::Plan => "kernel order and the static memory arena (liveness-based reuse, in place)",
            Stage::Lower => "each loop kernel to MLIR (linalg on tensors)",
            Stage::Codegen => "MLIR to LLVM IR to target code",
            Stage::Link => "kernels, plan and runtime into one trainer executable",
        }
    }

    /// True for the stages that belong to a target back end (run by `targets`, not here).
    pub fn is_backend(self) -> bool {
        self > Stage::Plan
    }

    pub fn parse(s: &str) -> Result<Stage, String> {
        Stage::ALL
            .into_iter()
            .find(|st| st.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Stage::ALL.iter().map(|s| s.name()).collect();
                format!("unknown stage '{s}' (stages: {})", names.join(", "))
            })
    }
}

/// What a compilation produced up to its last stage.
pub struct Compiled {
    pub graph: Graph,
    pub fusion: Option<Fusion>,
    pub plan: Option<MemoryPlan>,
}

impl Compiled {
    /// The text of `stage`'s result.
    pub fn render(&self, stage: Stage) -> String {
        match stage {
            Stage::Fuse => self
                .fusion
                .as_ref()
                .map(|f| f.explain(&self.graph))
                .unwrap_or_default(),
            Stage::Plan => {
                let (f, p) = (self.fusion.as_ref().unwrap(), self.plan.as_ref().unwrap());
                format!("{}{}", f.explain(&self.graph), p.explain(&self.graph))
            }
            _ => ir::text::print(&self.graph),
        }
    }
}

/// Runs the target-neutral stages up to `until` (up to `plan` when `until` is a back-end stage);
/// `dump(name, text)` is called after every stage and every simplify pass whose name is in
/// `dump_after`. Arena buffers are aligned to [`crate::plan::ALIGN`].
pub fn compile(
    spec: &GraphSpec,
    until: Stage,
    dump_after: &[String],
    dump: impl FnMut(&str, String),
) -> Result<Compiled, FrontendError> {
    compile_lowered(spec, until, dump_after, &Lowering::default(), dump)
}

/// How the graph is laid out for a target: arena alignment and all-reduce buckets.
#[derive(Clone, Copy, Debug)]
pub struct Lowering {
    /// Arena buffers are aligned to this many bytes (the target's need).
    pub alignment: usize,
    /// Gradient bytes per all-reduce bucket (`--allreduce-bucket-mb`).
    pub bucket_bytes: usize,
}

impl Default for Lowering {
    fn default() -> Lowering {
        Lowering {
            alignment: crate::plan::ALIGN,
            bucket_bytes: crate::fusion::DEFAULT_BUCKET_BYTES,
        }
    }
}

/// [`compile`] with `lowering`'s alignment and all-reduce buckets.
pub fn compile_lowered(
    spec: &GraphSpec,
    until: Stage,
    dump_after: &[String],
    lowering: &Lowering,
    mut dump: impl FnMut(&str, String),
) -> Result<Compiled, FrontendError> {
    let alignment = lowering.alignment;
    let until = until.min(Stage::Plan);
    let wants = |n: &str| dump_after.iter().any(|d| d == n);
    let mut graph = if until == Stage::Frontend {
        build_forward_graph(spec)?
    } else {
        build_graph(spec)?
    };
    let mut out = Compiled {
        graph: Graph::default(),
        fusion: None,
        plan: None,
    };
    let stage_done = |st: Stage, out: &Compiled, dump: &mut dyn FnMut(&str, String)| {
        if wants(st.name()) {
            dump(st.name(), out.render(st));
        }
    };
    if until == Stage::Frontend {
        out.graph = graph;
        stage_done(Stage::Frontend, &out, &mut dump);
        return Ok(out);
    }
    if wants(Stage::Frontend.name()) {
        dump(
            Stage::Frontend.name(),
            ir::text::print(&build_forward_graph(spec)?),
        );
    }
    if let Some(low) = spec.precision.gemm_dtype() {
        if spec.dtype != DType::F32 {
            return Err(FrontendError(format!(
                "--precision {} needs an f32 graph, not {}",
                spec.precision, spec.dtype
            )));
        }
        let pass = MixedPrecision { low };
        graph = pass.run(graph);
        if wants(pass.name()) {
            dump(pass.name(), ir::text::print(&graph));
        }
    }
    out.graph = graph.clone();
    stage_done(Stage::Autodiff, &out, &mut dump);
    if until == Stage::Autodiff {
        return Ok(out);
    }
    // One round with per-pass dumps, then to the fixed point.
    graph = run_passes(graph, &simplify_pipeline(), |name, g| {
        if wants(name) {
            dump(name, ir::text::print(g));
        }
    });
    out.graph = Simplify.run(graph);
    stage_done(Stage::Simplify, &out, &mut dump);
    if until == Stage::Simplify {
        return Ok(out);
    }
    out.fusion = Some(fuse_with(&out.graph, lowering.bucket_bytes));
    stage_done(Stage::Fuse, &out, &mut dump);
    if until == Stage::Fuse {
        return Ok(out);
    }
    out.plan = Some(plan_aligned(
        &out.graph,
        out.fusion.as_ref().unwrap(),
        alignment,
    ));
    stage_done(Stage::Plan, &out, &mut dump);
    Ok(out)
}
