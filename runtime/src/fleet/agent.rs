//! The appliance's fleet agent: opens the fleet's durable state, and when a broker is
//! configured runs the link and the tasks around it:
//!
//! - intake: each incoming deployment request is recorded, then acknowledged, then queued;
//! - deployer: runs the queued requests one at a time ([`Deployer`]);
//! - publisher: sends the outbox's messages in order, each removed once acknowledged;
//! - status: the retained status and deployment history, on every connection, every
//!   change of versions and every deployment's end;
//! - metrics: a snapshot into the outbox every `metrics_interval_secs`;
//! - events: every audit record into the outbox, following the audit trail with a cursor
//!   kept in the same atomic write as the message, so none is skipped or sent twice
//!   across a crash.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::config::MqttConfig;
use super::deploy::{Context, Deployer};
use super::link::{Link, Started};
use super::messages::{Event, MetricSample, MetricsSnapshot, Status};
use super::outbox::{Kind, Outbox, Queued};
use super::state::{Dirs, FleetState, now};
use super::topics::Topics;
use crate::bundle::Registry;
use crate::store::{Store, StoreError};
use crate::telemetry::{Metrics, names};

/// The outbox cursor of the audit trail: the seq of the last record queued as an event.
const EVENTS_CURSOR: &str = "events";
/// How long a clean shutdown waits for the broker to take the offline status.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(2);

/// The fleet's durable state, open whether or not a broker is configured: deployed
/// bundles load and interrupted deployments resolve at every start.
#[derive(Debug)]
pub struct Fleet {
    config: MqttConfig,
    device: String,
    topics: Topics,
    dirs: Dirs,
    state: FleetState,
    outbox: Arc<Outbox>,
}

/// The agent while it runs.
#[derive(Debug)]
pub struct Running {
    link: Link,
    status: StatusSource,
    tasks: Vec<JoinHandle<()>>,
    health: FleetHealth,
}

/// What /health/detailed shows of the fleet link.
#[derive(Debug, Clone)]
pub struct FleetHealth {
    broker: String,
    device: String,
    link: tokio::sync::watch::Receiver<super::link::Connection>,
    outbox: Arc<Outbox>,
}

impl FleetHealth {
    pub fn snapshot(&self) -> Value {
        let connection = *self.link.borrow();
        json!({
            "broker": self.broker,
            "device": self.device,
            "connected": connection.up,
            "connections": connection.generation,
            "outbox": self.outbox.depth(),
        })
    }
}

impl Fleet {
    /// Opens the fleet's tables and outbox.
    pub fn open(config: &MqttConfig, data_dir: &std::path::Path, store: &Store) -> Result<Self, StoreError> {
        let device = config.device_id.clone().unwrap_or_else(default_device_id);
        let outbox = Outbox::open(store.table("fleet-outbox")?, config.outbox_capacity)?;
        Ok(Self {
            config: config.clone(),
            device,
            topics: Topics::new(&config.topic_prefix),
            dirs: Dirs::new(data_dir),
            state: FleetState::open(store)?,
            outbox: Arc::new(outbox),
        })
    }

    pub fn device(&self) -> &str {
        &self.device
    }

    /// Where deployed bundles live: load them after the shipped ones, after
    /// [`discard_unreferenced`](Self::discard_unreferenced).
    pub fn installed_dir(&self) -> &std::path::Path {
        &self.dirs.installed
    }

    /// Deletes what interrupted deployments left on disk.
    pub fn discard_unreferenced(&self) -> Result<(), StoreError> {
        for dir in self.state.discard_unreferenced(&self.dirs)? {
            tracing::warn!(dir = %dir.display(), "removed a bundle an interrupted deployment left behind");
        }
        Ok(())
    }

    /// Activates the preferred versions and ends interrupted deployments, queueing their
    /// outcomes.
    pub async fn restore(&self, registry: &Registry) -> Result<(), StoreError> {
        self.state.prune(&self.config.retention()).await;
        for mut record in self.state.restore(registry, &self.device).await? {
            let Some(outcome) = record.outcome.as_ref() else { continue };
            tracing::warn!(deployment = %outcome.deployment, step = outcome.step.as_str(), "queueing the outcome of a deployment the restart ended or a crash left unsent");
            let topic = self.topics.deployment(&self.device, &outcome.deployment);
            let payload = serde_json::to_string(outcome).unwrap_or_default();
            self.outbox.push(Queued { kind: Kind::Deployment, topic, payload }).await?;
            self.state.mark_queued(&mut record).await?;
        }
        Ok(())
    }

