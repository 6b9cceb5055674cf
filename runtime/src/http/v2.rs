//! The Open Inference Protocol v2 (KServe, Triton, MLServer) under /v2, exactly as in
//! api-shapes.md section 1: raw tensors straight to a bundle's model, no plugin. Errors
//! here have the protocol's own shape, `{"error": "<message>"}`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use semver::Version;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::AppState;
use super::auth::Caller;
use super::extract::ProtocolJson;
use super::request_context::{ClientRequestId, Served, request_id};
use crate::bundle::Bundle;
use crate::model::{ElementType, OutputForm};
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
    Json(ServerMetadata { name: "forecourt", version: env!("CARGO_PKG_VERSION"), extensions: Vec::new() })
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

#[derive(Debug, Serialize)]
pub struct TensorMetadata {
    name: String,
    datatype: &'static str,
    shape: Vec<i64>,
}

#[derive(Debug, Serialize)]
pub struct ModelMetadata {
    name: String,
    versions: Vec<String>,
    platform: &'static str,
    inputs: Vec<TensorMetadata>,
    outputs: Vec<TensorMetadata>,
}

/// The bundle named, at `version` or its active version.
fn bundle_of(state: &AppState, name: &str, version: Option<&str>) -> Result<std::sync::Arc<Bundle>, V2Error> {
    let registry = state.pipeline.registry();
    let not_found = || {
        V2Error(
            StatusCode::NOT_FOUND,
            format!("unknown model {name}{}", version.map(|v| format!(" version {v}")).unwrap_or_default()),
        )
    };
    match version {
        None => registry.active(name).ok_or_else(not_found),
        Some(version) => {
            let version = Version::parse(version).map_err(|_| not_found())?;
            registry.version(name, &version).ok_or_else(not_found)
        }
    }
}

