//! Authentication, per-token rate limits and per-route authorization, as middleware over
//! the [`crate::auth`] registry.
//!
//! Authentication runs before routing and only records who is calling ([`Caller`]); each
//! route then declares the [`Permission`] it needs (`http::router`), and [`authorize`]
//! refuses callers without it: 401 with no valid token, 403 with a token whose role does not
//! grant it. Every denial is counted, logged and (rate-limited) written to the audit trail
//! with the token's id, never the token.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde_json::json;

use super::error::{ApiError, truncate};
use crate::auth::{Authenticator, Denial, Permission, Principal};
use crate::error_code::ErrorCode;
use crate::store::{AuditKind, Store};
use crate::telemetry::names;

/// The caller of the request being handled, set by [`authenticate`].
#[derive(Debug, Clone)]
pub struct Caller(pub Result<Principal, Denial>);

impl Caller {
    /// The principal, when authentication succeeded.
    pub fn principal(&self) -> Option<&Principal> {
        self.0.as_ref().ok()
    }

    /// The token's id, when the caller presented a valid one.
    pub fn token_id(&self) -> Option<&crate::auth::TokenId> {
        self.principal().and_then(Principal::token_id)
    }
}

/// What the authentication middleware needs.
#[derive(Debug, Clone)]
pub struct AuthLayerState {
    pub authenticator: Arc<Authenticator>,
    pub audit: DenialAudit,
}

/// Writes denials to the audit trail, at most so many a second.
#[derive(Clone)]
pub struct DenialAudit {
    store: Store,
    limiter: Arc<DefaultDirectRateLimiter>,
}

impl std::fmt::Debug for DenialAudit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DenialAudit").finish_non_exhaustive()
    }
}

impl DenialAudit {
    pub fn new(store: Store, per_second: u32) -> Self {
        let rate = std::num::NonZeroU32::new(per_second).unwrap_or(std::num::NonZeroU32::MIN);
        Self { store, limiter: Arc::new(RateLimiter::direct(Quota::per_second(rate))) }
    }

    /// Audits one denial (of any protocol), unless more came this second than allowed.
    pub fn record(&self, details: serde_json::Value) {
        if self.limiter.check().is_err() {
            metrics::counter!(names::AUTH_DENIALS_NOT_AUDITED).increment(1);
            return;
        }
        // The denial is answered at once; its audit record follows through the group commit. It is queued
        // here, before the spawn, so that denials reach the trail in the order they were decided.
        let audited = self.store.audit(AuditKind::AccessDenied, details);
        tokio::spawn(async move {
            if let Err(error) = audited.await {
                tracing::warn!(%error, "could not audit a denied request");
            }
        });
    }
}

/// Outer middleware: who is calling. Never refuses by itself (open routes take any caller).
pub async fn authenticate(State(state): State<AuthLayerState>, mut request: Request, next: Next) -> Response {
    let authorization = request.headers().get(header::AUTHORIZATION).map(HeaderValue::as_bytes);
    let caller = Caller(state.authenticator.authenticate(authorization));
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// Middleware after [`authenticate`]: a token over its rate gets 429 with `Retry-After`.
pub async fn rate_limit(request: Request, next: Next) -> Response {
    let limited = request.extensions().get::<Caller>().and_then(Caller::principal).map(Principal::check_rate);
    if let Some(Err(limited)) = limited {
        metrics::counter!(names::AUTH_DENIALS, "reason" => "rate_limited").increment(1);
        let seconds = limited.retry_after.as_secs_f64().ceil().max(1.0) as u64;
        let mut response = ApiError::new(
            ErrorCode::RateLimited,
            format!("this token's request rate is used up; retry in {seconds} s"),
        )
        .into_response_for(request.uri().path());
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        return response;
    }
    next.run(request).await
}

/// What one route's [`authorize`] needs: its permission, and where denials are audited.
#[derive(Debug, Clone)]
pub struct RouteGuard {
    pub permission: Permission,
    pub audit: DenialAudit,
}

/// Route middleware: the caller must hold the route's permission.
pub async fn authorize(State(guard): State<RouteGuard>, request: Request, next: Next) -> Response {
    let RouteGuard { permission, audit } = guard;
    if permission == Permission::Open {
        return next.run(request).await;
    }
    let caller = request.extensions().get::<Caller>().cloned().unwrap_or(Caller(Ok(Principal::Anonymous)));
    let refusal = match &caller.0 {
        Ok(principal) if principal.may(permission) => return next.run(request).await,
        Ok(Principal::Token(token)) => Refusal::Forbidden { token: token.id.to_string(), role: token.role.as_str() },
        Ok(_) => Refusal::Unauthenticated {
            reason: "missing_token",
            message: "this route needs a bearer token (Authorization: Bearer fct_...)".to_owned(),
            token: None,
        },
        Err(denial) => Refusal::Unauthenticated {
            reason: denial.reason(),
            message: format!("{denial}"),
            token: denial.token_id().map(ToString::to_string),
        },
    };
    let path = request.uri().path().to_owned();
    let remote = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip().to_string());
    let (status, reason, token) = match &refusal {
        Refusal::Forbidden { token, .. } => (StatusCode::FORBIDDEN, "forbidden", Some(token.clone())),
        Refusal::Unauthenticated { reason, token, .. } => (StatusCode::UNAUTHORIZED, *reason, token.clone()),
    };
    metrics::counter!(names::AUTH_DENIALS, "reason" => reason).increment(1);
    tracing::info!(status = status.as_u16(), reason, token, path, remote, "request denied");
    audit.record(json!({
        "status": status.as_u16(), "reason": reason, "token_id": token, "method": request.method().as_str(),
        "path": truncate(&path, 200), "remote": remote, "needs": permission,
    }));
    refusal.into_response(permission, &path)
}

enum Refusal {
    Unauthenticated { reason: &'static str, message: String, token: Option<String> },
    Forbidden { token: String, role: &'static str },
}

impl Refusal {
    fn into_response(self, permission: Permission, path: &str) -> Response {
        let roles: Vec<&str> = permission.roles().into_iter().map(|role| role.as_str()).collect();
        let error = match self {
            Self::Unauthenticated { message, .. } => ApiError::new(ErrorCode::Unauthorized, message),
            Self::Forbidden { token, role } => ApiError::new(
                ErrorCode::Forbidden,
                format!("token {token} has the role {role}; this route needs one of: {}", roles.join(", ")),
            ),
        };
        let unauthorized = error.code == ErrorCode::Unauthorized;
        let mut response = error.into_response_for(path);
        if unauthorized {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"forecourt\""));
        }
        response
    }
}