    /// Starts the link and its tasks, when a broker is configured.
    pub fn start(self, registry: Arc<Registry>, store: Store, metrics: Metrics) -> Option<Running> {
        let broker = self.config.broker_address()?;
        // Before the link starts: it sets the connection gauge from its own task.
        super::deploy::register_series();
        let status = StatusSource {
            registry: Arc::clone(&registry),
            groups: self.config.groups.clone(),
            since: now(),
            topic: self.topics.status(&self.device),
            state: self.state.clone(),
            device: self.device.clone(),
            history_topic: self.topics.history(&self.device),
        };
        // The will is fixed at connection time, so it names no versions (they may change
        // before it is published); a clean stop publishes the full offline status instead.
        let last_will = Status { bundles: BTreeMap::new(), canaries: BTreeMap::new(), ..status.status(false) };
        let last_will = serde_json::to_vec(&last_will).unwrap_or_default();
        let Started { link, mut requests, event_loop } =
            match Link::start(&self.config, &broker, &self.device, last_will) {
                Ok(started) => started,
                Err(error) => {
                    tracing::error!(%error, "the fleet link cannot start");
                    return None;
                }
            };
        let changed = Arc::new(Notify::new());
        let deployer = Deployer::new(Context {
            registry: Arc::clone(&registry),
            store: store.clone(),
            state: self.state.clone(),
            outbox: Arc::clone(&self.outbox),
            topics: self.topics.clone(),
            device: self.device.clone(),
            dirs: self.dirs.clone(),
            max_request_bytes: self.config.max_incoming_packet_bytes(),
            changed: Arc::clone(&changed),
            download: self.config.download_limits(),
            retention: self.config.retention(),
        });
        let (queue, jobs) = Deployer::queue();
        let mut tasks = vec![event_loop, tokio::spawn(deployer.clone().run(jobs))];
        tasks.push(tokio::spawn({
            let link = link.clone();
            async move {
                while let Some(request) = requests.recv().await {
                    if deployer.receive(request.payload.clone(), &request.topic, &queue).await {
                        link.acknowledge(&request).await;
                    }
                }
            }
        }));
        tasks.push(tokio::spawn(publish_outbox(link.clone(), Arc::clone(&self.outbox))));
        tasks.push(tokio::spawn(publish_retained(link.clone(), status.clone(), changed)));
        let interval = Duration::from_secs(self.config.metrics_interval_secs);
        tasks.push(tokio::spawn(snapshot_metrics(
            metrics,
            Arc::clone(&self.outbox),
            self.topics.metrics(&self.device),
            self.device.clone(),
            interval,
        )));
        tasks.push(tokio::spawn(follow_audit(
            store,
            Arc::clone(&self.outbox),
            self.topics.events(&self.device),
            self.device.clone(),
        )));
        let health = FleetHealth {
            broker: broker.label(),
            device: self.device.clone(),
            link: link.connection(),
            outbox: Arc::clone(&self.outbox),
        };
        tracing::info!(broker = %health.broker, device = %self.device, groups = ?self.config.groups, "fleet link started");
        Some(Running { link, status, tasks, health })
    }
}

impl Running {
    pub fn health(&self) -> FleetHealth {
        self.health.clone()
    }

    /// Publishes the offline status (a clean disconnect sends no Last Will), disconnects
    /// and stops the tasks. Whatever is still in the outbox stays for the next run.
    pub async fn shutdown(self) {
        let goodbye = serde_json::to_vec(&self.status.status(false)).unwrap_or_default();
        if self.link.is_connected() {
            let publish = self.link.publish_confirmed(&self.status.topic, goodbye, true);
            let sent = tokio::time::timeout(GOODBYE_TIMEOUT, publish).await;
            if sent.is_err() {
                tracing::warn!("the broker did not take the offline status in time");
            }
        }
        // The event loop ends once the DISCONNECT is on the wire: aborting it sooner would
        // drop the connection without one, and the broker would publish the Last Will.
        self.link.disconnect().await;
        let mut tasks = self.tasks.into_iter();
        if let Some(event_loop) = tasks.next() {
            let _ = tokio::time::timeout(GOODBYE_TIMEOUT, event_loop).await;
        }
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
    }
}

/// The device's retained messages: its status, from the registry as it is now, and its
/// deployment history, from the fleet's records.
#[derive(Debug, Clone)]
struct StatusSource {
    registry: Arc<Registry>,
    groups: Vec<String>,
    since: String,
    topic: String,
    state: FleetState,
    device: String,
    history_topic: String,
}

impl StatusSource {
    fn status(&self, online: bool) -> Status {
        let versions = |map: BTreeMap<String, semver::Version>| {
            map.into_iter().map(|(name, version)| (name, version.to_string())).collect()
        };
        Status {
            online,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            bundles: versions(self.registry.active_versions()),
            since: self.since.clone(),
            groups: self.groups.clone(),
            canaries: versions(self.registry.canary_versions()),
        }
    }
}

