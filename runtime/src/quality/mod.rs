//! Model quality on the box: outcomes (what really happened to a prediction, told after the
//! fact by a kiosk or an operator) and the live accuracy they give each bundle version,
//! beside the figures its training measured.
//!
//! Owns the `outcomes` table (one outcome per prediction, under the prediction id), the audit
//! record of each outcome, the quality metrics, and feeding each loaded version's
//! [`VersionAccuracy`](crate::bundle::VersionAccuracy): on every outcome, and from the stored
//! outcomes at start-up, so that a restart keeps the figures. It knows nothing of HTTP: the
//! API maps [`QualityError`] to statuses in one place.
//!
//! An outcome is never replaced: a second one for the same prediction is refused
//! ([`QualityError::AlreadyRecorded`]), so the figures and the audit trail cannot be
//! rewritten after the fact.

mod config;
pub mod drift;
mod error;
mod outcome;

use std::sync::Arc;

use semver::Version;
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

pub use config::QualityConfig;
pub use drift::{DriftFigures, DriftStatus};
pub use error::QualityError;
pub use outcome::{StoredOutcome, number_or_string};

use crate::bundle::{AccuracyReport, Bundle, Figures, OutcomeSpec, Registry, TrainingFigures};
use crate::store::{AuditKind, PredictionRecord, Store, Table, now_unix_ms, rfc3339_millis};
use crate::telemetry::names;

/// The table outcomes are kept in.
const TABLE: &str = "outcomes";

/// Records outcomes and reports quality; clones share it.
#[derive(Clone)]
pub struct Quality {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Quality {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quality").field("outcomes", &self.inner.table.len()).finish()
    }
}

struct Inner {
    table: Table,
    store: Store,
    registry: Arc<Registry>,
    /// One outcome is checked and written at a time, so that two for the same prediction
    /// cannot both pass the "none yet" check. Outcomes are rare; this costs nothing.
    writing: tokio::sync::Mutex<()>,
    config: QualityConfig,
    /// The drift status last judged for each version, to notice a change.
    drift_status: std::sync::Mutex<std::collections::HashMap<(String, String), DriftStatus>>,
}

/// Whether a loaded version serves: as the active one, or as a canary.
#[derive(Debug, Clone, Copy)]
struct Role {
    active: bool,
    canary: bool,
}

/// A bundle's drift: each loaded version's window against its training profile.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BundleDrift {
    pub bundle: String,
    pub versions: Vec<VersionDrift>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct VersionDrift {
    pub version: String,
    pub active: bool,
    pub canary: bool,
    /// Absent when the bundle carries no training profile, or drift is off.
    pub drift: Option<DriftFigures>,
}

/// A bundle's quality: its outcome rule, and each loaded version's live and training figures.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BundleQuality {
    pub bundle: String,
    /// What an outcome is for the active version; absent when the bundle takes none.
    #[schema(value_type = Option<Object>)]
    pub outcome: Option<OutcomeSpec>,
    pub versions: Vec<VersionQuality>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct VersionQuality {
    pub version: String,
    pub active: bool,
    pub canary: bool,
    /// From the outcomes of this version's predictions; absent when the bundle takes none.
    pub live: Option<AccuracyReport>,
    /// Held-out figures from training (the bundle's metrics.json); absent without one.
    pub training: Option<TrainingFigures>,
}

impl Quality {
    /// Opens the outcomes table. Call [`count_stored`](Self::count_stored) once the bundles
    /// have loaded.
    pub fn open(store: &Store, registry: Arc<Registry>, config: &QualityConfig) -> Result<Self, QualityError> {
        let table = store.table(TABLE)?;
        Ok(Self {
            inner: Arc::new(Inner {
                table,
                store: store.clone(),
                registry,
                writing: tokio::sync::Mutex::new(()),
                config: config.clone(),
                drift_status: Default::default(),
            }),
        })
    }

    /// Counts every stored outcome of a loaded version into its accuracy, oldest first, and
    /// sets the quality gauges; returns how many counted. Blocking (it reads every stored
    /// outcome): call it at start-up, after the bundles loaded.
    pub fn count_stored(&self) -> Result<usize, QualityError> {
        let counted = self.replay()?;
        tracing::info!(outcomes = self.inner.table.len(), counted, "outcomes counted into the live accuracy");
        for summary in self.inner.registry.summaries() {
            for bundle in self.inner.registry.versions(&summary.name) {
                publish(&bundle);
            }
        }
        Ok(counted)
    }

    fn replay(&self) -> Result<usize, QualityError> {
        let mut stored: Vec<StoredOutcome> =
            self.inner.table.entries()?.iter().map(|(key, value)| decode(key, value)).collect::<Result<_, _>>()?;
        stored.sort_by(|a, b| a.recorded.cmp(&b.recorded));
        let mut counted = 0;
        for outcome in &stored {
            let Some(bundle) = self.loaded(&outcome.bundle, &outcome.version) else { continue };
            let Some(spec) = &bundle.manifest().outcome else { continue };
            if let Some(point) = outcome::point_of(spec, outcome) {
                bundle.accuracy().observe(point);
                counted += 1;
            }
        }
        Ok(counted)
    }

