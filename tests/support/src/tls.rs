//! A private certificate authority and a server certificate for 127.0.0.1 and localhost,
//! made with the `openssl` command line (installed when missing), for HTTPS tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{ensure_apt, temp_dir};

/// A CA and a server certificate signed by it, in a temporary folder.
#[derive(Debug)]
pub struct TestCertificates {
    dir: tempfile::TempDir,
    /// The CA's certificate (PEM): what clients trust.
    pub ca: PathBuf,
    /// The server's certificate (PEM).
    pub cert: PathBuf,
    /// The server's private key (PEM, PKCS#8).
    pub key: PathBuf,
}

impl TestCertificates {
    pub fn generate() -> Self {
        ensure_apt("openssl", "openssl");
        let dir = temp_dir();
        let path = |name: &str| dir.path().join(name);
        openssl(
            dir.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=forecourt-test-ca",
            ],
        );
        openssl(
            dir.path(),
            &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "server.key"],
        );
        std::fs::write(
            path("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("writable");
        let certificates = Self { ca: path("ca.pem"), cert: path("server.pem"), key: path("server.key"), dir };
        certificates.renew();
        certificates
    }

    /// Signs a new server certificate for the same key and puts it in place of the old one
    /// (a rename: a reader sees one or the other); returns its serial number.
    pub fn renew(&self) -> String {
        let dir = self.dir.path();
        openssl(dir, &["req", "-new", "-key", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"]);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                &format!("0x{:x}", rand_serial()),
                "-out",
                "server.new.pem",
                "-days",
                "2",
                "-extfile",
                "server.ext",
            ],
        );
        std::fs::rename(dir.join("server.new.pem"), &self.cert).expect("renamable");
        certificate_serial(&self.cert)
    }
}

/// The serial number of the PEM certificate in `file`, as openssl prints it (hex digits).
pub fn certificate_serial(file: &Path) -> String {
    let output =
        Command::new("openssl").args(["x509", "-noout", "-serial", "-in"]).arg(file).output().expect("openssl runs");
    assert!(output.status.success(), "openssl x509 failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().trim_start_matches("serial=").to_owned()
}

/// The serial number of the certificate a TLS server at `host_port` presents now, read by a
/// fresh `openssl s_client` connection trusting `ca`.
pub fn served_certificate_serial(host_port: &str, ca: &Path) -> String {
    let script = format!(
        "openssl s_client -connect {host_port} -servername localhost -CAfile {} -verify_return_error </dev/null 2>/dev/null | openssl x509 -noout -serial",
        ca.display()
    );
    let output = Command::new("sh").args(["-c", &script]).output().expect("sh runs");
    String::from_utf8_lossy(&output.stdout).trim().trim_start_matches("serial=").to_owned()
}

fn rand_serial() -> u64 {
    // Distinct per call within a test: the clock's nanoseconds and a counter.
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    (nanos << 8 | COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) & 0x7fff_ffff_ffff_ffff
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
    assert!(output.status.success(), "openssl {args:?} failed:\n{}", String::from_utf8_lossy(&output.stderr));
}
