#![allow(clippy::unwrap_used, clippy::expect_used)]
//! What each adapter's translation costs per request: our OpenAI-shaped request to the wire body
//! (translated and serialised), the provider's response body to our `ChatResponse` (parsed and
//! translated), and one streamed text event to its chunk(s). The request is a realistic
//! multi-turn conversation with a system prompt, two tools, a tool call and its result.
//!
//! The `client_api` group times the other side: a request in OpenAI's Responses API or Anthropic's
//! Messages API turned into that chat request (parsed and translated), the chat answer turned back
//! (translated and serialised), and one stream chunk turned into their events.
//!
//! The `count_tokens` group times the token estimate for an OpenAI-compatible deployment.
//!
//! `cargo bench --bench providers -- --warm-up-time 1 --measurement-time 3`

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use serde_json::{json, Value};
use switchyard::api::{messages, responses, ChatChunk, ChatRequest, ChatResponse, EventTranslator};
use switchyard::providers::openai::OpenAi;
use switchyard::providers::sse::SseEvent;
use switchyard::providers::{anthropic, gemini};

fn request() -> ChatRequest {
    let weather = json!({"type": "function", "function": {"name": "get_weather",
        "description": "Current weather for a city, in metric units",
        "parameters": {"type": "object", "properties": {
            "location": {"type": "string", "description": "City and country, e.g. Paris, France"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["location"], "additionalProperties": false}}});
    let search = json!({"type": "function", "function": {"name": "search_flights",
        "description": "Search direct flights between two airports on a date",
        "parameters": {"type": "object", "properties": {
            "from": {"type": "string"}, "to": {"type": "string"}, "date": {"type": "string", "format": "date"}},
            "required": ["from", "to", "date"]}}});
    serde_json::from_value(json!({
        "model": "auto",
        "temperature": 0.4,
        "max_tokens": 800,
        "stream_options": null,
        "tools": [weather, search],
        "tool_choice": "auto",
        "messages": [
            {"role": "system", "content": "You are a concise travel assistant. Use tools when facts may have changed; never invent flight numbers."},
            {"role": "user", "content": "I'm flying from Amsterdam to Paris next Friday for a three-day conference. What should I pack?"},
            {"role": "assistant", "content": "Let me check the forecast for Paris first.", "tool_calls": [
                {"id": "call_8f2a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris, France\",\"unit\":\"celsius\"}"}}]},
            {"role": "tool", "tool_call_id": "call_8f2a", "content": "{\"forecast\":[{\"day\":\"Fri\",\"high\":14,\"low\":7,\"rain\":0.6},{\"day\":\"Sat\",\"high\":16,\"low\":8,\"rain\":0.2},{\"day\":\"Sun\",\"high\":15,\"low\":9,\"rain\":0.4}]}"},
            {"role": "assistant", "content": "Expect 14-16°C with showers on Friday and Sunday: pack layers, a light waterproof jacket and an umbrella. Business casual is usual for conferences in Paris."},
            {"role": "user", "content": "Great. Are there direct morning flights on Friday, and would the rain affect them?"}
        ]
    }))
    .unwrap()
}

const ANSWER: &str = "There are three direct morning departures from AMS to CDG on Friday (07:05, 08:40 and 10:15), each about 1h20. Light rain rarely delays this route; the 07:05 is the most punctual. Want me to check seats?";

fn openai_response() -> Vec<u8> {
    serde_json::to_vec(&json!({"id": "chatcmpl-AbC123", "object": "chat.completion", "created": 1_730_000_000,
        "model": "gpt-4o-mini-2024-07-18", "system_fingerprint": "fp_0ba0d124f1",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": null, "message": {"role": "assistant",
            "content": ANSWER, "refusal": null, "tool_calls": [{"id": "call_Qx9", "type": "function",
            "function": {"name": "search_flights", "arguments": "{\"from\":\"AMS\",\"to\":\"CDG\",\"date\":\"2025-11-28\"}"}}]}}],
        "usage": {"prompt_tokens": 412, "completion_tokens": 61, "total_tokens": 473,
            "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}}}))
    .unwrap()
}

fn anthropic_response() -> Vec<u8> {
    serde_json::to_vec(&json!({"id": "msg_01AbC123", "type": "message", "role": "assistant",
        "model": "claude-haiku-4-5-20251001", "stop_reason": "tool_use", "stop_sequence": null,
        "content": [{"type": "text", "text": ANSWER},
            {"type": "tool_use", "id": "toolu_01Qx9", "name": "search_flights",
             "input": {"from": "AMS", "to": "CDG", "date": "2025-11-28"}}],
        "usage": {"input_tokens": 412, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
            "output_tokens": 61, "service_tier": "standard"}}))
    .unwrap()
}

fn gemini_response() -> Vec<u8> {
    serde_json::to_vec(&json!({"candidates": [{"index": 0, "finishReason": "STOP", "avgLogprobs": -0.21,
            "content": {"role": "model", "parts": [{"text": ANSWER},
                {"functionCall": {"name": "search_flights", "args": {"from": "AMS", "to": "CDG", "date": "2025-11-28"}}}]}}],
        "usageMetadata": {"promptTokenCount": 412, "candidatesTokenCount": 61, "totalTokenCount": 473,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 412}]},
        "modelVersion": "gemini-2.5-flash", "responseId": "Z1vCaOqrJ8WtmNAPqYOMiQk"}))
    .unwrap()
}

