//! safetensors files as raw little-endian tensors, with errors that name the file and the
//! tensor, and atomic writes (temporary file, fsync, rename) so no half-written file is ever
//! left behind.

use half::{bf16, f16};
use plan::ElemType;
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0}: not a valid safetensors file ({1})")]
    Format(PathBuf, String),
    #[error("{0}: tensor '{1}' has unsupported dtype {2}")]
    Dtype(PathBuf, String, String),
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, String),
}

/// A tensor as bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct RawTensor {
    pub elem: ElemType,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

fn elem_of(d: Dtype) -> Option<ElemType> {
    Some(match d {
        Dtype::F32 => ElemType::F32,
        Dtype::F64 => ElemType::F64,
        Dtype::F16 => ElemType::F16,
        Dtype::BF16 => ElemType::BF16,
        Dtype::I32 => ElemType::I32,
        Dtype::I64 => ElemType::I64,
        Dtype::BOOL => ElemType::Bool,
        _ => return None,
    })
}

fn dtype_of(e: ElemType) -> Dtype {
    match e {
        ElemType::F32 => Dtype::F32,
        ElemType::F64 => Dtype::F64,
        ElemType::F16 => Dtype::F16,
        ElemType::BF16 => Dtype::BF16,
        ElemType::I32 => Dtype::I32,
        ElemType::I64 => Dtype::I64,
        ElemType::Bool => Dtype::BOOL,
    }
}

fn chunks<const N: usize>(raw: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    raw.chunks_exact(N).map(|c| c.try_into().unwrap())
}

impl RawTensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Every element as f64.
    pub fn to_f64(&self) -> Vec<f64> {
        let b = &self.bytes;
        match self.elem {
            ElemType::F32 => chunks::<4>(b)
                .map(|c| f32::from_le_bytes(c) as f64)
                .collect(),
            ElemType::F64 => chunks::<8>(b).map(f64::from_le_bytes).collect(),
            ElemType::F16 => chunks::<2>(b)
                .map(|c| f16::from_le_bytes(c).to_f64())
                .collect(),
            ElemType::BF16 => chunks::<2>(b)
                .map(|c| bf16::from_le_bytes(c).to_f64())
                .collect(),
            ElemType::I32 => chunks::<4>(b)
                .map(|c| i32::from_le_bytes(c) as f64)
                .collect(),
            ElemType::I64 => chunks::<8>(b)
                .map(|c| i64::from_le_bytes(c) as f64)
                .collect(),
            ElemType::Bool => b.iter().map(|&x| (x != 0) as u8 as f64).collect(),
        }
    }

    /// The first non-finite element of a float tensor (index, value) and how many there are;
    /// `None` when all are finite or the tensor holds integers.
    pub fn non_finite(&self) -> Option<(usize, f64, usize)> {
        let b = &self.bytes;
        let values: Box<dyn Iterator<Item = f64>> = match self.elem {
            ElemType::F32 => Box::new(chunks::<4>(b).map(|c| f32::from_le_bytes(c) as f64)),
            ElemType::F64 => Box::new(chunks::<8>(b).map(f64::from_le_bytes)),
            ElemType::F16 => Box::new(chunks::<2>(b).map(|c| f16::from_le_bytes(c).to_f64())),
            ElemType::BF16 => Box::new(chunks::<2>(b).map(|c| bf16::from_le_bytes(c).to_f64())),
            ElemType::I32 | ElemType::I64 | ElemType::Bool => return None,
        };
        let mut first = None;
        let mut count = 0;
        for (i, v) in values.enumerate() {
            if !v.is_finite() {
                first.get_or_insert((i, v));
                count += 1;
            }
        }
        first.map(|(i, v)| (i, v, count))
    }

    /// A tensor of `elem` holding `values` (rounded to nearest for floats, truncated for ints).
    pub fn from_f64(elem: ElemType, shape: Vec<usize>, values: &[f64]) -> RawTensor {
        let bytes = match elem {
            ElemType::F32 => values
                .iter()
                .flat_map(|&x| (x as f32).to_le_bytes())
                .collect(),
            ElemType::F64 => values.iter().flat_map(|&x| x.to_le_bytes()).collect(),
            ElemType::F16 => values
                .iter()
                .flat_map(|&x| f16::from_f64(x).to_le_bytes())
                .collect(),
            ElemType::BF16 => values
                .iter()
                .flat_map(|&x| bf16::from_f64(x).to_le_bytes())
                .collect(),
            ElemType::I32 => values
                .iter()
                .flat_map(|&x| (x as i32).to_le_bytes())
                .collect(),
            ElemType::I64 => values
                .iter()
                .flat_map(|&x| (x as i64).to_le_bytes())
                .collect(),
            ElemType::Bool => values.iter().map(|&x| (x != 0.0) as u8).collect(),
        };
        RawTensor { elem, shape, bytes }
    }

    /// Converts between float types, or between integer types (exact for i64 → i32 in range).
    pub fn convert(&self, elem: ElemType) -> RawTensor {
        if elem == self.elem {
            return self.clone();
        }
        match (self.elem, elem) {
            (ElemType::I64, ElemType::I32) => RawTensor {
                elem,
                shape: self.shape.clone(),
                bytes: chunks::<8>(&self.bytes)
                    .flat_map(|c| (i64::from_le_bytes(c) as i32).to_le_bytes())
                    .collect(),
            },
            _ => RawTensor::from_f64(elem, self.shape.clone(), &self.to_f64()),
        }
    }
}

