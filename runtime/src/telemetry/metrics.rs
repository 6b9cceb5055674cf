//! The metrics recorder and the names of every metric.

use std::sync::OnceLock;
use std::time::Instant;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::error_code::ErrorCode;

/// Every metric Forecourt exports. Prometheus conventions: `forecourt_` prefix, base
/// units, `_total` counters, `_seconds` histograms. Labels are bounded: bundle names and
/// versions (a handful), statuses (the error codes), output names.
pub mod names {
    /// Prediction requests, by `bundle`, `version`, `status` (`ok` or an error code).
    pub const REQUESTS: &str = "forecourt_requests_total";
    /// Time from request to response, by `bundle`.
    pub const REQUEST_DURATION: &str = "forecourt_request_duration_seconds";
    /// Plugin time (preprocess and postprocess) per instance, by `bundle`.
    pub const PLUGIN_DURATION: &str = "forecourt_plugin_duration_seconds";
    /// ONNX Runtime time per model run, by `bundle`.
    pub const INFERENCE_DURATION: &str = "forecourt_inference_duration_seconds";
    /// Predictions made (instances, not requests), by `bundle`, `version`.
    pub const PREDICTIONS: &str = "forecourt_predictions_total";
    /// The predicted values, by `bundle`, `output`: `_sum / _count` is the average valuation.
    pub const PREDICTED_VALUE: &str = "forecourt_predicted_value";
    /// Instances per model run.
    pub const BATCH_SIZE: &str = "forecourt_batch_size";
    /// Jobs waiting for an inference worker.
    pub const QUEUE_DEPTH: &str = "forecourt_inference_queue_depth";
    /// Jobs refused because the queue was full.
    pub const REJECTED: &str = "forecourt_rejected_requests_total";
    /// Always 1; the `version` label carries the build.
    pub const BUILD_INFO: &str = "forecourt_build_info";
    pub const UPTIME: &str = "forecourt_uptime_seconds";
    /// Bundles loaded, by `bundle`, `version`; the value is 1 for the active version, else 0.
    pub const BUNDLES: &str = "forecourt_bundle_info";
    /// Records (predictions and audit events) written to the store.
    pub const STORE_WRITES: &str = "forecourt_store_writes_total";
    /// Bytes of the prediction records written to the store, as encoded (before sled's own overhead).
    pub const STORE_PREDICTION_BYTES: &str = "forecourt_store_prediction_bytes_total";
    /// Duration of one store flush (the fsync that makes a group durable).
    pub const STORE_FLUSH_DURATION: &str = "forecourt_store_flush_duration_seconds";
    /// Records made durable by one flush.
    pub const STORE_GROUP_SIZE: &str = "forecourt_store_group_size";
    /// Writes waiting for the store writer.
    pub const STORE_QUEUE_DEPTH: &str = "forecourt_store_queue_depth";
    /// 1 while connected to the fleet's MQTT broker, else 0.
    pub const FLEET_CONNECTED: &str = "forecourt_fleet_connected";
    /// Connections made to the broker (the first and every reconnection).
    pub const FLEET_CONNECTIONS: &str = "forecourt_fleet_connections_total";
    /// Messages waiting in the outbox for the broker.
    pub const FLEET_OUTBOX_DEPTH: &str = "forecourt_fleet_outbox_depth";
    /// Metrics snapshots dropped because the outbox was full.
    pub const FLEET_OUTBOX_DROPPED: &str = "forecourt_fleet_outbox_dropped_total";
    /// Messages the broker acknowledged, by `kind` (metrics, event, deployment).
    pub const FLEET_PUBLISHED: &str = "forecourt_fleet_published_total";
    /// Deployment requests finished, by `action` and `outcome` (the final step).
    pub const FLEET_DEPLOYMENTS: &str = "forecourt_fleet_deployments_total";
    /// Outcomes recorded (what really happened to a prediction), by `bundle`, `version`.
    pub const OUTCOMES: &str = "forecourt_outcomes_total";
    /// Live accuracy from outcomes, by `bundle`, `version`, `window` (`recent`: the latest
    /// outcomes; `since_loaded`): regressions' mean absolute error (output unit), mean
    /// absolute percentage error (a fraction) and root mean squared error; classifiers' accuracy.
    pub const LIVE_MAE: &str = "forecourt_live_mae";
    pub const LIVE_MAPE: &str = "forecourt_live_mape";
    pub const LIVE_RMSE: &str = "forecourt_live_rmse";
    pub const LIVE_ACCURACY: &str = "forecourt_live_accuracy";
    /// The outcomes behind the live figures, by `bundle`, `version`, `window`.
    pub const LIVE_OUTCOMES: &str = "forecourt_live_outcomes";
    /// The bundle's own held-out figures from training (its metrics.json), by `bundle`,
    /// `version` and `metric` (mae, mape, rmse, r2, accuracy), beside the live ones.
    pub const TRAINING_METRIC: &str = "forecourt_training_metric";
    /// Drift against the training profile, by `bundle`, `version` (and `feature` for the
    /// PSI): rows in the window; the status (0 ok, 1 warn, 2 alert) and each feature's
    /// population stability index, once the window holds enough rows.
    pub const DRIFT_ROWS: &str = "forecourt_drift_window_rows";
    pub const DRIFT_STATUS: &str = "forecourt_drift_status";
    pub const DRIFT_PSI: &str = "forecourt_drift_psi";
    /// HTTP requests refused by authentication, authorization or a token's rate, by `reason`
    /// (missing_token, malformed_token, unknown_token, revoked_token, wrong_secret, forbidden,
    /// rate_limited).
    pub const AUTH_DENIALS: &str = "forecourt_http_denied_total";
    /// Denials not written to the audit trail because more came than `auth.audit_denials_per_sec`.
    pub const AUTH_DENIALS_NOT_AUDITED: &str = "forecourt_http_denials_not_audited_total";
    /// API tokens the appliance accepts now.
    pub const AUTH_TOKENS: &str = "forecourt_auth_tokens";
    /// HTTP requests refused because `server.max_concurrent_requests` were in flight.
    pub const HTTP_SHED: &str = "forecourt_http_shed_total";
    /// HTTP requests that ran out of `server.request_timeout_secs`.
    pub const HTTP_TIMEOUTS: &str = "forecourt_http_timeouts_total";
    /// gRPC calls answered, by `method` (ModelInfer, ModelMetadata, ...) and `code` (OK or a
    /// gRPC status code name). Denials are counted in [`AUTH_DENIALS`] too, as over HTTP.
    pub const GRPC_REQUESTS: &str = "forecourt_grpc_requests_total";
    /// gRPC calls refused because `server.max_concurrent_requests` were in flight.
    pub const GRPC_SHED: &str = "forecourt_grpc_shed_total";
}

