//! The trainer's checkpoint files.
//!
//! A checkpoint is a pair of safetensors files:
//! - `tiny_bert_{k}_{save_step}.safetensors`: the student weights under Hugging Face names
//!   (fit_dense included; the HF export is where it is dropped), metadata `{"format": "pt"}`,
//!   so `safetensors.torch.load_file` and transformers read it as is;
//! - `tiny_bert_{k}_{save_step}.state.safetensors`: the Adam moments (`adam_m.<name>`,
//!   `adam_v.<name>`) and the trainer's own state as a JSON string in the metadata key
//!   `tbc_state` (phase, steps, loss scale, data cursor, … — whatever struct the caller gives).
//!
//! Every file is written to a temporary file, fsynced and renamed, and the state file is written
//! before the weights file: a weights file therefore implies that its state file is complete.

use crate::tensor_io::{self, IoError, RawTensor};
use plan::ElemType;
use serde::{de::DeserializeOwned, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Tensors by name.
pub type TensorMap = BTreeMap<String, RawTensor>;

/// Metadata key of the trainer state JSON in a state file.
pub const STATE_KEY: &str = "tbc_state";
const M_PREFIX: &str = "adam_m.";
const V_PREFIX: &str = "adam_v.";

#[derive(Debug, thiserror::Error)]
pub enum CkptError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{0}: {1}")]
    Bad(PathBuf, String),
    #[error("checkpoint directory {0}: {1}")]
    Dir(PathBuf, String),
    #[error("invalid checkpoint settings: {0}")]
    Settings(String),
}

/// The Adam first and second moments, by parameter name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Moments {
    pub m: TensorMap,
    pub v: TensorMap,
}

/// Serializes `tensors` (borrowed, not copied) with `metadata` and writes them atomically.
fn write_tensors<'a>(
    path: &Path,
    tensors: impl Iterator<Item = (String, &'a RawTensor)>,
    metadata: HashMap<String, String>,
) -> Result<(), CkptError> {
    let fail = |m: String| CkptError::Io(IoError::Write(path.to_path_buf(), m));
    let mut views = Vec::new();
    for (name, t) in tensors {
        let view =
            safetensors::tensor::TensorView::new(st_dtype(t.elem), t.shape.clone(), &t.bytes)
                .map_err(|e| fail(format!("tensor '{name}': {e}")))?;
        views.push((name, view));
    }
    let bytes = safetensors::serialize(views, &Some(metadata)).map_err(|e| fail(e.to_string()))?;
    tensor_io::write_atomic(path, &bytes)?;
    Ok(())
}

fn st_dtype(e: ElemType) -> safetensors::Dtype {
    use safetensors::Dtype as D;
    match e {
        ElemType::F32 => D::F32,
        ElemType::F64 => D::F64,
        ElemType::F16 => D::F16,
        ElemType::BF16 => D::BF16,
        ElemType::I32 => D::I32,
        ElemType::I64 => D::I64,
        ElemType::Bool => D::BOOL,
    }
}

fn pt_metadata() -> HashMap<String, String> {
    HashMap::from([("format".to_string(), "pt".to_string())])
}

/// The metadata of a safetensors file, from its header only (the 8-byte header length, then
/// the JSON header whose `__metadata__` holds string pairs).
fn read_metadata(path: &Path) -> Result<HashMap<String, String>, CkptError> {
    use std::io::Read;
    let format = |m: &str| CkptError::Io(IoError::Format(path.to_path_buf(), m.to_string()));
    let mut f = std::fs::File::open(path).map_err(|e| IoError::Read(path.to_path_buf(), e))?;
    let file_len = f
        .metadata()
        .map_err(|e| IoError::Read(path.to_path_buf(), e))?
        .len();
    let mut len8 = [0u8; 8];
    f.read_exact(&mut len8)
        .map_err(|_| format("file shorter than the 8-byte header length"))?;
    let n = u64::from_le_bytes(len8);
    if n > file_len.saturating_sub(8) {
        return Err(format("header length exceeds the file size (truncated?)"));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)
        .map_err(|e| IoError::Read(path.to_path_buf(), e))?;
    let json: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| format(&format!("header is not JSON: {e}")))?;
    let mut out = HashMap::new();
    if let Some(meta) = json.get("__metadata__").and_then(|m| m.as_object()) {
        for (k, v) in meta {
            let v = v
                .as_str()
                .ok_or_else(|| format(&format!("metadata '{k}' is not a string")))?;
            out.insert(k.clone(), v.to_string());
        }
    }
    Ok(out)
}

/// Writes student weights (HF names) with metadata `{"format": "pt"}`.
pub fn save_weights(path: &Path, weights: &TensorMap) -> Result<(), CkptError> {
    write_tensors(
        path,
        weights.iter().map(|(n, t)| (n.clone(), t)),
        pt_metadata(),
    )
}

