//! OpenAI's Responses API (`POST /v1/responses`) in front of the gateway.
//!
//! Why a translation rather than a second pipeline: as for Anthropic's Messages API
//! (`api::messages`), routing, the cache, failover and every provider adapter work on the
//! chat-shaped [`ChatRequest`]. A Responses request becomes one ([`to_chat_request`]), is served
//! like any chat request, and the answer is turned back ([`to_response`], or
//! [`StreamTranslator`] event by event).
//!
//! What is served: text and image input, `instructions`, function tools and their calls and
//! outputs, `text.format` (JSON mode and JSON schema), `reasoning.effort`, streaming with the
//! documented event sequence, and `previous_response_id` over the gateway's own bounded store
//! (`http::responses`). OpenAI-hosted features (built-in tools such as web search, stored
//! prompts, conversations, background mode) are refused with a 400 that names them: the gateway
//! cannot run them on another provider, and silently dropping them would answer a different
//! question.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{ChatChunk, ChatRequest, ChatResponse, EventTranslator, GatewayError, Usage};

/// A Responses request as the OpenAI SDKs send it. Fields with no effect on the answer
/// (`truncation`, `service_tier`, `prompt_cache_key`, ...) are accepted and ignored; of
/// `include`, only `reasoning.encrypted_content` changes anything.
#[derive(Debug, Deserialize)]
pub struct ResponsesRequest {
    pub model: String,
    #[serde(default)]
    pub input: Option<Input>,
    #[serde(default)]
    pub instructions: Option<String>,
    #[serde(default)]
    pub max_output_tokens: Option<u32>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default)]
    pub text: Option<Value>,
    #[serde(default)]
    pub reasoning: Option<Value>,
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub user: Option<String>,
    /// OpenAI stores responses unless told not to; so does the gateway (bounded, see
    /// `http::responses`), so that `previous_response_id` works as clients expect.
    #[serde(default)]
    pub store: Option<bool>,
    #[serde(default)]
    pub previous_response_id: Option<String>,
    #[serde(default)]
    pub conversation: Option<Value>,
    #[serde(default)]
    pub prompt: Option<Value>,
    #[serde(default)]
    pub background: Option<bool>,
    #[serde(default)]
    pub include: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Input {
    Text(String),
    Items(Vec<Value>),
}

/// What a response echoes of its request (the Responses object carries its settings), and how
/// it is to be kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Echo {
    pub model: String,
    pub instructions: Option<String>,
    pub max_output_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub tools: Vec<Value>,
    pub tool_choice: Value,
    pub parallel_tool_calls: bool,
    pub text: Value,
    pub reasoning: Value,
    pub metadata: Value,
    pub user: Option<String>,
    pub store: bool,
    pub previous_response_id: Option<String>,
    /// `include` asked for `reasoning.encrypted_content`: reasoning items then carry what a
    /// later request needs to send the reasoning back (see `reasoning_item`).
    pub encrypted_reasoning: bool,
}

/// A Responses request made ready to serve.
#[derive(Debug)]
pub struct Prepared {
    pub chat: ChatRequest,
    pub echo: Echo,
    /// The conversation without `instructions` (which a later turn does not inherit, as in
    /// OpenAI's API): what a follow-up's `previous_response_id` continues from, once this
    /// response's own output is added.
    pub history: Vec<Value>,
    /// This request's input as Responses items with ids (see [`input_items`]): what
    /// `GET /v1/responses/{id}/input_items` lists after the items the response continued.
    pub items: Vec<Value>,
}

fn invalid(msg: impl std::fmt::Display, param: &str) -> GatewayError {
    GatewayError::invalid(format!("{param}: {msg}"), Some(param))
}

/// Refuses a field the gateway cannot honour on an arbitrary provider.
fn unsupported(param: &str, why: &str) -> GatewayError {
    invalid(format!("not supported by this gateway ({why})"), param)
}

/// The text of content that may only be text (`output_text` / `input_text` parts or a string).
fn text_content(content: &Value, param: &str) -> Result<String, GatewayError> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut out = Vec::new();
            for (j, p) in parts.iter().enumerate() {
                match p["type"].as_str() {
                    Some("input_text" | "output_text" | "text") => out.push(p["text"].as_str().unwrap_or_default()),
                    Some("refusal") => out.push(p["refusal"].as_str().unwrap_or_default()),
                    _ => return Err(invalid("only text parts are supported here", &format!("{param}[{j}]"))),
                }
            }
            Ok(out.join(""))
        }
        Value::Null => Ok(String::new()),
        _ => Err(invalid("must be a string or an array of content parts", param)),
    }
}

