//! Telemetry: logs (tracing, pretty or JSON), metrics (the `metrics` crate rendered as
//! Prometheus text), and the process and system figures health reports show.
//!
//! Every metric name lives in [`names`] so dashboards have one place to look; modules
//! record with the `metrics` macros and never talk to the exporter. This module must
//! not know about HTTP routes or bundles beyond label values handed to it.

mod logging;
mod metrics;
mod recent;
mod system;

pub use self::metrics::{BundleMetrics, Metrics, names, record_bundle_versions};
pub use logging::{LogFormat, LoggingConfig, init_logging};
pub use recent::{RecentTraffic, TrafficPoint, TrafficSnapshot};
pub use system::{SystemFigures, SystemMonitor};
