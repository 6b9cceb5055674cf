//! A loaded bundle and its synchronous inference: plugin, model run, response, explanation.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use semver::Version;
use serde_json::{Map, Value};

use super::accuracy::VersionAccuracy;
use super::error::InferenceError;
use super::manifest::Manifest;
use super::profile::DriftWindow;
use super::response::default_response;
use super::stats::VersionStats;
use super::training::TrainingFigures;
use crate::explain::{ExplainError, Explainer, Explanation};
use crate::model::{Model, ModelError};
use crate::plugin::{Plugin, PluginError, PluginInstance};
use crate::telemetry::BundleMetrics;
use crate::tensor::{Tensor, split, stack};

/// A bundle ready to serve: its manifest, plugin and model.
#[derive(Debug)]
pub struct Bundle {
    pub(super) manifest: Manifest,
    pub(super) dir: PathBuf,
    pub(super) plugin: Plugin,
    pub(super) model: Model,
    /// The id of the trusted key whose signature was verified at load, if keys are configured.
    pub(super) signed_by: Option<String>,
    /// Outcomes of the requests served by this version (a canary is judged on them).
    pub(super) stats: VersionStats,
    /// How right its predictions turned out, as outcomes are recorded.
    pub(super) accuracy: VersionAccuracy,
    /// What training measured on held-out rows (metrics.json), to compare the live figures with.
    pub(super) training: Option<TrainingFigures>,
    /// The latest features it fed its model, when the bundle carries a training profile.
    pub(super) drift: Option<DriftWindow>,
    /// Explains predictions, when the bundle carries its trees.
    pub(super) explainer: Option<Arc<Explainer>>,
    /// Its request and prediction metrics, registered at load.
    pub(super) metrics: BundleMetrics,
}

/// Rows of a batch whose plugin instances are alive at once; they share one model run. A
/// row keeps its instance from preprocess to postprocess: one instance a row instead of
/// two took the instances' creation and teardown from 37% of a 1,000-row batch's CPU to
/// 26% (perf, car-price). Chunks of 32 did worse (29%): more pool slots touched in turn
/// are colder in the caches, and stay resident.
const BATCH_CHUNK: usize = 8;

/// One answered request.
#[derive(Debug, Clone)]
pub struct Inference {
    /// The response object: the plugin's shape, or the default one.
    pub response: Map<String, Value>,
    /// This request's rows of the model's raw outputs.
    pub outputs: Vec<Tensor>,
    /// Time in the plugin (preprocess and postprocess) for this request.
    pub plugin_time: Duration,
    /// Time of the model run this request was part of.
    pub inference_time: Duration,
    /// Why this value, when asked for.
    pub explanation: Option<Explanation>,
}

impl Bundle {
    pub fn name(&self) -> &str {
        &self.manifest.bundle.name
    }

