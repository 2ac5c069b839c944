//! The Ascend back end: fused loop kernels become Ascend C vector kernels, built as MLIR EmitC
//! modules at the tile level (`TPipe`, double-buffered `TQue`s, CopyIn / Compute / CopyOut, the
//! multi-core split by `GetBlockIdx()`, the vector calls as `emitc.call_opaque`; shared pieces in
//! `emitc.rs`), sized by the tiling planner (`tiling.rs`) and printed to C++ by MLIR's C++
//! emitter. Kernel classes: element-wise (`elementwise.rs`), rows and column sums (`rows.rs`),
//! full reductions (`whole.rs`), moves (`moves.rs`). `project.rs` writes the kernel project,
//! `target.rs` the trainer beside it. `ascend_emu/kernel_operator.h` is our CPU emulation of the
//! Ascend C API subset and `ascend_emu/acl/` our stand-in for ACL and aclnn, which the tests and
//! the emulated trainer run on.

mod elem;
mod elementwise;
mod emitc;
mod erf;
mod logic;
mod moves;
mod parts;
mod project;
mod random;
mod rows;
pub mod target;
pub mod tiling;
mod whole;

use std::path::PathBuf;
use std::process::Command;

/// Our emulation of CANN's `kernel_operator.h` (see the file's header).
pub const EMULATION_HEADER: &str = include_str!("../../ascend_emu/kernel_operator.h");

/// Our stand-in for the ACL runtime and its aclnn operators over host memory (see
/// `acl_standin.h`): the kernel project builds it with the emulation, and trainers run on it.
pub const ACL_STANDIN: [(&str, &str); 4] = [
    (
        "acl_standin.h",
        include_str!("../../ascend_emu/acl/acl_standin.h"),
    ),
    (
        "ascendcl.cpp",
        include_str!("../../ascend_emu/acl/ascendcl.cpp"),
    ),
    (
        "nnopbase.cpp",
        include_str!("../../ascend_emu/acl/nnopbase.cpp"),
    ),
    ("opapi.cpp", include_str!("../../ascend_emu/acl/opapi.cpp")),
];

/// A built kernel: its EmitC module and how it runs.
#[derive(Clone, Debug)]
pub struct AscendKernel {
    pub name: String,
    /// The EmitC module (`mlir-translate --mlir-to-cpp` prints it as Ascend C).
    pub mlir: String,
    /// Vector cores it runs on.
    pub block_dim: usize,
    /// Unified Buffer bytes its buffers take.
    pub ub_bytes: usize,
    /// Parameters in order: the kernel's inputs, then its outputs (`GM_ADDR` each).
    pub params: usize,
    /// Its tiling struct: the planner's values the kernel reads (`tiling.<field>`), by field.
    pub tiling: Vec<(String, usize)>,
}

/// Builds loop kernel `k` (named `name`) for `soc`: an element-wise kernel when every tensor of
/// it has one shape, else a row kernel (values along the last axis, rows split over the cores).
pub fn build_kernel(
    k: &ir::Graph,
    name: &str,
    soc: &tiling::AscendSoc,
) -> Result<AscendKernel, AscendError> {
    let mut shapes = k
        .nodes
        .iter()
        .map(|n| &n.ty.shape)
        .filter(|s| !s.is_empty());
    let first = shapes.next();
    if moves::is_move(k) {
        moves::build(k, name, soc)
    } else if whole::is_whole(k) {
        whole::build(k, name, soc)
    } else if shapes.all(|s| Some(s) == first)
        && !k.nodes.iter().any(|n| matches!(n.op, ir::Op::Iota { .. }))
    {
        elementwise::build(k, name, soc)
    } else {
        rows::build(k, name, soc)
    }
}

/// An Ascend back-end failure.
#[derive(Debug, thiserror::Error)]
pub enum AscendError {
    #[error("kernel {kernel}: {why}")]
    Unsupported { kernel: String, why: String },
    #[error("kernel {kernel}: does not fit the {soc} Unified Buffer: {why}")]
    DoesNotFit {
        kernel: String,
        soc: &'static str,
        why: String,
    },
    #[error("MLIR's C++ emitter: {0}")]
    Translate(String),
}

/// MLIR 22's `mlir-translate` (the C++ emitter): on PATH as `mlir-translate-22`, or in the LLVM
/// prefix `scripts/setup.sh` installs.
fn mlir_translate() -> PathBuf {
    let prefixed = PathBuf::from("/usr/lib/llvm-22/bin/mlir-translate");
    if prefixed.is_file() {
        prefixed
    } else {
        PathBuf::from("mlir-translate-22")
    }
}

/// Verifies an EmitC module and prints it as C++ (`mlir-translate --mlir-to-cpp`).
pub fn emitc_to_cpp(module: &str) -> Result<String, AscendError> {
    let dir = tempfile::tempdir().map_err(|e| AscendError::Translate(e.to_string()))?;
    let path = dir.path().join("kernel.mlir");
    std::fs::write(&path, module).map_err(|e| AscendError::Translate(e.to_string()))?;
    let tool = mlir_translate();
    let o = Command::new(&tool)
        .arg("--mlir-to-cpp")
        .arg(&path)
        .output()
        .map_err(|e| {
            AscendError::Translate(format!(
                "cannot run {} ({e}); scripts/setup.sh installs LLVM/MLIR 22",
                tool.display()
            ))
        })?;
    if !o.status.success() {
        return Err(AscendError::Translate(
            String::from_utf8_lossy(&o.stderr).trim().to_string(),
        ));
    }
    String::from_utf8(o.stdout).map_err(|e| AscendError::Translate(e.to_string()))
}
