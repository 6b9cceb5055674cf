//! The Open Inference Protocol v2 (KServe, Triton, MLServer) under /v2, exactly as in
//! api-shapes.md section 1: raw tensors straight to a bundle's model, no plugin. Errors
//! here have the protocol's own shape, `{"error": "<message>"}`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::AppState;
use super::auth::Caller;
use super::extract::ProtocolBody;
use super::request_context::{ClientRequestId, Served, request_id};
use super::v2_binary::{self, BinaryData, BinaryError};
use crate::bundle::Bundle;
use crate::oip::{self, Datatype, ModelMetadata, TensorFault, UnknownModel};
use crate::pipeline::PipelineError;
use crate::tensor::{Tensor, TensorData};

/// An error of the inference protocol.
#[derive(Debug)]
pub struct V2Error(StatusCode, String);

/// The protocol's error body.
#[derive(Serialize, utoipa::ToSchema)]
pub struct V2ErrorBody {
    error: String,
}

impl IntoResponse for V2Error {
    fn into_response(self) -> Response {
        (self.0, Json(V2ErrorBody { error: self.1 })).into_response()
    }
}

fn bad_request(message: impl Into<String>) -> V2Error {
    V2Error(StatusCode::BAD_REQUEST, message.into())
}

impl From<PipelineError> for V2Error {
    fn from(error: PipelineError) -> Self {
        let status = match &error {
            PipelineError::UnknownBundle { .. } | PipelineError::UnknownVersion { .. } => StatusCode::NOT_FOUND,
            PipelineError::Overloaded(_) => StatusCode::TOO_MANY_REQUESTS,
            PipelineError::Inference(crate::bundle::InferenceError::Model(
                crate::model::ModelError::InputMismatch { .. },
            )) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        V2Error(status, error.to_string())
    }
}

fn ensure_ready(state: &AppState) -> Result<(), V2Error> {
    if state.readiness.is_ready() { Ok(()) } else { Err(V2Error(StatusCode::SERVICE_UNAVAILABLE, "not ready".into())) }
}

#[derive(Debug, Serialize)]
pub struct ServerMetadata {
    name: &'static str,
    version: &'static str,
    extensions: Vec<String>,
}

#[utoipa::path(get, path = "/v2", tag = "inference protocol v2", responses((status = 200, body = Object, description = "{\"name\": \"forecourt\", \"version\", \"extensions\": []}")))]
pub async fn server_metadata() -> Json<ServerMetadata> {
    Json(ServerMetadata { name: oip::SERVER_NAME, version: env!("CARGO_PKG_VERSION"), extensions: Vec::new() })
}

#[utoipa::path(get, path = "/v2/health/live", tag = "inference protocol v2", responses((status = 200, body = Object, description = "{\"live\": true}")))]
pub async fn live() -> Json<Value> {
    Json(serde_json::json!({"live": true}))
}

#[utoipa::path(get, path = "/v2/health/ready", tag = "inference protocol v2", responses((status = 200, body = Object, description = "{\"ready\": true}"), (status = 503, body = Object, description = "{\"ready\": false} while starting or draining")))]
pub async fn ready(State(state): State<AppState>) -> Response {
    let ready = state.readiness.is_ready();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(serde_json::json!({"ready": ready}))).into_response()
}

/// The bundle named, at `version` or its active version.
fn bundle_of(state: &AppState, name: &str, version: Option<&str>) -> Result<std::sync::Arc<Bundle>, V2Error> {
    Ok(oip::find_model(state.pipeline.registry(), name, version)?)
}

fn metadata(state: &AppState, bundle: &Bundle) -> ModelMetadata {
    oip::model_metadata(state.pipeline.registry(), bundle)
}

impl From<UnknownModel> for V2Error {
    fn from(error: UnknownModel) -> Self {
        V2Error(StatusCode::NOT_FOUND, error.to_string())
    }
}

impl From<TensorFault> for V2Error {
    fn from(error: TensorFault) -> Self {
        let status = if error.is_client_error() { StatusCode::BAD_REQUEST } else { StatusCode::INTERNAL_SERVER_ERROR };
        V2Error(status, error.to_string())
    }
}

