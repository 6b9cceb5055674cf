//! `inference.GRPCInferenceService`: the six calls of the Open Inference Protocol, each
//! guarded as its HTTP /v2 route is (the same permissions, tokens, readiness, concurrency
//! limit and time limit), inference through the same [`Pipeline::infer_tensors`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::convert;
use super::error::{GrpcError, code_name};
use super::proto::grpc_inference_service_server::GrpcInferenceService;
use super::proto::model_metadata_response::TensorMetadata;
use super::proto::{
    ModelInferRequest, ModelInferResponse, ModelMetadataRequest, ModelMetadataResponse, ModelReadyRequest,
    ModelReadyResponse, ServerLiveRequest, ServerLiveResponse, ServerMetadataRequest, ServerMetadataResponse,
    ServerReadyRequest, ServerReadyResponse,
};
use crate::auth::{Authenticator, Denial, Permission, Principal};
use crate::http::{DenialAudit, Readiness};
use crate::oip;
use crate::pipeline::{Origin, Pipeline};
use crate::telemetry::names;

/// The metadata key a client's own request id comes in, as HTTP's `x-request-id` header.
const CLIENT_REQUEST_ID: &str = "x-request-id";
/// The longest client request id kept, as over HTTP.
const CLIENT_ID_MAX_LEN: usize = 128;

/// The gRPC service: cheap to clone, one per listener.
#[derive(Debug, Clone)]
pub struct InferenceService {
    pipeline: Arc<Pipeline>,
    readiness: Arc<Readiness>,
    authenticator: Arc<Authenticator>,
    audit: DenialAudit,
    timeout: Duration,
    /// Calls in flight across every connection, bounded as HTTP's are
    /// (`server.max_concurrent_requests`); beyond it a call is refused at once.
    in_flight: Arc<tokio::sync::Semaphore>,
}

/// What the service is built from.
#[derive(Debug)]
pub struct ServiceParts {
    pub pipeline: Arc<Pipeline>,
    pub readiness: Arc<Readiness>,
    pub authenticator: Arc<Authenticator>,
    pub audit: DenialAudit,
    pub timeout: Duration,
    pub max_concurrent_requests: usize,
}

impl InferenceService {
    pub fn new(parts: ServiceParts) -> Self {
        let ServiceParts { pipeline, readiness, authenticator, audit, timeout, max_concurrent_requests } = parts;
        let in_flight = Arc::new(tokio::sync::Semaphore::new(max_concurrent_requests));
        Self { pipeline, readiness, authenticator, audit, timeout, in_flight }
    }

    /// Runs one call: within the time limit, counted, logged, its error mapped to a status.
    async fn call<T>(
        &self,
        method: &'static str,
        work: impl Future<Output = Result<Response<T>, GrpcError>>,
    ) -> Result<Response<T>, Status> {
        let started = Instant::now();
        let result = match tokio::time::timeout(self.timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(GrpcError::Timeout(self.timeout.as_secs())),
        };
        let code = result.as_ref().map_or_else(GrpcError::code, |_| tonic::Code::Ok);
        metrics::counter!(names::GRPC_REQUESTS, "method" => method, "code" => code_name(code)).increment(1);
        tracing::info!(
            target: "forecourt::access",
            protocol = "grpc",
            method,
            code = code_name(code),
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request"
        );
        result.map_err(Status::from)
    }

    /// The caller, if it may make a call that needs `permission`; refusals counted, logged and
    /// audited as HTTP's are.
    fn authorize(
        &self,
        metadata: &MetadataMap,
        remote: Option<std::net::SocketAddr>,
        method: &'static str,
        permission: Permission,
    ) -> Result<Principal, GrpcError> {
        let authorization = metadata.get("authorization").map(|value| value.as_bytes());
        let caller = self.authenticator.authenticate(authorization);
        let refusal = match caller {
            Ok(principal) if principal.may(permission) => {
                return match principal.check_rate() {
                    Ok(()) => Ok(principal),
                    Err(limited) => {
                        metrics::counter!(names::AUTH_DENIALS, "reason" => "rate_limited").increment(1);
                        Err(GrpcError::RateLimited(limited.retry_after.as_secs_f64().ceil().max(1.0) as u64))
                    }
                };
            }
            Ok(Principal::Token(token)) => {
                let roles: Vec<&str> = permission.roles().into_iter().map(|role| role.as_str()).collect();
                let message = format!(
                    "token {} has the role {}; this call needs one of: {}",
                    token.id,
                    token.role.as_str(),
                    roles.join(", ")
                );
                (GrpcError::PermissionDenied(message), "forbidden", Some(token.id.to_string()))
            }
            Ok(_) => (
                GrpcError::Unauthenticated(
                    "this call needs a bearer token (metadata authorization: Bearer fct_...)".to_owned(),
                ),
                "missing_token",
                None,
            ),
            Err(denial) => {
                let token = denial.token_id().map(ToString::to_string);
                (GrpcError::Unauthenticated(denial.to_string()), Denial::reason(&denial), token)
            }
        };
        let (error, reason, token) = refusal;
        let remote = remote.map(|address| address.ip().to_string());
        metrics::counter!(names::AUTH_DENIALS, "reason" => reason).increment(1);
        tracing::info!(code = code_name(error.code()), reason, token, method, remote, "gRPC call denied");
        self.audit.record(serde_json::json!({
            "status": code_name(error.code()), "reason": reason, "token_id": token, "method": "gRPC",
            "path": method, "remote": remote, "needs": permission,
        }));
        Err(error)
    }

    fn guard<T>(
        &self,
        request: &Request<T>,
        method: &'static str,
        permission: Permission,
    ) -> Result<Principal, GrpcError> {
        if permission == Permission::Open {
            return Ok(Principal::Anonymous);
        }
        self.authorize(request.metadata(), request.remote_addr(), method, permission)
    }

