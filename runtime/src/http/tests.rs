//! The middleware stack in-process: the very layers of [`with_stack`] and the permission
//! checks of [`guarded`], around small routes of the tests' own (the API's handlers need
//! loaded bundles and are tested end to end, against the real binary).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode, header};
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::{Notify, Semaphore};
use tower::ServiceExt;
use uuid::Uuid;

use super::*;
use crate::auth::{Authenticator, Role, TokenFile};
use crate::store::{Store, StoreConfig};

/// The stack over four routes: `/open` (open), `/v1/thing` (needs `Predict`), `/v1/held`
/// (open; answers when the test releases it, after saying it started) and `/v1/forever`
/// (never answers); with three tokens.
struct App {
    service: NormalizePath<Router>,
    kiosk: String,
    /// A kiosk's token limited to one request a second.
    slow_kiosk: String,
    /// A metrics scraper's token: no predictions.
    scraper: String,
    entered: Arc<Notify>,
    release: Arc<Semaphore>,
    _store: Store,
    _dir: TempDir,
}

fn app(server: ServerConfig) -> App {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&dir.path().join("data"), &StoreConfig::default()).unwrap();
    let tokens = TokenFile::new(dir.path().join("tokens.toml"));
    let one = std::num::NonZeroU32::new(1);
    let token = |name, role, rate| bearer(&tokens.add(name, role, rate, rate).unwrap().1.token);
    let (kiosk, slow_kiosk, scraper) =
        (token("kiosk", Role::Kiosk, None), token("slow", Role::Kiosk, one), token("scraper", Role::Metrics, None));
    let auth = AuthLayerState {
        authenticator: Arc::new(Authenticator::open(tokens, false).unwrap()),
        audit: DenialAudit::new(store.clone(), 100),
    };
    let (entered, release) = (Arc::new(Notify::new()), Arc::new(Semaphore::new(0)));
    let held = {
        let (entered, release) = (Arc::clone(&entered), Arc::clone(&release));
        move || async move {
            entered.notify_one();
            release.acquire().await.unwrap().forget();
            "done"
        }
    };
    let routes: Vec<(&'static str, Permission, MethodRouter)> = vec![
        ("/open", Permission::Open, get(|| async { "open" })),
        ("/v1/thing", Permission::Predict, get(|| async { "thing" })),
        ("/v1/held", Permission::Open, get(held)),
        ("/v1/forever", Permission::Open, get(std::future::pending::<()>)),
    ];
    let service = with_stack(guarded(routes, &auth.audit), &server, auth);
    App { service, kiosk, slow_kiosk, scraper, entered, release, _store: store, _dir: dir }
}

