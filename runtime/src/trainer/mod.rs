//! The trainer executable's entry point. The generated `main` (see `targets::link`) calls
//! [`tbc_trainer_main`] with the table of compiled loop kernels and the serialized plans that
//! were linked into the executable.
//!
//! - [`kernels`]: the linked kernel table behind `LoopKernels`.
//! - [`cli`]: the trainer's command line (`info`, `step`, the training commands).
//! - [`job`]: the data-parallel group and the backend, before any session.

pub mod cli;
pub mod job;
pub mod kernels;

pub use cli::{describe, info, trainer_main};
pub use kernels::CompiledKernels;
pub use plan::abi::{KernelEntry, KernelFn};

use std::ffi::{c_char, c_int, CStr};

/// C entry point called by the generated `main`.
///
/// # Safety
/// `argv` holds `argc` C strings; `table` holds `n_kernels` entries; `plans` holds `plans_len`
/// bytes.
#[no_mangle]
pub unsafe extern "C" fn tbc_trainer_main(
    argc: c_int,
    argv: *const *const c_char,
    table: *const KernelEntry,
    n_kernels: i64,
    plans: *const u8,
    plans_len: i64,
) -> c_int {
    let args: Vec<String> = (0..argc as usize)
        .map(|i| CStr::from_ptr(*argv.add(i)).to_string_lossy().into_owned())
        .collect();
    let kernels = CompiledKernels::from_table(table, n_kernels as usize);
    let plans = std::slice::from_raw_parts(plans, plans_len as usize);
    crate::interrupt::run_catching_panics("the trainer", || trainer_main(args, &kernels, plans))
}
