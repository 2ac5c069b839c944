//! NCCL, loaded at run time from `libnccl.so.2` (the loader's path, `TBC_CUDA_LIBS`, or the
//! `nvidia-nccl` pip wheel, like cuBLASLt) through its C API. cudarc's own NCCL loader never
//! tries the real soname `libnccl.so.2` (DISTRIBUTED_NOTES §0), hence these few declarations.
//!
//! A communicator joins the ranks of a data-parallel job on the GPUs: its id comes from rank 0
//! over MPI, or from `NCCL_COMM_ID` (torchrun's `MASTER_ADDR:MASTER_PORT`), where NCCL's own
//! bootstrap meets. It averages the gradients on the device ([`NcclComm::all_reduce_avg`]) and,
//! for a job without MPI, carries the driver's broadcasts and checks ([`NcclGroup`]).

use crate::dist::Group;
use libloading::os::unix::{Library, Symbol};
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::Arc;

type Comm = *mut c_void;
type Stream = *mut c_void;

/// `ncclUniqueId`: 128 opaque bytes.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct UniqueId {
    pub internal: [c_char; 128],
}

/// `ncclDataType_t` values.
const NCCL_UINT8: c_int = 1;
const NCCL_UINT64: c_int = 5;
const NCCL_FLOAT32: c_int = 7;
/// `ncclRedOp_t` values.
const NCCL_MAX: c_int = 2;
const NCCL_MIN: c_int = 3;
const NCCL_AVG: c_int = 4;

struct Api {
    get_unique_id: unsafe extern "C" fn(*mut UniqueId) -> c_int,
    comm_init_rank: unsafe extern "C" fn(*mut Comm, c_int, UniqueId, c_int) -> c_int,
    all_reduce: unsafe extern "C" fn(
        *const c_void,
        *mut c_void,
        usize,
        c_int,
        c_int,
        Comm,
        Stream,
    ) -> c_int,
    broadcast: unsafe extern "C" fn(
        *const c_void,
        *mut c_void,
        usize,
        c_int,
        c_int,
        Comm,
        Stream,
    ) -> c_int,
    comm_abort: unsafe extern "C" fn(Comm) -> c_int,
    comm_destroy: unsafe extern "C" fn(Comm) -> c_int,
    error_string: unsafe extern "C" fn(c_int) -> *const c_char,
}

/// The loaded library.
pub struct Nccl {
    api: Api,
    _lib: Library,
}

const NCCL_NAMES: [&str; 1] = ["libnccl.so.2"];

impl Nccl {
    /// Loads NCCL: by its soname, else from the pip-wheel folders of [`super::libs`].
    pub fn load() -> Result<Nccl, String> {
        let lib = super::libs::open_library(&NCCL_NAMES, "NCCL", "nvidia-nccl-cu13")?;
        fn sym<T: Copy>(lib: &Library, name: &str) -> Result<T, String> {
            // SAFETY: the caller names an NCCL function of type T.
            let s: Symbol<T> = unsafe { lib.get(name.as_bytes()) }
                .map_err(|e| format!("NCCL lacks {name} (too old?): {e}"))?;
            Ok(*s)
        }
        let api = Api {
            get_unique_id: sym(&lib, "ncclGetUniqueId")?,
            comm_init_rank: sym(&lib, "ncclCommInitRank")?,
            all_reduce: sym(&lib, "ncclAllReduce")?,
            broadcast: sym(&lib, "ncclBroadcast")?,
            comm_abort: sym(&lib, "ncclCommAbort")?,
            comm_destroy: sym(&lib, "ncclCommDestroy")?,
            error_string: sym(&lib, "ncclGetErrorString")?,
        };
        Ok(Nccl { api, _lib: lib })
    }

    fn check(&self, call: &str, code: c_int) -> Result<(), String> {
        if code == 0 {
            return Ok(());
        }
        // SAFETY: NCCL returns a static string for every result code.
        let why = unsafe { CStr::from_ptr((self.api.error_string)(code)) };
        Err(format!(
            "{call}: {} (NCCL code {code})",
            why.to_string_lossy()
        ))
    }

    /// A new unique id (rank 0 makes it; with `NCCL_COMM_ID` set every rank gets the same).
    pub fn unique_id(&self) -> Result<UniqueId, String> {
        let mut id = UniqueId { internal: [0; 128] };
        // SAFETY: writes the 128-byte id.
        self.check("ncclGetUniqueId", unsafe {
            (self.api.get_unique_id)(&mut id)
        })?;
        Ok(id)
    }
}

/// This rank's communicator.
pub struct NcclComm {
    nccl: Nccl,
    comm: Comm,
    rank: usize,
    size: usize,
}

// SAFETY: the communicator is used from the thread that drives training only, in stream order.
unsafe impl Send for NcclComm {}
unsafe impl Sync for NcclComm {}

impl NcclComm {
    /// Joins the `size` ranks that share `id`, as `rank` (blocks until all have joined). The
    /// current CUDA context's device is this rank's GPU.
    pub fn join(nccl: Nccl, id: UniqueId, rank: usize, size: usize) -> Result<NcclComm, String> {
        let mut comm: Comm = std::ptr::null_mut();
        // SAFETY: the documented initialization call.
        let code =
            unsafe { (nccl.api.comm_init_rank)(&mut comm, size as c_int, id, rank as c_int) };
        nccl.check("ncclCommInitRank", code)?;
        Ok(NcclComm {
            nccl,
            comm,
            rank,
            size,
        })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }
    pub fn size(&self) -> usize {
        self.size
    }

