//! The compiled loop kernels reached through the table linked into the trainer (ABI:
//! `plan::abi`); a kernel's parts run on the rayon pool.

use crate::exec::{KernelArg, LoopKernels};
use plan::abi::{KernelEntry, KernelFn};
use std::collections::HashMap;
use std::ffi::CStr;

/// Loop kernels reached through the linked table.
pub struct CompiledKernels {
    by_name: HashMap<String, (KernelFn, usize)>,
}

/// The argument pointers of one kernel call, shared by the threads running its parts.
struct CallArgs(Vec<*mut u8>);
// SAFETY: the parts of a kernel write disjoint elements (the compiler's partition contract),
// and the pointers stay valid for the whole call.
unsafe impl Sync for CallArgs {}

impl CompiledKernels {
    /// # Safety
    /// `table` points to `n` valid entries whose names are NUL-terminated.
    pub unsafe fn from_table(table: *const KernelEntry, n: usize) -> CompiledKernels {
        let entries = if n == 0 {
            &[][..]
        } else {
            std::slice::from_raw_parts(table, n)
        };
        let by_name = entries
            .iter()
            .map(|e| {
                let parts = (*e.parts).max(1) as usize;
                (
                    CStr::from_ptr(e.name).to_string_lossy().into_owned(),
                    (e.run, parts),
                )
            })
            .collect();
        CompiledKernels { by_name }
    }
}

impl LoopKernels for CompiledKernels {
    unsafe fn run(
        &self,
        symbol: &str,
        inputs: &[KernelArg],
        outputs: &[KernelArg],
    ) -> Result<(), String> {
        let &(run, parts) = self
            .by_name
            .get(symbol)
            .ok_or_else(|| format!("kernel {symbol} is not linked in"))?;
        let args = CallArgs(inputs.iter().chain(outputs).map(|a| a.ptr).collect());
        if parts == 1 {
            run(args.0.as_ptr(), 0);
        } else {
            use rayon::prelude::*;
            (0..parts).into_par_iter().for_each(|p| {
                let a = &args;
                // SAFETY: see `CallArgs`.
                unsafe { run(a.0.as_ptr(), p as i64) }
            });
        }
        Ok(())
    }
}
