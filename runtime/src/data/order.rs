//! Which rows a batch holds: the row order of an epoch and the slice of it a shard reads.
//!
//! **Order.** The seed never shuffles single-device TFRecord runs (TINYBERT_SPEC.md §5.2: the
//! standalone code passes `shuffle=False`, and its `shuffle(10000)` follow-up is dead code), so
//! [`Order::Sequential`] is the default. [`Order::Shuffled`] is a full permutation of the rows,
//! a pure function of `(seed, epoch)` (Fisher–Yates driven by SplitMix64), so any `(epoch, batch)`
//! cursor can be recomputed on resume. It does not reproduce MindSpore's shuffle stream.
//!
//! **Sharding** follows MindSpore's `TFRecordDataset(num_shards, shard_id, shard_equal_rows=True)`
//! (what the seed's distributed gd uses): every shard reads `ceil(rows / count)` *contiguous* rows of
//! the epoch's order, starting at `rank * ceil(rows / count)`, and wraps around to the first rows
//! when it runs past the end (so the last shards may repeat a few of the first rows, as in
//! MindSpore's `TFReaderOp::NeedPushFileToBlockQueue`). With a shuffled order, the shards slice
//! the same permutation, so they never overlap except through that wrap-around.

/// One data-parallel shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub rank: usize,
    pub count: usize,
}

impl Shard {
    pub fn single() -> Shard {
        Shard { rank: 0, count: 1 }
    }

    /// Rows this shard reads per epoch out of `rows`.
    pub fn rows(&self, rows: usize) -> usize {
        rows.div_ceil(self.count.max(1))
    }
}

impl Default for Shard {
    fn default() -> Self {
        Shard::single()
    }
}

/// The row order within an epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Order {
    /// File order, then record order (the seed's behaviour for TFRecord on one device).
    #[default]
    Sequential,
    /// A permutation per `(seed, epoch)`.
    Shuffled { seed: u64 },
}

/// SplitMix64: tiny, well-mixed, and fully specified, so permutations are stable across builds.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), by rejection so there is no modulo bias.
    fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let x = self.next();
            if x < zone {
                return x % n;
            }
        }
    }
}

/// The permutation of `0..rows` for `(seed, epoch)`: `perm[i]` is the row read at position `i`.
pub fn permutation(rows: usize, seed: u64, epoch: u64) -> Vec<u32> {
    assert!(rows <= u32::MAX as usize, "row count checked at open");
    let mut rng = SplitMix64(seed ^ epoch.wrapping_mul(0xd1b5_4a32_d192_ed03));
    // Decorrelate nearby (seed, epoch) pairs before use.
    rng.next();
    let mut p: Vec<u32> = (0..rows as u32).collect();
    for i in (1..rows).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        p.swap(i, j);
    }
    p
}

/// The epoch-order position of the `j`-th row a shard reads (before applying the order).
pub fn shard_position(shard: Shard, rows: usize, j: usize) -> usize {
    (shard.rank * shard.rows(rows) + j) % rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_is_a_deterministic_bijection() {
        let a = permutation(1000, 7, 3);
        assert_eq!(a, permutation(1000, 7, 3));
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..1000).collect::<Vec<u32>>());
        assert_ne!(a, permutation(1000, 7, 4), "epochs differ");
        assert_ne!(a, permutation(1000, 8, 3), "seeds differ");
        assert_ne!(a, (0..1000).collect::<Vec<u32>>(), "actually shuffled");
    }

    #[test]
    fn shards_are_contiguous_and_wrap() {
        // 10 rows, 4 shards -> 3 rows each; shard 3 reads 9, 0, 1.
        let s = |rank| Shard { rank, count: 4 };
        let rows = |rank| {
            (0..3)
                .map(|j| shard_position(s(rank), 10, j))
                .collect::<Vec<_>>()
        };
        assert_eq!(rows(0), [0, 1, 2]);
        assert_eq!(rows(2), [6, 7, 8]);
        assert_eq!(rows(3), [9, 0, 1]);
    }
}