/// The reasons [`names::AUTH_DENIALS`] counts, registered at zero from the start.
pub const DENIAL_REASONS: &[&str] = &[
    "missing_token",
    "malformed_token",
    "unknown_token",
    "revoked_token",
    "wrong_secret",
    "forbidden",
    "rate_limited",
];

/// The process's metrics recorder: renders everything recorded so far as Prometheus text.
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
    started: Instant,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

const SECONDS_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];
/// Predicted values span a class index (0-2) to a house price (10^6): 1-2-5 steps from 0.1
/// to 10^7 cover both. A histogram, not the exporter's default summary, whose quantiles
/// over a sliding window could exceed the `_max` it did not export.
const VALUE_BUCKETS: &[f64] = &[
    0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5,
    1e6, 2e6, 5e6, 1e7,
];

impl Metrics {
    /// Installs the global recorder once per process and returns its handle.
    pub fn install() -> Metrics {
        static METRICS: OnceLock<Metrics> = OnceLock::new();
        METRICS
            .get_or_init(|| {
                let recorder = PrometheusBuilder::new()
                    .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS_BUCKETS)
                    .and_then(|builder| {
                        builder.set_buckets_for_metric(Matcher::Full(names::BATCH_SIZE.to_owned()), BATCH_BUCKETS)
                    })
                    .and_then(|builder| {
                        builder.set_buckets_for_metric(Matcher::Full(names::PREDICTED_VALUE.to_owned()), VALUE_BUCKETS)
                    })
                    .and_then(|builder| {
                        builder.set_buckets_for_metric(Matcher::Full(names::STORE_GROUP_SIZE.to_owned()), BATCH_BUCKETS)
                    })
                    .expect("bucket lists are non-empty")
                    .build_recorder();
                let handle = recorder.handle();
                // Another recorder may already be installed (tests); ours still renders.
                let _ = metrics::set_global_recorder(recorder);
                describe();
                process::describe();
                metrics::gauge!(names::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
                Metrics { handle, started: Instant::now() }
            })
            .clone()
    }

