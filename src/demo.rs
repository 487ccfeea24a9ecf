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
        .route("/v1/embeddings", post(embeddings))
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

/// One simulated choice: text or tool calls, and why it ended.
struct Reply {
    content: Option<String>,
    /// (id, function name, JSON arguments)
    calls: Vec<(String, String, String)>,
    finish: &'static str,
}

fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join(" "),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Lower-case words of four letters or more: what "the prompt mentions the tool" is judged on.
fn keywords(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric()).filter(|w| w.len() >= 4).map(str::to_lowercase).collect()
}

/// The tool a model would call for `prompt`, if any: the one `tool_choice` names; else the tool
/// whose name or description shares the most words with the prompt (any tool when
/// `tool_choice` is `required`). `tool_choice: "none"` never calls.
fn pick_tool<'a>(tools: &'a [Value], choice: &Value, prompt: &str) -> Option<&'a Value> {
    if choice == "none" {
        return None;
    }
    if let Some(name) = choice["function"]["name"].as_str() {
        return tools.iter().find(|t| t["function"]["name"] == name);
    }
    let said = keywords(prompt);
    let score = |t: &Value| {
        let f = &t["function"];
        let about = format!(
            "{} {}",
            f["name"].as_str().unwrap_or("").replace('_', " "),
            f["description"].as_str().unwrap_or("")
        );
        keywords(&about).iter().filter(|w| said.contains(w)).count()
    };
    let best = tools.iter().map(|t| (score(t), t)).filter(|(s, _)| *s > 0).max_by_key(|(s, _)| *s).map(|(_, t)| t);
    best.or(if choice == "required" { tools.first() } else { None })
}

/// A value conforming to `schema` (types, required properties, enums, nested objects and
/// arrays), filled from the prompt where it can be: strings from its capitalised words,
/// numbers from its digits.
fn value_for(schema: &Value, name: &str, prompt: &str, depth: usize) -> Value {
    if let Some(first) = schema["enum"].as_array().and_then(|e| e.first()) {
        return first.clone();
    }
    if let Some(c) = schema.get("const") {
        return c.clone();
    }
    let options = schema["anyOf"].as_array().or(schema["oneOf"].as_array());
    if let Some(first) = options.and_then(|o| o.iter().find(|s| s["type"] != "null")) {
        return value_for(first, name, prompt, depth);
    }
    let ty = match &schema["type"] {
        Value::Array(ts) => ts.iter().find(|t| *t != "null").and_then(Value::as_str).unwrap_or("string"),
        Value::String(t) => t.as_str(),
        _ if schema.get("properties").is_some() => "object",
        _ => "string",
    };
    match ty {
        "object" if depth < 6 => {
            let mut out = serde_json::Map::new();
            if let Some(props) = schema["properties"].as_object() {
                for (k, s) in props {
                    out.insert(k.clone(), value_for(s, k, prompt, depth + 1));
                }
            }
            Value::Object(out)
        }
        "object" => json!({}),
        "array" if depth < 6 => json!([value_for(&schema["items"], name, prompt, depth + 1)]),
        "array" => json!([]),
        "integer" | "number" => {
            let n =
                prompt.split(|c: char| !c.is_ascii_digit()).find(|w| !w.is_empty()).and_then(|w| w.parse::<i64>().ok());
            json!(n.unwrap_or(1))
        }
        "boolean" => json!(true),
        "null" => Value::Null,
        _ => {
            // a proper noun from the prompt (not its first word), else a short summary
            let caps = prompt
                .split(|c: char| !c.is_alphanumeric())
                .skip(1)
                .filter(|w| w.chars().next().is_some_and(char::is_uppercase))
                .collect::<Vec<_>>();
            match caps.last() {
                Some(w) => json!(w),
                None => json!(format!("{name} for: {}", prompt.chars().take(80).collect::<String>())),
            }
        }
    }
}

