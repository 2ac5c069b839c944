//! The MLIR → LLVM IR → object code path, end to end.
//!
//! * [`lower_mlir`] / [`mlir_to_llvm_ir`]: parse MLIR text with melior, run a
//!   textual pass pipeline (by default [`CPU_LOOPS_PIPELINE`], the "loops"
//!   CPU pipeline of `MLIR_NOTES.md` §2), and translate the LLVM-dialect
//!   module to LLVM IR text through the MLIR C API
//!   (`mlirTranslateModuleToLLVMIR`, which melior does not wrap).
//! * [`compile_llvm_ir_to_object`]: parse LLVM IR with inkwell, verify it,
//!   optimize it with the new pass manager (`default<O3>`) for a host
//!   `TargetMachine`, and emit a relocatable (PIC) ELF object into memory.
//!
//! Kernels follow the memref ABI of `MLIR_NOTES.md` §1: memref arguments,
//! `bufferization.to_tensor ... restrict [writable]` on entry,
//! `bufferization.materialize_in_destination ... restrict writable` for each
//! output, and `llvm.emit_c_interface`, so the object exports
//! `_mlir_ciface_<name>(D*, D*, ...)` with `D` the ranked memref descriptor
//! `{allocated, aligned, offset, sizes[rank], strides[rank]}`.
//!
//! Every failure is a [`ToolchainError`]; MLIR diagnostics are captured
//! (not printed to stderr) and carried in the error text.

use std::{
    ffi::CStr,
    sync::{Arc, Mutex, OnceLock},
};

use inkwell::{
    context::Context as LlvmContext,
    memory_buffer::MemoryBuffer,
    passes::PassBuilderOptions,
    targets::{CodeModel, FileType, InitializationConfig, RelocMode, Target, TargetMachine},
    OptimizationLevel,
};
use melior::{
    diagnostic::{Diagnostic, DiagnosticHandlerId, DiagnosticSeverity},
    dialect::DialectRegistry,
    ir::{operation::OperationLike, Module},
    pass::PassManager,
    utility::{
        parse_pass_pipeline, register_all_dialects, register_all_llvm_translations,
        register_all_passes,
    },
    Context,
};

/// CPU used by [`compile_llvm_ir_to_object`] callers that do not ask for
/// anything else: x86-64 with AVX2 + FMA (Intel Haswell, AMD Zen 1 and later).
/// Pass `"native"` to tune for (and require) the build machine's CPU.
pub const DEFAULT_CPU: &str = "x86-64-v3";

/// Tensor-level fusion and bufferization with the memref ABI (`PRE` in
/// `MLIR_NOTES.md` §2).
macro_rules! cpu_pre {
    () => {
        "linalg-fuse-elementwise-ops,eliminate-empty-tensors,empty-tensor-to-alloc-tensor,\
         one-shot-bufferize{bufferize-function-boundaries function-boundary-type-conversion=identity-layout-map},\
         canonicalize,cse,buffer-deallocation-pipeline"
    };
}

/// Lowering of scf/memref/arith/math/func to the LLVM dialect (`TAIL` in
/// `MLIR_NOTES.md` §2, without the mlir-opt-only polynomial approximation).
macro_rules! cpu_tail {
    () => {
        "convert-bufferization-to-memref,expand-strided-metadata,lower-affine,convert-scf-to-cf,\
         finalize-memref-to-llvm,convert-math-to-llvm,convert-math-to-libm,convert-arith-to-llvm,\
         convert-cf-to-llvm,convert-func-to-llvm,convert-index-to-llvm,convert-ub-to-llvm,\
         reconcile-unrealized-casts"
    };
}

/// The bufferization prefix of the CPU pipelines (comma-separated passes, no
/// `builtin.module(...)` wrapper), for composing other pipelines.
pub const CPU_BUFFERIZE_PASSES: &str = cpu_pre!();

/// The lowering-to-LLVM-dialect suffix of the CPU pipelines (comma-separated
/// passes, no `builtin.module(...)` wrapper), for composing other pipelines.
pub const CPU_TO_LLVM_PASSES: &str = cpu_tail!();

/// The baseline "loops" CPU pipeline: bufferize, `convert-linalg-to-loops`,
/// lower to the LLVM dialect. Correct for every kernel in `MLIR_NOTES.md`; not
/// fast (no tiling or vectorization at the MLIR level; LLVM's O3 loop
/// vectorizer still runs in [`compile_llvm_ir_to_object`]).
pub const CPU_LOOPS_PIPELINE: &str = concat!(
    "builtin.module(",
    cpu_pre!(),
    ",convert-linalg-to-loops,canonicalize,",
    cpu_tail!(),
    ")"
);

