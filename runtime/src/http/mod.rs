//! The HTTP API (axum on hyper): Forecourt's own JSON API under /v1, the Open Inference
//! Protocol under /v2, health, metrics and the OpenAPI document.
//!
//! Handlers are thin: they extract and check the request, call the [`Pipeline`], and
//! shape the answer. Every error becomes a response in one place ([`error`]). This module
//! must not hold business logic: what a prediction is belongs to the pipeline.

mod admin;
mod config;
mod error;
mod extract;
mod openapi;
mod predict;
mod request_context;
mod v2;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use axum::Router;
use axum::routing::{get, post};

pub use config::ServerConfig;
pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use request_context::REQUEST_ID_HEADER;

use crate::model::OnnxRuntime;
use crate::pipeline::Pipeline;
use crate::telemetry::{Metrics, SystemMonitor};

/// Whether the appliance takes predictions: not while loading bundles or draining.
#[derive(Debug)]
pub struct Readiness(AtomicU8);

impl Default for Readiness {
    fn default() -> Self {
        Self(AtomicU8::new(STARTING))
    }
}

const STARTING: u8 = 0;
const READY: u8 = 1;
const DRAINING: u8 = 2;

impl Readiness {
    pub fn set_ready(&self) {
        self.0.store(READY, Ordering::SeqCst);
    }

    pub fn set_draining(&self) {
        self.0.store(DRAINING, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst) == READY
    }

    pub fn status(&self) -> &'static str {
        match self.0.load(Ordering::SeqCst) {
            READY => "ready",
            DRAINING => "draining",
            _ => "starting",
        }
    }
}

/// What every handler can reach. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    pub pipeline: Arc<Pipeline>,
    pub readiness: Arc<Readiness>,
    pub metrics: Metrics,
    pub system: Arc<SystemMonitor>,
    pub onnx: OnnxRuntime,
    pub config: Arc<ServerConfig>,
    /// The fleet link, once it started (never when no broker is configured).
    pub fleet: Arc<std::sync::OnceLock<crate::fleet::FleetHealth>>,
}

fn ensure_ready(state: &AppState) -> Result<(), ApiError> {
    if state.readiness.is_ready() { Ok(()) } else { Err(ApiError::not_ready()) }
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/predict/{bundle}", post(predict::predict))
        .route("/predict/{bundle}/batch", post(predict::predict_batch))
        .route("/bundles", get(admin::bundles))
        .route("/predictions/{id}", get(admin::prediction))
        .route("/audit", get(admin::audit))
        .route("/audit/verify", get(admin::audit_verify));
    let v2 = Router::new()
        .route("/health/live", get(v2::live))
        .route("/health/ready", get(v2::ready))
        .route("/models/{model}", get(v2::model_metadata))
        .route("/models/{model}/ready", get(v2::model_ready))
        .route("/models/{model}/infer", post(v2::infer))
        .route("/models/{model}/versions/{version}", get(v2::model_version_metadata))
        .route("/models/{model}/versions/{version}/ready", get(v2::model_version_ready))
        .route("/models/{model}/versions/{version}/infer", post(v2::infer_version));
    Router::new()
        .route("/health", get(admin::health))
        .route("/health/detailed", get(admin::health_detailed))
        .route("/metrics", get(admin::metrics))
        .route("/openapi.json", get(openapi::document))
        .route("/v2", get(v2::server_metadata))
        .nest("/v1", v1)
        .nest("/v2", v2)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        // Outermost, so that every response, errors included, carries the request id and
        // every log line of the request is inside its span. Body limits and JSON checks
        // are done by the extractors, which produce our error bodies.
        .layer(axum::middleware::from_fn(request_context::request_context))
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route {}", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets in-flight requests
/// finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}
