//! The fleet manager's side of the MQTT link, behind `forecourt fleet`: one short MQTT
//! session that reads the devices' retained statuses and histories, publishes a deployment request to a
//! device or a group, and follows the deployment to one outcome per device.
//!
//! It owns the manager's session (connecting, confirmed subscriptions) and the rules of
//! when a deployment is over and how it ended ([`Tracker`], [`classify`]). It prints
//! nothing: the CLI draws progress from the [`Observation`]s and tables from the
//! [`DeviceOutcome`]s. It never retains a request: a retained deployment would be replayed
//! to every device that subscribes later, long after its manager stopped watching.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use rumqttc::{AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Outgoing, Packet};
use rumqttc::{QoS, SubscribeReasonCode};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use forecourt_protocol::bundle::signature::PrivateKey;
use forecourt_protocol::bundle::{BundleFileError, archive};
use forecourt_protocol::fleet::Topics;
use forecourt_protocol::fleet::broker::{BrokerAddress, check_topic_level};
use forecourt_protocol::fleet::messages::{
    Action, BundleName, BundleSource, CanaryPolicy, DeploymentId, History, Progress, Request, Status,
};
use forecourt_protocol::fleet::signed;

/// The largest `.fcb` a deployment carries inline: the appliances' default `mqtt.max_bundle_mib`.
pub const MAX_BUNDLE_BYTES: u64 = 64 << 20;

/// Room for the request's JSON around the base64 bundle (id, sha256, canary policy).
const REQUEST_OVERHEAD_BYTES: usize = 64 << 10;

/// The largest MQTT packet this client sends or accepts: a [`MAX_BUNDLE_BYTES`] bundle in
/// base64 plus its request.
pub const MAX_PACKET_BYTES: usize = (MAX_BUNDLE_BYTES as usize).div_ceil(3) * 4 + REQUEST_OVERHEAD_BYTES;

/// A manager is a person waiting at a prompt: an unreachable broker must fail fast rather
/// than be retried forever.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// rumqttc bounds every socket flush by its connection timeout, and pushing a 64 MiB
/// bundle over a slow VPN takes far longer than the few seconds that suit connecting.
const WRITE_TIMEOUT: Duration = Duration::from_secs(600);

const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// SUBACKs come straight from the broker; waiting longer means it is not answering.
const SUBACK_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`FleetManager::statuses`] waits for another status before it takes the
/// fleet as complete: retained messages come in one burst after the SUBACK.
pub const DEFAULT_SETTLE: Duration = Duration::from_millis(500);

/// Retained statuses arrive right after the SUBACK, but a busy broker may trickle them:
/// [`FleetManager::statuses`] waits for a quiet spell, and never longer than this.
const STATUS_MAX_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("cannot reach the broker at {broker}: {reason}")]
    Unreachable { broker: String, reason: String },
    #[error("lost the connection to the broker at {broker}: {reason}")]
    ConnectionLost { broker: String, reason: String },
    #[error("the broker at {broker} did not acknowledge the {what} within {} s", waited.as_secs())]
    NotAcknowledged { broker: String, what: &'static str, waited: Duration },
    #[error("the broker at {broker} refused the subscription to {topic}")]
    SubscriptionRefused { broker: String, topic: String },
    #[error("invalid {what} {value:?}: {message}")]
    InvalidName { what: &'static str, value: String, message: String },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("cannot read the bundle {}: {reason}", path.display())]
    BundleUnreadable { path: PathBuf, reason: String },
    #[error("the bundle {} is {size} bytes, over the {} MiB a deployment can carry", path.display(), max >> 20)]
    BundleTooLarge { path: PathBuf, size: u64, max: u64 },
    #[error("{} is not a bundle file (.fcb): {reason}", path.display())]
    NotABundle { path: PathBuf, reason: String },
    #[error("no online device is in group {group:?}{}", offline_members(offline))]
    EmptyGroup { group: String, offline: Vec<String> },
}

fn offline_members(offline: &[String]) -> String {
    if offline.is_empty() { String::new() } else { format!(" (offline: {})", offline.join(", ")) }
}

/// Who a request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One device, by its device id.
    Device(String),
    /// Every device that lists the group in its `mqtt.groups`.
    Group(String),
}

impl Target {
    /// The deploy topic of the target: what a request for it is signed for.
    pub fn topic(&self, topics: &Topics) -> String {
        match self {
            Self::Device(device) => topics.device_deploy(device),
            Self::Group(group) => topics.group_deploy(group),
        }
    }

    pub fn check(&self) -> Result<(), ManagerError> {
        match self {
            Self::Device(device) => check_name("device id", device),
            Self::Group(group) => check_name("group", group),
        }
    }
}

/// How a request is published and followed.
#[derive(Debug, Clone, PartialEq)]
pub struct PushOptions {
    /// How long after publishing to wait for every device's final message.
    pub timeout: Duration,
    /// With a group: wait until at least this many devices reported, for fleets whose
    /// retained statuses are not all at the broker yet.
    pub expect: Option<usize>,
    /// The deployment id; a new UUIDv7 when unset.
    pub id: Option<DeploymentId>,
    /// The quiet spell that ends the collection of retained statuses.
    pub settle: Duration,
    /// How long after publishing the signed request may still be carried out (an offline
    /// device's persistent session may deliver it later); after that devices refuse it.
    pub valid_for: Duration,
}

/// The default of [`PushOptions::valid_for`].
pub const DEFAULT_VALID_FOR: Duration = Duration::from_secs(3600);

impl Default for PushOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(60),
            expect: None,
            id: None,
            settle: DEFAULT_SETTLE,
            valid_for: DEFAULT_VALID_FOR,
        }
    }
}

