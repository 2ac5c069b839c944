//! The link stage end to end: compile small kernels with the CPU back end, build the
//! glue object (kernel table, plans blob, `main`), link it with
//! a stand-in runtime (C, and a Rust staticlib) into an executable and run it.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use targets::{
    cpu::{compile_loop_kernels, CpuOptions},
    link::{
        glue_llvm_ir, glue_object, link_executable, link_executable_with, LinkError, LinkOptions,
    },
    toolchain::DEFAULT_CPU,
};

/// The demo kernels as IR graphs: `demo_k0`: `out[i, j] = a[i, j] * b[j] + 1` on a 2x3 matrix
/// (the broadcast of `b` makes wrong sizes or strides visible); `demo_k1`:
/// `out[] = sum(exp(x)) * s[]` (rank-0 arguments and a transcendental).
fn demo_kernel_graphs() -> Vec<(ir::Graph, &'static str)> {
    use ir::{Builder, DType, ReduceKind, TensorType};
    let f32t = |s: &[usize]| TensorType::new(DType::F32, s.to_vec());
    let mut b = Builder::new("demo_k0");
    let a = b.input("in0", f32t(&[2, 3]));
    let v = b.input("in1", f32t(&[3]));
    let vb = b.broadcast(v, &[2, 3], &[1]);
    let m = b.mul(a, vb);
    let o = b.add_scalar(m, 1.0);
    b.output("out0", o);
    let k0 = b.finish();
    let mut b = Builder::new("demo_k1");
    let x = b.input("in0", f32t(&[4]));
    let sc = b.input("in1", f32t(&[]));
    let e = b.exp(x);
    let sum = b.reduce_all(ReduceKind::Sum, e);
    let o = b.mul(sum, sc);
    b.output("out0", o);
    vec![(k0, "demo_k0"), (b.finish(), "demo_k1")]
}

/// The stand-in runtime: lists the table, runs both kernels through their
/// table entries (every part), prints the results, argv[1] and the plans blob, returns 7.
const FAKE_RUNTIME_C: &str = r#"
#include <stdio.h>
#include <string.h>

typedef void (*kernel_fn)(void** data, long part);
struct tbc_kernel { const char* name; kernel_fn run; const long* parts; };

static const struct tbc_kernel* find(const struct tbc_kernel* table, long n, const char* name) {
  for (long i = 0; i < n; i++)
    if (strcmp(table[i].name, name) == 0) return &table[i];
  return 0;
}

static void call(const struct tbc_kernel* k, void** args) {
  for (long p = 0; p < *k->parts; p++) k->run(args, p);
}

int tbc_trainer_main(int argc, char** argv, const struct tbc_kernel* table, long n,
                     const unsigned char* plans, long len) {
  printf("argc=%d arg1=%s n=%ld\n", argc, argc > 1 ? argv[1] : "-", n);
  for (long i = 0; i < n; i++) printf("kernel %ld %s\n", i, table[i].name);
  const struct tbc_kernel* k0 = find(table, n, "demo_k0");
  const struct tbc_kernel* k1 = find(table, n, "demo_k1");
  if (!k0 || !k1) { fprintf(stderr, "kernel missing\n"); return 3; }

  static float a[6] = {1, 2, 3, 4, 5, 6}, b[3] = {0.5f, -1, 2}, out[6];
  void* args0[3] = {a, b, out};
  call(k0, args0);
  printf("k0");
  for (int i = 0; i < 6; i++) printf(" %g", out[i]);
  printf("\n");

  static float x[4] = {0, 1, 2, 3}, s = 0.5f, r = -1;
  void* args1[3] = {x, &s, &r};
  call(k1, args1);
  printf("k1 %.5f\n", r);

  printf("plans=%.*s len=%ld\n", (int)len, (const char*)plans, len);
  return 7;
}
"#;

/// The stand-in runtime as a Rust staticlib: uses std (threads, panics
/// caught across a thread, formatting) like the real runtime will, so the
/// system library list is exercised for real.
const FAKE_RUNTIME_RS: &str = r#"
use std::ffi::{c_char, c_int, c_void, CStr};

#[repr(C)]
pub struct Kernel { name: *const c_char, run: unsafe extern "C" fn(*mut *mut c_void, i64), parts: *const i64 }

