#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The clients people use, against the gateway: Anthropic's SDK on `/v1/messages`, the `openai`
//! Python package's Responses API, the `openai` Node package and LangChain's `ChatOpenAI`, each
//! running the very file the README shows (tests/clients/*), against the real binary's `--demo`. Plus `/v1/messages` over raw HTTP
//! through mock upstreams of both wire formats, with gateway keys.
//! Needs `.ci/run`'s installs: .venv (anthropic, langchain-openai) and tests/clients/node_modules.

mod common;

use std::path::Path;
use std::process::Child;

use common::binary::spawn_demo;
use common::*;
use serde_json::{json, Value};

const CLIENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients");

fn python() -> String {
    std::env::var("SWITCHYARD_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python").into())
}

/// Kills the demo gateway even when an assertion fails.
struct Demo(Child, String);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn demo() -> (tempfile::TempDir, Demo) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("demo.toml");
    std::fs::write(&cfg, "").unwrap();
    let (child, addr) = spawn_demo(&cfg);
    (dir, Demo(child, format!("http://{addr}")))
}

/// Runs a client file with `program` against `url`; it must exit 0 and print `ALL OK`.
async fn run_client(program: &str, file: &str, url: &str) {
    let path = Path::new(CLIENTS).join(file);
    let out = tokio::process::Command::new(program)
        .arg(&path)
        .env("SWITCHYARD_URL", url)
        .current_dir(CLIENTS)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}; run .ci/run to install the clients"));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && stdout.contains("ALL OK"),
        "{file} failed\nstdout:\n{stdout}\nstderr:\n{stderr}\n(missing packages? run .ci/run)"
    );
}

#[tokio::test]
async fn anthropic_python_sdk_against_the_demo() {
    let (_dir, d) = demo();
    run_client(&python(), "anthropic_sdk.py", &d.1).await;
}

#[tokio::test]
async fn openai_node_package_against_the_demo() {
    let (_dir, d) = demo();
    run_client("node", "openai_node.mjs", &d.1).await;
}

#[tokio::test]
async fn openai_python_responses_api_against_the_demo() {
    let (_dir, d) = demo();
    run_client(&python(), "openai_responses.py", &d.1).await;
}

#[tokio::test]
async fn langchain_chat_openai_tools_and_structured_output_against_the_demo() {
    let (_dir, d) = demo();
    run_client(&python(), "langchain_chat.py", &d.1).await;
}

/// `messages.count_tokens` of the `anthropic` package, answered by the gateway's estimate (the
/// demo's models are OpenAI-compatible).
#[tokio::test]
async fn anthropic_python_sdk_gets_an_estimated_count_from_the_demo() {
    let (_dir, d) = demo();
    run_client(&python(), "anthropic_count_tokens_estimate.py", &d.1).await;
}

/// The `openai` package dials the premium share in the model name (`auto:0`, `auto:1`).
#[tokio::test]
async fn openai_python_sdk_dials_the_share_in_the_model_name() {
    let (_dir, d) = demo();
    run_client(&python(), "openai_dial.py", &d.1).await;
}

/// The README shows the files these tests run, verbatim.
#[test]
fn the_readme_shows_the_files_the_tests_run() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for f in ["anthropic_sdk.py", "openai_responses.py", "openai_node.mjs", "langchain_chat.py"] {
        let text = std::fs::read_to_string(Path::new(CLIENTS).join(f)).unwrap();
        assert!(readme.contains(text.trim()), "README.md must show tests/clients/{f} as it is");
    }
}

async fn post_messages(g: &switchyard::app::Running, body: &Value, key: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(url(g, "/v1/messages"))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .unwrap()
}

/// SSE events as (name, data) pairs.
fn events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let name = e.lines().find_map(|l| l.strip_prefix("event: ")).unwrap_or("").to_string();
            let data = e.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
            (name, serde_json::from_str(data).unwrap())
        })
        .collect()
}

