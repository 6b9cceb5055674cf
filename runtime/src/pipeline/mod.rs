//! The request path. A client's request goes to the active version of its bundle, runs
//! on the worker pool (plugin and model are synchronous and may run up to the plugin's
//! CPU limit), is recorded in the store, and only then is answered: nothing is
//! acknowledged that a crash could lose.
//!
//! A canary (see [`Registry::start_canary`]) takes its share of the single predictions,
//! whose outcomes it is judged on; batches and the inference protocol go to the active
//! version (or the version they name), so that one batch never mixes versions.
//!
//! The pipeline reaches bundles through the traits of [`backend`] (the appliance's
//! [`Registry`] and [`Bundle`]s, the unit tests' plain ones), the worker pool and the store;
//! it knows nothing of HTTP. Every outcome is counted in the metrics of
//! [`crate::telemetry::names`].

mod backend;
#[cfg(test)]
mod tests;

pub use backend::{Backend, Router};

use std::sync::Arc;
use std::time::Instant;

use semver::Version;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::auth::TokenId;
use crate::bundle::{Bundle, InferenceError, Registry, Versioned};
use crate::error_code::ErrorCode;
use crate::explain::{ExplainError, Explanation};
use crate::model::ModelError;
use crate::plugin::PluginError;
use crate::store::{JsonText, PredictionRecord, Store, StoreError};
use crate::telemetry::{BundleMetrics, RecentTraffic, names};
use crate::tensor::{Tensor, TensorData};
use crate::workers::{WorkerError, WorkerPool};

/// Why a request could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("there is no bundle named {name:?}")]
    UnknownBundle { name: String },
    #[error("bundle {name:?} has no version {version}")]
    UnknownVersion { name: String, version: String },
    #[error("a batch may hold at most {max} instances, not {size}")]
    BatchTooLarge { size: usize, max: usize },
    #[error(transparent)]
    Inference(#[from] InferenceError),
    #[error("the appliance is at capacity: {0}")]
    Overloaded(String),
    #[error("the prediction could not be stored: {0}")]
    Store(StoreError),
    #[error("the inference worker failed: {0}")]
    Worker(WorkerError),
}

impl PipelineError {
    /// The stable error code of the API and fleet messages (api-shapes.md section 2).
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::UnknownBundle { .. } | Self::UnknownVersion { .. } => ErrorCode::UnknownBundle,
            Self::BatchTooLarge { .. } => ErrorCode::InvalidField,
            Self::Inference(error) => inference_code(error),
            Self::Overloaded(_) => ErrorCode::Overloaded,
            Self::Store(_) | Self::Worker(_) => ErrorCode::InternalError,
        }
    }

    /// Whether the bundle version (or the appliance) is to blame, rather than the client or
    /// the load: what a canary's error rate counts.
    pub fn is_version_fault(&self) -> bool {
        self.code().is_server_fault()
    }
}

/// The stable code of one instance's failure.
pub fn inference_code(error: &InferenceError) -> ErrorCode {
    match error {
        InferenceError::Input(input) => match input.code {
            crate::plugin::InputErrorCode::MalformedJson | crate::plugin::InputErrorCode::NotAnObject => {
                ErrorCode::InvalidJson
            }
            crate::plugin::InputErrorCode::MissingField => ErrorCode::MissingField,
            _ => ErrorCode::InvalidField,
        },
        InferenceError::Plugin(PluginError::Exhausted { .. }) => ErrorCode::Overloaded,
        InferenceError::Plugin(_) => ErrorCode::PluginFailed,
        InferenceError::Model(_) | InferenceError::Batch(_) => ErrorCode::ModelFailed,
        InferenceError::Explain(_) => ErrorCode::ExplanationsUnavailable,
    }
}

impl From<StoreError> for PipelineError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Overloaded { .. } => Self::Overloaded(error.to_string()),
            other => Self::Store(other),
        }
    }
}

impl From<WorkerError> for PipelineError {
    fn from(error: WorkerError) -> Self {
        match error {
            WorkerError::Overloaded { .. } => Self::Overloaded(error.to_string()),
            other => Self::Worker(other),
        }
    }
}

/// An answered, stored prediction.
#[derive(Debug, Clone)]
pub struct Prediction {
    pub id: Uuid,
    pub bundle: String,
    pub version: String,
    pub outputs: Map<String, Value>,
    pub latency_ms: f64,
    /// Why this value, when asked for.
    pub explanation: Option<Explanation>,
}

