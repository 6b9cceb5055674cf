//! The request context, outermost of the stack: the request id, the request's tracing
//! span, and the access log.
//!
//! The request id is a UUIDv7 made here for every request (time-ordered; a prediction's id
//! is its request's id, so it must be unique in the store and cannot be the client's). It
//! is kept in a task-local so error bodies can carry it, recorded on the span so every log
//! line of the request has it, and returned in `x-request-id`. A client's own
//! `x-request-id`, when valid, is kept beside it: on the span (`client_request_id`), in the
//! access log, in the prediction's record ([`ClientRequestId`]), and returned in
//! `x-client-request-id`.
//!
//! One access-log line per request at info, target `forecourt::access`: route, status,
//! latency, and the bundle and version that answered (what the handler put in [`Served`]).
//! Never the inputs.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;
use uuid::Uuid;

pub const REQUEST_ID_HEADER: &str = "x-request-id";
pub const CLIENT_REQUEST_ID_HEADER: &str = "x-client-request-id";

/// The longest client request id kept; longer ones are ignored, not cut (a cut id would
/// no longer match the client's own logs).
const CLIENT_ID_MAX_LEN: usize = 128;

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

/// A client's valid `x-request-id`: a request extension for the handlers, which keep it in
/// the prediction's record.
#[derive(Debug, Clone)]
pub struct ClientRequestId(pub std::sync::Arc<str>);

/// Which bundle version answered: a response extension the prediction handlers set, for
/// the access log.
#[derive(Debug, Clone)]
pub struct Served {
    pub bundle: String,
    pub version: String,
}

/// A client's `x-request-id` worth keeping: 1 to 128 visible ASCII characters, no spaces
/// (what log tooling and tracing headers use). Anything else is ignored.
fn client_request_id(request: &Request) -> Option<HeaderValue> {
    let value = request.headers().get(REQUEST_ID_HEADER)?;
    let bytes = value.as_bytes();
    let valid = !bytes.is_empty() && bytes.len() <= CLIENT_ID_MAX_LEN && bytes.iter().all(u8::is_ascii_graphic);
    valid.then(|| value.clone())
}

/// Outermost middleware: id, span, access log, headers.
pub async fn request_context(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = Uuid::now_v7();
    let client_id = client_request_id(&request);
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        client_request_id = tracing::field::Empty,
        method = %request.method(),
        path = %request.uri().path(),
    );
    if let Some(client_id) = client_id.as_ref().and_then(|value| value.to_str().ok()) {
        span.record("client_request_id", client_id);
        request.extensions_mut().insert(ClientRequestId(client_id.into()));
    }
    let route = request.extensions().get::<MatchedPath>().cloned();
    let mut response = REQUEST_ID.scope(id, next.run(request)).instrument(span.clone()).await;
    let served = response.extensions_mut().remove::<Served>();
    span.in_scope(|| {
        tracing::info!(
            target: "forecourt::access",
            route = route.as_ref().map_or("-", MatchedPath::as_str),
            status = response.status().as_u16(),
            bundle = served.as_ref().map(|served| served.bundle.as_str()),
            version = served.as_ref().map(|served| served.version.as_str()),
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request"
        )
    });
    if let Ok(value) = HeaderValue::from_str(&id.to_string()) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    if let Some(client_id) = client_id {
        response.headers_mut().insert(CLIENT_REQUEST_ID_HEADER, client_id);
    }
    response
}
