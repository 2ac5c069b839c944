//! The seed's MindSpore `schema.json` for TFRecord data:
//!
//! ```json
//! {"datasetType": "TF", "numRows": 7680,
//!  "columns": {"input_ids": {"type": "int64", "rank": 1, "shape": [128]}, ...}}
//! ```
//!
//! `numRows` is optional (MindSpore then reads every row); when present it limits the rows read.
//! Columns keep their order from the file, and are written back in that order.

use super::DataError;
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::path::Path;

/// The element types a TFRecord feature can hold and tbc reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ColumnType {
    /// Stored in an `int64_list`.
    #[serde(rename = "int64")]
    Int64,
    /// Stored in a `float_list`.
    #[serde(rename = "float32")]
    Float32,
}

impl ColumnType {
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Int64 => "int64",
            ColumnType::Float32 => "float32",
        }
    }
}

/// The most values one column may hold per row (2^24): far above any sequence length, and small
/// enough that a batch of rows is a sane allocation.
pub const MAX_ROW_VALUES: usize = 1 << 24;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    #[serde(rename = "type")]
    pub ty: ColumnType,
    pub rank: usize,
    pub shape: Vec<usize>,
}

impl ColumnSpec {
    /// Values per row.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Columns in file order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Columns(pub Vec<(String, ColumnSpec)>);

impl Columns {
    pub fn get(&self, name: &str) -> Option<&ColumnSpec> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, c)| c)
    }
}

impl Serialize for Columns {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Columns {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Columns;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of column name -> {type, rank, shape}")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Columns, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = a.next_entry::<String, ColumnSpec>()? {
                    if out.iter().any(|(n, _): &(String, ColumnSpec)| *n == k) {
                        return Err(serde::de::Error::custom(format!(
                            "column '{k}' appears twice"
                        )));
                    }
                    out.push((k, v));
                }
                Ok(Columns(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schema {
    #[serde(
        rename = "datasetType",
        default = "tf",
        skip_serializing_if = "Option::is_none"
    )]
    pub dataset_type: Option<String>,
    #[serde(rename = "numRows", default, skip_serializing_if = "Option::is_none")]
    pub num_rows: Option<u64>,
    pub columns: Columns,
}

fn tf() -> Option<String> {
    Some("TF".into())
}

impl Schema {
    /// A `"TF"` schema with rank-1 columns.
    pub fn new(num_rows: Option<u64>, columns: &[(&str, ColumnType, usize)]) -> Schema {
        Schema {
            dataset_type: tf(),
            num_rows,
            columns: Columns(
                columns
                    .iter()
                    .map(|&(n, ty, len)| {
                        let spec = ColumnSpec {
                            ty,
                            rank: 1,
                            shape: vec![len],
                        };
                        (n.to_string(), spec)
                    })
                    .collect(),
            ),
        }
    }

    pub fn parse(text: &str, path: &Path) -> Result<Schema, DataError> {
        let s: Schema = serde_json::from_str(text).map_err(|e| DataError::Schema {
            path: path.to_path_buf(),
            msg: format!("not a valid schema ({e})"),
        })?;
        s.validate(path)?;
        Ok(s)
    }

    pub fn read(path: &Path) -> Result<Schema, DataError> {
        let text = std::fs::read_to_string(path).map_err(|e| DataError::read(path, e))?;
        Schema::parse(&text, path)
    }

    /// Checks what serde cannot: the dataset type, rank = shape length, non-empty shapes.
    pub fn validate(&self, path: &Path) -> Result<(), DataError> {
        let bad = |msg: String| DataError::Schema {
            path: path.to_path_buf(),
            msg,
        };
        if let Some(t) = &self.dataset_type {
            if t != "TF" {
                return Err(bad(format!(
                    "datasetType is \"{t}\"; tbc reads only \"TF\" (TFRecord)"
                )));
            }
        }
        if self.columns.0.is_empty() {
            return Err(bad("\"columns\" is empty".into()));
        }
        for (name, c) in &self.columns.0 {
            if c.rank != c.shape.len() {
                return Err(bad(format!(
                    "column '{name}': rank {} but shape {:?} has {} dimensions",
                    c.rank,
                    c.shape,
                    c.shape.len()
                )));
            }
            if plan::checked_numel(&c.shape).is_none_or(|n| n > MAX_ROW_VALUES) {
                return Err(bad(format!(
                    "column '{name}': shape {:?} has more than {MAX_ROW_VALUES} values per row",
                    c.shape
                )));
            }
            if c.shape.contains(&0) {
                return Err(bad(format!(
                    "column '{name}': shape {:?} has a zero dimension",
                    c.shape
                )));
            }
        }
        Ok(())
    }

    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("schema serializes");
        s.push('\n');
        s
    }

    /// Writes atomically (temporary file, fsync, rename).
    pub fn write(&self, path: &Path) -> Result<(), DataError> {
        crate::tensor_io::write_atomic(path, self.to_json().as_bytes()).map_err(|e| {
            DataError::Write {
                path: path.to_path_buf(),
                msg: e.to_string(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = r#"{"datasetType": "TF", "numRows": 7680, "columns": {
        "input_ids": {"type": "int64", "rank": 1, "shape": [256]},
        "input_mask": {"type": "int64", "rank": 1, "shape": [256]},
        "segment_ids": {"type": "int64", "rank": 1, "shape": [256]}}}"#;

    #[test]
    fn parses_the_seed_example_in_order() {
        let s = Schema::parse(SEED, Path::new("schema.json")).unwrap();
        assert_eq!(s.num_rows, Some(7680));
        let names: Vec<_> = s.columns.0.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["input_ids", "input_mask", "segment_ids"]);
        assert_eq!(s.columns.get("input_mask").unwrap().shape, [256]);
    }

    #[test]
    fn write_parse_round_trip() {
        let s = Schema::new(
            Some(3),
            &[
                ("segment_ids", ColumnType::Int64, 8),
                ("label_ids", ColumnType::Float32, 1),
            ],
        );
        let back = Schema::parse(&s.to_json(), Path::new("x")).unwrap();
        assert_eq!(back, s);
        assert!(s.to_json().find("segment_ids").unwrap() < s.to_json().find("label_ids").unwrap());
    }

    fn err(text: &str) -> String {
        Schema::parse(text, Path::new("dir/schema.json"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn clear_errors() {
        let e = err(r#"{"columns": {"a": {"type": "int64", "rank": 2, "shape": [4]}}}"#);
        assert!(e.contains("dir/schema.json") && e.contains("rank 2"), "{e}");
        let e = err(r#"{"columns": {"a": {"type": "string", "rank": 1, "shape": [4]}}}"#);
        assert!(e.contains("string"), "{e}");
        let e = err(
            r#"{"datasetType": "CSV", "columns": {"a": {"type": "int64", "rank": 1, "shape": [4]}}}"#,
        );
        assert!(e.contains("CSV"), "{e}");
        let e = err(r#"{"numRows": 3}"#);
        assert!(e.contains("columns"), "{e}");
        let e = err(r#"{"columns": {}}"#);
        assert!(e.contains("empty"), "{e}");
        let e = err(r#"{"columns": {"a": {"type": "int64", "rank": 1, "shape": [0]}}}"#);
        assert!(e.contains("zero"), "{e}");
    }
}
