#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The Anthropic and Gemini adapters end to end: the real gateway (router, pipeline, dispatch)
//! on loopback in front of mock upstreams that speak each provider's own wire format.

mod common;

use common::providers::{config, ProviderMock, Reply, ANTHROPIC_KEY, GEMINI_KEY};
use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};

fn content(body: &Value) -> &str {
    body["choices"][0]["message"]["content"].as_str().unwrap_or_default()
}

fn weather_tool() -> Value {
    json!({"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}})
}

/// POSTs a streaming request; returns the response headers and every chunk (asserts `[DONE]`).
async fn stream_chat(g: &switchyard::app::Running, body: &Value) -> (reqwest::header::HeaderMap, Vec<Value>) {
    stream_chat_with(g, body, &[]).await
}

/// [`stream_chat`] with request headers (`cache-control: no-cache` for a fresh upstream answer).
async fn stream_chat_with(
    g: &switchyard::app::Running,
    body: &Value,
    headers: &[(&str, &str)],
) -> (reqwest::header::HeaderMap, Vec<Value>) {
    use eventsource_stream::Eventsource;
    let mut rb = reqwest::Client::new().post(url(g, "/v1/chat/completions")).json(body);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let resp = rb.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let headers = resp.headers().clone();
    let mut events = resp.bytes_stream().eventsource();
    let mut chunks = Vec::new();
    while let Some(ev) = events.next().await {
        let ev = ev.unwrap();
        if ev.data == "[DONE]" {
            return (headers, chunks);
        }
        let v: Value = serde_json::from_str(&ev.data).unwrap();
        assert!(v.get("error").is_none(), "stream error: {v}");
        chunks.push(v);
    }
    panic!("stream ended without [DONE]: {chunks:?}");
}

fn streamed_text(chunks: &[Value]) -> String {
    chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect()
}

/// Tool calls folded from their deltas: (id, name, arguments) per index.
fn streamed_calls(chunks: &[Value]) -> Vec<(String, String, String)> {
    let mut calls: Vec<(String, String, String)> = Vec::new();
    for c in chunks {
        for d in c["choices"][0]["delta"]["tool_calls"].as_array().into_iter().flatten() {
            let i = d["index"].as_u64().unwrap() as usize;
            while calls.len() <= i {
                calls.push(Default::default());
            }
            calls[i].0.push_str(d["id"].as_str().unwrap_or(""));
            calls[i].1.push_str(d["function"]["name"].as_str().unwrap_or(""));
            calls[i].2.push_str(d["function"]["arguments"].as_str().unwrap_or(""));
        }
    }
    calls
}

fn finish(chunks: &[Value]) -> Option<String> {
    chunks.iter().find_map(|c| c["choices"][0]["finish_reason"].as_str().map(str::to_string))
}

// ---- Anthropic ---------------------------------------------------------------------------------

#[tokio::test]
async fn anthropic_plain_text_with_system_prompt() {
    let a = ProviderMock::anthropic("claude", ANTHROPIC_KEY).await;
    let g = gateway(config(&["anthropic:claude-haiku-4-5"], Some(&a), None)).await;
    let req = json!({"model": "cheap", "temperature": 0.3, "stop": ["###"], "messages": [
        {"role": "system", "content": "You answer in one sentence."},
        {"role": "user", "content": "What is the capital of France?"}]});
    let (s, h, body) = post_chat(&g, &req, &[]).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(content(&body), "claude answer #1 to: What is the capital of France?");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "claude-haiku-4-5-20251001");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"], json!({"prompt_tokens": 11, "completion_tokens": 20, "total_tokens": 31}));
    assert_eq!(header(&h, "x-switchyard-provider"), "anthropic");
    assert_eq!(header(&h, "x-switchyard-model"), "claude-haiku-4-5");
    // 11 prompt tokens at $1/M + 20 completion tokens at $5/M
    assert!((header(&h, "x-switchyard-cost").parse::<f64>().unwrap() - 0.000111).abs() < 1e-12);

    let seen = a.last();
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.header("x-api-key"), ANTHROPIC_KEY);
    assert_eq!(seen.header("anthropic-version"), "2023-06-01");
    assert!(seen.headers.get("authorization").is_none());
    assert_eq!(
        seen.body,
        json!({"model": "claude-haiku-4-5", "max_tokens": 512, "system": "You answer in one sentence.",
            "temperature": 0.3, "stop_sequences": ["###"],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "What is the capital of France?"}]}]})
    );
    assert_eq!(a.calls(), 1);
    g.shutdown().await;
}

