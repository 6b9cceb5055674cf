//! Headless Chromium, driven by the selenium scripts of tests/browser, as a person at a
//! browser uses the appliance's pages. Everything is installed on first use: Debian's
//! chromium and chromedriver (no driver is downloaded at run time) and selenium, pinned.

use std::process::{Command, Output, Stdio};

use crate::{ensure_apt, ensure_pip_pinned, repo_root};

/// The newest selenium whose dependencies the package index here carries.
const SELENIUM: (&str, &str) = ("selenium", "4.51.0");

/// Runs tests/browser/`script` with `args`; its output says each step it saw, and its exit
/// status whether all happened.
pub fn browser_script(script: &str, args: &[&str]) -> Output {
    ensure_apt("chromium", "chromium");
    ensure_apt("chromium-driver", "chromedriver");
    ensure_pip_pinned(SELENIUM.0, SELENIUM.1);
    let scripts = repo_root().join("tests/browser");
    Command::new("python3")
        .arg(scripts.join(script))
        .args(args)
        .env("PYTHONPATH", &scripts)
        .env("SE_OFFLINE", "true")
        .stdin(Stdio::null())
        .output()
        .expect("python3 runs")
}

/// axe-core, the accessibility checker the browser tests run in the page: fetched once from
/// the npm registry with its sha256 checked (scripts/fetch-npm.sh) into target/npm.
pub fn axe_core() -> std::path::PathBuf {
    const AXE: (&str, &str, &str) =
        ("axe-core", "4.14.1", "e6b0ce02b84d892e2e33e403485e7f3d6c29e2be6df65daf44d89ba564139745");
    let dest = repo_root().join("target/npm/axe-core");
    let output = Command::new(repo_root().join("scripts/fetch-npm.sh"))
        .args([AXE.0, AXE.1, AXE.2])
        .arg(&dest)
        .args(["axe.min.js", "LICENSE"])
        .output()
        .expect("the fetch script runs");
    assert!(output.status.success(), "fetching axe-core failed:\n{}", String::from_utf8_lossy(&output.stderr));
    dest.join("axe.min.js")
}

/// Where the browser tests write their screenshots: target/screenshots.
pub fn screenshots_dir() -> std::path::PathBuf {
    repo_root().join("target/screenshots")
}