/// The LLVM new-pass-manager pipeline run by [`compile_llvm_ir_to_object`].
pub const LLVM_OPT_PIPELINE: &str = "default<O3>";

/// A failure anywhere on the MLIR → LLVM IR → object path.
#[derive(Debug, thiserror::Error)]
pub enum ToolchainError {
    /// The MLIR text did not parse or verify.
    #[error("MLIR parse error:\n{0}")]
    MlirParse(String),
    /// The textual pass pipeline is not valid (unknown pass, bad option).
    #[error("invalid MLIR pass pipeline `{pipeline}`: {message}")]
    PassPipelineParse { pipeline: String, message: String },
    /// A pass failed, or the IR did not verify after a pass.
    #[error("MLIR pass pipeline `{pipeline}` failed:\n{message}")]
    PassPipeline { pipeline: String, message: String },
    /// The lowered module could not be translated to LLVM IR (typically:
    /// ops that are not in the LLVM dialect are left over).
    #[error("MLIR to LLVM IR translation failed:\n{0}")]
    Translation(String),
    /// The LLVM IR text did not parse.
    #[error("LLVM IR parse error: {0}")]
    LlvmParse(String),
    /// The LLVM IR parsed but is not valid (`Module::verify`).
    #[error("LLVM IR verification failed: {0}")]
    LlvmVerify(String),
    /// No target machine for the host triple / requested CPU.
    #[error("LLVM target machine: {0}")]
    TargetMachine(String),
    /// The LLVM optimization pipeline failed.
    #[error("LLVM optimization pipeline `{pipeline}` failed: {message}")]
    Optimize { pipeline: String, message: String },
    /// Code generation (object emission) failed.
    #[error("LLVM object emission failed: {0}")]
    Emit(String),
}

/// Creates an MLIR context with every upstream dialect, pass and LLVM IR
/// translation registered.
fn new_mlir_context() -> Context {
    register_all_passes(); // global and idempotent (guarded by a `Once` in melior)
    let registry = DialectRegistry::new();
    register_all_dialects(&registry);
    let context = Context::new();
    context.append_dialect_registry(&registry);
    register_all_llvm_translations(&context);
    context
}

/// Collects the diagnostics emitted on a context while it is alive (they are
/// marked handled, so MLIR prints nothing to stderr), and detaches on drop.
struct DiagnosticCollector<'c> {
    context: &'c Context,
    id: Option<DiagnosticHandlerId>,
    // Arc<Mutex>: with a multi-threaded context MLIR may call the handler
    // from a pass-manager worker thread.
    messages: Arc<Mutex<Vec<String>>>,
}

impl<'c> DiagnosticCollector<'c> {
    fn attach(context: &'c Context) -> Self {
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&messages);
        let id = context.attach_diagnostic_handler(move |diagnostic| {
            let text = format_diagnostic(&diagnostic);
            sink.lock()
                .unwrap_or_else(|poison| poison.into_inner())
                .push(text);
            true
        });
        Self {
            context,
            id: Some(id),
            messages,
        }
    }

    /// All diagnostics so far, one per line (notes indented below theirs),
    /// or `fallback` when MLIR said nothing.
    fn take(&self, fallback: &str) -> String {
        let messages = std::mem::take(
            &mut *self
                .messages
                .lock()
                .unwrap_or_else(|poison| poison.into_inner()),
        );
        if messages.is_empty() {
            fallback.to_owned()
        } else {
            messages.join("\n")
        }
    }
}

impl Drop for DiagnosticCollector<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.context.detach_diagnostic_handler(id);
        }
    }
}

/// Notes such as "see current operation" print whole operations (a whole
/// module, for a translation failure); keep errors readable.
const MAX_NOTE_CHARS: usize = 4000;

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let dropped = text.len() - end;
        text.truncate(end);
        text.push_str(&format!("\n  ... ({dropped} more bytes)"));
    }
    text
}

fn format_diagnostic(diagnostic: &Diagnostic) -> String {
    let severity = match diagnostic.severity() {
        DiagnosticSeverity::Error => "error",
        DiagnosticSeverity::Warning => "warning",
        DiagnosticSeverity::Note => "note",
        DiagnosticSeverity::Remark => "remark",
    };
    let mut text = format!("{}: {severity}: {diagnostic}", diagnostic.location());
    for index in 0..diagnostic.note_count() {
        if let Ok(note) = diagnostic.note(index) {
            let body = truncate(note.to_string(), MAX_NOTE_CHARS);
            text.push_str(&format!("\n  {}: note: {body}", note.location()));
        }
    }
    text
}

