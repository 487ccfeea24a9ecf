use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body as HttpBody, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use super::spend::Account;
use super::{authenticate, base64_encode, error_response, request_id, AppState};
use crate::api::messages;
use crate::api::{
    parse_json, ChatRequest, EmbeddingData, EmbeddingInput, EmbeddingUsage, EmbeddingsRequest, EmbeddingsResponse,
    EventTranslator, GatewayError, ModelInfo, ModelList,
};
use crate::config::LOCAL_EMBEDDING_MODEL;
use crate::limits::RateHeaders;
use crate::pipeline::{Body, RequestCtx, Served, StreamItem, Tenant};

/// The per-request dial: route this request as if the premium share were this (0..1).
const PREMIUM_SHARE_HEADER: &str = "x-switchyard-premium-share";

/// Reads the body, mapping axum's rejections (notably 413) to our error JSON.
pub(super) fn body_or_error(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, GatewayError> {
    body.map_err(|rej| {
        if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
            GatewayError::PayloadTooLarge { limit }
        } else {
            GatewayError::invalid(format!("could not read the request body: {rej}"), None)
        }
    })
}

/// One of the gateway's `server.max_concurrency` slots, or the 503 that says it is full.
pub(super) fn concurrency_slot(state: &AppState) -> Result<OwnedSemaphorePermit, GatewayError> {
    state
        .slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| GatewayError::overloaded("the gateway is at its concurrency limit; retry shortly"))
}

fn cache_control(headers: &HeaderMap, ctx: &mut RequestCtx) {
    for v in headers.get_all(header::CACHE_CONTROL).iter().filter_map(|v| v.to_str().ok()) {
        for directive in v.split(',').map(|d| d.trim().to_ascii_lowercase()) {
            match directive.as_str() {
                "no-cache" => ctx.no_cache = true,
                "no-store" => ctx.no_store = true,
                d => {
                    if let Some(age) = d.strip_prefix("max-age=").and_then(|s| s.trim_matches('"').parse::<u64>().ok())
                    {
                        ctx.max_age = Some(Duration::from_secs(age));
                    }
                }
            }
        }
    }
}

fn request_ctx(headers: &HeaderMap, tenant: Tenant) -> Result<RequestCtx, GatewayError> {
    let mut ctx = RequestCtx { tenant: tenant.id, tenant_share: tenant.premium_share, ..RequestCtx::default() };
    cache_control(headers, &mut ctx);
    if let Some(v) = headers.get("x-switchyard-cache-threshold") {
        let t =
            v.to_str().ok().and_then(|s| s.trim().parse::<f32>().ok()).filter(|t| (0.0..=1.0).contains(t)).ok_or_else(
                || {
                    GatewayError::invalid(
                        "x-switchyard-cache-threshold must be a number between 0 and 1",
                        Some("x-switchyard-cache-threshold"),
                    )
                },
            )?;
        ctx.threshold = Some(t);
    }
    if let Some(v) = headers.get(PREMIUM_SHARE_HEADER) {
        let s = v.to_str().ok().and_then(|s| s.trim().parse::<f32>().ok()).filter(|s| (0.0..=1.0).contains(s)).ok_or_else(
            || {
                GatewayError::invalid(
                    format!("{PREMIUM_SHARE_HEADER} must be a number between 0 and 1 (the share of requests like this one to send to the premium tier)"),
                    Some(PREMIUM_SHARE_HEADER),
                )
            },
        )?;
        ctx.premium_share = Some(s);
    }
    Ok(ctx)
}

pub async fn chat(State(state): State<AppState>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    handle(&state, &headers, body, async |b: &[u8], _: &str| parse_json(b), render, super::error_response).await
}

/// `POST /v1/messages`: Anthropic's Messages API, served by the same pipeline as chat (see
/// `api::messages`); errors in Anthropic's shape. Any `anthropic-version` header is accepted:
/// the translation is to and from the stable 2023-06-01 shapes, which later versions extend.
pub async fn messages(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let parse =
        async |b: &[u8], _: &str| parse_json::<messages::MessagesRequest>(b).and_then(messages::to_chat_request);
    handle(&state, &headers, body, parse, render_messages, super::anthropic_error_response).await
}

