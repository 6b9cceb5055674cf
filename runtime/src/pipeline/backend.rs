//! What the pipeline asks of the bundles it serves, as two traits: a [`Router`] says which
//! version of a bundle name a request goes to, and a [`Backend`] is one version, which runs
//! requests (synchronously: the pipeline calls it on the worker pool) and carries its own
//! counters. The appliance's are the [`Registry`] and its [`Bundle`]s (a wasm plugin and an
//! ONNX model); the pipeline's unit tests run the whole request path (routing, canary
//! shares, the worker pool, the store, errors and overload) on plain ones.
//!
//! Nothing here may do I/O or know of HTTP: a backend is CPU work and counters.

use std::sync::Arc;

use semver::Version;

use crate::bundle::{Bundle, Inference, InferenceError, Registry, Routes, VersionStats, Versioned};
use crate::model::ModelError;
use crate::telemetry::BundleMetrics;
use crate::tensor::Tensor;

/// One version of a bundle, as the request path uses it.
pub trait Backend: Versioned + Send + Sync + 'static {
    /// One request, preprocessed, run and postprocessed; with `explain`, explained too
    /// (refused when the version cannot explain, see [`explainable`](Self::explainable)).
    fn infer(&self, request: &str, explain: bool) -> Result<Inference, InferenceError>;

    /// Several requests, run through the model together, each answered (or refused) in its
    /// place.
    fn infer_batch(&self, requests: &[&str], explain: bool) -> Vec<Result<Inference, InferenceError>>;

    /// Tensors straight to the model (the inference protocol: no plugin).
    fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, ModelError>;

    /// Whether this version explains its predictions.
    fn explainable(&self) -> bool;

    /// The sha256 of the plugin and of the model, which every stored prediction names.
    fn digests(&self) -> (&str, &str);

    /// This version's request and prediction metrics.
    fn metrics(&self) -> &BundleMetrics;

    /// This version's request counts, which a canary is judged on.
    fn stats(&self) -> &VersionStats;
}

/// Where a bundle name's requests go.
pub trait Router: Send + Sync + 'static {
    type Backend: Backend;

    /// The version the next single prediction goes to: a canary's share, or the active one.
    fn route(&self, name: &str) -> Option<Arc<Self::Backend>>;

    /// The active version of `name`.
    fn active(&self, name: &str) -> Option<Arc<Self::Backend>>;

    /// A given version of `name`, active or not.
    fn version(&self, name: &str, version: &Version) -> Option<Arc<Self::Backend>>;
}

impl Backend for Bundle {
    fn infer(&self, request: &str, explain: bool) -> Result<Inference, InferenceError> {
        if explain { self.infer_explained(request) } else { Bundle::infer(self, request) }
    }

    fn infer_batch(&self, requests: &[&str], explain: bool) -> Vec<Result<Inference, InferenceError>> {
        Bundle::infer_batch(self, requests, explain)
    }

    fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, ModelError> {
        self.model().run(inputs)
    }

    fn explainable(&self) -> bool {
        self.explainer().is_some()
    }

    fn digests(&self) -> (&str, &str) {
        (self.plugin().sha256(), self.model().sha256())
    }

    fn metrics(&self) -> &BundleMetrics {
        Bundle::metrics(self)
    }

    fn stats(&self) -> &VersionStats {
        Bundle::stats(self)
    }
}

impl Router for Registry {
    type Backend = Bundle;

    fn route(&self, name: &str) -> Option<Arc<Bundle>> {
        Registry::route(self, name)
    }

    fn active(&self, name: &str) -> Option<Arc<Bundle>> {
        Registry::active(self, name)
    }

    fn version(&self, name: &str, version: &Version) -> Option<Arc<Bundle>> {
        Registry::version(self, name, version)
    }
}

/// The routing table alone routes too: what the unit tests serve their backends with.
impl<B: Backend> Router for Routes<B> {
    type Backend = B;

    fn route(&self, name: &str) -> Option<Arc<B>> {
        Routes::route(self, name)
    }

    fn active(&self, name: &str) -> Option<Arc<B>> {
        Routes::active(self, name)
    }

    fn version(&self, name: &str, version: &Version) -> Option<Arc<B>> {
        Routes::version(self, name, version)
    }
}
