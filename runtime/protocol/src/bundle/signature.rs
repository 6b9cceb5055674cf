//! Bundle signatures: ed25519 over the exact bytes of `bundle.toml`.
//!
//! The manifest holds the sha256 of the plugin and of the model, so a signature over it
//! covers every byte of the bundle: the loader verifies the signature first, then the
//! files' digests against the (now trusted) manifest.
//!
//! Files, all plain text:
//!
//! ```text
//! NAME.key    # forecourt ed25519 private key, key id 0123456789abcdef: keep it secret
//!             <64 hex digits: the 32-byte secret seed>            (mode 0600)
//! NAME.pub    # forecourt ed25519 public key, key id 0123456789abcdef
//!             <64 hex digits: the 32-byte public key>
//! bundle.sig  key_id = "0123456789abcdef"                         (TOML, beside bundle.toml)
//!             algorithm = "ed25519"
//!             signature = "<128 hex digits>"
//! ```
//!
//! A key id is the first 16 hex digits of the sha256 of the public key's bytes. The
//! appliance trusts the `*.pub` files of `[trust] keys_dir` ([`TrustedKeys`]).

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::BundleFileError;
use super::manifest::{MANIFEST_FILE, Manifest};

/// The signature file beside `bundle.toml`.
pub const SIGNATURE_FILE: &str = "bundle.sig";
/// The only signature algorithm.
pub const ALGORITHM: &str = "ed25519";

const PRIVATE_HEADER: &str = "# forecourt ed25519 private key";
const PUBLIC_HEADER: &str = "# forecourt ed25519 public key";

fn key_error(path: &Path, reason: impl Into<String>) -> BundleFileError {
    BundleFileError::Key { path: path.to_owned(), reason: reason.into() }
}

/// The key id of a public key: the first 16 hex digits of sha256(public key bytes).
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))[..16].to_owned()
}

/// A private key read from a `NAME.key` file.
pub struct PrivateKey {
    key: SigningKey,
    id: String,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey").field("id", &self.id).finish_non_exhaustive()
    }
}

impl PrivateKey {
    pub fn read(path: &Path) -> Result<Self, BundleFileError> {
        let seed: [u8; 32] = read_key_file(path, PRIVATE_HEADER)?;
        let key = SigningKey::from_bytes(&seed);
        let id = key_id(&key.verifying_key());
        Ok(Self { key, id })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Signs `bytes` (e.g. a fleet request); the signature in hex.
    pub fn sign_hex(&self, bytes: &[u8]) -> String {
        hex::encode(self.key.sign(bytes).to_bytes())
    }

    pub fn public(&self) -> PublicKey {
        PublicKey { key: self.key.verifying_key(), id: self.id.clone() }
    }
}

/// A public key read from a `NAME.pub` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
    id: String,
}

impl PublicKey {
    pub fn read(path: &Path) -> Result<Self, BundleFileError> {
        let bytes: [u8; 32] = read_key_file(path, PUBLIC_HEADER)?;
        let key =
            VerifyingKey::from_bytes(&bytes).map_err(|error| key_error(path, format!("not a public key: {error}")))?;
        Ok(Self { id: key_id(&key), key })
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

/// Reads a key file: comment lines (`#`) and one line of 64 hex digits.
fn read_key_file(path: &Path, header: &str) -> Result<[u8; 32], BundleFileError> {
    let text = std::fs::read_to_string(path).map_err(|error| key_error(path, error.to_string()))?;
    if !text.starts_with(header) {
        return Err(key_error(path, format!("not a key file of this kind (it must start with {header:?})")));
    }
    let lines: Vec<&str> =
        text.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with('#')).collect();
    let [line] = lines.as_slice() else {
        return Err(key_error(path, format!("expected one line of key, found {}", lines.len())));
    };
    let bytes = hex::decode(line).map_err(|error| key_error(path, format!("the key is not hex: {error}")))?;
    bytes.try_into().map_err(|bytes: Vec<u8>| key_error(path, format!("the key is {} bytes, not 32", bytes.len())))
}

/// What [`keygen`] wrote.
#[derive(Debug, Clone)]
pub struct GeneratedKey {
    pub private: PathBuf,
    pub public: PathBuf,
    pub id: String,
}

/// Makes a key pair: `out/NAME.key` (mode 0600) and `out/NAME.pub`. Refuses to overwrite
/// either file.
pub fn keygen(out: &Path, name: &str) -> Result<GeneratedKey, BundleFileError> {
    if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\']) {
        return Err(key_error(Path::new(name), "a key name must be a plain file name"));
    }
    std::fs::create_dir_all(out).map_err(|error| key_error(out, error.to_string()))?;
    let private = out.join(format!("{name}.key"));
    let public = out.join(format!("{name}.pub"));
    for path in [&private, &public] {
        if path.exists() {
            return Err(key_error(path, "already exists; refusing to overwrite a key"));
        }
    }
    let key = SigningKey::generate(&mut rand_core::OsRng);
    let id = key_id(&key.verifying_key());
    write_new(
        &private,
        &format!("{PRIVATE_HEADER}, key id {id}: keep it secret\n{}\n", hex::encode(key.to_bytes())),
        0o600,
    )?;
    write_new(
        &public,
        &format!("{PUBLIC_HEADER}, key id {id}\n{}\n", hex::encode(key.verifying_key().as_bytes())),
        0o644,
    )?;
    Ok(GeneratedKey { private, public, id })
}

