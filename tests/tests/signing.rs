//! Signed bundles, as a fleet manager and an appliance use them: `forecourt keygen`,
//! `forecourt bundle sign`, `pack` and `unpack` run as a user would, and a server whose
//! `[trust] keys_dir` is set serves only bundles signed by a trusted key, rejecting (and
//! auditing) unsigned, untrusted and tampered ones while the good ones serve.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use forecourt_testkit::{Server, car, copy_tree, example_bundles, forecourt_binary, temp_dir};
use serde_json::{Value, json};

const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

fn forecourt(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    Command::new(forecourt_binary()).args(args.iter().map(|arg| arg.as_ref())).output().expect("forecourt runs")
}

#[track_caller]
fn succeed(args: &[&dyn AsRef<std::ffi::OsStr>]) -> String {
    let output = forecourt(args);
    assert!(output.status.success(), "forecourt failed:\n{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `forecourt keygen --out DIR --name NAME`; the key id it prints.
fn keygen(dir: &Path, name: &str) -> String {
    let printed = succeed(&[&"keygen", &"--out", &dir, &"--name", &name]);
    let id = printed.lines().find_map(|line| line.strip_prefix("key id ")).expect("keygen prints the key id");
    assert!(id.len() == 16 && id.chars().all(|c| c.is_ascii_hexdigit()), "{printed}");
    id.to_owned()
}

fn sign(bundle: &Path, key: &Path) {
    succeed(&[&"bundle", &"sign", &bundle, &"--key", &key]);
}

fn bundle_names(server: &Server) -> Vec<String> {
    let reply = server.get("/v1/bundles");
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.json["bundles"].as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap().to_owned()).collect()
}

/// The `details` of every `bundle_rejected` audit record.
fn rejections(server: &Server) -> Vec<Value> {
    let reply = server.get("/v1/audit?limit=1000");
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.json["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|record| record["kind"] == "bundle_rejected")
        .map(|record| record["details"].clone())
        .collect()
}

#[track_caller]
fn rejection_of(rejections: &[Value], dir: &Path) -> String {
    rejections
        .iter()
        .find(|details| details["dir"].as_str().map(PathBuf::from).as_deref() == Some(dir))
        .and_then(|details| details["reason"].as_str())
        .unwrap_or_else(|| panic!("no bundle_rejected record for {}: {rejections:?}", dir.display()))
        .to_owned()
}

#[track_caller]
fn assert_car_price_serves(server: &Server) {
    let reply = server.post_json("/v1/predict/car-price", &car());
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.json["outputs"]["price"].as_f64().is_some_and(|price| price > 0.0), "{}", reply.json);
}

#[test]
fn only_bundles_signed_by_a_trusted_key_and_untampered_are_served() {
    let scratch = temp_dir();
    let (keys, strangers) = (scratch.path().join("keys"), scratch.path().join("strangers"));
    let release = keygen(&keys, "release");
    let stranger = keygen(&strangers, "stranger");
    assert_ne!(release, stranger);

    // car-price signed by the trusted key; housing unsigned; iris signed by a stranger;
    // and signed copies of car-price whose model had one byte flipped, or whose manifest
    // was edited, after signing.
    let bundles = scratch.path().join("bundles");
    copy_tree(&example_bundles(), &bundles);
    let car_price = bundles.join("car-price/1.0.0");
    let (housing, iris) = (bundles.join("housing/1.0.0"), bundles.join("iris/1.0.0"));
    let tampered = bundles.join("tampered/car-price-1.0.0");
    let edited = bundles.join("tampered/car-price-manifest");
    copy_tree(&car_price, &tampered);
    copy_tree(&car_price, &edited);
    sign(&car_price, &keys.join("release.key"));
    sign(&tampered, &keys.join("release.key"));
    sign(&edited, &keys.join("release.key"));
    let manifest = std::fs::read_to_string(edited.join("bundle.toml")).unwrap();
    std::fs::write(edited.join("bundle.toml"), manifest.replacen("version = \"1.0.0\"", "version = \"1.0.1\"", 1))
        .unwrap();
    sign(&iris, &strangers.join("stranger.key"));
    let model = tampered.join("model.onnx");
    let mut bytes = std::fs::read(&model).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&model, bytes).unwrap();

    let server = Server::builder(&bundles).env("FORECOURT_TRUST__KEYS_DIR", keys.display().to_string()).start();
    assert_eq!(bundle_names(&server), ["car-price"]);
    assert_car_price_serves(&server);

    let rejected = rejections(&server);
    assert_eq!(rejected.len(), 4, "{rejected:?}");
    let unsigned = rejection_of(&rejected, &housing);
    assert!(unsigned.contains("unsigned") && unsigned.contains("housing"), "{unsigned}");
    let untrusted = rejection_of(&rejected, &iris);
    assert!(untrusted.contains(&stranger) && untrusted.contains("not trusted"), "{untrusted}");
    let flipped = rejection_of(&rejected, &tampered);
    assert!(flipped.contains("model.onnx") && flipped.contains("sha256"), "{flipped}");
    let bad = rejection_of(&rejected, &edited);
    assert!(bad.contains("bad signature") && bad.contains(&release), "{bad}");
    let loaded = server.get("/v1/audit?limit=1000").json["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|record| record["kind"] == "bundle_loaded")
        .map(|record| record["details"].clone())
        .collect::<Vec<_>>();
    assert_eq!(loaded.len(), 1, "{loaded:?}");
    assert_eq!((&loaded[0]["bundle"], &loaded[0]["key_id"]), (&json!("car-price"), &json!(release)));
    let verify = server.get("/v1/audit/verify");
    assert_eq!(verify.json["ok"], true, "{verify:?}");

    // Without trusted keys nothing is verified: the unsigned and the stranger's bundles serve.
    let open = Server::start(&bundles);
    assert_eq!(bundle_names(&open), ["car-price", "housing", "iris"]);
    assert!(open.logs().contains("bundles are not verified"), "{}", open.logs());
}

#[test]
fn a_packed_signed_bundle_unpacks_verifies_and_serves() {
    let scratch = temp_dir();
    let keys = scratch.path().join("keys");
    keygen(&keys, "release");
    let source = scratch.path().join("source");
    copy_tree(&example_bundles().join("car-price/1.0.0"), &source);
    sign(&source, &keys.join("release.key"));
    let file = scratch.path().join("car-price-1.0.0.fcb");
    let packed = forecourt(&[&"bundle", &"pack", &source, &"--out", &file]);
    assert!(packed.status.success() && packed.stderr.is_empty(), "a signed bundle packs without a word: {packed:?}");
    // An unsigned one packs too, with a warning on stderr (stdout stays the file's path).
    let unsigned = scratch.path().join("unsigned");
    copy_tree(&example_bundles().join("car-price/1.0.0"), &unsigned);
    let _ = std::fs::remove_file(unsigned.join("bundle.sig"));
    let warned = forecourt(&[&"bundle", &"pack", &unsigned, &"--out", &scratch.path().join("unsigned.fcb")]);
    let stderr = String::from_utf8_lossy(&warned.stderr);
    assert!(warned.status.success() && stderr.contains("warning") && stderr.contains("bundle.sig"), "{stderr}");

    let received = scratch.path().join("received");
    let unpacked = PathBuf::from(succeed(&[&"bundle", &"unpack", &file, &"--out", &received]).trim());
    assert_eq!(unpacked, received.join("car-price-1.0.0"));
    for name in ["bundle.toml", "bundle.sig", "preprocess.wasm", "model.onnx"] {
        assert_eq!(std::fs::read(unpacked.join(name)).unwrap(), std::fs::read(source.join(name)).unwrap(), "{name}");
    }
    // Unpacking again never overwrites what is there.
    let again = forecourt(&[&"bundle", &"unpack", &file, &"--out", &received]);
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("already exists"));

    let server = Server::builder(&received).env("FORECOURT_TRUST__KEYS_DIR", keys.display().to_string()).start();
    assert_eq!(bundle_names(&server), ["car-price"]);
    assert!(rejections(&server).is_empty());
    assert_car_price_serves(&server);
}

