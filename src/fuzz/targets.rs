//! The fuzz targets: seeds, input recipe, and the contract each input must meet.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::{json, Value};

use super::mutate::{interesting_value, json_input, mutate_bytes, random_bytes, sse_input, toml_input};
use super::{Outcome, Target, Verdict};
use crate::api::{messages, parse_json, responses, ChatRequest, ChatResponse, ChunkAccumulator, GatewayError};
use crate::cache::{shared, snapshot, CacheKey, CacheSettings, ExactKey, Lookup, Namespace, SemanticCache};
use crate::embed::cl100k;
use crate::providers::sse::{SseDecoder, SseEvent};
use crate::providers::{anthropic, dispatch, estimate, gemini, openai, ProviderError};

pub static TARGETS: &[Target] = &[
    Target {
        name: "request",
        about: "chat request JSON → ChatRequest → validate → cache key → OpenAI/Anthropic/Gemini request",
        seeds: request_seeds,
        generate: json_input,
        check: check_request,
    },
    Target {
        name: "responses-request",
        about: "Responses API request JSON → chat request (then the request target's checks) → Responses object",
        seeds: responses_seeds,
        generate: json_input,
        check: check_responses_request,
    },
    Target {
        name: "messages-request",
        about: "Anthropic Messages request JSON → chat request (then the request target's checks); the same bytes as a count request",
        seeds: messages_seeds,
        generate: json_input,
        check: check_messages_request,
    },
    Target {
        name: "cl100k",
        about: "any text → cl100k_base ids → the same text back (the token estimate's encoder)",
        seeds: cl100k_seeds,
        generate: text_input,
        check: check_cl100k,
    },
    Target {
        name: "openai-response",
        about: "OpenAI chat.completion body → ChatResponse → replayed as chunks",
        seeds: openai_response_seeds,
        generate: json_input,
        check: check_openai_response,
    },
    Target {
        name: "openai-sse",
        about: "OpenAI SSE stream → events → chunks → accumulated answer",
        seeds: openai_sse_seeds,
        generate: sse_input,
        check: check_openai_sse,
    },
    Target {
        name: "anthropic-response",
        about: "Anthropic Messages body (and error body) → ChatResponse",
        seeds: anthropic_response_seeds,
        generate: json_input,
        check: check_anthropic_response,
    },
    Target {
        name: "anthropic-sse",
        about: "Anthropic SSE stream → StreamState → chunks",
        seeds: anthropic_sse_seeds,
        generate: sse_input,
        check: check_anthropic_sse,
    },
    Target {
        name: "gemini-response",
        about: "Gemini generateContent body (and error body) → ChatResponse",
        seeds: gemini_response_seeds,
        generate: json_input,
        check: check_gemini_response,
    },
    Target {
        name: "gemini-sse",
        about: "Gemini SSE stream → StreamState → chunks",
        seeds: gemini_sse_seeds,
        generate: sse_input,
        check: check_gemini_sse,
    },
    Target {
        name: "config",
        about: "TOML config text → Config::parse (serde + validation)",
        seeds: config_seeds,
        generate: toml_input,
        check: check_config,
    },
    Target {
        name: "shared-record",
        about: "Redis XREAD reply (RESP) → stream entries → record decoder → cache insert and lookups",
        seeds: shared_seeds,
        generate: shared_input,
        check: check_shared,
    },
    Target {
        name: "snapshot",
        about: "snapshot file (v1, v2 with valid or broken trailer) → verified records → restored cache",
        seeds: snapshot_seeds,
        generate: snapshot_input,
        check: check_snapshot,
    },
];

fn lines(seeds: &[Value]) -> Vec<Vec<u8>> {
    seeds.iter().map(|v| serde_json::to_vec(v).unwrap_or_default()).collect()
}

// ---- the contract ------------------------------------------------------------------------------

/// The error a client would get is OpenAI's shape (`error.message/type/param/code`, nothing
/// else) with a status in `statuses`.
fn openai_shaped(e: &GatewayError, statuses: std::ops::RangeInclusive<u16>) -> Result<(), String> {
    let status = e.status();
    if !statuses.contains(&status) {
        return Err(format!("status {status} outside {statuses:?} for: {e}"));
    }
    let v = serde_json::to_value(e.body()).map_err(|x| format!("error body does not serialise: {x}"))?;
    let obj = v.as_object().filter(|o| o.len() == 1).ok_or("the body is not {\"error\": …}")?;
    let err = obj.get("error").and_then(Value::as_object).ok_or("no `error` object")?;
    let mut keys: Vec<&str> = err.keys().map(String::as_str).collect();
    keys.sort_unstable();
    if keys != ["code", "message", "param", "type"] {
        return Err(format!("error fields {keys:?}"));
    }
    let nonempty = |k: &str| err.get(k).and_then(Value::as_str).is_some_and(|s| !s.is_empty());
    if !nonempty("message") || !nonempty("type") {
        return Err(format!("empty message or type: {v}"));
    }
    if !(err["param"].is_null() || err["param"].is_string()) || !(err["code"].is_null() || err["code"].is_string()) {
        return Err(format!("param/code not string-or-null: {v}"));
    }
    Ok(())
}

