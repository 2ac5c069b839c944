//! Training data in: the seed's TFRecord files of `tf.train.Example`s, its `schema.json`, and
//! fixed-shape batches with random access by `(epoch, batch)` so a run can resume anywhere.
//!
//! - [`tfrecord`]: the record framing (both CRCs checked on every read).
//! - [`example`]: a minimal `tf.train.Example` protobuf codec.
//! - [`schema`]: MindSpore's `schema.json`.
//! - [`order`]: row order (sequential by default, as the seed) and MindSpore-style sharding.
//! - [`dataset`]: the indexed dataset and its batches.

pub mod dataset;
pub mod example;
pub mod order;
pub mod schema;
pub mod tfrecord;

pub use dataset::{Batch, Dataset, ValueRule};
pub use order::{Order, Shard};

use std::path::{Path, PathBuf};

/// Every way reading or writing data can fail; each names the file (and record) involved.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {msg}")]
    Write { path: PathBuf, msg: String },
    #[error("{path}: record {index} (at byte {offset}): {what}")]
    Record {
        path: PathBuf,
        index: u64,
        offset: u64,
        what: RecordFault,
    },
    #[error("{path}: {msg}")]
    Schema { path: PathBuf, msg: String },
    #[error("{0}: no TFRecord files in this directory (tbc reads files whose name contains \"record\", except MindRecord index files ending in \".db\")")]
    NoFiles(PathBuf),
    #[error("{0}: no records")]
    Empty(PathBuf),
    /// The caller asked for something the data cannot give (a batch past the end, a bad shard,
    /// a sequence length that disagrees with the schema).
    #[error("{0}")]
    Request(String),
}

impl DataError {
    pub fn read(path: &Path, source: std::io::Error) -> DataError {
        DataError::Read {
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn write(path: &Path, e: impl std::fmt::Display) -> DataError {
        DataError::Write {
            path: path.to_path_buf(),
            msg: e.to_string(),
        }
    }
}

/// What is wrong with one record.
#[derive(Debug, thiserror::Error)]
pub enum RecordFault {
    #[error("file ends inside the record: needs {needed} more bytes, {available} left")]
    Truncated { needed: u64, available: u64 },
    #[error("length CRC mismatch (stored {stored:#010x}, computed {computed:#010x}); not a TFRecord file or corrupt")]
    LengthCrc { stored: u32, computed: u32 },
    #[error("data CRC mismatch (stored {stored:#010x}, computed {computed:#010x}); the record is corrupt")]
    DataCrc { stored: u32, computed: u32 },
    #[error("record length {len} does not fit in memory")]
    TooLarge { len: u64 },
    #[error("record length changed from {indexed} to {now} since the file was indexed")]
    Changed { indexed: u64, now: u64 },
    #[error("not a tf.train.Example: {0}")]
    Proto(#[from] example::ProtoError),
    #[error("feature '{feature}' is missing (the record has: {present})")]
    MissingFeature { feature: String, present: String },
    #[error("feature '{feature}' is a {found}, expected a {expected}")]
    WrongKind {
        feature: String,
        found: &'static str,
        expected: &'static str,
    },
    #[error("feature '{feature}' has {found} values, expected {expected}")]
    WrongLength {
        feature: String,
        found: usize,
        expected: usize,
    },
    #[error("feature '{feature}' holds {value}, which does not fit in int32")]
    OutOfRange { feature: String, value: i64 },
    #[error("feature '{feature}' holds {value} at position {position}, expected {expected}")]
    BadValue {
        feature: String,
        position: usize,
        value: String,
        expected: String,
    },
}
