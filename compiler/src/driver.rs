//! The compiler driver: one `tbc compile --target X` from resolved configs to the stage asked
//! for. The target-neutral stages (frontend → autodiff → simplify → fuse → plan) run here for
//! every phase; kernel deduplication and the manifest are built here; the back-end stages
//! (lower → codegen → link) are the [`Target`]'s, a value passed in by the caller.

use crate::exec::kernel_graph;
use crate::executable::{executable_plan, loop_symbol, step_defaults};
use crate::frontend::config::ModelConfig;
use crate::frontend::preset::{Phase, Preset};
use crate::frontend::{FrontendError, GraphSpec};
use crate::fusion::KernelKind;
use crate::pipeline::{compile_lowered, Compiled, Lowering, Stage};
use ::plan::exec::{ExecutablePlan, Step};
use ::plan::manifest::TrainerBundle;
use ir::{DType, Graph};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// What a target needs from the target-neutral stages.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetNeeds {
    /// Kernels other than generated loops that the target runs through a library or its
    /// runtime (the fusion stage makes GEMM, gather and scatter-add kernels).
    pub library_kernels: Vec<KernelKind>,
    /// Byte alignment of every arena buffer.
    pub alignment: usize,
    /// Float types it can compute parameters and activations in.
    pub precisions: Vec<DType>,
}

/// A compiler back end: compiles the fused loop kernels of planned phases into a kernel library
/// and links it with the runtime into a trainer executable.
pub trait Target {
    /// `cpu`, `gpu`, `ascend`.
    fn name(&self) -> &'static str;
    fn needs(&self) -> TargetNeeds;
    /// The `lower` stage's text of one phase (its loop kernels in MLIR).
    fn lower(&self, phase: &PhaseArtifacts) -> Result<String, TargetError>;
    /// The `codegen` stage's text of one phase (the target code of its loop kernels).
    fn codegen(&self, phase: &PhaseArtifacts) -> Result<String, TargetError>;
    /// Writes the target code of every phase's kernels into `dir` (`--emit`); returns the files.
    fn emit(&self, _phases: &[PhaseArtifacts], _dir: &Path) -> Result<Vec<PathBuf>, TargetError> {
        Err(TargetError::NotBuilt {
            target: self.name(),
            stage: "emit",
            why: "this target writes no separate kernel files (use --compile-to lower or codegen)",
        })
    }
    /// Where `link` puts the trainer executable given `-o out`: `out` itself, or for a target
    /// that writes a directory (the trainer beside a kernel project) a file in it.
    fn trainer_path(&self, out: &Path) -> PathBuf {
        out.to_path_buf()
    }
    /// Compiles every phase's kernels and links them, the bundle and the runtime into `out`.
    fn link(
        &self,
        phases: &[PhaseArtifacts],
        bundle: &TrainerBundle,
        out: &Path,
    ) -> Result<(), TargetError>;
}

/// A back end's failure, or a back end that does not exist yet.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("target {target}: the {stage} stage is not built yet ({why})")]
    NotBuilt {
        target: &'static str,
        stage: &'static str,
        why: &'static str,
    },
    #[error("{0}")]
    Failed(String),
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(transparent)]
    Frontend(#[from] FrontendError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("{0}")]
    Request(String),
}

/// One planned phase: its executable plan and its loop kernels (each once, as standalone graphs
/// named by their symbol; the plan's later copies call the first's symbol).
pub struct PhaseArtifacts {
    pub plan: ExecutablePlan,
    pub kernels: Vec<(String, Graph)>,
}

/// A model config: resolved, and as written (the manifest keeps the file's other fields).
pub struct ModelInput<'a> {
    pub config: &'a ModelConfig,
    pub raw: &'a str,
}

/// Everything `tbc compile` asks for.
pub struct CompileRequest<'a> {
    pub phases: &'a [Phase],
    pub teacher: ModelInput<'a>,
    pub student: ModelInput<'a>,
    pub preset: &'a Preset,
    pub batch: usize,
    pub seq_len: usize,
    pub dtype: DType,
    /// Full or mixed precision (`--precision`).
    pub precision: crate::passes::mixed_precision::Precision,
    /// The last stage to run.
    pub until: Stage,
    /// Stages and passes whose result is also handed to the dump callback.
    pub dump_after: &'a [String],
    /// The trainer executable, for `link`.
    pub output: Option<&'a Path>,
    /// A directory for the target's kernel files (`--emit`), written after codegen.
    pub emit: Option<&'a Path>,
    /// Gradient bytes per all-reduce bucket of data-parallel training.
    pub bucket_bytes: usize,
}

/// What a compilation produced.
pub enum CompileOutput {
    /// The text of the last stage (every phase, one after another).
    Text(String),
    /// Kernel files written by `--emit` (the request stopped at `codegen`).
    Emitted(Vec<PathBuf>),
    /// A linked trainer.
    Trainer {
        path: PathBuf,
        phases: usize,
        loop_kernels: usize,
    },
}

