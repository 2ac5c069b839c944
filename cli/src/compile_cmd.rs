//! `tbc compile`: parses the arguments, picks the target by name and calls the compiler driver
//! (`compiler::driver`), which runs the pipeline for one or more phases up to a stage.

use crate::model_args::ConfigArgs;
use anyhow::{anyhow, bail, Result};
use clap::Args;
use compiler::driver::{compile, CompileOutput, CompileRequest, ModelInput};
use compiler::frontend::preset::Phase;
use compiler::pipeline::Stage;
use std::path::PathBuf;
use targets::{target_by_name, TargetOptions};

#[derive(Args, Debug, Clone)]
pub struct CompileArgs {
    /// cpu | gpu | ascend (ascend: `-o DIR` writes DIR/trainer beside its kernel project)
    #[arg(long, default_value = "cpu")]
    pub target: String,
    /// Comma-separated phases to compile (gd, td1, td2, eval, ft, eval_teacher).
    #[arg(long, default_value = "gd,td1,td2,eval")]
    pub phases: String,
    #[command(flatten)]
    pub configs: ConfigArgs,
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
    /// fp32, or mixed precision: fp16 | bf16 GEMMs (operands and results) with f32 master
    /// weights, optimizer, softmax/LayerNorm statistics and losses (targets that have them).
    #[arg(long, default_value = "fp32", value_parser = compiler::passes::mixed_precision::Precision::parse)]
    pub precision: compiler::passes::mixed_precision::Precision,
    /// GPU architecture of the PTX (`--target gpu`): sm_80 (also runs on sm_90) or sm_90.
    #[arg(long, default_value = "sm_80")]
    pub gpu_arch: String,
    /// Ascend SoC the kernels are planned for (`--target ascend`): ascend910b (192 KiB of
    /// Unified Buffer per vector core, 48 cores) or ascend910 (256 KiB, 32 cores).
    #[arg(long, default_value = "ascend910b")]
    pub ascend_soc: String,
    /// Write the generated kernel code into DIR: `--emit ptx DIR` (`--target gpu`: one
    /// `<phase>.ptx` and `<phase>.launches.json` per phase), `--emit ascend-c DIR`
    /// (`--target ascend`: the kernels, launchers and a CMake project). Stops after codegen
    /// unless `-o`.
    #[arg(long, num_args = 2, value_names = ["KIND", "DIR"])]
    pub emit: Option<Vec<String>>,
    /// Data-parallel training: gradient megabytes (MiB) per all-reduce bucket. Each bucket is
    /// averaged as soon as its gradients exist, overlapping the rest of the backward (CPU
    /// trainers under MPI); smaller buckets overlap more and send more messages.
    #[arg(long, default_value_t = 25.0, value_parser = bucket_mb)]
    pub allreduce_bucket_mb: f64,
}

fn bucket_mb(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x > 0.0 && x.is_finite() => Ok(x),
        _ => Err(format!("expected a positive number of MiB, got '{s}'")),
    }
}

/// Names `--dump-after` accepts: the stages, the mixed-precision pass and the simplify passes.
fn dump_names() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = Stage::ALL.iter().map(|s| s.name()).collect();
    v.extend(
        compiler::passes::simplify::simplify_pipeline()
            .iter()
            .map(|p| p.name()),
    );
    v.push("mixed_precision");
    v.sort_unstable();
    v.dedup();
    v
}

/// Parses the arguments and hands them to the compiler driver with the target they name.
pub fn run(args: &CompileArgs) -> Result<()> {
    let target = target_by_name(
        &args.target,
        &TargetOptions {
            cpu: args.cpu.clone(),
            gpu_arch: args.gpu_arch.clone(),
            ascend_soc: args.ascend_soc.clone(),
        },
    )
    .map_err(|e| anyhow!(e))?;
    let emit_dir = match args.emit.as_deref() {
        None => None,
        Some([kind, dir]) => {
            let expected = match args.target.as_str() {
                "gpu" => "ptx",
                "ascend" => "ascend-c",
                other => bail!(
                    "--emit: target {other} writes no kernel files (--target gpu --emit ptx \
                     DIR, --target ascend --emit ascend-c DIR)"
                ),
            };
            if kind != expected {
                bail!(
                    "--emit {kind}: target {} emits '{expected}' (--emit {expected} DIR)",
                    args.target
                );
            }
            Some(PathBuf::from(dir))
        }
        Some(_) => bail!("--emit takes two values: KIND DIR"),
    };
    let until = match &args.compile_to {
        Some(s) => Stage::parse(s).map_err(|e| anyhow!(e))?,
        None if emit_dir.is_some() && args.output.is_none() => Stage::Codegen,
        None => Stage::Link,
    };
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
    // Resolved once: configs and preset do not depend on the phase.
    if let Some(out) = &args.output {
        let inputs: Vec<&std::path::Path> =
            [&args.configs.teacher_config, &args.configs.student_config]
                .into_iter()
                .flatten()
                .map(|p| p.as_path())
                .collect();
        runtime::train::run_guard::refuse_output_over_inputs("-o", out, &inputs)
            .map_err(|e| anyhow!(e))?;
    }
    let r = args.configs.resolve()?;
    let (teacher_raw, student_raw) = args.configs.raw_texts(&r.preset)?;
    let req = CompileRequest {
        phases: &phases,
        teacher: ModelInput {
            config: &r.teacher,
            raw: &teacher_raw,
        },
        student: ModelInput {
            config: &r.student,
            raw: &student_raw,
        },
        preset: &r.preset,
        batch: args.batch,
        seq_len: args.seq_len,
        dtype: ir::DType::F32,
        precision: args.precision,
        until,
        dump_after: &args.dump_after,
        output: args.output.as_deref().filter(|_| until == Stage::Link),
        emit: emit_dir.as_deref(),
        bucket_bytes: ((args.allreduce_bucket_mb * 1048576.0) as usize).max(1),
    };
    let start = std::time::Instant::now();
    let out = compile(&req, target.as_ref(), |phase, name, dump| {
        println!("// ----- {phase}: after {name} -----");
        print!("{dump}");
    })?;
    match out {
        CompileOutput::Trainer {
            path,
            phases,
            loop_kernels,
        } => {
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            let target = match args.target.as_str() {
                "gpu" => format!("gpu {}, {}", args.gpu_arch, args.precision),
                "ascend" => format!("ascend {}, {}", args.ascend_soc, args.precision),
                other => format!("{other} {}", args.cpu),
            };
            eprintln!(
                "wrote trainer {} ({target}; {:.1} MB, {phases} phases, {loop_kernels} loop kernels) in {:.1} s",
                path.display(),
                size as f64 / 1e6,
                start.elapsed().as_secs_f64()
            );
            if args.target == "ascend" {
                let dir = path.parent().unwrap_or(&path).display();
                eprintln!(
                    "its kernels are a project to build before it runs: cmake -S {dir} -B {dir}/build && cmake --build {dir}/build -j (CANN 8/9), or add -DTBC_ASCEND_EMULATION=ON for the CPU emulation; see {dir}/README.md"
                );
            }
        }
        CompileOutput::Emitted(files) => {
            for f in &files {
                eprintln!("wrote {}", f.display());
            }
        }
        CompileOutput::Text(text) => match &args.output {
            Some(p) => crate::tensor_file::write_atomic(p, text.as_bytes())?,
            None => print!("{text}"),
        },
    }
    Ok(())
}
