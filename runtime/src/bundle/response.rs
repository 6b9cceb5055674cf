//! The host's response shape, for a plugin that leaves the shaping to it.

use serde_json::{Map, Value};

use crate::tensor::{Tensor, TensorData};

/// The host's response shape when the plugin leaves it: each output by name, without
/// the row dimension when the request has one row, and a single value as a number.
pub fn default_response(outputs: &[Tensor]) -> Map<String, Value> {
    outputs.iter().map(|tensor| (tensor.name.clone(), tensor_json(tensor))).collect()
}

fn tensor_json(tensor: &Tensor) -> Value {
    let values: Vec<Value> = match &tensor.data {
        TensorData::Float32(values) => values.iter().map(|&v| Value::from(f64::from(v))).collect(),
        TensorData::Float64(values) => values.iter().map(|&v| Value::from(v)).collect(),
        TensorData::Int64(values) => values.iter().map(|&v| Value::from(v)).collect(),
        TensorData::Text(values) => values.iter().map(|v| Value::from(v.as_str())).collect(),
    };
    let mut shape: &[usize] = &tensor.shape;
    if shape.first() == Some(&1) {
        shape = &shape[1..];
    }
    if shape.iter().product::<usize>() == 1 && values.len() == 1 {
        return values.into_iter().next().unwrap_or(Value::Null);
    }
    nest(&values, shape)
}

/// Row-major values as nested arrays of `shape`.
fn nest(values: &[Value], shape: &[usize]) -> Value {
    match shape {
        [] | [_] => Value::Array(values.to_vec()),
        [_, rest @ ..] => {
            let chunk = rest.iter().product::<usize>().max(1);
            Value::Array(values.chunks(chunk).map(|part| nest(part, rest)).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn the_default_shape_drops_a_single_row_and_unwraps_single_values() {
        let outputs = vec![
            Tensor::float32("price", vec![1, 1], vec![1.5]),
            Tensor::float32("probabilities", vec![1, 3], vec![0.25, 0.5, 0.25]),
            Tensor::float32("grid", vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]),
        ];
        assert_eq!(
            Value::Object(default_response(&outputs)),
            json!({"price": 1.5, "probabilities": [0.25, 0.5, 0.25], "grid": [[1.0, 2.0], [3.0, 4.0]]})
        );
    }
}
