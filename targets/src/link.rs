//! The link stage: glue code for the compiled loop kernels and the embedded
//! plans, and the final link of the trainer executable.
//!
//! * [`glue_object`] builds one LLVM module with inkwell and emits it as an
//!   object for the host. It holds
//!   - `tbc_kernel_table`: `N` entries
//!     `{const char* name; void (*run)(void** data, int64_t part); const int64_t* parts;}`
//!     in the order the kernels were given, pointing at each kernel object's entry
//!     `tbc_K(data, part)` and part count `tbc_K_parts` (see `targets::cpu`: `data` holds the
//!     data pointers of the inputs then the outputs; the parts are independent and may run
//!     on any threads), and `tbc_kernel_count` (`i64 N`).
//!   - for each blob `B`: `const uint8_t B[]` and `const int64_t B_len`.
//!   - `int main(int argc, char** argv)`, which returns
//!     `tbc_trainer_main(argc, argv, tbc_kernel_table, N, tbc_plans, tbc_plans_len)`.
//!     `tbc_trainer_main` is the runtime's entry point (C ABI, from its
//!     static library):
//!     ```c
//!     struct tbc_kernel { const char* name; void (*run)(void**, int64_t); const int64_t* parts; };
//!     int tbc_trainer_main(int argc, char** argv, const struct tbc_kernel* table,
//!                          int64_t count, const uint8_t* plans, int64_t plans_len);
//!     ```
//! * [`link_executable`] links objects and static libraries into an
//!   executable with the system C compiler driver (`$CC`, else `cc`), adding
//!   the system libraries a Rust static library needs on Linux
//!   ([`SYSTEM_LIBS`]). The executable appears atomically: the linker writes a
//!   temporary file next to it, which is renamed on success and removed on
//!   failure.

use std::{
    collections::HashSet,
    ffi::OsString,
    fs,
    io::ErrorKind,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU64, Ordering},
};

use inkwell::{
    context::Context,
    module::{Linkage, Module},
    AddressSpace,
};

use crate::toolchain::{host_target_machine, optimize_to_object, ToolchainError};

pub use plan::abi::{ENTRY_PREFIX, KERNEL_COUNT, KERNEL_TABLE, PLANS_BLOB, TRAINER_MAIN};

/// Prefix of the C-interface symbols the kernel objects export.
pub const CIFACE_PREFIX: &str = "_mlir_ciface_";

/// The libraries a Rust `staticlib` needs on Linux (glibc), as printed by
/// `rustc --print native-static-libs` (rustc 1.95): `-lgcc_s` (unwinder) and
/// `-lm` (also needed by kernels that call libm) are real libraries; on glibc
/// ≥ 2.34 `util`, `rt`, `pthread` and `dl` are empty stubs folded into libc,
/// kept for older glibc. They come after `-Wl,--as-needed`, so the executable
/// only records the libraries it uses (`libgcc_s.so.1`, `libm.so.6`,
/// `libc.so.6`).
pub const SYSTEM_LIBS: &[&str] = &[
    "-lgcc_s",
    "-lutil",
    "-lrt",
    "-lpthread",
    "-lm",
    "-ldl",
    "-lc",
];