/// What is wrong with a safetensors file the crate refused, in words and naming the tensor
/// (the crate's own errors are bare codes such as `TensorInvalidInfo`).
fn explain_invalid(bytes: &[u8], e: &safetensors::SafeTensorError) -> String {
    let code = format!("{e:?}");
    let Some(len) = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    else {
        return format!(
            "{} bytes: too short for the 8-byte header length ({code})",
            bytes.len()
        );
    };
    let Some(header) = usize::try_from(len)
        .ok()
        .and_then(|n| bytes.get(8..8usize.checked_add(n)?))
    else {
        return format!(
            "the header length field says {len} bytes but the file has {} ({code})",
            bytes.len()
        );
    };
    let json: serde_json::Value = match serde_json::from_slice(header) {
        Ok(v) => v,
        Err(err) => return format!("the header is not valid JSON: {err} ({code})"),
    };
    let Some(map) = json.as_object() else {
        return format!("the header is not a JSON object ({code})");
    };
    let data_len = (bytes.len() - 8 - header.len()) as u64;
    for (name, info) in map.iter().filter(|(n, _)| *n != "__metadata__") {
        let dtype = info.get("dtype").and_then(|d| d.as_str()).unwrap_or("?");
        let shape: Option<Vec<u64>> = info
            .get("shape")
            .and_then(|s| s.as_array())
            .and_then(|a| a.iter().map(|d| d.as_u64()).collect());
        let offsets: Option<Vec<u64>> = info
            .get("data_offsets")
            .and_then(|s| s.as_array())
            .and_then(|a| a.iter().map(|d| d.as_u64()).collect());
        let size = match dtype {
            "F64" | "I64" | "U64" => Some(8),
            "F32" | "I32" | "U32" => Some(4),
            "F16" | "BF16" | "I16" | "U16" => Some(2),
            "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" => Some(1),
            _ => None,
        };
        let (Some(shape), Some(offsets), Some(size)) = (shape, offsets, size) else {
            return format!(
                "tensor '{name}': expected a known dtype, a shape and two data_offsets, found {info} ({code})"
            );
        };
        let [start, end] = offsets[..] else {
            return format!("tensor '{name}': data_offsets must hold two numbers ({code})");
        };
        let need = shape.iter().try_fold(size, |n: u64, &d| n.checked_mul(d));
        if start > end || end > data_len {
            return format!(
                "tensor '{name}': data_offsets [{start}, {end}] lie outside the {data_len} data bytes ({code})"
            );
        }
        if need != Some(end - start) {
            return format!(
                "tensor '{name}': shape {shape:?} of {dtype} needs {} bytes but data_offsets [{start}, {end}] hold {} ({code})",
                need.map_or("more than 2^64".into(), |n| n.to_string()),
                end - start
            );
        }
    }
    code
}

/// All tensors of a safetensors file, by name.
pub fn read(path: &Path) -> Result<BTreeMap<String, RawTensor>, IoError> {
    let bytes = std::fs::read(path).map_err(|e| IoError::Read(path.to_path_buf(), e))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| IoError::Format(path.to_path_buf(), explain_invalid(&bytes, &e)))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let elem = elem_of(view.dtype()).ok_or_else(|| {
            IoError::Dtype(
                path.to_path_buf(),
                name.clone(),
                format!("{:?}", view.dtype()),
            )
        })?;
        out.insert(
            name,
            RawTensor {
                elem,
                shape: view.shape().to_vec(),
                bytes: view.data().to_vec(),
            },
        );
    }
    Ok(out)
}