/// User-side content as a chat message's content: a plain string when it is text only (so the
/// cache key and upstreams see what an OpenAI chat client would have sent), else parts.
fn user_content(content: &Value, param: &str) -> Result<Value, GatewayError> {
    let Value::Array(parts) = content else {
        return match content {
            Value::String(s) => Ok(json!(s)),
            _ => Err(invalid("must be a string or an array of content parts", param)),
        };
    };
    let mut out = Vec::new();
    for (j, p) in parts.iter().enumerate() {
        let param = format!("{param}[{j}]");
        match p["type"].as_str() {
            Some("input_text" | "output_text") => {
                let text = p["text"].as_str().ok_or_else(|| invalid("`text` must be a string", &param))?;
                out.push(json!({"type": "text", "text": text}));
            }
            Some("input_image") => {
                let url = p["image_url"].as_str().ok_or_else(|| {
                    unsupported(&param, "images by `file_id` live in OpenAI's file store; send `image_url`")
                })?;
                let mut image = json!({"url": url});
                if let Some(d) = p["detail"].as_str() {
                    image["detail"] = json!(d);
                }
                out.push(json!({"type": "image_url", "image_url": image}));
            }
            Some("input_file") => {
                let data = p["file_data"].as_str().ok_or_else(|| {
                    unsupported(
                        &param,
                        "files by `file_id` or `file_url` live in OpenAI's file store; send `file_data`",
                    )
                })?;
                let mut file = json!({"file_data": data});
                if let Some(name) = p["filename"].as_str() {
                    file["filename"] = json!(name);
                }
                out.push(json!({"type": "file", "file": file}));
            }
            Some(other) => {
                return Err(invalid(
                    format!(
                        "content part type `{other}` is not supported (input_text, input_image and input_file are)"
                    ),
                    &param,
                ))
            }
            None => return Err(invalid("a content part needs a `type`", &param)),
        }
    }
    if out.iter().all(|p| p["type"] == "text") {
        let text: Vec<&str> = out.iter().filter_map(|p| p["text"].as_str()).collect();
        return Ok(json!(text.join("\n")));
    }
    Ok(json!(out))
}

/// Input items as chat messages. Function calls join the assistant message before them (chat
/// puts an assistant turn's calls on that message); their outputs become `tool` messages.
/// An earlier turn's `reasoning` item is the model's own: only its `encrypted_content`, when it
/// holds the signed thinking an Anthropic upstream gave (see [`reasoning_item`]), is carried, as
/// the `thinking_blocks` of the assistant turn after it, which Anthropic requires back in a
/// tool loop. Anything else there (OpenAI's own encrypted reasoning) is skipped.
fn to_messages(items: &[Value], messages: &mut Vec<Value>) -> Result<(), GatewayError> {
    let mut thinking: Option<Value> = None;
    for (i, item) in items.iter().enumerate() {
        let param = format!("input[{i}]");
        match item["type"].as_str() {
            None | Some("message") => {
                let content = &item["content"];
                let param = format!("{param}.content");
                match item["role"].as_str() {
                    Some(role @ ("user" | "system" | "developer")) => {
                        let content = if role == "user" {
                            user_content(content, &param)?
                        } else {
                            json!(text_content(content, &param)?)
                        };
                        messages.push(json!({"role": role, "content": content}));
                    }
                    Some("assistant") => {
                        messages.push(json!({"role": "assistant", "content": text_content(content, &param)?}))
                    }
                    _ => {
                        return Err(invalid(
                            "a message needs a `role` of user, assistant, system or developer",
                            &format!("input[{i}].role"),
                        ))
                    }
                }
            }
            Some("function_call") => {
                let field = |name: &str| {
                    item[name].as_str().ok_or_else(|| invalid(format!("`{name}` must be a string"), &param))
                };
                let call = json!({
                    "id": field("call_id")?, "type": "function",
                    "function": {"name": field("name")?, "arguments": field("arguments")?},
                });
                match messages.last_mut() {
                    Some(last) if last["role"] == "assistant" => match last["tool_calls"].as_array_mut() {
                        Some(calls) => calls.push(call),
                        None => last["tool_calls"] = json!([call]),
                    },
                    _ => messages.push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
                }
            }
            Some("function_call_output") => {
                let call_id = item["call_id"].as_str().ok_or_else(|| invalid("`call_id` must be a string", &param))?;
                let output = text_content(&item["output"], &format!("{param}.output"))?;
                messages.push(json!({"role": "tool", "tool_call_id": call_id, "content": output}));
            }
            Some("reasoning") => {
                thinking = item["encrypted_content"]
                    .as_str()
                    .and_then(|e| serde_json::from_str::<Value>(e).ok())
                    .filter(is_thinking_blocks);
            }
            Some(other) => {
                return Err(invalid(
                    format!(
                    "input item type `{other}` is not supported (message, function_call and function_call_output are)"
                ),
                    &param,
                ))
            }
        }
        // the reasoning goes on the assistant turn that follows it (a message or a call)
        if let Some(blocks) = thinking.as_ref().filter(|_| item["type"] != "reasoning") {
            // (a message just pushed has none; a call joined to an earlier one keeps its own)
            if let Some(last) = messages.last_mut().filter(|m| m["role"] == "assistant") {
                if last.get("thinking_blocks").is_none() {
                    last["thinking_blocks"] = blocks.clone();
                }
            }
            thinking = None;
        }
    }
    Ok(())
}

