//! The deployer: takes deployment requests from the broker and carries each through
//! received -> verified -> staged -> loaded -> smoke_tested -> [canary] -> active, or
//! rejects it, reporting every step on the deployment's topic (through the outbox) and in
//! its durable record; and carries out rollback and remove requests.
//!
//! Requests are recorded before they are acknowledged to the broker, so none is lost to a
//! crash, and a request delivered twice is answered with its recorded outcome, not run
//! again. Deployments run one at a time; a canary watches in the background.
//!
//! Nothing switches before the bundle is verified, loaded and smoke-tested, and the switch
//! itself is the registry's atomic swap: requests in flight finish on the version they
//! started with.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use semver::Version;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, mpsc};

use super::canary::{self, AccuracyVerdict, Baselines};
use super::error::DeployError;
use super::messages::{
    AccuracyGate, Action, BundleSource, CanaryPolicy, DeploymentId, Progress, Reason, ReasonCode, Request, Step,
};
use super::outbox::{Kind, Outbox, Queued};
use super::signed::{self, Refusal};
use super::state::{DeploymentRecord, Dirs, FleetState, Preference, Retention};
use super::topics::Topics;
use crate::bundle::{Bundle, Counts, Registry, archive};
use crate::store::{AuditKind, Store};
use crate::telemetry::{names, record_bundle_versions};

/// How often a canary's figures are judged.
const CANARY_CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// Deployments waiting behind the one running; more are rejected as busy.
const QUEUE: usize = 16;

/// A recorded request, waiting for its turn.
#[derive(Debug)]
pub struct Job {
    request: Request,
    record: DeploymentRecord,
}

#[derive(Debug, Clone)]
pub struct Deployer {
    context: Arc<Context>,
    /// Running canaries by bundle name.
    canaries: Arc<Mutex<HashMap<String, RunningCanary>>>,
}

/// What a deployer works with.
#[derive(Debug)]
pub struct Context {
    pub registry: Arc<Registry>,
    pub store: Store,
    pub state: FleetState,
    pub outbox: Arc<Outbox>,
    pub topics: Topics,
    pub device: String,
    pub dirs: Dirs,
    /// The largest request taken (`mqtt.max_bundle_mib` in base64, plus the JSON).
    pub max_request_bytes: usize,
    /// Notified whenever the active or canary versions change or a deployment ends (the
    /// retained status and history follow).
    pub changed: Arc<Notify>,
    /// Bundle downloads by URL.
    pub download: DownloadLimits,
    /// How long and how many deployment records are kept.
    pub retention: Retention,
}

#[derive(Debug)]
struct RunningCanary {
    deployment: DeploymentId,
    version: Version,
    stop: Arc<Notify>,
}

impl Deployer {
    pub fn new(context: Context) -> Self {
        Self { context: Arc::new(context), canaries: Arc::default() }
    }

    /// Runs the queue of deployments, one at a time, until the sender is dropped.
    pub async fn run(self, mut jobs: mpsc::Receiver<Job>) {
        while let Some(job) = jobs.recv().await {
            self.execute(job).await;
        }
    }

    /// A queue of deployments for [`run`](Self::run).
    pub fn queue() -> (mpsc::Sender<Job>, mpsc::Receiver<Job>) {
        mpsc::channel(QUEUE)
    }