#[no_mangle]
pub unsafe extern "C" fn tbc_trainer_main(
    argc: c_int, _argv: *const *const c_char, table: *const Kernel, n: i64,
    plans: *const u8, len: i64,
) -> c_int {
    let table = std::slice::from_raw_parts(table, n as usize);
    let plans = std::slice::from_raw_parts(plans, len as usize);
    let names: Vec<String> = table
        .iter()
        .map(|k| CStr::from_ptr(k.name).to_string_lossy().into_owned())
        .collect();
    let entry = &table[names.iter().position(|name| name == "demo_k0").unwrap()];
    let (k0, parts) = (entry.run as usize, *entry.parts);
    let out = std::thread::spawn(move || {
        let k0: unsafe extern "C" fn(*mut *mut c_void, i64) = std::mem::transmute(k0);
        let (mut a, mut b, mut out) = ([1f32, 2., 3., 4., 5., 6.], [0.5f32, -1., 2.], [0f32; 6]);
        let mut args = [a.as_mut_ptr().cast(), b.as_mut_ptr().cast(), out.as_mut_ptr().cast()];
        for p in 0..parts { k0(args.as_mut_ptr(), p); }
        out
    })
    .join()
    .unwrap();
    let caught = std::panic::catch_unwind(|| panic!("expected")).is_err();
    println!("rust argc={argc} kernels={names:?} k0={out:?} caught={caught} plans={}",
             String::from_utf8_lossy(plans));
    0
}
"#;

/// The demo kernel object plus the glue object with `tbc_plans = "hello"`.
fn demo_objects(dir: &Path) -> Vec<PathBuf> {
    let graphs = demo_kernel_graphs();
    let refs: Vec<(&ir::Graph, &str)> = graphs.iter().map(|(g, n)| (g, *n)).collect();
    let kernels = compile_loop_kernels(&refs, &CpuOptions::default()).unwrap();
    let kernel_path = dir.join("kernels.o");
    std::fs::write(&kernel_path, kernels.object).unwrap();
    let glue = glue_object(&DEMO_SYMBOLS, &[("tbc_plans", b"hello")], DEFAULT_CPU).unwrap();
    assert_eq!(&glue[..4], b"\x7fELF");
    let glue_path = dir.join("glue.o");
    std::fs::write(&glue_path, glue).unwrap();
    vec![kernel_path, glue_path]
}

const DEMO_SYMBOLS: [&str; 2] = ["demo_k0", "demo_k1"];