fn event(data: Value, name: Option<&str>) -> SseEvent {
    SseEvent { event: name.map(str::to_string), data: data.to_string() }
}

/// The OpenAI adapter's per-event work (as in `OpenAi::chat_stream`).
fn openai_event(data: &str) -> ChatChunk {
    let v: Value = serde_json::from_str(data).unwrap();
    assert!(v.get("error").is_none());
    serde_json::from_value(v).unwrap()
}

fn bench(c: &mut Criterion) {
    let req = request();

    let mut g = c.benchmark_group("request");
    g.bench_function("openai", |b| {
        b.iter(|| serde_json::to_vec(&OpenAi::to_openai(black_box(&req), "gpt-4o-mini", false)).unwrap())
    });
    g.bench_function("anthropic", |b| {
        b.iter(|| {
            serde_json::to_vec(&anthropic::to_anthropic(black_box(&req), "claude-haiku-4-5", 4096, false).unwrap())
                .unwrap()
        })
    });
    g.bench_function("gemini", |b| {
        b.iter(|| serde_json::to_vec(&gemini::to_gemini(black_box(&req)).unwrap()).unwrap())
    });
    g.finish();

    let (o, a, gm) = (openai_response(), anthropic_response(), gemini_response());
    let mut g = c.benchmark_group("response");
    g.bench_function("openai", |b| b.iter(|| serde_json::from_slice::<ChatResponse>(black_box(&o)).unwrap()));
    g.bench_function("anthropic", |b| {
        b.iter(|| anthropic::from_anthropic(serde_json::from_slice(black_box(&a)).unwrap(), "claude-haiku-4-5"))
    });
    g.bench_function("gemini", |b| {
        b.iter(|| gemini::from_gemini(serde_json::from_slice(black_box(&gm)).unwrap(), "gemini-2.5-flash"))
    });
    g.finish();

    // one text delta of a stream already under way
    let o_ev = json!({"id": "chatcmpl-AbC123", "object": "chat.completion.chunk", "created": 1_730_000_000,
        "model": "gpt-4o-mini-2024-07-18", "system_fingerprint": "fp_0ba0d124f1",
        "choices": [{"index": 0, "delta": {"content": " morning departures"}, "logprobs": null, "finish_reason": null}]})
    .to_string();
    let a_ev = event(
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " morning departures"}}),
        Some("content_block_delta"),
    );
    let g_ev = event(
        json!({"candidates": [{"content": {"parts": [{"text": " morning departures"}], "role": "model"}, "index": 0}],
            "usageMetadata": {"promptTokenCount": 412, "totalTokenCount": 412},
            "modelVersion": "gemini-2.5-flash", "responseId": "Z1vCaOqrJ8WtmNAPqYOMiQk"}),
        None,
    );
    let mut a_state = anthropic::StreamState::new("claude-haiku-4-5");
    a_state
        .on_event(&event(
            json!({"type": "message_start", "message": {"id": "msg_01AbC123", "type": "message", "role": "assistant",
                "content": [], "model": "claude-haiku-4-5-20251001", "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 412, "output_tokens": 1}}}),
            Some("message_start"),
        ))
        .unwrap();
    a_state.on_event(&a_ev).unwrap(); // the role goes out with the first delta; measure a later one
    let mut g_state = gemini::StreamState::new("gemini-2.5-flash", 1);
    g_state.on_event(&g_ev).unwrap();

    let mut g = c.benchmark_group("stream_event");
    g.bench_function("openai", |b| b.iter(|| openai_event(black_box(&o_ev))));
    g.bench_function("anthropic", |b| b.iter(|| a_state.on_event(black_box(&a_ev)).unwrap()));
    g.bench_function("gemini", |b| b.iter(|| g_state.on_event(black_box(&g_ev)).unwrap()));
    g.finish();
}

/// The travel conversation of [`request`] as a Responses API request.
fn responses_request() -> Vec<u8> {
    let req = serde_json::to_value(request()).unwrap();
    let m = &req["messages"];
    let tools: Vec<Value> = req["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let f = &t["function"];
            json!({"type": "function", "name": f["name"], "description": f["description"], "parameters": f["parameters"]})
        })
        .collect();
    let call = &m[2]["tool_calls"][0];
    serde_json::to_vec(&json!({
        "model": "auto", "temperature": 0.4, "max_output_tokens": 800, "instructions": m[0]["content"],
        "tools": tools, "tool_choice": "auto",
        "input": [
            {"role": "user", "content": m[1]["content"]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": m[2]["content"]}]},
            {"type": "function_call", "call_id": call["id"], "name": call["function"]["name"], "arguments": call["function"]["arguments"]},
            {"type": "function_call_output", "call_id": call["id"], "output": m[3]["content"]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": m[4]["content"]}]},
            {"role": "user", "content": [{"type": "input_text", "text": m[5]["content"]}]},
        ],
    }))
    .unwrap()
}

/// The same conversation as an Anthropic Messages request.
fn messages_request() -> Vec<u8> {
    let req = serde_json::to_value(request()).unwrap();
    let m = &req["messages"];
    let call = &m[2]["tool_calls"][0];
    let tools: Vec<Value> = req["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| json!({"name": t["function"]["name"], "description": t["function"]["description"], "input_schema": t["function"]["parameters"]}))
        .collect();
    serde_json::to_vec(&json!({
        "model": "auto", "temperature": 0.4, "max_tokens": 800, "system": m[0]["content"], "tools": tools,
        "messages": [
            {"role": "user", "content": m[1]["content"]},
            {"role": "assistant", "content": [{"type": "text", "text": m[2]["content"]},
                {"type": "tool_use", "id": call["id"], "name": call["function"]["name"],
                 "input": serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap()}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"], "content": m[3]["content"]}]},
            {"role": "assistant", "content": m[4]["content"]},
            {"role": "user", "content": m[5]["content"]},
        ],
    }))
    .unwrap()
}

fn client_api(c: &mut Criterion) {
    let (rq, mq) = (responses_request(), messages_request());
    let answer: ChatResponse = serde_json::from_slice(&openai_response()).unwrap();
    let chunk = openai_event(
        &json!({"id": "chatcmpl-AbC123", "object": "chat.completion.chunk", "created": 1_730_000_000,
            "model": "gpt-4o-mini-2024-07-18", "choices": [{"index": 0, "delta": {"content": " morning departures"}, "finish_reason": null}]})
        .to_string(),
    );
    let prepared = responses::to_chat_request(serde_json::from_slice(&rq).unwrap(), Vec::new()).unwrap();
    let mut g = c.benchmark_group("client_api");
    g.bench_function("responses/request", |b| {
        b.iter(|| responses::to_chat_request(serde_json::from_slice(black_box(&rq)).unwrap(), Vec::new()).unwrap())
    });
    g.bench_function("messages/request", |b| {
        b.iter(|| messages::to_chat_request(serde_json::from_slice(black_box(&mq)).unwrap()).unwrap())
    });
    g.bench_function("responses/answer", |b| {
        b.iter(|| serde_json::to_vec(&responses::to_response(black_box(&answer), "resp_1", &prepared.echo).response))
    });
    g.bench_function("messages/answer", |b| b.iter(|| serde_json::to_vec(&messages::to_message(black_box(&answer)))));
    let mut rt = responses::StreamTranslator::new("resp_1".into(), prepared.echo.clone());
    rt.chunk(&chunk); // opened: measure a later delta
    let mut mt = messages::StreamTranslator::new();
    mt.chunk(&chunk);
    g.bench_function("responses/stream_event", |b| b.iter(|| rt.chunk(black_box(&chunk))));
    g.bench_function("messages/stream_event", |b| b.iter(|| mt.chunk(black_box(&chunk))));
    g.finish();
}

/// The token estimate `/v1/messages/count_tokens` gives for an OpenAI-compatible deployment: the
/// request above (cl100k_base over every message and the two tools), and the encoder alone on a
/// 64 KiB prompt of prose.
fn count_tokens(c: &mut Criterion) {
    let req = request();
    let prose = "The quick brown fox jumps over the lazy dog; it's 2026, numbers 1234567 and émojis 😀.\n".repeat(730);
    let mut g = c.benchmark_group("count_tokens");
    g.bench_function("estimate/request", |b| b.iter(|| switchyard::providers::estimate::input_tokens(black_box(&req))));
    g.throughput(criterion::Throughput::Bytes(prose.len() as u64));
    g.bench_function("cl100k/64k_prose", |b| b.iter(|| switchyard::embed::cl100k::count(black_box(&prose))));
    g.finish();
}

criterion_group!(benches, bench, client_api, count_tokens);
criterion_main!(benches);
