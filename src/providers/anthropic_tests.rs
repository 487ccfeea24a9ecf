//! Translation tests for the Anthropic adapter. Bodies and streams follow the shapes of the examples
//! in Anthropic's API reference and its Python SDK's stream fixtures (our own text and ids).

use serde_json::json;

use super::*;
use crate::api::ChunkAccumulator;
use crate::providers::sse::SseDecoder;

fn req(v: serde_json::Value) -> ChatRequest {
    serde_json::from_value(v).unwrap()
}

fn body(v: serde_json::Value) -> serde_json::Value {
    serde_json::to_value(to_anthropic(&req(v), "claude-sonnet-4-5", 4096, false).unwrap()).unwrap()
}

#[test]
fn system_and_developer_messages_are_lifted_and_max_tokens_defaults() {
    let b = body(json!({"model": "x", "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
        {"role": "user", "content": "Hi"}
    ]}));
    assert_eq!(b["system"], "You are terse.\n\nAnswer in French.");
    assert_eq!(b["max_tokens"], 4096);
    assert_eq!(b["model"], "claude-sonnet-4-5");
    assert_eq!(b["messages"], json!([{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]));
    assert!(b.get("stream").is_none() && b.get("temperature").is_none() && b.get("tools").is_none());
}

#[test]
fn sampling_parameters_stop_and_client_token_budget() {
    let b = body(json!({"model": "x", "messages": [{"role": "user", "content": "Hi"}],
        "max_completion_tokens": 300, "max_tokens": 100, "temperature": 1.6, "top_p": 0.9,
        "stop": "\n\nHuman:", "user": "u-42", "presence_penalty": 0.5}));
    assert_eq!(b["max_tokens"], 300, "max_completion_tokens wins over the deprecated max_tokens");
    assert_eq!(b["temperature"], 1.0, "OpenAI's 0..2 is clamped to Anthropic's 0..1");
    assert_eq!(b["top_p"], 0.9);
    assert_eq!(b["stop_sequences"], json!(["\n\nHuman:"]));
    assert_eq!(b["metadata"], json!({"user_id": "u-42"}));
    assert!(b.get("presence_penalty").is_none(), "fields Anthropic rejects are not forwarded");
    let b = body(
        json!({"model": "x", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 100, "stop": ["a", "b"]}),
    );
    assert_eq!(b["max_tokens"], 100);
    assert_eq!(b["stop_sequences"], json!(["a", "b"]));
    let streamed =
        to_anthropic(&req(json!({"model": "x", "messages": [{"role": "user", "content": "Hi"}]})), "m", 7, true);
    assert_eq!(streamed.unwrap().stream, Some(true));
}

#[test]
fn consecutive_turns_of_one_role_are_merged_and_empty_ones_dropped() {
    let b = body(json!({"model": "x", "messages": [
        {"role": "user", "content": "first"},
        {"role": "user", "content": "second"},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "third"},
        {"role": "assistant", "content": "ok"},
        {"role": "system", "content": "mid-conversation system text is lifted too"},
        {"role": "assistant", "content": "still ok"}
    ]}));
    assert_eq!(b["system"], "mid-conversation system text is lifted too");
    let msgs = b["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0]["role"], "user");
    assert_eq!(msgs[0]["content"].as_array().unwrap().len(), 3);
    assert_eq!(msgs[0]["content"][2]["text"], "third");
    assert_eq!(msgs[1]["content"], json!([{"type": "text", "text": "ok"}, {"type": "text", "text": "still ok"}]));
}

fn weather_tool() -> serde_json::Value {
    json!({"type": "function", "function": {"name": "get_weather", "description": "Current weather",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}})
}

