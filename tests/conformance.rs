#![allow(clippy::unwrap_used, clippy::expect_used)]
//! OpenAPI conformance: every response shape the gateway produces (chat completions and stream
//! chunks, cache misses and hits, from OpenAI-compatible, Anthropic and Gemini upstreams, with
//! tool calls and reasoning; the model list and each model; embeddings of every input form;
//! Responses API objects and stream events; errors) is collected from a real gateway on loopback and validated against the schemas of
//! OpenAI's published spec, kept in `tests/fixtures/openapi/schemas.json` (provenance inside),
//! by `jsonschema` in Python (`tests/python/validate_openapi.py`; `.ci/run` installs it).

mod common;

use std::path::Path;

use common::providers::{ProviderMock, ANTHROPIC_KEY, GEMINI_KEY};
use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};
use switchyard::config::Config;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn python() -> String {
    if let Ok(p) = std::env::var("SWITCHYARD_PYTHON") {
        return p;
    }
    let venv = format!("{ROOT}/.venv/bin/python");
    if Path::new(&venv).exists() {
        venv
    } else {
        "python3".into()
    }
}

#[derive(Default)]
struct Samples(Vec<Value>);

impl Samples {
    fn add(&mut self, name: &str, schema: &str, body: &Value) {
        self.0.push(json!({"name": name, "schema": schema, "body": body}));
    }
}