/// A provider failure as the client sees it: through the dispatcher's one summary.
fn upstream_error(provider: &str, e: ProviderError) -> GatewayError {
    dispatch::summarise(&[(format!("{provider}:model"), e)], 0, false)
}

/// A mid-stream failure as the pipeline sends it (an error event, 502).
fn stream_error(provider: &str, e: &ProviderError) -> GatewayError {
    GatewayError::Upstream {
        status: 502,
        provider: provider.into(),
        message: format!("upstream stream failed: {e}"),
        retry_after: None,
    }
}

/// Splits `input` into pushes of varied sizes, derived from the input itself (deterministic).
fn pushes(input: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut x = input.len() as u64 ^ 0x5bd1_e995;
    let mut rest = input;
    while !rest.is_empty() {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let n = (((x >> 33) % 97) as usize + 1).min(rest.len());
        let (a, b) = rest.split_at(n);
        out.push(a);
        rest = b;
    }
    out
}

fn sse_events(input: &[u8]) -> Result<Vec<SseEvent>, String> {
    let mut dec = SseDecoder::default();
    let mut events = Vec::new();
    for p in pushes(input) {
        events.extend(dec.push(p)?);
    }
    events.extend(dec.finish());
    Ok(events)
}

/// What a finished stream or response turns into for the client must serialise.
fn replay(resp: &ChatResponse) -> Result<(), String> {
    serde_json::to_vec(resp).map_err(|e| format!("response does not serialise: {e}"))?;
    for c in crate::api::response_to_chunks(resp, true, 7) {
        serde_json::to_vec(&c).map_err(|e| format!("chunk does not serialise: {e}"))?;
    }
    let _ = resp.is_complete();
    Ok(())
}

// ---- request -----------------------------------------------------------------------------------

fn check_request(input: &[u8]) -> Verdict {
    let req: ChatRequest = match parse_json(input) {
        Ok(r) => r,
        Err(e) => {
            openai_shaped(&e, 400..=499)?;
            return Ok(Outcome::Rejected);
        }
    };
    if let Err((m, p)) = req.validate() {
        openai_shaped(&GatewayError::invalid(m, Some(p)), 400..=499)?;
        return Ok(Outcome::Rejected);
    }
    let _ = CacheKey::new(&req, "t-0123456789ab", &req.model);
    // the token estimate for an OpenAI-compatible deployment: a number, or the one refusal
    match estimate::input_tokens(&req) {
        Ok(n) if n < 3 => return Err(format!("an estimate below the reply priming: {n}")),
        Ok(_) => {}
        Err(ProviderError::Unsupported(_)) => {}
        Err(e) => return Err(format!("the estimate failed otherwise: {e}")),
    }
    let _ = (req.is_stream(), req.include_usage(), req.max_output_tokens(), req.has_images());
    for m in &req.messages {
        let _ = m.text_content();
    }
    let stream = req.is_stream();
    let sent = openai::OpenAi::to_openai(&req, "gpt-4o-mini", stream);
    if let Err(e) = serde_json::from_value::<ChatRequest>(sent.clone()) {
        return Err(format!("the body sent to an OpenAI-compatible upstream is not a chat request: {e}: {sent}"));
    }
    let mut refused = 0;
    match anthropic::to_anthropic(&req, "claude-haiku-4-5", 1024, stream) {
        Ok(body) => {
            serde_json::to_vec(&body).map_err(|e| format!("anthropic body does not serialise: {e}"))?;
        }
        Err(e) => {
            openai_shaped(&upstream_error("anthropic", e), 400..=499)?;
            refused += 1;
        }
    }
    match gemini::to_gemini(&req) {
        Ok(body) => {
            serde_json::to_vec(&body).map_err(|e| format!("gemini body does not serialise: {e}"))?;
        }
        Err(e) => {
            openai_shaped(&upstream_error("gemini", e), 400..=499)?;
            refused += 1;
        }
    }
    Ok(if refused == 2 { Outcome::Rejected } else { Outcome::Accepted })
}

