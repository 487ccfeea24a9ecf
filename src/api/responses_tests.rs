#![allow(clippy::unwrap_used)]
use super::*;

fn prepare(v: Value) -> Prepared {
    to_chat_request(serde_json::from_value(v).unwrap(), Vec::new()).unwrap()
}

fn chat_json(v: Value) -> Value {
    serde_json::to_value(&prepare(v).chat).unwrap()
}

fn refused(v: Value) -> String {
    match serde_json::from_value::<ResponsesRequest>(v) {
        Ok(r) => to_chat_request(r, Vec::new()).unwrap_err().to_string(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_string_input_with_instructions_is_a_system_and_a_user_message() {
    let v = chat_json(json!({"model": "auto", "input": "Hi", "instructions": "Be brief.", "max_output_tokens": 50,
        "reasoning": {"effort": "low"}, "text": {"format": {"type": "json_object"}}}));
    assert_eq!(v["messages"], json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]));
    assert_eq!(v["max_completion_tokens"], 50);
    assert_eq!(v["reasoning_effort"], "low");
    assert_eq!(v["response_format"], json!({"type": "json_object"}));
    assert!(v.get("stream").is_none());
}

#[test]
fn items_calls_and_outputs_translate_to_chat_turns() {
    let p = prepare(json!({"model": "auto", "stream": true, "input": [
        {"role": "developer", "content": "Use tools."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather in Paris"},
            {"type": "input_text", "text": "and Rome?"}]},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
        {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{\"city\":\"Paris\"}"},
        {"type": "function_call", "call_id": "call_2", "name": "weather", "arguments": "{\"city\":\"Rome\"}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "18C"},
        {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "21C"}]},
        {"role": "user", "content": [{"type": "input_image", "image_url": "https://x/y.png", "detail": "low"}]},
    ],
    "tools": [{"type": "function", "name": "weather", "description": "Weather", "strict": true,
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}],
    "tool_choice": {"type": "function", "name": "weather"}, "parallel_tool_calls": false}));
    let v = serde_json::to_value(&p.chat).unwrap();
    let m = &v["messages"];
    assert_eq!(m[0], json!({"role": "developer", "content": "Use tools."}));
    assert_eq!(m[1]["content"], "Weather in Paris\nand Rome?", "text-only content is a plain string");
    assert_eq!(m[2]["content"], "Checking.");
    assert_eq!(m[2]["tool_calls"][1]["id"], "call_2", "both calls join the assistant turn");
    assert_eq!(m[3], json!({"role": "tool", "tool_call_id": "call_1", "content": "18C"}));
    assert_eq!(m[4]["content"], "21C");
    assert_eq!(m[5]["content"][0]["image_url"], json!({"url": "https://x/y.png", "detail": "low"}));
    assert_eq!(v["tools"][0]["function"]["name"], "weather");
    assert_eq!(v["tools"][0]["function"]["strict"], true);
    assert_eq!(v["tool_choice"], json!({"type": "function", "function": {"name": "weather"}}));
    assert_eq!(v["parallel_tool_calls"], false);
    assert_eq!(v["stream_options"]["include_usage"], true);
    // the echo keeps the Responses shapes
    assert_eq!(p.echo.tools[0]["name"], "weather");
    assert_eq!(p.echo.tool_choice["name"], "weather");
    assert!(!p.echo.parallel_tool_calls && p.echo.store);
    assert_eq!(p.history.len(), 6, "history has no instructions and no reasoning item");

    // the same input as the items `input_items` lists: every one kept, with an id and a status
    let kinds: Vec<&str> = p.items.iter().map(|i| i["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "message",
            "message",
            "reasoning",
            "message",
            "function_call",
            "function_call",
            "function_call_output",
            "function_call_output",
            "message"
        ]
    );
    assert_eq!(p.items[0]["content"], json!([{"type": "input_text", "text": "Use tools."}]));
    assert_eq!(p.items[2]["id"], "rs_1", "a client's id is kept");
    assert_eq!(p.items[3]["content"][0]["annotations"], json!([]));
    assert_eq!(
        p.items[8]["content"][0],
        json!({"type": "input_image", "image_url": "https://x/y.png", "detail": "low"})
    );
    let prefixes: Vec<&str> = p.items.iter().map(|i| i["id"].as_str().unwrap().split('_').next().unwrap()).collect();
    assert_eq!(prefixes, ["msg", "msg", "rs", "msg", "fc", "fc", "fco", "fco", "msg"]);
    assert!(p.items.iter().filter(|i| i["type"] != "reasoning").all(|i| i["status"] == "completed"));
}