    /// Takes one incoming request, arrived on `topic`: opens its signed envelope (off the
    /// async threads: verifying hashes the whole payload), answers refused, oversized and
    /// repeated requests at once, records a new one as received and queues it. Returns
    /// whether the request is taken care of (answered, or recorded): only then may the
    /// caller acknowledge it to the broker, which otherwise delivers it again.
    pub async fn receive(&self, payload: bytes::Bytes, topic: &str, queue: &mpsc::Sender<Job>) -> bool {
        if payload.len() > self.context.max_request_bytes {
            let error = DeployError::TooLarge { size: payload.len(), max: self.context.max_request_bytes };
            self.refuse(Refusal { claimed: None, authentic: false, reason: error.reason() }).await;
            return true;
        }
        let keys = self.context.registry.loader().trusted_keys().cloned();
        let arrived_on = topic.to_owned();
        let opened = blocking(move || signed::open(&payload, &arrived_on, keys.as_ref(), signed::unix_now())).await;
        let request = match opened {
            Ok(Ok(request)) => request,
            Ok(Err(refusal)) => {
                self.refuse(refusal).await;
                return true;
            }
            Err(error) => {
                tracing::error!(%error, "cannot open a deployment request");
                return false;
            }
        };
        match self.context.state.deployment(request.id()) {
            Ok(Some(record)) => {
                // Delivered again (a redelivery after a crash, or a repeated push).
                if let Some(outcome) = record.outcome {
                    self.publish(&outcome).await;
                }
                return true;
            }
            Ok(None) => {}
            Err(error) => {
                tracing::error!(%error, "cannot read the deployment records");
                return false;
            }
        }
        let mut record = DeploymentRecord::new(request.id().clone(), request.action(), bundle_name(&request));
        if let Err(error) = self.step(&mut record, Step::Received, None).await {
            tracing::error!(%error, deployment = %record.id, "cannot record a deployment request");
            return false;
        }
        self.audit(
            AuditKind::DeploymentStarted,
            json!({"deployment": record.id, "action": record.action, "bundle": record.bundle}),
        )
        .await;
        if let Err(mpsc::error::TrySendError::Full(job) | mpsc::error::TrySendError::Closed(job)) =
            queue.try_send(Job { request, record })
        {
            let mut record = job.record;
            let error = DeployError::Busy(format!("{QUEUE} deployments are already waiting"));
            self.finish(&mut record, Step::Rejected, Some(error.reason()), None).await;
        }
        self.context.state.prune(&self.context.retention).await;
        true
    }

