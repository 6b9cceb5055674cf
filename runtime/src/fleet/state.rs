//! What the fleet link must remember across restarts, in the store's tables: each
//! deployment's progress, and each bundle's preferred active version (with the previous
//! one, kept for rollback). Also where deployed bundles live on disk.
//!
//! The commit point of an activation is writing the preference: a crash before it leaves
//! the old version serving after the restart, a crash after it the new one. Either way
//! [`FleetState::restore`] makes the registry and the records agree again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use semver::Version;
use serde::{Deserialize, Serialize};

use super::messages::{Action, DeploymentId, History, HistoryEntry, Progress, Reason, ReasonCode, Step};
use crate::bundle::Registry;
use crate::store::{Store, StoreError, Table, TableOp};

/// One deployment request and how far it got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    pub id: DeploymentId,
    pub action: Action,
    pub step: Step,
    pub bundle: Option<String>,
    pub version: Option<String>,
    pub previous: Option<String>,
    pub started: String,
    pub updated: String,
    /// The final message, published again when the same request arrives twice.
    pub outcome: Option<Progress>,
    /// Whether `outcome` reached the outbox. The record and the outbox are two writes, so
    /// a crash between them leaves this false and the next start queues the outcome
    /// (at least once: a crash after the outbox write but before this one repeats it).
    /// Records written before this field existed had theirs queued.
    #[serde(default = "already_queued")]
    pub outcome_queued: bool,
}

fn already_queued() -> bool {
    true
}

impl DeploymentRecord {
    /// A request just received.
    pub fn new(id: DeploymentId, action: Action, bundle: Option<String>) -> Self {
        Self {
            id,
            action,
            step: Step::Received,
            bundle,
            version: None,
            previous: None,
            started: now(),
            updated: now(),
            outcome: None,
            outcome_queued: false,
        }
    }

    pub fn is_final(&self) -> bool {
        self.step.is_final()
    }

    /// The message reporting `step` of this deployment, timed now.
    pub fn progress(
        &self,
        device: &str,
        step: Step,
        reason: Option<Reason>,
        detail: Option<serde_json::Value>,
        is_final: bool,
    ) -> Progress {
        Progress {
            deployment: self.id.to_string(),
            device: device.to_owned(),
            action: self.action,
            step,
            time: now(),
            bundle: self.bundle.clone(),
            version: self.version.clone(),
            previous: self.previous.clone(),
            reason,
            detail,
            is_final,
            ok: is_final.then(|| Progress::succeeded(self.action, step)),
        }
    }
}

impl DeploymentRecord {
    /// What the fleet's history shows of this deployment.
    pub fn history_entry(&self) -> HistoryEntry {
        let outcome = self.outcome.as_ref();
        HistoryEntry {
            deployment: self.id.to_string(),
            action: self.action,
            step: self.step,
            bundle: self.bundle.clone(),
            version: self.version.clone(),
            previous: self.previous.clone(),
            started: self.started.clone(),
            updated: self.updated.clone(),
            ok: outcome.and_then(|outcome| outcome.ok),
            reason: outcome.and_then(|outcome| outcome.reason.clone()),
        }
    }
}

/// A bundle name's preferred active version and the one before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preference {
    pub active: Version,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Version>,
}

/// How long and how many finished deployment records are kept (`mqtt.deployment_records_max_age_days`,
/// `mqtt.deployment_records_max`). A record is what answers a repeated request with its
/// outcome instead of running it again, so the age must exceed the longest validity of a
/// signed request (the manager's `--valid-for`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub max_age: std::time::Duration,
    pub max_records: usize,
}

/// Folders of the fleet inside the data folder.
#[derive(Debug, Clone)]
pub struct Dirs {
    /// Deployed bundles, `<name>/<version>/`, loaded at every start beside the shipped ones.
    pub installed: PathBuf,
    /// Requests being unpacked and checked; emptied at start.
    pub staging: PathBuf,
}

impl Dirs {
    pub fn new(data_dir: &Path) -> Self {
        Self { installed: data_dir.join("fleet/bundles"), staging: data_dir.join("fleet/staging") }
    }

    pub fn installed_version(&self, name: &str, version: &Version) -> PathBuf {
        self.installed.join(name).join(version.to_string())
    }
}

#[derive(Debug, Clone)]
pub struct FleetState {
    deployments: Table,
    preferences: Table,
}

impl FleetState {
    pub fn open(store: &Store) -> Result<Self, StoreError> {
        Ok(Self { deployments: store.table("fleet-deployments")?, preferences: store.table("fleet-preferences")? })
    }

