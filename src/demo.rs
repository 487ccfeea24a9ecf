//! Simulated upstreams for `switchyard serve --demo`: real HTTP servers on loopback that speak the
//! OpenAI chat-completions wire format, answer deterministically after a configurable latency,
//! and stream when asked. They let a newcomer see misses, hits and routing with no provider keys.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt;
use serde_json::{json, Value};

#[derive(Clone)]
struct Demo {
    latency: Duration,
    calls: Arc<AtomicU64>,
}

/// A running simulated upstream.
pub struct DemoUpstream {
    pub addr: SocketAddr,
    pub calls: Arc<AtomicU64>,
}

impl DemoUpstream {
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

pub async fn spawn(latency: Duration) -> std::io::Result<DemoUpstream> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let calls = Arc::new(AtomicU64::new(0));
    let app = axum::Router::new()
        .route("/v1/chat/completions", post(chat))
        .with_state(Demo { latency, calls: calls.clone() });
    tokio::spawn(async move {
        // no Nagle: the simulated upstream must not add the delayed-ACK stall the gateway avoids
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let _ = axum::serve(listener, app).await;
    });
    Ok(DemoUpstream { addr, calls })
}

fn words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

/// The deterministic answer: names the model, echoes the question.
pub fn answer_for(model: &str, prompt: &str) -> String {
    let p: String = prompt.chars().take(4000).collect();
    format!("[{model}] Here is a simulated answer to: {p}")
}

async fn chat(State(demo): State<Demo>, body: Bytes) -> Response {
    demo.calls.fetch_add(1, Ordering::Relaxed);
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return (
            axum::http::StatusCode::BAD_REQUEST,
            axum::Json(
                json!({"error": {"message": "bad json", "type": "invalid_request_error", "param": null, "code": null}}),
            ),
        )
            .into_response();
    };
    if !demo.latency.is_zero() {
        tokio::time::sleep(demo.latency).await;
    }
    let model = req["model"].as_str().unwrap_or("demo").to_string();
    let prompt = req["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .map(|m| match &m["content"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .unwrap_or_default();
    let text = answer_for(&model, &prompt);
    let prompt_tokens =
        req["messages"].as_array().map_or(0, |ms| ms.iter().map(|m| words(&m["content"].to_string()) + 4).sum());
    let completion_tokens = words(&text);
    let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens});
    let id = format!("chatcmpl-demo{}", demo.calls.load(Ordering::Relaxed));
    if req["stream"] == true {
        let mut out = String::new();
        let mut push = |v: Value| out.push_str(&format!("data: {v}\n\n"));
        push(
            json!({"id": id, "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]}),
        );
        for w in text.split_inclusive(' ') {
            push(
                json!({"id": id, "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": null}]}),
            );
        }
        push(
            json!({"id": id, "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        );
        if req["stream_options"]["include_usage"] == true {
            push(
                json!({"id": id, "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [], "usage": usage}),
            );
        }
        out.push_str("data: [DONE]\n\n");
        let mut r = out.into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        return r;
    }
    axum::Json(json!({
        "id": id, "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop", "logprobs": null}],
        "usage": usage,
    }))
    .into_response()
}
