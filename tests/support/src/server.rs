//! A real `forecourt serve` process for end-to-end tests: a free port, a fresh data folder,
//! readiness awaited by polling `/health`, stderr kept in a file (printed when a test fails),
//! killed on drop; and a small blocking HTTP client (ureq) for talking to it.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{ensure_onnxruntime, forecourt_binary, temp_dir};

/// How long a server may take to print its address and to become ready.
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// How often readiness and exits are polled.
const POLL: Duration = Duration::from_millis(20);
/// No single HTTP exchange of a test may take longer.
const HTTP_TIMEOUT: Duration = Duration::from_secs(60);

/// One HTTP answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: ureq::http::HeaderMap,
    /// The body as it came.
    pub bytes: Vec<u8>,
    /// The body as text (lossy for non-UTF-8).
    pub text: String,
    /// The body as JSON, `Value::Null` when it is not JSON.
    pub json: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// The `x-request-id` header; panics if it is missing.
    pub fn request_id(&self) -> &str {
        self.header("x-request-id").unwrap_or_else(|| panic!("no x-request-id header on {self:?}"))
    }

    /// Whether the body is valid JSON.
    pub fn is_json(&self) -> bool {
        serde_json::from_str::<Value>(&self.text).is_ok()
    }
}

/// A blocking HTTP client bound to one server's address; cheap to clone into threads.
#[derive(Debug, Clone)]
pub struct Client {
    agent: ureq::Agent,
    base: String,
    /// Sent as `Authorization: Bearer <token>` on every request.
    token: Option<String>,
}

impl Client {
    pub fn new(base: impl Into<String>) -> Self {
        Self::with_ca(base, None)
    }

    /// A client that trusts only the CA certificate (PEM) in `ca` for `https://` addresses.
    pub fn with_ca(base: impl Into<String>, ca: Option<&Path>) -> Self {
        let mut config = ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(HTTP_TIMEOUT));
        if let Some(ca) = ca {
            let pem = std::fs::read(ca).expect("the CA certificate is readable");
            let certificate = ureq::tls::Certificate::from_pem(&pem).expect("a PEM certificate").to_owned();
            let roots = ureq::tls::RootCerts::Specific(Arc::new(vec![certificate]));
            config = config.tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build());
        }
        Self { agent: config.build().into(), base: base.into(), token: None }
    }

    /// The same client, sending `token` as its bearer token (`None`: no Authorization header).
    pub fn as_token(&self, token: Option<&str>) -> Client {
        Client { token: token.map(str::to_owned), ..self.clone() }
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `127.0.0.1:PORT`.
    pub fn host_port(&self) -> &str {
        self.base.trim_start_matches("http://").trim_start_matches("https://")
    }

    pub fn get(&self, path: &str) -> Reply {
        self.request("GET", path, None, None)
    }

    /// POSTs `body` as `application/json`.
    pub fn post_json(&self, path: &str, body: &Value) -> Reply {
        self.post_body(path, Some("application/json"), body.to_string().as_bytes())
    }

    /// POSTs raw bytes with the given content type (none: no content-type header).
    pub fn post_body(&self, path: &str, content_type: Option<&str>, body: &[u8]) -> Reply {
        self.request("POST", path, content_type, Some(body))
    }

    /// Any request; panics on a transport error (no answer at all).
    pub fn request(&self, method: &str, path: &str, content_type: Option<&str>, body: Option<&[u8]>) -> Reply {
        self.try_request(method, path, content_type, body)
            .unwrap_or_else(|error| panic!("{method} {} got no answer: {error}", self.url(path)))
    }

    pub fn try_post_json(&self, path: &str, body: &Value) -> Result<Reply, ureq::Error> {
        self.try_request("POST", path, Some("application/json"), Some(body.to_string().as_bytes()))
    }

    pub fn try_get(&self, path: &str) -> Result<Reply, ureq::Error> {
        self.try_request("GET", path, None, None)
    }

    /// Any request; `Err` only when no HTTP answer came (refused, reset, timed out).
    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Option<&[u8]>,
    ) -> Result<Reply, ureq::Error> {
        self.try_request_with_headers(method, path, &[], content_type, body)
    }

    /// A request with extra headers (`Origin`, a client's `x-request-id` ...).
    pub fn request_with_headers(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Reply {
        let content_type = body.map(|_| "application/json");
        self.try_request_with_headers(method, path, headers, content_type, body)
            .unwrap_or_else(|error| panic!("{method} {} got no answer: {error}", self.url(path)))
    }

    /// A POST with extra headers and the given content type (none: no content-type header),
    /// as a client of a binary framing sends it.
    pub fn post_with_headers(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        content_type: Option<&str>,
        body: &[u8],
    ) -> Reply {
        self.try_request_with_headers("POST", path, headers, content_type, Some(body))
            .unwrap_or_else(|error| panic!("POST {} got no answer: {error}", self.url(path)))
    }

    fn try_request_with_headers(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        content_type: Option<&str>,
        body: Option<&[u8]>,
    ) -> Result<Reply, ureq::Error> {
        let mut builder = ureq::http::Request::builder().method(method).uri(self.url(path));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        if let Some(token) = &self.token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        if let Some(content_type) = content_type {
            builder = builder.header("content-type", content_type);
        }
        let mut response = match body {
            Some(body) => self.agent.run(builder.body(body)?)?,
            None => self.agent.run(builder.body(())?)?,
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.body_mut().with_config().limit(64 << 20).read_to_vec()?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Reply { status, headers, bytes, text, json })
    }
}