#[test]
fn a_string_input_is_listed_as_one_user_message() {
    let p = prepare(json!({"model": "auto", "input": "Hi", "instructions": "Be brief."}));
    assert_eq!(p.items.len(), 1, "instructions are not an input item");
    assert_eq!(p.items[0]["role"], "user");
    assert_eq!(p.items[0]["content"], json!([{"type": "input_text", "text": "Hi"}]));
    assert!(p.items[0]["id"].as_str().unwrap().starts_with("msg_"));
}

#[test]
fn a_follow_up_continues_the_stored_conversation_without_its_instructions() {
    let previous = vec![json!({"role": "user", "content": "Hi"}), json!({"role": "assistant", "content": "Hello!"})];
    let req = serde_json::from_value(json!({"model": "auto", "input": "And you?", "instructions": "New rules.",
        "previous_response_id": "resp_1"}))
    .unwrap();
    let p = to_chat_request(req, previous).unwrap();
    let v = serde_json::to_value(&p.chat).unwrap();
    assert_eq!(v["messages"][0], json!({"role": "system", "content": "New rules."}));
    assert_eq!(v["messages"][2]["content"], "Hello!");
    assert_eq!(v["messages"][3]["content"], "And you?");
    assert_eq!(p.history.len(), 3);
    assert_eq!(p.echo.previous_response_id.as_deref(), Some("resp_1"));
}

#[test]
fn json_schema_format_becomes_response_format() {
    let v = chat_json(json!({"model": "auto", "input": "x", "text": {"format": {"type": "json_schema",
        "name": "city", "strict": true, "schema": {"type": "object"}}}}));
    assert_eq!(
        v["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "city", "schema": {"type": "object"}, "strict": true}})
    );
}

#[test]
fn what_the_gateway_cannot_serve_is_refused_by_name() {
    let base = |extra: Value| {
        let mut v = json!({"model": "auto", "input": "x"});
        for (k, val) in extra.as_object().unwrap() {
            v[k] = val.clone();
        }
        refused(v)
    };
    assert!(base(json!({"tools": [{"type": "web_search"}]})).contains("tools[0]"));
    assert!(base(json!({"conversation": "conv_1"})).contains("conversation"));
    assert!(base(json!({"prompt": {"id": "pmpt_1"}})).contains("prompt"));
    assert!(base(json!({"background": true})).contains("background"));
    assert!(base(json!({"max_output_tokens": 0})).contains("max_output_tokens"));
    assert!(base(json!({"input": []})).contains("input"));
    assert!(base(json!({"input": [{"type": "file_search_call", "id": "x"}]})).contains("input[0]"));
    assert!(base(json!({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}))
        .contains("input[0].content[0]"));
    assert!(base(json!({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]}))
        .contains("image_url"));
    assert!(base(json!({"input": [{"role": "tool", "content": "x"}]})).contains("input[0].role"));
    assert!(base(json!({"tool_choice": {"type": "web_search"}})).contains("tool_choice"));
    assert!(refused(json!({"input": "x"})).contains("model"));
}

fn echo() -> Echo {
    prepare(json!({"model": "auto", "input": "x", "instructions": "Be brief.", "metadata": {"k": "v"}})).echo
}

#[test]
fn a_chat_completion_becomes_a_response_with_text_and_calls() {
    let resp: ChatResponse = serde_json::from_value(json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 7, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": "Let me check.",
            "tool_calls": [{"id": "call_9", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    }))
    .unwrap();
    let f = to_response(&resp, "resp_1", &echo());
    let r = &f.response;
    assert_eq!(
        (r["id"].as_str(), r["object"].as_str(), r["status"].as_str()),
        (Some("resp_1"), Some("response"), Some("completed"))
    );
    assert_eq!(r["model"], "gpt-4o-mini");
    assert_eq!(r["instructions"], "Be brief.");
    assert_eq!(r["metadata"], json!({"k": "v"}));
    assert_eq!(r["output"][0]["content"][0]["text"], "Let me check.");
    assert_eq!(r["output"][1]["type"], "function_call");
    assert_eq!(r["output"][1]["call_id"], "call_9");
    assert_eq!(r["usage"]["input_tokens"], 5);
    assert_eq!(r["usage"]["total_tokens"], 8);
    assert_eq!(f.turn["tool_calls"][0]["id"], "call_9");
    assert_eq!(f.turn["content"], "Let me check.");

    let mut cut = resp.clone();
    cut.choices[0].finish_reason = Some("length".into());
    let r = to_response(&cut, "resp_2", &echo()).response;
    assert_eq!(r["status"], "incomplete");
    assert_eq!(r["incomplete_details"]["reason"], "max_output_tokens");
}