    async fn execute(&self, job: Job) {
        let Job { request, mut record } = job;
        // Named here, never after the remote id: nothing a message says becomes a path.
        let scratch = self.context.dirs.staging.join(uuid::Uuid::now_v7().to_string());
        let result = match request {
            Request::Deploy { bundle, canary, .. } => self.deploy(&mut record, bundle, canary, &scratch).await,
            Request::Rollback { bundle, .. } => self.rollback(&mut record, bundle.as_str()).await,
            Request::Remove { bundle, version, .. } => self.remove(&mut record, bundle.as_str(), &version).await,
        };
        if let Err(error) = result {
            tracing::warn!(deployment = %record.id, %error, "deployment request failed");
            if record.action == Action::Deploy {
                self.audit(
                    AuditKind::BundleRejected,
                    json!({"deployment": record.id, "bundle": record.bundle, "version": record.version, "reason": error.to_string()}),
                )
                .await;
            }
            self.finish(&mut record, Step::Rejected, Some(error.reason()), None).await;
        }
        if let Err(error) = std::fs::remove_dir_all(&scratch)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(%error, dir = %scratch.display(), "cannot clean a staging folder up");
        }
    }

    async fn deploy(
        &self,
        record: &mut DeploymentRecord,
        source: BundleSource,
        canary: Option<CanaryPolicy>,
        scratch: &Path,
    ) -> Result<(), DeployError> {
        let inner = &*self.context;
        if inner.registry.loader().trusted_keys().is_none() {
            return Err(DeployError::NoTrustedKeys);
        }
        // A download is capped at the bundle limit; an inline bundle already was, by the request's.
        let bytes = fetch(source, inner.max_request_bytes / 4 * 3, inner.download).await?;
        let scratch = scratch.to_owned();
        let dir = blocking(move || unpack(&bytes, &scratch)).await??;
        let loader = inner.registry.loader().clone();
        let verified = blocking(move || loader.verify(&dir)).await??;
        let (name, version) = (verified.manifest().bundle.name.clone(), verified.manifest().bundle.version.clone());
        record.bundle = Some(name.clone());
        record.version = Some(version.to_string());
        self.step(record, Step::Verified, Some(json!({"key_id": verified.signed_by()}))).await?;

        if let Some((canary_version, _)) = self.canary_of(&name) {
            return Err(DeployError::Busy(format!(
                "a canary of {name} ({canary_version}) is running; wait for its outcome or roll it back"
            )));
        }
        if inner.registry.version(&name, &version).is_some() {
            return self.switch_to_loaded(record, &name, &version, canary).await;
        }
        self.step(record, Step::Staged, None).await?;
        let loader = inner.registry.loader().clone();
        let bundle = blocking(move || loader.build(verified)).await??;
        self.step(record, Step::Loaded, None).await?;
        let (bundle, smoke) = blocking(move || {
            let result = bundle.smoke_test();
            (bundle, result)
        })
        .await?;
        smoke?;
        let samples = bundle.manifest().samples.len();
        self.step(record, Step::SmokeTested, Some(json!({"samples": samples}))).await?;

        let bundle = self.install(bundle).await?;
        inner.registry.insert(bundle)?;
        self.audit(
            AuditKind::BundleLoaded,
            json!({"bundle": name, "version": version.to_string(), "deployment": record.id}),
        )
        .await;
        match canary {
            None => self.activate(record, &name, &version, None).await,
            Some(policy) => self.start_canary(record, &name, &version, policy).await,
        }
    }

    /// The version is loaded already: make it active (or a canary) without loading it again.
    async fn switch_to_loaded(
        &self,
        record: &mut DeploymentRecord,
        name: &str,
        version: &Version,
        canary: Option<CanaryPolicy>,
    ) -> Result<(), DeployError> {
        let active = self.context.registry.active(name).map(|bundle| bundle.version().clone());
        if active.as_ref() == Some(version) {
            record.previous = self.context.state.preference(name)?.and_then(|p| p.previous).map(|v| v.to_string());
            self.finish(record, Step::Active, None, Some(json!({"note": "already active"}))).await;
            return Ok(());
        }
        match canary {
            None => self.activate(record, name, version, None).await,
            Some(policy) => self.start_canary(record, name, version, policy).await,
        }
    }

    /// Moves a smoke-tested bundle from staging to its installed folder, durably.
    async fn install(&self, mut bundle: Bundle) -> Result<Bundle, DeployError> {
        let target = self.context.dirs.installed_version(bundle.name(), bundle.version());
        let source = bundle.dir().to_owned();
        let moved = target.clone();
        blocking(move || move_dir(&source, &moved)).await?.map_err(DeployError::Internal)?;
        bundle.moved_to(target);
        Ok(bundle)
    }

    /// The commit point: the preference is written, then the registry switches.
    async fn activate(
        &self,
        record: &mut DeploymentRecord,
        name: &str,
        version: &Version,
        detail: Option<Value>,
    ) -> Result<(), DeployError> {
        let inner = &*self.context;
        let previous = inner.registry.active(name).map(|bundle| bundle.version().clone()).filter(|v| v != version);
        inner.state.set_preference(name, &Preference { active: version.clone(), previous: previous.clone() }).await?;
        inner.registry.activate(name, version)?;
        self.versions_changed(name, None);
        record.previous = previous.as_ref().map(Version::to_string);
        self.audit(
            AuditKind::BundleActivated,
            json!({"bundle": name, "version": version.to_string(), "previous": record.previous, "deployment": record.id}),
        )
        .await;
        self.finish(record, Step::Active, None, detail).await;
        Ok(())
    }

    async fn start_canary(
        &self,
        record: &mut DeploymentRecord,
        name: &str,
        version: &Version,
        policy: CanaryPolicy,
    ) -> Result<(), DeployError> {
        let inner = &*self.context;
        inner.registry.start_canary(name, version, policy.share_percent)?;
        self.versions_changed(name, None);
        record.previous = inner.registry.active(name).map(|bundle| bundle.version().to_string());
        self.step(record, Step::Canary, Some(serde_json::to_value(&policy).unwrap_or_default())).await?;
        let stop = Arc::new(Notify::new());
        let running =
            RunningCanary { deployment: record.id.clone(), version: version.clone(), stop: Arc::clone(&stop) };
        self.lock_canaries().insert(name.to_owned(), running);
        let bundle =
            inner.registry.version(name, version).ok_or_else(|| DeployError::Internal("canary vanished".into()))?;
        let this = self.clone();
        let (record, name, version) = (record.clone(), name.to_owned(), version.clone());
        tokio::spawn(async move { this.watch_canary(record, name, version, bundle, policy, stop).await });
        Ok(())
    }

    /// Judges a canary until it breaks a threshold (rolled back), its window ends
    /// (promoted, or rolled back without enough requests), or a rollback stops it.
    async fn watch_canary(
        &self,
        mut record: DeploymentRecord,
        name: String,
        version: Version,
        bundle: Arc<Bundle>,
        policy: CanaryPolicy,
        stop: Arc<Notify>,
    ) {
        let started = bundle.stats().snapshot();
        // The active version the canary is compared with, and both versions' outcomes so far.
        let active = self.context.registry.active(&name);
        let outcomes_before = (bundle.accuracy().counts(), active.as_ref().map(|active| active.accuracy().counts()));
        let deadline = Instant::now() + Duration::from_secs(policy.window_secs);
        let verdict = loop {
            tokio::select! {
                () = stop.notified() => return,
                () = tokio::time::sleep(CANARY_CHECK_INTERVAL) => {}
            }
            let window = bundle.stats().snapshot().since(&started);
            let mut figures = json!({
                "requests": window.requests,
                "failures": window.failures,
                "error_rate": window.error_rate(),
                "p99_ms": window.p99_ms(),
                "thresholds": {"max_error_rate": policy.max_error_rate, "max_p99_ms": policy.max_p99_ms, "min_requests": policy.min_requests},
            });
            let accuracy = policy.accuracy.as_ref().map(|gate| {
                let (verdict, judged) = judge_accuracy(gate, &bundle, active.as_deref(), &outcomes_before);
                figures["accuracy"] = judged;
                verdict
            });
            let judged = window.requests > 0 && window.requests >= policy.min_requests;
            if judged && window.error_rate() > policy.max_error_rate {
                break Err((format!("error rate {:.4} over {}", window.error_rate(), policy.max_error_rate), figures));
            }
            if judged && window.p99_ms() > policy.max_p99_ms {
                break Err((format!("p99 latency {} ms over {} ms", window.p99_ms(), policy.max_p99_ms), figures));
            }
            if let Some(AccuracyVerdict::Worse(reason)) = &accuracy {
                break Err((format!("accuracy: {reason}"), figures));
            }
            if Instant::now() >= deadline {
                break if window.requests < policy.min_requests {
                    Err((
                        format!("only {} requests in the window, {} needed", window.requests, policy.min_requests),
                        figures,
                    ))
                } else if accuracy == Some(AccuracyVerdict::Pending) {
                    Err(("not enough outcomes in the window to judge its accuracy".to_owned(), figures))
                } else {
                    Ok(figures)
                };
            }
        };
        self.lock_canaries().remove(&name);
        drop(bundle);
        match verdict {
            Ok(figures) => {
                tracing::info!(bundle = %name, %version, "canary promoted");
                if let Err(error) = self.activate(&mut record, &name, &version, Some(figures)).await {
                    self.finish(&mut record, Step::Rejected, Some(error.reason()), None).await;
                }
            }
            Err((reason, figures)) => {
                tracing::warn!(bundle = %name, %version, %reason, "canary rolled back");
                let error = DeployError::CanaryFailed { reason: format!("canary rolled back: {reason}") };
                self.end_canary(&mut record, &name, &version, error.reason(), Some(figures)).await;
            }
        }
    }

    /// Stops a canary, unloads and deletes its version, and reports it rolled back.
    async fn end_canary(
        &self,
        record: &mut DeploymentRecord,
        name: &str,
        version: &Version,
        reason: Reason,
        detail: Option<Value>,
    ) {
        let inner = &*self.context;
        inner.registry.stop_canary(name);
        let _ = inner.registry.remove(name, version);
        self.versions_changed(name, Some(version));
        let _ = std::fs::remove_dir_all(inner.dirs.installed_version(name, version));
        self.audit(
            AuditKind::RolledBack,
            json!({"bundle": name, "version": version.to_string(), "deployment": record.id, "reason": reason.message}),
        )
        .await;
        self.finish(record, Step::RolledBack, Some(reason), detail).await;
    }

    async fn rollback(&self, record: &mut DeploymentRecord, name: &str) -> Result<(), DeployError> {
        let inner = &*self.context;
        if let Some((canary_version, canary_deployment)) = self.canary_of(name) {
            if let Some(running) = self.lock_canaries().remove(name) {
                running.stop.notify_one();
            }
            let mut canary_record = inner
                .state
                .deployment(&canary_deployment)?
                .ok_or_else(|| DeployError::Internal(format!("no record of deployment {canary_deployment}")))?;
            let reason =
                Reason::new(ReasonCode::CanaryFailed, format!("rollback requested by deployment {}", record.id));
            self.end_canary(&mut canary_record, name, &canary_version, reason, None).await;
            record.version = inner.registry.active(name).map(|bundle| bundle.version().to_string());
            record.previous = Some(canary_version.to_string());
            self.finish(record, Step::RolledBack, None, Some(json!({"canary_stopped": canary_deployment}))).await;
            return Ok(());
        }
        let current = inner
            .registry
            .active(name)
            .map(|bundle| bundle.version().clone())
            .ok_or_else(|| DeployError::NotFound(format!("there is no bundle named {name:?}")))?;
        let previous = inner
            .state
            .preference(name)?
            .and_then(|preference| preference.previous)
            .filter(|previous| inner.registry.version(name, previous).is_some())
            .ok_or_else(|| {
                DeployError::NotFound(format!("{name} {current} has no previous version to roll back to"))
            })?;
        inner
            .state
            .set_preference(name, &Preference { active: previous.clone(), previous: Some(current.clone()) })
            .await?;
        inner.registry.activate(name, &previous)?;
        self.versions_changed(name, None);
        record.version = Some(previous.to_string());
        record.previous = Some(current.to_string());
        self.audit(
            AuditKind::RolledBack,
            json!({"bundle": name, "version": previous.to_string(), "from": current.to_string(), "deployment": record.id}),
        )
        .await;
        self.finish(record, Step::RolledBack, None, None).await;
        Ok(())
    }

    async fn remove(&self, record: &mut DeploymentRecord, name: &str, version: &Version) -> Result<(), DeployError> {
        let inner = &*self.context;
        record.version = Some(version.to_string());
        if inner.registry.version(name, version).is_none() {
            return Err(DeployError::NotFound(format!("bundle {name} has no version {version} loaded")));
        }
        let dir = inner.dirs.installed_version(name, version);
        if !dir.is_dir() {
            return Err(DeployError::Refused(format!(
                "{name} {version} ships with the appliance's bundles folder; only deployed versions can be removed"
            )));
        }
        inner.registry.remove(name, version)?;
        if let Some(mut preference) = inner.state.preference(name)?
            && preference.previous.as_ref() == Some(version)
        {
            preference.previous = None;
            inner.state.set_preference(name, &preference).await?;
        }
        blocking(move || std::fs::remove_dir_all(&dir)).await?.map_err(|e| DeployError::Internal(e.to_string()))?;
        self.versions_changed(name, Some(version));
        self.audit(
            AuditKind::BundleRemoved,
            json!({"bundle": name, "version": version.to_string(), "deployment": record.id}),
        )
        .await;
        self.finish(record, Step::Removed, None, None).await;
        Ok(())
    }

    /// After the active, canary or loaded versions of `name` changed: the status follows,
    /// and so do the version gauges (`gone`: a version just unloaded).
    fn versions_changed(&self, name: &str, gone: Option<&Version>) {
        self.context.changed.notify_one();
        if let Some(active) = self.context.registry.active(name) {
            let loaded: Vec<String> =
                self.context.registry.versions(name).iter().map(|b| b.version().to_string()).collect();
            let gone: Vec<String> = gone.map(Version::to_string).into_iter().collect();
            record_bundle_versions(name, &active.version().to_string(), &loaded, &gone);
        }
    }

    /// The running canary of `name`: its version and deployment.
    fn canary_of(&self, name: &str) -> Option<(Version, DeploymentId)> {
        self.lock_canaries().get(name).map(|running| (running.version.clone(), running.deployment.clone()))
    }

    fn lock_canaries(&self) -> std::sync::MutexGuard<'_, HashMap<String, RunningCanary>> {
        self.canaries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a step and queues its message.
    async fn step(&self, record: &mut DeploymentRecord, step: Step, detail: Option<Value>) -> Result<(), DeployError> {
        let progress = record.progress(&self.context.device, step, None, detail, false);
        tracing::info!(deployment = %record.id, step = step.as_str(), bundle = record.bundle.as_deref(), version = record.version.as_deref(), "deployment step");
        record.step = step;
        record.updated = progress.time.clone();
        self.context.state.save(record).await?;
        self.publish(&progress).await;
        Ok(())
    }

    /// Records the final step and queues its message. Failures to record are logged: the
    /// restart after a store failure resolves the deployment.
    async fn finish(&self, record: &mut DeploymentRecord, step: Step, reason: Option<Reason>, detail: Option<Value>) {
        let progress = record.progress(&self.context.device, step, reason, detail, true);
        record.step = step;
        record.updated = progress.time.clone();
        self.record_outcome(record, &progress).await;
        let outcome = if progress.ok == Some(true) { "ok" } else { step.as_str() };
        metrics::counter!(names::FLEET_DEPLOYMENTS, "action" => action_str(record.action), "outcome" => outcome)
            .increment(1);
        tracing::info!(deployment = %record.id, step = step.as_str(), bundle = record.bundle.as_deref(), version = record.version.as_deref(),
            reason = progress.reason.as_ref().map(|reason| reason.message.as_str()), "deployment finished");
        self.audit(
            AuditKind::DeploymentFinished,
            json!({"deployment": record.id, "action": record.action, "step": step, "bundle": record.bundle,
                   "version": record.version, "reason": progress.reason}),
        )
        .await;
        self.queue_outcome(record, &progress).await;
        // The retained history follows.
        self.context.changed.notify_one();
    }

    /// Records a deployment's outcome, not yet queued: a crash before
    /// [`queue_outcome`](Self::queue_outcome) leaves it for the next start to queue (see
    /// [`FleetState::restore`]), so no finished deployment goes unreported.
    async fn record_outcome(&self, record: &mut DeploymentRecord, outcome: &Progress) {
        record.outcome = Some(outcome.clone());
        record.outcome_queued = false;
        if let Err(error) = self.context.state.save(record).await {
            tracing::error!(%error, deployment = %record.id, "cannot record a deployment's outcome");
        }
    }

    /// Queues the recorded outcome, then records that it is queued.
    async fn queue_outcome(&self, record: &mut DeploymentRecord, outcome: &Progress) {
        self.publish(outcome).await;
        if let Err(error) = self.context.state.mark_queued(record).await {
            tracing::error!(%error, deployment = %record.id, "cannot record that a deployment's outcome is queued");
        }
    }

    /// Queues a progress message on its deployment's topic.
    async fn publish(&self, progress: &Progress) {
        let topic = self.context.topics.deployment(&self.context.device, &progress.deployment);
        let payload = serde_json::to_string(progress).unwrap_or_default();
        if let Err(error) = self.context.outbox.push(Queued { kind: Kind::Deployment, topic, payload }).await {
            tracing::error!(%error, deployment = %progress.deployment, "cannot queue a deployment message");
        }
    }

    /// A request refused before it was taken: answered under its claimed id where that is
    /// safe (else under an id made here), logged and audited always.
    ///
    /// Only an authentic (signed) request is recorded, so that it is answered with the same
    /// outcome when repeated; anything else is not, so a forgery can neither take the id of
    /// a real request nor fill the records. It is answered on its claimed id's topic only
    /// while no real request has that id, so it cannot put a false outcome on a real
    /// deployment's topic either.
    async fn refuse(&self, refusal: Refusal) {
        let Refusal { claimed, authentic, reason } = refusal;
        let answer_on = match &claimed {
            Some(id) => match self.context.state.deployment(id) {
                Ok(None) => Some(id.clone()),
                Ok(Some(record)) if authentic => {
                    if let Some(outcome) = record.outcome {
                        self.publish(&outcome).await;
                    }
                    return;
                }
                _ => None,
            },
            None => None,
        };
        let record_id = answer_on.clone().unwrap_or_else(|| DeploymentId::generate("refused-"));
        tracing::warn!(deployment = %record_id, claimed = claimed.as_ref().map(DeploymentId::as_str), code = ?reason.code,
            reason = %reason.message, "deployment request refused");
        let mut record = DeploymentRecord::new(record_id, Action::Deploy, None);
        let progress = record.progress(&self.context.device, Step::Rejected, Some(reason.clone()), None, true);
        self.audit(
            AuditKind::DeploymentFinished,
            json!({"deployment": record.id, "step": Step::Rejected, "refused": true, "claimed_id": claimed,
                   "authentic": authentic, "reason": reason}),
        )
        .await;
        metrics::counter!(names::FLEET_DEPLOYMENTS, "action" => "unknown", "outcome" => "refused").increment(1);
        if authentic {
            record.step = Step::Rejected;
            self.record_outcome(&mut record, &progress).await;
            self.queue_outcome(&mut record, &progress).await;
            self.context.state.prune(&self.context.retention).await;
        } else {
            self.publish(&progress).await;
        }
    }

    async fn audit(&self, kind: AuditKind, details: Value) {
        if let Err(error) = self.context.store.audit(kind, details).await {
            tracing::error!(%error, "cannot write an audit record");
        }
    }
}

