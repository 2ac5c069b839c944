//! tbc's own temporary files. Every atomic write goes through a hidden sibling of its target
//! named `.{name}.tmp{pid}` (an export being replaced is moved aside to `.{name}.old{pid}`), so
//! a temporary names its target and the process that wrote it. While a process runs, its
//! temporaries are registered, so a panic or a signal can remove them; ones left by a killed
//! process are swept when a later run starts in the same directory.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

static ACTIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// What a temporary is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Being written; renamed onto the target when complete.
    New,
    /// The previous target, moved aside while the new one is renamed in.
    Old,
}

/// The temporary sibling of `target` of this kind for this process.
pub fn sibling(target: &Path, kind: Kind) -> PathBuf {
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = target
        .file_name()
        .map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned());
    let tag = match kind {
        Kind::New => "tmp",
        Kind::Old => "old",
    };
    dir.join(format!(".{name}.{tag}{}", std::process::id()))
}

/// A registered temporary: removed by [`remove_active`] until this guard is dropped (after the
/// temporary was renamed into place or removed).
pub struct Registered(PathBuf);

impl Registered {
    pub fn new(path: &Path) -> Registered {
        lock().push(path.to_path_buf());
        Registered(path.to_path_buf())
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut active = lock();
        if let Some(i) = active.iter().rposition(|p| *p == self.0) {
            active.remove(i);
        }
    }
}

fn lock() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    ACTIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Removes this process's temporaries still in progress (from a panic hook or on a signal).
/// An export moved aside is moved back when its replacement never arrived.
pub fn remove_active() {
    remove_active_under(Path::new("/"));
}

/// [`remove_active`] for the temporaries below `dir` only.
pub fn remove_active_under(dir: &Path) {
    let mut active = lock();
    let (mine, rest): (Vec<PathBuf>, Vec<PathBuf>) =
        active.drain(..).partition(|p| p.starts_with(dir));
    *active = rest;
    drop(active);
    for p in mine {
        remove_or_restore(&p);
    }
}

fn remove_or_restore(p: &Path) {
    if let Some((target, Kind::Old, _)) = parse(p) {
        if !target.exists() {
            let _ = std::fs::rename(p, &target);
            return;
        }
    }
    if p.is_dir() {
        let _ = std::fs::remove_dir_all(p);
    } else {
        let _ = std::fs::remove_file(p);
    }
}

/// The target, kind and process id of one of our temporaries, or `None` for any other name.
pub fn parse(p: &Path) -> Option<(PathBuf, Kind, u32)> {
    let name = p.file_name()?.to_str()?;
    let rest = name.strip_prefix('.')?;
    let (stem, tail) = rest.rsplit_once('.')?;
    let (kind, digits) = if let Some(d) = tail.strip_prefix("tmp") {
        (Kind::New, d)
    } else {
        (Kind::Old, tail.strip_prefix("old")?)
    };
    if stem.is_empty() || digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let pid = digits.parse().ok()?;
    Some((p.with_file_name(stem), kind, pid))
}

fn process_is_running(pid: u32) -> bool {
    pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes the temporaries in `dir` left by processes that are no longer running (an export
/// moved aside is moved back when its target is missing); returns what it removed or restored.
/// A missing directory has none.
pub fn sweep_stale(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut swept = Vec::new();
    for entry in entries.flatten() {
        let p = entry.path();
        if let Some((_, _, pid)) = parse(&p) {
            if !process_is_running(pid) {
                remove_or_restore(&p);
                swept.push(p);
            }
        }
    }
    swept.sort();
    swept
}

/// [`sweep_stale`] over several directories, saying on stderr what it removed.
pub fn sweep_and_report(dirs: &[&Path]) {
    for dir in dirs {
        let swept = sweep_stale(dir);
        if !swept.is_empty() {
            let names: Vec<String> = swept
                .iter()
                .filter_map(|p| Some(p.file_name()?.to_string_lossy().into_owned()))
                .collect();
            eprintln!(
                "{}: removed {} temporary file(s) left by an interrupted run: {}",
                dir.display(),
                swept.len(),
                names.join(", ")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_others_are_not_ours() {
        let t = sibling(Path::new("/d/tiny_bert_1_2.safetensors"), Kind::New);
        let (target, kind, pid) = parse(&t).unwrap();
        assert_eq!(target, Path::new("/d/tiny_bert_1_2.safetensors"));
        assert_eq!((kind, pid), (Kind::New, std::process::id()));
        for other in [
            "/d/a.tmp12",
            "/d/.a.tmp",
            "/d/.a.tmpx1",
            "/d/.tmp12",
            "/d/.bashrc",
        ] {
            assert_eq!(parse(Path::new(other)), None, "{other}");
        }
    }

    #[test]
    fn stale_temporaries_are_swept_and_an_orphaned_export_is_restored() {
        let d = tempfile::tempdir().unwrap();
        // pid 4194305 is above Linux's pid_max limit, so it is never running.
        let dead = 4_194_305u32;
        std::fs::write(d.path().join(format!(".w.safetensors.tmp{dead}")), b"x").unwrap();
        std::fs::create_dir(d.path().join(format!(".export.old{dead}"))).unwrap();
        std::fs::write(
            d.path().join(format!(".export.old{dead}/config.json")),
            b"{}",
        )
        .unwrap();
        let mine = sibling(&d.path().join("w2.safetensors"), Kind::New);
        std::fs::write(&mine, b"in progress").unwrap();
        std::fs::write(d.path().join("keep.tmp1"), b"not ours").unwrap();
        let swept = sweep_stale(d.path());
        assert_eq!(swept.len(), 2, "{swept:?}");
        assert!(d.path().join("export/config.json").is_file(), "restored");
        assert!(mine.exists(), "a running process's temporary stays");
        assert!(d.path().join("keep.tmp1").exists());
        let r = Registered::new(&mine);
        remove_active_under(d.path());
        drop(r);
        assert!(!mine.exists());
    }
}
