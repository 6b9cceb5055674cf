//! `/v1/bundles`: what is loaded, by name (active version, versions, inputs and outputs).

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;

use super::AppState;
use super::error::{ApiError, echo};
use crate::bundle::BundleSummary;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BundleList {
    #[schema(value_type = Vec<Object>)]
    pub bundles: Vec<BundleSummary>,
}

/// Every bundle: active version, versions loaded, input fields and outputs.
#[utoipa::path(get, path = "/v1/bundles", tag = "bundles", responses((status = 200, description = "The loaded bundles, by name", body = BundleList)))]
pub async fn bundles(State(state): State<AppState>) -> Json<BundleList> {
    Json(BundleList { bundles: state.pipeline.registry().summaries() })
}

/// One bundle: its active version, versions loaded, input fields and outputs.
#[utoipa::path(
    get, path = "/v1/bundles/{name}", tag = "bundles",
    params(("name" = String, Path, description = "Bundle name, e.g. car-price")),
    responses(
        (status = 200, body = Object, description = "As one entry of /v1/bundles"),
        (status = 404, description = "No bundle of that name (`unknown_bundle`)", body = super::error::ErrorBody)
    )
)]
pub async fn bundle(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<BundleSummary>, ApiError> {
    // A name is looked up, never echoed unbounded.
    state.pipeline.registry().summary(&name).map(Json).ok_or_else(|| {
        ApiError::new(crate::error_code::ErrorCode::UnknownBundle, format!("there is no bundle named {}", echo(&name)))
    })
}