#[tokio::test]
async fn anthropic_multi_turn_tool_call_and_tool_result() {
    let a = ProviderMock::anthropic("claude", ANTHROPIC_KEY).await;
    let g = gateway(config(&["anthropic:claude-haiku-4-5"], Some(&a), None)).await;
    let mut messages = vec![
        json!({"role": "user", "content": "Hi, I am planning a trip."}),
        json!({"role": "assistant", "content": "Nice! Where to?"}),
        json!({"role": "user", "content": "What's the weather in Paris right now?"}),
    ];
    let req = json!({"model": "cheap", "messages": messages, "tools": [weather_tool()], "tool_choice": "auto",
        "max_completion_tokens": 100});
    let (s, _, body) = post_chat(&g, &req, &[]).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    let call = body["choices"][0]["message"]["tool_calls"][0].clone();
    assert_eq!(call["type"], "function");
    assert_eq!(call["id"], "toolu_mock_1");
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"location": "Paris"}));
    let sent = a.last().body;
    assert_eq!(sent["max_tokens"], 100);
    assert_eq!(sent["tool_choice"], json!({"type": "auto"}));
    assert_eq!(sent["tools"][0]["name"], "get_weather");
    assert_eq!(sent["tools"][0]["input_schema"]["required"], json!(["location"]));
    assert_eq!(sent["messages"].as_array().unwrap().len(), 3);

    // the client runs the tool and sends the result back
    messages.push(body["choices"][0]["message"].clone());
    messages.push(json!({"role": "tool", "tool_call_id": "toolu_mock_1", "content": "18°C and sunny"}));
    let req = json!({"model": "cheap", "messages": messages, "tools": [weather_tool()]});
    let (s, _, body) = post_chat(&g, &req, &[]).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(content(&body), "tool said: 18°C and sunny");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let sent = a.last().body;
    let msgs = sent["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 5);
    assert_eq!(
        msgs[3],
        json!({"role": "assistant", "content": [{"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_mock_1", "name": "get_weather", "input": {"location": "Paris"}}]})
    );
    assert_eq!(
        msgs[4],
        json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_mock_1",
            "content": [{"type": "text", "text": "18°C and sunny"}]}]})
    );
    assert_eq!(a.calls(), 2);
    g.shutdown().await;
}

#[tokio::test]
async fn anthropic_streaming_text_tool_call_deltas_and_usage() {
    let a = ProviderMock::anthropic("claude", ANTHROPIC_KEY).await;
    let g = gateway(config(&["anthropic:claude-haiku-4-5"], Some(&a), None)).await;
    let req = json!({"model": "cheap", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "Should I bring an umbrella to Paris today?"}], "tools": [weather_tool()]});
    let (h, chunks) = stream_chat(&g, &req).await;
    assert_eq!(header(&h, "x-switchyard-provider"), "anthropic");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["id"] == chunks[0]["id"]));
    assert_eq!(streamed_text(&chunks), "Let me check.");
    let calls = streamed_calls(&chunks);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].0, "toolu_mock_1");
    assert_eq!(calls[0].1, "get_weather");
    assert_eq!(serde_json::from_str::<Value>(&calls[0].2).unwrap(), json!({"location": "Paris"}));
    assert!(
        chunks.iter().filter(|c| !c["choices"][0]["delta"]["tool_calls"].is_null()).count() > 2,
        "arguments arrive as several deltas"
    );
    assert_eq!(finish(&chunks).as_deref(), Some("tool_calls"));
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"], json!({"prompt_tokens": 11, "completion_tokens": 20, "total_tokens": 31}));
    assert_eq!(a.last().body["stream"], true);

    // without include_usage the client gets no usage chunk
    let req = json!({"model": "cheap", "stream": true,
        "messages": [{"role": "user", "content": "Tell me a fact about octopuses."}]});
    let (_, chunks) = stream_chat(&g, &req).await;
    assert_eq!(streamed_text(&chunks), "claude answer #2 to: Tell me a fact about octopuses.");
    assert_eq!(finish(&chunks).as_deref(), Some("stop"));
    assert!(chunks.iter().all(|c| c.get("usage").is_none_or(Value::is_null)));
    g.shutdown().await;
}

