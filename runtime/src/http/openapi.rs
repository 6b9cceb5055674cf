//! `/openapi.json`, derived from the handlers' annotations so it cannot drift from them.

use axum::Json;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "Forecourt", description = "Edge inference appliance: predictions through a sandboxed WebAssembly plugin and an ONNX model. The Open Inference Protocol v2 is also served under /v2 (see the KServe specification)."),
    paths(
        super::predict::predict,
        super::predict::predict_batch,
        super::admin::bundles,
        super::admin::prediction,
        super::admin::audit,
        super::admin::audit_verify,
        super::admin::health,
        super::admin::health_detailed,
        super::admin::metrics,
    ),
    tags(
        (name = "predictions", description = "Predictions and their stored records"),
        (name = "bundles", description = "Loaded model bundles"),
        (name = "audit", description = "The tamper-evident audit trail"),
        (name = "operations", description = "Health and metrics"),
    )
)]
pub struct ApiDoc;

pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
