//! Entry points for the fuzz targets in runtime/fuzz (`make fuzz`), and for nothing else:
//! hidden from the docs, it promises no API and may change with any commit.
//!
//! Each function runs one parser that takes outside input exactly as the appliance runs
//! it, through the appliance's own code (the functions here only reach into modules whose
//! items are crate-private): the `/v1` body check, the OIP v2 infer body to tensors and the
//! model's input check, `bundle.toml`, the `.fcb` archive as a deployment unpacks it, and
//! the signed deployment requests that arrive over MQTT.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::bundle::signature::{PrivateKey, PublicKey, keygen};
use crate::bundle::{MANIFEST_FILE, Manifest, TrustedKeys};
use crate::fleet::messages::Request;
use crate::fleet::signed::{self, Refusal};
use crate::model::InputSpec;
use crate::tensor::Tensor;

/// A `/v1/predict/{bundle}` body as the `JsonText` extractor checks it; on success the
/// text the plugin is given, on failure the API's message.
pub fn v1_body(bytes: &[u8]) -> Result<String, String> {
    crate::http::extract::json_text(bytes).map_err(|error| error.message)
}

/// A `/v2/models/{model}/infer` body to the tensors the model is given; `header_length`
/// is the `Inference-Header-Content-Length` header's value (binary tensor data), if any.
pub fn v2_inputs(body: &[u8], header_length: Option<&[u8]>) -> Result<Vec<Tensor>, String> {
    crate::http::v2::infer_inputs(body, header_length).map_err(|error| format!("{error:?}"))
}

/// The model's check of tensors against its inputs before a run; the row count if they fit.
pub fn check_model_inputs(inputs: &[InputSpec], tensors: &[Tensor]) -> Result<usize, String> {
    crate::model::check_inputs(inputs, tensors)
}

/// `bundle.toml` as a bundle's loader reads it: parsed and its fields checked.
pub fn bundle_manifest(bytes: &[u8]) -> Result<Manifest, String> {
    Manifest::parse(Path::new(MANIFEST_FILE), bytes).map_err(|error| error.to_string())
}

/// A `.fcb` as a fleet deployment stages it: written to `scratch/bundle.fcb` and unpacked
/// into `scratch/unpacked/`; the bundle's folder on success.
pub fn bundle_archive(bytes: &[u8], scratch: &Path) -> Result<PathBuf, String> {
    crate::fleet::deploy::unpack(bytes, scratch).map_err(|error| error.to_string())
}

/// The deploy topic [`fleet_open`] takes requests on, and [`fleet_seal`] signs them for.
pub const FLEET_TOPIC: &str = "forecourt/fuzz-1/deploy";

/// A key pair made once per process, the one key [`fleet_open`] trusts: a fuzzer cannot
/// forge a signature, so [`fleet_seal`] lets a target reach the checks behind it.
struct FleetKey {
    // Holds the key files for as long as the process runs.
    _dir: tempfile::TempDir,
    private: PrivateKey,
    trusted: TrustedKeys,
}

fn fleet_key() -> &'static FleetKey {
    static KEY: OnceLock<FleetKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary folder for the fuzzing key");
        let generated = keygen(dir.path(), "fuzz").expect("a fuzzing key");
        let private = PrivateKey::read(&generated.private).expect("the fuzzing key reads back");
        let trusted = TrustedKeys::new([PublicKey::read(&generated.public).expect("the public key reads back")]);
        FleetKey { _dir: dir, private, trusted }
    })
}

/// A payload that arrived on [`FLEET_TOPIC`], opened as the appliance opens it (envelope,
/// signature by the trusted key, terms, then the request's own checks).
pub fn fleet_open(payload: &[u8], now: u64) -> Result<Request, Refusal> {
    signed::open(payload, FLEET_TOPIC, Some(&fleet_key().trusted), now)
}

/// `request` signed by the key [`fleet_open`] trusts, for [`FLEET_TOPIC`] until `not_after`.
pub fn fleet_seal(request: &serde_json::Value, not_after: u64) -> Vec<u8> {
    signed::seal(request, FLEET_TOPIC, not_after, &fleet_key().private)
}