fn run(command: &mut Command) -> std::process::Output {
    let output = command.output().expect("run command");
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn needed_libraries(executable: &Path) -> String {
    let output = Command::new("readelf")
        .arg("-d")
        .arg(executable)
        .output()
        .expect("readelf");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.contains("(NEEDED)"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn glue_links_with_a_c_runtime_and_runs_kernels_through_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let mut objects = demo_objects(dir.path());
    let c_path = dir.path().join("fake_runtime.c");
    std::fs::write(&c_path, FAKE_RUNTIME_C).unwrap();
    let runtime_object = dir.path().join("fake_runtime.o");
    run(Command::new("cc")
        .args(["-c", "-O2", "-fPIC", "-o"])
        .arg(&runtime_object)
        .arg(&c_path));
    objects.push(runtime_object);

    let exe = dir.path().join("trainer");
    link_executable(&objects, &[], &exe).unwrap();
    let output = Command::new(&exe).arg("td1").output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(7), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "argc=2 arg1=td1 n=2", "{stdout}");
    assert_eq!(lines[1], "kernel 0 demo_k0", "{stdout}");
    assert_eq!(lines[2], "kernel 1 demo_k1", "{stdout}");
    assert_eq!(lines[3], "k0 1.5 -1 7 3 -4 13", "{stdout}");
    let k1: f64 = lines[4].strip_prefix("k1 ").unwrap().parse().unwrap();
    let expected = (0..4).map(|i| f64::from(i).exp()).sum::<f64>() * 0.5;
    assert!((k1 - expected).abs() < 1e-4, "{k1} vs {expected}");
    assert_eq!(lines[5], "plans=hello len=5", "{stdout}");
    assert_eq!(lines.len(), 6, "{stdout}");

    // No temporary file is left next to the executable.
    assert!(
        !names_in(dir.path())
            .iter()
            .any(|name| name.ends_with(".tmp")),
        "{:?}",
        names_in(dir.path())
    );
    let needed = needed_libraries(&exe);
    for stub in ["libpthread", "libdl", "librt", "libutil"] {
        assert!(!needed.contains(stub), "{needed}");
    }

    // Stripped: smaller, same behaviour.
    let stripped = dir.path().join("trainer-stripped");
    let options = LinkOptions {
        strip: true,
        ..LinkOptions::from_env()
    };
    link_executable_with(&options, &objects, &[], &stripped).unwrap();
    let output = Command::new(&stripped).output().unwrap();
    assert_eq!(output.status.code(), Some(7));
    assert!(String::from_utf8_lossy(&output.stdout).contains("k0 1.5 -1 7 3 -4 13"));
    let size = |path: &Path| std::fs::metadata(path).unwrap().len();
    assert!(size(&stripped) < size(&exe));
    eprintln!(
        "C runtime: executable {} bytes, stripped {} bytes",
        size(&exe),
        size(&stripped)
    );
}

#[test]
fn glue_links_with_a_rust_staticlib() {
    let dir = tempfile::tempdir().unwrap();
    let objects = demo_objects(dir.path());
    let source = dir.path().join("fake_runtime.rs");
    std::fs::write(&source, FAKE_RUNTIME_RS).unwrap();
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    run(Command::new(rustc)
        .args([
            "--crate-type",
            "staticlib",
            "--crate-name",
            "fake_runtime",
            "--edition",
            "2021",
            "-O",
            "-o",
        ])
        .arg(dir.path().join("libfake_runtime.a"))
        .arg(&source));
    let library = dir.path().join("libfake_runtime.a");

    for strip in [false, true] {
        let exe = dir.path().join(format!("trainer-{strip}"));
        let options = LinkOptions {
            strip,
            ..LinkOptions::from_env()
        };
        link_executable_with(&options, &objects, std::slice::from_ref(&library), &exe).unwrap();
        let output = run(Command::new(&exe).arg("x"));
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            stdout.trim(),
            "rust argc=2 kernels=[\"demo_k0\", \"demo_k1\"] \
             k0=[1.5, -1.0, 7.0, 3.0, -4.0, 13.0] caught=true plans=hello"
        );
        eprintln!(
            "Rust staticlib runtime (strip {strip}): executable {} bytes; NEEDED:\n{}",
            std::fs::metadata(&exe).unwrap().len(),
            needed_libraries(&exe)
        );
    }
}

#[test]
fn glue_ir_has_table_blobs_and_main() {
    let ir = glue_llvm_ir(
        &DEMO_SYMBOLS,
        &[("tbc_plans", b"hello"), ("extra", &[0, 255])],
    )
    .unwrap();
    for expected in [
        "declare void @tbc_demo_k0(ptr, i64)",
        "@tbc_demo_k1_parts = external constant i64",
        "@tbc_kernel_table = constant [2 x { ptr, ptr, ptr }]",
        "@tbc_kernel_count = constant i64 2",
        "c\"demo_k1\\00\"",
        "@tbc_plans = constant [5 x i8] c\"hello\", align 16",
        "@tbc_plans_len = constant i64 5",
        "@extra = constant [2 x i8] c\"\\00\\FF\", align 16",
        "@extra_len = constant i64 2",
        "define i32 @main(i32 %0, ptr %1)",
        "call i32 @tbc_trainer_main(i32 %0, ptr %1, ptr @tbc_kernel_table, i64 2, ptr @tbc_plans, i64 5)",
    ] {
        assert!(ir.contains(expected), "missing `{expected}` in:\n{ir}");
    }

    // No kernels at all is fine (a plan of library steps only).
    let ir = glue_llvm_ir(&[], &[("tbc_plans", b"")]).unwrap();
    assert!(ir.contains("@tbc_kernel_count = constant i64 0"), "{ir}");
    assert!(glue_object(&[], &[("tbc_plans", b"")], DEFAULT_CPU).is_ok());
}