fn request_seeds() -> Vec<Vec<u8>> {
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    lines(&[
        json!({"model": "auto", "messages": [{"role": "user", "content": "How do I reset my password?"}]}),
        json!({"model": "gpt-4o-mini", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}], "temperature": 0.2, "max_tokens": 64, "stop": ["\n\n"], "seed": 7}),
        json!({"model": "cheap", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "developer", "content": "Answer in French."}, {"role": "user", "content": "What is Rust?"}]}),
        json!({"model": "premium", "messages": [{"role": "user", "content": "Weather in Paris?"}, {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}, {"role": "tool", "tool_call_id": "call_1", "content": "18C sunny"}], "tools": tools, "tool_choice": "auto"}),
        json!({"model": "auto", "messages": [{"role": "user", "content": [{"type": "text", "text": "What is in this image?"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUg==", "detail": "low"}}]}]}),
        json!({"model": "auto", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}], "n": 2}),
        json!({"model": "auto", "messages": [{"role": "user", "content": "List three colours"}], "response_format": {"type": "json_schema", "json_schema": {"name": "colours", "schema": {"type": "object"}}}, "max_completion_tokens": 100, "top_p": 0.9, "logprobs": true, "user": "u1"}),
        json!({"model": "auto", "messages": [{"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "second"}], "tools": tools, "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}),
        json!({"model": "auto", "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}]}),
        json!({"model": "auto", "messages": [{"role": "system", "content": [{"type": "text", "text": "sys"}]}, {"role": "user", "name": "bob", "content": "hey"}], "stop": "END", "temperature": 0}),
    ])
}

/// A Responses request is translated into a chat request, which must then pass everything a chat
/// request passes, and its answer must turn back into a Responses object.
fn check_responses_request(input: &[u8]) -> Verdict {
    let req: responses::ResponsesRequest = match parse_json(input) {
        Ok(r) => r,
        Err(e) => {
            openai_shaped(&e, 400..=499)?;
            return Ok(Outcome::Rejected);
        }
    };
    let prepared = match responses::to_chat_request(req, vec![json!({"role": "user", "content": "earlier"})]) {
        Ok(p) => p,
        Err(e) => {
            openai_shaped(&e, 400..=499)?;
            return Ok(Outcome::Rejected);
        }
    };
    let chat = serde_json::to_vec(&prepared.chat).map_err(|e| format!("the chat request does not serialise: {e}"))?;
    let outcome = check_request(&chat)?;
    let answer: ChatResponse = serde_json::from_value(json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}],
    }))
    .map_err(|e| format!("fixed answer: {e}"))?;
    let done = responses::to_response(&answer, "resp_1", &prepared.echo);
    serde_json::to_vec(&done.response).map_err(|e| format!("the Responses object does not serialise: {e}"))?;
    Ok(outcome)
}

fn responses_seeds() -> Vec<Vec<u8>> {
    let tools = json!([{"type": "function", "name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]);
    lines(&[
        json!({"model": "auto", "input": "How do I reset my password?"}),
        json!({"model": "cheap", "instructions": "Be brief.", "input": "hi", "max_output_tokens": 64, "temperature": 0.2, "top_p": 0.9, "stream": true, "store": false}),
        json!({"model": "auto", "input": [{"role": "developer", "content": "Answer in French."}, {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "What is Rust?"}]}]}),
        json!({"model": "premium", "input": [{"role": "user", "content": "Weather in Paris?"}, {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}, {"type": "function_call_output", "call_id": "call_1", "output": "18C sunny"}], "tools": tools, "tool_choice": {"type": "function", "name": "get_weather"}, "parallel_tool_calls": false}),
        json!({"model": "auto", "input": [{"role": "user", "content": [{"type": "input_text", "text": "What is in this image?"}, {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUg==", "detail": "low"}]}]}),
        json!({"model": "auto", "input": "List three colours", "text": {"format": {"type": "json_schema", "name": "colours", "schema": {"type": "object"}, "strict": true}}, "reasoning": {"effort": "low"}, "metadata": {"k": "v"}, "user": "u1"}),
        json!({"model": "auto", "input": [{"role": "assistant", "content": [{"type": "output_text", "text": "ok"}]}, {"type": "reasoning", "id": "rs_1", "summary": []}, {"role": "user", "content": "second"}], "previous_response_id": "resp_1"}),
        json!({"model": "auto", "input": "x", "tools": [{"type": "web_search"}], "conversation": "conv_1"}),
    ])
}

/// A Messages request is translated into a chat request, which must then pass everything a chat
/// request passes; read as a count request (fewer fields) it must parse or be refused cleanly.
fn check_messages_request(input: &[u8]) -> Verdict {
    if let Err(e) = messages::count_request(input) {
        openai_shaped(&e, 400..=499)?;
    }
    let req: messages::MessagesRequest = match parse_json(input) {
        Ok(r) => r,
        Err(e) => {
            openai_shaped(&e, 400..=499)?;
            return Ok(Outcome::Rejected);
        }
    };
    let chat = match messages::to_chat_request(req) {
        Ok(c) => c,
        Err(e) => {
            openai_shaped(&e, 400..=499)?;
            return Ok(Outcome::Rejected);
        }
    };
    let chat = serde_json::to_vec(&chat).map_err(|e| format!("the chat request does not serialise: {e}"))?;
    check_request(&chat)
}

fn messages_seeds() -> Vec<Vec<u8>> {
    let tools = json!([{"name": "get_weather", "description": "Weather for a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]);
    let eph = json!({"type": "ephemeral"});
    lines(&[
        json!({"model": "auto", "max_tokens": 64, "messages": [{"role": "user", "content": "How do I reset my password?"}]}),
        json!({"model": "claude-haiku-4-5", "max_tokens": 64, "system": [{"type": "text", "text": "Be brief.", "cache_control": eph}], "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "temperature": 0.2, "top_k": 5, "stop_sequences": ["END"], "metadata": {"user_id": "u1"}}),
        json!({"model": "auto", "max_tokens": 256, "tools": tools, "tool_choice": {"type": "tool", "name": "get_weather"}, "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "call it", "signature": "sig"}, {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "18C"}], "is_error": false}]}],
            "thinking": {"type": "enabled", "budget_tokens": 1024}, "stream": true}),
        json!({"model": "auto", "max_tokens": 64, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            {"type": "document", "title": "Notes", "source": {"type": "text", "media_type": "text/plain", "data": "Rivers flood."}},
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}, "cache_control": eph},
            {"type": "document", "title": "Manual", "source": {"type": "content", "content": [{"type": "text", "text": "Step one."}, {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}]}},
            {"type": "text", "text": "Summarise."}]}]}),
        json!({"model": "auto:0.1", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}, {"role": "user", "content": "z"}]}),
    ])
}

// ---- the token estimate's encoder --------------------------------------------------------------

/// Any bytes, read as text (invalid UTF-8 replaced), encode to ids that decode to that text.
/// Bytes that were not UTF-8 count as rejected (a request body would have been refused), though
/// their replacement text is checked all the same.
fn check_cl100k(input: &[u8]) -> Verdict {
    let text = String::from_utf8_lossy(input);
    let ids = cl100k::encode(&text);
    if ids.len() > text.len() {
        return Err(format!("{} ids for {} bytes", ids.len(), text.len()));
    }
    let back = cl100k::decode(&ids).map_err(|e| format!("an id the encoder gave does not decode: {e}"))?;
    if back != text {
        return Err(format!("round trip changed the text: {text:?} -> {ids:?} -> {back:?}"));
    }
    Ok(if std::str::from_utf8(input).is_err() { Outcome::Rejected } else { Outcome::Accepted })
}

fn cl100k_seeds() -> Vec<Vec<u8>> {
    [
        "How do I reset my password?",
        "I'm you'RE they'll we'VE it's\r\n\n\n   \t",
        "def f(x):\n    return x ** 2  # 12345678901\n",
        "😀😀 日本語のテキスト Ünïcödé ab\u{301}c \u{a0}",
        "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!============------",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

/// Text for the encoder: a seed mutated at the byte level, or random bytes (a third of inputs
/// empty or short), sometimes a long run of one character.
fn text_input(rng: &mut StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
    match rng.gen_range(0..10) {
        0..=5 => {
            let mut data = seeds.choose(rng).cloned().unwrap_or_default();
            for _ in 0..rng.gen_range(1..6) {
                mutate_bytes(rng, &mut data, seeds);
            }
            data
        }
        6..=8 => random_bytes(rng, 300),
        _ => {
            let c = *b" !a1\n=".choose(rng).unwrap_or(&b' ');
            vec![c; rng.gen_range(200..3000)]
        }
    }
}

// ---- OpenAI ------------------------------------------------------------------------------------

fn check_openai_response(input: &[u8]) -> Verdict {
    match serde_json::from_slice::<ChatResponse>(input) {
        Ok(resp) => {
            replay(&resp)?;
            let mut acc = ChunkAccumulator::default();
            for c in crate::api::response_to_chunks(&resp, true, 3) {
                acc.push(&c);
            }
            replay(&acc.finish())?;
            Ok(Outcome::Accepted)
        }
        Err(e) => {
            openai_shaped(&upstream_error("openai", ProviderError::Decode(e.to_string())), 400..=599)?;
            Ok(Outcome::Rejected)
        }
    }
}

fn check_openai_sse(input: &[u8]) -> Verdict {
    let events = match sse_events(input) {
        Ok(e) => e,
        Err(e) => {
            openai_shaped(&stream_error("openai", &ProviderError::Stream(e)), 500..=599)?;
            return Ok(Outcome::Rejected);
        }
    };
    let mut acc = ChunkAccumulator::default();
    for ev in &events {
        match openai::parse_stream_event(&ev.data) {
            Ok(Some(chunk)) => {
                serde_json::to_vec(&chunk).map_err(|e| format!("chunk does not serialise: {e}"))?;
                acc.push(&chunk);
            }
            Ok(None) => break,
            Err(e) => {
                openai_shaped(&stream_error("openai", &e), 500..=599)?;
                return Ok(Outcome::Rejected);
            }
        }
    }
    replay(&acc.finish())?;
    Ok(Outcome::Accepted)
}

fn openai_response_seeds() -> Vec<Vec<u8>> {
    lines(&[
        json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": "gpt-4o-mini-2024-07-18",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!", "refusal": null}, "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12, "prompt_tokens_details": {"cached_tokens": 0}}, "system_fingerprint": "fp_1"}),
        json!({"id": "chatcmpl-2", "object": "chat.completion", "created": 1700000000, "model": "gpt-4o",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}, "finish_reason": "tool_calls"},
                        {"index": 1, "message": {"role": "assistant", "content": "Two"}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30}}),
        json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}),
    ])
}

fn openai_sse_seeds() -> Vec<Vec<u8>> {
    let chunk = |delta: Value, finish: Value| {
        format!(
            "data: {}\n\n",
            json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000, "model": "gpt-4o-mini", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        )
    };
    let usage = format!(
        "data: {}\n\n",
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000, "model": "gpt-4o-mini", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}})
    );
    let text = [
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(json!({"content": "Hello"}), Value::Null),
        chunk(json!({"content": " there"}), Value::Null),
        chunk(json!({}), json!("stop")),
        usage.clone(),
        "data: [DONE]\n\n".to_string(),
    ]
    .concat();
    let tools = [
        chunk(json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}), Value::Null),
        chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}), Value::Null),
        chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}), Value::Null),
        chunk(json!({}), json!("tool_calls")),
        usage,
        "data: [DONE]\n\n".to_string(),
    ]
    .concat();
    let error = [
        chunk(json!({"role": "assistant", "content": "par"}), Value::Null),
        format!("data: {}\n\n", json!({"error": {"message": "The server had an error", "type": "server_error"}})),
    ]
    .concat();
    vec![text.into_bytes(), tools.into_bytes(), error.into_bytes()]
}

