//! safetensors files ↔ IR tensors, on top of the runtime's raw tensor I/O (same errors, same
//! atomic writes).

use anyhow::Result;
use ir::{DType, Data, Tensor};
use plan::ElemType;
use runtime::tensor_io::{self, RawTensor};
use std::collections::BTreeMap;
use std::path::Path;

pub use runtime::tensor_io::write_atomic;

pub fn dtype_of(e: ElemType) -> DType {
    match e {
        ElemType::F32 => DType::F32,
        ElemType::F16 => DType::F16,
        ElemType::BF16 => DType::BF16,
        ElemType::F64 => DType::F64,
        ElemType::I32 => DType::I32,
        ElemType::I64 => DType::I64,
        ElemType::Bool => DType::Bool,
    }
}

pub fn to_tensor(t: &RawTensor) -> Tensor {
    Tensor::new(
        t.shape.clone(),
        Data::from_le_bytes(dtype_of(t.elem), &t.bytes),
    )
}

pub fn to_raw(t: &Tensor) -> RawTensor {
    RawTensor {
        elem: t.dtype(),
        shape: t.shape.clone(),
        bytes: t.data.to_le_bytes(),
    }
}

/// All tensors of a safetensors file, by name.
pub fn read(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    Ok(tensor_io::read(path)?
        .iter()
        .map(|(n, t)| (n.clone(), to_tensor(t)))
        .collect())
}

/// Writes `tensors` to `path` atomically.
pub fn write(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let raw: Vec<(String, RawTensor)> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), to_raw(t)))
        .collect();
    Ok(tensor_io::write(path, &raw, metadata)?)
}
