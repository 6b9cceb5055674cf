//! Request bodies: the content type must be JSON (for the inference protocol, also none or
//! binary tensor data), the size within `server.max_body_bytes`,
//! and the text well-formed JSON, each refused with its own status and code.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, header};
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::ApiError;
use crate::error_code::ErrorCode;

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
        json_text(&bytes).map(Self)
    }
}

/// The check [`JsonText`] makes of a body it was given: well-formed JSON, returned as text.
/// A plain function so that runtime/fuzz runs exactly this on arbitrary bytes.
pub(crate) fn json_text(bytes: &[u8]) -> Result<String, ApiError> {
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
        .map_err(|error| ApiError::invalid_json(format!("the body is not valid JSON: {error}")))?;
    // Valid JSON is valid UTF-8.
    String::from_utf8(bytes.to_vec()).map_err(|error| ApiError::invalid_json(error.to_string()))
}

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = json_bytes(request, state.config.max_body_bytes, ContentType::Required).await?;
        parse_object(&bytes).map(Self)
    }
}

/// A request body of the inference protocol, as bytes: JSON, or JSON followed by binary
/// tensor data (Triton's binary tensor data extension, [`super::v2_binary`]), with the
/// value of the header that says where the JSON ends. Triton's client sends no content
/// type at all, so a missing one is accepted, and so is application/octet-stream (another
/// label for the binary framing); any other is not, nor a compressed body.
#[derive(Debug)]
pub struct ProtocolBody {
    pub bytes: Bytes,
    /// The `Inference-Header-Content-Length` header's value, when there is one.
    pub header_length: Option<HeaderValue>,
}

impl FromRequest<AppState> for ProtocolBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let header_length = request.headers().get(super::v2_binary::HEADER_LENGTH).cloned();
        let bytes = json_bytes(request, state.config.max_body_bytes, ContentType::Protocol).await?;
        Ok(Self { bytes, header_length })
    }
}

/// Parses a body that must be a JSON object into `T`, naming the offending field on a
/// shape error. (serde's derived structs would also accept an array of their fields.)
pub(super) fn parse_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|error| ApiError::invalid_json(format!("the body is not valid JSON: {error}")))?;
    if !value.is_object() {
        return Err(ApiError::invalid_json(format!("the body must be a JSON object, not {}", json_kind(&value))));
    }
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        shape_error(if path == "." { None } else { Some(path) }, &error.into_inner().to_string())
    })
}

