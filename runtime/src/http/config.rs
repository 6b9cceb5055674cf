//! `[server]` in forecourt.toml.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, check_range};

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
        }
    }
}

impl ServerConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_range("server.workers", self.workers, 1, 1024)?;
        check_range("server.queue_capacity", self.queue_capacity, 1, 1_000_000)?;
        check_range("server.max_body_bytes", self.max_body_bytes, 1024, 1 << 30)?;
        check_range("server.max_batch", self.max_batch, 1, 100_000)?;
        check_range("server.shutdown_grace_secs", self.shutdown_grace_secs, 0, 3600)?;
        Ok(())
    }
}
