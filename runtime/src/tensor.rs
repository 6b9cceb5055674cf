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
    #[error("instances cannot be stacked: {0}")]
    Unstackable(String),
}

impl Tensor {
    /// Tests: a float tensor that must be valid.
    #[cfg(test)]
    pub fn float32(name: &str, shape: Vec<usize>, values: Vec<f32>) -> Self {
        Self::new(name, shape, TensorData::Float32(values)).expect("a valid test tensor")
    }

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

impl TensorData {
    /// An empty buffer of the same element type.
    fn empty_like(&self, capacity: usize) -> Self {
        match self {
            Self::Float32(_) => Self::Float32(Vec::with_capacity(capacity)),
            Self::Float64(_) => Self::Float64(Vec::with_capacity(capacity)),
            Self::Int64(_) => Self::Int64(Vec::with_capacity(capacity)),
            Self::Text(_) => Self::Text(Vec::with_capacity(capacity)),
        }
    }

    /// Appends `other`'s elements; false if the element types differ.
    fn append(&mut self, other: &Self) -> bool {
        match (self, other) {
            (Self::Float32(to), Self::Float32(from)) => to.extend_from_slice(from),
            (Self::Float64(to), Self::Float64(from)) => to.extend_from_slice(from),
            (Self::Int64(to), Self::Int64(from)) => to.extend_from_slice(from),
            (Self::Text(to), Self::Text(from)) => to.extend_from_slice(from),
            _ => return false,
        }
        true
    }

    fn slice(&self, range: std::ops::Range<usize>) -> Self {
        match self {
            Self::Float32(values) => Self::Float32(values[range].to_vec()),
            Self::Float64(values) => Self::Float64(values[range].to_vec()),
            Self::Int64(values) => Self::Int64(values[range].to_vec()),
            Self::Text(values) => Self::Text(values[range].to_vec()),
        }
    }
}

/// Stacks the tensors of several instances (each a list of named tensors, in the same
/// order, with the same trailing dimensions) into one tensor per name, rows after rows:
/// one model run for a whole batch. Returns the stacked tensors and each instance's rows.
pub fn stack(instances: &[Vec<Tensor>]) -> Result<(Vec<Tensor>, Vec<usize>), TensorError> {
    let Some(first) = instances.first() else {
        return Ok((Vec::new(), Vec::new()));
    };
    let mut rows = Vec::with_capacity(instances.len());
    let mut stacked: Vec<Tensor> = first
        .iter()
        .map(|tensor| Tensor {
            name: tensor.name.clone(),
            shape: tensor.shape.clone(),
            data: tensor.data.empty_like(tensor.data.len() * instances.len()),
        })
        .collect();
    for (index, instance) in instances.iter().enumerate() {
        let unstackable = |why: String| TensorError::Unstackable(format!("instance {index}: {why}"));
        if instance.len() != stacked.len() {
            return Err(unstackable(format!("{} tensors, the first instance {}", instance.len(), stacked.len())));
        }
        let instance_rows = instance.first().map_or(0, Tensor::rows);
        for (target, tensor) in stacked.iter_mut().zip(instance) {
            if tensor.name != target.name || tensor.shape[1..] != target.shape[1..] || tensor.rows() != instance_rows {
                return Err(unstackable(format!(
                    "tensor `{}` {:?} does not match `{}`",
                    tensor.name, tensor.shape, target.name
                )));
            }
            if !target.data.append(&tensor.data) {
                return Err(unstackable(format!("tensor `{}` has another element type", tensor.name)));
            }
        }
        rows.push(instance_rows);
    }
    for tensor in &mut stacked {
        tensor.shape[0] = rows.iter().sum();
    }
    Ok((stacked, rows))
}

/// Splits a batch's outputs back per instance: `rows[i]` rows for instance `i`.
pub fn split(outputs: &[Tensor], rows: &[usize]) -> Result<Vec<Vec<Tensor>>, TensorError> {
    let total: usize = rows.iter().sum();
    if let Some(tensor) = outputs.iter().find(|tensor| tensor.rows() != total) {
        return Err(TensorError::Unstackable(format!(
            "output `{}` has {} rows, the batch {total}",
            tensor.name,
            tensor.rows()
        )));
    }
    let mut start = 0;
    Ok(rows
        .iter()
        .map(|&count| {
            let part = outputs
                .iter()
                .map(|tensor| {
                    let row_len = tensor.shape[1..].iter().product::<usize>();
                    let mut shape = tensor.shape.clone();
                    shape[0] = count;
                    Tensor {
                        name: tensor.name.clone(),
                        shape,
                        data: tensor.data.slice(start * row_len..(start + count) * row_len),
                    }
                })
                .collect();
            start += count;
            part
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_tensors_validate() {
        let tensor = Tensor::new("x", vec![2, 3], TensorData::Float32(vec![0.0; 6])).unwrap();
        assert_eq!((tensor.rows(), tensor.byte_size()), (2, 25));
    }

    fn floats(name: &str, shape: Vec<usize>, values: Vec<f32>) -> Tensor {
        Tensor::new(name, shape, TensorData::Float32(values)).unwrap()
    }

    #[test]
    fn stacking_then_splitting_gives_back_each_instance() {
        let instances = vec![
            vec![floats("x", vec![1, 2], vec![1.0, 2.0]), floats("t", vec![1], vec![0.0])],
            vec![floats("x", vec![2, 2], vec![3.0, 4.0, 5.0, 6.0]), floats("t", vec![2], vec![1.0, 2.0])],
        ];
        let (stacked, rows) = stack(&instances).unwrap();
        assert_eq!(rows, vec![1, 2]);
        assert_eq!(stacked[0], floats("x", vec![3, 2], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
        assert_eq!(stacked[1], floats("t", vec![3], vec![0.0, 1.0, 2.0]));
        assert_eq!(split(&stacked, &rows).unwrap(), instances);
    }

    #[test]
    fn instances_of_different_layouts_do_not_stack() {
        let one = vec![floats("x", vec![1, 2], vec![1.0, 2.0])];
        let wider = vec![floats("x", vec![1, 3], vec![1.0, 2.0, 3.0])];
        let renamed = vec![floats("y", vec![1, 2], vec![1.0, 2.0])];
        let ints = vec![Tensor::new("x", vec![1, 2], TensorData::Int64(vec![1, 2])).unwrap()];
        for other in [wider, renamed, ints, vec![]] {
            assert!(matches!(stack(&[one.clone(), other]), Err(TensorError::Unstackable(_))));
        }
        assert!(split(&one, &[2]).is_err());
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
