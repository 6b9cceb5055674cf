//! The operations routes: readiness (`/health`), the detailed report (`/health/detailed`) and
//! the Prometheus text (`/metrics`). They read the state of the other parts and change nothing.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;

use super::AppState;
use super::error::ApiError;
use crate::store::StoreStats;
use crate::telemetry::SystemFigures;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ready`, `starting` or `draining`.
    pub status: &'static str,
    pub ready: bool,
}

fn health_of(state: &AppState) -> Health {
    let ready = state.readiness.is_ready();
    Health { status: state.readiness.status(), ready }
}

/// Readiness: 200 when serving, 503 while loading or draining.
#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200, description = "Serving", body = Health), (status = 503, description = "Starting or draining", body = Health)))]
pub async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let health = health_of(&state);
    let status = if health.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(health))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DetailedHealth {
    pub status: &'static str,
    pub ready: bool,
    pub version: &'static str,
    pub uptime_seconds: f64,
    pub store: StoreHealth,
    pub onnxruntime: OnnxRuntimeHealth,
    pub bundles: Vec<BundleHealth>,
    /// Present when MQTT is configured.
    #[schema(value_type = Option<Object>)]
    pub mqtt: Option<serde_json::Value>,
    pub inference_queue: QueueHealth,
    #[schema(value_type = Object)]
    pub system: SystemFigures,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StoreHealth {
    pub ok: bool,
    #[schema(value_type = Object)]
    pub stats: StoreStats,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OnnxRuntimeHealth {
    pub ok: bool,
    pub library: String,
    pub build_info: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BundleHealth {
    pub name: String,
    pub active_version: String,
    pub versions: Vec<String>,
    pub ok: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QueueHealth {
    pub depth: usize,
    pub capacity: usize,
    pub workers: usize,
}

/// Every component's state with system figures.
#[utoipa::path(get, path = "/health/detailed", tag = "operations", responses((status = 200, description = "Serving", body = DetailedHealth), (status = 503, description = "Starting or draining", body = DetailedHealth), (status = 500, description = "The report could not be made", body = super::error::ErrorBody)))]
pub async fn health_detailed(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    // The store's size on disk and the system's figures are file-system reads: off the
    // async threads.
    let report = tokio::task::spawn_blocking(move || detailed_health(&state))
        .await
        .map_err(|_| ApiError::internal("the health report failed"))?;
    let status = if report.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    Ok((status, Json(report)))
}

fn detailed_health(state: &AppState) -> DetailedHealth {
    let health = health_of(state);
    let store = state.pipeline.store();
    DetailedHealth {
        status: health.status,
        ready: health.ready,
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: state.metrics.uptime_seconds(),
        store: StoreHealth { ok: true, stats: store.stats() },
        onnxruntime: OnnxRuntimeHealth {
            ok: true,
            library: state.onnx.library().display().to_string(),
            build_info: state.onnx.build_info().to_owned(),
        },
        bundles: state
            .pipeline
            .registry()
            .summaries()
            .into_iter()
            .map(|summary| BundleHealth {
                name: summary.name,
                active_version: summary.active_version,
                versions: summary.versions,
                ok: true,
            })
            .collect(),
        mqtt: state.fleet.get().map(crate::fleet::FleetHealth::snapshot),
        inference_queue: QueueHealth {
            depth: state.pipeline.queued(),
            capacity: state.config.queue_capacity,
            workers: state.config.workers,
        },
        system: state.system.figures(),
    }
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render())
}