#[tokio::test]
async fn anthropic_error_is_openai_shaped_names_the_provider_and_hides_the_key() {
    let a = ProviderMock::anthropic("claude", ANTHROPIC_KEY).await;
    let g = gateway(config(&["anthropic:claude-haiku-4-5"], Some(&a), None)).await;
    // a provider that echoes the key back in its error message must not leak it
    a.then(Reply::Error(
        400,
        "invalid_request_error",
        format!("messages.0.content: prompt is too long (request by key {ANTHROPIC_KEY})"),
    ));
    let req = json!({"model": "cheap", "messages": [{"role": "user", "content": "A very long question"}]});
    let (s, _, body) = post_chat(&g, &req, &[]).await;
    assert_eq!(s, 400, "{body}");
    let err = &body["error"];
    let message = err["message"].as_str().unwrap();
    assert!(message.contains("anthropic:claude-haiku-4-5"), "{message}");
    assert!(message.contains("invalid_request_error: messages.0.content: prompt is too long"), "{message}");
    assert!(!body.to_string().contains(ANTHROPIC_KEY), "{body}");
    assert_eq!(err["type"], "invalid_request_error");
    // a refusal for length is OpenAI's context_length_exceeded, whatever the provider's words
    assert_eq!(err["code"], "context_length_exceeded");
    assert_eq!(a.calls(), 1, "a 400 is not retried");

    // any other 400 is the provider's, passed on as such
    a.then(Reply::Error(400, "invalid_request_error", "max_tokens: Field required".into()));
    let (s, _, body) = post_chat(&g, &req, &[]).await;
    assert_eq!((s, body["error"]["code"].as_str()), (400, Some("upstream_error")), "{body}");
    assert_eq!(a.calls(), 2);

    // the gateway's own key being refused is a 502, not the client's 401
    a.then(Reply::Error(401, "authentication_error", "invalid x-api-key".into()));
    let (s, _, body) =
        post_chat(&g, &json!({"model": "cheap", "messages": [{"role": "user", "content": "Hello there"}]}), &[]).await;
    assert_eq!(s, 502, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("anthropic"));

    // what the Messages API cannot express is refused without an upstream call
    let calls = a.calls();
    let (s, _, body) = post_chat(
        &g,
        &json!({"model": "cheap", "n": 2, "messages": [{"role": "user", "content": "Two takes, please"}]}),
        &[],
    )
    .await;
    assert_eq!(s, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("`n`"));
    assert_eq!(a.calls(), calls);

    // 529 overloaded is retried (attempts_per_deployment = 2), then reported as a 502
    a.then(Reply::Error(529, "overloaded_error", "Overloaded".into())).then(Reply::Error(
        529,
        "overloaded_error",
        "Overloaded".into(),
    ));
    let (s, _, body) =
        post_chat(&g, &json!({"model": "cheap", "messages": [{"role": "user", "content": "Are you busy?"}]}), &[])
            .await;
    assert_eq!(s, 502, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("overloaded_error: Overloaded"));
    assert_eq!(a.calls(), calls + 2);
    g.shutdown().await;
}

#[tokio::test]
async fn anthropic_stream_overloaded_before_first_chunk_fails_over_to_gemini() {
    let a = ProviderMock::anthropic("claude", ANTHROPIC_KEY).await;
    let gm = ProviderMock::gemini("gemini", GEMINI_KEY).await;
    let g = gateway(config(&["anthropic:claude-haiku-4-5", "gemini:gemini-2.5-flash"], Some(&a), Some(&gm))).await;
    a.then(Reply::StreamError("overloaded_error", "Overloaded"))
        .then(Reply::StreamError("overloaded_error", "Overloaded"));
    let req = json!({"model": "cheap", "stream": true, "messages": [{"role": "user", "content": "Name a mountain in Italy."}]});
    let (h, chunks) = stream_chat(&g, &req).await;
    assert_eq!(header(&h, "x-switchyard-provider"), "gemini");
    assert_eq!(streamed_text(&chunks), "gemini answer #1 to: Name a mountain in Italy.");
    assert_eq!(a.calls(), 2, "both attempts on anthropic saw the error event before any content");
    assert_eq!(gm.calls(), 1);
    g.shutdown().await;
}

#[tokio::test]
async fn a_prompt_too_long_for_claude_goes_to_gemini_and_one_too_long_for_gemini_too_is_a_400() {
    let a = ProviderMock::anthropic("claude", ANTHROPIC_KEY).await;
    let gm = ProviderMock::gemini("gemini", GEMINI_KEY).await;
    let g = gateway(config(&["anthropic:claude-haiku-4-5", "gemini:gemini-2.5-flash"], Some(&a), Some(&gm))).await;
    // Anthropic's words for it
    a.then(Reply::Error(400, "invalid_request_error", "prompt is too long: 215000 tokens > 200000 maximum".into()));
    let req = json!({"model": "cheap", "messages": [{"role": "user", "content": "Summarise these minutes."}]});
    let (s, h, body) = post_chat(&g, &req, &[]).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(header(&h, "x-switchyard-provider"), "gemini");
    assert_eq!((a.calls(), gm.calls()), (1, 1));

    // and Gemini's
    a.then(Reply::Error(
        400,
        "invalid_request_error",
        "input length and `max_tokens` exceed context limit: 198000 + 8192 > 200000".into(),
    ));
    gm.then(Reply::Error(
        400,
        "INVALID_ARGUMENT",
        "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).".into(),
    ));
    let req = json!({"model": "cheap", "messages": [{"role": "user", "content": "Summarise these transcripts."}]});
    let (s, _, body) = post_chat(&g, &req, &[]).await;
    assert_eq!((s, body["error"]["code"].as_str()), (400, Some("context_length_exceeded")), "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("exceed context limit") && message.contains("exceeds the maximum number of tokens"),
        "{message}"
    );
    assert!(!body.to_string().contains(ANTHROPIC_KEY) && !body.to_string().contains(GEMINI_KEY));
    assert_eq!((a.calls(), gm.calls()), (2, 2));
    g.shutdown().await;
}

