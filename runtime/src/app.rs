//! The appliance: wires configuration, store, plugin and model hosts, registry, pipeline,
//! the HTTP server and (with `[grpc]`) the gRPC server together, and runs them from
//! start-up to a clean shutdown.
//!
//! Start-up order matters: the listener is bound and answering (not ready) before the
//! bundles load, so health checks see "starting" rather than a refused connection; the
//! store opens first so every later step can be audited.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;

use crate::auth::{Authenticator, TokenFile};
use crate::bundle::{BundleLoader, Registry, TrustedKeys};
use crate::config::Config;
use crate::fleet::Fleet;
use crate::grpc::{self, InferenceService, ServiceParts};
use crate::http::{self, AppState, AuthLayerState, CertificateReloader, DenialAudit, Readiness, Services};
use crate::model::OnnxRuntime;
use crate::pipeline::Pipeline;
use crate::plugin::PluginHost;
use crate::quality::Quality;
use crate::store::{AuditKind, Store};
use crate::systemd::Notifier;
use crate::telemetry::{Metrics, SystemMonitor, record_bundle_versions};
use crate::workers::WorkerPool;

/// Runs the appliance until SIGTERM or SIGINT, then drains and shuts down cleanly.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let systemd = Notifier::from_env();
    let _watchdog = systemd.spawn_watchdog();
    let metrics = Metrics::install();

    // Everything that can refuse to start happens before the store opens: a refused start
    // must not look like a crash to the next one.
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create the data folder {}", config.data_dir.display()))?;
    let trusted = config.trust.trusted_keys().context("cannot load the trusted keys ([trust] keys_dir)")?;
    match &trusted {
        Some(keys) => {
            tracing::info!(keys = ?keys.ids().collect::<Vec<_>>(), "only bundles signed by a trusted key load")
        }
        None => tracing::warn!("no [trust] keys_dir configured: bundles are not verified (signatures are not checked)"),
    }
    let authenticator = Arc::new(open_authenticator(&config)?);
    let tls = match &config.server.tls {
        Some(files) => Some(CertificateReloader::load(files).context("cannot set up HTTPS ([server.tls])")?),
        None => None,
    };
    let onnx = OnnxRuntime::init(&config.onnxruntime)?;
    let plugins = Arc::new(PluginHost::new(&config.plugins, Some(config.plugin_cache_dir()))?);
    let workers = WorkerPool::new("inference", config.server.workers, config.server.queue_capacity)?;
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let grpc_listener = match &config.grpc {
        Some(grpc) => Some(
            tokio::net::TcpListener::bind(grpc.listen)
                .await
                .with_context(|| format!("cannot listen for gRPC on {}", grpc.listen))?,
        ),
        None => None,
    };

    let (store, recovery) = Store::open(&config.store_dir(), &config.store).context("cannot open the store")?;
    let parts = Parts { onnx, plugins, trusted, workers, listener, grpc_listener, metrics, authenticator, tls };
    let result = run(&config, &store, recovery.unclean_shutdown, parts, &systemd).await;
    if let Err(error) = &result {
        tracing::error!(error = format!("{error:#}"), "stopping after an error");
    }
    store.close().await?;
    result
}

/// What `serve` prepared before opening the store.
struct Parts {
    onnx: OnnxRuntime,
    plugins: Arc<PluginHost>,
    trusted: Option<TrustedKeys>,
    workers: WorkerPool,
    listener: tokio::net::TcpListener,
    grpc_listener: Option<tokio::net::TcpListener>,
    metrics: Metrics,
    authenticator: Arc<Authenticator>,
    tls: Option<Arc<CertificateReloader>>,
}

