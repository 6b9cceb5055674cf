//! What the fuzz targets share: the car-price model's inputs (the model the `/v1` and `/v2`
//! targets check tensors against) and the host's conversion of a plugin's tensors.

use forecourt::model::{ElementType, InputSpec};
use forecourt::tensor::{Tensor, TensorData, TensorError};

/// The car-price model's inputs as ONNX Runtime reports them (plugins/car-price/model;
/// runtime/tests/model_host.rs checks the same).
pub fn car_price_inputs() -> Vec<InputSpec> {
    [("features", 17), ("years_ahead", 1)]
        .into_iter()
        .map(|(name, width)| InputSpec {
            name: name.to_owned(),
            element_type: ElementType::Float32,
            shape: vec![-1, width],
        })
        .collect()
}

/// A tensor the plugin returned, as the host takes it from the guest (the same move and
/// shape check as `tensor_from_guest` in runtime/src/plugin/bindings.rs).
pub fn from_plugin(tensor: forecourt_plugin_sdk::Tensor) -> Result<Tensor, TensorError> {
    use forecourt_plugin_sdk::TensorData as Guest;
    let data = match tensor.data {
        Guest::Float32(values) => TensorData::Float32(values),
        Guest::Float64(values) => TensorData::Float64(values),
        Guest::Int64(values) => TensorData::Int64(values),
        Guest::Text(values) => TensorData::Text(values),
    };
    Tensor::new(tensor.name, tensor.shape.into_iter().map(|dim| dim as usize).collect(), data)
}
