//! safetensors files ↔ IR tensors, with errors that name the file and the tensor, and atomic
//! writes (temporary file, fsync, rename) so no half-written file is ever left behind.

use anyhow::{anyhow, bail, Context, Result};
use half::{bf16, f16};
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
        let data = decode(view.dtype(), raw).ok_or_else(|| {
            anyhow!(
                "{}: tensor '{name}' has unsupported dtype {:?}",
                path.display(),
                view.dtype()
            )
        })?;
        out.insert(name, Tensor::new(shape, data));
    }
    Ok(out)
}

fn chunks<const N: usize>(raw: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    raw.chunks_exact(N).map(|c| c.try_into().unwrap())
}

fn decode(dtype: StDtype, raw: &[u8]) -> Option<Data> {
    Some(match dtype {
        StDtype::F32 => Data::F32(chunks::<4>(raw).map(f32::from_le_bytes).collect()),
        StDtype::F64 => Data::F64(chunks::<8>(raw).map(f64::from_le_bytes).collect()),
        StDtype::F16 => Data::F16(chunks::<2>(raw).map(f16::from_le_bytes).collect()),
        StDtype::BF16 => Data::BF16(chunks::<2>(raw).map(bf16::from_le_bytes).collect()),
        StDtype::I32 => Data::I32(chunks::<4>(raw).map(i32::from_le_bytes).collect()),
        StDtype::I64 => Data::I64(chunks::<8>(raw).map(i64::from_le_bytes).collect()),
        StDtype::BOOL => Data::Bool(raw.iter().map(|&b| b != 0).collect()),
        _ => return None,
    })
}

fn encode(t: &Tensor) -> (StDtype, Vec<u8>) {
    match &t.data {
        Data::F32(v) => (
            StDtype::F32,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        Data::F64(v) => (
            StDtype::F64,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        Data::F16(v) => (
            StDtype::F16,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        Data::BF16(v) => (
            StDtype::BF16,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        Data::I32(v) => (
            StDtype::I32,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        Data::I64(v) => (
            StDtype::I64,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        Data::Bool(v) => (StDtype::BOOL, v.iter().map(|&x| x as u8).collect()),
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
            let (dt, bytes) = encode(t);
            (n.clone(), dt, t.shape.clone(), bytes)
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
