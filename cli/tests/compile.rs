//! `tbc compile`: stages, dumps, determinism and bad flags.

use std::path::{Path, PathBuf};
use std::process::Command;

fn micro(f: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("tests/fixtures/micro")
        .join(f)
        .display()
        .to_string()
}

fn tbc(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tbc"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn compile_args(stage: &str) -> Vec<String> {
    [
        "compile",
        "--target",
        "cpu",
        "--phases",
        "td1,td2",
        "--teacher-config",
        &micro("teacher.json"),
        "--student-config",
        &micro("student.json"),
        "--batch",
        "2",
        "--seq-len",
        "4",
        "--compile-to",
        stage,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn run(args: &[String]) -> (bool, String, String) {
    let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    tbc(&a)
}

#[test]
fn every_available_stage_is_deterministic() {
    for stage in ["frontend", "autodiff", "simplify", "fuse", "plan", "lower"] {
        let (ok, first, err) = run(&compile_args(stage));
        assert!(ok, "{stage}: {err}");
        assert!(
            first.contains("// ===== td1:") && first.contains("// ===== td2:"),
            "{stage}"
        );
        let (_, second, _) = run(&compile_args(stage));
        assert_eq!(first, second, "{stage} output differs between runs");
    }
}

#[test]
fn fusion_and_plan_snapshot() {
    let mut args = compile_args("plan");
    args[4] = "td1".into();
    let (ok, out, err) = run(&args);
    assert!(ok, "{err}");
    insta::assert_snapshot!("micro_td1_plan", out);
}

#[test]
fn dump_after_prints_intermediate_stages() {
    let mut args = compile_args("fuse");
    args.extend([
        "--dump-after".to_string(),
        "autodiff".to_string(),
        "--dump-after".to_string(),
        "simplify".to_string(),
    ]);
    let (ok, out, err) = run(&args);
    assert!(ok, "{err}");
    assert!(out.contains("// ----- td1: after autodiff -----"));
    assert!(out.contains("// ----- td2: after simplify -----"));
    assert!(out.contains("fusion \"td2\""));
}

#[test]
fn output_file_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let o: PathBuf = dir.path().join("td.plan");
    let mut args = compile_args("plan");
    args.extend(["-o".to_string(), o.display().to_string()]);
    let (ok, out, err) = run(&args);
    assert!(ok, "{err}");
    assert!(out.is_empty());
    assert!(std::fs::read_to_string(&o)
        .unwrap()
        .contains("memory plan \"td1\": arena"));
}

#[test]
fn bad_flags_are_clear_errors() {
    let (ok, _, err) = tbc(&["compile", "--target", "tpu", "--compile-to", "plan"]);
    assert!(
        !ok && err.contains("unknown target 'tpu' (known targets: cpu, gpu, ascend)"),
        "{err}"
    );
    let (ok, _, err) = tbc(&["compile", "--compile-to", "optimize"]);
    assert!(!ok && err.contains("unknown stage 'optimize' (stages: frontend, autodiff, simplify, fuse, plan, lower, codegen, link)"), "{err}");
    let (ok, _, err) = tbc(&["compile", "--compile-to", "plan", "--phases", "gd,td9"]);
    assert!(!ok && err.contains("unknown phase 'td9'"), "{err}");
    let (ok, _, err) = tbc(&[
        "compile",
        "--compile-to",
        "plan",
        "--dump-after",
        "nonsense",
    ]);
    assert!(
        !ok && err.contains("unknown --dump-after 'nonsense'"),
        "{err}"
    );
    let (ok, _, err) = tbc(&["compile", "--compile-to", "link"]);
    assert!(
        !ok && err.contains("linking a trainer needs an output path: -o trainer"),
        "{err}"
    );
    // An unknown Ascend SoC is named; an Ascend trainer is a directory, not a file.
    let (ok, _, err) = tbc(&["compile", "--target", "ascend", "--ascend-soc", "ascend310"]);
    assert!(
        !ok && err.contains("unknown --ascend-soc 'ascend310' (known: ascend910b, ascend910)"),
        "{err}"
    );
    assert!(!err.contains("panicked"));
    let d = tempfile::tempdir().unwrap();
    let o = d.path().join("trainer");
    std::fs::write(&o, "mine").unwrap();
    let (ok, _, err) = tbc(&[
        "compile",
        "--target",
        "ascend",
        "--phases",
        "td1",
        "-o",
        o.to_str().unwrap(),
    ]);
    assert!(
        !ok && err.contains("an Ascend trainer is a directory (the trainer and its kernel project), and this is a file"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&o).unwrap(), "mine");
    let (ok, out, err) = tbc(&[
        "compile",
        "--target",
        "gpu",
        "--compile-to",
        "plan",
        "--phases",
        "td1",
    ]);
    assert!(ok && out.contains("memory plan \"td1\""), "{err}");
}

#[test]
fn missing_system_linker_is_a_clear_error() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let lib = root.join("target/debug/libruntime.a");
    assert!(
        lib.is_file(),
        "{} missing: run `cargo build -p runtime` first (make test does)",
        lib.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("trainer");
    let compile = |cc: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tbc"));
        c.args([
            "compile",
            "--phases",
            "eval",
            "--teacher-config",
            &micro("teacher.json"),
        ])
        .args([
            "--student-config",
            &micro("student.json"),
            "--batch",
            "2",
            "--seq-len",
            "4",
        ])
        .args(["-o", out_path.to_str().unwrap()])
        .env("TBC_RUNTIME_LIB", &lib);
        match cc {
            Some(cc) => c.env("CC", cc),
            None => c.env_remove("CC"),
        };
        c.output().unwrap()
    };
    let out = compile(Some("/nonexistent/cc"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(
            "no system linker: '/nonexistent/cc' was not found (install gcc or clang, or set CC)"
        ),
        "{err}"
    );
    assert!(!err.contains("panicked"));
    assert!(!out_path.exists(), "no half-written trainer");
    // With the real linker the same command works and the trainer runs.
    let ok = compile(None);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let info = Command::new(&out_path).arg("info").output().unwrap();
    let info = String::from_utf8_lossy(&info.stdout).to_string();
    assert!(info.lines().any(|l| l.starts_with("eval ")), "{info}");
}

/// `--target gpu`: gpu-dialect MLIR at `lower`, PTX at `codegen` and with `--emit ptx DIR`, and
/// a trainer that describes itself anywhere and says what is missing on a machine without a
/// CUDA driver.
#[test]
fn gpu_target_writes_mlir_ptx_and_a_trainer_that_needs_a_cuda_driver() {
    let d = tempfile::tempdir().unwrap();
    let models = [
        "--teacher-config".to_string(),
        micro("teacher.json"),
        "--student-config".to_string(),
        micro("student.json"),
        "--batch".to_string(),
        "2".to_string(),
        "--seq-len".to_string(),
        "4".to_string(),
    ];
    let gpu = |extra: &[&str]| {
        let mut a: Vec<String> = ["compile", "--target", "gpu", "--phases", "td1,eval"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(models.iter().cloned());
        a.extend(extra.iter().map(|s| s.to_string()));
        run(&a)
    };
    let (ok, out, err) = gpu(&["--compile-to", "lower"]);
    assert!(ok, "{err}");
    assert!(out.contains("gpu.module @kernels") && out.contains("gpu.shuffle xor"));
    let (ok, out, err) = gpu(&["--compile-to", "codegen", "--gpu-arch", "sm_90"]);
    assert!(ok, "{err}");
    assert!(out.contains(".target sm_90") && out.contains(".entry td1_k"));
    let dir = d.path().join("ptx");
    let (ok, _, err) = gpu(&["--emit", "ptx", dir.to_str().unwrap()]);
    assert!(ok, "{err}");
    for phase in ["td1", "eval"] {
        let ptx = std::fs::read_to_string(dir.join(format!("{phase}.ptx"))).unwrap();
        assert!(ptx.contains(".target sm_80"));
        let table: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("{phase}.launches.json"))).unwrap(),
        )
        .unwrap();
        let entries: Vec<String> = table
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|k| k["launches"].as_array().unwrap().clone())
            .map(|l| l["entry"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ptx.matches(".entry ").count(), entries.len());
        for e in &entries {
            assert!(
                ptx.contains(&format!(".entry {e}(")),
                "{e} missing from {phase}.ptx"
            );
        }
    }
    // A GPU trainer: it describes itself anywhere; without a CUDA driver every command that
    // needs the GPU says so and exits 1.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let lib = root.join("target/debug/libruntime.a");
    assert!(
        lib.is_file(),
        "run `cargo build -p runtime` first (make test does)"
    );
    let trainer = d.path().join("trainer");
    let mut args: Vec<String> = ["compile", "--target", "gpu", "--phases", "td1,eval"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(models.iter().cloned());
    args.extend([
        "--precision".into(),
        "fp16".into(),
        "-o".into(),
        trainer.display().to_string(),
    ]);
    let out = Command::new(env!("CARGO_BIN_EXE_tbc"))
        .args(&args)
        .env("TBC_RUNTIME_LIB", &lib)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info = Command::new(&trainer).arg("info").output().unwrap();
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(
        info.status.success() && text.contains("target gpu (sm_80)"),
        "{text}"
    );
    let fixtures = root.join("tests/fixtures/micro");
    let step = Command::new(&trainer)
        .args(["step", "--phase", "eval", "--out"])
        .arg(d.path().join("out.safetensors"))
        .arg("--weights")
        .arg(fixtures.join("weights.safetensors"))
        .arg("--batch")
        .arg(fixtures.join("batch.safetensors"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&step.stderr);
    if Path::new("/dev/nvidiactl").exists() {
        println!("SKIPPED the no-driver check: this machine has an NVIDIA driver ({err})");
    } else {
        assert_eq!(step.status.code(), Some(1), "{err}");
        assert!(
            err.contains("no CUDA driver found") && err.contains("--target gpu"),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    let (ok, _, err) = gpu(&["--compile-to", "codegen", "--gpu-arch", "sm_70"]);
    assert!(!ok && err.contains("unknown --gpu-arch 'sm_70'"), "{err}");
    let (ok, _, err) = gpu(&["--compile-to", "plan", "--emit", "ptx", "x"]);
    assert!(!ok && err.contains("--emit writes generated code"), "{err}");
    let (ok, _, err) = gpu(&["--emit", "cubin", "x"]);
    assert!(
        !ok && err.contains("--emit cubin: target gpu emits 'ptx'"),
        "{err}"
    );
    let (ok, _, err) = tbc(&["compile", "--emit", "ptx", "x"]);
    assert!(
        !ok && err.contains("--emit: target cpu writes no kernel files"),
        "{err}"
    );
}

/// `--target ascend --emit ascend-c DIR` writes every kernel of the phases as Ascend C, their
/// launchers and a CMake project; the project configures and builds here against the CPU
/// emulation (`-DTBC_ASCEND_EMULATION=ON`) into a library exporting one launcher per kernel.
#[test]
fn the_ascend_kernel_project_builds_on_the_emulation() {
    let Ok(cmake) = which_cmake() else {
        panic!("cmake is missing: scripts/setup.sh installs it");
    };
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("ascend");
    // A kernel left by an earlier compile into the same folder is removed.
    std::fs::create_dir_all(project.join("kernels")).unwrap();
    std::fs::write(project.join("kernels/stale_k0.cpp"), "#error stale").unwrap();
    let (ok, _, err) = tbc(&[
        "compile",
        "--target",
        "ascend",
        "--phases",
        "td1,eval",
        "--teacher-config",
        &micro("teacher.json"),
        "--student-config",
        &micro("student.json"),
        "--batch",
        "2",
        "--seq-len",
        "4",
        "--emit",
        "ascend-c",
        project.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let table: serde_json::Value =
        serde_json::from_slice(&std::fs::read(project.join("kernels.json")).unwrap()).unwrap();
    let kernels = table["kernels"].as_array().unwrap();
    assert!(kernels.len() > 50, "{} kernels", kernels.len());
    let files = std::fs::read_dir(project.join("kernels")).unwrap().count();
    assert_eq!(files, kernels.len());
    let build = dir.path().join("build");
    for args in [
        vec![
            "-S".to_string(),
            project.display().to_string(),
            "-B".to_string(),
            build.display().to_string(),
            "-DTBC_ASCEND_EMULATION=ON".to_string(),
        ],
        vec![
            "--build".to_string(),
            build.display().to_string(),
            "-j2".to_string(),
        ],
    ] {
        let o = Command::new(&cmake).args(&args).output().unwrap();
        assert!(
            o.status.success(),
            "cmake {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // The ACL stand-in the emulated trainer runs on is built with the kernels.
    for stand_in in ["libascendcl.so", "libnnopbase.so", "libopapi.so"] {
        assert!(build.join(stand_in).is_file(), "{stand_in} not built");
    }
    // Every kernel's tiling struct is in the table and at the top of its source.
    for k in kernels {
        let tiling = k["tiling"].as_object().unwrap();
        let name = k["kernel"].as_str().unwrap();
        let src = std::fs::read_to_string(project.join(format!("kernels/{name}.cpp"))).unwrap();
        for (field, value) in tiling {
            assert!(
                src.contains(&format!("int64_t {field};")) && src.contains(&value.to_string()),
                "{name}: tiling.{field} = {value} not in its source"
            );
        }
    }
    assert!(kernels
        .iter()
        .any(|k| k["tiling"].get("perBlock").is_some()));
    let lib = build.join("libtbc_ascend_kernels.so");
    let o = Command::new("nm").arg("-D").arg(&lib).output().unwrap();
    let symbols = String::from_utf8_lossy(&o.stdout);
    for k in kernels {
        let launcher = k["launcher"].as_str().unwrap();
        assert!(
            symbols.contains(launcher),
            "{launcher} missing from {}",
            lib.display()
        );
    }
    // Without CANN and without the emulation switch, the project says what to install.
    let o = Command::new(&cmake)
        .args(["-S", project.to_str().unwrap(), "-B"])
        .arg(dir.path().join("npu"))
        .env("ASCEND_HOME_PATH", dir.path().join("no-cann"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && text.contains("CANN not found under"),
        "{text}"
    );
}

fn which_cmake() -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("cmake"))
                .find(|c| c.is_file())
        })
        .ok_or(())
}

/// Every kernel of every phase at the real shapes (BERT-base teacher, both presets' students,
/// the default batch and sequence) is planned within the 910B Unified Buffer.
#[test]
fn the_ascend_kernels_of_the_real_shapes_fit_the_910b() {
    for preset in ["mindspore", "paper"] {
        let (ok, out, err) = tbc(&[
            "compile",
            "--target",
            "ascend",
            "--preset",
            preset,
            "--phases",
            "gd,td1,td2,eval,ft,eval_teacher",
            "--compile-to",
            "lower",
        ]);
        assert!(ok, "{preset}: {err}");
        let kernels = out.matches("emitc.func @").count();
        assert!(kernels > 300, "{preset}: {kernels} kernels");
    }
}
