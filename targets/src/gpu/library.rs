//! GPU kernels for the plan's gather and scatter-add steps (the embedding lookups and their
//! gradients), written as block programs like the loop kernels, so they are checked the same way.
//!
//! - **gather** `out[i, :] = table[idx[i], :]`: grid-stride over the output elements. An index
//!   outside the table gives zeros (the trainer checks every id against the vocabulary before
//!   the first step, so this never happens in training).
//! - **scatter-add** `out = 0; out[idx[i], :] += upd[i, :]`: one launch zeroes `out`, a second
//!   gives each column to one thread, which adds the rows in index order — no float atomics, the
//!   same bits every run (f32 sums, where the interpreter sums in f64: within f32 round-off).

use super::kernels::{grid_for, GpuKernel, Launch};
use super::writer::{BufferParam, Flavor, Writer};
use super::GpuLowerError;
use crate::scalar;
use crate::scalar::ScalarSink;
use ir::DType;

fn check_value(name: &str, d: DType) -> Result<(), GpuLowerError> {
    if !matches!(d, DType::F32 | DType::F16 | DType::BF16) {
        return Err(GpuLowerError::Invalid {
            kernel: name.to_string(),
            message: format!("gather/scatter-add values must be f32, f16 or bf16, found {d}"),
        });
    }
    Ok(())
}

/// The grid-stride launches of one library kernel, each its own `gpu.func` on the GPU, all in
/// one emulation function on the CPU.
struct Launches {
    name: String,
    flavor: Flavor,
    params: Vec<BufferParam>,
    w: Writer,
    launches: Vec<Launch>,
    text: String,
}

impl Launches {
    fn new(name: &str, flavor: Flavor, params: Vec<BufferParam>) -> Launches {
        Launches {
            name: name.to_string(),
            flavor,
            params,
            w: Writer::new(flavor),
            launches: Vec::new(),
            text: String::new(),
        }
    }

    /// Opens a launch whose threads stride over `n` items; returns the item index.
    fn begin(&mut self, n: usize) -> String {
        let (grid, threads) = grid_for(n);
        self.launches.push(Launch {
            entry: format!("{}_l{}", self.name, self.launches.len()),
            grid,
            threads,
        });
        let w = &mut self.w;
        w.begin_launch(grid, threads);
        w.begin_phase();
        let (b, t) = (w.block_id(), w.thread_id());
        let bt = w.index(threads);
        let base = w.ix("muli", &b, &bt);
        let start = w.ix("addi", &base, &t);
        let (end, step) = (w.index(n), w.index(grid * threads));
        w.begin_for(&start, &end, &step)
    }

    /// Closes the launch opened by [`Self::begin`].
    fn end(&mut self) {
        self.w.end();
        self.w.end_phase();
        self.w.end_launch();
        if self.flavor == Flavor::Gpu {
            let l = self.launches.last().expect("a launch is open");
            let w = std::mem::replace(&mut self.w, Writer::new(self.flavor));
            self.text
                .push_str(&w.finish(&l.entry, &self.params, l.threads));
        }
    }

    fn finish(self) -> GpuKernel {
        let text = match self.flavor {
            Flavor::Gpu => self.text,
            Flavor::CpuEmulation => self
                .w
                .finish(&format!("emu_{}", self.name), &self.params, 0),
        };
        GpuKernel {
            name: self.name,
            params: self.params,
            inputs: 2,
            outputs: 1,
            launches: self.launches,
            text,
        }
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
    let (table, idx, out) = (
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
    );
    let mut k = Launches::new(name, flavor, vec![table.clone(), idx.clone(), out.clone()]);
    let e = k.begin(n * row);
    let w = &mut k.w;
    let rc = w.index(row);
    let i = w.ix("divui", &e, &rc);
    let j = w.ix("remui", &e, &rc);
    let id = w.load_global(1, &idx, &i);
    let (ok, r) = table_row(w, &id, rows);
    let base = w.ix("muli", &r, &rc);
    let at = w.ix("addi", &base, &j);
    let x = w.load_global(0, &table, &at);
    let z = zero_of(w, d);
    let y = w.op(format!(
        "arith.select {ok}, {x}, {z} : {}",
        super::writer::mem_ty(d)
    ));
    w.store_global(2, &out, &e, &y);
    k.end();
    Ok(k.finish())
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
    let (idx, upd, out) = (
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
    );
    let mut k = Launches::new(name, flavor, vec![idx.clone(), upd.clone(), out.clone()]);
    // Launch 0: zero the output.
    let e = k.begin(rows * row);
    let z = scalar::fconst(&mut k.w, 0.0, d);
    k.w.store_global(2, &out, &e, &z);
    k.end();
    // Launch 1: one thread per column adds the rows in order.
    let j = k.begin(row);
    let w = &mut k.w;
    let (zero, one, nn) = (w.index(0), w.index(1), w.index(n));
    let i = w.begin_for(&zero, &nn, &one);
    let id = w.load_global(0, &idx, &i);
    let (ok, r) = table_row(w, &id, rows);
    w.begin_if(&ok);
    let rc = w.index(row);
    let src = w.ix("muli", &i, &rc);
    let src = w.ix("addi", &src, &j);
    let u = w.load_global(1, &upd, &src);
    let dst = w.ix("muli", &r, &rc);
    let dst = w.ix("addi", &dst, &j);
    let o = w.load_global(2, &out, &dst);
    let sum = w.op(format!("arith.addf {o}, {u} : f32"));
    w.store_global(2, &out, &dst, &sum);
    w.end();
    w.end();
    k.end();
    Ok(k.finish())
}
