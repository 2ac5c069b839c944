//! The CPU back end for loop kernels: a fused loop kernel (`compiler::exec::kernel_graph`) →
//! MLIR (linalg on tensors, memref ABI) → LLVM IR → native object code.
//!
//! # ABI
//! Each kernel is `func.func @<name>` with `llvm.emit_c_interface`, so the object exports
//! `_mlir_ciface_<name>(D*, …)`: one ranked memref descriptor `D = {allocated, aligned, offset,
//! sizes[rank], strides[rank]}` per kernel input (`in0, in1, …` in order), then one per output
//! (`out0, out1, …`). Buffers are dense row-major with the static shapes of the kernel graph
//! (the kernel never reads the descriptor's sizes/strides). Element types: f32, f64, i32, and
//! bool as one byte (0 or 1; any non-zero byte reads as true). An output may share its buffer
//! with an input only when every read of that input is at the output's own index — the
//! planner's in-place rule (elementwise kernels, which lower to a single multi-output generic).
//! Kernels allocate temporaries (`malloc`/`free`) only for values they must materialize (the
//! accumulator of a reduction that is not an output, shared expensive intermediates, pads).
//!
//! For callers that do not want to build descriptors, every compiled kernel also exports
//! `void tbc_<name>(void *const *buffers, int64_t part)`: the data pointers of the whole
//! inputs then outputs, in the same order (the static shapes fill in the descriptors), and
//! `const int64_t tbc_<name>_parts`.
//!
//! # Threads
//! A kernel may be split into `tbc_<name>_parts` independent parts (see [`partition`]): the
//! caller runs `tbc_<name>(buffers, p)` for every `p` in `0..parts`, on any threads, in any
//! order, and the kernel is done when all have returned. Parts never write the same bytes and
//! read only what the kernel reads as a whole. No threading runtime is linked into kernels.
//!
//! # Schedules
//! * [`Schedule::Loops`]: bufferize, `convert-linalg-to-loops`, lower (LLVM's own vectorizer
//!   still runs at O3). The correctness baseline.
//! * [`Schedule::Vectorized`]: a transform-dialect script generated per kernel tiles *every*
//!   linalg op on its own (innermost dim by the largest divisor ≤ 64, or ≤ 256 when it is
//!   reduced; every other dim by 1, so reductions over outer dims become element-wise vector
//!   adds), vectorizes the tiles, lowers multi-reductions, and reassociates fp reductions. Nothing is vectorized untiled
//!   (see `MLIR_NOTES.md`), except ops whose whole iteration space already fits in one tile.
//!
//! # Math
//! f32 `exp`/`log`/`tanh`/`erf` are emitted as polynomial code (`math.rs`; ≤ 1.3 ulp over dense
//! sweeps); f64 uses `math.exp` etc., which become libm calls (correct, not vectorized).
//!
//! # Measured (2-vCPU Zen 4 VM shared with other jobs; `cargo test --release -p targets --test
//! cpu_kernels bench -- --ignored --nocapture`)
//! | kernel | loops | vectorized, 1 thread | 8 parts, 2 threads | PyTorch eager 1 / 2 threads |
//! |---|---|---|---|---|
//! | LayerNorm 2048×768 | 2.5 ms | 0.27 ms | 0.17 ms | 0.37 / 0.19 ms |
//! | bias + GELU (tanh) 2048×3072 | 3.6 ms | 2.46 ms | 1.25 ms | 8.5 / 4.6 ms |
//! | bias + GELU (erf) 2048×3072 | 4.1 ms | 3.13 ms | 1.57 ms | 4.4 / 2.0 ms |
//! | softmax 32×12×64×64 | 1.5 ms | 0.77 ms | 0.40 ms | 0.84 / 0.41 ms |
//! | dropout 32×12×64×64 (Philox) | 3.1 ms | 2.1 ms | 1.0 ms | 7.5 / 7.2 ms (other RNG) |
//!
//! All 900 loop kernels of a td1 step (BERT-base teacher, 4L-384 student, batch 32, seq 64):
//! 187 ms on one thread (loops schedule: 331 ms), compiled as one module in ~30 s.

pub(crate) mod lower;

