//! Open MPI, loaded at run time (`libmpi.so.40`) so that only a distributed run needs it. The
//! calls are MPI's C API; the handles are Open MPI's (`MPI_COMM_WORLD` is the address of
//! `ompi_mpi_comm_world`, and so on; `MPI_IN_PLACE` is `(void *)1`).

use super::{Group, PendingAllReduce};
use libloading::os::unix::{Library, Symbol, RTLD_GLOBAL, RTLD_NOW};
use std::ffi::{c_int, c_void};

type Handle = *mut c_void;

/// The library names tried, in order (`TBC_MPI_LIB` instead, when set).
const LIBRARY_NAMES: [&str; 2] = ["libmpi.so.40", "libmpi.so"];

struct Api {
    initialized: unsafe extern "C" fn(*mut c_int) -> c_int,
    init: unsafe extern "C" fn(*mut c_int, *mut *mut *mut i8) -> c_int,
    comm_rank: unsafe extern "C" fn(Handle, *mut c_int) -> c_int,
    comm_size: unsafe extern "C" fn(Handle, *mut c_int) -> c_int,
    allreduce:
        unsafe extern "C" fn(*const c_void, *mut c_void, c_int, Handle, Handle, Handle) -> c_int,
    iallreduce: unsafe extern "C" fn(
        *const c_void,
        *mut c_void,
        c_int,
        Handle,
        Handle,
        Handle,
        *mut Handle,
    ) -> c_int,
    test: unsafe extern "C" fn(*mut Handle, *mut c_int, *mut c_void) -> c_int,
    waitall: unsafe extern "C" fn(c_int, *mut Handle, *mut c_void) -> c_int,
    bcast: unsafe extern "C" fn(*mut c_void, c_int, Handle, c_int, Handle) -> c_int,
    abort: unsafe extern "C" fn(Handle, c_int) -> c_int,
    finalize: unsafe extern "C" fn() -> c_int,
    finalized: unsafe extern "C" fn(*mut c_int) -> c_int,
    comm_world: Handle,
    float: Handle,
    byte: Handle,
    uint64: Handle,
    sum: Handle,
    min: Handle,
    max: Handle,
}

/// The ranks of the MPI job this process belongs to.
pub struct Mpi {
    api: Api,
    rank: usize,
    size: usize,
    _lib: Library,
}

// SAFETY: MPI is initialized for calls from the main thread only (MPI_THREAD_SINGLE); the
// trainer makes every collective from the thread that drives training. The handles are
// process-wide constants.
unsafe impl Send for Mpi {}
unsafe impl Sync for Mpi {}

/// Open MPI's `MPI_IN_PLACE` is the address 1.
const MPI_IN_PLACE: *const c_void = std::ptr::without_provenance(1);
/// The largest count one MPI call takes (an `int`).
const MAX_COUNT: usize = i32::MAX as usize;

fn open() -> Result<Library, String> {
    let names: Vec<String> = match std::env::var("TBC_MPI_LIB") {
        Ok(p) => vec![p],
        Err(_) => LIBRARY_NAMES.iter().map(|s| s.to_string()).collect(),
    };
    let mut errors = Vec::new();
    for n in &names {
        // SAFETY: loading Open MPI runs its constructors, which are meant to run in any process.
        match unsafe { Library::open(Some(n), RTLD_NOW | RTLD_GLOBAL) } {
            Ok(l) => return Ok(l),
            Err(e) => errors.push(format!("{n}: {e}")),
        }
    }
    Err(format!(
        "--distribute true needs Open MPI's library, which is not installed or not on the library path (tried {}). Install it (Debian/Ubuntu: apt-get install openmpi-bin libopenmpi3) or set TBC_MPI_LIB to its path",
        errors.join("; ")
    ))
}

