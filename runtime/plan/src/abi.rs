//! The kernel-library ABI: what a target's compiled kernels, the generated `main` and the
//! runtime agree on (see `targets::link` for the glue object that implements it).
//!
//! - `tbc_kernel_table`: `N` entries `{name, run, parts}`, and `tbc_kernel_count` (`i64 N`).
//! - `tbc_K(data, part)`: part `part` of `*tbc_K_parts` independent parts of kernel `K`; `data`
//!   holds the data pointers of its inputs, then its outputs.
//! - `tbc_plans`: the serialized [`crate::manifest::TrainerBundle`].
//! - `main` calls `tbc_trainer_main(argc, argv, tbc_kernel_table, N, tbc_plans, tbc_plans_len)`.

use std::ffi::c_char;

/// The blob `main` hands to `tbc_trainer_main` (the serialized plans).
pub const PLANS_BLOB: &str = "tbc_plans";

/// The runtime's entry point, called by the generated `main`.
pub const TRAINER_MAIN: &str = "tbc_trainer_main";

/// `{name, run, parts}` entries, one per loop kernel.
pub const KERNEL_TABLE: &str = "tbc_kernel_table";

/// `i64`: the number of entries of [`KERNEL_TABLE`].
pub const KERNEL_COUNT: &str = "tbc_kernel_count";

/// Prefix of the kernels' entry points (`tbc_<symbol>`, `tbc_<symbol>_parts`).
pub const ENTRY_PREFIX: &str = "tbc_";

/// A compiled loop kernel's entry: `run(data, part)`.
pub type KernelFn = unsafe extern "C" fn(*const *mut u8, i64);

/// One compiled loop kernel in the linked table.
#[repr(C)]
pub struct KernelEntry {
    pub name: *const c_char,
    pub run: KernelFn,
    pub parts: *const i64,
}

/// The symbol of loop kernel `index` of the graph of phase `phase`.
pub fn loop_symbol(phase: &str, index: usize) -> String {
    format!("{phase}_k{index}")
}