#[utoipa::path(get, path = "/v2/models/{model}", tag = "inference protocol v2", params(("model" = String, Path)), responses((status = 200, body = Object, description = "name, versions, platform, inputs and outputs with datatype and shape"), (status = 404, body = V2ErrorBody, description = "{\"error\": \"...\"}: no such model or version")))]
pub async fn model_metadata(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ModelMetadata>, V2Error> {
    let bundle = bundle_of(&state, &name, None)?;
    Ok(Json(metadata(&state, &bundle)))
}

#[utoipa::path(get, path = "/v2/models/{model}/versions/{version}", tag = "inference protocol v2", params(("model" = String, Path), ("version" = String, Path)), responses((status = 200, body = Object, description = "name, versions, platform, inputs and outputs with datatype and shape"), (status = 404, body = V2ErrorBody, description = "{\"error\": \"...\"}: no such model or version")))]
pub async fn model_version_metadata(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<ModelMetadata>, V2Error> {
    let bundle = bundle_of(&state, &name, Some(&version))?;
    Ok(Json(metadata(&state, &bundle)))
}

#[utoipa::path(get, path = "/v2/models/{model}/ready", tag = "inference protocol v2", params(("model" = String, Path)), responses((status = 200, body = Object, description = "{\"name\", \"ready\"}"), (status = 404, body = V2ErrorBody, description = "{\"error\": \"...\"}: no such model or version")))]
pub async fn model_ready(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<Value>, V2Error> {
    bundle_of(&state, &name, None)?;
    Ok(Json(serde_json::json!({"name": name, "ready": state.readiness.is_ready()})))
}

#[utoipa::path(get, path = "/v2/models/{model}/versions/{version}/ready", tag = "inference protocol v2", params(("model" = String, Path), ("version" = String, Path)), responses((status = 200, body = Object, description = "{\"name\", \"ready\"}"), (status = 404, body = V2ErrorBody, description = "{\"error\": \"...\"}: no such model or version")))]
pub async fn model_version_ready(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, V2Error> {
    bundle_of(&state, &name, Some(&version))?;
    Ok(Json(serde_json::json!({"name": name, "ready": state.readiness.is_ready()})))
}

/// An inference request of the protocol: tensors in JSON, or (Triton's binary tensor data
/// extension) some or all of them as bytes after the JSON.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<RequestParameters>,
    inputs: Vec<InferInput>,
    #[serde(default)]
    outputs: Option<Vec<RequestedOutput>>,
}

/// The request's parameters this server reads; others are accepted and ignored.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct RequestParameters {
    /// Every output as binary data after the JSON, unless an output says otherwise.
    #[serde(default)]
    binary_data_output: Option<bool>,
}

/// An input tensor: `data` flat or nested, row-major; or, with `parameters.binary_data_size`,
/// that many bytes of binary data after the JSON (and no `data`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct InferInput {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    parameters: Option<InputParameters>,
}

/// An input's parameters this server reads; others are accepted and ignored.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct InputParameters {
    /// The input's bytes in the binary data after the JSON (binary tensor data extension).
    #[serde(default)]
    binary_data_size: Option<u64>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RequestedOutput {
    name: String,
    #[serde(default)]
    parameters: Option<OutputParameters>,
}

/// A requested output's parameters this server reads; others are accepted and ignored.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct OutputParameters {
    /// The output as binary data after the JSON (true) or as JSON `data` (false); when not
    /// given, the request's `binary_data_output` decides.
    #[serde(default)]
    binary_data: Option<bool>,
}

#[derive(Debug, Serialize)]
pub struct InferResponse {
    model_name: String,
    model_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    outputs: Vec<InferOutput>,
}

#[derive(Debug, Serialize)]
pub struct InferOutput {
    name: String,
    shape: Vec<usize>,
    datatype: &'static str,
    /// For a binary output: its size in the binary data after the JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinarySize>,
    /// For a JSON output: its elements, row-major.
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Value>,
}

#[derive(Debug, Serialize)]
pub struct BinarySize {
    binary_data_size: usize,
}

/// An infer answer: all JSON (`application/json`, as without the extension), or the JSON
/// followed by the binary outputs' bytes (`application/octet-stream`, the JSON's length in
/// the `Inference-Header-Content-Length` header).
#[derive(Debug)]
pub enum InferReply {
    Json(InferResponse),
    Binary { json: Vec<u8>, binary: Vec<u8> },
}

