//! Mock Anthropic and Gemini upstreams: real HTTP servers on 127.0.0.1:0 that speak each
//! provider's own wire format (paths, auth headers, bodies, SSE streams, error bodies), enforce
//! the rules the real APIs enforce on what we send (alternating roles, required fields, known
//! keys), record every request and count calls.
//!
//! Both answer from the request: with tools offered and no tool result yet, they call the first
//! tool with `{"location": "Paris"}`; after a tool result they answer `tool said: <result>`;
//! otherwise `<name> answer #<n> to: <last user text>`.
//!
//! Rules of current models they enforce (and the fields they answer with):
//! - Gemini 3 (`gemini-3*` models): a `thoughtSignature` beside the first `functionCall` of a
//!   turn, which must come back on that part in the follow-up, or 400 "missing a
//!   thought_signature" (the part shape of googleapis/python-genai's `types.Part`); thought parts
//!   (`thought: true`) when `thinkingConfig.includeThoughts` is set.
//! - Anthropic prompt caching: `cache_control` only on content blocks, system blocks and tools,
//!   `{"type":"ephemeral"}` with an optional `ttl` of 5m/1h, at most 4 breakpoints; usage reports
//!   `cache_creation_input_tokens` the first time a cached prefix is seen, `cache_read_input_tokens`
//!   after.
//! - Anthropic extended thinking (`thinking: {type: enabled, budget_tokens}`): budget ≥ 1024 and
//!   below `max_tokens`, no `temperature`; the answer starts with a signed thinking block; a
//!   follow-up whose last assistant turn has tool use must start that turn with the signed block.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt;
use serde_json::{json, Value};
use switchyard::config::Config;

/// One request as the mock received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Recorded {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

