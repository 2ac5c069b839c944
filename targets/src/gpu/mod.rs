//! The GPU back end for loop kernels: a fused loop kernel → launches written as block programs
//! ([`writer`], [`kernels`]) → MLIR `gpu` dialect → NVVM → PTX text (LLVM's NVPTX back end,
//! `gpu-module-to-binary{format=isa}`, no CUDA toolkit needed). The driver JIT-compiles PTX
//! for the GPU it runs on, so `sm_80` PTX runs on A100, H100 and H200.
//!
//! # ABI
//! Every launch is a `.entry <kernel>_l<i>` whose parameters are the kernel's buffers as bare
//! device pointers: its inputs (in the kernel graph's input order), its outputs, then its
//! workspace buffers ([`GpuKernel::workspace`]), each a dense flat array of the node's dtype
//! (bool as one byte). Launches run in order on one stream; each has a 1-D grid and 1-D blocks
//! ([`Launch`]), and no launch needs dynamic shared memory.
//!
//! # Math
//! The same scalar code as the CPU (`crate::scalar`): f32 `exp`/`log`/`tanh`/`erf` as
//! polynomials (≤ 1.3 ulp), sqrt/abs/floor/fma/copysign as single PTX instructions (`.rn`,
//! correctly rounded), division and arithmetic IEEE (`div.rn`, `add.rn`, no contraction), so
//! no libdevice is linked. Reductions combine in a fixed tree: the same bits on every run.
//!
//! # Checked without a GPU
//! [`Flavor::CpuEmulation`] builds the same launches as one host function (loops over blocks,
//! phases and threads; see [`writer`]); the crate tests run it against the interpreter for
//! every loop kernel of the tiny phases, and assemble the PTX with `ptxas` when it is installed.

pub mod kernels;
pub mod library;
pub mod target;
pub mod writer;

pub use kernels::{build, GpuKernel, Launch};
pub use writer::{BufferParam, Flavor};

use crate::toolchain::{self, ToolchainError};
use ir::Graph;
use std::fmt::Write as _;

/// A value read by several launches' bodies is materialized when recomputing it costs at least
/// this much (the CPU's default, see `cpu::LowerOptions::shared_cost_limit`).
pub const SHARED_COST_LIMIT: usize = 8;

/// GPU architectures we generate PTX for.
pub const GPU_ARCHS: [&str; 2] = ["sm_80", "sm_90"];

/// The PTX ISA version of the generated code: accepted by CUDA 12.0+ drivers and ptxas, and
/// by sm_80 and sm_90.
pub const PTX_FEATURES: &str = "+ptx80";

/// Why a kernel could not be built for the GPU.
#[derive(Debug, thiserror::Error)]
pub enum GpuLowerError {
    #[error("kernel {kernel}: node %{node} ({op}) cannot be built by the GPU loop-kernel back end: {why}")]
    Unsupported {
        kernel: String,
        node: usize,
        op: &'static str,
        why: String,
    },
    #[error("kernel {kernel}: {message}")]
    Invalid { kernel: String, message: String },
    #[error("{what}: {source}")]
    Toolchain {
        what: String,
        #[source]
        source: ToolchainError,
    },
    #[error("unknown --gpu-arch '{0}' (known: sm_80, sm_90; sm_80 PTX also runs on newer GPUs)")]
    Arch(String),
}

/// Checks an architecture name.
pub fn check_arch(arch: &str) -> Result<(), GpuLowerError> {
    if GPU_ARCHS.contains(&arch) {
        Ok(())
    } else {
        Err(GpuLowerError::Arch(arch.to_string()))
    }
}

/// The `gpu.module @kernels` of `kernels` (built with [`Flavor::Gpu`]) in a container module.
pub fn gpu_module_text(kernels: &[GpuKernel]) -> String {
    let mut s =
        String::from("module attributes {gpu.container_module} {\n  gpu.module @kernels {\n");
    for k in kernels {
        s.push_str(&k.text);
    }
    s.push_str("  }\n}\n");
    s
}

/// The pass pipeline from [`gpu_module_text`] to a `gpu.binary` holding PTX for `arch`.
pub fn ptx_pipeline(arch: &str) -> String {
    format!(
        "builtin.module(nvvm-attach-target{{chip={arch} features={PTX_FEATURES} O=3}},\
         gpu.module(convert-scf-to-cf,convert-gpu-to-nvvm{{index-bitwidth=64 use-bare-ptr-memref-call-conv=1}},\
         canonicalize,cse,reconcile-unrealized-casts),gpu-module-to-binary{{format=isa}})"
    )
}

