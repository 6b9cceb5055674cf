//! API tokens for a server under test, made and revoked with the real `forecourt token`
//! command against the server's data folder (its default token file).

use std::path::Path;
use std::process::{Command, Output};

use crate::forecourt_binary;

/// Runs `forecourt token ARGS` with the token file of the data folder `data_dir`.
pub fn token_command(data_dir: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(forecourt_binary());
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("FORECOURT_") && key != "FORECOURT_ORT_CACHE" {
            command.env_remove(key.as_ref());
        }
    }
    command.arg("token").args(args).env("FORECOURT_DATA_DIR", data_dir).output().expect("forecourt runs")
}

/// Adds a token (`forecourt token add --role ROLE --name NAME EXTRA...`) and returns it.
#[track_caller]
pub fn add_token(data_dir: &Path, role: &str, name: &str, extra: &[&str]) -> String {
    let mut args = vec!["add", "--role", role, "--name", name];
    args.extend_from_slice(extra);
    let output = token_command(data_dir, &args);
    assert!(output.status.success(), "forecourt token add failed:\n{}", String::from_utf8_lossy(&output.stderr));
    let token = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(token.starts_with("fct_") && !token.contains('\n'), "token add prints the token alone: {token:?}");
    token
}
