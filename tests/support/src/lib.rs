//! The one test harness every test in the workspace uses: it builds and locates the
//! WebAssembly plugins (the examples in plugins/ and the hostile fixtures), so a plain
//! `cargo test` works on a fresh checkout without a separate build step; it builds bundles
//! ([`example_bundles`], [`all_bundles`]), runs the real binary as a server ([`Server`]),
//! runs a real Mosquitto broker with a recording subscriber for the fleet link ([`Broker`],
//! [`Subscription`]), installs the tools tests drive ([`ensure_apt`], [`ensure_pip`]), and
//! runs the API contract's tools ([`validate_openapi`], [`schemathesis`]).

mod browser;
mod bundles;
mod contract;
mod fleet;
mod load;
mod mqtt;
mod server;
mod tls;
mod tokens;
mod tools;

pub use browser::{axe_core, browser_script, screenshots_dir};
pub use bundles::{
    EXAMPLES, HOSTILE, HOSTILE_VERSION, all_bundles, copy_tree, example_bundles, hostile_bundle_dir, identity_model,
    sha256_hex, write_hostile_bundle,
};
pub use contract::{Fuzzing, schemathesis, validate_openapi};
pub use fleet::{FleetKit, Packaging, SHIPPED, forecourt, succeed};
pub use load::{Load, LoadReport};
pub use mqtt::{Broker, Message, Subscription, User};
pub use server::{Client, Exited, Reply, Server, ServerBuilder};
pub use tls::{TestCertificates, certificate_serial, served_certificate_serial};
pub use tokens::{add_token, token_command};
pub use tools::{
    TritonTensors, ensure_apt, ensure_pip, ensure_pip_pinned, promtool_check, shap_parity, triton_grpc,
    triton_grpc_over_tls, triton_infer,
};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the repository root exists")
}

/// Where every wasm workspace builds. Always passed explicitly, so it does not follow
/// CARGO_TARGET_DIR and the artifacts are found whatever the outer build uses.
pub fn wasm_target_dir() -> PathBuf {
    repo_root().join("target/wasm")
}

/// The example plugin `crate_name` (e.g. `car_price`) from plugins/, built if needed.
pub fn example_plugin(crate_name: &str) -> PathBuf {
    wasm_artifact("plugins/Cargo.toml", crate_name)
}

/// The test fixture plugin `crate_name` (e.g. `hostile`), built if needed.
pub fn fixture_plugin(crate_name: &str) -> PathBuf {
    wasm_artifact("runtime/tests/fixtures/plugins/Cargo.toml", crate_name)
}

/// A model file of an example plugin, e.g. `model_file("car-price", "model.onnx")`.
pub fn model_file(plugin: &str, file: &str) -> PathBuf {
    repo_root().join("plugins").join(plugin).join("model").join(file)
}

fn wasm_artifact(manifest: &str, crate_name: &str) -> PathBuf {
    build_wasm_workspace(manifest);
    let path = wasm_target_dir().join("wasm32-wasip2/release").join(format!("{crate_name}.wasm"));
    assert!(path.exists(), "{} was not built by {manifest}", path.display());
    path
}

/// Builds a wasm workspace once per test process (cargo makes it a no-op when fresh,
/// and serialises concurrent builds from other test processes).
fn build_wasm_workspace(manifest: &str) {
    static BUILT: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if built.iter().any(|done| done == manifest) {
        return;
    }
    let output = Command::new(env!("CARGO"))
        .current_dir(repo_root())
        .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path", manifest, "--target-dir"])
        .arg(wasm_target_dir())
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "building {manifest} failed (is the wasm32-wasip2 target installed? `make setup`):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    built.push(manifest.to_owned());
}

/// A temporary folder removed when dropped.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("forecourt-test-").tempdir().expect("a temporary folder")
}

