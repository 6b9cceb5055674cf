//! The request id: a UUIDv7 (time-ordered; a prediction's id is its request's id) made
//! for every request, kept in a task-local so error bodies can carry it, recorded on the
//! request's tracing span so every log line inside has it, and returned in `x-request-id`.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;
use uuid::Uuid;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

tokio::task_local! {
    static REQUEST_ID: Uuid;
}

/// The id of the request being handled, if any.
pub fn current_request_id() -> Option<Uuid> {
    REQUEST_ID.try_with(|id| *id).ok()
}

/// The id of the request being handled (a fresh one outside a request).
pub fn request_id() -> Uuid {
    current_request_id().unwrap_or_else(Uuid::now_v7)
}

/// Outermost middleware: id, span, header.
pub async fn request_context(request: Request, next: Next) -> Response {
    let id = Uuid::now_v7();
    let span =
        tracing::info_span!("request", request_id = %id, method = %request.method(), path = %request.uri().path());
    let mut response = REQUEST_ID.scope(id, next.run(request)).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.in_scope(|| tracing::debug!(status, "response"));
    if let Ok(value) = HeaderValue::from_str(&id.to_string()) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}
