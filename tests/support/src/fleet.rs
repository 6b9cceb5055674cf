//! What fleet tests share: a signing key made with `forecourt keygen`, the car-price
//! bundle signed with it (what the appliances ship), new versions of it packed as `.fcb`
//! files (signed, unsigned, tampered, or failing their smoke test), appliances started
//! against a broker, and the `forecourt` command line itself.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::{Broker, Server, ServerBuilder, copy_tree, example_bundles, forecourt_binary, temp_dir};

/// The shipped version of car-price.
pub const SHIPPED: &str = "1.0.0";

/// How a `.fcb` of [`FleetKit::package`] is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packaging {
    Signed,
    Unsigned,
    /// Signed, then one byte of model.onnx flipped (packed with `tar`, since `forecourt
    /// bundle pack` refuses files that do not match their manifest).
    Tampered,
    /// Signed, but a sample's expected output is wrong, so the smoke test fails.
    FailsSmokeTest,
}

/// A signing key, a trusted-keys folder, and a bundles folder with car-price signed.
#[derive(Debug)]
pub struct FleetKit {
    dir: tempfile::TempDir,
    key: PathBuf,
    keys_dir: PathBuf,
    bundles: PathBuf,
}

impl Default for FleetKit {
    fn default() -> Self {
        Self::new()
    }
}

impl FleetKit {
    pub fn new() -> Self {
        let dir = temp_dir();
        let keys_dir = dir.path().join("trusted");
        succeed(&[&"keygen", &"--out", &dir.path().join("keys"), &"--name", &"fleet"]);
        std::fs::create_dir_all(&keys_dir).expect("writable");
        std::fs::copy(dir.path().join("keys/fleet.pub"), keys_dir.join("fleet.pub")).expect("keygen wrote fleet.pub");
        let bundles = dir.path().join("bundles");
        let shipped = bundles.join("car-price").join(SHIPPED);
        copy_tree(&example_bundles().join("car-price").join(SHIPPED), &shipped);
        let key = dir.path().join("keys/fleet.key");
        succeed(&[&"bundle", &"sign", &shipped, &"--key", &key]);
        Self { dir, key, keys_dir, bundles }
    }

    /// The bundles folder the appliances ship with (car-price 1.0.0, signed).
    pub fn bundles(&self) -> &Path {
        &self.bundles
    }

    pub fn keys_dir(&self) -> &Path {
        &self.keys_dir
    }

    /// The fleet's private key, which the appliances of [`FleetKit::appliance`] trust: what
    /// `forecourt fleet push|rollback|remove --key` signs requests with.
    pub fn key(&self) -> &Path {
        &self.key
    }

    /// `request` (any JSON, hostile ones too) in the envelope `forecourt fleet sign` makes
    /// with the kit's key for `device`'s deploy topic, plus `extra` options (e.g.
    /// `--valid-for`): the payload to publish.
    pub fn signed_request(&self, device: &str, request: &[u8], extra: &[&str]) -> Vec<u8> {
        let mut child = Command::new(forecourt_binary())
            .args(["fleet", "sign", "--device", device, "--key"])
            .arg(&self.key)
            .args(extra)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("forecourt runs");
        // `fleet sign` reads all of stdin before it writes: writing first cannot deadlock.
        let _ = std::io::Write::write_all(&mut child.stdin.take().expect("stdin is piped"), request);
        let output = child.wait_with_output().expect("forecourt runs");
        assert!(output.status.success(), "forecourt fleet sign failed: {}", String::from_utf8_lossy(&output.stderr));
        output.stdout
    }

    /// car-price at `version`, packed into a `.fcb` as `packaging` says.
    pub fn package(&self, version: &str, packaging: Packaging) -> PathBuf {
        let name = format!("car-price-{version}-{packaging:?}");
        let work = self.dir.path().join("work").join(&name);
        let bundle = work.join(format!("car-price-{version}"));
        copy_tree(&self.bundles.join("car-price").join(SHIPPED), &bundle);
        let _ = std::fs::remove_file(bundle.join("bundle.sig"));
        let manifest_path = bundle.join("bundle.toml");
        let mut manifest = std::fs::read_to_string(&manifest_path).expect("the manifest is readable");
        manifest = manifest.replacen(&format!("version = \"{SHIPPED}\""), &format!("version = \"{version}\""), 1);
        if packaging == Packaging::FailsSmokeTest {
            manifest = wrong_first_expectation(&manifest);
        }
        manifest = with_own_plugin(&bundle, &manifest, version);
        std::fs::write(&manifest_path, manifest).expect("writable");
        if packaging != Packaging::Unsigned {
            succeed(&[&"bundle", &"sign", &bundle, &"--key", &self.key]);
        }
        let fcb = self.dir.path().join(format!("{name}.fcb"));
        if packaging == Packaging::Tampered {
            let model = bundle.join("model.onnx");
            let mut bytes = std::fs::read(&model).expect("readable");
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x01;
            std::fs::write(&model, bytes).expect("writable");
            let status = Command::new("tar")
                .args(["--format=ustar", "--owner=0", "--group=0", "-cf"])
                .arg(&fcb)
                .arg("-C")
                .arg(&work)
                .arg(format!("car-price-{version}"))
                .status()
                .expect("tar runs");
            assert!(status.success(), "tar failed");
        } else {
            succeed(&[&"bundle", &"pack", &bundle, &"--out", &fcb]);
        }
        fcb
    }

