//! The JSON payloads on the fleet's topics (api-shapes.md section 3), shared by the
//! appliance and the fleet manager (`forecourt fleet`), so the two cannot drift apart.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::bundle::check_bundle_name;

/// The longest deployment id.
pub const MAX_ID_LEN: usize = 64;

/// A deployment id: 1 to 64 ASCII letters, digits, '-' or '_'. It names a topic level
/// (`<prefix>/<device>/deployments/<id>`) and a key in the store, so it can never be a
/// path segment such as `..`, a topic wildcard, or a control character. Parsed once, at the
/// message boundary: nothing else in the fleet sees an unchecked id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeploymentId(String);

impl DeploymentId {
    /// A new id made here (a UUIDv7): the manager's default, and the appliance's own name
    /// for what arrived without a usable id.
    pub fn generate(prefix: &str) -> Self {
        Self(format!("{prefix}{}", uuid::Uuid::now_v7()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DeploymentId {
    type Error = String;

    fn try_from(id: String) -> Result<Self, String> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if id.is_empty() || id.len() > MAX_ID_LEN || !id.chars().all(allowed) {
            return Err(format!(
                "the deployment id {} must be 1 to {MAX_ID_LEN} ASCII letters, digits, '-' or '_'",
                excerpt(&id)
            ));
        }
        Ok(Self(id))
    }
}

impl TryFrom<&str> for DeploymentId {
    type Error = String;

    fn try_from(id: &str) -> Result<Self, String> {
        Self::try_from(id.to_owned())
    }
}

impl From<DeploymentId> for String {
    fn from(id: DeploymentId) -> Self {
        id.0
    }
}

impl fmt::Display for DeploymentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A bundle name taken from a message: the manifests' rule ([`check_bundle_name`]), so it
/// is always one plain folder name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BundleName(String);

impl BundleName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for BundleName {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        check_bundle_name(&name).map_err(|message| format!("the bundle name {message}"))?;
        Ok(Self(name))
    }
}

impl From<BundleName> for String {
    fn from(name: BundleName) -> Self {
        name.0
    }
}

impl fmt::Display for BundleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A hostile value, quoted for a message: escaped, and cut to 80 characters.
pub fn excerpt(value: &str) -> String {
    let count = value.chars().count();
    let head: String = value.chars().take(80).collect();
    if count > 80 { format!("{head:?}… ({count} characters)") } else { format!("{head:?}") }
}

/// Fleet -> device, on `<prefix>/<device>/deploy` or `<prefix>/groups/<group>/deploy` (QoS 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Install a bundle and make it active (or a canary).
    Deploy {
        id: DeploymentId,
        bundle: BundleSource,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        canary: Option<CanaryPolicy>,
    },
    /// Make the version that was active before the current one active again.
    Rollback { id: DeploymentId, bundle: BundleName },
    /// Unload an inactive version and delete its files.
    Remove { id: DeploymentId, bundle: BundleName, version: semver::Version },
}

impl Request {
    pub fn id(&self) -> &DeploymentId {
        match self {
            Self::Deploy { id, .. } | Self::Rollback { id, .. } | Self::Remove { id, .. } => id,
        }
    }

    pub fn action(&self) -> Action {
        match self {
            Self::Deploy { .. } => Action::Deploy,
            Self::Rollback { .. } => Action::Rollback,
            Self::Remove { .. } => Action::Remove,
        }
    }

    /// Parses a request, naming the offending field in the error. The deployment id is
    /// returned alongside when it is a valid one, so that even a malformed request gets its
    /// rejection on its own deployment topic.
    pub fn parse(payload: &[u8]) -> Result<Self, (Option<DeploymentId>, Reason)> {
        let value: serde_json::Value = serde_json::from_slice(payload)
            .map_err(|error| (None, Reason::new(ReasonCode::MalformedRequest, format!("not JSON: {error}"))))?;
        Self::from_value(&value)
    }

