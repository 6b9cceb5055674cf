//! `bundle.toml`: what a bundle is, and the checks of the files it names.
//!
//! ```toml
//! [bundle]
//! name = "car-price"
//! version = "1.0.0"
//! description = "Used-car valuation"
//! min_runtime_version = "0.1.0"
//!
//! [plugin]
//! file = "preprocess.wasm"
//! sha256 = "…"
//!
//! [model]
//! file = "model.onnx"
//! sha256 = "…"
//!
//! [[inputs]]    # the plugin's `describe`: name, type, required, unit, minimum, …
//! [[outputs]]   # name, description, unit
//!
//! [[samples]]   # smoke tests: a client request and the model's expected raw outputs
//! request = '{"make": "saab", …}'
//! expected = { price = [21000.5] }
//!
//! [outcome]     # optional: what an outcome (the truth, learnt later) is compared with
//! field = "price"                 # the response field that predicts it
//! kind = "regression"             # with minimum and maximum; or "classification"
//! minimum = 0.0                   #   with classes = ["setosa", …]
//! maximum = 1000000.0
//!
//! [training]    # optional: what training knew, each file signed like the model
//! metrics = { file = "metrics.json", sha256 = "…" }   # validation metrics
//! profile = { file = "profile.json", sha256 = "…" }   # feature distributions (drift)
//! trees = { file = "trees.json", sha256 = "…" }       # the ensemble with covers (explanations)
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use semver::Version;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::BundleFileError;
use super::interface::{FieldSpec, OutputSpec};

pub const MANIFEST_FILE: &str = "bundle.toml";
pub const PLUGIN_FILE: &str = "preprocess.wasm";
pub const MODEL_FILE: &str = "model.onnx";
/// The training's validation metrics, as `train.py` writes them.
pub const METRICS_FILE: &str = "metrics.json";
/// The training rows' feature distributions, for drift.
pub const PROFILE_FILE: &str = "profile.json";
/// The tree ensemble with node covers, for exact explanations.
pub const TREES_FILE: &str = "trees.json";

/// Relative tolerance of sample outputs unless a sample says otherwise.
pub const DEFAULT_TOLERANCE: f64 = 1e-3;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub bundle: BundleInfo,
    pub plugin: FileRef,
    pub model: FileRef,
    #[serde(default)]
    pub inputs: Vec<FieldSpec>,
    #[serde(default)]
    pub outputs: Vec<OutputSpec>,
    #[serde(default)]
    pub samples: Vec<Sample>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<OutcomeSpec>,
    /// When a feature's drift is a warning or an alert (with a training profile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftThresholds>,
    #[serde(default, skip_serializing_if = "TrainingFiles::is_empty")]
    pub training: TrainingFiles,
}

/// `[drift]`: the population stability index (PSI) of a feature against its training
/// profile at which its drift is a warning, and an alert. The defaults are the usual rule of
/// thumb: below 0.1 no real change, 0.1 to 0.25 a moderate one, above 0.25 a large one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DriftThresholds {
    #[serde(default = "DriftThresholds::default_warn")]
    pub warn_psi: f64,
    #[serde(default = "DriftThresholds::default_alert")]
    pub alert_psi: f64,
}

impl DriftThresholds {
    fn default_warn() -> f64 {
        0.1
    }
    fn default_alert() -> f64 {
        0.25
    }

    fn validate(&self) -> Result<(), String> {
        if !(self.warn_psi > 0.0 && self.warn_psi < self.alert_psi && self.alert_psi <= 100.0) {
            return Err("drift.warn_psi and drift.alert_psi must satisfy 0 < warn_psi < alert_psi <= 100".into());
        }
        Ok(())
    }
}

impl Default for DriftThresholds {
    fn default() -> Self {
        Self { warn_psi: Self::default_warn(), alert_psi: Self::default_alert() }
    }
}

/// Where `bundle build` finds the `[outcome]` section: beside the model, written by whoever
/// knows what the model predicts.
pub const OUTCOME_FILE: &str = "outcome.toml";

/// What an outcome of this bundle's predictions is: the response field that predicted it,
/// and the values it may take. Outcomes are checked against it before they are stored.
// No `deny_unknown_fields` here: serde refuses it beside `flatten`; the kind's variants
// refuse unknown keys instead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeSpec {
    /// The field of the bundle's response (its `outputs`) that an outcome is compared with.
    pub field: String,
    #[serde(flatten)]
    pub kind: OutcomeKind,
}