    pub fn deployment(&self, id: &DeploymentId) -> Result<Option<DeploymentRecord>, StoreError> {
        self.deployments.get(id.as_str().as_bytes())?.map(|bytes| decode(&bytes, "deployment")).transpose()
    }

    pub async fn save(&self, record: &DeploymentRecord) -> Result<(), StoreError> {
        self.deployments.put(record.id.as_str().as_bytes(), encode(record)?).await
    }

    /// Deletes finished deployment records older than `retention.max_age`, then the
    /// oldest finished ones beyond `retention.max_records`. Records of deployments still
    /// running are kept whatever their age. Failures are logged: pruning again later is
    /// as good.
    pub async fn prune(&self, retention: &Retention) {
        if let Err(error) = self.try_prune(retention, crate::store::now_unix_ms()).await {
            tracing::error!(%error, "cannot prune the deployment records");
        }
    }

    async fn try_prune(&self, retention: &Retention, now_ms: u64) -> Result<usize, StoreError> {
        let max_age_ms = u64::try_from(retention.max_age.as_millis()).unwrap_or(u64::MAX);
        let cutoff = crate::store::rfc3339_millis(now_ms.saturating_sub(max_age_ms));
        let mut finished: Vec<(String, DeploymentId)> = self
            .deployments()?
            .into_iter()
            .filter(DeploymentRecord::is_final)
            .map(|record| (record.updated, record.id))
            .collect();
        // RFC 3339 UTC with a fixed width sorts by time.
        finished.sort();
        let total = self.deployments.len();
        let expired = finished.iter().take_while(|(updated, _)| *updated < cutoff).count();
        let over = total.saturating_sub(expired).saturating_sub(retention.max_records);
        let doomed: Vec<TableOp> = finished
            .into_iter()
            .take(expired + over)
            .map(|(_, id)| TableOp::Remove(id.as_str().as_bytes().to_vec()))
            .collect();
        let count = doomed.len();
        self.deployments.apply(doomed).await?;
        Ok(count)
    }

    /// The latest [`History::MAX_ENTRIES`] deployments, newest first.
    pub fn history(&self, device: &str) -> Result<History, StoreError> {
        let mut records = self.deployments()?;
        // RFC 3339 UTC with a fixed width sorts by time; the id breaks ties.
        records.sort_by(|a, b| (&b.started, b.id.as_str()).cmp(&(&a.started, a.id.as_str())));
        records.truncate(History::MAX_ENTRIES);
        Ok(History {
            device: device.to_owned(),
            time: now(),
            deployments: records.iter().map(DeploymentRecord::history_entry).collect(),
        })
    }

    fn deployments(&self) -> Result<Vec<DeploymentRecord>, StoreError> {
        self.deployments.entries()?.into_iter().map(|(_, value)| decode(&value, "deployment")).collect()
    }

    pub fn preference(&self, name: &str) -> Result<Option<Preference>, StoreError> {
        self.preferences.get(name.as_bytes())?.map(|bytes| decode(&bytes, "preference")).transpose()
    }

    pub fn preferences(&self) -> Result<BTreeMap<String, Preference>, StoreError> {
        self.preferences
            .entries()?
            .into_iter()
            .map(|(key, value)| Ok((String::from_utf8_lossy(&key).into_owned(), decode(&value, "preference")?)))
            .collect()
    }

    /// Durable before it returns: the commit point of an activation.
    pub async fn set_preference(&self, name: &str, preference: &Preference) -> Result<(), StoreError> {
        self.preferences.put(name.as_bytes(), encode(preference)?).await
    }

    /// Removes deployed bundles no preference refers to: what a deployment interrupted
    /// before its commit point left behind, or a canary the restart ended. Run before the
    /// installed bundles load.
    pub fn discard_unreferenced(&self, dirs: &Dirs) -> Result<Vec<PathBuf>, StoreError> {
        let preferences = self.preferences()?;
        let referenced = |name: &str, version: &str| {
            preferences.get(name).is_some_and(|preference| {
                preference.active.to_string() == version
                    || preference.previous.as_ref().is_some_and(|previous| previous.to_string() == version)
            })
        };
        let mut discarded = Vec::new();
        for (name, version, dir) in installed_dirs(&dirs.installed) {
            if !referenced(&name, &version) {
                std::fs::remove_dir_all(&dir)
                    .map_err(|error| StoreError::Storage(format!("cannot remove {}: {error}", dir.display())))?;
                discarded.push(dir);
            }
        }
        let _ = std::fs::remove_dir_all(&dirs.staging);
        Ok(discarded)
    }

