//! The on-disk cache of compiled plugins. Compiling a component takes 40-100 ms;
//! loading its compiled artifact takes well under a millisecond, so restarts and
//! re-activations never compile twice.
//!
//! An artifact is keyed by the wasm's sha256 and by the engine's compatibility hash
//! (wasmtime version and every setting that affects code generation), so an upgrade or a
//! limit change compiles afresh instead of loading code built for another engine.
//! Artifacts are written to a temporary file and renamed, so a crash never leaves a torn
//! one. The folder must be writable only by the appliance: loading an artifact trusts it
//! as native code.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

#[derive(Debug)]
pub(super) struct ArtifactCache {
    dir: Option<PathBuf>,
    engine_key: String,
}

/// Where a component came from, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompileSource {
    /// Loaded from the artifact cache.
    Cache,
    /// Compiled now (and stored, when there is a cache folder).
    Compiled,
}

impl ArtifactCache {
    pub(super) fn new(engine: &Engine, dir: Option<PathBuf>) -> Self {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Self { dir, engine_key: format!("{:016x}", hasher.finish()) }
    }

    fn artifact_path(&self, sha256: &str) -> Option<PathBuf> {
        Some(self.dir.as_ref()?.join(format!("{sha256}-{}.cwasm", self.engine_key)))
    }

    /// The compiled component for `wasm` (whose digest is `sha256`).
    pub(super) fn component(
        &self,
        engine: &Engine,
        wasm: &[u8],
        sha256: &str,
    ) -> wasmtime::Result<(Component, CompileSource)> {
        let Some(path) = self.artifact_path(sha256) else {
            return Ok((Component::new(engine, wasm)?, CompileSource::Compiled));
        };
        if path.exists() {
            match load_artifact(engine, &path) {
                Ok(component) => return Ok((component, CompileSource::Cache)),
                Err(error) => tracing::warn!(path = %path.display(), %error, "ignoring unusable compiled plugin"),
            }
        }
        let component = Component::new(engine, wasm)?;
        if let Err(error) = store_artifact(&path, &component) {
            tracing::warn!(path = %path.display(), %error, "cannot cache compiled plugin");
        }
        Ok((component, CompileSource::Compiled))
    }
}

#[allow(unsafe_code)]
fn load_artifact(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: the artifact was produced by `Component::serialize` for an engine with the
    // same compatibility hash (the file name says so), written atomically by
    // `store_artifact`, in a folder only this service may write (module docs). wasmtime
    // still checks the header and refuses artifacts from another engine configuration.
    unsafe { Component::deserialize_file(engine, path) }
}

fn store_artifact(path: &Path, component: &Component) -> std::io::Result<()> {
    let artifact = component.serialize().map_err(|error| std::io::Error::other(error.to_string()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut file, &artifact)?;
    file.as_file().sync_all()?;
    file.persist(path)?;
    Ok(())
}