impl IntoResponse for InferReply {
    fn into_response(self) -> Response {
        match self {
            Self::Json(response) => Json(response).into_response(),
            Self::Binary { json, mut binary } => {
                let header_length = json.len();
                let mut body = json;
                body.append(&mut binary);
                (
                    [
                        (axum::http::header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                        (axum::http::HeaderName::from_static(v2_binary::HEADER_LENGTH), header_length.to_string()),
                    ],
                    body,
                )
                    .into_response()
            }
        }
    }
}

impl From<BinaryError> for V2Error {
    fn from(error: BinaryError) -> Self {
        let status = if error.is_client_error() { StatusCode::BAD_REQUEST } else { StatusCode::INTERNAL_SERVER_ERROR };
        V2Error(status, error.to_string())
    }
}

/// Every answer of both infer routes but the inference itself (each path lists its 200).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // Only read by the OpenAPI derive.
enum InferAnswers {
    /// Malformed JSON or binary tensor data, or not an inference request for this model
    #[response(status = 400)]
    BadRequest(V2ErrorBody),
    /// No such model or version
    #[response(status = 404)]
    NotFound(V2ErrorBody),
    /// Body too large
    #[response(status = 413)]
    TooLarge(V2ErrorBody),
    /// A content type other than JSON (or binary tensor data), or a compressed body
    #[response(status = 415)]
    NotJson(V2ErrorBody),
    /// At capacity
    #[response(status = 429)]
    Overloaded(V2ErrorBody),
    /// The model failed
    #[response(status = 500)]
    Failed(V2ErrorBody),
    /// Starting or draining
    #[response(status = 503)]
    NotReady(V2ErrorBody),
}

#[utoipa::path(
    post,
    path = "/v2/models/{model}/infer",
    tag = "inference protocol v2",
    params(("model" = String, Path), ("Inference-Header-Content-Length" = Option<u64>, Header, description = HEADER_LENGTH_DOC)),
    request_body(content = InferRequest, description = BODY_DOC),
    responses(
        (status = 200, description = INFERRED_DOC, content((Value = "application/json"), (Vec<u8> = "application/octet-stream")),
         headers(("Inference-Header-Content-Length" = u64, description = "With binary outputs: the length of the JSON part"))),
        InferAnswers
    )
)]
pub async fn infer(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Extension(caller): Extension<Caller>,
    client: Option<Extension<ClientRequestId>>,
    body: Result<ProtocolBody, super::error::ApiError>,
) -> Result<(Extension<Served>, InferReply), V2Error> {
    infer_on(state, name, None, caller, client, body).await
}

#[utoipa::path(
    post,
    path = "/v2/models/{model}/versions/{version}/infer",
    tag = "inference protocol v2",
    params(("model" = String, Path), ("version" = String, Path), ("Inference-Header-Content-Length" = Option<u64>, Header, description = HEADER_LENGTH_DOC)),
    request_body(content = InferRequest, description = BODY_DOC),
    responses(
        (status = 200, description = INFERRED_DOC, content((Value = "application/json"), (Vec<u8> = "application/octet-stream")),
         headers(("Inference-Header-Content-Length" = u64, description = "With binary outputs: the length of the JSON part"))),
        InferAnswers
    )
)]
pub async fn infer_version(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    Extension(caller): Extension<Caller>,
    client: Option<Extension<ClientRequestId>>,
    body: Result<ProtocolBody, super::error::ApiError>,
) -> Result<(Extension<Served>, InferReply), V2Error> {
    infer_on(state, name, Some(version), caller, client, body).await
}

const HEADER_LENGTH_DOC: &str = "Binary tensor data extension: the length in bytes of the JSON part of the body; \
    the rest is the binary data of the inputs that give parameters.binary_data_size, in input order";
const BODY_DOC: &str = "An inference request in JSON (content type application/json or none). With Triton's \
    binary tensor data extension, the JSON is followed by the inputs' binary data (little-endian, row-major; a \
    BYTES element is a 4-byte little-endian length and its bytes), its length in Inference-Header-Content-Length.";
const INFERRED_DOC: &str = "model_name, model_version, id, outputs: [{name, shape, datatype, data}]. When an \
    output is asked as binary (its parameters.binary_data, or the request's parameters.binary_data_output), the \
    body is application/octet-stream: that JSON, with parameters.binary_data_size instead of data for each binary \
    output, then the binary outputs' bytes in order; Inference-Header-Content-Length gives the JSON's length.";

