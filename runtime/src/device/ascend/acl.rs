//! The Ascend runtime, loaded at run time through its C API: ACL (`libascendcl.so`: devices,
//! streams, device memory, copies) and the aclnn operator library (`libnnopbase.so`: tensor and
//! scalar descriptors; `libopapi.so`: the operators). These are the declarations of the few
//! calls tbc makes, as CANN 8/9 defines them; the same libraries are found on an Ascend machine
//! (CANN's `set_env.sh` puts them on the loader's path) and in the CPU stand-in that the kernel
//! project builds with `-DTBC_ASCEND_EMULATION=ON`.

use libloading::os::unix::{Library, Symbol, RTLD_GLOBAL, RTLD_NOW};
use std::ffi::{c_char, c_void, CStr};

pub type AclError = i32;
pub type Stream = *mut c_void;
/// `aclTensor*`, `aclScalar*`, `aclOpExecutor*`: opaque.
pub type Handle = *mut c_void;

/// `aclrtMemcpyKind` values.
pub const HOST_TO_DEVICE: i32 = 1;
pub const DEVICE_TO_HOST: i32 = 2;
pub const DEVICE_TO_DEVICE: i32 = 3;
/// `aclrtMemMallocPolicy`: huge pages first.
pub const MALLOC_HUGE_FIRST: i32 = 0;
/// `aclDataType` values.
pub const ACL_FLOAT: i32 = 0;
pub const ACL_FLOAT16: i32 = 1;
pub const ACL_INT32: i32 = 3;
pub const ACL_INT64: i32 = 9;
pub const ACL_BF16: i32 = 27;
/// `aclrtMemAttr`: the device's HBM.
pub const HBM_MEM: i32 = 1;
/// `aclFormat`: plain row-major.
pub const FORMAT_ND: i32 = 2;
/// aclnn `cubeMathType`: keep the operands' type (no HF32 for f32 operands).
pub const KEEP_DTYPE: i8 = 0;

/// The two-phase aclnn interface: `…GetWorkspaceSize` makes an executor, the operator runs it.
pub type RunOp = unsafe extern "C" fn(*mut c_void, u64, Handle, Stream) -> i32;

pub struct Api {
    pub init: unsafe extern "C" fn(*const c_char) -> AclError,
    pub finalize: unsafe extern "C" fn() -> AclError,
    pub set_device: unsafe extern "C" fn(i32) -> AclError,
    pub reset_device: unsafe extern "C" fn(i32) -> AclError,
    pub device_count: unsafe extern "C" fn(*mut u32) -> AclError,
    pub soc_name: unsafe extern "C" fn() -> *const c_char,
    pub create_stream: unsafe extern "C" fn(*mut Stream) -> AclError,
    pub destroy_stream: unsafe extern "C" fn(Stream) -> AclError,
    pub synchronize_stream: unsafe extern "C" fn(Stream) -> AclError,
    pub malloc: unsafe extern "C" fn(*mut *mut c_void, usize, i32) -> AclError,
    pub free: unsafe extern "C" fn(*mut c_void) -> AclError,
    pub memcpy: unsafe extern "C" fn(*mut c_void, usize, *const c_void, usize, i32) -> AclError,
    pub memcpy_async:
        unsafe extern "C" fn(*mut c_void, usize, *const c_void, usize, i32, Stream) -> AclError,
    pub memset_async: unsafe extern "C" fn(*mut c_void, usize, i32, usize, Stream) -> AclError,
    pub mem_info: unsafe extern "C" fn(i32, *mut usize, *mut usize) -> AclError,
    pub recent_error: unsafe extern "C" fn() -> *const c_char,
    // libnnopbase.so
    #[allow(clippy::type_complexity)]
    pub create_tensor: unsafe extern "C" fn(
        *const i64,
        u64,
        i32,
        *const i64,
        i64,
        i32,
        *const i64,
        u64,
        *mut c_void,
    ) -> Handle,
    pub destroy_tensor: unsafe extern "C" fn(Handle) -> i32,
    pub create_scalar: unsafe extern "C" fn(*mut c_void, i32) -> Handle,
    pub destroy_scalar: unsafe extern "C" fn(Handle) -> i32,
    // libopapi.so
    pub matmul_workspace:
        unsafe extern "C" fn(Handle, Handle, Handle, i8, *mut u64, *mut Handle) -> i32,
    pub matmul: RunOp,
    pub embedding_workspace:
        unsafe extern "C" fn(Handle, Handle, Handle, *mut u64, *mut Handle) -> i32,
    pub embedding: RunOp,
    #[allow(clippy::type_complexity)]
    pub index_add_workspace: unsafe extern "C" fn(
        Handle,
        i64,
        Handle,
        Handle,
        Handle,
        Handle,
        *mut u64,
        *mut Handle,
    ) -> i32,
    pub index_add: RunOp,
}