/// Most classes a classification outcome may name (each is a metric label).
pub const MAX_OUTCOME_CLASSES: usize = 64;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum OutcomeKind {
    /// A number between `minimum` and `maximum` (a price).
    Regression { minimum: f64, maximum: f64 },
    /// One of `classes` (a species).
    Classification { classes: Vec<String> },
}

impl OutcomeSpec {
    fn validate(&self) -> Result<(), String> {
        let plain = |text: &str| {
            !text.is_empty() && text.len() <= 64 && text.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        if !plain(&self.field) {
            return Err("outcome.field must be 1 to 64 letters, digits, '-', '_' or '.'".into());
        }
        match &self.kind {
            OutcomeKind::Regression { minimum, maximum } => {
                if !(minimum.is_finite() && maximum.is_finite() && minimum < maximum) {
                    return Err("outcome.minimum and outcome.maximum must be finite, minimum below maximum".into());
                }
            }
            OutcomeKind::Classification { classes } => {
                let distinct: std::collections::BTreeSet<_> = classes.iter().collect();
                if classes.is_empty() || classes.len() > MAX_OUTCOME_CLASSES || distinct.len() != classes.len() {
                    return Err(format!("outcome.classes must be 1 to {MAX_OUTCOME_CLASSES} distinct names"));
                }
                if !classes.iter().all(|class| plain(class)) {
                    return Err("outcome.classes must each be 1 to 64 letters, digits, '-', '_' or '.'".into());
                }
            }
        }
        Ok(())
    }
}

/// The optional files that carry what training knew. Each has a fixed name (so an archive
/// holds nothing else) and a digest in the manifest, so the bundle's signature covers it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingFiles {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<FileRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<FileRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trees: Option<FileRef>,
}

impl TrainingFiles {
    /// The fixed file names, in manifest order.
    pub const NAMES: [&str; 3] = [METRICS_FILE, PROFILE_FILE, TREES_FILE];

    pub fn is_empty(&self) -> bool {
        self.entries().all(|(_, _, file)| file.is_none())
    }

    /// (manifest key, the fixed file name, the reference if present).
    pub fn entries(&self) -> impl Iterator<Item = (&'static str, &'static str, Option<&FileRef>)> {
        [
            ("training.metrics", METRICS_FILE, self.metrics.as_ref()),
            ("training.profile", PROFILE_FILE, self.profile.as_ref()),
            ("training.trees", TREES_FILE, self.trees.as_ref()),
        ]
        .into_iter()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleInfo {
    pub name: String,
    pub version: Version,
    #[serde(default)]
    pub description: String,
    pub min_runtime_version: Version,
}

/// A file of the bundle and its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRef {
    pub file: String,
    pub sha256: String,
}

/// The longest bundle name: it is a folder name and a label of every metric.
pub const MAX_BUNDLE_NAME_LEN: usize = 64;

/// The rule of a bundle name, wherever one comes from (a manifest, a fleet request):
/// 1 to 64 lowercase letters, digits, '-' or '_', so that it is always one plain folder
/// name (never `.`, `..` or a path) and safe in a URL.
pub fn check_bundle_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
    if name.is_empty() || name.len() > MAX_BUNDLE_NAME_LEN || !name.chars().all(allowed) {
        return Err(format!(
            "{:?} must be 1 to {MAX_BUNDLE_NAME_LEN} lowercase letters, digits, '-' or '_'",
            name.chars().take(80).collect::<String>()
        ));
    }
    Ok(())
}

/// A request and the model's expected raw outputs (row-major, per output name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    /// The request exactly as a client sends it (JSON text).
    pub request: String,
    pub expected: BTreeMap<String, Vec<f64>>,
    /// Relative tolerance; [`DEFAULT_TOLERANCE`] when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<f64>,
}

