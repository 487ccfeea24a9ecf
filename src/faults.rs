//! A fault-injecting upstream for soak runs: a real HTTP/1.1 server on loopback that speaks the
//! OpenAI chat-completions wire format (answers as the demo upstream does) and, by a seeded random
//! mix, misbehaves the ways real providers do: latency spikes, connection resets before the
//! headers and in the middle of a body or stream, bursts of 5xx and of 429 (with and without
//! `Retry-After`), truncated JSON, a slow drip of SSE bytes, and calls that hang.
//!
//! Why raw TCP and not axum: a reset must be a real RST at a chosen byte, and a truncated body a
//! complete HTTP message whose JSON is cut — an HTTP framework cleans both up. Every response
//! closes its connection (`Connection: close`), so a fault never leaks into the next call.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest request head + body read; the gateway's requests are far smaller.
const MAX_REQUEST: usize = 1 << 20;

/// What one call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// A normal answer.
    Healthy,
    /// A normal answer after a pause (below the gateway's first-byte timeout).
    LatencySpike,
    /// The connection is reset before any response byte.
    ResetBeforeHeaders,
    /// Headers and part of the body (two SSE events when streaming), then a reset.
    ResetMidBody,
    /// HTTP 500/502/503, as one of a burst.
    ServerError,
    /// HTTP 429 with `Retry-After: 1`, as one of a burst.
    RateLimitedRetryAfter,
    /// HTTP 429 with no `Retry-After`, as one of a burst.
    RateLimited,
    /// A complete HTTP 200 whose JSON (or SSE event) is cut short.
    TruncatedJson,
    /// A correct answer whose SSE events (or body bytes) arrive one by one, slowly.
    SlowDrip,
    /// Reads the request and never answers (until the gateway gives up and closes).
    Hang,
}

impl Fault {
    pub const ALL: [Fault; 10] = [
        Fault::Healthy,
        Fault::LatencySpike,
        Fault::ResetBeforeHeaders,
        Fault::ResetMidBody,
        Fault::ServerError,
        Fault::RateLimitedRetryAfter,
        Fault::RateLimited,
        Fault::TruncatedJson,
        Fault::SlowDrip,
        Fault::Hang,
    ];
}

/// The mix: each call is healthy unless it draws a fault; the faults drawn take turns (so a short
/// run still sees every kind); a drawn 5xx or 429 starts a burst of consecutive calls with that
/// fault (which is what opens circuit breakers in real outages).
#[derive(Debug, Clone)]
pub struct FaultMix {
    /// Share of calls (outside bursts) that draw a fault.
    pub fault_rate: f64,
    /// Calls in a 5xx or 429 burst.
    pub burst: std::ops::RangeInclusive<u32>,
    pub spike: Duration,
    pub drip: Duration,
    pub seed: u64,
}

impl Default for FaultMix {
    fn default() -> Self {
        FaultMix {
            fault_rate: 0.5,
            burst: 3..=12,
            spike: Duration::from_millis(400),
            drip: Duration::from_millis(15),
            seed: 13,
        }
    }
}

struct Picker {
    rng: StdRng,
    burst_left: u32,
    burst_of: Fault,
    turn: usize,
}

#[derive(Clone)]
struct Shared {
    mix: FaultMix,
    picker: Arc<Mutex<Picker>>,
    counts: Arc<Mutex<std::collections::BTreeMap<String, u64>>>,
    calls: Arc<AtomicU64>,
}

/// A running fault-injecting upstream.
pub struct FaultyUpstream {
    pub addr: SocketAddr,
    calls: Arc<AtomicU64>,
    counts: Arc<Mutex<std::collections::BTreeMap<String, u64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultyUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultyUpstream {
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Calls by fault injected (`healthy` included), by snake_case name.
    pub fn injected(&self) -> std::collections::BTreeMap<String, u64> {
        self.counts.lock().clone()
    }
}

pub async fn spawn(mix: FaultMix) -> std::io::Result<FaultyUpstream> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shared = Shared {
        picker: Arc::new(Mutex::new(Picker {
            rng: StdRng::seed_from_u64(mix.seed),
            burst_left: 0,
            burst_of: Fault::Healthy,
            turn: 0,
        })),
        mix,
        counts: Arc::default(),
        calls: Arc::default(),
    };
    let (calls, counts) = (shared.calls.clone(), shared.counts.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let _ = sock.set_nodelay(true);
            let s = shared.clone();
            tokio::spawn(async move {
                let _ = serve(sock, s).await;
            });
        }
    });
    Ok(FaultyUpstream { addr, calls, counts, task })
}

fn pick(s: &Shared) -> Fault {
    let mut p = s.picker.lock();
    if p.burst_left > 0 {
        p.burst_left -= 1;
        return p.burst_of;
    }
    if !p.rng.gen_bool(s.mix.fault_rate.clamp(0.0, 1.0)) {
        return Fault::Healthy;
    }
    let f = Fault::ALL[1 + p.turn % (Fault::ALL.len() - 1)];
    p.turn += 1;
    if matches!(f, Fault::ServerError | Fault::RateLimited | Fault::RateLimitedRetryAfter) {
        let n = p.rng.gen_range(s.mix.burst.clone());
        p.burst_left = n.saturating_sub(1);
        p.burst_of = f;
    }
    f
}

/// Reads one request: the head, then `Content-Length` bytes of body.
async fn read_request(sock: &mut TcpStream) -> std::io::Result<Option<Value>> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_REQUEST {
            return Ok(None);
        }
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0)
        .min(MAX_REQUEST);
    while buf.len() < head_end + len {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(serde_json::from_slice(&buf[head_end..head_end + len]).ok())
}