    /// Enqueues on `stream`: `count` f32 at `buffer` become their mean over the ranks.
    ///
    /// # Safety
    /// `buffer` is a device buffer of `count` f32 in the communicator's context.
    pub unsafe fn all_reduce_avg(
        &self,
        buffer: u64,
        count: usize,
        stream: Stream,
    ) -> Result<(), String> {
        // SAFETY: per the caller.
        unsafe { self.reduce(buffer, count, NCCL_FLOAT32, NCCL_AVG, stream) }
    }

    /// Enqueues on `stream`: `count` elements of type `ty` at `buffer`, reduced with `op`.
    unsafe fn reduce(
        &self,
        buffer: u64,
        count: usize,
        ty: c_int,
        op: c_int,
        stream: Stream,
    ) -> Result<(), String> {
        let p = buffer as *mut c_void;
        // SAFETY: per the caller.
        let code = unsafe { (self.nccl.api.all_reduce)(p, p, count, ty, op, self.comm, stream) };
        self.nccl.check("ncclAllReduce", code)
    }

    /// Enqueues on `stream`: rank `root`'s `bytes` bytes at `buffer` on every rank.
    unsafe fn broadcast(
        &self,
        buffer: u64,
        bytes: usize,
        root: usize,
        stream: Stream,
    ) -> Result<(), String> {
        let p = buffer as *mut c_void;
        // SAFETY: per the caller.
        let code = unsafe {
            (self.nccl.api.broadcast)(p, p, bytes, NCCL_UINT8, root as c_int, self.comm, stream)
        };
        self.nccl.check("ncclBroadcast", code)
    }

    /// Ends this rank's communicator now (the others' pending operations fail).
    pub fn abort(&self) {
        // SAFETY: the communicator is not used after this (the process ends).
        unsafe {
            (self.nccl.api.comm_abort)(self.comm);
        }
    }
}

impl Drop for NcclComm {
    fn drop(&mut self) {
        // SAFETY: created in `join`, destroyed once, after the last use.
        unsafe {
            (self.nccl.api.comm_destroy)(self.comm);
        }
    }
}

/// The data-parallel group of a GPU job started without MPI (torchrun's `RANK`, `WORLD_SIZE`,
/// `MASTER_ADDR`, `MASTER_PORT`): the driver's broadcasts and checks go through NCCL on small
/// device buffers. A failing rank exits; torchrun ends the others.
pub struct NcclGroup {
    pub comm: Arc<NcclComm>,
    pub stream: Arc<cudarc::driver::CudaStream>,
}

impl NcclGroup {
    /// Runs `f` on a device copy of `bytes` and reads it back.
    fn on_device(
        &self,
        bytes: &mut [u8],
        f: impl FnOnce(u64) -> Result<(), String>,
    ) -> Result<(), String> {
        use cudarc::driver::DevicePtr;
        let buf = self
            .stream
            .clone_htod(bytes)
            .map_err(|e| format!("NCCL staging buffer: {e:?}"))?;
        let (p, _sync) = buf.device_ptr(&self.stream);
        f(p)?;
        let back = self
            .stream
            .clone_dtoh(&buf)
            .map_err(|e| format!("NCCL staging buffer: {e:?}"))?;
        bytes.copy_from_slice(&back);
        Ok(())
    }
}

impl Group for NcclGroup {
    fn rank(&self) -> usize {
        self.comm.rank
    }
    fn size(&self) -> usize {
        self.comm.size
    }
    fn all_reduce_mean(&self, data: &mut [f32]) -> Result<(), String> {
        let mut bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        let s = self.stream.cu_stream() as Stream;
        // SAFETY: the staging buffer holds data.len() f32.
        self.on_device(&mut bytes, |p| unsafe {
            self.comm.all_reduce_avg(p, data.len(), s)
        })?;
        for (x, c) in data.iter_mut().zip(bytes.chunks_exact(4)) {
            *x = f32::from_le_bytes(c.try_into().expect("4 bytes"));
        }
        Ok(())
    }
    fn broadcast(&self, root: usize, data: &mut [u8]) -> Result<(), String> {
        let s = self.stream.cu_stream() as Stream;
        let n = data.len();
        // SAFETY: the staging buffer holds n bytes.
        self.on_device(data, |p| unsafe { self.comm.broadcast(p, n, root, s) })
    }
    fn min_max(&self, v: u64) -> Result<(u64, u64), String> {
        let s = self.stream.cu_stream() as Stream;
        let mut out = [v, v];
        for (i, op) in [NCCL_MIN, NCCL_MAX].into_iter().enumerate() {
            let mut b = out[i].to_le_bytes();
            // SAFETY: the staging buffer holds one u64.
            self.on_device(&mut b, |p| unsafe {
                self.comm.reduce(p, 1, NCCL_UINT64, op, s)
            })?;
            out[i] = u64::from_le_bytes(b);
        }
        Ok((out[0], out[1]))
    }
    fn abort(&self, code: i32) -> ! {
        self.comm.abort();
        std::process::exit(code)
    }
}