    /// The Prometheus text exposition of every metric, process figures refreshed.
    pub fn render(&self) -> String {
        let cpu_seconds = process::collect();
        metrics::gauge!(names::UPTIME).set(self.started.elapsed().as_secs_f64());
        self.handle.run_upkeep();
        let mut text = self.handle.render();
        if let Some(seconds) = cpu_seconds {
            process::render_cpu_seconds(&mut text, seconds);
        }
        text
    }

    pub fn uptime_seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

/// Sets [`names::BUNDLES`] for one bundle name: 1 for the active version, 0 for the others
/// loaded (and for `gone`, versions no longer loaded, so their series does not stay at 1).
pub fn record_bundle_versions(name: &str, active: &str, loaded: &[String], gone: &[String]) {
    for version in loaded.iter().chain(gone) {
        let value = if version == active { 1.0 } else { 0.0 };
        metrics::gauge!(names::BUNDLES, "bundle" => name.to_owned(), "version" => version.clone()).set(value);
    }
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(names::REQUESTS, "Prediction requests by bundle, version and status");
    describe_histogram!(names::REQUEST_DURATION, Unit::Seconds, "Time from request to response");
    describe_histogram!(names::PLUGIN_DURATION, Unit::Seconds, "Plugin time per instance");
    describe_histogram!(names::INFERENCE_DURATION, Unit::Seconds, "ONNX Runtime time per model run");
    describe_counter!(names::PREDICTIONS, "Predictions made");
    describe_histogram!(names::PREDICTED_VALUE, "Predicted values; _sum/_count is the average");
    describe_histogram!(names::BATCH_SIZE, "Instances per model run");
    describe_gauge!(names::QUEUE_DEPTH, "Jobs waiting for an inference worker");
    describe_counter!(names::REJECTED, "Requests refused because a queue was full");
    describe_gauge!(names::BUILD_INFO, "Build information");
    describe_gauge!(names::UPTIME, Unit::Seconds, "Seconds since the process started");
    describe_gauge!(names::BUNDLES, "Loaded bundle versions; 1 for the version serving");
    describe_counter!(names::STORE_WRITES, "Records written to the store");
    describe_counter!(
        names::STORE_PREDICTION_BYTES,
        Unit::Bytes,
        "Bytes of prediction records written to the store, as encoded (before the database's overhead)"
    );
    describe_histogram!(names::STORE_FLUSH_DURATION, Unit::Seconds, "Duration of one store flush (fsync)");
    describe_histogram!(names::STORE_GROUP_SIZE, "Records made durable by one flush");
    describe_gauge!(names::STORE_QUEUE_DEPTH, "Writes waiting for the store writer");
    describe_gauge!(names::FLEET_CONNECTED, "1 while connected to the fleet's MQTT broker");
    describe_counter!(names::OUTCOMES, "Outcomes recorded for predictions, by bundle and version");
    describe_gauge!(names::LIVE_MAE, "Live mean absolute error from outcomes, by window");
    describe_gauge!(names::LIVE_MAPE, "Live mean absolute percentage error (fraction) from outcomes, by window");
    describe_gauge!(names::LIVE_RMSE, "Live root mean squared error from outcomes, by window");
    describe_gauge!(names::LIVE_ACCURACY, "Live accuracy (fraction correct) from outcomes, by window");
    describe_gauge!(names::LIVE_OUTCOMES, "Outcomes behind the live figures, by window");
    describe_gauge!(names::TRAINING_METRIC, "Held-out figures from the bundle's training, by metric");
    describe_gauge!(names::DRIFT_ROWS, "Rows in the drift window");
    describe_gauge!(names::DRIFT_STATUS, "Drift status: 0 ok, 1 warn, 2 alert");
    describe_gauge!(names::DRIFT_PSI, "Population stability index of a feature against training");
    describe_counter!(names::FLEET_CONNECTIONS, "Connections made to the fleet's MQTT broker");
    describe_gauge!(names::FLEET_OUTBOX_DEPTH, "Messages waiting in the outbox for the broker");
    describe_counter!(names::FLEET_OUTBOX_DROPPED, "Metrics snapshots dropped from the full outbox");
    describe_counter!(names::FLEET_PUBLISHED, "Messages the broker acknowledged, by kind");
    describe_counter!(names::FLEET_DEPLOYMENTS, "Deployment requests finished, by action and outcome");
    describe_counter!(names::AUTH_DENIALS, "HTTP requests refused for want of a valid token, a role or rate");
    describe_counter!(names::AUTH_DENIALS_NOT_AUDITED, "Denied requests beyond the audit trail's rate");
    describe_gauge!(names::AUTH_TOKENS, "API tokens accepted now");
    describe_counter!(names::HTTP_SHED, "HTTP requests refused at the concurrency limit");
    describe_counter!(names::HTTP_TIMEOUTS, "HTTP requests that ran out of time");
    describe_counter!(names::GRPC_REQUESTS, "gRPC calls by method and status code");
    describe_counter!(names::GRPC_SHED, "gRPC calls refused at the concurrency limit");
    // Present from the start, so a rate over them is defined before the first refusal.
    for reason in DENIAL_REASONS {
        metrics::counter!(names::AUTH_DENIALS, "reason" => *reason).absolute(0);
    }
    metrics::counter!(names::AUTH_DENIALS_NOT_AUDITED).absolute(0);
    metrics::counter!(names::HTTP_SHED).absolute(0);
    metrics::counter!(names::HTTP_TIMEOUTS).absolute(0);
    metrics::counter!(names::GRPC_SHED).absolute(0);
    metrics::counter!(names::REJECTED).absolute(0);
    metrics::counter!(names::STORE_WRITES).absolute(0);
    metrics::counter!(names::STORE_PREDICTION_BYTES).absolute(0);
    metrics::counter!(names::FLEET_OUTBOX_DROPPED).absolute(0);
    metrics::gauge!(names::QUEUE_DEPTH).set(0.0);
    metrics::gauge!(names::STORE_QUEUE_DEPTH).set(0.0);
}

/// One bundle version's metric handles, registered when the version loads: recording
/// through a handle takes no lock and allocates nothing, unlike the macros with owned label
/// values (or a map of handles behind a lock) on every request.
pub struct BundleMetrics {
    bundle: String,
    version: String,
    requests_ok: metrics::Counter,
    /// `forecourt_requests_total{status=<code>}` per error code, registered on its first
    /// refusal so that /metrics lists only the codes that happened.
    refused: [OnceLock<metrics::Counter>; ErrorCode::ALL.len()],
    request_duration: metrics::Histogram,
    plugin_duration: metrics::Histogram,
    inference_duration: metrics::Histogram,
    predictions: metrics::Counter,
    /// Per model output, in the model's order: registered on the output's first
    /// single-valued prediction (a multi-valued output such as a forecast never has one).
    predicted_values: Vec<(String, OnceLock<metrics::Histogram>)>,
}

impl std::fmt::Debug for BundleMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleMetrics")
            .field("bundle", &self.bundle)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl BundleMetrics {
    /// The handles of version `version` of `bundle`, whose model has `outputs` in this order.
    pub fn new<'a>(bundle: &str, version: &str, outputs: impl IntoIterator<Item = &'a str>) -> Self {
        let (bundle, version) = (bundle.to_owned(), version.to_owned());
        Self {
            requests_ok: metrics::counter!(names::REQUESTS, "bundle" => bundle.clone(), "version" => version.clone(), "status" => "ok"),
            refused: std::array::from_fn(|_| OnceLock::new()),
            request_duration: metrics::histogram!(names::REQUEST_DURATION, "bundle" => bundle.clone()),
            plugin_duration: metrics::histogram!(names::PLUGIN_DURATION, "bundle" => bundle.clone()),
            inference_duration: metrics::histogram!(names::INFERENCE_DURATION, "bundle" => bundle.clone()),
            predictions: metrics::counter!(names::PREDICTIONS, "bundle" => bundle.clone(), "version" => version.clone()),
            predicted_values: outputs.into_iter().map(|name| (name.to_owned(), OnceLock::new())).collect(),
            bundle,
            version,
        }
    }