/// Reads a weights file; a truncated or garbage file is an error naming it.
pub fn load_weights(path: &Path) -> Result<TensorMap, CkptError> {
    Ok(tensor_io::read(path)?)
}

/// Writes the Adam moments and `state` (as JSON in metadata `tbc_state`).
pub fn save_state<T: Serialize>(
    path: &Path,
    moments: &Moments,
    state: &T,
) -> Result<(), CkptError> {
    let json = serde_json::to_string(state)
        .map_err(|e| CkptError::Bad(path.to_path_buf(), format!("cannot serialize state: {e}")))?;
    let mut meta = pt_metadata();
    meta.insert(STATE_KEY.to_string(), json);
    let m = moments.m.iter().map(|(n, t)| (format!("{M_PREFIX}{n}"), t));
    let v = moments.v.iter().map(|(n, t)| (format!("{V_PREFIX}{n}"), t));
    write_tensors(path, m.chain(v), meta)
}

/// Reads a state file back. A state of another shape (another phase or config) is an error
/// naming the file and the serde message; checking the values is the caller's business.
pub fn load_state<T: DeserializeOwned>(path: &Path) -> Result<(Moments, T), CkptError> {
    let bad = |m: String| CkptError::Bad(path.to_path_buf(), m);
    let meta = read_metadata(path)?;
    let json = meta.get(STATE_KEY).ok_or_else(|| {
        bad(format!(
            "no '{STATE_KEY}' metadata: not a tbc trainer state file"
        ))
    })?;
    let state = serde_json::from_str(json)
        .map_err(|e| bad(format!("trainer state does not match this trainer: {e}")))?;
    let mut moments = Moments::default();
    for (name, t) in tensor_io::read(path)? {
        if let Some(p) = name.strip_prefix(M_PREFIX) {
            moments.m.insert(p.to_string(), t);
        } else if let Some(p) = name.strip_prefix(V_PREFIX) {
            moments.v.insert(p.to_string(), t);
        } else {
            return Err(bad(format!(
                "unexpected tensor '{name}' (expected '{M_PREFIX}<param>' or '{V_PREFIX}<param>')"
            )));
        }
    }
    Ok((moments, state))
}

/// One complete checkpoint pair on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointPair {
    pub k: u64,
    pub save_step: u64,
    pub weights: PathBuf,
    pub state: PathBuf,
    /// Modification time of the weights file.
    pub mtime: SystemTime,
}

impl CheckpointPair {
    /// The training step at which it was saved (k · save_step).
    pub fn step(&self) -> u128 {
        self.k as u128 * self.save_step as u128
    }
}

/// Which checkpoint [`newest`] picks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Newest {
    /// Largest training step k · save_step (ties: later mtime). Use it to resume a phase from its
    /// own directory: file times can lie (copies, clock changes), step numbers do not.
    Step,
    /// Latest weights-file mtime (ties: larger step). The seed's td1 → td2 chaining rule
    /// (`run_task_distill.py` sorts the phase-1 directory by mtime, TINYBERT_SPEC §6.2).
    Mtime,
}

/// Parses `tiny_bert_{k}_{save_step}.safetensors` (and not the state file or temp files).
fn parse_weights_name(name: &str) -> Option<(u64, u64)> {
    let rest = name
        .strip_prefix("tiny_bert_")?
        .strip_suffix(".safetensors")?;
    let (k, s) = rest.split_once('_')?;
    let digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
    if !digits(k) || !digits(s) {
        return None;
    }
    Some((k.parse().ok()?, s.parse().ok()?))
}

/// Every complete pair in `dir` (a weights file whose state file exists), in no order.
/// Temporary files and weights files without their state file are ignored.
pub fn list(dir: &Path) -> Result<Vec<CheckpointPair>, CkptError> {
    let err = |e: std::io::Error| CkptError::Dir(dir.to_path_buf(), e.to_string());
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(err)? {
        let entry = entry.map_err(err)?;
        let name = entry.file_name().to_string_lossy().to_string();
        let Some((k, save_step)) = parse_weights_name(&name) else {
            continue;
        };
        let state = dir.join(state_name(k, save_step));
        if !state.is_file() {
            continue;
        }
        let mtime = entry.metadata().and_then(|m| m.modified()).map_err(err)?;
        out.push(CheckpointPair {
            k,
            save_step,
            weights: entry.path(),
            state,
            mtime,
        });
    }
    Ok(out)
}

/// The newest complete checkpoint pair in `dir` by `by`, or None when there is none.
pub fn newest(dir: &Path, by: Newest) -> Result<Option<CheckpointPair>, CkptError> {
    let all = list(dir)?;
    Ok(match by {
        Newest::Step => all.into_iter().max_by_key(|p| (p.step(), p.mtime)),
        Newest::Mtime => all.into_iter().max_by_key(|p| (p.mtime, p.step())),
    })
}

