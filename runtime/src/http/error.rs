//! Every error the HTTP API returns, and the one mapping from the pipeline's errors to
//! status codes and the body of api-shapes.md section 2:
//!
//! `{"error": {"code": "invalid_field", "message": "...", "field": "mileage"}, "request_id": "..."}`

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::request_context::current_request_id;
use crate::bundle::InferenceError;
use crate::pipeline::{PipelineError, inference_code};

/// An error response of the /v1 API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

/// The `error` object of an error body (also used per instance in batch responses).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// A stable snake_case word: invalid_json, invalid_field, missing_field, unknown_bundle, not_found,
    /// payload_too_large, unsupported_media_type, overloaded, plugin_failed, model_failed, not_ready,
    /// internal_error.
    pub code: &'static str,
    pub message: String,
    /// The request field at fault, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
    /// The request's id, also in the x-request-id header.
    pub request_id: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), field: None }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn invalid_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_json", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn not_ready() -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "the appliance is starting or shutting down")
    }

    pub fn detail(&self) -> ErrorDetail {
        ErrorDetail { code: self.code, message: self.message.clone(), field: self.field.clone() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.detail(),
            request_id: current_request_id().map(|id| id.to_string()).unwrap_or_default(),
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::PAYLOAD_TOO_LARGE {
            // The body was not read to its end, so the connection cannot carry another
            // request: say so, rather than let the client reuse it and find it closed.
            response
                .headers_mut()
                .insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
        }
        response
    }
}

impl From<PipelineError> for ApiError {
    fn from(error: PipelineError) -> Self {
        let code = error.code();
        match error {
            PipelineError::UnknownBundle { .. } | PipelineError::UnknownVersion { .. } => {
                Self::new(StatusCode::NOT_FOUND, code, error.to_string())
            }
            PipelineError::BatchTooLarge { .. } => {
                Self::new(StatusCode::BAD_REQUEST, code, error.to_string()).with_field("instances")
            }
            PipelineError::Inference(inference) => inference.into(),
            PipelineError::Overloaded(_) => Self::new(StatusCode::TOO_MANY_REQUESTS, code, error.to_string()),
            PipelineError::Store(_) | PipelineError::Worker(_) => {
                tracing::error!(%error, "request failed inside the appliance");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, code, error.to_string())
            }
        }
    }
}

impl From<InferenceError> for ApiError {
    fn from(error: InferenceError) -> Self {
        let code = inference_code(&error);
        match error {
            InferenceError::Input(input) => {
                let status =
                    if code == "invalid_json" { StatusCode::BAD_REQUEST } else { StatusCode::UNPROCESSABLE_ENTITY };
                Self { status, code, message: input.message, field: input.field }
            }
            InferenceError::Plugin(crate::plugin::PluginError::Exhausted { .. }) => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, code, error.to_string())
            }
            other => {
                tracing::warn!(error = %other, "prediction failed");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, code, other.to_string())
            }
        }
    }
}