    /// After the bundles loaded: activates each name's preferred version (or, when it is
    /// gone, the previous one), and ends every deployment the restart interrupted. Returns
    /// the finished deployments whose outcome is not queued yet (those it ended, and those
    /// a crash stopped between recording and queueing their outcome): queue each, then
    /// [`mark_queued`](Self::mark_queued).
    pub async fn restore(&self, registry: &Registry, device: &str) -> Result<Vec<DeploymentRecord>, StoreError> {
        for (name, preference) in self.preferences()? {
            let candidates = std::iter::once(&preference.active).chain(preference.previous.as_ref());
            match candidates.into_iter().find(|version| registry.version(&name, version).is_some()) {
                Some(version) => {
                    let _ = registry.activate(&name, version);
                }
                None => {
                    tracing::error!(bundle = %name, active = %preference.active, "the preferred version of a bundle did not load; serving what did")
                }
            }
        }
        self.end_interrupted(&registry.active_versions(), device).await
    }

    /// Ends every deployment still running (the restart interrupted it): active if its
    /// version is what `active` serves, else rejected or rolled back. Returns those and
    /// every finished deployment whose outcome is not queued yet.
    async fn end_interrupted(
        &self,
        active: &BTreeMap<String, Version>,
        device: &str,
    ) -> Result<Vec<DeploymentRecord>, StoreError> {
        let mut unqueued = Vec::new();
        for mut record in self.deployments()? {
            if record.is_final() {
                if !record.outcome_queued && record.outcome.is_some() {
                    unqueued.push(record);
                }
                continue;
            }
            let went_live = record.action == Action::Deploy
                && record.bundle.as_ref().and_then(|name| active.get(name)).map(Version::to_string) == record.version;
            let (step, reason) = if went_live {
                (Step::Active, None)
            } else {
                let reason = Reason::new(
                    ReasonCode::Interrupted,
                    format!("the appliance restarted during step {}", record.step.as_str()),
                );
                (if record.step == Step::Canary { Step::RolledBack } else { Step::Rejected }, Some(reason))
            };
            let progress = record.progress(device, step, reason, None, true);
            record.step = step;
            record.updated = progress.time.clone();
            record.outcome = Some(progress);
            record.outcome_queued = false;
            self.save(&record).await?;
            unqueued.push(record);
        }
        Ok(unqueued)
    }

    /// Records that a finished deployment's outcome is in the outbox.
    pub async fn mark_queued(&self, record: &mut DeploymentRecord) -> Result<(), StoreError> {
        record.outcome_queued = true;
        self.save(record).await
    }
}

/// Now, RFC 3339 UTC with milliseconds.
pub fn now() -> String {
    crate::store::rfc3339_millis(crate::store::now_unix_ms())
}

