//! Shared test plumbing: one loaded model per test binary, mock upstreams that are real HTTP
//! servers speaking the OpenAI wire format and counting their calls, and a gateway on port 0.
#![allow(dead_code)]

pub mod binary;
pub mod providers;
pub mod redis_server;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt;
use futures_util::StreamExt;
use serde_json::{json, Value};
use switchyard::app::{self, Running};
use switchyard::config::Config;
use switchyard::embed::Embedder;

pub fn embedder() -> Arc<dyn Embedder> {
    static E: OnceLock<Arc<dyn Embedder>> = OnceLock::new();
    E.get_or_init(|| app::load_embedder(&Config::default()).expect("model loads")).clone()
}

/// What the mock does on one call.
#[derive(Clone, Debug)]
pub enum Behavior {
    Ok,
    Status(u16, Option<&'static str>),
    /// Accepts and never answers.
    Hang,
    /// Stream: headers, then the connection drops before any event.
    BreakBeforeFirst,
    /// Stream: two content chunks, then the connection drops.
    BreakAfterFirst,
    /// Answer cut short by the token limit (must not be cached).
    Truncated,
    /// A normal answer naming a dated model snapshot (`mini-2024-07-18`), as real upstreams do.
    Dated,
}

#[derive(Clone)]
struct MockState {
    name: String,
    calls: Arc<AtomicUsize>,
    cancelled: Arc<AtomicUsize>,
    script: Arc<Mutex<VecDeque<Behavior>>>,
    latency: Duration,
    last_body: Arc<Mutex<Option<Value>>>,
    last_headers: Arc<Mutex<Option<HeaderMap>>>,
    /// Longest conversation (characters of message text) the model takes; 0: no limit.
    context_chars: Arc<AtomicUsize>,
}

pub struct MockUpstream {
    pub addr: SocketAddr,
    pub name: String,
    calls: Arc<AtomicUsize>,
    cancelled: Arc<AtomicUsize>,
    script: Arc<Mutex<VecDeque<Behavior>>>,
    last_body: Arc<Mutex<Option<Value>>>,
    last_headers: Arc<Mutex<Option<HeaderMap>>>,
    context_chars: Arc<AtomicUsize>,
}

/// Counts a hanging call whose connection the gateway dropped (the handler future is dropped).
struct CancelGuard(Arc<AtomicUsize>);

impl Drop for CancelGuard {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl MockUpstream {
    pub async fn start(name: &str) -> MockUpstream {
        Self::start_with(name, Duration::ZERO).await
    }

    pub async fn start_with(name: &str, latency: Duration) -> MockUpstream {
        let state = MockState {
            name: name.into(),
            calls: Arc::default(),
            cancelled: Arc::default(),
            script: Arc::default(),
            latency,
            last_body: Arc::default(),
            last_headers: Arc::default(),
            context_chars: Arc::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/embeddings", post(embeddings))
            .route("/v1/moderations", post(moderations))
            .route("/v1/audio/speech", post(speech))
            .route("/v1/audio/transcriptions", post(transcriptions))
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener.tap_io(switchyard::app::no_delay), app).await.unwrap() });
        MockUpstream {
            addr,
            name: name.into(),
            calls: state.calls,
            cancelled: state.cancelled,
            script: state.script,
            last_body: state.last_body,
            last_headers: state.last_headers,
            context_chars: state.context_chars,
        }
    }