/// `POST /v1/messages/count_tokens`: Anthropic's token count, asked of the first deployment the
/// request's model would use whose provider can count (Anthropic, Gemini; for `auto`, the premium
/// tier's first). The gateway key and its allowed models are checked, and its `rpm` in a counter
/// of counts apart from its calls (as Anthropic limits them); providers do not bill counts, so
/// they are outside the key's token limit, budget and request log. An OpenAI-compatible
/// deployment's count is the gateway's estimate (`providers::estimate`, marked so in a header);
/// what it cannot estimate (files, audio) with no other deployment to count it gets a 400.
pub async fn count_tokens(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let rid = request_id(&headers);
    let mut rate = RateHeaders::default();
    let counted = async {
        let tenant = authenticate(&state, &headers)?;
        let _slot = concurrency_slot(&state)?;
        let mut req = messages::count_request(&body_or_error(body, state.max_body)?)?;
        req.anthropic_beta = anthropic_beta(&headers);
        if let Some(policy) = &tenant.policy {
            super::spend::check_model(policy, &req.model, &state.gateway.router_alias)?;
            match state.limits.admit_count(policy).await {
                Ok(h) => rate = h,
                Err(r) => {
                    rate = r.headers;
                    return Err(r.error);
                }
            }
        }
        tokio::time::timeout(state.request_timeout, state.gateway.count_tokens(&req))
            .await
            .map_err(|_| GatewayError::Timeout(format!("the count took longer than {:?}", state.request_timeout)))?
    };
    let mut resp = match counted.await {
        Ok(n) => {
            let mut resp = axum::Json(serde_json::json!({ "input_tokens": n.tokens })).into_response();
            set(resp.headers_mut(), "x-request-id", &rid);
            if n.estimated {
                set(resp.headers_mut(), "x-switchyard-token-count", "estimated");
            }
            resp
        }
        Err(e) => super::anthropic_error_response(&e, &rid),
    };
    super::spend::set_rate_headers(&rate, resp.headers_mut());
    resp
}

/// `POST /v1/cache/invalidate`: a chat completions body; removes, for the caller's tenant, what
/// the cache could answer it with (on every replica when the shared tier is on). For an answer
/// that turned out wrong: the next such request goes upstream.
pub async fn invalidate(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let rid = request_id(&headers);
    let removed = async {
        let tenant = authenticate(&state, &headers)?;
        let _slot = concurrency_slot(&state)?;
        let req: ChatRequest = parse_json(&body_or_error(body, state.max_body)?)?;
        if let Some(policy) = &tenant.policy {
            super::spend::check_model(policy, &req.model, &state.gateway.router_alias)?;
        }
        let ctx = request_ctx(&headers, tenant)?;
        tokio::time::timeout(state.request_timeout, state.gateway.invalidate(&req, &ctx)).await.map_err(|_| {
            GatewayError::Timeout(format!("the invalidation took longer than {:?}", state.request_timeout))
        })?
    };
    match removed.await {
        Ok(n) => {
            let mut resp =
                axum::Json(serde_json::json!({"object": "cache.invalidation", "deleted": n})).into_response();
            set(resp.headers_mut(), "x-request-id", &rid);
            resp
        }
        Err(e) => super::error_response(&e, &rid),
    }
}