/// Runs `req` for `target`. `dump(phase, name, text)` receives every `--dump-after` result.
pub fn compile(
    req: &CompileRequest,
    target: &dyn Target,
    mut dump: impl FnMut(Phase, &str, String),
) -> Result<CompileOutput, DriverError> {
    let needs = target.needs();
    if !needs.precisions.contains(&req.dtype) {
        return Err(DriverError::Request(format!(
            "target {} does not compute in {} (it supports {})",
            target.name(),
            req.dtype,
            names(&needs.precisions)
        )));
    }
    if let Some(low) = req.precision.gemm_dtype() {
        if !needs.precisions.contains(&low) {
            return Err(DriverError::Request(format!(
                "target {} has no {} GEMMs for --precision {} (it computes in {})",
                target.name(),
                low,
                req.precision,
                names(&needs.precisions)
            )));
        }
    }
    if req.emit.is_some() && req.until < Stage::Codegen {
        return Err(DriverError::Request(
            "--emit writes generated code: it needs --compile-to codegen or link".into(),
        ));
    }
    if req.until == Stage::Link && req.output.is_none() {
        return Err(DriverError::Request(
            "linking a trainer needs an output path: -o trainer".into(),
        ));
    }
    let mut text = String::new();
    let mut artifacts = Vec::new();
    let mut seen = HashMap::new();
    for &phase in req.phases {
        let spec = GraphSpec {
            phase,
            teacher: req.teacher.config,
            student: req.student.config,
            preset: req.preset,
            batch: req.batch,
            seq_len: req.seq_len,
            dtype: req.dtype,
            precision: req.precision,
        };
        let compiled = compile_lowered(
            &spec,
            req.until,
            req.dump_after,
            &Lowering {
                alignment: needs.alignment,
                bucket_bytes: req.bucket_bytes,
            },
            |name, t| dump(phase, name, t),
        )?;
        if !req.until.is_backend() {
            writeln!(text, "// ===== {phase}: {} =====", req.until.name()).unwrap();
            text.push_str(&compiled.render(req.until));
            continue;
        }
        check_library_kernels(&compiled, target.name(), &needs)?;
        artifacts.push(phase_artifacts(
            &compiled,
            step_defaults(req.preset, phase),
            &mut seen,
        ));
    }
    if let Some(dir) = req.emit {
        let files = target.emit(&artifacts, dir)?;
        if req.until == Stage::Codegen {
            return Ok(CompileOutput::Emitted(files));
        }
    }
    match req.until {
        Stage::Lower | Stage::Codegen => {
            for a in &artifacts {
                let (label, body) = if req.until == Stage::Lower {
                    ("lower", target.lower(a)?)
                } else {
                    ("codegen", target.codegen(a)?)
                };
                writeln!(text, "// ===== {}: {label} =====", a.plan.name).unwrap();
                text.push_str(&body);
            }
        }
        Stage::Link => {
            let out = req.output.expect("checked above");
            let bundle = TrainerBundle {
                manifest: crate::manifest::manifest(
                    req.preset,
                    req.teacher.config,
                    req.teacher.raw,
                    req.student.config,
                    req.student.raw,
                    req.batch,
                    req.seq_len,
                    req.phases,
                ),
                plans: artifacts.iter().map(|a| a.plan.clone()).collect(),
                gpu: None,
                ascend: None,
            };
            target.link(&artifacts, &bundle, out)?;
            return Ok(CompileOutput::Trainer {
                path: target.trainer_path(out),
                phases: artifacts.len(),
                loop_kernels: artifacts.iter().map(|a| a.kernels.len()).sum(),
            });
        }
        _ => {}
    }
    Ok(CompileOutput::Text(text))
}

fn names(d: &[DType]) -> String {
    d.iter().map(|d| d.name()).collect::<Vec<_>>().join(", ")
}

/// Every non-loop kernel of the phase must be one the target runs through a library.
fn check_library_kernels(
    c: &Compiled,
    target: &str,
    needs: &TargetNeeds,
) -> Result<(), DriverError> {
    let fusion = c.fusion.as_ref().expect("planned");
    match fusion
        .kernels
        .iter()
        .find(|k| k.kind != KernelKind::Loop && !needs.library_kernels.contains(&k.kind))
    {
        Some(k) => Err(DriverError::Request(format!(
            "target {target} has no library for {:?} kernels ({} needs them)",
            k.kind, c.graph.name
        ))),
        None => Ok(()),
    }
}

/// The executable plan and loop-kernel graphs of a planned phase. Structurally identical loop
/// kernels (every layer repeats its kernels; so do the optimizer updates of same-shaped
/// parameters, and the phases share most of their code) are compiled once: `seen` maps a
/// kernel's IR text to the first symbol with it, across phases, and later copies call that one.
pub fn phase_artifacts(
    c: &Compiled,
    defaults: ::plan::exec::StepDefaults,
    seen: &mut HashMap<String, String>,
) -> PhaseArtifacts {
    let (g, fusion, mem) = (
        &c.graph,
        c.fusion.as_ref().expect("fused"),
        c.plan.as_ref().expect("planned"),
    );
    let mut plan = executable_plan(g, fusion, mem, defaults);
    let mut canonical: HashMap<String, String> = HashMap::new();
    let mut kernels = Vec::new();
    for (i, k) in fusion.kernels.iter().enumerate() {
        if k.kind != KernelKind::Loop {
            continue;
        }
        let name = loop_symbol(&g.name, i);
        let kg = kernel_graph(g, k, "");
        let first = seen
            .entry(ir::text::print(&kg))
            .or_insert_with(|| name.clone())
            .clone();
        if first == name {
            let mut kg = kg;
            kg.name = name.clone();
            kernels.push((name.clone(), kg));
        }
        canonical.insert(name, first);
    }
    for step in &mut plan.steps {
        if let Step::Loop { symbol, .. } = step {
            *symbol = canonical[symbol.as_str()].clone();
        }
    }
    PhaseArtifacts { plan, kernels }
}
