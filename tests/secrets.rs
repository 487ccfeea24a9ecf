#![allow(clippy::unwrap_used, clippy::expect_used)]
//! No secret leaves the gateway: a full scenario on the real binary (mock upstreams of all three
//! provider kinds, each with a distinctive key; two gateway keys and an admin key; streamed and
//! not; cache misses and hits; the shared tier on a real `redis-server`; a snapshot written at
//! shutdown; upstream 401s and 500s and mid-stream error events that echo the provider's key
//! back), run with `RUST_LOG=trace`. Then every log line, every response body and header,
//! `/metrics`, `/health`, the snapshot file and every record of the Redis stream are scanned for
//! each key, raw and in its obvious encodings (base64, base64url, hex). None may appear.

mod common;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use common::providers::{ProviderMock, Reply};
use common::redis_server::start_redis;
use serde_json::{json, Value};

const OPENAI_KEY: &str = "sk-oa-LEAKCHECK-5f3a9c1e7b2d4068";
const ANTHROPIC_KEY: &str = "sk-ant-LEAKCHECK-8e2b6d0f4a1c3957";
const GEMINI_KEY: &str = "AIzaLEAKCHECK-1d7f3b9e5c2a0846";
const GATEWAY_KEYS: [&str; 2] = ["gwk-LEAKCHECK-alpha-7c1e9d2b5a", "gwk-LEAKCHECK-beta-3f8a6e0c4d"];
const ADMIN_KEY: &str = "adm-LEAKCHECK-0b4e8a2c6f1d3957";
/// What the mocks put in their mid-stream error events: the key itself.
const ANTHROPIC_STREAM_ERROR: &str = "overloaded; your key was sk-ant-LEAKCHECK-8e2b6d0f4a1c3957";
const GEMINI_STREAM_ERROR: &str = "quota exceeded for AIzaLEAKCHECK-1d7f3b9e5c2a0846";

// ---- an OpenAI-wire upstream that echoes the credential it was sent ---------------------------

/// `/v1/chat/completions`: answers normally, unless the last user message asks for a failure, in
/// which case the error (status, plain text, or an error event mid-stream) quotes the
/// `Authorization` header it received, as careless upstreams do.
async fn openai_echo(
    State(seen): axum::extract::State<Arc<Mutex<Vec<String>>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    seen.lock().unwrap().push(auth.clone());
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let prompt = body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_string();
    let stream = body["stream"] == true;
    let model = body["model"].as_str().unwrap_or("m").to_string();
    let chunk = |delta: Value, finish: Value| {
        format!(
            "data: {}\n\n",
            json!({"id": "chatcmpl-echo", "object": "chat.completion.chunk", "created": 1700000000, "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        )
    };
    if prompt.contains("fail401") {
        let e = json!({"error": {"message": format!("Incorrect API key provided: {auth}"), "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}});
        return (StatusCode::UNAUTHORIZED, axum::Json(e)).into_response();
    }
    if prompt.contains("fail500") {
        return (StatusCode::INTERNAL_SERVER_ERROR, format!("upstream crashed while handling {auth}")).into_response();
    }
    if prompt.contains("failstream") && stream {
        let out = [
            chunk(json!({"role": "assistant", "content": "partial "}), Value::Null),
            format!(
                "data: {}\n\n",
                json!({"error": {"message": format!("stream aborted for {auth}"), "type": "server_error"}})
            ),
        ]
        .concat();
        return Response::builder().header("content-type", "text/event-stream").body(Body::from(out)).unwrap();
    }
    let text = format!("echo answer to: {prompt}");
    let usage = json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15});
    if stream {
        let mut out = chunk(json!({"role": "assistant", "content": ""}), Value::Null);
        for w in text.split_inclusive(' ') {
            out.push_str(&chunk(json!({"content": w}), Value::Null));
        }
        out.push_str(&chunk(json!({}), json!("stop")));
        out.push_str(&format!("data: {}\n\n", json!({"id": "chatcmpl-echo", "object": "chat.completion.chunk", "created": 1700000000, "model": model, "choices": [], "usage": usage})));
        out.push_str("data: [DONE]\n\n");
        return Response::builder().header("content-type", "text/event-stream").body(Body::from(out)).unwrap();
    }
    axum::Json(json!({"id": "chatcmpl-echo", "object": "chat.completion", "created": 1700000000, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}], "usage": usage}))
    .into_response()
}

use axum::extract::State;

async fn start_openai_echo() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/v1/chat/completions", post(openai_echo)).with_state(seen.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/v1"), seen)
}

