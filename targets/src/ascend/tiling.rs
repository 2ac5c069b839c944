//! The tiling planner: how a kernel's elements spread over the vector cores and how large a tile
//! its Unified Buffer holds. Every `InitBuffer` of the kernel is summed against the SoC's UB
//! budget, so a plan that does not fit is a compile-time error, not a hardware fault.

/// What the planner needs to know about a chip (`--ascend-soc`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AscendSoc {
    pub name: &'static str,
    /// Unified Buffer bytes per vector core.
    pub ub_bytes: usize,
    /// Vector cores a kernel may use (`block_dim` ≤ this).
    pub vector_cores: usize,
}

/// Ascend 910B (A2): 192 KiB UB per AIV, 48 AIVs (910B1/B2).
pub const ASCEND_910B: AscendSoc = AscendSoc {
    name: "ascend910b",
    ub_bytes: 192 * 1024,
    vector_cores: 48,
};

/// Ascend 910 (first generation): 256 KiB UB, 32 AI cores.
pub const ASCEND_910: AscendSoc = AscendSoc {
    name: "ascend910",
    ub_bytes: 256 * 1024,
    vector_cores: 32,
};

/// The SoCs `--ascend-soc` knows.
pub const SOCS: [AscendSoc; 2] = [ASCEND_910B, ASCEND_910];

/// UB bytes left unplanned (the level-0 forms' reserved space on some chips, stack).
pub const UB_HEADROOM: usize = 8 * 1024;
/// Largest tile, in elements (longer tiles gain nothing once copies are this long).
pub const MAX_TILE: usize = 8192;
/// Tiles are multiples of one 256-byte vector repeat of the element type.
const REPEAT_BYTES: usize = 256;
/// Block ranges are multiples of one 32-byte data block.
const BLOCK_BYTES: usize = 32;

/// How an element-wise kernel over `elements` values runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ElementwisePlan {
    /// Cores used (`block_dim`).
    pub block_dim: usize,
    /// Elements per core (the last one gets the rest), a multiple of 32 bytes.
    pub per_block: usize,
    /// Elements per tile, a multiple of 256 bytes.
    pub tile: usize,
    /// Buffers per queue: 2 (double buffering: the next tile's copy-in overlaps this tile's
    /// compute), or 1 where two do not fit.
    pub buffers: usize,
    /// UB bytes the kernel's buffers take.
    pub ub_used: usize,
}

/// Plans `elements` values of `elem_bytes` each through `queues` queues (inputs and outputs;
/// double-buffered where one 256-byte tile fits that way, else single) and `scratch` single
/// tile-sized buffers, on `soc`.
pub fn plan_elementwise(
    soc: &AscendSoc,
    elements: usize,
    elem_bytes: usize,
    queues: usize,
    scratch: usize,
) -> Result<ElementwisePlan, String> {
    let budget = soc.ub_bytes - UB_HEADROOM;
    let repeat = REPEAT_BYTES / elem_bytes;
    let fit_with = |buffers: usize| {
        let slots = buffers * queues + scratch;
        (
            slots,
            budget / (slots.max(1) * elem_bytes) / repeat * repeat,
        )
    };
    let (buffers, (slots, fit)) = match (fit_with(2), fit_with(1)) {
        ((s, f), _) if f > 0 => (2, (s, f)),
        (_, (s, f)) if f > 0 => (1, (s, f)),
        _ => {
            return Err(format!(
                "{queues} queues (even single-buffered) and {scratch} scratch tiles need {} \
                 bytes for one 256-byte tile each, more than the {budget} bytes of UB available",
                (queues + scratch) * REPEAT_BYTES
            ))
        }
    };
    let block = BLOCK_BYTES / elem_bytes;
    // Enough work per core to be worth a core: at least one repeat.
    let block_dim = soc.vector_cores.min(elements.div_ceil(repeat)).max(1);
    let per_block = elements.div_ceil(block_dim).div_ceil(block) * block;
    let block_dim = elements.div_ceil(per_block).max(1);
    let tile = fit.min(MAX_TILE).min(per_block.div_ceil(repeat) * repeat);
    Ok(ElementwisePlan {
        block_dim,
        per_block,
        tile,
        buffers,
        ub_used: slots * tile * elem_bytes,
    })
}

/// How a row kernel over `rows × cols` runs: one row (or one core's segment of it) per step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepPlan {
    pub block_dim: usize,
    /// Rows per core (row kernels) or columns per core (column-sum kernels); the last core gets
    /// the rest.
    pub per_block: usize,
    /// UB bytes of one step's tile (32-byte multiple).
    pub step_bytes: usize,
    /// Buffers per queue: 2 (double buffering), or 1 where two do not fit.
    pub buffers: usize,
    pub ub_used: usize,
}

/// The buffers per queue (2 where they fit, else 1) and the UB bytes of `queues` queues and
/// `scratch` buffers of `step_bytes` on `soc`.
fn fits(
    soc: &AscendSoc,
    step_bytes: usize,
    queues: usize,
    scratch: usize,
) -> Result<(usize, usize), String> {
    let budget = soc.ub_bytes - UB_HEADROOM;
    for buffers in [2, 1] {
        let bytes = (buffers * queues + scratch) * step_bytes;
        if bytes <= budget {
            return Ok((buffers, bytes));
        }
    }
    Err(format!(
        "steps of {step_bytes} bytes in {queues} queues (even single-buffered) and {scratch} \
         scratch buffers need {} bytes, more than the {budget} bytes of UB available (rows this \
         long need column tiles, not built yet)",
        (queues + scratch) * step_bytes
    ))
}

