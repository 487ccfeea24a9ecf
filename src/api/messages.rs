//! Anthropic's Messages API (`POST /v1/messages`) in front of the gateway.
//!
//! Why a translation rather than a second pipeline: routing, the cache (and its namespace rules),
//! failover and the provider adapters all work on the OpenAI-shaped [`ChatRequest`]. A Messages
//! request is turned into one ([`to_chat_request`]), served like any chat request, and the answer
//! turned back ([`to_message`], or [`StreamTranslator`] event by event). This is the reverse of
//! `providers::anthropic`, which speaks Messages to Anthropic upstreams.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{ChatChunk, ChatRequest, ChatResponse, EventTranslator, GatewayError, Usage};

/// A Messages request as Anthropic's SDKs send it. Fields the gateway has no use for
/// (`service_tier`, ...) are accepted and ignored.
#[derive(Debug, Deserialize)]
pub struct MessagesRequest {
    pub model: String,
    pub max_tokens: u32,
    pub messages: Vec<InMessage>,
    #[serde(default)]
    pub system: Option<System>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Carried as [`ChatRequest::anthropic_top_k`], for the adapters whose providers take it.
    #[serde(default)]
    pub top_k: Option<u32>,
    #[serde(default)]
    pub stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub tools: Option<Vec<InTool>>,
    #[serde(default)]
    pub tool_choice: Option<InToolChoice>,
    #[serde(default)]
    pub metadata: Option<InMetadata>,
    /// Extended thinking (`{"type": "enabled", "budget_tokens": N}`): carried as
    /// [`ChatRequest::anthropic_thinking`], for the adapters that can think.
    #[serde(default)]
    pub thinking: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum System {
    Text(String),
    Blocks(Vec<InBlock>),
}

#[derive(Debug, Deserialize)]
pub struct InMessage {
    pub role: InRole,
    pub content: InContent,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum InRole {
    User,
    Assistant,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum InContent {
    Text(String),
    Blocks(Vec<InBlock>),
}

/// A content block. Kinds the gateway cannot pass on (documents, ...) are refused with a 400
/// naming them rather than silently dropped.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum InBlock {
    Text {
        text: String,
        /// Prompt caching: carried onto the OpenAI-shaped part, which the Anthropic adapter turns
        /// back into the same breakpoint (Claude Code and the Anthropic SDKs set these).
        #[serde(default)]
        cache_control: Option<Value>,
    },
    Image {
        source: ImageSource,
        #[serde(default)]
        cache_control: Option<Value>,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    ToolResult {
        tool_use_id: String,
        #[serde(default)]
        content: Option<InContent>,
        #[serde(default)]
        is_error: Option<bool>,
        #[serde(default)]
        cache_control: Option<Value>,
    },
    /// A document in a user turn: a base64 PDF becomes an OpenAI `file` part (which the
    /// Anthropic adapter turns back into this block, Gemini into inline data, and OpenAI reads as
    /// it is); a plain-text document becomes a text part.
    Document {
        source: DocumentSource,
        #[serde(default)]
        title: Option<String>,
        #[serde(default)]
        cache_control: Option<Value>,
    },
    /// An earlier answer's thinking, sent back in its assistant turn. Anthropic requires the
    /// signed blocks of a tool-use turn back when thinking is on, so they are kept, signatures
    /// intact, as the chat message's `thinking_blocks` (what the Anthropic adapter sends back).
    Thinking {
        thinking: String,
        #[serde(default)]
        signature: String,
    },
    RedactedThinking {
        data: String,
    },
    #[serde(other)]
    Unsupported,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ImageSource {
    Base64 { media_type: String, data: String },
    Url { url: String },
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DocumentSource {
    Base64 {
        media_type: String,
        data: String,
    },
    Text {
        data: String,
    },
    /// A custom-content document: the client's own chunks (text, and images as the API allows).
    Content {
        content: DocumentContent,
    },
    /// URL sources (and anything newer): refused by name. The gateway does not fetch URLs, and
    /// only Anthropic would take one as is.
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum DocumentContent {
    Text(String),
    Blocks(Vec<DocumentBlock>),
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DocumentBlock {
    Text {
        text: String,
    },
    Image {
        source: ImageSource,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
pub struct InTool {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub input_schema: Value,
    #[serde(default)]
    pub cache_control: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum InToolChoice {
    Auto {
        #[serde(default)]
        disable_parallel_tool_use: Option<bool>,
    },
    Any {
        #[serde(default)]
        disable_parallel_tool_use: Option<bool>,
    },
    Tool {
        name: String,
        #[serde(default)]
        disable_parallel_tool_use: Option<bool>,
    },
    None,
}

#[derive(Debug, Deserialize)]
pub struct InMetadata {
    #[serde(default)]
    pub user_id: Option<String>,
}

fn invalid(msg: impl std::fmt::Display, param: &str) -> GatewayError {
    GatewayError::invalid(format!("{param}: {msg}"), Some(param))
}

/// Text of blocks that may only be text (system prompts, tool results).
fn text_of(blocks: &[InBlock], param: &str) -> Result<String, GatewayError> {
    let mut out = Vec::new();
    for b in blocks {
        match b {
            InBlock::Text { text, .. } => out.push(text.as_str()),
            _ => return Err(invalid("only text blocks are supported here", param)),
        }
    }
    Ok(out.join("\n"))
}

/// Text blocks as OpenAI content parts, each keeping its `cache_control`.
fn parts_of(blocks: &[InBlock], param: &str) -> Result<Vec<Value>, GatewayError> {
    blocks
        .iter()
        .map(|b| match b {
            InBlock::Text { text, cache_control } => Ok(with_cc(json!({"type": "text", "text": text}), cache_control)),
            _ => Err(invalid("only text blocks are supported here", param)),
        })
        .collect()
}

/// An image block as a chat image part (a data URL for inline bytes).
fn image_part(source: &ImageSource) -> Value {
    let url = match source {
        ImageSource::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
        ImageSource::Url { url } => url.clone(),
    };
    json!({"type": "image_url", "image_url": {"url": url}})
}

/// A text or custom-content document as chat parts, in order: runs of text blocks joined into
/// one text part (the title heading the first), images as image parts. Citations are not
/// carried: the chunks reach every provider as plain text.
fn content_document(title: Option<&str>, blocks: &[DocumentBlock]) -> Vec<Value> {
    let mut out = Vec::new();
    let mut title = title;
    let mut text = String::new();
    let mut flush = |text: &mut String, out: &mut Vec<Value>| {
        if !text.is_empty() {
            let body = std::mem::take(text);
            let body = match title.take() {
                Some(t) => format!("{t}\n\n{body}"),
                None => body,
            };
            out.push(json!({"type": "text", "text": body}));
        }
    };
    for b in blocks {
        match b {
            DocumentBlock::Text { text: t } => {
                if !text.is_empty() {
                    text.push_str("\n\n");
                }
                text.push_str(t);
            }
            DocumentBlock::Image { source } => {
                flush(&mut text, &mut out);
                out.push(image_part(source));
            }
            DocumentBlock::Other => {}
        }
    }
    flush(&mut text, &mut out);
    out
}

/// `v` with the block's `cache_control`, if it had one.
fn with_cc(mut v: Value, cache_control: &Option<Value>) -> Value {
    if let Some(cc) = cache_control {
        v["cache_control"] = cc.clone();
    }
    v
}

/// The OpenAI-shaped request for a Messages request. Built as JSON and parsed by
/// [`ChatRequest`]'s own deserialiser, so it meets exactly the checks a chat request meets.
/// A `POST /v1/messages/count_tokens` body: a Messages request without `max_tokens` (the count
/// endpoint takes none), translated like a call so the count is of what a call would send.
pub fn count_request(bytes: &[u8]) -> Result<ChatRequest, GatewayError> {
    let mut v: Value = super::parse_json(bytes)?;
    if let Some(fields) = v.as_object_mut() {
        fields.entry("max_tokens").or_insert(json!(1));
    }
    let req: MessagesRequest = super::from_value(&v)?;
    to_chat_request(req)
}

pub fn to_chat_request(req: MessagesRequest) -> Result<ChatRequest, GatewayError> {
    if req.messages.is_empty() {
        return Err(invalid("`messages` must hold at least one message", "messages"));
    }
    if req.max_tokens == 0 {
        return Err(invalid("`max_tokens` must be at least 1", "max_tokens"));
    }
    let mut messages = Vec::new();
    match &req.system {
        Some(System::Text(t)) if !t.is_empty() => messages.push(json!({"role": "system", "content": t})),
        Some(System::Blocks(b)) if !b.is_empty() => {
            if b.iter().any(|b| matches!(b, InBlock::Text { cache_control: Some(_), .. })) {
                // a cached system prompt stays in blocks: the breakpoint is on one of them
                messages.push(json!({"role": "system", "content": parts_of(b, "system")?}))
            } else {
                messages.push(json!({"role": "system", "content": text_of(b, "system")?}))
            }
        }
        _ => {}
    }
    for (i, m) in req.messages.iter().enumerate() {
        let param = format!("messages[{i}].content");
        let blocks = match &m.content {
            InContent::Text(t) => {
                let role = if m.role == InRole::User { "user" } else { "assistant" };
                messages.push(json!({"role": role, "content": t}));
                continue;
            }
            InContent::Blocks(b) => b,
        };
        match m.role {
            InRole::User => {
                // tool results become `tool` messages, ahead of the turn's own text (Anthropic
                // puts them first in the user turn; OpenAI wants them right after the call)
                let mut parts = Vec::new();
                for b in blocks {
                    match b {
                        InBlock::ToolResult { tool_use_id, content, is_error, cache_control } => {
                            let mut text = match content {
                                None => String::new(),
                                Some(InContent::Text(t)) => t.clone(),
                                Some(InContent::Blocks(b)) => text_of(b, &param)?,
                            };
                            if *is_error == Some(true) {
                                text = format!("Error: {text}");
                            }
                            let mut msg = json!({"role": "tool", "tool_call_id": tool_use_id, "content": text});
                            if let Some(cc) = cache_control {
                                // a message-level mark: the adapter puts it on the tool_result block
                                msg["cache_control"] = cc.clone();
                            }
                            messages.push(msg);
                        }
                        InBlock::Text { text, cache_control } => {
                            parts.push(with_cc(json!({"type": "text", "text": text}), cache_control))
                        }
                        InBlock::Image { source, cache_control } => {
                            parts.push(with_cc(image_part(source), cache_control))
                        }
                        InBlock::Document { source, title, cache_control } => {
                            let mut doc = match source {
                                DocumentSource::Base64 { media_type, data } if media_type == "application/pdf" => {
                                    let mut file = json!({"file_data": format!("data:{media_type};base64,{data}")});
                                    file["filename"] = json!(title.clone().unwrap_or_else(|| "document.pdf".into()));
                                    vec![json!({"type": "file", "file": file})]
                                }
                                DocumentSource::Text { data } | DocumentSource::Content { content: DocumentContent::Text(data) } => {
                                    content_document(title.as_deref(), &[DocumentBlock::Text { text: data.clone() }])
                                }
                                DocumentSource::Content { content: DocumentContent::Blocks(blocks) } => {
                                    if blocks.iter().any(|b| matches!(b, DocumentBlock::Other)) {
                                        return Err(invalid("a custom-content document holds text and image blocks", &param));
                                    }
                                    content_document(title.as_deref(), blocks)
                                }
                                _ => {
                                    return Err(invalid(
                                        "a document must be a base64 PDF, plain text or custom content (URL sources are not supported: the gateway does not fetch URLs)",
                                        &param,
                                    ))
                                }
                            };
                            let Some(last) = doc.pop() else {
                                return Err(invalid("a document cannot be empty", &param));
                            };
                            parts.extend(doc);
                            parts.push(with_cc(last, cache_control));
                        }
                        InBlock::ToolUse { .. } | InBlock::Thinking { .. } | InBlock::RedactedThinking { .. } => {
                            return Err(invalid("a user message cannot hold tool_use or thinking blocks", &param))
                        }
                        InBlock::Unsupported => {
                            return Err(invalid(
                                "unsupported content block type (text, image, document, tool_use and tool_result are)",
                                &param,
                            ))
                        }
                    }
                }
                if parts.iter().all(|p| p["type"] == "text" && p.get("cache_control").is_none()) && !parts.is_empty() {
                    // text only: a plain string, so the cache key and upstreams see what an
                    // OpenAI client would have sent
                    let text: Vec<&str> = parts.iter().filter_map(|p| p["text"].as_str()).collect();
                    messages.push(json!({"role": "user", "content": text.join("\n")}));
                } else if !parts.is_empty() {
                    messages.push(json!({"role": "user", "content": parts}));
                }
            }
            InRole::Assistant => {
                let mut text = Vec::new();
                let mut calls = Vec::new();
                let mut thinking = Vec::new();
                for b in blocks {
                    match b {
                        InBlock::Text { text: t, .. } => text.push(t.as_str()),
                        InBlock::ToolUse { id, name, input } => calls.push(json!({
                            "id": id, "type": "function",
                            "function": {"name": name, "arguments": input.to_string()},
                        })),
                        InBlock::Thinking { thinking: t, signature } => {
                            thinking.push(json!({"type": "thinking", "thinking": t, "signature": signature}))
                        }
                        InBlock::RedactedThinking { data } => {
                            thinking.push(json!({"type": "redacted_thinking", "data": data}))
                        }
                        // other kinds an assistant turn may echo (server tool results, ...) are the
                        // model's own record; nothing downstream reads them
                        InBlock::Unsupported => {}
                        _ => {
                            return Err(invalid(
                                "an assistant message holds only text, tool_use and thinking blocks",
                                &param,
                            ))
                        }
                    }
                }
                let mut msg = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { json!(text.join("")) }});
                if !calls.is_empty() {
                    msg["tool_calls"] = json!(calls);
                }
                if !thinking.is_empty() {
                    msg["thinking_blocks"] = json!(thinking);
                }
                messages.push(msg);
            }
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), json!(req.model));
    out.insert("messages".into(), json!(messages));
    out.insert("max_tokens".into(), json!(req.max_tokens));
    if let Some(t) = req.temperature {
        out.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        out.insert("top_p".into(), json!(p));
    }
    if let Some(s) = req.stop_sequences.filter(|s| !s.is_empty()) {
        out.insert("stop".into(), json!(s));
    }
    if req.stream == Some(true) {
        out.insert("stream".into(), json!(true));
        // message_delta carries the usage, so ask every upstream for it
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if let Some(tools) = req.tools.filter(|t| !t.is_empty()) {
        let tools: Vec<Value> = tools
            .into_iter()
            .map(|t| {
                let mut f = json!({"name": t.name, "parameters": t.input_schema});
                if let Some(d) = t.description {
                    f["description"] = json!(d);
                }
                with_cc(json!({"type": "function", "function": f}), &t.cache_control)
            })
            .collect();
        out.insert("tools".into(), json!(tools));
    }
    if let Some(choice) = req.tool_choice {
        let (choice, no_parallel) = match choice {
            InToolChoice::Auto { disable_parallel_tool_use } => (json!("auto"), disable_parallel_tool_use),
            InToolChoice::Any { disable_parallel_tool_use } => (json!("required"), disable_parallel_tool_use),
            InToolChoice::Tool { name, disable_parallel_tool_use } => {
                (json!({"type": "function", "function": {"name": name}}), disable_parallel_tool_use)
            }
            InToolChoice::None => (json!("none"), None),
        };
        out.insert("tool_choice".into(), choice);
        if no_parallel == Some(true) {
            out.insert("parallel_tool_calls".into(), json!(false));
        }
    }
    if let Some(user) = req.metadata.and_then(|m| m.user_id) {
        out.insert("user".into(), json!(user));
    }
    let mut chat: ChatRequest = serde_json::from_value(Value::Object(out))
        .map_err(|e| GatewayError::invalid(format!("invalid request: {e}"), None))?;
    // `{"type": "disabled"}` is the same as no thinking, and says so to no upstream
    chat.anthropic_thinking = req.thinking.filter(|t| t.is_object() && t["type"] != "disabled");
    chat.anthropic_top_k = req.top_k;
    Ok(chat)
}

/// Anthropic's `stop_reason` for an OpenAI `finish_reason`.
pub fn stop_reason(finish_reason: Option<&str>) -> &'static str {
    match finish_reason {
        Some("length") => "max_tokens",
        Some("tool_calls") | Some("function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// A Messages id from a chat completion id (same uniqueness, Anthropic's prefix).
fn message_id(id: &str) -> String {
    format!("msg_{}", id.strip_prefix("chatcmpl-").unwrap_or(id))
}

fn tool_input(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        // Anthropic's `input` is always an object; keep what the model wrote rather than drop it
        _ => json!({"arguments": arguments}),
    }
}

fn usage_json(u: Option<&Usage>) -> Value {
    let u = u.copied().unwrap_or_default();
    json!({"input_tokens": u.prompt_tokens, "output_tokens": u.completion_tokens})
}

/// The thinking blocks that open an answer: an Anthropic upstream's own, signed (a client sends
/// them back on its next turn, and Anthropic checks the signatures); else the reasoning another
/// upstream returned (Gemini's thoughts, `reasoning_content` of an OpenAI-compatible one) as one
/// unsigned block, which the Anthropic adapter leaves out if it comes back: no signature of
/// ours would pass Anthropic's check.
fn thinking_content(blocks: Option<&[Value]>, reasoning: Option<&str>) -> Vec<Value> {
    match (blocks.filter(|b| !b.is_empty()), reasoning.filter(|r| !r.is_empty())) {
        (Some(b), _) => b.to_vec(),
        (None, Some(r)) => vec![json!({"type": "thinking", "thinking": r, "signature": ""})],
        (None, None) => Vec::new(),
    }
}

/// The Messages response for a chat completion (its first choice: Messages has no `n`).
pub fn to_message(resp: &ChatResponse) -> Value {
    let mut content = Vec::new();
    let choice = resp.choices.first();
    if let Some(c) = choice {
        content.extend(thinking_content(c.message.thinking_blocks.as_deref(), c.message.reasoning_content.as_deref()));
        if let Some(t) = c.message.content.as_deref().filter(|t| !t.is_empty()) {
            content.push(json!({"type": "text", "text": t}));
        }
        for call in c.message.tool_calls.iter().flatten() {
            content.push(json!({
                "type": "tool_use", "id": call.id, "name": call.function.name,
                "input": tool_input(&call.function.arguments),
            }));
        }
    }
    json!({
        "id": message_id(&resp.id),
        "type": "message",
        "role": "assistant",
        "model": resp.model,
        "content": content,
        "stop_reason": stop_reason(choice.and_then(|c| c.finish_reason.as_deref())),
        "stop_sequence": null,
        "usage": usage_json(resp.usage.as_ref()),
    })
}

/// One server-sent event in Anthropic's framing (`event:` names the type).
pub fn sse(event: &str, data: &Value) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

#[derive(PartialEq)]
enum Open {
    None,
    Thinking,
    Text,
    Tool(u32),
}

/// Turns a stream of chat chunks into Messages stream events: `message_start`, `ping`, then per
/// content block `content_block_start` / `_delta` / `_stop`, and at the end `message_delta`
/// (stop reason and usage) and `message_stop`. Only choice 0 is carried.
pub struct StreamTranslator {
    started: bool,
    open: Open,
    index: i64,
    finish: Option<String>,
    usage: Option<Usage>,
}

impl Default for StreamTranslator {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamTranslator {
    pub fn new() -> Self {
        StreamTranslator { started: false, open: Open::None, index: -1, finish: None, usage: None }
    }

    fn start(&mut self, chunk: &ChatChunk, out: &mut String) {
        if self.started {
            return;
        }
        self.started = true;
        let message = json!({
            "id": message_id(&chunk.id), "type": "message", "role": "assistant", "model": chunk.model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        });
        out.push_str(&sse("message_start", &json!({"type": "message_start", "message": message})));
        out.push_str(&sse("ping", &json!({"type": "ping"})));
    }

    fn close(&mut self, out: &mut String) {
        if self.open != Open::None {
            out.push_str(&sse("content_block_stop", &json!({"type": "content_block_stop", "index": self.index})));
            self.open = Open::None;
        }
    }

    fn open_block(&mut self, block: Value, kind: Open, out: &mut String) {
        self.close(out);
        self.index += 1;
        self.open = kind;
        out.push_str(&sse(
            "content_block_start",
            &json!({"type": "content_block_start", "index": self.index, "content_block": block}),
        ));
    }

    /// Opens a thinking block unless one is open (its text and signature follow as deltas).
    fn open_thinking(&mut self, out: &mut String) {
        if self.open != Open::Thinking {
            self.open_block(json!({"type": "thinking", "thinking": "", "signature": ""}), Open::Thinking, out);
        }
    }

    fn delta(&self, delta: Value, out: &mut String) {
        out.push_str(&sse(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": self.index, "delta": delta}),
        ));
    }

    /// The closing events after the last chunk.
    pub fn finish(&mut self) -> String {
        let mut out = String::new();
        if !self.started {
            // an upstream that sent nothing at all still gets a well-formed message
            let empty = ChatChunk {
                id: format!("msg_{}", uuid::Uuid::new_v4().simple()),
                object: "chat.completion.chunk".into(),
                created: 0,
                model: String::new(),
                choices: Vec::new(),
                usage: None,
            };
            self.start(&empty, &mut out);
        }
        self.close(&mut out);
        out.push_str(&sse(
            "message_delta",
            &json!({
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason(self.finish.as_deref()), "stop_sequence": null},
                "usage": usage_json(self.usage.as_ref()),
            }),
        ));
        out.push_str(&sse("message_stop", &json!({"type": "message_stop"})));
        out
    }
}

impl EventTranslator for StreamTranslator {
    /// The events for one chunk (possibly none).
    fn chunk(&mut self, chunk: &ChatChunk) -> String {
        let mut out = String::new();
        self.start(chunk, &mut out);
        if let Some(u) = chunk.usage {
            self.usage = Some(u);
        }
        let Some(choice) = chunk.choices.iter().find(|c| c.index == 0) else { return out };
        // thinking: its text as it streams, then (from an Anthropic upstream) the whole signed
        // block, whose signature closes the block as Anthropic's own `signature_delta` does
        if let Some(r) = choice.delta.reasoning_content.as_deref().filter(|r| !r.is_empty()) {
            self.open_thinking(&mut out);
            self.delta(json!({"type": "thinking_delta", "thinking": r}), &mut out);
        }
        for b in choice.delta.thinking_blocks.iter().flatten() {
            if b["type"] == "thinking" {
                if self.open != Open::Thinking {
                    // a signed block whose text did not stream first
                    self.open_thinking(&mut out);
                    if let Some(t) = b["thinking"].as_str().filter(|t| !t.is_empty()) {
                        self.delta(json!({"type": "thinking_delta", "thinking": t}), &mut out);
                    }
                }
                let signature = b["signature"].as_str().unwrap_or_default();
                self.delta(json!({"type": "signature_delta", "signature": signature}), &mut out);
                self.close(&mut out);
            } else {
                // redacted thinking arrives whole, in its start event
                self.open_block(b.clone(), Open::Thinking, &mut out);
                self.close(&mut out);
            }
        }
        if let Some(text) = choice.delta.content.as_deref().filter(|t| !t.is_empty()) {
            if self.open != Open::Text {
                self.open_block(json!({"type": "text", "text": ""}), Open::Text, &mut out);
            }
            self.delta(json!({"type": "text_delta", "text": text}), &mut out);
        }
        for call in choice.delta.tool_calls.iter().flatten() {
            if self.open != Open::Tool(call.index) {
                let f = call.function.as_ref();
                let block = json!({
                    "type": "tool_use",
                    "id": call.id.clone().unwrap_or_else(|| format!("toolu_{}", call.index)),
                    "name": f.and_then(|f| f.name.clone()).unwrap_or_default(),
                    "input": {},
                });
                self.open_block(block, Open::Tool(call.index), &mut out);
            }
            if let Some(args) = call.function.as_ref().and_then(|f| f.arguments.as_deref()).filter(|a| !a.is_empty()) {
                self.delta(json!({"type": "input_json_delta", "partial_json": args}), &mut out);
            }
        }
        if let Some(f) = &choice.finish_reason {
            self.finish = Some(f.clone());
        }
        out
    }

    /// An error after the stream began: Anthropic's `error` event (the stream then ends).
    fn error(&mut self, e: &GatewayError) -> String {
        sse("error", &e.anthropic_body())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(v: Value) -> ChatRequest {
        to_chat_request(serde_json::from_value(v).unwrap()).unwrap()
    }

    #[test]
    fn system_tools_and_tool_results_translate() {
        let req = parse(json!({
            "model": "auto", "max_tokens": 100,
            "system": [{"type": "text", "text": "Be brief."}],
            "tools": [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": [{"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                    {"type": "text", "text": "Thanks"}]},
            ],
        }));
        let v = serde_json::to_value(&req).unwrap();
        assert_eq!(v["messages"][0], json!({"role": "system", "content": "Be brief."}));
        assert_eq!(v["messages"][2]["tool_calls"][0]["function"]["arguments"], "{\"city\":\"Paris\"}");
        assert_eq!(v["messages"][3]["role"], "tool");
        assert_eq!(v["messages"][3]["tool_call_id"], "toolu_1");
        assert_eq!(v["messages"][4]["content"], "Thanks");
        assert_eq!(v["tool_choice"], "required");
        assert_eq!(v["parallel_tool_calls"], false);
        assert_eq!(v["tools"][0]["function"]["parameters"], json!({"type": "object"}));
        assert_eq!(v["max_tokens"], 100);
    }

    /// A marked block keeps its mark (and a marked text-only turn stays in parts, where the mark
    /// can ride); an unmarked text-only turn is a plain string, the cache key an OpenAI client
    /// gets. Where each mark lands at an Anthropic upstream: `providers::anthropic_tests`.
    #[test]
    fn cache_control_survives_the_translation() {
        let eph = json!({"type": "ephemeral"});
        let req = parse(json!({"model": "auto", "max_tokens": 10,
            "system": [{"type": "text", "text": "Context.", "cache_control": eph}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": eph}]}]}));
        let v = serde_json::to_value(&req).unwrap();
        assert_eq!(v["messages"][0]["content"][0]["cache_control"], eph);
        assert_eq!(v["messages"][1]["content"][0], json!({"type": "text", "text": "hi", "cache_control": eph}));
        let plain = parse(json!({"model": "auto", "max_tokens": 10,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}));
        assert_eq!(serde_json::to_value(&plain).unwrap()["messages"][0]["content"], "hi");
    }

    /// `thinking` is carried beside the wire fields (never serialised for an OpenAI-compatible
    /// upstream); an assistant turn's signed blocks come back as its `thinking_blocks`, in order.
    #[test]
    fn thinking_and_an_earlier_turns_thinking_blocks_translate() {
        let thinking = json!({"type": "enabled", "budget_tokens": 2048});
        let req = parse(json!({
            "model": "auto", "max_tokens": 4096, "thinking": thinking,
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "Use the tool.", "signature": "sig-1"},
                    {"type": "redacted_thinking", "data": "opaque"},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"}]},
            ],
        }));
        assert_eq!(req.anthropic_thinking, Some(thinking));
        let v = serde_json::to_value(&req).unwrap();
        assert!(v.get("thinking").is_none() && v.get("anthropic_thinking").is_none(), "{v}");
        assert_eq!(
            v["messages"][1]["thinking_blocks"],
            json!([{"type": "thinking", "thinking": "Use the tool.", "signature": "sig-1"},
                   {"type": "redacted_thinking", "data": "opaque"}])
        );
        assert_eq!(v["messages"][1]["tool_calls"][0]["id"], "toolu_1");

        let off = parse(json!({"model": "auto", "max_tokens": 10, "thinking": {"type": "disabled"},
            "messages": [{"role": "user", "content": "hi"}]}));
        assert_eq!(off.anthropic_thinking, None);
        // top_k travels the same way: beside the wire fields, for Anthropic and Gemini only
        let top_k = parse(json!({"model": "auto", "max_tokens": 10, "top_k": 7,
            "messages": [{"role": "user", "content": "hi"}]}));
        assert_eq!((top_k.anthropic_top_k, top_k.top_k()), (Some(7), Some(7)));
        assert!(serde_json::to_value(&top_k).unwrap().get("top_k").is_none());
        let in_user_turn = json!({"model": "auto", "max_tokens": 10, "messages": [{"role": "user",
            "content": [{"type": "thinking", "thinking": "x", "signature": "s"}]}]});
        let e = to_chat_request(serde_json::from_value(in_user_turn).unwrap()).unwrap_err();
        assert!(e.to_string().contains("messages[0].content"), "{e}");
    }

    /// An Anthropic upstream's signed blocks open the answer as they came; another upstream's
    /// reasoning becomes one unsigned block.
    #[test]
    fn an_answers_thinking_opens_its_content() {
        let answer = |message: Value| {
            serde_json::from_value::<ChatResponse>(json!({"id": "chatcmpl-1", "object": "chat.completion",
                "created": 1, "model": "m", "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}))
            .unwrap()
        };
        let signed = to_message(&answer(json!({"role": "assistant", "content": "Hi.",
            "reasoning_content": "Greet back.",
            "thinking_blocks": [{"type": "thinking", "thinking": "Greet back.", "signature": "sig-9"}]})));
        assert_eq!(
            signed["content"],
            json!([{"type": "thinking", "thinking": "Greet back.", "signature": "sig-9"}, {"type": "text", "text": "Hi."}])
        );
        let unsigned =
            to_message(&answer(json!({"role": "assistant", "content": "Hi.", "reasoning_content": "Greet back."})));
        assert_eq!(unsigned["content"][0], json!({"type": "thinking", "thinking": "Greet back.", "signature": ""}));
        let none = to_message(&answer(json!({"role": "assistant", "content": "Hi."})));
        assert_eq!(none["content"], json!([{"type": "text", "text": "Hi."}]));
    }

    /// Streamed thinking: a thinking block whose text arrives as `thinking_delta`s and whose
    /// signature (from the upstream's whole signed block) closes it, as Anthropic streams it.
    #[test]
    fn streamed_thinking_becomes_a_thinking_block_with_its_signature() {
        let chunk = |delta: Value| {
            serde_json::from_value::<ChatChunk>(json!({"id": "chatcmpl-1", "object": "chat.completion.chunk",
                "created": 1, "model": "m", "choices": [{"index": 0, "delta": delta}]}))
            .unwrap()
        };
        let mut t = StreamTranslator::new();
        let mut all = String::new();
        all += &t.chunk(&chunk(json!({"role": "assistant", "reasoning_content": "Greet "})));
        all += &t.chunk(&chunk(json!({"reasoning_content": "back."})));
        all += &t.chunk(&chunk(
            json!({"thinking_blocks": [{"type": "thinking", "thinking": "Greet back.", "signature": "sig-9"}]}),
        ));
        all += &t.chunk(&chunk(json!({"thinking_blocks": [{"type": "redacted_thinking", "data": "opaque"}]})));
        all += &t.chunk(&chunk(json!({"content": "Hi."})));
        all += &t.finish();
        let events: Vec<(String, Value)> = all
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let mut lines = e.lines();
                let name = lines.next().unwrap().trim_start_matches("event: ").to_string();
                (name, serde_json::from_str(lines.next().unwrap().trim_start_matches("data: ")).unwrap())
            })
            .collect();
        let shapes: Vec<String> = events
            .iter()
            .filter(|(n, _)| n.starts_with("content_block"))
            .map(|(n, d)| {
                let kind = d["content_block"]["type"].as_str().or(d["delta"]["type"].as_str()).unwrap_or("");
                format!("{n}:{}:{kind}", d["index"])
            })
            .collect();
        assert_eq!(
            shapes,
            [
                "content_block_start:0:thinking",
                "content_block_delta:0:thinking_delta",
                "content_block_delta:0:thinking_delta",
                "content_block_delta:0:signature_delta",
                "content_block_stop:0:",
                "content_block_start:1:redacted_thinking",
                "content_block_stop:1:",
                "content_block_start:2:text",
                "content_block_delta:2:text_delta",
                "content_block_stop:2:",
            ]
        );
        assert!(all.contains(r#""signature":"sig-9""#) && all.contains(r#""data":"opaque""#));
    }

    /// A PDF document becomes an OpenAI `file` part (its title the filename, its cache mark kept),
    /// a text document a text part; a URL source is refused by name.
    #[test]
    fn documents_become_file_or_text_parts() {
        let eph = json!({"type": "ephemeral"});
        let req = parse(json!({"model": "auto", "max_tokens": 10, "messages": [{"role": "user", "content": [
            {"type": "document", "title": "report.pdf", "cache_control": eph,
             "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}},
            {"type": "document", "title": "Notes", "source": {"type": "text", "media_type": "text/plain", "data": "Rivers flood."}},
            {"type": "text", "text": "Summarise both."}]}]}));
        let v = serde_json::to_value(&req).unwrap();
        let parts = &v["messages"][0]["content"];
        assert_eq!(
            parts[0],
            json!({"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0x", "filename": "report.pdf"},
                   "cache_control": eph})
        );
        assert_eq!(parts[1], json!({"type": "text", "text": "Notes\n\nRivers flood."}));
        assert_eq!(parts[2], json!({"type": "text", "text": "Summarise both."}));
        let url = json!({"model": "auto", "max_tokens": 10, "messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}]}]});
        let e = to_chat_request(serde_json::from_value(url).unwrap()).unwrap_err();
        assert!(e.to_string().contains("messages[0].content") && e.to_string().contains("base64 PDF"), "{e}");
    }

    /// A custom-content document: its text chunks in order, joined, under the title; an image
    /// chunk in its place; the breakpoint on the last part; anything else a 400.
    #[test]
    fn a_custom_content_document_becomes_its_chunks() {
        let eph = json!({"type": "ephemeral"});
        let doc = |content: Value| {
            let r = json!({"model": "auto", "max_tokens": 10, "messages": [{"role": "user", "content": [
                {"type": "document", "title": "Manual", "source": {"type": "content", "content": content}, "cache_control": eph},
                {"type": "text", "text": "Summarise."}]}]});
            to_chat_request(serde_json::from_value(r).unwrap())
        };
        let r = doc(json!([{"type": "text", "text": "Step one."}, {"type": "text", "text": "Step two."},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            {"type": "text", "text": "Step three."}]))
        .unwrap();
        let parts = serde_json::to_value(&r.messages[0].content).unwrap();
        assert_eq!(parts[0], json!({"type": "text", "text": "Manual\n\nStep one.\n\nStep two."}));
        assert_eq!(parts[1], json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}));
        assert_eq!(parts[2], json!({"type": "text", "text": "Step three.", "cache_control": eph}));
        assert_eq!(parts[3], json!({"type": "text", "text": "Summarise."}));
        let r = doc(json!("All of it.")).unwrap();
        let parts = serde_json::to_value(&r.messages[0].content).unwrap();
        assert_eq!(parts[0], json!({"type": "text", "text": "Manual\n\nAll of it.", "cache_control": eph}));
        let e = doc(json!([{"type": "search_result", "text": "x"}])).unwrap_err();
        assert!(e.to_string().contains("text and image blocks"), "{e}");
        assert!(doc(json!([])).unwrap_err().to_string().contains("empty"));
    }

    #[test]
    fn bad_requests_are_refused_with_the_field_named() {
        let bad = |v: Value| match serde_json::from_value::<MessagesRequest>(v) {
            Ok(r) => to_chat_request(r).unwrap_err().to_string(),
            Err(e) => e.to_string(),
        };
        assert!(bad(json!({"model": "auto", "max_tokens": 10, "messages": []})).contains("messages"));
        assert!(bad(json!({"model": "auto", "messages": [{"role": "user", "content": "x"}]})).contains("max_tokens"));
        let unknown = json!({"model": "auto", "max_tokens": 10,
            "messages": [{"role": "user", "content": [{"type": "search_result", "source": "x"}]}]});
        assert!(bad(unknown).contains("messages[0].content"));
    }

    #[test]
    fn a_stream_becomes_anthropic_events_in_order() {
        let chunk = |v: Value| serde_json::from_value::<ChatChunk>(v).unwrap();
        let base = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"});
        let with = |choices: Value, usage: Value| {
            let mut c = base.clone();
            c["choices"] = choices;
            c["usage"] = usage;
            chunk(c)
        };
        let mut t = StreamTranslator::new();
        let mut all = String::new();
        all += &t.chunk(&with(json!([{"index": 0, "delta": {"role": "assistant", "content": "Hi"}}]), Value::Null));
        all += &t.chunk(&with(
            json!([{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                "function": {"name": "f", "arguments": "{\"a\":"}}]}}]),
            Value::Null,
        ));
        all += &t.chunk(&with(
            json!([{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}, "finish_reason": "tool_calls"}]),
            Value::Null,
        ));
        all += &t.chunk(&with(json!([]), json!({"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12})));
        all += &t.finish();
        let events: Vec<&str> = all.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
        assert_eq!(
            events,
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert!(all.contains(r#""stop_reason":"tool_use""#));
        assert!(all.contains(r#""output_tokens":7"#));
        assert!(all.contains(r#""partial_json":"1}""#));
    }
}
