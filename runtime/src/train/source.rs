//! A [`Dataset`] as the training loop's [`BatchSource`]: the compiled batch size, one shard, and
//! sequential order unless shuffling was asked for.

use super::driver::BatchSource;
use crate::data::{Dataset, Order, Shard};
use crate::tensor_io::RawTensor;
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
        let ds = Dataset::open(data, schema, columns, m.seq_len).map_err(|e| e.to_string())?;
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
