//! The trainer's command line: `info`, `step` (the `tbc step` contract) and the training
//! commands, run with the linked kernels and plans.

use super::CompiledKernels;
use crate::device::Backend;
use crate::exec::Runner;
use crate::step_io::{bind_inputs, report, StepFlags};
use crate::tensor_io::{self, RawTensor};
use crate::train::args::{EvalArgs, ExportArgs, FinetuneArgs, GeneralDistillArgs, TaskDistillArgs};
use crate::train::phases::Trainer;
use clap::{Args, Parser, Subcommand};
use plan::exec::{ExecutablePlan, Step};
use plan::manifest::TrainerBundle;
use plan::ElemType;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "trainer",
    about = "TinyBERT distillation trainer compiled by tbc"
)]
struct TrainerCli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// General distillation: a pre-trained teacher into a fresh student on unlabeled data.
    GeneralDistill(GeneralDistillArgs),
    /// Task distillation: phase 1 (intermediate layers), then phase 2 (prediction layer) with
    /// evaluation on the dev set.
    TaskDistill(TaskDistillArgs),
    /// Fine-tune the teacher on the task's labels (cross-entropy; MSE for a one-output regression head).
    Finetune(FinetuneArgs),
    /// Evaluate a student (or a teacher) on a dev set.
    Eval(EvalArgs),
    /// Export a student checkpoint as a Hugging Face directory.
    ExportHf(ExportArgs),
    /// Run one step of a phase (the same files in and out as `tbc step`).
    Step(StepCmd),
    /// Print the phases, kernels, GEMMs, arena sizes and FLOPs per step.
    Info,
}

#[derive(Args)]
struct StepCmd {
    #[arg(long)]
    phase: String,
    #[arg(long)]
    weights: PathBuf,
    #[arg(long)]
    batch: PathBuf,
    #[arg(long)]
    out: PathBuf,
    #[arg(long, value_parser = crate::flags::learning_rate)]
    lr: Option<f64>,
    #[arg(long, default_value_t = 0, value_parser = crate::flags::step_counter)]
    step: i32,
    #[arg(long, value_parser = crate::flags::positive_f32_range)]
    loss_scale: Option<f64>,
    #[arg(long, default_value_t = 0.0, value_parser = crate::flags::non_negative)]
    warmup_steps: f64,
    #[arg(long, default_value_t = 1e30, value_parser = crate::flags::positive_or_inf)]
    decay_steps: f64,
    #[arg(long, default_value_t = 0)]
    seed: i32,
    /// Run the step this many times on the same inputs and report the median compute time
    /// (for benchmarks; the outputs are those of the last run).
    #[arg(long, default_value_t = 1, value_parser = crate::flags::positive_usize)]
    repeat: usize,
}

/// What the trainer was compiled for: preset, batch shape and both models.
pub fn describe(m: &plan::manifest::Manifest) -> String {
    let model = |c: &serde_json::Value| {
        let g = |k: &str| c.get(k).map_or("?".to_string(), |v| v.to_string());
        format!(
            "{}L/{} hidden/{} heads/{} intermediate, vocab {}, {} labels, {}",
            g("num_hidden_layers"),
            g("hidden_size"),
            g("num_attention_heads"),
            g("intermediate_size"),
            g("vocab_size"),
            g("num_labels"),
            g("hidden_act").trim_matches('"')
        )
    };
    format!(
        "preset {}, batch {}, seq-len {}\nteacher {}\nstudent {}\n",
        m.preset,
        m.batch,
        m.seq_len,
        model(&m.teacher_config),
        model(&m.student_config)
    )
}

/// The phases, kernels, GEMMs, arena sizes and GEMM FLOPs of each plan.
pub fn info(plans: &[ExecutablePlan]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    for p in plans {
        let (mut loops, mut gemms, mut other, mut flops) = (0, 0, 0, 0u64);
        let mut gemm_types = std::collections::BTreeSet::new();
        for st in &p.steps {
            match st {
                Step::Loop { .. } => loops += 1,
                Step::Gemm {
                    batch,
                    m,
                    n,
                    k,
                    precision,
                    ..
                } => {
                    gemms += 1;
                    flops += 2 * (*batch * *m * *n * *k) as u64;
                    gemm_types.insert(precision.input.name());
                }
                Step::Gather { .. } | Step::ScatterAdd { .. } => other += 1,
                Step::Copy { .. } | Step::Collective { .. } => {}
            }
        }
        let input_bytes: usize = p.inputs.iter().map(|s| s.bytes()).sum();
        writeln!(
            s,
            "{:5} {} loop kernels, {} {} GEMMs ({:.3} GFLOP/step), {} gather/scatter, arena {:.1} MiB, inputs {:.1} MiB",
            p.name,
            loops,
            gemms,
            gemm_types.into_iter().collect::<Vec<_>>().join("/"),
            flops as f64 / 1e9,
            other,
            p.arena_bytes as f64 / 1048576.0,
            input_bytes as f64 / 1048576.0
        )
        .unwrap();
    }
    s
}