impl Mpi {
    /// Loads Open MPI and initializes MPI (once per process).
    pub fn init() -> Result<Mpi, String> {
        let lib = open()?;
        // The symbols are MPI's C API with these signatures, and Open MPI's predefined handle
        // objects (their addresses are the handles).
        let api = {
            fn sym<T: Copy>(lib: &Library, name: &str) -> Result<T, String> {
                // SAFETY: the caller names a symbol of type T.
                let s: Symbol<T> = unsafe { lib.get(name.as_bytes()) }.map_err(|e| {
                    format!("the MPI library is not Open MPI or too old: {name}: {e}")
                })?;
                Ok(*s)
            }
            fn object(lib: &Library, name: &str) -> Result<Handle, String> {
                // SAFETY: the address of a data symbol.
                let s: Symbol<*mut c_void> = unsafe { lib.get(name.as_bytes()) }
                    .map_err(|e| format!("the MPI library is not Open MPI (no {name}): {e}"))?;
                Ok(s.into_raw() as Handle)
            }
            Api {
                initialized: sym(&lib, "MPI_Initialized")?,
                init: sym(&lib, "MPI_Init")?,
                comm_rank: sym(&lib, "MPI_Comm_rank")?,
                comm_size: sym(&lib, "MPI_Comm_size")?,
                allreduce: sym(&lib, "MPI_Allreduce")?,
                iallreduce: sym(&lib, "MPI_Iallreduce")?,
                test: sym(&lib, "MPI_Test")?,
                waitall: sym(&lib, "MPI_Waitall")?,
                bcast: sym(&lib, "MPI_Bcast")?,
                abort: sym(&lib, "MPI_Abort")?,
                finalize: sym(&lib, "MPI_Finalize")?,
                finalized: sym(&lib, "MPI_Finalized")?,
                comm_world: object(&lib, "ompi_mpi_comm_world")?,
                float: object(&lib, "ompi_mpi_float")?,
                byte: object(&lib, "ompi_mpi_byte")?,
                uint64: object(&lib, "ompi_mpi_uint64_t")?,
                sum: object(&lib, "ompi_mpi_op_sum")?,
                min: object(&lib, "ompi_mpi_op_min")?,
                max: object(&lib, "ompi_mpi_op_max")?,
            }
        };
        let (mut flag, mut rank, mut size) = (0, 0, 0);
        // SAFETY: MPI's documented start-up calls, with out-pointers to locals.
        unsafe {
            check("MPI_Initialized", (api.initialized)(&mut flag))?;
            if flag == 0 {
                check(
                    "MPI_Init",
                    (api.init)(std::ptr::null_mut(), std::ptr::null_mut()),
                )?;
            }
            check("MPI_Comm_rank", (api.comm_rank)(api.comm_world, &mut rank))?;
            check("MPI_Comm_size", (api.comm_size)(api.comm_world, &mut size))?;
        }
        Ok(Mpi {
            api,
            rank: rank as usize,
            size: size as usize,
            _lib: lib,
        })
    }
}

fn check(call: &str, code: c_int) -> Result<(), String> {
    if code == 0 {
        Ok(())
    } else {
        Err(format!("{call} failed with MPI error code {code}"))
    }
}

