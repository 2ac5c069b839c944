//! Element types: the IR's tensor types and the runtime's buffers share this one enum.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Element type of a tensor or buffer (bool is one byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ElemType {
    F32,
    F16,
    BF16,
    F64,
    I32,
    I64,
    Bool,
}

impl ElemType {
    pub const ALL: [ElemType; 7] = [
        ElemType::F32,
        ElemType::F16,
        ElemType::BF16,
        ElemType::F64,
        ElemType::I32,
        ElemType::I64,
        ElemType::Bool,
    ];

    /// The spelling of the IR text format and of messages (`f32`, `i64`, `bool`, …).
    pub fn name(self) -> &'static str {
        match self {
            ElemType::F32 => "f32",
            ElemType::F16 => "f16",
            ElemType::BF16 => "bf16",
            ElemType::F64 => "f64",
            ElemType::I32 => "i32",
            ElemType::I64 => "i64",
            ElemType::Bool => "bool",
        }
    }

    pub fn from_name(s: &str) -> Option<ElemType> {
        ElemType::ALL.into_iter().find(|d| d.name() == s)
    }

    pub fn is_float(self) -> bool {
        matches!(
            self,
            ElemType::F32 | ElemType::F16 | ElemType::BF16 | ElemType::F64
        )
    }

    pub fn is_int(self) -> bool {
        matches!(self, ElemType::I32 | ElemType::I64)
    }

    /// Bytes per element.
    pub fn size_bytes(self) -> usize {
        match self {
            ElemType::F32 | ElemType::I32 => 4,
            ElemType::F16 | ElemType::BF16 => 2,
            ElemType::F64 | ElemType::I64 => 8,
            ElemType::Bool => 1,
        }
    }
}

impl fmt::Display for ElemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The most elements one tensor may have (2^40: 4 TiB of f32). Every shape read from a file or a
/// flag is checked against it, so size arithmetic downstream cannot overflow.
pub const MAX_ELEMENTS: usize = 1 << 40;

/// The element count of `shape`, or `None` when it passes [`MAX_ELEMENTS`].
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
}

#[cfg(test)]
mod size_tests {
    use super::*;

    #[test]
    fn element_counts_past_the_limit_or_usize_are_none() {
        assert_eq!(checked_numel(&[]), Some(1));
        assert_eq!(checked_numel(&[0, usize::MAX]), Some(0));
        assert_eq!(checked_numel(&[1 << 20, 1 << 20]), Some(MAX_ELEMENTS));
        assert_eq!(checked_numel(&[1 << 20, (1 << 20) + 1]), None);
        assert_eq!(checked_numel(&[1 << 32, 1 << 32]), None);
        assert_eq!(checked_numel(&[usize::MAX, 2]), None);
    }
}
