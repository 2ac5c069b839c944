//! An indexed TFRecord dataset with fixed-shape batches, addressable by `(order, epoch, batch)`.
//!
//! **Which files.** `data` is a directory or one file. In a directory tbc reads every regular file
//! whose *name* contains `"record"`, except MindRecord index files (ending in `.db`), sorted by
//! name. The seed (`src/dataset.py`) drops every name containing `"db"`, which also drops data
//! files such as `imdb.tfrecord` without a word; tbc skips only the index files, and the trainer
//! lists the files it reads. MindSpore's `TFRecordDataset` sorts the list as tbc does. Rows are
//! the records of the files in that order.
//!
//! **Values.** [`ValueRule`]s bound what a column may hold (token ids below the vocabulary size,
//! labels below the label count, finite float labels); every decoded row is checked, and
//! [`Dataset::check_all_rows`] checks the whole dataset before training starts.
//!
//! **Rows.** A schema's `numRows` limits the rows read to the first `numRows` (as MindSpore's
//! `num_samples`; 0 or absent means all). Opening scans the 12-byte record headers once and keeps
//! one `u64` offset per record, never the data; a batch reads its records with positioned reads,
//! checks both CRCs and decodes them.
//!
//! **Columns.** Integer features become `i32` (checked to fit), float features `f32`.
//! `label_ids` is `[batch]`; every other column is `[batch, len]`, where `len` is the schema's
//! shape (which must equal `seq_len` for sequence columns) or, without a schema, `seq_len`
//! (1 for `label_ids`). The seed casts every column to int32; float labels (STS-B) stay f32 here.
//! Batches drop the remainder (the seed's `drop_remainder=True`). Row order and sharding:
//! [`super::order`].

use super::example::{Example, Feature};
use super::order::{permutation, shard_position, Order, Shard};
use super::schema::{ColumnType, Schema};
use super::tfrecord::{self, RecordPos, FRAME_OVERHEAD};
use super::{DataError, RecordFault};
use crate::tensor_io::RawTensor;
use plan::ElemType;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// One batch: column name → tensor (`i32`/`f32`, leading dimension = batch size).
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub columns: BTreeMap<String, RawTensor>,
}

/// What values a column may hold.
#[derive(Clone, Debug, PartialEq)]
pub enum ValueRule {
    /// Integers in `0..limit`; `what` names the limit in errors ("the model's vocab_size").
    Below { limit: i64, what: String },
    /// Finite floats.
    Finite,
}

impl ValueRule {
    fn expected(&self) -> String {
        match self {
            ValueRule::Below { limit, what } => format!("0 <= value < {limit} ({what})"),
            ValueRule::Finite => "a finite number".into(),
        }
    }
}

/// One column's values for a batch being assembled.
enum Values {
    I32(Vec<i32>),
    F32(Vec<f32>),
}

/// How one requested column is read and laid out.
#[derive(Clone, Debug)]
struct Column {
    name: String,
    ty: ColumnType,
    /// Values per row.
    len: usize,
    /// Per-row shape in the batch (`[]` for a `label_ids` scalar).
    row_shape: Vec<usize>,
    rule: Option<ValueRule>,
}

struct SourceFile {
    path: PathBuf,
    handle: File,
    /// Offset of each record's header; record `i`'s data length is
    /// `offsets[i + 1] - offsets[i] - 16` (the last one ends at `end`).
    offsets: Vec<u64>,
    end: u64,
    /// Global row of this file's first record.
    first_row: usize,
}

/// (seed, epoch, permutation).
type CachedPermutation = (u64, u64, Arc<Vec<u32>>);

pub struct Dataset {
    files: Vec<SourceFile>,
    rows: usize,
    columns: Vec<Column>,
    /// The last shuffled permutation, keyed by (seed, epoch): consecutive batches reuse it.
    perm: Mutex<Option<CachedPermutation>>,
}