pub mod partition;
pub mod trainer;
pub use trainer::CpuTarget;

pub use crate::scalar::mem_ty;
use crate::toolchain::{self, ToolchainError};
use ir::{DType, Graph};
pub use lower::OpTiling;
use std::fmt::Write as _;

/// Why a kernel could not be lowered or compiled.
#[derive(Debug, thiserror::Error)]
pub enum LowerError {
    #[error("kernel {kernel}: node %{node} ({op}) cannot be lowered by the CPU loop-kernel back end: {why}")]
    UnsupportedOp {
        kernel: String,
        node: usize,
        op: &'static str,
        why: String,
    },
    #[error("kernel {kernel}: node %{node} ({op}) uses dtype {dtype}; the CPU back end supports f32, f64, i32 and bool")]
    UnsupportedDType {
        kernel: String,
        node: usize,
        op: &'static str,
        dtype: DType,
    },
    #[error("kernel {kernel}: {message}")]
    Invalid { kernel: String, message: String },
    #[error("kernel {kernel}: {source}")]
    Toolchain {
        kernel: String,
        #[source]
        source: ToolchainError,
    },
}

/// How loop kernels are turned into loops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// `convert-linalg-to-loops`: scalar loops (LLVM may still vectorize them).
    Loops,
    /// Transform-dialect tiling + MLIR vectorization.
    Vectorized,
}

/// One lowered kernel function.
#[derive(Clone, Debug)]
pub struct KernelFunc {
    pub name: String,
    /// The `func.func` text (indented for a module body).
    pub text: String,
    /// Every `linalg.fill` / `linalg.generic` of the function, in order.
    pub tilings: Vec<OpTiling>,
    /// Number of independent parts (1: not partitioned).
    pub parts: usize,
    /// Extent of one part along the partition axis (the function's `%off` is `part · chunk`).
    pub part_chunk: usize,
    /// Memref layout of every argument (inputs, then outputs).
    pub args: Vec<ArgLayout>,
}

/// How one argument's descriptor is built from its buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct ArgLayout {
    /// Sizes the function sees (the partition axis is one chunk).
    pub shape: Vec<usize>,
    /// Row-major strides of the whole tensor.
    pub strides: Vec<usize>,
    /// Element offset of part `p` is `p · part_offset` (0 when the tensor is not split).
    pub part_offset: usize,
}

/// Lowering options.
#[derive(Clone, Debug, PartialEq)]
pub struct LowerOptions {
    /// Split kernels into at most this many independent parts (1: never split).
    pub max_parts: usize,
    /// Only split when each part still has this many elements of work.
    pub min_part_work: usize,
    /// Accumulate f32 `reduce_sum`/`reduce_mean` in f64 like the interpreter (a gradient that
    /// cancels to ~1e-8 of its terms still matches; costs ~20 % on a LayerNorm).
    pub f32_sums_in_f64: bool,
    /// A value read by several generics is materialized instead of recomputed when its
    /// recomputation costs at least this much (`exp`/`tanh`/`erf`/`log` count 20, Philox 60,
    /// `sqrt`/`div` 4, other arithmetic 1, index changes 0).
    pub shared_cost_limit: usize,
}

impl Default for LowerOptions {
    /// Not partitioned (one part).
    fn default() -> Self {
        LowerOptions {
            max_parts: 1,
            min_part_work: 1 << 15,
            f32_sums_in_f64: true,
            shared_cost_limit: 8,
        }
    }
}

impl LowerOptions {
    /// Up to 8 parts of at least 32 Ki elements: enough parallelism for a few cores, parts
    /// small enough that temporaries stay in cache.
    pub fn parallel() -> Self {
        LowerOptions {
            max_parts: 8,
            ..LowerOptions::default()
        }
    }
}

/// Compilation options.
#[derive(Clone, Debug, PartialEq)]
pub struct CpuOptions {
    pub schedule: Schedule,
    /// LLVM CPU name (see [`toolchain::DEFAULT_CPU`]) or `"native"`.
    pub cpu: String,
    pub lower: LowerOptions,
}

