//! What a training command holds while it runs: an exclusive advisory lock on its output
//! directory (two runs into one directory would interleave their metrics and rotate each
//! other's checkpoints), with the temporaries of interrupted runs swept and SIGINT/SIGTERM
//! handled between steps.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

/// Holds the output directory's lock until dropped. Dropping it removes the lock file, and the
/// output directory too when this run created it and wrote nothing there (a run that fails on
/// its inputs leaves nothing behind).
pub struct RunGuard {
    lock: Option<File>,
    lock_path: PathBuf,
    created: Option<PathBuf>,
    /// A second signal or a panic removes the lock file with the temporaries.
    _registered: crate::temp_files::Registered,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.lock_path);
        drop(self.lock.take());
        if let Some(dir) = &self.created {
            // Fails unless the directory is empty.
            let _ = std::fs::remove_dir(dir);
        }
    }
}

impl RunGuard {
    /// Locks `output_dir` (created if missing), sweeps stale temporaries in it, in its
    /// subdirectories and in `more_dirs`, and installs the signal handlers.
    pub fn start(output_dir: &Path, more_dirs: &[&Path]) -> Result<RunGuard, String> {
        let created = (!output_dir.exists()).then(|| output_dir.to_path_buf());
        std::fs::create_dir_all(output_dir)
            .map_err(|e| format!("cannot create {}: {e}", output_dir.display()))?;
        let lock_path = output_dir.join(".tbc.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                if let Some(dir) = &created {
                    let _ = std::fs::remove_dir(dir);
                }
                return Err(format!(
                    "{} is in use by another tbc run (it holds {}); wait for it to finish or choose another --output-dir",
                    output_dir.display(),
                    lock_path.display()
                ));
            }
            Err(TryLockError::Error(e)) => {
                return Err(format!("cannot lock {}: {e}", lock_path.display()))
            }
        }
        let mut dirs: Vec<PathBuf> = vec![output_dir.to_path_buf()];
        if let Ok(entries) = std::fs::read_dir(output_dir) {
            dirs.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
        dirs.extend(more_dirs.iter().map(|d| d.to_path_buf()));
        let refs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
        crate::temp_files::sweep_and_report(&refs);
        let guard = RunGuard {
            lock: Some(lock),
            _registered: crate::temp_files::Registered::new(&lock_path),
            lock_path,
            created,
        };
        crate::interrupt::install_signal_handlers()?;
        Ok(guard)
    }
}

/// Refuses an output (file or directory) that is one of `inputs` or contains one: replacing it
/// would destroy what the run reads.
pub fn refuse_output_over_inputs(
    flag: &str,
    output: &Path,
    inputs: &[&Path],
) -> Result<(), String> {
    let Some(out) = canonical_target(output) else {
        return Ok(());
    };
    for input in inputs {
        let Ok(inp) = std::fs::canonicalize(input) else {
            continue;
        };
        // The input itself, a directory holding it, or an existing file inside an input
        // directory (a model's weights, a data file).
        if inp == out || inp.starts_with(&out) || (out.is_file() && out.starts_with(&inp)) {
            return Err(format!(
                "{flag} {} would replace {}, which this run reads (tbc never writes over its input); choose another output path",
                output.display(),
                if inp == out || inp.starts_with(&out) {
                    input.display().to_string()
                } else {
                    format!("a file in {}", input.display())
                }
            ));
        }
    }
    Ok(())
}

/// The absolute path `p` names, whether or not it exists yet (its parent must resolve).
fn canonical_target(p: &Path) -> Option<PathBuf> {
    if let Ok(c) = std::fs::canonicalize(p) {
        return Some(c);
    }
    let parent = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    Some(std::fs::canonicalize(parent).ok()?.join(p.file_name()?))
}