/// Bytes of a step's buffers: whole 32-byte blocks, or whole 256-byte repeats for a kernel
/// that compares (`Compare` reads whole repeats).
fn step_buffer(bytes: usize, repeats: bool) -> usize {
    let unit = if repeats { REPEAT_BYTES } else { BLOCK_BYTES };
    bytes.div_ceil(unit) * unit
}

/// Plans `rows` whole rows of `cols` values, rows split over the cores, through `queues`
/// double-buffered queues and `scratch` row-sized buffers (whole repeats when `repeats`).
pub fn plan_rows(
    soc: &AscendSoc,
    rows: usize,
    cols: usize,
    elem_bytes: usize,
    (queues, scratch): (usize, usize),
    repeats: bool,
) -> Result<StepPlan, String> {
    let step_bytes = step_buffer(cols * elem_bytes, repeats);
    let (buffers, ub_used) = fits(soc, step_bytes, queues, scratch)?;
    let per_block = rows.div_ceil(soc.vector_cores.min(rows).max(1));
    Ok(StepPlan {
        block_dim: rows.div_ceil(per_block).max(1),
        per_block,
        step_bytes,
        buffers,
        ub_used,
    })
}

/// Plans a column-sum kernel: columns split over the cores in 32-byte multiples, every core
/// stepping through all rows of its columns.
pub fn plan_cols(
    soc: &AscendSoc,
    cols: usize,
    elem_bytes: usize,
    (queues, scratch): (usize, usize),
    repeats: bool,
) -> Result<StepPlan, String> {
    let block = BLOCK_BYTES / elem_bytes;
    let per_block = cols.div_ceil(soc.vector_cores.min(cols.div_ceil(block)).max(1));
    let per_block = per_block.div_ceil(block) * block;
    let step_bytes = step_buffer(per_block * elem_bytes, repeats);
    let (buffers, ub_used) = fits(soc, step_bytes, queues, scratch)?;
    Ok(StepPlan {
        block_dim: cols.div_ceil(per_block).max(1),
        per_block,
        step_bytes,
        buffers,
        ub_used,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_fit_the_unified_buffer_and_cover_every_element() {
        for soc in SOCS {
            for &(n, queues, scratch) in &[
                (1, 2, 0),
                (1000, 3, 2),
                (4_718_592, 5, 6),
                (9_437_184, 9, 4),
            ] {
                let p = plan_elementwise(&soc, n, 4, queues, scratch).unwrap();
                assert!(p.ub_used + UB_HEADROOM <= soc.ub_bytes, "{p:?}");
                assert!(p.block_dim <= soc.vector_cores && p.block_dim >= 1);
                assert_eq!(p.per_block % 8, 0);
                assert_eq!(p.tile % 64, 0);
                assert!(p.per_block * p.block_dim >= n);
                assert!(p.per_block * (p.block_dim - 1) < n, "no empty core: {p:?}");
            }
        }
        for (cols, dim, per) in [(32, 4, 8), (312, 39, 8), (768, 48, 16), (30522, 48, 640)] {
            let p = plan_cols(&ASCEND_910B, cols, 4, (2, 3), false).unwrap();
            let r = plan_cols(&ASCEND_910B, cols, 4, (2, 3), true).unwrap();
            assert_eq!((r.per_block, r.step_bytes % 256), (p.per_block, 0));
            assert_eq!((p.block_dim, p.per_block), (dim, per), "{cols}");
            assert!(p.per_block * (p.block_dim - 1) < cols && p.per_block * p.block_dim >= cols);
        }
        // A big kernel on 910B: 48 cores, tiles as large as the UB allows.
        let p = plan_elementwise(&ASCEND_910B, 4_718_592, 4, 5, 6).unwrap();
        assert_eq!(p.block_dim, 48);
        assert_eq!(p.tile, (192 * 1024 - 8 * 1024) / (16 * 4) / 64 * 64);
    }

    #[test]
    fn a_kernel_that_cannot_fit_says_why() {
        let e = plan_elementwise(&ASCEND_910B, 1024, 4, 500, 300).unwrap_err();
        assert!(
            e.contains("500 queues (even single-buffered) and 300 scratch tiles need 204800"),
            "{e}"
        );
        assert!(e.contains("188416 bytes of UB"), "{e}");
    }

    #[test]
    fn queues_are_double_buffered_where_that_fits() {
        // Rows of 12 KiB: 3 queues and 4 scratch rows fit double-buffered (120 KiB), 6 queues
        // and 4 scratch rows only single-buffered (192 KiB > 184, then 120 KiB).
        let p = plan_rows(&ASCEND_910B, 8, 3072, 4, (3, 4), false).unwrap();
        assert_eq!((p.buffers, p.ub_used), (2, 10 * 12288));
        let p = plan_rows(&ASCEND_910B, 8, 3072, 4, (6, 4), false).unwrap();
        assert_eq!((p.buffers, p.ub_used), (1, 10 * 12288));
        let e = plan_rows(&ASCEND_910B, 8, 3072, 4, (6, 10), false).unwrap_err();
        assert!(e.contains("even single-buffered"), "{e}");
        // Element-wise: 300 queues fit one 256-byte tile only single-buffered.
        let p = plan_elementwise(&ASCEND_910B, 1024, 4, 300, 300).unwrap();
        assert_eq!((p.buffers, p.tile), (1, 64));
        let p = plan_elementwise(&ASCEND_910B, 1024, 4, 3, 3).unwrap();
        assert_eq!(p.buffers, 2);
    }
}
