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

/// All tensors of a safetensors file, by name.
pub fn read(path: &Path) -> Result<BTreeMap<String, RawTensor>, IoError> {
    let bytes = std::fs::read(path).map_err(|e| IoError::Read(path.to_path_buf(), e))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| IoError::Format(path.to_path_buf(), e.to_string()))?;
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
    write_atomic(path, &bytes)
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