async fn run(config: &Config, store: &Store, unclean: bool, parts: Parts, systemd: &Notifier) -> anyhow::Result<()> {
    if unclean {
        tracing::warn!("the previous run did not shut down cleanly; recovered the store");
        store.audit(AuditKind::CrashRecovery, json!({})).await?;
    }
    store.audit(AuditKind::Started, json!({"version": env!("CARGO_PKG_VERSION"), "pid": std::process::id()})).await?;
    store.audit(AuditKind::ConfigLoaded, serde_json::to_value(config)?).await?;

    let Parts { onnx, plugins, trusted, workers, listener, grpc_listener, metrics, authenticator, tls } = parts;
    let fleet_metrics = metrics.clone();
    let mut loader =
        BundleLoader::new(plugins, onnx.clone(), config.server.workers).with_drift_window(config.quality.window_rows());
    if let Some(keys) = trusted {
        loader = loader.with_trusted_keys(keys);
    }
    let registry = Arc::new(Registry::new(loader));
    let pipeline = Arc::new(Pipeline::new(
        Arc::clone(&registry),
        workers,
        store.clone(),
        config.store.store_inputs,
        config.server.max_batch,
    ));
    let readiness = Arc::new(Readiness::default());
    let quality = Quality::open(store, Arc::clone(&registry), &config.quality).context("cannot open the outcomes")?;
    let state = AppState::new(Services {
        pipeline: Arc::clone(&pipeline),
        quality: quality.clone(),
        readiness: Arc::clone(&readiness),
        metrics,
        system: Arc::new(SystemMonitor::new(&config.data_dir)),
        onnx,
        config: Arc::new(config.server.clone()),
        fleet: Arc::default(),
        audit_verification: Arc::new(tokio::sync::Semaphore::new(1)),
    });
    let fleet_health = Arc::clone(&state.fleet);
    let fleet = Fleet::open(&config.mqtt, &config.data_dir, store).context("cannot open the fleet's state")?;

    let address = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    // A machine-readable line on stdout: scripts and tests learn the port from it.
    println!("forecourt listening on {scheme}://{address}");
    tracing::info!(%address, scheme, tokens = authenticator.active_count(), "listening");
    if let Some(grpc_listener) = &grpc_listener {
        let address = grpc_listener.local_addr()?;
        // The second machine-readable line, always after the first: the gRPC port.
        println!("forecourt grpc listening on {address}");
        tracing::info!(%address, "gRPC listening");
    }

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stopped_drift = stopped.clone();
    let auth = AuthLayerState {
        authenticator: Arc::clone(&authenticator),
        audit: DenialAudit::new(store.clone(), config.auth.audit_denials_per_sec),
    };
    let tls_config = tls.as_ref().map(CertificateReloader::server_config).transpose()?;
    let settings = config.server.connection_settings();
    let mut servers = tokio::task::JoinSet::new();
    let http_server =
        http::serve(listener, tls_config, settings, http::router(state, auth.clone()), wait_for(stopped.clone()));
    servers.spawn(async move { http_server.await.context("the HTTP server failed") });
    if let (Some(grpc_listener), Some(grpc_config)) = (grpc_listener, &config.grpc) {
        let service = InferenceService::new(ServiceParts {
            pipeline,
            readiness: Arc::clone(&readiness),
            authenticator: Arc::clone(&authenticator),
            audit: auth.audit,
            timeout: Duration::from_secs(config.server.request_timeout_secs),
            max_concurrent_requests: config.server.max_concurrent_requests,
        });
        let settings = grpc::ListenerSettings::new(grpc_config, config.server.max_body_bytes);
        let grpc_tls = match &tls {
            Some(tls) => Some(grpc::ListenerTls {
                config: tls.grpc_server_config()?,
                handshake_timeout: config.server.connection_settings().handshake_timeout,
            }),
            None => None,
        };
        let grpc_server = grpc::serve(grpc_listener, settings, grpc_tls, service, wait_for(stopped.clone()));
        servers.spawn(async move { grpc_server.await.context("the gRPC server failed") });
    }
    let reload_interval = Duration::from_millis(config.auth.reload_interval_ms);
    tokio::spawn(reload_credentials(authenticator, tls, store.clone(), reload_interval, stopped));

    fleet.discard_unreferenced()?;
    load_bundles(&registry, store, &[&config.bundles.dir, fleet.installed_dir()]).await?;
    fleet.restore(&registry).await?;
    audit_active_versions(&registry, store).await?;
    let counting = quality.clone();
    tokio::task::spawn_blocking(move || counting.count_stored()).await?.context("cannot count the stored outcomes")?;
    tokio::spawn(quality.watch_drift(wait_for(stopped_drift)));
    let fleet = fleet.start(Arc::clone(&registry), store.clone(), fleet_metrics);
    if let Some(running) = &fleet {
        let _ = fleet_health.set(running.health());
    }
    readiness.set_ready();
    systemd.ready();
    tracing::info!("ready");

    shutdown_signal().await;
    readiness.set_draining();
    systemd.stopping();
    tracing::info!("draining in-flight requests");
    let _ = stop.send(true);
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    let drained = async {
        while let Some(stopped) = servers.join_next().await {
            stopped??;
        }
        anyhow::Ok(())
    };
    let outcome = tokio::time::timeout(grace, drained).await;
    match outcome {
        Ok(result) => result?,
        Err(_) => {
            // Dropping the connections still open beats answering them after the store closed.
            tracing::warn!(?grace, "requests still in flight after the grace period; dropping them");
            servers.abort_all();
        }
    }
    if let Some(fleet) = fleet {
        fleet.shutdown().await;
    }
    store.audit(AuditKind::Shutdown, json!({"reason": "signal"})).await?;
    tracing::info!("shut down cleanly");
    Ok(())
}

