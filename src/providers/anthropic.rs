//! The Anthropic Messages API adapter (`POST {base_url}/v1/messages`).
//!
//! `base_url` is what Anthropic's own SDKs use, `https://api.anthropic.com`, without `/v1`: as
//! for the OpenAI kind, `base_url` is the SDK's base URL and the adapter appends the SDK's path.
//! A `base_url` that does end in `/v1` is accepted too (the suffix is not doubled).
//! `api_version` is the `anthropic-version` header (default `2023-06-01`).
//!
//! Translation, OpenAI → Anthropic: system and developer messages (wherever they appear) are
//! lifted into the top-level `system`; consecutive messages of one role are merged, so tool
//! results (`tool_result` blocks) and the user text after them share one user turn; `max_tokens`
//! is always sent; `temperature` is clamped to Anthropic's 0..1. Back: text blocks are joined,
//! `tool_use` blocks become `tool_calls`, thinking blocks are dropped. Streams are translated
//! event by event; the role chunk waits for the first content block so that an `error` event
//! right after `message_start` (typically `overloaded_error`) still lets the dispatcher fail over.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::sse::SseEvent;
use super::wire::{arguments_object, decode_multi, parse_data_url, unix_now, ChunkIds};
use super::{ChunkStream, ProviderError, Upstream};
use crate::api::{
    AssistantMessage, ChatChunk, ChatRequest, ChatResponse, Choice, Content, ContentPart, Delta, FunctionCall,
    FunctionCallDelta, Role, ToolCall, ToolCallDelta, Usage,
};

pub const DEFAULT_VERSION: &str = "2023-06-01";

pub struct Anthropic {
    pub up: Upstream,
    url: String,
}

impl Anthropic {
    pub fn new(up: Upstream) -> Self {
        let base = up.base_url.strip_suffix("/v1").unwrap_or(&up.base_url);
        let url = format!("{base}/v1/messages");
        Anthropic { up, url }
    }

    fn request(&self, body: &MessagesRequest) -> reqwest::RequestBuilder {
        let version = self.up.config.api_version.as_deref().unwrap_or(DEFAULT_VERSION);
        let mut rb = self.up.http.post(&self.url).header("anthropic-version", version).json(body);
        if let Some(k) = &self.up.key {
            rb = rb.header("x-api-key", k.expose());
        }
        rb
    }

    pub async fn chat(&self, req: &ChatRequest, model: &str) -> Result<ChatResponse, ProviderError> {
        let body = to_anthropic(req, model, self.up.config.default_max_tokens, false)?;
        let resp = self.up.send(self.request(&body), false, map_error).await?;
        let bytes = self.up.body(resp).await?;
        let parsed: MessagesResponse =
            serde_json::from_slice(&bytes).map_err(|e| ProviderError::Decode(format!("anthropic response: {e}")))?;
        Ok(from_anthropic(parsed, model))
    }

    pub async fn chat_stream(&self, req: &ChatRequest, model: &str) -> Result<ChunkStream, ProviderError> {
        let body = to_anthropic(req, model, self.up.config.default_max_tokens, true)?;
        let resp = self.up.send(self.request(&body), true, map_error).await?;
        let deadline = tokio::time::Instant::now() + self.up.total_timeout;
        let mut state = StreamState::new(model);
        let up = self.up.clone();
        Ok(decode_multi(resp, deadline, move |ev| {
            state.on_event(ev).map_err(|e| match e {
                ProviderError::Stream(m) => ProviderError::Stream(up.scrub(&m)),
                other => other,
            })
        }))
    }
}

/// Anthropic's error body, `{"type":"error","error":{"type":"…","message":"…"}}`, as a
/// [`ProviderError::Status`] whose message keeps Anthropic's error type.
pub fn map_error(status: u16, retry_after: Option<std::time::Duration>, body: &str) -> ProviderError {
    let message = match serde_json::from_str::<ErrorBody>(body) {
        Ok(ErrorBody { error }) => format!("{}: {}", error.kind, error.message),
        Err(_) => body.chars().take(300).collect(),
    };
    ProviderError::Status { status, message, retry_after }
}

