//! `POST /v1/predict/car-price`: the body through the host's JSON check, then the car-price
//! plugin's preprocessing (compiled natively: the same Rust the wasm guest runs), the
//! host's check of the plugin's tensors and the model's input check; and the plugin's
//! postprocessing of the same request with the rows the model would return.

#![no_main]

use car_price::CarPrice;
use forecourt::fuzzing;
use forecourt::tensor::TensorData;
use forecourt_fuzz::{car_price_inputs, from_plugin};
use forecourt_plugin_sdk::{Tensor, TensorExt};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = fuzzing::v1_body(data) else { return };
    assert_eq!(text.as_bytes(), data, "the plugin is given the body as it came");
    let Ok(tensors) = forecourt_plugin_sdk::__preprocess::<CarPrice>(&text) else { return };
    let tensors: Vec<_> =
        tensors.into_iter().map(|tensor| from_plugin(tensor).expect("the plugin's tensors are well formed")).collect();
    for tensor in &tensors {
        if let TensorData::Float32(values) = &tensor.data {
            assert!(values.iter().all(|value| value.is_finite()), "`{}` holds a non-finite feature", tensor.name);
        }
    }
    let rows = fuzzing::check_model_inputs(&car_price_inputs(), &tensors).expect("an accepted request fits the model");
    let prices = Tensor::float32("price", &[rows as u32, 1], vec![12_345.678; rows]);
    let response = forecourt_plugin_sdk::__postprocess::<CarPrice>(&text, vec![prices])
        .expect("an accepted request postprocesses")
        .expect("car-price always answers");
    serde_json::from_str::<serde_json::Value>(&response).expect("the response is JSON");
});
