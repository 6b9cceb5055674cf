//! Every error the HTTP API returns, and the one mapping from the pipeline's errors to
//! status codes and the body of api-shapes.md section 2:
//!
//! `{"error": {"code": "invalid_field", "message": "...", "field": "mileage"}, "request_id": "..."}`
//!
//! The code is an [`ErrorCode`] and the status follows from it ([`status_of`]), so no
//! route can give the same condition another status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::request_context::current_request_id;
use crate::bundle::InferenceError;
use crate::error_code::ErrorCode;
use crate::pipeline::{PipelineError, inference_code};
use crate::quality::QualityError;
pub use crate::text::{echo, truncate};

/// An error response of the /v1 API. Its status follows from its code ([`status_of`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub field: Option<String>,
}

/// The status of each code: the one table, so the same condition answers the same status
/// on every route (README, "Errors").
pub const fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidJson => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::UnknownBundle | ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorCode::InvalidField | ErrorCode::MissingField | ErrorCode::ExplanationsUnavailable => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        ErrorCode::Overloaded | ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::PluginFailed | ErrorCode::ModelFailed | ErrorCode::InternalError => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        ErrorCode::NotReady | ErrorCode::Timeout => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The `error` object of an error body (also used per instance in batch responses).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
    /// The request field at fault, when one is (the first, when several are).
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
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), field: None }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn status(&self) -> StatusCode {
        status_of(self.code)
    }

    pub fn invalid_json(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidJson, message)
    }

    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidField, message).with_field(field)
    }

    pub fn missing_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::MissingField, message).with_field(field)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn not_ready() -> Self {
        Self::new(ErrorCode::NotReady, "the appliance is starting or shutting down")
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InternalError, message)
    }

    pub fn detail(&self) -> ErrorDetail {
        ErrorDetail { code: self.code, message: self.message.clone(), field: self.field.clone() }
    }
}

/// Whether `path` is the Open Inference Protocol's, whose clients expect its own error
/// shape, `{"error": message}`.
pub fn speaks_protocol_v2(path: &str) -> bool {
    path == "/v2" || path.starts_with("/v2/")
}

impl ApiError {
    /// The answer in the error shape of the API `path` belongs to: the inference protocol's
    /// under /v2, the documented body elsewhere. For the layers and guards in front of
    /// every route, which answer for routes of both APIs.
    pub fn into_response_for(self, path: &str) -> Response {
        if speaks_protocol_v2(path) {
            (self.status(), Json(serde_json::json!({"error": self.message}))).into_response()
        } else {
            self.into_response()
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.detail(),
            request_id: current_request_id().map(|id| id.to_string()).unwrap_or_default(),
        };
        let status = self.status();
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
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
            PipelineError::BatchTooLarge { .. } => Self::new(code, error.to_string()).with_field("instances"),
            PipelineError::Inference(inference) => inference.into(),
            PipelineError::Store(_) | PipelineError::Worker(_) => {
                tracing::error!(%error, "request failed inside the appliance");
                Self::new(code, error.to_string())
            }
            _ => Self::new(code, error.to_string()),
        }
    }
}

impl From<QualityError> for ApiError {
    fn from(error: QualityError) -> Self {
        let message = error.to_string();
        match error {
            QualityError::UnknownPrediction { .. } => Self::not_found(message),
            QualityError::UnknownBundle { .. } => Self::new(ErrorCode::UnknownBundle, message),
            QualityError::Invalid { .. } => Self::invalid_field("actual", message),
            QualityError::AlreadyRecorded { .. } | QualityError::NotJudgeable { .. } => {
                Self::new(ErrorCode::Conflict, message)
            }
            QualityError::Store(_) | QualityError::Corrupt { .. } => {
                tracing::error!(%error, "an outcome could not be read or written");
                Self::internal(message)
            }
        }
    }
}

impl From<InferenceError> for ApiError {
    fn from(error: InferenceError) -> Self {
        let code = inference_code(&error);
        match error {
            InferenceError::Input(input) => Self { code, message: input.message, field: input.field },
            other => {
                if code.is_server_fault() {
                    tracing::warn!(error = %other, "prediction failed");
                }
                Self::new(code, other.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's error table, as (status, code) rows.
    fn readme_table() -> Vec<(u16, String)> {
        let readme = include_str!("../../../README.md");
        readme
            .lines()
            .filter_map(|line| {
                let mut cells = line.strip_prefix('|')?.split('|').map(str::trim);
                let status = cells.next()?.parse().ok()?;
                let code = cells.next()?.strip_prefix('`')?.strip_suffix('`')?.to_owned();
                Some((status, code))
            })
            .collect()
    }

    #[test]
    fn the_readme_error_table_is_the_code_table() {
        let table = readme_table();
        for code in ErrorCode::ALL {
            let rows: Vec<u16> =
                table.iter().filter(|(_, documented)| documented == code.as_str()).map(|(status, _)| *status).collect();
            assert_eq!(rows, [status_of(code).as_u16()], "{code}: the README's rows against status_of");
        }
        assert_eq!(table.len(), ErrorCode::ALL.len(), "the README documents a code the API does not have: {table:?}");
    }
}
