//! End-to-end tests of the MLIR → LLVM IR → object path: lower small
//! `linalg.generic` kernels, compile them, link the object into a shared
//! library with the system `cc`, load it and call `_mlir_ciface_<name>`.

use std::{path::Path, process::Command};

use targets::toolchain::{
    compile_llvm_ir_to_object, lower_mlir, mlir_to_llvm_ir, mlir_to_llvm_ir_with_pipeline,
    ToolchainError, DEFAULT_CPU,
};

/// `out = a * b + 1` on 16 floats, memref ABI of `MLIR_NOTES.md` §1. The
/// output starts as `tensor.empty`, so this also checks that
/// `eliminate-empty-tensors` makes the generic write straight into `out`.
const MUL_ADD: &str = r#"
#id = affine_map<(i) -> (i)>
func.func @mul_add(%a_m: memref<16xf32>, %b_m: memref<16xf32>, %out_m: memref<16xf32>)
    attributes {llvm.emit_c_interface} {
  %a = bufferization.to_tensor %a_m restrict : memref<16xf32> to tensor<16xf32>
  %b = bufferization.to_tensor %b_m restrict : memref<16xf32> to tensor<16xf32>
  %init = tensor.empty() : tensor<16xf32>
  %r = linalg.generic {indexing_maps = [#id, #id, #id], iterator_types = ["parallel"]}
      ins(%a, %b : tensor<16xf32>, tensor<16xf32>) outs(%init : tensor<16xf32>) {
  ^bb0(%x: f32, %y: f32, %o: f32):
    %one = arith.constant 1.0 : f32
    %p = arith.mulf %x, %y : f32
    %s = arith.addf %p, %one : f32
    linalg.yield %s : f32
  } -> tensor<16xf32>
  bufferization.materialize_in_destination %r in restrict writable %out_m
      : (tensor<16xf32>, memref<16xf32>) -> ()
  return
}
"#;

/// `out[i, j] = exp(x[i, j] + bias[j])` with dynamic shapes: exercises the
/// descriptor sizes/strides, a broadcast map and a libm call (`expf`).
const BIAS_EXP: &str = r#"
#row = affine_map<(i, j) -> (i, j)>
#col = affine_map<(i, j) -> (j)>
func.func @bias_exp(%x_m: memref<?x?xf32>, %b_m: memref<?xf32>, %out_m: memref<?x?xf32>)
    attributes {llvm.emit_c_interface} {
  %x = bufferization.to_tensor %x_m restrict : memref<?x?xf32> to tensor<?x?xf32>
  %b = bufferization.to_tensor %b_m restrict : memref<?xf32> to tensor<?xf32>
  %out = bufferization.to_tensor %out_m restrict writable : memref<?x?xf32> to tensor<?x?xf32>
  %r = linalg.generic {indexing_maps = [#row, #col, #row],
                       iterator_types = ["parallel", "parallel"]}
      ins(%x, %b : tensor<?x?xf32>, tensor<?xf32>) outs(%out : tensor<?x?xf32>) {
  ^bb0(%v: f32, %c: f32, %o: f32):
    %s = arith.addf %v, %c : f32
    %e = math.exp %s : f32
    linalg.yield %e : f32
  } -> tensor<?x?xf32>
  bufferization.materialize_in_destination %r in restrict writable %out_m
      : (tensor<?x?xf32>, memref<?x?xf32>) -> ()
  return
}
"#;

/// The ranked memref descriptor that `_mlir_ciface_*` functions take by pointer.
#[repr(C)]
struct Memref<const RANK: usize> {
    allocated: *mut f32,
    aligned: *mut f32,
    offset: i64,
    sizes: [i64; RANK],
    strides: [i64; RANK],
}

impl<const RANK: usize> Memref<RANK> {
    /// A contiguous row-major view of `data` with `shape`.
    fn new(data: &mut [f32], shape: [i64; RANK]) -> Self {
        assert_eq!(data.len() as i64, shape.iter().product::<i64>());
        let mut strides = [1i64; RANK];
        for dim in (0..RANK.saturating_sub(1)).rev() {
            strides[dim] = strides[dim + 1] * shape[dim + 1];
        }
        Self {
            allocated: data.as_mut_ptr(),
            aligned: data.as_mut_ptr(),
            offset: 0,
            sizes: shape,
            strides,
        }
    }
}

/// Writes `object` into `dir`, links it into a shared library with the
/// system `cc` and loads it.
fn link_and_load(dir: &Path, name: &str, object: &[u8]) -> libloading::Library {
    let object_path = dir.join(format!("{name}.o"));
    let library_path = dir.join(format!("lib{name}.so"));
    std::fs::write(&object_path, object).unwrap();
    let output = Command::new("cc")
        .arg("-shared")
        .arg("-o")
        .arg(&library_path)
        .arg(&object_path)
        .arg("-lm")
        .output()
        .expect("run the system `cc`");
    assert!(
        output.status.success(),
        "cc -shared failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // SAFETY: the library is the object we just compiled; it has no
    // initializers besides what LLVM emits for plain kernels.
    unsafe { libloading::Library::new(&library_path).unwrap() }
}

fn assert_elf_object(object: &[u8]) {
    assert!(object.len() > 64, "object is {} bytes", object.len());
    assert_eq!(&object[..4], b"\x7fELF", "not an ELF file");
    // e_type (little endian) at offset 16: 1 = ET_REL (relocatable object).
    assert_eq!(
        u16::from_le_bytes([object[16], object[17]]),
        1,
        "not ET_REL"
    );
}

#[test]
fn elementwise_kernel_lowers_compiles_links_and_runs() {
    let llvm_ir = mlir_to_llvm_ir(MUL_ADD).unwrap();
    assert!(llvm_ir.contains("define void @mul_add("), "{llvm_ir}");
    assert!(
        llvm_ir.contains("define void @_mlir_ciface_mul_add("),
        "{llvm_ir}"
    );
    // Written in place: no allocation is left in the kernel.
    assert!(!llvm_ir.contains("@malloc"), "{llvm_ir}");

    let object = compile_llvm_ir_to_object(&llvm_ir, DEFAULT_CPU).unwrap();
    assert_elf_object(&object);

    let dir = tempfile::tempdir().unwrap();
    let library = link_and_load(dir.path(), "mul_add", &object);
    type Kernel = unsafe extern "C" fn(*mut Memref<1>, *mut Memref<1>, *mut Memref<1>);
    // SAFETY: the signature matches the emitted C interface (three rank-1 descriptors).
    let kernel = unsafe { library.get::<Kernel>(b"_mlir_ciface_mul_add").unwrap() };

    let mut a: Vec<f32> = (0..16).map(|i| i as f32 * 0.5 - 3.0).collect();
    let mut b: Vec<f32> = (0..16).map(|i| 2.0 - i as f32 * 0.25).collect();
    let mut out = vec![f32::NAN; 16];
    let (mut da, mut db, mut dout) = (
        Memref::new(&mut a, [16]),
        Memref::new(&mut b, [16]),
        Memref::new(&mut out, [16]),
    );
    // SAFETY: the descriptors point at live buffers of the declared shape.
    unsafe { kernel(&mut da, &mut db, &mut dout) };
    for i in 0..16 {
        let expected = a[i] * b[i] + 1.0;
        assert!(
            (out[i] - expected).abs() <= 1e-6 * expected.abs().max(1.0),
            "out[{i}] = {}, expected {expected}",
            out[i]
        );
    }
}

#[test]
fn dynamic_shape_kernel_with_libm_call_runs_on_native_cpu() {
    let llvm_ir = mlir_to_llvm_ir(BIAS_EXP).unwrap();
    assert!(
        llvm_ir.contains("define void @_mlir_ciface_bias_exp("),
        "{llvm_ir}"
    );
    let object = compile_llvm_ir_to_object(&llvm_ir, "native").unwrap();
    assert_elf_object(&object);

    let dir = tempfile::tempdir().unwrap();
    let library = link_and_load(dir.path(), "bias_exp", &object);
    type Kernel = unsafe extern "C" fn(*mut Memref<2>, *mut Memref<1>, *mut Memref<2>);
    // SAFETY: matches the emitted C interface (rank 2, rank 1, rank 2).
    let kernel = unsafe { library.get::<Kernel>(b"_mlir_ciface_bias_exp").unwrap() };

    let (rows, cols) = (7usize, 37usize); // odd sizes: vector loop + remainder
    let mut x: Vec<f32> = (0..rows * cols)
        .map(|k| ((k * 7919) % 97) as f32 / 97.0 * 4.0 - 2.0)
        .collect();
    let mut bias: Vec<f32> = (0..cols).map(|j| j as f32 * 0.01 - 0.2).collect();
    let mut out = vec![f32::NAN; rows * cols];
    let shape = [rows as i64, cols as i64];
    let (mut dx, mut db, mut dout) = (
        Memref::new(&mut x, shape),
        Memref::new(&mut bias, [cols as i64]),
        Memref::new(&mut out, shape),
    );
    // SAFETY: the descriptors point at live buffers of the declared shape.
    unsafe { kernel(&mut dx, &mut db, &mut dout) };
    for i in 0..rows {
        for j in 0..cols {
            let expected = (x[i * cols + j] + bias[j]).exp();
            let got = out[i * cols + j];
            assert!(
                (got - expected).abs() <= 1e-5 * expected.abs(),
                "out[{i},{j}] = {got}, expected {expected}"
            );
        }
    }
}

#[test]
fn malformed_mlir_is_an_error_with_the_diagnostic() {
    let error =
        mlir_to_llvm_ir("func.func @broken(%x: f32) -> f32 {\n  return %y : f32\n}\n").unwrap_err();
    match &error {
        ToolchainError::MlirParse(message) => {
            assert!(message.contains("error"), "{message}");
            assert!(message.contains("undeclared SSA value"), "{message}");
            // The location of the bad use: line 2, column 10.
            assert!(message.contains(":2:10"), "{message}");
        }
        other => panic!("expected MlirParse, got {other:?}"),
    }
    assert!(error.to_string().starts_with("MLIR parse error"));

    // Not even MLIR.
    assert!(matches!(
        mlir_to_llvm_ir("this is not MLIR"),
        Err(ToolchainError::MlirParse(_))
    ));
    // melior's parser takes a C string: a NUL byte must not panic.
    assert!(matches!(
        mlir_to_llvm_ir("module {}\0"),
        Err(ToolchainError::MlirParse(_))
    ));
}

#[test]
fn unknown_pass_is_a_pipeline_parse_error() {
    let error = mlir_to_llvm_ir_with_pipeline(MUL_ADD, "builtin.module(no-such-pass)").unwrap_err();
    match &error {
        ToolchainError::PassPipelineParse { message, .. } => {
            assert!(message.contains("no-such-pass"), "{message}")
        }
        other => panic!("expected PassPipelineParse, got {other:?}"),
    }
}

#[test]
fn failing_pass_is_a_pipeline_error() {
    // Writing %a into %b in place while %b is still returned afterwards is a
    // read-after-write conflict that one-shot-bufferize must refuse.
    let text = r#"
func.func @t(%a: tensor<4xf32>, %b: tensor<4xf32>) -> (tensor<4xf32>, tensor<4xf32>) {
  %r = bufferization.materialize_in_destination %a in %b : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  return %r, %b : tensor<4xf32>, tensor<4xf32>
}
"#;
    match mlir_to_llvm_ir(text) {
        Err(ToolchainError::PassPipeline { message, .. }) => {
            assert!(message.contains("RaW conflict"), "{message}");
            assert!(message.contains(":3:8"), "{message}");
        }
        other => panic!("expected PassPipeline, got {other:?}"),
    }
}

#[test]
fn module_not_in_llvm_dialect_fails_translation() {
    // Bufferized only: memref/scf ops are left, which have no LLVM IR translation.
    let error = mlir_to_llvm_ir_with_pipeline(MUL_ADD, "builtin.module(canonicalize)").unwrap_err();
    assert!(
        matches!(error, ToolchainError::Translation(_)),
        "expected Translation, got {error:?}"
    );
}

#[test]
fn lower_mlir_returns_intermediate_text() {
    let bufferized = lower_mlir(
        MUL_ADD,
        &format!(
            "builtin.module({},convert-linalg-to-loops)",
            targets::toolchain::CPU_BUFFERIZE_PASSES
        ),
    )
    .unwrap();
    assert!(bufferized.contains("scf.for"), "{bufferized}");
    assert!(!bufferized.contains("tensor<"), "{bufferized}");
}

#[test]
fn bad_llvm_ir_is_an_error() {
    assert!(matches!(
        compile_llvm_ir_to_object("define i32 @f( {", DEFAULT_CPU),
        Err(ToolchainError::LlvmParse(_))
    ));
    // Parses, but %x does not dominate its use: only the verifier catches it.
    let not_dominating = "define i32 @f(i1 %c) {\nentry:\n  br i1 %c, label %a, label %b\na:\n  %x = add i32 1, 2\n  br label %b\nb:\n  ret i32 %x\n}\n";
    match compile_llvm_ir_to_object(not_dominating, DEFAULT_CPU) {
        Err(ToolchainError::LlvmVerify(message)) => {
            assert!(message.contains("dominate"), "{message}")
        }
        other => panic!("expected LlvmVerify, got {other:?}"),
    }
}