#[tokio::test]
async fn a_request_anthropic_cannot_express_goes_to_the_next_deployment() {
    let a = ProviderMock::anthropic("claude", ANTHROPIC_KEY).await;
    let gm = ProviderMock::gemini("gemini", GEMINI_KEY).await;
    let g = gateway(config(&["anthropic:claude-haiku-4-5", "gemini:gemini-2.5-flash"], Some(&a), Some(&gm))).await;
    // n = 2 has no Messages API equivalent; Gemini has candidateCount
    let req = json!({"model": "cheap", "n": 2, "messages": [{"role": "user", "content": "Two takes on a river name"}]});
    let (s, h, body) = post_chat(&g, &req, &[]).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(header(&h, "x-switchyard-provider"), "gemini");
    assert_eq!(header(&h, "x-switchyard-attempts"), "1", "the skipped deployment made no call");
    assert_eq!((a.calls(), gm.calls()), (0, 1));
    let m = reqwest::get(url(&g, "/metrics")).await.unwrap().text().await.unwrap();
    assert!(!m.contains("deployment=\"anthropic:claude-haiku-4-5\""), "no call, no attempt counted: {m}");
    g.shutdown().await;
}

// ---- Gemini ------------------------------------------------------------------------------------

#[tokio::test]
async fn gemini_plain_text_system_prompt_and_multi_turn() {
    let gm = ProviderMock::gemini("gemini", GEMINI_KEY).await;
    let g = gateway(config(&["gemini:gemini-2.5-flash"], None, Some(&gm))).await;
    let req = json!({"model": "cheap", "max_tokens": 64, "temperature": 1.2, "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "I like rivers."},
        {"role": "assistant", "content": "Rivers are great."},
        {"role": "user", "content": "Which is the longest river in Germany?"}]});
    let (s, h, body) = post_chat(&g, &req, &[]).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(content(&body), "gemini answer #1 to: Which is the longest river in Germany?");
    assert_eq!(body["id"], "chatcmpl-mock1");
    assert_eq!(body["model"], "gemini-2.5-flash");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"], json!({"prompt_tokens": 13, "completion_tokens": 20, "total_tokens": 33}));
    assert_eq!(header(&h, "x-switchyard-provider"), "gemini");

    let seen = gm.last();
    assert_eq!(seen.path, "/v1beta/models/gemini-2.5-flash:generateContent");
    assert_eq!(seen.query, None, "the key never goes in the URL");
    assert_eq!(seen.header("x-goog-api-key"), GEMINI_KEY);
    assert_eq!(
        seen.body,
        json!({
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "contents": [
                {"role": "user", "parts": [{"text": "I like rivers."}]},
                {"role": "model", "parts": [{"text": "Rivers are great."}]},
                {"role": "user", "parts": [{"text": "Which is the longest river in Germany?"}]}
            ],
            "generationConfig": {"temperature": 1.2, "maxOutputTokens": 64}
        })
    );
    g.shutdown().await;
}

