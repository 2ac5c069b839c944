//! safetensors files ↔ IR tensors, with errors that name the file and the tensor, and atomic
//! writes (temporary file, fsync, rename) so no half-written file is ever left behind.

use anyhow::{anyhow, bail, Context, Result};
use ir::{DType, Data, Tensor};
use safetensors::{Dtype as StDtype, SafeTensors};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// All tensors of a safetensors file, by name.
pub fn read(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow!("{}: not a valid safetensors file ({e})", path.display()))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        let raw = view.data();
        let dtype = ir_dtype(view.dtype()).ok_or_else(|| {
            anyhow!(
                "{}: tensor '{name}' has unsupported dtype {:?}",
                path.display(),
                view.dtype()
            )
        })?;
        out.insert(name, Tensor::new(shape, Data::from_le_bytes(dtype, raw)));
    }
    Ok(out)
}

/// The IR dtype of a safetensors dtype tbc can read.
fn ir_dtype(dtype: StDtype) -> Option<DType> {
    Some(match dtype {
        StDtype::F32 => DType::F32,
        StDtype::F64 => DType::F64,
        StDtype::F16 => DType::F16,
        StDtype::BF16 => DType::BF16,
        StDtype::I32 => DType::I32,
        StDtype::I64 => DType::I64,
        StDtype::BOOL => DType::Bool,
        _ => return None,
    })
}

fn st_dtype(dtype: DType) -> StDtype {
    match dtype {
        DType::F32 => StDtype::F32,
        DType::F64 => StDtype::F64,
        DType::F16 => StDtype::F16,
        DType::BF16 => StDtype::BF16,
        DType::I32 => StDtype::I32,
        DType::I64 => StDtype::I64,
        DType::Bool => StDtype::BOOL,
    }
}

/// Writes `tensors` to `path` atomically: a temporary file in the same directory, fsync, rename.
pub fn write(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let encoded: Vec<(String, StDtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, t)| {
            (
                n.clone(),
                st_dtype(t.dtype()),
                t.shape.clone(),
                t.data.to_le_bytes(),
            )
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = encoded
        .iter()
        .map(|(n, dt, shape, bytes)| {
            let view = safetensors::tensor::TensorView::new(*dt, shape.clone(), bytes)
                .map_err(|e| anyhow!("tensor '{n}': {e}"))?;
            Ok((n.clone(), view))
        })
        .collect::<Result<_>>()?;
    let meta: std::collections::HashMap<String, String> = metadata.clone().into_iter().collect();
    let bytes = safetensors::serialize(views, &Some(meta))
        .map_err(|e| anyhow!("serializing {}: {e}", path.display()))?;
    write_atomic(path, &bytes)
}

/// Writes bytes to `path` through a temporary file in the same directory, fsync and rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    if !dir.is_dir() {
        bail!(
            "cannot write {}: directory {} does not exist",
            path.display(),
            dir.display()
        );
    }
    let file_name = path
        .file_name()
        .ok_or_else(|| anyhow!("cannot write {}: not a file path", path.display()))?
        .to_string_lossy()
        .to_string();
    let tmp = dir.join(format!(".{file_name}.tmp{}", std::process::id()));
    let result = (|| -> Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.context(format!("cannot write {}", path.display())));
    }
    Ok(())
}

/// Converts a float tensor to `dtype` (checkpoints may hold f16/bf16/f64), or an integer batch
/// tensor between i32 and i64; anything else is an error naming the file and tensor.
pub fn convert_for_input(t: &Tensor, dtype: DType, file: &Path, name: &str) -> Result<Tensor> {
    let from = t.dtype();
    let ok =
        from == dtype || (from.is_float() && dtype.is_float()) || (from.is_int() && dtype.is_int());
    if !ok {
        bail!(
            "{}: tensor '{name}' has dtype {from}, expected {dtype}",
            file.display()
        );
    }
    Ok(Tensor::new(t.shape.clone(), t.data.cast(dtype)))
}
