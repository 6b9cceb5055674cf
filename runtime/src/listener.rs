//! Accepting connections, shared by the HTTP and gRPC listeners: the one place that decides
//! what an accept error means. A leaf: it knows neither protocol.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// The next connection, with Nagle off (answers are small and latency-bound). An accept
/// error is no reason to stop: a connection reset before it was accepted is skipped, and
/// anything else (out of file descriptors and the like) is logged and waited out rather
/// than spun on.
pub async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((stream, remote)) => {
                let _ = stream.set_nodelay(true);
                return (stream, remote);
            }
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset
                ) => {}
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