impl Group for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn all_reduce_mean(&self, data: &mut [f32]) -> Result<(), String> {
        for chunk in data.chunks_mut(MAX_COUNT) {
            // SAFETY: an in-place sum of chunk.len() floats, the same count on every rank.
            check("MPI_Allreduce", unsafe {
                (self.api.allreduce)(
                    MPI_IN_PLACE,
                    chunk.as_mut_ptr() as *mut c_void,
                    chunk.len() as c_int,
                    self.api.float,
                    self.api.sum,
                    self.api.comm_world,
                )
            })?;
        }
        let n = self.size as f32;
        data.iter_mut().for_each(|x| *x /= n);
        Ok(())
    }
    fn start_all_reduce_mean<'g>(
        &'g self,
        mut data: Vec<f32>,
    ) -> Result<Box<dyn PendingAllReduce + 'g>, String> {
        let mut requests = Vec::new();
        for chunk in data.chunks_mut(MAX_COUNT) {
            let mut request: Handle = std::ptr::null_mut();
            // SAFETY: an in-place sum of chunk.len() floats, the same count on every rank; the
            // buffer (a heap allocation the pending all-reduce owns) stays put until it is
            // waited for, also when dropped early.
            check("MPI_Iallreduce", unsafe {
                (self.api.iallreduce)(
                    MPI_IN_PLACE,
                    chunk.as_mut_ptr() as *mut c_void,
                    chunk.len() as c_int,
                    self.api.float,
                    self.api.sum,
                    self.api.comm_world,
                    &mut request,
                )
            })?;
            requests.push(request);
        }
        Ok(Box::new(MpiAllReduce {
            mpi: self,
            data,
            requests,
        }))
    }
    fn broadcast(&self, root: usize, data: &mut [u8]) -> Result<(), String> {
        for chunk in data.chunks_mut(MAX_COUNT) {
            // SAFETY: chunk.len() bytes on every rank.
            check("MPI_Bcast", unsafe {
                (self.api.bcast)(
                    chunk.as_mut_ptr() as *mut c_void,
                    chunk.len() as c_int,
                    self.api.byte,
                    root as c_int,
                    self.api.comm_world,
                )
            })?;
        }
        Ok(())
    }
    fn min_max(&self, v: u64) -> Result<(u64, u64), String> {
        let (mut lo, mut hi) = (v, v);
        // SAFETY: in-place reductions of one u64.
        unsafe {
            check(
                "MPI_Allreduce",
                (self.api.allreduce)(
                    MPI_IN_PLACE,
                    &mut lo as *mut u64 as *mut c_void,
                    1,
                    self.api.uint64,
                    self.api.min,
                    self.api.comm_world,
                ),
            )?;
            check(
                "MPI_Allreduce",
                (self.api.allreduce)(
                    MPI_IN_PLACE,
                    &mut hi as *mut u64 as *mut c_void,
                    1,
                    self.api.uint64,
                    self.api.max,
                    self.api.comm_world,
                ),
            )?;
        }
        Ok((lo, hi))
    }
    fn finish(&self) {
        let mut done = 0;
        // SAFETY: MPI's own state queries and, once, its end.
        unsafe {
            if (self.api.finalized)(&mut done) == 0 && done == 0 {
                (self.api.finalize)();
            }
        }
    }
    fn abort(&self, code: i32) -> ! {
        // SAFETY: MPI_Abort ends every process of the job; it does not return.
        unsafe {
            (self.api.abort)(self.api.comm_world, code);
        }
        std::process::exit(code)
    }
}

/// A non-blocking `MPI_Iallreduce` of one buffer (in chunks of at most `MAX_COUNT`).
struct MpiAllReduce<'g> {
    mpi: &'g Mpi,
    data: Vec<f32>,
    /// Open MPI's request handles; completed ones become `MPI_REQUEST_NULL`.
    requests: Vec<Handle>,
}

impl MpiAllReduce<'_> {
    /// Waits for every request (`MPI_STATUSES_IGNORE` is the null pointer in Open MPI).
    fn complete(&mut self) -> Result<(), String> {
        if self.requests.is_empty() {
            return Ok(());
        }
        // SAFETY: requests from MPI_Iallreduce; Waitall completes and frees them.
        let code = unsafe {
            (self.mpi.api.waitall)(
                self.requests.len() as c_int,
                self.requests.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        };
        self.requests.clear();
        check("MPI_Waitall", code)
    }
}

impl PendingAllReduce for MpiAllReduce<'_> {
    fn progress(&mut self) -> Result<(), String> {
        for r in &mut self.requests {
            let mut done = 0;
            // SAFETY: a live request (or MPI_REQUEST_NULL once done, which MPI_Test accepts).
            check("MPI_Test", unsafe {
                (self.mpi.api.test)(r, &mut done, std::ptr::null_mut())
            })?;
        }
        Ok(())
    }

    fn wait(mut self: Box<Self>) -> Result<Vec<f32>, String> {
        self.complete()?;
        let n = self.mpi.size as f32;
        let mut data = std::mem::take(&mut self.data);
        data.iter_mut().for_each(|x| *x /= n);
        Ok(data)
    }
}

impl Drop for MpiAllReduce<'_> {
    /// MPI may still write the buffer: wait before it is freed (on an error path).
    fn drop(&mut self) {
        let _ = self.complete();
    }
}
