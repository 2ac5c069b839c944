//! `tbc compile`: runs the compiler pipeline for one or more phases, up to a stage.

use crate::build_trainer::{build_trainer, lower_text, PhaseArtifacts};
use crate::model_args::ModelArgs;
use anyhow::{anyhow, bail, Result};
use clap::Args;
use compiler::exec::kernel_graph;
use compiler::executable::{executable_plan, loop_symbol, step_defaults};
use compiler::frontend::preset::Phase;
use compiler::frontend::GraphSpec;
use compiler::fusion::KernelKind;
use compiler::pipeline::{compile, Compiled, Stage};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
pub struct CompileArgs {
    /// cpu | gpu | ascend
    #[arg(long, default_value = "cpu")]
    pub target: String,
    /// Comma-separated phases to compile (gd, td1, td2, eval, ft, eval_teacher).
    #[arg(long, default_value = "gd,td1,td2,eval")]
    pub phases: String,
    /// Teacher config.json; default: built-in BERT-base.
    #[arg(long)]
    pub teacher_config: Option<PathBuf>,
    /// Student config.json; default: the preset's built-in student.
    #[arg(long)]
    pub student_config: Option<PathBuf>,
    /// mindspore | paper
    #[arg(long, default_value = "mindspore")]
    pub preset: String,
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    #[arg(long, default_value_t = 64)]
    pub seq_len: usize,
    /// Stop after this stage and print (or write with -o) its result.
    #[arg(long)]
    pub compile_to: Option<String>,
    /// Print the result of this stage or pass as well (repeatable).
    #[arg(long)]
    pub dump_after: Vec<String>,
    /// Output file: the trainer executable for `link` (the default stage), else the stage's
    /// text (default: standard output).
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    /// CPU to generate code for: an LLVM CPU name (default x86-64-v3) or `native`.
    #[arg(long, default_value = "x86-64-v3")]
    pub cpu: String,
}

/// The executable plan and loop-kernel graphs of a planned phase.
fn artifacts_of(
    c: &Compiled,
    defaults: runtime::plan::StepDefaults,
    seen: &mut HashMap<String, String>,
) -> PhaseArtifacts {
    let (g, fusion, mem) = (
        &c.graph,
        c.fusion.as_ref().unwrap(),
        c.plan.as_ref().unwrap(),
    );
    let mut plan = executable_plan(g, fusion, mem, defaults);
    // Structurally identical kernels (every layer repeats its kernels; so do the optimizer
    // updates of same-shaped parameters, and the phases share most of their code) are compiled
    // once: later copies call the first one's symbol.
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
        if let runtime::plan::Step::Loop { symbol, .. } = step {
            *symbol = canonical[symbol.as_str()].clone();
        }
    }
    PhaseArtifacts { plan, kernels }
}

/// The manifest linked into the trainer: resolved configs (with the files' other fields kept)
/// and the preset's phase constants.
fn trainer_manifest(args: &CompileArgs, phases: &[Phase]) -> Result<runtime::manifest::Manifest> {
    let model = ModelArgs {
        phase: "eval".into(),
        teacher_config: args.teacher_config.clone(),
        student_config: args.student_config.clone(),
        preset: args.preset.clone(),
        dtype: "f32".into(),
    };
    let r = model.resolve()?;
    let raw = |p: &Option<PathBuf>, builtin: &str| -> Result<String> {
        Ok(match p {
            Some(p) => std::fs::read_to_string(p)?,
            None => builtin.to_string(),
        })
    };
    let teacher_raw = raw(
        &args.teacher_config,
        compiler::frontend::config::builtin::BERT_BASE,
    )?;
    let student_raw = raw(&args.student_config, r.preset.default_student)?;
    Ok(crate::manifest::manifest(
        &r.preset,
        &r.teacher,
        &teacher_raw,
        &r.student,
        &student_raw,
        args.batch,
        args.seq_len,
        phases,
    ))
}

/// Names `--dump-after` accepts: the stages and the simplify passes.
fn dump_names() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = Stage::ALL.iter().map(|s| s.name()).collect();
    v.extend(
        compiler::passes::simplify::simplify_pipeline()
            .iter()
            .map(|p| p.name()),
    );
    v.sort_unstable();
    v.dedup();
    v
}