    /// One request answered (`refused` None) or refused with that code, and how long it took.
    pub fn request(&self, refused: Option<ErrorCode>, seconds: f64) {
        match refused {
            None => self.requests_ok.increment(1),
            Some(code) => {
                let register = || {
                    metrics::counter!(names::REQUESTS, "bundle" => self.bundle.clone(),
                        "version" => self.version.clone(), "status" => code.as_str())
                };
                match self.refused.get(code as usize) {
                    Some(counter) => counter.get_or_init(register).increment(1),
                    None => register().increment(1),
                }
            }
        }
        self.request_duration.record(seconds);
    }

    /// One instance predicted: its plugin time and the model run's time (if it had its own).
    pub fn prediction(&self, plugin_seconds: f64, inference_seconds: Option<f64>) {
        self.predictions.increment(1);
        self.plugin_duration.record(plugin_seconds);
        if let Some(seconds) = inference_seconds {
            self.inference_duration.record(seconds);
        }
    }

    /// A model run shared by a batch.
    pub fn inference(&self, seconds: f64) {
        self.inference_duration.record(seconds);
    }

    /// The single value a prediction gave for the model's output number `output`.
    pub fn predicted_value(&self, output: usize, value: f64) {
        let Some((name, histogram)) = self.predicted_values.get(output) else { return };
        histogram
            .get_or_init(|| metrics::histogram!(names::PREDICTED_VALUE, "bundle" => self.bundle.clone(), "output" => name.clone()))
            .record(value);
    }
}

