//! Who may do what, against the real binary: every route refused and allowed per role over
//! HTTP and HTTPS, 401/403 bodies, metrics and audit records of denials, tokens made and
//! revoked with the CLI while the appliance runs, the refusal to serve an open network
//! without a token, per-token rate limits, load shedding and timeouts.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use forecourt_testkit::{
    Client, Reply, Server, ServerBuilder, TestCertificates, add_token, all_bundles, car, temp_dir, token_command,
};
use serde_json::{Value, json};

/// One token of each role, made with the CLI before the server starts.
struct Tokens {
    admin: String,
    kiosk: String,
    viewer: String,
    metrics: String,
}

impl Tokens {
    fn add(data_dir: &Path) -> Self {
        Self {
            admin: add_token(data_dir, "admin", "ops", &[]),
            kiosk: add_token(data_dir, "kiosk", "front-desk", &[]),
            viewer: add_token(data_dir, "viewer", "manager", &[]),
            metrics: add_token(data_dir, "metrics", "scraper", &[]),
        }
    }

    /// (caller's name, its token) for every kind of caller, anonymous first.
    fn callers(&self) -> [(&'static str, Option<&str>); 5] {
        [
            ("anonymous", None),
            ("admin", Some(&self.admin)),
            ("kiosk", Some(&self.kiosk)),
            ("viewer", Some(&self.viewer)),
            ("metrics", Some(&self.metrics)),
        ]
    }
}

fn v2_features() -> Value {
    json!({"inputs": [
        {"name": "features", "shape": [1, 17], "datatype": "FP32",
         "data": [20000, 4, 4, 1, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0]},
        {"name": "years_ahead", "shape": [1, 1], "datatype": "FP32", "data": [0]}]})
}

/// Every route with the roles that may use it, written out here independently of the
/// server's own table, so that a change there fails this test.
fn route_table(prediction_id: &str) -> Vec<(&'static str, String, Option<Value>, &'static [&'static str])> {
    const OPEN: &[&str] = &["anonymous", "admin", "kiosk", "viewer", "metrics"];
    const PREDICT: &[&str] = &["admin", "kiosk"];
    const DESCRIBE: &[&str] = &["admin", "kiosk", "viewer"];
    const INSPECT: &[&str] = &["admin", "viewer"];
    const METRICS: &[&str] = &["admin", "metrics"];
    vec![
        ("GET", "/health".into(), None, OPEN),
        ("GET", "/v2/health/live".into(), None, OPEN),
        ("GET", "/v2/health/ready".into(), None, OPEN),
        ("GET", "/health/detailed".into(), None, INSPECT),
        ("GET", "/metrics".into(), None, METRICS),
        ("GET", "/openapi.json".into(), None, DESCRIBE),
        ("GET", "/docs".into(), None, OPEN),
        ("GET", "/docs/swagger-ui.css".into(), None, OPEN),
        ("GET", "/docs/swagger-ui-bundle.js".into(), None, OPEN),
        ("GET", "/docs/swagger-initializer.js".into(), None, OPEN),
        ("POST", "/v1/predict/car-price".into(), Some(car()), PREDICT),
        ("POST", "/v1/predict/car-price/batch".into(), Some(json!({"instances": [car()]})), PREDICT),
        ("GET", "/v1/bundles".into(), None, DESCRIBE),
        ("GET", "/v1/bundles/car-price".into(), None, DESCRIBE),
        // Made by the kiosk: the kiosk reads it back, as do viewers and admins.
        ("GET", format!("/v1/predictions/{prediction_id}"), None, DESCRIBE),
        ("GET", "/v1/audit?limit=5".into(), None, INSPECT),
        ("GET", "/v1/audit/verify".into(), None, INSPECT),
        ("GET", "/v2".into(), None, DESCRIBE),
        ("GET", "/v2/models/car-price".into(), None, DESCRIBE),
        ("GET", "/v2/models/car-price/ready".into(), None, DESCRIBE),
        ("GET", "/v2/models/car-price/versions/1.0.0".into(), None, DESCRIBE),
        ("GET", "/v2/models/car-price/versions/1.0.0/ready".into(), None, DESCRIBE),
        ("POST", "/v2/models/car-price/infer".into(), Some(v2_features()), PREDICT),
        ("POST", "/v2/models/car-price/versions/1.0.0/infer".into(), Some(v2_features()), PREDICT),
    ]
}

fn send(client: &Client, method: &str, path: &str, body: Option<&Value>) -> Reply {
    match body {
        Some(body) => client.post_json(path, body),
        None => client.request(method, path, None, None),
    }
}

/// Every route, every caller: allowed ones answer 200, the others 401 (no token) or 403 (a
/// token of another role) with the error body of their API.
fn check_every_route(server: &Server, tokens: &Tokens) {
    let kiosk = server.client().as_token(Some(&tokens.kiosk));
    let made = kiosk.post_json("/v1/predict/car-price", &car());
    assert_eq!(made.status, 200, "{made:?}");
    let prediction_id = made.json["prediction_id"].as_str().unwrap().to_owned();

    let mut checked = 0;
    for (method, path, body, allowed) in route_table(&prediction_id) {
        for (caller, token) in tokens.callers() {
            let reply = send(&server.client().as_token(token), method, &path, body.as_ref());
            let what = format!("{method} {path} as {caller}");
            if allowed.contains(&caller) {
                assert_eq!(reply.status, 200, "{what}: {reply:?}");
            } else {
                let expected = if token.is_none() { 401 } else { 403 };
                assert_eq!(reply.status, expected, "{what}: {reply:?}");
                assert!(reply.header("x-request-id").is_some(), "{what}: refusals carry the request id");
                if path.starts_with("/v2") {
                    assert!(reply.json["error"].as_str().is_some_and(|m| !m.is_empty()), "{what}: v2 shape: {reply:?}");
                } else {
                    let code = if expected == 401 { "unauthorized" } else { "forbidden" };
                    assert_eq!(reply.json["error"]["code"], code, "{what}: {reply:?}");
                    assert_eq!(reply.json["request_id"].as_str(), reply.header("x-request-id"), "{what}");
                }
                if expected == 401 {
                    assert_eq!(reply.header("www-authenticate"), Some("Bearer realm=\"forecourt\""), "{what}");
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 24 * 5);
}

#[test]
fn every_route_is_refused_and_allowed_by_role_over_http_and_https() {
    let certificates = TestCertificates::generate();
    for https in [false, true] {
        let data = temp_dir();
        let tokens = Tokens::add(data.path());
        let mut builder = Server::builder(&all_bundles()).data_dir(data.path());
        if https {
            builder = builder.tls(&certificates);
        }
        let server = builder.start();
        assert_eq!(server.url("").starts_with("https://"), https, "{}", server.url(""));
        check_every_route(&server, &tokens);
    }
}

#[test]
fn refusals_are_counted_and_audited_with_the_token_id_never_the_token() {
    let data = temp_dir();
    let tokens = Tokens::add(data.path());
    let server = Server::builder(&all_bundles()).data_dir(data.path()).start();
    let admin = server.client().as_token(Some(&tokens.admin));

    let denied = |metrics: &str, reason: &str| -> f64 {
        let prefix = format!("forecourt_http_denied_total{{reason=\"{reason}\"}} ");
        metrics.lines().find_map(|line| line.strip_prefix(&prefix)).and_then(|v| v.parse().ok()).unwrap_or(-1.0)
    };
    let before = admin.get("/metrics").text;
    for reason in ["missing_token", "malformed_token", "unknown_token", "wrong_secret", "forbidden", "revoked_token"] {
        assert_eq!(denied(&before, reason), 0.0, "every reason is exported at zero from the start: {reason}");
    }

    let anonymous = server.client().as_token(None);
    assert_eq!(anonymous.get("/v1/audit").status, 401);
    assert_eq!(server.client().as_token(Some("not-a-token")).get("/v1/audit").status, 401);
    let kiosk_secret = &tokens.kiosk[21..];
    let wrong_secret = format!("{}{}", &tokens.kiosk[..21], &tokens.viewer[21..]);
    let wrong = server.client().as_token(Some(&wrong_secret)).get("/v1/audit");
    assert_eq!(wrong.status, 401);
    assert!(wrong.json["error"]["message"].as_str().unwrap().contains("secret is wrong"), "{wrong:?}");
    let forbidden = server.client().as_token(Some(&tokens.kiosk)).get("/v1/audit");
    assert_eq!(forbidden.status, 403);
    let message = forbidden.json["error"]["message"].as_str().unwrap();
    assert!(message.contains("kiosk") && message.contains("viewer, admin"), "{message}");

    let after = admin.get("/metrics").text;
    assert_eq!(denied(&after, "missing_token"), 1.0);
    assert_eq!(denied(&after, "malformed_token"), 1.0);
    assert_eq!(denied(&after, "wrong_secret"), 1.0);
    assert_eq!(denied(&after, "forbidden"), 1.0);

    // The audit trail has the four, with the kiosk's id and never a secret.
    let kiosk_id = &tokens.kiosk[4..20];
    let deadline = Instant::now() + Duration::from_secs(10);
    let denials = loop {
        let page = admin.get("/v1/audit?limit=1000");
        let denials: Vec<Value> =
            page.json["records"].as_array().unwrap().iter().filter(|r| r["kind"] == "access_denied").cloned().collect();
        if denials.len() >= 4 || Instant::now() > deadline {
            assert!(!page.text.contains(kiosk_secret), "a token's secret reached the audit trail");
            break denials;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(denials.len(), 4, "{denials:?}");
    let reasons: Vec<&str> = denials.iter().map(|d| d["details"]["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, ["missing_token", "malformed_token", "wrong_secret", "forbidden"]);
    assert_eq!(denials[2]["details"]["token_id"], kiosk_id);
    assert_eq!(denials[3]["details"]["token_id"], kiosk_id);
    assert_eq!(denials[3]["details"]["status"], 403);
    assert_eq!(denials[3]["details"]["path"], "/v1/audit");
    assert_eq!(denials[3]["details"]["remote"], "127.0.0.1");
    assert_eq!(admin.get("/v1/audit/verify").json["ok"], true);
}

#[test]
fn a_kiosk_reads_back_only_its_own_predictions() {
    let data = temp_dir();
    let tokens = Tokens::add(data.path());
    let other_kiosk = add_token(data.path(), "kiosk", "back-office", &[]);
    let server = Server::builder(&all_bundles()).data_dir(data.path()).start();
    let kiosk = server.client().as_token(Some(&tokens.kiosk));
    let other = server.client().as_token(Some(&other_kiosk));

    let mine = kiosk.post_json("/v1/predict/car-price", &car());
    let id = mine.json["prediction_id"].as_str().unwrap();
    let stored = kiosk.get(&format!("/v1/predictions/{id}"));
    assert_eq!(stored.status, 200, "{stored:?}");
    assert_eq!(stored.json["token_id"], &tokens.kiosk[4..20], "the record names the token that asked");
    let theirs = other.get(&format!("/v1/predictions/{id}"));
    assert_eq!((theirs.status, theirs.json["error"]["code"].as_str()), (404, Some("not_found")), "{theirs:?}");
    let viewer = server.client().as_token(Some(&tokens.viewer)).get(&format!("/v1/predictions/{id}"));
    assert_eq!(viewer.status, 200);

    // A batch and a v2 inference are kept with their token too.
    let batch = other.post_json("/v1/predict/car-price/batch", &json!({"instances": [car(), car()]}));
    let batch_id = batch.json["predictions"][1]["prediction_id"].as_str().unwrap();
    assert_eq!(other.get(&format!("/v1/predictions/{batch_id}")).status, 200);
    assert_eq!(kiosk.get(&format!("/v1/predictions/{batch_id}")).status, 404);
    let v2 = kiosk.post_json("/v2/models/car-price/infer", &v2_features());
    let v2_id = v2.header("x-request-id").unwrap().to_owned();
    assert_eq!(kiosk.get(&format!("/v1/predictions/{v2_id}")).status, 200);
    assert_eq!(other.get(&format!("/v1/predictions/{v2_id}")).status, 404);
}

#[test]
fn tokens_made_and_revoked_with_the_cli_take_effect_while_serving() {
    let data = temp_dir();
    let admin = add_token(data.path(), "admin", "ops", &[]);
    let server = Server::builder(&all_bundles()).data_dir(data.path()).start();

    // Added while running: accepted once the appliance has read the file.
    let kiosk = add_token(data.path(), "kiosk", "front-desk", &["--rate", "100", "--burst", "200"]);
    let client = server.client().as_token(Some(&kiosk));
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.post_json("/v1/predict/car-price", &car()).status != 200 {
        assert!(Instant::now() < deadline, "the new token was not accepted");
        std::thread::sleep(Duration::from_millis(20));
    }

    let listed = token_command(data.path(), &["list", "--json"]);
    let listed: Value = serde_json::from_slice(&listed.stdout).expect("token list --json prints JSON");
    let names: Vec<&str> = listed.as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["ops", "front-desk"]);
    assert_eq!(listed[1]["role"], "kiosk");
    assert_eq!((listed[1]["rate_per_sec"].as_u64(), listed[1]["burst"].as_u64()), (Some(100), Some(200)));
    let table = String::from_utf8(token_command(data.path(), &["list"]).stdout).unwrap();
    assert!(table.contains("front-desk") && table.contains("kiosk"), "{table}");
    let file = std::fs::read_to_string(data.path().join("tokens.json")).unwrap();
    for token in [&admin, &kiosk] {
        assert!(!table.contains(&token[21..]) && !file.contains(&token[21..]), "a secret was kept or shown");
    }

    let duplicate = token_command(data.path(), &["add", "--role", "viewer", "--name", "front-desk"]);
    assert!(!duplicate.status.success());
    assert!(String::from_utf8_lossy(&duplicate.stderr).contains("exists already"));

    // Revoked while running: refused within the reload interval, with no restart.
    let revoked = token_command(data.path(), &["revoke", "front-desk"]);
    assert!(revoked.status.success(), "{}", String::from_utf8_lossy(&revoked.stderr));
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let reply = client.post_json("/v1/predict/car-price", &car());
        if reply.status != 200 || Instant::now() > deadline {
            break reply;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(refused.status, 401, "{refused:?}");
    assert!(refused.json["error"]["message"].as_str().unwrap().contains("revoked"), "{refused:?}");

    let audit = server.client().as_token(Some(&admin)).get("/v1/audit?limit=1000");
    let changes: Vec<&Value> =
        audit.json["records"].as_array().unwrap().iter().filter(|r| r["kind"] == "tokens_changed").collect();
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert_eq!(changes[0]["details"]["added"][0]["name"], "front-desk");
    assert_eq!(changes[1]["details"]["revoked"][0]["name"], "front-desk");
}

fn open_network(bundles: &Path, data: &Path) -> ServerBuilder {
    Server::builder(bundles).data_dir(data).env("FORECOURT_SERVER__LISTEN", "0.0.0.0:0")
}

#[test]
fn an_appliance_on_an_open_network_refuses_to_start_without_a_token() {
    let bundles = all_bundles();
    let data = temp_dir();
    let refused = open_network(&bundles, data.path()).run_to_exit(Duration::from_secs(60));
    assert!(!refused.status.success());
    assert!(
        refused.stderr.contains("no API token") && refused.stderr.contains("forecourt token add --role admin"),
        "the refusal says how to add a token:\n{}",
        refused.stderr
    );

    // Explicitly anonymous: it serves everything without a token.
    let anonymous = open_network(&bundles, data.path()).env("FORECOURT_AUTH__ALLOW_ANONYMOUS", "true").start();
    assert_eq!(anonymous.get("/v1/audit").status, 200);
    drop(anonymous);

    // With a token it starts, and requires one.
    let admin = add_token(data.path(), "admin", "ops", &[]);
    let server = open_network(&bundles, data.path()).start();
    assert_eq!(server.get("/health").status, 200);
    assert_eq!(server.get("/v1/bundles").status, 401);
    assert_eq!(server.client().as_token(Some(&admin)).get("/v1/bundles").status, 200);
}

#[test]
fn a_token_over_its_rate_gets_429_with_retry_after_and_others_are_not_slowed() {
    let data = temp_dir();
    let limited = add_token(data.path(), "kiosk", "limited", &["--rate", "1", "--burst", "3"]);
    let free = add_token(data.path(), "kiosk", "free", &[]);
    let server = Server::builder(&all_bundles()).data_dir(data.path()).start();
    let limited = server.client().as_token(Some(&limited));
    let statuses: Vec<u16> = (0..5).map(|_| limited.post_json("/v1/predict/car-price", &car()).status).collect();
    assert_eq!(&statuses[..3], [200, 200, 200], "{statuses:?}");
    let refused = limited.post_json("/v1/predict/car-price", &car());
    assert_eq!((refused.status, refused.json["error"]["code"].as_str()), (429, Some("rate_limited")), "{refused:?}");
    assert_eq!(refused.header("retry-after"), Some("1"));
    let refused_v2 = limited.get("/v2/models/car-price");
    assert_eq!(refused_v2.status, 429, "{refused_v2:?}");
    assert!(
        refused_v2.json["error"].as_str().is_some_and(|message| message.contains("rate")),
        "v2 shape: {refused_v2:?}"
    );
    let free = server.client().as_token(Some(&free));
    for _ in 0..20 {
        assert_eq!(free.post_json("/v1/predict/car-price", &car()).status, 200);
    }
}

/// Sends a request's headers announcing a body it never finishes, holding a slot.
fn stalled_request(host_port: &str) -> TcpStream {
    let mut stream = TcpStream::connect(host_port).expect("connects");
    stream
        .write_all(
            b"POST /v1/predict/car-price HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"make\"",
        )
        .unwrap();
    stream
}

fn read_to_end_within(stream: &mut TcpStream, limit: Duration) -> String {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn past_the_concurrency_limit_requests_are_shed_and_slow_ones_time_out() {
    let server = Server::builder(&all_bundles())
        .env("FORECOURT_SERVER__MAX_CONCURRENT_REQUESTS", "1")
        .env("FORECOURT_SERVER__REQUEST_TIMEOUT_SECS", "2")
        .start();
    let started = Instant::now();
    let mut stalled = stalled_request(server.host_port());
    // The stalled request holds the only slot: another is refused at once.
    let deadline = Instant::now() + Duration::from_secs(5);
    let shed = loop {
        let reply = server.get("/v1/bundles");
        if reply.status == 429 || Instant::now() > deadline {
            break reply;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!((shed.status, shed.json["error"]["code"].as_str()), (429, Some("overloaded")), "{shed:?}");
    assert_eq!(shed.header("retry-after"), Some("1"));
    // The inference protocol's routes refuse in its own shape.
    let shed_v2 = server.get("/v2/models/car-price");
    assert_eq!(shed_v2.status, 429, "{shed_v2:?}");
    assert!(shed_v2.json["error"].as_str().is_some_and(|message| message.contains("retry")), "{shed_v2:?}");

    // The stalled one runs out of time and gives its slot back.
    let answer = read_to_end_within(&mut stalled, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("\"code\":\"timeout\""), "{answer}");
    assert!(started.elapsed() >= Duration::from_secs(2), "answered before the timeout");
    assert_eq!(server.get("/v1/bundles").status, 200);
    let metrics = server.get("/metrics").text;
    assert!(metrics.lines().any(|line| line.starts_with("forecourt_http_timeouts_total 1")), "{metrics}");
    assert!(!metrics.lines().any(|line| line == "forecourt_http_shed_total 0"), "sheds are counted");
}

#[test]
fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let server = Server::builder(&all_bundles()).env("FORECOURT_SERVER__HEADER_READ_TIMEOUT_SECS", "1").start();
    let mut stream = TcpStream::connect(server.host_port()).unwrap();
    stream.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n").unwrap();
    let started = Instant::now();
    let _ = read_to_end_within(&mut stream, Duration::from_secs(10));
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(5), "closed after {waited:?}");
    // A new client: the same timeout closed the server's client's idle keep-alive
    // connection (from the start-up check), and reusing it could meet the reset.
    assert_eq!(Client::new(server.client().url("")).get("/health").status, 200);
}
