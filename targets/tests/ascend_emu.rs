//! The Ascend C emulation header (`targets/ascend_emu/kernel_operator.h`), built with g++ into
//! small programs (`targets/tests/ascend_emu/*.cpp`): correct kernels give the right numbers
//! (double-buffered Add in float and half with DataCopyPad tails, exact; a row softmax with V→S
//! events against float64; ReduceSum in half in the NPU's tree order), and each planted fault
//! ends the launch with a clear message and a failing status. The ACL stand-in
//! (`targets/ascend_emu/acl/`) is checked here on its own too.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::build_with_ascend_emulation;

fn here() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// Builds `tests/ascend_emu/<name>.cpp` against the header into `dir`.
fn build(name: &str, dir: &Path) -> PathBuf {
    let exe = dir.join(name);
    let src = here().join(format!("tests/ascend_emu/{name}.cpp"));
    build_with_ascend_emulation(&src, &exe, &["-Wall", "-Wextra", "-Werror"]);
    exe
}

fn run(exe: &Path, args: &[&str]) -> (Output, String) {
    let o = Command::new(exe).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o, text)
}

#[test]
fn correct_kernels_compute_the_right_numbers() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "add_double_buffer",
        "softmax_rows",
        "reduce_order",
        "compare_select",
    ] {
        let (o, text) = run(&build(name, dir.path()), &[]);
        print!("{text}");
        assert!(o.status.success(), "{name}: {text}");
    }
}

#[test]
fn planted_faults_are_caught_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let exe = build("faults", dir.path());
    let (o, text) = run(&exe, &["0"]);
    assert!(o.status.success(), "no fault planted: {text}");
    for (fault, expected) in [
        (
            "1",
            "DataCopy GM->UB: 10 elements = 40 bytes: GM<->UB copies move whole 32-byte blocks",
        ),
        (
            "2",
            "InitBuffer: Unified Buffer overflow: 102400 more bytes with 102400 of 196608 in use",
        ),
        ("3", "DeQue: queue 0 is empty (an EnQue missing?)"),
        ("4", "blocks 0 and 1 both write GM buffer"),
        ("5", "Exp: UB operand at byte 4 is not 32-byte aligned"),
        (
            "6",
            "kernel end: queue 0 still holds buffer 0 (allocated, never freed)",
        ),
    ] {
        let (o, text) = run(&exe, &[fault]);
        assert_eq!(o.status.code(), Some(1), "fault {fault}: {text}");
        assert!(
            text.starts_with("ascend-emu: faulty") && text.contains(expected),
            "fault {fault}: {text}"
        );
        assert_eq!(text.lines().count(), 1, "one line: {text}");
    }
    // A Compare over a partial 256-byte repeat (10 floats): the NPU leaves the tail uncomputed.
    let (o, text) = run(&build("compare_select", dir.path()), &["partial"]);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(
        text.contains("Compare: 10 elements = 40 bytes: Compare works on whole 256-byte repeats"),
        "{text}"
    );
    // The UB size follows TBC_ASCEND_UB_BYTES (256 KiB: Ascend 910): the same plan then fits.
    let o = Command::new(&exe)
        .arg("2")
        .env("TBC_ASCEND_UB_BYTES", "262144")
        .output()
        .unwrap();
    assert!(o.status.success());
}

/// Our stand-in for ACL and aclnn (`targets/ascend_emu/acl/`, what the emulated Ascend trainer
/// runs on) on its own: right numbers, and misuse is an error with a message.
#[test]
fn the_acl_stand_in_computes_and_refuses_misuse() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("acl_standin");
    let acl = here().join("ascend_emu/acl");
    let o = Command::new("g++")
        .args(["-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&exe)
        .arg(here().join("tests/ascend_emu/acl_standin.cpp"))
        .args(["ascendcl.cpp", "nnopbase.cpp", "opapi.cpp"].map(|f| acl.join(f)))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (o, text) = run(&exe, &[]);
    print!("{text}");
    assert!(o.status.success(), "{text}");
    assert_eq!(text.matches("ok ").count(), 10, "{text}");
}