    /// [`parse`](Self::parse) of JSON already read.
    pub fn from_value(value: &serde_json::Value) -> Result<Self, (Option<DeploymentId>, Reason)> {
        let id = readable_id(value);
        let malformed = |message: String| (id.clone(), Reason::new(ReasonCode::MalformedRequest, message));
        let request: Request = serde_path_to_error::deserialize(value).map_err(|error| {
            let path = error.path().to_string();
            let field = if path == "." { String::new() } else { format!("`{path}`: ") };
            malformed(format!("{field}{}", error.inner()))
        })?;
        if let Self::Deploy { bundle, canary, .. } = &request {
            bundle.validate().map_err(malformed)?;
            if let Some(canary) = canary {
                canary.validate().map_err(malformed)?;
            }
        }
        Ok(request)
    }
}

/// The `id` of a request's JSON, when it is a valid deployment id.
pub fn readable_id(value: &serde_json::Value) -> Option<DeploymentId> {
    value.get("id")?.as_str().and_then(|id| DeploymentId::try_from(id).ok())
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Deploy,
    Rollback,
    Remove,
}

/// Where the bundle's `.fcb` comes from: inline (base64) or by URL, with its sha256 either way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleSource {
    /// The `.fcb` file, standard base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<String>,
    /// An `http://` URL the appliance downloads the `.fcb` from (the only scheme: this
    /// build has no TLS client for downloads; the sha256 is what makes it safe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Lowercase hex sha256 of the `.fcb` file.
    pub sha256: String,
}

impl BundleSource {
    fn validate(&self) -> Result<(), String> {
        match (&self.inline, &self.url) {
            (Some(_), None) | (None, Some(_)) => {}
            _ => return Err("`bundle`: give exactly one of `inline` and `url`".to_owned()),
        }
        if self.sha256.len() != 64 || !self.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err("`bundle.sha256`: must be 64 hex digits".to_owned());
        }
        if let Some(url) = &self.url {
            check_download_url(url).map_err(|message| format!("`bundle.url`: {message}"))?;
        }
        Ok(())
    }
}

/// The longest URL a request may name.
const MAX_URL_LEN: usize = 2048;

/// A download URL: `http://host[:port]/path`, at most 2048 characters.
fn check_download_url(url: &str) -> Result<(), String> {
    if url.len() > MAX_URL_LEN {
        return Err(format!("{} is over {MAX_URL_LEN} characters", excerpt(url)));
    }
    let uri: http::Uri = url.parse().map_err(|error| format!("{} is not a URL: {error}", excerpt(url)))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => return Err(format!("scheme {} is not allowed; only http", excerpt(other))),
        None => return Err(format!("{} has no scheme; use http://host/path", excerpt(url))),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{} has no host", excerpt(url)));
    }
    Ok(())
}

/// A canary: `share_percent` of the bundle's requests go to the new version for
/// `window_secs`; it is rolled back as soon as its error rate or p99 latency breaks a
/// threshold, and promoted at the end of the window otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryPolicy {
    pub share_percent: f64,
    #[serde(default = "CanaryPolicy::default_window_secs")]
    pub window_secs: u64,
    /// Failed requests (plugin, model or internal failures; not the client's input errors)
    /// over all requests.
    #[serde(default = "CanaryPolicy::default_max_error_rate")]
    pub max_error_rate: f64,
    #[serde(default = "CanaryPolicy::default_max_p99_ms")]
    pub max_p99_ms: f64,
    /// Requests the canary must have seen before the thresholds are judged; promotion at
    /// the end of the window needs them too.
    #[serde(default)]
    pub min_requests: u64,
    /// Judge the canary on live accuracy too (from the outcomes recorded for its predictions
    /// during the window), since that is what a model change is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<AccuracyGate>,
}

/// A canary's accuracy threshold. Its error over the window (the mean absolute percentage
/// error of a regression, 1 - accuracy of a classifier) must stay within `max_error_ratio`
/// times the active version's: over the same window when that has `min_outcomes`, else
/// over everything since the active version loaded, else training's held-out figure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccuracyGate {
    /// Outcomes of the canary's predictions needed before it is judged; promotion at the end
    /// of the window needs them too.
    #[serde(default = "AccuracyGate::default_min_outcomes")]
    pub min_outcomes: u64,
    #[serde(default = "AccuracyGate::default_max_error_ratio")]
    pub max_error_ratio: f64,
}