/// One chat-shaped request from the client's wire format to its response: the key's account
/// (limits, budget, request log) wraps the pipeline whichever API the client speaks. `parse`
/// gets the body and the caller's tenant id (a Responses request may continue a stored one).
pub(super) async fn handle(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    parse: impl AsyncFnOnce(&[u8], &str) -> Result<ChatRequest, GatewayError>,
    render_ok: impl FnOnce(Served, &str, OwnedSemaphorePermit) -> Response,
    render_err: fn(&GatewayError, &str) -> Response,
) -> Response {
    let rid = request_id(headers);
    let mut account = Account::new(state, &rid);
    // every line logged while the request is served (an upstream attempt that failed, a breaker
    // that opened) names it; at error level so that no filter keeps the line and drops its id
    let span = tracing::error_span!("request", request_id = %rid);
    match serve(state, headers, body, parse, &mut account).instrument(span).await {
        Ok((mut served, slot)) => {
            account.served(&served.meta);
            let (done, usage, cost) = (served.done.take(), served.meta.usage, served.meta.cost);
            let answer = match (&served.body, state.ledger.content()) {
                (Body::Json(r), c) if c != crate::config::LogContent::Off => {
                    r.choices.first().and_then(|c| c.message.content.clone())
                }
                _ => None,
            };
            let mut resp = render_ok(served, &rid, slot);
            account.set_headers(resp.headers_mut());
            match done {
                Some(rx) => account.finish_stream(rx),
                None => account.finish(200, None, usage, cost, answer.as_deref()).await,
            }
            resp
        }
        Err(e) => account.failed(&e, render_err(&e, &rid)).await,
    }
}

fn render_messages(served: Served, rid: &str, slot: OwnedSemaphorePermit) -> Response {
    let mut resp = match served.body {
        Body::Json(r) => axum::Json(messages::to_message(&r)).into_response(),
        Body::Stream(stream) => translated_sse(stream, slot, messages::StreamTranslator::new(), |t| t.finish()),
    };
    meta_headers(&mut resp, &served.meta, rid);
    resp
}

/// Authenticates, takes a concurrency slot, parses the body with `parse`, applies the key's
/// limits and runs the pipeline. Returns the served answer and the request's concurrency slot,
/// which a streamed answer keeps until its last byte: a stream in progress is a request in
/// progress for `server.max_concurrency`.
async fn serve(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    parse: impl AsyncFnOnce(&[u8], &str) -> Result<ChatRequest, GatewayError>,
    account: &mut Account,
) -> Result<(Served, OwnedSemaphorePermit), GatewayError> {
    let tenant = authenticate(state, headers)?;
    account.tenant(&tenant);
    let slot = concurrency_slot(state)?;
    let bytes = body_or_error(body, state.max_body)?;
    let mut req = parse(&bytes, &tenant.id).await?;
    req.anthropic_beta = anthropic_beta(headers);
    let mut ctx = request_ctx(headers, tenant)?;
    ctx.premium_off = account.admit(&req).await?;
    if account.cache_off() {
        (ctx.no_cache, ctx.no_store) = (true, true);
    }
    let fut = state.gateway.chat(req, ctx);
    let served = tokio::time::timeout(state.request_timeout, fut)
        .await
        .map_err(|_| GatewayError::Timeout(format!("the request took longer than {:?}", state.request_timeout)))??;
    Ok((served, slot))
}

/// The client's `anthropic-beta` flags (one header or several), as one comma-separated list.
fn anthropic_beta(headers: &HeaderMap) -> Option<String> {
    let flags: Vec<&str> = headers
        .get_all("anthropic-beta")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .collect();
    (!flags.is_empty()).then(|| flags.join(","))
}

pub(super) fn set(headers: &mut HeaderMap, name: &'static str, value: impl ToString) {
    if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
        headers.insert(name, v);
    }
}

fn render(served: Served, rid: &str, slot: OwnedSemaphorePermit) -> Response {
    let mut resp = match served.body {
        Body::Json(r) => axum::Json(r).into_response(),
        Body::Stream(stream) => sse_response(
            stream,
            slot,
            |item| {
                let line = match item {
                    StreamItem::Chunk(c) => serde_json::to_string(&c).unwrap_or_default(),
                    StreamItem::Error(e) => serde_json::to_string(&e.body()).unwrap_or_default(),
                };
                format!("data: {line}\n\n")
            },
            || "data: [DONE]\n\n".to_string(),
        ),
    };
    meta_headers(&mut resp, &served.meta, rid);
    resp
}