/// A batch's answers, one per instance in order.
#[derive(Debug)]
pub struct BatchPrediction {
    pub bundle: String,
    pub version: String,
    pub results: Vec<Result<Prediction, InferenceError>>,
    pub latency_ms: f64,
}

/// Raw model outputs for the inference protocol.
#[derive(Debug)]
pub struct RawInference<B = Bundle> {
    pub id: Uuid,
    pub bundle: Arc<B>,
    pub outputs: Vec<Tensor>,
}

/// The request path over the bundles `R` routes to: the appliance's [`Registry`] unless a
/// test says otherwise.
#[derive(Debug)]
pub struct Pipeline<R = Registry> {
    registry: Arc<R>,
    workers: WorkerPool,
    store: Store,
    store_inputs: bool,
    max_batch: usize,
    /// The dashboard's window of recent requests, over every bundle.
    recent: RecentTraffic,
    /// Unlabelled handles, registered once (each bundle version carries its own).
    queue_depth: metrics::Gauge,
    batch_size: metrics::Histogram,
    rejected: metrics::Counter,
}

/// What a worker hands back for one request: the inference, the input's digest and (when
/// inputs are kept) the input.
type Worked = (Result<crate::bundle::Inference, InferenceError>, String, Option<JsonText>);

impl<R: Router> Pipeline<R> {
    pub fn new(registry: Arc<R>, workers: WorkerPool, store: Store, store_inputs: bool, max_batch: usize) -> Self {
        Self {
            registry,
            workers,
            store,
            store_inputs,
            max_batch,
            recent: RecentTraffic::default(),
            queue_depth: metrics::gauge!(names::QUEUE_DEPTH),
            batch_size: metrics::histogram!(names::BATCH_SIZE),
            rejected: metrics::counter!(names::REJECTED),
        }
    }

