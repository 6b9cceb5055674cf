//! TLS on the API's listener and the gRPC one (rustls, ring provider), with a certificate
//! that can be replaced while serving: [`CertificateReloader`] hands every new handshake the key pair
//! loaded last, so a reload (SIGHUP, or the files changing) drops no connection: the open
//! ones keep the session they have.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};

use crate::settings::ConfigError;

/// `[server.tls]`: serve HTTPS instead of HTTP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM: the server's certificate first, then any intermediates.
    pub cert_file: PathBuf,
    /// PEM: the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

impl TlsFiles {
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, path) in [("server.tls.cert_file", &self.cert_file), ("server.tls.key_file", &self.key_file)] {
            std::fs::File::open(path)
                .map_err(|error| ConfigError::new(key, format!("cannot read {}: {error}", path.display())))?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the certificate chain {path}: {message}")]
    Certificates { path: PathBuf, message: String },
    #[error("cannot read the private key {path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error("the certificate and the key do not go together: {0}")]
    Mismatch(rustls::Error),
    #[error("cannot configure TLS: {0}")]
    Config(rustls::Error),
}

/// The current certificate and key, reloadable.
#[derive(Debug)]
pub struct CertificateReloader {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
    /// Modification times of the two files when last loaded.
    seen: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

impl CertificateReloader {
    pub fn load(files: &TlsFiles) -> Result<Arc<Self>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let seen = modified(files);
        let key = certified_key(files, &provider)?;
        Ok(Arc::new(Self {
            files: files.clone(),
            provider,
            current: ArcSwap::from_pointee(key),
            seen: Mutex::new(seen),
        }))
    }

    /// The rustls configuration for the API's listener (HTTP/1.1 over TLS 1.2 or 1.3).
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        self.config_for(b"http/1.1")
    }

    /// The rustls configuration for the gRPC listener: the same certificate, HTTP/2.
    pub fn grpc_server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        self.config_for(b"h2")
    }

    fn config_for(self: &Arc<Self>, protocol: &[u8]) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![protocol.to_vec()];
        Ok(Arc::new(config))
    }

    /// Loads the files again when `force` or when either changed; `Ok(true)` when a new pair
    /// is in use. On an error the pair in use stays.
    pub fn reload(&self, force: bool) -> Result<bool, TlsError> {
        let now = modified(&self.files);
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if !force && *seen == now {
                return Ok(false);
            }
            // Recorded before loading, so a broken file is reported once, not on every check.
            *seen = now;
        }
        let key = certified_key(&self.files, &self.provider)?;
        self.current.store(Arc::new(key));
        Ok(true)
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }
}

impl ResolvesServerCert for CertificateReloader {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn modified(files: &TlsFiles) -> (Option<SystemTime>, Option<SystemTime>) {
    let time = |path: &Path| std::fs::metadata(path).and_then(|meta| meta.modified()).ok();
    (time(&files.cert_file), time(&files.key_file))
}

fn certified_key(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let certificates_error = |message: String| TlsError::Certificates { path: files.cert_file.clone(), message };
    let certificates = CertificateDer::pem_file_iter(&files.cert_file)
        .map_err(|error| certificates_error(error.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| certificates_error(error.to_string()))?;
    if certificates.is_empty() {
        return Err(certificates_error("no PEM certificate in it".to_owned()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key_file)
        .map_err(|error| TlsError::Key { path: files.key_file.clone(), message: error.to_string() })?;
    CertifiedKey::from_der(certificates, key, provider).map_err(TlsError::Mismatch)
}
