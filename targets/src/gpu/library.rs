//! GPU kernels for the plan's gather and scatter-add steps (the embedding lookups and their
//! gradients), written as block programs like the loop kernels, so they are checked the same way.
//!
//! - **gather** `out[i, :] = table[idx[i], :]`: grid-stride over the output elements. An index
//!   outside the table gives zeros (the trainer checks every id against the vocabulary before
//!   the first step, so this never happens in training).
//! - **scatter-add** `out = 0; out[idx[i], :] += upd[i, :]`: one launch zeroes `out`, a second
//!   gives each column to one thread, which adds the rows in index order — no float atomics, the
//!   same bits every run (f32 sums, where the interpreter sums in f64: within f32 round-off).

use super::kernels::{GpuKernel, Launch, BLOCK, MAX_GRID};
use super::writer::{BufferParam, Flavor, Writer, WARP};
use super::GpuLowerError;
use crate::scalar;
use crate::scalar::ScalarSink;
use ir::DType;

fn check_indices(name: &str, d: DType) -> Result<(), GpuLowerError> {
    if d != DType::I32 {
        return Err(GpuLowerError::Invalid {
            kernel: name.to_string(),
            message: format!("indices must be i32, found {d}"),
        });
    }
    Ok(())
}

fn check_value(name: &str, d: DType) -> Result<(), GpuLowerError> {
    if !matches!(d, DType::F32 | DType::F16 | DType::BF16) {
        return Err(GpuLowerError::Invalid {
            kernel: name.to_string(),
            message: format!("gather/scatter-add values must be f32, f16 or bf16, found {d}"),
        });
    }
    Ok(())
}

/// Grid and block of a grid-stride launch over `n` items.
fn grid_for(n: usize) -> (usize, usize) {
    let threads = n.next_multiple_of(WARP).clamp(WARP, BLOCK);
    (n.div_ceil(threads).clamp(1, MAX_GRID), threads)
}

/// Opens a grid-stride loop over `n` items in the current phase; returns the item index.
fn grid_stride(w: &mut Writer, n: usize, grid: usize, threads: usize) -> String {
    let (b, t) = (w.block_id(), w.thread_id());
    let bt = w.index(threads);
    let base = w.ix("muli", &b, &bt);
    let start = w.ix("addi", &base, &t);
    let (end, step) = (w.index(n), w.index(grid * threads));
    w.begin_for(&start, &end, &step)
}

fn finish(
    name: &str,
    flavor: Flavor,
    w: Vec<(Writer, Launch)>,
    params: Vec<BufferParam>,
) -> GpuKernel {
    let mut text = String::new();
    let mut launches = Vec::new();
    match flavor {
        Flavor::Gpu => {
            for (w, l) in w {
                text.push_str(&w.finish(&l.entry, &params, l.threads));
                launches.push(l);
            }
        }
        Flavor::CpuEmulation => unreachable!("one writer for the emulation"),
    }
    GpuKernel {
        name: name.to_string(),
        params,
        inputs: 2,
        outputs: 1,
        launches,
        text,
    }
}

/// `out[i, :] = table[idx[i], :]` for `table` of `rows × row` elements of `d` and `n` indices.
pub fn gather(
    name: &str,
    rows: usize,
    row: usize,
    n: usize,
    d: DType,
    flavor: Flavor,
) -> Result<GpuKernel, GpuLowerError> {
    check_value(name, d)?;
    let params = vec![
        BufferParam {
            dtype: d,
            len: rows * row,
        },
        BufferParam {
            dtype: DType::I32,
            len: n,
        },
        BufferParam {
            dtype: d,
            len: n * row,
        },
    ];
    let (grid, threads) = grid_for(n * row);
    let mut w = Writer::new(flavor);
    w.begin_launch(grid, threads);
    w.begin_phase();
    let e = grid_stride(&mut w, n * row, grid, threads);
    let rc = w.index(row);
    let i = w.ix("divui", &e, &rc);
    let j = w.ix("remui", &e, &rc);
    let id = w.load_global(1, &params[1], &i);
    let (ok, r) = table_row(&mut w, &id, rows);
    let base = w.ix("muli", &r, &rc);
    let at = w.ix("addi", &base, &j);
    let x = w.load_global(0, &params[0], &at);
    let mty = super::writer::mem_ty(d);
    let z = zero_of(&mut w, d);
    let y = w.op(format!("arith.select {ok}, {x}, {z} : {mty}"));
    w.store_global(2, &params[2], &e, &y);
    w.end();
    w.end_phase();
    w.end_launch();
    Ok(single(name, flavor, w, grid, threads, params))
}