#[tokio::test]
async fn messages_api_through_an_openai_upstream_with_gateway_keys() {
    let (cheap, premium) = (MockUpstream::start("cheap").await, MockUpstream::start("premium").await);
    let g = gateway(config_for(&cheap, &premium, r#"gateway_keys = "key-a""#)).await;
    let body = json!({
        "model": "cheap", "max_tokens": 64, "system": [{"type": "text", "text": "Be brief."}],
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"}, {"type": "text", "text": "And tomorrow?"}]},
        ],
        "tools": [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
    });
    let r = post_messages(&g, &body, "key-a").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-switchyard-cache"], "miss");
    let m: Value = r.json().await.unwrap();
    assert_eq!(m["type"], "message");
    assert_eq!(m["role"], "assistant");
    assert_eq!(m["content"][0]["type"], "text");
    assert!(m["content"][0]["text"].as_str().unwrap().contains("And tomorrow?"));
    assert_eq!(m["stop_reason"], "end_turn");
    assert_eq!(m["usage"], json!({"input_tokens": 10, "output_tokens": 20}));
    let up = cheap.last_body();
    assert_eq!(up["messages"][0], json!({"role": "system", "content": "Be brief."}));
    assert_eq!(up["messages"][2]["tool_calls"][0]["id"], "toolu_1");
    assert_eq!(up["messages"][3], json!({"role": "tool", "tool_call_id": "toolu_1", "content": "18C"}));
    assert_eq!(up["max_tokens"], 64);

    // the same request again: a cache hit, in the Messages shape
    let r = post_messages(&g, &body, "key-a").await;
    assert_eq!(r.headers()["x-switchyard-cache"], "hit");
    let hit: Value = r.json().await.unwrap();
    assert_eq!(hit["content"], m["content"]);
    assert_eq!(cheap.calls(), 1);

    // streamed: Anthropic's events, in order, with usage and stop reason at the end
    let stream = json!({"model": "cheap", "max_tokens": 64, "stream": true, "messages": [{"role": "user", "content": "Name a river"}]});
    let r = post_messages(&g, &stream, "key-a").await;
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let ev = events(&r.text().await.unwrap());
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(&names[..4], ["message_start", "ping", "content_block_start", "content_block_delta"]);
    assert_eq!(&names[names.len() - 3..], ["content_block_stop", "message_delta", "message_stop"]);
    assert!(ev.iter().all(|(n, d)| d["type"] == n.as_str()));
    let text: String = ev.iter().filter_map(|(_, d)| d["delta"]["text"].as_str()).collect();
    assert!(text.contains("Name a river"), "{text}");
    let (_, delta) = &ev[ev.len() - 2];
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], 20);
    assert_eq!(cheap.last_body()["stream_options"]["include_usage"], true);

    // errors in Anthropic's shape: a bad key, a missing field, an unknown model
    let r = post_messages(&g, &stream, "wrong").await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["type"], "authentication_error");
    let r =
        post_messages(&g, &json!({"model": "cheap", "messages": [{"role": "user", "content": "x"}]}), "key-a").await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["type"], "error");
    assert_eq!(e["error"]["type"], "invalid_request_error");
    assert!(e["error"]["message"].as_str().unwrap().contains("max_tokens"), "{e}");
    let r = post_messages(
        &g,
        &json!({"model": "nope", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
        "key-a",
    )
    .await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["type"], "not_found_error");
    // Bearer works too
    let r =
        reqwest::Client::new().post(url(&g, "/v1/messages")).bearer_auth("key-a").json(&stream).send().await.unwrap();
    assert_eq!(r.status(), 200);
    g.shutdown().await;
}