    /// The command line of `forecourt fleet push` of `fcb` to `device` as deployment `id`,
    /// signed with the kit's key: the arguments after the binary.
    pub fn push_args(&self, broker: &Broker, fcb: &Path, device: &str, id: &str) -> Vec<String> {
        let path = |path: &Path| path.to_string_lossy().into_owned();
        ["fleet", "push", "--broker", &broker.url(), "--bundle", &path(fcb), "--device", device, "--id", id, "--key"]
            .into_iter()
            .map(str::to_owned)
            .chain([path(&self.key)])
            .collect()
    }

    /// An appliance serving the shipped bundles, trusting the kit's key, linked to
    /// `broker` as `device` in `groups`, publishing metrics every second.
    pub fn appliance(&self, broker: &Broker, device: &str, groups: &[&str]) -> ServerBuilder {
        Server::builder(&self.bundles)
            .env("FORECOURT_TRUST__KEYS_DIR", self.keys_dir.to_string_lossy())
            .env("FORECOURT_MQTT__BROKER", broker.url())
            .env("FORECOURT_MQTT__DEVICE_ID", device)
            .env(
                "FORECOURT_MQTT__GROUPS",
                format!("[{}]", groups.iter().map(|g| format!("\"{g}\"")).collect::<Vec<_>>().join(",")),
            )
            .env("FORECOURT_MQTT__METRICS_INTERVAL_SECS", "1")
            .env("FORECOURT_MQTT__RECONNECT_MAX_MS", "500")
    }
}

/// Gives the bundle's plugin a custom section naming `version`, as a rebuilt plugin would
/// differ, so that the appliance compiles it afresh (no cached artifact) like a real new
/// version; returns the manifest with the plugin's new sha256.
fn with_own_plugin(bundle: &Path, manifest: &str, version: &str) -> String {
    let path = bundle.join("preprocess.wasm");
    let mut wasm = std::fs::read(&path).expect("the plugin is readable");
    let old = crate::sha256_hex(&wasm);
    let name = b"forecourt-test-version";
    let mut body = vec![name.len() as u8];
    body.extend_from_slice(name);
    body.extend_from_slice(version.as_bytes());
    // A custom section (id 0) may follow the component's other sections; sizes are LEB128,
    // a single byte below 128.
    assert!(body.len() < 128, "the custom section fits a one-byte size");
    wasm.push(0);
    wasm.push(body.len() as u8);
    wasm.extend_from_slice(&body);
    std::fs::write(&path, &wasm).expect("writable");
    assert!(manifest.contains(&old), "the manifest names the plugin's sha256");
    manifest.replacen(&old, &crate::sha256_hex(&wasm), 1)
}

/// Makes the first expected value of the first sample 10% off.
fn wrong_first_expectation(manifest: &str) -> String {
    let start = manifest.find("[samples.expected]").expect("the bundle has samples");
    let (head, tail) = manifest.split_at(start);
    let open = tail
        .find('[')
        .and_then(|first| tail[first + 1..].find('[').map(|second| first + 1 + second))
        .expect("an expected list");
    let end = tail[open..].find([',', ']']).expect("a number") + open;
    let number: f64 = tail[open + 1..end].trim().parse().expect("an expected number");
    format!("{head}{}{}{}", &tail[..=open], number * 1.1, &tail[end..])
}

/// Runs the `forecourt` command line.
pub fn forecourt(args: &[&dyn AsRef<OsStr>]) -> Output {
    Command::new(forecourt_binary()).args(args.iter().map(|arg| arg.as_ref())).output().expect("forecourt runs")
}

/// Runs the `forecourt` command line, which must succeed; its stdout.
#[track_caller]
pub fn succeed(args: &[&dyn AsRef<OsStr>]) -> String {
    let output = forecourt(args);
    assert!(
        output.status.success(),
        "forecourt {:?} failed:\n{}",
        args.iter().map(|arg| arg.as_ref().to_string_lossy().into_owned()).collect::<Vec<_>>(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
