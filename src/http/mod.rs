//! axum routes and thin handlers. Every error leaves through [`error_response`]: OpenAI-shaped
//! JSON with the status from `api::GatewayError::status`.

mod admin;
mod handlers;
mod metrics;
mod passthrough;
pub mod responses;
pub mod server;
mod spend;
pub mod stats;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::api::GatewayError;
use crate::pipeline::{Gateway, Tenant};

#[derive(Clone)]
pub struct AppState {
    pub gateway: Arc<Gateway>,
    /// gateway key → tenant (id and per-key settings). Empty (and no key file): no
    /// authentication, one tenant.
    pub keys: Arc<HashMap<String, Tenant>>,
    /// `server.keys_file`: keys by hash, with limits and budgets; reloaded while serving.
    pub key_store: Option<Arc<crate::keys::KeyStore>>,
    pub limits: Arc<crate::limits::Limits>,
    /// Usage totals and the request log.
    pub ledger: Arc<crate::reqlog::Ledger>,
    /// The operator's key for `/admin/*` and `/dashboard` (see `server.admin_key`).
    pub admin_key: Option<String>,
    pub max_body: usize,
    pub request_timeout: Duration,
    pub started: Instant,
    pub slots: Arc<Semaphore>,
    /// Responses API answers kept for `previous_response_id` (see `responses`).
    pub responses: Arc<responses::ResponseStore>,
    /// `[passthrough] provider`: where OpenAI's other stateless endpoints go (see `passthrough`).
    pub passthrough: Option<Arc<crate::providers::Upstream>>,
    /// Set at SIGTERM: `/health` answers 503 while the replica still serves
    /// (`server.shutdown_delay`), so that traffic is moved away before accepting stops.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
}

pub use passthrough::upstream as passthrough_upstream;

/// The tenant id for a gateway key: a hash prefix, so the key itself never reaches logs,
/// metrics or cache snapshots.
pub fn tenant_of(key: &str) -> String {
    format!("t-{}", &hex::encode(Sha256::digest(key.as_bytes()))[..12])
}

pub fn router(state: AppState) -> axum::Router {
    let limit = state.max_body;
    let mut routes = axum::Router::new();
    if state.passthrough.is_some() {
        for path in passthrough::PATHS {
            routes = routes.route(path, post(passthrough::forward));
        }
    }
    routes
        .route("/v1/chat/completions", post(handlers::chat))
        .route("/v1/messages", post(handlers::messages))
        .route("/v1/messages/count_tokens", post(handlers::count_tokens))
        .route("/v1/responses", post(responses::create))
        .route("/v1/responses/{id}", get(responses::retrieve).delete(responses::delete))
        .route("/v1/responses/{id}/input_items", get(responses::input_items))
        .route("/v1/models", get(handlers::models))
        .route("/v1/models/{*id}", get(handlers::model))
        .route("/v1/embeddings", post(handlers::embeddings))
        .route("/v1/cache/invalidate", post(handlers::invalidate))
        .route("/health", get(handlers::health))
        .route("/metrics", get(metrics::render))
        .route("/admin/usage", get(admin::usage))
        .route("/admin/requests", get(admin::requests))
        .route("/admin/stats", get(stats::stats))
        .route("/dashboard", get(stats::dashboard))
        // after every route: it applies to the routes registered before it
        .method_not_allowed_fallback(handlers::wrong_method)
        .fallback(handlers::not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), count_request))
        .with_state(state)
}

/// Counts every request by route and status, and times it until its response head.
async fn count_request(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // the template (an `Arc<str>`: cloned, not copied), never the path with its ids
    let route = req.extensions().get::<axum::extract::MatchedPath>().cloned();
    let started = Instant::now();
    let resp = next.run(req).await;
    let route = route.as_ref().map_or("unmatched", |p| p.as_str());
    state.gateway.metrics.http.observe(route, resp.status().as_u16(), started.elapsed().as_secs_f64());
    resp
}

/// The request id: the client's `x-request-id` if it sent a sane one, else a new one.
pub fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| format!("req_{}", uuid::Uuid::new_v4().simple()))
}

pub fn error_response(err: &GatewayError, request_id: &str) -> Response {
    shaped_error_response(err, request_id, serde_json::to_value(err.body()).unwrap_or_default())
}

/// The error as Anthropic's Messages API shapes it (for `/v1/messages`), same status and headers.
pub fn anthropic_error_response(err: &GatewayError, request_id: &str) -> Response {
    shaped_error_response(err, request_id, err.anthropic_body())
}

