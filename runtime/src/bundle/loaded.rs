//! A loaded bundle and its synchronous inference.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use semver::Version;
use serde_json::{Map, Value};

use super::accuracy::VersionAccuracy;
use super::error::{BundleError, InferenceError};
use super::manifest::{DEFAULT_TOLERANCE, MANIFEST_FILE, Manifest};
use super::profile::{DriftWindow, MAX_PROFILE_BYTES, Profile};
use super::signature::TrustedKeys;
use super::stats::VersionStats;
use super::training::TrainingFigures;
use crate::explain::{Ensemble, ExplainError, Explainer, Explanation, Vocabulary};
use crate::model::{Model, ModelError, OnnxRuntime};
use crate::plugin::{Plugin, PluginHost};
use crate::tensor::{Tensor, TensorData, split, stack};

/// Loads bundles: checks, plugin and model, the interface between them, and the samples.
#[derive(Debug, Clone)]
pub struct BundleLoader {
    plugins: Arc<PluginHost>,
    onnx: OnnxRuntime,
    sessions_per_model: usize,
    /// When set, only bundles signed by one of these keys load.
    trusted: Option<Arc<TrustedKeys>>,
    /// Rows of each version's drift window; none kept when zero (drift off).
    drift_window: usize,
}

impl BundleLoader {
    /// `sessions_per_model`: how many runs of one model may proceed at once (the workers).
    pub fn new(plugins: Arc<PluginHost>, onnx: OnnxRuntime, sessions_per_model: usize) -> Self {
        Self { plugins, onnx, sessions_per_model, trusted: None, drift_window: 0 }
    }

    /// Requires every bundle to carry a `bundle.sig` by one of `keys`, verified over the
    /// exact bytes of its `bundle.toml` before anything else of it is read.
    pub fn with_trusted_keys(mut self, keys: TrustedKeys) -> Self {
        self.trusted = Some(Arc::new(keys));
        self
    }

    /// Keeps a window of `rows` requests' features for each version whose bundle carries a
    /// training profile (drift); zero keeps none.
    pub fn with_drift_window(mut self, rows: usize) -> Self {
        self.drift_window = rows;
        self
    }

    /// The keys bundles must be signed with, if any.
    pub fn trusted_keys(&self) -> Option<&TrustedKeys> {
        self.trusted.as_deref()
    }

    pub fn plugin_host(&self) -> &PluginHost {
        &self.plugins
    }

    /// Loads the bundle in `dir` and checks it: [`verify`](Self::verify), [`build`](Self::build)
    /// and [`Bundle::smoke_test`].
    pub fn load(&self, dir: &Path) -> Result<Bundle, BundleError> {
        let bundle = self.build(self.verify(dir)?)?;
        bundle.smoke_test()?;
        Ok(bundle)
    }