impl AccuracyGate {
    fn default_min_outcomes() -> u64 {
        20
    }
    fn default_max_error_ratio() -> f64 {
        1.1
    }

    fn validate(&self) -> Result<(), String> {
        if !(1..=1_000_000).contains(&self.min_outcomes) {
            return Err(format!(
                "`canary.accuracy.min_outcomes`: must be between 1 and 1000000, not {}",
                self.min_outcomes
            ));
        }
        if !(self.max_error_ratio.is_finite() && (1.0..=100.0).contains(&self.max_error_ratio)) {
            return Err(format!(
                "`canary.accuracy.max_error_ratio`: must be between 1 and 100, not {}",
                self.max_error_ratio
            ));
        }
        Ok(())
    }
}

impl Default for AccuracyGate {
    fn default() -> Self {
        Self { min_outcomes: Self::default_min_outcomes(), max_error_ratio: Self::default_max_error_ratio() }
    }
}

impl CanaryPolicy {
    fn default_window_secs() -> u64 {
        60
    }
    fn default_max_error_rate() -> f64 {
        0.01
    }
    fn default_max_p99_ms() -> f64 {
        100.0
    }

    /// A canary of `share_percent` with the default window and thresholds.
    pub fn with_share(share_percent: f64) -> Self {
        Self {
            share_percent,
            window_secs: Self::default_window_secs(),
            max_error_rate: Self::default_max_error_rate(),
            max_p99_ms: Self::default_max_p99_ms(),
            min_requests: 0,
            accuracy: None,
        }
    }

    fn validate(&self) -> Result<(), String> {
        if !(self.share_percent > 0.0 && self.share_percent < 100.0) {
            return Err(format!("`canary.share_percent`: must be above 0 and below 100, not {}", self.share_percent));
        }
        if !(1..=86_400).contains(&self.window_secs) {
            return Err(format!("`canary.window_secs`: must be between 1 and 86400, not {}", self.window_secs));
        }
        if !(0.0..=1.0).contains(&self.max_error_rate) {
            return Err(format!("`canary.max_error_rate`: must be between 0 and 1, not {}", self.max_error_rate));
        }
        if !(self.max_p99_ms.is_finite() && self.max_p99_ms > 0.0) {
            return Err(format!("`canary.max_p99_ms`: must be a positive number, not {}", self.max_p99_ms));
        }
        self.accuracy.as_ref().map_or(Ok(()), AccuracyGate::validate)
    }
}

/// The steps of a deployment, in order; the last four end it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Received,
    /// The signature over the manifest by a trusted key, and every file's sha256.
    Verified,
    /// Unpacked into the staging folder.
    Staged,
    /// Plugin compiled, model session built, interfaces checked.
    Loaded,
    /// The manifest's sample requests gave their expected outputs.
    SmokeTested,
    /// Serving a share of the requests as a canary.
    Canary,
    /// Serving every request; the previous version is kept for rollback.
    Active,
    Rejected,
    RolledBack,
    Removed,
}

impl Step {
    pub fn is_final(self) -> bool {
        matches!(self, Self::Active | Self::Rejected | Self::RolledBack | Self::Removed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Verified => "verified",
            Self::Staged => "staged",
            Self::Loaded => "loaded",
            Self::SmokeTested => "smoke_tested",
            Self::Canary => "canary",
            Self::Active => "active",
            Self::Rejected => "rejected",
            Self::RolledBack => "rolled_back",
            Self::Removed => "removed",
        }
    }
}