/// Registers the fleet's counters at zero, every label the appliance can give them, so
/// that a rate over them is defined before the first message or deployment.
pub fn register_series() {
    for kind in [Kind::Metrics, Kind::Event, Kind::Deployment] {
        metrics::counter!(names::FLEET_PUBLISHED, "kind" => kind.as_str()).increment(0);
    }
    for action in [Action::Deploy, Action::Rollback, Action::Remove] {
        let outcomes: &[&str] = match action {
            Action::Deploy => &["ok", "rejected", "rolled_back"],
            Action::Rollback | Action::Remove => &["ok", "rejected"],
        };
        for outcome in outcomes {
            metrics::counter!(names::FLEET_DEPLOYMENTS, "action" => action_str(action), "outcome" => *outcome)
                .increment(0);
        }
    }
    metrics::counter!(names::FLEET_CONNECTIONS).increment(0);
    metrics::gauge!(names::FLEET_CONNECTED).set(0.0);
}

fn action_str(action: Action) -> &'static str {
    match action {
        Action::Deploy => "deploy",
        Action::Rollback => "rollback",
        Action::Remove => "remove",
    }
}

fn bundle_name(request: &Request) -> Option<String> {
    match request {
        Request::Deploy { .. } => None,
        Request::Rollback { bundle, .. } | Request::Remove { bundle, .. } => Some(bundle.to_string()),
    }
}

