//! Translation tests for the Gemini adapter. Bodies and streams follow the shapes documented for
//! `generateContent` / `streamGenerateContent?alt=sse` (CRLF-separated SSE), with our own content.

use serde_json::json;

use super::*;
use crate::api::ChunkAccumulator;
use crate::providers::sse::SseDecoder;

fn req(v: serde_json::Value) -> ChatRequest {
    serde_json::from_value(v).unwrap()
}

fn body(v: serde_json::Value) -> serde_json::Value {
    serde_json::to_value(to_gemini(&req(v)).unwrap()).unwrap()
}

#[test]
fn system_instruction_roles_and_generation_config() {
    let b = body(json!({"model": "x", "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Bye"}
    ], "temperature": 1.5, "top_p": 0.8, "max_tokens": 200, "stop": ["END"], "seed": 7, "n": 2,
       "presence_penalty": 0.25}));
    assert_eq!(b["systemInstruction"], json!({"parts": [{"text": "You are terse."}]}));
    assert_eq!(
        b["contents"],
        json!([
            {"role": "user", "parts": [{"text": "Hi"}]},
            {"role": "model", "parts": [{"text": "Hello."}]},
            {"role": "user", "parts": [{"text": "Bye"}]}
        ])
    );
    assert_eq!(
        b["generationConfig"],
        json!({"temperature": 1.5, "topP": 0.8, "maxOutputTokens": 200, "stopSequences": ["END"],
               "candidateCount": 2, "seed": 7, "presencePenalty": 0.25})
    );
    let plain = body(json!({"model": "x", "messages": [{"role": "user", "content": "Hi"}]}));
    assert!(plain.get("generationConfig").is_none(), "no defaults invented: {plain}");
    let top_k = body(json!({"model": "x", "messages": [{"role": "user", "content": "Hi"}], "top_k": 20}));
    assert_eq!(top_k["generationConfig"], json!({"topK": 20}));
    let mut messages_client = req(json!({"model": "x", "messages": [{"role": "user", "content": "Hi"}]}));
    messages_client.anthropic_top_k = Some(3);
    let b = serde_json::to_value(to_gemini(&messages_client).unwrap()).unwrap();
    assert_eq!(b["generationConfig"], json!({"topK": 3}));
    assert!(plain.get("systemInstruction").is_none());
}

#[test]
fn consecutive_turns_merge_and_empty_ones_are_dropped() {
    let b = body(json!({"model": "x", "messages": [
        {"role": "user", "content": "a"},
        {"role": "user", "content": [{"type": "text", "text": "b"}, {"type": "text", "text": ""}]},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "c"}
    ]}));
    assert_eq!(b["contents"], json!([{"role": "user", "parts": [{"text": "a"}, {"text": "b"}, {"text": "c"}]}]));
}

fn weather_tool() -> serde_json::Value {
    json!({"type": "function", "function": {"name": "get_weather", "description": "Current weather",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"],
                       "additionalProperties": false}}})
}

#[test]
fn tools_and_every_tool_choice() {
    let base = json!({"model": "x", "messages": [{"role": "user", "content": "Weather?"}], "tools": [weather_tool()]});
    let b = body(base.clone());
    assert_eq!(
        b["tools"],
        json!([{"functionDeclarations": [{"name": "get_weather", "description": "Current weather",
            "parametersJsonSchema": {"type": "object", "properties": {"location": {"type": "string"}},
                                     "required": ["location"], "additionalProperties": false}}]}])
    );
    assert!(b.get("toolConfig").is_none());
    let with = |choice: serde_json::Value| {
        let mut r = base.clone();
        r["tool_choice"] = choice;
        body(r)["toolConfig"]["functionCallingConfig"].clone()
    };
    assert_eq!(with(json!("auto")), json!({"mode": "AUTO"}));
    assert_eq!(with(json!("none")), json!({"mode": "NONE"}));
    assert_eq!(with(json!("required")), json!({"mode": "ANY"}));
    assert_eq!(
        with(json!({"type": "function", "function": {"name": "get_weather"}})),
        json!({"mode": "ANY", "allowedFunctionNames": ["get_weather"]})
    );
}

