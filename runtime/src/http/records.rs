//! What the store holds, read back: stored predictions (`/v1/predictions/{id}`) and the audit
//! trail (`/v1/audit`, `/v1/audit/verify`), with the paging rules both follow.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use serde::Serialize;

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, echo};
use crate::auth::Permission;
use crate::quality::StoredOutcome;
use crate::store::{AuditRecord, AuditReport, PredictionRecord, VerifyRange};

/// A stored prediction.
#[utoipa::path(
    get, path = "/v1/predictions/{id}", tag = "predictions",
    params(("id" = uuid::Uuid, Path, description = "The prediction id")),
    responses(
        (status = 200, body = Object, description = "The stored record: time, bundle, version, digests, input, outputs, latency, and `outcome` once one was recorded"),
        (status = 404, description = "No such prediction (or another token's)", body = super::error::ErrorBody),
        (status = 422, description = "Not a prediction id (`invalid_field` on id)", body = super::error::ErrorBody),
        (status = 500, description = "The store could not be read", body = super::error::ErrorBody)
    )
)]
pub async fn prediction(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<StoredPrediction>, ApiError> {
    let id = prediction_id(&id)?;
    let record = state.pipeline.store().prediction(id).map_err(internal)?;
    let record = record
        .filter(|record| may_read(&caller, record))
        .ok_or_else(|| ApiError::not_found(format!("no prediction {id}")))?;
    let outcome = state.quality.outcome(id)?;
    Ok(Json(StoredPrediction { record, outcome }))
}

/// A stored prediction and, once one was recorded, its outcome.
#[derive(Debug, Serialize)]
pub struct StoredPrediction {
    #[serde(flatten)]
    record: PredictionRecord,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<StoredOutcome>,
}

/// The `{id}` of a /v1/predictions path, checked before use and never echoed: a path can be
/// as long as a client likes.
pub(super) fn prediction_id(id: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(id).map_err(|_| {
        ApiError::invalid_field("id", "`id` must be a prediction id: the UUID of prediction_id or x-request-id")
    })
}

/// Whether `caller` may see `record`: a kiosk sees only what it asked for itself; to it,
/// another's prediction is as absent as one never made.
pub(super) fn may_read(caller: &Caller, record: &PredictionRecord) -> bool {
    match caller.principal() {
        Some(principal) if principal.may(Permission::ReadPredictions) => true,
        _ => caller.token_id().is_some_and(|token| record.token_id.as_deref() == Some(token.as_str())),
    }
}

#[derive(Debug, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only records after this sequence number.
    // The widest u64: without it the document would say int64's maximum, below what is taken.
    #[param(maximum = 18446744073709551615_u64)]
    pub after: Option<u64>,
    /// At most this many records (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

impl AuditQuery {
    fn parse(parameters: HashMap<String, String>) -> Result<Self, ApiError> {
        let (after, limit) = parse_paging(parameters, "/v1/audit", AUDIT_PAGE_MAX)?;
        Ok(Self { after, limit })
    }
}

/// Reads `after` and `limit` (1 to `max`) from a query string, each checked with a message
/// of our own (a framework's rejection would name its own types); other names are refused.
fn parse_paging(
    parameters: HashMap<String, String>,
    route: &str,
    max: usize,
) -> Result<(Option<u64>, Option<usize>), ApiError> {
    let (mut after, mut limit) = (None, None);
    for (name, value) in parameters {
        match name.as_str() {
            "after" => {
                after = Some(value.parse().map_err(|_| {
                    ApiError::invalid_field("after", "`after` must be a record's sequence number (a whole number ≥ 0)")
                })?)
            }
            "limit" => {
                let parsed = value.parse().ok().filter(|limit| (1..=max).contains(limit));
                limit = Some(parsed.ok_or_else(|| {
                    ApiError::invalid_field("limit", format!("`limit` must be a whole number from 1 to {max}"))
                })?)
            }
            _ => {
                let message = format!("{} is not a parameter of {route} (after, limit)", echo(&name));
                return Err(ApiError::invalid_field("query", message));
            }
        }
    }
    Ok((after, limit))
}

pub(super) fn query_parameters(
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<HashMap<String, String>, ApiError> {
    let Query(parameters) = query.map_err(|_| {
        ApiError::invalid_field("query", "the query string is not valid (name=value pairs joined by &)")
    })?;
    Ok(parameters)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    #[schema(value_type = Vec<Object>)]
    pub records: Vec<AuditRecord>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<u64>,
}

const AUDIT_PAGE_MAX: usize = 1000;
// utoipa takes only a literal as `limit`'s documented maximum: keep the two equal.
const _: () = assert!(AUDIT_PAGE_MAX == 1000, "update `#[param(maximum)]` of AuditQuery::limit");

/// The audit trail, in order.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditQuery), responses((status = 200, description = "A page of audit records", body = AuditPage), (status = 422, description = "A parameter breaks its rule (`field` names it)", body = super::error::ErrorBody), (status = 500, description = "The store could not be read", body = super::error::ErrorBody)))]
pub async fn audit(
    State(state): State<AppState>,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AuditPage>, ApiError> {
    let query = AuditQuery::parse(query_parameters(query)?)?;
    let limit = query.limit.unwrap_or(100);
    let records = state.pipeline.store().audit_records(query.after, limit).map_err(internal)?;
    let next_after = (records.len() == limit).then(|| records.last().map(|record| record.seq)).flatten();
    Ok(Json(AuditPage { records, next_after }))
}

/// Recomputes the audit chain and reports any altered or removed record.
#[derive(Debug, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VerifyQuery {
    /// Verify the records after this sequence number, linked to it (the previous page's
    /// `next_after`).
    #[param(maximum = 18446744073709551615_u64)]
    pub after: Option<u64>,
    /// At most this many records (default 100000, at most 1000000).
    #[param(minimum = 1, maximum = 1000000)]
    pub limit: Option<usize>,
}

impl VerifyQuery {
    fn parse(parameters: HashMap<String, String>) -> Result<Self, ApiError> {
        let (after, limit) = parse_paging(parameters, "/v1/audit/verify", VERIFY_PAGE_MAX)?;
        Ok(Self { after, limit })
    }
}

const VERIFY_PAGE_DEFAULT: usize = 100_000;
const VERIFY_PAGE_MAX: usize = 1_000_000;
const _: () = assert!(VERIFY_PAGE_MAX == 1_000_000, "update `#[param(maximum)]` of VerifyQuery::limit");

/// Verifies the audit chain a page at a time: hashes, links (to the page before too),
/// gaps and, on the last page, the end against the head. The read runs on the blocking
/// pool, one verification at a time; a long chain is verified by following `next_after`.
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit", params(VerifyQuery), responses((status = 200, body = Object, description = "`ok`, the records read, the last one read (`head_seq`, `head_hash`), problems by seq (the first thousand; `problems_omitted` counts the rest), and `next_after` when the chain goes on"), (status = 422, description = "A parameter breaks its rule (`field` names it)", body = super::error::ErrorBody), (status = 500, description = "The store could not be read", body = super::error::ErrorBody)))]
pub async fn audit_verify(
    State(state): State<AppState>,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AuditReport>, ApiError> {
    let query = VerifyQuery::parse(query_parameters(query)?)?;
    let range = VerifyRange { after: query.after, limit: Some(query.limit.unwrap_or(VERIFY_PAGE_DEFAULT)) };
    // Waiting for the permit is bounded by the request timeout, like the rest of the request.
    let permit = Arc::clone(&state.audit_verification)
        .acquire_owned()
        .await
        .map_err(|_| ApiError::internal("the audit verification is shut down"))?;
    let store = state.pipeline.store().clone();
    let report = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        store.verify_audit_range(range)
    })
    .await
    .map_err(|_| ApiError::internal("the audit verification failed"))?;
    Ok(Json(report.map_err(internal)?))
}

pub(super) fn internal(error: crate::store::StoreError) -> ApiError {
    tracing::error!(%error, "store read failed");
    ApiError::internal(error.to_string())
}