async fn infer_on(
    state: AppState,
    name: String,
    version: Option<String>,
    caller: Caller,
    client: Option<Extension<ClientRequestId>>,
    body: Result<ProtocolBody, super::error::ApiError>,
) -> Result<(Extension<Served>, InferReply), V2Error> {
    ensure_ready(&state)?;
    // HTTP-level refusals (413 too large, 415 not JSON) keep their status.
    let body = body.map_err(|error| V2Error(error.status(), error.message))?;
    let version = version.map(|version| oip::parse_version(&name, &version)).transpose()?;
    let (request, inputs) = parse_infer(&body.bytes, body.header_length.as_ref().map(|value| value.as_bytes()))?;
    let binary_by_default = request.parameters.as_ref().and_then(|p| p.binary_data_output).unwrap_or(false);
    let origin = super::predict::origin(&caller, client.as_ref());
    let answer = state.pipeline.infer_tensors(&name, version.as_ref(), request_id(), inputs, origin).await?;
    let outputs = select_outputs(answer.outputs, request.outputs, binary_by_default)?;
    let served = Served { bundle: answer.bundle.name().to_owned(), version: answer.bundle.version().to_string() };
    let reply = reply(served.bundle.clone(), served.version.clone(), request.id, outputs)?;
    Ok((Extension(served), reply))
}

/// An infer request body (JSON, or JSON then binary tensor data where `header_length`, the
/// `Inference-Header-Content-Length` header, says the JSON ends) as the request and its
/// inputs as host tensors. A body that is JSON but not an inference request is the
/// protocol's 400, as is any fault of the binary framing.
fn parse_infer(body: &[u8], header_length: Option<&[u8]>) -> Result<(InferRequest, Vec<Tensor>), V2Error> {
    let (json, binary) = v2_binary::split(body, header_length)?;
    let mut request: InferRequest = super::extract::parse_object(json).map_err(|error| bad_request(error.message))?;
    let mut binary = BinaryData::new(binary, header_length.is_some());
    let inputs = std::mem::take(&mut request.inputs)
        .into_iter()
        .map(|input| input_tensor(input, &mut binary))
        .collect::<Result<Vec<_>, _>>()?;
    binary.finish()?;
    Ok((request, inputs))
}

/// A protocol input as a host tensor: `data` flat or nested, row-major, or its share of the
/// binary data.
fn input_tensor(input: InferInput, binary: &mut BinaryData<'_>) -> Result<Tensor, V2Error> {
    let shape = oip::input_shape(&input.name, &input.shape)?;
    let datatype = oip::input_datatype(&input.name, &input.datatype)?;
    let binary_size = input.parameters.as_ref().and_then(|parameters| parameters.binary_data_size);
    let data = match (binary_size, &input.data) {
        (Some(_), Some(_)) => return Err(BinaryError::DataAndBinary { input: input.name }.into()),
        (None, None) => return Err(BinaryError::NoData { input: input.name }.into()),
        (Some(declared), None) => {
            oip::check_size(&input.name, datatype, &shape, declared, "binary_data_size")?;
            let bytes = binary.take(&input.name, declared)?;
            oip::decode(&input.name, datatype, &shape, bytes)?
        }
        (None, Some(data)) => json_data(&input.name, &input.datatype, datatype, data)?,
    };
    Tensor::new(input.name, shape, data).map_err(|error| bad_request(error.to_string()))
}

/// An input's JSON `data` (flat or nested) as host elements.
fn json_data(name: &str, datatype_name: &str, datatype: Datatype, data: &Value) -> Result<TensorData, V2Error> {
    let mut flat = Vec::new();
    flatten(data, &mut flat);
    let wrong = |what: &str| bad_request(format!("input `{name}` ({datatype_name}) holds {what}"));
    Ok(match datatype {
        Datatype::Fp32 => TensorData::Float32(
            flat.iter()
                .map(|v| v.as_f64().map(|f| f as f32))
                .collect::<Option<_>>()
                .ok_or_else(|| wrong("a non-number"))?,
        ),
        Datatype::Fp64 => TensorData::Float64(
            flat.iter().map(|v| v.as_f64()).collect::<Option<_>>().ok_or_else(|| wrong("a non-number"))?,
        ),
        Datatype::Int64
        | Datatype::Int32
        | Datatype::Int16
        | Datatype::Int8
        | Datatype::Uint8
        | Datatype::Uint16
        | Datatype::Uint32 => TensorData::Int64(
            flat.iter().map(|v| v.as_i64()).collect::<Option<_>>().ok_or_else(|| wrong("a non-integer"))?,
        ),
        Datatype::Bytes => TensorData::Text(
            flat.iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<_>>()
                .ok_or_else(|| wrong("a non-string"))?,
        ),
    })
}