/// What the mock does on one call.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Answer from the request (see the module doc).
    Answer,
    /// An error in the provider's own error format; the message may contain anything (a key…).
    Error(u16, &'static str, String),
    /// Stream only: the stream opens (200), then an error event arrives before any content.
    StreamError(&'static str, &'static str),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Wire {
    Anthropic,
    Gemini,
}

#[derive(Clone)]
struct St {
    wire: Wire,
    name: String,
    key: String,
    calls: Arc<AtomicUsize>,
    script: Arc<Mutex<VecDeque<Reply>>>,
    requests: Arc<Mutex<Vec<Recorded>>>,
    /// Signatures this mock issued (Gemini thought signatures, Anthropic thinking signatures).
    signatures: Arc<Mutex<Vec<String>>>,
    /// Anthropic: cached prefixes seen (their cache_control blocks, serialised).
    cached: Arc<Mutex<Vec<String>>>,
}

pub struct ProviderMock {
    pub addr: SocketAddr,
    pub key: String,
    st: St,
}

impl ProviderMock {
    pub async fn anthropic(name: &str, key: &str) -> ProviderMock {
        Self::start(Wire::Anthropic, name, key).await
    }

    pub async fn gemini(name: &str, key: &str) -> ProviderMock {
        Self::start(Wire::Gemini, name, key).await
    }

    async fn start(wire: Wire, name: &str, key: &str) -> ProviderMock {
        let st = St {
            wire,
            name: name.into(),
            key: key.into(),
            calls: Arc::default(),
            script: Arc::default(),
            requests: Arc::default(),
            signatures: Arc::default(),
            cached: Arc::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = match wire {
            Wire::Anthropic => axum::Router::new()
                .route("/v1/messages", post(anthropic))
                .route("/v1/messages/count_tokens", post(anthropic_count_tokens)),
            Wire::Gemini => axum::Router::new().route("/v1beta/models/{*rest}", post(gemini)),
        }
        .with_state(st.clone());
        tokio::spawn(async move { axum::serve(listener.tap_io(switchyard::app::no_delay), app).await.unwrap() });
        ProviderMock { addr, key: key.into(), st }
    }

    /// The `base_url` to configure: the SDK's default form (no version segment).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn calls(&self) -> usize {
        self.st.calls.load(Ordering::SeqCst)
    }

    pub fn then(&self, r: Reply) -> &Self {
        self.st.script.lock().unwrap().push_back(r);
        self
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.st.requests.lock().unwrap().clone()
    }

    pub fn last(&self) -> Recorded {
        self.requests().pop().expect("the mock was called")
    }
}

fn sse(body: String) -> Response {
    Response::builder().header("content-type", "text/event-stream").body(Body::from(body)).unwrap()
}

/// Splits text into word-sized pieces, as a real stream would send it.
fn pieces(text: &str) -> Vec<String> {
    text.split_inclusive(' ').map(str::to_string).collect()
}

pub const ANTHROPIC_KEY: &str = "sk-ant-test-secret-0123456789";
pub const GEMINI_KEY: &str = "AIzaSy-test-secret-0123456789";

/// A gateway config: `cheap` tier = `deployments`, providers `anthropic` and/or `gemini`.
pub fn config(deployments: &[&str], anthropic: Option<&ProviderMock>, gemini: Option<&ProviderMock>) -> Config {
    let tier = deployments.iter().map(|d| format!("{d:?}")).collect::<Vec<_>>().join(", ");
    let mut text = format!(
        r#"
        [server]
        listen = "127.0.0.1:0"
        [dispatch]
        backoff_base = "10ms"
        backoff_max = "50ms"
        [tiers]
        cheap = [{tier}]
        premium = [{tier}]
        [prices]
        "claude-haiku-4-5" = {{ input = 1.0, output = 5.0 }}
        "claude-sonnet-4-5" = {{ input = 3.0, output = 15.0 }}
        "gemini-2.5-flash" = {{ input = 0.3, output = 2.5 }}
        "gemini-3-pro-preview" = {{ input = 2.0, output = 12.0 }}
        "#
    );
    if let Some(a) = anthropic {
        text.push_str(&format!(
            "[providers.anthropic]\nkind = \"anthropic\"\nbase_url = \"{}\"\napi_key = \"{ANTHROPIC_KEY}\"\ndefault_max_tokens = 512\nfirst_byte_timeout = \"2s\"\n",
            a.base_url()
        ));
    }
    if let Some(g) = gemini {
        text.push_str(&format!(
            "[providers.gemini]\nkind = \"gemini\"\nbase_url = \"{}\"\napi_key = \"{GEMINI_KEY}\"\nfirst_byte_timeout = \"2s\"\n",
            g.base_url()
        ));
    }
    Config::parse(&text).unwrap_or_else(|e| panic!("test config: {e}\n{text}"))
}

// ---- Anthropic ---------------------------------------------------------------------------------

fn anthropic_error(status: u16, kind: &str, message: &str) -> Response {
    let body = json!({"type": "error", "error": {"type": kind, "message": message}});
    (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
}

/// The checks the real Messages API makes that our translation could get wrong.
fn anthropic_invalid(headers: &HeaderMap, body: &Value) -> Option<String> {
    if headers.get("anthropic-version").is_none() {
        return Some("anthropic-version: header is required".into());
    }
    if !body["max_tokens"].is_u64() {
        return Some("max_tokens: Field required".into());
    }
    let Some(msgs) = body["messages"].as_array() else {
        return Some("messages: Field required".into());
    };
    if msgs.is_empty() {
        return Some("messages: at least one message is required".into());
    }
    for (i, m) in msgs.iter().enumerate() {
        let role = m["role"].as_str().unwrap_or("");
        if role != "user" && role != "assistant" {
            return Some(format!("messages.{i}.role: Input should be 'user' or 'assistant'"));
        }
        if i > 0 && msgs[i - 1]["role"] == m["role"] {
            return Some(format!("messages.{i}: roles must alternate between \"user\" and \"assistant\""));
        }
        let content =
            m["content"].as_array().map(Vec::len).unwrap_or_else(|| m["content"].as_str().map_or(0, str::len));
        if content == 0 {
            return Some(format!("messages.{i}: all messages must have non-empty content"));
        }
    }
    if msgs[0]["role"] != "user" {
        return Some("messages.0: first message must use the \"user\" role".into());
    }
    if let Some(msg) = anthropic_cache_control_invalid(body) {
        return Some(msg);
    }
    for key in body.as_object()?.keys() {
        let known = [
            "model",
            "max_tokens",
            "messages",
            "system",
            "temperature",
            "top_p",
            "top_k",
            "stop_sequences",
            "stream",
            "tools",
            "tool_choice",
            "metadata",
            "thinking",
        ];
        if !known.contains(&key.as_str()) {
            return Some(format!("{key}: Extra inputs are not permitted"));
        }
    }
    None
}

/// Where `cache_control` may appear and what it may say; at most 4 breakpoints.
fn anthropic_cache_control_invalid(body: &Value) -> Option<String> {
    fn check(cc: &Value, at: &str) -> Option<String> {
        let ok_keys = cc.as_object().is_some_and(|o| o.keys().all(|k| k == "type" || k == "ttl"));
        let ok_ttl = cc.get("ttl").is_none_or(|t| t == "5m" || t == "1h");
        (!(cc["type"] == "ephemeral" && ok_keys && ok_ttl))
            .then(|| format!("{at}.cache_control: invalid cache_control {cc}"))
    }
    let mut breakpoints = 0;
    let blocks = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let mut all: Vec<(String, Value)> = Vec::new();
    for (i, b) in blocks(&body["system"]).into_iter().enumerate() {
        if b["type"] != "text" {
            return Some(format!("system.{i}.type: system blocks must be text"));
        }
        all.push((format!("system.{i}"), b));
    }
    for (i, t) in blocks(&body["tools"]).into_iter().enumerate() {
        all.push((format!("tools.{i}"), t));
    }
    for (i, m) in blocks(&body["messages"]).into_iter().enumerate() {
        for (j, b) in blocks(&m["content"]).into_iter().enumerate() {
            let at = format!("messages.{i}.content.{j}");
            let allowed: &[&str] = match b["type"].as_str().unwrap_or("") {
                "text" => &["type", "text", "cache_control", "citations"],
                "image" => &["type", "source", "cache_control"],
                "document" => &["type", "source", "title", "context", "citations", "cache_control"],
                "tool_use" => &["type", "id", "name", "input", "cache_control"],
                "tool_result" => &["type", "tool_use_id", "content", "is_error", "cache_control"],
                "thinking" => &["type", "thinking", "signature"],
                "redacted_thinking" => &["type", "data"],
                other => return Some(format!("{at}.type: unknown block type {other:?}")),
            };
            if let Some(k) = b.as_object().and_then(|o| o.keys().find(|k| !allowed.contains(&k.as_str()))) {
                return Some(format!("{at}.{k}: Extra inputs are not permitted"));
            }
            if b["type"] == "tool_use"
                && !b["id"].as_str().unwrap_or("").bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
            {
                return Some(format!("{at}.id: String should match pattern '^[a-zA-Z0-9_-]+$'"));
            }
            all.push((at, b));
        }
    }
    for (at, b) in &all {
        if let Some(cc) = b.get("cache_control") {
            breakpoints += 1;
            if let Some(msg) = check(cc, at) {
                return Some(msg);
            }
        }
    }
    (breakpoints > 4).then(|| format!("A maximum of 4 blocks with cache_control may be provided. Found {breakpoints}."))
}

/// Extended thinking's rules (see the module doc); `Ok(true)` when thinking is on.
fn anthropic_thinking_invalid(s: &St, body: &Value) -> Result<bool, String> {
    let Some(t) = body.get("thinking") else { return Ok(false) };
    if t["type"] != "enabled" {
        return Ok(false);
    }
    let budget = t["budget_tokens"].as_u64().unwrap_or(0);
    if budget < 1024 {
        return Err("thinking.enabled.budget_tokens: Input should be greater than or equal to 1024".into());
    }
    if budget >= body["max_tokens"].as_u64().unwrap_or(0) {
        return Err("`max_tokens` must be greater than `thinking.budget_tokens`".into());
    }
    if body.get("temperature").is_some_and(|t| t != 1.0) {
        return Err("`temperature` may only be set to 1 when thinking is enabled".into());
    }
    let msgs = body["messages"].as_array().cloned().unwrap_or_default();
    if let Some((i, last)) = msgs.iter().enumerate().rev().find(|(_, m)| m["role"] == "assistant") {
        let content = last["content"].as_array().cloned().unwrap_or_default();
        if content.iter().any(|b| b["type"] == "tool_use") {
            let first = content.first().cloned().unwrap_or(Value::Null);
            if first["type"] != "thinking" && first["type"] != "redacted_thinking" {
                return Err(format!("messages.{i}.content.0.type: Expected `thinking` or `redacted_thinking`, but found `{}`. When `thinking` is enabled, a final `assistant` message must start with a thinking block", first["type"].as_str().unwrap_or("")));
            }
            let sig = first["signature"].as_str().unwrap_or("");
            if first["type"] == "thinking" && !s.signatures.lock().unwrap().iter().any(|x| x == sig) {
                return Err(format!("messages.{i}.content.0: Invalid `signature` in `thinking` block"));
            }
        }
    }
    Ok(true)
}

/// Records an Anthropic request and checks its key: the body, or the 401 Anthropic gives.
fn anthropic_received(s: &St, path: &str, headers: &HeaderMap, body: &Bytes) -> Result<Value, Box<Response>> {
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    s.requests.lock().unwrap().push(Recorded {
        path: path.into(),
        query: None,
        headers: headers.clone(),
        body: body.clone(),
    });
    if headers.get("x-api-key").and_then(|v| v.to_str().ok()) != Some(s.key.as_str()) {
        return Err(Box::new(anthropic_error(401, "authentication_error", "invalid x-api-key")));
    }
    Ok(body)
}

/// `POST /v1/messages/count_tokens`: the prompt fields only (`max_tokens`, `stream`,
/// `temperature`… are "Extra inputs"), checked like a call. The count is the mock's own (words
/// of the system prompt and every text block, plus 3 per message), not Claude's tokenizer: the
/// tests check that the gateway passes the provider's number through, whatever it is. A scripted
/// `Reply::Error` is answered. Not counted in `calls()` (a count is not a generation); recorded in
/// `requests()`.
async fn anthropic_count_tokens(State(s): State<St>, headers: HeaderMap, body: Bytes) -> Response {
    let body = match anthropic_received(&s, "/v1/messages/count_tokens", &headers, &body) {
        Ok(body) => body,
        Err(refused) => return *refused,
    };
    let known = ["model", "messages", "system", "tools", "tool_choice", "thinking", "mcp_servers"];
    if let Some(extra) = body.as_object().and_then(|o| o.keys().find(|k| !known.contains(&k.as_str()))) {
        return anthropic_error(400, "invalid_request_error", &format!("{extra}: Extra inputs are not permitted"));
    }
    if let Some(Reply::Error(status, kind, message)) = s.script.lock().unwrap().pop_front() {
        return anthropic_error(status, kind, &message);
    }
    let mut as_call = body.clone();
    as_call["max_tokens"] = json!(1);
    if let Some(msg) = anthropic_invalid(&headers, &as_call) {
        return anthropic_error(400, "invalid_request_error", &msg);
    }
    fn words(v: &Value) -> usize {
        match v {
            Value::String(t) => t.split_whitespace().count(),
            Value::Array(blocks) => blocks.iter().map(|b| words(&b["text"])).sum(),
            _ => 0,
        }
    }
    let msgs = body["messages"].as_array().cloned().unwrap_or_default();
    let n = words(&body["system"]) + msgs.iter().map(|m| 3 + words(&m["content"])).sum::<usize>();
    axum::Json(json!({"input_tokens": n})).into_response()
}

async fn anthropic(State(s): State<St>, headers: HeaderMap, body: Bytes) -> Response {
    let n = s.calls.fetch_add(1, Ordering::SeqCst) + 1;
    let body = match anthropic_received(&s, "/v1/messages", &headers, &body) {
        Ok(body) => body,
        Err(refused) => return *refused,
    };
    if let Some(msg) = anthropic_invalid(&headers, &body) {
        return anthropic_error(400, "invalid_request_error", &msg);
    }
    let thinks = match anthropic_thinking_invalid(&s, &body) {
        Ok(t) => t,
        Err(msg) => return anthropic_error(400, "invalid_request_error", &msg),
    };
    let stream = body["stream"] == true;
    match s.script.lock().unwrap().pop_front().unwrap_or(Reply::Answer) {
        Reply::Error(status, kind, message) => return anthropic_error(status, kind, &message),
        Reply::StreamError(kind, message) if stream => {
            let start = json!({"type": "message_start", "message": {"id": "msg_mock_err", "type": "message",
                "role": "assistant", "content": [], "model": body["model"], "stop_reason": null,
                "stop_sequence": null, "usage": {"input_tokens": 5, "output_tokens": 1}}});
            let err = json!({"type": "error", "error": {"type": kind, "message": message}});
            return sse(format!("event: message_start\ndata: {start}\n\nevent: error\ndata: {err}\n\n"));
        }
        _ => {}
    }

    let msgs = body["messages"].as_array().cloned().unwrap_or_default();
    let last = msgs.last().cloned().unwrap_or(Value::Null);
    let blocks = last["content"].as_array().cloned().unwrap_or_default();
    let tool_result = blocks.iter().find(|b| b["type"] == "tool_result").map(|b| {
        b["content"]
            .as_array()
            .map(|c| c.iter().filter_map(|x| x["text"].as_str()).collect::<String>())
            .unwrap_or_else(|| b["content"].as_str().unwrap_or("").to_string())
    });
    let user_text: String = blocks.iter().filter(|b| b["type"] == "text").filter_map(|b| b["text"].as_str()).collect();
    let tool = body["tools"].as_array().and_then(|t| t.first()).map(|t| t["name"].as_str().unwrap_or("").to_string());
    let model = format!("{}-20251001", body["model"].as_str().unwrap_or("claude"));
    let id = format!("msg_mock_{n}");
    let (text, call) = match (&tool_result, &tool) {
        (Some(r), _) => (format!("tool said: {r}"), None),
        (None, Some(name)) if body["tool_choice"]["type"] != "none" => {
            ("Let me check.".to_string(), Some((format!("toolu_mock_{n}"), name.clone())))
        }
        _ => (format!("{} answer #{n} to: {user_text}", s.name), None),
    };
    let stop = if call.is_some() { "tool_use" } else { "end_turn" };
    let input_tokens = 10 + msgs.len() as u64;
    let output_tokens = 20u64;
    // prompt caching: the marked blocks are the cached prefix; seen before ⇒ read, else written
    let mut marked = Vec::new();
    for v in [&body["system"], &body["tools"]] {
        marked.extend(v.as_array().into_iter().flatten().filter(|b| b.get("cache_control").is_some()).cloned());
    }
    for m in &msgs {
        marked.extend(
            m["content"].as_array().into_iter().flatten().filter(|b| b.get("cache_control").is_some()).cloned(),
        );
    }
    let mut usage = json!({"input_tokens": input_tokens, "output_tokens": output_tokens});
    if !marked.is_empty() {
        let key = Value::Array(marked).to_string();
        let mut seen = s.cached.lock().unwrap();
        if seen.contains(&key) {
            usage["cache_read_input_tokens"] = json!(1000);
            usage["cache_creation_input_tokens"] = json!(0);
        } else {
            seen.push(key);
            usage["cache_read_input_tokens"] = json!(0);
            usage["cache_creation_input_tokens"] = json!(1000);
        }
    }
    let thinking = thinks.then(|| {
        let sig = format!("EqQBmock{n}");
        s.signatures.lock().unwrap().push(sig.clone());
        (format!("Considering: {user_text}"), sig)
    });

    if !stream {
        let mut content = Vec::new();
        if let Some((t, sig)) = &thinking {
            content.push(json!({"type": "thinking", "thinking": t, "signature": sig}));
        }
        content.push(json!({"type": "text", "text": text}));
        if let Some((id, name)) = &call {
            content.push(json!({"type": "tool_use", "id": id, "name": name, "input": {"location": "Paris"}}));
        }
        return axum::Json(json!({"id": id, "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop, "stop_sequence": null, "usage": usage}))
        .into_response();
    }

    let mut out = String::new();
    let mut ev = |name: &str, data: Value| out.push_str(&format!("event: {name}\ndata: {data}\n\n"));
    ev(
        "message_start",
        json!({"type": "message_start", "message": {"id": id, "type": "message", "role": "assistant",
        "content": [], "model": model, "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": input_tokens, "output_tokens": 1,
                  "cache_read_input_tokens": usage.get("cache_read_input_tokens"),
                  "cache_creation_input_tokens": usage.get("cache_creation_input_tokens")}}}),
    );
    // blocks after a thinking block are numbered from 1
    let base = u64::from(thinking.is_some());
    if let Some((t, sig)) = &thinking {
        ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
        );
        for p in pieces(t) {
            ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": p}}),
            );
        }
        ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": sig}}),
        );
        ev("content_block_stop", json!({"type": "content_block_stop", "index": 0}));
    }
    ev(
        "content_block_start",
        json!({"type": "content_block_start", "index": base, "content_block": {"type": "text", "text": ""}}),
    );
    ev("ping", json!({"type": "ping"}));
    for p in pieces(&text) {
        ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": base, "delta": {"type": "text_delta", "text": p}}),
        );
    }
    ev("content_block_stop", json!({"type": "content_block_stop", "index": base}));
    if let Some((id, name)) = &call {
        ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": base + 1,
            "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
        );
        for p in ["", "{\"locat", "ion\": \"Pa", "ris\"}"] {
            ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": base + 1, "delta": {"type": "input_json_delta", "partial_json": p}}),
            );
        }
        ev("content_block_stop", json!({"type": "content_block_stop", "index": base + 1}));
    }
    ev(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
        "usage": {"output_tokens": output_tokens}}),
    );
    ev("message_stop", json!({"type": "message_stop"}));
    sse(out)
}

