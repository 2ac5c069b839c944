//! A [`Dataset`] as the training loop's [`BatchSource`]: the compiled batch size, one shard, and
//! sequential order unless shuffling was asked for.

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
    shard: Shard,
    steps: u64,
}

impl DatasetSource {
    /// Opens `data` for the trainer's compiled batch size and sequence length; `shuffle_seed`
    /// gives a seeded permutation per epoch.
    pub fn open(
        data: &Path,
        schema: Option<&Path>,
        columns: &[&str],
        m: &Manifest,
        shuffle_seed: Option<u64>,
    ) -> Result<DatasetSource, String> {
        let mut ds = Dataset::open(data, schema, columns, m.seq_len).map_err(|e| e.to_string())?;
        println!("{}", files_read(data, &ds));
        ds.set_value_rules(&value_rules(m)?);
        ds.check_all_rows().map_err(|e| e.to_string())?;
        let shard = Shard::single();
        let steps = ds.num_batches(m.batch, shard) as u64;
        if steps == 0 {
            return Err(format!(
                "{}: {} rows is less than one batch of {} (batches drop the remainder; recompile with a smaller --batch)",
                data.display(),
                ds.num_rows(),
                m.batch
            ));
        }
        Ok(DatasetSource {
            data: ds,
            order: match shuffle_seed {
                Some(seed) => Order::Shuffled { seed },
                None => Order::Sequential,
            },
            batch: m.batch,
            shard,
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
        self.data
            .batch(self.order, epoch, index as usize, self.batch, self.shard)
            .map(|b| b.columns)
            .map_err(|e| e.to_string())
    }
}