/// The host tensors of an infer request body, parsed and converted as [`infer_on`] does it
/// (`header_length`: the `Inference-Header-Content-Length` header's value). For
/// runtime/fuzz, which runs this on arbitrary bytes.
pub(crate) fn infer_inputs(body: &[u8], header_length: Option<&[u8]>) -> Result<Vec<Tensor>, V2Error> {
    parse_infer(body, header_length).map(|(_, inputs)| inputs)
}

fn flatten<'a>(value: &'a Value, into: &mut Vec<&'a Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|item| flatten(item, into)),
        other => into.push(other),
    }
}

/// The outputs asked for (all when none are named), each with whether it goes back as
/// binary data: its own `binary_data` when given, else the request's `binary_data_output`.
fn select_outputs(
    outputs: Vec<Tensor>,
    requested: Option<Vec<RequestedOutput>>,
    binary_by_default: bool,
) -> Result<Vec<(Tensor, bool)>, V2Error> {
    match requested {
        None => Ok(outputs.into_iter().map(|tensor| (tensor, binary_by_default)).collect()),
        Some(requested) => requested
            .into_iter()
            .map(|wanted| {
                let binary = wanted
                    .parameters
                    .as_ref()
                    .and_then(|parameters| parameters.binary_data)
                    .unwrap_or(binary_by_default);
                Ok::<_, V2Error>((oip::output_named(&outputs, &wanted.name)?, binary))
            })
            .collect(),
    }
}

/// The response: all JSON when no output is binary, else the JSON then the binary outputs'
/// bytes in the order the JSON lists them.
fn reply(
    model_name: String,
    model_version: String,
    id: Option<String>,
    outputs: Vec<(Tensor, bool)>,
) -> Result<InferReply, V2Error> {
    let any_binary = outputs.iter().any(|(_, binary)| *binary);
    let mut bytes = Vec::new();
    let outputs = outputs
        .into_iter()
        .map(|(tensor, binary)| {
            let datatype = oip::datatype_of(&tensor);
            let (parameters, data) = if binary {
                let binary_data_size = oip::encode(&tensor.name, &tensor.data, &mut bytes)?;
                (Some(BinarySize { binary_data_size }), None)
            } else {
                (None, Some(json_values(tensor.data)))
            };
            Ok(InferOutput { name: tensor.name, shape: tensor.shape, datatype, parameters, data })
        })
        .collect::<Result<Vec<_>, V2Error>>()?;
    let response = InferResponse { model_name, model_version, id, outputs };
    if !any_binary {
        return Ok(InferReply::Json(response));
    }
    let json = serde_json::to_vec(&response).map_err(|error| {
        V2Error(StatusCode::INTERNAL_SERVER_ERROR, format!("the response did not serialise: {error}"))
    })?;
    Ok(InferReply::Binary { json, binary: bytes })
}