/// The `.fcb` bytes of a request, checked against its sha256. Decoding and hashing tens of
/// MiB run off the async threads.
async fn fetch(source: BundleSource, max_bytes: usize, limits: DownloadLimits) -> Result<Vec<u8>, DeployError> {
    blocking(move || {
        let bytes = match (&source.inline, &source.url) {
            (Some(inline), _) => base64::engine::general_purpose::STANDARD
                .decode(inline.as_bytes())
                .map_err(|error| DeployError::Transfer(format!("`bundle.inline` is not base64: {error}")))?,
            (None, Some(url)) => download(url, max_bytes, limits)?,
            (None, None) => return Err(DeployError::Transfer("the request carries no bundle".to_owned())),
        };
        let actual = hex::encode(Sha256::digest(&bytes));
        if !actual.eq_ignore_ascii_case(&source.sha256) {
            return Err(DeployError::Transfer(format!(
                "the bundle's sha256 is {actual}, not {} as the request says",
                source.sha256
            )));
        }
        Ok(bytes)
    })
    .await?
}

/// How long a bundle download by URL may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownloadLimits {
    /// To open the connection (`mqtt.download_connect_timeout_secs`).
    pub connect: Duration,
    /// For the whole download, from resolving the name to the last byte
    /// (`mqtt.download_timeout_secs`): a server that never answers, or trickles, cannot
    /// hold the deployment queue longer.
    pub total: Duration,
}

