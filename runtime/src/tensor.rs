//! Tensors as the host passes them between plugins and models: named, typed, shaped,
//! row-major. Plugins produce them, models consume and produce them; neither module owns
//! the other's types, so both speak this one.

use serde::Serialize;

/// Row-major elements of one element type.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "type", content = "values")]
pub enum TensorData {
    Float32(Vec<f32>),
    Float64(Vec<f64>),
    Int64(Vec<i64>),
    Text(Vec<String>),
}

impl TensorData {
    pub fn len(&self) -> usize {
        match self {
            Self::Float32(values) => values.len(),
            Self::Float64(values) => values.len(),
            Self::Int64(values) => values.len(),
            Self::Text(values) => values.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the elements occupy (strings by their UTF-8 length).
    pub fn byte_size(&self) -> usize {
        match self {
            Self::Float32(values) => values.len() * 4,
            Self::Float64(values) => values.len() * 8,
            Self::Int64(values) => values.len() * 8,
            Self::Text(values) => values.iter().map(String::len).sum(),
        }
    }

    /// The element type's name, as ONNX and the inference protocol spell it.
    pub fn element_type(&self) -> &'static str {
        match self {
            Self::Float32(_) => "FP32",
            Self::Float64(_) => "FP64",
            Self::Int64(_) => "INT64",
            Self::Text(_) => "BYTES",
        }
    }
}

/// A named tensor whose first dimension counts rows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: TensorData,
}

/// Why a tensor is not well formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TensorError {
    #[error("tensor has an empty name")]
    EmptyName,
    #[error("tensor `{0}` has no dimensions; the first dimension must count rows")]
    Scalar(String),
    #[error("tensor `{name}` has shape {shape:?}, which holds {expected} elements, but carries {actual}")]
    ShapeMismatch { name: String, shape: Vec<usize>, expected: usize, actual: usize },
}

impl Tensor {
    pub fn new(name: impl Into<String>, shape: Vec<usize>, data: TensorData) -> Result<Self, TensorError> {
        let tensor = Self { name: name.into(), shape, data };
        tensor.validate()?;
        Ok(tensor)
    }

    /// Checks the invariants every consumer relies on: a name, a row dimension, and as
    /// many elements as the shape implies.
    pub fn validate(&self) -> Result<(), TensorError> {
        if self.name.is_empty() {
            return Err(TensorError::EmptyName);
        }
        if self.shape.is_empty() {
            return Err(TensorError::Scalar(self.name.clone()));
        }
        let expected = self.shape.iter().try_fold(1usize, |count, &dim| count.checked_mul(dim));
        if expected != Some(self.data.len()) {
            return Err(TensorError::ShapeMismatch {
                name: self.name.clone(),
                shape: self.shape.clone(),
                expected: expected.unwrap_or(usize::MAX),
                actual: self.data.len(),
            });
        }
        Ok(())
    }

    /// The number of rows (the first dimension).
    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(0)
    }

    /// Bytes of the name and elements: what the output cap counts.
    pub fn byte_size(&self) -> usize {
        self.name.len() + self.data.byte_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_tensors_validate() {
        let tensor = Tensor::new("x", vec![2, 3], TensorData::Float32(vec![0.0; 6])).unwrap();
        assert_eq!((tensor.rows(), tensor.byte_size()), (2, 25));
    }

    #[test]
    fn malformed_tensors_are_named_in_the_error() {
        assert_eq!(Tensor::new("", vec![1], TensorData::Int64(vec![1])), Err(TensorError::EmptyName));
        assert_eq!(Tensor::new("x", vec![], TensorData::Int64(vec![1])), Err(TensorError::Scalar("x".into())));
        let error = Tensor::new("x", vec![2, 3], TensorData::Float32(vec![0.0; 5])).unwrap_err();
        assert_eq!(error.to_string(), "tensor `x` has shape [2, 3], which holds 6 elements, but carries 5");
        let overflow = Tensor::new("x", vec![usize::MAX, 2], TensorData::Float32(vec![]));
        assert!(matches!(overflow, Err(TensorError::ShapeMismatch { .. })));
    }
}
