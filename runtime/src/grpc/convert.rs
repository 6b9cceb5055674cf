//! The protobuf form of an inference request as host tensors, and outputs back into the
//! response. Inputs come either all as `raw_input_contents` (one entry per input, in input
//! order: what tritonclient.grpc sends) or each as typed `contents`; the rules the tensors
//! themselves must follow (datatypes, shapes, raw layout) are the protocol's, in
//! [`crate::oip`], shared with HTTP.

use bytes::Bytes;

use super::error::GrpcError;
use super::proto::infer_parameter::ParameterChoice;
use super::proto::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use super::proto::model_infer_response::InferOutputTensor;
use super::proto::{InferTensorContents, ModelInferRequest, ModelInferResponse};
use crate::oip::{self, Datatype, TensorFault};
use crate::tensor::{Tensor, TensorData};

/// The request parameter that chooses the outputs' form, as Triton's HTTP extension names it.
const RAW_OUTPUT_PARAMETER: &str = "binary_data_output";

/// Where the tests and messages say a raw input's size came from.
const RAW_SOURCE: &str = "raw_input_contents entry's size";

/// The request's inputs as host tensors, taking them out of `request`.
pub fn input_tensors(request: &mut ModelInferRequest) -> Result<Vec<Tensor>, GrpcError> {
    let inputs = std::mem::take(&mut request.inputs);
    let raw = std::mem::take(&mut request.raw_input_contents);
    if raw.is_empty() {
        return inputs.into_iter().map(typed_input).collect();
    }
    if raw.len() != inputs.len() {
        return Err(GrpcError::InvalidRequest(format!(
            "the request has {} raw_input_contents for {} inputs; give one per input, in input order",
            raw.len(),
            inputs.len()
        )));
    }
    inputs.into_iter().zip(raw).map(|(input, bytes)| raw_input(input, &bytes)).collect()
}

fn raw_input(input: InferInputTensor, bytes: &Bytes) -> Result<Tensor, GrpcError> {
    if input.contents.as_ref().is_some_and(|contents| values_in(contents).next().is_some()) {
        return Err(GrpcError::InvalidRequest(format!(
            "input `{}` has typed contents as well as raw_input_contents; give one or the other",
            input.name
        )));
    }
    let shape = oip::input_shape(&input.name, &input.shape)?;
    let datatype = oip::input_datatype(&input.name, &input.datatype)?;
    let declared = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    oip::check_size(&input.name, datatype, &shape, declared, RAW_SOURCE)?;
    let data = oip::decode(&input.name, datatype, &shape, bytes)?;
    Ok(Tensor::new(input.name, shape, data).map_err(TensorFault::from)?)
}

fn typed_input(input: InferInputTensor) -> Result<Tensor, GrpcError> {
    let shape = oip::input_shape(&input.name, &input.shape)?;
    let datatype = oip::input_datatype(&input.name, &input.datatype)?;
    let Some(contents) = input.contents else {
        return Err(GrpcError::InvalidRequest(format!(
            "input `{}` has neither contents nor raw_input_contents",
            input.name
        )));
    };
    let field = field_of(datatype);
    if let Some(other) = values_in(&contents).find(|&name| name != field) {
        return Err(GrpcError::InvalidRequest(format!(
            "input `{}` ({}) has values in {other}; {} values go in {field}",
            input.name,
            datatype.name(),
            datatype.name()
        )));
    }
    let data = match datatype {
        Datatype::Fp32 => TensorData::Float32(contents.fp32_contents),
        Datatype::Fp64 => TensorData::Float64(contents.fp64_contents),
        Datatype::Int8 | Datatype::Int16 | Datatype::Int32 => {
            TensorData::Int64(contents.int_contents.into_iter().map(i64::from).collect())
        }
        Datatype::Int64 => TensorData::Int64(contents.int64_contents),
        Datatype::Uint8 | Datatype::Uint16 | Datatype::Uint32 => {
            TensorData::Int64(contents.uint_contents.into_iter().map(i64::from).collect())
        }
        Datatype::Bytes => TensorData::Text(
            contents
                .bytes_contents
                .into_iter()
                .enumerate()
                .map(|(index, bytes)| {
                    String::from_utf8(bytes).map_err(|_| TensorFault::BytesElement {
                        input: input.name.clone(),
                        index,
                        problem: "is not UTF-8 text",
                    })
                })
                .collect::<Result<_, _>>()?,
        ),
    };
    Ok(Tensor::new(input.name, shape, data).map_err(TensorFault::from)?)
}

