//! Request bodies: the content type must be JSON, the size within `server.max_body_bytes`,
//! and the text well-formed JSON, each refused with its own status and code.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::ApiError;

/// A JSON request body as text, checked to be well-formed; the plugin parses it itself.
#[derive(Debug)]
pub struct JsonText(pub String);

/// A JSON request body parsed into `T`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl FromRequest<AppState> for JsonText {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = json_bytes(request, state.config.max_body_bytes, ContentType::Required).await?;
        serde_json::from_slice::<serde::de::IgnoredAny>(&bytes)
            .map_err(|error| ApiError::invalid_json(format!("the body is not valid JSON: {error}")))?;
        // Valid JSON is valid UTF-8.
        Ok(Self(String::from_utf8(bytes.to_vec()).map_err(|error| ApiError::invalid_json(error.to_string()))?))
    }
}

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = json_bytes(request, state.config.max_body_bytes, ContentType::Required).await?;
        parse_object(&bytes).map(Self)
    }
}

/// A JSON request body of the inference protocol parsed into `T`. Triton's client sends
/// no content type at all, so a missing one is accepted; a non-JSON one is not.
#[derive(Debug)]
pub struct ProtocolJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ProtocolJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = json_bytes(request, state.config.max_body_bytes, ContentType::JsonOrNone).await?;
        parse_object(&bytes).map(Self)
    }
}

/// Parses a body that must be a JSON object into `T`, naming the offending field on a
/// shape error. (serde's derived structs would also accept an array of their fields.)
fn parse_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|error| ApiError::invalid_json(format!("the body is not valid JSON: {error}")))?;
    if !value.is_object() {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", "the body must be a JSON object"));
    }
    serde_path_to_error::deserialize(value).map_err(|error| {
        let field = error.path().to_string();
        let api_error =
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", error.into_inner().to_string());
        if field == "." { api_error } else { api_error.with_field(field) }
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ContentType {
    Required,
    JsonOrNone,
}

async fn json_bytes(request: Request, limit: usize, required: ContentType) -> Result<Bytes, ApiError> {
    let content_type =
        request.headers().get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).map(str::to_owned);
    let content_type = content_type.as_deref();
    let is_json = content_type
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    let acceptable = is_json || (content_type.is_none() && required == ContentType::JsonOrNone);
    if !acceptable {
        // Read the body anyway (within the limit), so that the connection stays usable
        // for the client's next request; a larger one is answered 413 instead below.
        let declared =
            request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        if declared.is_none_or(|length| length <= limit) {
            let _ = axum::body::to_bytes(request.into_body(), limit).await;
        }
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("the body must be application/json, not {}", content_type.unwrap_or("unspecified")),
        ));
    }
    let too_large =
        || ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", format!("the body exceeds {limit} bytes"));
    let declared = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(too_large());
    }
    axum::body::to_bytes(request.into_body(), limit).await.map_err(|_| too_large())
}