#[tokio::test]
async fn gemini_tool_call_and_tool_result_turn() {
    let gm = ProviderMock::gemini("gemini", GEMINI_KEY).await;
    let g = gateway(config(&["gemini:gemini-2.5-flash"], None, Some(&gm))).await;
    let mut messages = vec![json!({"role": "user", "content": "What's the weather in Paris?"})];
    let req = json!({"model": "cheap", "messages": messages, "tools": [weather_tool()],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}}});
    let (s, _, body) = post_chat(&g, &req, &[]).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    assert!(body["choices"][0]["message"]["content"].is_null());
    let call = body["choices"][0]["message"]["tool_calls"][0].clone();
    let id = call["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("call_"), "{id}");
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], r#"{"location":"Paris"}"#);
    let sent = gm.last().body;
    assert_eq!(sent["tools"][0]["functionDeclarations"][0]["name"], "get_weather");
    assert_eq!(
        sent["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}})
    );

    messages.push(body["choices"][0]["message"].clone());
    messages.push(json!({"role": "tool", "tool_call_id": id, "content": "18°C and sunny"}));
    let req = json!({"model": "cheap", "messages": messages, "tools": [weather_tool()]});
    let (s, _, body) = post_chat(&g, &req, &[]).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(content(&body), "tool said: 18°C and sunny");
    let sent = gm.last().body;
    assert_eq!(
        sent["contents"][1],
        json!({"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"location": "Paris"}}}]})
    );
    assert_eq!(
        sent["contents"][2],
        json!({"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"output": "18°C and sunny"}}}]})
    );
    g.shutdown().await;
}

#[tokio::test]
async fn gemini_streaming_text_tool_calls_and_usage() {
    let gm = ProviderMock::gemini("gemini", GEMINI_KEY).await;
    let g = gateway(config(&["gemini:gemini-2.5-flash"], None, Some(&gm))).await;
    let req = json!({"model": "cheap", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "Give me three facts about the Moon."}]});
    let (_, chunks) = stream_chat(&g, &req).await;
    let seen = gm.last();
    assert_eq!(seen.path, "/v1beta/models/gemini-2.5-flash:streamGenerateContent");
    assert_eq!(seen.query.as_deref(), Some("alt=sse"));
    assert_eq!(streamed_text(&chunks), "gemini answer #1 to: Give me three facts about the Moon.");
    assert!(chunks.len() > 5, "text arrives in pieces");
    assert_eq!(finish(&chunks).as_deref(), Some("stop"));
    let usage: Vec<&Value> = chunks.iter().filter(|c| !c["usage"].is_null()).collect();
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0]["usage"], json!({"prompt_tokens": 11, "completion_tokens": 20, "total_tokens": 31}));

    let req = json!({"model": "cheap", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "Is it raining in Paris?"}], "tools": [weather_tool()]});
    let (_, chunks) = stream_chat(&g, &req).await;
    let calls = streamed_calls(&chunks);
    assert_eq!(calls.len(), 1);
    assert!(calls[0].0.starts_with("call_"));
    assert_eq!((calls[0].1.as_str(), calls[0].2.as_str()), ("get_weather", r#"{"location":"Paris"}"#));
    assert_eq!(finish(&chunks).as_deref(), Some("tool_calls"));
    assert!(!chunks.last().unwrap()["usage"].is_null());
    g.shutdown().await;
}

#[tokio::test]
async fn gemini_errors_are_openai_shaped_and_keyless() {
    let gm = ProviderMock::gemini("gemini", GEMINI_KEY).await;
    let g = gateway(config(&["gemini:gemini-2.5-flash"], None, Some(&gm))).await;
    gm.then(Reply::Error(400, "INVALID_ARGUMENT", format!("Invalid value at 'contents' (key={GEMINI_KEY})")));
    let (s, _, body) =
        post_chat(&g, &json!({"model": "cheap", "messages": [{"role": "user", "content": "Hello?"}]}), &[]).await;
    assert_eq!(s, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("gemini:gemini-2.5-flash") && message.contains("INVALID_ARGUMENT: Invalid value"),
        "{message}"
    );
    assert!(!body.to_string().contains(GEMINI_KEY), "{body}");

    // Google answers a bad key with 400 INVALID_ARGUMENT; it is the gateway's credential, so 502
    let wrong = ProviderMock::gemini("gemini", "another-key").await;
    let g2 = gateway(config(&["gemini:gemini-2.5-flash"], None, Some(&wrong))).await;
    let (s, _, body) =
        post_chat(&g2, &json!({"model": "cheap", "messages": [{"role": "user", "content": "Hi?"}]}), &[]).await;
    assert_eq!(s, 502, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("credentials"));
    assert!(!body.to_string().contains(GEMINI_KEY));
    g.shutdown().await;
    g2.shutdown().await;
}

#[tokio::test]
async fn keys_in_the_environment_build_anthropic_and_gemini_tiers() {
    std::env::remove_var("OPENAI_API_KEY");
    std::env::set_var("ANTHROPIC_API_KEY", "sk-ant-from-env");
    std::env::set_var("GEMINI_API_KEY", "gm-from-env");
    let (config, found) = switchyard::app::config_from_env().unwrap();
    std::env::remove_var("ANTHROPIC_API_KEY");
    std::env::remove_var("GEMINI_API_KEY");
    assert!(found.contains("ANTHROPIC_API_KEY (anthropic: claude-haiku-4-5 / claude-sonnet-4-5)"), "{found}");
    assert!(found.contains("GEMINI_API_KEY (gemini: gemini-2.5-flash / gemini-2.5-pro)"), "{found}");
    let cheap = config.tier_deployments("cheap");
    assert_eq!(
        cheap.iter().map(|d| format!("{}:{}", d.provider, d.model)).collect::<Vec<_>>(),
        ["anthropic:claude-haiku-4-5", "gemini:gemini-2.5-flash"]
    );
    assert!(cheap.iter().all(|d| d.vision));
    assert_eq!(config.providers["anthropic"].base_url, "https://api.anthropic.com");
    assert_eq!(config.providers["gemini"].base_url, "https://generativelanguage.googleapis.com");
    assert!(config.embedding_deployments().is_empty(), "no OpenAI key: no upstream embedding model");
    assert_eq!(config.passthrough.provider, None);

    // with an OpenAI key, its embedding models too
    std::env::set_var("OPENAI_API_KEY", "sk-from-env");
    let (config, _) = switchyard::app::config_from_env().unwrap();
    std::env::remove_var("OPENAI_API_KEY");
    let models: Vec<String> =
        config.embedding_deployments().iter().map(|d| format!("{}:{}", d.provider, d.model)).collect();
    assert_eq!(models, ["openai:text-embedding-3-small", "openai:text-embedding-3-large"]);
    assert_eq!(config.passthrough.provider.as_deref(), Some("openai"));
}

// ---- what current models need (issue 14) ------------------------------------------------------

/// Every upstream answer in these tests must be fresh (they check what the upstream returned).
const FRESH: &[(&str, &str)] = &[("cache-control", "no-cache")];

/// Gemini 3 rejects a follow-up whose functionCall part lacks the thoughtSignature it returned;
/// the gateway carries it in the tool call id, so a plain OpenAI client's conversation works.
#[tokio::test]
async fn gemini_3_multi_turn_tool_calling_carries_the_thought_signature() {
    let gm = ProviderMock::gemini("gemini", GEMINI_KEY).await;
    let g = gateway(config(&["gemini:gemini-3-pro-preview"], None, Some(&gm))).await;
    for stream in [false, true] {
        let question = if stream { "And the weather in Paris tonight?" } else { "Weather in Paris now?" };
        let mut messages = vec![json!({"role": "user", "content": question})];
        let req = json!({"model": "cheap", "messages": messages, "tools": [weather_tool()], "stream": stream,
            "reasoning_effort": "low"});
        let message = if stream {
            let (_, chunks) = stream_chat_with(&g, &req, FRESH).await;
            let calls = streamed_calls(&chunks);
            let reasoning: String =
                chunks.iter().filter_map(|c| c["choices"][0]["delta"]["reasoning_content"].as_str()).collect();
            assert_eq!(reasoning, format!("Considering: {question}"), "thought parts stream as reasoning_content");
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": calls[0].0, "type": "function",
                "function": {"name": calls[0].1, "arguments": calls[0].2}}]})
        } else {
            let (s, _, body) = post_chat(&g, &req, FRESH).await;
            assert_eq!(s, 200, "{body}");
            assert_eq!(body["choices"][0]["message"]["reasoning_content"], format!("Considering: {question}"));
            body["choices"][0]["message"].clone()
        };
        let sent = gm.last().body;
        assert_eq!(sent["generationConfig"]["thinkingConfig"], json!({"includeThoughts": true}));
        let id = message["tool_calls"][0]["id"].as_str().unwrap().to_string();
        messages.push(message.clone());
        messages.push(json!({"role": "tool", "tool_call_id": id, "content": "18°C"}));
        let follow_up = json!({"model": "cheap", "messages": messages, "tools": [weather_tool()], "stream": stream});
        let text = if stream {
            streamed_text(&stream_chat_with(&g, &follow_up, FRESH).await.1)
        } else {
            let (s, _, body) = post_chat(&g, &follow_up, FRESH).await;
            assert_eq!(s, 200, "the follow-up is accepted: {body}");
            content(&body).to_string()
        };
        assert_eq!(text, "tool said: 18°C");
        let sent = gm.last().body;
        let part = &sent["contents"][1]["parts"][0];
        assert!(part["functionCall"].is_object(), "{sent}");
        assert!(part["thoughtSignature"].as_str().unwrap().starts_with("Cn8Bmock+/sig"), "{part}");

        // the control: that body without the signature is what Gemini 3 rejects, so the mock is
        // really enforcing the rule
        let mut unsigned = sent.clone();
        unsigned["contents"][1]["parts"][0].as_object_mut().unwrap().remove("thoughtSignature");
        let r = reqwest::Client::new()
            .post(format!("{}/v1beta/models/gemini-3-pro-preview:generateContent", gm.base_url()))
            .header("x-goog-api-key", GEMINI_KEY)
            .json(&unsigned)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        assert!(r.text().await.unwrap().contains("thought_signature"));

        // a call id without a signature (as after a failover from another provider, which made the
        // call) gets Google's documented stand-in instead of a 400
        let bare = id.split(".ts.").next().unwrap().to_string();
        let mut stripped = messages.clone();
        stripped[1]["tool_calls"][0]["id"] = json!(bare);
        stripped[2]["tool_call_id"] = json!(bare);
        let req = json!({"model": "cheap", "messages": stripped, "tools": [weather_tool()]});
        let (s, _, body) = post_chat(&g, &req, &[("cache-control", "no-cache")]).await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(gm.last().body["contents"][1]["parts"][0]["thoughtSignature"], "skip_thought_signature_validator");
    }
    g.shutdown().await;
}