    fn loaded(&self, name: &str, version: &str) -> Option<Arc<Bundle>> {
        self.inner.registry.version(name, &Version::parse(version).ok()?)
    }

    /// The outcome recorded for prediction `id`, if any.
    pub fn outcome(&self, id: Uuid) -> Result<Option<StoredOutcome>, QualityError> {
        self.inner.table.get(id.as_bytes())?.map(|bytes| decode(id.as_bytes(), &bytes)).transpose()
    }

    /// Records `actual` as the outcome of prediction `id`, once: checked against the bundle's
    /// `[outcome]`, written to the audit trail, stored, and counted into the live accuracy of
    /// the version that predicted it. `visible` says whether the caller may see the
    /// prediction (one it may not see is as absent as one never made).
    pub async fn record(
        &self,
        id: Uuid,
        actual: Value,
        token_id: Option<String>,
        visible: impl Fn(&PredictionRecord) -> bool,
    ) -> Result<StoredOutcome, QualityError> {
        let inner = &self.inner;
        let _one_at_a_time = inner.writing.lock().await;
        let prediction = inner
            .store
            .prediction(id)?
            .filter(|record| visible(record))
            .ok_or(QualityError::UnknownPrediction { id })?;
        if let Some(existing) = self.outcome(id)? {
            return Err(QualityError::AlreadyRecorded {
                id,
                actual: existing.actual.to_string(),
                recorded: existing.recorded,
            });
        }
        let name = &prediction.bundle;
        let predicted_by = self.loaded(name, &prediction.version);
        // A version since removed is judged by the rule of the one serving now.
        let rule_of =
            predicted_by.clone().or_else(|| inner.registry.active(name)).ok_or_else(|| QualityError::NotJudgeable {
                reason: format!("bundle {name} is not loaded: its outcomes cannot be checked"),
            })?;
        let spec = rule_of.manifest().outcome.as_ref().ok_or_else(|| QualityError::NotJudgeable {
            reason: format!("bundle {name} takes no outcomes (its bundle.toml has no [outcome])"),
        })?;
        let predicted = prediction.outputs.get(&spec.field).cloned().unwrap_or(Value::Null);
        let point = outcome::judge(spec, &predicted, &actual)?;
        let stored = StoredOutcome {
            prediction_id: id,
            bundle: name.clone(),
            version: prediction.version.clone(),
            field: spec.field.clone(),
            predicted,
            actual,
            recorded: rfc3339_millis(now_unix_ms()),
            token_id,
        };
        // The audit record first: an outcome stored without one would be a hole in the trail;
        // one audited but not stored (a crash between) is recorded again by the caller's retry.
        let mut details = json!({
            "prediction_id": id, "bundle": stored.bundle, "version": stored.version,
            "field": stored.field, "predicted": stored.predicted, "actual": stored.actual,
        });
        if let Some(token) = &stored.token_id {
            details["token_id"] = json!(token);
        }
        inner.store.audit(AuditKind::OutcomeRecorded, details).await?;
        let bytes = serde_json::to_vec(&stored).expect("an outcome serializes");
        inner.table.put(id.as_bytes().to_vec(), bytes).await?;
        metrics::counter!(names::OUTCOMES, "bundle" => stored.bundle.clone(), "version" => stored.version.clone())
            .increment(1);
        if let Some(bundle) = predicted_by {
            bundle.accuracy().observe(point);
            publish(&bundle);
        }
        Ok(stored)
    }

    /// The drift of every loaded version of bundle `name`.
    pub fn drift(&self, name: &str) -> Result<BundleDrift, QualityError> {
        let versions = self
            .loaded_versions(name)?
            .into_iter()
            .map(|(bundle, role)| VersionDrift {
                version: bundle.version().to_string(),
                active: role.active,
                canary: role.canary,
                drift: self.judge_drift(&bundle),
            })
            .collect();
        Ok(BundleDrift { bundle: name.to_owned(), versions })
    }

    /// Every loaded version of bundle `name`, and whether it is the active one or a canary.
    fn loaded_versions(&self, name: &str) -> Result<Vec<(Arc<Bundle>, Role)>, QualityError> {
        let registry = &self.inner.registry;
        let versions = registry.versions(name);
        if versions.is_empty() {
            return Err(QualityError::UnknownBundle { name: name.to_owned() });
        }
        let active = registry.active(name).map(|bundle| bundle.version().clone());
        let canary = registry.canary_versions().remove(name);
        Ok(versions
            .into_iter()
            .map(|bundle| {
                let role = Role {
                    active: active.as_ref() == Some(bundle.version()),
                    canary: canary.as_ref() == Some(bundle.version()),
                };
                (bundle, role)
            })
            .collect())
    }

    fn judge_drift(&self, bundle: &Bundle) -> Option<DriftFigures> {
        let thresholds = bundle.manifest().drift.unwrap_or_default();
        Some(drift::judge(bundle.drift()?, thresholds, self.inner.config.drift_min_rows))
    }