impl Manifest {
    /// Reads `dir/bundle.toml` and checks its fields (not yet the files: see [`Manifest::verify_files`]).
    pub fn read(dir: &Path) -> Result<Self, BundleFileError> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = std::fs::read(&path)
            .map_err(|error| BundleFileError::Read { path: path.clone(), reason: error.to_string() })?;
        Self::parse(&path, &bytes)
    }

    /// Parses and checks the bytes of the manifest at `path` (as [`Manifest::read`] does), so
    /// that the bytes whose signature was verified are the bytes used.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self, BundleFileError> {
        let manifest_error = |reason: String| BundleFileError::Manifest { path: path.to_owned(), reason };
        let text = std::str::from_utf8(bytes).map_err(|error| manifest_error(error.to_string()))?;
        let manifest: Manifest = toml::from_str(text).map_err(|error| manifest_error(error.to_string()))?;
        manifest.validate().map_err(manifest_error)?;
        Ok(manifest)
    }

    pub fn write(&self, dir: &Path) -> Result<(), BundleFileError> {
        let path = dir.join(MANIFEST_FILE);
        let text = toml::to_string_pretty(self)
            .map_err(|error| BundleFileError::Manifest { path: path.clone(), reason: error.to_string() })?;
        std::fs::write(&path, text).map_err(|error| BundleFileError::Read { path, reason: error.to_string() })
    }

    fn validate(&self) -> Result<(), String> {
        check_bundle_name(&self.bundle.name).map_err(|message| format!("bundle.name {message}"))?;
        for (key, file) in [("plugin", &self.plugin), ("model", &self.model)] {
            check_file_ref(key, file)?;
        }
        for (key, name, file) in self.training.entries() {
            let Some(file) = file else { continue };
            check_file_ref(key, file)?;
            if file.file != name {
                return Err(format!("{key}.file must be {name:?}"));
            }
        }
        if let Some(outcome) = &self.outcome {
            outcome.validate()?;
        }
        if let Some(drift) = &self.drift {
            drift.validate()?;
        }
        for (index, sample) in self.samples.iter().enumerate() {
            if serde_json::from_str::<serde_json::Value>(&sample.request).is_err() {
                return Err(format!("samples[{index}].request is not JSON"));
            }
        }
        Ok(())
    }

    /// Every file the manifest names: the plugin, the model and the training files present.
    pub fn files(&self) -> impl Iterator<Item = &FileRef> {
        [&self.plugin, &self.model].into_iter().chain(self.training.entries().filter_map(|(_, _, file)| file))
    }

    /// Checks that every file the manifest names hashes to its digest.
    pub fn verify_files(&self, dir: &Path) -> Result<(), BundleFileError> {
        for file in self.files() {
            let actual = sha256_file(&dir.join(&file.file))?;
            if !actual.eq_ignore_ascii_case(&file.sha256) {
                return Err(BundleFileError::Digest {
                    dir: dir.to_owned(),
                    file: file.file.clone(),
                    expected: file.sha256.clone(),
                    actual,
                });
            }
        }
        Ok(())
    }

    pub fn plugin_path(&self, dir: &Path) -> PathBuf {
        dir.join(&self.plugin.file)
    }

    pub fn model_path(&self, dir: &Path) -> PathBuf {
        dir.join(&self.model.file)
    }
}

fn check_file_ref(key: &str, file: &FileRef) -> Result<(), String> {
    if file.file.is_empty() || file.file.contains('/') || file.file.starts_with('.') {
        return Err(format!("{key}.file {:?} must be a plain file name inside the bundle", file.file));
    }
    if file.sha256.len() != 64 || !file.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("{key}.sha256 must be 64 hex digits"));
    }
    Ok(())
}

