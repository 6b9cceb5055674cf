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