#[test]
fn tools_and_every_tool_choice() {
    let base = json!({"model": "x", "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [weather_tool(), {"type": "function", "function": {"name": "now"}}]});
    let b = body(base.clone());
    assert_eq!(
        b["tools"],
        json!([
            {"name": "get_weather", "description": "Current weather", "input_schema": {"type": "object",
                "properties": {"location": {"type": "string"}}, "required": ["location"]}},
            {"name": "now", "input_schema": {"type": "object", "properties": {}}}
        ])
    );
    assert!(b.get("tool_choice").is_none());
    let with = |choice: serde_json::Value| {
        let mut r = base.clone();
        r["tool_choice"] = choice;
        body(r)["tool_choice"].clone()
    };
    assert_eq!(with(json!("auto")), json!({"type": "auto"}));
    assert_eq!(with(json!("none")), json!({"type": "none"}));
    assert_eq!(with(json!("required")), json!({"type": "any"}));
    assert_eq!(
        with(json!({"type": "function", "function": {"name": "get_weather"}})),
        json!({"type": "tool", "name": "get_weather"})
    );
    let mut r = base.clone();
    r["parallel_tool_calls"] = json!(false);
    assert_eq!(body(r)["tool_choice"], json!({"type": "auto", "disable_parallel_tool_use": true}));
    // a tool_choice without tools is dropped rather than sent to be refused
    let b = body(json!({"model": "x", "messages": [{"role": "user", "content": "Hi"}], "tool_choice": "required"}));
    assert!(b.get("tool_choice").is_none());
}

#[test]
fn tool_calls_become_tool_use_and_tool_results_share_the_next_user_turn() {
    let b = body(json!({"model": "x", "messages": [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}},
            {"id": "toolu_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Rome\"}"}}
        ]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18C sunny"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": [{"type": "text", "text": "22C"}]},
        {"role": "user", "content": "Which is warmer?"}
    ], "tools": [weather_tool()]}));
    let msgs = b["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 3);
    assert_eq!(
        msgs[1],
        json!({"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"location": "Paris"}},
            {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"location": "Rome"}}
        ]})
    );
    assert_eq!(
        msgs[2],
        json!({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "18C sunny"}]},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "22C"}]},
            {"type": "text", "text": "Which is warmer?"}
        ]})
    );
}

#[test]
fn images_as_base64_and_url_sources() {
    let b = body(json!({"model": "x", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is in these?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://upload.wikimedia.org/cat.jpg", "detail": "high"}}
    ]}]}));
    assert_eq!(
        b["messages"][0]["content"],
        json!([
            {"type": "text", "text": "What is in these?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            {"type": "image", "source": {"type": "url", "url": "https://upload.wikimedia.org/cat.jpg"}}
        ])
    );
}