/// A failure of the link stage.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// A kernel symbol or blob name that is not a C identifier.
    #[error("invalid {what} name `{name}`: expected a C identifier ([A-Za-z_][A-Za-z0-9_]*)")]
    InvalidName { what: &'static str, name: String },
    /// Two kernels, two blobs, or a blob and a generated symbol share a name.
    #[error("symbol `{0}` would be defined twice in the glue object")]
    DuplicateSymbol(String),
    /// The blob `main` passes to the runtime is not among the blobs.
    #[error("no blob named `{0}` (main passes it to {TRAINER_MAIN})")]
    MissingBlob(String),
    /// Building, verifying or emitting the glue module failed.
    #[error("glue object: {0}")]
    Codegen(String),
    /// No target machine for the host.
    #[error(transparent)]
    Toolchain(#[from] ToolchainError),
    /// The C compiler driver used as linker is not there.
    #[error("no system linker: '{linker}' was not found{where_} (install gcc or clang, or set CC)", where_ = if .linker.contains('/') { "" } else { " on PATH" })]
    NoLinker { linker: String },
    /// The linker ran and failed.
    #[error("linking {out} failed ({linker} {status}):\n{stderr}")]
    LinkFailed {
        linker: String,
        out: PathBuf,
        status: String,
        stderr: String,
    },
    /// A file-system operation around the link failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn codegen_error(error: impl std::fmt::Display) -> LinkError {
    LinkError::Codegen(error.to_string())
}

fn is_c_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks names and collisions between every symbol the glue object defines
/// or declares, and that the plans blob is there.
fn check_names(kernels: &[&str], blobs: &[(&str, &[u8])]) -> Result<(), LinkError> {
    let mut taken: HashSet<String> = ["main", TRAINER_MAIN, KERNEL_TABLE, KERNEL_COUNT]
        .iter()
        .map(|name| name.to_string())
        .collect();
    let mut claim = |name: String| {
        if taken.insert(name.clone()) {
            Ok(())
        } else {
            Err(LinkError::DuplicateSymbol(name))
        }
    };
    for kernel in kernels {
        if !is_c_identifier(kernel) {
            return Err(LinkError::InvalidName {
                what: "kernel",
                name: kernel.to_string(),
            });
        }
        // The kernel object also defines `symbol` itself.
        claim(kernel.to_string())?;
        claim(format!("{CIFACE_PREFIX}{}", kernel))?;
        claim(format!("{ENTRY_PREFIX}{}", kernel))?;
        claim(format!("{ENTRY_PREFIX}{}_parts", kernel))?;
    }
    for (name, _) in blobs {
        if !is_c_identifier(name) {
            return Err(LinkError::InvalidName {
                what: "blob",
                name: name.to_string(),
            });
        }
        claim(name.to_string())?;
        claim(format!("{name}_len"))?;
    }
    if !blobs.iter().any(|(name, _)| *name == PLANS_BLOB) {
        return Err(LinkError::MissingBlob(PLANS_BLOB.to_owned()));
    }
    Ok(())
}

/// Builds the glue module (see the module documentation) in `context`.
fn build_glue_module<'c>(
    context: &'c Context,
    kernels: &[&str],
    blobs: &[(&str, &[u8])],
) -> Result<Module<'c>, LinkError> {
    check_names(kernels, blobs)?;
    let module = context.create_module("tbc_glue");
    let builder = context.create_builder();
    let ptr = context.ptr_type(AddressSpace::default());
    let i64_type = context.i64_type();
    let i32_type = context.i32_type();
    let void = context.void_type();

    // The kernels' entry points, defined by the kernel objects (`targets::cpu`):
    // `void tbc_K(void *const *buffers, int64_t part)` and `const int64_t tbc_K_parts`.
    let entry_fn_type = void.fn_type(&[ptr.into(), i64_type.into()], false);
    let entry_type = context.struct_type(&[ptr.into(), ptr.into(), ptr.into()], false);
    let mut entries = Vec::with_capacity(kernels.len());
    for (index, kernel) in kernels.iter().enumerate() {
        let func = module.add_function(
            &format!("{ENTRY_PREFIX}{}", kernel),
            entry_fn_type,
            Some(Linkage::External),
        );
        let parts = module.add_global(i64_type, None, &format!("{ENTRY_PREFIX}{}_parts", kernel));
        parts.set_linkage(Linkage::External);
        parts.set_constant(true);
        let text = context.const_string(kernel.as_bytes(), true);
        let name = module.add_global(text.get_type(), None, &format!(".tbc_kernel_name.{index}"));
        name.set_initializer(&text);
        name.set_constant(true);
        name.set_linkage(Linkage::Private);
        name.set_unnamed_addr(true);
        entries.push(entry_type.const_named_struct(&[
            name.as_pointer_value().into(),
            func.as_global_value().as_pointer_value().into(),
            parts.as_pointer_value().into(),
        ]));
    }
    let count = u32::try_from(kernels.len()).map_err(codegen_error)?;
    let table_init = entry_type.const_array(&entries);
    let table = module.add_global(entry_type.array_type(count), None, KERNEL_TABLE);
    table.set_initializer(&table_init);
    table.set_constant(true);
    table.set_alignment(16);
    let count_value = i64_type.const_int(u64::from(count), false);
    let count_global = module.add_global(i64_type, None, KERNEL_COUNT);
    count_global.set_initializer(&count_value);
    count_global.set_constant(true);

    // Blobs.
    let mut plans = None;
    for (name, bytes) in blobs {
        let data = context.const_string(bytes, false);
        let global = module.add_global(data.get_type(), None, name);
        global.set_initializer(&data);
        global.set_constant(true);
        global.set_alignment(16);
        let len = i64_type.const_int(bytes.len() as u64, false);
        let len_global = module.add_global(i64_type, None, &format!("{name}_len"));
        len_global.set_initializer(&len);
        len_global.set_constant(true);
        if *name == PLANS_BLOB {
            plans = Some((global.as_pointer_value(), len));
        }
    }
    let (plans_ptr, plans_len) = plans.ok_or_else(|| LinkError::MissingBlob(PLANS_BLOB.into()))?;

    // main.
    let trainer_main = module.add_function(
        TRAINER_MAIN,
        i32_type.fn_type(
            &[
                i32_type.into(),
                ptr.into(),
                ptr.into(),
                i64_type.into(),
                ptr.into(),
                i64_type.into(),
            ],
            false,
        ),
        Some(Linkage::External),
    );
    let main = module.add_function(
        "main",
        i32_type.fn_type(&[i32_type.into(), ptr.into()], false),
        Some(Linkage::External),
    );
    builder.position_at_end(context.append_basic_block(main, "entry"));
    let argc = main
        .get_nth_param(0)
        .ok_or_else(|| codegen_error("main without argc"))?;
    let argv = main
        .get_nth_param(1)
        .ok_or_else(|| codegen_error("main without argv"))?;
    let status = builder
        .build_call(
            trainer_main,
            &[
                argc.into(),
                argv.into(),
                table.as_pointer_value().into(),
                count_value.into(),
                plans_ptr.into(),
                plans_len.into(),
            ],
            "status",
        )
        .map_err(codegen_error)?
        .try_as_basic_value()
        .basic()
        .ok_or_else(|| codegen_error("tbc_trainer_main returns no value"))?;
    builder.build_return(Some(&status)).map_err(codegen_error)?;

    module
        .verify()
        .map_err(|error| LinkError::Codegen(error.to_string().trim().to_owned()))?;
    Ok(module)
}

