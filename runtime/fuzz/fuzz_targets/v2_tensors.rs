//! `POST /v2/models/{model}/infer`: the body parsed as the route parses it, each input to a
//! host tensor, and the model's input check against the car-price model's inputs.

#![no_main]

use forecourt::fuzzing;
use forecourt_fuzz::car_price_inputs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(tensors) = fuzzing::v2_inputs(data, None) else { return };
    for tensor in &tensors {
        tensor.validate().expect("an accepted input is a well-formed tensor");
    }
    let _ = fuzzing::check_model_inputs(&car_price_inputs(), &tensors);
});