#[test]
fn what_anthropic_cannot_express_is_a_400_before_any_call() {
    let n = to_anthropic(
        &req(json!({"model": "x", "messages": [{"role": "user", "content": "Hi"}], "n": 2})),
        "m",
        1,
        false,
    );
    assert!(matches!(n, Err(ProviderError::Unsupported(_))));
    let audio = req(json!({"model": "x", "messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}]}));
    assert!(matches!(to_anthropic(&audio, "m", 1, false), Err(ProviderError::Unsupported(_))));
    let bad_args = req(json!({"model": "x", "messages": [{"role": "assistant", "tool_calls": [
        {"id": "t", "type": "function", "function": {"name": "f", "arguments": "not json"}}]}]}));
    assert!(matches!(to_anthropic(&bad_args, "m", 1, false), Err(ProviderError::Unsupported(_))));
}

fn parse(v: serde_json::Value) -> ChatResponse {
    from_anthropic(serde_json::from_value(v).unwrap(), "requested")
}

#[test]
fn text_response() {
    let r = parse(json!({"id": "msg_01TextExample", "type": "message", "role": "assistant",
        "model": "claude-3-5-sonnet-20241022",
        "content": [{"type": "text", "text": "Paris is the capital of France."}],
        "stop_reason": "end_turn", "stop_sequence": null, "usage": {"input_tokens": 25, "output_tokens": 9}}));
    assert_eq!(r.id, "msg_01TextExample");
    assert_eq!(r.object, "chat.completion");
    assert_eq!(r.model, "claude-3-5-sonnet-20241022");
    assert_eq!(r.choices[0].message.content.as_deref(), Some("Paris is the capital of France."));
    assert_eq!(r.choices[0].finish_reason.as_deref(), Some("stop"));
    assert_eq!(r.usage, Some(Usage::new(25, 9)));
    assert!(r.is_complete());
}

#[test]
fn tool_use_response_with_thinking_and_cached_input() {
    let r = parse(json!({"id": "msg_01ToolExample", "model": "claude-3-5-sonnet-20241022",
        "stop_reason": "tool_use", "role": "assistant", "content": [
            {"type": "thinking", "thinking": "the user wants SF", "signature": "sig"},
            {"type": "text", "text": "I'll check the weather."},
            {"type": "tool_use", "id": "toolu_01SanFrancisco", "name": "get_weather",
             "input": {"location": "San Francisco, CA", "unit": "celsius"}}],
        "usage": {"input_tokens": 10, "cache_read_input_tokens": 90, "output_tokens": 5}}));
    let m = &r.choices[0].message;
    assert_eq!(m.content.as_deref(), Some("I'll check the weather."), "thinking is not answer text");
    assert_eq!(m.reasoning_content.as_deref(), Some("the user wants SF"));
    assert_eq!(
        m.thinking_blocks,
        Some(vec![json!({"type": "thinking", "thinking": "the user wants SF", "signature": "sig"})]),
        "the signed block is returned so the client can send it back"
    );
    let calls = m.tool_calls.as_ref().unwrap();
    assert_eq!(calls[0].id, "toolu_01SanFrancisco");
    assert_eq!(calls[0].function.name, "get_weather");
    let args: serde_json::Value = serde_json::from_str(&calls[0].function.arguments).unwrap();
    assert_eq!(args, json!({"location": "San Francisco, CA", "unit": "celsius"}));
    assert_eq!(r.choices[0].finish_reason.as_deref(), Some("tool_calls"));
    let mut want = Usage::new(100, 5);
    want.prompt_tokens_details = Some(crate::api::PromptTokensDetails { cached_tokens: 90 });
    assert_eq!(r.usage, Some(want), "cached input counts as prompt tokens and as cached_tokens, as OpenAI counts it");
}

#[test]
fn stop_reasons() {
    assert_eq!(finish_reason("end_turn"), "stop");
    assert_eq!(finish_reason("stop_sequence"), "stop");
    assert_eq!(finish_reason("max_tokens"), "length");
    assert_eq!(finish_reason("tool_use"), "tool_calls");
    assert_eq!(finish_reason("refusal"), "content_filter");
    let r =
        parse(json!({"id": "m", "model": "c", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}],
        "stop_reason": "tool_use", "usage": {"input_tokens": 1, "output_tokens": 1}}));
    assert_eq!(r.choices[0].message.content, None, "a pure tool call has null content, as OpenAI sends it");
    assert_eq!(r.choices[0].message.tool_calls.as_ref().unwrap()[0].function.arguments, "{}");
}

pub(crate) const BASIC_STREAM: &str = include_str!("../../tests/fixtures/anthropic/basic_stream.sse");
pub(crate) const TOOL_STREAM: &str = include_str!("../../tests/fixtures/anthropic/tool_use_stream.sse");

fn events(wire: &str) -> Vec<SseEvent> {
    let mut d = SseDecoder::default();
    let mut evs = d.push(wire.as_bytes()).unwrap();
    evs.extend(d.finish());
    evs
}

fn run(wire: &str) -> Result<Vec<ChatChunk>, ProviderError> {
    let mut st = StreamState::new("requested");
    let mut out = Vec::new();
    for ev in events(wire) {
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
fn basic_text_stream() {
    let chunks = run(BASIC_STREAM).unwrap();
    assert_eq!(chunks[0].choices[0].delta.role.as_deref(), Some("assistant"));
    assert!(chunks.iter().all(|c| c.id == "msg_01XFDUDYJgAACzvnptvVoYEL" && c.model == "claude-sonnet-4-5-20250929"));
    assert!(chunks.iter().all(|c| c.object == "chat.completion.chunk"));
    let last = chunks.last().unwrap();
    assert!(last.choices.is_empty(), "the stream closes with a usage-only chunk");
    assert_eq!(last.usage, Some(Usage::new(12, 7)));
    let r = fold(&chunks);
    assert_eq!(r.choices[0].message.content.as_deref(), Some("Hello from Claude."));
    assert_eq!(r.choices[0].finish_reason.as_deref(), Some("stop"));
}

#[test]
fn tool_use_stream_with_argument_deltas() {
    let chunks = run(TOOL_STREAM).unwrap();
    let starts: Vec<&ToolCallDelta> = chunks
        .iter()
        .flat_map(|c| c.choices.iter().flat_map(|ch| ch.delta.tool_calls.iter().flatten()))
        .filter(|d| d.id.is_some())
        .collect();
    assert_eq!(starts.len(), 1);
    assert_eq!(starts[0].index, 0, "tool call index counts tool calls, not Anthropic's content blocks");
    assert_eq!(starts[0].kind.as_deref(), Some("function"));
    assert_eq!(starts[0].function.as_ref().unwrap().name.as_deref(), Some("get_weather"));
    let r = fold(&chunks);
    let m = &r.choices[0].message;
    assert_eq!(m.content.as_deref(), Some("Let me look that up."));
    let call = &m.tool_calls.as_ref().unwrap()[0];
    assert_eq!(call.id, "toolu_01WeatherParis");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&call.function.arguments).unwrap(),
        json!({"location": "Paris", "unit": "celsius"})
    );
    assert_eq!(r.choices[0].finish_reason.as_deref(), Some("tool_calls"));
    let mut want = Usage::new(412, 58);
    want.prompt_tokens_details = Some(crate::api::PromptTokensDetails { cached_tokens: 12 });
    assert_eq!(r.usage, Some(want));
}

#[test]
fn a_tool_without_arguments_streams_an_empty_object() {
    let wire = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"c\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n\
        event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_x\",\"name\":\"now\",\"input\":{}}}\n\n\
        event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
        event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":4}}\n\n\
        event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    let r = fold(&run(wire).unwrap());
    assert_eq!(r.choices[0].message.tool_calls.as_ref().unwrap()[0].function.arguments, "{}");
}

#[test]
fn an_error_event_fails_the_stream_before_any_chunk() {
    let wire = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"c\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n\
        event: ping\ndata: {\"type\": \"ping\"}\n\n\
        event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    let mut st = StreamState::new("m");
    let mut produced = 0;
    let mut err = None;
    for ev in events(wire) {
        match st.on_event(&ev) {
            Ok(chunks) => produced += chunks.len(),
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    assert_eq!(produced, 0, "no chunk before the error, so the dispatcher may still fail over");
    let err = err.unwrap();
    assert_eq!(err, ProviderError::Stream("overloaded_error: Overloaded".into()));
    assert!(err.retryable());
}

#[test]
fn error_bodies_keep_anthropics_type_and_message() {
    let body = r#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: Field required"}}"#;
    assert_eq!(
        map_error(400, None, body),
        ProviderError::Status {
            status: 400,
            message: "invalid_request_error: max_tokens: Field required".into(),
            retry_after: None
        }
    );
    let overloaded =
        map_error(529, None, r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#);
    assert!(overloaded.retryable());
    assert!(
        matches!(map_error(502, None, "<html>bad gateway</html>"), ProviderError::Status { message, .. } if message.contains("bad gateway"))
    );
}

fn adapter(base_url: &str, version: Option<&str>) -> Anthropic {
    let mut toml = format!("kind = \"anthropic\"\nbase_url = \"{base_url}\"\n");
    if let Some(v) = version {
        toml.push_str(&format!("api_version = \"{v}\"\n"));
    }
    let config: crate::config::ProviderConfig = toml::from_str(&toml).unwrap();
    Anthropic::new(Upstream::new("anthropic", &config, None).unwrap())
}

#[test]
fn base_url_is_the_sdks_and_a_trailing_v1_is_not_doubled() {
    assert_eq!(adapter("https://api.anthropic.com", None).url, "https://api.anthropic.com/v1/messages");
    assert_eq!(adapter("https://api.anthropic.com/", None).url, "https://api.anthropic.com/v1/messages");
    assert_eq!(
        adapter("https://proxy.internal/anthropic/v1", None).url,
        "https://proxy.internal/anthropic/v1/messages"
    );
    let r = req(json!({"model": "x", "messages": [{"role": "user", "content": "Hi"}]}));
    let body = to_anthropic(&r, "m", 1, false).unwrap();
    let rb = adapter("https://api.anthropic.com", Some("2024-01-01")).request(&body, &r).build().unwrap();
    assert_eq!(rb.headers()["anthropic-version"], "2024-01-01");
    let rb = adapter("https://api.anthropic.com", None).request(&body, &r).build().unwrap();
    assert_eq!(rb.headers()["anthropic-version"], DEFAULT_VERSION);
    assert!(rb.headers().get("x-api-key").is_none(), "no key configured, none sent");
    assert!(rb.headers().get("anthropic-beta").is_none());
}

/// The provider's configured headers go on every call; the client's `anthropic-beta` flags join
/// the configured ones in one header (each flag once), and a configured `anthropic-version` is
/// replaced by `api_version`'s, not sent twice.
#[test]
fn configured_headers_and_the_clients_beta_flags() {
    let toml = r#"
        kind = "anthropic"
        base_url = "https://api.anthropic.com"
        headers = { "anthropic-beta" = "context-1m-2025-08-07", "x-team" = "search", "anthropic-version" = "1999-01-01" }
    "#;
    let config: crate::config::ProviderConfig = toml::from_str(toml).unwrap();
    let a = Anthropic::new(Upstream::new("anthropic", &config, None).unwrap());
    let mut r = req(json!({"model": "x", "messages": [{"role": "user", "content": "Hi"}]}));
    let body = to_anthropic(&r, "m", 1, false).unwrap();
    let rb = a.request(&body, &r).build().unwrap();
    assert_eq!(rb.headers()["anthropic-beta"], "context-1m-2025-08-07");
    assert_eq!(rb.headers()["x-team"], "search");
    let versions: Vec<_> = rb.headers().get_all("anthropic-version").iter().collect();
    assert_eq!(versions, [DEFAULT_VERSION]);
    r.anthropic_beta = Some("interleaved-thinking-2025-05-14, context-1m-2025-08-07".into());
    let rb = a.request(&body, &r).build().unwrap();
    let betas: Vec<_> = rb.headers().get_all("anthropic-beta").iter().collect();
    assert_eq!(betas, ["context-1m-2025-08-07,interleaved-thinking-2025-05-14"]);
}

#[test]
fn cache_control_goes_where_the_client_put_it() {
    let b = body(json!({"model": "x",
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}},
                   "cache_control": {"type": "ephemeral"}}],
        "messages": [
        {"role": "system", "content": [{"type": "text", "text": "A long policy.", "cache_control": {"type": "ephemeral"}}]},
        {"role": "user", "content": [{"type": "text", "text": "Here is a book."},
                                      {"type": "text", "text": "Chapter one.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": "Summarise it.", "cache_control": {"type": "ephemeral"}}]}));
    assert_eq!(
        b["system"],
        json!([{"type": "text", "text": "A long policy.", "cache_control": {"type": "ephemeral"}}])
    );
    assert_eq!(b["tools"][0]["cache_control"], json!({"type": "ephemeral"}));
    let first = &b["messages"][0]["content"];
    assert!(first[0].get("cache_control").is_none());
    assert_eq!(first[1]["cache_control"], json!({"type": "ephemeral", "ttl": "1h"}));
    assert_eq!(
        b["messages"][2]["content"][0],
        json!({"type": "text", "text": "Summarise it.", "cache_control": {"type": "ephemeral"}})
    );
    // without any cache_control the system prompt stays a plain string
    let b =
        body(json!({"model": "x", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]}));
    assert_eq!(b["system"], "s");
}

#[test]
fn thinking_blocks_come_back_first_in_the_assistant_turn_and_effort_sets_a_budget() {
    let b =
        body(json!({"model": "x", "reasoning_effort": "medium", "max_tokens": 1000, "temperature": 0.2, "messages": [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": null,
         "thinking_blocks": [{"type": "thinking", "thinking": "call the tool", "signature": "EqQBCg"}],
         "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"}]}));
    assert_eq!(b["thinking"], json!({"type": "enabled", "budget_tokens": 2048}));
    assert!(b["max_tokens"].as_u64().unwrap() > 2048, "max_tokens must exceed the budget");
    assert!(b.get("temperature").is_none(), "thinking allows only the default temperature");
    let turn = &b["messages"][1]["content"];
    assert_eq!(turn[0], json!({"type": "thinking", "thinking": "call the tool", "signature": "EqQBCg"}));
    assert_eq!(turn[1]["type"], "tool_use");
}