// ---- Anthropic ---------------------------------------------------------------------------------

/// The status an error body comes with: derived from the input, so both branches are fuzzed.
fn status_of(input: &[u8]) -> u16 {
    [400u16, 401, 403, 404, 413, 429, 500, 502, 503, 529][input.len() % 10]
}

fn check_anthropic_response(input: &[u8]) -> Verdict {
    let text = String::from_utf8_lossy(input);
    openai_shaped(&upstream_error("anthropic", anthropic::map_error(status_of(input), None, &text)), 400..=599)?;
    match serde_json::from_slice::<anthropic::MessagesResponse>(input) {
        Ok(resp) => {
            replay(&anthropic::from_anthropic(resp, "claude-haiku-4-5"))?;
            Ok(Outcome::Accepted)
        }
        Err(e) => {
            openai_shaped(&upstream_error("anthropic", ProviderError::Decode(e.to_string())), 400..=599)?;
            Ok(Outcome::Rejected)
        }
    }
}

fn check_anthropic_sse(input: &[u8]) -> Verdict {
    let mut st = anthropic::StreamState::new("claude-haiku-4-5");
    stream_through("anthropic", input, |ev| st.on_event(ev))
}

/// Feeds a stream's events to a provider's translator; the first error ends it as the pipeline
/// would, and must be an OpenAI-shaped 5xx.
fn stream_through(
    provider: &str,
    input: &[u8],
    mut on_event: impl FnMut(&SseEvent) -> Result<Vec<crate::api::ChatChunk>, ProviderError>,
) -> Verdict {
    let events = match sse_events(input) {
        Ok(e) => e,
        Err(e) => {
            openai_shaped(&stream_error(provider, &ProviderError::Stream(e)), 500..=599)?;
            return Ok(Outcome::Rejected);
        }
    };
    let mut acc = ChunkAccumulator::default();
    for ev in &events {
        match on_event(ev) {
            Ok(chunks) => {
                for c in chunks {
                    serde_json::to_vec(&c).map_err(|e| format!("chunk does not serialise: {e}"))?;
                    acc.push(&c);
                }
            }
            Err(e) => {
                openai_shaped(&stream_error(provider, &e), 500..=599)?;
                return Ok(Outcome::Rejected);
            }
        }
    }
    replay(&acc.finish())?;
    Ok(Outcome::Accepted)
}