/// What the simulated model answers: `n` choices, each a tool call when tools are offered and the
/// prompt calls for one, a JSON object for `response_format` json_object/json_schema, else text;
/// cut at `max_tokens` words with `finish_reason: "length"`. With `reasoning_effort` (other than
/// `none`) each also reasons first, as `reasoning_content`, the field reasoning servers use.
fn simulate(req: &Value, model: &str, id: &str) -> Vec<Reply> {
    let messages = req["messages"].as_array().map(Vec::as_slice).unwrap_or_default();
    let last = messages.last().cloned().unwrap_or(Value::Null);
    let prompt = last_user_text(messages);
    let tools = req["tools"].as_array().map(Vec::as_slice).unwrap_or_default();
    let n = req["n"].as_u64().unwrap_or(1).clamp(1, 8) as usize;
    let max = req["max_completion_tokens"].as_u64().or(req["max_tokens"].as_u64());
    let format = &req["response_format"];
    (0..n)
        .map(|i| {
            // a tool result in the last turn is answered, not called again
            if last["role"] != "tool" {
                if let Some(tool) = pick_tool(tools, &req["tool_choice"], &prompt) {
                    let f = &tool["function"];
                    let args = value_for(&f["parameters"], "input", &prompt, 0);
                    let args = if args.is_object() { args } else { json!({}) };
                    let call =
                        (format!("call_{id}_{i}"), f["name"].as_str().unwrap_or("tool").to_string(), args.to_string());
                    return Reply { content: None, calls: vec![call], finish: "tool_calls" };
                }
            }
            let text = match format["type"].as_str() {
                Some("json_schema") => value_for(&format["json_schema"]["schema"], "value", &prompt, 0).to_string(),
                Some("json_object") => json!({"answer": answer_for(model, &prompt)}).to_string(),
                _ if last["role"] == "tool" => {
                    format!(
                        "[{model}] Based on the tool's result ({}), here is the answer to: {prompt}",
                        text_of(&last["content"])
                    )
                }
                _ if i > 0 => format!("[{model}] (alternative {}) Here is a simulated answer to: {prompt}", i + 1),
                _ => answer_for(model, &prompt),
            };
            match max {
                Some(m) if words(&text) > m => {
                    let cut: Vec<&str> = text.split_whitespace().take(m as usize).collect();
                    Reply { content: Some(cut.join(" ")), calls: vec![], finish: "length" }
                }
                _ => Reply { content: Some(text), calls: vec![], finish: "stop" },
            }
        })
        .collect()
}

/// The simulated reasoning, when the request asks for it (`reasoning_effort` other than `none`).
fn reasoning_for(req: &Value) -> Option<String> {
    let effort = req["reasoning_effort"].as_str().filter(|e| *e != "none")?;
    let messages = req["messages"].as_array().map(Vec::as_slice).unwrap_or_default();
    Some(format!("Thinking ({effort} effort) about: {}", last_user_text(messages)))
}

/// The text of the last user message (what the simulated model answers and reasons about).
fn last_user_text(messages: &[Value]) -> String {
    messages.iter().rev().find(|m| m["role"] == "user").map(|m| text_of(&m["content"])).unwrap_or_default()
}