fn json_values(data: TensorData) -> Value {
    match data {
        TensorData::Float32(values) => Value::from(values.into_iter().map(f64::from).collect::<Vec<_>>()),
        TensorData::Float64(values) => Value::from(values),
        TensorData::Int64(values) => Value::from(values),
        TensorData::Text(values) => Value::from(values),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A body in the binary framing, as tritonclient.http builds it: the JSON, then each
    /// binary input's bytes; and the header's value.
    fn framed(request: &Value, binary: &[&[u8]]) -> (Vec<u8>, String) {
        let json = request.to_string();
        let mut body = json.clone().into_bytes();
        binary.iter().for_each(|part| body.extend_from_slice(part));
        (body, json.len().to_string())
    }

    fn le_f32(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|value| value.to_le_bytes()).collect()
    }

    fn binary_input(name: &str, shape: Value, datatype: &str, size: usize) -> Value {
        json!({"name": name, "shape": shape, "datatype": datatype, "parameters": {"binary_data_size": size}})
    }

    fn refusal(request: &Value, binary: &[&[u8]]) -> String {
        let (body, length) = framed(request, binary);
        let V2Error(status, message) = parse_infer(&body, Some(length.as_bytes())).unwrap_err();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{message}");
        message
    }

    #[test]
    fn binary_and_json_inputs_become_the_same_tensors() {
        let request = json!({
            "inputs": [
                binary_input("features", json!([2, 2]), "FP32", 16),
                {"name": "years_ahead", "shape": [2, 1], "datatype": "FP32", "data": [[0.0], [12.0]]},
                binary_input("code", json!([2]), "INT32", 8),
            ],
            "outputs": [{"name": "price", "parameters": {"binary_data": true}}],
            "parameters": {"binary_data_output": true, "priority": 0, "custom": "kept out"}
        });
        let codes: Vec<u8> = [7i32, -1].iter().flat_map(|v| v.to_le_bytes()).collect();
        let (body, length) = framed(&request, &[&le_f32(&[1.0, 2.0, 3.0, 4.5]), &codes]);
        let (parsed, inputs) = parse_infer(&body, Some(length.as_bytes())).unwrap();
        assert_eq!(parsed.parameters.and_then(|p| p.binary_data_output), Some(true));
        assert_eq!(
            inputs,
            vec![
                Tensor::new("features", vec![2, 2], TensorData::Float32(vec![1.0, 2.0, 3.0, 4.5])).unwrap(),
                Tensor::new("years_ahead", vec![2, 1], TensorData::Float32(vec![0.0, 12.0])).unwrap(),
                Tensor::new("code", vec![2], TensorData::Int64(vec![7, -1])).unwrap(),
            ]
        );
        // A header that covers the whole body: all JSON, no binary data.
        let all_json = json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [2.5]}]});
        let (body, length) = framed(&all_json, &[]);
        assert_eq!(parse_infer(&body, Some(length.as_bytes())).unwrap().1[0].data, TensorData::Float64(vec![2.5]));
    }

    #[test]
    fn each_fault_of_the_framing_is_a_400_naming_the_input_and_the_rule() {
        let features = |size| binary_input("features", json!([1, 2]), "FP32", size);
        let eight = le_f32(&[1.0, 2.0]);
        let cases: Vec<(Value, Vec<&[u8]>, &str)> = vec![
            (
                json!({"inputs": [features(4)]}),
                vec![&eight[..4]],
                "input `features` (FP32, shape [1, 2]) takes 8 bytes of binary data, but its binary_data_size is 4",
            ),
            (
                json!({"inputs": [features(8)]}),
                vec![&eight[..6]],
                "input `features` has binary_data_size 8 from byte 0 of the binary data, but the binary data ends after 6 bytes",
            ),
            (
                json!({"inputs": [features(8)]}),
                vec![&eight, b"\x00"],
                "the binary data after the JSON part is 9 bytes, but the inputs' binary_data_size add up to 8",
            ),
            (
                json!({"inputs": [{"name": "features", "shape": [1, 2], "datatype": "FP32", "data": [1, 2],
                                   "parameters": {"binary_data_size": 8}}]}),
                vec![&eight],
                "input `features` has both `data` and parameters.binary_data_size; give one or the other",
            ),
            (
                json!({"inputs": [{"name": "features", "shape": [1, 2], "datatype": "FP32"}]}),
                vec![],
                "input `features` has neither `data` nor parameters.binary_data_size",
            ),
            (
                json!({"inputs": [binary_input("half", json!([1]), "FP16", 2)]}),
                vec![b"\x00\x3c"],
                "input `half`: datatype \"FP16\" is not supported",
            ),
            (
                json!({"inputs": [binary_input("features", json!([-1, 2]), "FP32", 8)]}),
                vec![&eight],
                "input `features` has a negative dimension",
            ),
            (
                json!({"inputs": [binary_input("features", json!([4611686018427387904u64, 4]), "FP32", 8)]}),
                vec![&eight],
                "input `features` has a shape [4611686018427387904, 4] too large to hold in memory",
            ),
        ];
        for (request, binary, message) in cases {
            assert_eq!(refusal(&request, &binary), message, "{request}");
        }
        // A size that is not a byte count is the JSON's shape error, naming the field.
        let negative = json!({"name": "features", "shape": [1, 2], "datatype": "FP32",
                              "parameters": {"binary_data_size": -8}});
        let message = refusal(&json!({"inputs": [negative]}), &[&eight]);
        assert!(message.contains("inputs[0].parameters.binary_data_size"), "{message}");
        let message = refusal(&json!({"inputs": [], "parameters": {"binary_data_output": "yes"}}), &[]);
        assert!(message.contains("parameters.binary_data_output"), "{message}");
    }

    #[test]
    fn binary_inputs_need_the_header() {
        let request = json!({"inputs": [binary_input("features", json!([1, 2]), "FP32", 8)]});
        let (body, _) = framed(&request, &[&le_f32(&[1.0, 2.0])]);
        let V2Error(status, message) = parse_infer(&body, None).unwrap_err();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(message.starts_with("the body is not valid JSON"), "without the header it is all JSON: {message}");
        let (body, _) = framed(&request, &[]);
        let V2Error(_, message) = parse_infer(&body, None).unwrap_err();
        assert_eq!(
            message,
            "input `features` has parameters.binary_data_size, but the request has no Inference-Header-Content-Length \
             header, so no binary data"
        );
        let V2Error(_, message) = parse_infer(&body, Some(b"99999")).unwrap_err();
        assert_eq!(
            message,
            format!(
                "the Inference-Header-Content-Length header says the JSON part is 99999 bytes, but the body is {}",
                body.len()
            )
        );
    }

    fn tensor(name: &str, data: TensorData) -> Tensor {
        let len = data.len();
        Tensor::new(name, vec![len, 1], data).unwrap()
    }

    /// Splits a binary reply as tritonclient does: the JSON by the header's length, then
    /// each binary output's bytes in the JSON's order.
    fn unframe(reply: InferReply) -> (Value, Vec<u8>) {
        match reply {
            InferReply::Binary { json, binary } => (serde_json::from_slice(&json).unwrap(), binary),
            InferReply::Json(_) => panic!("a JSON reply"),
        }
    }

    #[test]
    fn outputs_go_binary_when_asked_each_output_overriding_the_request() {
        let outputs = || vec![tensor("label", TensorData::Int64(vec![2])), tensor("p", TensorData::Float32(vec![0.5]))];
        let asked = |value: Value| serde_json::from_value::<Vec<RequestedOutput>>(value).unwrap();

        // binary_data_output: every output binary, in the model's order.
        let chosen = select_outputs(outputs(), None, true).unwrap();
        let (json, binary) = unframe(reply("iris".into(), "1.0.0".into(), Some("r".into()), chosen).unwrap());
        assert_eq!(json["id"], "r");
        assert_eq!(
            json["outputs"],
            json!([{"name": "label", "shape": [1, 1], "datatype": "INT64", "parameters": {"binary_data_size": 8}},
                   {"name": "p", "shape": [1, 1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}])
        );
        assert_eq!(binary, [&2i64.to_le_bytes()[..], &0.5f32.to_le_bytes()].concat());

        // An output's own binary_data wins over the request's; the order is the request's.
        let requested = asked(json!([{"name": "p"}, {"name": "label", "parameters": {"binary_data": false}}]));
        let chosen = select_outputs(outputs(), Some(requested), true).unwrap();
        let (json, binary) = unframe(reply("iris".into(), "1.0.0".into(), None, chosen).unwrap());
        assert_eq!(json["outputs"][0]["parameters"], json!({"binary_data_size": 4}));
        assert!(json["outputs"][0].get("data").is_none());
        assert_eq!(json["outputs"][1]["data"], json!([2]));
        assert!(json["outputs"][1].get("parameters").is_none());
        assert_eq!(binary, 0.5f32.to_le_bytes());

        // Nothing binary: the JSON reply as without the extension.
        let requested = asked(json!([{"name": "p", "parameters": {"binary_data": false}}]));
        let chosen = select_outputs(outputs(), Some(requested), true).unwrap();
        assert!(matches!(reply("iris".into(), "1.0.0".into(), None, chosen).unwrap(), InferReply::Json(_)));
        assert!(matches!(
            reply("iris".into(), "1.0.0".into(), None, select_outputs(outputs(), None, false).unwrap()).unwrap(),
            InferReply::Json(_)
        ));
    }
}