/// Prompt-caching controls reach Anthropic where the client put them; cache reads come back as
/// `prompt_tokens_details.cached_tokens`.
#[tokio::test]
async fn anthropic_prompt_caching_controls_pass_through_and_cached_tokens_come_back() {
    let a = ProviderMock::anthropic("claude", ANTHROPIC_KEY).await;
    let g = gateway(config(&["anthropic:claude-sonnet-4-5"], Some(&a), None)).await;
    let policy = "You are the support agent for a large bookshop. ".repeat(20);
    let mut tool = weather_tool();
    tool["cache_control"] = json!({"type": "ephemeral"});
    let req = |question: &str, stream: bool| {
        json!({"model": "cheap", "stream": stream, "stream_options": {"include_usage": true}, "tools": [tool], "messages": [
            {"role": "system", "content": [{"type": "text", "text": policy, "cache_control": {"type": "ephemeral"}}]},
            {"role": "user", "content": [
                {"type": "text", "text": "Here is our catalogue: war and peace, ulysses, dubliners.",
                 "cache_control": {"type": "ephemeral", "ttl": "1h"}},
                {"type": "text", "text": question}]}]})
    };
    let (s, _, first) = post_chat(&g, &req("Do you stock Ulysses?", false), FRESH).await;
    assert_eq!(s, 200, "{first}");
    let sent = a.last().body;
    assert_eq!(sent["system"][0]["cache_control"], json!({"type": "ephemeral"}));
    assert_eq!(sent["tools"][0]["cache_control"], json!({"type": "ephemeral"}));
    assert_eq!(sent["messages"][0]["content"][0]["cache_control"], json!({"type": "ephemeral", "ttl": "1h"}));
    assert!(sent["messages"][0]["content"][1].get("cache_control").is_none());
    assert_eq!(first["usage"]["prompt_tokens_details"]["cached_tokens"], 0, "first sight writes the cache");
    assert_eq!(first["usage"]["prompt_tokens"], 1011, "cache writes count as prompt tokens");

    let (s, _, second) = post_chat(&g, &req("What opening hours does the shop keep on Sundays?", false), FRESH).await;
    assert_eq!(s, 200, "{second}");
    assert_eq!(second["usage"]["prompt_tokens_details"]["cached_tokens"], 1000);

    let (_, chunks) = stream_chat_with(&g, &req("Can I order a gift card by phone?", true), FRESH).await;
    let usage = chunks.iter().rev().find_map(|c| c.get("usage").filter(|u| u.is_object())).unwrap();
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 1000, "{usage}");
    g.shutdown().await;
}