/// How to start a server: bundles, extra environment, data folder, config file.
#[derive(Debug, Clone)]
pub struct ServerBuilder {
    bundles: PathBuf,
    env: Vec<(String, Option<String>)>,
    data_dir: Option<PathBuf>,
    config: Option<PathBuf>,
    /// The CA the client trusts when the server serves HTTPS.
    ca: Option<PathBuf>,
}

impl ServerBuilder {
    /// Serves HTTPS with these certificates; the server's client trusts their CA.
    pub fn tls(mut self, certificates: &crate::TestCertificates) -> Self {
        self.ca = Some(certificates.ca.clone());
        self.env("FORECOURT_SERVER__TLS__CERT_FILE", certificates.cert.display().to_string())
            .env("FORECOURT_SERVER__TLS__KEY_FILE", certificates.key.display().to_string())
    }

    /// Also serves the Open Inference Protocol over gRPC, on a free port of its own
    /// ([`Server::grpc_address`] finds it).
    pub fn grpc(self) -> Self {
        self.env("FORECOURT_GRPC__LISTEN", "127.0.0.1:0")
    }

    /// Sets an environment variable of the server, e.g. `("FORECOURT_SERVER__MAX_BATCH", "3")`.
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.to_owned(), Some(value.into())));
        self
    }

    /// Removes an environment variable the server would otherwise inherit.
    pub fn env_remove(mut self, key: &str) -> Self {
        self.env.push((key.to_owned(), None));
        self
    }

    /// Uses `dir` as the data folder instead of a fresh temporary one.
    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_owned());
        self
    }

    /// Passes `--config file`.
    pub fn config_file(mut self, file: &Path) -> Self {
        self.config = Some(file.to_owned());
        self
    }

    /// Starts the server and waits until it is ready.
    pub fn start(self) -> Server {
        ensure_onnxruntime();
        let logs = temp_dir();
        let (data_dir, owned_data) = match &self.data_dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let dir = temp_dir();
                (dir.path().join("data"), Some(dir))
            }
        };
        let mut server = Server {
            spec: self,
            client: Client::new("http://127.0.0.1:0"),
            child: Mutex::new(None),
            stdout: Arc::new(Mutex::new(String::new())),
            data_dir,
            _owned_data: owned_data,
            logs,
            runs: 0,
        };
        server.launch();
        server
    }

    /// Runs the server expecting it to exit by itself (a refused configuration) within
    /// `timeout`; panics if it is still running then.
    pub fn run_to_exit(self, timeout: Duration) -> Exited {
        let scratch = temp_dir();
        let data_dir = self.data_dir.clone().unwrap_or_else(|| scratch.path().join("data"));
        let stdout_path = scratch.path().join("stdout.log");
        let stderr_path = scratch.path().join("stderr.log");
        let mut child = self
            .command(&data_dir)
            .stdout(File::create(&stdout_path).expect("writable"))
            .stderr(File::create(&stderr_path).expect("writable"))
            .spawn()
            .expect("forecourt starts");
        let status = wait_exit(&mut child, timeout);
        let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
        match status {
            Some(status) => Exited { status, stdout: read(&stdout_path), stderr: read(&stderr_path) },
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "forecourt serve was expected to exit within {timeout:?} but kept running; stderr:\n{}",
                    read(&stderr_path)
                );
            }
        }
    }

    fn command(&self, data_dir: &Path) -> Command {
        let mut command = Command::new(forecourt_binary());
        command.arg("serve");
        if let Some(config) = &self.config {
            command.arg("--config").arg(config);
        }
        // The server's configuration is this builder's alone: nothing inherited from the
        // developer's shell (FORECOURT_ORT_CACHE is not configuration but where ONNX Runtime is).
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("FORECOURT_") && key != "FORECOURT_ORT_CACHE" {
                command.env_remove(key.as_ref());
            }
        }
        command
            .env_remove("RUST_LOG")
            .env("FORECOURT_DATA_DIR", data_dir)
            .env("FORECOURT_SERVER__LISTEN", "127.0.0.1:0")
            .env("FORECOURT_BUNDLES__DIR", &self.bundles)
            // ONNX Runtime logs every session option at info: keep the logs about Forecourt.
            .env("FORECOURT_LOGGING__LEVEL", "info,ort=warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        for (key, value) in &self.env {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        command
    }
}

