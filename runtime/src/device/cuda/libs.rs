//! Finding the CUDA libraries before cudarc touches them (cudarc panics on a missing library).
//!
//! The driver (`libcuda.so.1`) comes with the NVIDIA driver and is found by the dynamic loader.
//! cuBLASLt usually comes from a pip wheel (`nvidia-cublas`, in a Python `site-packages`), which
//! the loader does not search: we look in `$TBC_CUDA_LIBS` (folders separated by `:`), the
//! active virtual environment, the usual site-packages folders and `/usr/local/cuda/lib64`, and
//! load the library from there by path. cudarc then opens it by its bare name, and the dynamic
//! loader returns the copy already loaded (same `SONAME`).

use std::path::{Path, PathBuf};

/// Library file names of cuBLASLt we accept, newest first (CUDA 13, then 12).
const CUBLASLT_NAMES: [&str; 2] = ["libcublasLt.so.13", "libcublasLt.so.12"];

/// The folders searched for pip-wheel CUDA libraries, in order.
pub fn search_dirs() -> Vec<PathBuf> {
    search_dirs_from(
        std::env::var("TBC_CUDA_LIBS").ok(),
        std::env::var_os("VIRTUAL_ENV").map(PathBuf::from),
        std::env::var_os("HOME").map(PathBuf::from),
    )
}