/// Anthropic thinking comes back as `reasoning_content` with the signed blocks in
/// `thinking_blocks`; echoing the message back (as OpenAI SDK users do) satisfies Anthropic's rule
/// that a tool-use turn be resent with its thinking.
#[tokio::test]
async fn anthropic_thinking_is_returned_and_its_signature_survives_a_tool_round_trip() {
    let a = ProviderMock::anthropic("claude", ANTHROPIC_KEY).await;
    let g = gateway(config(&["anthropic:claude-sonnet-4-5"], Some(&a), None)).await;
    let mut messages = vec![json!({"role": "user", "content": "Is it raining in Paris?"})];
    let req = json!({"model": "cheap", "messages": messages, "tools": [weather_tool()], "reasoning_effort": "low"});
    let (s, _, body) = post_chat(&g, &req, FRESH).await;
    assert_eq!(s, 200, "{body}");
    let message = body["choices"][0]["message"].clone();
    assert_eq!(message["reasoning_content"], "Considering: Is it raining in Paris?");
    assert_eq!(message["thinking_blocks"][0]["signature"], "EqQBmock1");
    assert_eq!(a.last().body["thinking"], json!({"type": "enabled", "budget_tokens": 1024}));
    let id = message["tool_calls"][0]["id"].as_str().unwrap().to_string();
    messages.push(message.clone());
    messages.push(json!({"role": "tool", "tool_call_id": id, "content": "light rain"}));
    let follow = json!({"model": "cheap", "messages": messages, "tools": [weather_tool()], "reasoning_effort": "low"});
    let (s, _, body) = post_chat(&g, &follow, FRESH).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(content(&body), "tool said: light rain");
    assert_eq!(a.last().body["messages"][1]["content"][0]["type"], "thinking");

    // the control: the body the gateway sent, without its thinking block, is what Anthropic
    // refuses, so the mock really enforces the rule
    let mut unsigned = a.last().body;
    unsigned["messages"][1]["content"].as_array_mut().unwrap().remove(0);
    let r = reqwest::Client::new()
        .post(format!("{}/v1/messages", a.base_url()))
        .header("x-api-key", ANTHROPIC_KEY)
        .header("anthropic-version", "2023-06-01")
        .json(&unsigned)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("must start with a thinking block"));
    // a tool-use turn with no blocks to send back (another provider answered it, or the client
    // dropped them) is served with thinking off for that request, not refused
    let mut bare = messages.clone();
    bare[1].as_object_mut().unwrap().remove("thinking_blocks");
    let req = json!({"model": "cheap", "messages": bare, "tools": [weather_tool()], "reasoning_effort": "low"});
    let (s, _, body) = post_chat(&g, &req, &[("cache-control", "no-cache")]).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(content(&body), "tool said: light rain");
    assert!(a.last().body.get("thinking").is_none(), "{}", a.last().body);

    // streamed: thinking deltas arrive as delta.reasoning_content
    let req = json!({"model": "cheap", "stream": true, "reasoning_effort": "medium",
        "messages": [{"role": "user", "content": "Name a quiet museum in Rome."}]});
    let (_, chunks) = stream_chat_with(&g, &req, FRESH).await;
    let reasoning: String =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"]["reasoning_content"].as_str()).collect();
    assert_eq!(reasoning, "Considering: Name a quiet museum in Rome.");
    assert!(streamed_text(&chunks).starts_with("claude answer"));
    let blocks: Vec<&Value> =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"]["thinking_blocks"].as_array()).flatten().collect();
    assert_eq!(blocks.len(), 1, "the signed block arrives whole: {blocks:?}");
    assert_eq!(blocks[0]["thinking"], "Considering: Name a quiet museum in Rome.");
    assert!(blocks[0]["signature"].as_str().unwrap().starts_with("EqQBmock"));
    g.shutdown().await;
}