/// `(name, version, folder)` of every `<installed>/<name>/<version>/` folder.
fn installed_dirs(installed: &Path) -> Vec<(String, String, PathBuf)> {
    let children = |dir: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|entries| entries.filter_map(|entry| Some(entry.ok()?.path())).filter(|path| path.is_dir()).collect())
            .unwrap_or_default()
    };
    let name_of = |path: &Path| path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    children(installed)
        .into_iter()
        .flat_map(|name_dir| {
            let name = name_of(&name_dir);
            children(&name_dir).into_iter().map(move |dir| (name.clone(), name_of(&dir), dir))
        })
        .collect()
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|error| StoreError::InvalidRecord { reason: error.to_string() })
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|error| StoreError::Corrupt { what: format!("fleet {what}: {error}") })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::{StoreConfig, now_unix_ms, rfc3339_millis};

    fn record(id: &str, step: Step, updated_ms: u64) -> DeploymentRecord {
        let id = DeploymentId::try_from(id).unwrap();
        DeploymentRecord {
            step,
            updated: rfc3339_millis(updated_ms),
            ..DeploymentRecord::new(id, Action::Deploy, None)
        }
    }

    #[tokio::test]
    async fn a_restart_queues_every_outcome_not_queued_yet_and_ends_interrupted_deployments() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), &StoreConfig::default()).unwrap();
        let state = FleetState::open(&store).unwrap();
        let now = now_unix_ms();
        let finished = |id: &str, queued: bool| {
            let mut record = record(id, Step::Rejected, now);
            record.outcome = Some(record.progress("kiosk-1", Step::Rejected, None, None, true));
            record.outcome_queued = queued;
            record
        };
        // Crashed between recording the outcome and queueing it; fully done; and crashed
        // after the commit point (live) or before it (not live).
        state.save(&finished("unsent", false)).await.unwrap();
        state.save(&finished("sent", true)).await.unwrap();
        let running = |id: &str, version: &str| DeploymentRecord {
            bundle: Some("car-price".to_owned()),
            version: Some(version.to_owned()),
            ..record(id, Step::SmokeTested, now)
        };
        state.save(&running("live", "1.2.0")).await.unwrap();
        state.save(&running("not-live", "1.3.0")).await.unwrap();

        let active = BTreeMap::from([("car-price".to_owned(), Version::new(1, 2, 0))]);
        let mut ended = state.end_interrupted(&active, "kiosk-1").await.unwrap();
        ended.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
        let summary: Vec<_> = ended.iter().map(|r| (r.id.as_str(), r.outcome.as_ref().unwrap().step)).collect();
        assert_eq!(summary, [("live", Step::Active), ("not-live", Step::Rejected), ("unsent", Step::Rejected)]);
        assert!(ended.iter().all(|record| record.is_final() && !record.outcome_queued));

        for mut record in ended {
            state.mark_queued(&mut record).await.unwrap();
        }
        assert!(state.end_interrupted(&active, "kiosk-1").await.unwrap().is_empty(), "nothing twice once queued");
    }

    #[tokio::test]
    async fn the_history_is_the_latest_deployments_newest_first_with_their_outcomes() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), &StoreConfig::default()).unwrap();
        let state = FleetState::open(&store).unwrap();
        for n in 0..History::MAX_ENTRIES + 5 {
            let mut record = record(&format!("d{n:03}"), Step::Staged, 0);
            record.started = rfc3339_millis(1_000 * n as u64);
            state.save(&record).await.unwrap();
        }
        let mut rejected = record("z-rejected", Step::Rejected, 0);
        rejected.started = rfc3339_millis(1_000_000);
        let reason = Reason::new(ReasonCode::Untrusted, "unsigned");
        rejected.outcome = Some(rejected.progress("kiosk-1", Step::Rejected, Some(reason.clone()), None, true));
        state.save(&rejected).await.unwrap();

        let history = state.history("kiosk-1").unwrap();
        assert_eq!(history.device, "kiosk-1");
        assert_eq!(history.deployments.len(), History::MAX_ENTRIES);
        let newest = &history.deployments[0];
        assert_eq!((newest.deployment.as_str(), newest.step, newest.ok), ("z-rejected", Step::Rejected, Some(false)));
        assert_eq!(newest.reason.as_ref(), Some(&reason));
        assert_eq!(history.deployments[1].deployment, format!("d{:03}", History::MAX_ENTRIES + 4));
        assert_eq!(history.deployments[1].ok, None, "still running");
        assert_eq!(history.deployments.last().unwrap().deployment, "d006", "the oldest fall off");
    }

    #[test]
    fn records_written_before_the_queued_flag_count_as_queued() {
        let mut old = serde_json::to_value(record("old", Step::Active, 0)).unwrap();
        old.as_object_mut().unwrap().remove("outcome_queued");
        let old: DeploymentRecord = serde_json::from_value(old).unwrap();
        assert!(old.outcome_queued);
    }

    #[tokio::test]
    async fn finished_records_are_pruned_by_age_then_count_and_running_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), &StoreConfig::default()).unwrap();
        let state = FleetState::open(&store).unwrap();
        let now = now_unix_ms();
        let day = 86_400_000;
        for (id, step, age_days) in [
            ("ancient", Step::Active, 40),
            ("old-running", Step::Staged, 40),
            ("a", Step::Rejected, 3),
            ("b", Step::Active, 2),
            ("c", Step::Removed, 1),
        ] {
            state.save(&record(id, step, now - age_days * day)).await.unwrap();
        }
        let retention = Retention { max_age: Duration::from_secs(30 * 86_400), max_records: 3 };
        assert_eq!(state.try_prune(&retention, now).await.unwrap(), 2);
        let kept = |id: &str| state.deployment(&DeploymentId::try_from(id).unwrap()).unwrap().is_some();
        assert!(!kept("ancient") && !kept("a"), "too old, then the oldest over the count");
        assert!(kept("old-running") && kept("b") && kept("c"), "running ones stay whatever their age");
        assert_eq!(state.try_prune(&retention, now).await.unwrap(), 0);
    }
}