fn shaped_error_response(err: &GatewayError, request_id: &str, body: serde_json::Value) -> Response {
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_server_error() {
        tracing::warn!(request_id, status = status.as_u16(), error = %err, "request failed");
    } else {
        tracing::debug!(request_id, status = status.as_u16(), error = %err, "request refused");
    }
    let mut resp = (status, axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    if let Some(secs) = err.retry_after() {
        resp.headers_mut().insert(axum::http::header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if let GatewayError::Upstream { provider, .. } = err {
        if let Ok(v) = HeaderValue::from_str(provider) {
            resp.headers_mut().insert("x-switchyard-provider", v);
        }
    }
    resp
}

/// Resolves the caller's tenant from `Authorization: Bearer`, or from `x-api-key` (how
/// Anthropic's SDKs send a key), or refuses.
pub fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Tenant, GatewayError> {
    if state.keys.is_empty() && state.key_store.is_none() {
        return Ok(Tenant { id: "default".into(), premium_share: None, policy: None });
    }
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .ok_or_else(|| {
            GatewayError::Unauthorized(
                "missing gateway key: send `Authorization: Bearer <key>` or `x-api-key: <key>`".into(),
            )
        })?;
    if let Some(t) = state.keys.get(token) {
        return Ok(t.clone());
    }
    let policy = state.key_store.as_ref().and_then(|s| s.lookup(token));
    policy
        .map(|p| Tenant { id: p.name.clone(), premium_share: p.premium_share, policy: Some(p) })
        .ok_or_else(|| GatewayError::Unauthorized("invalid gateway key".into()))
}

/// Lets the operator in, or refuses: `/admin/*` and `/dashboard` need `server.admin_key` (as
/// `Authorization: Bearer`, or as the password of HTTP Basic auth so a browser can open the
/// dashboard). With no admin key they are open only when the gateway has no keys at all, i.e. a
/// single-tenant deployment where every caller could read everything anyway.
pub fn authenticate_admin(state: &AppState, headers: &HeaderMap) -> Result<(), GatewayError> {
    let Some(admin) = state.admin_key.as_deref() else {
        return if state.keys.is_empty() && state.key_store.is_none() {
            Ok(())
        } else {
            Err(GatewayError::Unauthorized("admin endpoints need server.admin_key to be configured".into()))
        };
    };
    let value = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    let presented = if let Some(t) = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")) {
        Some(t.trim().to_string())
    } else if let Some(b) = value.strip_prefix("Basic ").or_else(|| value.strip_prefix("basic ")) {
        basic_password(b.trim())
    } else {
        None
    };
    match presented {
        Some(p) if constant_time_eq(p.as_bytes(), admin.as_bytes()) => Ok(()),
        Some(_) => Err(GatewayError::Unauthorized("invalid admin key".into())),
        None => Err(GatewayError::Unauthorized("missing admin key: send `Authorization: Bearer <admin key>`".into())),
    }
}

/// The password of an HTTP Basic credential (`base64(user:password)`); the user is ignored.
fn basic_password(b64: &str) -> Option<String> {
    let bytes = base64_decode(b64)?;
    let s = String::from_utf8(bytes).ok()?;
    s.split_once(':').map(|(_, p)| p.to_string())
}

/// Standard base64 with padding (embeddings as `encoding_format: "base64"`).
pub(crate) fn base64_encode(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if c.len() > 1 { T[(n >> 6) as usize & 63] as char } else { '=' });
        out.push(if c.len() > 2 { T[n as usize & 63] as char } else { '=' });
    }
    out
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some((c - b'A') as u32),
            b'a'..=b'z' => Some((c - b'a' + 26) as u32),
            b'0'..=b'9' => Some((c - b'0' + 52) as u32),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in s.as_bytes() {
        acc = (acc << 6) | val(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Compares secrets without an early exit, so response timing does not reveal a prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_password_is_decoded() {
        // "admin:s3cret" and ":s3cret"
        assert_eq!(basic_password("YWRtaW46czNjcmV0").as_deref(), Some("s3cret"));
        assert_eq!(basic_password("OnMzY3JldA==").as_deref(), Some("s3cret"));
        assert_eq!(basic_password("not base64!"), None);
        assert_eq!(basic_password("bm9jb2xvbg=="), None); // "nocolon"
    }

    #[test]
    fn secrets_compare_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