/// A Messages client's `thinking` is sent as it came; an unsigned block (another upstream's
/// reasoning, echoed back) is left out rather than refused by Anthropic for its signature.
#[test]
fn a_messages_clients_thinking_is_sent_and_unsigned_blocks_are_left_out() {
    let mut r = req(json!({"model": "x", "max_tokens": 4000, "messages": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello.",
         "thinking_blocks": [{"type": "thinking", "thinking": "from gemini", "signature": ""}]},
        {"role": "user", "content": "Weather?"}]}));
    r.anthropic_thinking = Some(json!({"type": "enabled", "budget_tokens": 3000}));
    let b = serde_json::to_value(to_anthropic(&r, "claude-sonnet-4-5", 4096, false).unwrap()).unwrap();
    assert_eq!(b["thinking"], json!({"type": "enabled", "budget_tokens": 3000}));
    assert_eq!(b["messages"][1]["content"], json!([{"type": "text", "text": "Hello."}]));
}

/// `top_k` reaches Anthropic from a Messages client and from a chat client's pass-through field,
/// but not with thinking on (Anthropic refuses it there) and not when it is no count.
#[test]
fn top_k_is_sent_unless_thinking_is_on() {
    let hi = json!({"model": "x", "messages": [{"role": "user", "content": "Hi"}]});
    let mut r = req(hi.clone());
    r.anthropic_top_k = Some(5);
    let b = serde_json::to_value(to_anthropic(&r, "m", 1024, false).unwrap()).unwrap();
    assert_eq!(b["top_k"], 5);
    let mut chat = hi.clone();
    chat["top_k"] = json!(40);
    assert_eq!(body(chat.clone())["top_k"], 40);
    chat["top_k"] = json!(0);
    assert!(body(chat)["top_k"].is_null());
    assert!(body(hi)["top_k"].is_null());
    r.anthropic_thinking = Some(json!({"type": "enabled", "budget_tokens": 2000}));
    let b = serde_json::to_value(to_anthropic(&r, "m", 4096, false).unwrap()).unwrap();
    assert!(b.get("top_k").is_none(), "{b}");
}

