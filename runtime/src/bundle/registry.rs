//! The registry: every loaded bundle version, and the active version of each name.
//!
//! Readers take the current snapshot through an atomic pointer (arc-swap) and clone the
//! `Arc` of the bundle they need, so a request finishes on the version it started with
//! however the active version changes meanwhile; a switch is one pointer store. Writers
//! (loading, activation, removal) are serialised and copy the small snapshot.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use semver::Version;
use serde::Serialize;

use super::error::BundleError;
use super::loaded::Bundle;
use super::loader::BundleLoader;
use super::manifest::MANIFEST_FILE;
use crate::plugin::{FieldSpec, OutputSpec};

#[derive(Debug, Default, Clone)]
struct Snapshot {
    names: BTreeMap<String, Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    versions: BTreeMap<Version, Arc<Bundle>>,
    active: Version,
    canary: Option<Canary>,
}

/// A version serving a share of a name's requests beside the active one.
#[derive(Debug, Clone)]
struct Canary {
    version: Version,
    /// Requests in a thousand that go to the canary.
    per_mille: u64,
    /// Requests routed so far, shared by every snapshot of this canary: spreads the share
    /// evenly (every n-th request) rather than by chance.
    routed: Arc<AtomicU64>,
}

impl Canary {
    /// Whether the next request goes to the canary: the n-th request does when the count
    /// of canary requests due, n * share, steps up at n (so exactly the share, evenly spread).
    fn takes_next(&self) -> bool {
        let n = self.routed.fetch_add(1, Ordering::Relaxed);
        (n + 1) * self.per_mille / 1000 > n * self.per_mille / 1000
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
fn summary(name: &str, entry: &Entry) -> Option<BundleSummary> {
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
    state: ArcSwap<Snapshot>,
    writer: Mutex<()>,
}

impl Registry {
    pub fn new(loader: BundleLoader) -> Self {
        Self { loader, state: ArcSwap::from_pointee(Snapshot::default()), writer: Mutex::new(()) }
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
        for (name, version) in
            reports.iter().filter_map(|report| report.result.as_ref().ok()).cloned().collect::<Vec<_>>()
        {
            let highest =
                self.state.load().names.get(&name).and_then(|entry| entry.versions.keys().next_back().cloned());
            if highest.as_ref() == Some(&version) {
                let _ = self.activate(&name, &version);
            }
        }
        reports.sort_by(|a, b| a.dir.cmp(&b.dir));
        reports
    }

    /// Adds a loaded bundle; it becomes active if its name had none.
    pub fn insert(&self, bundle: Bundle) -> Result<(String, Version), BundleError> {
        let _writer = self.lock_writer();
        let (name, version) = (bundle.name().to_owned(), bundle.version().clone());
        let mut snapshot = Snapshot::clone(&self.state.load());
        let entry = snapshot.names.entry(name.clone()).or_insert_with(|| Entry {
            versions: BTreeMap::new(),
            active: version.clone(),
            canary: None,
        });
        if entry.versions.contains_key(&version) {
            return Err(BundleError::AlreadyLoaded { name, version: version.to_string() });
        }
        entry.versions.insert(version.clone(), Arc::new(bundle));
        self.state.store(Arc::new(snapshot));
        Ok((name, version))
    }

    /// The active version of `name`.
    pub fn active(&self, name: &str) -> Option<Arc<Bundle>> {
        let snapshot = self.state.load();
        let entry = snapshot.names.get(name)?;
        entry.versions.get(&entry.active).cloned()
    }

    /// The version of `name` the next request goes to: the canary's share of the requests
    /// goes to the canary, the rest to the active version.
    pub fn route(&self, name: &str) -> Option<Arc<Bundle>> {
        let snapshot = self.state.load();
        let entry = snapshot.names.get(name)?;
        let version = match &entry.canary {
            Some(canary) if canary.takes_next() => &canary.version,
            _ => &entry.active,
        };
        entry.versions.get(version).cloned()
    }

    /// A specific version of `name`, active or not.
    pub fn version(&self, name: &str, version: &Version) -> Option<Arc<Bundle>> {
        self.state.load().names.get(name)?.versions.get(version).cloned()
    }

    /// Makes `version` the active version of `name`; returns the previous one.
    pub fn activate(&self, name: &str, version: &Version) -> Result<Version, BundleError> {
        let _writer = self.lock_writer();
        let mut snapshot = Snapshot::clone(&self.state.load());
        let entry = snapshot.names.get_mut(name).ok_or_else(|| BundleError::UnknownBundle { name: name.to_owned() })?;
        if !entry.versions.contains_key(version) {
            return Err(BundleError::UnknownVersion { name: name.to_owned(), version: version.to_string() });
        }
        let previous = std::mem::replace(&mut entry.active, version.clone());
        // Activation settles the name: a canary of it ends (promoted when it is this version).
        entry.canary = None;
        self.state.store(Arc::new(snapshot));
        if previous != *version {
            tracing::info!(bundle = name, %version, %previous, "bundle activated");
        }
        Ok(previous)
    }

    /// Sends `share_percent` of `name`'s requests to `version` (loaded, not active), beside
    /// the active version; replaces any canary `name` had.
    pub fn start_canary(&self, name: &str, version: &Version, share_percent: f64) -> Result<(), BundleError> {
        let _writer = self.lock_writer();
        let mut snapshot = Snapshot::clone(&self.state.load());
        let entry = snapshot.names.get_mut(name).ok_or_else(|| BundleError::UnknownBundle { name: name.to_owned() })?;
        if !entry.versions.contains_key(version) {
            return Err(BundleError::UnknownVersion { name: name.to_owned(), version: version.to_string() });
        }
        let per_mille = (share_percent * 10.0).round().clamp(1.0, 999.0) as u64;
        entry.canary = Some(Canary { version: version.clone(), per_mille, routed: Arc::default() });
        self.state.store(Arc::new(snapshot));
        tracing::info!(bundle = name, %version, share_percent, "canary started");
        Ok(())
    }

    /// Ends `name`'s canary, if any, without promoting it: every request goes to the active
    /// version again. Returns the canary's version.
    pub fn stop_canary(&self, name: &str) -> Option<Version> {
        let _writer = self.lock_writer();
        let mut snapshot = Snapshot::clone(&self.state.load());
        let canary = snapshot.names.get_mut(name)?.canary.take()?;
        self.state.store(Arc::new(snapshot));
        tracing::info!(bundle = name, version = %canary.version, "canary stopped");
        Some(canary.version)
    }

    /// The active version of every name.
    pub fn active_versions(&self) -> BTreeMap<String, Version> {
        self.state.load().names.iter().map(|(name, entry)| (name.clone(), entry.active.clone())).collect()
    }

    /// The canary version of every name that has one.
    pub fn canary_versions(&self) -> BTreeMap<String, Version> {
        let snapshot = self.state.load();
        snapshot
            .names
            .iter()
            .filter_map(|(name, entry)| Some((name.clone(), entry.canary.as_ref()?.version.clone())))
            .collect()
    }

    /// Unloads an inactive version. In-flight requests holding it finish first.
    pub fn remove(&self, name: &str, version: &Version) -> Result<(), BundleError> {
        let _writer = self.lock_writer();
        let mut snapshot = Snapshot::clone(&self.state.load());
        let entry = snapshot.names.get_mut(name).ok_or_else(|| BundleError::UnknownBundle { name: name.to_owned() })?;
        if &entry.active == version || entry.canary.as_ref().is_some_and(|canary| &canary.version == version) {
            return Err(BundleError::InUse { name: name.to_owned(), version: version.to_string() });
        }
        entry
            .versions
            .remove(version)
            .ok_or_else(|| BundleError::UnknownVersion { name: name.to_owned(), version: version.to_string() })?;
        self.state.store(Arc::new(snapshot));
        Ok(())
    }

    /// Every bundle name with its active version, sorted by name.
    pub fn summaries(&self) -> Vec<BundleSummary> {
        let snapshot = self.state.load();
        snapshot.names.iter().filter_map(|(name, entry)| summary(name, entry)).collect()
    }

    /// The summary of one bundle name, if it is loaded.
    pub fn summary(&self, name: &str) -> Option<BundleSummary> {
        let snapshot = self.state.load();
        snapshot.names.get(name).and_then(|entry| summary(name, entry))
    }

    /// Every version of `name`, ascending.
    pub fn versions(&self, name: &str) -> Vec<Arc<Bundle>> {
        self.state.load().names.get(name).map(|entry| entry.versions.values().cloned().collect()).unwrap_or_default()
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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