/// A user name and password for brokers that ask for them.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).finish_non_exhaustive()
    }
}

/// What a deployment is doing, as it happens, for the caller to show.
#[derive(Debug, Clone, Copy)]
pub enum Observation<'a> {
    /// The targeted device's retained status says it is offline, or it has none: the
    /// request is still published, since a persistent session may deliver it later.
    NotOnline { device: &'a str, status: Option<&'a Status> },
    /// The request is about to be published on `topic`; these devices are awaited.
    Publishing { deployment: &'a str, topic: &'a str, expected: &'a BTreeSet<String> },
    /// A device's newest step (its first may come from a device nobody expected).
    Progress(&'a Progress),
}

/// How a deployment ended on one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
    /// No final message before the timeout.
    TimedOut,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeviceOutcome {
    pub device: String,
    pub outcome: Outcome,
    /// The device's newest progress message, if it sent any.
    pub last: Option<Progress>,
    /// From publishing to the final message (or to the end of the wait).
    pub elapsed: Duration,
}

/// Whether a device's newest message ended `action` well. Both the step and the device's
/// own `ok` must agree, so that neither a buggy device nor a misread step passes a failure.
pub fn classify(action: Action, last: Option<&Progress>) -> Outcome {
    match last {
        Some(progress) if progress.is_final => {
            if Progress::succeeded(action, progress.step) && progress.ok != Some(false) {
                Outcome::Succeeded
            } else {
                Outcome::Failed
            }
        }
        _ => Outcome::TimedOut,
    }
}

/// A `.fcb` file read for an inline deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleFile {
    pub path: PathBuf,
    /// The bundle's name and version, from the manifest inside.
    pub name: String,
    pub version: semver::Version,
    pub size: u64,
    /// Lowercase hex sha256 of the file.
    pub sha256: String,
    base64: String,
}

impl BundleFile {
    /// Reads `path`, refusing files over [`MAX_BUNDLE_BYTES`] and files without a manifest.
    pub fn read(path: &Path) -> Result<Self, ManagerError> {
        Self::read_capped(path, MAX_BUNDLE_BYTES)
    }

    fn read_capped(path: &Path, max: u64) -> Result<Self, ManagerError> {
        let unreadable =
            |error: std::io::Error| ManagerError::BundleUnreadable { path: path.to_owned(), reason: error.to_string() };
        let too_large = |size: u64| ManagerError::BundleTooLarge { path: path.to_owned(), size, max };
        // The size is checked before reading so that a wrong path to a disk image fails at once.
        let size = std::fs::metadata(path).map_err(unreadable)?.len();
        if size > max {
            return Err(too_large(size));
        }
        let mut bytes = Vec::new();
        std::fs::File::open(path).map_err(unreadable)?.take(max + 1).read_to_end(&mut bytes).map_err(unreadable)?;
        let size = bytes.len() as u64;
        if size > max {
            return Err(too_large(size));
        }
        // The appliance's own entry rules: a file it would refuse is not sent to a fleet.
        let manifest = archive::read_manifest(path, &bytes).map_err(|error| {
            let reason = match error {
                BundleFileError::Archive { reason, .. } => reason,
                other => other.to_string(),
            };
            ManagerError::NotABundle { path: path.to_owned(), reason }
        })?;
        Ok(Self {
            path: path.to_owned(),
            name: manifest.bundle.name,
            version: manifest.bundle.version,
            size,
            sha256: hex::encode(Sha256::digest(&bytes)),
            base64: base64::engine::general_purpose::STANDARD.encode(&bytes),
        })
    }

    pub fn source(&self) -> BundleSource {
        BundleSource { inline: Some(self.base64.clone()), url: None, sha256: self.sha256.clone() }
    }
}

/// The per-device state of one deployment, and the rules of when it is over.
#[derive(Debug, Clone)]
pub struct Tracker {
    action: Action,
    expect: usize,
    devices: BTreeMap<String, Followed>,
}

#[derive(Debug, Clone, Default)]
struct Followed {
    last: Option<Progress>,
    finished: Option<Duration>,
}

impl Followed {
    fn is_final(&self) -> bool {
        self.last.as_ref().is_some_and(|progress| progress.is_final)
    }
}

impl Tracker {
    /// Follows `action` on the `expected` devices; with `expect`, also until at least that
    /// many devices are known.
    pub fn new(action: Action, expected: &BTreeSet<String>, expect: Option<usize>) -> Self {
        let devices = expected.iter().map(|device| (device.clone(), Followed::default())).collect();
        Self { action, expect: expect.unwrap_or(0), devices }
    }

    /// Records a device's message `elapsed` after publishing; returns it when it is news.
    /// A device nobody expected is added: its retained status may not have arrived yet.
    /// Nothing overrides a final message, and a QoS 1 redelivery is not news.
    pub fn record(&mut self, progress: Progress, elapsed: Duration) -> Option<&Progress> {
        let followed = self.devices.entry(progress.device.clone()).or_default();
        if followed.is_final() || followed.last.as_ref() == Some(&progress) {
            return None;
        }
        if progress.is_final {
            followed.finished = Some(elapsed);
        }
        Some(&*followed.last.insert(progress))
    }

    /// Every known device ended, and enough devices are known. Nothing known, nothing
    /// expected: over at once (the caller refuses such a request before publishing).
    pub fn is_done(&self) -> bool {
        self.devices.len() >= self.expect && self.devices.values().all(Followed::is_final)
    }