/// Loads every bundle in `dirs` (the shipped ones, then the deployed ones), auditing each
/// outcome; the appliance serves what loaded.
async fn load_bundles(registry: &Arc<Registry>, store: &Store, dirs: &[&Path]) -> anyhow::Result<()> {
    let loader = Arc::clone(registry);
    let owned: Vec<PathBuf> = dirs.iter().map(|dir| dir.to_path_buf()).collect();
    let reports =
        tokio::task::spawn_blocking(move || owned.iter().flat_map(|dir| loader.load_dir(dir)).collect::<Vec<_>>())
            .await?;
    if reports.is_empty() {
        tracing::warn!(dirs = ?dirs, "no bundles found; build some with `forecourt bundle build`");
    }
    for report in reports {
        match report.result {
            Ok((name, version)) => {
                let key_id = registry.version(&name, &version).and_then(|bundle| bundle.signed_by().map(str::to_owned));
                tracing::info!(bundle = %name, %version, key_id, "bundle loaded");
                store
                    .audit(
                        AuditKind::BundleLoaded,
                        json!({"bundle": name, "version": version.to_string(), "dir": report.dir, "key_id": key_id}),
                    )
                    .await?;
            }
            Err(error) => {
                tracing::error!(dir = %report.dir.display(), %error, "bundle rejected");
                store.audit(AuditKind::BundleRejected, json!({"dir": report.dir, "reason": error.to_string()})).await?;
            }
        }
    }
    Ok(())
}

/// Audits the version each bundle serves at start, and sets the bundle gauges.
async fn audit_active_versions(registry: &Registry, store: &Store) -> anyhow::Result<()> {
    for summary in registry.summaries() {
        store
            .audit(AuditKind::BundleActivated, json!({"bundle": summary.name, "version": summary.active_version}))
            .await?;
        record_bundle_versions(&summary.name, &summary.active_version, &summary.versions, &[]);
    }
    Ok(())
}