/// A server process that exited by itself.
#[derive(Debug)]
pub struct Exited {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// A running `forecourt serve`; killed (SIGKILL) when dropped, its logs printed if the test
/// is failing. HTTP helpers come from [`Client`] through `Deref`.
#[derive(Debug)]
pub struct Server {
    spec: ServerBuilder,
    client: Client,
    child: Mutex<Option<Child>>,
    stdout: Arc<Mutex<String>>,
    data_dir: PathBuf,
    _owned_data: Option<tempfile::TempDir>,
    logs: tempfile::TempDir,
    /// How many times the process was started (1 + restarts).
    runs: usize,
}

impl std::ops::Deref for Server {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Server {
    /// A ready server on a free port with a fresh data folder, serving the bundles in `bundles`.
    pub fn start(bundles: &Path) -> Server {
        Self::builder(bundles).start()
    }

    pub fn builder(bundles: &Path) -> ServerBuilder {
        ServerBuilder { bundles: bundles.to_owned(), env: Vec::new(), data_dir: None, config: None, ca: None }
    }

    /// A client for this server (for threads); it keeps the address of the current run.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The process id of the current run.
    pub fn pid(&self) -> u32 {
        self.lock_child().as_ref().expect("the server is running").id()
    }

    /// `127.0.0.1:PORT` of the gRPC listener of the current run (started with
    /// [`ServerBuilder::grpc`]), from the line the server prints after its HTTP address.
    pub fn grpc_address(&self) -> String {
        const PREFIX: &str = "forecourt grpc listening on ";
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            // The last run's line: a restart may have moved the port.
            let stdout = self.stdout();
            if let Some(address) = stdout.lines().filter_map(|line| line.strip_prefix(PREFIX)).next_back() {
                let port = address.trim().rsplit_once(':').and_then(|(_, port)| port.parse::<u16>().ok());
                let port = port.unwrap_or_else(|| panic!("unexpected gRPC address line {address:?}"));
                return format!("127.0.0.1:{port}");
            }
            assert!(Instant::now() < deadline, "the server printed no gRPC address; stdout: {stdout:?}");
            std::thread::sleep(POLL);
        }
    }

    /// Everything the server printed on stdout (all runs).
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// stderr of every run so far, oldest first.
    pub fn logs(&self) -> String {
        (1..=self.runs)
            .map(|run| {
                let text = std::fs::read_to_string(self.stderr_path(run)).unwrap_or_default();
                if self.runs == 1 { text } else { format!("----- run {run} -----\n{text}") }
            })
            .collect()
    }