// ---- request ----------------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MessagesRequest {
    pub model: String,
    pub max_tokens: u32,
    pub messages: Vec<AMessage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<ATool>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<AToolChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<AMetadata>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AMessage {
    pub role: &'static str,
    pub content: Vec<Block>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    Text { text: String },
    Image { source: ImageSource },
    ToolUse { id: String, name: String, input: Value },
    ToolResult { tool_use_id: String, content: Vec<Block> },
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ImageSource {
    Base64 { media_type: String, data: String },
    Url { url: String },
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ATool {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub input_schema: Value,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AToolChoice {
    Auto {
        #[serde(skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    Any {
        #[serde(skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    Tool {
        name: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    None,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AMetadata {
    pub user_id: String,
}

/// The Anthropic request for `req`. Fails (as a 400) only for what Anthropic cannot express:
/// `n > 1`, audio or file parts, non-object tool arguments, the legacy `function` role.
pub fn to_anthropic(
    req: &ChatRequest,
    model: &str,
    default_max_tokens: u32,
    stream: bool,
) -> Result<MessagesRequest, ProviderError> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(ProviderError::unsupported("anthropic: `n` greater than 1 is not supported by the Messages API"));
    }
    let mut system: Vec<String> = Vec::new();
    let mut messages: Vec<AMessage> = Vec::with_capacity(req.messages.len());
    for m in &req.messages {
        let (role, blocks) = match m.role {
            Role::System | Role::Developer => {
                let text = m.text_content();
                if !text.is_empty() {
                    system.push(text);
                }
                continue;
            }
            Role::User => ("user", content_blocks(m.content.as_ref())?),
            Role::Assistant => {
                let mut blocks = content_blocks(m.content.as_ref())?;
                for call in m.tool_calls.iter().flatten() {
                    blocks.push(Block::ToolUse {
                        id: call.id.clone(),
                        name: call.function.name.clone(),
                        input: arguments_object(&call.function.arguments)?,
                    });
                }
                ("assistant", blocks)
            }
            Role::Tool => {
                let id = m.tool_call_id.clone().unwrap_or_default();
                ("user", vec![Block::ToolResult { tool_use_id: id, content: content_blocks(m.content.as_ref())? }])
            }
            Role::Function => {
                return Err(ProviderError::unsupported(
                    "anthropic: the legacy `function` role is not supported; use `tool` messages",
                ))
            }
        };
        if blocks.is_empty() {
            continue; // Anthropic rejects empty content; an empty turn carries nothing anyway
        }
        match messages.last_mut() {
            Some(last) if last.role == role => last.content.extend(blocks),
            _ => messages.push(AMessage { role, content: blocks }),
        }
    }

    let tools: Option<Vec<ATool>> = req.tools.as_ref().filter(|t| !t.is_empty()).map(|tools| {
        tools
            .iter()
            .filter(|t| t.kind == "function")
            .map(|t| ATool {
                name: t.function.name.clone(),
                description: t.function.description.clone(),
                input_schema: t
                    .function
                    .parameters
                    .clone()
                    .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}})),
            })
            .collect()
    });
    let no_parallel = (req.extra.get("parallel_tool_calls") == Some(&Value::Bool(false))).then_some(true);
    let tool_choice = if tools.is_some() { tool_choice(req.tool_choice.as_ref(), no_parallel) } else { None };

    Ok(MessagesRequest {
        model: model.to_string(),
        max_tokens: req.max_output_tokens().unwrap_or(default_max_tokens),
        messages,
        system: (!system.is_empty()).then(|| system.join("\n\n")),
        temperature: req.temperature.map(|t| t.clamp(0.0, 1.0)),
        top_p: req.top_p,
        stop_sequences: req.stop.as_ref().map(|s| s.to_vec()).filter(|v| !v.is_empty()),
        stream: stream.then_some(true),
        tools,
        tool_choice,
        metadata: req.user.clone().map(|user_id| AMetadata { user_id }),
    })
}