/// Sends the outbox's messages in order, forever.
async fn publish_outbox(link: Link, outbox: Arc<Outbox>) {
    loop {
        let (seq, queued) = match outbox.next().await {
            Ok(next) => next,
            Err(error) => {
                tracing::error!(%error, "cannot read the outbox; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if link.publish_confirmed(&queued.topic, queued.payload.into_bytes(), false).await.is_err() {
            return;
        }
        metrics::counter!(names::FLEET_PUBLISHED, "kind" => queued.kind.as_str()).increment(1);
        if let Err(error) = outbox.delivered(seq).await {
            tracing::error!(%error, "cannot remove a delivered message from the outbox");
        }
    }
}

/// Publishes the retained status and history on every connection and every change.
async fn publish_retained(link: Link, status: StatusSource, changed: Arc<Notify>) {
    let topic = status.topic.clone();
    let mut connection = link.connection();
    loop {
        if connection.wait_for(|state| state.up).await.is_err() {
            return;
        }
        let payload = serde_json::to_vec(&status.status(true)).unwrap_or_default();
        if link.publish_confirmed(&topic, payload, true).await.is_err() {
            return;
        }
        match status.state.history(&status.device) {
            Ok(history) => {
                let payload = serde_json::to_vec(&history).unwrap_or_default();
                if link.publish_confirmed(&status.history_topic, payload, true).await.is_err() {
                    return;
                }
            }
            // The status went out; the history follows with the next change.
            Err(error) => tracing::error!(%error, "cannot read the deployment history"),
        }
        let generation = connection.borrow_and_update().generation;
        // Next: a change of versions, a deployment's end, or a new connection.
        tokio::select! {
            () = changed.notified() => {}
            _ = connection.wait_for(|state| state.up && state.generation != generation) => {}
        }
    }
}

/// Queues a snapshot of the counters and gauges every `interval`.
async fn snapshot_metrics(metrics: Metrics, outbox: Arc<Outbox>, topic: String, device: String, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let snapshot = MetricsSnapshot { device: device.clone(), time: now(), samples: samples(&metrics.render()) };
        let payload = serde_json::to_string(&snapshot).unwrap_or_default();
        if let Err(error) = outbox.push(Queued { kind: Kind::Metrics, topic: topic.clone(), payload }).await {
            tracing::error!(%error, "cannot queue a metrics snapshot");
        }
    }
}

/// The counters and gauges of a Prometheus text exposition.
fn samples(text: &str) -> Vec<MetricSample> {
    let lines = text.lines().map(|line| Ok(line.to_owned()));
    let Ok(scrape) = prometheus_parse::Scrape::parse(lines) else { return Vec::new() };
    scrape
        .samples
        .into_iter()
        .filter_map(|sample| {
            let value = match sample.value {
                prometheus_parse::Value::Counter(value)
                | prometheus_parse::Value::Gauge(value)
                | prometheus_parse::Value::Untyped(value) => value,
                _ => return None,
            };
            let labels = sample.labels.iter().map(|(key, value)| (key.clone(), value.clone())).collect();
            value.is_finite().then_some(MetricSample { name: sample.metric, labels, value })
        })
        .collect()
}

/// Queues every durable audit record as an event, in order, resuming after the cursor.
async fn follow_audit(store: Store, outbox: Arc<Outbox>, topic: String, device: String) {
    let mut durable = store.audit_watch();
    loop {
        let records = outbox.cursor(EVENTS_CURSOR).and_then(|cursor| store.audit_records(cursor, 256));
        let records = match records {
            Ok(records) => records,
            Err(error) => {
                // The store is failing; the trail and the cursor stay where they are.
                tracing::error!(%error, "cannot read the audit trail for events; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if records.is_empty() {
            if durable.changed().await.is_err() {
                return;
            }
            continue;
        }
        for record in records {
            let seq = record.seq;
            let event = Event {
                device: device.clone(),
                seq,
                time: record.time,
                kind: record.kind.as_str().to_owned(),
                details: record.details,
            };
            let payload = serde_json::to_string(&event).unwrap_or_default();
            let queued = Queued { kind: Kind::Event, topic: topic.clone(), payload };
            if let Err(error) = outbox.push_with_cursor(queued, Some((EVENTS_CURSOR, seq))).await {
                tracing::error!(%error, "cannot queue an event; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                break;
            }
        }
    }
}

/// The host name, the natural id of an appliance.
fn default_device_id() -> String {
    sysinfo::System::host_name()
        .ok()
        .filter(|name| super::config::check_topic_level("", name).is_ok())
        .unwrap_or_else(|| "forecourt".to_owned())
}