/// Why a deployment was rejected or rolled back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// Not JSON, a missing or invalid field.
    MalformedRequest,
    /// Over `mqtt.max_bundle_mib`.
    TooLarge,
    /// The `.fcb` does not match the request's sha256, or could not be fetched.
    TransferFailed,
    /// Unsigned, signed by an untrusted key, or a bad signature; or no keys are configured.
    /// For a request itself also: signed for another target, or expired.
    Untrusted,
    /// A file does not match the manifest's sha256.
    Tampered,
    /// Not a valid bundle archive or manifest.
    InvalidBundle,
    /// Needs a newer runtime, or the plugin and model do not fit together.
    Incompatible,
    /// Plugin or model failed to load.
    LoadFailed,
    /// A sample request did not give its expected output.
    SmokeTestFailed,
    /// The canary broke a threshold.
    CanaryFailed,
    /// No such bundle or version, or nothing to roll back to.
    NotFound,
    /// The version is active, or ships with the image.
    Refused,
    /// The appliance restarted before the deployment finished.
    Interrupted,
    /// Too many deployments queued.
    Busy,
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    pub code: ReasonCode,
    pub message: String,
}

impl Reason {
    pub fn new(code: ReasonCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

/// Device -> fleet on `<prefix>/<device>/deployments/<id>` (QoS 1): one per step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub deployment: String,
    pub device: String,
    pub action: Action,
    pub step: Step,
    /// RFC 3339 UTC.
    pub time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The version active before (kept for rollback), on `active` and `rolled_back`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    /// Figures behind a canary's decision, or other detail of the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
    /// Whether this message ends the deployment.
    #[serde(rename = "final")]
    pub is_final: bool,
    /// On the final message: whether the request achieved what it asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
}

impl Progress {
    /// Whether a final `step` means the `action` succeeded.
    pub fn succeeded(action: Action, step: Step) -> bool {
        matches!(
            (action, step),
            (Action::Deploy, Step::Active) | (Action::Rollback, Step::RolledBack) | (Action::Remove, Step::Removed)
        )
    }
}

/// Device -> fleet on `<prefix>/<device>/status`, retained; with `online: false`, also the
/// Last Will the broker publishes when the device vanishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub online: bool,
    /// The runtime's version.
    pub version: String,
    /// Active version of each bundle.
    pub bundles: BTreeMap<String, String>,
    /// When this run started, RFC 3339 UTC.
    pub since: String,
    #[serde(default)]
    pub groups: Vec<String>,
    /// Bundles with a canary version running: name -> canary version.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub canaries: BTreeMap<String, String>,
}

/// Device -> fleet on `<prefix>/<device>/history`, retained: the device's latest
/// deployments, newest first, published again whenever one ends. Retained, so that
/// `forecourt fleet history` reads it from the broker while the device is away.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub device: String,
    /// When this history was published, RFC 3339 UTC.
    pub time: String,
    pub deployments: Vec<HistoryEntry>,
}

impl History {
    /// How many deployments a history carries: enough for an operator's question
    /// ("what happened to this box lately?"), small enough for one retained message.
    pub const MAX_ENTRIES: usize = 50;
}

/// One deployment of a [`History`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub deployment: String,
    pub action: Action,
    /// The last step reached: a final one unless the deployment is still running.
    pub step: Step,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// RFC 3339 UTC.
    pub started: String,
    pub updated: String,
    /// Whether the request achieved what it asked; absent while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
}

/// Device -> fleet on `<prefix>/<device>/events` (QoS 1): one audit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub device: String,
    /// The audit record's sequence number: consecutive, so a gap or a repeat shows.
    pub seq: u64,
    pub time: String,
    pub kind: String,
    pub details: serde_json::Value,
}