fn step(plans: &[ExecutablePlan], backend: &Backend, cmd: &StepCmd) -> Result<(), String> {
    crate::train::run_guard::refuse_output_over_inputs(
        "--out",
        &cmd.out,
        &[cmd.weights.as_path(), cmd.batch.as_path()],
    )?;
    let names: Vec<&str> = plans.iter().map(|p| p.name.as_str()).collect();
    let plan = plans.iter().find(|p| p.name == cmd.phase).ok_or_else(|| {
        format!(
            "this trainer has no phase '{}' (it has: {})",
            cmd.phase,
            names.join(", ")
        )
    })?;
    let flags = StepFlags {
        lr: cmd.lr,
        step: cmd.step,
        loss_scale: cmd.loss_scale,
        warmup_steps: cmd.warmup_steps,
        decay_steps: cmd.decay_steps,
        seed: cmd.seed,
    };
    let inputs = bind_inputs(
        &plan.inputs,
        &plan.defaults,
        &flags,
        &cmd.weights,
        &cmd.batch,
    )
    .map_err(|e| e.to_string())?;
    let refs: Vec<&[u8]> = inputs.iter().map(|t| t.bytes.as_slice()).collect();
    let (outputs, times, profile) = match backend {
        Backend::Host(kernels) => run_on_host(plan, *kernels, &refs, cmd.repeat)?,
        Backend::Cuda(_) | Backend::Ascend(_) => {
            let (o, t) = run_on_device(plan, backend, &refs, cmd.repeat)?;
            (o, t, None)
        }
    };
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let raw: Vec<(String, RawTensor)> = plan
        .outputs
        .iter()
        .zip(outputs)
        .map(|(s, bytes)| {
            (
                s.name.clone(),
                RawTensor {
                    elem: s.elem,
                    shape: s.shape.clone(),
                    bytes,
                },
            )
        })
        .collect();
    let meta = BTreeMap::from([
        ("phase".to_string(), plan.name.clone()),
        ("producer".to_string(), "tbc trainer".to_string()),
    ]);
    tensor_io::write(&cmd.out, &raw, &meta).map_err(|e| e.to_string())?;
    eprintln!("{}", report(&plan.name, "compiled", &raw));
    eprintln!(
        "compute time: median {median:.4} s over {} run(s) (min {:.4} s, max {:.4} s)",
        times.len(),
        sorted[0],
        sorted[sorted.len() - 1]
    );
    eprintln!("wrote {} tensors to {}", raw.len(), cmd.out.display());
    if let Some(p) = &profile {
        // TBC_PROFILE=N (N > 1) prints the N largest rows; any other value 60.
        let rows = std::env::var("TBC_PROFILE")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| n > 1)
            .unwrap_or(60);
        eprint!("{}", crate::exec::profile_report(p, rows));
    }
    Ok(())
}

/// Step outputs, seconds per run, and the profile of one run (`TBC_PROFILE`).
type StepRuns = (Vec<Vec<u8>>, Vec<f64>, Option<BTreeMap<String, (u64, f64)>>);

/// Runs `plan` `repeat` times on the host with the linked kernels.
fn run_on_host(
    plan: &ExecutablePlan,
    kernels: &dyn crate::exec::LoopKernels,
    inputs: &[&[u8]],
    repeat: usize,
) -> Result<StepRuns, String> {
    let mut runner = Runner::new(plan.clone(), kernels);
    // TBC_PROFILE=1 (or =N: the N largest rows): time every step of the plan (after the first,
    // warm-up run).
    let profiling = std::env::var_os("TBC_PROFILE").is_some_and(|v| v != "0");
    let mut times = Vec::new();
    for i in 0..repeat.max(1) {
        if profiling && i == 1.min(repeat.max(1) - 1) {
            runner.profile = Some(Default::default());
        }
        let start = std::time::Instant::now();
        runner.run(inputs).map_err(|e| e.to_string())?;
        times.push(start.elapsed().as_secs_f64());
    }
    let outputs = runner
        .outputs()
        .iter()
        .map(|b| b.as_slice().to_vec())
        .collect();
    Ok((outputs, times, runner.profile.take()))
}