/// The field of `InferTensorContents` that carries a datatype's values.
fn field_of(datatype: Datatype) -> &'static str {
    match datatype {
        Datatype::Fp32 => "fp32_contents",
        Datatype::Fp64 => "fp64_contents",
        Datatype::Int8 | Datatype::Int16 | Datatype::Int32 => "int_contents",
        Datatype::Int64 => "int64_contents",
        Datatype::Uint8 | Datatype::Uint16 | Datatype::Uint32 => "uint_contents",
        Datatype::Bytes => "bytes_contents",
    }
}

/// The names of the fields of `contents` that hold values.
fn values_in(contents: &InferTensorContents) -> impl Iterator<Item = &'static str> {
    [
        ("bool_contents", contents.bool_contents.is_empty()),
        ("int_contents", contents.int_contents.is_empty()),
        ("int64_contents", contents.int64_contents.is_empty()),
        ("uint_contents", contents.uint_contents.is_empty()),
        ("uint64_contents", contents.uint64_contents.is_empty()),
        ("fp32_contents", contents.fp32_contents.is_empty()),
        ("fp64_contents", contents.fp64_contents.is_empty()),
        ("bytes_contents", contents.bytes_contents.is_empty()),
    ]
    .into_iter()
    .filter(|(_, empty)| !empty)
    .map(|(name, _)| name)
}

/// Whether the outputs go back as `raw_output_contents` (what tritonclient.grpc reads) or
/// as typed `contents`: the request's `binary_data_output` parameter when it gives one,
/// else the form its inputs came in. A response is all one or all the other.
pub fn wants_raw(request: &ModelInferRequest, inputs_were_raw: bool) -> Result<bool, GrpcError> {
    match request.parameters.get(RAW_OUTPUT_PARAMETER).and_then(|p| p.parameter_choice.as_ref()) {
        None => Ok(inputs_were_raw),
        Some(ParameterChoice::BoolParam(raw)) => Ok(*raw),
        Some(_) => Err(GrpcError::InvalidRequest(format!("parameter {RAW_OUTPUT_PARAMETER} must be a bool_param"))),
    }
}

/// The outputs asked for, in the order asked; all of the model's when none are named.
pub fn select_outputs(
    outputs: Vec<Tensor>,
    requested: &[InferRequestedOutputTensor],
) -> Result<Vec<Tensor>, GrpcError> {
    if requested.is_empty() {
        return Ok(outputs);
    }
    Ok(requested.iter().map(|wanted| oip::output_named(&outputs, &wanted.name)).collect::<Result<_, _>>()?)
}

/// The response carrying `outputs`, raw or typed.
pub fn infer_response(
    model_name: String,
    model_version: String,
    id: String,
    outputs: Vec<Tensor>,
    raw: bool,
) -> Result<ModelInferResponse, GrpcError> {
    let mut response = ModelInferResponse { model_name, model_version, id, ..ModelInferResponse::default() };
    for tensor in outputs {
        let datatype = oip::datatype_of(&tensor).to_owned();
        let shape = tensor.shape.iter().map(|&dim| i64::try_from(dim).unwrap_or(i64::MAX)).collect();
        let mut output = InferOutputTensor { name: tensor.name, datatype, shape, ..InferOutputTensor::default() };
        if raw {
            let mut bytes = Vec::with_capacity(tensor.data.byte_size());
            oip::encode(&output.name, &tensor.data, &mut bytes)?;
            response.raw_output_contents.push(Bytes::from(bytes));
        } else {
            output.contents = Some(typed_contents(tensor.data));
        }
        response.outputs.push(output);
    }
    Ok(response)
}