    /// The checks that execute nothing of the bundle: the signature over the manifest (when
    /// trusted keys are set), the runtime version it needs, and the files' digests.
    pub fn verify(&self, dir: &Path) -> Result<Verified, BundleError> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = std::fs::read(&path)
            .map_err(|error| BundleError::Read { path: path.clone(), reason: error.to_string() })?;
        // The signature first, over the very bytes parsed next: the digests it vouches for
        // then cover the plugin and the model.
        let signed_by = self.trusted.as_ref().map(|keys| keys.verify(dir, &bytes)).transpose()?;
        let manifest = Manifest::parse(&path, &bytes)?;
        let (name, version) = (manifest.bundle.name.clone(), manifest.bundle.version.to_string());
        let running = Version::parse(env!("CARGO_PKG_VERSION")).expect("the crate version is semver");
        if manifest.bundle.min_runtime_version > running {
            return Err(BundleError::RuntimeTooOld {
                name,
                version,
                required: manifest.bundle.min_runtime_version.to_string(),
                running: running.to_string(),
            });
        }
        manifest.verify_files(dir)?;
        Ok(Verified { manifest, dir: dir.to_owned(), signed_by })
    }

    /// Compiles the plugin, builds the model's sessions and checks that the manifest, the
    /// plugin and the model fit together.
    pub fn build(&self, verified: Verified) -> Result<Bundle, BundleError> {
        let Verified { manifest, dir, signed_by } = verified;
        let (name, version) = (manifest.bundle.name.clone(), manifest.bundle.version.to_string());
        let plugin = self.plugins.load(&manifest.plugin_path(&dir)).map_err(|source| BundleError::Plugin {
            name: name.clone(),
            version: version.clone(),
            source,
        })?;
        let model = Model::load(&self.onnx, &manifest.model_path(&dir), self.sessions_per_model)
            .map_err(|source| BundleError::Model { name: name.clone(), version: version.clone(), source })?;
        let accuracy = VersionAccuracy::new(manifest.outcome.as_ref());
        let drift = self.drift_window(&manifest, &dir, &model).map_err(|reason| BundleError::Check {
            name: name.clone(),
            version: version.clone(),
            reason,
        })?;
        let explainer = load_explainer(&manifest, &dir).map_err(|reason| BundleError::Check {
            name: name.clone(),
            version: version.clone(),
            reason,
        })?;
        let training = super::training::read(&manifest, &dir);
        let stats = VersionStats::default();
        let bundle = Bundle { manifest, dir, plugin, model, signed_by, stats, accuracy, training, drift, explainer };
        bundle.check_interface().map_err(|reason| BundleError::Check { name, version, reason })?;
        Ok(bundle)
    }
}

impl BundleLoader {
    /// The drift window of a bundle that carries a training profile (when drift is on).
    fn drift_window(&self, manifest: &Manifest, dir: &Path, model: &Model) -> Result<Option<DriftWindow>, String> {
        let Some(file) = manifest.training.profile.as_ref().filter(|_| self.drift_window > 0) else { return Ok(None) };
        let path = dir.join(&file.file);
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut std::io::Read::take(std::fs::File::open(&path).map_err(|e| e.to_string())?, MAX_PROFILE_BYTES),
            &mut text,
        )
        .map_err(|error| format!("{}: {error}", file.file))?;
        let width = |input: &str| {
            let spec = model.inputs().iter().find(|spec| spec.name == input)?;
            let width = *spec.shape.get(1)?;
            (spec.element_type == crate::model::ElementType::Float32 && width > 0).then_some(width as usize)
        };
        let profile = Profile::parse(&text, width).map_err(|reason| format!("{}: {reason}", file.file))?;
        Ok(Some(DriftWindow::new(profile, self.drift_window)))
    }
}

/// The most `trees.json` may weigh: about 40 bytes a node at the node bound.
const MAX_TREES_BYTES: u64 = 96 << 20;

/// How closely the trees must reproduce the model on the samples: ONNX Runtime sums the
/// trees in f32, the explainer in f64.
pub const TREES_TOLERANCE: f64 = 1e-4;

/// The explainer of a bundle whose manifest names `trees.json`: parsed, checked, and given
/// the words of the bundle's fields and output. Checked against the model in the smoke test.
fn load_explainer(manifest: &Manifest, dir: &Path) -> Result<Option<Arc<Explainer>>, String> {
    let Some(file) = &manifest.training.trees else { return Ok(None) };
    let path = dir.join(&file.file);
    let size = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", file.file))?.len();
    if size > MAX_TREES_BYTES {
        return Err(format!("{} is {size} bytes, more than the {MAX_TREES_BYTES} allowed", file.file));
    }
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", file.file))?;
    let ensemble = Ensemble::parse(&bytes).map_err(|e| e.to_string())?;
    if manifest.samples.is_empty() {
        return Err("trees.json needs at least one sample to be checked against the model".to_owned());
    }
    let vocabulary = Vocabulary {
        field_units: manifest
            .inputs
            .iter()
            .filter_map(|field| field.unit.as_ref().map(|unit| (field.name.clone(), unit.clone())))
            .collect(),
        output_unit: manifest.outputs.iter().find(|output| output.name == ensemble.output).and_then(|o| o.unit.clone()),
        field_defaults: manifest
            .inputs
            .iter()
            .filter_map(|field| field.default.as_ref().map(|default| (field.name.clone(), default.clone())))
            .collect(),
    };
    Ok(Some(Arc::new(Explainer::new(ensemble, vocabulary))))
}