#[test]
fn the_cli_refuses_to_overwrite_keys_or_sign_a_tampered_bundle() {
    let scratch = temp_dir();
    let keys = scratch.path().join("keys");
    keygen(&keys, "release");
    let private = std::fs::read(keys.join("release.key")).unwrap();
    let again = forecourt(&[&"keygen", &"--out", &keys, &"--name", &"release"]);
    assert!(!again.status.success(), "keygen must not overwrite a key");
    assert!(String::from_utf8_lossy(&again.stderr).contains("release.key"), "{again:?}");
    assert_eq!(std::fs::read(keys.join("release.key")).unwrap(), private);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(keys.join("release.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the private key must be readable by its owner only");
    }

    let bundle = scratch.path().join("iris");
    copy_tree(&example_bundles().join("iris/1.0.0"), &bundle);
    std::fs::write(bundle.join("preprocess.wasm"), b"not the plugin the manifest names").unwrap();
    let refused = forecourt(&[&"bundle", &"sign", &bundle, &"--key", &keys.join("release.key")]);
    assert!(!refused.status.success(), "signing a bundle whose files do not match must be refused");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("preprocess.wasm"), "{refused:?}");
    assert!(!bundle.join("bundle.sig").exists());
}

#[test]
fn unusable_trusted_keys_refuse_to_start_naming_the_file() {
    let scratch = temp_dir();
    let keys = scratch.path().join("keys");
    keygen(&keys, "release");
    std::fs::write(keys.join("broken.pub"), "# forecourt ed25519 public key\nnot a key\n").unwrap();
    let exited = Server::builder(&example_bundles())
        .env("FORECOURT_TRUST__KEYS_DIR", keys.display().to_string())
        .run_to_exit(EXIT_TIMEOUT);
    assert!(!exited.status.success(), "a malformed .pub must refuse the start");
    assert!(exited.stderr.contains("broken.pub"), "{}", exited.stderr);
    assert!(exited.stdout.is_empty(), "a refused start never listens: {}", exited.stdout);

    let missing = scratch.path().join("no-such-keys");
    let exited = Server::builder(&example_bundles())
        .env("FORECOURT_TRUST__KEYS_DIR", missing.display().to_string())
        .run_to_exit(EXIT_TIMEOUT);
    assert!(!exited.status.success() && exited.stderr.contains("no-such-keys"), "{}", exited.stderr);
}
