//! The records of the metrics JSONL file: written by the trainer, read by `tbc plot`.

use super::EvalScores;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------------------------
// The metrics JSONL file

/// One line of the metrics JSONL file, tagged by `"kind"`. Unknown fields are ignored and
/// lines of an unknown kind read as [`MetricsLine::Other`], so newer files stay readable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum MetricsLine {
    Train(TrainRecord),
    Eval(EvalRecord),
    #[serde(other)]
    Other,
}

/// A training step. Non-finite numbers are written as `null` (JSON has no NaN) and read back
/// as NaN.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainRecord {
    /// `gd`, `td1`, `td2`, `finetune`.
    pub phase: String,
    pub epoch: u64,
    /// The step within the phase.
    pub step: u64,
    #[serde(deserialize_with = "nan_if_null")]
    pub loss: f64,
    /// The loss's parts by output name (e.g. `loss.cls`).
    #[serde(default, deserialize_with = "nan_map")]
    pub losses: BTreeMap<String, f64>,
    /// The loss-scaled step overflowed and was skipped.
    #[serde(default)]
    pub overflow: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples_per_s: Option<f64>,
    /// Seconds since the phase started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_s: Option<f64>,
}

/// An evaluation pass after training step `step` of `phase`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    pub phase: String,
    pub step: u64,
    /// `dev`, `dev-mm`, ...
    pub split: String,
    #[serde(deserialize_with = "nan_map")]
    pub metrics: BTreeMap<String, f64>,
    pub num_examples: u64,
}

impl EvalRecord {
    pub fn from_scores(phase: &str, step: u64, split: &str, scores: &EvalScores) -> Self {
        EvalRecord {
            phase: phase.to_string(),
            step,
            split: split.to_string(),
            metrics: scores.metrics.clone(),
            num_examples: scores.num_examples as u64,
        }
    }
}

impl MetricsLine {
    /// The line as compact JSON, without the newline.
    pub fn to_json_line(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }
}

fn nan_if_null<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

fn nan_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, f64>, D::Error> {
    let map = BTreeMap::<String, Option<f64>>::deserialize(d)?;
    Ok(map
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or(f64::NAN)))
        .collect())
}

/// A metrics JSONL file that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum MetricsFileError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{path}:{line}: not a metrics record ({source})")]
    Parse {
        path: PathBuf,
        line: usize,
        source: serde_json::Error,
    },
}

/// Parses a metrics JSONL text; blank lines are skipped. Errors carry the 1-based line number
/// and `path` (used only in messages).
pub fn parse_metrics_jsonl(
    path: &Path,
    text: &str,
) -> Result<Vec<(usize, MetricsLine)>, MetricsFileError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let record = serde_json::from_str(line).map_err(|source| MetricsFileError::Parse {
            path: path.to_path_buf(),
            line: i + 1,
            source,
        })?;
        out.push((i + 1, record));
    }
    Ok(out)
}

/// Reads a metrics JSONL file: each record with its 1-based line number.
pub fn read_metrics_jsonl(path: &Path) -> Result<Vec<(usize, MetricsLine)>, MetricsFileError> {
    let text = std::fs::read_to_string(path).map_err(|e| MetricsFileError::Read(path.into(), e))?;
    parse_metrics_jsonl(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_lines_round_trip_and_tolerate_extras() {
        let text = concat!(
            r#"{"kind":"train","phase":"td2","epoch":1,"step":100,"loss":0.53,"losses":{"loss.cls":0.53},"overflow":false,"scale":65536.0,"lr":1.9e-5,"samples_per_s":41.2,"time_s":12.3,"extra":[1,2]}"#,
            "\n\n",
            r#"{"kind":"eval","phase":"td2","step":100,"split":"dev","metrics":{"acc":0.81,"f1":null},"num_examples":864,"new":"x"}"#,
            "\n",
            r#"{"kind":"checkpoint","path":"a.ckpt"}"#,
            "\n",
        );
        let lines = parse_metrics_jsonl(Path::new("m.jsonl"), text).unwrap();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1].0, 3);
        let MetricsLine::Train(t) = &lines[0].1 else {
            panic!("not a train line: {:?}", lines[0].1)
        };
        assert_eq!((t.step, t.loss, t.scale), (100, 0.53, Some(65536.0)));
        let MetricsLine::Eval(e) = &lines[1].1 else {
            panic!("not an eval line: {:?}", lines[1].1)
        };
        assert!(e.metrics["f1"].is_nan());
        assert_eq!(lines[2].1, MetricsLine::Other);
        let back: MetricsLine = serde_json::from_str(&lines[0].1.to_json_line().unwrap()).unwrap();
        assert_eq!(back, lines[0].1);
        let bad = parse_metrics_jsonl(Path::new("m.jsonl"), "\n{\"kind\":\"train\"}\n");
        let msg = bad.unwrap_err().to_string();
        assert!(msg.starts_with("m.jsonl:2: "), "{msg}");
    }

    #[test]
    fn nan_loss_is_written_as_null_and_read_as_nan() {
        let line = MetricsLine::Train(TrainRecord {
            phase: "gd".into(),
            epoch: 1,
            step: 1,
            loss: f64::INFINITY,
            losses: BTreeMap::new(),
            overflow: true,
            scale: None,
            lr: None,
            samples_per_s: None,
            time_s: None,
        });
        let json = line.to_json_line().unwrap();
        assert!(json.contains(r#""loss":null"#), "{json}");
        let MetricsLine::Train(t) = serde_json::from_str(&json).unwrap() else {
            panic!("not a train line")
        };
        assert!(t.loss.is_nan() && t.overflow);
    }
}