/// Whether the i32 `id` is a row of a table of `rows` rows, and the row as an index (0 when
/// it is not).
fn table_row(w: &mut Writer, id: &str, rows: usize) -> (String, String) {
    let zero = scalar::iconst(w, 0, "i32");
    let limit = scalar::iconst(w, rows as i64, "i32");
    let ge = w.op(format!("arith.cmpi sge, {id}, {zero} : i32"));
    let lt = w.op(format!("arith.cmpi slt, {id}, {limit} : i32"));
    let ok = w.op(format!("arith.andi {ge}, {lt} : i1"));
    let safe = w.op(format!("arith.select {ok}, {id}, {zero} : i32"));
    let row = w.op(format!("arith.index_cast {safe} : i32 to index"));
    (ok, row)
}

/// Zero in `d`'s memory type.
fn zero_of(w: &mut Writer, d: DType) -> String {
    match d {
        DType::BF16 => scalar::iconst(w, 0, "i16"),
        DType::F16 => w.constant("0.0".into(), "f16"),
        _ => scalar::fconst(w, 0.0, d),
    }
}

fn single(
    name: &str,
    flavor: Flavor,
    w: Writer,
    grid: usize,
    threads: usize,
    params: Vec<BufferParam>,
) -> GpuKernel {
    let launch = Launch {
        entry: format!("{name}_l0"),
        grid,
        threads,
    };
    match flavor {
        Flavor::Gpu => finish(name, flavor, vec![(w, launch)], params),
        Flavor::CpuEmulation => GpuKernel {
            name: name.to_string(),
            text: w.finish(&format!("emu_{name}"), &params, 0),
            params,
            inputs: 2,
            outputs: 1,
            launches: vec![launch],
        },
    }
}

/// `out = 0; out[idx[i], :] += upd[i, :]` for `n` indices, `upd` of `n × row` elements and `out`
/// of `rows × row` elements, all f32.
pub fn scatter_add(
    name: &str,
    rows: usize,
    row: usize,
    n: usize,
    d: DType,
    flavor: Flavor,
) -> Result<GpuKernel, GpuLowerError> {
    if d != DType::F32 {
        return Err(GpuLowerError::Invalid {
            kernel: name.to_string(),
            message: format!("scatter-add sums f32 values, found {d}"),
        });
    }
    check_indices(name, DType::I32)?;
    let params = vec![
        BufferParam {
            dtype: DType::I32,
            len: n,
        },
        BufferParam {
            dtype: d,
            len: n * row,
        },
        BufferParam {
            dtype: d,
            len: rows * row,
        },
    ];
    let mut writers = Vec::new();
    let mut w = Writer::new(flavor);
    // Launch 0: zero the output.
    let (grid0, threads0) = grid_for(rows * row);
    w.begin_launch(grid0, threads0);
    w.begin_phase();
    let e = grid_stride(&mut w, rows * row, grid0, threads0);
    let z = scalar::fconst(&mut w, 0.0, d);
    w.store_global(2, &params[2], &e, &z);
    w.end();
    w.end_phase();
    w.end_launch();
    let l0 = Launch {
        entry: format!("{name}_l0"),
        grid: grid0,
        threads: threads0,
    };
    if flavor == Flavor::Gpu {
        writers.push((std::mem::replace(&mut w, Writer::new(flavor)), l0.clone()));
    }
    // Launch 1: one thread per column adds the rows in order.
    let (grid1, threads1) = grid_for(row);
    w.begin_launch(grid1, threads1);
    w.begin_phase();
    let j = grid_stride(&mut w, row, grid1, threads1);
    let (zero, one, nn) = (w.index(0), w.index(1), w.index(n));
    let i = w.begin_for(&zero, &nn, &one);
    let id = w.load_global(0, &params[0], &i);
    let (ok, r) = table_row(&mut w, &id, rows);
    w.begin_if(&ok);
    let rc = w.index(row);
    let src = w.ix("muli", &i, &rc);
    let src = w.ix("addi", &src, &j);
    let u = w.load_global(1, &params[1], &src);
    let dst = w.ix("muli", &r, &rc);
    let dst = w.ix("addi", &dst, &j);
    let o = w.load_global(2, &params[2], &dst);
    let s = w.op(format!("arith.addf {o}, {u} : f32"));
    w.store_global(2, &params[2], &dst, &s);
    w.end();
    w.end();
    w.end();
    w.end_phase();
    w.end_launch();
    let l1 = Launch {
        entry: format!("{name}_l1"),
        grid: grid1,
        threads: threads1,
    };
    Ok(match flavor {
        Flavor::Gpu => {
            writers.push((w, l1));
            finish(name, flavor, writers, params)
        }
        Flavor::CpuEmulation => GpuKernel {
            name: name.to_string(),
            text: w.finish(&format!("emu_{name}"), &params, 0),
            params,
            inputs: 2,
            outputs: 1,
            launches: vec![l0, l1],
        },
    })
}