    /// From now on, a conversation longer than `chars` characters of message text is refused
    /// as OpenAI refuses a prompt beyond a model's context window (400 `context_length_exceeded`).
    pub fn context_window(&self, chars: usize) -> &Self {
        self.context_chars.store(chars, Ordering::SeqCst);
        self
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Hanging calls abandoned by the gateway (it closed the connection).
    pub fn cancelled(&self) -> usize {
        self.cancelled.load(Ordering::SeqCst)
    }

    pub fn then(&self, b: Behavior) -> &Self {
        self.script.lock().unwrap().push_back(b);
        self
    }

    pub fn last_body(&self) -> Value {
        self.last_body.lock().unwrap().clone().unwrap_or(Value::Null)
    }

    pub fn last_headers(&self) -> HeaderMap {
        self.last_headers.lock().unwrap().clone().unwrap_or_default()
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

fn last_user(body: &Value) -> String {
    body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_string()
}

async fn chat(State(s): State<MockState>, headers: HeaderMap, body: Bytes) -> Response {
    let n = s.calls.fetch_add(1, Ordering::SeqCst) + 1;
    let body: Value = serde_json::from_slice(&body).unwrap();
    *s.last_body.lock().unwrap() = Some(body.clone());
    *s.last_headers.lock().unwrap() = Some(headers);
    let window = s.context_chars.load(Ordering::SeqCst);
    let length: usize = body["messages"]
        .as_array()
        .map(|m| m.iter().map(|m| m["content"].as_str().map_or(0, str::len)).sum())
        .unwrap_or(0);
    if window > 0 && length > window {
        // OpenAI's words and code for it
        let message = format!("This model's maximum context length is {window} tokens. However, your messages resulted in {length} tokens. Please reduce the length of the messages.");
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": {"message": message, "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}})),
        )
            .into_response();
    }
    let behavior = s.script.lock().unwrap().pop_front().unwrap_or(Behavior::Ok);
    if !s.latency.is_zero() {
        tokio::time::sleep(s.latency).await;
    }
    let mut model = body["model"].as_str().unwrap_or("?").to_string();
    if matches!(behavior, Behavior::Dated) {
        model.push_str("-2024-07-18");
    }
    let text = format!("{} answer #{n} to: {}", s.name, last_user(&body));
    let stream = body["stream"] == true;
    let usage = json!({"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30});
    let chunk = |delta: Value, finish: Value| {
        format!(
            "data: {}\n\n",
            json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1700000000, "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        )
    };
    match behavior {
        Behavior::Status(code, retry_after) => {
            let mut r = (
                StatusCode::from_u16(code).unwrap(),
                axum::Json(json!({"error": {"message": format!("mock error {code}"), "type": "server_error", "param": null, "code": null}})),
            )
                .into_response();
            if let Some(ra) = retry_after {
                r.headers_mut().insert("retry-after", ra.parse().unwrap());
            }
            r
        }
        Behavior::Hang => {
            let guard = CancelGuard(s.cancelled.clone());
            tokio::time::sleep(Duration::from_secs(3600)).await;
            std::mem::forget(guard);
            StatusCode::OK.into_response()
        }
        Behavior::BreakBeforeFirst | Behavior::BreakAfterFirst => {
            let mut parts: Vec<Result<Bytes, std::io::Error>> = Vec::new();
            if matches!(behavior, Behavior::BreakAfterFirst) {
                parts.push(Ok(Bytes::from(chunk(json!({"role": "assistant", "content": ""}), Value::Null))));
                parts.push(Ok(Bytes::from(chunk(json!({"content": "partial "}), Value::Null))));
            }
            parts.push(Err(std::io::Error::other("connection reset by mock")));
            // a pause before the reset, so the chunks before it are on the wire first
            let parts = futures_util::stream::iter(parts).then(|p| async move {
                if p.is_err() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                p
            });
            Response::builder().header("content-type", "text/event-stream").body(Body::from_stream(parts)).unwrap()
        }
        Behavior::Ok | Behavior::Truncated | Behavior::Dated => {
            let finish = if matches!(behavior, Behavior::Truncated) { "length" } else { "stop" };
            // a reasoning model when asked for effort: DeepSeek's `reasoning_content` in streams,
            // OpenRouter's `reasoning` in whole answers (the gateway reads both)
            let thinks = body.get("reasoning_effort").is_some();
            let mut usage = usage.clone();
            if thinks {
                // as OpenAI reports a reasoning model's usage
                usage["completion_tokens_details"] = json!({"reasoning_tokens": 3, "audio_tokens": 0,
                    "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0});
            }
            if stream {
                let mut out = chunk(json!({"role": "assistant", "content": ""}), Value::Null);
                if thinks {
                    out.push_str(&chunk(json!({"reasoning_content": "Thinking it over."}), Value::Null));
                }
                for w in text.split_inclusive(' ') {
                    out.push_str(&chunk(json!({"content": w}), Value::Null));
                }
                out.push_str(&chunk(json!({}), json!(finish)));
                if body["stream_options"]["include_usage"] == true {
                    out.push_str(&format!("data: {}\n\n", json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1700000000, "model": model, "choices": [], "usage": usage})));
                }
                out.push_str("data: [DONE]\n\n");
                Response::builder().header("content-type", "text/event-stream").body(Body::from(out)).unwrap()
            } else {
                let mut message = json!({"role": "assistant", "content": text});
                if thinks {
                    message["reasoning"] = json!("Thinking it over.");
                }
                axum::Json(json!({
                    "id": "chatcmpl-mock", "object": "chat.completion", "created": 1700000000, "model": model,
                    "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": null}],
                    "usage": usage, "system_fingerprint": "fp_mock"
                }))
                .into_response()
            }
        }
    }
}