/// Parses `mlir_text`, runs `pipeline` on it and hands the lowered module to
/// `finish` (with the diagnostic collector, for its own errors).
fn with_lowered_module<R>(
    mlir_text: &str,
    pipeline: &str,
    finish: impl FnOnce(&Module, &DiagnosticCollector) -> Result<R, ToolchainError>,
) -> Result<R, ToolchainError> {
    if mlir_text.contains('\0') {
        // melior's `Module::parse` needs a C string and would panic.
        return Err(ToolchainError::MlirParse(
            "the MLIR text contains a NUL byte".into(),
        ));
    }
    let context = new_mlir_context();
    let diagnostics = DiagnosticCollector::attach(&context);

    let mut module = Module::parse(&context, mlir_text).ok_or_else(|| {
        ToolchainError::MlirParse(diagnostics.take("the module did not parse (no diagnostic)"))
    })?;
    if !module.as_operation().verify() {
        return Err(ToolchainError::MlirParse(
            diagnostics.take("the module does not verify (no diagnostic)"),
        ));
    }

    let pass_manager = PassManager::new(&context);
    parse_pass_pipeline(pass_manager.as_operation_pass_manager(), pipeline).map_err(|error| {
        let message = match error {
            melior::Error::ParsePassPipeline(message) => message,
            other => other.to_string(),
        };
        ToolchainError::PassPipelineParse {
            pipeline: pipeline.to_owned(),
            message: message.trim().to_owned(),
        }
    })?;
    pass_manager
        .run(&mut module)
        .map_err(|_| ToolchainError::PassPipeline {
            pipeline: pipeline.to_owned(),
            message: diagnostics.take("a pass failed (no diagnostic)"),
        })?;

    finish(&module, &diagnostics)
}

/// Runs `pipeline` (textual, e.g. `builtin.module(canonicalize,cse)`) on the
/// MLIR module `mlir_text` and returns the resulting MLIR text. For dumps
/// (`--dump-after`) and for tests of intermediate stages.
pub fn lower_mlir(mlir_text: &str, pipeline: &str) -> Result<String, ToolchainError> {
    with_lowered_module(mlir_text, pipeline, |module, _| {
        Ok(module.as_operation().to_string())
    })
}

/// [`mlir_to_llvm_ir_with_pipeline`] with [`CPU_LOOPS_PIPELINE`].
pub fn mlir_to_llvm_ir(mlir_text: &str) -> Result<String, ToolchainError> {
    mlir_to_llvm_ir_with_pipeline(mlir_text, CPU_LOOPS_PIPELINE)
}

/// Parses `mlir_text`, runs `pipeline` (which must end in the LLVM dialect)
/// and translates the result to LLVM IR text.
pub fn mlir_to_llvm_ir_with_pipeline(
    mlir_text: &str,
    pipeline: &str,
) -> Result<String, ToolchainError> {
    with_lowered_module(mlir_text, pipeline, |module, diagnostics| {
        let operation = module.as_operation().to_raw();
        // SAFETY: plain C API calls on objects created and destroyed here;
        // `operation` stays alive (it is owned by `module`) for the call.
        unsafe {
            let llvm_context = mlir_sys::LLVMContextCreate();
            let llvm_module = mlir_sys::mlirTranslateModuleToLLVMIR(operation, llvm_context);
            if llvm_module.is_null() {
                mlir_sys::LLVMContextDispose(llvm_context);
                return Err(ToolchainError::Translation(
                    diagnostics.take("the module is not translatable to LLVM IR (no diagnostic)"),
                ));
            }
            let raw_text = mlir_sys::LLVMPrintModuleToString(llvm_module);
            let text = CStr::from_ptr(raw_text).to_string_lossy().into_owned();
            mlir_sys::LLVMDisposeMessage(raw_text);
            mlir_sys::LLVMDisposeModule(llvm_module);
            mlir_sys::LLVMContextDispose(llvm_context);
            Ok(text)
        }
    })
}

/// Initializes LLVM's native target (code generator and assembly printer)
/// once per process.
fn init_native_target() -> Result<(), ToolchainError> {
    static INIT: OnceLock<Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| Target::initialize_native(&InitializationConfig::default()))
        .clone()
        .map_err(ToolchainError::TargetMachine)
}