/// A Messages client's `thinking` and `top_k` are Anthropic's: an OpenAI-compatible upstream
/// never sees them (OpenAI refuses both), except that a deployment marked `reasoning = true` gets
/// the thinking budget as the `reasoning_effort` it is closest to.
#[tokio::test]
async fn messages_api_thinking_reaches_an_openai_reasoning_deployment_as_reasoning_effort() {
    use switchyard::config::{DeploymentSpec, DeploymentTable, TierSpec};
    let (cheap, premium) = (MockUpstream::start("cheap").await, MockUpstream::start("premium").await);
    let mut cfg = config_for(&cheap, &premium, "");
    let reasoning = DeploymentTable {
        provider: premium.name.clone(),
        model: "large".into(),
        vision: false,
        reasoning: true,
        weight: None,
        max_concurrency: None,
    };
    cfg.tiers.insert("premium".into(), TierSpec::List(vec![DeploymentSpec::Full(reasoning)]));
    let g = gateway(cfg).await;
    let ask = |model: &str, budget: u32, prompt: &str| {
        json!({"model": model, "max_tokens": 8000, "top_k": 5, "thinking": {"type": "enabled", "budget_tokens": budget},
               "messages": [{"role": "user", "content": prompt}]})
    };
    let r = post_messages(&g, &ask("cheap", 5000, "Plan a trip to Lyon."), "").await;
    assert_eq!(r.status(), 200);
    let up = cheap.last_body();
    for field in ["thinking", "top_k", "reasoning_effort"] {
        assert!(up.get(field).is_none(), "{field} sent to a deployment that does not reason: {up}");
    }
    for (budget, effort) in [(1024, "low"), (3000, "medium"), (5000, "high")] {
        let r = post_messages(&g, &ask("premium", budget, &format!("Prove lemma {budget}.")), "").await;
        assert_eq!(r.status(), 200);
        let up = premium.last_body();
        assert_eq!(up["reasoning_effort"], effort, "{up}");
        assert!(up.get("thinking").is_none() && up.get("top_k").is_none(), "{up}");
    }
    // the client's own effort (a chat client's field) is never overridden
    let chat =
        json!({"model": "premium", "reasoning_effort": "minimal", "messages": [{"role": "user", "content": "Hi"}]});
    let r = reqwest::Client::new().post(url(&g, "/v1/chat/completions")).json(&chat).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(premium.last_body()["reasoning_effort"], "minimal");
    g.shutdown().await;
}

