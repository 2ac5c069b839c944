//! How a trainer stops when it must: SIGINT/SIGTERM ask the training loop to stop after the
//! current step (a second signal ends the process at once); a panic prints one line, removes
//! this process's temporaries and becomes exit code 70 instead of an abort.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Installs the SIGINT/SIGTERM handling: a thread receives the signals; the first sets the flag
/// the training loop reads between steps, the second removes this process's temporaries (and
/// the output directory's lock) and exits with 130 at once.
pub fn install_signal_handlers() -> Result<(), String> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    if FLAG.get().is_some() {
        return Ok(());
    }
    let flag = Arc::new(AtomicBool::new(false));
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|e| format!("cannot install the SIGINT/SIGTERM handlers: {e}"))?;
    let seen = flag.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for _ in signals.forever() {
                if seen.swap(true, Ordering::SeqCst) {
                    crate::temp_files::remove_active();
                    eprintln!("interrupted twice: stopping now (temporary files removed; --resume continues from the newest checkpoint)");
                    std::process::exit(130);
                }
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    FLAG.set(flag).ok();
    Ok(())
}

static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();

/// Whether SIGINT or SIGTERM arrived (or [`request`] was called).
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst) || FLAG.get().is_some_and(|f| f.load(Ordering::SeqCst))
}

/// Asks the training loop to stop after the current step (tests and embedders).
pub fn request() {
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Runs `body`; a panic inside it prints one line naming the bug, removes this process's
/// temporaries and returns exit code 70 (EX_SOFTWARE), where unwinding into the generated C
/// `main` would abort.
pub fn run_catching_panics(program: &'static str, body: impl FnOnce() -> i32) -> i32 {
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        // Before unwinding drops the guards that would only unregister them.
        crate::temp_files::remove_active();
        eprintln!(
            "error: internal error in {program}: {msg}{at}. This is a bug in tbc; please report it with the command line. No file was left half-written."
        );
    }));
    let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or(70);
    if code == 70 {
        crate::temp_files::remove_active();
    }
    let _ = std::panic::take_hook();
    code
}