/// Writes `tensors` with `metadata` to `path` atomically.
pub fn write(
    path: &Path,
    tensors: &[(String, RawTensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<(), IoError> {
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, t)| {
            let v =
                safetensors::tensor::TensorView::new(dtype_of(t.elem), t.shape.clone(), &t.bytes)
                    .map_err(|e| IoError::Write(path.to_path_buf(), format!("tensor '{n}': {e}")))?;
            Ok((n.clone(), v))
        })
        .collect::<Result<_, IoError>>()?;
    let meta: std::collections::HashMap<String, String> = metadata.clone().into_iter().collect();
    let bytes = safetensors::serialize(views, &Some(meta))
        .map_err(|e| IoError::Write(path.to_path_buf(), e.to_string()))?;
    write_atomic(path, &canonical_header(bytes))
}

/// The same safetensors file with its JSON header's keys sorted: the crate writes the metadata
/// from a `HashMap`, whose order changes from run to run, and the same tensors must give the
/// same bytes. (serde_json's map is ordered; the data offsets do not change.)
fn canonical_header(bytes: Vec<u8>) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8-byte length")) as usize;
    let Ok(header) = serde_json::from_slice::<serde_json::Value>(&bytes[8..8 + n]) else {
        return bytes;
    };
    let mut json = serde_json::to_vec(&header).expect("a parsed header serializes");
    while json.len() % 8 != 0 {
        json.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + json.len() + bytes.len() - 8 - n);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&bytes[8 + n..]);
    out
}

/// Writes bytes to `path` through a temporary file in the same directory, fsync and rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), IoError> {
    let fail = |m: String| IoError::Write(path.to_path_buf(), m);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(fail(format!("directory {} does not exist", dir.display())));
    }
    if path.file_name().is_none() {
        return Err(fail("not a file path".into()));
    }
    let tmp = crate::temp_files::sibling(path, crate::temp_files::Kind::New);
    let _registered = crate::temp_files::Registered::new(&tmp);
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail(e.to_string())
    })
}

#[cfg(test)]
mod invalid_file_tests {
    use super::*;

    fn file_with_header(header: &str, data: usize) -> Vec<u8> {
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend(header.as_bytes());
        b.extend(vec![0u8; data]);
        b
    }

    #[test]
    fn a_refused_file_is_explained_by_tensor_name() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (
                r#"{"w":{"dtype":"F32","shape":[3,3],"data_offsets":[0,16]}}"#,
                16,
                "tensor 'w': shape [3, 3] of F32 needs 36 bytes but data_offsets [0, 16] hold 16",
            ),
            (
                r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,160]}}"#,
                16,
                "tensor 'w': data_offsets [0, 160] lie outside the 16 data bytes",
            ),
            (
                r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,16]}}"#,
                16,
                "needs more than 2^64 bytes",
            ),
            (r#"{"w": 5}"#, 0, "tensor 'w': expected a known dtype"),
        ];
        for (header, data, says) in cases {
            let p = dir.path().join("x.safetensors");
            std::fs::write(&p, file_with_header(header, data)).unwrap();
            let err = read(&p).unwrap_err().to_string();
            assert!(err.contains(says), "{header}: {err}");
        }
        let p = dir.path().join("short.safetensors");
        std::fs::write(&p, [1u8, 2, 3]).unwrap();
        assert!(read(&p).unwrap_err().to_string().contains("too short"));
    }
}

#[cfg(test)]
mod determinism_tests {
    use super::*;

    /// The same tensors and metadata give the same file bytes, whatever order the metadata map
    /// and a fresh process's hash seed give, and the file reads back.
    #[test]
    fn the_same_tensors_give_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let tensors: Vec<(String, RawTensor)> = (0..5)
            .map(|i| {
                (
                    format!("t{i}"),
                    RawTensor {
                        elem: plan::ElemType::F32,
                        shape: vec![2],
                        bytes: vec![i as u8; 8],
                    },
                )
            })
            .collect();
        let meta: BTreeMap<String, String> = (0..12)
            .map(|i| (format!("key{i}"), format!("value{i}")))
            .collect();
        let mut files = Vec::new();
        for k in 0..4 {
            let p = dir.path().join(format!("f{k}.safetensors"));
            write(&p, &tensors, &meta).unwrap();
            files.push(std::fs::read(&p).unwrap());
        }
        assert!(files.windows(2).all(|w| w[0] == w[1]));
        let back = read(&dir.path().join("f0.safetensors")).unwrap();
        assert_eq!(back.len(), 5);
        assert_eq!(back["t3"].bytes, vec![3u8; 8]);
    }
}