    /// Judges every loaded version's drift every `drift_check_secs` until `stop`: sets the
    /// drift gauges, and on a change of a version's status writes a `drift` audit record
    /// (which the fleet link publishes as an event).
    pub async fn watch_drift(self, stop: impl std::future::Future<Output = ()>) {
        let period = std::time::Duration::from_secs(self.inner.config.drift_check_secs);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(period) => {}
            }
            if let Err(error) = self.check_drift().await {
                tracing::warn!(%error, "the drift check failed");
            }
        }
    }

    async fn check_drift(&self) -> Result<(), QualityError> {
        let registry = &self.inner.registry;
        for summary in registry.summaries() {
            for bundle in registry.versions(&summary.name) {
                let Some(figures) = self.judge_drift(&bundle) else { continue };
                let (name, version) = (bundle.name().to_owned(), bundle.version().to_string());
                publish_drift(&name, &version, &figures);
                let Some(status) = figures.status else { continue };
                let previous = self
                    .inner
                    .drift_status
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert((name.clone(), version.clone()), status);
                if previous == Some(status) || (previous.is_none() && status == DriftStatus::Ok) {
                    continue;
                }
                let drifting: Vec<&str> = figures
                    .features
                    .iter()
                    .filter(|feature| feature.status != DriftStatus::Ok)
                    .map(|feature| feature.name.as_str())
                    .collect();
                tracing::warn!(bundle = %name, %version, status = status.as_str(), ?drifting, "drift status changed");
                let psi: serde_json::Map<String, Value> =
                    figures.features.iter().map(|feature| (feature.name.clone(), json!(feature.psi))).collect();
                let details = json!({
                    "bundle": name, "version": version, "status": status.as_str(),
                    "previous": previous.map(DriftStatus::as_str), "rows": figures.rows,
                    "features": drifting, "psi": psi,
                });
                self.inner.store.audit(AuditKind::Drift, details).await?;
            }
        }
        Ok(())
    }

    /// The quality of every loaded version of bundle `name`.
    pub fn report(&self, name: &str) -> Result<BundleQuality, QualityError> {
        let versions = self.loaded_versions(name)?;
        let outcome = versions.iter().find(|(_, role)| role.active).and_then(|(b, _)| b.manifest().outcome.clone());
        let versions = versions
            .into_iter()
            .map(|(bundle, role)| VersionQuality {
                version: bundle.version().to_string(),
                active: role.active,
                canary: role.canary,
                live: bundle.manifest().outcome.is_some().then(|| bundle.accuracy().report()),
                training: bundle.training().cloned(),
            })
            .collect();
        Ok(BundleQuality { bundle: name.to_owned(), outcome, versions })
    }
}

fn decode(key: &[u8], bytes: &[u8]) -> Result<StoredOutcome, QualityError> {
    serde_json::from_slice(bytes)
        .map_err(|error| QualityError::Corrupt { key: hex::encode(key), reason: error.to_string() })
}

/// Sets a version's drift gauges (absent until the window holds enough rows).
fn publish_drift(name: &str, version: &str, figures: &DriftFigures) {
    let labels = [("bundle", name.to_owned()), ("version", version.to_owned())];
    metrics::gauge!(names::DRIFT_ROWS, &labels).set(figures.rows as f64);
    let Some(status) = figures.status else { return };
    metrics::gauge!(names::DRIFT_STATUS, &labels).set(status.level());
    for feature in &figures.features {
        let labels = [("bundle", name.to_owned()), ("version", version.to_owned()), ("feature", feature.name.clone())];
        metrics::gauge!(names::DRIFT_PSI, &labels).set(feature.psi);
    }
}

/// Sets the version's quality gauges: its live figures, and training's beside them.
fn publish(bundle: &Bundle) {
    let (name, version) = (bundle.name().to_owned(), bundle.version().to_string());
    if let Some(training) = bundle.training() {
        for (metric, value) in training.numbers() {
            let labels = [("bundle", name.clone()), ("version", version.clone()), ("metric", metric.to_owned())];
            metrics::gauge!(names::TRAINING_METRIC, &labels).set(value);
        }
    }
    if bundle.manifest().outcome.is_none() {
        return;
    }
    let report = bundle.accuracy().report();
    for (window, figures) in [("since_loaded", &report.since_loaded), ("recent", &report.recent)] {
        let labels = [("bundle", name.clone()), ("version", version.clone()), ("window", window.to_owned())];
        let (outcomes, values) = match figures {
            Figures::Regression { outcomes, mae, mape, rmse } => {
                (*outcomes, vec![(names::LIVE_MAE, *mae), (names::LIVE_MAPE, *mape), (names::LIVE_RMSE, *rmse)])
            }
            Figures::Classification { outcomes, accuracy, .. } => (*outcomes, vec![(names::LIVE_ACCURACY, *accuracy)]),
        };
        metrics::gauge!(names::LIVE_OUTCOMES, &labels).set(outcomes as f64);
        for (metric, value) in values {
            // A figure without outcomes behind it is absent, not zero: zero error would lie.
            if let Some(value) = value {
                metrics::gauge!(metric, &labels).set(value);
            }
        }
    }
}