/// Creates `path` (which must not exist) with `mode` from the start, then writes `text`.
fn write_new(path: &Path, text: &str, mode: u32) -> Result<(), BundleFileError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(|error| key_error(path, error.to_string()))?;
    file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(|error| key_error(path, error.to_string()))
}

/// The contents of `bundle.sig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureFile {
    pub key_id: String,
    pub algorithm: String,
    /// 128 hex digits.
    pub signature: String,
}

impl SignatureFile {
    /// Reads `dir/bundle.sig`; `Ok(None)` when there is none.
    pub fn read(dir: &Path) -> Result<Option<Self>, BundleFileError> {
        let path = dir.join(SIGNATURE_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(BundleFileError::Read { path, reason: error.to_string() }),
        };
        let malformed = |reason: String| BundleFileError::MalformedSignature { path: path.clone(), reason };
        let file: SignatureFile = toml::from_str(&text).map_err(|error| malformed(error.to_string()))?;
        if file.algorithm != ALGORITHM {
            return Err(malformed(format!("algorithm {:?} is not {ALGORITHM:?}", file.algorithm)));
        }
        if file.key_id.len() != 16 || !file.key_id.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(malformed("key_id must be 16 hex digits".to_owned()));
        }
        file.signature_bytes().map_err(malformed)?;
        Ok(Some(file))
    }

    fn signature_bytes(&self) -> Result<Signature, String> {
        let bytes = hex::decode(&self.signature).map_err(|error| format!("signature is not hex: {error}"))?;
        Signature::from_slice(&bytes).map_err(|_| format!("signature is {} bytes, not 64", bytes.len()))
    }
}

/// `forecourt bundle sign`: signs the exact bytes of `dir/bundle.toml` with `key` and
/// writes `dir/bundle.sig`. Refused when the bundle's files do not match the manifest.
pub fn sign_bundle(dir: &Path, key: &PrivateKey) -> Result<PathBuf, BundleFileError> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let bytes = std::fs::read(&manifest_path)
        .map_err(|error| BundleFileError::Read { path: manifest_path.clone(), reason: error.to_string() })?;
    Manifest::parse(&manifest_path, &bytes)?.verify_files(dir)?;
    let signature = key.key.sign(&bytes);
    let file = SignatureFile {
        key_id: key.id.clone(),
        algorithm: ALGORITHM.to_owned(),
        signature: hex::encode(signature.to_bytes()),
    };
    let path = dir.join(SIGNATURE_FILE);
    let text = toml::to_string(&file)
        .map_err(|error| BundleFileError::Read { path: path.clone(), reason: error.to_string() })?;
    std::fs::write(&path, text)
        .map_err(|error| BundleFileError::Read { path: path.clone(), reason: error.to_string() })?;
    Ok(path)
}

/// Why a detached signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureRefused {
    #[error("signed by a key that is not trusted")]
    UntrustedKey,
    #[error("malformed signature: {0}")]
    Malformed(String),
    #[error("the signature does not match what it signs")]
    Mismatch,
}

/// The public keys the appliance trusts, by key id.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: BTreeMap<String, PublicKey>,
}

impl TrustedKeys {
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> Self {
        Self { keys: keys.into_iter().map(|key| (key.id.clone(), key)).collect() }
    }