/// Hex sha256 of a file's contents.
pub fn sha256_file(path: &Path) -> Result<String, BundleFileError> {
    let bytes = std::fs::read(path)
        .map_err(|error| BundleFileError::Read { path: path.to_owned(), reason: error.to_string() })?;
    Ok(hex::encode(Sha256::digest(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            bundle: BundleInfo {
                name: "cars".into(),
                version: Version::new(1, 2, 0),
                description: "test".into(),
                min_runtime_version: Version::new(0, 1, 0),
            },
            plugin: FileRef { file: PLUGIN_FILE.into(), sha256: hex::encode(Sha256::digest(b"wasm")) },
            model: FileRef { file: MODEL_FILE.into(), sha256: hex::encode(Sha256::digest(b"onnx")) },
            inputs: Vec::new(),
            outputs: Vec::new(),
            samples: vec![Sample {
                request: r#"{"a": 1}"#.into(),
                expected: BTreeMap::from([("price".into(), vec![1.5])]),
                tolerance: None,
            }],
            outcome: None,
            drift: None,
            training: TrainingFiles::default(),
        }
    }

    #[test]
    fn a_manifest_round_trips_and_its_files_verify() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(PLUGIN_FILE), b"wasm").unwrap();
        std::fs::write(dir.path().join(MODEL_FILE), b"onnx").unwrap();
        manifest().write(dir.path()).unwrap();
        let read = Manifest::read(dir.path()).unwrap();
        assert_eq!(read, manifest());
        read.verify_files(dir.path()).unwrap();

        std::fs::write(dir.path().join(MODEL_FILE), b"onnx, tampered").unwrap();
        match read.verify_files(dir.path()) {
            Err(BundleFileError::Digest { file, .. }) => assert_eq!(file, MODEL_FILE),
            other => panic!("expected a digest mismatch, got {other:?}"),
        }
    }

    #[test]
    fn invalid_fields_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut bad = manifest();
        bad.plugin.file = "../escape.wasm".into();
        bad.write(dir.path()).unwrap();
        let error = Manifest::read(dir.path()).unwrap_err().to_string();
        assert!(error.contains("plugin.file"), "{error}");

        std::fs::write(dir.path().join(MANIFEST_FILE), "[bundle]\nname = \"cars\"\nversion = \"one\"\n").unwrap();
        let error = Manifest::read(dir.path()).unwrap_err().to_string();
        assert!(error.contains("version"), "{error}");
    }

    #[test]
    fn an_outcome_spec_round_trips_and_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let mut priced = manifest();
        priced.outcome =
            Some(OutcomeSpec { field: "price".into(), kind: OutcomeKind::Regression { minimum: 0.0, maximum: 1e6 } });
        priced.write(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(MANIFEST_FILE)).unwrap();
        assert!(text.contains("[outcome]\nfield = \"price\"\nkind = \"regression\""), "{text}");
        assert_eq!(Manifest::read(dir.path()).unwrap(), priced);

        let refused = |kind: OutcomeKind, rule: &str| {
            let mut bad = manifest();
            bad.outcome = Some(OutcomeSpec { field: "class".into(), kind });
            bad.write(dir.path()).unwrap();
            let error = Manifest::read(dir.path()).unwrap_err().to_string();
            assert!(error.contains(rule), "{error}");
        };
        refused(OutcomeKind::Regression { minimum: 5.0, maximum: 5.0 }, "minimum below maximum");
        refused(OutcomeKind::Regression { minimum: f64::NEG_INFINITY, maximum: 5.0 }, "finite");
        refused(OutcomeKind::Classification { classes: vec![] }, "distinct names");
        refused(OutcomeKind::Classification { classes: vec!["a".into(), "a".into()] }, "distinct names");
        refused(OutcomeKind::Classification { classes: vec!["a b".into()] }, "letters, digits");

        let misspelt = "[outcome]\nfield = \"price\"\nkind = \"regression\"\nminimum = 0.0\nmaximun = 5.0\n";
        let text = std::fs::read_to_string(dir.path().join(MANIFEST_FILE)).unwrap();
        let start = text.find("[outcome]").unwrap();
        std::fs::write(dir.path().join(MANIFEST_FILE), format!("{}{misspelt}", &text[..start])).unwrap();
        let error = Manifest::read(dir.path()).unwrap_err().to_string();
        assert!(error.contains("maximun"), "{error}");
    }

    #[test]
    fn training_files_are_verified_and_must_have_their_fixed_names() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(PLUGIN_FILE), b"wasm").unwrap();
        std::fs::write(dir.path().join(MODEL_FILE), b"onnx").unwrap();
        std::fs::write(dir.path().join(METRICS_FILE), b"{}").unwrap();
        let mut with_metrics = manifest();
        with_metrics.training.metrics =
            Some(FileRef { file: METRICS_FILE.into(), sha256: hex::encode(Sha256::digest(b"{}")) });
        with_metrics.write(dir.path()).unwrap();
        let read = Manifest::read(dir.path()).unwrap();
        assert_eq!(read, with_metrics);
        read.verify_files(dir.path()).unwrap();

        std::fs::write(dir.path().join(METRICS_FILE), b"{\"r2\": 1}").unwrap();
        match read.verify_files(dir.path()) {
            Err(BundleFileError::Digest { file, .. }) => assert_eq!(file, METRICS_FILE),
            other => panic!("expected a digest mismatch, got {other:?}"),
        }

        let mut renamed = with_metrics.clone();
        renamed.training.metrics.as_mut().unwrap().file = "other.json".into();
        renamed.write(dir.path()).unwrap();
        let error = Manifest::read(dir.path()).unwrap_err().to_string();
        assert!(error.contains("training.metrics.file must be \"metrics.json\""), "{error}");
    }
}
