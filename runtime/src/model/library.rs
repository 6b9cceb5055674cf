//! Finding the ONNX Runtime shared library and creating the process's one environment.
//!
//! The library is not linked at build time (`ort`'s `load-dynamic`): the appliance image
//! ships it in `lib/` beside the binary, a developer's checkout fetches it from the
//! PyPI `onnxruntime` wheel into `.cache/onnxruntime/`. Places are tried in this order:
//!
//! 1. `onnxruntime.library` in the config;
//! 2. the `ORT_DYLIB_PATH` environment variable;
//! 3. `lib/` beside the `forecourt` binary;
//! 4. the project's cache: `FORECOURT_ORT_CACHE`, else `.cache/onnxruntime/` of the
//!    checkout this binary was built from.
//!
//! A place named explicitly (1, 2) must hold the library: a typo fails start-up instead of
//! silently loading another copy.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;

use super::config::OnnxRuntimeConfig;
use super::error::ModelError;

const LIBRARY_NAME: &str = "libonnxruntime.so";

/// The loaded ONNX Runtime: its library and the process's environment.
#[derive(Clone)]
pub struct OnnxRuntime {
    environment: Environment,
    library: PathBuf,
    config: OnnxRuntimeConfig,
}

impl std::fmt::Debug for OnnxRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxRuntime").field("library", &self.library).finish_non_exhaustive()
    }
}

/// ONNX Runtime can be loaded once per process: the first successful load is kept.
static LOADED: OnceLock<(PathBuf, Environment)> = OnceLock::new();
static LOADING: Mutex<()> = Mutex::new(());

impl OnnxRuntime {
    /// Finds and loads the library (once per process) and creates the environment.
    pub fn init(config: &OnnxRuntimeConfig) -> Result<Self, ModelError> {
        let _loading = LOADING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((library, environment)) = LOADED.get() {
            return Ok(Self { environment: environment.clone(), library: library.clone(), config: config.clone() });
        }
        let library = locate(config.library.as_deref())?;
        let environment = ort::init_from(&library)
            .map_err(|error| ModelError::LibraryLoad { path: library.clone(), reason: error.to_string() })?
            .with_name("forecourt")
            .build()
            .map_err(|error| ModelError::LibraryLoad { path: library.clone(), reason: error.to_string() })?;
        tracing::info!(library = %library.display(), "ONNX Runtime loaded");
        let (library, environment) = LOADED.get_or_init(|| (library, environment));
        Ok(Self { environment: environment.clone(), library: library.clone(), config: config.clone() })
    }

    /// The library in use.
    pub fn library(&self) -> &Path {
        &self.library
    }

    /// ONNX Runtime's build information (version, commit).
    pub fn build_info(&self) -> &'static str {
        ort::info()
    }

    pub(super) fn environment(&self) -> &Environment {
        &self.environment
    }

    pub(super) fn config(&self) -> &OnnxRuntimeConfig {
        &self.config
    }
}

/// The first place in the documented order that holds the library.
fn locate(configured: Option<&Path>) -> Result<PathBuf, ModelError> {
    let explicit = [
        ("onnxruntime.library in the config", configured.map(Path::to_path_buf)),
        ("ORT_DYLIB_PATH", std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from)),
    ];
    for (what, path) in explicit {
        if let Some(path) = path {
            return if path.is_file() {
                Ok(path)
            } else {
                Err(ModelError::LibraryNotFound {
                    searched: vec![format!("{} ({what}): no such file", path.display())],
                })
            };
        }
    }
    let mut searched =
        vec!["onnxruntime.library in the config: not set".to_owned(), "ORT_DYLIB_PATH: not set".to_owned()];
    for folder in [beside_binary(), Some(project_cache())].into_iter().flatten() {
        if let Some(library) = library_in(&folder) {
            return Ok(library);
        }
        searched.push(format!("{}: no {LIBRARY_NAME}*", folder.display()));
    }
    Err(ModelError::LibraryNotFound { searched })
}

/// `lib/` beside the running binary: the appliance image's layout.
fn beside_binary() -> Option<PathBuf> {
    Some(std::env::current_exe().ok()?.parent()?.join("lib"))
}

/// Where `scripts/fetch-onnxruntime.sh` puts the library.
fn project_cache() -> PathBuf {
    std::env::var_os("FORECOURT_ORT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/onnxruntime"))
}

/// `libonnxruntime.so`, or else the newest-named `libonnxruntime.so.*`, in `folder`.
fn library_in(folder: &Path) -> Option<PathBuf> {
    let plain = folder.join(LIBRARY_NAME);
    if plain.is_file() {
        return Some(plain);
    }
    let mut versioned: Vec<PathBuf> = std::fs::read_dir(folder)
        .ok()?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.file_name().and_then(|name| name.to_str()).is_some_and(|name| name.starts_with("libonnxruntime.so."))
        })
        .filter(|path| path.is_file())
        .collect();
    versioned.sort();
    versioned.pop()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_path_that_does_not_exist_is_an_error_naming_it() {
        let error = locate(Some(Path::new("/nowhere/libonnxruntime.so"))).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("/nowhere/libonnxruntime.so (onnxruntime.library in the config)"), "{message}");
        assert!(message.contains("scripts/fetch-onnxruntime.sh"), "{message}");
    }

    #[test]
    fn a_folder_offers_the_plain_name_or_a_versioned_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(library_in(dir.path()), None);
        std::fs::write(dir.path().join("libonnxruntime.so.1.32.0"), b"").unwrap();
        assert_eq!(library_in(dir.path()), Some(dir.path().join("libonnxruntime.so.1.32.0")));
        std::fs::write(dir.path().join("libonnxruntime.so"), b"").unwrap();
        assert_eq!(library_in(dir.path()), Some(dir.path().join("libonnxruntime.so")));
    }
}
