//! The training driver on a second device: a recorder around the host device that logs the
//! command stream and counts the bytes moved between host and device. A td1 run of several
//! steps through the real phase driver moves only the batch in and the logged scalars out per
//! step, issues the same commands every step, and trains exactly as on the host device; with a
//! data sink the logged scalars of a whole sink loop come out in one read at its end, and no
//! step in between reads anything back (the GPU runs the loop without a host synchronisation).

use compiler::frontend::preset::{Phase, Preset};
use plan::exec::ExecutablePlan;
use plan::manifest::PhaseInfo;
use runtime::device::host::HostDevice;
use runtime::device::{Bindings, BufferId, Device, DeviceError, ExecutableId};
use runtime::exec::LoopKernels;
use runtime::tensor_io::RawTensor;
use runtime::train::driver::{run_phase, BatchSource, PhaseRun};
use runtime::train::log::Logger;
use runtime::train::schedule::StepPlan;
use runtime::train::session::Session;
use runtime::train::state::{Checkpoints, TrainerState};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use tbc_tests::*;

/// One device command, with the bytes it moved across the host boundary.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Command {
    Allocate(usize),
    Load(String),
    Upload(BufferId, usize),
    Download(BufferId, usize),
    Copy(BufferId, BufferId),
    CopyInto(BufferId, BufferId, usize),
    Submit(ExecutableId),
}

#[derive(Default)]
struct Log {
    commands: Vec<Command>,
}

/// Records every command, then runs it on the host device.
struct Recorder<'k> {
    inner: HostDevice<'k>,
    log: Rc<RefCell<Log>>,
}

impl Recorder<'_> {
    fn push(&self, c: Command) {
        self.log.borrow_mut().commands.push(c);
    }
}

impl Device for Recorder<'_> {
    fn name(&self) -> String {
        "recorder(host)".into()
    }
    fn allocate(&mut self, bytes: usize) -> Result<BufferId, DeviceError> {
        self.push(Command::Allocate(bytes));
        self.inner.allocate(bytes)
    }
    fn upload(&mut self, dst: BufferId, bytes: &[u8]) -> Result<(), DeviceError> {
        self.push(Command::Upload(dst, bytes.len()));
        self.inner.upload(dst, bytes)
    }
    fn download(&self, src: BufferId, out: &mut [u8]) -> Result<(), DeviceError> {
        self.push(Command::Download(src, out.len()));
        self.inner.download(src, out)
    }
    fn copy(&mut self, src: BufferId, dst: BufferId) -> Result<(), DeviceError> {
        self.push(Command::Copy(src, dst));
        self.inner.copy(src, dst)
    }
    fn copy_into(&mut self, src: BufferId, dst: BufferId, at: usize) -> Result<(), DeviceError> {
        self.push(Command::CopyInto(src, dst, at));
        self.inner.copy_into(src, dst, at)
    }
    fn load(&mut self, plan: &ExecutablePlan) -> Result<ExecutableId, DeviceError> {
        self.push(Command::Load(plan.name.clone()));
        self.inner.load(plan)
    }
    fn submit(&mut self, exe: ExecutableId, b: &Bindings) -> Result<(), DeviceError> {
        self.push(Command::Submit(exe));
        self.inner.submit(exe, b)
    }
}

/// The fixture batch, every step.
struct FixtureBatches(BTreeMap<String, RawTensor>);

impl BatchSource for FixtureBatches {
    fn steps_per_epoch(&self) -> u64 {
        2
    }
    fn batch(&self, _: u64, _: u64) -> Result<BTreeMap<String, RawTensor>, String> {
        Ok(self.0.clone())
    }
}

const STEPS: u64 = 6;

/// Runs `STEPS` td1 steps (paper preset, tiny configs, fixture weights) through the phase
/// driver on `device`; returns the trained student and Adam moments.
fn train(
    plan: &ExecutablePlan,
    device: Box<dyn Device + '_>,
    info: &PhaseInfo,
    manifest: &plan::manifest::Manifest,
    dir: &std::path::Path,
    sink: Option<u64>,
) -> BTreeMap<String, RawTensor> {
    let mut s = Session::on_device(plan, device).unwrap();
    let weights = runtime::tensor_io::read(&tiny_dir().join("weights.safetensors")).unwrap();
    for (name, t) in &weights {
        s.set(name, t, "fixture").unwrap();
    }
    for slot in plan.inputs.clone() {
        if slot.name.starts_with("adam_") {
            let zeros = vec![0.0; slot.shape.iter().product()];
            s.set(
                &slot.name,
                &RawTensor::from_f64(slot.elem, slot.shape.clone(), &zeros),
                "zeros",
            )
            .unwrap();
        }
    }
    for (name, v) in [
        ("state.step", 0.0),
        ("state.cur_iter", 1.0),
        ("state.last_overflow_iter", 0.0),
        ("state.loss_scale", 256.0),
        ("state.seed", 7.0),
    ] {
        s.set_scalar(name, v).unwrap();
    }
    let batch = runtime::tensor_io::read(&tiny_dir().join("batch.safetensors")).unwrap();
    let batch: BTreeMap<String, RawTensor> =
        batch.into_iter().filter(|(n, _)| s.has_input(n)).collect();
    let data = FixtureBatches(batch);
    let checkpoints = Checkpoints::new(dir, 1000, 1).unwrap();
    let run = PhaseRun {
        info,
        plan: StepPlan {
            steps_per_epoch: data.steps_per_epoch(),
            epochs: STEPS / data.steps_per_epoch(),
            sink,
        },
        data: &data,
        batch_size: manifest.batch,
        save_ckpt_step: 1000,
        checkpoints: &checkpoints,
        lr: Some(1e-3),
        loss_scale_logs: false,
        trained: "student",
        evaluator: None,
        best: None,
        overflow_patience: 100,
    };
    let state = TrainerState::new("td1", manifest, data.steps_per_epoch());
    let mut logger = Logger::new(None).unwrap();
    run_phase(&mut s, run, state, &mut logger).unwrap();
    let mut out = s.inputs_with_prefix("student");
    for p in ["adam_m", "adam_v"] {
        for (n, t) in s.inputs_with_prefix(p) {
            out.insert(format!("{p}.{n}"), t);
        }
    }
    out
}

