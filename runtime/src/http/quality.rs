//! `POST /v1/predictions/{id}/outcome` and `GET /v1/bundles/{name}/quality`: the API of
//! [`crate::quality`]. What an outcome is and how accuracy is counted belong there.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;

use super::auth::Caller;
use super::error::{ApiError, echo};
use super::extract::JsonBody;
use super::records::{may_read, prediction_id};
use super::{AppState, ensure_ready};
use crate::quality::{BundleDrift, BundleQuality, QualityError, StoredOutcome};

/// What really happened to a prediction.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutcomeRequest {
    /// The true value of the bundle's `[outcome]` field: a number within its range for a
    /// regression (car-price: the price the car sold for, in USD), one of its classes for a
    /// classifier (iris: the species).
    #[schema(schema_with = crate::quality::number_or_string)]
    pub actual: serde_json::Value,
}

/// Records the outcome of a prediction, once.
#[utoipa::path(
    post, path = "/v1/predictions/{id}/outcome", tag = "quality",
    params(("id" = uuid::Uuid, Path, description = "The prediction id")),
    request_body = OutcomeRequest,
    responses(
        (status = 201, body = StoredOutcome, description = "Recorded: stored, audited and counted into the live accuracy"),
        (status = 400, description = "Malformed JSON", body = super::error::ErrorBody),
        (status = 404, description = "No such prediction (or another token's)", body = super::error::ErrorBody),
        (status = 409, description = "An outcome was recorded already (`conflict`; outcomes are never replaced), or the bundle takes none", body = super::error::ErrorBody),
        (status = 413, description = "Body too large", body = super::error::ErrorBody),
        (status = 415, description = "Not application/json", body = super::error::ErrorBody),
        (status = 422, description = "`actual` breaks the bundle's rule, or `id` is not a prediction id (`invalid_field`)", body = super::error::ErrorBody),
        (status = 500, description = "The outcome could not be stored", body = super::error::ErrorBody),
        (status = 503, description = "Starting or draining", body = super::error::ErrorBody)
    )
)]
pub async fn record_outcome(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Extension(caller): Extension<Caller>,
    JsonBody(request): JsonBody<OutcomeRequest>,
) -> Result<(StatusCode, Json<StoredOutcome>), ApiError> {
    ensure_ready(&state)?;
    let id = prediction_id(&id)?;
    let token_id = caller.token_id().map(|token| token.as_str().to_owned());
    let stored = state.quality.record(id, request.actual, token_id, |record| may_read(&caller, record)).await?;
    Ok((StatusCode::CREATED, Json(stored)))
}

/// Live accuracy of each loaded version, from the outcomes recorded, beside training's figures.
#[utoipa::path(
    get, path = "/v1/bundles/{name}/quality", tag = "quality",
    params(("name" = String, Path, description = "Bundle name, e.g. car-price")),
    responses(
        (status = 200, body = BundleQuality, description = "Each loaded version's live accuracy beside training's figures"),
        (status = 404, description = "No bundle of that name (`unknown_bundle`)", body = super::error::ErrorBody)
    )
)]
pub async fn bundle_quality(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<BundleQuality>, ApiError> {
    state.quality.report(&name).map(Json).map_err(|error| named(error, &name))
}

/// Drift of each loaded version: the features it fed its model lately against its training
/// profile, per feature PSI and status.
#[utoipa::path(
    get, path = "/v1/bundles/{name}/drift", tag = "quality",
    params(("name" = String, Path, description = "Bundle name, e.g. car-price")),
    responses(
        (status = 200, body = BundleDrift, description = "Each loaded version's drift against its training profile"),
        (status = 404, description = "No bundle of that name (`unknown_bundle`)", body = super::error::ErrorBody)
    )
)]
pub async fn bundle_drift(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<BundleDrift>, ApiError> {
    state.quality.drift(&name).map(Json).map_err(|error| named(error, &name))
}

/// An unknown bundle's name is echoed bounded, never as given.
fn named(error: QualityError, name: &str) -> ApiError {
    match error {
        QualityError::UnknownBundle { .. } => ApiError::new(
            crate::error_code::ErrorCode::UnknownBundle,
            format!("there is no bundle named {}", echo(name)),
        ),
        other => other.into(),
    }
}