pub fn run(args: &CompileArgs) -> Result<()> {
    if !["cpu", "gpu", "ascend"].contains(&args.target.as_str()) {
        bail!(
            "unknown target '{}' (expected cpu, gpu or ascend)",
            args.target
        );
    }
    let until = match &args.compile_to {
        Some(s) => Stage::parse(s).map_err(|e| anyhow!(e))?,
        None => Stage::Link,
    };
    if until.is_backend() && args.target != "cpu" {
        bail!(
            "stage '{}' is not built yet for target {}: the target-neutral stages (frontend, autodiff, simplify, fuse, plan) work for every target; lower, codegen and link exist for cpu",
            until.name(),
            args.target
        );
    }
    if until == Stage::Link && args.output.is_none() {
        bail!("linking a trainer needs an output path: -o trainer");
    }
    let known = dump_names();
    for d in &args.dump_after {
        if !known.contains(&d.as_str()) {
            bail!(
                "unknown --dump-after '{d}' (expected one of: {})",
                known.join(", ")
            );
        }
    }
    let mut phases = Vec::new();
    for p in args.phases.split(',').filter(|p| !p.is_empty()) {
        let ph = Phase::parse(p.trim()).map_err(|e| anyhow!(e))?;
        if !phases.contains(&ph) {
            phases.push(ph);
        }
    }
    if phases.is_empty() {
        bail!("--phases is empty (expected a list such as gd,td1,td2,eval)");
    }
    let mut text = String::new();
    let mut artifacts = Vec::new();
    let mut seen = HashMap::new();
    for &phase in &phases {
        let model = ModelArgs {
            phase: phase.name().into(),
            teacher_config: args.teacher_config.clone(),
            student_config: args.student_config.clone(),
            preset: args.preset.clone(),
            dtype: "f32".into(),
        };
        let r = model.resolve()?;
        let spec = GraphSpec {
            phase,
            teacher: &r.teacher,
            student: &r.student,
            preset: &r.preset,
            batch: args.batch,
            seq_len: args.seq_len,
            dtype: r.dtype,
        };
        let compiled = compile(&spec, until, &args.dump_after, |name, dump| {
            println!("// ----- {phase}: after {name} -----");
            print!("{dump}");
        })?;
        if until.is_backend() {
            artifacts.push(artifacts_of(
                &compiled,
                step_defaults(&r.preset, phase),
                &mut seen,
            ));
            continue;
        }
        writeln!(text, "// ===== {phase}: {} =====", until.name()).unwrap();
        text.push_str(&compiled.render(until));
    }
    match until {
        Stage::Lower => {
            for a in &artifacts {
                writeln!(text, "// ===== {}: lower =====", a.plan.name).unwrap();
                text.push_str(&lower_text(a)?);
            }
        }
        Stage::Codegen => {
            for a in &artifacts {
                writeln!(text, "// ===== {}: codegen (LLVM IR) =====", a.plan.name).unwrap();
                text.push_str(&targets::toolchain::mlir_to_llvm_ir_with_pipeline(
                    &lower_text(a)?,
                    &targets::cpu::pipeline(targets::cpu::Schedule::Vectorized),
                )?);
            }
        }
        Stage::Link => {
            let out = args.output.as_ref().expect("checked above");
            let start = std::time::Instant::now();
            let manifest = trainer_manifest(args, &phases)?;
            build_trainer(&artifacts, manifest, &args.cpu, out)?;
            let size = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
            eprintln!(
                "wrote trainer {} ({:.1} MB, {} phases, {} loop kernels) in {:.1} s",
                out.display(),
                size as f64 / 1e6,
                artifacts.len(),
                artifacts.iter().map(|a| a.kernels.len()).sum::<usize>(),
                start.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        _ => {}
    }
    match &args.output {
        Some(p) => crate::tensor_file::write_atomic(p, text.as_bytes())?,
        None => print!("{text}"),
    }
    Ok(())
}
