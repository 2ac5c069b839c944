//! A [`Dataset`] as the training loop's [`BatchSource`]: the compiled batch size, sequential
//! order unless shuffling was asked for, and in a data-parallel job of R ranks this rank's part
//! of each global batch: global batch `b` is the `B·R` rows from `b·B·R` on in the epoch's
//! order, and rank `r` reads its rows `r·B .. (r+1)·B`. So R ranks train on exactly the batches
//! one process with batch `B·R` would (unlike MindSpore's `shard_equal_rows`, which gives each
//! rank a contiguous slice of the epoch).

use super::driver::BatchSource;
use crate::data::{Dataset, Order, Shard, ValueRule};
use crate::tensor_io::RawTensor;
use plan::bert::BertConfigFile;
use plan::manifest::Manifest;
use std::collections::BTreeMap;
use std::path::Path;

pub struct DatasetSource {
    data: Dataset,
    order: Order,
    batch: usize,
    /// This process's rank and the job's rank count.
    ranks: (usize, usize),
    steps: u64,
}

impl DatasetSource {
    /// Opens `data` for the trainer's compiled batch size and sequence length; `shuffle_seed`
    /// gives a seeded permutation per epoch; `ranks` is (this rank, rank count).
    pub fn open(
        data: &Path,
        schema: Option<&Path>,
        columns: &[&str],
        m: &Manifest,
        shuffle_seed: Option<u64>,
        ranks: (usize, usize),
    ) -> Result<DatasetSource, String> {
        let mut ds = Dataset::open(data, schema, columns, m.seq_len).map_err(|e| e.to_string())?;
        println!("{}", files_read(data, &ds));
        ds.set_value_rules(&value_rules(m)?);
        ds.check_all_rows().map_err(|e| e.to_string())?;
        let global = m.batch * ranks.1;
        let steps = ds.num_batches(global, Shard::single()) as u64;
        if steps == 0 {
            return Err(format!(
                "{}: {} rows is less than one batch of {global}{} (batches drop the remainder; recompile with a smaller --batch)",
                data.display(),
                ds.num_rows(),
                if ranks.1 > 1 {
                    format!(" ({} ranks × {})", ranks.1, m.batch)
                } else {
                    String::new()
                }
            ));
        }
        Ok(DatasetSource {
            data: ds,
            order: match shuffle_seed {
                Some(seed) => Order::Shuffled { seed },
                None => Order::Sequential,
            },
            batch: m.batch,
            ranks,
            steps,
        })
    }

    /// Batches per epoch.
    pub fn steps(&self) -> u64 {
        self.steps
    }
}

/// One line naming the data files read, in row order (the first ten).
fn files_read(data: &Path, ds: &Dataset) -> String {
    let files = ds.files();
    let names: Vec<String> = files
        .iter()
        .take(10)
        .map(|f| {
            f.file_name()
                .map_or_else(|| f.display().to_string(), |n| n.to_string_lossy().into())
        })
        .collect();
    let more = files.len().saturating_sub(names.len());
    format!(
        "data {}: {} rows from {} file(s): {}{}",
        data.display(),
        ds.num_rows(),
        files.len(),
        names.join(", "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    )
}

/// What the trainer's models accept: token ids below both models' vocab_size, segment ids below
/// type_vocab_size, a 0/1 mask, labels below the label count (finite for a regression head).
fn value_rules(m: &Manifest) -> Result<Vec<(&'static str, ValueRule)>, String> {
    let read = |v: &serde_json::Value| {
        BertConfigFile::from_value(v).map_err(|e| format!("the trainer's manifest: {e}"))
    };
    let (t, s) = (read(&m.teacher_config)?, read(&m.student_config)?);
    let below = |limit: usize, what: &str| ValueRule::Below {
        limit: limit as i64,
        what: what.to_string(),
    };
    let labels = t.labels().unwrap_or(2).min(s.labels().unwrap_or(2));
    let mut rules = vec![
        (
            "input_ids",
            below(t.vocab_size.min(s.vocab_size), "the model's vocab_size"),
        ),
        (
            "segment_ids",
            below(
                t.type_vocab_size.min(s.type_vocab_size),
                "the model's type_vocab_size",
            ),
        ),
        ("input_mask", below(2, "an attention mask is 0 or 1")),
    ];
    rules.push((
        "label_ids",
        if labels >= 2 {
            below(labels, "the model's num_labels")
        } else {
            ValueRule::Finite
        },
    ));
    Ok(rules)
}

impl BatchSource for DatasetSource {
    fn steps_per_epoch(&self) -> u64 {
        self.steps
    }

    fn batch(&self, epoch: u64, index: u64) -> Result<BTreeMap<String, RawTensor>, String> {
        let (rank, size) = self.ranks;
        let global = self
            .data
            .batch_rows(
                self.order,
                epoch,
                index as usize,
                self.batch * size,
                Shard::single(),
            )
            .map_err(|e| e.to_string())?;
        self.data
            .rows_batch(&global[rank * self.batch..(rank + 1) * self.batch])
            .map(|b| b.columns)
            .map_err(|e| e.to_string())
    }
}
