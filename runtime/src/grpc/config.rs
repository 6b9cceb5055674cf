//! `[grpc]` in forecourt.toml: the Open Inference Protocol over gRPC, on its own port. The
//! section's presence turns it on (`[grpc]` alone serves on the default address); without
//! it no gRPC port is opened. Body size and request time limits are `[server]`'s, so a
//! request meets the same bounds whichever protocol carries it.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::settings::{ConfigError, check_range};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcConfig {
    /// Address to serve gRPC on; port 0 picks a free port (the chosen address is printed).
    pub listen: SocketAddr,
    /// Calls one connection may have in flight at once (HTTP/2 streams).
    pub max_concurrent_streams: u32,
    /// Seconds between HTTP/2 pings on an idle connection; a peer that does not answer
    /// within as long again is dropped, so dead clients do not hold connections.
    pub keepalive_secs: u64,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self { listen: SocketAddr::from(([127, 0, 0, 1], 8081)), max_concurrent_streams: 256, keepalive_secs: 60 }
    }
}

impl GrpcConfig {
    pub fn validate(&self, http_listen: SocketAddr) -> Result<(), ConfigError> {
        check_range("grpc.max_concurrent_streams", self.max_concurrent_streams, 1, 100_000)?;
        check_range("grpc.keepalive_secs", self.keepalive_secs, 1, 3600)?;
        if self.listen.port() != 0 && self.listen == http_listen {
            return Err(ConfigError::new(
                "grpc.listen",
                format!("{} is server.listen's address too; gRPC needs a port of its own", self.listen),
            ));
        }
        Ok(())
    }

    pub fn keepalive(&self) -> Duration {
        Duration::from_secs(self.keepalive_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_validate_and_a_shared_port_does_not() {
        let http = SocketAddr::from(([127, 0, 0, 1], 8080));
        assert_eq!(GrpcConfig::default().validate(http), Ok(()));
        let same = GrpcConfig { listen: http, ..GrpcConfig::default() };
        assert_eq!(same.validate(http).unwrap_err().key, "grpc.listen");
        let both_free = GrpcConfig { listen: SocketAddr::from(([127, 0, 0, 1], 0)), ..GrpcConfig::default() };
        assert_eq!(both_free.validate(SocketAddr::from(([127, 0, 0, 1], 0))), Ok(()), "port 0 twice is two ports");
        let none = GrpcConfig { max_concurrent_streams: 0, ..GrpcConfig::default() };
        assert_eq!(none.validate(http).unwrap_err().key, "grpc.max_concurrent_streams");
    }
}
