//! The one vocabulary of error codes the API answers with: every refusal, on every route,
//! names one of these. A leaf: the pipeline says which code a failure is, the HTTP layer
//! maps each code to its status in one table (`http::error`), the fleet and the metrics
//! label with the same words. It must not depend on any other module.

use serde::Serialize;

/// A stable snake_case word naming why a request was not answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The body is not JSON, or not the JSON object the route takes.
    InvalidJson,
    /// A field (of the body, path or query) breaks its rule.
    InvalidField,
    /// A required field is absent.
    MissingField,
    /// No valid bearer token.
    Unauthorized,
    /// The token's role may not use the route.
    Forbidden,
    /// No bundle (or bundle version) of that name.
    UnknownBundle,
    /// No such route, prediction or record.
    NotFound,
    /// The request conflicts with what is stored: an outcome recorded already, or one for a
    /// prediction whose bundle takes none.
    Conflict,
    /// The route exists, not with this method.
    MethodNotAllowed,
    /// The body exceeds `server.max_body_bytes`.
    PayloadTooLarge,
    /// The body is not `application/json`.
    UnsupportedMediaType,
    /// A queue is full or `server.max_concurrent_requests` are in flight.
    Overloaded,
    /// The token's request rate is used up.
    RateLimited,
    /// The plugin trapped or ran out of CPU or memory.
    PluginFailed,
    /// The model failed to run.
    ModelFailed,
    /// Anything else that went wrong inside the appliance.
    InternalError,
    /// Loading bundles or draining.
    NotReady,
    /// Not answered within `server.request_timeout_secs`.
    Timeout,
    /// `?explain=true` on a bundle whose model has no trees to explain with.
    ExplanationsUnavailable,
}

impl ErrorCode {
    pub const ALL: [Self; 19] = [
        Self::InvalidJson,
        Self::InvalidField,
        Self::MissingField,
        Self::Unauthorized,
        Self::Forbidden,
        Self::UnknownBundle,
        Self::NotFound,
        Self::Conflict,
        Self::MethodNotAllowed,
        Self::PayloadTooLarge,
        Self::UnsupportedMediaType,
        Self::Overloaded,
        Self::RateLimited,
        Self::PluginFailed,
        Self::ModelFailed,
        Self::InternalError,
        Self::NotReady,
        Self::Timeout,
        Self::ExplanationsUnavailable,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::InvalidField => "invalid_field",
            Self::MissingField => "missing_field",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::UnknownBundle => "unknown_bundle",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::Overloaded => "overloaded",
            Self::RateLimited => "rate_limited",
            Self::PluginFailed => "plugin_failed",
            Self::ModelFailed => "model_failed",
            Self::InternalError => "internal_error",
            Self::NotReady => "not_ready",
            Self::Timeout => "timeout",
            Self::ExplanationsUnavailable => "explanations_unavailable",
        }
    }

    /// Whether the bundle version (or the appliance) is to blame, rather than the client
    /// or the load: what a canary's error rate counts.
    pub const fn is_server_fault(self) -> bool {
        matches!(self, Self::PluginFailed | Self::ModelFailed | Self::InternalError)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_word_is_the_serde_name_and_all_lists_each_once() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
            assert!(seen.insert(code.as_str()), "{code} twice");
        }
    }
}