/// What a JSON value is, in a message's words.
pub fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// serde's report of a body of the wrong shape, in the API's words: the code for the
/// condition, the field at fault, and a message without serde's vocabulary.
fn shape_error(path: Option<String>, serde_message: &str) -> ApiError {
    // serde's messages have a fixed form: "missing field `x`", "unknown field `x`, expected
    // one of ...", "invalid type: <found>, expected <wanted>", "invalid value: ...".
    let quoted = |text: &str| text.split('`').nth(1).map(str::to_owned);
    let field_name = |name: String| match &path {
        Some(parent) => format!("{parent}.{name}"),
        None => name,
    };
    if let Some(name) = serde_message.strip_prefix("missing field ").and_then(quoted) {
        let field = field_name(name);
        return ApiError::missing_field(field.clone(), format!("`{field}` is required"));
    }
    if let Some(name) = serde_message.strip_prefix("unknown field ").and_then(quoted) {
        // Here the path already ends at the unknown field (for a missing one, at its parent).
        let field = path.clone().unwrap_or(name);
        return ApiError::invalid_field(field.clone(), format!("`{field}` is not a field of this body"));
    }
    let field = path.unwrap_or_else(|| "body".to_owned());
    let message = match serde_message.strip_prefix("invalid type: ").and_then(|rest| rest.split_once(", expected ")) {
        Some((found, wanted)) => {
            let wanted = wanted.replace("a sequence", "an array").replace("a map", "an object");
            let found = found.replace("sequence", "an array").replace("map", "an object");
            format!("`{field}` must be {wanted}, not {found}")
        }
        None => format!("`{field}` is not valid here"),
    };
    ApiError::invalid_field(field, message)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ContentType {
    /// application/json only.
    Required,
    /// The inference protocol's: application/json, application/octet-stream or none, and
    /// no Content-Encoding but identity (compressed bodies are not supported).
    Protocol,
}

async fn json_bytes(request: Request, limit: usize, required: ContentType) -> Result<Bytes, ApiError> {
    let content_type =
        request.headers().get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).map(str::to_owned);
    let content_type = content_type.as_deref();
    let is_json = content_type
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    let is_octets = content_type
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/octet-stream"));
    let encoding =
        request.headers().get(header::CONTENT_ENCODING).map(|value| String::from_utf8_lossy(value.as_bytes()));
    let encoded = encoding.as_deref().filter(|coding| !coding.trim().eq_ignore_ascii_case("identity"));
    let refusal = match required {
        ContentType::Required if !is_json => {
            Some(format!("the body must be application/json, not {}", content_type.unwrap_or("unspecified")))
        }
        ContentType::Protocol if !(is_json || is_octets || content_type.is_none()) => Some(format!(
            "the body must be application/json (or application/octet-stream with binary tensor data), not {}",
            content_type.unwrap_or("unspecified")
        )),
        ContentType::Protocol => encoded.map(|coding| {
            format!("Content-Encoding {} is not supported; send the body uncompressed", super::error::echo(coding))
        }),
        ContentType::Required => None,
    };
    if let Some(message) = refusal {
        // Read the body anyway (within the limit), so that the connection stays usable
        // for the client's next request; a larger one is answered 413 instead below.
        let declared =
            request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        if declared.is_none_or(|length| length <= limit) {
            let _ = axum::body::to_bytes(request.into_body(), limit).await;
        }
        return Err(ApiError::new(ErrorCode::UnsupportedMediaType, message));
    }
    let too_large = || ApiError::new(ErrorCode::PayloadTooLarge, format!("the body exceeds {limit} bytes"));
    let declared = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(too_large());
    }
    axum::body::to_bytes(request.into_body(), limit).await.map_err(|_| too_large())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Batch {
        instances: Vec<serde_json::Value>,
    }

    fn refusal(body: &str) -> (ErrorCode, Option<String>, String) {
        let error = parse_object::<Batch>(body.as_bytes()).unwrap_err();
        (error.code, error.field, error.message)
    }

    #[test]
    fn json_text_passes_well_formed_json_through_as_it_came() {
        assert_eq!(json_text(b" {\"a\": [1, \"\\u00e9\"]} ").unwrap(), " {\"a\": [1, \"\\u00e9\"]} ");
        for refused in [&b""[..], b"{", b"{} {}", b"\"\xff\"", b"nan"] {
            assert_eq!(json_text(refused).unwrap_err().code, ErrorCode::InvalidJson, "{refused:?}");
        }
    }

    #[test]
    fn shape_errors_name_the_field_and_the_rule_in_the_apis_words() {
        assert_eq!(
            refusal("{}"),
            (ErrorCode::MissingField, Some("instances".into()), "`instances` is required".into())
        );
        assert_eq!(
            refusal(r#"{"instances": 5}"#),
            (ErrorCode::InvalidField, Some("instances".into()), "`instances` must be an array, not integer `5`".into())
        );
        assert_eq!(refusal(r#"{"instances": [], "x": 1}"#).0, ErrorCode::InvalidField);
        assert_eq!(refusal(r#"{"instances": [], "x": 1}"#).1.as_deref(), Some("x"));
        let (code, field, message) = refusal("[1, 2]");
        assert_eq!(
            (code, field, message.as_str()),
            (ErrorCode::InvalidJson, None, "the body must be a JSON object, not an array")
        );
    }
}