impl Default for CpuOptions {
    fn default() -> Self {
        CpuOptions {
            schedule: Schedule::Vectorized,
            cpu: toolchain::DEFAULT_CPU.to_string(),
            lower: LowerOptions::parallel(),
        }
    }
}

/// Compiled kernels: one object, and the part count of each kernel (in the order given).
#[derive(Clone, Debug)]
pub struct CompiledKernels {
    pub object: Vec<u8>,
    pub parts: Vec<usize>,
}

pub(crate) fn row_major_strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

/// Bufferization with the memref ABI (no `linalg-fuse-elementwise-ops`: the lowering already
/// fused what should be fused).
const BUFFERIZE: &str = "eliminate-empty-tensors,empty-tensor-to-alloc-tensor,\
one-shot-bufferize{bufferize-function-boundaries function-boundary-type-conversion=identity-layout-map},\
canonicalize,cse,buffer-deallocation-pipeline";

/// The MLIR pass pipeline for `schedule`.
pub fn pipeline(schedule: Schedule) -> String {
    let tail = toolchain::CPU_TO_LLVM_PASSES;
    match schedule {
        Schedule::Loops => format!(
            "builtin.module(canonicalize,cse,{BUFFERIZE},convert-linalg-to-loops,canonicalize,{tail})"
        ),
        Schedule::Vectorized => format!(
            "builtin.module(transform-interpreter,symbol-dce,canonicalize,cse,{BUFFERIZE},\
             convert-linalg-to-loops,func.func(convert-vector-to-scf{{full-unroll target-rank=1}}),\
             func.func(lower-vector-multi-reduction),convert-math-to-llvm,convert-math-to-libm,\
             convert-vector-to-llvm{{reassociate-fp-reductions}},canonicalize,{tail})"
        ),
    }
}

/// Lowers one kernel to its function, not partitioned (see [`lower_loop_kernel`] for the
/// module text).
pub fn lower_kernel_func(k: &Graph, name: &str) -> Result<KernelFunc, LowerError> {
    lower::lower_func(k, name, &LowerOptions::default())
}

/// Lowers one kernel to its function with `options`.
pub fn lower_kernel_func_with(
    k: &Graph,
    name: &str,
    options: &LowerOptions,
) -> Result<KernelFunc, LowerError> {
    lower::lower_func(k, name, options)
}

/// The MLIR module (one public `func.func @name`, memref ABI, linalg on tensors) of loop
/// kernel `k`, before any scheduling.
pub fn lower_loop_kernel(k: &Graph, name: &str) -> Result<String, LowerError> {
    Ok(module_text(&[lower_kernel_func(k, name)?], Schedule::Loops))
}

/// The MLIR module of several kernels; with [`Schedule::Vectorized`] it also holds the
/// transform script (a private `@__transform_main`, removed by `symbol-dce` after use).
pub fn module_text(funcs: &[KernelFunc], schedule: Schedule) -> String {
    let mut s = String::new();
    match schedule {
        Schedule::Loops => s.push_str("module {\n"),
        Schedule::Vectorized => s.push_str("module attributes {transform.with_named_sequence} {\n"),
    }
    for f in funcs {
        s.push_str(&f.text);
    }
    if schedule == Schedule::Vectorized {
        s.push_str(&transform_script(funcs));
    }
    s.push_str("}\n");
    s
}

/// Tile sizes of one op (0 = not tiled), or `None` when the op is small enough to vectorize
/// whole (rank 0, or a single tile). Every tile, and every op left whole, has at most
/// [`MAX_TILE_ELEMENTS`] elements: nothing large is ever vectorized untiled.
pub fn tile_sizes(t: &OpTiling) -> Option<Vec<usize>> {
    let r = t.space.len();
    if r == 0 {
        return None;
    }
    let mut ts = vec![1; r];
    let cap = if t.reduction[r - 1] {
        lower::INNER_REDUCTION_TILE
    } else {
        lower::INNER_TILE
    };
    ts[r - 1] = lower::divisor_at_most(t.space[r - 1], cap);
    let sizes: Vec<usize> = ts
        .iter()
        .zip(&t.space)
        .map(|(&a, &s)| if a >= s { 0 } else { a })
        .collect();
    if sizes.iter().all(|&s| s == 0) {
        None
    } else {
        Some(sizes)
    }
}