/// `auto | none | required | {"type":"function","function":{"name"}}` → Anthropic's tool_choice.
fn tool_choice(choice: Option<&Value>, no_parallel: Option<bool>) -> Option<AToolChoice> {
    let auto = AToolChoice::Auto { disable_parallel_tool_use: no_parallel };
    match choice {
        None => no_parallel.map(|_| auto),
        Some(Value::String(s)) => match s.as_str() {
            "none" => Some(AToolChoice::None),
            "required" | "any" => Some(AToolChoice::Any { disable_parallel_tool_use: no_parallel }),
            _ => Some(auto),
        },
        Some(v) => match v.pointer("/function/name").and_then(Value::as_str) {
            Some(name) => Some(AToolChoice::Tool { name: name.to_string(), disable_parallel_tool_use: no_parallel }),
            None => Some(auto),
        },
    }
}

fn content_blocks(content: Option<&Content>) -> Result<Vec<Block>, ProviderError> {
    match content {
        None => Ok(Vec::new()),
        Some(Content::Text(t)) if t.is_empty() => Ok(Vec::new()),
        Some(Content::Text(t)) => Ok(vec![Block::Text { text: t.clone() }]),
        Some(Content::Parts(parts)) => {
            let mut out = Vec::with_capacity(parts.len());
            for p in parts {
                match p {
                    ContentPart::Text { text } if text.is_empty() => {}
                    ContentPart::Text { text } => out.push(Block::Text { text: text.clone() }),
                    ContentPart::ImageUrl { image_url } => {
                        let source = match parse_data_url(&image_url.url) {
                            Some((media_type, data)) => {
                                ImageSource::Base64 { media_type: media_type.to_string(), data: data.to_string() }
                            }
                            None => ImageSource::Url { url: image_url.url.clone() },
                        };
                        out.push(Block::Image { source });
                    }
                    ContentPart::InputAudio { .. } | ContentPart::File { .. } | ContentPart::Unknown => {
                        return Err(ProviderError::unsupported(
                            "anthropic: only text and image content parts are supported",
                        ))
                    }
                }
            }
            Ok(out)
        }
    }
}

// ---- response ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize)]
pub struct MessagesResponse {
    pub id: String,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub content: Vec<RespBlock>,
    #[serde(default)]
    pub stop_reason: Option<String>,
    #[serde(default)]
    pub usage: AUsage,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RespBlock {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    /// thinking, redacted_thinking, server tool blocks: not part of an OpenAI answer
    #[serde(other)]
    Other,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct AUsage {
    #[serde(default)]
    pub input_tokens: Option<u64>,
    #[serde(default)]
    pub output_tokens: Option<u64>,
    #[serde(default)]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    pub cache_read_input_tokens: Option<u64>,
}

impl AUsage {
    /// OpenAI's `prompt_tokens` counts cached input too; Anthropic reports it separately.
    fn prompt_tokens(&self) -> Option<u64> {
        let parts = [self.input_tokens, self.cache_creation_input_tokens, self.cache_read_input_tokens];
        parts.iter().any(Option::is_some).then(|| parts.iter().flatten().fold(0u64, |a, b| a.saturating_add(*b)))
    }
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, Deserialize)]
struct ErrorDetail {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    message: String,
}

/// Anthropic's `stop_reason` as an OpenAI `finish_reason`.
pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop", // end_turn, stop_sequence, pause_turn
    }
}

fn serialise_input(input: &Value) -> String {
    match input {
        Value::Null => "{}".to_string(),
        v => serde_json::to_string(v).unwrap_or_else(|_| "{}".to_string()),
    }
}

