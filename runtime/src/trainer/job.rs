//! The process's place in a training job, set up before any session: its data-parallel group
//! (one process, the ranks of `mpirun`, or for GPU trainers torchrun's environment) and the
//! backend its sessions run on (the host, this rank's GPU with the job's NCCL communicator, or
//! an Ascend NPU).

use crate::device::ascend::AscendRuntime;
use crate::device::cuda::nccl::{Nccl, NcclGroup, UniqueId};
use crate::device::cuda::CudaRuntime;
use crate::device::Backend;
use crate::dist;
use crate::exec::LoopKernels;
use plan::ascend::AscendKernelLibrary;
use plan::gpu::GpuKernelLibrary;

/// The device kernels a command runs with: none (the host's linked kernels, and commands that
/// run no plan), a GPU trainer's PTX library, or an Ascend trainer's kernel table.
#[derive(Clone, Copy)]
pub enum DeviceLibrary<'b> {
    Host,
    Gpu(&'b GpuKernelLibrary),
    Ascend(&'b AscendKernelLibrary),
}

/// Joins the job (`distribute`: `--distribute true`) and opens the backend: the host for a CPU
/// trainer (or a command that runs no plan), else this rank's GPU or NPU.
pub fn start<'k>(
    kernels: &'k dyn LoopKernels,
    device: DeviceLibrary,
    distribute: bool,
) -> Result<Backend<'k>, String> {
    let library = match device {
        DeviceLibrary::Host => {
            dist::init(distribute)?;
            return Ok(Backend::Host(kernels));
        }
        DeviceLibrary::Ascend(_) if distribute => {
            return Err("--distribute true is not built for Ascend trainers yet (no HCCL collectives); train on one NPU, or compile for --target cpu|gpu".into());
        }
        DeviceLibrary::Ascend(library) => {
            dist::init(false)?;
            // As MindSpore's scripts choose the NPU: ASCEND_DEVICE_ID, else the first.
            let id = match std::env::var("ASCEND_DEVICE_ID") {
                Ok(v) => v.trim().parse::<usize>().map_err(|_| {
                    format!("ASCEND_DEVICE_ID={v}: expected an NPU number (0, 1, …)")
                })?,
                Err(_) => 0,
            };
            return Ok(Backend::Ascend(AscendRuntime::open(library, id)?));
        }
        DeviceLibrary::Gpu(library) => library,
    };
    if let Some((rank, size)) = dist::torchrun().filter(|_| distribute && !dist::under_mpi()) {
        return start_torchrun(library, rank, size);
    }
    let w = dist::init(distribute)?;
    let rt = CudaRuntime::open(library, dist::local_rank())?;
    if distribute {
        // The gradients are averaged by NCCL; rank 0's id reaches the others over MPI.
        let nccl = Nccl::load()?;
        let mut id = match w.rank() {
            0 => nccl.unique_id()?,
            _ => UniqueId { internal: [0; 128] },
        };
        let mut bytes: Vec<u8> = id.internal.iter().map(|&c| c as u8).collect();
        w.broadcast(0, &mut bytes)?;
        for (c, b) in id.internal.iter_mut().zip(&bytes) {
            *c = *b as std::ffi::c_char;
        }
        rt.join_nccl(nccl, id, w.rank(), w.size())?;
    }
    Ok(Backend::Cuda(rt))
}

/// A GPU job without MPI: every rank reads the rendezvous from torchrun's environment and
/// joins NCCL there, which also carries the driver's broadcasts and checks.
fn start_torchrun<'k>(
    library: &GpuKernelLibrary,
    rank: usize,
    size: usize,
) -> Result<Backend<'k>, String> {
    if std::env::var("NCCL_COMM_ID").is_err() {
        let addr = std::env::var("MASTER_ADDR");
        let port = std::env::var("MASTER_PORT");
        let (Ok(addr), Ok(port)) = (addr, port) else {
            return Err("--distribute true with RANK and WORLD_SIZE needs MASTER_ADDR and MASTER_PORT (as torchrun sets them), or NCCL_COMM_ID=host:port".into());
        };
        // NCCL's bootstrap meets there: rank 0 listens, every rank gets the same id.
        std::env::set_var("NCCL_COMM_ID", format!("{addr}:{port}"));
    }
    let rt = CudaRuntime::open(library, dist::local_rank())?;
    let nccl = Nccl::load()?;
    let id = nccl.unique_id()?;
    let comm = rt.join_nccl(nccl, id, rank, size)?;
    dist::install(Box::new(NcclGroup {
        comm,
        stream: rt.stream(),
    }))?;
    Ok(Backend::Cuda(rt))
}