/// The largest vector a tile (or an untiled op) can produce.
pub const MAX_TILE_ELEMENTS: usize = lower::INNER_REDUCTION_TILE;

/// The transform-dialect script that tiles and vectorizes every kernel in `funcs`.
pub fn transform_script(funcs: &[KernelFunc]) -> String {
    const ANY: &str = "!transform.any_op";
    let mut s = String::new();
    writeln!(
        s,
        "  transform.named_sequence private @__transform_main(%root: {ANY} {{transform.readonly}}) {{"
    )
    .unwrap();
    for (fi, f) in funcs.iter().enumerate() {
        let plans: Vec<Option<Vec<usize>>> = f.tilings.iter().map(tile_sizes).collect();
        if plans.iter().all(Option::is_none) {
            continue;
        }
        writeln!(
            s,
            "    %f{fi} = transform.structured.match ops{{[\"func.func\"]}} attributes {{sym_name = \"{}\"}} in %root : ({ANY}) -> {ANY}",
            f.name
        )
        .unwrap();
        writeln!(
            s,
            "    %ops{fi} = transform.structured.match ops{{[\"linalg.generic\", \"linalg.fill\"]}} in %f{fi} : ({ANY}) -> {ANY}"
        )
        .unwrap();
        let n = plans.len();
        let handles: Vec<String> = if n == 1 {
            vec![format!("%ops{fi}")]
        } else {
            let tys = vec![ANY; n].join(", ");
            writeln!(
                s,
                "    %h{fi}:{n} = transform.split_handle %ops{fi} : ({ANY}) -> ({tys})"
            )
            .unwrap();
            (0..n).map(|j| format!("%h{fi}#{j}")).collect()
        };
        for (j, plan) in plans.iter().enumerate() {
            let Some(sizes) = plan else { continue };
            let loops = sizes.iter().filter(|&&x| x > 0).count();
            let list: Vec<String> = sizes.iter().map(|x| x.to_string()).collect();
            let tys = vec![ANY; loops + 1].join(", ");
            let lp = if loops == 1 {
                format!("%l{fi}_{j}")
            } else {
                format!("%l{fi}_{j}:{loops}")
            };
            writeln!(
                s,
                "    %t{fi}_{j}, {lp} = transform.structured.tile_using_for {} tile_sizes [{}] : ({ANY}) -> ({tys})",
                handles[j],
                list.join(", ")
            )
            .unwrap();
        }
    }
    writeln!(
        s,
        "    %funcs = transform.structured.match ops{{[\"func.func\"]}} in %root : ({ANY}) -> {ANY}"
    )
    .unwrap();
    writeln!(
        s,
        "    %vf = transform.structured.vectorize_children_and_apply_patterns %funcs : ({ANY}) -> {ANY}"
    )
    .unwrap();
    s.push_str(&format!(
        "    transform.apply_patterns to %vf {{\n      transform.apply_patterns.canonicalization\n      transform.apply_patterns.tensor.fold_tensor_subset_ops_into_vector_transfers\n      transform.apply_patterns.vector.lower_multi_reduction lowering_strategy = \"innerreduction\"\n    }} : {ANY}\n"
    ));
    writeln!(s, "    transform.apply_cse to %vf : {ANY}").unwrap();
    s.push_str("    transform.yield\n  }\n");
    s
}

/// LLVM IR of `void tbc_<name>(void *const *buffers, int64_t part)`, which builds the memref
/// descriptors of part `part` on its stack and calls `_mlir_ciface_<name>`, and of the constant
/// `int64_t tbc_<name>_parts`.
pub fn buffers_entry(f: &KernelFunc) -> String {
    buffers_entry_of(&f.name, &f.args, f.parts, f.part_chunk)
}