/// [`search_dirs`] for the given `TBC_CUDA_LIBS`, `VIRTUAL_ENV` and `HOME`.
fn search_dirs_from(
    tbc_cuda_libs: Option<String>,
    venv: Option<PathBuf>,
    home: Option<PathBuf>,
) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = tbc_cuda_libs
        .map(|v| {
            v.split(':')
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default();
    let mut site_packages: Vec<PathBuf> = Vec::new();
    if let Some(venv) = venv {
        site_packages.extend(python_lib_dirs(&venv.join("lib"), "site-packages"));
    }
    if let Some(home) = home {
        site_packages.extend(python_lib_dirs(&home.join(".local/lib"), "site-packages"));
    }
    for prefix in ["/usr/local/lib", "/usr/lib"] {
        site_packages.extend(python_lib_dirs(Path::new(prefix), "dist-packages"));
        site_packages.extend(python_lib_dirs(Path::new(prefix), "site-packages"));
    }
    site_packages.push(PathBuf::from("/usr/lib/python3/dist-packages"));
    for sp in site_packages {
        for sub in ["nvidia/cu13/lib", "nvidia/cublas/lib", "nvidia/nccl/lib"] {
            dirs.push(sp.join(sub));
        }
    }
    dirs.push(PathBuf::from("/usr/local/cuda/lib64"));
    dirs
}

/// `<dir>/python3*/<leaf>` folders that exist.
fn python_lib_dirs(dir: &Path, leaf: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
        .map(|e| e.path().join(leaf))
        .filter(|p| p.is_dir())
        .collect();
    found.sort();
    found
}

/// Whether the CUDA driver library can be loaded.
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the candidate names (cudarc's probe never panics).
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Whether cuBLASLt can be loaded by its bare name.
fn cublaslt_present() -> bool {
    // SAFETY: only tries to dlopen the candidate names.
    unsafe { cudarc::cublaslt::sys::is_culib_present() }
}

/// Makes cuBLASLt loadable: already on the loader's path, or loaded here by path from the first
/// folder of [`search_dirs`] that has it. The error says where it looked and what to install.
pub fn ensure_cublaslt() -> Result<(), String> {
    if cublaslt_present() {
        return Ok(());
    }
    load_cublaslt_from(&search_dirs())
}

/// Loads cuBLASLt by path from the first of `dirs` that has it.
fn load_cublaslt_from(dirs: &[PathBuf]) -> Result<(), String> {
    let lib = open_in(&CUBLASLT_NAMES, "cuBLASLt", "nvidia-cublas", dirs)?;
    // Leaked on purpose: the library stays loaded for cudarc, which opens it by its bare name.
    std::mem::forget(lib);
    if cublaslt_present() {
        Ok(())
    } else {
        Err("cuBLASLt was loaded by path but cudarc still cannot open it by name".into())
    }
}

/// Opens the first of `names` the loader finds, else the first found in [`search_dirs`]; the
/// error names `what`, the folders searched, the pip `wheel` and TBC_CUDA_LIBS.
pub fn open_library(
    names: &[&str],
    what: &str,
    wheel: &str,
) -> Result<libloading::os::unix::Library, String> {
    for n in names {
        if let Ok(lib) = open(std::ffi::OsStr::new(n)) {
            return Ok(lib);
        }
    }
    open_in(names, what, wheel, &search_dirs())
}

/// Loads a library of NVIDIA's by name or path (its initializers are safe to run), its
/// symbols visible to the libraries it loads.
fn open(n: &std::ffi::OsStr) -> Result<libloading::os::unix::Library, libloading::Error> {
    use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
    // SAFETY: see above.
    unsafe { Library::open(Some(n), RTLD_NOW | RTLD_GLOBAL) }
}

/// The first of `names` in the first of `dirs` that has one, by path.
fn open_in(
    names: &[&str],
    what: &str,
    wheel: &str,
    dirs: &[PathBuf],
) -> Result<libloading::os::unix::Library, String> {
    for dir in dirs {
        for n in names {
            let path = dir.join(n);
            if path.is_file() {
                return open(path.as_os_str())
                    .map_err(|e| format!("cannot load {}: {e}", path.display()));
            }
        }
    }
    let looked: Vec<String> = dirs
        .iter()
        .filter(|d| d.is_dir())
        .map(|d| d.display().to_string())
        .collect();
    Err(format!(
        "{what} not found: {} is not on the loader's path and not in {}; install it with `pip install {wheel}` or put its folder in TBC_CUDA_LIBS",
        names.join(" or "),
        if looked.is_empty() {
            "any pip wheel folder (none exist here)".to_string()
        } else {
            looked.join(", ")
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tbc_cuda_libs_comes_first_then_the_wheels_of_the_virtual_environment() {
        let venv = tempfile::tempdir().unwrap();
        let sp = venv.path().join("lib/python3.12/site-packages");
        std::fs::create_dir_all(&sp).unwrap();
        let dirs = search_dirs_from(
            Some("/opt/a:/opt/b".into()),
            Some(venv.path().to_path_buf()),
            None,
        );
        assert_eq!(dirs[0], PathBuf::from("/opt/a"));
        assert_eq!(dirs[1], PathBuf::from("/opt/b"));
        assert_eq!(dirs[2], sp.join("nvidia/cu13/lib"));
        assert_eq!(
            dirs.last().unwrap(),
            &PathBuf::from("/usr/local/cuda/lib64")
        );
    }

    /// A missing NCCL is an error that says what to install and which variable to set.
    #[test]
    fn missing_nccl_is_a_clear_error() {
        let Err(e) = open_library(
            &["libnccl_absent_for_test.so.2"],
            "NCCL",
            "nvidia-nccl-cu13",
        ) else {
            panic!("no such library");
        };
        assert!(e.contains("NCCL not found"), "{e}");
        assert!(
            e.contains("pip install nvidia-nccl-cu13") && e.contains("TBC_CUDA_LIBS"),
            "{e}"
        );
    }

    /// A file with cuBLASLt's name that is not a library is an error naming it; no library in
    /// the folders is an error that says what to install and which variable to set.
    #[test]
    fn missing_or_broken_cublaslt_is_a_clear_error() {
        if cublaslt_present() {
            println!("SKIPPED: cuBLASLt is installed on this machine");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let broken = dir.path().join("libcublasLt.so.13");
        std::fs::write(&broken, b"not a library").unwrap();
        let e = load_cublaslt_from(&[dir.path().to_path_buf()]).unwrap_err();
        assert!(
            e.contains(&format!("cannot load {}", broken.display())),
            "{e}"
        );
        let empty = tempfile::tempdir().unwrap();
        let e = load_cublaslt_from(&[empty.path().to_path_buf()]).unwrap_err();
        assert!(e.contains("cuBLASLt not found"), "{e}");
        assert!(e.contains(&empty.path().display().to_string()), "{e}");
        assert!(
            e.contains("pip install nvidia-cublas") && e.contains("TBC_CUDA_LIBS"),
            "{e}"
        );
    }
}