    /// Every `*.pub` file of `dir`. A missing or unreadable folder, a malformed `.pub`
    /// file, or a folder without any is an error naming the path.
    pub fn load_dir(dir: &Path) -> Result<Self, BundleFileError> {
        let entries =
            std::fs::read_dir(dir).map_err(|error| key_error(dir, format!("cannot read the keys folder: {error}")))?;
        let mut paths = Vec::new();
        for entry in entries {
            let path = entry.map_err(|error| key_error(dir, error.to_string()))?.path();
            if path.extension().is_some_and(|ext| ext == "pub") {
                paths.push(path);
            }
        }
        paths.sort();
        if paths.is_empty() {
            return Err(key_error(dir, "the keys folder holds no *.pub file"));
        }
        paths.iter().map(|path| PublicKey::read(path)).collect::<Result<Vec<_>, _>>().map(Self::new)
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Checks a detached signature (hex) over `bytes` by the key `key_id`, for what is
    /// signed outside a bundle (fleet requests).
    pub fn verify_bytes(&self, key_id: &str, bytes: &[u8], signature_hex: &str) -> Result<(), SignatureRefused> {
        let key = self.keys.get(&key_id.to_ascii_lowercase()).ok_or(SignatureRefused::UntrustedKey)?;
        let file = SignatureFile {
            key_id: key.id.clone(),
            algorithm: ALGORITHM.to_owned(),
            signature: signature_hex.to_owned(),
        };
        let signature = file.signature_bytes().map_err(SignatureRefused::Malformed)?;
        key.key.verify(bytes, &signature).map_err(|_| SignatureRefused::Mismatch)
    }

    /// Checks `dir/bundle.sig` against `manifest` (the exact bytes of `dir/bundle.toml`);
    /// returns the signing key's id.
    pub fn verify(&self, dir: &Path, manifest: &[u8]) -> Result<String, BundleFileError> {
        let file = SignatureFile::read(dir)?.ok_or_else(|| BundleFileError::Unsigned { dir: dir.to_owned() })?;
        let key = self
            .keys
            .get(&file.key_id.to_ascii_lowercase())
            .ok_or_else(|| BundleFileError::UntrustedKey { dir: dir.to_owned(), key_id: file.key_id.clone() })?;
        let bad =
            |reason: String| BundleFileError::BadSignature { dir: dir.to_owned(), key_id: key.id.clone(), reason };
        let signature = file.signature_bytes().map_err(bad)?;
        key.key.verify(manifest, &signature).map_err(|_| bad(format!("it does not match {MANIFEST_FILE}")))?;
        Ok(key.id.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"[bundle]
name = "cars"
version = "1.0.0"
min_runtime_version = "0.1.0"

[plugin]
file = "preprocess.wasm"
sha256 = "SHA_WASM"

[model]
file = "model.onnx"
sha256 = "SHA_ONNX"
"#;

    fn bundle() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("preprocess.wasm"), b"wasm").unwrap();
        std::fs::write(dir.path().join("model.onnx"), b"onnx").unwrap();
        let manifest = MANIFEST
            .replace("SHA_WASM", &hex::encode(Sha256::digest(b"wasm")))
            .replace("SHA_ONNX", &hex::encode(Sha256::digest(b"onnx")));
        std::fs::write(dir.path().join(MANIFEST_FILE), manifest).unwrap();
        dir
    }

    fn key(dir: &Path, name: &str) -> (PrivateKey, PublicKey) {
        let generated = keygen(dir, name).unwrap();
        let private = PrivateKey::read(&generated.private).unwrap();
        let public = PublicKey::read(&generated.public).unwrap();
        assert_eq!((private.id(), public.id()), (generated.id.as_str(), generated.id.as_str()));
        (private, public)
    }

    fn manifest_bytes(dir: &Path) -> Vec<u8> {
        std::fs::read(dir.join(MANIFEST_FILE)).unwrap()
    }

    #[test]
    fn keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites() {
        let keys = tempfile::tempdir().unwrap();
        let generated = keygen(keys.path(), "release").unwrap();
        assert_eq!(generated.id.len(), 16);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&generated.private).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let public = std::fs::read_to_string(&generated.public).unwrap();
        assert!(public.starts_with(PUBLIC_HEADER) && public.contains(&generated.id), "{public}");
        let error = keygen(keys.path(), "release").unwrap_err().to_string();
        assert!(error.contains("release.key") && error.contains("overwrite"), "{error}");
        // A private key is not a public key, nor the other way round.
        assert!(PublicKey::read(&generated.private).is_err());
        assert!(PrivateKey::read(&generated.public).is_err());
    }

    #[test]
    fn a_signed_bundle_verifies_with_the_trusted_key() {
        let (keys, dir) = (tempfile::tempdir().unwrap(), bundle());
        let (private, public) = key(keys.path(), "release");
        let path = sign_bundle(dir.path(), &private).unwrap();
        assert_eq!(path, dir.path().join(SIGNATURE_FILE));
        let file = SignatureFile::read(dir.path()).unwrap().unwrap();
        assert_eq!((file.key_id.as_str(), file.algorithm.as_str()), (private.id(), ALGORITHM));

        let trusted = TrustedKeys::load_dir(keys.path()).unwrap();
        assert_eq!(trusted.ids().collect::<Vec<_>>(), [public.id()]);
        assert_eq!(trusted.verify(dir.path(), &manifest_bytes(dir.path())).unwrap(), public.id());
    }