    /// One outcome per known device, sorted by device; `elapsed` is the whole wait.
    pub fn outcomes(self, elapsed: Duration) -> Vec<DeviceOutcome> {
        let action = self.action;
        self.devices
            .into_iter()
            .map(|(device, followed)| DeviceOutcome {
                outcome: classify(action, followed.last.as_ref()),
                elapsed: followed.finished.unwrap_or(elapsed),
                last: followed.last,
                device,
            })
            .collect()
    }
}

/// The devices a request for `target` waits for: a group's online members, or the one device.
pub fn expected_devices(target: &Target, statuses: &BTreeMap<String, Status>) -> BTreeSet<String> {
    match target {
        Target::Device(device) => BTreeSet::from([device.clone()]),
        Target::Group(group) => statuses
            .iter()
            .filter(|(_, status)| status.online && status.groups.contains(group))
            .map(|(device, _)| device.clone())
            .collect(),
    }
}

/// Applies one retained message (a status or a history, as `topic_of` builds its topic)
/// to `by_device`. An empty payload is a cleared retained message; a malformed one is
/// skipped (one broken device must not hide the fleet). Returns whether `topic` was one
/// of that kind at all.
fn apply_retained<T: serde::de::DeserializeOwned>(
    topics: &Topics,
    topic_of: fn(&Topics, &str) -> String,
    by_device: &mut BTreeMap<String, T>,
    topic: &str,
    payload: &[u8],
) -> bool {
    let Some(device) = topics.device_of(topic).filter(|device| topic_of(topics, device) == topic) else {
        return false;
    };
    if payload.is_empty() {
        by_device.remove(device);
        return true;
    }
    match serde_json::from_slice::<T>(payload) {
        Ok(message) => {
            by_device.insert(device.to_owned(), message);
        }
        Err(error) => tracing::warn!(device, topic, %error, "skipping a malformed retained message"),
    }
    true
}

/// The progress message on `topic`, if it is one of `deployment`'s and well-formed.
fn progress_of(topics: &Topics, deployment: &str, topic: &str, payload: &[u8]) -> Option<Progress> {
    let device = topics.device_of(topic).filter(|device| topics.deployment(device, deployment) == topic)?;
    let progress = serde_json::from_slice::<Progress>(payload)
        .inspect_err(|error| tracing::warn!(device, %error, "skipping a malformed progress message"))
        .ok()?;
    if progress.device != device || progress.deployment != deployment {
        tracing::warn!(
            device,
            claimed_device = progress.device,
            claimed_deployment = progress.deployment,
            "skipping a progress message that names another device or deployment"
        );
        return None;
    }
    Some(progress)
}

fn check_name(what: &'static str, value: &str) -> Result<(), ManagerError> {
    check_topic_level(value).map_err(|message| ManagerError::InvalidName { what, value: value.to_owned(), message })
}

/// Checks a request with the appliance's own parser, so a request it would reject is never
/// published. The inline bundle is left out: it is large, and only its presence matters.
fn check_request(request: &Request) -> Result<(), ManagerError> {
    let probe = match request {
        Request::Deploy { id, bundle, canary } => Request::Deploy {
            id: id.clone(),
            bundle: BundleSource {
                inline: bundle.inline.as_ref().map(|_| String::new()),
                url: bundle.url.clone(),
                sha256: bundle.sha256.clone(),
            },
            canary: canary.clone(),
        },
        other => other.clone(),
    };
    let json = serde_json::to_vec(&probe).map_err(|error| ManagerError::InvalidRequest(error.to_string()))?;
    Request::parse(&json).map(drop).map_err(|(_, reason)| ManagerError::InvalidRequest(reason.message))
}

/// rumqttc's errors in words a manager can act on.
fn describe(error: &ConnectionError) -> String {
    match error {
        ConnectionError::Io(error) => match error.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
            std::io::ErrorKind::ConnectionReset => "connection reset".to_owned(),
            std::io::ErrorKind::TimedOut => "timed out".to_owned(),
            _ => error.to_string(),
        },
        ConnectionError::NetworkTimeout => format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
        ConnectionError::ConnectionRefused(code) => format!("the broker refused the connection: {}", refusal(*code)),
        other => other.to_string(),
    }
}

fn refusal(code: ConnectReturnCode) -> &'static str {
    match code {
        ConnectReturnCode::Success => "success",
        ConnectReturnCode::RefusedProtocolVersion => "it does not speak MQTT 3.1.1",
        ConnectReturnCode::BadClientId => "client id rejected",
        ConnectReturnCode::ServiceUnavailable => "service unavailable",
        ConnectReturnCode::BadUserNamePassword => "bad user name or password",
        ConnectReturnCode::NotAuthorized => "not authorized",
    }
}

/// What the event loop task passes on: messages, and the acknowledgements the manager waits for.
#[derive(Debug)]
enum Inbound {
    Message { topic: String, payload: Bytes },
    SubscribeSent(u16),
    SubAck { pkid: u16, granted: bool },
    PublishSent(u16),
    PubAck(u16),
    Lost(String),
}

/// Drives the connection and passes on what the manager needs. It stops on the first
/// error instead of reconnecting: the session is clean, so a reconnection would lose the
/// subscriptions and, silently, the progress of the deployment being followed.
async fn forward(mut eventloop: EventLoop, sender: mpsc::UnboundedSender<Inbound>) {
    loop {
        let inbound = match eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                Inbound::Message { topic: publish.topic, payload: publish.payload }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => Inbound::SubAck {
                pkid: ack.pkid,
                granted: ack.return_codes.iter().all(|code| matches!(code, SubscribeReasonCode::Success(_))),
            },
            Ok(Event::Incoming(Packet::PubAck(ack))) => Inbound::PubAck(ack.pkid),
            Ok(Event::Outgoing(Outgoing::Subscribe(pkid))) => Inbound::SubscribeSent(pkid),
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => Inbound::PublishSent(pkid),
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
            Ok(_) => continue,
            Err(error) => Inbound::Lost(describe(&error)),
        };
        let lost = matches!(inbound, Inbound::Lost(_));
        if sender.send(inbound).is_err() || lost {
            return;
        }
    }
}