/// The glue module as LLVM IR text (unoptimized), for dumps and tests.
pub fn glue_llvm_ir(kernels: &[&str], blobs: &[(&str, &[u8])]) -> Result<String, LinkError> {
    let context = Context::create();
    let module = build_glue_module(&context, kernels, blobs)?;
    Ok(module.print_to_string().to_string())
}

/// Builds the glue module (trampolines, kernel table, blobs, `main`; see the
/// module documentation) and emits it as a position-independent object for
/// the host triple and `cpu` (as in
/// [`compile_llvm_ir_to_object`](crate::toolchain::compile_llvm_ir_to_object)).
///
/// Kernel symbols and blob names must be C identifiers, every symbol the
/// object defines or declares must be distinct, and a blob named
/// [`PLANS_BLOB`] must be among `blobs`.
pub fn glue_object(
    kernels: &[&str],
    blobs: &[(&str, &[u8])],
    cpu: &str,
) -> Result<Vec<u8>, LinkError> {
    let target_machine = host_target_machine(cpu)?;
    let context = Context::create();
    let module = build_glue_module(&context, kernels, blobs)?;
    Ok(optimize_to_object(
        &module,
        &target_machine,
        crate::toolchain::LLVM_OPT_PIPELINE,
    )?)
}

/// How [`link_executable_with`] runs the linker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkOptions {
    /// The C compiler driver used as linker, as a command line split on
    /// whitespace (program, then arguments), like `$CC` in make:
    /// `"cc"`, `"clang-22"`, `"ccache gcc"`.
    pub cc: String,
    /// Strip the symbol table and debug information (`-s`).
    pub strip: bool,
    /// More arguments, after the static libraries and before [`SYSTEM_LIBS`]
    /// (`-L…`, `-l…`).
    pub extra_args: Vec<OsString>,
}