/// The x86-64 CPU names LLVM 22 knows (`llc-22 -march=x86-64 -mcpu=help`). LLVM only warns on
/// an unknown name and then aborts deep in code generation, so tbc checks names first.
pub const X86_64_CPUS: [&str; 131] = [
    "alderlake",
    "amdfam10",
    "arrowlake",
    "arrowlake-s",
    "arrowlake_s",
    "athlon",
    "athlon-4",
    "athlon-fx",
    "athlon-mp",
    "athlon-tbird",
    "athlon-xp",
    "athlon64",
    "athlon64-sse3",
    "atom",
    "atom_sse4_2",
    "atom_sse4_2_movbe",
    "barcelona",
    "bdver1",
    "bdver2",
    "bdver3",
    "bdver4",
    "bonnell",
    "broadwell",
    "btver1",
    "btver2",
    "c3",
    "c3-2",
    "cannonlake",
    "cascadelake",
    "clearwaterforest",
    "cooperlake",
    "core-avx-i",
    "core-avx2",
    "core2",
    "core_2_duo_sse4_1",
    "core_2_duo_ssse3",
    "core_2nd_gen_avx",
    "core_3rd_gen_avx",
    "core_4th_gen_avx",
    "core_4th_gen_avx_tsx",
    "core_5th_gen_avx",
    "core_5th_gen_avx_tsx",
    "core_aes_pclmulqdq",
    "core_i7_sse4_2",
    "corei7",
    "corei7-avx",
    "diamondrapids",
    "emeraldrapids",
    "generic",
    "geode",
    "goldmont",
    "goldmont-plus",
    "goldmont_plus",
    "gracemont",
    "grandridge",
    "graniterapids",
    "graniterapids-d",
    "graniterapids_d",
    "haswell",
    "i386",
    "i486",
    "i586",
    "i686",
    "icelake-client",
    "icelake-server",
    "icelake_client",
    "icelake_server",
    "ivybridge",
    "k6",
    "k6-2",
    "k6-3",
    "k8",
    "k8-sse3",
    "knl",
    "knm",
    "lakemont",
    "lunarlake",
    "meteorlake",
    "mic_avx512",
    "nehalem",
    "nocona",
    "novalake",
    "opteron",
    "opteron-sse3",
    "pantherlake",
    "penryn",
    "pentium",
    "pentium-m",
    "pentium-mmx",
    "pentium2",
    "pentium3",
    "pentium3m",
    "pentium4",
    "pentium4m",
    "pentium_4",
    "pentium_4_sse3",
    "pentium_ii",
    "pentium_iii",
    "pentium_iii_no_xmm_regs",
    "pentium_m",
    "pentium_mmx",
    "pentium_pro",
    "pentiumpro",
    "prescott",
    "raptorlake",
    "rocketlake",
    "sandybridge",
    "sapphirerapids",
    "sierraforest",
    "silvermont",
    "skx",
    "skylake",
    "skylake-avx512",
    "skylake_avx512",
    "slm",
    "tigerlake",
    "tremont",
    "westmere",
    "wildcatlake",
    "winchip-c6",
    "winchip2",
    "x86-64",
    "x86-64-v2",
    "x86-64-v3",
    "x86-64-v4",
    "yonah",
    "znver1",
    "znver2",
    "znver3",
    "znver4",
    "znver5",
];

/// Checks a `--cpu` value: `native` or one of [`X86_64_CPUS`]; the error lists the common ones.
pub fn check_cpu_name(cpu: &str) -> Result<(), String> {
    if cpu == "native" || X86_64_CPUS.contains(&cpu) {
        return Ok(());
    }
    Err(format!(
        "unknown --cpu '{cpu}': expected native, x86-64, x86-64-v2, x86-64-v3, x86-64-v4 or an LLVM CPU name such as skylake-avx512, sapphirerapids, znver4 ({} names: `llc-22 -march=x86-64 -mcpu=help` lists them)",
        X86_64_CPUS.len()
    ))
}

/// Creates a `TargetMachine` for the host triple. `cpu` is an LLVM CPU name
/// (`"x86-64-v3"`, `"znver4"`, `"skylake-avx512"`, ...) with its default
/// features, or `"native"` for the host CPU name and host features.
pub(crate) fn host_target_machine(cpu: &str) -> Result<TargetMachine, ToolchainError> {
    check_cpu_name(cpu).map_err(ToolchainError::TargetMachine)?;
    init_native_target()?;
    let triple = TargetMachine::get_default_triple();
    let target = Target::from_triple(&triple)
        .map_err(|error| ToolchainError::TargetMachine(error.to_string()))?;
    let (cpu_name, features) = if cpu == "native" {
        (
            TargetMachine::get_host_cpu_name().to_string(),
            TargetMachine::get_host_cpu_features().to_string(),
        )
    } else {
        (cpu.to_owned(), String::new())
    };
    target
        .create_target_machine(
            &triple,
            &cpu_name,
            &features,
            OptimizationLevel::Aggressive,
            RelocMode::PIC,
            CodeModel::Default,
        )
        .ok_or_else(|| {
            ToolchainError::TargetMachine(format!(
                "cannot create a target machine for {} with cpu `{cpu_name}`",
                triple.as_str().to_string_lossy()
            ))
        })
}

