//! Data parallelism across processes (TINYBERT_SPEC §8, DISTRIBUTED_NOTES): the process's
//! group of ranks and the collectives the training step needs. The gradients' all-reduce runs
//! inside the plan (its collective step); broadcasts, checks and aborts run in the driver.
//!
//! One process is a [`Single`] group: every collective is the identity. Under `mpirun` with
//! `--distribute true` the group is [`mpi::Mpi`], Open MPI loaded at run time, so a trainer
//! that does not distribute needs no MPI installed. A GPU job started without MPI (torchrun's
//! environment) installs an NCCL group instead (`device::cuda::nccl::NcclGroup`).

pub mod mpi;

use std::sync::OnceLock;

/// An all-reduce in flight ([`Group::start_all_reduce_mean`]).
pub trait PendingAllReduce {
    /// Lets the transfer move on without waiting for it (MPI moves a non-blocking collective's
    /// data only inside MPI calls).
    fn progress(&mut self) -> Result<(), String> {
        Ok(())
    }
    /// Waits for it; the averaged values.
    fn wait(self: Box<Self>) -> Result<Vec<f32>, String>;
}

/// An all-reduce that completed when it started.
struct Completed(Vec<f32>);

impl PendingAllReduce for Completed {
    fn wait(self: Box<Self>) -> Result<Vec<f32>, String> {
        Ok(self.0)
    }
}

/// The ranks of a data-parallel job and their collectives. Every rank calls the same
/// collectives in the same order.
pub trait Group: Send + Sync {
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    /// In place: every rank gets the element-wise mean of `data` over the ranks.
    fn all_reduce_mean(&self, data: &mut [f32]) -> Result<(), String>;
    /// Starts [`Group::all_reduce_mean`] of `data` and returns while it runs (the executor
    /// overlaps a gradient bucket's all-reduce with the rest of the backward); by default it
    /// runs to completion here.
    fn start_all_reduce_mean<'g>(
        &'g self,
        mut data: Vec<f32>,
    ) -> Result<Box<dyn PendingAllReduce + 'g>, String> {
        self.all_reduce_mean(&mut data)?;
        Ok(Box::new(Completed(data)))
    }
    /// Every rank gets rank `root`'s `data` (the same length on every rank).
    fn broadcast(&self, root: usize, data: &mut [u8]) -> Result<(), String>;
    /// The smallest and largest of `v` over the ranks.
    fn min_max(&self, v: u64) -> Result<(u64, u64), String>;
    /// Ends every rank of the job with `code` (a rank that fails must not leave the others
    /// waiting in a collective).
    fn abort(&self, code: i32) -> !;
    /// Leaves the job after the last collective of a successful run (MPI_Finalize).
    fn finish(&self) {}
}

/// One process.
pub struct Single;

impl Group for Single {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_reduce_mean(&self, _: &mut [f32]) -> Result<(), String> {
        Ok(())
    }
    fn broadcast(&self, _: usize, _: &mut [u8]) -> Result<(), String> {
        Ok(())
    }
    fn min_max(&self, v: u64) -> Result<(u64, u64), String> {
        Ok((v, v))
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

static WORLD: OnceLock<Box<dyn Group>> = OnceLock::new();

/// The process's group: the one [`init`] set up, else a [`Single`] process.
pub fn world() -> &'static dyn Group {
    WORLD.get_or_init(|| Box::new(Single)).as_ref()
}

/// How many ranks the launcher started, from its environment (`None`: not under a launcher).
pub fn launcher_world_size() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "WORLD_SIZE"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
}

/// Sets up the process's group once, before any session: with `distribute`, joins the MPI job
/// that started this process (and makes a panic on any rank end the whole job); without it,
/// refuses to run as one of several ranks (each would train alone and write the same files).
pub fn init(distribute: bool) -> Result<&'static dyn Group, String> {
    let launched = launcher_world_size();
    if !distribute {
        if let Some(n) = launched.filter(|&n| n > 1) {
            return Err(format!(
                "this process is one of {n} ranks started by a launcher, but --distribute is false: each rank would train alone and write the same checkpoints. Add --distribute true (or start a single process)"
            ));
        }
        return Ok(world());
    }
    if !under_mpi() {
        return Err(match launched {
            Some(_) => "--distribute true: RANK/WORLD_SIZE are set (torchrun), which GPU trainers use through NCCL; a CPU trainer's data-parallel engine is MPI: start it with `mpirun -n N ./trainer … --distribute true` (Open MPI)".into(),
            None => "--distribute true needs the ranks of an MPI job: start the trainer with `mpirun -n N ./trainer … --distribute true` (Open MPI: apt-get install openmpi-bin)".into(),
        });
    }
    install(Box::new(mpi::Mpi::init()?))
}

/// Whether this process was started by an MPI launcher.
pub fn under_mpi() -> bool {
    std::env::var("OMPI_COMM_WORLD_SIZE").is_ok() || std::env::var("PMIX_RANK").is_ok()
}

/// torchrun's `(RANK, WORLD_SIZE)`, when both are set.
pub fn torchrun() -> Option<(usize, usize)> {
    let get = |v: &str| std::env::var(v).ok()?.parse().ok();
    Some((get("RANK")?, get("WORLD_SIZE")?))
}

/// This process's rank among those on its machine (which GPU it takes).
pub fn local_rank() -> usize {
    [
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "LOCAL_RANK",
        "MPI_LOCALRANKID",
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok()?.parse().ok())
    .unwrap_or(0)
}

/// Makes `group` the process's group (once, before any session), with a panic hook that ends
/// the whole job.
pub fn install(group: Box<dyn Group>) -> Result<&'static dyn Group, String> {
    if WORLD.set(group).is_err() {
        return Err("the data-parallel group was set up twice".into());
    }
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        hook(info);
        let w = world();
        eprintln!(
            "rank {} of {}: panicked; aborting the job",
            w.rank(),
            w.size()
        );
        w.abort(101);
    }));
    Ok(world())
}

/// Stops the job when the ranks disagree on `value` (a hash of what must be equal: the
/// configuration at start, the parameters at a checkpoint); `what` says what differs.
pub fn check_same(value: u64, what: &str) -> Result<(), String> {
    let w = world();
    let (lo, hi) = w.min_max(value)?;
    if lo != hi {
        return Err(format!(
            "rank {} of {}: the ranks differ in {what}",
            w.rank(),
            w.size()
        ));
    }
    Ok(())
}

/// A 64-bit FNV-1a hash of `bytes`, for [`check_same`].
pub fn fingerprint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