/// Device -> fleet on `<prefix>/<device>/metrics`: the counters and gauges of /metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsSnapshot {
    pub device: String,
    pub time: String,
    pub samples: Vec<MetricSample>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricSample {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn a_deploy_request_parses_with_canary_defaults() {
        let payload = format!(
            r#"{{"action":"deploy","id":"d1","bundle":{{"inline":"AAAA","sha256":"{SHA}"}},"canary":{{"share_percent":10}}}}"#
        );
        let Request::Deploy { id, canary, .. } = Request::parse(payload.as_bytes()).unwrap() else { panic!() };
        assert_eq!(id.as_str(), "d1");
        assert_eq!(canary.unwrap(), CanaryPolicy::with_share(10.0));
    }

    #[test]
    fn malformed_requests_name_the_field_and_keep_the_id() {
        let reject = |payload: &str| Request::parse(payload.as_bytes()).unwrap_err();
        let (id, reason) = reject("{not json");
        assert_eq!((id, reason.code), (None, ReasonCode::MalformedRequest));

        let (id, reason) = reject(r#"{"action":"deploy","id":"d2","bundle":{"sha256":"x"}}"#);
        assert_eq!(id.as_ref().map(DeploymentId::as_str), Some("d2"));
        assert!(reason.message.contains("inline"), "{}", reason.message);

        let (_, reason) = reject(&format!(
            r#"{{"action":"deploy","id":"d3","bundle":{{"inline":"A","sha256":"{SHA}"}},"canary":{{"share_percent":150}}}}"#
        ));
        assert!(reason.message.contains("canary.share_percent"), "{}", reason.message);

        let (_, reason) = reject(r#"{"action":"remove","id":"d4","bundle":"car-price","version":"one"}"#);
        assert!(reason.message.contains("version"), "{}", reason.message);

        let (id, reason) = reject(r#"{"action":"rollback","id":"a/b","bundle":"car-price"}"#);
        assert_eq!(id, None);
        assert!(reason.message.contains("id"), "{}", reason.message);

        let (_, reason) = reject(r#"{"action":"explode","id":"d5"}"#);
        assert!(reason.message.contains("explode"), "{}", reason.message);
    }

    #[test]
    fn ids_and_bundle_names_can_never_be_a_path_or_a_topic_wildcard() {
        for good in ["d1", "rollout_2", "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", &"x".repeat(64)] {
            assert_eq!(DeploymentId::try_from(good).unwrap().as_str(), good);
        }
        let huge = "y".repeat(10_000);
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "a\\b",
            "%2e%2e",
            "a.b",
            "+",
            "#",
            "\0",
            "tab\t",
            "é",
            &"x".repeat(65),
            &huge,
        ] {
            let error = DeploymentId::try_from(bad).unwrap_err();
            assert!(error.len() < 200, "a hostile value is quoted short: {error}");
        }
        let json = serde_json::json!({"action": "rollback", "id": "..", "bundle": "car-price"});
        assert_eq!(Request::from_value(&json).unwrap_err().0, None);
        for bad in ["..", "../etc", "Car", "a/b", "", &"n".repeat(65)] {
            assert!(BundleName::try_from(bad.to_owned()).is_err(), "{bad:?}");
        }
        let json = serde_json::json!({"action": "rollback", "id": "r1", "bundle": "../.."});
        let (id, reason) = Request::from_value(&json).unwrap_err();
        assert_eq!((id.unwrap().as_str(), reason.code), ("r1", ReasonCode::MalformedRequest));
        assert!(reason.message.contains("bundle"), "{}", reason.message);
    }

    #[test]
    fn a_bundle_url_must_be_http() {
        check_download_url("http://10.0.0.5:8080/car-price-1.1.0.fcb").unwrap();
        for bad in [
            "https://h/x.fcb",
            "file:///etc/passwd",
            "ftp://h/x",
            "/x.fcb",
            "http:///x",
            &format!("http://h/{}", "a".repeat(3000)),
        ] {
            assert!(check_download_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn success_depends_on_the_action() {
        assert!(Progress::succeeded(Action::Deploy, Step::Active));
        assert!(!Progress::succeeded(Action::Deploy, Step::RolledBack));
        assert!(Progress::succeeded(Action::Rollback, Step::RolledBack));
        assert!(!Progress::succeeded(Action::Remove, Step::Rejected));
    }

    #[test]
    fn steps_serialize_as_the_api_shapes_name_them() {
        for step in [Step::Received, Step::SmokeTested, Step::RolledBack] {
            assert_eq!(serde_json::to_value(step).unwrap(), step.as_str());
        }
    }
}