    pub fn registry(&self) -> &Arc<R> {
        &self.registry
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The last minutes of requests that reached a bundle, for the dashboard.
    pub fn recent_traffic(&self) -> &RecentTraffic {
        &self.recent
    }

    /// Jobs waiting for a worker.
    pub fn queued(&self) -> usize {
        self.workers.queued()
    }

    /// One request (JSON text) through the active version of `bundle`; `id` becomes the
    /// prediction id. With `explain`, the answer carries the prediction's explanation
    /// (refused at once for a bundle without trees).
    pub async fn predict(
        &self,
        bundle: &str,
        id: Uuid,
        request: String,
        origin: Origin<'_>,
        explain: bool,
    ) -> Result<Prediction, PipelineError> {
        let started = Instant::now();
        let routed = self.route(bundle)?;
        let result = if explain && !routed.explainable() {
            Err(PipelineError::Inference(ExplainError::Unavailable.into()))
        } else {
            self.predict_on(&routed, Asked { id, request, origin, explain }, started).await
        };
        let seconds = self.answered(&routed, result.as_ref().err().map(PipelineError::code), started);
        routed.stats().observe(result.as_ref().is_err_and(PipelineError::is_version_fault), seconds);
        result
    }

    async fn predict_on(
        &self,
        bundle: &Arc<R::Backend>,
        asked: Asked<'_>,
        started: Instant,
    ) -> Result<Prediction, PipelineError> {
        let Asked { id, request, origin, explain } = asked;
        let job_bundle = Arc::clone(bundle);
        let store_inputs = self.store_inputs;
        let (inference, input_sha256, input): Worked = self
            .submit(move || {
                let inference = job_bundle.infer(&request, explain);
                let (digest, input) = digest_input(&request, store_inputs);
                (inference, digest, input)
            })
            .await?;
        let inference = inference?;
        observe_inference(bundle.metrics(), &inference, true);
        self.batch_size.record(1.0);
        let latency_ms = started.elapsed().as_secs_f64() * 1e3;
        let mut record = prediction_record(&**bundle, id, input_sha256, input, &inference.response, latency_ms);
        origin.stamp(&mut record);
        record.explanation = inference.explanation.as_ref().map(explanation_json);
        self.store.record(record).await?;
        Ok(Prediction {
            id,
            bundle: bundle.name().to_owned(),
            version: bundle.version().to_string(),
            outputs: inference.response,
            latency_ms: started.elapsed().as_secs_f64() * 1e3,
            explanation: inference.explanation,
        })
    }

    /// A batch of instances (each a JSON value) run through the model together; each
    /// instance's failure is reported in its place without failing the others. With
    /// `explain`, each answer carries its explanation (the whole batch is refused for a
    /// bundle without trees).
    pub async fn predict_batch(
        &self,
        bundle: &str,
        instances: Vec<Value>,
        origin: Origin<'_>,
        explain: bool,
    ) -> Result<BatchPrediction, PipelineError> {
        let started = Instant::now();
        if instances.len() > self.max_batch {
            return Err(PipelineError::BatchTooLarge { size: instances.len(), max: self.max_batch });
        }
        let active = self.active(bundle)?;
        if explain && !active.explainable() {
            return Err(PipelineError::Inference(ExplainError::Unavailable.into()));
        }
        let metrics = active.metrics();
        let job_bundle = Arc::clone(&active);
        let store_inputs = self.store_inputs;
        let worked: Vec<Worked> = self
            .submit(move || {
                let requests: Vec<String> = instances.iter().map(Value::to_string).collect();
                let refs: Vec<&str> = requests.iter().map(String::as_str).collect();
                let results = job_bundle.infer_batch(&refs, explain);
                results
                    .into_iter()
                    .zip(&requests)
                    .map(|(result, request)| {
                        let (digest, input) = digest_input(request, store_inputs);
                        (result, digest, input)
                    })
                    .collect()
            })
            .await?;
        self.batch_size.record(worked.len() as f64);

        let latency_ms = started.elapsed().as_secs_f64() * 1e3;
        let mut records = Vec::new();
        let results: Vec<Result<Prediction, InferenceError>> = worked
            .into_iter()
            .map(|(result, digest, input)| {
                let inference = result?;
                // The bundle recorded its model runs, shared by the batch's rows.
                observe_inference(metrics, &inference, false);
                let id = Uuid::now_v7();
                let mut record = prediction_record(&*active, id, digest, input, &inference.response, latency_ms);
                origin.stamp(&mut record);
                record.explanation = inference.explanation.as_ref().map(explanation_json);
                records.push(record);
                Ok(Prediction {
                    id,
                    bundle: active.name().to_owned(),
                    version: active.version().to_string(),
                    outputs: inference.response,
                    latency_ms,
                    explanation: inference.explanation,
                })
            })
            .collect();
        if !records.is_empty() {
            self.store.record_many(records).await?;
        }
        self.answered(&active, None, started);
        Ok(BatchPrediction {
            bundle: active.name().to_owned(),
            version: active.version().to_string(),
            results,
            latency_ms: started.elapsed().as_secs_f64() * 1e3,
        })
    }

    /// Raw tensors straight to a bundle's model (the inference protocol: no plugin).
    pub async fn infer_tensors(
        &self,
        bundle: &str,
        version: Option<&Version>,
        id: Uuid,
        inputs: Vec<Tensor>,
        origin: Origin<'_>,
    ) -> Result<RawInference<R::Backend>, PipelineError> {
        let started = Instant::now();
        let target = match version {
            None => self.active(bundle)?,
            Some(version) => self.registry.version(bundle, version).ok_or_else(|| PipelineError::UnknownVersion {
                name: bundle.to_owned(),
                version: version.to_string(),
            })?,
        };
        let job_bundle = Arc::clone(&target);
        let store_inputs = self.store_inputs;
        let (outputs, input_sha256, input) = self
            .submit(move || {
                // The tensors' JSON (names, shapes, typed values) is what the client sent.
                let json = serde_json::to_string(&inputs).unwrap_or_default();
                let (digest, input) = digest_input(&json, store_inputs);
                (job_bundle.run(&inputs), digest, input)
            })
            .await?;
        let outputs = outputs.map_err(|error: ModelError| PipelineError::Inference(error.into()));
        let outputs = match outputs {
            Ok(outputs) => outputs,
            Err(error) => {
                self.answered(&target, Some(error.code()), started);
                return Err(error);
            }
        };
        let response = crate::bundle::default_response(&outputs);
        let latency_ms = started.elapsed().as_secs_f64() * 1e3;
        let mut record = prediction_record(&*target, id, input_sha256, input, &response, latency_ms);
        origin.stamp(&mut record);
        self.store.record(record).await?;
        self.answered(&target, None, started);
        Ok(RawInference { id, bundle: target, outputs })
    }

    fn active(&self, name: &str) -> Result<Arc<R::Backend>, PipelineError> {
        self.registry.active(name).ok_or_else(|| PipelineError::UnknownBundle { name: name.to_owned() })
    }

    /// The version this request goes to: the active one, or a canary for its share.
    fn route(&self, name: &str) -> Result<Arc<R::Backend>, PipelineError> {
        self.registry.route(name).ok_or_else(|| PipelineError::UnknownBundle { name: name.to_owned() })
    }

    /// Counts a request to `bundle` answered (`refused` None) or refused, in the bundle's
    /// metrics and the dashboard's window; returns the seconds it took.
    fn answered(&self, bundle: &R::Backend, refused: Option<ErrorCode>, started: Instant) -> f64 {
        let seconds = started.elapsed().as_secs_f64();
        bundle.metrics().request(refused, seconds);
        self.recent.observe(refused.is_some(), seconds);
        seconds
    }

    async fn submit<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> Result<T, PipelineError> {
        let pending = self.workers.submit(job).inspect_err(|_| {
            self.rejected.increment(1);
        })?;
        self.queue_depth.set(self.workers.queued() as f64);
        let result = pending.await;
        // Again once done: set only on submit, the gauge kept the depth the last request
        // saw (1 on an idle appliance, where /health/detailed says 0).
        self.queue_depth.set(self.workers.queued() as f64);
        Ok(result?)
    }
}

/// The input's sha256 and, when inputs are kept, the input itself: its very bytes, so that
/// the digest can be checked against it (a request the plugin took is JSON; anything else
/// would be kept as a JSON string).
fn digest_input(request: &str, store_inputs: bool) -> (String, Option<JsonText>) {
    let digest = hex::encode(Sha256::digest(request.as_bytes()));
    (digest, store_inputs.then(|| JsonText::or_string(request)))
}

fn prediction_record(
    bundle: &impl Backend,
    id: Uuid,
    input_sha256: String,
    input: Option<JsonText>,
    outputs: &Map<String, Value>,
    latency_ms: f64,
) -> PredictionRecord {
    let (plugin_sha256, model_sha256) = bundle.digests();
    PredictionRecord {
        id,
        time: crate::store::time_of_id(id).unwrap_or_default(),
        bundle: bundle.name().to_owned(),
        version: bundle.version().to_string(),
        plugin_sha256: plugin_sha256.to_owned(),
        model_sha256: model_sha256.to_owned(),
        input_sha256,
        input,
        outputs: Value::Object(outputs.clone()),
        latency_ms,
        token_id: None,
        client_request_id: None,
        explanation: None,
    }
}

/// An explanation as the record keeps it: the JSON the client was answered with.
fn explanation_json(explanation: &Explanation) -> Value {
    // Plain data (strings, finite numbers, maps): serialising it cannot fail.
    serde_json::to_value(explanation).unwrap_or(Value::Null)
}

/// Who asked for a prediction, kept in its record: the API token (by its id, never the
/// token) and the client's own `x-request-id`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Origin<'a> {
    pub token: Option<&'a TokenId>,
    pub client_request_id: Option<&'a str>,
}

impl Origin<'_> {
    fn stamp(&self, record: &mut PredictionRecord) {
        record.token_id = self.token.map(ToString::to_string);
        record.client_request_id = self.client_request_id.map(str::to_owned);
    }
}

/// One request as the client asked it: its id, its JSON and who sent it.
struct Asked<'a> {
    id: Uuid,
    request: String,
    origin: Origin<'a>,
    explain: bool,
}

/// Plugin and model times, the prediction count and the predicted value (row 0 of each
/// single-valued float output: the valuation today, not the forecasts).
fn observe_inference(metrics: &BundleMetrics, inference: &crate::bundle::Inference, own_run: bool) {
    let inference_seconds = own_run.then_some(inference.inference_time.as_secs_f64());
    metrics.prediction(inference.plugin_time.as_secs_f64(), inference_seconds);
    for (index, output) in inference.outputs.iter().enumerate() {
        let row_width = output.shape.get(1..).map_or(1, |rest| rest.iter().product::<usize>());
        if let (TensorData::Float32(values), 1) = (&output.data, row_width)
            && let Some(&value) = values.first()
        {
            metrics.predicted_value(index, f64::from(value));
        }
    }
}
