//! Bundle folders for servers under test, built once per test process: the three example
//! bundles (car-price, housing, iris) made by the real `forecourt bundle build`, and a bundle
//! of the hostile fixture plugin with a tiny identity model.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use crate::{fixture_plugin, forecourt_binary, repo_root, wasm_target_dir};

/// The example plugins, as folders under plugins/.
pub const EXAMPLES: [&str; 3] = ["car-price", "housing", "iris"];

/// The hostile fixture bundle's name and version.
pub const HOSTILE: &str = "hostile";
pub const HOSTILE_VERSION: &str = "0.1.0";

/// A folder holding the three example bundles (`<dir>/<name>/<version>/`), built once per
/// test process with `forecourt bundle build` (cargo reuses the wasm the testkit builds).
pub fn example_bundles() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch_root().join("examples");
        std::fs::create_dir_all(&dir).expect("the bundles folder can be made");
        for plugin in EXAMPLES {
            build_example(plugin, &dir);
        }
        dir
    })
    .clone()
}

/// A folder holding only the hostile fixture's bundle (see [`write_hostile_bundle`]).
pub fn hostile_bundle_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch_root().join("hostile");
        write_hostile_bundle(&dir);
        dir
    })
    .clone()
}

/// A folder with all four bundles (the three examples and the hostile fixture), so one
/// server serves every test's needs.
pub fn all_bundles() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch_root().join("all");
        copy_tree(&example_bundles(), &dir);
        copy_tree(&hostile_bundle_dir(), &dir);
        dir
    })
    .clone()
}

/// The identity model of the hostile bundle: `observed` float32 [N, 1] -> `echo` float32
/// [N, 1] (made by runtime/tests/fixtures/models/make_identity.py).
pub fn identity_model() -> PathBuf {
    repo_root().join("runtime/tests/fixtures/models/observed_identity.onnx")
}

/// Writes `<out>/hostile/0.1.0/{preprocess.wasm, model.onnx, bundle.toml}`: the hostile
/// fixture plugin (built if needed), the identity model, and a manifest with their digests
/// and one smoke-test sample (`{"attack": "none"}` gives `echo` [1.0]).
pub fn write_hostile_bundle(out: &Path) -> PathBuf {
    let dir = out.join(HOSTILE).join(HOSTILE_VERSION);
    std::fs::create_dir_all(&dir).expect("the bundle folder can be made");
    let plugin = std::fs::read(fixture_plugin("hostile")).expect("the hostile plugin was built");
    let model = std::fs::read(identity_model()).expect("the identity model is committed");
    std::fs::write(dir.join("preprocess.wasm"), &plugin).expect("writable");
    std::fs::write(dir.join("model.onnx"), &model).expect("writable");
    let manifest = format!(
        r#"[bundle]
name = "{HOSTILE}"
version = "{HOSTILE_VERSION}"
description = "Misbehaves on request (test fixture)"
min_runtime_version = "0.1.0"

[plugin]
file = "preprocess.wasm"
sha256 = "{plugin}"

[model]
file = "model.onnx"
sha256 = "{model}"

[[samples]]
request = '{{"attack": "none"}}'
expected = {{ echo = [1.0] }}
"#,
        plugin = sha256_hex(&plugin),
        model = sha256_hex(&model),
    );
    std::fs::write(dir.join("bundle.toml"), manifest).expect("writable");
    dir
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn build_example(plugin: &str, out: &Path) {
    let output = Command::new(forecourt_binary())
        .current_dir(repo_root())
        .args(["bundle", "build"])
        .arg(Path::new("plugins").join(plugin))
        .arg("--out")
        .arg(out)
        .env("CARGO_TARGET_DIR", wasm_target_dir())
        .output()
        .expect("forecourt runs");
    assert!(
        output.status.success(),
        "forecourt bundle build plugins/{plugin} failed (is the wasm32-wasip2 target installed? `make setup`):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = String::from_utf8_lossy(&output.stdout);
    let folder = PathBuf::from(printed.trim());
    assert!(folder.join("bundle.toml").is_file(), "bundle build printed {printed:?}, which holds no bundle.toml");
}

/// Copies the folder `from` to `to`, recursively (a test's own copy of bundles to alter).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("the folder can be made");
    for entry in std::fs::read_dir(from).expect("readable") {
        let entry = entry.expect("readable");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("readable").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copyable");
        }
    }
}

/// This test process's scratch folder for bundles. It must outlive every test of the
/// process, so it is not removed at exit; instead each process removes the folders of
/// processes that ran more than a day ago.
fn scratch_root() -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        const PREFIX: &str = "forecourt-e2e-bundles-";
        let temp = std::env::temp_dir();
        if let Ok(entries) = std::fs::read_dir(&temp) {
            let stale = SystemTime::now() - Duration::from_secs(24 * 3600);
            for entry in entries.flatten() {
                let old = entry.metadata().and_then(|meta| meta.modified()).is_ok_and(|time| time < stale);
                if old && entry.file_name().to_string_lossy().starts_with(PREFIX) {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        tempfile::Builder::new().prefix(PREFIX).tempdir_in(temp).expect("a temporary folder").keep()
    })
    .clone()
}