/// The files `data` names, by the seed's rule (see the module docs).
pub fn data_files(data: &Path) -> Result<Vec<PathBuf>, DataError> {
    let meta = std::fs::metadata(data).map_err(|e| DataError::read(data, e))?;
    if !meta.is_dir() {
        return Ok(vec![data.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(data).map_err(|e| DataError::read(data, e))? {
        let entry = entry.map_err(|e| DataError::read(data, e))?;
        let name = entry.file_name().to_string_lossy().to_string();
        let is_file = std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file());
        let ours = crate::temp_files::parse(&entry.path()).is_some();
        if is_file && name.contains("record") && !name.ends_with(".db") && !ours {
            files.push(entry.path());
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(DataError::NoFiles(data.to_path_buf()));
    }
    Ok(files)
}

impl Dataset {
    /// Opens `data` (a directory or a file) with an optional `schema.json`, for the `columns` the
    /// caller feeds. Scans every record header, then decodes the first record to check the
    /// columns early.
    pub fn open(
        data: &Path,
        schema: Option<&Path>,
        columns: &[&str],
        seq_len: usize,
    ) -> Result<Dataset, DataError> {
        let schema = schema.map(Schema::read).transpose()?;
        let mut files = Vec::new();
        let mut rows = 0usize;
        for path in data_files(data)? {
            let positions = tfrecord::scan(&path)?;
            let handle = File::open(&path).map_err(|e| DataError::read(&path, e))?;
            let end = positions
                .last()
                .map_or(0, |p| p.offset + p.len + FRAME_OVERHEAD);
            let offsets = positions.iter().map(|p| p.offset).collect::<Vec<_>>();
            let first_row = rows;
            rows += offsets.len();
            files.push(SourceFile {
                path,
                handle,
                offsets,
                end,
                first_row,
            });
        }
        if rows == 0 {
            return Err(DataError::Empty(data.to_path_buf()));
        }
        if let Some(n) = schema.as_ref().and_then(|s| s.num_rows) {
            if n > 0 {
                rows = rows.min(usize::try_from(n).unwrap_or(usize::MAX));
            }
        }
        if rows > u32::MAX as usize {
            return Err(DataError::Request(format!(
                "{}: {rows} rows; tbc supports at most {} rows per dataset",
                data.display(),
                u32::MAX
            )));
        }
        let mut ds = Dataset {
            files,
            rows,
            columns: Vec::new(),
            perm: Mutex::new(None),
        };
        let first = ds.example(0)?;
        ds.columns = plan_columns(schema.as_ref(), columns, seq_len, &first, &ds.files[0].path)?;
        // Check the first row fully with the final column plan.
        ds.decode_row(0, &first, &mut ds.empty_values(1))?;
        Ok(ds)
    }

    /// Bounds the values of the named columns (columns not read are ignored); every row decoded
    /// from now on is checked.
    pub fn set_value_rules(&mut self, rules: &[(&str, ValueRule)]) {
        for c in &mut self.columns {
            c.rule = rules
                .iter()
                .find(|(n, _)| *n == c.name)
                .map(|(_, r)| r.clone());
        }
    }

    /// Decodes and checks every row (CRCs, features, value rules): run before the first step
    /// so bad data stops a run before it starts, with the file, record and feature named.
    pub fn check_all_rows(&self) -> Result<(), DataError> {
        let mut values = self.empty_values(1);
        for row in 0..self.rows {
            for v in &mut values {
                match v {
                    Values::I32(v) => v.clear(),
                    Values::F32(v) => v.clear(),
                }
            }
            let ex = self.example(row)?;
            self.decode_row(row, &ex, &mut values)?;
        }
        Ok(())
    }

    /// Rows read per epoch before sharding (after `numRows`).
    pub fn num_rows(&self) -> usize {
        self.rows
    }

    /// The files read, in row order.
    pub fn files(&self) -> Vec<&Path> {
        self.files.iter().map(|f| f.path.as_path()).collect()
    }

    /// Full batches per epoch for one shard (the remainder is dropped, as in the seed).
    pub fn num_batches(&self, batch_size: usize, shard: Shard) -> usize {
        if batch_size == 0 || shard.count == 0 {
            return 0;
        }
        shard.rows(self.rows) / batch_size
    }

    /// The global rows of batch `index` of `epoch`, in batch order.
    pub fn batch_rows(
        &self,
        order: Order,
        epoch: u64,
        index: usize,
        batch_size: usize,
        shard: Shard,
    ) -> Result<Vec<usize>, DataError> {
        if shard.count == 0 || shard.rank >= shard.count {
            return Err(DataError::Request(format!(
                "shard rank {} of {} is not valid (need rank < count)",
                shard.rank, shard.count
            )));
        }
        if batch_size == 0 {
            return Err(DataError::Request("batch size must be at least 1".into()));
        }
        let n = self.num_batches(batch_size, shard);
        if index >= n {
            return Err(DataError::Request(format!(
                "batch {index} does not exist: an epoch has {n} batches of {batch_size} \
                 ({} rows per shard, {} shard(s), remainder dropped)",
                shard.rows(self.rows),
                shard.count
            )));
        }
        let perm = match order {
            Order::Sequential => None,
            Order::Shuffled { seed } => Some(self.permutation(seed, epoch)),
        };
        Ok((index * batch_size..(index + 1) * batch_size)
            .map(|j| {
                let pos = shard_position(shard, self.rows, j);
                perm.as_ref().map_or(pos, |p| p[pos] as usize)
            })
            .collect())
    }

    /// Batch `index` of `epoch` for `shard`.
    pub fn batch(
        &self,
        order: Order,
        epoch: u64,
        index: usize,
        batch_size: usize,
        shard: Shard,
    ) -> Result<Batch, DataError> {
        let rows = self.batch_rows(order, epoch, index, batch_size, shard)?;
        self.rows_batch(&rows)
    }

    /// A batch of the given global rows, in that order.
    pub fn rows_batch(&self, rows: &[usize]) -> Result<Batch, DataError> {
        let batch_size = rows.len();
        let mut values = self.empty_values(batch_size);
        for &row in rows {
            let ex = self.example(row)?;
            self.decode_row(row, &ex, &mut values)?;
        }
        let columns = self
            .columns
            .iter()
            .zip(values)
            .map(|(c, v)| {
                let mut shape = vec![batch_size];
                shape.extend(&c.row_shape);
                let (elem, bytes) = match v {
                    Values::I32(v) => (
                        ElemType::I32,
                        v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    ),
                    Values::F32(v) => (
                        ElemType::F32,
                        v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    ),
                };
                (c.name.clone(), RawTensor { elem, shape, bytes })
            })
            .collect();
        Ok(Batch { columns })
    }

    fn empty_values(&self, rows: usize) -> Vec<Values> {
        self.columns
            .iter()
            .map(|c| match c.ty {
                ColumnType::Int64 => Values::I32(Vec::with_capacity(c.len * rows)),
                ColumnType::Float32 => Values::F32(Vec::with_capacity(c.len * rows)),
            })
            .collect()
    }

    /// The decoded Example of global row `row` (CRCs checked).
    pub fn example(&self, row: usize) -> Result<Example, DataError> {
        let (file, index, pos) = self.locate(row);
        let data = tfrecord::read_at(&file.handle, &file.path, index as u64, pos)?;
        Example::decode(&data).map_err(|e| DataError::Record {
            path: file.path.clone(),
            index: index as u64,
            offset: pos.offset,
            what: RecordFault::Proto(e),
        })
    }

    fn locate(&self, row: usize) -> (&SourceFile, usize, RecordPos) {
        let fi = self.files.partition_point(|f| f.first_row <= row) - 1;
        let f = &self.files[fi];
        let i = row - f.first_row;
        let next = f.offsets.get(i + 1).copied().unwrap_or(f.end);
        let pos = RecordPos {
            offset: f.offsets[i],
            len: next - f.offsets[i] - FRAME_OVERHEAD,
        };
        (f, i, pos)
    }

    fn permutation(&self, seed: u64, epoch: u64) -> Arc<Vec<u32>> {
        let mut cache = self.perm.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((s, e, p)) = cache.as_ref() {
            if (*s, *e) == (seed, epoch) {
                return p.clone();
            }
        }
        let p = Arc::new(permutation(self.rows, seed, epoch));
        *cache = Some((seed, epoch, p.clone()));
        p
    }

    /// Checks every column of one record and appends its values.
    fn decode_row(&self, row: usize, ex: &Example, out: &mut [Values]) -> Result<(), DataError> {
        let (file, index, pos) = self.locate(row);
        let fail = |what| DataError::Record {
            path: file.path.clone(),
            index: index as u64,
            offset: pos.offset,
            what,
        };
        for (c, out) in self.columns.iter().zip(out.iter_mut()) {
            let Some(f) = ex.features.get(&c.name) else {
                let present = ex.features.keys().cloned().collect::<Vec<_>>().join(", ");
                return Err(fail(RecordFault::MissingFeature {
                    feature: c.name.clone(),
                    present,
                }));
            };
            let check_len = |found: usize| {
                if found == c.len {
                    return Ok(());
                }
                Err(fail(RecordFault::WrongLength {
                    feature: c.name.clone(),
                    found,
                    expected: c.len,
                }))
            };
            match (f, out) {
                (Feature::Int64(v), Values::I32(out)) => {
                    check_len(v.len())?;
                    if let Some(rule @ ValueRule::Below { limit, .. }) = &c.rule {
                        if let Some(position) = v.iter().position(|x| !(0..*limit).contains(x)) {
                            return Err(fail(RecordFault::BadValue {
                                feature: c.name.clone(),
                                position,
                                value: v[position].to_string(),
                                expected: rule.expected(),
                            }));
                        }
                    }
                    for &x in v {
                        let y = i32::try_from(x).map_err(|_| {
                            fail(RecordFault::OutOfRange {
                                feature: c.name.clone(),
                                value: x,
                            })
                        })?;
                        out.push(y);
                    }
                }
                (Feature::Float(v), Values::F32(out)) => {
                    check_len(v.len())?;
                    if let Some(rule @ ValueRule::Finite) = &c.rule {
                        if let Some(position) = v.iter().position(|x| !x.is_finite()) {
                            return Err(fail(RecordFault::BadValue {
                                feature: c.name.clone(),
                                position,
                                value: v[position].to_string(),
                                expected: rule.expected(),
                            }));
                        }
                    }
                    out.extend(v);
                }
                (f, _) => {
                    return Err(fail(RecordFault::WrongKind {
                        feature: c.name.clone(),
                        found: f.kind_name(),
                        expected: match c.ty {
                            ColumnType::Int64 => "int64_list",
                            ColumnType::Float32 => "float_list",
                        },
                    }))
                }
            }
        }
        Ok(())
    }
}

const LABEL: &str = "label_ids";

/// Decides each requested column's type, length and batch layout from the schema (when given)
/// or from the first record.
fn plan_columns(
    schema: Option<&Schema>,
    names: &[&str],
    seq_len: usize,
    first: &Example,
    first_path: &Path,
) -> Result<Vec<Column>, DataError> {
    if names.is_empty() {
        return Err(DataError::Request("no columns requested".into()));
    }
    let mut out = Vec::new();
    for &name in names {
        let (ty, shape) = match schema {
            Some(s) => {
                let Some(spec) = s.columns.get(name) else {
                    let have: Vec<_> = s.columns.0.iter().map(|(n, _)| n.as_str()).collect();
                    return Err(DataError::Request(format!(
                        "the schema has no column '{name}' (it has: {})",
                        have.join(", ")
                    )));
                };
                (spec.ty, spec.shape.clone())
            }
            None if name == LABEL => {
                // Integer class ids normally; a float_list label (STS-B) reads as f32.
                let ty = match first.features.get(name) {
                    Some(Feature::Float(_)) => ColumnType::Float32,
                    _ => ColumnType::Int64,
                };
                (ty, vec![1])
            }
            None => (ColumnType::Int64, vec![seq_len]),
        };
        let len: usize = shape.iter().product();
        if name != LABEL && len != seq_len {
            return Err(DataError::Request(format!(
                "column '{name}' has shape {shape:?} in the schema, but the sequence length is \
                 {seq_len} (from {})",
                first_path.display()
            )));
        }
        let row_shape = if name == LABEL && len == 1 {
            Vec::new()
        } else {
            shape
        };
        out.push(Column {
            name: name.to_string(),
            ty,
            len,
            row_shape,
            rule: None,
        });
    }
    Ok(out)
}
