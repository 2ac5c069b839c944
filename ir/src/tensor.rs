//! Host tensors: the values the interpreter computes with and the CLI reads and writes.

use crate::types::{shape_str, DType, TensorType};
use half::{bf16, f16};

/// Element storage, one variant per dtype.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    F64(Vec<f64>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    Bool(Vec<bool>),
}

/// Applies `$body` to the vector inside any variant, binding it as `$v`.
macro_rules! with_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            Data::F32($v) => $body,
            Data::F16($v) => $body,
            Data::BF16($v) => $body,
            Data::F64($v) => $body,
            Data::I32($v) => $body,
            Data::I64($v) => $body,
            Data::Bool($v) => $body,
        }
    };
}

/// Like `with_data!` but rebuilds the same variant from `$body`'s vector.
macro_rules! map_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            Data::F32($v) => Data::F32($body),
            Data::F16($v) => Data::F16($body),
            Data::BF16($v) => Data::BF16($body),
            Data::F64($v) => Data::F64($body),
            Data::I32($v) => Data::I32($body),
            Data::I64($v) => Data::I64($body),
            Data::Bool($v) => Data::Bool($body),
        }
    };
}

impl Data {
    pub fn dtype(&self) -> DType {
        match self {
            Data::F32(_) => DType::F32,
            Data::F16(_) => DType::F16,
            Data::BF16(_) => DType::BF16,
            Data::F64(_) => DType::F64,
            Data::I32(_) => DType::I32,
            Data::I64(_) => DType::I64,
            Data::Bool(_) => DType::Bool,
        }
    }

    pub fn len(&self) -> usize {
        with_data!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `n` copies of `value` converted to `dtype`.
    pub fn splat(dtype: DType, value: f64, n: usize) -> Data {
        Data::from_f64(dtype, &vec![value; n])
    }

    /// Converts f64 values to `dtype` (rounding to nearest for floats, truncation for ints).
    pub fn from_f64(dtype: DType, v: &[f64]) -> Data {
        match dtype {
            DType::F32 => Data::F32(v.iter().map(|&x| x as f32).collect()),
            DType::F16 => Data::F16(v.iter().map(|&x| f16::from_f64(x)).collect()),
            DType::BF16 => Data::BF16(v.iter().map(|&x| bf16::from_f64(x)).collect()),
            DType::F64 => Data::F64(v.to_vec()),
            DType::I32 => Data::I32(v.iter().map(|&x| x as i32).collect()),
            DType::I64 => Data::I64(v.iter().map(|&x| x as i64).collect()),
            DType::Bool => Data::Bool(v.iter().map(|&x| x != 0.0).collect()),
        }
    }

    /// Every element as f64 (exact for all dtypes except i64 beyond 2^53).
    pub fn to_f64(&self) -> Vec<f64> {
        match self {
            Data::F32(v) => v.iter().map(|&x| x as f64).collect(),
            Data::F16(v) => v.iter().map(|x| x.to_f64()).collect(),
            Data::BF16(v) => v.iter().map(|x| x.to_f64()).collect(),
            Data::F64(v) => v.clone(),
            Data::I32(v) => v.iter().map(|&x| x as f64).collect(),
            Data::I64(v) => v.iter().map(|&x| x as f64).collect(),
            Data::Bool(v) => v.iter().map(|&x| x as u8 as f64).collect(),
        }
    }

    /// Integer elements as i64 (for index operands); `None` for other dtypes.
    pub fn to_i64(&self) -> Option<Vec<i64>> {
        match self {
            Data::I32(v) => Some(v.iter().map(|&x| x as i64).collect()),
            Data::I64(v) => Some(v.clone()),
            _ => None,
        }
    }

    /// Converts to `dtype` with the semantics of the `cast` op.
    pub fn cast(&self, dtype: DType) -> Data {
        if self.dtype() == dtype {
            return self.clone();
        }
        match (self, dtype) {
            (Data::I64(v), DType::I32) => Data::I32(v.iter().map(|&x| x as i32).collect()),
            (Data::I32(v), DType::I64) => Data::I64(v.iter().map(|&x| x as i64).collect()),
            (Data::I64(v), DType::F64) => Data::F64(v.iter().map(|&x| x as f64).collect()),
            (Data::I64(v), DType::F32) => Data::F32(v.iter().map(|&x| x as f32).collect()),
            _ => Data::from_f64(dtype, &self.to_f64()),
        }
    }

    /// Elements picked by index (`None` gives zero/false).
    pub fn take(&self, idx: &[Option<usize>]) -> Data {
        fn pick<T: Copy + Default>(v: &[T], idx: &[Option<usize>]) -> Vec<T> {
            idx.iter()
                .map(|i| i.map_or(T::default(), |i| v[i]))
                .collect()
        }
        map_data!(self, v => pick(v, idx))
    }
}

/// A dense row-major tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Data,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: Data) -> Tensor {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "tensor data length does not match shape {shape:?}"
        );
        Tensor { shape, data }
    }

    pub fn from_f64(ty: &TensorType, values: &[f64]) -> Tensor {
        Tensor::new(ty.shape.clone(), Data::from_f64(ty.dtype, values))
    }

    pub fn scalar_f64(dtype: DType, value: f64) -> Tensor {
        Tensor::new(vec![], Data::from_f64(dtype, &[value]))
    }

    pub fn zeros(ty: &TensorType) -> Tensor {
        Tensor::new(ty.shape.clone(), Data::splat(ty.dtype, 0.0, ty.numel()))
    }

    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    pub fn ty(&self) -> TensorType {
        TensorType::new(self.dtype(), self.shape.clone())
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }

    pub fn to_f64(&self) -> Vec<f64> {
        self.data.to_f64()
    }

    /// The single value of a one-element tensor, as f64.
    pub fn item(&self) -> f64 {
        self.data.to_f64()[0]
    }

    pub fn describe(&self) -> String {
        format!("{}{}", self.dtype(), shape_str(&self.shape))
    }
}

/// Row-major strides of `shape`.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

fn le_chunks<const N: usize>(raw: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    raw.chunks_exact(N).map(|c| c.try_into().unwrap())
}

impl Data {
    /// Little-endian bytes of the elements (bool as one byte 0/1).
    pub fn to_le_bytes(&self) -> Vec<u8> {
        match self {
            Data::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Data::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Data::F16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Data::BF16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Data::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Data::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Data::Bool(v) => v.iter().map(|&x| x as u8).collect(),
        }
    }

    /// Elements of `dtype` from little-endian bytes (the length must be a multiple of the size).
    pub fn from_le_bytes(dtype: DType, raw: &[u8]) -> Data {
        match dtype {
            DType::F32 => Data::F32(le_chunks::<4>(raw).map(f32::from_le_bytes).collect()),
            DType::F64 => Data::F64(le_chunks::<8>(raw).map(f64::from_le_bytes).collect()),
            DType::F16 => Data::F16(le_chunks::<2>(raw).map(f16::from_le_bytes).collect()),
            DType::BF16 => Data::BF16(le_chunks::<2>(raw).map(bf16::from_le_bytes).collect()),
            DType::I32 => Data::I32(le_chunks::<4>(raw).map(i32::from_le_bytes).collect()),
            DType::I64 => Data::I64(le_chunks::<8>(raw).map(i64::from_le_bytes).collect()),
            DType::Bool => Data::Bool(raw.iter().map(|&b| b != 0).collect()),
        }
    }
}
