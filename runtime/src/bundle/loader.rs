//! Loading a bundle folder: the checks (manifest, digests, signature), then the plugin, the
//! model's sessions, the drift window and the explainer, and whether they fit together.
//! What a loaded bundle does is in [`super::loaded`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use semver::Version;

use super::BundleFileError;
use super::accuracy::VersionAccuracy;
use super::error::BundleError;
use super::loaded::Bundle;
use super::manifest::{MANIFEST_FILE, Manifest};
use super::profile::{DriftWindow, MAX_PROFILE_BYTES, Profile};
use super::signature::TrustedKeys;
use super::stats::VersionStats;
use crate::explain::{Ensemble, Explainer, Vocabulary};
use crate::model::{Model, OnnxRuntime};
use crate::plugin::PluginHost;
use crate::telemetry::BundleMetrics;

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
            .map_err(|error| BundleFileError::Read { path: path.clone(), reason: error.to_string() })?;
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
        let metrics = BundleMetrics::new(&name, &version, model.outputs().iter().map(|output| output.name.as_str()));
        let bundle =
            Bundle { manifest, dir, plugin, model, signed_by, stats, accuracy, training, drift, explainer, metrics };
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