    #[test]
    fn a_bundle_signed_by_another_key_is_untrusted() {
        let (keys, dir) = (tempfile::tempdir().unwrap(), bundle());
        let (_, trusted) = key(keys.path(), "trusted");
        let (stranger, _) = key(keys.path(), "stranger");
        sign_bundle(dir.path(), &stranger).unwrap();
        match TrustedKeys::new([trusted]).verify(dir.path(), &manifest_bytes(dir.path())) {
            Err(BundleFileError::UntrustedKey { key_id, .. }) => assert_eq!(key_id, stranger.id()),
            other => panic!("expected an untrusted key, got {other:?}"),
        }
    }

    #[test]
    fn a_signature_by_a_trusted_id_with_the_wrong_key_does_not_verify() {
        let (keys, dir) = (tempfile::tempdir().unwrap(), bundle());
        let (trusted_private, trusted) = key(keys.path(), "trusted");
        let (stranger, _) = key(keys.path(), "stranger");
        sign_bundle(dir.path(), &stranger).unwrap();
        // The stranger's signature, labelled with the trusted key's id.
        let mut file = SignatureFile::read(dir.path()).unwrap().unwrap();
        file.key_id = trusted_private.id().to_owned();
        std::fs::write(dir.path().join(SIGNATURE_FILE), toml::to_string(&file).unwrap()).unwrap();
        let error = TrustedKeys::new([trusted]).verify(dir.path(), &manifest_bytes(dir.path())).unwrap_err();
        assert!(matches!(error, BundleFileError::BadSignature { .. }), "{error:?}");
    }

    #[test]
    fn altered_manifest_bytes_do_not_verify() {
        let (keys, dir) = (tempfile::tempdir().unwrap(), bundle());
        let (private, public) = key(keys.path(), "release");
        sign_bundle(dir.path(), &private).unwrap();
        let mut bytes = manifest_bytes(dir.path());
        bytes.extend_from_slice(b"\n# one more line\n");
        let error = TrustedKeys::new([public]).verify(dir.path(), &bytes).unwrap_err().to_string();
        assert!(error.contains(private.id()) && error.contains("does not match bundle.toml"), "{error}");
    }

    #[test]
    fn unsigned_and_malformed_signatures_are_refused_with_their_reason() {
        let (keys, dir) = (tempfile::tempdir().unwrap(), bundle());
        let (_, public) = key(keys.path(), "release");
        let trusted = TrustedKeys::new([public]);
        let bytes = manifest_bytes(dir.path());
        assert!(matches!(trusted.verify(dir.path(), &bytes), Err(BundleFileError::Unsigned { .. })));

        let sig = dir.path().join(SIGNATURE_FILE);
        for (text, reason) in [
            ("not toml at all", ""),
            ("key_id = \"0123456789abcdef\"\nalgorithm = \"rsa\"\nsignature = \"00\"\n", "algorithm"),
            ("key_id = \"xyz\"\nalgorithm = \"ed25519\"\nsignature = \"00\"\n", "key_id"),
            ("key_id = \"0123456789abcdef\"\nalgorithm = \"ed25519\"\nsignature = \"abcd\"\n", "not 64"),
            ("key_id = \"0123456789abcdef\"\nalgorithm = \"ed25519\"\nsignature = \"zz\"\n", "not hex"),
        ] {
            std::fs::write(&sig, text).unwrap();
            match trusted.verify(dir.path(), &bytes) {
                Err(error @ BundleFileError::MalformedSignature { .. }) => {
                    assert!(error.to_string().contains(reason), "{error}")
                }
                other => panic!("{text:?}: expected a malformed signature, got {other:?}"),
            }
        }
    }

    #[test]
    fn signing_refuses_a_bundle_whose_files_do_not_match() {
        let (keys, dir) = (tempfile::tempdir().unwrap(), bundle());
        let (private, _) = key(keys.path(), "release");
        std::fs::write(dir.path().join("model.onnx"), b"onnx, tampered").unwrap();
        assert!(matches!(sign_bundle(dir.path(), &private), Err(BundleFileError::Digest { .. })));
        assert!(!dir.path().join(SIGNATURE_FILE).exists());
    }

    #[test]
    fn trusted_key_folders_must_hold_valid_public_keys() {
        let keys = tempfile::tempdir().unwrap();
        assert!(TrustedKeys::load_dir(&keys.path().join("missing")).unwrap_err().to_string().contains("missing"));
        assert!(TrustedKeys::load_dir(keys.path()).unwrap_err().to_string().contains("no *.pub"));
        key(keys.path(), "good");
        std::fs::write(keys.path().join("bad.pub"), format!("{PUBLIC_HEADER}\nnot hex\n")).unwrap();
        let error = TrustedKeys::load_dir(keys.path()).unwrap_err().to_string();
        assert!(error.contains("bad.pub"), "{error}");
    }
}