impl App {
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response<Body> {
        let mut request = Request::get(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.service.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap()
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn json(response: Response<Body>) -> Value {
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn header<'a>(response: &'a Response<Body>, name: &str) -> Option<&'a str> {
    response.headers().get(name).map(|value| value.to_str().unwrap())
}

/// The API's error body: its code, and the request id it names, which must be the one in
/// the response's header.
async fn refusal(response: Response<Body>) -> (StatusCode, String) {
    let status = response.status();
    let id = header(&response, REQUEST_ID_HEADER).unwrap().to_owned();
    let body = json(response).await;
    assert_eq!(body["request_id"], id.as_str(), "{body}");
    (status, body["error"]["code"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn every_answer_carries_a_fresh_request_id_and_a_valid_client_id_comes_back() {
    let app = app(ServerConfig::default());
    let first = app.get("/open", &[(REQUEST_ID_HEADER, "kiosk-7:42")]).await;
    assert_eq!(first.status(), StatusCode::OK);
    let id: Uuid = header(&first, REQUEST_ID_HEADER).unwrap().parse().unwrap();
    assert_eq!(id.get_version_num(), 7);
    assert_eq!(header(&first, CLIENT_REQUEST_ID_HEADER), Some("kiosk-7:42"));

    let long = "x".repeat(129);
    for unusable in ["has space", "", long.as_str()] {
        let answer = app.get("/open", &[(REQUEST_ID_HEADER, unusable)]).await;
        assert_eq!(header(&answer, CLIENT_REQUEST_ID_HEADER), None, "{unusable:?} is not kept");
        assert_ne!(header(&answer, REQUEST_ID_HEADER), Some(id.to_string().as_str()));
    }

    // Refusals too, in the API's error shape.
    assert_eq!(refusal(app.get("/v1/nowhere", &[]).await).await, (StatusCode::NOT_FOUND, "not_found".to_owned()));
    let post = Request::post("/open").body(Body::empty()).unwrap();
    let not_allowed = app.service.clone().oneshot(post).await.unwrap();
    assert_eq!(refusal(not_allowed).await, (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed".to_owned()));
}

#[tokio::test]
async fn a_trailing_slash_reaches_the_same_route() {
    let app = app(ServerConfig::default());
    assert_eq!(app.get("/open/", &[]).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_route_refuses_callers_without_its_permission_and_open_routes_take_anyone() {
    let app = app(ServerConfig::default());
    assert_eq!(app.get("/open", &[]).await.status(), StatusCode::OK);
    let anonymous = app.get("/v1/thing", &[]).await;
    assert_eq!(header(&anonymous, "www-authenticate"), Some("Bearer realm=\"forecourt\""));
    assert_eq!(refusal(anonymous).await, (StatusCode::UNAUTHORIZED, "unauthorized".to_owned()));
    // The kiosk's token with its secret's last character changed, and no token at all.
    let forged = format!("{}{}", &app.kiosk[..app.kiosk.len() - 1], if app.kiosk.ends_with('A') { 'B' } else { 'A' });
    for wrong in [forged.as_str(), "Bearer fct_nonsense", "Basic a2lvc2s6"] {
        let answer = app.get("/v1/thing", &[("authorization", wrong)]).await;
        assert_eq!(refusal(answer).await, (StatusCode::UNAUTHORIZED, "unauthorized".to_owned()), "{wrong}");
    }
    let scraper = app.get("/v1/thing", &[("authorization", &app.scraper)]).await;
    assert_eq!(refusal(scraper).await, (StatusCode::FORBIDDEN, "forbidden".to_owned()));
    assert_eq!(app.get("/v1/thing", &[("authorization", &app.kiosk)]).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_token_over_its_rate_is_refused_with_retry_after() {
    let app = app(ServerConfig::default());
    let authorization = app.slow_kiosk.as_str();
    assert_eq!(app.get("/v1/thing", &[("authorization", authorization)]).await.status(), StatusCode::OK);
    let limited = app.get("/v1/thing", &[("authorization", authorization)]).await;
    // Another token's rate is its own.
    assert_eq!(app.get("/v1/thing", &[("authorization", &app.kiosk)]).await.status(), StatusCode::OK);
    assert_eq!(header(&limited, "retry-after"), Some("1"));
    assert_eq!(refusal(limited).await, (StatusCode::TOO_MANY_REQUESTS, "rate_limited".to_owned()));
}

#[tokio::test]
async fn beyond_the_concurrency_limit_a_request_is_refused_at_once_and_the_slot_comes_back() {
    let app = app(ServerConfig { max_concurrent_requests: 1, ..ServerConfig::default() });
    let held = tokio::spawn(app.service.clone().oneshot(Request::get("/v1/held").body(Body::empty()).unwrap()));
    app.entered.notified().await;

    let refused = app.get("/open", &[]).await;
    assert_eq!(header(&refused, header::RETRY_AFTER.as_str()), Some("1"));
    assert_eq!(refusal(refused).await, (StatusCode::TOO_MANY_REQUESTS, "overloaded".to_owned()));

    app.release.add_permits(1);
    assert_eq!(held.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(app.get("/open", &[]).await.status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn a_request_over_its_time_is_answered_with_the_timeout_code_and_gives_its_slot_back() {
    let app = app(ServerConfig { request_timeout_secs: 2, max_concurrent_requests: 1, ..ServerConfig::default() });
    let started = tokio::time::Instant::now();
    let late = app.get("/v1/forever", &[]).await;
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert_eq!(refusal(late).await, (StatusCode::SERVICE_UNAVAILABLE, "timeout".to_owned()));
    assert_eq!(app.get("/open", &[]).await.status(), StatusCode::OK);
}