fn download(url: &str, max_bytes: usize, limits: DownloadLimits) -> Result<Vec<u8>, DeployError> {
    let failed = |error: ureq::Error| DeployError::Transfer(format!("cannot download {url}: {error}"));
    // The scheme was checked with the request (`http` only: this build has no TLS client).
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(limits.connect))
        .timeout_global(Some(limits.total))
        .max_redirects(0)
        .build()
        .into();
    let mut response = agent.get(url).call().map_err(failed)?;
    response.body_mut().with_config().limit(max_bytes as u64).read_to_vec().map_err(failed)
}

/// Writes the `.fcb` into `scratch` and unpacks it there; returns the bundle's folder.
pub(crate) fn unpack(bytes: &[u8], scratch: &Path) -> Result<PathBuf, DeployError> {
    let io = |error: std::io::Error| DeployError::Internal(format!("cannot stage the bundle: {error}"));
    std::fs::create_dir_all(scratch).map_err(io)?;
    let file = scratch.join("bundle.fcb");
    std::fs::write(&file, bytes).map_err(io)?;
    let dir = archive::unpack(&file, &scratch.join("unpacked"))?;
    Ok(dir)
}

/// Renames `from` to `to` (making `to`'s parent) and syncs both parents, so the move
/// survives a power loss.
fn move_dir(from: &Path, to: &Path) -> Result<(), String> {
    let parent = to.parent().ok_or_else(|| format!("{} has no parent", to.display()))?;
    std::fs::create_dir_all(parent).map_err(|error| format!("cannot make {}: {error}", parent.display()))?;
    if to.exists() {
        std::fs::remove_dir_all(to).map_err(|error| format!("cannot replace {}: {error}", to.display()))?;
    }
    std::fs::rename(from, to).map_err(|error| format!("cannot move the bundle to {}: {error}", to.display()))?;
    for dir in [Some(parent), from.parent()].into_iter().flatten() {
        std::fs::File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|error| format!("cannot sync {}: {error}", dir.display()))?;
    }
    Ok(())
}