/// PTX text for the kernels of `module` (from [`gpu_module_text`]) for `arch`.
pub fn compile_ptx(module: &str, arch: &str) -> Result<String, GpuLowerError> {
    check_arch(arch)?;
    let wrap = |source| GpuLowerError::Toolchain {
        what: "PTX generation".into(),
        source,
    };
    let lowered = toolchain::lower_mlir(module, &ptx_pipeline(arch)).map_err(wrap)?;
    extract_assembly(&lowered).ok_or_else(|| GpuLowerError::Invalid {
        kernel: "gpu.module @kernels".into(),
        message: "gpu-module-to-binary produced no PTX assembly".into(),
    })
}

/// The PTX of the first `#gpu.object` in printed MLIR: its `assembly = "..."` string with
/// MLIR's escapes (`\0A`, `\22`, `\\`) decoded.
fn extract_assembly(mlir: &str) -> Option<String> {
    let start = mlir.find("assembly = \"")? + "assembly = \"".len();
    let bytes = mlir.as_bytes();
    let mut out = Vec::new();
    let mut i = start;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => return String::from_utf8(out).ok(),
            b'\\' if i + 1 < bytes.len() && bytes[i + 1] == b'\\' => {
                out.push(b'\\');
                i += 2;
            }
            b'\\' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    None
}

/// Builds `kernels` for the GPU: the `gpu`-dialect module text and each kernel's launches.
pub fn build_all(kernels: &[(&Graph, &str)]) -> Result<Vec<GpuKernel>, GpuLowerError> {
    kernels
        .iter()
        .map(|(g, name)| build(g, name, Flavor::Gpu))
        .collect()
}

/// A human-readable launch table (for `--compile-to codegen` and `--emit ptx`).
pub fn launch_table(kernels: &[GpuKernel]) -> String {
    let mut s = String::new();
    for k in kernels {
        let ws: Vec<String> = k
            .workspace()
            .iter()
            .map(|p| format!("{}[{}]", p.dtype, p.len))
            .collect();
        writeln!(
            s,
            "// {}: {} inputs, {} outputs, workspace [{}]",
            k.name,
            k.inputs,
            k.outputs,
            ws.join(", ")
        )
        .unwrap();
        for l in &k.launches {
            writeln!(s, "//   {} grid {} block {}", l.entry, l.grid, l.threads).unwrap();
        }
    }
    s
}

/// The host module of `kernels` built with [`Flavor::CpuEmulation`]: one `func.func
/// @emu_<name>` each (memref arguments, `llvm.emit_c_interface`).
pub fn emulation_module_text(kernels: &[GpuKernel]) -> String {
    let mut s = String::from("module {\n");
    for k in kernels {
        s.push_str(&k.text);
    }
    s.push_str("}\n");
    s
}

/// Lowers [`emulation_module_text`] to the LLVM dialect for the host.
pub fn emulation_pipeline() -> String {
    format!(
        "builtin.module(canonicalize,cse,{})",
        toolchain::CPU_TO_LLVM_PASSES
    )
}

/// Compiles `kernels` (built with [`Flavor::CpuEmulation`]) into a host object that exports
/// `void tbc_emu_<name>(void *const *buffers, int64_t part)` per kernel (the buffers in the
/// kernel's parameter order; `part` is 0). `cpu` is an LLVM CPU name. Optimized at O1: the
/// emulation is for checking, and O3 on a thousand kernels takes minutes.
pub fn compile_emulation(kernels: &[GpuKernel], cpu: &str) -> Result<Vec<u8>, GpuLowerError> {
    let wrap = |source| GpuLowerError::Toolchain {
        what: "CPU emulation of GPU kernels".into(),
        source,
    };
    let mut llvm = toolchain::mlir_to_llvm_ir_with_pipeline(
        &emulation_module_text(kernels),
        &emulation_pipeline(),
    )
    .map_err(wrap)?;
    for k in kernels {
        let layouts: Vec<crate::cpu::ArgLayout> = k
            .params
            .iter()
            .map(|p| crate::cpu::ArgLayout {
                shape: vec![p.len.max(1)],
                strides: vec![1],
                part_offset: 0,
            })
            .collect();
        llvm.push_str(&crate::cpu::buffers_entry_of(
            &format!("emu_{}", k.name),
            &layouts,
            1,
            0,
        ));
    }
    toolchain::compile_llvm_ir_to_object_with(&llvm, cpu, "default<O1>").map_err(wrap)
}