/// The loaded libraries (kept open while the API is used) and their calls.
pub struct Acl {
    pub api: Api,
    _libs: Vec<Library>,
}

/// What to do when the Ascend runtime is missing.
const INSTALL: &str = "install CANN 8 or 9 (the toolkit and the NNAE/opp packages) and `source /usr/local/Ascend/ascend-toolkit/set_env.sh`; for tbc's CPU emulation, build the trainer's kernel project with -DTBC_ASCEND_EMULATION=ON and put its build folder on LD_LIBRARY_PATH";

fn open(name: &str) -> Result<Library, String> {
    // SAFETY: ACL's libraries run only their own initializers when loaded.
    unsafe { Library::open(Some(name), RTLD_NOW | RTLD_GLOBAL) }
        .map_err(|e| format!("the Ascend runtime is missing: cannot load {name} ({e}); {INSTALL}"))
}

/// Looks `name` up in `lib`.
///
/// # Safety
/// `T` is the symbol's C signature.
unsafe fn symbol<T: Copy>(lib: &Library, file: &str, name: &str) -> Result<T, String> {
    let s: Symbol<T> = lib
        .get(name.as_bytes())
        .map_err(|e| format!("{file} has no {name} ({e}): CANN 8 or later is needed; {INSTALL}"))?;
    Ok(*s)
}

impl Acl {
    /// Loads `libascendcl.so`, `libnnopbase.so` and `libopapi.so` from the loader's path.
    pub fn load() -> Result<Acl, String> {
        const ACL: &str = "libascendcl.so";
        const BASE: &str = "libnnopbase.so";
        const OPS: &str = "libopapi.so";
        let (acl, base, ops) = (open(ACL)?, open(BASE)?, open(OPS)?);
        // SAFETY: each signature is CANN's declaration of the symbol.
        let api = unsafe {
            Api {
                init: symbol(&acl, ACL, "aclInit")?,
                finalize: symbol(&acl, ACL, "aclFinalize")?,
                set_device: symbol(&acl, ACL, "aclrtSetDevice")?,
                reset_device: symbol(&acl, ACL, "aclrtResetDevice")?,
                device_count: symbol(&acl, ACL, "aclrtGetDeviceCount")?,
                soc_name: symbol(&acl, ACL, "aclrtGetSocName")?,
                create_stream: symbol(&acl, ACL, "aclrtCreateStream")?,
                destroy_stream: symbol(&acl, ACL, "aclrtDestroyStream")?,
                synchronize_stream: symbol(&acl, ACL, "aclrtSynchronizeStream")?,
                malloc: symbol(&acl, ACL, "aclrtMalloc")?,
                free: symbol(&acl, ACL, "aclrtFree")?,
                memcpy: symbol(&acl, ACL, "aclrtMemcpy")?,
                memcpy_async: symbol(&acl, ACL, "aclrtMemcpyAsync")?,
                memset_async: symbol(&acl, ACL, "aclrtMemsetAsync")?,
                mem_info: symbol(&acl, ACL, "aclrtGetMemInfo")?,
                recent_error: symbol(&acl, ACL, "aclGetRecentErrMsg")?,
                create_tensor: symbol(&base, BASE, "aclCreateTensor")?,
                destroy_tensor: symbol(&base, BASE, "aclDestroyTensor")?,
                create_scalar: symbol(&base, BASE, "aclCreateScalar")?,
                destroy_scalar: symbol(&base, BASE, "aclDestroyScalar")?,
                matmul_workspace: symbol(&ops, OPS, "aclnnMatmulGetWorkspaceSize")?,
                matmul: symbol(&ops, OPS, "aclnnMatmul")?,
                embedding_workspace: symbol(&ops, OPS, "aclnnEmbeddingGetWorkspaceSize")?,
                embedding: symbol(&ops, OPS, "aclnnEmbedding")?,
                index_add_workspace: symbol(&ops, OPS, "aclnnIndexAddGetWorkspaceSize")?,
                index_add: symbol(&ops, OPS, "aclnnIndexAdd")?,
            }
        };
        Ok(Acl {
            api,
            _libs: vec![acl, base, ops],
        })
    }

    /// `Ok` for status 0, else `what` failed with ACL's own message.
    pub fn check(&self, status: i32, what: &str) -> Result<(), String> {
        if status == 0 {
            return Ok(());
        }
        // SAFETY: ACL returns a NUL-terminated string it owns, or null.
        let detail = unsafe {
            let p = (self.api.recent_error)();
            if p.is_null() {
                String::new()
            } else {
                CStr::from_ptr(p).to_string_lossy().trim().to_string()
            }
        };
        Err(if detail.is_empty() {
            format!("{what} failed (error {status})")
        } else {
            format!("{what} failed (error {status}): {detail}")
        })
    }
}