/// Signed Anthropic thinking blocks, as [`reasoning_item`] packs them.
fn is_thinking_blocks(v: &Value) -> bool {
    v.as_array().is_some_and(|b| {
        !b.is_empty()
            && b.iter().all(|b| match b["type"].as_str() {
                Some("thinking") => b["thinking"].is_string() && b["signature"].as_str().is_some_and(|s| !s.is_empty()),
                Some("redacted_thinking") => b["data"].is_string(),
                _ => false,
            })
    })
}

/// Responses function tools (`{"type": "function", "name", "parameters", ...}`, flat) as chat
/// tools (the definition nested under `function`).
fn to_chat_tools(tools: &[Value]) -> Result<Vec<Value>, GatewayError> {
    tools
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let param = format!("tools[{i}]");
            match t["type"].as_str() {
                Some("function") => {
                    let name = t["name"].as_str().ok_or_else(|| invalid("a function tool needs a `name`", &param))?;
                    let mut f = json!({"name": name});
                    for key in ["description", "parameters", "strict"] {
                        if !t[key].is_null() {
                            f[key] = t[key].clone();
                        }
                    }
                    Ok(json!({"type": "function", "function": f}))
                }
                Some(other) => Err(unsupported(
                    &param,
                    &format!("`{other}` is a tool OpenAI runs itself; function tools are served on every provider"),
                )),
                None => Err(invalid("a tool needs a `type`", &param)),
            }
        })
        .collect()
}

fn to_chat_tool_choice(choice: &Value) -> Result<Value, GatewayError> {
    match choice {
        Value::String(s) if matches!(s.as_str(), "auto" | "none" | "required") => Ok(choice.clone()),
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            let name = o.get("name").and_then(Value::as_str).ok_or_else(|| invalid("needs a `name`", "tool_choice"))?;
            Ok(json!({"type": "function", "function": {"name": name}}))
        }
        _ => Err(unsupported("tool_choice", "auto, none, required or a function by name")),
    }
}

/// `text.format` as chat's `response_format`.
fn to_response_format(text: &Value) -> Result<Option<Value>, GatewayError> {
    let format = &text["format"];
    match format["type"].as_str() {
        None | Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let name = format["name"].as_str().ok_or_else(|| invalid("needs a `name`", "text.format"))?;
            let mut schema = json!({"name": name, "schema": format["schema"]});
            for key in ["description", "strict"] {
                if !format[key].is_null() {
                    schema[key] = format[key].clone();
                }
            }
            Ok(Some(json!({"type": "json_schema", "json_schema": schema})))
        }
        Some(other) => Err(invalid(format!("format type `{other}` is not supported"), "text.format")),
    }
}

