//! A model's inputs and outputs as introspected from ONNX Runtime, and the check of a
//! set of tensors against the inputs.

use serde::Serialize;

use crate::tensor::{Tensor, TensorData};

/// Element types the host can feed and read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ElementType {
    Float32,
    Float64,
    Int64,
    Text,
}

impl ElementType {
    pub fn of(data: &TensorData) -> Self {
        match data {
            TensorData::Float32(_) => Self::Float32,
            TensorData::Float64(_) => Self::Float64,
            TensorData::Int64(_) => Self::Int64,
            TensorData::Text(_) => Self::Text,
        }
    }

    /// The Open Inference Protocol's name for the type.
    pub fn protocol_name(self) -> &'static str {
        match self {
            Self::Float32 => "FP32",
            Self::Float64 => "FP64",
            Self::Int64 => "INT64",
            Self::Text => "BYTES",
        }
    }
}

/// One model input. `shape` has -1 for dynamic dimensions (always the first, rows).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InputSpec {
    pub name: String,
    pub element_type: ElementType,
    pub shape: Vec<i64>,
}

/// How an output arrives from ONNX Runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputForm {
    /// A tensor whose element type the host converts to `element_type`.
    Tensor { shape: Vec<i64> },
    /// A sequence with one map per row from class to probability (ZipMap); read as a
    /// `[rows, classes]` float tensor with classes in ascending key order.
    ClassMaps,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutputSpec {
    pub name: String,
    pub element_type: ElementType,
    pub form: OutputForm,
}

/// Checks that `tensors` are exactly the model's inputs: same names, element types and
/// ranks, fixed dimensions equal, and one row count. Returns the row count.
pub(crate) fn check_inputs(inputs: &[InputSpec], tensors: &[Tensor]) -> Result<usize, String> {
    if let Some(extra) = tensors.iter().find(|tensor| !inputs.iter().any(|input| input.name == tensor.name)) {
        let expected: Vec<&str> = inputs.iter().map(|input| input.name.as_str()).collect();
        return Err(format!("the model has no input `{}`; its inputs are {}", extra.name, expected.join(", ")));
    }
    let mut rows = None;
    for input in inputs {
        let tensor = tensors
            .iter()
            .find(|tensor| tensor.name == input.name)
            .ok_or_else(|| format!("input `{}` is missing", input.name))?;
        check_tensor(input, tensor)?;
        match rows {
            None => rows = Some(tensor.rows()),
            Some(rows) if rows != tensor.rows() => {
                return Err(format!("input `{}` has {} rows, other inputs {rows}", input.name, tensor.rows()));
            }
            Some(_) => {}
        }
    }
    Ok(rows.unwrap_or(0))
}

fn check_tensor(input: &InputSpec, tensor: &Tensor) -> Result<(), String> {
    let element_type = ElementType::of(&tensor.data);
    if element_type != input.element_type {
        return Err(format!("input `{}` must be {:?}, not {element_type:?}", input.name, input.element_type));
    }
    let matches = tensor.shape.len() == input.shape.len()
        && input.shape.iter().zip(&tensor.shape).all(|(&want, &have)| want < 0 || want as usize == have);
    if !matches {
        return Err(format!(
            "input `{}` must have shape {:?} (-1: any), not {:?}",
            input.name, input.shape, tensor.shape
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Vec<InputSpec> {
        vec![
            InputSpec { name: "features".into(), element_type: ElementType::Float32, shape: vec![-1, 3] },
            InputSpec { name: "years".into(), element_type: ElementType::Float32, shape: vec![-1, 1] },
        ]
    }

    fn tensor(name: &str, shape: Vec<usize>) -> Tensor {
        let len = shape.iter().product();
        Tensor::new(name, shape, TensorData::Float32(vec![0.0; len])).unwrap()
    }

    #[test]
    fn matching_tensors_pass_and_report_their_rows() {
        assert_eq!(check_inputs(&spec(), &[tensor("features", vec![4, 3]), tensor("years", vec![4, 1])]), Ok(4));
    }

    #[test]
    fn each_mismatch_is_named() {
        let cases = [
            (vec![tensor("features", vec![1, 3])], "input `years` is missing"),
            (
                vec![tensor("features", vec![1, 3]), tensor("years", vec![1, 1]), tensor("age", vec![1, 1])],
                "the model has no input `age`; its inputs are features, years",
            ),
            (
                vec![tensor("features", vec![1, 4]), tensor("years", vec![1, 1])],
                "input `features` must have shape [-1, 3] (-1: any), not [1, 4]",
            ),
            (
                vec![tensor("features", vec![2, 3]), tensor("years", vec![1, 1])],
                "input `years` has 1 rows, other inputs 2",
            ),
            (
                vec![
                    Tensor::new("features", vec![1, 3], TensorData::Int64(vec![0; 3])).unwrap(),
                    tensor("years", vec![1, 1]),
                ],
                "input `features` must be Float32, not Int64",
            ),
        ];
        for (tensors, message) in cases {
            assert_eq!(check_inputs(&spec(), &tensors), Err(message.to_owned()));
        }
    }
}