/// An inline PDF `file` part is a `document` block (filename as title, cache mark kept); a
/// `file_id` or another media type is a 400 before any call.
#[test]
fn a_pdf_file_part_is_a_document_block() {
    let eph = json!({"type": "ephemeral"});
    let b = body(json!({"model": "x", "messages": [{"role": "user", "content": [
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0x", "filename": "r.pdf"}, "cache_control": eph},
        {"type": "text", "text": "Summarise."}]}]}));
    assert_eq!(
        b["messages"][0]["content"][0],
        json!({"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"},
               "title": "r.pdf", "cache_control": eph})
    );
    for file in [json!({"file_id": "file-abc"}), json!({"file_data": "data:text/csv;base64,YSxi"})] {
        let r = req(json!({"model": "x", "messages": [{"role": "user", "content": [{"type": "file", "file": file}]}]}));
        let e = to_anthropic(&r, "claude-sonnet-4-5", 4096, false).unwrap_err();
        assert!(matches!(e, ProviderError::Unsupported(_)), "{e:?}");
    }
}

/// Thinking stays on when the last tool-use turn brings its signed blocks back, and goes off
/// (rather than Anthropic refusing the request) when that turn has none to bring.
#[test]
fn thinking_is_off_when_the_last_tool_turn_has_no_signed_thinking() {
    let turn = |blocks: serde_json::Value| {
        json!({"model": "x", "reasoning_effort": "low", "max_tokens": 4000, "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": null, "thinking_blocks": blocks,
             "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"}]})
    };
    let signed = body(turn(json!([{"type": "thinking", "thinking": "t", "signature": "EqQBCg"}])));
    assert_eq!(signed["thinking"], json!({"type": "enabled", "budget_tokens": 1024}));
    for none in [json!([]), json!([{"type": "thinking", "thinking": "from gemini", "signature": ""}])] {
        let b = body(turn(none));
        assert!(b.get("thinking").is_none(), "{b}");
        assert_eq!(b["messages"][1]["content"][0]["type"], "tool_use");
    }
    // a last assistant turn without tools needs nothing back
    let b = body(json!({"model": "x", "reasoning_effort": "low", "messages": [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"}]}));
    assert!(b.get("thinking").is_some(), "{b}");
}

#[test]
fn thinking_deltas_stream_as_reasoning_content() {
    let wire = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"c\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n\
        event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}}\n\n\
        event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"Hmm, \"}}\n\n\
        event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"easy.\"}}\n\n\
        event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"EqQB\"}}\n\n\
        event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
        event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
        event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"4\"}}\n\n\
        event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":9}}\n\n";
    let r = fold(&run(wire).unwrap());
    assert_eq!(r.choices[0].message.reasoning_content.as_deref(), Some("Hmm, easy."));
    assert_eq!(
        r.choices[0].message.thinking_blocks,
        Some(vec![json!({"type": "thinking", "thinking": "Hmm, easy.", "signature": "EqQB"})]),
        "the signed block is sent whole when it stops"
    );
    assert_eq!(r.choices[0].message.content.as_deref(), Some("4"));
}

/// Found by the fuzzer (`anthropic-response`): token counts near u64::MAX overflowed the sum of
/// input and cached tokens (a panic in debug builds, a wrapped count in release).
#[test]
fn huge_token_counts_saturate_instead_of_overflowing() {
    let resp: MessagesResponse = serde_json::from_value(json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
        "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn",
        "usage": {"input_tokens": 4, "cache_read_input_tokens": u64::MAX, "output_tokens": u64::MAX}
    }))
    .unwrap();
    let usage = from_anthropic(resp, "claude").usage.unwrap();
    assert_eq!(usage.prompt_tokens, u64::MAX);
    assert_eq!(usage.total_tokens, u64::MAX);
}