/// The chat request for a Responses request, continuing `previous` (the stored conversation of
/// `previous_response_id`, already looked up by the caller). Built as JSON and parsed by
/// [`ChatRequest`]'s own deserialiser, so it meets exactly the checks a chat request meets.
pub fn to_chat_request(req: ResponsesRequest, previous: Vec<Value>) -> Result<Prepared, GatewayError> {
    if req.conversation.is_some() {
        return Err(unsupported(
            "conversation",
            "conversations are kept by OpenAI; continue with `previous_response_id` or send the whole input",
        ));
    }
    if req.prompt.is_some() {
        return Err(unsupported("prompt", "stored prompts live in OpenAI's dashboard"));
    }
    if req.background == Some(true) {
        return Err(unsupported("background", "send the request and wait, or stream it"));
    }
    if req.max_output_tokens == Some(0) {
        return Err(invalid("must be at least 1", "max_output_tokens"));
    }
    let mut history = previous;
    match &req.input {
        Some(Input::Text(t)) => history.push(json!({"role": "user", "content": t})),
        Some(Input::Items(items)) => to_messages(items, &mut history)?,
        None => {}
    }
    if history.is_empty() {
        return Err(invalid("`input` must hold at least one item", "input"));
    }
    let items = req.input.as_ref().map(input_items).unwrap_or_default();
    let mut messages = Vec::with_capacity(history.len() + 1);
    if let Some(i) = req.instructions.as_deref().filter(|i| !i.is_empty()) {
        messages.push(json!({"role": "system", "content": i}));
    }
    messages.extend(history.iter().cloned());

    let tools: Vec<Value> = req.tools.unwrap_or_default();
    let chat_tools = to_chat_tools(&tools)?;
    let text = req.text.unwrap_or_else(|| json!({"format": {"type": "text"}}));
    let mut out = Map::new();
    out.insert("model".into(), json!(req.model));
    out.insert("messages".into(), json!(messages));
    if let Some(n) = req.max_output_tokens {
        out.insert("max_completion_tokens".into(), json!(n));
    }
    if let Some(t) = req.temperature {
        out.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        out.insert("top_p".into(), json!(p));
    }
    if req.stream == Some(true) {
        out.insert("stream".into(), json!(true));
        // response.completed carries the usage, so ask every upstream for it
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if !chat_tools.is_empty() {
        out.insert("tools".into(), json!(chat_tools));
    }
    if let Some(c) = &req.tool_choice {
        out.insert("tool_choice".into(), to_chat_tool_choice(c)?);
    }
    if let Some(p) = req.parallel_tool_calls {
        out.insert("parallel_tool_calls".into(), json!(p));
    }
    if let Some(f) = to_response_format(&text)? {
        out.insert("response_format".into(), f);
    }
    let reasoning = req.reasoning.unwrap_or(Value::Null);
    if let Some(effort) = reasoning["effort"].as_str() {
        out.insert("reasoning_effort".into(), json!(effort));
    }
    if let Some(u) = &req.user {
        out.insert("user".into(), json!(u));
    }
    let chat: ChatRequest = serde_json::from_value(Value::Object(out))
        .map_err(|e| GatewayError::invalid(format!("invalid request: {e}"), None))?;
    let echo = Echo {
        model: req.model,
        instructions: req.instructions,
        max_output_tokens: req.max_output_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        // as the Responses object lists them: every field present, `null` where unset
        tools: chat_tools
            .iter()
            .map(|t| {
                let f = &t["function"];
                json!({"type": "function", "name": f["name"], "description": f["description"],
                    "parameters": f["parameters"], "strict": f["strict"]})
            })
            .collect(),
        tool_choice: req.tool_choice.unwrap_or_else(|| json!("auto")),
        parallel_tool_calls: req.parallel_tool_calls.unwrap_or(true),
        text,
        reasoning,
        metadata: req.metadata.unwrap_or_else(|| json!({})),
        user: req.user,
        store: req.store.unwrap_or(true),
        previous_response_id: req.previous_response_id,
        encrypted_reasoning: req
            .include
            .as_ref()
            .and_then(Value::as_array)
            .is_some_and(|i| i.iter().any(|x| x == "reasoning.encrypted_content")),
    };
    Ok(Prepared { chat, echo, history, items })
}

/// Input as the items OpenAI lists for a response: a string becomes a user message, a message's
/// string content becomes one text part, and every item gets an id (the client's, if it sent
/// one) and a status. Called once [`to_messages`] has accepted the input, so the shapes are
/// known good.
pub fn input_items(input: &Input) -> Vec<Value> {
    let text_part = |role: &str, text: &Value| match role {
        "assistant" => json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []}),
        _ => json!({"type": "input_text", "text": text}),
    };
    let items = match input {
        Input::Text(t) => {
            return vec![
                json!({"id": new_id("msg"), "type": "message", "role": "user", "status": "completed", "content": [{"type": "input_text", "text": t}]}),
            ]
        }
        Input::Items(items) => items,
    };
    items
        .iter()
        .map(|item| {
            if !item.is_object() {
                return item.clone(); // not reached: to_messages refused it
            }
            let mut item = item.clone();
            let kind = item["type"].as_str().unwrap_or("message").to_string();
            if kind == "message" {
                item["type"] = json!("message");
                let role = item["role"].as_str().unwrap_or("user").to_string();
                match item["content"].take() {
                    Value::String(s) => item["content"] = json!([text_part(&role, &json!(s))]),
                    Value::Array(mut parts) => {
                        // the fields OpenAI fills in when it lists a part
                        for p in parts.iter_mut().filter(|p| p.is_object()) {
                            let defaults = match p["type"].as_str() {
                                Some("output_text") => &[("annotations", json!([])), ("logprobs", json!([]))][..],
                                Some("input_image") => &[("detail", json!("auto"))][..],
                                _ => &[],
                            };
                            for (field, value) in defaults {
                                if p[*field].is_null() {
                                    p[*field] = value.clone();
                                }
                            }
                        }
                        item["content"] = json!(parts);
                    }
                    other => item["content"] = other,
                }
            }
            if !item["id"].is_string() {
                let prefix = match kind.as_str() {
                    "function_call" => "fc",
                    "function_call_output" => "fco",
                    "reasoning" => "rs",
                    _ => "msg",
                };
                item["id"] = json!(new_id(prefix));
            }
            if !item["status"].is_string() && kind != "reasoning" {
                item["status"] = json!("completed");
            }
            item
        })
        .collect()
}