#[test]
fn glue_rejects_bad_names_collisions_and_a_missing_plans_blob() {
    let plans: &[(&str, &[u8])] = &[("tbc_plans", b"{}")];
    let kernel = |symbol: &'static str| symbol;

    let error = glue_object(&[kernel("k")], &[("other", b"x")], DEFAULT_CPU).unwrap_err();
    assert!(matches!(&error, LinkError::MissingBlob(name) if name == "tbc_plans"));
    assert!(
        error.to_string().contains("no blob named `tbc_plans`"),
        "{error}"
    );

    for bad in ["", "1k", "k-0", "k 0", "k\0"] {
        assert!(
            matches!(
                glue_llvm_ir(&[kernel(bad)], plans),
                Err(LinkError::InvalidName { what: "kernel", .. })
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        glue_llvm_ir(&[], &[("tbc_plans", b""), ("a.b", b"")]),
        Err(LinkError::InvalidName { what: "blob", .. })
    ));
    for (kernels, blobs, symbol) in [
        (vec![kernel("k"), kernel("k")], plans.to_vec(), "k"),
        (vec![kernel("main")], plans.to_vec(), "main"),
        (vec![], vec![plans[0], plans[0]], "tbc_plans"),
        (
            vec![],
            vec![plans[0], ("tbc_kernel_table", b"")],
            "tbc_kernel_table",
        ),
        (
            vec![kernel("k")],
            vec![plans[0], ("tbc_k_parts", b"")],
            "tbc_k_parts",
        ),
        (vec![kernel("k")], vec![plans[0], ("k", b"")], "k"),
        (
            vec![],
            vec![plans[0], ("tbc_plans_len", b"")],
            "tbc_plans_len",
        ),
    ] {
        match glue_llvm_ir(&kernels, &blobs) {
            Err(LinkError::DuplicateSymbol(name)) => assert_eq!(name, symbol),
            other => panic!("expected DuplicateSymbol({symbol}), got {other:?}"),
        }
    }
}

#[test]
fn missing_linker_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("trainer");
    for (cc, message) in [
        (
            "/nonexistent/cc",
            "no system linker: '/nonexistent/cc' was not found (install gcc or clang, or set CC)",
        ),
        (
            "tbc-no-such-cc --flag",
            "no system linker: 'tbc-no-such-cc' was not found on PATH (install gcc or clang, or set CC)",
        ),
    ] {
        let options = LinkOptions {
            cc: cc.into(),
            strip: false,
            extra_args: vec![],
        };
        let error = link_executable_with(&options, &[], &[], &out).unwrap_err();
        assert!(matches!(error, LinkError::NoLinker { .. }), "{error:?}");
        assert_eq!(error.to_string(), message);
    }
    assert!(
        names_in(dir.path()).is_empty(),
        "{:?}",
        names_in(dir.path())
    );
}

#[test]
fn failed_link_leaves_no_output_and_keeps_an_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let glue = glue_object(&[], &[("tbc_plans", b"x")], DEFAULT_CPU).unwrap();
    let glue_path = dir.path().join("glue.o");
    std::fs::write(&glue_path, glue).unwrap();

    // No runtime: `tbc_trainer_main` is undefined.
    let out = dir.path().join("trainer");
    let error = link_executable(std::slice::from_ref(&glue_path), &[], &out).unwrap_err();
    match &error {
        LinkError::LinkFailed { stderr, .. } => {
            assert!(stderr.contains("tbc_trainer_main"), "{stderr}")
        }
        other => panic!("expected LinkFailed, got {other:?}"),
    }
    assert!(
        error
            .to_string()
            .starts_with(&format!("linking {} failed", out.display())),
        "{error}"
    );
    assert_eq!(names_in(dir.path()), ["glue.o"]);

    // An executable from an earlier link survives a failed relink.
    std::fs::write(&out, b"old").unwrap();
    assert!(link_executable(&[glue_path], &[], &out).is_err());
    assert_eq!(std::fs::read(&out).unwrap(), b"old");
    assert_eq!(names_in(dir.path()), ["glue.o", "trainer"]);

    // The output directory must exist.
    let error = link_executable(&[], &[], &dir.path().join("no/such/dir/trainer")).unwrap_err();
    assert!(matches!(error, LinkError::Io { .. }), "{error:?}");
}
