//! The HTTP API (axum on hyper): Forecourt's own JSON API under /v1, the Open Inference
//! Protocol under /v2, health, metrics and the OpenAPI document.
//!
//! Handlers are thin: they extract and check the request, call the [`Pipeline`], and
//! shape the answer. Every error becomes a response in one place ([`error`]). This module
//! must not hold business logic: what a prediction is belongs to the pipeline.

mod auth;
mod bundle_schema;
mod bundles;
mod config;
mod docs;
mod error;
pub(crate) mod extract;
mod health;
mod limits;
mod openapi;
mod overview;
mod pages;
mod predict;
mod quality;
mod records;
mod request_context;
mod server;
mod static_files;
#[cfg(test)]
mod tests;
mod tls;
pub(crate) mod v2;
mod v2_binary;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{MethodRouter, get, post};
use tower::{Layer, ServiceBuilder};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::normalize_path::{NormalizePath, NormalizePathLayer};

pub use auth::{AuthLayerState, Caller, DenialAudit};
pub use config::{CorsOrigin, ServerConfig};
pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use request_context::{CLIENT_REQUEST_ID_HEADER, REQUEST_ID_HEADER};
pub use server::{ConnectionSettings, serve};
pub use tls::{CertificateReloader, TlsError, TlsFiles};

use crate::auth::Permission;

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

/// What every handler can reach. axum clones a route's state for each request it routes,
/// so the services sit behind one shared
/// allocation: a clone is a reference count, not a copy of every handle and path they hold.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The services behind [`AppState`].
#[derive(Debug)]
pub struct Services {
    pub pipeline: Arc<Pipeline>,
    /// Outcomes and live accuracy.
    pub quality: crate::quality::Quality,
    pub readiness: Arc<Readiness>,
    pub metrics: Metrics,
    pub system: Arc<SystemMonitor>,
    pub onnx: OnnxRuntime,
    pub config: Arc<ServerConfig>,
    /// The fleet link, once it started (never when no broker is configured).
    pub fleet: Arc<std::sync::OnceLock<crate::fleet::FleetHealth>>,
    /// One audit verification at a time: each reads up to a page of the chain on the
    /// blocking pool, and holds its permit until that read ends, even if its client left.
    pub audit_verification: Arc<tokio::sync::Semaphore>,
}

fn ensure_ready(state: &AppState) -> Result<(), ApiError> {
    if state.readiness.is_ready() { Ok(()) } else { Err(ApiError::not_ready()) }
}

/// Every route and the permission it needs: the one table both the router and the
/// OpenAPI document's security requirements are built from.
fn routes() -> Vec<(&'static str, Permission, MethodRouter<AppState>)> {
    use Permission as P;
    let mut routes = vec![
        ("/health", P::Open, get(health::health)),
        ("/health/detailed", P::Inspect, get(health::health_detailed)),
        ("/metrics", P::Metrics, get(health::metrics)),
        ("/openapi.json", P::Describe, get(openapi::document)),
        // Swagger UI's own files, nothing of the appliance's: a browser opening the page sends
        // no token, so the page asks for one and sends it with the requests it makes.
        ("/docs", P::Open, get(docs::page)),
        // The kiosk page and the dashboard: open like /docs, since they hold no data; the
        // API routes they read need the user's token.
        ("/", P::Open, get(static_files::page(pages::KIOSK))),
        ("/dashboard", P::Open, get(static_files::page(pages::DASHBOARD))),
        ("/v1/overview", P::Inspect, get(overview::overview)),
        ("/v1/predict/{bundle}", P::Predict, post(predict::predict)),
        ("/v1/predict/{bundle}/batch", P::Predict, post(predict::predict_batch)),
        ("/v1/bundles", P::Describe, get(bundles::bundles)),
        ("/v1/bundles/{name}", P::Describe, get(bundles::bundle)),
        ("/v1/predictions/{id}", P::ReadOwnPrediction, get(records::prediction)),
        ("/v1/predictions/{id}/outcome", P::RecordOutcome, post(quality::record_outcome)),
        ("/v1/bundles/{name}/quality", P::Inspect, get(quality::bundle_quality)),
        ("/v1/bundles/{name}/drift", P::Inspect, get(quality::bundle_drift)),
        ("/v1/audit", P::Inspect, get(records::audit)),
        ("/v1/audit/verify", P::Inspect, get(records::audit_verify)),
        ("/v2", P::Describe, get(v2::server_metadata)),
        ("/v2/health/live", P::Open, get(v2::live)),
        ("/v2/health/ready", P::Open, get(v2::ready)),
        ("/v2/models/{model}", P::Describe, get(v2::model_metadata)),
        ("/v2/models/{model}/ready", P::Describe, get(v2::model_ready)),
        ("/v2/models/{model}/infer", P::Predict, post(v2::infer)),
        ("/v2/models/{model}/versions/{version}", P::Describe, get(v2::model_version_metadata)),
        ("/v2/models/{model}/versions/{version}/ready", P::Describe, get(v2::model_version_ready)),
        ("/v2/models/{model}/versions/{version}/infer", P::Predict, post(v2::infer_version)),
    ];
    for (path, content_type, bytes) in docs::ASSETS.into_iter().chain(pages::ASSETS) {
        routes.push((path, P::Open, get(static_files::file(content_type, bytes))));
    }
    routes
}