#[test]
fn a_td1_run_moves_only_the_batch_in_and_the_logged_scalars_out() {
    let preset = Preset::paper();
    let c = compile_tiny(&preset, Phase::Td1);
    let plan = compiler::executable::executable_plan(
        &c.graph,
        c.fusion.as_ref().unwrap(),
        c.plan.as_ref().unwrap(),
        compiler::executable::step_defaults(&preset, Phase::Td1),
    );
    let kernels = InterpretedKernels::of(&c);
    let kernels: &dyn LoopKernels = &kernels;
    let (teacher, student) = tiny_configs(&preset);
    let manifest = compiler::manifest::manifest(
        &preset,
        &teacher,
        "{}",
        &student,
        "{}",
        4,
        16,
        &[Phase::Td1],
    );
    let info = manifest.phase("td1").unwrap().clone();
    let dir = tempfile::tempdir().unwrap();

    let run = |sink: Option<u64>, name: &str| {
        let log = Rc::new(RefCell::new(Log::default()));
        let recorder = Recorder {
            inner: HostDevice::new(kernels),
            log: log.clone(),
        };
        let trained = train(
            &plan,
            Box::new(recorder),
            &info,
            &manifest,
            &dir.path().join(name),
            sink,
        );
        let commands = log.borrow().commands.clone();
        (trained, commands)
    };
    let (recorded, commands) = run(None, "r");
    let host = train(
        &plan,
        Box::new(HostDevice::new(kernels)),
        &info,
        &manifest,
        &dir.path().join("h"),
        None,
    );
    assert_eq!(recorded, host, "the recorder changes nothing");

    let batch_bytes: usize = ["input_ids", "input_mask", "segment_ids"]
        .iter()
        .map(|n| plan.inputs.iter().find(|s| s.name == *n).unwrap().bytes())
        .sum();
    // Recorded per step: the loss scale read, loss, overflow, lr and each loss term.
    let recorded_scalars = 4 + plan
        .outputs
        .iter()
        .filter(|s| s.name.starts_with("loss."))
        .count();
    let steps = per_step(&commands);
    for (k, cmds) in steps.iter().enumerate() {
        assert_eq!(*cmds, steps[0], "step {} differs from step 2", k + 2);
        let up: usize = cmds
            .iter()
            .map(|c| if let Command::Upload(_, n) = c { *n } else { 0 })
            .sum();
        assert_eq!(up, batch_bytes, "only the batch goes in");
        assert_eq!(
            downloads(cmds),
            vec![8 * recorded_scalars],
            "one read of the step's scalars"
        );
        let copies = cmds
            .iter()
            .filter(|c| matches!(c, Command::Copy(..)))
            .count();
        assert_eq!(copies, plan.donations.len(), "state moves on the device");
        let kept = cmds
            .iter()
            .filter(|c| matches!(c, Command::CopyInto(..)))
            .count();
        assert_eq!(
            kept, recorded_scalars,
            "each logged scalar kept on the device"
        );
    }
    let total_state: usize = plan
        .donations
        .iter()
        .map(|d| plan.outputs[d.output].bytes())
        .sum();
    println!(
        "per step: {batch_bytes} bytes in, one read of {recorded_scalars} scalars out, {} donated buffers ({total_state} bytes) stay on the device",
        plan.donations.len()
    );

    // Data sink of 3 steps: the same training, one read per sink loop, at its end.
    const SINK: u64 = 3;
    let (sunk, commands) = run(Some(SINK), "s");
    assert_eq!(sunk, host, "the data sink trains the same steps");
    let steps = per_step(&commands);
    for (k, cmds) in steps.iter().enumerate() {
        let step = k as u64 + 1;
        let reads = downloads(cmds);
        if step.is_multiple_of(SINK) {
            assert_eq!(
                reads,
                vec![8 * recorded_scalars * SINK as usize],
                "step {step} ends a sink loop: one read of its {SINK} steps' scalars"
            );
        } else {
            assert!(
                reads.is_empty(),
                "step {step} reads nothing back: {reads:?}"
            );
        }
    }
    println!("data sink of {SINK}: one read of {SINK} steps' scalars per sink loop, none between");
}

/// The command stream cut at each Submit: element k is what follows step k+1's submission
/// (its reads, the next batch) up to and including step k+2's submission.
fn per_step(commands: &[Command]) -> Vec<&[Command]> {
    let submits: Vec<usize> = (0..commands.len())
        .filter(|&i| matches!(commands[i], Command::Submit(_)))
        .collect();
    assert_eq!(submits.len() as u64, STEPS);
    submits
        .windows(2)
        .map(|w| &commands[w[0] + 1..=w[1]])
        .collect()
}

/// Bytes of each download in `cmds`.
fn downloads(cmds: &[Command]) -> Vec<usize> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Download(_, n) => Some(*n),
            _ => None,
        })
        .collect()
}
