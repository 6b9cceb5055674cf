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
        super::v2::server_metadata,
        super::v2::live,
        super::v2::ready,
        super::v2::model_metadata,
        super::v2::model_version_metadata,
        super::v2::model_ready,
        super::v2::model_version_ready,
        super::v2::infer,
        super::v2::infer_version,
    ),
    tags(
        (name = "predictions", description = "Predictions and their stored records"),
        (name = "bundles", description = "Loaded model bundles"),
        (name = "audit", description = "The tamper-evident audit trail"),
        (name = "operations", description = "Health and metrics"),
        (name = "inference protocol v2", description = "The Open Inference Protocol (KServe v2): raw tensors to a bundle's model, no plugin; errors are {\"error\": \"...\"}"),
    )
)]
pub struct ApiDoc;

pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
