//! BERT input features, as google-research/bert `run_classifier.py` `convert_single_example`:
//! `[CLS] a [SEP]` (segment 0) then `b [SEP]` (segment 1) when `b` has tokens, longest-first pair
//! truncation to `max_len - 3` (`max_len - 2` for one segment), mask 1 on real tokens, zero padding.

use runtime::data::example::{Example, Feature};
use std::collections::BTreeMap;

/// The label of one row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Label {
    /// A class index, stored in an `int64_list`.
    Class(i64),
    /// A regression target (STS-B), stored in a `float_list`.
    Score(f32),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Features {
    pub input_ids: Vec<i64>,
    pub input_mask: Vec<i64>,
    pub segment_ids: Vec<i64>,
}

/// `_truncate_seq_pair`: drop the last token of the longer sequence (of `b` on a tie) until the
/// pair fits in `max_len`.
pub fn truncate_seq_pair(a: &mut Vec<u32>, b: &mut Vec<u32>, max_len: usize) {
    while a.len() + b.len() > max_len {
        if a.len() > b.len() {
            a.pop();
        } else {
            b.pop();
        }
    }
}

/// Builds the features of one example. `b` is `None` for single-sentence tasks; like the
/// reference, a `b` that tokenizes to nothing is treated as absent. `max_len >= 3` (checked by
/// the callers' argument validation).
pub fn build(cls: u32, sep: u32, mut a: Vec<u32>, b: Option<Vec<u32>>, max_len: usize) -> Features {
    let mut b = b.unwrap_or_default();
    if !b.is_empty() {
        truncate_seq_pair(&mut a, &mut b, max_len - 3);
    } else {
        a.truncate(max_len - 2);
    }
    let mut ids = Vec::with_capacity(max_len);
    let mut seg = Vec::with_capacity(max_len);
    ids.push(cls);
    ids.extend(&a);
    ids.push(sep);
    seg.resize(ids.len(), 0);
    if !b.is_empty() {
        ids.extend(&b);
        ids.push(sep);
        seg.resize(ids.len(), 1);
    }
    let real = ids.len();
    let mut input_ids: Vec<i64> = ids.iter().map(|&x| i64::from(x)).collect();
    let mut input_mask = vec![1i64; real];
    let mut segment_ids = seg;
    input_ids.resize(max_len, 0);
    input_mask.resize(max_len, 0);
    segment_ids.resize(max_len, 0);
    Features {
        input_ids,
        input_mask,
        segment_ids,
    }
}

/// The Example `file_based_convert_examples_to_features` writes: the three int64 sequences,
/// `label_ids = [label]` and `is_real_example = [1]` when a label is given.
pub fn example(f: &Features, label: Option<Label>) -> Example {
    let mut m = BTreeMap::new();
    m.insert("input_ids".to_string(), Feature::Int64(f.input_ids.clone()));
    m.insert(
        "input_mask".to_string(),
        Feature::Int64(f.input_mask.clone()),
    );
    m.insert(
        "segment_ids".to_string(),
        Feature::Int64(f.segment_ids.clone()),
    );
    if let Some(label) = label {
        let l = match label {
            Label::Class(c) => Feature::Int64(vec![c]),
            Label::Score(s) => Feature::Float(vec![s]),
        };
        m.insert("label_ids".to_string(), l);
        m.insert("is_real_example".to_string(), Feature::Int64(vec![1]));
    }
    Example { features: m }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_is_longest_first_and_ties_drop_from_b() {
        let (mut a, mut b) = (
            (0..8).collect::<Vec<u32>>(),
            (100..105).collect::<Vec<u32>>(),
        );
        truncate_seq_pair(&mut a, &mut b, 6);
        assert_eq!((a, b), (vec![0, 1, 2], vec![100, 101, 102]));
        let (mut a, mut b) = (vec![1, 2], vec![3, 4, 5, 6, 7]);
        truncate_seq_pair(&mut a, &mut b, 5);
        assert_eq!((a, b), (vec![1, 2], vec![3, 4, 5]));
    }

    #[test]
    fn layout() {
        let f = build(101, 102, vec![7, 8], Some(vec![9]), 8);
        assert_eq!(f.input_ids, [101, 7, 8, 102, 9, 102, 0, 0]);
        assert_eq!(f.input_mask, [1, 1, 1, 1, 1, 1, 0, 0]);
        assert_eq!(f.segment_ids, [0, 0, 0, 0, 1, 1, 0, 0]);
        // An empty b is a single sentence: no second [SEP], max_len - 2 budget.
        let f = build(101, 102, (1..=9).collect(), Some(vec![]), 6);
        assert_eq!(f.input_ids, [101, 1, 2, 3, 4, 102]);
        assert_eq!(f.segment_ids, [0; 6]);
    }
}