fn anthropic_response_seeds() -> Vec<Vec<u8>> {
    lines(&[
        json!({"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
            "content": [{"type": "text", "text": "Hello from Claude."}], "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 12, "output_tokens": 6, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 4}}),
        json!({"id": "msg_02", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
            "content": [{"type": "thinking", "thinking": "hmm", "signature": "sig"}, {"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}}],
            "stop_reason": "tool_use", "stop_sequence": null, "usage": {"input_tokens": 40, "output_tokens": 20}}),
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}),
    ])
}

fn anthropic_sse_seeds() -> Vec<Vec<u8>> {
    vec![
        include_bytes!("../../tests/fixtures/anthropic/basic_stream.sse").to_vec(),
        include_bytes!("../../tests/fixtures/anthropic/tool_use_stream.sse").to_vec(),
        b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n".to_vec(),
    ]
}

// ---- Gemini ------------------------------------------------------------------------------------

fn check_gemini_response(input: &[u8]) -> Verdict {
    let text = String::from_utf8_lossy(input);
    openai_shaped(&upstream_error("gemini", gemini::map_error(status_of(input), None, &text)), 400..=599)?;
    match serde_json::from_slice::<gemini::GenerateResponse>(input) {
        Ok(resp) => {
            replay(&gemini::from_gemini(resp, "gemini-2.5-flash"))?;
            Ok(Outcome::Accepted)
        }
        Err(e) => {
            openai_shaped(&upstream_error("gemini", ProviderError::Decode(e.to_string())), 400..=599)?;
            Ok(Outcome::Rejected)
        }
    }
}

fn check_gemini_sse(input: &[u8]) -> Verdict {
    let n = 1 + (input.len() % 3) as u32;
    let mut st = gemini::StreamState::new("gemini-2.5-flash", n);
    stream_through("gemini", input, |ev| st.on_event(ev))
}

fn gemini_response_seeds() -> Vec<Vec<u8>> {
    lines(&[
        json!({"candidates": [{"content": {"parts": [{"text": "Hello from Gemini."}], "role": "model"}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 5, "totalTokenCount": 13, "thoughtsTokenCount": 2},
            "modelVersion": "gemini-2.5-flash", "responseId": "abc"}),
        json!({"candidates": [{"content": {"parts": [{"thought": true, "text": "thinking"}, {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}], "role": "model"}, "finishReason": "STOP", "index": 0},
                              {"content": {"parts": [{"text": "second"}], "role": "model"}, "finishReason": "MAX_TOKENS", "index": 1}],
            "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 5, "totalTokenCount": 13}}),
        json!({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 8, "totalTokenCount": 8}}),
        json!({"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT",
            "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]}}),
        json!([{"error": {"code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED"}}]),
    ])
}

fn gemini_sse_seeds() -> Vec<Vec<u8>> {
    vec![
        include_bytes!("../../tests/fixtures/gemini/text_stream.sse").to_vec(),
        include_bytes!("../../tests/fixtures/gemini/function_call_stream.sse").to_vec(),
        b"data: {\"error\":{\"code\":503,\"message\":\"The model is overloaded.\",\"status\":\"UNAVAILABLE\"}}\n\n"
            .to_vec(),
    ]
}

// ---- config ------------------------------------------------------------------------------------

fn check_config(input: &[u8]) -> Verdict {
    let text = String::from_utf8_lossy(input);
    match crate::config::Config::parse(&text) {
        Ok(cfg) => {
            let _ = cfg.tier_deployments("cheap");
            Ok(Outcome::Accepted)
        }
        Err(e) => {
            if e.to_string().trim().is_empty() {
                return Err("a config error with no message".into());
            }
            Ok(Outcome::Rejected)
        }
    }
}

fn config_seeds() -> Vec<Vec<u8>> {
    let full = r#"[server]
listen = "127.0.0.1:8080"
gateway_keys = "k1,k2"
max_concurrency = 256
request_timeout = "60s"

[cache]
threshold = 0.965
ttl = "24h"
max_entries = 1000000
snapshot = "var/cache.snap"

[router]
alias = "auto"
premium_share = 0.3

[router.tenant_share]
"t-0123456789ab" = 0.1

[dispatch]
backoff_base = "10ms"
backoff_max = "50ms"
breaker_cooldown = "1s"

[tiers]
cheap = ["openai:gpt-4o-mini", "anthropic:claude-3-5-haiku-latest"]
premium = ["anthropic:claude-sonnet-4-5", "openai:gpt-4o", "gemini:gemini-2.5-pro"]

[providers.openai]
kind = "openai"
base_url = "https://api.openai.com/v1"
api_key = "sk-literal"
first_byte_timeout = "2s"

[providers.anthropic]
kind = "anthropic"
base_url = "https://api.anthropic.com"
api_key = "sk-ant-literal"

[providers.gemini]
kind = "gemini"
base_url = "https://generativelanguage.googleapis.com"
api_key = "k"

[prices]
"gpt-4o-mini" = { input = 0.15, output = 0.6 }
"#;
    let small = "[tiers]\ncheap = [\"x:m\"]\npremium = [\"x:m\"]\n[providers.x]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:1/v1\"\n";
    vec![full.as_bytes().to_vec(), small.as_bytes().to_vec(), Vec::new()]
}

// ---- shared tier records -----------------------------------------------------------------------

const DIM: usize = 4;

fn answer_json(rng: &mut StdRng) -> String {
    let good = json!({"response": {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "cached"}, "finish_reason": "stop"}]},
        "tier": "cheap", "provider": "p", "cost": 0.5});
    match rng.gen_range(0..6) {
        0 => String::from_utf8_lossy(&random_bytes(rng, 64)).into_owned(),
        1 => {
            let mut v = good;
            super::mutate::mutate_json(rng, &mut v, &[]);
            v.to_string()
        }
        _ => good.to_string(),
    }
}

/// A record as another replica (or a hostile writer) would put it in the stream.
fn record(rng: &mut StdRng) -> snapshot::Record {
    let now = crate::cache::unix_now();
    let vector = match rng.gen_range(0..8) {
        0 => None,
        1 => Some((0..rng.gen_range(0..9)).map(|_| rng.gen::<f32>()).collect()),
        2 => Some(vec![f32::NAN, 0.5, 0.5, 0.5]),
        3 => Some(vec![f32::INFINITY, f32::NEG_INFINITY, 0.0, 1.0]),
        4 => Some(vec![0.0; DIM]),
        5 => Some(vec![f32::MAX, f32::MIN, 1e-45, 3.0]),
        _ => {
            let v: Vec<f32> = (0..DIM).map(|_| rng.gen::<f32>() - 0.5).collect();
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
            Some(v.into_iter().map(|x| x / n).collect())
        }
    };
    let mut ns = [0u8; 16];
    ns[0] = rng.gen_range(0..3);
    let mut exact = [0u8; 32];
    exact[0] = rng.gen_range(0..8);
    snapshot::Record {
        namespace: Namespace(ns),
        exact: ExactKey(exact),
        question: interesting_value(rng, 0).to_string(),
        vector,
        answer: answer_json(rng),
        stored_at: *[0, now, u64::MAX].choose(rng).unwrap_or(&now),
        expires_at: *[0, now.saturating_sub(1), now + 3600, u64::MAX].choose(rng).unwrap_or(&u64::MAX),
    }
}

fn bulk(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
}

fn shared_input(rng: &mut StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
    if rng.gen_ratio(1, 20) {
        return random_bytes(rng, 512);
    }
    let n = rng.gen_range(0..6);
    let mut out = Vec::new();
    out.extend_from_slice(b"*1\r\n*2\r\n");
    bulk(&mut out, b"switchyard:cache");
    out.extend_from_slice(format!("*{n}\r\n").as_bytes());
    for i in 0..n {
        let mut e = bincode::serialize(&record(rng)).unwrap_or_default();
        if rng.gen_ratio(1, 3) {
            for _ in 0..rng.gen_range(1..4) {
                mutate_bytes(rng, &mut e, seeds);
            }
        }
        out.extend_from_slice(b"*2\r\n");
        bulk(&mut out, format!("{}-{i}", rng.gen::<u32>()).as_bytes());
        let fields: Vec<(&[u8], Vec<u8>)> = match rng.gen_range(0..8) {
            0 => vec![(b"e", e)],
            1 => vec![(b"r", b"me".to_vec()), (b"e", e)],
            2 => vec![(b"x", e.clone()), (b"e", e.clone()), (b"e", e)],
            _ => vec![(b"r", b"other".to_vec()), (b"e", e)],
        };
        out.extend_from_slice(format!("*{}\r\n", fields.len() * 2).as_bytes());
        for (k, v) in fields {
            bulk(&mut out, k);
            bulk(&mut out, &v);
        }
    }
    if rng.gen_ratio(1, 4) {
        for _ in 0..rng.gen_range(1..4) {
            mutate_bytes(rng, &mut out, seeds);
        }
    }
    out
}

fn shared_seeds() -> Vec<Vec<u8>> {
    let mut rng = <StdRng as rand::SeedableRng>::seed_from_u64(7);
    (0..8).map(|_| shared_input(&mut rng, &[])).collect()
}

fn small_cache() -> SemanticCache {
    SemanticCache::new(CacheSettings { hnsw_from: 3, max_entries: 16, threshold: 0.5, ..CacheSettings::default() }, DIM)
}

/// Lookups in every namespace a record could have landed in.
fn probe_cache(cache: &SemanticCache) {
    for ns in 0..3u8 {
        let mut n = [0u8; 16];
        n[0] = ns;
        for ex in 0..8u8 {
            let mut e = [0u8; 32];
            e[0] = ex;
            let key = CacheKey { namespace: Namespace(n), exact: ExactKey(e), query: "q".into() };
            if let Some(hit) = cache.exact(&key, &Lookup::default()) {
                let _ = serde_json::to_vec(&hit.entry.answer.response);
            }
            if ex == 0 {
                let _ = cache.nearest(&key, &[0.5; DIM], &Lookup::default());
            }
        }
    }
}

fn check_shared(input: &[u8]) -> Verdict {
    let cache = small_cache();
    let mut inserted = 0;
    let mut malformed = 0;
    let mut entries = Vec::new();
    if let Ok(v) = redis::parse_redis_value(input) {
        entries = shared::stream_entries(&v);
    }
    // and the bytes themselves as one record field, then as one invalidation
    entries.push(("0-0".into(), vec![("e".into(), input.to_vec())]));
    entries.push(("0-1".into(), vec![("d".into(), input.to_vec())]));
    for (_, fields) in &entries {
        match shared::apply(&cache, fields, "me") {
            shared::Applied::Inserted | shared::Applied::Removed => inserted += 1,
            shared::Applied::Malformed => malformed += 1,
            shared::Applied::Skipped => {}
        }
    }
    probe_cache(&cache);
    if cache.stats().entries > 16 {
        return Err("the cache grew past max_entries".into());
    }
    let _ = malformed;
    Ok(if inserted > 0 { Outcome::Accepted } else { Outcome::Rejected })
}

// ---- snapshots ---------------------------------------------------------------------------------

fn v2(body: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    let mut out = snapshot::MAGIC.to_vec();
    out.extend_from_slice(body);
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&sha2::Sha256::digest(body));
    out
}

fn snapshot_input(rng: &mut StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
    if rng.gen_ratio(1, 20) {
        return random_bytes(rng, 512);
    }
    let records: Vec<snapshot::Record> = (0..rng.gen_range(0..12)).map(|_| record(rng)).collect();
    let mut body = bincode::serialize(&records).unwrap_or_default();
    if rng.gen_ratio(1, 2) {
        for _ in 0..rng.gen_range(1..4) {
            mutate_bytes(rng, &mut body, seeds);
        }
    }
    // a hostile writer computes the checksum too: most inputs get past it to the decoder
    let mut out = match rng.gen_range(0..10) {
        0..=5 => v2(&body),
        6..=7 => snapshot::MAGIC_V1.iter().chain(&body).copied().collect(),
        _ => {
            let mut f = v2(&body);
            mutate_bytes(rng, &mut f, seeds);
            f
        }
    };
    out.truncate(super::MAX_INPUT);
    out
}

fn snapshot_seeds() -> Vec<Vec<u8>> {
    let mut rng = <StdRng as rand::SeedableRng>::seed_from_u64(11);
    (0..4).map(|_| snapshot_input(&mut rng, &[])).collect()
}

fn check_snapshot(input: &[u8]) -> Verdict {
    let cache = small_cache();
    let r = cache.load_snapshot_bytes(input);
    probe_cache(&cache);
    match r {
        Ok(_) => Ok(Outcome::Accepted),
        Err(e) => {
            if !e.to_string().contains("corrupt") && !e.to_string().contains("snapshot") {
                return Err(format!("an unclear snapshot error: {e}"));
            }
            Ok(Outcome::Rejected)
        }
    }
}
