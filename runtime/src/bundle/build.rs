//! `forecourt bundle build <plugin folder>`: builds the plugin for wasm32-wasip2 and
//! assembles a bundle beside its model:
//!
//! ```text
//! plugins/car-price/            ->  <out>/car-price/1.0.0/
//!   Cargo.toml, src/                  preprocess.wasm
//!   model/model.onnx                  model.onnx
//!   model/golden.jsonl (samples)      bundle.toml (digests, describe, samples)
//!   model/outcome.toml (optional)     bundle.toml's [outcome]
//!   model/metrics.json, profile.json,   the same files, when training wrote them
//!         trees.json (optional)
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use semver::Version;
use sha2::{Digest, Sha256};

use super::error::BundleError;
use super::manifest::{
    BundleInfo, FileRef, MODEL_FILE, Manifest, OUTCOME_FILE, OutcomeSpec, PLUGIN_FILE, Sample, TrainingFiles,
};
use crate::plugin::PluginHost;

/// How many golden rows become the bundle's smoke-test samples.
pub const DEFAULT_SAMPLES: usize = 3;

fn build_error(reason: impl Into<String>) -> BundleError {
    BundleError::Build { reason: reason.into() }
}

/// Builds the plugin crate in `plugin_dir` and writes the bundle under `out`; returns the
/// bundle's folder.
pub fn build(
    plugin_dir: &Path,
    out: &Path,
    host: &PluginHost,
    samples: usize,
    target_dir: Option<&Path>,
) -> Result<PathBuf, BundleError> {
    let wasm = compile_plugin(plugin_dir, target_dir)?;
    let model = plugin_dir.join("model").join(MODEL_FILE);
    if !model.is_file() {
        return Err(build_error(format!("{} does not exist", model.display())));
    }
    let plugin = host.load(&wasm).map_err(|error| build_error(error.to_string()))?;
    let info = plugin.info();
    let version = Version::parse(&info.version)
        .map_err(|error| build_error(format!("plugin version {:?} is not semver: {error}", info.version)))?;

    let dir = out.join(&info.name).join(version.to_string());
    std::fs::create_dir_all(&dir).map_err(|error| build_error(format!("{}: {error}", dir.display())))?;
    let copy = |from: &Path, name: &str| -> Result<String, BundleError> {
        let bytes = std::fs::read(from).map_err(|error| build_error(format!("{}: {error}", from.display())))?;
        std::fs::write(dir.join(name), &bytes).map_err(|error| build_error(format!("{}: {error}", dir.display())))?;
        Ok(hex::encode(Sha256::digest(&bytes)))
    };
    // The training files travel when training wrote them; each is signed with the rest.
    let training_file = |name: &str| -> Result<Option<FileRef>, BundleError> {
        let from = plugin_dir.join("model").join(name);
        if !from.is_file() {
            return Ok(None);
        }
        Ok(Some(FileRef { file: name.to_owned(), sha256: copy(&from, name)? }))
    };
    let training = TrainingFiles {
        metrics: training_file(super::manifest::METRICS_FILE)?,
        profile: training_file(super::manifest::PROFILE_FILE)?,
        trees: training_file(super::manifest::TREES_FILE)?,
    };
    let manifest = Manifest {
        bundle: BundleInfo {
            name: info.name.clone(),
            version,
            description: info.description.clone(),
            min_runtime_version: Version::parse(env!("CARGO_PKG_VERSION")).expect("the crate version is semver"),
        },
        plugin: FileRef { file: PLUGIN_FILE.to_owned(), sha256: copy(&wasm, PLUGIN_FILE)? },
        model: FileRef { file: MODEL_FILE.to_owned(), sha256: copy(&model, MODEL_FILE)? },
        inputs: info.inputs.clone(),
        outputs: info.outputs.clone(),
        samples: golden_samples(&plugin_dir.join("model").join("golden.jsonl"), samples)?,
        outcome: outcome_spec(&plugin_dir.join("model").join(OUTCOME_FILE))?,
        drift: None,
        training,
    };
    manifest.write(&dir)?;
    // Read back as a loader reads it: an outcome.toml that breaks a rule fails the build.
    Manifest::read(&dir)?;
    Ok(dir)
}

/// `cargo build --release --target wasm32-wasip2` of the plugin crate; the component's path.
fn compile_plugin(plugin_dir: &Path, target_dir: Option<&Path>) -> Result<PathBuf, BundleError> {
    let manifest = plugin_dir.join("Cargo.toml");
    if !manifest.is_file() {
        return Err(build_error(format!("{} is not a plugin crate (no Cargo.toml)", plugin_dir.display())));
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args(["build", "--release", "--target", "wasm32-wasip2", "--message-format=json-render-diagnostics"])
        .arg("--manifest-path")
        .arg(&manifest);
    if let Some(target_dir) = target_dir {
        command.arg("--target-dir").arg(target_dir);
    }
    let output = command.output().map_err(|error| build_error(format!("cannot run cargo: {error}")))?;
    if !output.status.success() {
        return Err(build_error(format!("cargo build failed:\n{}", String::from_utf8_lossy(&output.stderr))));
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact")
        .filter(|message| message["manifest_path"].as_str().map(Path::new) == manifest.canonicalize().ok().as_deref())
        .flat_map(|message| message["filenames"].as_array().cloned().unwrap_or_default())
        .filter_map(|file| file.as_str().map(PathBuf::from))
        .find(|file| file.extension().is_some_and(|ext| ext == "wasm"))
        .ok_or_else(|| build_error("cargo built no .wasm component; is the crate a cdylib?"))
}

/// `model/outcome.toml`, the bundle's `[outcome]` (none if the file is absent; checked when
/// the manifest is read back).
fn outcome_spec(path: &Path) -> Result<Option<OutcomeSpec>, BundleError> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(None) };
    toml::from_str(&text).map(Some).map_err(|error| build_error(format!("{}: {error}", path.display())))
}

/// The first `count` rows of golden.jsonl as samples (none if the file is absent).
fn golden_samples(path: &Path, count: usize) -> Result<Vec<Sample>, BundleError> {
    let Ok(text) = std::fs::read_to_string(path) else {
        tracing::warn!(path = %path.display(), "no golden rows: the bundle has no smoke-test samples");
        return Ok(Vec::new());
    };
    text.lines()
        .take(count)
        .enumerate()
        .map(|(index, line)| {
            let row: serde_json::Value = serde_json::from_str(line)
                .map_err(|error| build_error(format!("{} line {}: {error}", path.display(), index + 1)))?;
            let expected = row["expected"]
                .as_object()
                .ok_or_else(|| build_error(format!("{} line {} has no expected outputs", path.display(), index + 1)))?
                .iter()
                .map(|(name, value)| (name.clone(), flatten(value)))
                .collect::<BTreeMap<_, _>>();
            Ok(Sample { request: row["request"].to_string(), expected, tolerance: None })
        })
        .collect()
}

fn flatten(value: &serde_json::Value) -> Vec<f64> {
    match value {
        serde_json::Value::Array(items) => items.iter().flat_map(flatten).collect(),
        other => other.as_f64().into_iter().collect(),
    }
}
