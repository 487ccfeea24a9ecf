//! axum routes and thin handlers. Every error leaves through [`error_response`]: OpenAI-shaped
//! JSON with the status from `api::GatewayError::status`.

mod handlers;
mod metrics;
pub mod server;

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
    /// gateway key → tenant (id and per-key settings). Empty: no authentication, one tenant.
    pub keys: Arc<HashMap<String, Tenant>>,
    pub max_body: usize,
    pub request_timeout: Duration,
    pub started: Instant,
    pub slots: Arc<Semaphore>,
}

/// The tenant id for a gateway key: a hash prefix, so the key itself never reaches logs,
/// metrics or cache snapshots.
pub fn tenant_of(key: &str) -> String {
    format!("t-{}", &hex::encode(Sha256::digest(key.as_bytes()))[..12])
}

pub fn router(state: AppState) -> axum::Router {
    let limit = state.max_body;
    axum::Router::new()
        .route("/v1/chat/completions", post(handlers::chat))
        .route("/v1/models", get(handlers::models))
        .route("/v1/embeddings", post(handlers::embeddings))
        .route("/health", get(handlers::health))
        .route("/metrics", get(metrics::render))
        .fallback(handlers::not_found)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
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
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_server_error() {
        tracing::warn!(request_id, status = status.as_u16(), error = %err, "request failed");
    } else {
        tracing::debug!(request_id, status = status.as_u16(), error = %err, "request refused");
    }
    let mut resp = (status, axum::Json(err.body())).into_response();
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

/// Resolves the caller's tenant from `Authorization: Bearer`, or refuses.
pub fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Tenant, GatewayError> {
    if state.keys.is_empty() {
        return Ok(Tenant { id: "default".into(), premium_share: None });
    }
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .ok_or_else(|| GatewayError::Unauthorized("missing gateway key: send `Authorization: Bearer <key>`".into()))?;
    state.keys.get(token).cloned().ok_or_else(|| GatewayError::Unauthorized("invalid gateway key".into()))
}