async fn first_connack(eventloop: &mut EventLoop) -> Result<(), String> {
    // rumqttc bounds the connection by CONNECT_TIMEOUT already; this also bounds name lookup.
    match tokio::time::timeout(CONNECT_TIMEOUT + Duration::from_secs(1), eventloop.poll()).await {
        Err(_) => Err(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs())),
        Ok(Err(error)) => Err(describe(&error)),
        Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => Ok(()),
        Ok(Ok(other)) => Err(format!("expected a CONNACK, got {other:?}")),
    }
}

/// One MQTT session with the fleet's broker.
#[derive(Debug)]
pub struct FleetManager {
    client: AsyncClient,
    inbound: mpsc::UnboundedReceiver<Inbound>,
    /// Messages that arrived while an acknowledgement was awaited, in order.
    backlog: VecDeque<(String, Bytes)>,
    topics: Topics,
    broker: String,
    task: JoinHandle<()>,
}

impl FleetManager {
    /// Connects with a fresh client id and a clean session: the manager's subscriptions
    /// last as long as one command, and nothing should be queued for it in between.
    pub async fn connect(
        broker: &BrokerAddress,
        prefix: &str,
        credentials: Option<&Credentials>,
    ) -> Result<Self, ManagerError> {
        check_name("topic prefix", prefix)?;
        let label = broker.label();
        let client_id = format!("forecourt-fleet-{}", uuid::Uuid::now_v7());
        let transport =
            broker.transport().map_err(|reason| ManagerError::Unreachable { broker: label.clone(), reason })?;
        let mut options = MqttOptions::new(client_id, broker.host.clone(), broker.port);
        options
            .set_transport(transport)
            .set_clean_session(true)
            .set_keep_alive(KEEP_ALIVE)
            .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
        if let Some(credentials) = credentials {
            options.set_credentials(&credentials.username, &credentials.password);
        }
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        eventloop.network_options.set_connection_timeout(CONNECT_TIMEOUT.as_secs());
        first_connack(&mut eventloop)
            .await
            .map_err(|reason| ManagerError::Unreachable { broker: label.clone(), reason })?;
        eventloop.network_options.set_connection_timeout(WRITE_TIMEOUT.as_secs());
        // Unbounded: statuses and progress messages are small and the session is short,
        // and a full channel would stall the event loop, keep-alives included.
        let (sender, inbound) = mpsc::unbounded_channel();
        let task = tokio::spawn(forward(eventloop, sender));
        Ok(Self { client, inbound, backlog: VecDeque::new(), topics: Topics::new(prefix), broker: label, task })
    }

    /// Every device's retained status: collected until `settle` passes without a new one
    /// (at most a few seconds). Malformed statuses are skipped with a warning.
    pub async fn statuses(&mut self, settle: Duration) -> Result<BTreeMap<String, Status>, ManagerError> {
        let filter = self.topics.all_statuses();
        self.retained(&filter, Topics::status, settle).await
    }

    /// The retained deployment history of `device`, or of every device: collected as
    /// [`statuses`](Self::statuses) are.
    pub async fn histories(
        &mut self,
        device: Option<&str>,
        settle: Duration,
    ) -> Result<BTreeMap<String, History>, ManagerError> {
        let filter = match device {
            Some(device) => {
                check_name("device", device)?;
                self.topics.history(device)
            }
            None => self.topics.all_histories(),
        };
        self.retained(&filter, Topics::history, settle).await
    }

    async fn retained<T: serde::de::DeserializeOwned>(
        &mut self,
        filter: &str,
        topic_of: fn(&Topics, &str) -> String,
        settle: Duration,
    ) -> Result<BTreeMap<String, T>, ManagerError> {
        self.subscribe(filter).await?;
        let give_up = Instant::now() + STATUS_MAX_WAIT.max(settle);
        let mut quiet_until = (Instant::now() + settle).min(give_up);
        let mut by_device = BTreeMap::new();
        while let Some((topic, payload)) = self.next_message(quiet_until).await? {
            if apply_retained(&self.topics, topic_of, &mut by_device, &topic, &payload) {
                quiet_until = (Instant::now() + settle).min(give_up);
            }
        }
        // Later changes are of no use here; the UNSUBACK is not worth waiting for.
        let _ = self.client.unsubscribe(filter).await;
        Ok(by_device)
    }