/// OpenAI's `POST /v1/embeddings`: `dimensions` values (1536 by default, as text-embedding-3-small)
/// for each input, derived from the text and the mock's name (so two upstreams' vectors differ),
/// as floats or, for `encoding_format: "base64"` (what the OpenAI SDKs ask for), little-endian
/// f32 bytes in base64. Usage counts a token per word. Follows the mock's script like `chat`.
async fn embeddings(State(s): State<MockState>, headers: HeaderMap, body: Bytes) -> Response {
    s.calls.fetch_add(1, Ordering::SeqCst);
    let body: Value = serde_json::from_slice(&body).unwrap();
    *s.last_body.lock().unwrap() = Some(body.clone());
    *s.last_headers.lock().unwrap() = Some(headers);
    match s.script.lock().unwrap().pop_front().unwrap_or(Behavior::Ok) {
        Behavior::Status(code, _) => {
            return (
                StatusCode::from_u16(code).unwrap(),
                axum::Json(json!({"error": {"message": format!("mock error {code}"), "type": "server_error", "param": null, "code": null}})),
            )
                .into_response()
        }
        Behavior::Ok => {}
        other => panic!("the embeddings mock does not do {other:?}"),
    }
    let inputs: Vec<String> = match &body["input"] {
        Value::String(t) => vec![t.clone()],
        Value::Array(a) => a.iter().map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string)).collect(),
        other => panic!("input {other}"),
    };
    let dims = body["dimensions"].as_u64().unwrap_or(1536) as usize;
    let base64 = body["encoding_format"] == "base64";
    let mut tokens = 0;
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            tokens += text.split_whitespace().count();
            let seed =
                text.bytes().chain(s.name.bytes()).fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
            let v: Vec<f32> = (0..dims).map(|i| ((seed.wrapping_add(i as u32) % 1000) as f32) / 1000.0).collect();
            let embedding = if base64 {
                json!(mock_base64(&v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    axum::Json(json!({"object": "list", "data": data, "model": body["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}))
    .into_response()
}

/// OpenAI's `POST /v1/moderations`: flags an input containing "kill". Follows the script's
/// `Status` entries (with the caller's `Authorization` header quoted in the error, as a careless
/// server might, so the gateway's scrubbing is tested).
async fn moderations(State(s): State<MockState>, headers: HeaderMap, body: Bytes) -> Response {
    s.calls.fetch_add(1, Ordering::SeqCst);
    let body: Value = serde_json::from_slice(&body).unwrap();
    *s.last_body.lock().unwrap() = Some(body.clone());
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    *s.last_headers.lock().unwrap() = Some(headers);
    if let Some(Behavior::Status(code, _)) = s.script.lock().unwrap().pop_front() {
        let message = format!("mock error {code} for {auth}");
        return (
            StatusCode::from_u16(code).unwrap(),
            axum::Json(json!({"error": {"message": message, "type": "server_error", "param": null, "code": null}})),
        )
            .into_response();
    }
    let flagged = body["input"].to_string().contains("kill");
    axum::Json(json!({"id": "modr-mock", "model": body["model"].as_str().unwrap_or("omni-moderation-latest"),
        "results": [{"flagged": flagged, "categories": {"violence": flagged, "harassment": false},
            "category_scores": {"violence": if flagged { 0.9 } else { 0.01 }, "harassment": 0.0},
            "category_applied_input_types": {"violence": ["text"], "harassment": ["text"]}}]}))
    .into_response()
}

/// OpenAI's `POST /v1/audio/speech`: audio bytes (the input's text behind an MP3 frame header).
async fn speech(State(s): State<MockState>, headers: HeaderMap, body: Bytes) -> Response {
    s.calls.fetch_add(1, Ordering::SeqCst);
    let body: Value = serde_json::from_slice(&body).unwrap();
    *s.last_body.lock().unwrap() = Some(body.clone());
    *s.last_headers.lock().unwrap() = Some(headers);
    let mut audio = vec![0xFF, 0xFB, 0x90, 0x64];
    audio.extend_from_slice(body["input"].as_str().unwrap_or_default().as_bytes());
    Response::builder().header("content-type", "audio/mpeg").body(Body::from(audio)).unwrap()
}

/// OpenAI's `POST /v1/audio/transcriptions`: a multipart upload; answers with how many bytes it
/// received and whether the form carried the file and the model.
async fn transcriptions(State(s): State<MockState>, headers: HeaderMap, body: Bytes) -> Response {
    s.calls.fetch_add(1, Ordering::SeqCst);
    let ct = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let text = String::from_utf8_lossy(&body).to_string();
    let form = ct.starts_with("multipart/form-data; boundary=")
        && text.contains("name=\"file\"")
        && text.contains("name=\"model\"");
    *s.last_body.lock().unwrap() = Some(json!({"content_type": ct, "len": body.len(), "form": form}));
    *s.last_headers.lock().unwrap() = Some(headers);
    axum::Json(json!({"text": format!("heard {} bytes, form {form}", body.len())})).into_response()
}

fn mock_base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = u32::from(c[0]) << 16 | u32::from(*c.get(1).unwrap_or(&0)) << 8 | u32::from(*c.get(2).unwrap_or(&0));
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            out.push(if i <= c.len() { T[(n >> shift) as usize & 63] as char } else { '=' });
        }
    }
    out
}

/// A config with a cheap and a premium tier on two mocks, prices set, cache on.
pub fn config_for(cheap: &MockUpstream, premium: &MockUpstream, extra: &str) -> Config {
    let text = format!(
        r#"
        [server]
        listen = "127.0.0.1:0"
        {extra}
        [dispatch]
        backoff_base = "10ms"
        backoff_max = "50ms"
        breaker_cooldown = "1s"
        [tiers]
        cheap = ["{c}:mini"]
        premium = ["{p}:large"]
        [providers.{c}]
        kind = "openai"
        base_url = "{cu}"
        api_key = "sk-cheap-secret-key"
        first_byte_timeout = "2s"
        [providers.{p}]
        kind = "openai"
        base_url = "{pu}"
        api_key = "sk-premium-secret-key"
        first_byte_timeout = "2s"
        [prices]
        mini = {{ input = 1.0, output = 2.0 }}
        large = {{ input = 10.0, output = 20.0 }}
        "#,
        c = cheap.name,
        p = premium.name,
        cu = cheap.base_url(),
        pu = premium.base_url(),
    );
    Config::parse(&text).unwrap_or_else(|e| panic!("test config: {e}\n{text}"))
}

pub async fn gateway(config: Config) -> Running {
    app::start(config, Some(embedder()), false).await.expect("gateway starts")
}

pub fn url(g: &Running, path: &str) -> String {
    format!("http://{}{}", g.addr, path)
}

pub fn user(q: &str) -> Value {
    json!({"model": "cheap", "messages": [{"role": "user", "content": q}]})
}

/// POST a chat request; returns (status, headers, JSON body).
pub async fn post_chat(g: &Running, body: &Value, headers: &[(&str, &str)]) -> (u16, HeaderMap, Value) {
    let mut rb = reqwest::Client::new().post(url(g, "/v1/chat/completions")).json(body);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let resp = rb.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, headers, body)
}

pub fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// One unlabelled series from the gateway's `/metrics` (0 when absent).
pub async fn metric(g: &Running, name: &str) -> f64 {
    let text = reqwest::get(url(g, "/metrics")).await.unwrap().text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).and_then(|v| v.parse().ok()).unwrap_or(0.0)
}

/// Checks a `/metrics` body the way Prometheus and OpenMetrics parsers read it: every family is
/// declared once (`# TYPE`) before its samples, a family named `_total` is a counter and a
/// counter is named `_total`, and every sample belongs to a declared family and has a number.
pub fn check_exposition(text: &str) {
    let mut types: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            assert!(types.insert(name, kind).is_none(), "{name} declared twice");
            assert_eq!(name.ends_with("_total"), kind == "counter", "{name} is a {kind}");
        } else if !line.starts_with('#') {
            let (series, value) = line.rsplit_once(' ').unwrap_or((line, ""));
            let name = series.split('{').next().unwrap_or(series);
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| types.get(f) == Some(&"histogram")))
                .unwrap_or(name);
            assert!(types.contains_key(family), "{name} has no # TYPE before it");
            assert!(value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value), "{line}");
        }
    }
}