fn chunk(choices: Value, usage: Value) -> ChatChunk {
    serde_json::from_value(json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
        "model": "m", "choices": choices, "usage": usage}))
    .unwrap()
}

fn events(all: &str) -> Vec<Value> {
    all.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let mut lines = e.lines();
            let name = lines.next().unwrap().strip_prefix("event: ").unwrap();
            let data: Value = serde_json::from_str(lines.next().unwrap().strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(data["type"], name, "the event line names the data's type");
            data
        })
        .collect()
}

#[test]
fn a_stream_becomes_response_events_in_order() {
    let mut t = StreamTranslator::new("resp_1".into(), echo());
    let mut all = String::new();
    all += &t.chunk(&chunk(json!([{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}]), Value::Null));
    all += &t.chunk(&chunk(json!([{"index": 0, "delta": {"content": "lo"}}]), Value::Null));
    all += &t.chunk(&chunk(
        json!([{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
            "function": {"name": "f", "arguments": "{\"a\":"}}]}}]),
        Value::Null,
    ));
    all += &t.chunk(&chunk(
        json!([{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}, "finish_reason": "tool_calls"}]),
        Value::Null,
    ));
    all += &t.chunk(&chunk(json!([]), json!({"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12})));
    let (tail, finished) = t.finish();
    all += &tail;
    let ev = events(&all);
    let kinds: Vec<&str> = ev.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let seq: Vec<u64> = ev.iter().map(|e| e["sequence_number"].as_u64().unwrap()).collect();
    assert_eq!(seq, (0..ev.len() as u64).collect::<Vec<_>>());
    assert_eq!(ev[0]["response"]["status"], "in_progress");
    assert_eq!(ev[6]["text"], "Hello");
    assert_eq!(ev[9]["output_index"], 1);
    assert_eq!(ev[12]["arguments"], "{\"a\":1}");
    let done = &ev[14]["response"];
    assert_eq!(done["output"][0]["content"][0]["text"], "Hello");
    assert_eq!(done["output"][1]["call_id"], "call_1");
    assert_eq!(done["usage"]["output_tokens"], 7);
    assert_eq!(done, &finished.response);
    assert_eq!(finished.turn["tool_calls"][0]["function"]["arguments"], "{\"a\":1}");
}

#[test]
fn a_failed_stream_ends_in_error_and_response_failed() {
    let mut t = StreamTranslator::new("resp_1".into(), echo());
    let mut all = t.chunk(&chunk(json!([{"index": 0, "delta": {"content": "Hi"}}]), Value::Null));
    all += &t.error(&GatewayError::Timeout("too slow".into()));
    let ev = events(&all);
    let n = ev.len();
    assert_eq!(ev[n - 2]["type"], "error");
    assert_eq!(ev[n - 2]["code"], "timeout");
    assert_eq!(ev[n - 1]["type"], "response.failed");
    assert_eq!(ev[n - 1]["response"]["status"], "failed");
    assert_eq!(ev[n - 1]["response"]["error"]["message"], "too slow");
}

/// Reasoning opens the output as a `reasoning` item (its text as the summary); signed Anthropic
/// thinking stays with the stored turn, and rides in `encrypted_content` only when asked for.
#[test]
fn reasoning_becomes_a_reasoning_item_and_signed_thinking_stays_with_the_turn() {
    let resp: ChatResponse = serde_json::from_value(json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 7, "model": "claude",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
            "reasoning_content": "Use the tool.",
            "thinking_blocks": [{"type": "thinking", "thinking": "Use the tool.", "signature": "sig-1"}],
            "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]}}],
    }))
    .unwrap();
    let f = to_response(&resp, "resp_1", &echo());
    let out = &f.response["output"];
    assert_eq!(out[0]["type"], "reasoning");
    assert!(out[0]["id"].as_str().unwrap().starts_with("rs_"));
    assert_eq!(out[0]["summary"], json!([{"type": "summary_text", "text": "Use the tool."}]));
    assert!(out[0].get("encrypted_content").is_none(), "{out}");
    assert_eq!(out[1]["type"], "function_call");
    assert_eq!(f.turn["thinking_blocks"][0]["signature"], "sig-1");

    let asked = prepare(json!({"model": "auto", "input": "x", "include": ["reasoning.encrypted_content"]})).echo;
    let f = to_response(&resp, "resp_2", &asked);
    let packed = f.response["output"][0]["encrypted_content"].as_str().unwrap().to_string();
    // sent back by a client managing its own context, the blocks reach the assistant turn
    let v = chat_json(json!({"model": "auto", "input": [
        {"role": "user", "content": "Weather?"},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": packed},
        {"type": "function_call", "call_id": "toolu_1", "name": "weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "toolu_1", "output": "sunny"}]}));
    assert_eq!(v["messages"][1]["thinking_blocks"][0]["signature"], "sig-1", "{v}");
    assert_eq!(v["messages"][1]["tool_calls"][0]["id"], "toolu_1");
    // OpenAI's own encrypted reasoning (or anything else) is skipped, as before
    let v = chat_json(json!({"model": "auto", "input": [
        {"role": "user", "content": "Weather?"},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAAABo-opaque"},
        {"role": "assistant", "content": "Sunny."}, {"role": "user", "content": "Thanks"}]}));
    assert!(v["messages"][1].get("thinking_blocks").is_none(), "{v}");

    // an answer without reasoning has no reasoning item
    let plain: ChatResponse = serde_json::from_value(json!({"id": "c", "object": "chat.completion", "created": 7,
        "model": "m", "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Hi"}}]}))
    .unwrap();
    assert_eq!(to_response(&plain, "resp_3", &echo()).response["output"][0]["type"], "message");
}

/// Streamed reasoning: a reasoning item with one summary part, its text as summary deltas, done
/// before the message begins; the signed block that arrives whole joins the stored turn.
#[test]
fn streamed_reasoning_is_a_reasoning_item_before_the_message() {
    let mut t = StreamTranslator::new("resp_1".into(), echo());
    let mut all = String::new();
    let delta = |d: Value| chunk(json!([{"index": 0, "delta": d}]), Value::Null);
    all += &t.chunk(&delta(json!({"role": "assistant", "reasoning_content": "Greet "})));
    all += &t.chunk(&delta(json!({"reasoning_content": "back."})));
    all += &t.chunk(&delta(
        json!({"thinking_blocks": [{"type": "thinking", "thinking": "Greet back.", "signature": "sig-9"}]}),
    ));
    all += &t.chunk(&delta(json!({"content": "Hi."})));
    let (tail, finished) = t.finish();
    all += &tail;
    let ev = events(&all);
    let kinds: Vec<&str> = ev.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.reasoning_summary_part.added",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.done",
            "response.reasoning_summary_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    assert_eq!(ev[2]["item"], json!({"type": "reasoning", "id": ev[3]["item_id"], "summary": []}));
    assert_eq!(ev[6]["text"], "Greet back.");
    assert_eq!(ev[8]["item"]["summary"][0]["text"], "Greet back.");
    assert_eq!(ev[9]["output_index"], 1);
    let done = &ev[15]["response"];
    assert_eq!(done["output"][0]["type"], "reasoning");
    assert_eq!(done["output"][1]["content"][0]["text"], "Hi.");
    assert_eq!(finished.turn["thinking_blocks"][0]["signature"], "sig-9");
    assert_eq!(finished.turn["content"], "Hi.");
}

#[test]
fn an_inline_input_file_is_a_file_part() {
    let v = chat_json(json!({"model": "auto", "input": [{"role": "user", "content": [
        {"type": "input_file", "filename": "r.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"},
        {"type": "input_text", "text": "Summarise."}]}]}));
    assert_eq!(
        v["messages"][0]["content"][0],
        json!({"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0x", "filename": "r.pdf"}})
    );
}