fn typed_contents(data: TensorData) -> InferTensorContents {
    let mut contents = InferTensorContents::default();
    match data {
        TensorData::Float32(values) => contents.fp32_contents = values,
        TensorData::Float64(values) => contents.fp64_contents = values,
        TensorData::Int64(values) => contents.int64_contents = values,
        TensorData::Text(values) => contents.bytes_contents = values.into_iter().map(String::into_bytes).collect(),
    }
    contents
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::grpc::proto::InferParameter;

    fn input(name: &str, datatype: &str, shape: &[i64], contents: Option<InferTensorContents>) -> InferInputTensor {
        InferInputTensor {
            name: name.into(),
            datatype: datatype.into(),
            shape: shape.to_vec(),
            parameters: HashMap::new(),
            contents,
        }
    }

    fn fp32(values: &[f32]) -> Option<InferTensorContents> {
        Some(InferTensorContents { fp32_contents: values.to_vec(), ..InferTensorContents::default() })
    }

    fn le_f32(values: &[f32]) -> Bytes {
        values.iter().flat_map(|value| value.to_le_bytes()).collect::<Vec<u8>>().into()
    }

    fn request(inputs: Vec<InferInputTensor>, raw: Vec<Bytes>) -> ModelInferRequest {
        ModelInferRequest { model_name: "car-price".into(), inputs, raw_input_contents: raw, ..Default::default() }
    }

    fn refusal(mut request: ModelInferRequest) -> (tonic::Code, String) {
        let error = input_tensors(&mut request).unwrap_err();
        (error.code(), error.to_string())
    }

    #[test]
    fn raw_and_typed_inputs_become_the_same_tensors() {
        let expected = vec![
            Tensor::new("features", vec![2, 2], TensorData::Float32(vec![1.0, 2.0, 3.0, 4.5])).unwrap(),
            Tensor::new("code", vec![2], TensorData::Int64(vec![7, -1])).unwrap(),
            Tensor::new("colour", vec![1], TensorData::Text(vec!["red".into()])).unwrap(),
        ];
        let codes: Vec<u8> = [7i32, -1].iter().flat_map(|v| v.to_le_bytes()).collect();
        let colour = [&3u32.to_le_bytes()[..], b"red"].concat();
        let mut raw = request(
            vec![
                input("features", "FP32", &[2, 2], None),
                input("code", "INT32", &[2], None),
                input("colour", "BYTES", &[1], None),
            ],
            vec![le_f32(&[1.0, 2.0, 3.0, 4.5]), codes.into(), colour.into()],
        );
        assert_eq!(input_tensors(&mut raw).unwrap(), expected);
        assert!(raw.inputs.is_empty() && raw.raw_input_contents.is_empty(), "taken out of the request");

        let mut typed = request(
            vec![
                input("features", "FP32", &[2, 2], fp32(&[1.0, 2.0, 3.0, 4.5])),
                input(
                    "code",
                    "INT32",
                    &[2],
                    Some(InferTensorContents { int_contents: vec![7, -1], ..Default::default() }),
                ),
                input(
                    "colour",
                    "BYTES",
                    &[1],
                    Some(InferTensorContents { bytes_contents: vec![b"red".to_vec()], ..Default::default() }),
                ),
            ],
            vec![],
        );
        assert_eq!(input_tensors(&mut typed).unwrap(), expected);
    }

    #[test]
    fn each_fault_is_invalid_argument_naming_the_input_and_the_rule() {
        use tonic::Code::InvalidArgument;
        let cases = [
            (
                request(vec![input("features", "FP32", &[1, 2], None)], vec![le_f32(&[1.0])]),
                "input `features` (FP32, shape [1, 2]) takes 8 bytes of binary data, but its raw_input_contents \
                 entry's size is 4",
            ),
            (
                request(
                    vec![input("features", "FP32", &[1, 1], None), input("years", "FP32", &[1, 1], None)],
                    vec![le_f32(&[1.0])],
                ),
                "the request has 1 raw_input_contents for 2 inputs; give one per input, in input order",
            ),
            (
                request(vec![input("features", "FP32", &[1, 1], fp32(&[1.0]))], vec![le_f32(&[1.0])]),
                "input `features` has typed contents as well as raw_input_contents; give one or the other",
            ),
            (
                request(vec![input("features", "FP32", &[1, 1], None)], vec![]),
                "input `features` has neither contents nor raw_input_contents",
            ),
            (
                request(
                    vec![input(
                        "features",
                        "FP32",
                        &[1, 1],
                        Some(InferTensorContents { int64_contents: vec![1], ..Default::default() }),
                    )],
                    vec![],
                ),
                "input `features` (FP32) has values in int64_contents; FP32 values go in fp32_contents",
            ),
            (
                request(vec![input("features", "FP32", &[1, 2], fp32(&[1.0]))], vec![]),
                "tensor `features` has shape [1, 2], which holds 2 elements, but carries 1",
            ),
            (
                request(vec![input("half", "FP16", &[1], None)], vec![Bytes::from_static(&[0, 0x3c])]),
                "input `half`: datatype \"FP16\" is not supported",
            ),
            (
                request(vec![input("features", "FP32", &[-1, 2], fp32(&[1.0, 2.0]))], vec![]),
                "input `features` has a negative dimension",
            ),
            (
                request(
                    vec![input(
                        "colour",
                        "BYTES",
                        &[1],
                        Some(InferTensorContents { bytes_contents: vec![vec![0xff]], ..Default::default() }),
                    )],
                    vec![],
                ),
                "input `colour` (BYTES) element 0: is not UTF-8 text",
            ),
            (
                request(vec![input("features", "FP32", &[1 << 62, 4], None)], vec![le_f32(&[1.0])]),
                "input `features` has a shape [4611686018427387904, 4] too large to hold in memory",
            ),
        ];
        for (request, message) in cases {
            assert_eq!(refusal(request), (InvalidArgument, message.to_owned()));
        }
    }

    fn outputs() -> Vec<Tensor> {
        vec![
            Tensor::new("label", vec![1, 1], TensorData::Int64(vec![2])).unwrap(),
            Tensor::new("p", vec![1, 1], TensorData::Float32(vec![0.5])).unwrap(),
        ]
    }

    #[test]
    fn outputs_go_raw_or_typed_in_the_order_asked() {
        let response = infer_response("iris".into(), "1.0.0".into(), "r1".into(), outputs(), true).unwrap();
        assert_eq!((response.model_name.as_str(), response.id.as_str()), ("iris", "r1"));
        let names: Vec<_> = response.outputs.iter().map(|o| (o.name.as_str(), o.datatype.as_str())).collect();
        assert_eq!(names, [("label", "INT64"), ("p", "FP32")]);
        assert!(response.outputs.iter().all(|output| output.contents.is_none() && output.shape == [1, 1]));
        assert_eq!(response.raw_output_contents, [Bytes::from(2i64.to_le_bytes().to_vec()), le_f32(&[0.5])]);

        let response = infer_response("iris".into(), "1.0.0".into(), String::new(), outputs(), false).unwrap();
        assert!(response.raw_output_contents.is_empty());
        assert_eq!(response.outputs[0].contents.as_ref().unwrap().int64_contents, [2]);
        assert_eq!(response.outputs[1].contents.as_ref().unwrap().fp32_contents, [0.5]);

        let asked = |names: &[&str]| -> Vec<InferRequestedOutputTensor> {
            names
                .iter()
                .map(|name| InferRequestedOutputTensor { name: (*name).into(), parameters: HashMap::new() })
                .collect()
        };
        let chosen = select_outputs(outputs(), &asked(&["p", "label"])).unwrap();
        assert_eq!(chosen.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["p", "label"]);
        assert_eq!(select_outputs(outputs(), &[]).unwrap(), outputs());
        let unknown = select_outputs(outputs(), &asked(&["colour"])).unwrap_err();
        assert_eq!(
            (unknown.code(), unknown.to_string()),
            (tonic::Code::InvalidArgument, "the model has no output `colour`".into())
        );
    }

    #[test]
    fn the_output_form_follows_the_parameter_or_the_inputs() {
        let with = |choice: Option<ParameterChoice>| {
            let mut request = request(vec![], vec![]);
            if let Some(choice) = choice {
                request
                    .parameters
                    .insert(RAW_OUTPUT_PARAMETER.into(), InferParameter { parameter_choice: Some(choice) });
            }
            request
        };
        assert!(wants_raw(&with(None), true).unwrap());
        assert!(!wants_raw(&with(None), false).unwrap());
        assert!(wants_raw(&with(Some(ParameterChoice::BoolParam(true))), false).unwrap());
        assert!(!wants_raw(&with(Some(ParameterChoice::BoolParam(false))), true).unwrap());
        let wrong = wants_raw(&with(Some(ParameterChoice::StringParam("yes".into()))), true).unwrap_err();
        assert_eq!(wrong.code(), tonic::Code::InvalidArgument);
    }
}
