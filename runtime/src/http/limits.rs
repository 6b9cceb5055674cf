//! What the load-shedding, concurrency and timeout layers answer: tower reports an
//! overloaded or timed-out request as an error, and every error here becomes the API's
//! own body.

use axum::http::{HeaderValue, Uri, header};
use axum::response::Response;

use super::error::ApiError;
use crate::error_code::ErrorCode;
use crate::telemetry::names;

/// `HandleErrorLayer`'s handler for the limit layers below it, answering in the error
/// shape of the route's API.
pub async fn limit_error(uri: Uri, error: tower::BoxError) -> Response {
    let path = uri.path();
    if error.is::<tower::load_shed::error::Overloaded>() {
        metrics::counter!(names::HTTP_SHED).increment(1);
        let mut response = ApiError::new(
            ErrorCode::Overloaded,
            "the appliance is answering as many requests as it can; retry shortly",
        )
        .into_response_for(path);
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    }
    if error.is::<tower::timeout::error::Elapsed>() {
        metrics::counter!(names::HTTP_TIMEOUTS).increment(1);
        return ApiError::new(ErrorCode::Timeout, "the request took longer than server.request_timeout_secs")
            .into_response_for(path);
    }
    tracing::error!(%error, "unexpected error from a middleware layer");
    ApiError::internal("an internal error occurred").into_response_for(path)
}