/// [`buffers_entry`] of a function `name` with memref arguments `layouts`, split into `parts`
/// parts of `part_chunk` along its partition axis.
pub fn buffers_entry_of(
    name: &str,
    layouts: &[ArgLayout],
    parts: usize,
    part_chunk: usize,
) -> String {
    let mut s = format!(
        "\n@tbc_{name}_parts = constant i64 {parts}\n\ndefine void @tbc_{name}(ptr %bufs, i64 %part) {{\nentry:\n"
    );
    let mut args = Vec::new();
    for (i, a) in layouts.iter().enumerate() {
        let r = a.shape.len();
        let sty = if r == 0 {
            "{ ptr, ptr, i64 }".to_string()
        } else {
            format!("{{ ptr, ptr, i64, [{r} x i64], [{r} x i64] }}")
        };
        let arr = |v: &[usize]| {
            let items: Vec<String> = v.iter().map(|x| format!("i64 {x}")).collect();
            format!("[{r} x i64] [{}]", items.join(", "))
        };
        let init = if r == 0 {
            format!("{sty} {{ ptr null, ptr null, i64 0 }}")
        } else {
            format!(
                "{sty} {{ ptr null, ptr null, i64 0, {}, {} }}",
                arr(&a.shape),
                arr(&a.strides)
            )
        };
        writeln!(s, "  %p{i} = getelementptr ptr, ptr %bufs, i64 {i}").unwrap();
        writeln!(s, "  %b{i} = load ptr, ptr %p{i}, align 8").unwrap();
        writeln!(s, "  %x{i} = insertvalue {init}, ptr %b{i}, 0").unwrap();
        writeln!(s, "  %y{i} = insertvalue {sty} %x{i}, ptr %b{i}, 1").unwrap();
        let last = if a.part_offset > 0 {
            writeln!(s, "  %o{i} = mul i64 %part, {}", a.part_offset).unwrap();
            writeln!(s, "  %z{i} = insertvalue {sty} %y{i}, i64 %o{i}, 2").unwrap();
            format!("%z{i}")
        } else {
            format!("%y{i}")
        };
        writeln!(s, "  %d{i} = alloca {sty}, align 8").unwrap();
        writeln!(s, "  store {sty} {last}, ptr %d{i}, align 8").unwrap();
        args.push(format!("ptr %d{i}"));
    }
    if parts > 1 {
        writeln!(s, "  %off = mul i64 %part, {part_chunk}").unwrap();
        args.push("i64 %off".to_string());
    }
    writeln!(s, "  call void @_mlir_ciface_{name}({})", args.join(", ")).unwrap();
    s.push_str("  ret void\n}\n");
    s
}

/// Lowers and compiles several kernels into one object (one `_mlir_ciface_<name>`,
/// `tbc_<name>` and `tbc_<name>_parts` each).
pub fn compile_loop_kernels(
    kernels: &[(&Graph, &str)],
    options: &CpuOptions,
) -> Result<CompiledKernels, LowerError> {
    let funcs = kernels
        .iter()
        .map(|(k, name)| lower_kernel_func_with(k, name, &options.lower))
        .collect::<Result<Vec<_>, _>>()?;
    let label = match kernels {
        [(_, name)] => name.to_string(),
        _ => format!("module of {} kernels", kernels.len()),
    };
    let text = module_text(&funcs, options.schedule);
    let wrap = |source| LowerError::Toolchain {
        kernel: label.clone(),
        source,
    };
    let mut llvm = toolchain::mlir_to_llvm_ir_with_pipeline(&text, &pipeline(options.schedule))
        .map_err(wrap)?;
    for f in &funcs {
        llvm.push_str(&buffers_entry(f));
    }
    let object = toolchain::compile_llvm_ir_to_object(&llvm, &options.cpu).map_err(wrap)?;
    Ok(CompiledKernels {
        object,
        parts: funcs.iter().map(|f| f.parts).collect(),
    })
}

/// Lowers and compiles loop kernel `k` (vectorized, split into up to 8 parts) into an object
/// file exporting `_mlir_ciface_<name>`, `tbc_<name>` and `tbc_<name>_parts`. `cpu` is an LLVM
/// CPU name (see [`toolchain::DEFAULT_CPU`]) or `"native"`.
pub fn compile_loop_kernel(k: &Graph, name: &str, cpu: &str) -> Result<Vec<u8>, LowerError> {
    let options = CpuOptions {
        cpu: cpu.to_string(),
        ..CpuOptions::default()
    };
    Ok(compile_loop_kernels(&[(k, name)], &options)?.object)
}