/// POSTs to `/v1/responses` with `cache-control: no-cache`; returns the status and the body.
async fn post_responses(g: &switchyard::app::Running, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::new().post(url(g, "/v1/responses")).header("cache-control", "no-cache").json(body);
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Anthropic thinking through the Responses API: a `reasoning` item opens the output, and both
/// kinds of tool loop send the signed thinking back, as Anthropic (the mock) requires: one
/// continued by `previous_response_id` (the stored turn keeps the blocks) and one whose client
/// carries the context itself (`store: false`, the output items sent back with
/// `include: ["reasoning.encrypted_content"]`). Streamed, the reasoning is summary deltas.
#[tokio::test]
async fn anthropic_thinking_through_the_responses_api_survives_both_kinds_of_tool_loop() {
    let a = ProviderMock::anthropic("claude", ANTHROPIC_KEY).await;
    let g = gateway(config(&["anthropic:claude-sonnet-4-5"], Some(&a), None)).await;
    let tool = json!({"type": "function", "name": "get_weather", "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}});
    let effort = json!({"effort": "low"});
    let (s, first) = post_responses(
        &g,
        &json!({"model": "cheap", "input": "Is it raining in Paris?",
        "tools": [tool], "reasoning": effort}),
    )
    .await;
    assert_eq!(s, 200, "{first}");
    let output = first["output"].as_array().unwrap();
    assert_eq!(output[0]["type"], "reasoning", "{first}");
    assert_eq!(output[0]["summary"][0]["text"], "Considering: Is it raining in Paris?");
    let call = output.iter().find(|i| i["type"] == "function_call").unwrap();
    let result = json!({"type": "function_call_output", "call_id": call["call_id"], "output": "light rain"});
    let (s, follow) = post_responses(
        &g,
        &json!({"model": "cheap", "previous_response_id": first["id"],
        "tools": [tool], "reasoning": effort, "input": [result]}),
    )
    .await;
    assert_eq!(s, 200, "{follow}");
    let last = follow["output"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["content"][0]["text"], "tool said: light rain", "{follow}");
    let sent = a.last().body;
    assert_eq!(sent["messages"][1]["content"][0]["type"], "thinking", "{sent}");
    assert_eq!(sent["messages"][1]["content"][0]["signature"], "EqQBmock1", "{sent}");

    // the client keeps the context: it sends the output items back, reasoning item included
    let ask = json!({"role": "user", "content": "Is it snowing in Oslo?"});
    let (s, first) = post_responses(
        &g,
        &json!({"model": "cheap", "store": false, "input": [ask],
        "include": ["reasoning.encrypted_content"], "tools": [tool], "reasoning": effort}),
    )
    .await;
    assert_eq!(s, 200, "{first}");
    let output = first["output"].as_array().unwrap().clone();
    assert!(output[0]["encrypted_content"].as_str().is_some_and(|e| e.contains("EqQBmock")), "{first}");
    let call = output.iter().find(|i| i["type"] == "function_call").unwrap();
    let result = json!({"type": "function_call_output", "call_id": call["call_id"], "output": "snow"});
    let mut input = vec![ask.clone()];
    input.extend(output.iter().cloned());
    input.push(result.clone());
    let (s, follow) = post_responses(
        &g,
        &json!({"model": "cheap", "store": false, "input": input,
        "tools": [tool], "reasoning": effort}),
    )
    .await;
    assert_eq!(s, 200, "{follow}");
    let last = follow["output"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["content"][0]["text"], "tool said: snow", "{follow}");
    // without the reasoning item there is no signed thinking to send back: served, thinking off
    let mut bare = vec![ask];
    bare.extend(output.iter().filter(|i| i["type"] != "reasoning").cloned());
    bare.push(result);
    let (s, served) = post_responses(
        &g,
        &json!({"model": "cheap", "store": false, "input": bare,
        "tools": [tool], "reasoning": effort}),
    )
    .await;
    assert_eq!(s, 200, "{served}");
    assert!(a.last().body.get("thinking").is_none(), "{}", a.last().body);

    // streamed
    let r = reqwest::Client::new()
        .post(url(&g, "/v1/responses"))
        .header("cache-control", "no-cache")
        .json(&json!({"model": "cheap", "stream": true, "input": "Name a quiet museum in Rome.", "reasoning": effort}))
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    let events: Vec<Value> =
        text.lines().filter_map(|l| l.strip_prefix("data: ")).map(|d| serde_json::from_str(d).unwrap()).collect();
    let summary: String = events
        .iter()
        .filter(|e| e["type"] == "response.reasoning_summary_text.delta")
        .filter_map(|e| e["delta"].as_str())
        .collect();
    assert_eq!(summary, "Considering: Name a quiet museum in Rome.");
    let done = &events.last().unwrap()["response"];
    assert_eq!(done["output"][0]["type"], "reasoning", "{done}");
    assert!(done["output"][1]["content"][0]["text"].as_str().unwrap().starts_with("claude answer"), "{done}");
    g.shutdown().await;
}