pub fn from_anthropic(resp: MessagesResponse, requested_model: &str) -> ChatResponse {
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in resp.content {
        match block {
            RespBlock::Text { text: t } => text.push_str(&t),
            RespBlock::ToolUse { id, name, input } => calls.push(ToolCall {
                id,
                kind: "function".into(),
                function: FunctionCall { name, arguments: serialise_input(&input) },
            }),
            RespBlock::Other => {}
        }
    }
    let content = (calls.is_empty() || !text.is_empty()).then_some(text);
    let usage = Usage::new(resp.usage.prompt_tokens().unwrap_or(0), resp.usage.output_tokens.unwrap_or(0));
    ChatResponse {
        id: resp.id,
        object: "chat.completion".into(),
        created: unix_now(),
        model: if resp.model.is_empty() { requested_model.to_string() } else { resp.model },
        choices: vec![Choice {
            index: 0,
            message: AssistantMessage {
                role: "assistant".into(),
                content,
                tool_calls: (!calls.is_empty()).then_some(calls),
                refusal: None,
            },
            finish_reason: Some(finish_reason(resp.stop_reason.as_deref().unwrap_or("end_turn")).to_string()),
            logprobs: None,
        }],
        usage: Some(usage),
        system_fingerprint: None,
        extra: Default::default(),
    }
}

// ---- stream -----------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StreamEvent {
    MessageStart {
        message: StartMessage,
    },
    ContentBlockStart {
        index: u32,
        content_block: RespBlock,
    },
    ContentBlockDelta {
        index: u32,
        delta: BlockDelta,
    },
    ContentBlockStop {
        index: u32,
    },
    MessageDelta {
        delta: MessageDelta,
        #[serde(default)]
        usage: AUsage,
    },
    MessageStop,
    Ping,
    Error {
        error: ErrorDetail,
    },
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Deserialize)]
struct StartMessage {
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    usage: AUsage,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    /// thinking_delta, signature_delta, citations_delta
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct MessageDelta {
    #[serde(default)]
    stop_reason: Option<String>,
}

/// One tool_use block in flight: its OpenAI tool-call index and whether arguments were sent.
#[derive(Debug, Clone, Copy)]
struct OpenTool {
    block: u32,
    call: u32,
    sent_arguments: bool,
}

/// Translates one Anthropic stream, event by event, into OpenAI chunks.
#[derive(Debug)]
pub struct StreamState {
    ids: ChunkIds,
    role_sent: bool,
    tools: Vec<OpenTool>,
    next_call: u32,
    prompt_tokens: Option<u64>,
    completion_tokens: u64,
}

impl StreamState {
    pub fn new(requested_model: &str) -> Self {
        StreamState {
            ids: ChunkIds { id: String::new(), created: unix_now(), model: requested_model.to_string() },
            role_sent: false,
            tools: Vec::new(),
            next_call: 0,
            prompt_tokens: None,
            completion_tokens: 0,
        }
    }

    /// A chunk for choice 0; the first one carries the assistant role.
    fn chunk(&mut self, mut delta: Delta, finish: Option<String>) -> ChatChunk {
        if !self.role_sent {
            delta.role = Some("assistant".into());
            self.role_sent = true;
        }
        self.ids.chunk(0, delta, finish)
    }

    fn tool_delta(
        &mut self,
        call: u32,
        id: Option<String>,
        name: Option<String>,
        arguments: Option<String>,
    ) -> ChatChunk {
        let kind = id.as_ref().map(|_| "function".to_string());
        let delta = Delta {
            tool_calls: Some(vec![ToolCallDelta {
                index: call,
                id,
                kind,
                function: Some(FunctionCallDelta { name, arguments }),
            }]),
            ..Delta::default()
        };
        self.chunk(delta, None)
    }