/// OpenAI's `POST /v1/embeddings`, simulated: `dimensions` values (1536 by default, as
/// text-embedding-3-small) per input from a hash of its text, unit length, as floats or (what the
/// OpenAI SDKs ask for) base64 little-endian f32s. Not a semantic model: it shows the forwarding.
async fn embeddings(State(demo): State<Demo>, body: Bytes) -> Response {
    demo.calls.fetch_add(1, Ordering::Relaxed);
    let req = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
    let inputs: Vec<String> = match &req["input"] {
        Value::String(t) => vec![t.clone()],
        Value::Array(a) => a.iter().map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string)).collect(),
        _ => Vec::new(),
    };
    let dims = req["dimensions"].as_u64().unwrap_or(1536).clamp(1, 3072) as usize;
    if inputs.is_empty() {
        return (
            axum::http::StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": {"message": "'input' is required", "type": "invalid_request_error", "param": "input", "code": null}})),
        )
            .into_response();
    }
    if !demo.latency.is_zero() {
        tokio::time::sleep(demo.latency / 10).await;
    }
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let mut h =
                text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
            let mut v: Vec<f32> = (0..dims)
                .map(|_| {
                    h ^= h << 13;
                    h ^= h >> 7;
                    h ^= h << 17;
                    (h % 2001) as f32 / 1000.0 - 1.0
                })
                .collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::MIN_POSITIVE);
            v.iter_mut().for_each(|x| *x /= norm);
            let embedding = if req["encoding_format"] == "base64" {
                json!(crate::http::base64_encode(&v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let tokens: u64 = inputs.iter().map(|t| words(t).max(1)).sum();
    axum::Json(json!({"object": "list", "data": data, "model": req["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}))
    .into_response()
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
    let id = format!("chatcmpl-demo{}", demo.calls.load(Ordering::Relaxed));
    let replies = simulate(&req, &model, &id);
    let reasoning = reasoning_for(&req);
    let prompt_tokens =
        req["messages"].as_array().map_or(0, |ms| ms.iter().map(|m| words(&m["content"].to_string()) + 4).sum());
    let completion_tokens: u64 = replies
        .iter()
        .map(|r| r.content.as_deref().map_or(0, words) + r.calls.iter().map(|c| words(&c.2) + 2).sum::<u64>())
        .sum();
    let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens});
    let calls_json = |r: &Reply| -> Value {
        r.calls
            .iter()
            .map(|(cid, name, args)| json!({"id": cid, "type": "function", "function": {"name": name, "arguments": args}}))
            .collect()
    };
    if req["stream"] == true {
        let mut out = String::new();
        let mut push = |choice: Value| {
            let c =
                json!({"id": id, "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [choice]});
            out.push_str(&format!("data: {c}\n\n"));
        };
        for (i, r) in replies.iter().enumerate() {
            push(json!({"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}));
            for w in reasoning.as_deref().unwrap_or_default().split_inclusive(' ') {
                push(json!({"index": i, "delta": {"reasoning_content": w}, "finish_reason": null}));
            }
            for w in r.content.as_deref().unwrap_or_default().split_inclusive(' ') {
                push(json!({"index": i, "delta": {"content": w}, "finish_reason": null}));
            }
            for (k, (cid, name, args)) in r.calls.iter().enumerate() {
                push(
                    json!({"index": i, "delta": {"tool_calls": [{"index": k, "id": cid, "type": "function", "function": {"name": name, "arguments": ""}}]}, "finish_reason": null}),
                );
                let mid = args.char_indices().nth(args.chars().count() / 2).map_or(0, |(b, _)| b);
                for piece in [&args[..mid], &args[mid..]] {
                    push(
                        json!({"index": i, "delta": {"tool_calls": [{"index": k, "function": {"arguments": piece}}]}, "finish_reason": null}),
                    );
                }
            }
            push(json!({"index": i, "delta": {}, "finish_reason": r.finish}));
        }
        if req["stream_options"]["include_usage"] == true {
            let c = json!({"id": id, "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [], "usage": usage});
            out.push_str(&format!("data: {c}\n\n"));
        }
        out.push_str("data: [DONE]\n\n");
        let mut r = out.into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        return r;
    }
    let choices: Vec<Value> = replies
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut message = json!({"role": "assistant", "content": r.content, "refusal": null});
            if let Some(t) = &reasoning {
                message["reasoning_content"] = json!(t);
            }
            if !r.calls.is_empty() {
                message["tool_calls"] = calls_json(r);
            }
            json!({"index": i, "message": message, "finish_reason": r.finish, "logprobs": null})
        })
        .collect();
    axum::Json(json!({
        "id": id, "object": "chat.completion", "created": 1, "model": model,
        "choices": choices,
        "usage": usage,
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn weather_tool() -> Value {
        json!([{"type": "function", "function": {"name": "get_weather", "description": "Current weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"]}}}])
    }

    #[test]
    fn tools_are_called_when_the_prompt_calls_for_them() {
        let req = json!({"messages": [{"role": "user", "content": "What is the weather in Paris for 3 days?"}], "tools": weather_tool()});
        let r = &simulate(&req, "m", "x")[0];
        assert_eq!(r.finish, "tool_calls");
        let args: Value = serde_json::from_str(&r.calls[0].2).unwrap();
        assert_eq!(args, json!({"city": "Paris", "days": 3}));
        // unrelated prompt: no call; tool_choice none: no call; a tool result: answered
        let req = json!({"messages": [{"role": "user", "content": "Tell me a joke"}], "tools": weather_tool()});
        assert_eq!(simulate(&req, "m", "x")[0].finish, "stop");
        let req = json!({"messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": weather_tool(), "tool_choice": "none"});
        assert_eq!(simulate(&req, "m", "x")[0].finish, "stop");
        let req = json!({"messages": [{"role": "user", "content": "Weather in Paris?"}, {"role": "assistant", "tool_calls": []},
            {"role": "tool", "tool_call_id": "c", "content": "18C"}], "tools": weather_tool()});
        assert!(simulate(&req, "m", "x")[0].content.as_deref().unwrap().contains("18C"));
    }

    #[test]
    fn json_schema_n_and_length_are_honoured() {
        let schema = json!({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}}, "kind": {"enum": ["a", "b"]}}, "required": ["name", "age"]});
        let req = json!({"messages": [{"role": "user", "content": "Extract: Alice is 30"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": schema}}, "n": 2});
        let rs = simulate(&req, "m", "x");
        assert_eq!(rs.len(), 2);
        let v: Value = serde_json::from_str(rs[0].content.as_deref().unwrap()).unwrap();
        assert_eq!(v, json!({"name": "Alice", "age": 30, "tags": ["Alice"], "kind": "a"}));
        let req = json!({"messages": [{"role": "user", "content": "Hi"}], "response_format": {"type": "json_object"}});
        assert!(serde_json::from_str::<Value>(simulate(&req, "m", "x")[0].content.as_deref().unwrap())
            .unwrap()
            .is_object());
        let req = json!({"messages": [{"role": "user", "content": "Write a long essay"}], "max_tokens": 3});
        let r = &simulate(&req, "m", "x")[0];
        assert_eq!((r.finish, words(r.content.as_deref().unwrap())), ("length", 3));
    }
}