/// A new id with OpenAI's prefix for its kind (`resp`, `msg`, `fc`).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

fn usage_json(u: Option<&Usage>) -> Value {
    let u = u.copied().unwrap_or_default();
    json!({
        "input_tokens": u.prompt_tokens,
        // OpenAI's spec (2.3.0) requires `cache_write_tokens`; chat usage does not report writes
        "input_tokens_details": {
            "cached_tokens": u.prompt_tokens_details.map_or(0, |d| d.cached_tokens),
            "cache_write_tokens": 0,
        },
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {
            "reasoning_tokens": u.completion_tokens_details.and_then(|d| d.reasoning_tokens).unwrap_or(0),
        },
        "total_tokens": u.total_tokens,
    })
}

/// `status` and `incomplete_details` for a chat `finish_reason`.
fn status_of(finish_reason: Option<&str>) -> (&'static str, Value) {
    match finish_reason {
        Some("length") => ("incomplete", json!({"reason": "max_output_tokens"})),
        Some("content_filter") => ("incomplete", json!({"reason": "content_filter"})),
        _ => ("completed", Value::Null),
    }
}

/// The Responses object around `output`. `model` is the model that answered. `usage` is added
/// once known (the spec has no `null` for it, so an in-progress snapshot has none).
fn response_object(id: &str, created_at: u64, model: &str, echo: &Echo, status: &str, output: Value) -> Value {
    let mut r = json!({
        "id": id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "error": null,
        "incomplete_details": null,
        "instructions": echo.instructions,
        "max_output_tokens": echo.max_output_tokens,
        "model": model,
        "output": output,
        "parallel_tool_calls": echo.parallel_tool_calls,
        "previous_response_id": echo.previous_response_id,
        "reasoning": if echo.reasoning.is_null() { json!({"effort": null, "summary": null}) } else { echo.reasoning.clone() },
        "store": echo.store,
        "temperature": echo.temperature,
        "text": echo.text,
        "tool_choice": echo.tool_choice,
        "tools": echo.tools,
        "top_p": echo.top_p,
        "truncation": "disabled",
        "metadata": echo.metadata,
    });
    // a string when set; the spec has no null for it
    if let Some(u) = &echo.user {
        r["user"] = json!(u);
    }
    r
}

/// A `reasoning` output item: the model's reasoning text as its summary (what clients show of
/// it: Anthropic's thinking and Gemini's thoughts are themselves summaries, and other upstreams'
/// `reasoning_content` the nearest thing). When `include` asked for
/// `reasoning.encrypted_content` and the upstream signed its thinking (Anthropic), that field
/// carries the signed blocks, so a client managing its own context (`store: false`) can send
/// the item back and the tool loop goes on; it is opaque to clients, as OpenAI's is, but not
/// encrypted.
fn reasoning_item(id: &str, text: &str, signed: Option<&[Value]>, echo: &Echo) -> Value {
    let summary = if text.is_empty() { json!([]) } else { json!([{"type": "summary_text", "text": text}]) };
    let mut item = json!({"type": "reasoning", "id": id, "summary": summary});
    if echo.encrypted_reasoning {
        item["encrypted_content"] = match signed.filter(|b| !b.is_empty()) {
            Some(b) => json!(Value::Array(b.to_vec()).to_string()),
            None => Value::Null,
        };
    }
    item
}

/// The reasoning text of an answer: its `reasoning_content`, else the text of its thinking blocks.
fn reasoning_text(reasoning: Option<&str>, blocks: Option<&[Value]>) -> String {
    match reasoning.filter(|r| !r.is_empty()) {
        Some(r) => r.to_string(),
        None => blocks.into_iter().flatten().filter_map(|b| b["thinking"].as_str()).collect::<Vec<_>>().join("\n\n"),
    }
}

