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
use crate::plugin::Plugin;
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
        let response = match instance.postprocess(request, &outputs)? {
            Some(response) => response,
            None => default_response(&outputs),
        };
        Ok(Inference {
            response,
            outputs,
            plugin_time: preprocessed + post_started.elapsed(),
            inference_time,
            explanation,
        })
    }

    /// A batch: each request preprocessed in its own instance, the valid ones stacked
    /// into one model run, each postprocessed in its own instance. One request's failure
    /// is its own: the others are answered. With `explain` (and the bundle's trees), each
    /// answer is explained from its own row of the run.
    pub fn infer_batch(&self, requests: &[&str], explain: bool) -> Vec<Result<Inference, InferenceError>> {
        let mut plugin_times = vec![Duration::ZERO; requests.len()];
        let mut failures: Vec<Option<InferenceError>> = Vec::with_capacity(requests.len());
        let mut instances = Vec::with_capacity(requests.len());
        for (request, time) in requests.iter().zip(&mut plugin_times) {
            let started = Instant::now();
            let prepared = self.prepare(request);
            *time = started.elapsed();
            match prepared {
                Ok(tensors) => {
                    instances.push(tensors);
                    failures.push(None);
                }
                Err(error) => failures.push(Some(error)),
            }
        }

        let run_started = Instant::now();
        let run = self.run_stacked(&instances);
        let inference_time = run_started.elapsed();
        let mut outputs: Box<dyn Iterator<Item = Result<Vec<Tensor>, InferenceError>>> = match run {
            Ok(per_instance) => Box::new(per_instance.into_iter().map(Ok)),
            Err(error) => {
                let reason = error.to_string();
                Box::new(std::iter::repeat_with(move || Err(ModelError::Run { reason: reason.clone() }.into())))
            }
        };
        let mut inputs = instances.iter();
        let explainer = self.explainer.as_deref().filter(|_| explain);

        failures
            .into_iter()
            .zip(requests.iter().zip(plugin_times))
            .map(|(failure, (request, plugin_time))| {
                if let Some(error) = failure {
                    return Err(error);
                }
                let tensors = inputs.next().expect("one input per valid instance");
                let outputs = outputs.next().expect("one model result per valid instance")?;
                let explanation =
                    explainer.map(|explainer| explain_one(explainer, request, tensors, &outputs)).transpose()?;
                let started = Instant::now();
                let response = self.postprocess_fresh(request, &outputs)?;
                Ok(Inference {
                    response,
                    outputs,
                    plugin_time: plugin_time + started.elapsed(),
                    inference_time,
                    explanation,
                })
            })
            .collect()
    }

    /// One request's tensors, checked against the model.
    fn prepare(&self, request: &str) -> Result<Vec<Tensor>, InferenceError> {
        let tensors = self.plugin.preprocess(request)?;
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

    fn postprocess_fresh(&self, request: &str, outputs: &[Tensor]) -> Result<Map<String, Value>, InferenceError> {
        let mut instance = self.plugin.instantiate()?;
        Ok(instance.postprocess(request, outputs)?.unwrap_or_else(|| default_response(outputs)))
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
fn explain_one(
    explainer: &Explainer,
    request: &str,
    inputs: &[Tensor],
    outputs: &[Tensor],
) -> Result<Explanation, ExplainError> {
    let parsed: Value = serde_json::from_str(request).unwrap_or(Value::Null);
    explainer.explain(&parsed, inputs, outputs)
}
