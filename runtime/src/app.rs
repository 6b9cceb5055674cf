//! The appliance: wires configuration, store, plugin and model hosts, registry, pipeline
//! and HTTP server together, and runs them from start-up to a clean shutdown.
//!
//! Start-up order matters: the listener is bound and answering (not ready) before the
//! bundles load, so health checks see "starting" rather than a refused connection; the
//! store opens first so every later step can be audited.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;

use crate::bundle::{BundleLoader, Registry, TrustedKeys};
use crate::config::Config;
use crate::fleet::Fleet;
use crate::http::{self, AppState, Readiness};
use crate::model::OnnxRuntime;
use crate::pipeline::Pipeline;
use crate::plugin::PluginHost;
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
    let trusted = TrustedKeys::from_config(&config.trust).context("cannot load the trusted keys ([trust] keys_dir)")?;
    match &trusted {
        Some(keys) => {
            tracing::info!(keys = ?keys.ids().collect::<Vec<_>>(), "only bundles signed by a trusted key load")
        }
        None => tracing::warn!("no [trust] keys_dir configured: bundles are not verified (signatures are not checked)"),
    }
    let onnx = OnnxRuntime::init(&config.onnxruntime)?;
    let plugins = Arc::new(PluginHost::new(&config.plugins, Some(config.plugin_cache_dir()))?);
    let workers = WorkerPool::new("inference", config.server.workers, config.server.queue_capacity)?;
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;

    let (store, recovery) = Store::open(&config.store_dir(), &config.store).context("cannot open the store")?;
    let parts = Parts { onnx, plugins, trusted, workers, listener, metrics };
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
    metrics: Metrics,
}

async fn run(config: &Config, store: &Store, unclean: bool, parts: Parts, systemd: &Notifier) -> anyhow::Result<()> {
    if unclean {
        tracing::warn!("the previous run did not shut down cleanly; recovered the store");
        store.audit(AuditKind::CrashRecovery, json!({})).await?;
    }
    store.audit(AuditKind::Started, json!({"version": env!("CARGO_PKG_VERSION"), "pid": std::process::id()})).await?;
    store.audit(AuditKind::ConfigLoaded, serde_json::to_value(config)?).await?;

    let Parts { onnx, plugins, trusted, workers, listener, metrics } = parts;
    let fleet_metrics = metrics.clone();
    let mut loader = BundleLoader::new(plugins, onnx.clone(), config.server.workers);
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
    let state = AppState {
        pipeline,
        readiness: Arc::clone(&readiness),
        metrics,
        system: Arc::new(SystemMonitor::new(&config.data_dir)),
        onnx,
        config: Arc::new(config.server.clone()),
        fleet: Arc::default(),
    };
    let fleet_health = Arc::clone(&state.fleet);
    let fleet = Fleet::open(&config.mqtt, &config.data_dir, store).context("cannot open the fleet's state")?;

    let address = listener.local_addr()?;
    // A machine-readable line on stdout: scripts and tests learn the port from it.
    println!("forecourt listening on http://{address}");
    tracing::info!(%address, "listening");

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut server = tokio::spawn(http::serve(listener, http::router(state), wait_for(stopped)));

    fleet.discard_unreferenced()?;
    load_bundles(&registry, store, &[&config.bundles.dir, fleet.installed_dir()]).await?;
    fleet.restore(&registry).await?;
    audit_active_versions(&registry, store).await?;
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
    match tokio::time::timeout(grace, &mut server).await {
        Ok(result) => result??,
        Err(_) => {
            // Dropping the connections still open beats answering them after the store closed.
            tracing::warn!(?grace, "requests still in flight after the grace period; dropping them");
            server.abort();
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