#[test]
fn tool_calls_and_results_are_function_parts_named_after_the_call() {
    let b = body(json!({"model": "x", "messages": [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}},
            {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": ""}}
        ]},
        {"role": "tool", "tool_call_id": "call_a", "content": "{\"temp_c\": 18}"},
        {"role": "tool", "tool_call_id": "call_b", "content": "14:05"}
    ], "tools": [weather_tool()]}));
    assert_eq!(
        b["contents"][1],
        json!({"role": "model", "parts": [
            {"text": "Checking."},
            {"functionCall": {"name": "get_weather", "args": {"location": "Paris"}}},
            {"functionCall": {"name": "get_time", "args": {}}}
        ]})
    );
    assert_eq!(
        b["contents"][2],
        json!({"role": "user", "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"temp_c": 18}}},
            {"functionResponse": {"name": "get_time", "response": {"output": "14:05"}}}
        ]})
    );
    let orphan = req(json!({"model": "x", "messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]}));
    assert!(matches!(to_gemini(&orphan), Err(ProviderError::Unsupported(_))));
}

#[test]
fn images_audio_and_response_format() {
    let b = body(json!({"model": "x", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Describe"},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a/cat.PNG?x=1"}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
    ]}], "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "object"}}}}));
    assert_eq!(
        b["contents"][0]["parts"],
        json!([
            {"text": "Describe"},
            {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4AAQ"}},
            {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/a/cat.PNG?x=1"}},
            {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}}
        ])
    );
    assert_eq!(
        b["generationConfig"],
        json!({"responseMimeType": "application/json", "responseJsonSchema": {"type": "object"}})
    );
}

fn parse(v: serde_json::Value) -> ChatResponse {
    from_gemini(serde_json::from_value(v).unwrap(), "requested")
}

#[test]
fn text_response() {
    let r = parse(json!({
        "candidates": [{"content": {"parts": [{"text": "Paris is the"}, {"text": " capital of France."}], "role": "model"},
                        "finishReason": "STOP", "avgLogprobs": -0.05, "index": 0}],
        "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 7, "totalTokenCount": 15,
                          "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 8}]},
        "modelVersion": "gemini-2.0-flash", "responseId": "abc123"}));
    assert_eq!(r.id, "chatcmpl-abc123");
    assert_eq!(r.model, "gemini-2.0-flash");
    assert_eq!(r.choices[0].message.content.as_deref(), Some("Paris is the capital of France."));
    assert_eq!(r.choices[0].finish_reason.as_deref(), Some("stop"));
    assert_eq!(r.usage, Some(Usage::new(8, 7)));
}

#[test]
fn function_call_response_gets_ids_and_tool_calls_finish() {
    let r = parse(json!({
        "candidates": [{"content": {"parts": [
            {"text": "thinking about it", "thought": true},
            {"functionCall": {"name": "get_weather", "args": {"location": "Paris"}}},
            {"functionCall": {"id": "fc_7", "name": "get_time"}}], "role": "model"}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 30, "candidatesTokenCount": 10, "thoughtsTokenCount": 5, "totalTokenCount": 45}}));
    let m = &r.choices[0].message;
    assert_eq!(m.content, None, "thought parts are not answer text; pure calls have null content");
    assert_eq!(m.reasoning_content.as_deref(), Some("thinking about it"));
    let calls = m.tool_calls.as_ref().unwrap();
    assert!(calls[0].id.starts_with("call_") && calls[0].id.len() > 10);
    assert_eq!(calls[0].function.arguments, r#"{"location":"Paris"}"#);
    assert_eq!(calls[1].id, "fc_7");
    assert_eq!(calls[1].function.arguments, "{}");
    assert_eq!(r.choices[0].finish_reason.as_deref(), Some("tool_calls"));
    let thinking = |n| crate::api::CompletionTokensDetails { reasoning_tokens: Some(n), ..Default::default() };
    let mut want = Usage::new(30, 15);
    want.completion_tokens_details = Some(thinking(5));
    assert_eq!(r.usage, Some(want), "thinking tokens are completion tokens, and counted as reasoning");
    assert_eq!(r.model, "requested");
}

#[test]
fn finish_reasons_and_blocked_prompts() {
    assert_eq!(finish_reason("STOP", false), "stop");
    assert_eq!(finish_reason("MAX_TOKENS", true), "length");
    for r in ["SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII"] {
        assert_eq!(finish_reason(r, false), "content_filter", "{r}");
    }
    let r = parse(
        json!({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5}}),
    );
    assert_eq!(r.choices.len(), 1);
    assert_eq!(r.choices[0].finish_reason.as_deref(), Some("content_filter"));
    assert!(!r.is_complete(), "a blocked answer is never cached");
}

pub(crate) const TEXT_STREAM: &str = include_str!("../../tests/fixtures/gemini/text_stream.sse");
pub(crate) const CALL_STREAM: &str = include_str!("../../tests/fixtures/gemini/function_call_stream.sse");

fn run(wire: &str, n: u32) -> Result<Vec<ChatChunk>, ProviderError> {
    let mut d = SseDecoder::default();
    let mut evs = d.push(wire.as_bytes()).unwrap();
    evs.extend(d.finish());
    let mut st = StreamState::new("requested", n);
    let mut out = Vec::new();
    for ev in evs {
        out.extend(st.on_event(&ev)?);
    }
    Ok(out)
}

fn fold(chunks: &[ChatChunk]) -> ChatResponse {
    let mut acc = ChunkAccumulator::default();
    for c in chunks {
        acc.push(c);
    }
    acc.finish()
}

#[test]
fn text_stream_with_usage_once_at_the_end() {
    let chunks = run(TEXT_STREAM, 1).unwrap();
    assert_eq!(chunks[0].choices[0].delta.role.as_deref(), Some("assistant"));
    assert!(chunks.iter().all(|c| c.id == "chatcmpl-Z1vCaOqrJ8WtmNAPqYOMiQk" && c.model == "gemini-2.5-flash"));
    let usage: Vec<_> = chunks.iter().filter(|c| c.usage.is_some()).collect();
    assert_eq!(usage.len(), 1, "Gemini repeats usage on every event; we send it once");
    assert!(usage[0].choices.is_empty());
    let mut want = Usage::new(9, 19);
    want.completion_tokens_details =
        Some(crate::api::CompletionTokensDetails { reasoning_tokens: Some(4), ..Default::default() });
    assert_eq!(usage[0].usage, Some(want));
    assert!(chunks.last().unwrap().usage.is_some());
    let r = fold(&chunks);
    assert_eq!(
        r.choices[0].message.content.as_deref(),
        Some("Three rivers in Europe: the Danube, the Rhine and the Loire.")
    );
    assert_eq!(r.choices[0].finish_reason.as_deref(), Some("stop"));
}

#[test]
fn function_calls_stream_as_whole_tool_call_deltas() {
    let chunks = run(CALL_STREAM, 1).unwrap();
    let r = fold(&chunks);
    let calls = r.choices[0].message.tool_calls.as_ref().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].function.name, "get_weather");
    assert_eq!(calls[0].function.arguments, r#"{"location":"Paris"}"#);
    assert_eq!(calls[1].function.arguments, r#"{"location":"Rome"}"#);
    assert_ne!(calls[0].id, calls[1].id);
    assert_eq!(r.choices[0].finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(r.usage, Some(Usage::new(41, 22)));
    let indices: Vec<u32> = chunks
        .iter()
        .flat_map(|c| c.choices.iter().flat_map(|ch| ch.delta.tool_calls.iter().flatten().map(|d| d.index)))
        .collect();
    assert_eq!(indices, vec![0, 1]);
}

#[test]
fn an_error_event_fails_the_stream() {
    let wire = "data: {\"error\": {\"code\": 503, \"message\": \"The model is overloaded.\", \"status\": \"UNAVAILABLE\"}}\r\n\r\n";
    let err = run(wire, 1).unwrap_err();
    assert_eq!(err, ProviderError::Stream("UNAVAILABLE: The model is overloaded.".into()));
}

#[test]
fn error_bodies_and_invalid_keys() {
    let body =
        r#"{"error": {"code": 400, "message": "Invalid value at 'contents[0].role'", "status": "INVALID_ARGUMENT"}}"#;
    assert_eq!(
        map_error(400, None, body),
        ProviderError::Status {
            status: 400,
            message: "INVALID_ARGUMENT: Invalid value at 'contents[0].role'".into(),
            retry_after: None
        }
    );
    let bad_key = r#"[{"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT",
        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]}}]"#;
    let e = map_error(400, None, bad_key);
    assert!(matches!(e, ProviderError::Status { status: 401, .. }), "{e:?}");
    assert!(
        map_error(429, None, r#"{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED"}}"#).retryable()
    );
}

fn adapter(base_url: &str, version: Option<&str>) -> Gemini {
    let mut toml = format!("kind = \"gemini\"\nbase_url = \"{base_url}\"\napi_key = \"AIza-secret\"\n");
    if let Some(v) = version {
        toml.push_str(&format!("api_version = \"{v}\"\n"));
    }
    let config: crate::config::ProviderConfig = toml::from_str(&toml).unwrap();
    let key = config.api_key.as_ref().map(|k| k.resolve("k").unwrap());
    Gemini::new(Upstream::new("gemini", &config, key).unwrap())
}

#[test]
fn urls_versions_and_the_key_only_in_a_header() {
    let body = to_gemini(&req(json!({"model": "x", "messages": [{"role": "user", "content": "Hi"}]}))).unwrap();
    let g = adapter("https://generativelanguage.googleapis.com", None);
    let r = g.request(&body, "gemini-2.5-flash", false).build().unwrap();
    assert_eq!(
        r.url().as_str(),
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
    );
    assert_eq!(r.headers()["x-goog-api-key"], "AIza-secret");
    let r = g.request(&body, "models/gemini-2.5-pro", true).build().unwrap();
    assert_eq!(
        r.url().as_str(),
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
    );
    assert!(!r.url().as_str().contains("AIza-secret"));
    let r =
        adapter("https://generativelanguage.googleapis.com", Some("v1")).request(&body, "m", false).build().unwrap();
    assert_eq!(r.url().path(), "/v1/models/m:generateContent");
    let r = adapter("https://proxy.internal/google/v1beta/", None).request(&body, "m", false).build().unwrap();
    assert_eq!(r.url().as_str(), "https://proxy.internal/google/v1beta/models/m:generateContent");
}

#[test]
fn thought_signatures_ride_in_the_call_id_and_come_back_beside_the_call() {
    // Gemini 3: the signature is on the part of the first functionCall of the turn
    let r = parse(json!({
        "candidates": [{"content": {"parts": [
            {"functionCall": {"name": "get_weather", "args": {"location": "Paris"}}, "thoughtSignature": "CiQBcs/+ab=="},
            {"functionCall": {"name": "get_weather", "args": {"location": "Rome"}}}], "role": "model"},
            "finishReason": "STOP"}]}));
    let calls = r.choices[0].message.tool_calls.clone().unwrap();
    assert!(calls[0].id.contains(".ts."), "{}", calls[0].id);
    assert!(!calls[1].id.contains(".ts."), "the second call had no signature");
    let follow_up = json!({"model": "x", "messages": [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": null, "tool_calls": calls},
        {"role": "tool", "tool_call_id": calls[0].id, "content": "sunny"},
        {"role": "tool", "tool_call_id": calls[1].id, "content": "rainy"}]});
    let b = body(follow_up);
    let parts = &b["contents"][1]["parts"];
    assert_eq!(parts[0]["functionCall"]["name"], "get_weather");
    assert_eq!(parts[0]["thoughtSignature"], "CiQBcs/+ab==", "exactly the signature Gemini sent");
    assert!(parts[1].get("thoughtSignature").is_none());
    assert_eq!(b["contents"][2]["parts"][0]["functionResponse"]["name"], "get_weather");
}

#[test]
fn reasoning_effort_asks_for_thoughts_and_streams_them_as_reasoning_content() {
    let b = body(json!({"model": "x", "reasoning_effort": "high", "messages": [{"role": "user", "content": "hi"}]}));
    assert_eq!(b["generationConfig"]["thinkingConfig"], json!({"includeThoughts": true}));
    let b = body(json!({"model": "x", "messages": [{"role": "user", "content": "hi"}]}));
    assert!(b.get("generationConfig").is_none());
    // Anthropic's `thinking` (a Messages client's): thoughts, within its budget
    let mut r = req(json!({"model": "x", "messages": [{"role": "user", "content": "hi"}]}));
    r.anthropic_thinking = Some(json!({"type": "enabled", "budget_tokens": 2048}));
    let b = serde_json::to_value(to_gemini(&r).unwrap()).unwrap();
    assert_eq!(b["generationConfig"]["thinkingConfig"], json!({"includeThoughts": true, "thinkingBudget": 2048}));
    r.anthropic_thinking = Some(json!({"type": "disabled"}));
    assert!(serde_json::to_value(to_gemini(&r).unwrap()).unwrap().get("generationConfig").is_none());

    let mut st = StreamState::new("gemini-3-pro-preview", 1);
    let ev = |v: serde_json::Value| SseEvent { event: None, data: v.to_string() };
    let mut chunks = st
        .on_event(&ev(json!({"candidates": [{"content": {"parts": [{"text": "Let me think.", "thought": true}], "role": "model"}}]})))
        .unwrap();
    chunks.extend(
        st.on_event(&ev(json!({"candidates": [{"content": {"parts": [
            {"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "c2ln"}], "role": "model"},
            "finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2}})))
            .unwrap(),
    );
    assert_eq!(chunks[0].choices[0].delta.reasoning_content.as_deref(), Some("Let me think."));
    let mut acc = ChunkAccumulator::default();
    for c in &chunks {
        acc.push(c);
    }
    let r = acc.finish();
    assert_eq!(r.choices[0].message.reasoning_content.as_deref(), Some("Let me think."));
    let id = &r.choices[0].message.tool_calls.as_ref().unwrap()[0].id;
    assert_eq!(crate::providers::wire::split_call_id(id).1.as_deref(), Some("c2ln"));
}

/// Found by the fuzzer (`gemini-response`): usage counts near u64::MAX overflowed when summed.
#[test]
fn huge_usage_counts_saturate_instead_of_overflowing() {
    let resp: GenerateResponse = serde_json::from_value(json!({
        "candidates": [{"content": {"parts": [{"text": "hi"}], "role": "model"}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": u64::MAX, "thoughtsTokenCount": 5, "totalTokenCount": 3}
    }))
    .unwrap();
    let usage = from_gemini(resp, "gemini-2.5-flash").usage.unwrap();
    assert_eq!(usage.completion_tokens, u64::MAX);
    assert_eq!(usage.total_tokens, u64::MAX);
}

/// A stream event naming candidate 3,360,957,551 would have allocated a state slot for every
/// index below it; it is a broken stream instead.
#[test]
fn a_candidate_index_out_of_range_ends_the_stream_instead_of_allocating() {
    let mut st = StreamState::new("gemini-2.5-flash", 1);
    let ev = SseEvent {
        event: None,
        data:
            json!({"candidates": [{"content": {"parts": [{"text": "x"}], "role": "model"}, "index": 3_360_957_551u64}]})
                .to_string(),
    };
    assert!(matches!(st.on_event(&ev), Err(ProviderError::Decode(m)) if m.contains("out of range")));
    let ok = SseEvent {
        event: None,
        data: json!({"candidates": [{"content": {"parts": [{"text": "x"}]}, "index": 127}]}).to_string(),
    };
    assert_eq!(st.on_event(&ok).unwrap().len(), 1);
}

/// A conversation whose tool calls another provider made (OpenAI-style ids, no signature inside)
/// fails over to Gemini: Gemini 3 gets Google's documented stand-in on the first call of each
/// model turn, a signature we do have is kept, and other Gemini models get nothing added.
#[test]
fn gemini_3_gets_the_documented_stand_in_for_calls_it_did_not_make() {
    let call =
        |id: &str, name: &str| json!({"id": id, "type": "function", "function": {"name": name, "arguments": "{}"}});
    let ours = encode_call_id("call_1", Some("CiQBcs/+ab=="));
    let r = req(json!({"model": "x", "messages": [
        {"role": "user", "content": "Weather in Paris and Lyon?"},
        {"role": "assistant", "content": null, "tool_calls": [call("call_abc", "get_weather"), call("call_def", "get_weather")]},
        {"role": "tool", "tool_call_id": "call_abc", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_def", "content": "20C"},
        {"role": "assistant", "content": null, "tool_calls": [call(&ours, "get_time")]},
        {"role": "tool", "tool_call_id": ours, "content": "noon"}
    ]}));
    let sent = |model: &str| serde_json::to_value(Gemini::body(&r, model).unwrap()).unwrap();
    let b = sent("gemini-3-pro-preview");
    let model_turns: Vec<&serde_json::Value> =
        b["contents"].as_array().unwrap().iter().filter(|c| c["role"] == "model").collect();
    assert_eq!(model_turns.len(), 2, "{b}");
    assert_eq!(model_turns[0]["parts"][0]["thoughtSignature"], SKIP_SIGNATURE);
    assert!(model_turns[0]["parts"][1].get("thoughtSignature").is_none(), "only the first call of a turn");
    assert_eq!(model_turns[1]["parts"][0]["thoughtSignature"], "CiQBcs/+ab==", "a real signature is kept");
    let b = sent("gemini-2.5-flash");
    let first_call = b["contents"].as_array().unwrap().iter().find(|c| c["role"] == "model").unwrap();
    assert!(first_call["parts"][0].get("thoughtSignature").is_none(), "{b}");
}