/// Runs `plan` `repeat` times on a device of `backend`: inputs uploaded once, outputs read
/// back after every run (which waits for it).
fn run_on_device(
    plan: &ExecutablePlan,
    backend: &Backend,
    inputs: &[&[u8]],
    repeat: usize,
) -> Result<(Vec<Vec<u8>>, Vec<f64>), String> {
    let mut device = backend.device();
    let e = |x: crate::device::DeviceError| x.to_string();
    let exe = device.load(plan).map_err(e)?;
    let mut bindings = crate::device::Bindings {
        inputs: Vec::new(),
        outputs: Vec::new(),
    };
    for (slot, bytes) in plan.inputs.iter().zip(inputs) {
        let b = device.allocate(slot.bytes()).map_err(e)?;
        device.upload(b, bytes).map_err(e)?;
        bindings.inputs.push(b);
    }
    for slot in &plan.outputs {
        bindings
            .outputs
            .push(device.allocate(slot.bytes()).map_err(e)?);
    }
    let mut outputs: Vec<Vec<u8>> = plan.outputs.iter().map(|s| vec![0u8; s.bytes()]).collect();
    let mut times = Vec::new();
    for _ in 0..repeat.max(1) {
        let start = std::time::Instant::now();
        device.submit(exe, &bindings).map_err(e)?;
        for (b, out) in bindings.outputs.iter().zip(outputs.iter_mut()) {
            device.download(*b, out).map_err(e)?;
        }
        times.push(start.elapsed().as_secs_f64());
    }
    Ok((outputs, times))
}

/// Runs the trainer command line with the linked kernels and plans; returns the exit code.
pub fn trainer_main(args: Vec<String>, kernels: &CompiledKernels, plans_json: &[u8]) -> i32 {
    let cli = match TrainerCli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let bundle: TrainerBundle = match serde_json::from_slice(plans_json) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: the plans linked into this trainer are corrupt ({e})");
            return 1;
        }
    };
    let plans = &bundle.plans;
    // A GPU or Ascend trainer opens its device for the commands that run plans (not `info`,
    // `export-hf`).
    let runs_plans = !matches!(cli.command, Command::Info | Command::ExportHf(_));
    let device = match (&bundle.gpu, &bundle.ascend) {
        (Some(g), _) if runs_plans => super::job::DeviceLibrary::Gpu(g),
        (_, Some(a)) if runs_plans => super::job::DeviceLibrary::Ascend(a),
        _ => super::job::DeviceLibrary::Host,
    };
    let distribute = match &cli.command {
        Command::GeneralDistill(a) => a.common.distribute,
        Command::TaskDistill(a) => a.common.distribute,
        Command::Finetune(a) => a.common.distribute,
        _ => false,
    };
    let backend = match super::job::start(kernels, device, distribute) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return if distribute { 2 } else { 1 };
        }
    };
    let trainer = Trainer {
        bundle: &bundle,
        backend: backend.clone(),
    };
    let result = match &cli.command {
        Command::Info => {
            print!("{}", describe(&bundle.manifest));
            match (&bundle.gpu, &bundle.ascend) {
                (Some(g), _) => println!(
                    "target gpu ({}): {} kernels, {:.1} KiB of PTX",
                    g.arch,
                    g.kernels.len(),
                    g.ptx.len() as f64 / 1024.0
                ),
                (None, Some(a)) => println!(
                    "target ascend ({}): {} kernels in {} (built from the project beside the trainer)",
                    a.soc,
                    a.kernels.len(),
                    plan::ascend::KERNEL_LIBRARY_FILE
                ),
                (None, None) => println!("target cpu"),
            }
            print!("{}", info(plans));
            let bf16 = plans.iter().flat_map(|p| &p.steps).any(
                |s| matches!(s, Step::Gemm { precision, .. } if precision.input == ElemType::BF16),
            );
            if bf16 && bundle.gpu.is_none() && bundle.ascend.is_none() {
                match crate::exec::bf16::this_cpu() {
                    Ok(c) => println!("bf16 GEMMs on this CPU: {}", c.describe()),
                    Err(e) => println!("bf16 GEMMs on this CPU: {e}"),
                }
            }
            Ok(())
        }
        Command::Step(cmd) => step(plans, &backend, cmd),
        Command::GeneralDistill(a) => trainer.general_distill(a),
        Command::TaskDistill(a) => trainer.task_distill(a),
        Command::Finetune(a) => trainer.finetune(a),
        Command::Eval(a) => trainer.eval(a),
        Command::ExportHf(a) => trainer.export(a),
    };
    let world = crate::dist::world();
    match result {
        Ok(()) => {
            world.finish();
            0
        }
        Err(e) if world.size() > 1 => {
            // The other ranks may be waiting in a collective for this one: end the job.
            eprintln!("error (rank {} of {}): {e}", world.rank(), world.size());
            world.abort(1)
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}