    /// One SSE event in, the chunks it becomes out.
    pub fn on_event(&mut self, ev: &SseEvent) -> Result<Vec<ChatChunk>, ProviderError> {
        if ev.data.trim().is_empty() {
            return Ok(Vec::new());
        }
        let event: StreamEvent = serde_json::from_str(&ev.data)
            .map_err(|e| ProviderError::Decode(format!("anthropic stream event: {e}")))?;
        Ok(match event {
            StreamEvent::MessageStart { message } => {
                self.ids.id = message.id;
                if !message.model.is_empty() {
                    self.ids.model = message.model;
                }
                self.prompt_tokens = message.usage.prompt_tokens();
                self.completion_tokens = message.usage.output_tokens.unwrap_or(0);
                Vec::new()
            }
            StreamEvent::ContentBlockStart { index, content_block } => match content_block {
                RespBlock::Text { text } => {
                    if text.is_empty() && self.role_sent {
                        Vec::new()
                    } else {
                        vec![self.chunk(Delta { content: Some(text), ..Delta::default() }, None)]
                    }
                }
                RespBlock::ToolUse { id, name, input } => {
                    let call = self.next_call;
                    self.next_call += 1;
                    // the input normally arrives as input_json_delta; a start block that already
                    // carries a non-empty input (some proxies send it whole) is sent as arguments
                    let whole = match &input {
                        Value::Object(m) if !m.is_empty() => Some(serialise_input(&input)),
                        _ => None,
                    };
                    self.tools.push(OpenTool { block: index, call, sent_arguments: whole.is_some() });
                    vec![self.tool_delta(call, Some(id), Some(name), Some(whole.unwrap_or_default()))]
                }
                RespBlock::Other => Vec::new(),
            },
            StreamEvent::ContentBlockDelta { index, delta } => match delta {
                BlockDelta::TextDelta { text } if text.is_empty() => Vec::new(),
                BlockDelta::TextDelta { text } => {
                    vec![self.chunk(Delta { content: Some(text), ..Delta::default() }, None)]
                }
                BlockDelta::InputJsonDelta { partial_json } => {
                    let Some(tool) = self.tools.iter_mut().rev().find(|t| t.block == index) else {
                        return Ok(Vec::new());
                    };
                    if partial_json.is_empty() {
                        return Ok(Vec::new());
                    }
                    tool.sent_arguments = true;
                    let call = tool.call;
                    vec![self.tool_delta(call, None, None, Some(partial_json))]
                }
                BlockDelta::Other => Vec::new(),
            },
            StreamEvent::ContentBlockStop { index } => {
                // a tool called without arguments: OpenAI clients expect "{}", not ""
                match self.tools.iter_mut().rev().find(|t| t.block == index) {
                    Some(tool) if !tool.sent_arguments => {
                        tool.sent_arguments = true;
                        let call = tool.call;
                        vec![self.tool_delta(call, None, None, Some("{}".into()))]
                    }
                    _ => Vec::new(),
                }
            }
            StreamEvent::MessageDelta { delta, usage } => {
                if let Some(out) = usage.output_tokens {
                    self.completion_tokens = out;
                }
                if let Some(p) = usage.prompt_tokens() {
                    self.prompt_tokens = Some(p);
                }
                let finish = finish_reason(delta.stop_reason.as_deref().unwrap_or("end_turn")).to_string();
                let usage = Usage::new(self.prompt_tokens.unwrap_or(0), self.completion_tokens);
                vec![self.chunk(Delta::default(), Some(finish)), self.ids.usage_chunk(usage)]
            }
            StreamEvent::MessageStop | StreamEvent::Ping | StreamEvent::Unknown => Vec::new(),
            StreamEvent::Error { error } => {
                return Err(ProviderError::Stream(format!("{}: {}", error.kind, error.message)))
            }
        })
    }
}

#[cfg(test)]
#[path = "anthropic_tests.rs"]
mod tests;
