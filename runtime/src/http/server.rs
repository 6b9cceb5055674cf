//! The listener: accepts connections (over TLS when configured), serves HTTP/1.1 on each
//! with hyper, and on shutdown stops accepting and lets open connections finish their
//! requests. Written out rather than `axum::serve` because that has no TLS, no header read
//! timeout and no handshake timeout, and a client that sends its headers a byte a minute
//! must not hold a connection for ever.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tower::ServiceExt;

/// How connections are handled.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    /// A client must send a request's headers within this.
    pub header_read_timeout: Duration,
    /// A TLS handshake must finish within this.
    pub handshake_timeout: Duration,
}

/// Serves `service` on `listener` until `shutdown` resolves, then waits for the requests in
/// flight (the caller bounds that wait).
pub async fn serve<S>(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    settings: ConnectionSettings,
    service: S,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    S: tower::Service<axum::extract::Request, Response = axum::response::Response, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(Some(settings.header_read_timeout)).keep_alive(true);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = crate::listener::accept(&listener) => accepted,
            () = &mut shutdown => break,
        };
        let service = service.clone();
        let hyper_service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(remote));
            service.clone().oneshot(request.map(axum::body::Body::new))
        });
        let watcher = graceful.watcher();
        let http = http.clone();
        let acceptor = acceptor.clone();
        let handshake_timeout = settings.handshake_timeout;
        tokio::spawn(async move {
            let result = match acceptor {
                None => watcher.watch(http.serve_connection(TokioIo::new(stream), hyper_service)).await,
                Some(acceptor) => match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => watcher.watch(http.serve_connection(TokioIo::new(stream), hyper_service)).await,
                    Ok(Err(error)) => {
                        tracing::debug!(%remote, %error, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%remote, "TLS handshake timed out");
                        return;
                    }
                },
            };
            if let Err(error) = result {
                tracing::debug!(%remote, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