    /// Installs `bundle` on `target` (as a canary first with `canary`) and follows it.
    pub async fn deploy(
        &mut self,
        target: &Target,
        bundle: &BundleFile,
        canary: Option<CanaryPolicy>,
        signer: &PrivateKey,
        options: &PushOptions,
        observer: impl FnMut(Observation<'_>),
    ) -> Result<Vec<DeviceOutcome>, ManagerError> {
        let request = Request::Deploy { id: deployment_id(options), bundle: bundle.source(), canary };
        self.execute(target, request, signer, options, observer).await
    }

    /// Makes the version that was active before the current one of `bundle` active again.
    pub async fn rollback(
        &mut self,
        target: &Target,
        bundle: &BundleName,
        signer: &PrivateKey,
        options: &PushOptions,
        observer: impl FnMut(Observation<'_>),
    ) -> Result<Vec<DeviceOutcome>, ManagerError> {
        let request = Request::Rollback { id: deployment_id(options), bundle: bundle.clone() };
        self.execute(target, request, signer, options, observer).await
    }

    /// Unloads the inactive `version` of `bundle` and deletes its files.
    #[allow(clippy::too_many_arguments)]
    pub async fn remove(
        &mut self,
        target: &Target,
        bundle: &BundleName,
        version: &semver::Version,
        signer: &PrivateKey,
        options: &PushOptions,
        observer: impl FnMut(Observation<'_>),
    ) -> Result<Vec<DeviceOutcome>, ManagerError> {
        let request = Request::Remove { id: deployment_id(options), bundle: bundle.clone(), version: version.clone() };
        self.execute(target, request, signer, options, observer).await
    }

    /// Says goodbye to the broker, so it does not wait a keep-alive to drop the session.
    pub async fn disconnect(mut self) {
        if self.client.disconnect().await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.task).await;
        }
    }

    async fn execute(
        &mut self,
        target: &Target,
        request: Request,
        signer: &PrivateKey,
        options: &PushOptions,
        mut observer: impl FnMut(Observation<'_>),
    ) -> Result<Vec<DeviceOutcome>, ManagerError> {
        target.check()?;
        check_request(&request)?;
        let statuses = self.statuses(options.settle).await?;
        let expected = self.expected(target, &statuses, options.expect, &mut observer)?;
        let deployment = request.id().to_string();
        let action = request.action();
        let progress_filter = self.topics.all_deployments(&deployment);
        // Subscribed before publishing: a fast device's first steps must not be missed.
        self.subscribe(&progress_filter).await?;
        let topic = target.topic(&self.topics);
        observer(Observation::Publishing { deployment: &deployment, topic: &topic, expected: &expected });
        let started = Instant::now();
        let deadline = started + options.timeout;
        let payload = seal(&request, &topic, signer, options.valid_for)?;
        // The inline bundle is tens of MiB; nothing needs it once the broker has it.
        drop(request);
        self.publish(&topic, payload, deadline, options.timeout).await?;

        let mut tracker = Tracker::new(action, &expected, options.expect);
        while !tracker.is_done() {
            let Some((topic, payload)) = self.next_message(deadline).await? else { break };
            let Some(progress) = progress_of(&self.topics, &deployment, &topic, &payload) else { continue };
            if let Some(progress) = tracker.record(progress, started.elapsed()) {
                observer(Observation::Progress(progress));
            }
        }
        let _ = self.client.unsubscribe(progress_filter).await;
        Ok(tracker.outcomes(started.elapsed()))
    }

    /// The devices to wait for; refuses a group with no online member unless `expect` says
    /// more devices are coming, since nobody would answer.
    fn expected(
        &self,
        target: &Target,
        statuses: &BTreeMap<String, Status>,
        expect: Option<usize>,
        observer: &mut impl FnMut(Observation<'_>),
    ) -> Result<BTreeSet<String>, ManagerError> {
        let expected = expected_devices(target, statuses);
        match target {
            Target::Device(device) => {
                let status = statuses.get(device);
                if !status.is_some_and(|status| status.online) {
                    observer(Observation::NotOnline { device, status });
                }
            }
            Target::Group(group) if expected.is_empty() && expect.is_none() => {
                let offline = statuses
                    .iter()
                    .filter(|(_, status)| status.groups.contains(group))
                    .map(|(device, _)| device.clone())
                    .collect();
                return Err(ManagerError::EmptyGroup { group: group.clone(), offline });
            }
            Target::Group(_) => {}
        }
        Ok(expected)
    }

    async fn subscribe(&mut self, filter: &str) -> Result<(), ManagerError> {
        self.client.subscribe(filter, QoS::AtLeastOnce).await.map_err(|error| self.lost(error.to_string()))?;
        let deadline = Instant::now() + SUBACK_TIMEOUT;
        let broker = self.broker.clone();
        let not_acknowledged =
            || ManagerError::NotAcknowledged { broker: broker.clone(), what: "subscription", waited: SUBACK_TIMEOUT };
        let sent = self.wait_for(deadline, |inbound| match inbound {
            Inbound::SubscribeSent(pkid) => Some(*pkid),
            _ => None,
        });
        let pkid = sent.await?.ok_or_else(not_acknowledged)?;
        let acknowledged = self.wait_for(deadline, |inbound| match inbound {
            Inbound::SubAck { pkid: acked, granted } if *acked == pkid => Some(*granted),
            _ => None,
        });
        match acknowledged.await? {
            Some(true) => Ok(()),
            Some(false) => Err(ManagerError::SubscriptionRefused { broker, topic: filter.to_owned() }),
            None => Err(not_acknowledged()),
        }
    }

    /// Publishes at QoS 1, never retained, and waits for the broker's PUBACK: until then
    /// the request may still be in the socket's buffer.
    async fn publish(
        &mut self,
        topic: &str,
        payload: Vec<u8>,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<(), ManagerError> {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .map_err(|error| self.lost(error.to_string()))?;
        let broker = self.broker.clone();
        let not_acknowledged =
            || ManagerError::NotAcknowledged { broker: broker.clone(), what: "request", waited: timeout };
        let sent = self.wait_for(deadline, |inbound| match inbound {
            Inbound::PublishSent(pkid) => Some(*pkid),
            _ => None,
        });
        let pkid = sent.await?.ok_or_else(not_acknowledged)?;
        let acknowledged = self.wait_for(deadline, |inbound| match inbound {
            Inbound::PubAck(acked) => (*acked == pkid).then_some(()),
            _ => None,
        });
        acknowledged.await?.ok_or_else(not_acknowledged)
    }

    /// Waits for the event `wanted` picks, keeping the messages that arrive meanwhile;
    /// `None` when `deadline` passes first.
    async fn wait_for<T>(
        &mut self,
        deadline: Instant,
        wanted: impl Fn(&Inbound) -> Option<T>,
    ) -> Result<Option<T>, ManagerError> {
        loop {
            let Some(inbound) = self.receive(deadline).await? else { return Ok(None) };
            if let Some(found) = wanted(&inbound) {
                return Ok(Some(found));
            }
            if let Inbound::Message { topic, payload } = inbound {
                self.backlog.push_back((topic, payload));
            }
        }
    }

    /// The next message, kept ones first; `None` when `deadline` passes first.
    async fn next_message(&mut self, deadline: Instant) -> Result<Option<(String, Bytes)>, ManagerError> {
        if let Some(message) = self.backlog.pop_front() {
            return Ok(Some(message));
        }
        loop {
            match self.receive(deadline).await? {
                None => return Ok(None),
                Some(Inbound::Message { topic, payload }) => return Ok(Some((topic, payload))),
                Some(_) => continue,
            }
        }
    }

    async fn receive(&mut self, deadline: Instant) -> Result<Option<Inbound>, ManagerError> {
        match tokio::time::timeout_at(deadline, self.inbound.recv()).await {
            Err(_) => Ok(None),
            Ok(None) => Err(self.lost("the MQTT event loop stopped".to_owned())),
            Ok(Some(Inbound::Lost(reason))) => Err(self.lost(reason)),
            Ok(Some(inbound)) => Ok(Some(inbound)),
        }
    }

    fn lost(&self, reason: String) -> ManagerError {
        ManagerError::ConnectionLost { broker: self.broker.clone(), reason }
    }
}

impl Drop for FleetManager {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn deployment_id(options: &PushOptions) -> DeploymentId {
    options.id.clone().unwrap_or_else(|| DeploymentId::generate(""))
}

/// The signed envelope of `request` for `topic`, valid for `valid_for` from now.
pub fn seal(request: &Request, topic: &str, signer: &PrivateKey, valid_for: Duration) -> Result<Vec<u8>, ManagerError> {
    let request = serde_json::to_value(request).map_err(|error| ManagerError::InvalidRequest(error.to_string()))?;
    Ok(signed::seal(&request, topic, signed::unix_now() + valid_for.as_secs(), signer))
}

/// A car-price 1.3.0 progress message of deployment `d1`, for the tests here and in `cli`.
#[cfg(test)]
pub(crate) fn example_progress(
    device: &str,
    action: Action,
    step: forecourt_protocol::fleet::messages::Step,
) -> Progress {
    let is_final = step.is_final();
    Progress {
        deployment: "d1".to_owned(),
        device: device.to_owned(),
        action,
        step,
        time: "2026-01-01T00:00:00Z".to_owned(),
        bundle: Some("car-price".to_owned()),
        version: Some("1.3.0".to_owned()),
        previous: None,
        reason: None,
        detail: None,
        is_final,
        ok: is_final.then(|| Progress::succeeded(action, step)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use forecourt_protocol::bundle::MANIFEST_FILE;
    use forecourt_protocol::fleet::messages::Step;

    fn progress(device: &str, action: Action, step: Step) -> Progress {
        example_progress(device, action, step)
    }

    fn devices(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    fn status(online: bool, groups: &[&str]) -> Status {
        Status {
            online,
            version: "0.1.0".to_owned(),
            bundles: BTreeMap::from([("car-price".to_owned(), "1.2.0".to_owned())]),
            since: "2026-01-01T00:00:00Z".to_owned(),
            groups: groups.iter().map(|group| (*group).to_owned()).collect(),
            canaries: BTreeMap::new(),
        }
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn a_deployment_is_over_when_every_expected_device_sent_a_final_message() {
        let mut tracker = Tracker::new(Action::Deploy, &devices(&["a", "b"]), None);
        assert!(!tracker.is_done());
        assert!(tracker.record(progress("a", Action::Deploy, Step::Verified), SECOND).is_some());
        assert!(tracker.record(progress("a", Action::Deploy, Step::Active), 2 * SECOND).is_some());
        assert!(!tracker.is_done(), "b has not answered");
        tracker.record(progress("b", Action::Deploy, Step::Rejected), 3 * SECOND);
        assert!(tracker.is_done());

        let outcomes = tracker.outcomes(10 * SECOND);
        assert_eq!(
            outcomes.iter().map(|o| (o.device.as_str(), o.outcome)).collect::<Vec<_>>(),
            [("a", Outcome::Succeeded), ("b", Outcome::Failed)]
        );
        assert_eq!(outcomes[0].elapsed, 2 * SECOND, "the time of the final message, not of the whole wait");
        assert_eq!(outcomes[0].last.as_ref().unwrap().step, Step::Active);
    }

    #[test]
    fn unexpected_devices_are_added_and_awaited() {
        let mut tracker = Tracker::new(Action::Deploy, &devices(&["a"]), None);
        tracker.record(progress("a", Action::Deploy, Step::Active), SECOND);
        assert!(tracker.is_done());
        tracker.record(progress("late", Action::Deploy, Step::Staged), SECOND);
        assert!(!tracker.is_done(), "a device that reported must end too");
        tracker.record(progress("late", Action::Deploy, Step::Active), SECOND);
        assert!(tracker.is_done());
        assert_eq!(tracker.outcomes(SECOND).len(), 2);
    }

    #[test]
    fn expect_waits_for_enough_devices() {
        let mut tracker = Tracker::new(Action::Deploy, &BTreeSet::new(), Some(2));
        assert!(!tracker.is_done(), "nobody answered yet");
        tracker.record(progress("a", Action::Deploy, Step::Active), SECOND);
        assert!(!tracker.is_done(), "one of two");
        tracker.record(progress("b", Action::Deploy, Step::Received), SECOND);
        assert!(!tracker.is_done());
        tracker.record(progress("b", Action::Deploy, Step::Active), SECOND);
        assert!(tracker.is_done());
    }

    #[test]
    fn nothing_overrides_a_final_message_and_redeliveries_are_not_news() {
        let mut tracker = Tracker::new(Action::Deploy, &devices(&["a"]), None);
        let staged = progress("a", Action::Deploy, Step::Staged);
        assert!(tracker.record(staged.clone(), SECOND).is_some());
        assert!(tracker.record(staged, SECOND).is_none(), "a QoS 1 duplicate");
        tracker.record(progress("a", Action::Deploy, Step::Active), SECOND);
        assert!(tracker.record(progress("a", Action::Deploy, Step::Loaded), SECOND).is_none());
        assert_eq!(tracker.outcomes(SECOND)[0].outcome, Outcome::Succeeded);
    }

    #[test]
    fn devices_that_never_ended_timed_out() {
        let mut tracker = Tracker::new(Action::Deploy, &devices(&["silent", "slow"]), None);
        tracker.record(progress("slow", Action::Deploy, Step::Canary), SECOND);
        let outcomes = tracker.outcomes(60 * SECOND);
        assert!(outcomes.iter().all(|o| o.outcome == Outcome::TimedOut && o.elapsed == 60 * SECOND));
        assert_eq!(outcomes[0].last, None);
        assert_eq!(outcomes[1].last.as_ref().unwrap().step, Step::Canary);
    }

    #[test]
    fn success_depends_on_the_action() {
        let outcome = |action, step| classify(action, Some(&progress("a", action, step)));
        assert_eq!(outcome(Action::Deploy, Step::Active), Outcome::Succeeded);
        assert_eq!(outcome(Action::Deploy, Step::RolledBack), Outcome::Failed, "the canary failed");
        assert_eq!(outcome(Action::Deploy, Step::Rejected), Outcome::Failed);
        assert_eq!(outcome(Action::Rollback, Step::RolledBack), Outcome::Succeeded);
        assert_eq!(outcome(Action::Rollback, Step::Rejected), Outcome::Failed);
        assert_eq!(outcome(Action::Remove, Step::Removed), Outcome::Succeeded);
        assert_eq!(outcome(Action::Remove, Step::Rejected), Outcome::Failed);
        assert_eq!(outcome(Action::Deploy, Step::SmokeTested), Outcome::TimedOut);
        assert_eq!(classify(Action::Deploy, None), Outcome::TimedOut);

        let mut refused = progress("a", Action::Deploy, Step::Active);
        refused.ok = Some(false);
        assert_eq!(classify(Action::Deploy, Some(&refused)), Outcome::Failed, "the device's own word counts");
    }

    #[test]
    fn a_group_awaits_its_online_members() {
        let statuses = BTreeMap::from([
            ("a".to_owned(), status(true, &["east"])),
            ("b".to_owned(), status(false, &["east"])),
            ("c".to_owned(), status(true, &["west"])),
        ]);
        assert_eq!(expected_devices(&Target::Group("east".into()), &statuses), devices(&["a"]));
        assert_eq!(expected_devices(&Target::Group("north".into()), &statuses), devices(&[]));
        assert_eq!(expected_devices(&Target::Device("zz".into()), &statuses), devices(&["zz"]));
    }

    #[test]
    fn malformed_or_cleared_statuses_do_not_hide_the_others() {
        let topics = Topics::new("fc");
        let mut statuses: BTreeMap<String, Status> = BTreeMap::new();
        let good = serde_json::to_vec(&status(true, &[])).unwrap();
        let mut apply =
            |topic: &str, payload: &[u8]| apply_retained(&topics, Topics::status, &mut statuses, topic, payload);
        apply("fc/a/status", &good);
        apply("fc/b/status", &good);
        apply("fc/c/status", b"{\"online\": \"maybe\"}");
        assert!(!apply("fc/d/metrics", &good));
        assert!(!apply("fc/d/history", &good), "a history is not a status");
        apply("fc/b/status", b"");
        assert_eq!(statuses.keys().collect::<Vec<_>>(), ["a"]);
    }

    #[test]
    fn progress_is_taken_only_from_its_own_device_and_deployment() {
        let topics = Topics::new("fc");
        let payload = |device: &str| serde_json::to_vec(&progress(device, Action::Deploy, Step::Verified)).unwrap();
        assert!(progress_of(&topics, "d1", "fc/a/deployments/d1", &payload("a")).is_some());
        assert!(progress_of(&topics, "d1", "fc/a/deployments/d1", &payload("b")).is_none(), "names another device");
        assert!(progress_of(&topics, "d2", "fc/a/deployments/d2", &payload("a")).is_none(), "names d1");
        assert!(progress_of(&topics, "d1", "fc/a/status", &payload("a")).is_none());
        assert!(progress_of(&topics, "d1", "fc/a/deployments/d1", b"not json").is_none());
    }

    fn fcb(dir: &Path, manifest: Option<&str>, padding: usize) -> PathBuf {
        let path = dir.join("car-price-1.3.0.fcb");
        let mut builder = tar::Builder::new(Vec::new());
        let mut append = |name: &str, bytes: &[u8]| {
            let mut header = tar::Header::new_ustar();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, format!("car-price-1.3.0/{name}"), bytes).unwrap();
        };
        if let Some(manifest) = manifest {
            append(MANIFEST_FILE, manifest.as_bytes());
        }
        append("preprocess.wasm", b"wasm");
        append("model.onnx", &vec![7; padding]);
        std::fs::write(&path, builder.into_inner().unwrap()).unwrap();
        path
    }

    const MANIFEST: &str = "[bundle]\nname = \"car-price\"\nversion = \"1.3.0\"\nmin_runtime_version = \"0.1.0\"\n\n\
        [plugin]\nfile = \"preprocess.wasm\"\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\n\n\
        [model]\nfile = \"model.onnx\"\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\n";

    #[test]
    fn a_bundle_file_is_read_with_its_digest_and_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = fcb(dir.path(), Some(MANIFEST), 1000);
        let bytes = std::fs::read(&path).unwrap();
        let bundle = BundleFile::read(&path).unwrap();
        assert_eq!((bundle.name.as_str(), bundle.version.to_string().as_str()), ("car-price", "1.3.0"));
        assert_eq!(bundle.size, bytes.len() as u64);
        assert_eq!(bundle.sha256, hex::encode(Sha256::digest(&bytes)));
        let source = bundle.source();
        assert_eq!(source.sha256, bundle.sha256);
        assert_eq!(base64::engine::general_purpose::STANDARD.decode(source.inline.unwrap()).unwrap(), bytes);
    }

    #[test]
    fn bundle_files_over_the_cap_or_without_a_manifest_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = fcb(dir.path(), Some(MANIFEST), 10_000);
        let error = BundleFile::read_capped(&path, 4096).unwrap_err();
        assert!(matches!(error, ManagerError::BundleTooLarge { max: 4096, .. }), "{error}");

        let path = fcb(dir.path(), None, 10);
        let error = BundleFile::read(&path).unwrap_err();
        assert!(error.to_string().contains("bundle.toml"), "{error}");

        let path = dir.path().join("notes.txt");
        std::fs::write(&path, "not a tar at all, just some words that are long enough to fill a header").unwrap();
        assert!(matches!(BundleFile::read(&path).unwrap_err(), ManagerError::NotABundle { .. }));

        let error = BundleFile::read(&dir.path().join("missing.fcb")).unwrap_err();
        assert!(matches!(error, ManagerError::BundleUnreadable { .. }), "{error}");
    }

    #[test]
    fn the_packet_limit_fits_the_largest_bundle_in_base64() {
        let encoded = base64::encoded_len(MAX_BUNDLE_BYTES as usize, true).unwrap();
        assert!(MAX_PACKET_BYTES >= encoded + 1024);
    }

    #[test]
    fn requests_the_appliance_would_refuse_are_not_published() {
        let sha256 = "a".repeat(64);
        let id = |id: &str| DeploymentId::try_from(id).unwrap();
        let deploy = |canary| Request::Deploy {
            id: id("d1"),
            bundle: BundleSource { inline: Some("AAAA".to_owned()), url: None, sha256: sha256.clone() },
            canary,
        };
        check_request(&deploy(Some(CanaryPolicy::with_share(10.0)))).unwrap();
        let error = check_request(&deploy(Some(CanaryPolicy::with_share(150.0)))).unwrap_err();
        assert!(error.to_string().contains("share_percent"), "{error}");
        let bundle = BundleName::try_from("car-price".to_owned()).unwrap();
        check_request(&Request::Rollback { id: id("r1"), bundle }).unwrap();
        assert!(Target::Group("east/west".into()).check().is_err());
        assert!(Target::Device("kiosk+".into()).check().is_err());
    }

    #[test]
    fn errors_name_the_broker() {
        let broker = BrokerAddress { host: "::1".to_owned(), port: 1884, tls: None };
        assert_eq!(broker.label(), "[::1]:1884");
        let refused = ConnectionError::Io(std::io::ErrorKind::ConnectionRefused.into());
        let error = ManagerError::Unreachable { broker: "127.0.0.1:1883".to_owned(), reason: describe(&refused) };
        assert_eq!(error.to_string(), "cannot reach the broker at 127.0.0.1:1883: connection refused");
        let denied = ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized);
        assert_eq!(describe(&denied), "the broker refused the connection: not authorized");
        let error = ManagerError::EmptyGroup { group: "east".to_owned(), offline: vec!["k1".to_owned()] };
        assert_eq!(error.to_string(), "no online device is in group \"east\" (offline: k1)");
    }

    #[tokio::test]
    async fn an_unreachable_broker_fails_at_once_and_says_where() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let broker = BrokerAddress { host: "127.0.0.1".to_owned(), port, tls: None };
        let started = std::time::Instant::now();
        let error = FleetManager::connect(&broker, "forecourt", None).await.unwrap_err();
        assert_eq!(error.to_string(), format!("cannot reach the broker at 127.0.0.1:{port}: connection refused"));
        assert!(started.elapsed() < CONNECT_TIMEOUT);
    }

    #[tokio::test]
    async fn a_silent_broker_fails_within_the_connect_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // Accepts, then never answers the CONNECT.
        let _accepting = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let broker = BrokerAddress { host: "127.0.0.1".to_owned(), port, tls: None };
        let error = FleetManager::connect(&broker, "forecourt", None).await.unwrap_err();
        assert!(error.to_string().contains("no answer within 5 s"), "{error}");
    }
}