    async fn infer(&self, request: Request<ModelInferRequest>) -> Result<Response<ModelInferResponse>, GrpcError> {
        let principal = self.guard(&request, MODEL_INFER, Permission::Predict)?;
        if !self.readiness.is_ready() {
            return Err(GrpcError::NotReady);
        }
        let _permit = Arc::clone(&self.in_flight).try_acquire_owned().map_err(|_| {
            metrics::counter!(names::GRPC_SHED).increment(1);
            GrpcError::Shed
        })?;
        let client_request_id = client_request_id(request.metadata());
        let mut message = request.into_inner();
        let version = match message.model_version.as_str() {
            "" => None,
            version => Some(oip::parse_version(&message.model_name, version)?),
        };
        let inputs_were_raw = !message.raw_input_contents.is_empty();
        let raw = convert::wants_raw(&message, inputs_were_raw)?;
        let inputs = convert::input_tensors(&mut message)?;
        let origin = Origin { token: principal.token_id(), client_request_id: client_request_id.as_deref() };
        let id = Uuid::now_v7();
        let answer = self.pipeline.infer_tensors(&message.model_name, version.as_ref(), id, inputs, origin).await?;
        let outputs = convert::select_outputs(answer.outputs, &message.outputs)?;
        let response = convert::infer_response(
            answer.bundle.name().to_owned(),
            answer.bundle.version().to_string(),
            message.id,
            outputs,
            raw,
        )?;
        let mut response = Response::new(response);
        if let Ok(value) = id.to_string().parse() {
            response.metadata_mut().insert("x-request-id", value);
        }
        Ok(response)
    }
}

const MODEL_INFER: &str = "ModelInfer";

/// A client's `x-request-id` metadata worth keeping: 1 to 128 visible ASCII characters.
fn client_request_id(metadata: &MetadataMap) -> Option<String> {
    let bytes = metadata.get(CLIENT_REQUEST_ID)?.as_bytes();
    let valid = !bytes.is_empty() && bytes.len() <= CLIENT_ID_MAX_LEN && bytes.iter().all(u8::is_ascii_graphic);
    valid.then(|| String::from_utf8_lossy(bytes).into_owned())
}

fn version_of(version: &str) -> Option<&str> {
    (!version.is_empty()).then_some(version)
}

fn tensor_metadata(tensors: Vec<oip::TensorMetadata>) -> Vec<TensorMetadata> {
    tensors
        .into_iter()
        .map(|tensor| TensorMetadata { name: tensor.name, datatype: tensor.datatype.to_owned(), shape: tensor.shape })
        .collect()
}

#[tonic::async_trait]
impl GrpcInferenceService for InferenceService {
    async fn server_live(&self, request: Request<ServerLiveRequest>) -> Result<Response<ServerLiveResponse>, Status> {
        self.call("ServerLive", async {
            self.guard(&request, "ServerLive", Permission::Open)?;
            Ok::<_, GrpcError>(Response::new(ServerLiveResponse { live: true }))
        })
        .await
    }

    async fn server_ready(
        &self,
        request: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        self.call("ServerReady", async {
            self.guard(&request, "ServerReady", Permission::Open)?;
            Ok::<_, GrpcError>(Response::new(ServerReadyResponse { ready: self.readiness.is_ready() }))
        })
        .await
    }

    async fn model_ready(&self, request: Request<ModelReadyRequest>) -> Result<Response<ModelReadyResponse>, Status> {
        self.call("ModelReady", async {
            self.guard(&request, "ModelReady", Permission::Describe)?;
            let asked = request.get_ref();
            oip::find_model(self.pipeline.registry(), &asked.name, version_of(&asked.version))?;
            Ok::<_, GrpcError>(Response::new(ModelReadyResponse { ready: self.readiness.is_ready() }))
        })
        .await
    }

    async fn server_metadata(
        &self,
        request: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        self.call("ServerMetadata", async {
            self.guard(&request, "ServerMetadata", Permission::Describe)?;
            Ok::<_, GrpcError>(Response::new(ServerMetadataResponse {
                name: oip::SERVER_NAME.to_owned(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                extensions: Vec::new(),
            }))
        })
        .await
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        self.call("ModelMetadata", async {
            self.guard(&request, "ModelMetadata", Permission::Describe)?;
            let asked = request.get_ref();
            let registry = self.pipeline.registry();
            let bundle = oip::find_model(registry, &asked.name, version_of(&asked.version))?;
            let metadata = oip::model_metadata(registry, &bundle);
            Ok::<_, GrpcError>(Response::new(ModelMetadataResponse {
                name: metadata.name,
                versions: metadata.versions,
                platform: metadata.platform.to_owned(),
                inputs: tensor_metadata(metadata.inputs),
                outputs: tensor_metadata(metadata.outputs),
            }))
        })
        .await
    }

    async fn model_infer(&self, request: Request<ModelInferRequest>) -> Result<Response<ModelInferResponse>, Status> {
        self.call(MODEL_INFER, self.infer(request)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_request_id_is_kept_only_when_it_is_printable_and_short() {
        let with = |value: &str| {
            let mut metadata = MetadataMap::new();
            metadata.insert(CLIENT_REQUEST_ID, value.parse().unwrap());
            client_request_id(&metadata)
        };
        assert_eq!(with("kiosk-7/42").as_deref(), Some("kiosk-7/42"));
        assert_eq!(with(&"x".repeat(129)), None);
        assert_eq!(with("two words"), None);
        assert_eq!(client_request_id(&MetadataMap::new()), None);
        assert_eq!(version_of(""), None);
        assert_eq!(version_of("1.0.0"), Some("1.0.0"));
    }
}