/// `/v1/messages` → chat request → Anthropic upstream: each `cache_control` a Messages client set
/// lands on the same block it came from.
#[test]
fn messages_api_cache_marks_reach_the_anthropic_upstream_where_they_were() {
    let eph = json!({"type": "ephemeral"});
    let messages: crate::api::messages::MessagesRequest = serde_json::from_value(json!({
        "model": "auto", "max_tokens": 100,
        "system": [{"type": "text", "text": "You are a coding agent."},
                   {"type": "text", "text": "Long project context.", "cache_control": eph}],
        "tools": [{"name": "read", "input_schema": {"type": "object"}, "cache_control": eph}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Fix the bug.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "read", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "fn main() {}", "cache_control": eph}]},
        ],
    }))
    .unwrap();
    let req = crate::api::messages::to_chat_request(messages).unwrap();
    let b = serde_json::to_value(to_anthropic(&req, "claude-sonnet-4-5", 4096, false).unwrap()).unwrap();
    assert_eq!(b["system"][1]["cache_control"], eph, "{b}");
    assert!(b["system"][0].get("cache_control").is_none());
    assert_eq!(b["tools"][0]["cache_control"], eph);
    assert_eq!(b["messages"][0]["content"][0]["cache_control"]["ttl"], "1h", "{b}");
    let result = &b["messages"][2]["content"][0];
    assert_eq!((result["type"].as_str(), &result["cache_control"]), (Some("tool_result"), &eph), "{b}");
}