#[tokio::test]
async fn messages_api_through_an_anthropic_upstream_and_a_gemini_one() {
    use common::providers::{config, ProviderMock, ANTHROPIC_KEY, GEMINI_KEY};
    let body = json!({"model": "auto", "max_tokens": 64, "system": "Be brief.",
        "messages": [{"role": "user", "content": "What is a river delta?"}]});
    let a = ProviderMock::anthropic("claude", ANTHROPIC_KEY).await;
    let g = gateway(config(&["anthropic:claude-haiku-4-5"], Some(&a), None)).await;
    let r = reqwest::Client::new().post(url(&g, "/v1/messages")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let m: Value = r.json().await.unwrap();
    assert_eq!(m["type"], "message");
    assert!(!m["content"][0]["text"].as_str().unwrap().is_empty());
    assert_eq!(a.requests()[0].body["system"], "Be brief.");
    g.shutdown().await;

    let gm = ProviderMock::gemini("gemini", GEMINI_KEY).await;
    let g = gateway(config(&["gemini:gemini-2.5-flash"], None, Some(&gm))).await;
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let r = reqwest::Client::new().post(url(&g, "/v1/messages")).json(&streamed).send().await.unwrap();
    let ev = events(&r.text().await.unwrap());
    assert_eq!(ev.last().unwrap().0, "message_stop");
    assert!(ev.iter().any(|(n, d)| n == "content_block_delta" && d["delta"]["type"] == "text_delta"));
    g.shutdown().await;
}

/// A provider's configured `headers` go on every call to it; a client's `anthropic-beta` flags
/// reach Anthropic upstreams joined to the configured ones, and no other provider.
#[tokio::test]
async fn configured_headers_and_the_clients_anthropic_beta_reach_the_upstream() {
    use common::providers::{config, ProviderMock, ANTHROPIC_KEY};
    let a = ProviderMock::anthropic("claude", ANTHROPIC_KEY).await;
    let mut cfg = config(&["anthropic:claude-haiku-4-5"], Some(&a), None);
    let anthropic = cfg.providers.get_mut("anthropic").unwrap();
    anthropic.headers.insert("anthropic-beta".into(), "context-1m-2025-08-07".into());
    let g = gateway(cfg).await;
    let body = json!({"model": "auto", "max_tokens": 64, "messages": [{"role": "user", "content": "Name a bird."}]});
    let r = reqwest::Client::new()
        .post(url(&g, "/v1/messages"))
        .header("anthropic-beta", "interleaved-thinking-2025-05-14")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(a.last().header("anthropic-beta"), "context-1m-2025-08-07,interleaved-thinking-2025-05-14");
    let r = reqwest::Client::new()
        .post(url(&g, "/v1/messages"))
        .json(&json!({"model": "auto", "max_tokens": 64,
        "messages": [{"role": "user", "content": "Name a fish."}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(a.last().header("anthropic-beta"), "context-1m-2025-08-07", "the configured flags alone");
    g.shutdown().await;

    let (cheap, premium) = (MockUpstream::start("cheap").await, MockUpstream::start("premium").await);
    let mut cfg = config_for(&cheap, &premium, "");
    let p = cfg.providers.get_mut("cheap").unwrap();
    p.headers.insert("HTTP-Referer".into(), "https://app.example".into());
    p.headers.insert("X-Title".into(), "Example".into());
    let g = gateway(cfg).await;
    let r = reqwest::Client::new()
        .post(url(&g, "/v1/messages"))
        .header("anthropic-beta", "interleaved-thinking-2025-05-14")
        .json(&json!({"model": "cheap", "max_tokens": 64, "messages": [{"role": "user", "content": "Name a tree."}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = cheap.last_headers();
    assert_eq!(header(&seen, "http-referer"), "https://app.example");
    assert_eq!(header(&seen, "x-title"), "Example");
    assert!(seen.get("anthropic-beta").is_none(), "{seen:?}");
    assert_eq!(header(&seen, "authorization"), "Bearer sk-cheap-secret-key");
    g.shutdown().await;
}

async fn count(g: &switchyard::app::Running, body: &Value, key: Option<&str>) -> (u16, Value) {
    let mut rb =
        reqwest::Client::new().post(url(g, "/v1/messages/count_tokens")).header("anthropic-version", "2023-06-01");
    if let Some(k) = key {
        rb = rb.header("x-api-key", k);
    }
    let r = rb.json(body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// `POST /v1/messages/count_tokens` (the SDK's `messages.count_tokens`): the Anthropic deployment
/// the model would use counts, on the same translation as a call, with only the fields the count
/// endpoint takes; Gemini's `countTokens` likewise; an OpenAI-compatible model gets an estimate.
#[tokio::test]
async fn messages_count_tokens_is_asked_of_the_anthropic_deployment() {
    use common::providers::{config, ProviderMock, Reply, ANTHROPIC_KEY, GEMINI_KEY};
    let a = ProviderMock::anthropic("claude", ANTHROPIC_KEY).await;
    let g = gateway(config(&["anthropic:claude-haiku-4-5"], Some(&a), None)).await;
    let short = json!({"model": "auto", "system": "Be brief.",
        "messages": [{"role": "user", "content": "What is a river delta?"}]});
    let (status, body) = count(&g, &short, None).await;
    assert_eq!(status, 200, "{body}");
    // the mock's count: 2 system words + 3 + 5 message words
    assert_eq!(body, json!({"input_tokens": 10}));
    let seen = a.last();
    assert_eq!(seen.path, "/v1/messages/count_tokens");
    assert_eq!(seen.header("x-api-key"), ANTHROPIC_KEY);
    assert_eq!(seen.body["model"], "claude-haiku-4-5");
    assert_eq!(seen.body["system"], "Be brief.");
    assert!(seen.body.get("max_tokens").is_none(), "{}", seen.body);
    assert_eq!(a.calls(), 0, "a count is not a generation");

    // a longer conversation with tools counts more, and a tool_result turn is translated as for a call
    let long = json!({"model": "claude-haiku-4-5", "system": "Be brief.",
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"}, {"type": "text", "text": "And tomorrow in Lyon?"}]},
        ],
        "tools": [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]});
    let (status, body) = count(&g, &long, None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["input_tokens"].as_u64().unwrap() > 10, "{body}");
    assert_eq!(a.last().body["tools"][0]["name"], "get_weather");

    // bad input: Anthropic-shaped errors
    let (status, body) =
        count(&g, &json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}), None).await;
    assert_eq!((status, body["error"]["type"].as_str()), (404, Some("not_found_error")));
    let (status, body) = count(&g, &json!({"model": "auto"}), None).await;
    assert_eq!((status, body["error"]["type"].as_str()), (400, Some("invalid_request_error")), "{body}");
    // the provider's refusal comes back as a 400, its key scrubbed
    a.then(Reply::Error(400, "invalid_request_error", format!("prompt too long for key {ANTHROPIC_KEY}")));
    let (status, body) = count(&g, &short, None).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("prompt too long"), "{body}");
    assert!(!body.to_string().contains(ANTHROPIC_KEY), "{body}");
    g.shutdown().await;

    // Gemini counts too (`countTokens`), the whole call as `generateContentRequest` so that the
    // system instruction and tools count, without the generation settings
    let gm = ProviderMock::gemini("gemini", GEMINI_KEY).await;
    let g = gateway(config(&["gemini:gemini-2.5-flash"], None, Some(&gm))).await;
    let mut hot = short.clone();
    hot["temperature"] = json!(0.2);
    let (status, body) = count(&g, &hot, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"input_tokens": 10}), "the mock's count: 2 system words + 3 + 5");
    let seen = gm.requests().pop().unwrap();
    assert_eq!(seen.path, "/v1beta/models/gemini-2.5-flash:countTokens");
    assert_eq!(seen.header("x-goog-api-key"), GEMINI_KEY);
    let inner = &seen.body["generateContentRequest"];
    assert_eq!(inner["model"], "models/gemini-2.5-flash");
    assert_eq!(inner["systemInstruction"], json!({"parts": [{"text": "Be brief."}]}));
    assert!(inner.get("generationConfig").is_none(), "{inner}");
    assert_eq!(gm.calls(), 0, "a count is not a generation");
    let mut long = long;
    long["model"] = json!("auto");
    let (status, body) = count(&g, &long, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        gm.requests().pop().unwrap().body["generateContentRequest"]["tools"][0]["functionDeclarations"][0]["name"],
        "get_weather"
    );
    gm.then(Reply::Error(400, "INVALID_ARGUMENT", format!("bad request for key {GEMINI_KEY}")));
    let (status, body) = count(&g, &short, None).await;
    assert_eq!((status, body["error"]["type"].as_str()), (400, Some("invalid_request_error")), "{body}");
    assert!(!body.to_string().contains(GEMINI_KEY), "{body}");
    g.shutdown().await;

    // an OpenAI-compatible upstream has no count endpoint: the gateway estimates, as OpenAI's
    // cookbook counts (cl100k_base; 3 a message, 3 to prime the reply), and says so; keys apply
    let (cheap, premium) = (MockUpstream::start("cheap").await, MockUpstream::start("premium").await);
    let g = gateway(config_for(&cheap, &premium, r#"gateway_keys = "key-a""#)).await;
    let (status, body) = count(&g, &short, Some("wrong")).await;
    assert_eq!((status, body["error"]["type"].as_str()), (401, Some("authentication_error")));
    let r = reqwest::Client::new()
        .post(url(&g, "/v1/messages/count_tokens"))
        .header("x-api-key", "key-a")
        .header("anthropic-version", "2023-06-01")
        .json(&short)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-switchyard-token-count"], "estimated");
    // tiktoken: `system` 1, `Be brief.` 3, `user` 1, `What is a river delta?` 6
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"input_tokens": 3 + (3 + 1 + 3) + (3 + 1 + 6)}));
    // a PDF cannot be estimated without reading it: a 400 that says why
    let pdf = json!({"model": "auto", "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}}]}]});
    let (status, body) = count(&g, &pdf, Some("key-a")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["type"], "error");
    assert!(body["error"]["message"].as_str().unwrap().contains("not files or audio"), "{body}");
    assert_eq!(cheap.calls() + premium.calls(), 0);
    g.shutdown().await;
}

/// The `anthropic` package's `messages.count_tokens` through the gateway to an Anthropic upstream.
#[tokio::test]
async fn anthropic_python_sdk_counts_tokens_through_the_gateway() {
    use common::providers::{config, ProviderMock, ANTHROPIC_KEY};
    let a = ProviderMock::anthropic("claude", ANTHROPIC_KEY).await;
    let g = gateway(config(&["anthropic:claude-haiku-4-5"], Some(&a), None)).await;
    run_client(&python(), "anthropic_count_tokens.py", &format!("http://{}", g.addr)).await;
    let seen = a.requests();
    assert_eq!(seen.len(), 1, "the unknown model never reached the upstream");
    assert_eq!(seen[0].path, "/v1/messages/count_tokens");
    assert_eq!(seen[0].body["model"], "claude-haiku-4-5");
    g.shutdown().await;
}

/// Extended thinking through `/v1/messages` to an Anthropic upstream: the signed thinking block
/// opens the answer, streamed as `thinking_delta`s closed by a `signature_delta`; sent back in a
/// tool-use turn it reaches Anthropic intact (the mock checks the signature, and refuses the
/// turn without it). To an OpenAI-compatible upstream, `thinking` is not sent at all.
#[tokio::test]
async fn messages_api_extended_thinking_round_trips_through_an_anthropic_upstream() {
    use common::providers::{config, ProviderMock, ANTHROPIC_KEY};
    let a = ProviderMock::anthropic("claude", ANTHROPIC_KEY).await;
    let g = gateway(config(&["anthropic:claude-sonnet-4-5"], Some(&a), None)).await;
    let thinking = json!({"type": "enabled", "budget_tokens": 1024});
    let tools = json!([{"name": "get_weather", "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}}}]);
    let ask = json!({"role": "user", "content": "Is it raining in Paris?"});
    let body = json!({"model": "auto", "max_tokens": 2048, "thinking": thinking, "tools": tools, "messages": [ask]});
    let r = post_messages(&g, &body, "unused").await;
    assert_eq!(r.status(), 200);
    let m: Value = r.json().await.unwrap();
    assert_eq!(m["content"][0]["type"], "thinking", "{m}");
    assert_eq!(m["content"][0]["thinking"], "Considering: Is it raining in Paris?");
    let signature = m["content"][0]["signature"].as_str().unwrap().to_string();
    assert!(signature.starts_with("EqQBmock"), "{m}");
    assert_eq!(m["stop_reason"], "tool_use");
    assert_eq!(a.last().body["thinking"], thinking);
    let call = m["content"].as_array().unwrap().iter().find(|b| b["type"] == "tool_use").unwrap().clone();

    // the tool-use turn goes back as the SDKs send it: the answer's content, verbatim
    let result = json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"], "content": "light rain"}]});
    let follow = json!({"model": "auto", "max_tokens": 2048, "thinking": thinking, "tools": tools,
        "messages": [ask, {"role": "assistant", "content": m["content"]}, result]});
    let r = post_messages(&g, &follow, "unused").await;
    assert_eq!(r.status(), 200);
    let m2: Value = r.json().await.unwrap();
    assert_eq!(m2["content"].as_array().unwrap().last().unwrap()["text"], "tool said: light rain", "{m2}");
    let sent = a.last().body;
    assert_eq!(
        sent["messages"][1]["content"][0],
        json!({"type": "thinking",
        "thinking": "Considering: Is it raining in Paris?", "signature": signature})
    );
    // the same turn without its thinking block has nothing signed to send back: served with
    // thinking off for this request (Anthropic, the mock, would refuse it with thinking on)
    let bare: Vec<Value> =
        m["content"].as_array().unwrap().iter().filter(|b| b["type"] != "thinking").cloned().collect();
    let mut unsigned = follow.clone();
    unsigned["messages"][1]["content"] = json!(bare);
    let r = post_messages(&g, &unsigned, "unused").await;
    assert_eq!(r.status(), 200);
    assert!(a.last().body.get("thinking").is_none(), "{}", a.last().body);

    // streamed
    let mut streamed = json!({"model": "auto", "max_tokens": 2048, "thinking": thinking, "stream": true,
        "messages": [{"role": "user", "content": "Name a quiet museum in Rome."}]});
    let r = post_messages(&g, &streamed, "unused").await;
    let ev = events(&r.text().await.unwrap());
    let delta = |kind: &str, field: &str| -> String {
        ev.iter()
            .filter(|(n, d)| n == "content_block_delta" && d["delta"]["type"] == kind && d["index"] == 0)
            .filter_map(|(_, d)| d["delta"][field].as_str())
            .collect()
    };
    assert_eq!(ev.iter().find(|(n, _)| n == "content_block_start").unwrap().1["content_block"]["type"], "thinking");
    assert_eq!(delta("thinking_delta", "thinking"), "Considering: Name a quiet museum in Rome.");
    assert!(delta("signature_delta", "signature").starts_with("EqQBmock"));
    assert!(ev
        .iter()
        .any(|(n, d)| n == "content_block_delta" && d["index"] == 1 && d["delta"]["type"] == "text_delta"));
    assert_eq!(ev.last().unwrap().0, "message_stop");
    g.shutdown().await;

    // an OpenAI-compatible upstream answers without the field it does not know
    let (cheap, premium) = (MockUpstream::start("cheap").await, MockUpstream::start("premium").await);
    let g = gateway(config_for(&cheap, &premium, "")).await;
    streamed["stream"] = json!(false);
    let r = post_messages(&g, &streamed, "unused").await;
    assert_eq!(r.status(), 200);
    let sent = if cheap.calls() > 0 { cheap.last_body() } else { premium.last_body() };
    assert!(sent.get("thinking").is_none(), "{sent}");
    g.shutdown().await;
}

/// The `anthropic` package with extended thinking, through the gateway to an Anthropic upstream:
/// the SDK's own types, its tool loop (the answer's content sent back as it came) and its
/// stream accumulation (`get_final_message`, which assembles the signature).
#[tokio::test]
async fn anthropic_python_sdk_thinks_through_the_gateway() {
    use common::providers::{config, ProviderMock, ANTHROPIC_KEY};
    let a = ProviderMock::anthropic("claude", ANTHROPIC_KEY).await;
    let g = gateway(config(&["anthropic:claude-sonnet-4-5"], Some(&a), None)).await;
    run_client(&python(), "anthropic_thinking.py", &format!("http://{}", g.addr)).await;
    let seen = a.requests();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[1].body["messages"][1]["content"][0]["type"], "thinking");
    assert!(seen.iter().all(|r| r.body["thinking"]["budget_tokens"] == 1024));
    g.shutdown().await;
}

/// A PDF in a Messages request (a `document` block) reaches an Anthropic upstream as the same
/// document block, and a Gemini upstream as inline data; a URL document is a 400 naming the block.
#[tokio::test]
async fn messages_api_pdf_documents_reach_anthropic_and_gemini() {
    use common::providers::{config, ProviderMock, ANTHROPIC_KEY, GEMINI_KEY};
    let pdf =
        "JVBERi0xLjQKJcfsj6IKMSAwIG9iago8PC9UeXBlL0NhdGFsb2c+PgplbmRvYmoKdHJhaWxlcgo8PC9Sb290IDEgMCBSPj4KJSVFT0YK";
    let body = json!({"model": "auto", "max_tokens": 256, "messages": [{"role": "user", "content": [
        {"type": "document", "title": "report.pdf", "cache_control": {"type": "ephemeral"},
         "source": {"type": "base64", "media_type": "application/pdf", "data": pdf}},
        {"type": "text", "text": "Summarise the report."}]}]});
    let a = ProviderMock::anthropic("claude", ANTHROPIC_KEY).await;
    let g = gateway(config(&["anthropic:claude-haiku-4-5"], Some(&a), None)).await;
    let r = post_messages(&g, &body, "unused").await;
    assert_eq!(r.status(), 200);
    let m: Value = r.json().await.unwrap();
    assert_eq!(m["content"][0]["type"], "text", "{m}");
    let sent = a.last().body;
    assert_eq!(
        sent["messages"][0]["content"][0],
        json!({"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": pdf},
               "title": "report.pdf", "cache_control": {"type": "ephemeral"}})
    );
    assert_eq!(sent["messages"][0]["content"][1]["text"], "Summarise the report.");
    let url = json!({"model": "auto", "max_tokens": 256, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "url", "url": "https://example.com/report.pdf"}}]}]});
    let r = post_messages(&g, &url, "unused").await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["type"], "invalid_request_error", "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("messages[0].content"), "{e}");
    g.shutdown().await;

    let gm = ProviderMock::gemini("gemini", GEMINI_KEY).await;
    let g = gateway(config(&["gemini:gemini-2.5-flash"], None, Some(&gm))).await;
    let r = post_messages(&g, &body, "unused").await;
    assert_eq!(r.status(), 200);
    let sent = gm.last().body;
    assert_eq!(sent["contents"][0]["parts"][0], json!({"inlineData": {"mimeType": "application/pdf", "data": pdf}}));
    g.shutdown().await;
}