fn metadata(state: &AppState, bundle: &Bundle) -> ModelMetadata {
    let model = bundle.model();
    ModelMetadata {
        name: bundle.name().to_owned(),
        versions: state.pipeline.registry().versions(bundle.name()).iter().map(|b| b.version().to_string()).collect(),
        platform: "onnxruntime_onnx",
        inputs: model
            .inputs()
            .iter()
            .map(|input| TensorMetadata {
                name: input.name.clone(),
                datatype: input.element_type.protocol_name(),
                shape: input.shape.clone(),
            })
            .collect(),
        outputs: model
            .outputs()
            .iter()
            .map(|output| TensorMetadata {
                name: output.name.clone(),
                datatype: output.element_type.protocol_name(),
                shape: match &output.form {
                    OutputForm::Tensor { shape } => shape.clone(),
                    OutputForm::ClassMaps => vec![-1, -1],
                },
            })
            .collect(),
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

/// An inference request of the protocol (JSON tensors).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    parameters: Option<Value>,
    inputs: Vec<InferInput>,
    #[serde(default)]
    outputs: Option<Vec<RequestedOutput>>,
}

/// An input tensor: `data` flat or nested, row-major.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct InferInput {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    data: Value,
    #[serde(default)]
    #[allow(dead_code)]
    parameters: Option<Value>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RequestedOutput {
    name: String,
    #[serde(default)]
    #[allow(dead_code)]
    parameters: Option<Value>,
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
    data: Value,
}

/// Every answer of both infer routes.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // Only read by the OpenAPI derive.
enum InferAnswers {
    /// model_name, model_version, id, outputs: [{name, shape, datatype, data}]
    #[response(status = 200)]
    Inferred(Value),
    /// Malformed JSON, or not an inference request for this model
    #[response(status = 400)]
    BadRequest(V2ErrorBody),
    /// No such model or version
    #[response(status = 404)]
    NotFound(V2ErrorBody),
    /// Body too large
    #[response(status = 413)]
    TooLarge(V2ErrorBody),
    /// A content type other than JSON
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

#[utoipa::path(post, path = "/v2/models/{model}/infer", tag = "inference protocol v2", params(("model" = String, Path)), request_body = InferRequest, responses(InferAnswers))]
pub async fn infer(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Extension(caller): Extension<Caller>,
    client: Option<Extension<ClientRequestId>>,
    body: Result<ProtocolJson<InferRequest>, super::error::ApiError>,
) -> Result<(Extension<Served>, Json<InferResponse>), V2Error> {
    infer_on(state, name, None, caller, client, body).await
}

#[utoipa::path(post, path = "/v2/models/{model}/versions/{version}/infer", tag = "inference protocol v2", params(("model" = String, Path), ("version" = String, Path)), request_body = InferRequest, responses(InferAnswers))]
pub async fn infer_version(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    Extension(caller): Extension<Caller>,
    client: Option<Extension<ClientRequestId>>,
    body: Result<ProtocolJson<InferRequest>, super::error::ApiError>,
) -> Result<(Extension<Served>, Json<InferResponse>), V2Error> {
    infer_on(state, name, Some(version), caller, client, body).await
}

async fn infer_on(
    state: AppState,
    name: String,
    version: Option<String>,
    caller: Caller,
    client: Option<Extension<ClientRequestId>>,
    body: Result<ProtocolJson<InferRequest>, super::error::ApiError>,
) -> Result<(Extension<Served>, Json<InferResponse>), V2Error> {
    ensure_ready(&state)?;
    // A body that is JSON but not an inference request is the protocol's 400; HTTP-level
    // refusals (413 too large, 415 not JSON) keep their status.
    let ProtocolJson(request) = body.map_err(|error| match error.status() {
        StatusCode::UNPROCESSABLE_ENTITY => bad_request(error.message),
        status => V2Error(status, error.message),
    })?;
    let version = match version {
        Some(version) => Some(
            Version::parse(&version)
                .map_err(|_| V2Error(StatusCode::NOT_FOUND, format!("unknown model {name} version {version}")))?,
        ),
        None => None,
    };
    let inputs = request.inputs.into_iter().map(input_tensor).collect::<Result<Vec<_>, _>>()?;
    let origin = super::predict::origin(&caller, client.as_ref());
    let answer = state.pipeline.infer_tensors(&name, version.as_ref(), request_id(), inputs, origin).await?;
    let outputs = select_outputs(answer.outputs, request.outputs)?;
    let served = Served { bundle: answer.bundle.name().to_owned(), version: answer.bundle.version().to_string() };
    Ok((
        Extension(served.clone()),
        Json(InferResponse { model_name: served.bundle, model_version: served.version, id: request.id, outputs }),
    ))
}

/// A protocol input as a host tensor: `data` flat or nested, row-major.
fn input_tensor(input: InferInput) -> Result<Tensor, V2Error> {
    let shape = input
        .shape
        .iter()
        .map(|&dim| {
            usize::try_from(dim).map_err(|_| bad_request(format!("input `{}` has a negative dimension", input.name)))
        })
        .collect::<Result<Vec<usize>, _>>()?;
    let mut flat = Vec::new();
    flatten(&input.data, &mut flat);
    let wrong = |what: &str| bad_request(format!("input `{}` ({}) holds {what}", input.name, input.datatype));
    let data = match input.datatype.as_str() {
        "FP32" => TensorData::Float32(
            flat.iter()
                .map(|v| v.as_f64().map(|f| f as f32))
                .collect::<Option<_>>()
                .ok_or_else(|| wrong("a non-number"))?,
        ),
        "FP64" => TensorData::Float64(
            flat.iter().map(|v| v.as_f64()).collect::<Option<_>>().ok_or_else(|| wrong("a non-number"))?,
        ),
        "INT64" | "INT32" | "INT16" | "INT8" | "UINT8" | "UINT16" | "UINT32" => TensorData::Int64(
            flat.iter().map(|v| v.as_i64()).collect::<Option<_>>().ok_or_else(|| wrong("a non-integer"))?,
        ),
        "BYTES" => TensorData::Text(
            flat.iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<_>>()
                .ok_or_else(|| wrong("a non-string"))?,
        ),
        other => return Err(bad_request(format!("input `{}`: datatype {other} is not supported", input.name))),
    };
    Tensor::new(input.name, shape, data).map_err(|error| bad_request(error.to_string()))
}

/// The host tensors of an infer request body: the body parsed as [`ProtocolJson`] parses
/// it, then each input converted as [`infer_on`] converts it. For runtime/fuzz, which runs
/// this on arbitrary bytes.
pub(crate) fn infer_inputs(body: &[u8]) -> Result<Vec<Tensor>, V2Error> {
    let request: InferRequest = super::extract::parse_object(body).map_err(|error| bad_request(error.message))?;
    request.inputs.into_iter().map(input_tensor).collect()
}

fn flatten<'a>(value: &'a Value, into: &mut Vec<&'a Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|item| flatten(item, into)),
        other => into.push(other),
    }
}

fn select_outputs(outputs: Vec<Tensor>, requested: Option<Vec<RequestedOutput>>) -> Result<Vec<InferOutput>, V2Error> {
    let chosen: Vec<Tensor> = match requested {
        None => outputs,
        Some(requested) => requested
            .into_iter()
            .map(|wanted| {
                outputs
                    .iter()
                    .find(|tensor| tensor.name == wanted.name)
                    .cloned()
                    .ok_or_else(|| bad_request(format!("the model has no output `{}`", wanted.name)))
            })
            .collect::<Result<_, _>>()?,
    };
    Ok(chosen.into_iter().map(output).collect())
}

fn output(tensor: Tensor) -> InferOutput {
    let datatype = ElementType::of(&tensor.data).protocol_name();
    let data = match tensor.data {
        TensorData::Float32(values) => Value::from(values.into_iter().map(f64::from).collect::<Vec<_>>()),
        TensorData::Float64(values) => Value::from(values),
        TensorData::Int64(values) => Value::from(values),
        TensorData::Text(values) => Value::from(values),
    };
    InferOutput { name: tensor.name, shape: tensor.shape, datatype, data }
}