/// Parses and verifies `llvm_ir`, optimizes it with [`LLVM_OPT_PIPELINE`] for
/// the host triple and `cpu` (see [`DEFAULT_CPU`]; `"native"` = this
/// machine), and returns a position-independent ELF object file.
///
/// LLVM does not reject an unknown CPU name: it warns on stderr ("is not a
/// recognized processor") and falls back to a generic CPU.
pub fn compile_llvm_ir_to_object(llvm_ir: &str, cpu: &str) -> Result<Vec<u8>, ToolchainError> {
    compile_llvm_ir_to_object_with(llvm_ir, cpu, LLVM_OPT_PIPELINE)
}

/// [`compile_llvm_ir_to_object`] with the LLVM pass pipeline `passes` (e.g. `default<O1>` for
/// code that only has to be right, such as the CPU emulation of GPU kernels).
pub fn compile_llvm_ir_to_object_with(
    llvm_ir: &str,
    cpu: &str,
    passes: &str,
) -> Result<Vec<u8>, ToolchainError> {
    let target_machine = host_target_machine(cpu)?;

    let context = LlvmContext::create();
    let buffer = MemoryBuffer::create_from_memory_range_copy(llvm_ir.as_bytes(), "tbc-module");
    let module = context
        .create_module_from_ir(buffer)
        .map_err(|error| ToolchainError::LlvmParse(error.to_string().trim().to_owned()))?;
    module
        .verify()
        .map_err(|error| ToolchainError::LlvmVerify(error.to_string().trim().to_owned()))?;

    optimize_to_object(&module, &target_machine, passes)
}

/// Sets `module`'s triple and data layout for `target_machine`, optimizes it with `passes`
/// ([`LLVM_OPT_PIPELINE`] for everything tbc ships) and emits a position-independent ELF object: the last steps of every
/// LLVM module tbc builds (kernels and the trainer's glue).
pub(crate) fn optimize_to_object(
    module: &inkwell::module::Module,
    target_machine: &TargetMachine,
    passes: &str,
) -> Result<Vec<u8>, ToolchainError> {
    module.set_triple(&target_machine.get_triple());
    module.set_data_layout(&target_machine.get_target_data().get_data_layout());
    module
        .run_passes(passes, target_machine, PassBuilderOptions::create())
        .map_err(|error| ToolchainError::Optimize {
            pipeline: passes.to_owned(),
            message: error.to_string(),
        })?;
    let object = target_machine
        .write_to_memory_buffer(module, FileType::Object)
        .map_err(|error| ToolchainError::Emit(error.to_string()))?;
    Ok(object.as_slice().to_vec())
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn truncate_keeps_short_text_and_cuts_on_a_char_boundary() {
        assert_eq!(truncate("short".into(), 10), "short");
        let cut = truncate("ab→cd".into(), 3); // '→' is 3 bytes, starting at byte 2
        assert!(cut.starts_with("ab\n"), "{cut}");
        assert!(cut.ends_with("(5 more bytes)"), "{cut}");
    }

    /// The embedded list is LLVM's: compared with `llc-22` when it is installed.
    #[test]
    fn cpu_names_are_llvm_s_and_unknown_ones_are_refused() {
        use super::{check_cpu_name, X86_64_CPUS};
        assert!(check_cpu_name("native").is_ok() && check_cpu_name("znver4").is_ok());
        let err = check_cpu_name("nosuchcpu").unwrap_err();
        assert!(err.contains("unknown --cpu 'nosuchcpu'"), "{err}");
        let Ok(out) = std::process::Command::new("llc-22")
            .args(["-march=x86-64", "-mcpu=help"])
            .output()
        else {
            println!("SKIP: llc-22 is not installed; the CPU list was not compared");
            return;
        };
        let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
        let listed: Vec<&str> = text
            .split("Available CPUs for this target:")
            .nth(1)
            .and_then(|t| t.split("Available features").next())
            .unwrap_or("")
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert_eq!(listed, X86_64_CPUS);
    }
}