/// An SSE response from the pipeline's stream, in either API's event format: `event` renders each
/// item (an empty string sends nothing), `close` the closing events (`[DONE]`, `message_stop`),
/// sent only after a complete answer: a stream that ended in an error event must not look
/// finished to a client that only watches for the end. The request's concurrency slot is held
/// until the last byte.
fn sse_response(
    stream: crate::pipeline::ReplyStream,
    slot: OwnedSemaphorePermit,
    mut event: impl FnMut(StreamItem) -> String + Send + 'static,
    close: impl FnOnce() -> String + Send + 'static,
) -> Response {
    let failed = Arc::new(AtomicBool::new(false));
    let seen = failed.clone();
    // the items already decoded go out in one write: an upstream that sends a burst of chunks
    // (most do, and every cache replay) costs one syscall and packet, not one per chunk, and an
    // item that arrives alone is still sent at once
    let events = stream
        .ready_chunks(64)
        .map(move |items| {
            let _held = &slot;
            let mut out = String::new();
            for item in items {
                if matches!(item, StreamItem::Error(_)) {
                    seen.store(true, Ordering::Relaxed);
                }
                out.push_str(&event(item));
            }
            Ok::<_, std::convert::Infallible>(Bytes::from(out))
        })
        .filter(|r| std::future::ready(r.as_ref().map_or(true, |b| !b.is_empty())))
        .chain(
            futures_util::stream::once(
                async move { (!failed.load(Ordering::Relaxed)).then(|| Ok(Bytes::from(close()))) },
            )
            .filter_map(std::future::ready),
        );
    let mut r = Response::new(HttpBody::from_stream(events));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// An SSE response in another API's event format: `translator` turns each item into events,
/// `close` writes the closing ones (see [`sse_response`] for when).
pub(super) fn translated_sse<T: EventTranslator>(
    stream: crate::pipeline::ReplyStream,
    slot: OwnedSemaphorePermit,
    translator: T,
    close: impl FnOnce(&mut T) -> String + Send + 'static,
) -> Response {
    let events = Arc::new(parking_lot::Mutex::new(translator));
    let tail = events.clone();
    sse_response(
        stream,
        slot,
        move |item| match item {
            StreamItem::Chunk(c) => events.lock().chunk(&c),
            StreamItem::Error(e) => events.lock().error(&e),
        },
        move || close(&mut tail.lock()),
    )
}

/// The `x-switchyard-*` headers that say how a request was served.
pub(super) fn meta_headers(resp: &mut Response, m: &crate::pipeline::Meta, rid: &str) {
    let h = resp.headers_mut();
    set(h, "x-request-id", rid);
    set(h, "x-switchyard-cache", m.cache.as_str());
    if let Some(s) = m.similarity {
        set(h, "x-switchyard-similarity", format!("{s:.4}"));
    }
    if !m.tier.is_empty() {
        set(h, "x-switchyard-tier", &m.tier);
    }
    set(h, "x-switchyard-model", &m.model);
    set(h, "x-switchyard-provider", &m.provider);
    set(h, "x-switchyard-attempts", m.attempts);
    if let Some(c) = m.cost {
        set(h, "x-switchyard-cost", format!("{c:.8}"));
    }
    if let Some(c) = m.cost_saved {
        set(h, "x-switchyard-cost-saved", format!("{c:.8}"));
    }
    if let Some(s) = m.route_score {
        set(h, "x-switchyard-route-score", format!("{s:.4}"));
    }
    if let Some(t) = m.route_threshold {
        set(h, "x-switchyard-route-threshold", format!("{t:.4}"));
    }
    // the score alone would have gone cheap: the conversation's earlier premium turn decided
    if m.route_affinity {
        set(h, "x-switchyard-route-affinity", "premium");
    }
}

pub async fn models(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let rid = request_id(&headers);
    if let Err(e) = authenticate(&state, &headers) {
        return error_response(&e, &rid);
    }
    let created = crate::cache::unix_now();
    let data = state
        .gateway
        .model_ids()
        .into_iter()
        .map(|(id, owned_by)| ModelInfo { id, object: "model".into(), created, owned_by })
        .collect();
    axum::Json(ModelList { object: "list".into(), data }).into_response()
}

/// `GET /v1/models/{id}`: one entry of the list (the SDKs' `models.retrieve`), or `model_not_found`.
pub async fn model(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let rid = request_id(&headers);
    if let Err(e) = authenticate(&state, &headers) {
        return error_response(&e, &rid);
    }
    match state.gateway.model_ids().into_iter().find(|(m, _)| *m == id) {
        Some((id, owned_by)) => {
            axum::Json(ModelInfo { id, object: "model".into(), created: crate::cache::unix_now(), owned_by })
                .into_response()
        }
        None => error_response(
            &GatewayError::NotFound(format!("The model `{id}` does not exist on this gateway (see GET /v1/models)")),
            &rid,
        ),
    }
}

/// Most inputs one embeddings call may carry (OpenAI's own limit).
const MAX_EMBED_INPUTS: usize = 2048;

/// `POST /v1/embeddings`: the local MiniLM for `all-MiniLM-L6-v2` (or no `model`), an upstream
/// model's deployments for a model under `[embeddings]`, a 404 for any other name.
pub async fn embeddings(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let rid = request_id(&headers);
    let admitted = authenticate(&state, &headers).and_then(|tenant| {
        let bytes = body_or_error(body, state.max_body)?;
        let req: EmbeddingsRequest = parse_json(&bytes)?;
        Ok((tenant, bytes, req))
    });
    let (tenant, bytes, req) = match admitted {
        Ok(a) => a,
        Err(e) => return error_response(&e, &rid),
    };
    match req.model.clone() {
        Some(model) if !state.gateway.is_local_embedding(Some(&model)) => {
            upstream_embeddings(&state, &tenant, &model, &bytes, &req, &rid).await
        }
        _ => match local_embeddings(&state, req).await {
            Ok(r) => {
                let mut resp = axum::Json(r).into_response();
                set(resp.headers_mut(), "x-request-id", &rid);
                resp
            }
            Err(e) => error_response(&e, &rid),
        },
    }
}

/// An upstream model's embeddings, accounted as a chat call is: the key's allowed models,
/// limits and budget before the call, its real tokens and cost after, one request-log record.
async fn upstream_embeddings(
    state: &AppState,
    tenant: &Tenant,
    model: &str,
    bytes: &[u8],
    req: &EmbeddingsRequest,
    rid: &str,
) -> Response {
    let mut account = Account::new(state, rid);
    account.tenant(tenant);
    let served = async {
        let _slot = concurrency_slot(state)?;
        let texts = req.input.texts();
        let estimate = match &req.input {
            EmbeddingInput::Tokens(ids) => ids.len() as u64,
            EmbeddingInput::TokenArrays(arrays) => arrays.iter().map(|a| a.len() as u64).sum(),
            _ => texts.iter().map(|t| t.len() as u64).sum::<u64>().div_ceil(4),
        };
        let prompt = (state.ledger.content() != crate::config::LogContent::Off).then(|| texts.join("\n"));
        account.admit_model(model, estimate, prompt.as_deref()).await?;
        // the body as the client sent it (fields this gateway does not know included); parsed
        // above, so this cannot fail
        let body: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| GatewayError::invalid(e.to_string(), None))?;
        tokio::time::timeout(state.request_timeout, state.gateway.embeddings(model, &body))
            .await
            .map_err(|_| GatewayError::Timeout(format!("the request took longer than {:?}", state.request_timeout)))?
    };
    match served.await {
        Ok(up) => {
            account.upstream(up.deployment.clone(), up.attempts);
            let mut resp = axum::Json(up.body).into_response();
            let h = resp.headers_mut();
            set(h, "x-request-id", rid);
            if let Some((provider, model)) = up.deployment.split_once(':') {
                set(h, "x-switchyard-provider", provider);
                set(h, "x-switchyard-model", model);
            }
            set(h, "x-switchyard-attempts", up.attempts);
            if let Some(c) = up.cost {
                set(h, "x-switchyard-cost", format!("{c:.8}"));
            }
            account.set_headers(h);
            account.finish(200, None, up.usage, up.cost, None).await;
            resp
        }
        Err(e) => account.failed(&e, error_response(&e, rid)).await,
    }
}