/// The standard process metrics (<https://prometheus.io/docs/instrumenting/writing_clientlibs/#process-metrics>),
/// read by metrics-process. Its own collector records `process_cpu_seconds_total` through a
/// `metrics` counter, and those are whole numbers: the CPU time lost its fraction, and a
/// `rate()` over it jumped in steps of a second. So the gauges go through `metrics` and the
/// CPU counter is rendered here, with its fraction.
mod process {
    use std::fmt::Write as _;

    use metrics::{Unit, describe_gauge, gauge};

    const CPU_SECONDS: &str = "process_cpu_seconds_total";

    pub fn describe() {
        describe_gauge!("process_open_fds", Unit::Count, "Number of open file descriptors.");
        describe_gauge!("process_max_fds", Unit::Count, "Maximum number of open file descriptors.");
        describe_gauge!("process_virtual_memory_bytes", Unit::Bytes, "Virtual memory size in bytes.");
        describe_gauge!(
            "process_virtual_memory_max_bytes",
            Unit::Bytes,
            "Maximum amount of virtual memory available in bytes."
        );
        describe_gauge!("process_resident_memory_bytes", Unit::Bytes, "Resident memory size in bytes.");
        describe_gauge!(
            "process_start_time_seconds",
            Unit::Seconds,
            "Start time of the process since unix epoch in seconds."
        );
        describe_gauge!("process_threads", Unit::Count, "Number of OS threads in the process.");
    }

    /// Sets the gauges; returns the CPU seconds (user and system) for [`render_cpu_seconds`].
    pub fn collect() -> Option<f64> {
        let now = metrics_process::collector::collect();
        let gauges = [
            ("process_open_fds", now.open_fds),
            ("process_max_fds", now.max_fds),
            ("process_virtual_memory_bytes", now.virtual_memory_bytes),
            ("process_virtual_memory_max_bytes", now.virtual_memory_max_bytes),
            ("process_resident_memory_bytes", now.resident_memory_bytes),
            ("process_start_time_seconds", now.start_time_seconds),
            ("process_threads", now.threads),
        ];
        for (name, value) in gauges {
            if let Some(value) = value {
                gauge!(name).set(value as f64);
            }
        }
        now.cpu_seconds_total.filter(|seconds| seconds.is_finite())
    }

    /// Appends the CPU counter to a text exposition, as its own metric family.
    pub fn render_cpu_seconds(text: &mut String, seconds: f64) {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        let _ = write!(
            text,
            "# HELP {CPU_SECONDS} Total user and system CPU time spent in seconds.\n\
             # TYPE {CPU_SECONDS} counter\n\
             {CPU_SECONDS} {seconds}\n"
        );
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn cpu_seconds_keep_their_fraction_and_form_their_own_family() {
            let mut text = "# TYPE up gauge\nup 1".to_owned();
            render_cpu_seconds(&mut text, 1.25);
            assert_eq!(
                text,
                "# TYPE up gauge\nup 1\n\
                 # HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n\
                 # TYPE process_cpu_seconds_total counter\n\
                 process_cpu_seconds_total 1.25\n"
            );
        }

        #[test]
        fn this_process_has_spent_some_cpu_time() {
            let spent = collect().expect("Linux reports CPU time");
            assert!(spent > 0.0, "{spent}");
        }
    }
}