fn weather_tool() -> Value {
    json!({"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}})
}

/// Streams a chat request; returns the cache header and every chunk (asserts `[DONE]`).
async fn stream(g: &switchyard::app::Running, body: &Value) -> (String, Vec<Value>) {
    use eventsource_stream::Eventsource;
    let resp = reqwest::Client::new().post(url(g, "/v1/chat/completions")).json(body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let cache = header(resp.headers(), "x-switchyard-cache").to_string();
    let mut events = resp.bytes_stream().eventsource();
    let mut chunks = Vec::new();
    while let Some(ev) = events.next().await {
        let ev = ev.unwrap();
        if ev.data == "[DONE]" {
            return (cache, chunks);
        }
        chunks.push(serde_json::from_str(&ev.data).unwrap());
    }
    panic!("stream ended without [DONE]");
}

fn conf(cheap: &MockUpstream, premium: &MockUpstream, a: &ProviderMock, gm: &ProviderMock) -> Config {
    let text = format!(
        r#"
        [server]
        listen = "127.0.0.1:0"
        [tiers]
        cheap = ["{c}:mini"]
        premium = ["{p}:large", {{ provider = "anthropic", model = "claude-haiku-4-5", vision = true }}, "gemini:gemini-3-pro-preview"]
        [providers.{c}]
        kind = "openai"
        base_url = "{cu}"
        api_key = "sk-cheap-secret-key"
        [providers.{p}]
        kind = "openai"
        base_url = "{pu}"
        api_key = "sk-premium-secret-key"
        [providers.anthropic]
        kind = "anthropic"
        base_url = "{au}"
        api_key = "{ANTHROPIC_KEY}"
        [providers.gemini]
        kind = "gemini"
        base_url = "{gu}"
        api_key = "{GEMINI_KEY}"
        [prices]
        mini = {{ input = 1.0, output = 2.0 }}
        large = {{ input = 10.0, output = 20.0 }}
        "claude-haiku-4-5" = {{ input = 1.0, output = 5.0 }}
        "gemini-3-pro-preview" = {{ input = 2.0, output = 12.0 }}
        "#,
        c = cheap.name,
        p = premium.name,
        cu = cheap.base_url(),
        pu = premium.base_url(),
        au = a.base_url(),
        gu = gm.base_url(),
    );
    Config::parse(&text).unwrap_or_else(|e| panic!("test config: {e}\n{text}"))
}

#[tokio::test]
async fn every_response_shape_validates_against_the_openai_openapi_spec() {
    let (cheap, premium) = (MockUpstream::start("cheap").await, MockUpstream::start("premium").await);
    let a = ProviderMock::anthropic("claude", ANTHROPIC_KEY).await;
    let gm = ProviderMock::gemini("gemini", GEMINI_KEY).await;
    let g = gateway(conf(&cheap, &premium, &a, &gm)).await;
    let client = reqwest::Client::new();
    let mut s = Samples::default();
    const CHAT: &str = "CreateChatCompletionResponse";
    const CHUNK: &str = "CreateChatCompletionStreamResponse";
    const ERROR: &str = "ErrorResponse";

    // chat: a miss, then the same request as an exact cache hit (a body the gateway builds itself)
    let req = json!({"model": "mini", "messages": [{"role": "user", "content": "What is the capital of France?"}]});
    let (st, h, miss) = post_chat(&g, &req, &[]).await;
    assert_eq!((st, header(&h, "x-switchyard-cache")), (200, "miss"), "{miss}");
    s.add("chat miss (openai)", CHAT, &miss);
    let (st, h, hit) = post_chat(&g, &req, &[]).await;
    assert_eq!(st, 200);
    assert_ne!(header(&h, "x-switchyard-cache"), "miss", "the repeat is served from the cache");
    assert!(hit["choices"][0]["message"].as_object().unwrap().contains_key("refusal"), "{hit}");
    assert_eq!(hit["choices"][0]["message"]["refusal"], Value::Null);
    s.add("chat hit", CHAT, &hit);

    // streams: a miss and a replayed hit, with usage
    let sreq = json!({"model": "mini", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "Name three primary colours."}]});
    for expect_hit in [false, true] {
        let (cache, chunks) = stream(&g, &sreq).await;
        assert_eq!(cache != "miss", expect_hit, "x-switchyard-cache: {cache}");
        assert!(chunks.len() > 2);
        for (i, c) in chunks.iter().enumerate() {
            s.add(&format!("stream {cache} chunk {i}"), CHUNK, c);
        }
    }

    // reasoning from an OpenAI-compatible upstream (`reasoning` whole, `reasoning_content` streamed)
    let rreq = json!({"model": "mini", "reasoning_effort": "high",
        "messages": [{"role": "user", "content": "Is 1001 a prime number?"}]});
    let (st, _, body) = post_chat(&g, &rreq, &[]).await;
    assert_eq!(st, 200);
    assert_eq!(body["choices"][0]["message"]["reasoning_content"], "Thinking it over.", "{body}");
    assert_eq!(body["usage"]["completion_tokens_details"]["reasoning_tokens"], 3, "{body}");
    s.add("chat with reasoning (openai)", CHAT, &body);
    let mut rs = rreq.clone();
    rs["stream"] = json!(true);
    rs["messages"][0]["content"] = json!("Is 2003 a prime number?");
    let (_, chunks) = stream(&g, &rs).await;
    assert!(chunks.iter().any(|c| c["choices"][0]["delta"]["reasoning_content"] == "Thinking it over."));
    for (i, c) in chunks.iter().enumerate() {
        s.add(&format!("stream with reasoning chunk {i}"), CHUNK, c);
    }

    // bodies the Anthropic and Gemini adapters build: text, tool calls, reasoning; stream and not
    for model in ["claude-haiku-4-5", "gemini-3-pro-preview"] {
        let plain = json!({"model": model, "reasoning_effort": "low", "max_tokens": 4000,
            "messages": [{"role": "user", "content": format!("Say hello, {model}.")}]});
        let tools = json!({"model": model, "tools": [weather_tool()],
            "messages": [{"role": "user", "content": format!("Weather in Oslo, {model}?")}]});
        for req in [plain, tools] {
            let (st, _, body) = post_chat(&g, &req, &[]).await;
            assert_eq!(st, 200, "{body}");
            s.add(&format!("chat {model}"), CHAT, &body);
            let mut sr = req.clone();
            sr["stream"] = json!(true);
            sr["stream_options"] = json!({"include_usage": true});
            sr["messages"][0]["content"] =
                json!(format!("{} (streamed, in other words)", req["messages"][0]["content"]));
            let (_, chunks) = stream(&g, &sr).await;
            for (i, c) in chunks.iter().enumerate() {
                s.add(&format!("stream {model} chunk {i}"), CHUNK, c);
            }
        }
    }

    // the Responses API: text, a tool call (through the Anthropic adapter), an answer cut by
    // max_output_tokens, every stream event, and the 404 for an unknown previous response
    let responses = |body: Value| {
        let client = client.clone();
        let u = url(&g, "/v1/responses");
        async move {
            let r = client.post(u).json(&body).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let tool = json!({"type": "function", "name": "get_weather", "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}});
    for (name, body) in [
        (
            "text",
            json!({"model": "mini", "instructions": "Be brief.", "input": "What is the capital of Spain?", "metadata": {"k": "v"}}),
        ),
        ("tool call", json!({"model": "claude-haiku-4-5", "input": "Weather in Oslo?", "tools": [tool]})),
        (
            "json schema",
            json!({"model": "mini", "input": "A colour", "text": {"format": {"type": "json_schema", "name": "c", "schema": {"type": "object"}}}}),
        ),
        (
            "reasoning",
            json!({"model": "mini", "input": "Is 1009 a prime number?", "reasoning": {"effort": "high"},
                "include": ["reasoning.encrypted_content"]}),
        ),
    ] {
        let (st, text) = responses(body).await;
        assert_eq!(st, 200, "{text}");
        let r: Value = serde_json::from_str(&text).unwrap();
        s.add(&format!("response {name}"), "Response", &r);
        if name == "reasoning" {
            assert_eq!(r["output"][0]["type"], "reasoning", "{r}");
            assert_eq!(r["output"][0]["summary"][0]["text"], "Thinking it over.", "{r}");
            assert_eq!(r["output"][1]["type"], "message", "{r}");
            assert_eq!(r["usage"]["output_tokens_details"]["reasoning_tokens"], 3, "{r}");
        }
        if name == "tool call" {
            // the call's output sent back, with an assistant message and an image among the items:
            // what `input_items` lists for the follow-up (the call itself included)
            let call = r["output"].as_array().unwrap().iter().find(|i| i["type"] == "function_call").unwrap();
            let follow = json!({"model": "claude-haiku-4-5", "previous_response_id": r["id"], "tools": [tool], "input": [
                {"type": "function_call_output", "call_id": call["call_id"], "output": "12C and clear"},
                {"role": "assistant", "content": "Noted."},
                {"role": "user", "content": [{"type": "input_text", "text": "And this?"},
                    {"type": "input_image", "image_url": "https://example.com/sky.png"}]},
            ]});
            let (st, text) = responses(follow).await;
            assert_eq!(st, 200, "{text}");
            let next: Value = serde_json::from_str(&text).unwrap();
            let u = url(&g, &format!("/v1/responses/{}/input_items", next["id"].as_str().unwrap()));
            let list: Value = client.get(u).send().await.unwrap().json().await.unwrap();
            assert_eq!(list["data"].as_array().map(Vec::len), Some(6), "{list}");
            s.add("response input items", "ResponseItemList", &list);
        }
    }
    cheap.then(Behavior::Truncated);
    let (_, text) = responses(json!({"model": "mini", "input": "A long story", "max_output_tokens": 5})).await;
    let cut: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(cut["status"], "incomplete", "{cut}");
    s.add("response incomplete", "Response", &cut);
    for (name, body) in [
        ("text", json!({"model": "mini", "stream": true, "input": "Name three primary colours, please."})),
        (
            "tool call",
            json!({"model": "claude-haiku-4-5", "stream": true, "input": "Weather in Bergen?", "tools": [tool]}),
        ),
        (
            "reasoning",
            json!({"model": "mini", "stream": true, "input": "Is 4001 a prime number?", "reasoning": {"effort": "high"}}),
        ),
    ] {
        let (st, text) = responses(body).await;
        assert_eq!(st, 200);
        let events: Vec<Value> =
            text.lines().filter_map(|l| l.strip_prefix("data: ")).map(|d| serde_json::from_str(d).unwrap()).collect();
        assert_eq!(events.last().unwrap()["type"], "response.completed", "{text}");
        if name == "reasoning" {
            assert!(events.iter().any(|e| e["type"] == "response.reasoning_summary_text.delta"), "{text}");
        }
        for (i, e) in events.iter().enumerate() {
            s.add(&format!("responses stream {name} event {i}"), "ResponseStreamEvent", e);
        }
    }
    let (st, text) = responses(json!({"model": "mini", "input": "x", "previous_response_id": "resp_nope"})).await;
    assert_eq!(st, 404);
    s.add("previous response 404", ERROR, &serde_json::from_str(&text).unwrap());

    // models: the list, and every listed model retrieved on its own
    let list: Value = client.get(url(&g, "/v1/models")).send().await.unwrap().json().await.unwrap();
    s.add("models list", "ListModelsResponse", &list);
    let ids: Vec<String> = list["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().into()).collect();
    assert!(ids.len() >= 4, "{list}");
    for id in &ids {
        let r = client.get(url(&g, &format!("/v1/models/{id}"))).send().await.unwrap();
        assert_eq!(r.status(), 200, "GET /v1/models/{id}");
        let m: Value = r.json().await.unwrap();
        assert_eq!(&m["id"], id);
        s.add(&format!("model {id}"), "Model", &m);
    }
    let r = client.get(url(&g, "/v1/models/gpt-nonexistent")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "model_not_found");
    s.add("model 404", ERROR, &e);

    // embeddings: a string, strings, cl100k token ids, arrays of them, base64
    let embed = |body: Value| {
        let client = client.clone();
        let u = url(&g, "/v1/embeddings");
        async move {
            let r = client.post(u).json(&body).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (st, text) = embed(json!({"model": "all-MiniLM-L6-v2", "input": "hello world"})).await;
    assert_eq!(st, 200, "{text}");
    s.add("embeddings string", "CreateEmbeddingResponse", &text);
    let (st, many) = embed(json!({"input": ["hello world", "goodbye"]})).await;
    assert_eq!(st, 200);
    s.add("embeddings strings", "CreateEmbeddingResponse", &many);
    // tiktoken cl100k_base: "hello world" = [15339, 1917], "Hello, world!" = [9906, 11, 1917, 0]
    let (st, ids) = embed(json!({"input": [15339, 1917]})).await;
    assert_eq!(st, 200, "{ids}");
    assert_eq!(ids["data"][0]["embedding"], text["data"][0]["embedding"], "token ids embed as the text they encode");
    assert_eq!(ids["usage"]["prompt_tokens"], 2);
    s.add("embeddings token ids", "CreateEmbeddingResponse", &ids);
    let (st, arrays) = embed(json!({"input": [[15339, 1917], [9906, 11, 1917, 0]], "encoding_format": "base64"})).await;
    assert_eq!(st, 200, "{arrays}");
    assert_eq!(arrays["data"].as_array().unwrap().len(), 2);
    assert_eq!(arrays["usage"]["prompt_tokens"], 6);
    s.add("embeddings token arrays (base64)", "CreateEmbeddingResponse", &arrays);
    s.0.last_mut().unwrap()["base64"] = json!(true);
    let (st, bad) = embed(json!({"input": [15339, 999999]})).await;
    assert_eq!(st, 400);
    assert!(bad["error"]["message"].as_str().unwrap().contains("999999"), "{bad}");
    s.add("embeddings bad token", ERROR, &bad);

    // errors: invalid request, unknown URL, wrong method
    let (st, _, e) = post_chat(&g, &json!({"model": "mini", "messages": []}), &[]).await;
    assert_eq!(st, 400);
    s.add("invalid request", ERROR, &e);
    let r = client.post(url(&g, "/v1/foo")).json(&json!({})).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "unknown_url");
    assert!(e["error"]["message"].as_str().unwrap().starts_with("Unknown request URL: POST /v1/foo."), "{e}");
    s.add("unknown url", ERROR, &e);
    for (method, path) in [(reqwest::Method::GET, "/v1/chat/completions"), (reqwest::Method::DELETE, "/v1/models")] {
        let r = client.request(method.clone(), url(&g, path)).send().await.unwrap();
        assert_eq!(r.status(), 405, "{method} {path}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["message"], format!("Invalid method for URL ({method} {path})"));
        s.add(&format!("405 {method} {path}"), ERROR, &e);
    }
    g.shutdown().await;

    // every body against the spec
    let dir = tempfile::tempdir().unwrap();
    let samples = dir.path().join("samples.json");
    std::fs::write(&samples, serde_json::to_vec(&s.0).unwrap()).unwrap();
    let py = python();
    let out = std::process::Command::new(&py)
        .arg(format!("{ROOT}/tests/python/validate_openapi.py"))
        .arg(format!("{ROOT}/tests/fixtures/openapi/schemas.json"))
        .arg(&samples)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {py}: {e}; run .ci/run (it installs jsonschema into .venv)"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{} bodies validated: {stdout}", s.0.len());
    assert!(
        out.status.success() && stdout.contains("ALL OK"),
        "{} bodies checked against the OpenAPI schemas ({py}):\n{stdout}\n{}",
        s.0.len(),
        String::from_utf8_lossy(&out.stderr)
    );
}