/// The permission a route (as written in [`routes`]) needs.
pub(crate) fn permission_of(path: &str) -> Option<Permission> {
    routes().into_iter().find(|(route, ..)| *route == path).map(|(_, permission, _)| permission)
}

/// The whole API with its middleware. Trailing slashes are trimmed before routing
/// (`/v1/bundles/` is `/v1/bundles`), so no route answers 404 for one.
pub fn router(state: AppState, auth: AuthLayerState) -> NormalizePath<Router> {
    let server = Arc::clone(&state.config);
    let router = guarded(routes(), &auth.audit).with_state(state);
    with_stack(router, &server, auth)
}

/// Each route behind its permission check, and the API's answers for a path no route has
/// and a method the route does not take.
fn guarded<S: Clone + Send + Sync + 'static>(
    routes: Vec<(&'static str, Permission, MethodRouter<S>)>,
    audit: &DenialAudit,
) -> Router<S> {
    let mut router = Router::new();
    for (path, permission, method_router) in routes {
        let guard = auth::RouteGuard { permission, audit: audit.clone() };
        router = router.route(path, method_router.route_layer(from_fn_with_state(guard, auth::authorize)));
    }
    router.fallback(not_found).method_not_allowed_fallback(method_not_allowed)
}

/// The middleware around every route.
fn with_stack(router: Router, server: &ServerConfig, auth: AuthLayerState) -> NormalizePath<Router> {
    // The stack around every route, outermost first, and why each layer sits where it does:
    // 1. request context: the request id and span, so every response, refusals included,
    //    carries `x-request-id`, every log line of the request is inside its span, and
    //    the access log sees every request;
    // 1b. CORS (only with `server.cors_allowed_origins`): it answers preflights itself,
    //    before authentication (a browser sends no token on a preflight), and adds its
    //    headers to every answer, refusals included, so a web page can read them;
    // 2. authenticate: who is calling, before anything spends work on the request. It never
    //    refuses by itself: open routes take any caller, and each route authorizes (its
    //    `route_layer`), since only the route knows what it needs;
    // 3. per-token rate limit: a token over its rate is refused before it takes a slot;
    // 4. load shedding over a concurrency limit: beyond `server.max_concurrent_requests`
    //    a request is refused at once (429, Retry-After) instead of queueing without bound;
    //    HandleError turns the refusal (and the timeout's) into the API's error body;
    // 5. timeout: inside the limit, so a request that runs out of time gives its slot back.
    // Body size and JSON checks are the extractors' (they produce the API's error bodies).
    let stack = ServiceBuilder::new()
        .layer(from_fn(request_context::request_context))
        .option_layer(cors(&server.cors_allowed_origins))
        .layer(from_fn_with_state(auth, auth::authenticate))
        .layer(from_fn(auth::rate_limit))
        .layer(HandleErrorLayer::new(limits::limit_error))
        .load_shed()
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(server.max_concurrent_requests))
        .timeout(std::time::Duration::from_secs(server.request_timeout_secs));
    NormalizePathLayer::trim_trailing_slash().layer(router.layer(stack))
}

/// The CORS layer for `origins`, none when the list is empty. Browsers may send the token
/// (`Authorization`) and read the ids and Retry-After; credentials (cookies) are not used.
fn cors(origins: &[CorsOrigin]) -> Option<CorsLayer> {
    use axum::http::{HeaderName, HeaderValue, Method, header};
    if origins.is_empty() {
        return None;
    }
    let allowed = if origins.iter().any(|origin| origin.as_str() == CorsOrigin::ANY) {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|origin| HeaderValue::from_str(origin.as_str()).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allowed)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, HeaderName::from_static(REQUEST_ID_HEADER)])
            .expose_headers([
                HeaderName::from_static(REQUEST_ID_HEADER),
                HeaderName::from_static(CLIENT_REQUEST_ID_HEADER),
                header::RETRY_AFTER,
            ])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route {}", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(crate::error_code::ErrorCode::MethodNotAllowed, format!("{method} is not allowed on {}", uri.path()))
}