fn message_item(id: &str, status: &str, text: &str) -> Value {
    json!({
        "type": "message", "id": id, "status": status, "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    })
}

fn call_item(id: &str, status: &str, call_id: &str, name: &str, arguments: &str) -> Value {
    json!({"type": "function_call", "id": id, "call_id": call_id, "name": name, "arguments": arguments, "status": status})
}

/// The finished answer: the Responses object, and the assistant's turn as a chat message (for
/// the stored conversation a follow-up continues).
pub struct Finished {
    pub response: Value,
    pub turn: Value,
}

/// The Responses object for a chat completion (its first choice: Responses has no `n`).
pub fn to_response(resp: &ChatResponse, id: &str, echo: &Echo) -> Finished {
    let choice = resp.choices.first();
    let mut output = Vec::new();
    let mut turn = json!({"role": "assistant", "content": null});
    if let Some(c) = choice {
        let blocks = c.message.thinking_blocks.as_deref().filter(|b| !b.is_empty());
        let reasoning = reasoning_text(c.message.reasoning_content.as_deref(), blocks);
        if !reasoning.is_empty() || blocks.is_some() {
            output.push(reasoning_item(&new_id("rs"), &reasoning, blocks, echo));
        }
        if let Some(b) = blocks {
            // a follow-up through `previous_response_id` sends them back (Anthropic's tool loop)
            turn["thinking_blocks"] = json!(b);
        }
        if let Some(t) = c.message.content.as_deref().filter(|t| !t.is_empty()) {
            output.push(message_item(&new_id("msg"), "completed", t));
            turn["content"] = json!(t);
        }
        if let Some(calls) = c.message.tool_calls.as_ref().filter(|c| !c.is_empty()) {
            for call in calls {
                output.push(call_item(
                    &new_id("fc"),
                    "completed",
                    &call.id,
                    &call.function.name,
                    &call.function.arguments,
                ));
            }
            turn["tool_calls"] = json!(calls);
        }
    }
    let (status, incomplete) = status_of(choice.and_then(|c| c.finish_reason.as_deref()));
    let mut response = response_object(id, resp.created, &resp.model, echo, status, json!(output));
    response["incomplete_details"] = incomplete;
    response["usage"] = usage_json(resp.usage.as_ref());
    Finished { response, turn }
}

/// One output item of a stream being built.
enum Item {
    /// Reasoning: its text as streamed (one summary part, opened with the first text), and the
    /// signed blocks an Anthropic upstream sends whole once each finishes.
    Reasoning {
        id: String,
        text: String,
        signed: Vec<Value>,
        part: bool,
    },
    Message {
        id: String,
        text: String,
    },
    Call {
        id: String,
        call_id: String,
        name: String,
        arguments: String,
        index: u32,
    },
}

impl Item {
    fn json(&self, status: &str, echo: &Echo) -> Value {
        match self {
            Item::Reasoning { id, text, signed, .. } => reasoning_item(id, text, Some(signed), echo),
            Item::Message { id, text } => message_item(id, status, text),
            Item::Call { id, call_id, name, arguments, .. } => call_item(id, status, call_id, name, arguments),
        }
    }

    fn id(&self) -> &str {
        match self {
            Item::Reasoning { id, .. } | Item::Message { id, .. } | Item::Call { id, .. } => id,
        }
    }
}

/// Turns a stream of chat chunks into Responses stream events, in the documented order:
/// `response.created`, `response.in_progress`; per output item `output_item.added`, (for a
/// message) `content_part.added`, the deltas, their `.done` events, `output_item.done`; at the
/// end `response.completed` (or `response.incomplete`) with the whole response. Every event
/// carries a `sequence_number`. Only choice 0 is carried.
pub struct StreamTranslator {
    id: String,
    echo: Echo,
    seq: u64,
    created_at: u64,
    model: String,
    started: bool,
    items: Vec<Item>,
    open: bool,
    finish: Option<String>,
    usage: Option<Usage>,
}

impl StreamTranslator {
    pub fn new(id: String, echo: Echo) -> Self {
        StreamTranslator {
            id,
            echo,
            seq: 0,
            created_at: 0,
            model: String::new(),
            started: false,
            items: Vec::new(),
            open: false,
            finish: None,
            usage: None,
        }
    }

    fn event(&mut self, kind: &str, mut data: Value, out: &mut String) {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.seq);
        self.seq += 1;
        out.push_str(&format!("event: {kind}\ndata: {data}\n\n"));
    }

    fn snapshot(&self, status: &str) -> Value {
        let output: Vec<Value> = self.items.iter().map(|i| i.json("completed", &self.echo)).collect();
        response_object(&self.id, self.created_at, &self.model, &self.echo, status, json!(output))
    }

    fn start(&mut self, created: u64, model: &str, out: &mut String) {
        if self.started {
            return;
        }
        self.started = true;
        self.created_at = created;
        self.model = model.to_string();
        let r = self.snapshot("in_progress");
        self.event("response.created", json!({"response": r}), out);
        self.event("response.in_progress", json!({"response": r}), out);
    }

    fn add(&mut self, item: Item, out: &mut String) {
        self.close(out);
        let index = self.items.len();
        let added = item.json("in_progress", &self.echo);
        let is_message = matches!(item, Item::Message { .. });
        let id = item.id().to_string();
        self.items.push(item);
        self.open = true;
        let mut added = added;
        if is_message {
            added["content"] = json!([]);
        }
        self.event("response.output_item.added", json!({"output_index": index, "item": added}), out);
        if is_message {
            let part = json!({"type": "output_text", "text": "", "annotations": [], "logprobs": []});
            self.event(
                "response.content_part.added",
                json!({"item_id": id, "output_index": index, "content_index": 0, "part": part}),
                out,
            );
        }
    }

    fn close(&mut self, out: &mut String) {
        if !self.open {
            return;
        }
        self.open = false;
        let index = self.items.len() - 1;
        let done = match &self.items[index] {
            Item::Reasoning { id, text, part, .. } => {
                if *part {
                    let (id, text) = (id.clone(), text.clone());
                    self.event(
                        "response.reasoning_summary_text.done",
                        json!({"item_id": id, "output_index": index, "summary_index": 0, "text": text}),
                        out,
                    );
                    let part = json!({"type": "summary_text", "text": text});
                    self.event(
                        "response.reasoning_summary_part.done",
                        json!({"item_id": id, "output_index": index, "summary_index": 0, "part": part}),
                        out,
                    );
                }
                self.items[index].json("completed", &self.echo)
            }
            Item::Message { id, text } => {
                let (id, text) = (id.clone(), text.clone());
                self.event(
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "text": text, "logprobs": []}),
                    out,
                );
                let part = json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []});
                self.event(
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "part": part}),
                    out,
                );
                self.items[index].json("completed", &self.echo)
            }
            Item::Call { id, name, arguments, .. } => {
                let data = json!({"item_id": id, "output_index": index, "name": name, "arguments": arguments});
                self.event("response.function_call_arguments.done", data, out);
                self.items[index].json("completed", &self.echo)
            }
        };
        self.event("response.output_item.done", json!({"output_index": index, "item": done}), out);
    }

    fn reasoning_open(&self) -> bool {
        self.open && matches!(self.items.last(), Some(Item::Reasoning { .. }))
    }

    /// Reasoning text: into the open reasoning item (opening one if none is), as summary deltas.
    fn reasoning_delta(&mut self, delta: &str, out: &mut String) {
        if !self.reasoning_open() {
            let item = Item::Reasoning { id: new_id("rs"), text: String::new(), signed: Vec::new(), part: false };
            self.add(item, out);
        }
        if delta.is_empty() {
            return;
        }
        let index = self.items.len() - 1;
        let Some(Item::Reasoning { id, text, part, .. }) = self.items.last_mut() else { return };
        text.push_str(delta);
        let (id, first) = (id.clone(), !std::mem::replace(part, true));
        if first {
            let part = json!({"type": "summary_text", "text": ""});
            self.event(
                "response.reasoning_summary_part.added",
                json!({"item_id": id, "output_index": index, "summary_index": 0, "part": part}),
                out,
            );
        }
        let data = json!({"item_id": id, "output_index": index, "summary_index": 0, "delta": delta});
        self.event("response.reasoning_summary_text.delta", data, out);
    }

    /// The closing events after the last chunk, and the finished answer (to store).
    pub fn finish(&mut self) -> (String, Finished) {
        let mut out = String::new();
        self.start(crate::limits::clock::now(), "", &mut out);
        self.close(&mut out);
        let (status, incomplete) = status_of(self.finish.as_deref());
        let mut response = self.snapshot(status);
        response["incomplete_details"] = incomplete;
        response["usage"] = usage_json(self.usage.as_ref());
        let kind = if status == "completed" { "response.completed" } else { "response.incomplete" };
        self.event(kind, json!({"response": response}), &mut out);
        let mut turn = json!({"role": "assistant", "content": null});
        let text: String = self
            .items
            .iter()
            .filter_map(|i| match i {
                Item::Message { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        if !text.is_empty() {
            turn["content"] = json!(text);
        }
        let signed: Vec<Value> = self
            .items
            .iter()
            .flat_map(|i| match i {
                Item::Reasoning { signed, .. } => signed.clone(),
                _ => Vec::new(),
            })
            .collect();
        if !signed.is_empty() {
            turn["thinking_blocks"] = json!(signed);
        }
        let calls: Vec<Value> = self
            .items
            .iter()
            .filter_map(|i| match i {
                Item::Call { call_id, name, arguments, .. } => Some(json!({
                    "id": call_id, "type": "function", "function": {"name": name, "arguments": arguments},
                })),
                _ => None,
            })
            .collect();
        if !calls.is_empty() {
            turn["tool_calls"] = json!(calls);
        }
        (out, Finished { response, turn })
    }
}

impl EventTranslator for StreamTranslator {
    /// The events for one chunk (possibly none).
    fn chunk(&mut self, chunk: &ChatChunk) -> String {
        let mut out = String::new();
        self.start(chunk.created, &chunk.model, &mut out);
        if let Some(u) = chunk.usage {
            self.usage = Some(u);
        }
        let Some(choice) = chunk.choices.iter().find(|c| c.index == 0) else { return out };
        if let Some(r) = choice.delta.reasoning_content.as_deref().filter(|r| !r.is_empty()) {
            self.reasoning_delta(r, &mut out);
        }
        for b in choice.delta.thinking_blocks.iter().flatten() {
            // a signed block arrives whole once it finishes; its text streamed already, unless
            // it had none to stream (or is redacted)
            if !self.reasoning_open() {
                self.reasoning_delta(b["thinking"].as_str().unwrap_or_default(), &mut out);
            }
            if let Some(Item::Reasoning { signed, .. }) = self.items.last_mut() {
                signed.push(b.clone());
            }
        }
        if let Some(text) = choice.delta.content.as_deref().filter(|t| !t.is_empty()) {
            if !(self.open && matches!(self.items.last(), Some(Item::Message { .. }))) {
                self.add(Item::Message { id: new_id("msg"), text: String::new() }, &mut out);
            }
            let index = self.items.len() - 1;
            let mut item_id = String::new();
            if let Some(Item::Message { id, text: all }) = self.items.last_mut() {
                all.push_str(text);
                item_id = id.clone();
            }
            let data =
                json!({"item_id": item_id, "output_index": index, "content_index": 0, "delta": text, "logprobs": []});
            self.event("response.output_text.delta", data, &mut out);
        }
        for call in choice.delta.tool_calls.iter().flatten() {
            let same = self.open && matches!(self.items.last(), Some(Item::Call { index, .. }) if *index == call.index);
            if !same {
                let f = call.function.as_ref();
                self.add(
                    Item::Call {
                        id: new_id("fc"),
                        call_id: call.id.clone().unwrap_or_else(|| new_id("call")),
                        name: f.and_then(|f| f.name.clone()).unwrap_or_default(),
                        arguments: String::new(),
                        index: call.index,
                    },
                    &mut out,
                );
            }
            let Some(args) = call.function.as_ref().and_then(|f| f.arguments.as_deref()).filter(|a| !a.is_empty())
            else {
                continue;
            };
            let index = self.items.len() - 1;
            let mut item_id = String::new();
            if let Some(Item::Call { id, arguments, .. }) = self.items.last_mut() {
                arguments.push_str(args);
                item_id = id.clone();
            }
            let data = json!({"item_id": item_id, "output_index": index, "delta": args});
            self.event("response.function_call_arguments.delta", data, &mut out);
        }
        if let Some(f) = &choice.finish_reason {
            self.finish = Some(f.clone());
        }
        out
    }

    /// An error after the stream began: the `error` event, then `response.failed` (the stream
    /// then ends).
    fn error(&mut self, e: &GatewayError) -> String {
        let mut out = String::new();
        self.start(crate::limits::clock::now(), "", &mut out);
        let body = e.body().error;
        let code = body.code.clone().unwrap_or_else(|| body.kind.clone());
        self.event("error", json!({"code": code, "message": body.message, "param": body.param}), &mut out);
        let mut failed = self.snapshot("failed");
        failed["error"] = json!({"code": code, "message": body.message});
        self.event("response.failed", json!({"response": failed}), &mut out);
        out
    }
}

#[cfg(test)]
#[path = "responses_tests.rs"]
mod tests;