/// The refusal to serve an open network with no token, or the token registry.
fn open_authenticator(config: &Config) -> anyhow::Result<Authenticator> {
    let file = TokenFile::new(config.tokens_file());
    // Every listener counts: a gRPC port on the network is as open as an HTTP one.
    let loopback = config.server.listen.ip().is_loopback()
        && config.grpc.as_ref().is_none_or(|grpc| grpc.listen.ip().is_loopback());
    let anonymous_allowed = config.auth.allow_anonymous || loopback;
    let authenticator = Authenticator::open(file, anonymous_allowed).context("cannot read the API tokens")?;
    let path = authenticator.file().path().display();
    if authenticator.active_count() == 0 {
        anyhow::ensure!(
            anonymous_allowed,
            "refusing to serve {} with no API token: anyone on the network could use every route.\n\
             Add one with `forecourt token add --role admin --name NAME` (it writes {path}; use the same \
             --config or FORECOURT_* settings as `serve`), or set auth.allow_anonymous = true \
             (FORECOURT_AUTH__ALLOW_ANONYMOUS=true) to serve without tokens",
            config.server.listen
        );
        if !authenticator.required() {
            tracing::warn!(listen = %config.server.listen, tokens_file = %path, "no API tokens: every route is open to anyone who reaches the listener; add one with `forecourt token add`");
        }
    }
    metrics::gauge!(crate::telemetry::names::AUTH_TOKENS).set(authenticator.active_count() as f64);
    Ok(authenticator)
}

/// Until `stopped`: picks up token file changes (a revocation takes effect within
/// `interval`) and certificate changes, and on SIGHUP reloads the certificate at once.
async fn reload_credentials(
    authenticator: Arc<Authenticator>,
    tls: Option<Arc<CertificateReloader>>,
    store: Store,
    interval: Duration,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP; certificates reload when their files change only");
            None
        }
    };
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let forced = tokio::select! {
            _ = ticks.tick() => false,
            Some(()) = async { match hangup.as_mut() { Some(signal) => signal.recv().await, None => std::future::pending().await } } => true,
            _ = stopped.wait_for(|stopped| *stopped) => return,
        };
        let checked = Arc::clone(&authenticator);
        match tokio::task::spawn_blocking(move || checked.reload_if_changed()).await {
            Ok(Ok(changes)) if !changes.is_empty() => {
                metrics::gauge!(crate::telemetry::names::AUTH_TOKENS).set(authenticator.active_count() as f64);
                let added: Vec<_> = changes
                    .added
                    .iter()
                    .map(|(id, name, role)| json!({"token_id": id, "name": name, "role": role}))
                    .collect();
                let revoked: Vec<_> =
                    changes.revoked.iter().map(|(id, name)| json!({"token_id": id, "name": name})).collect();
                tracing::info!(
                    added = added.len(),
                    revoked = revoked.len(),
                    active = authenticator.active_count(),
                    "API tokens changed"
                );
                if let Err(error) =
                    store.audit(AuditKind::TokensChanged, json!({"added": added, "revoked": revoked})).await
                {
                    tracing::error!(%error, "could not audit a token change");
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::error!(%error, "the token file changed but cannot be read; the tokens loaded before stay in force")
            }
            Err(error) => tracing::error!(%error, "the token reload failed"),
        }
        let Some(tls) = &tls else { continue };
        match tls.reload(forced) {
            Ok(true) => {
                tracing::info!(cert = %tls.files().cert_file.display(), "HTTPS certificate reloaded");
                let details = json!({"cert_file": tls.files().cert_file, "trigger": if forced { "sighup" } else { "file_changed" }});
                if let Err(error) = store.audit(AuditKind::TlsReloaded, details).await {
                    tracing::error!(%error, "could not audit a certificate reload");
                }
            }
            Ok(false) => {}
            Err(error) => {
                tracing::error!(%error, "cannot reload the HTTPS certificate; the one loaded before stays in use")
            }
        }
    }
}

async fn wait_for(mut stopped: tokio::sync::watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stopped| *stopped).await;
}

/// SIGTERM (systemd, the fleet) or SIGINT (a terminal).
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler installs");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