    pub fn version(&self) -> &Version {
        &self.manifest.bundle.version
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The id of the trusted key that signed this bundle (`None` when bundles are not verified).
    pub fn signed_by(&self) -> Option<&str> {
        self.signed_by.as_deref()
    }

    /// The explainer, when the bundle carries its trees.
    pub fn explainer(&self) -> Option<&Explainer> {
        self.explainer.as_deref()
    }

    /// One request through a fresh plugin instance (preprocess and postprocess) and one
    /// model run.
    pub fn infer(&self, request: &str) -> Result<Inference, InferenceError> {
        self.infer_one(request, false, true)
    }

    /// [`infer`](Self::infer) with the prediction explained (refused when the bundle has no
    /// trees): the explanation is computed from the same tensors the model ran on.
    pub fn infer_explained(&self, request: &str) -> Result<Inference, InferenceError> {
        if self.explainer.is_none() {
            return Err(ExplainError::Unavailable.into());
        }
        self.infer_one(request, true, true)
    }

    /// `traffic`: whether the request is a client's, counted into the drift window (the
    /// smoke test's samples are not).
    pub(super) fn infer_one(&self, request: &str, explain: bool, traffic: bool) -> Result<Inference, InferenceError> {
        let started = Instant::now();
        let mut instance = self.plugin.instantiate()?;
        let tensors = instance.preprocess(request)?;
        let preprocessed = started.elapsed();
        let run_started = Instant::now();
        let outputs = self.model.run(&tensors)?;
        let inference_time = run_started.elapsed();
        // Only what the model took counts as fed to it.
        if let Some(drift) = self.drift.as_ref().filter(|_| traffic) {
            drift.observe(&tensors);
        }
        let explanation = match (&self.explainer, explain) {
            (Some(explainer), true) => Some(explain_one(explainer, request, &tensors, &outputs)?),
            _ => None,
        };
        let post_started = Instant::now();
        let response = respond(&mut instance, request, &outputs)?;
        Ok(Inference {
            response,
            outputs,
            plugin_time: preprocessed + post_started.elapsed(),
            inference_time,
            explanation,
        })
    }

    /// A batch: each request preprocessed and postprocessed in an instance of its own, the
    /// valid ones run through the model in chunks of at most [`BATCH_CHUNK`] rows. One
    /// request's failure is its own: the others are answered. With `explain` (and the
    /// bundle's trees), each answer is explained from its own row of the run. Each chunk's
    /// model run is recorded in the bundle's metrics.
    pub fn infer_batch(&self, requests: &[&str], explain: bool) -> Vec<Result<Inference, InferenceError>> {
        let explainer = self.explainer.as_deref().filter(|_| explain);
        let mut answers = Vec::with_capacity(requests.len());
        let mut rest = requests;
        while !rest.is_empty() {
            let taken = self.infer_chunk(rest, explainer, &mut answers);
            rest = &rest[taken..];
        }
        answers
    }

    /// Takes rows from the start of `requests` while their instances fit (at most
    /// [`BATCH_CHUNK`], fewer when the plugin pool runs out), answers them into `answers`,
    /// and returns how many it took: always at least one.
    fn infer_chunk(
        &self,
        requests: &[&str],
        explainer: Option<&Explainer>,
        answers: &mut Vec<Result<Inference, InferenceError>>,
    ) -> usize {
        let mut prepared: Vec<(Result<PluginInstance, InferenceError>, Duration)> = Vec::new();
        let mut inputs = Vec::new();
        for request in requests.iter().take(BATCH_CHUNK) {
            let started = Instant::now();
            let instance = match self.plugin.instantiate() {
                // The pool is full of this chunk's own instances: run what it holds, and
                // take this row again in the next chunk, once they are gone.
                Err(PluginError::Exhausted { .. }) if !inputs.is_empty() => break,
                instance => instance,
            };
            let row = instance.map_err(InferenceError::from).and_then(|mut instance| {
                let tensors = self.prepare(&mut instance, request)?;
                Ok((instance, tensors))
            });
            let row = row.map(|(instance, tensors)| {
                inputs.push(tensors);
                instance
            });
            prepared.push((row, started.elapsed()));
        }
        let taken = prepared.len();

        let run_started = Instant::now();
        let run = self.run_stacked(&inputs);
        let inference_time = run_started.elapsed();
        if !inputs.is_empty() {
            self.metrics.inference(inference_time.as_secs_f64());
        }
        let mut outputs: Box<dyn Iterator<Item = Result<Vec<Tensor>, InferenceError>>> = match run {
            Ok(per_instance) => Box::new(per_instance.into_iter().map(Ok)),
            Err(error) => {
                let reason = error.to_string();
                Box::new(std::iter::repeat_with(move || Err(ModelError::Run { reason: reason.clone() }.into())))
            }
        };
        let mut inputs = inputs.iter();
        answers.extend(prepared.into_iter().zip(requests).map(|((row, plugin_time), request)| {
            let mut instance = row?;
            let tensors = inputs.next().expect("one input per valid instance");
            let outputs = outputs.next().expect("one model result per valid instance")?;
            let explanation =
                explainer.map(|explainer| explain_one(explainer, request, tensors, &outputs)).transpose()?;
            let started = Instant::now();
            let response = respond(&mut instance, request, &outputs)?;
            Ok(Inference {
                response,
                outputs,
                plugin_time: plugin_time + started.elapsed(),
                inference_time,
                explanation,
            })
        }));
        taken
    }

    /// One request's tensors from its instance, checked against the model.
    fn prepare(&self, instance: &mut PluginInstance, request: &str) -> Result<Vec<Tensor>, InferenceError> {
        let tensors = instance.preprocess(request)?;
        self.model.check_inputs(&tensors)?;
        if let Some(drift) = &self.drift {
            drift.observe(&tensors);
        }
        Ok(tensors)
    }

    fn run_stacked(&self, instances: &[Vec<Tensor>]) -> Result<Vec<Vec<Tensor>>, InferenceError> {
        if instances.is_empty() {
            return Ok(Vec::new());
        }
        let (batch, rows) = stack(instances)?;
        let outputs = self.model.run(&batch)?;
        Ok(split(&outputs, &rows)?)
    }

    /// Records that the bundle's folder moved (its files unchanged): the plugin and the model
    /// are in memory, only [`dir`](Self::dir) follows.
    pub fn moved_to(&mut self, dir: PathBuf) {
        self.dir = dir;
    }

    /// Requests served by this version, for judging a canary.
    pub fn stats(&self) -> &VersionStats {
        &self.stats
    }

    /// This version's request and prediction metrics.
    pub fn metrics(&self) -> &BundleMetrics {
        &self.metrics
    }

    /// The live accuracy of this version's predictions, from the outcomes recorded so far.
    pub fn accuracy(&self) -> &VersionAccuracy {
        &self.accuracy
    }

    /// The features this version fed its model lately, against its training profile.
    pub fn training(&self) -> Option<&TrainingFigures> {
        self.training.as_ref()
    }

    pub fn drift(&self) -> Option<&DriftWindow> {
        self.drift.as_ref()
    }
}

/// One request's explanation from the tensors its model run took and gave; the request's
/// JSON supplies each field's value as the client wrote it.
/// The response the instance shapes from this request's outputs, or the default shape when
/// the plugin leaves it to the host.
fn respond(
    instance: &mut PluginInstance,
    request: &str,
    outputs: &[Tensor],
) -> Result<Map<String, Value>, InferenceError> {
    Ok(instance.postprocess(request, outputs)?.unwrap_or_else(|| default_response(outputs)))
}

fn explain_one(
    explainer: &Explainer,
    request: &str,
    inputs: &[Tensor],
    outputs: &[Tensor],
) -> Result<Explanation, ExplainError> {
    let parsed: Value = serde_json::from_str(request).unwrap_or(Value::Null);
    explainer.explain(&parsed, inputs, outputs)
}