/// Embeddings from the in-process MiniLM: free, so outside the key's limits and the request log.
async fn local_embeddings(state: &AppState, req: EmbeddingsRequest) -> Result<EmbeddingsResponse, GatewayError> {
    let (inputs, given_tokens) = match req.input {
        EmbeddingInput::One(s) => (vec![s], None),
        EmbeddingInput::Many(v) => (v, None),
        EmbeddingInput::Tokens(ids) => (vec![decode_tokens(&ids)?], Some(ids.len() as u64)),
        EmbeddingInput::TokenArrays(arrays) => {
            let n = arrays.iter().map(|a| a.len() as u64).sum();
            (arrays.iter().map(|ids| decode_tokens(ids)).collect::<Result<_, _>>()?, Some(n))
        }
    };
    if inputs.is_empty() || inputs.len() > MAX_EMBED_INPUTS {
        return Err(GatewayError::invalid(format!("`input` must hold 1 to {MAX_EMBED_INPUTS} inputs"), Some("input")));
    }
    if inputs.iter().any(|s| s.is_empty()) {
        return Err(GatewayError::invalid("`input` strings and token arrays must not be empty", Some("input")));
    }
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(GatewayError::invalid(
                format!("unsupported encoding_format {other:?}"),
                Some("encoding_format"),
            ))
        }
    };
    let embed =
        state.gateway.embed.as_ref().ok_or_else(|| GatewayError::overloaded("the embedding model is not loaded"))?;
    if let Some(d) = req.dimensions {
        if d as usize != embed.dim() {
            return Err(GatewayError::invalid(
                format!("this model has {} dimensions", embed.dim()),
                Some("dimensions"),
            ));
        }
    }
    let tokens: u64 =
        given_tokens.unwrap_or_else(|| inputs.iter().map(|s| embed.embedder().count_tokens(s) as u64).sum());
    let vectors = embed.embed_many(inputs).await.map_err(|e| match e {
        crate::embed::EmbedError::Overloaded => GatewayError::overloaded("the embedding queue is full; retry shortly"),
        other => GatewayError::Internal(other.to_string()),
    })?;
    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                serde_json::Value::String(base64_encode(&bytes))
            } else {
                serde_json::json!(v)
            };
            EmbeddingData { object: "embedding", index, embedding }
        })
        .collect();
    Ok(EmbeddingsResponse {
        object: "list",
        data,
        model: LOCAL_EMBEDDING_MODEL.into(),
        usage: EmbeddingUsage { prompt_tokens: tokens, total_tokens: tokens },
    })
}

