//! `GET /v1/overview`: what the appliance is doing now, in one read, for the dashboard
//! (which polls it) and any other client that wants the same: recent traffic, the newest
//! predictions, the bundles with their canaries, the deployments from the audit trail,
//! and the store. Every figure is one the appliance measures; none is made up for show.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use serde::Serialize;

use super::AppState;
use super::error::{ApiError, echo};
use super::records::{internal, query_parameters};
use crate::bundle::CanarySummary;
use crate::store::{AuditKind, AuditRecord, PredictionRecord, StoreStats};
use crate::telemetry::TrafficSnapshot;

/// The newest predictions shown.
const RECENT_PREDICTIONS: usize = 10;
/// Deployments are looked for among this many of the newest audit events.
const AUDIT_LOOKBACK: usize = 500;
/// The deployment events shown.
const DEPLOYMENTS: usize = 20;
const STEP_DEFAULT: u64 = 5;
const STEP_MAX: u64 = 60;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Overview {
    /// RFC 3339 UTC, when this was read.
    pub time: String,
    /// `ready`, `starting` or `draining`.
    pub status: &'static str,
    pub version: &'static str,
    pub uptime_seconds: f64,
    /// The last five minutes of requests that reached a bundle.
    pub traffic: TrafficSnapshot,
    /// Newest first.
    pub recent_predictions: Vec<RecentPrediction>,
    pub bundles: Vec<BundleState>,
    /// Bundle loads, activations, rejections, rollbacks and fleet deployments among the
    /// newest 500 audit events, newest first.
    #[schema(value_type = Vec<Object>)]
    pub deployments: Vec<AuditRecord>,
    #[schema(value_type = Object)]
    pub store: StoreStats,
}

/// A stored prediction without its input (the input may be a customer's; see
/// `/v1/predictions/{id}` for the whole record).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecentPrediction {
    pub id: String,
    pub time: String,
    pub bundle: String,
    pub version: String,
    pub latency_ms: f64,
    #[schema(value_type = Object)]
    pub outputs: serde_json::Value,
}

impl From<PredictionRecord> for RecentPrediction {
    fn from(record: PredictionRecord) -> Self {
        Self {
            id: record.id.to_string(),
            time: record.time,
            bundle: record.bundle,
            version: record.version,
            latency_ms: record.latency_ms,
            outputs: record.outputs,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BundleState {
    pub name: String,
    pub active_version: String,
    pub versions: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub canary: Option<CanarySummary>,
    /// The active version's outputs, in the plugin's order (the first is its answer).
    pub outputs: Vec<String>,
}

/// The query: `step`, the seconds each traffic point covers.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OverviewQuery {
    /// Seconds per traffic point, 1 to 60 (default 5); the window is five minutes.
    #[param(minimum = 1, maximum = 60)]
    pub step: Option<u64>,
}

impl OverviewQuery {
    fn parse(parameters: HashMap<String, String>) -> Result<Self, ApiError> {
        let mut step = None;
        for (name, value) in parameters {
            if name != "step" {
                let message = format!("{} is not a parameter of /v1/overview (step)", echo(&name));
                return Err(ApiError::invalid_field("query", message));
            }
            let parsed = value.parse().ok().filter(|step| (1..=STEP_MAX).contains(step));
            step = Some(parsed.ok_or_else(|| {
                ApiError::invalid_field(
                    "step",
                    format!("`step` must be a whole number of seconds from 1 to {STEP_MAX}"),
                )
            })?);
        }
        Ok(Self { step })
    }
}

/// The appliance now: traffic, newest predictions, bundles, deployments and the store.
#[utoipa::path(get, path = "/v1/overview", tag = "operations", params(OverviewQuery), responses((status = 200, description = "The appliance now", body = Overview), (status = 422, description = "A parameter breaks its rule (`field` names it)", body = super::error::ErrorBody), (status = 500, description = "The store could not be read", body = super::error::ErrorBody)))]
pub async fn overview(
    State(state): State<AppState>,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Overview>, ApiError> {
    let query = OverviewQuery::parse(query_parameters(query)?)?;
    // Store reads and the database's size on disk are file-system work: off the async threads.
    tokio::task::spawn_blocking(move || read(&state, query.step.unwrap_or(STEP_DEFAULT)))
        .await
        .map_err(|_| ApiError::internal("the overview failed"))?
        .map(Json)
}

fn read(state: &AppState, step: u64) -> Result<Overview, ApiError> {
    let pipeline = &state.pipeline;
    let store = pipeline.store();
    let recent_predictions =
        store.latest_predictions(RECENT_PREDICTIONS).map_err(internal)?.into_iter().map(Into::into).collect();
    let mut deployments: Vec<AuditRecord> = store
        .latest_audit_records(AUDIT_LOOKBACK)
        .map_err(internal)?
        .into_iter()
        .filter(|record| is_deployment(record.kind))
        .collect();
    deployments.reverse();
    deployments.truncate(DEPLOYMENTS);
    let bundles = pipeline
        .registry()
        .summaries()
        .into_iter()
        .map(|summary| BundleState {
            name: summary.name,
            active_version: summary.active_version,
            versions: summary.versions,
            canary: summary.canary,
            outputs: summary.outputs.into_iter().map(|output| output.name).collect(),
        })
        .collect();
    Ok(Overview {
        time: crate::store::rfc3339_millis(crate::store::now_unix_ms()),
        status: state.readiness.status(),
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: state.metrics.uptime_seconds(),
        traffic: pipeline.recent_traffic().snapshot(step),
        recent_predictions,
        bundles,
        deployments,
        store: store.stats(),
    })
}

fn is_deployment(kind: AuditKind) -> bool {
    use AuditKind as K;
    matches!(
        kind,
        K::BundleLoaded
            | K::BundleActivated
            | K::BundleRejected
            | K::BundleRemoved
            | K::RolledBack
            | K::DeploymentStarted
            | K::DeploymentFinished
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<OverviewQuery, ApiError> {
        OverviewQuery::parse(pairs.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect())
    }

    #[test]
    fn the_step_is_a_whole_number_of_seconds_up_to_a_minute() {
        assert_eq!(parse(&[]).unwrap().step, None);
        assert_eq!(parse(&[("step", "1")]).unwrap().step, Some(1));
        assert_eq!(parse(&[("step", "60")]).unwrap().step, Some(60));
        for bad in ["0", "61", "-1", "2.5", "x"] {
            let error = parse(&[("step", bad)]).unwrap_err();
            assert_eq!(error.field.as_deref(), Some("step"), "{bad}");
        }
        assert_eq!(parse(&[("limit", "3")]).unwrap_err().field.as_deref(), Some("query"));
    }

    #[test]
    fn deployments_are_the_bundle_and_fleet_events() {
        assert!(is_deployment(AuditKind::RolledBack));
        assert!(is_deployment(AuditKind::DeploymentFinished));
        assert!(!is_deployment(AuditKind::AccessDenied));
        assert!(!is_deployment(AuditKind::Started));
    }
}
