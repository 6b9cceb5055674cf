//! HTTPS on the API's listener against real clients (curl, Triton's Python client with
//! ssl=True, a rustls client), and certificates replaced while serving: on a file change and
//! on SIGHUP, without dropping the connections already open.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use forecourt_testkit::{
    Server, TestCertificates, TritonTensors, add_token, all_bundles, car, certificate_serial, ensure_apt,
    served_certificate_serial, temp_dir, triton_infer,
};
use serde_json::{Value, json};

fn curl(args: &[&str]) -> std::process::Output {
    ensure_apt("curl", "curl");
    Command::new("curl").args(["--silent", "--show-error", "--max-time", "20"]).args(args).output().expect("curl runs")
}

#[test]
fn https_serves_curl_and_tritonclient_with_a_token_and_refuses_untrusted_clients() {
    let certificates = TestCertificates::generate();
    let data = temp_dir();
    let kiosk = add_token(data.path(), "kiosk", "front-desk", &[]);
    let server = Server::builder(&all_bundles()).data_dir(data.path()).tls(&certificates).start();
    let url = server.url("/v1/predict/car-price");
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let ca = certificates.ca.to_str().unwrap();
    let authorization = format!("Authorization: Bearer {kiosk}");

    let answered = curl(&[
        "--cacert",
        ca,
        "-H",
        &authorization,
        "-H",
        "content-type: application/json",
        "-d",
        &car().to_string(),
        &url,
    ]);
    assert!(answered.status.success(), "{}", String::from_utf8_lossy(&answered.stderr));
    let answer: Value = serde_json::from_slice(&answered.stdout).expect("JSON");
    assert!(answer["outputs"]["price"].as_f64().is_some_and(|price| price > 0.0), "{answer}");

    // Without the token: 401 over HTTPS too.
    let anonymous = curl(&["--cacert", ca, "-o", "/dev/null", "-w", "%{http_code}", "-d", "{}", &url]);
    assert_eq!(String::from_utf8_lossy(&anonymous.stdout), "401");
    // A client that does not trust the CA refuses the server (curl's exit 60: peer certificate).
    let untrusted = curl(&["-H", &authorization, "-d", "{}", &url]);
    assert_eq!(untrusted.status.code(), Some(60), "{}", String::from_utf8_lossy(&untrusted.stderr));
    // Plain HTTP to the HTTPS port gets no HTTP answer.
    let plain = curl(&["-o", "/dev/null", "-w", "%{http_code}", &url.replace("https://", "http://")]);
    assert_eq!(String::from_utf8_lossy(&plain.stdout), "000");

    let argument = json!({"features": [[20000, 4, 4, 1, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0]], "years_ahead": [[0]]});
    // Triton's client with its defaults: binary tensors both ways.
    let triton =
        triton_infer(server.host_port(), &argument, TritonTensors::Binary, Some(&kiosk), Some(&certificates.ca));
    assert_eq!((&triton["live"], &triton["ready"]), (&json!(true), &json!(true)), "{triton}");
    assert_eq!(triton["metadata"]["name"], "car-price");
    assert!(triton["prices"][0].as_f64().is_some_and(|price| price > 0.0), "{triton}");
    assert_eq!(server.get("/health").status, 200, "the testkit's own client speaks HTTPS with the CA");
}

/// An `openssl s_client` connection kept open: requests written to it, answers read back.
struct OpenConnection {
    child: std::process::Child,
    reader: BufReader<std::process::ChildStdout>,
}

impl OpenConnection {
    fn open(host_port: &str, ca: &std::path::Path) -> Self {
        let mut child = Command::new("openssl")
            .args([
                "s_client",
                "-quiet",
                "-verify_return_error",
                "-servername",
                "localhost",
                "-connect",
                host_port,
                "-CAfile",
            ])
            .arg(ca)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl runs");
        let reader = BufReader::new(child.stdout.take().unwrap());
        Self { child, reader }
    }

    /// GET /health on this connection; the status line and the body.
    fn health(&mut self) -> (String, String) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"GET /health HTTP/1.1\r\nhost: localhost\r\n\r\n").unwrap();
        stdin.flush().unwrap();
        let mut status = String::new();
        self.reader.read_line(&mut status).unwrap();
        let mut length = 0;
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        std::io::Read::read_exact(&mut self.reader, &mut body).unwrap();
        (status.trim().to_owned(), String::from_utf8(body).unwrap())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for_serial(host_port: &str, certificates: &TestCertificates, serial: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let served = served_certificate_serial(host_port, &certificates.ca);
        if served == serial {
            return;
        }
        assert!(Instant::now() < deadline, "the server still presents {served:?}, not the new {serial:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_renewed_certificate_is_served_without_dropping_open_connections() {
    let certificates = TestCertificates::generate();
    let server = Server::builder(&all_bundles()).tls(&certificates).start();
    let first = certificate_serial(&certificates.cert);
    assert_eq!(served_certificate_serial(server.host_port(), &certificates.ca), first);

    let mut open = OpenConnection::open(server.host_port(), &certificates.ca);
    assert_eq!(open.health().0, "HTTP/1.1 200 OK");

    // The file changes: new handshakes get the new certificate...
    let second = certificates.renew();
    assert_ne!(second, first);
    wait_for_serial(server.host_port(), &certificates, &second);
    // ...and the connection opened before goes on.
    let (status, body) = open.health();
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", r#"{"status":"ready","ready":true}"#));
    assert!(server.logs().contains("HTTPS certificate reloaded"));
}

#[test]
fn sighup_reloads_the_certificate_at_once() {
    let certificates = TestCertificates::generate();
    // Files are checked once an hour here, so only the signal can explain a reload.
    let server =
        Server::builder(&all_bundles()).tls(&certificates).env("FORECOURT_AUTH__RELOAD_INTERVAL_MS", "3600000").start();
    let first = certificate_serial(&certificates.cert);
    let second = certificates.renew();
    assert_eq!(served_certificate_serial(server.host_port(), &certificates.ca), first, "no reload without the signal");
    let status = Command::new("kill").args(["-HUP", &server.pid().to_string()]).status().unwrap();
    assert!(status.success());
    wait_for_serial(server.host_port(), &certificates, &second);
    let audit = server.get("/v1/audit?limit=1000");
    let reloads: Vec<&Value> =
        audit.json["records"].as_array().unwrap().iter().filter(|r| r["kind"] == "tls_reloaded").collect();
    assert_eq!(reloads.len(), 1, "{reloads:?}");
    assert_eq!(reloads[0]["details"]["trigger"], "sighup");
}

#[test]
fn a_broken_certificate_file_keeps_the_one_in_use() {
    let certificates = TestCertificates::generate();
    let server = Server::builder(&all_bundles()).tls(&certificates).start();
    let first = certificate_serial(&certificates.cert);
    let good = std::fs::read(&certificates.cert).unwrap();
    std::fs::write(&certificates.cert, b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
        .unwrap();
    let line =
        server.wait_for_log_line(Duration::from_secs(15), |line| line.contains("cannot reload the HTTPS certificate"));
    assert!(line.is_some(), "the broken file is reported:\n{}", server.logs());
    assert_eq!(served_certificate_serial(server.host_port(), &certificates.ca), first);
    assert_eq!(server.get("/health").status, 200);
    std::fs::write(&certificates.cert, good).unwrap();
}
