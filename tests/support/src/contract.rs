//! The API contract's tools, at pinned versions: openapi-spec-validator on a document, and
//! schemathesis against a server under test with tests/contract/schemathesis.toml.

use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::{Client, ensure_pip_pinned, repo_root, temp_dir};

const SPEC_VALIDATOR: (&str, &str) = ("openapi-spec-validator", "0.9.0");
const SCHEMATHESIS: (&str, &str) = ("schemathesis", "4.32.5");

/// Validates `document` with openapi-spec-validator (it detects the OpenAPI version);
/// the validator's report when it is not valid.
pub fn validate_openapi(document: &Value) -> Result<(), String> {
    ensure_pip_pinned(SPEC_VALIDATOR.0, SPEC_VALIDATOR.1);
    let dir = temp_dir();
    let path = dir.path().join("openapi.json");
    std::fs::write(&path, document.to_string()).expect("the document is written");
    let output = Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .expect("python3 runs");
    if output.status.success() { Ok(()) } else { Err(text(&output)) }
}

/// How much schemathesis does: every check and every phase, reproducibly.
#[derive(Debug, Clone, Copy)]
pub struct Fuzzing {
    pub seed: u64,
    /// Test cases per operation and phase.
    pub max_examples: u32,
    pub workers: u32,
}

/// Runs schemathesis against the server behind `client` (its /openapi.json), with the
/// bearer `token` on every request; schemathesis also calls without it and with a wrong one.
/// Returns its output: the exit status says whether it found anything.
pub fn schemathesis(client: &Client, token: &str, fuzzing: Fuzzing) -> Output {
    ensure_pip_pinned(SCHEMATHESIS.0, SCHEMATHESIS.1);
    let contract = repo_root().join("tests/contract");
    let reports = temp_dir();
    Command::new("python3")
        .args(["-m", "schemathesis.cli", "--no-color", "--config-file"])
        .arg(contract.join("schemathesis.toml"))
        .arg("run")
        .arg(client.url("/openapi.json"))
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--checks", "all", "--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--seed", &fuzzing.seed.to_string(), "--max-examples", &fuzzing.max_examples.to_string()])
        .args(["--workers", &fuzzing.workers.to_string(), "--generation-database", "none"])
        .arg("--report-dir")
        .arg(reports.path())
        // The narrow, documented waivers of tests/contract/forecourt_contract_hooks.py.
        .env("PYTHONPATH", &contract)
        .env("SCHEMATHESIS_HOOKS", "forecourt_contract_hooks")
        // Its caches and reports go there too, not into the checkout.
        .current_dir(reports.path())
        .stdin(Stdio::null())
        .output()
        .expect("python3 runs")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}
