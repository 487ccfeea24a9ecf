//! OpenAI's stateless endpoints beyond chat and embeddings (moderations, images, audio, legacy
//! completions) forwarded as they are to one OpenAI-compatible provider (`[passthrough]
//! provider`), so that an app pointing its whole OpenAI SDK at the gateway keeps working. The
//! body goes as the client sent it (JSON or multipart) and the answer comes back as the provider
//! wrote it (JSON, audio bytes, a stream), with the provider's key in place of the gateway key.
//!
//! Only stateless paths. Files, batches, fine-tunes, vector stores and assistants live in the
//! provider account that every tenant would share: forwarding them would let one tenant list and
//! read another's. And the gateway cannot price these calls (images by size, audio by the
//! second), so a key with a budget or an allowed-models list is refused rather than let through
//! unchecked; a key's `rpm` counts them.

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use super::handlers::{body_or_error, concurrency_slot, set};
use super::spend::Account;
use super::{authenticate, error_response, request_id, AppState};
use crate::api::GatewayError;
use crate::providers::Upstream;

/// The paths forwarded (POST only), as OpenAI serves them under `/v1`.
pub const PATHS: &[&str] = &[
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/images/variations",
    "/v1/audio/speech",
    "/v1/audio/transcriptions",
    "/v1/audio/translations",
    "/v1/completions",
];

/// An upstream error body is read up to this much (it is JSON a few hundred bytes long; a
/// misbehaving server must not make the gateway buffer more).
const MAX_ERROR_BODY: usize = 64 * 1024;

pub async fn forward(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let rid = request_id(&headers);
    let path = uri.path();
    let Some(up) = state.passthrough.clone() else {
        return error_response(&GatewayError::UnknownUrl { method: "POST".into(), path: path.into() }, &rid);
    };
    let tenant = match authenticate(&state, &headers) {
        Ok(t) => t,
        Err(e) => return error_response(&e, &rid),
    };
    if let Some(p) =
        tenant.policy.as_ref().filter(|p| p.models.is_some() || p.budget_day.is_some() || p.budget_month.is_some())
    {
        let e = GatewayError::Forbidden(format!(
            "key `{}` has a budget or an allowed-models list, which {path} cannot be checked against (the gateway does not price or name its calls)",
            p.name
        ));
        return error_response(&e, &rid);
    }
    let mut account = Account::new(&state, &rid);
    account.tenant(&tenant);
    let sent = async {
        let slot = concurrency_slot(&state)?;
        let bytes = body_or_error(body, state.max_body)?;
        // the model, for the request log, when the body is JSON that names one
        let model = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("model").and_then(|m| m.as_str()).map(str::to_string))
            .unwrap_or_else(|| "-".into());
        account.admit_model(&model, 0, None).await?;
        let mut rb = up.post(format!("{}{}", up.base_url, path.trim_start_matches("/v1"))).body(bytes);
        for name in [header::CONTENT_TYPE, header::ACCEPT] {
            if let Some(v) = headers.get(&name) {
                rb = rb.header(name, v.clone());
            }
        }
        if let Some(k) = &up.key {
            rb = rb.bearer_auth(k.expose());
        }
        let resp = tokio::time::timeout(up.first_byte_timeout, rb.timeout(up.total_timeout).send())
            .await
            .map_err(|_| {
                GatewayError::Timeout(format!("{} sent no answer within {:?}", up.name, up.first_byte_timeout))
            })?
            .map_err(|e| GatewayError::Upstream {
                status: 502,
                provider: up.name.clone(),
                message: up.scrub(&format!("{} did not answer: {e}", up.name)),
                retry_after: None,
            })?;
        Ok::<_, GatewayError>((resp, slot))
    };
    let (resp, slot) = match sent.await {
        Ok(r) => r,
        Err(e) => return account.failed(&e, error_response(&e, &rid)).await,
    };
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
    account.upstream(format!("{}:{}", up.name, path.trim_start_matches("/v1/")), 1);
    let mut out = if status.is_success() {
        // streamed through (speech audio, a completions stream); the request's slot is held
        // until its last byte
        let stream = resp.bytes_stream().map(move |chunk| {
            let _held = &slot;
            chunk
        });
        Response::new(Body::from_stream(stream))
    } else {
        // the provider's own error, with its key scrubbed from it
        let mut body = Vec::new();
        let mut chunks = resp.bytes_stream();
        while let Some(Ok(c)) = chunks.next().await {
            body.extend_from_slice(&c[..c.len().min(MAX_ERROR_BODY - body.len())]);
            if body.len() >= MAX_ERROR_BODY {
                break;
            }
        }
        Response::new(Body::from(up.scrub(&String::from_utf8_lossy(&body))))
    };
    *out.status_mut() = status;
    if let Some(ct) = content_type {
        out.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    set(out.headers_mut(), "x-request-id", &rid);
    set(out.headers_mut(), "x-switchyard-provider", &up.name);
    account.set_headers(out.headers_mut());
    let error = (!status.is_success()).then(|| GatewayError::Upstream {
        status: status.as_u16(),
        provider: up.name.clone(),
        message: String::new(),
        retry_after: None,
    });
    account.finish(status.as_u16(), error.as_ref(), None, None, None).await;
    out.into_response()
}

/// The provider `[passthrough]` names, as an [`Upstream`] (its key, headers and timeouts).
pub fn upstream(config: &crate::config::Config) -> Result<Option<std::sync::Arc<Upstream>>, String> {
    let Some(name) = &config.passthrough.provider else { return Ok(None) };
    let Some(pc) = config.providers.get(name) else {
        return Err(format!("passthrough.provider: unknown provider {name:?}"));
    };
    Upstream::configured(name, pc).map(|u| Some(std::sync::Arc::new(u)))
}