fn weights_name(k: u64, save_step: u64) -> String {
    format!("tiny_bert_{k}_{save_step}.safetensors")
}

fn state_name(k: u64, save_step: u64) -> String {
    format!("tiny_bert_{k}_{save_step}.state.safetensors")
}

/// A directory of rotating checkpoints, as MindSpore's `ModelSaveCkpt` (TINYBERT_SPEC §6.1).
#[derive(Clone, Debug)]
pub struct CheckpointDir {
    pub dir: PathBuf,
    pub save_step: u64,
    pub max_num: u64,
}

impl CheckpointDir {
    /// Creates `dir` if needed. `save_step` and `max_num` must be at least 1 (the seed's
    /// `max_ckpt_num = 0` would delete each checkpoint right after writing it).
    pub fn new(dir: impl Into<PathBuf>, save_step: u64, max_num: u64) -> Result<Self, CkptError> {
        let dir = dir.into();
        if save_step == 0 {
            return Err(CkptError::Settings(
                "save_ckpt_step must be at least 1".into(),
            ));
        }
        if max_num == 0 {
            return Err(CkptError::Settings(
                "max_ckpt_num must be at least 1".into(),
            ));
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| CkptError::Dir(dir.clone(), format!("cannot create: {e}")))?;
        Ok(CheckpointDir {
            dir,
            save_step,
            max_num,
        })
    }

    pub fn weights_path(&self, k: u64) -> PathBuf {
        self.dir.join(weights_name(k, self.save_step))
    }

    pub fn state_path(&self, k: u64) -> PathBuf {
        self.dir.join(state_name(k, self.save_step))
    }

    /// Writes checkpoint `k` (state first, weights last), then deletes every pair of this
    /// save_step with k' ≤ k − max_num: the seed deletes exactly k − max_num; deleting all older
    /// ones also cleans up after a resumed run that skipped numbers. Returns the new pair.
    pub fn save<T: Serialize>(
        &self,
        k: u64,
        weights: &TensorMap,
        moments: &Moments,
        state: &T,
    ) -> Result<CheckpointPair, CkptError> {
        let (wp, sp) = (self.weights_path(k), self.state_path(k));
        save_state(&sp, moments, state)?;
        save_weights(&wp, weights)?;
        if k > self.max_num {
            let cut = k - self.max_num;
            for old in list(&self.dir)? {
                if old.save_step == self.save_step && old.k <= cut {
                    remove_pair(&old.weights, &old.state)?;
                }
            }
        }
        let mtime = std::fs::metadata(&wp)
            .and_then(|m| m.modified())
            .map_err(|e| CkptError::Dir(self.dir.clone(), e.to_string()))?;
        Ok(CheckpointPair {
            k,
            save_step: self.save_step,
            weights: wp,
            state: sp,
            mtime,
        })
    }
}

/// Removes the weights file first, so that a crash in between never leaves a weights file
/// without its state.
fn remove_pair(weights: &Path, state: &Path) -> Result<(), CkptError> {
    for p in [weights, state] {
        match std::fs::remove_file(p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(CkptError::Bad(
                    p.to_path_buf(),
                    format!("cannot delete: {e}"),
                ))
            }
        }
    }
    Ok(())
}

/// Replaces the best-model file (`eval_model.safetensors`) with `weights` in one rename: where
/// the seed deletes `eval_model.ckpt` and then saves, there is never a moment without one here.
pub fn save_best(path: &Path, weights: &TensorMap) -> Result<(), CkptError> {
    save_weights(path, weights)
}

/// The best-accuracy logic of MindSpore's `EvalCallBack` (TINYBERT_SPEC §6.3).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BestModel {
    pub path: PathBuf,
    /// Starts at 0.0 as the seed's `global_acc`; keep it in the trainer state to resume.
    pub best_acc: f64,
}

impl BestModel {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        BestModel {
            path: path.into(),
            best_acc: 0.0,
        }
    }

    /// Saves `weights` when `acc` is strictly greater than the best so far; returns whether it
    /// did. The best accuracy is updated only once the file is written.
    pub fn consider(&mut self, acc: f64, weights: &TensorMap) -> Result<bool, CkptError> {
        if acc.is_nan() || acc <= self.best_acc {
            return Ok(false);
        }
        save_best(&self.path, weights)?;
        self.best_acc = acc;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_names_parse_strictly() {
        assert_eq!(
            parse_weights_name("tiny_bert_3_100.safetensors"),
            Some((3, 100))
        );
        for bad in [
            "tiny_bert_3_100.state.safetensors",
            ".tiny_bert_3_100.safetensors.tmp12",
            "tiny_bert_3_100.safetensors.tmp12",
            "tiny_bert_x_100.safetensors",
            "tiny_bert_3_.safetensors",
            "tiny_bert_3_1_0.safetensors",
            "eval_model.safetensors",
        ] {
            assert_eq!(parse_weights_name(bad), None, "{bad}");
        }
    }
}
