//! The Open Inference Protocol v2 over gRPC, on its own port (`[grpc]`): KServe's
//! `inference.GRPCInferenceService` (runtime/proto/grpc_predict_v2.proto), which Triton's
//! `tritonclient.grpc` speaks. tonic serves it over HTTP/2 on the hyper and tokio the HTTP
//! API runs on; with `[server.tls]`, over TLS with the API's certificate (so bearer tokens
//! never cross the network in clear on either port).
//!
//! This module owns the protobuf messages and their conversion to host tensors and back
//! ([`convert`]), the guard of each call (tokens from the `authorization` metadata, with
//! HTTP's permissions), the one mapping of errors to gRPC status codes ([`error`]) and the
//! listener. It must not hold business logic (inference is the [`crate::pipeline`]'s),
//! repeat the protocol's tensor rules (those are [`crate::oip`]'s, shared with HTTP), or
//! depend on the web framework (axum).

mod config;
mod convert;
mod error;
mod service;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

pub use config::GrpcConfig;
pub use error::GrpcError;
pub use service::{InferenceService, ServiceParts};

/// Connections past their handshake waiting for tonic to take them.
const HANDSHAKEN_BACKLOG: usize = 64;

/// The messages, service and (with the `grpc-client` feature) client generated from the
/// .proto by build.rs.
#[allow(clippy::all, clippy::pedantic, missing_debug_implementations, missing_docs)]
pub mod proto {
    tonic::include_proto!("inference");
}

/// How the listener treats connections and messages.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    /// The largest request message, in bytes (`server.max_body_bytes`); larger ones are refused.
    pub max_message_bytes: usize,
    pub max_concurrent_streams: u32,
    pub keepalive: Duration,
}

impl ListenerSettings {
    pub fn new(config: &GrpcConfig, max_message_bytes: usize) -> Self {
        Self { max_message_bytes, max_concurrent_streams: config.max_concurrent_streams, keepalive: config.keepalive() }
    }
}

/// How the gRPC listener secures its connections: the API's certificate (`[server.tls]`,
/// reloaded with it) and how long a handshake may take.
#[derive(Debug, Clone)]
pub struct ListenerTls {
    pub config: Arc<rustls::ServerConfig>,
    pub handshake_timeout: Duration,
}

/// Serves `service` on `listener` (over TLS with `tls`) until `shutdown` resolves, then stops
/// taking calls and waits for those in flight (the caller bounds that wait).
pub async fn serve(
    listener: tokio::net::TcpListener,
    settings: ListenerSettings,
    tls: Option<ListenerTls>,
    service: InferenceService,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let service = proto::grpc_inference_service_server::GrpcInferenceServiceServer::new(service)
        .max_decoding_message_size(settings.max_message_bytes);
    let server = tonic::transport::Server::builder()
        .max_concurrent_streams(settings.max_concurrent_streams)
        .http2_keepalive_interval(Some(settings.keepalive))
        .http2_keepalive_timeout(Some(settings.keepalive));
    // The one service answers every path (UNIMPLEMENTED for calls it does not serve), so
    // tonic's router, built on axum, is not needed.
    match tls {
        None => {
            let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            server.serve_with_incoming_shutdown(service, incoming, shutdown).await
        }
        Some(tls) => server.serve_with_incoming_shutdown(service, tls_incoming(listener, tls), shutdown).await,
    }
}

/// Connections that finished their TLS handshake, as the stream tonic serves. Each handshake
/// runs on its own task within its timeout, so a client that stalls holds up no other; the
/// accept loop ends when tonic drops the stream (at shutdown).
fn tls_incoming(listener: TcpListener, tls: ListenerTls) -> ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(HANDSHAKEN_BACKLOG);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config);
    tokio::spawn(async move {
        loop {
            let (stream, remote) = tokio::select! {
                accepted = crate::listener::accept(&listener) => accepted,
                () = sender.closed() => return,
            };
            let (acceptor, sender) = (acceptor.clone(), sender.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(tls.handshake_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let _ = sender.send(Ok(stream)).await;
                    }
                    Ok(Err(error)) => tracing::debug!(%remote, %error, "gRPC TLS handshake failed"),
                    Err(_) => tracing::debug!(%remote, "gRPC TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(receiver)
}