// ---- Gemini ------------------------------------------------------------------------------------

fn google_error(status: u16, code_name: &str, message: &str) -> Response {
    let body = json!({"error": {"code": status, "message": message, "status": code_name}});
    (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
}

/// The checks the real Gemini API makes that our translation could get wrong.
fn gemini_invalid(s: &St, model: &str, body: &Value) -> Option<String> {
    let Some(contents) = body["contents"].as_array() else {
        return Some("* GenerateContentRequest.contents: contents is not specified".into());
    };
    if contents.is_empty() {
        return Some("* GenerateContentRequest.contents: contents is not specified".into());
    }
    for (i, c) in contents.iter().enumerate() {
        let role = c["role"].as_str().unwrap_or("");
        if role != "user" && role != "model" {
            return Some(format!("Please use a valid role: user, model. (contents[{i}].role = {role:?})"));
        }
        let parts = c["parts"].as_array().cloned().unwrap_or_default();
        if parts.is_empty() {
            return Some(format!("* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty."));
        }
        for (j, p) in parts.iter().enumerate() {
            let known =
                ["text", "inlineData", "fileData", "functionCall", "functionResponse", "thought", "thoughtSignature"];
            if let Some(k) = p.as_object().and_then(|o| o.keys().find(|k| !known.contains(&k.as_str()))) {
                return Some(format!("Invalid JSON payload received. Unknown name \"{k}\" at 'contents[{i}].parts[{j}]': Cannot find field."));
            }
        }
        // Gemini 3: the first functionCall of each model turn needs the signature it was given
        if model.starts_with("gemini-3") && role == "model" {
            if let Some((j, p)) = parts.iter().enumerate().find(|(_, p)| p.get("functionCall").is_some()) {
                let sig = p["thoughtSignature"].as_str().unwrap_or("");
                // Google's documented stand-ins for calls Gemini 3 did not make pass, as on the real API
                let stand_in = ["skip_thought_signature_validator", "context_engineering_is_the_way_to_go"];
                if !stand_in.contains(&sig) && !s.signatures.lock().unwrap().iter().any(|x| x == sig) {
                    let name = p["functionCall"]["name"].as_str().unwrap_or("");
                    return Some(format!("Function call is missing a thought_signature in functionCall parts. This is required for tools to work correctly. Additional data, function call `default_api:{name}` , position {}. (contents[{i}].parts[{j}])", j + 1));
                }
            }
        }
    }
    for key in body.as_object()?.keys() {
        let known = ["contents", "systemInstruction", "generationConfig", "tools", "toolConfig", "safetySettings"];
        if !known.contains(&key.as_str()) {
            return Some(format!("Invalid JSON payload received. Unknown name \"{key}\": Cannot find field."));
        }
    }
    None
}

/// `models/{model}:countTokens` with a `generateContentRequest` (the form that counts the system
/// instruction and tools too): the inner request is checked like a call and must name the same
/// model as the path. The count is the mock's own (words of every text part and of the system
/// instruction, plus 3 per content), not Gemini's tokenizer. Not counted in `calls()`; recorded.
fn gemini_count_tokens(s: &St, rest: &str, query: Option<String>, headers: &HeaderMap, body: Value) -> Response {
    s.requests.lock().unwrap().push(Recorded {
        path: format!("/v1beta/models/{rest}"),
        query,
        headers: headers.clone(),
        body: body.clone(),
    });
    if headers.get("x-goog-api-key").and_then(|v| v.to_str().ok()) != Some(s.key.as_str()) {
        return google_error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.");
    }
    let model = rest.trim_end_matches(":countTokens");
    if let Some(k) =
        body.as_object().and_then(|o| o.keys().find(|k| !["contents", "generateContentRequest"].contains(&k.as_str())))
    {
        return google_error(
            400,
            "INVALID_ARGUMENT",
            &format!("Invalid JSON payload received. Unknown name \"{k}\": Cannot find field."),
        );
    }
    let mut inner = body["generateContentRequest"].clone();
    if inner["model"] != json!(format!("models/{model}")) {
        return google_error(
            400,
            "INVALID_ARGUMENT",
            "* CountTokensRequest.generate_content_request.model: model must match the path",
        );
    }
    if let Some(o) = inner.as_object_mut() {
        o.remove("model");
    }
    if let Some(msg) = gemini_invalid(s, model, &inner) {
        return google_error(400, "INVALID_ARGUMENT", &msg);
    }
    if let Some(Reply::Error(status, code_name, message)) = s.script.lock().unwrap().pop_front() {
        return google_error(status, code_name, &message);
    }
    let words = |c: &Value| -> usize {
        c["parts"]
            .as_array()
            .map_or(0, |ps| ps.iter().map(|p| p["text"].as_str().map_or(0, |t| t.split_whitespace().count())).sum())
    };
    let contents = inner["contents"].as_array().cloned().unwrap_or_default();
    let n = words(&inner["systemInstruction"]) + contents.iter().map(|c| 3 + words(c)).sum::<usize>();
    axum::Json(json!({"totalTokens": n})).into_response()
}

async fn gemini(
    State(s): State<St>,
    Path(rest): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if rest.ends_with(":countTokens") {
        return gemini_count_tokens(&s, &rest, query, &headers, body);
    }
    let n = s.calls.fetch_add(1, Ordering::SeqCst) + 1;
    s.requests.lock().unwrap().push(Recorded {
        path: format!("/v1beta/models/{rest}"),
        query: query.clone(),
        headers: headers.clone(),
        body: body.clone(),
    });
    if headers.get("x-goog-api-key").and_then(|v| v.to_str().ok()) != Some(s.key.as_str()) {
        return google_error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.");
    }
    let Some((model, action)) = rest.split_once(':') else {
        return google_error(404, "NOT_FOUND", "method not found");
    };
    let stream = match action {
        "generateContent" => false,
        "streamGenerateContent" if query.as_deref() == Some("alt=sse") => true,
        _ => return google_error(404, "NOT_FOUND", &format!("unknown action {action} (query {query:?})")),
    };
    if let Some(msg) = gemini_invalid(&s, model, &body) {
        return google_error(400, "INVALID_ARGUMENT", &msg);
    }
    match s.script.lock().unwrap().pop_front().unwrap_or(Reply::Answer) {
        Reply::Error(status, code_name, message) => return google_error(status, code_name, &message),
        Reply::StreamError(code_name, message) if stream => {
            let err = json!({"error": {"code": 503, "message": message, "status": code_name}});
            return sse(format!("data: {err}\r\n\r\n"));
        }
        _ => {}
    }

    let contents = body["contents"].as_array().cloned().unwrap_or_default();
    let last = contents.last().cloned().unwrap_or(Value::Null);
    let parts = last["parts"].as_array().cloned().unwrap_or_default();
    let tool_result = parts.iter().find_map(|p| p.get("functionResponse")).map(|r| {
        let resp = &r["response"];
        resp.get("output")
            .map_or_else(|| resp.to_string(), |o| o.as_str().map_or_else(|| o.to_string(), str::to_string))
    });
    let user_text: String = parts.iter().filter_map(|p| p["text"].as_str()).collect();
    let tool = body["tools"][0]["functionDeclarations"][0]["name"].as_str().map(str::to_string);
    let (text, call) = match (&tool_result, &tool) {
        (Some(r), _) => (format!("tool said: {r}"), None),
        (None, Some(name)) if body["toolConfig"]["functionCallingConfig"]["mode"] != "NONE" => {
            (String::new(), Some(name.clone()))
        }
        _ => (format!("{} answer #{n} to: {user_text}", s.name), None),
    };
    let prompt = 10 + contents.len() as u64;
    let usage_final = json!({"promptTokenCount": prompt, "candidatesTokenCount": 20, "totalTokenCount": prompt + 20});
    let envelope = |parts: Value, finish: Option<&str>, usage: Value| {
        let mut cand = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
        if let Some(f) = finish {
            cand["finishReason"] = json!(f);
        }
        json!({"candidates": [cand], "usageMetadata": usage, "modelVersion": model, "responseId": format!("mock{n}")})
    };
    let gemini3 = model.starts_with("gemini-3");
    let call_part = |name: &str| {
        let mut part = json!({"functionCall": {"name": name, "args": {"location": "Paris"}}});
        if gemini3 {
            // bytes in python-genai's Part.thought_signature, base64 on the wire (with + / =)
            let sig = format!("Cn8Bmock+/sig{n}==");
            s.signatures.lock().unwrap().push(sig.clone());
            part["thoughtSignature"] = json!(sig);
        }
        part
    };
    let thought = (body["generationConfig"]["thinkingConfig"]["includeThoughts"] == true)
        .then(|| json!({"text": format!("Considering: {user_text}"), "thought": true}));
    let with_thought = |parts: Value| match (&thought, parts) {
        (Some(t), Value::Array(mut p)) => {
            p.insert(0, t.clone());
            Value::Array(p)
        }
        (_, p) => p,
    };

    if !stream {
        let parts = match &call {
            Some(name) => json!([call_part(name)]),
            None => json!([{"text": text}]),
        };
        return axum::Json(envelope(with_thought(parts), Some("STOP"), usage_final)).into_response();
    }
    let mut out = String::new();
    let running = json!({"promptTokenCount": prompt, "totalTokenCount": prompt});
    if let Some(t) = &thought {
        out.push_str(&format!("data: {}\r\n\r\n", envelope(json!([t]), None, running.clone())));
    }
    match &call {
        Some(name) => {
            out.push_str(&format!("data: {}\r\n\r\n", envelope(json!([call_part(name)]), Some("STOP"), usage_final)))
        }
        None => {
            let ps = pieces(&text);
            for (i, p) in ps.iter().enumerate() {
                let last = i + 1 == ps.len();
                let ev = if last {
                    envelope(json!([{"text": p}]), Some("STOP"), usage_final.clone())
                } else {
                    envelope(json!([{"text": p}]), None, running.clone())
                };
                out.push_str(&format!("data: {ev}\r\n\r\n"));
            }
        }
    }
    sse(out)
}