    /// Polls the logs until a line satisfies `matches` or `timeout` passes.
    pub fn wait_for_log_line(&self, timeout: Duration, matches: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.logs().lines().find(|line| matches(line)) {
                return Some(line.to_owned());
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Sends SIGTERM (a graceful shutdown).
    pub fn sigterm(&self) {
        let pid = self.pid();
        let status = Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill runs");
        assert!(status.success(), "kill -TERM {pid} failed");
    }

    /// SIGKILLs the server (a crash) and reaps it.
    pub fn sigkill(&self) {
        if let Some(mut child) = self.lock_child().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the server to exit; `None` if it is still running after `timeout`.
    pub fn wait_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        let mut guard = self.lock_child();
        let child = guard.as_mut().expect("the server was started");
        let status = wait_exit(child, timeout);
        if status.is_some() {
            *guard = None;
        }
        status
    }

    /// Starts the server again on the same data folder (killing the current run, if any) and
    /// waits until it is ready. The port may change.
    pub fn restart(&mut self) {
        self.sigkill();
        self.launch();
    }

    fn launch(&mut self) {
        self.runs += 1;
        let stderr = File::create(self.stderr_path(self.runs)).expect("the log file can be made");
        let mut child =
            self.spec.command(&self.data_dir).stdout(Stdio::piped()).stderr(stderr).spawn().expect("forecourt starts");
        let first_line = read_first_line(&mut child, Arc::clone(&self.stdout));
        *self.lock_child() = Some(child);
        let line = match first_line.recv_timeout(START_TIMEOUT) {
            Ok(line) if !line.is_empty() => line,
            outcome => {
                self.sigkill();
                panic!("forecourt printed no address ({outcome:?}); its stderr follows");
            }
        };
        let url = line.trim_end().strip_prefix("forecourt listening on ").unwrap_or_default();
        let (scheme, address) = url.split_once("://").unwrap_or_default();
        // Every address of the machine includes loopback: a server on 0.0.0.0 is reached there.
        let port = address.strip_prefix("127.0.0.1:").or_else(|| address.strip_prefix("0.0.0.0:"));
        let port = port
            .and_then(|port| port.parse::<u16>().ok())
            .filter(|_| matches!(scheme, "http" | "https"))
            .unwrap_or_else(|| panic!("unexpected first stdout line {line:?}"));
        self.client = Client::with_ca(format!("{scheme}://127.0.0.1:{port}"), self.spec.ca.as_deref());
        self.wait_ready();
    }

    /// Polls GET /health until it answers 200. Until then, an answer must be 503 "starting".
    fn wait_ready(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.lock_child().as_mut().and_then(|child| child.try_wait().ok().flatten()) {
                panic!("forecourt exited with {status} before it was ready; its stderr follows");
            }
            match self.client.try_get("/health") {
                Ok(reply) if reply.status == 200 => {
                    assert_eq!(reply.json, serde_json::json!({"status": "ready", "ready": true}), "{reply:?}");
                    return;
                }
                Ok(reply) => assert!(
                    reply.status == 503 && reply.json == serde_json::json!({"status": "starting", "ready": false}),
                    "before it is ready /health must answer 503 starting, not {reply:?}"
                ),
                Err(_) => {}
            }
            assert!(Instant::now() < deadline, "forecourt was not ready within {START_TIMEOUT:?}");
            std::thread::sleep(POLL);
        }
    }

    fn stderr_path(&self, run: usize) -> PathBuf {
        self.logs.path().join(format!("stderr-{run}.log"))
    }

    fn lock_child(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.sigkill();
        if std::thread::panicking() {
            let logs = self.logs();
            let lines: Vec<&str> = logs.lines().collect();
            let tail = &lines[lines.len().saturating_sub(400)..];
            eprintln!("===== forecourt stderr (last {} lines) =====\n{}", tail.len(), tail.join("\n"));
        }
    }
}

/// Reads the child's first stdout line on a thread (sent on the channel; empty if stdout
/// closed first), then keeps appending the rest to `all` so the pipe never fills.
fn read_first_line(child: &mut Child, all: Arc<Mutex<String>>) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("stdout is piped");
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        all.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push_str(&line);
        let _ = sender.send(line);
        let mut chunk = [0u8; 4096];
        while let Ok(read) = reader.read(&mut chunk) {
            if read == 0 {
                break;
            }
            all.lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push_str(&String::from_utf8_lossy(&chunk[..read]));
        }
    });
    receiver
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("the child can be waited on") {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
