//! `[server]` in forecourt.toml.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::tls::TlsFiles;
use crate::settings::{ConfigError, check_range};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port (the chosen address is printed).
    pub listen: SocketAddr,
    /// Inference worker threads (plugin and model calls). Default: one per core.
    pub workers: usize,
    /// Jobs that may wait for a worker; beyond it requests get 429 at once.
    pub queue_capacity: usize,
    /// Largest request body, in bytes; larger ones get 413.
    pub max_body_bytes: usize,
    /// Most instances in one batch request.
    pub max_batch: usize,
    /// How long shutdown waits for in-flight requests, in seconds.
    pub shutdown_grace_secs: u64,
    /// A request not answered within this many seconds gets 503 `timeout`.
    pub request_timeout_secs: u64,
    /// Requests handled at once; beyond, 429 `overloaded` with Retry-After at once.
    pub max_concurrent_requests: usize,
    /// A client must send a request's headers within this many seconds (slow clients hold
    /// connections otherwise).
    pub header_read_timeout_secs: u64,
    /// A TLS handshake must finish within this many seconds.
    pub tls_handshake_timeout_secs: u64,
    /// Serve HTTPS with these files (reloaded on SIGHUP or when they change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFiles>,
    /// Web origins (`https://kiosk.example.com`, or `*` for any) whose pages may call the
    /// API from a browser (CORS). Empty, the default: none. In the environment, comma-separated.
    #[serde(deserialize_with = "crate::settings::list_or_csv")]
    pub cors_allowed_origins: Vec<CorsOrigin>,
}

/// An origin a browser sends in `Origin`: `scheme://host[:port]` with no path, or `*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CorsOrigin(String);

impl CorsOrigin {
    pub const ANY: &str = "*";

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CorsOrigin {
    type Error = String;

    fn try_from(origin: String) -> Result<Self, String> {
        if origin == Self::ANY {
            return Ok(Self(origin));
        }
        let rest = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"))
            .ok_or_else(|| format!("{origin:?} is not an origin: it starts with http:// or https://"))?;
        let host_valid = !rest.is_empty()
            && rest.len() <= 253
            && rest.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"-.:[]".contains(&byte));
        if !host_valid {
            return Err(format!("{origin:?} is not an origin: scheme://host[:port], no path or trailing slash"));
        }
        Ok(Self(origin))
    }
}

impl From<CorsOrigin> for String {
    fn from(origin: CorsOrigin) -> Self {
        origin.0
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            workers: std::thread::available_parallelism().map_or(2, usize::from),
            queue_capacity: 1024,
            max_body_bytes: 1024 * 1024,
            max_batch: 1000,
            shutdown_grace_secs: 30,
            request_timeout_secs: 30,
            max_concurrent_requests: 4096,
            header_read_timeout_secs: 10,
            tls_handshake_timeout_secs: 10,
            tls: None,
            cors_allowed_origins: Vec::new(),
        }
    }
}

impl ServerConfig {
    pub fn connection_settings(&self) -> super::ConnectionSettings {
        super::ConnectionSettings {
            header_read_timeout: std::time::Duration::from_secs(self.header_read_timeout_secs),
            handshake_timeout: std::time::Duration::from_secs(self.tls_handshake_timeout_secs),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        check_range("server.workers", self.workers, 1, 1024)?;
        check_range("server.queue_capacity", self.queue_capacity, 1, 1_000_000)?;
        check_range("server.max_body_bytes", self.max_body_bytes, 1024, 1 << 30)?;
        check_range("server.max_batch", self.max_batch, 1, 100_000)?;
        check_range("server.shutdown_grace_secs", self.shutdown_grace_secs, 0, 3600)?;
        check_range("server.request_timeout_secs", self.request_timeout_secs, 1, 3600)?;
        check_range("server.max_concurrent_requests", self.max_concurrent_requests, 1, 1_000_000)?;
        check_range("server.header_read_timeout_secs", self.header_read_timeout_secs, 1, 3600)?;
        check_range("server.tls_handshake_timeout_secs", self.tls_handshake_timeout_secs, 1, 3600)?;
        if let Some(tls) = &self.tls {
            tls.validate()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_origin_is_a_scheme_and_a_host_or_any() {
        for good in ["*", "https://kiosk.example.com", "http://10.0.0.5:3000", "http://[::1]:8080"] {
            assert!(CorsOrigin::try_from(good.to_owned()).is_ok(), "{good}");
        }
        for bad in ["", "kiosk.example.com", "https://kiosk.example.com/", "https://a/b", "ftp://x", "https://"] {
            assert!(CorsOrigin::try_from(bad.to_owned()).is_err(), "{bad}");
        }
    }
}
