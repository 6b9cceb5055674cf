//! What the store keeps and reports: predictions, audit events, verification reports and statistics.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One answered prediction. Stored in tree `predictions` under the id's 16 bytes (big-endian, so sled's key
/// order is time order), encoded as [`encoding`](super::encoding) says; answered to clients as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictionRecord {
    /// A UUIDv7 (the store refuses other versions: retention relies on the time in the key); also the
    /// request id.
    pub id: Uuid,
    /// RFC 3339 UTC with milliseconds, for example [`time_of_id`](super::time_of_id) of `id`.
    pub time: String,
    pub bundle: String,
    pub version: String,
    pub plugin_sha256: String,
    pub model_sha256: String,
    pub input_sha256: String,
    /// The client's input as it sent it, so that `input_sha256` is its digest; `None` when
    /// `store.store_inputs` is off (the pipeline decides).
    pub input: Option<JsonText>,
    pub outputs: serde_json::Value,
    pub latency_ms: f64,
    /// The id of the API token that asked for it (never the token); absent without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// The client's own `x-request-id`, kept beside ours (`id`); absent when it sent none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_request_id: Option<String>,
    /// Why this value, as the client was answered, when it asked (`?explain=true`); kept so
    /// that the valuation a dealer showed can be explained again later, as it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explanation: Option<serde_json::Value>,
}

/// JSON text kept byte for byte as it was written, and answered as the JSON it is.
///
/// A client's input is stored so: parsing it into a tree and writing it out again cost
/// allocations on every request and changed its bytes, so the stored input no longer matched
/// its recorded digest. Equal when the texts are.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JsonText(Box<serde_json::value::RawValue>);

impl JsonText {
    /// `text` when it is one JSON value, else the reason it is not.
    pub fn parse(text: String) -> Result<Self, serde_json::Error> {
        serde_json::value::RawValue::from_string(text).map(Self)
    }

    /// `text` itself when it is JSON, else a JSON string holding it.
    pub fn or_string(text: &str) -> Self {
        Self::parse(text.to_owned()).unwrap_or_else(|_| {
            // A string always serialises.
            Self(serde_json::value::to_raw_value(text).expect("a string is JSON"))
        })
    }

    pub fn as_str(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for JsonText {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

/// What an audit event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    Started,
    ConfigLoaded,
    BundleLoaded,
    BundleActivated,
    BundleRejected,
    BundleRemoved,
    RolledBack,
    DeploymentStarted,
    DeploymentFinished,
    Shutdown,
    CrashRecovery,
    /// A request refused for want of a valid token (401) or of the role (403).
    AccessDenied,
    /// Tokens added or revoked (the appliance noticed the token file change).
    TokensChanged,
    /// The HTTPS certificate was loaded again.
    TlsReloaded,
    /// What really happened to a prediction was recorded (its outcome).
    OutcomeRecorded,
    /// A version's drift status changed (ok, warn, alert).
    Drift,
}

impl AuditKind {
    /// The snake_case name serde uses; part of the audit hash.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::ConfigLoaded => "config_loaded",
            Self::BundleLoaded => "bundle_loaded",
            Self::BundleActivated => "bundle_activated",
            Self::BundleRejected => "bundle_rejected",
            Self::BundleRemoved => "bundle_removed",
            Self::RolledBack => "rolled_back",
            Self::DeploymentStarted => "deployment_started",
            Self::DeploymentFinished => "deployment_finished",
            Self::Shutdown => "shutdown",
            Self::CrashRecovery => "crash_recovery",
            Self::AccessDenied => "access_denied",
            Self::TokensChanged => "tokens_changed",
            Self::TlsReloaded => "tls_reloaded",
            Self::OutcomeRecorded => "outcome_recorded",
            Self::Drift => "drift",
        }
    }
}

/// One link of the audit chain; the [module documentation](super) defines how `hash` is computed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// 1, 2, 3... without gaps.
    pub seq: u64,
    /// RFC 3339 UTC with milliseconds, taken by the writer when it appended the record.
    pub time: String,
    pub kind: AuditKind,
    pub details: serde_json::Value,
    /// `hash` of record `seq - 1`; 64 zeros for the first record.
    pub prev_hash: String,
    /// Lowercase hex SHA-256.
    pub hash: String,
}

/// The outcome of checking the audit chain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditReport {
    /// No problem found.
    pub ok: bool,
    /// Records present.
    pub records: u64,
    /// The last record present.
    pub head_seq: Option<u64>,
    pub head_hash: Option<String>,
    /// The first problems found, at most a thousand.
    pub problems: Vec<AuditProblem>,
    /// Problems found beyond those listed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub problems_omitted: u64,
    /// When the range stopped before the end of the chain: where the next one starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<u64>,
}

fn is_zero(count: &u64) -> bool {
    *count == 0
}

/// One thing wrong with the audit chain, at record `seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditProblem {
    pub seq: u64,
    /// Human-readable, for example "record altered: hash does not match its contents".
    pub problem: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStats {
    pub predictions: u64,
    pub audit_records: u64,
    /// Writes waiting for the writer thread.
    pub queue_depth: usize,
    /// The database's files, in bytes.
    pub disk_bytes: u64,
    /// The mean size of the prediction records written since the store opened, as encoded (before the
    /// database's overhead); absent before the first.
    pub mean_record_bytes: Option<u64>,
    /// The last audit verification since the store opened (by the API or the dashboard).
    pub last_verification: Option<Verification>,
}

/// What the last audit verification found, and over which stretch of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    /// RFC 3339 UTC, when it ended.
    pub time: String,
    pub ok: bool,
    /// It checked the records after this seq (absent: from the first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
    /// Records checked.
    pub records: u64,
    /// The last record checked.
    pub head_seq: Option<u64>,
    /// Whether it reached the end of the chain (a page may stop before).
    pub complete: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_kind_names_match_serde() {
        use AuditKind::*;
        let kinds = [
            Started,
            ConfigLoaded,
            BundleLoaded,
            BundleActivated,
            BundleRejected,
            BundleRemoved,
            RolledBack,
            DeploymentStarted,
            DeploymentFinished,
            Shutdown,
            CrashRecovery,
            AccessDenied,
            TokensChanged,
            TlsReloaded,
            OutcomeRecorded,
            Drift,
        ];
        for kind in kinds {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
    }
}