impl LinkOptions {
    /// `$CC` if set and not blank, else `cc`; no stripping, no extra arguments.
    pub fn from_env() -> LinkOptions {
        let cc = std::env::var_os("CC")
            .map(|cc| cc.to_string_lossy().trim().to_owned())
            .filter(|cc| !cc.is_empty())
            .unwrap_or_else(|| "cc".to_owned());
        LinkOptions {
            cc,
            strip: false,
            extra_args: Vec::new(),
        }
    }
}

/// [`link_executable_with`] with [`LinkOptions::from_env`].
pub fn link_executable(
    objects: &[PathBuf],
    static_libs: &[PathBuf],
    out: &Path,
) -> Result<(), LinkError> {
    link_executable_with(&LinkOptions::from_env(), objects, static_libs, out)
}

/// Links `objects` and `static_libs` (in that order) into the executable
/// `out` with the C compiler driver `options.cc`:
/// `cc -o TMP objects… static_libs… -Wl,--gc-sections -Wl,--as-needed [-s]
/// extra_args… SYSTEM_LIBS…`, where `TMP` is a fresh file in `out`'s
/// directory, synced and renamed to `out` on success, removed on failure (an
/// existing `out` is left as it was).
pub fn link_executable_with(
    options: &LinkOptions,
    objects: &[PathBuf],
    static_libs: &[PathBuf],
    out: &Path,
) -> Result<(), LinkError> {
    let mut words = options.cc.split_whitespace();
    let program = words.next().unwrap_or("cc");
    let cc_args: Vec<&str> = words.collect();

    let io_error = |path: &Path| {
        let path = path.to_owned();
        move |source| LinkError::Io { path, source }
    };
    let file_name = out.file_name().ok_or_else(|| LinkError::Io {
        path: out.to_owned(),
        source: std::io::Error::new(ErrorKind::InvalidInput, "not a file name"),
    })?;
    let dir = match out.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    if !fs::metadata(&dir).map_err(io_error(&dir))?.is_dir() {
        return Err(LinkError::Io {
            path: dir,
            source: std::io::Error::new(ErrorKind::NotADirectory, "not a directory"),
        });
    }
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut temp_name = OsString::from(".");
    temp_name.push(file_name);
    temp_name.push(format!(
        ".link-{}-{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let temp = dir.join(temp_name);

    let mut command = Command::new(program);
    command.args(&cc_args).arg("-o").arg(&temp);
    command.args(objects).args(static_libs);
    command.args(["-Wl,--gc-sections", "-Wl,--as-needed"]);
    if options.strip {
        command.arg("-s");
    }
    command.args(&options.extra_args).args(SYSTEM_LIBS);

    let remove_temp = || {
        let _ = fs::remove_file(&temp);
    };
    let output = match command.output() {
        Ok(output) => output,
        Err(error) if error.kind() == ErrorKind::NotFound => {
            return Err(LinkError::NoLinker {
                linker: program.to_owned(),
            })
        }
        Err(source) => {
            return Err(LinkError::Io {
                path: PathBuf::from(program),
                source,
            })
        }
    };
    if !output.status.success() {
        remove_temp();
        let mut stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        if stderr.is_empty() {
            stderr = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        }
        return Err(LinkError::LinkFailed {
            linker: options.cc.clone(),
            out: out.to_owned(),
            status: output.status.to_string(),
            stderr,
        });
    }
    let finish = || -> Result<(), LinkError> {
        fs::File::open(&temp)
            .and_then(|file| file.sync_all())
            .map_err(io_error(&temp))?;
        fs::rename(&temp, out).map_err(io_error(out))?;
        // Make the rename durable; not every file system supports syncing a
        // directory, so this is best effort.
        if let Ok(dir) = fs::File::open(&dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    };
    finish().inspect_err(|_| remove_temp())
}

/// The runtime static library: `$TBC_RUNTIME_LIB`, or `libruntime.a` next to the running
/// executable (tbc) or one directory up.
pub fn runtime_library() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("TBC_RUNTIME_LIB") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            return Err(format!("TBC_RUNTIME_LIB={} is not a file", p.display()));
        }
        return Ok(p);
    }
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot locate the tbc executable: {e}"))?;
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join("libruntime.a"))
        .collect();
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        format!(
            "cannot find the trainer runtime library (looked for {}); build it with `cargo build --release -p runtime` or set TBC_RUNTIME_LIB",
            candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        )
    })
}