/// Closes with a TCP reset (linger 0: the close sends RST and never blocks) instead of a FIN.
fn reset(sock: TcpStream) {
    let _ = sock.set_zero_linger();
    drop(sock);
}

fn head(status: &str, content_type: &str, len: Option<usize>, extra: &str) -> String {
    let len = len.map(|n| format!("content-length: {n}\r\n")).unwrap_or_default();
    format!("HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\n{len}{extra}connection: close\r\n\r\n")
}

async fn serve(mut sock: TcpStream, s: Shared) -> std::io::Result<()> {
    let Some(req) = read_request(&mut sock).await? else { return Ok(()) };
    s.calls.fetch_add(1, Ordering::Relaxed);
    let fault = pick(&s);
    if let Ok(Value::String(name)) = serde_json::to_value(fault) {
        *s.counts.lock().entry(name).or_insert(0) += 1;
    }
    let stream = req["stream"] == true;
    let model = req["model"].as_str().unwrap_or("faulty").to_string();
    let prompt = req["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .map(|m| match &m["content"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .unwrap_or_default();
    let text = crate::demo::answer_for(&model, &prompt);
    let events = sse_events(&model, &text);
    let json_body = completion(&model, &text).to_string();
    match fault {
        Fault::Healthy | Fault::LatencySpike => {
            if fault == Fault::LatencySpike {
                tokio::time::sleep(s.mix.spike).await;
            }
            if stream {
                let body: String = events.concat();
                sock.write_all(head("200 OK", "text/event-stream", None, "").as_bytes()).await?;
                sock.write_all(body.as_bytes()).await?;
            } else {
                sock.write_all(head("200 OK", "application/json", Some(json_body.len()), "").as_bytes()).await?;
                sock.write_all(json_body.as_bytes()).await?;
            }
            sock.shutdown().await
        }
        Fault::ResetBeforeHeaders => {
            reset(sock);
            Ok(())
        }
        Fault::ResetMidBody => {
            if stream {
                sock.write_all(head("200 OK", "text/event-stream", None, "").as_bytes()).await?;
                for e in events.iter().take(3) {
                    sock.write_all(e.as_bytes()).await?;
                }
            } else {
                sock.write_all(head("200 OK", "application/json", Some(json_body.len()), "").as_bytes()).await?;
                sock.write_all(&json_body.as_bytes()[..json_body.len() / 2]).await?;
            }
            sock.flush().await?;
            // let the bytes before the reset reach the peer first
            tokio::time::sleep(Duration::from_millis(20)).await;
            reset(sock);
            Ok(())
        }
        Fault::ServerError | Fault::RateLimited | Fault::RateLimitedRetryAfter => {
            let (status, extra) = match fault {
                Fault::ServerError => (
                    ["500 Internal Server Error", "502 Bad Gateway", "503 Service Unavailable"]
                        [s.calls.load(Ordering::Relaxed) as usize % 3],
                    "",
                ),
                Fault::RateLimitedRetryAfter => ("429 Too Many Requests", "retry-after: 1\r\n"),
                _ => ("429 Too Many Requests", ""),
            };
            let body = json!({"error": {"message": format!("injected {status}"), "type": "server_error", "param": null, "code": null}}).to_string();
            sock.write_all(head(status, "application/json", Some(body.len()), extra).as_bytes()).await?;
            sock.write_all(body.as_bytes()).await?;
            sock.shutdown().await
        }
        Fault::TruncatedJson => {
            if stream {
                // a first event that is not JSON: the stream fails before its first chunk
                let cut = &events[0][..events[0].len() / 2];
                let body = format!("{cut}\n\n");
                sock.write_all(head("200 OK", "text/event-stream", None, "").as_bytes()).await?;
                sock.write_all(body.as_bytes()).await?;
            } else {
                let cut = &json_body[..json_body.len() / 2];
                sock.write_all(head("200 OK", "application/json", Some(cut.len()), "").as_bytes()).await?;
                sock.write_all(cut.as_bytes()).await?;
            }
            sock.shutdown().await
        }
        Fault::SlowDrip => {
            if stream {
                sock.write_all(head("200 OK", "text/event-stream", None, "").as_bytes()).await?;
                for e in &events {
                    sock.write_all(e.as_bytes()).await?;
                    sock.flush().await?;
                    tokio::time::sleep(s.mix.drip).await;
                }
            } else {
                sock.write_all(head("200 OK", "application/json", Some(json_body.len()), "").as_bytes()).await?;
                for piece in json_body.as_bytes().chunks(64) {
                    sock.write_all(piece).await?;
                    sock.flush().await?;
                    tokio::time::sleep(s.mix.drip).await;
                }
            }
            sock.shutdown().await
        }
        Fault::Hang => {
            // hold the connection until the gateway closes it; then it is simply dropped
            let mut sink = [0u8; 1024];
            while sock.read(&mut sink).await? > 0 {}
            Ok(())
        }
    }
}

fn completion(model: &str, text: &str) -> Value {
    let usage = json!({"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30});
    json!({
        "id": "chatcmpl-faulty", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop", "logprobs": null}],
        "usage": usage,
    })
}

/// The answer as SSE events, `[DONE]` included.
fn sse_events(model: &str, text: &str) -> Vec<String> {
    let chunk = |delta: Value, finish: Value| {
        let v = json!({"id": "chatcmpl-faulty", "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        format!("data: {v}\n\n")
    };
    let mut out = vec![chunk(json!({"role": "assistant", "content": ""}), Value::Null)];
    for w in text.split_inclusive(' ') {
        out.push(chunk(json!({"content": w}), Value::Null));
    }
    out.push(chunk(json!({}), json!("stop")));
    let usage = json!({"id": "chatcmpl-faulty", "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}});
    out.push(format!("data: {usage}\n\n"));
    out.push("data: [DONE]\n\n".to_string());
    out
}