/// The `forecourt` binary of this checkout, built (release, like the tests) if needed.
pub fn forecourt_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let mut cargo = Command::new(env!("CARGO"));
            // The selection `make test`'s `cargo test --workspace` builds, so that the binary
            // it built is found fresh. `-p forecourt-cli` alone resolves features without the
            // test targets' dev-dependencies (tokio's test-util, ureq's rustls): a second
            // build of tokio and everything on it (hyper, axum, tonic, rumqttc, the
            // appliance) of several minutes. Neither feature changes what the binary does:
            // nothing in it pauses time, and it downloads bundles over http:// only.
            cargo.current_dir(repo_root()).args([
                "build",
                "--release",
                "--workspace",
                "--tests",
                "--message-format=json",
            ]);
            // What cargo set for this test process is not the build's. ring's build script
            // reruns when CARGO_MANIFEST_DIR changes, and `make test`'s own build has none:
            // passed on, it rebuilt ring, rustls and everything on them (3-4 minutes) here,
            // and again in the next outer build.
            for (name, _) in std::env::vars_os() {
                let name = name.to_string_lossy();
                if name.starts_with("CARGO_PKG_")
                    || name.starts_with("CARGO_BIN_EXE_")
                    || [
                        "CARGO_MANIFEST_DIR",
                        "CARGO_MANIFEST_PATH",
                        "CARGO_CRATE_NAME",
                        "CARGO_PRIMARY_PACKAGE",
                        "CARGO_TARGET_TMPDIR",
                        "CARGO_RUSTC_CURRENT_DIR",
                        "OUT_DIR",
                    ]
                    .contains(&&*name)
                {
                    cargo.env_remove(&*name);
                }
            }
            let output = cargo.output().expect("cargo runs");
            assert!(output.status.success(), "building forecourt failed:\n{}", String::from_utf8_lossy(&output.stderr));
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                .filter(|message| message["target"]["name"] == "forecourt")
                // Not the test harness of the binary's own unit tests.
                .filter(|message| message["target"]["kind"] == serde_json::json!(["bin"]))
                .filter(|message| message["profile"]["test"] == false)
                .filter_map(|message| message["executable"].as_str().map(PathBuf::from))
                .next_back()
                .expect("cargo reports the forecourt executable")
        })
        .clone()
}

/// Makes sure the project's ONNX Runtime library is fetched (scripts/fetch-onnxruntime.sh,
/// a no-op when it already is), once per test process.
pub fn ensure_onnxruntime() {
    static FETCHED: OnceLock<()> = OnceLock::new();
    FETCHED.get_or_init(|| {
        let output =
            Command::new(repo_root().join("scripts/fetch-onnxruntime.sh")).output().expect("the fetch script runs");
        assert!(
            output.status.success(),
            "fetching ONNX Runtime failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    });
}

/// One line of a model's golden.jsonl: a client request and the original model's outputs.
#[derive(Debug, Clone)]
pub struct Golden {
    pub request: serde_json::Value,
    pub expected: serde_json::Map<String, serde_json::Value>,
}

/// The golden rows of an example model (`plugins/<plugin>/model/golden.jsonl`).
pub fn golden(plugin: &str) -> Vec<Golden> {
    let path = model_file(plugin, "golden.jsonl");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    text.lines()
        .map(|line| {
            let mut row: serde_json::Value = serde_json::from_str(line).expect("golden rows are JSON");
            let request = row["request"].take();
            let expected = row["expected"].as_object().expect("golden rows carry expected outputs").clone();
            Golden { request, expected }
        })
        .collect()
}

/// A golden car-price row asking for one forecast: two model rows ([2, 17] features).
pub fn golden_car_with_forecast() -> Golden {
    golden("car-price")
        .into_iter()
        .find(|row| row.request["forecast_months"].as_array().is_some_and(|months| months.len() == 1))
        .expect("a golden row with one forecast month")
}

/// The tensors the example plugin `plugin` (e.g. `car_price`) makes of a client request, as
/// `forecourt plugin preprocess` prints them: `[{"name", "shape", "data": {"type", "values"}}]`.
pub fn preprocess(plugin: &str, request: &serde_json::Value) -> Vec<serde_json::Value> {
    let output = Command::new(forecourt_binary())
        .args(["plugin", "preprocess"])
        .arg(example_plugin(plugin))
        .arg(request.to_string())
        .output()
        .expect("forecourt runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let tensors: serde_json::Value = serde_json::from_slice(&output.stdout).expect("tensors as JSON");
    tensors.as_array().expect("a list of tensors").clone()
}

/// Asserts `actual` is within `tolerance` (relative) of `expected`.
#[track_caller]
pub fn assert_close(actual: f64, expected: f64, tolerance: f64, what: &str) {
    assert!(
        (actual - expected).abs() <= tolerance * expected.abs().max(f64::MIN_POSITIVE),
        "{what}: expected {expected} (relative tolerance {tolerance}), got {actual}"
    );
}

/// A valid car-price request (the README's first example car).
pub fn car() -> serde_json::Value {
    serde_json::json!({"make": "saab", "body": "sedan", "mileage": 42000, "cylinders": 4, "doors": 4,
                       "cruise": true, "sound": false, "leather": true})
}

/// `request` with `key` set to `value`.
pub fn with(mut request: serde_json::Value, key: &str, value: serde_json::Value) -> serde_json::Value {
    request[key] = value;
    request
}

/// The value of the sample `name{labels...}` in a Prometheus exposition (the labels given
/// must all match; others may be present), if there is one.
pub fn metric_sample(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    exposition.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (series_name, rest) = series.split_once('{').unwrap_or((series, "}"));
        let all = labels.iter().all(|(key, wanted)| rest.contains(&format!("{key}=\"{wanted}\"")));
        (series_name == name && all).then(|| value.parse().ok()).flatten()
    })
}