/// A bundle folder that passed [`BundleLoader::verify`]; nothing of it has run yet.
#[derive(Debug)]
pub struct Verified {
    manifest: Manifest,
    dir: PathBuf,
    signed_by: Option<String>,
}

impl Verified {
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn signed_by(&self) -> Option<&str> {
        self.signed_by.as_deref()
    }

    /// The same bundle after its folder was moved to `dir` (files unchanged).
    pub fn moved_to(self, dir: PathBuf) -> Self {
        Self { dir, ..self }
    }
}

/// A bundle ready to serve: its manifest, plugin and model.
#[derive(Debug)]
pub struct Bundle {
    manifest: Manifest,
    dir: PathBuf,
    plugin: Plugin,
    model: Model,
    /// The id of the trusted key whose signature was verified at load, if keys are configured.
    signed_by: Option<String>,
    /// Outcomes of the requests served by this version (a canary is judged on them).
    stats: VersionStats,
    /// How right its predictions turned out, as outcomes are recorded.
    accuracy: VersionAccuracy,
    /// What training measured on held-out rows (metrics.json), to compare the live figures with.
    training: Option<TrainingFigures>,
    /// The latest features it fed its model, when the bundle carries a training profile.
    drift: Option<DriftWindow>,
    /// Explains predictions, when the bundle carries its trees.
    explainer: Option<Arc<Explainer>>,
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
    fn infer_one(&self, request: &str, explain: bool, traffic: bool) -> Result<Inference, InferenceError> {
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

    /// The manifest's inputs against the plugin's own description.
    fn check_interface(&self) -> Result<(), String> {
        let info = self.plugin.info();
        let declared: Vec<&str> = self.manifest.inputs.iter().map(|field| field.name.as_str()).collect();
        let described: Vec<&str> = info.inputs.iter().map(|field| field.name.as_str()).collect();
        if !self.manifest.inputs.is_empty() && declared != described {
            return Err(format!("the manifest lists inputs {declared:?} but the plugin describes {described:?}"));
        }
        Ok(())
    }

    /// Runs every sample request of the manifest through plugin and model and compares the
    /// outputs with the expected ones; the error names the sample and what differed.
    pub fn smoke_test(&self) -> Result<(), BundleError> {
        self.run_samples().map_err(|reason| BundleError::SmokeTest {
            name: self.name().to_owned(),
            version: self.version().to_string(),
            reason,
        })
    }

    fn run_samples(&self) -> Result<(), String> {
        for (index, sample) in self.manifest.samples.iter().enumerate() {
            let tensors = self.plugin.preprocess(&sample.request).map_err(|e| format!("sample {index}: {e}"))?;
            self.model
                .check_inputs(&tensors)
                .map_err(|e| format!("sample {index}: the plugin's output does not fit the model: {e}"))?;
            if let Some(explainer) = &self.explainer {
                // The explainer must explain this model: its trees give the model's outputs.
                let outputs = self.model.run(&tensors).map_err(|e| format!("sample {index}: {e}"))?;
                explainer
                    .check_against(&tensors, &outputs, TREES_TOLERANCE)
                    .map_err(|e| format!("sample {index}: trees.json: {e}"))?;
            }
            let inference =
                self.infer_one(&sample.request, false, false).map_err(|e| format!("sample {index}: {e}"))?;
            let tolerance = sample.tolerance.unwrap_or(DEFAULT_TOLERANCE);
            for (name, expected) in &sample.expected {
                let output = inference
                    .outputs
                    .iter()
                    .find(|tensor| &tensor.name == name)
                    .ok_or_else(|| format!("sample {index}: the model has no output `{name}`"))?;
                compare(output, expected, tolerance).map_err(|e| format!("sample {index}: output `{name}`: {e}"))?;
            }
        }
        Ok(())
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

fn compare(output: &Tensor, expected: &[f64], tolerance: f64) -> Result<(), String> {
    let actual: Vec<f64> = match &output.data {
        TensorData::Float32(values) => values.iter().map(|&v| f64::from(v)).collect(),
        TensorData::Float64(values) => values.clone(),
        TensorData::Int64(values) => values.iter().map(|&v| v as f64).collect(),
        TensorData::Text(_) => return Err("text outputs cannot be compared with numbers".to_owned()),
    };
    if actual.len() != expected.len() {
        return Err(format!("expected {} values, got {}", expected.len(), actual.len()));
    }
    for (a, e) in actual.iter().zip(expected) {
        if (a - e).abs() > tolerance * e.abs().max(f64::MIN_POSITIVE) {
            return Err(format!("expected {e}, got {a} (relative tolerance {tolerance})"));
        }
    }
    Ok(())
}

/// The host's response shape when the plugin leaves it: each output by name, without
/// the row dimension when the request has one row, and a single value as a number.
pub fn default_response(outputs: &[Tensor]) -> Map<String, Value> {
    outputs.iter().map(|tensor| (tensor.name.clone(), tensor_json(tensor))).collect()
}

fn tensor_json(tensor: &Tensor) -> Value {
    let values: Vec<Value> = match &tensor.data {
        TensorData::Float32(values) => values.iter().map(|&v| Value::from(f64::from(v))).collect(),
        TensorData::Float64(values) => values.iter().map(|&v| Value::from(v)).collect(),
        TensorData::Int64(values) => values.iter().map(|&v| Value::from(v)).collect(),
        TensorData::Text(values) => values.iter().map(|v| Value::from(v.as_str())).collect(),
    };
    let mut shape: &[usize] = &tensor.shape;
    if shape.first() == Some(&1) {
        shape = &shape[1..];
    }
    if shape.iter().product::<usize>() == 1 && values.len() == 1 {
        return values.into_iter().next().unwrap_or(Value::Null);
    }
    nest(&values, shape)
}

/// Row-major values as nested arrays of `shape`.
fn nest(values: &[Value], shape: &[usize]) -> Value {
    match shape {
        [] | [_] => Value::Array(values.to_vec()),
        [_, rest @ ..] => {
            let chunk = rest.iter().product::<usize>().max(1);
            Value::Array(values.chunks(chunk).map(|part| nest(part, rest)).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tensor(name: &str, shape: Vec<usize>, values: Vec<f32>) -> Tensor {
        Tensor::new(name, shape, TensorData::Float32(values)).unwrap()
    }

    #[test]
    fn the_default_shape_drops_a_single_row_and_unwraps_single_values() {
        let outputs = vec![
            tensor("price", vec![1, 1], vec![1.5]),
            tensor("probabilities", vec![1, 3], vec![0.25, 0.5, 0.25]),
            tensor("grid", vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]),
        ];
        assert_eq!(
            Value::Object(default_response(&outputs)),
            json!({"price": 1.5, "probabilities": [0.25, 0.5, 0.25], "grid": [[1.0, 2.0], [3.0, 4.0]]})
        );
    }

    #[test]
    fn samples_compare_within_a_relative_tolerance() {
        let output = tensor("price", vec![2, 1], vec![100.0, 200.0]);
        assert!(compare(&output, &[100.05, 200.0], 1e-3).is_ok());
        assert!(compare(&output, &[101.0, 200.0], 1e-3).is_err());
        assert!(compare(&output, &[100.0], 1e-3).is_err());
    }
}