/// Runs blocking work (unpacking, compiling, smoke tests) off the runtime's threads.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, DeployError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| DeployError::Internal(format!("a deployment step panicked: {error}")))
}

/// The accuracy part of a canary's verdict: its outcomes since the canary started against
/// the active version's (`before`: both versions' counts when it started).
fn judge_accuracy(
    gate: &AccuracyGate,
    canary: &Bundle,
    active: Option<&Bundle>,
    before: &(Counts, Option<Counts>),
) -> (AccuracyVerdict, serde_json::Value) {
    let canary_window = canary.accuracy().counts().since(&before.0);
    let baselines = match active {
        Some(active) => {
            let now = active.accuracy().counts();
            let window = before.1.as_ref().map_or_else(|| now.clone(), |earlier| now.since(earlier));
            let training =
                active.training().and_then(|figures| figures.mape.or(figures.accuracy.map(|accuracy| 1.0 - accuracy)));
            Baselines { window, since_loaded: now, training }
        }
        None => Baselines { window: Counts::default(), since_loaded: Counts::default(), training: None },
    };
    canary::judge(gate, &canary_window, &baselines)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that accepts connections and never answers, holding each socket open.
    fn silent_server() -> (String, std::thread::JoinHandle<()>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/bundle.fcb", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let (socket, _) = listener.accept().unwrap();
            // Held until the client gives up and closes its end.
            let _ = std::io::Read::read_to_end(&mut &socket, &mut Vec::new());
        });
        (url, server)
    }

    #[test]
    fn a_download_that_never_answers_ends_at_the_total_timeout() {
        let (url, server) = silent_server();
        let limits = DownloadLimits { connect: Duration::from_secs(1), total: Duration::from_millis(500) };
        let started = Instant::now();
        let error = download(&url, 1 << 20, limits).unwrap_err();
        assert!(matches!(error, DeployError::Transfer(_)), "{error}");
        assert!(error.to_string().contains(&url), "{error}");
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
        server.join().unwrap();
    }

    #[tokio::test]
    async fn inline_bundles_are_decoded_and_checked_against_their_sha256() {
        let limits = DownloadLimits { connect: Duration::from_secs(1), total: Duration::from_secs(1) };
        let sha256 = hex::encode(Sha256::digest(b"fcb"));
        let source = |inline: &str, sha256: &str| BundleSource {
            inline: Some(inline.to_owned()),
            url: None,
            sha256: sha256.to_owned(),
        };
        assert_eq!(fetch(source("ZmNi", &sha256), 1 << 20, limits).await.unwrap(), b"fcb");
        let garbage = fetch(source("!!not base64!!", &sha256), 1 << 20, limits).await.unwrap_err();
        assert!(garbage.to_string().contains("not base64"), "{garbage}");
        let wrong = fetch(source("ZmNi", &"0".repeat(64)), 1 << 20, limits).await.unwrap_err();
        assert_eq!(wrong.reason().code, ReasonCode::TransferFailed);
    }
}
