//! A panic inside `run_catching_panics` is one line and exit 70, and removes the temporaries in
//! flight (its own test binary: the panic hook is process-wide).

use runtime::interrupt::run_catching_panics;
use runtime::temp_files::{sibling, Kind, Registered};

#[test]
fn a_panic_becomes_exit_70_and_removes_the_temporaries_in_flight() {
    let d = tempfile::tempdir().unwrap();
    let tmp = sibling(&d.path().join("w.safetensors"), Kind::New);
    let code = run_catching_panics("test", || {
        std::fs::write(&tmp, b"half").unwrap();
        let _registered = Registered::new(&tmp);
        panic!("injected");
    });
    assert_eq!(code, 70);
    assert!(!tmp.exists(), "the temporary in flight was removed");
    assert_eq!(run_catching_panics("test", || 3), 3);
}
