//! The registry: the bundles this appliance has loaded, by name and version, and which
//! version serves each name. It loads bundle folders with its [`BundleLoader`] and keeps
//! them in a [`Routes`] table, which decides where each request goes (see routes.rs for
//! how readers and writers share it); it adds what the API shows of each name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use semver::Version;
use serde::Serialize;

use super::error::BundleError;
use super::loaded::Bundle;
use super::loader::BundleLoader;
use super::manifest::MANIFEST_FILE;
use super::routes::{Entry, Routes, Versioned};
use crate::plugin::{FieldSpec, OutputSpec};

impl Versioned for Bundle {
    fn name(&self) -> &str {
        Bundle::name(self)
    }
    fn version(&self) -> &Version {
        Bundle::version(self)
    }
}

/// What loading one bundle folder gave.
#[derive(Debug)]
pub struct LoadReport {
    pub dir: PathBuf,
    pub result: Result<(String, Version), BundleError>,
}

/// A bundle name's state, for the API.
#[derive(Debug, Clone, Serialize)]
pub struct BundleSummary {
    pub name: String,
    pub active_version: String,
    pub versions: Vec<String>,
    pub description: String,
    pub plugin_sha256: String,
    pub model_sha256: String,
    pub inputs: Vec<FieldSpec>,
    pub outputs: Vec<OutputSpec>,
    /// Whether the active version explains its predictions (`?explain=true`): it carries
    /// its trees (`trees.json`).
    pub explainable: bool,
    /// The version serving a share of the requests as a canary, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanarySummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CanarySummary {
    pub version: String,
    pub share_percent: f64,
}

/// What `/v1/bundles` shows of a name: its active version's plugin description, and its
/// versions and canary.
fn summary(name: &str, entry: &Entry<Bundle>) -> Option<BundleSummary> {
    let active = entry.versions.get(&entry.active)?;
    let info = active.plugin().info();
    Some(BundleSummary {
        name: name.to_owned(),
        active_version: entry.active.to_string(),
        versions: entry.versions.keys().map(Version::to_string).collect(),
        description: active.manifest().bundle.description.clone(),
        plugin_sha256: active.plugin().sha256().to_owned(),
        model_sha256: active.model().sha256().to_owned(),
        inputs: info.inputs.clone(),
        outputs: info.outputs.clone(),
        explainable: active.explainer().is_some(),
        canary: entry.canary.as_ref().map(|canary| CanarySummary {
            version: canary.version.to_string(),
            share_percent: canary.per_mille as f64 / 10.0,
        }),
    })
}

#[derive(Debug)]
pub struct Registry {
    loader: BundleLoader,
    routes: Routes<Bundle>,
}

impl Registry {
    pub fn new(loader: BundleLoader) -> Self {
        Self { loader, routes: Routes::default() }
    }

    pub fn loader(&self) -> &BundleLoader {
        &self.loader
    }

    /// Loads every bundle under `dir` (`<name>/<version>/bundle.toml`, or a bundle folder
    /// directly inside). The highest version of each name becomes active.
    pub fn load_dir(&self, dir: &Path) -> Vec<LoadReport> {
        let mut reports: Vec<LoadReport> = bundle_dirs(dir)
            .into_iter()
            .map(|dir| {
                let result = self.loader.load(&dir).and_then(|bundle| self.insert(bundle));
                LoadReport { dir, result }
            })
            .collect();
        for (name, version) in reports.iter().filter_map(|report| report.result.as_ref().ok()) {
            if self.routes.highest(name).as_ref() == Some(version) {
                let _ = self.activate(name, version);
            }
        }
        reports.sort_by(|a, b| a.dir.cmp(&b.dir));
        reports
    }

    /// Adds a loaded bundle; it becomes active if its name had none.
    pub fn insert(&self, bundle: Bundle) -> Result<(String, Version), BundleError> {
        self.routes.insert(bundle)
    }

    /// The active version of `name`.
    pub fn active(&self, name: &str) -> Option<Arc<Bundle>> {
        self.routes.active(name)
    }

    /// The version of `name` the next request goes to: the canary's share of the requests
    /// goes to the canary, the rest to the active version.
    pub fn route(&self, name: &str) -> Option<Arc<Bundle>> {
        self.routes.route(name)
    }

    /// A specific version of `name`, active or not.
    pub fn version(&self, name: &str, version: &Version) -> Option<Arc<Bundle>> {
        self.routes.version(name, version)
    }

    /// Makes `version` the active version of `name` (ending any canary of it); returns the
    /// previous one.
    pub fn activate(&self, name: &str, version: &Version) -> Result<Version, BundleError> {
        self.routes.activate(name, version)
    }

    /// Sends `share_percent` of `name`'s requests to `version` (loaded, not active), beside
    /// the active version; replaces any canary `name` had.
    pub fn start_canary(&self, name: &str, version: &Version, share_percent: f64) -> Result<(), BundleError> {
        self.routes.start_canary(name, version, share_percent)
    }

    /// Ends `name`'s canary, if any, without promoting it. Returns the canary's version.
    pub fn stop_canary(&self, name: &str) -> Option<Version> {
        self.routes.stop_canary(name)
    }

    /// The active version of every name.
    pub fn active_versions(&self) -> BTreeMap<String, Version> {
        self.routes.active_versions()
    }

    /// The canary version of every name that has one.
    pub fn canary_versions(&self) -> BTreeMap<String, Version> {
        self.routes.canary_versions()
    }

    /// Unloads an inactive version. In-flight requests holding it finish first.
    pub fn remove(&self, name: &str, version: &Version) -> Result<(), BundleError> {
        self.routes.remove(name, version)
    }

    /// Every bundle name with its active version, sorted by name.
    pub fn summaries(&self) -> Vec<BundleSummary> {
        self.routes.describe(summary)
    }

    /// The summary of one bundle name, if it is loaded.
    pub fn summary(&self, name: &str) -> Option<BundleSummary> {
        self.routes.describe_one(name, summary)
    }

    /// Every version of `name`, ascending.
    pub fn versions(&self, name: &str) -> Vec<Arc<Bundle>> {
        self.routes.versions(name)
    }
}

/// Folders holding a bundle.toml, one or two levels below `dir`, sorted.
fn bundle_dirs(dir: &Path) -> Vec<PathBuf> {
    let children = |dir: &Path| -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|entries| entries.filter_map(|entry| Some(entry.ok()?.path())).filter(|path| path.is_dir()).collect())
            .unwrap_or_default();
        found.sort();
        found
    };
    let mut dirs = Vec::new();
    for child in children(dir) {
        if child.join(MANIFEST_FILE).is_file() {
            dirs.push(child);
        } else {
            dirs.extend(children(&child).into_iter().filter(|grandchild| grandchild.join(MANIFEST_FILE).is_file()));
        }
    }
    dirs
}