// ---- redis and the binary ----------------------------------------------------------------------

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Everything a secret could hide in, by where it came from.
#[derive(Default)]
struct Evidence(Vec<(String, Vec<u8>)>);

impl Evidence {
    fn add(&mut self, source: impl Into<String>, bytes: impl Into<Vec<u8>>) {
        self.0.push((source.into(), bytes.into()));
    }
}

fn b64(data: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..=chunk.len() {
            out.push(alphabet[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
        if pad {
            out.push_str(&"=".repeat(3 - chunk.len()));
        }
    }
    out
}

/// The secret and the forms it could leak in. Base64 of a string depends on its alignment in
/// the encoded text, so each of the three alignments is searched (without its ragged edges).
fn encodings(secret: &str) -> Vec<(String, String)> {
    const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = vec![
        ("raw".to_string(), secret.to_string()),
        ("hex".to_string(), hex::encode(secret)),
        ("HEX".to_string(), hex::encode_upper(secret)),
    ];
    for (name, alphabet) in [("base64", STD), ("base64url", URL)] {
        for shift in 0..3 {
            let prefixed: Vec<u8> = std::iter::repeat_n(b'x', shift).chain(secret.bytes()).collect();
            let enc = b64(&prefixed, alphabet, false);
            // drop the characters that mix in the prefix or the unknown next byte
            let skip = if shift == 0 { 0 } else { 4 };
            let core: String = enc.chars().skip(skip).take(enc.len().saturating_sub(skip + 4)).collect();
            if core.len() >= 12 {
                out.push((format!("{name}+{shift}"), core));
            }
        }
    }
    out
}

fn flatten(v: &redis::Value, out: &mut Vec<u8>) {
    match v {
        redis::Value::BulkString(b) => {
            out.extend_from_slice(b);
            out.push(b'\n');
        }
        redis::Value::SimpleString(s) => out.extend_from_slice(s.as_bytes()),
        redis::Value::Array(a) | redis::Value::Set(a) => a.iter().for_each(|x| flatten(x, out)),
        redis::Value::Map(m) => m.iter().for_each(|(k, x)| {
            flatten(k, out);
            flatten(x, out);
        }),
        other => out.extend_from_slice(format!("{other:?}").as_bytes()),
    }
}

async fn send(
    client: &reqwest::Client,
    base: &str,
    key: Option<&str>,
    body: &Value,
    evidence: &mut Evidence,
    label: &str,
) -> (u16, String) {
    let mut rb = client.post(format!("{base}/v1/chat/completions")).json(body);
    if let Some(k) = key {
        rb = rb.bearer_auth(k);
    }
    let resp = rb.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = format!("{:?}", resp.headers());
    let text = resp.text().await.unwrap();
    evidence.add(format!("{label}: response headers"), headers);
    evidence.add(format!("{label}: response body"), text.clone());
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_provider_or_gateway_key_appears_in_logs_errors_metrics_health_snapshots_or_redis() {
    assert!(ANTHROPIC_STREAM_ERROR.contains(ANTHROPIC_KEY) && GEMINI_STREAM_ERROR.contains(GEMINI_KEY));
    let redis_server = start_redis().await;
    let redis_port = redis_server.port;
    let (openai_url, openai_seen) = start_openai_echo().await;
    let anthropic = ProviderMock::anthropic("an", ANTHROPIC_KEY).await;
    let gemini = ProviderMock::gemini("gm", GEMINI_KEY).await;
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("cache.snap");
    let stream = "switchyard:secrets";
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"
gateway_keys = "{k1},{k2}"
admin_key = "{ADMIN_KEY}"

[cache]
backend = "redis://127.0.0.1:{redis_port}"
shared_stream = "{stream}"
snapshot = "{snap}"

[dispatch]
attempts_per_deployment = 1
backoff_base = "10ms"
backoff_max = "20ms"
breaker_failures = 1000
breaker_min_requests = 1000

[tiers]
cheap = ["oa:gpt-4o-mini"]
premium = ["an:claude-haiku-4-5"]
gem = ["gm:gemini-2.5-flash"]

[providers.oa]
kind = "openai"
base_url = "{openai_url}"
api_key = "{OPENAI_KEY}"

[providers.an]
kind = "anthropic"
base_url = "{an}"
api_key = "{ANTHROPIC_KEY}"

[providers.gm]
kind = "gemini"
base_url = "{gm}"
api_key = "{GEMINI_KEY}"
"#,
        k1 = GATEWAY_KEYS[0],
        k2 = GATEWAY_KEYS[1],
        snap = snapshot.display(),
        an = anthropic.base_url(),
        gm = gemini.base_url(),
    );
    let cfg_path = dir.path().join("switchyard.toml");
    std::fs::write(&cfg_path, &config).unwrap();

    let mut child = Command::new(common::binary::BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&cfg_path)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let gw = Killed(child);
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let (addr_tx, addr_rx) = std::sync::mpsc::channel::<String>();
    let out_reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut byte = [0u8; 1];
        let mut line = Vec::new();
        let mut sent = false;
        while stdout.read(&mut byte).map(|n| n > 0).unwrap_or(false) {
            all.push(byte[0]);
            line.push(byte[0]);
            if byte[0] == b'\n' {
                let l = String::from_utf8_lossy(&line).to_string();
                if !sent {
                    if let Some(a) = l.trim().rsplit("http://").next().filter(|_| l.contains("http://")) {
                        let _ = addr_tx.send(a.to_string());
                        sent = true;
                    }
                }
                line.clear();
            }
        }
        all
    });
    let addr = addr_rx.recv_timeout(Duration::from_secs(60)).expect("the gateway printed its address");
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();
    let mut ev = Evidence::default();

    let mut failures_seen = 0;
    for (i, (tier, provider)) in
        [("cheap", "openai"), ("premium", "anthropic"), ("gem", "gemini")].into_iter().enumerate()
    {
        let key = GATEWAY_KEYS[i % 2];
        let ask = |q: String, stream: bool| json!({"model": tier, "stream": stream, "messages": [{"role": "user", "content": q}]});
        let q = format!("What is the capital of France? ({provider})");
        // a miss, an exact hit, a near-identical question; then the same streamed
        for (n, (text, stream)) in [
            (q.clone(), false),
            (q.clone(), false),
            (format!("{q} Thanks!"), false),
            (q.clone(), true),
            (q.clone(), true),
        ]
        .into_iter()
        .enumerate()
        {
            let (status, body) =
                send(&client, &base, Some(key), &ask(text, stream), &mut ev, &format!("{provider} ok #{n}")).await;
            assert_eq!(status, 200, "{provider}: {body}");
        }
        // failures whose upstream bodies carry the key
        match provider {
            "anthropic" => {
                anthropic.then(Reply::Error(
                    401,
                    "authentication_error",
                    format!("invalid x-api-key: {ANTHROPIC_KEY}"),
                ));
                anthropic.then(Reply::Error(500, "api_error", format!("internal error handling key {ANTHROPIC_KEY}")));
                anthropic.then(Reply::StreamError("overloaded_error", ANTHROPIC_STREAM_ERROR));
            }
            "gemini" => {
                gemini.then(Reply::Error(401, "UNAUTHENTICATED", format!("API key not valid: {GEMINI_KEY}")));
                gemini.then(Reply::Error(500, "INTERNAL", format!("internal error for key {GEMINI_KEY}")));
                gemini.then(Reply::StreamError("RESOURCE_EXHAUSTED", GEMINI_STREAM_ERROR));
            }
            _ => {}
        }
        let (s401, body) = send(
            &client,
            &base,
            Some(key),
            &ask(format!("fail401 please {provider}"), false),
            &mut ev,
            &format!("{provider} 401"),
        )
        .await;
        assert_eq!(s401, 502, "an upstream 401 is the gateway's credential problem: {body}");
        let (s500, body) = send(
            &client,
            &base,
            Some(key),
            &ask(format!("fail500 please {provider}"), false),
            &mut ev,
            &format!("{provider} 500"),
        )
        .await;
        assert_eq!(s500, 502, "{body}");
        let (s, body) = send(
            &client,
            &base,
            Some(key),
            &ask(format!("failstream please {provider}"), true),
            &mut ev,
            &format!("{provider} stream error"),
        )
        .await;
        assert!(s == 200 || s == 502, "{provider}: {s} {body}");
        assert!(body.contains("\"error\""), "{provider}: the stream ends with an error event: {body}");
        failures_seen += 3;
    }
    // the Responses API: a stored answer, then upstream failures whose bodies carry the key
    let responses = |body: Value, label: &'static str| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let r = client.post(format!("{base}/v1/responses")).bearer_auth(GATEWAY_KEYS[0]).json(&body);
            let resp = r.send().await.unwrap();
            let status = resp.status().as_u16();
            let headers = format!("{:?}", resp.headers());
            (status, headers, resp.text().await.unwrap(), label)
        }
    };
    for (body, want, fail) in [
        (json!({"model": "premium", "input": "What is the capital of Spain? (responses)"}), 200, None),
        (
            json!({"model": "premium", "input": "fail401 please (responses)"}),
            502,
            Some(Reply::Error(401, "authentication_error", format!("invalid x-api-key: {ANTHROPIC_KEY}"))),
        ),
        (
            // the stream breaks before its first byte: a 502 (scrubbed), not a broken stream
            json!({"model": "premium", "stream": true, "input": "failstream please (responses)"}),
            502,
            Some(Reply::StreamError("overloaded_error", ANTHROPIC_STREAM_ERROR)),
        ),
    ] {
        if let Some(reply) = fail {
            anthropic.then(reply);
        }
        let (status, headers, text, label) = responses(body, "responses").await;
        assert_eq!(status, want, "{text}");
        ev.add(format!("{label}: response headers"), headers);
        ev.add(format!("{label}: response body"), text);
    }

    // the gateway's own refusals
    let (s, _) = send(
        &client,
        &base,
        Some("gwk-LEAKCHECK-wrong"),
        &json!({"model": "cheap", "messages": []}),
        &mut ev,
        "bad key",
    )
    .await;
    assert_eq!(s, 401);
    let (s, _) = send(&client, &base, None, &json!({"model": "cheap", "messages": []}), &mut ev, "no key").await;
    assert_eq!(s, 401);
    let (s, _) = send(
        &client,
        &base,
        Some(GATEWAY_KEYS[0]),
        &json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}),
        &mut ev,
        "unknown model",
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = send(&client, &base, Some(GATEWAY_KEYS[1]), &json!({"model": "cheap"}), &mut ev, "bad body").await;
    assert_eq!(s, 400);
    for path in ["/metrics", "/health", "/v1/models"] {
        let r = client.get(format!("{base}{path}")).bearer_auth(GATEWAY_KEYS[0]).send().await.unwrap();
        ev.add(format!("GET {path}"), r.text().await.unwrap());
    }
    let admin = client.get(format!("{base}/dashboard")).bearer_auth(ADMIN_KEY).send().await.unwrap();
    ev.add("GET /dashboard (admin)", admin.text().await.unwrap());

    // the stream records, once every answer reached Redis
    let redis_client = redis::Client::open(format!("redis://127.0.0.1:{redis_port}")).unwrap();
    let mut con = redis_client.get_multiplexed_async_connection().await.unwrap();
    let mut records = Vec::new();
    for _ in 0..100 {
        let v: redis::Value = redis::cmd("XRANGE").arg(stream).arg("-").arg("+").query_async(&mut con).await.unwrap();
        records.clear();
        flatten(&v, &mut records);
        if let redis::Value::Array(a) = &v {
            if a.len() >= 6 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(records.len() > 500, "answers were published to the stream ({} bytes)", records.len());
    ev.add("redis stream records", records);
    // and the stored responses
    let mut stored = Vec::new();
    for _ in 0..100 {
        let keys: Vec<String> = redis::cmd("KEYS").arg("switchyard:response:*").query_async(&mut con).await.unwrap();
        if let Some(k) = keys.first() {
            let v: String = redis::cmd("GET").arg(k).query_async(&mut con).await.unwrap();
            stored.extend_from_slice(k.as_bytes());
            stored.extend_from_slice(v.as_bytes());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(stored.len() > 100, "the stored response reached Redis");
    ev.add("redis stored responses", stored);

    // a clean shutdown writes the snapshot
    let pid = gw.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let mut gw = gw;
    for _ in 0..200 {
        if gw.0.try_wait().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let logs = err_reader.join().unwrap();
    let out = out_reader.join().unwrap();
    let snap = std::fs::read(&snapshot).expect("the snapshot was written at shutdown");
    assert!(snap.len() > 200, "the snapshot holds the cached answers");
    ev.add("snapshot file", snap);
    let log_text = String::from_utf8_lossy(&logs).to_string();
    assert!(
        log_text.lines().count() > 100 && log_text.contains("TRACE"),
        "trace logging was on ({} lines)",
        log_text.lines().count()
    );
    ev.add("stdout", out);
    for (n, line) in log_text.lines().enumerate() {
        ev.add(format!("log line {}", n + 1), line.to_string());
    }
    // the keys were really in play: every upstream saw its own
    assert!(openai_seen.lock().unwrap().iter().all(|a| a == &format!("Bearer {OPENAI_KEY}")));
    assert!(anthropic.calls() >= 5 && gemini.calls() >= 5, "calls: {} {}", anthropic.calls(), gemini.calls());
    assert_eq!(failures_seen, 9);

    let secrets = [
        ("openai key", OPENAI_KEY),
        ("anthropic key", ANTHROPIC_KEY),
        ("gemini key", GEMINI_KEY),
        ("gateway key 1", GATEWAY_KEYS[0]),
        ("gateway key 2", GATEWAY_KEYS[1]),
        ("admin key", ADMIN_KEY),
    ];
    let mut leaks = Vec::new();
    let mut scanned = 0usize;
    for (source, bytes) in &ev.0 {
        scanned += bytes.len();
        let text = String::from_utf8_lossy(bytes);
        for (name, secret) in secrets {
            for (enc, needle) in encodings(secret) {
                if let Some(at) = text.find(&needle) {
                    let from = text[..at].char_indices().rev().nth(80).map_or(0, |(i, _)| i);
                    let ctx: String = text[from..].chars().take(200).collect();
                    leaks.push(format!("{name} ({enc}) in {source}: …{ctx}…"));
                }
            }
        }
    }
    println!(
        "scanned {} sources, {scanned} bytes ({} log lines) for {} secrets in {} encodings each: {} leaks",
        ev.0.len(),
        log_text.lines().count(),
        secrets.len(),
        encodings(OPENAI_KEY).len(),
        leaks.len()
    );
    assert!(leaks.is_empty(), "{} leak(s):\n{}", leaks.len(), leaks.join("\n"));
}