/// One token-id input as the text it encodes (OpenAI's embedding models take cl100k_base ids).
fn decode_tokens(ids: &[u32]) -> Result<String, GatewayError> {
    crate::embed::cl100k::decode(ids).map_err(|e| {
        GatewayError::invalid(format!("{e}: token-array inputs must be cl100k_base token ids"), Some("input"))
    })
}

/// `GET /health`: 200 `ok`, or 503 `draining` once shutdown has begun (the replica still serves
/// for `server.shutdown_delay`; a readiness probe moves traffic away meanwhile).
pub async fn health(State(state): State<AppState>) -> Response {
    let g = &state.gateway;
    let draining = state.draining.load(Ordering::Relaxed);
    let status = if draining { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    let body = axum::Json(serde_json::json!({
        "status": if draining { "draining" } else { "ok" },
        "uptime_seconds": state.started.elapsed().as_secs(),
        "embedder": g.embed.is_some(),
        "cache_entries": g.cache.as_ref().map(|c| c.stats().entries),
        "router": g.router.name(),
    }));
    (status, body).into_response()
}

pub async fn not_found(headers: HeaderMap, method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let rid = request_id(&headers);
    error_response(&GatewayError::UnknownUrl { method: method.to_string(), path: uri.path().to_string() }, &rid)
}

pub async fn wrong_method(headers: HeaderMap, method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let rid = request_id(&headers);
    error_response(&GatewayError::MethodNotAllowed { method: method.to_string(), path: uri.path().to_string() }, &rid)
}

#[cfg(test)]
mod tests {
    use super::base64_encode;

    #[test]
    fn base64_matches_the_rfc_examples() {
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fooba"), "Zm9vYmE=");
        assert_eq!(base64_encode(b"foob"), "Zm9vYg==");
    }
}
