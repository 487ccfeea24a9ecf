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
//! `tool_use` blocks become `tool_calls`, thinking blocks become `reasoning_content`. Streams are translated
//! event by event; the role chunk waits for the first content block so that an `error` event
//! right after `message_start` (typically `overloaded_error`) still lets the dispatcher fail over.

//!
//! Prompt caching: `cache_control` on a content part, on a whole message (it marks the message's
//! last block, as LiteLLM reads it) or on a tool goes to the same place in Anthropic's request; a
//! system prompt with any `cache_control` is sent as blocks, the only form that can carry it.
//! Usage reports cache reads as `prompt_tokens_details.cached_tokens` (and, as OpenAI counts
//! them, inside `prompt_tokens`, with cache writes).
//!
//! Extended thinking: `thinking` (Anthropic's own object, as LiteLLM clients send it) is passed
//! on, and `reasoning_effort` low/medium/high asks for a 1024/2048/4096-token budget (LiteLLM's
//! mapping). With thinking on, Anthropic requires that the last assistant turn with tool use be
//! sent back beginning with its thinking blocks, signatures intact. The thinking text is needed
//! verbatim, too long for a tool call id, so the answer carries the blocks as
//! `message.thinking_blocks` (LiteLLM's field, which OpenAI SDK clients echo back when they append
//! the response message to the conversation) and they are put back from there. A last tool-use
//! turn with no signed blocks (another provider answered it) turns thinking off for that request
//! rather than getting it refused ([`last_tool_turn_is_signed`]).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::sse::SseEvent;
use super::wire::{arguments_object, bare_call_id, decode_multi, parse_data_url, unix_now, ChunkIds};
use super::{ChunkStream, ProviderError, Upstream};
use crate::api::{
    AssistantMessage, ChatChunk, ChatRequest, ChatResponse, Choice, Content, ContentPart, Delta, FunctionCall,
    FunctionCallDelta, Message, PromptTokensDetails, Role, ToolCall, ToolCallDelta, Usage,
};

pub const DEFAULT_VERSION: &str = "2023-06-01";

pub struct Anthropic {
    pub up: Upstream,
    url: String,
    count_url: String,
}

/// The fields `POST /v1/messages/count_tokens` takes: the prompt, not the generation settings.
const COUNT_FIELDS: [&str; 6] = ["model", "messages", "system", "tools", "tool_choice", "thinking"];

impl Anthropic {
    pub fn new(up: Upstream) -> Self {
        let base = up.base_url.strip_suffix("/v1").unwrap_or(&up.base_url);
        let (url, count_url) = (format!("{base}/v1/messages"), format!("{base}/v1/messages/count_tokens"));
        Anthropic { up, url, count_url }
    }

    fn request(&self, body: &MessagesRequest, req: &ChatRequest) -> reqwest::RequestBuilder {
        self.post(&self.url, body, req)
    }

    /// A call with the version, the beta flags (the provider's configured ones and the client's
    /// `anthropic-beta`, as one list: Anthropic reads one header) and the key.
    fn post(&self, url: &str, body: &impl Serialize, req: &ChatRequest) -> reqwest::RequestBuilder {
        let version = self.up.config.api_version.as_deref().unwrap_or(DEFAULT_VERSION);
        let mut set = reqwest::header::HeaderMap::new();
        if let Ok(v) = version.parse() {
            set.insert("anthropic-version", v);
        }
        if let Some(beta) = req.anthropic_beta.as_deref() {
            if let Ok(v) = beta_flags(self.up.header("anthropic-beta"), beta).parse() {
                set.insert("anthropic-beta", v);
            }
        }
        // `headers` replaces what the configured headers set under the same names
        let mut rb = self.up.post(url).headers(set).json(body);
        if let Some(k) = &self.up.key {
            rb = rb.header("x-api-key", k.expose());
        }
        rb
    }

    pub async fn chat(&self, req: &ChatRequest, model: &str) -> Result<ChatResponse, ProviderError> {
        let body = to_anthropic(req, model, self.up.config.default_max_tokens, false)?;
        let resp = self.up.send(self.request(&body, req), false, map_error).await?;
        let bytes = self.up.body(resp).await?;
        let parsed: MessagesResponse =
            serde_json::from_slice(&bytes).map_err(|e| ProviderError::Decode(format!("anthropic response: {e}")))?;
        Ok(from_anthropic(parsed, model))
    }

    /// The input tokens Anthropic counts for this request (`POST /v1/messages/count_tokens`): the
    /// same translation as a call, with only the fields the count endpoint takes.
    pub async fn count_tokens(&self, req: &ChatRequest, model: &str) -> Result<u64, ProviderError> {
        let body = to_anthropic(req, model, self.up.config.default_max_tokens, false)?;
        let mut body = serde_json::to_value(&body).map_err(|e| ProviderError::Decode(format!("count request: {e}")))?;
        if let Some(fields) = body.as_object_mut() {
            fields.retain(|k, _| COUNT_FIELDS.contains(&k.as_str()));
        }
        let resp = self.up.send(self.post(&self.count_url, &body, req), false, map_error).await?;
        let bytes = self.up.body(resp).await?;
        #[derive(Deserialize)]
        struct Count {
            input_tokens: u64,
        }
        let count: Count =
            serde_json::from_slice(&bytes).map_err(|e| ProviderError::Decode(format!("anthropic token count: {e}")))?;
        Ok(count.input_tokens)
    }

    pub async fn chat_stream(&self, req: &ChatRequest, model: &str) -> Result<ChunkStream, ProviderError> {
        let body = to_anthropic(req, model, self.up.config.default_max_tokens, true)?;
        let resp = self.up.send(self.request(&body, req), true, map_error).await?;
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

/// The configured beta flags, then the client's, each once.
fn beta_flags(configured: Option<&str>, client: &str) -> String {
    let mut flags: Vec<&str> = Vec::new();
    for f in configured.unwrap_or("").split(',').chain(client.split(',')).map(str::trim) {
        if !f.is_empty() && !flags.contains(&f) {
            flags.push(f);
        }
    }
    flags.join(",")
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
    pub system: Option<SystemPrompt>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking: Option<Value>,
}

/// The system prompt: a string, or text blocks when any of it carries `cache_control`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum SystemPrompt {
    Text(String),
    Blocks(Vec<Block>),
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AMessage {
    pub role: &'static str,
    pub content: Vec<Block>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    Text {
        text: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<Value>,
    },
    Image {
        source: ImageSource,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<Value>,
    },
    /// A PDF, from an OpenAI `file` part with `file_data` (its source has the image's shape).
    Document {
        source: ImageSource,
        #[serde(skip_serializing_if = "Option::is_none")]
        title: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<Value>,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<Value>,
    },
    ToolResult {
        tool_use_id: String,
        content: Vec<Block>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<Value>,
    },
    Thinking {
        thinking: String,
        signature: String,
    },
    RedactedThinking {
        data: String,
    },
}

impl Block {
    fn text(text: impl Into<String>) -> Block {
        Block::Text { text: text.into(), cache_control: None }
    }

    /// Marks the block as a prompt-cache breakpoint (thinking blocks cannot be marked).
    fn set_cache_control(&mut self, cc: Value) {
        match self {
            Block::Text { cache_control, .. }
            | Block::Image { cache_control, .. }
            | Block::Document { cache_control, .. }
            | Block::ToolUse { cache_control, .. }
            | Block::ToolResult { cache_control, .. } => *cache_control = Some(cc),
            Block::Thinking { .. } | Block::RedactedThinking { .. } => {}
        }
    }
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<Value>,
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
/// `n > 1`, audio parts, files other than an inline PDF, non-object tool arguments, the legacy
/// `function` role.
pub fn to_anthropic(
    req: &ChatRequest,
    model: &str,
    default_max_tokens: u32,
    stream: bool,
) -> Result<MessagesRequest, ProviderError> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(ProviderError::unsupported("anthropic: `n` greater than 1 is not supported by the Messages API"));
    }
    let mut system: Vec<Block> = Vec::new();
    let mut messages: Vec<AMessage> = Vec::with_capacity(req.messages.len());
    for m in &req.messages {
        let (role, mut blocks) = match m.role {
            Role::System | Role::Developer => {
                let mut blocks = content_blocks(m.content.as_ref())?;
                blocks.retain(|b| matches!(b, Block::Text { .. }));
                mark_last(&mut blocks, m);
                system.extend(blocks);
                continue;
            }
            Role::User => ("user", content_blocks(m.content.as_ref())?),
            Role::Assistant => {
                let mut blocks = thinking_blocks(m);
                blocks.extend(content_blocks(m.content.as_ref())?);
                for call in m.tool_calls.iter().flatten() {
                    blocks.push(Block::ToolUse {
                        id: bare_call_id(&call.id).to_string(),
                        name: call.function.name.clone(),
                        input: arguments_object(&call.function.arguments)?,
                        cache_control: None,
                    });
                }
                ("assistant", blocks)
            }
            Role::Tool => {
                let id = bare_call_id(m.tool_call_id.as_deref().unwrap_or_default()).to_string();
                let content = content_blocks(m.content.as_ref())?;
                ("user", vec![Block::ToolResult { tool_use_id: id, content, cache_control: None }])
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
        mark_last(&mut blocks, m);
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
                cache_control: t.cache_control.clone(),
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

    let thinking = thinking(req).filter(|_| {
        let resendable = last_tool_turn_is_signed(&messages);
        if !resendable {
            tracing::debug!(
                "the last tool-use turn has no signed thinking (another provider answered it): thinking off"
            );
        }
        resendable
    });
    let budget = thinking.as_ref().and_then(|t| t.get("budget_tokens")).and_then(Value::as_u64).unwrap_or(0);
    let mut max_tokens = req.max_output_tokens().unwrap_or(default_max_tokens);
    if u64::from(max_tokens) <= budget {
        // Anthropic requires max_tokens > budget_tokens; the client's budget is for the answer
        max_tokens = max_tokens.saturating_add(u32::try_from(budget).unwrap_or(u32::MAX));
    }
    let cached_system = system.iter().any(|b| matches!(b, Block::Text { cache_control: Some(_), .. }));
    let system = if system.is_empty() {
        None
    } else if cached_system {
        Some(SystemPrompt::Blocks(system))
    } else {
        let texts: Vec<&str> = system
            .iter()
            .filter_map(|b| match b {
                Block::Text { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        Some(SystemPrompt::Text(texts.join("\n\n")))
    };
    Ok(MessagesRequest {
        model: model.to_string(),
        max_tokens,
        messages,
        system,
        // with thinking on, Anthropic accepts only the default temperature, top_p and top_k
        temperature: req.temperature.map(|t| t.clamp(0.0, 1.0)).filter(|_| thinking.is_none()),
        top_p: req.top_p.filter(|_| thinking.is_none()),
        top_k: req.top_k().filter(|_| thinking.is_none()),
        stop_sequences: req.stop.as_ref().map(|s| s.to_vec()).filter(|v| !v.is_empty()),
        stream: stream.then_some(true),
        tools,
        tool_choice,
        metadata: req.user.clone().map(|user_id| AMetadata { user_id }),
        thinking,
    })
}

/// With thinking on, Anthropic refuses a conversation whose last assistant turn used a tool
/// without starting with its signed thinking. A turn another provider answered (a tool loop begun
/// on the cheap tier, or a failover mid-loop) has none to send, and no signature of ours would do;
/// rather than a 400, that one request goes without thinking, as Anthropic's docs allow for
/// turns answered with thinking off.
fn last_tool_turn_is_signed(messages: &[AMessage]) -> bool {
    let Some(last) = messages.iter().rev().find(|m| m.role == "assistant") else { return true };
    if !last.content.iter().any(|b| matches!(b, Block::ToolUse { .. })) {
        return true;
    }
    matches!(last.content.first(), Some(Block::Thinking { .. } | Block::RedactedThinking { .. }))
}

/// Anthropic's `thinking` object: the client's own (a chat client's field, or a Messages
/// client's), else one for its `reasoning_effort`.
fn thinking(req: &ChatRequest) -> Option<Value> {
    if let Some(t) = req.thinking() {
        return Some(t.clone());
    }
    let budget = match req.extra.get("reasoning_effort").and_then(Value::as_str)? {
        "low" | "minimal" => 1024,
        "medium" => 2048,
        "high" => 4096,
        _ => return None,
    };
    Some(serde_json::json!({"type": "enabled", "budget_tokens": budget}))
}

/// A message-level `cache_control` marks the message's last block.
fn mark_last(blocks: &mut [Block], m: &Message) {
    if let (Some(cc), Some(last)) = (m.extra.get("cache_control"), blocks.last_mut()) {
        last.set_cache_control(cc.clone());
    }
}

/// The thinking blocks an assistant message brings back (`thinking_blocks`, see the module doc).
/// An unsigned block (another upstream's reasoning, as the Messages API shows it) is left out:
/// Anthropic would refuse the whole request for its missing signature.
fn thinking_blocks(m: &Message) -> Vec<Block> {
    let Some(Value::Array(items)) = m.extra.get("thinking_blocks") else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|b| match b.get("type").and_then(Value::as_str) {
            Some("thinking") => Some(Block::Thinking {
                thinking: b.get("thinking").and_then(Value::as_str).unwrap_or_default().to_string(),
                signature: b.get("signature").and_then(Value::as_str).filter(|s| !s.is_empty())?.to_string(),
            }),
            Some("redacted_thinking") => {
                Some(Block::RedactedThinking { data: b.get("data").and_then(Value::as_str)?.to_string() })
            }
            _ => None,
        })
        .collect()
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
        Some(Content::Text(t)) => Ok(vec![Block::text(t.clone())]),
        Some(Content::Parts(parts)) => {
            let mut out = Vec::with_capacity(parts.len());
            for p in parts {
                match p {
                    ContentPart::Text { text, .. } if text.is_empty() => {}
                    ContentPart::Text { text, cache_control } => {
                        out.push(Block::Text { text: text.clone(), cache_control: cache_control.clone() })
                    }
                    ContentPart::ImageUrl { image_url, cache_control } => {
                        let source = match parse_data_url(&image_url.url) {
                            Some((media_type, data)) => {
                                ImageSource::Base64 { media_type: media_type.to_string(), data: data.to_string() }
                            }
                            None => ImageSource::Url { url: image_url.url.clone() },
                        };
                        out.push(Block::Image { source, cache_control: cache_control.clone() });
                    }
                    ContentPart::File { file, cache_control } => {
                        let mut doc = document(file)?;
                        if let Some(cc) = cache_control {
                            doc.set_cache_control(cc.clone());
                        }
                        out.push(doc)
                    }
                    ContentPart::InputAudio { .. } | ContentPart::Unknown => {
                        return Err(ProviderError::unsupported(
                            "anthropic: only text, image and file (PDF) content parts are supported",
                        ))
                    }
                }
            }
            Ok(out)
        }
    }
}

/// An OpenAI `file` part as a `document` block: an inline PDF (`file_data`, a base64 data URL)
/// whose `filename` becomes the title. A `file_id` lives in OpenAI's file store, which Anthropic
/// cannot read; other media types have no document form here.
fn document(file: &Value) -> Result<Block, ProviderError> {
    let data = file.get("file_data").and_then(Value::as_str).ok_or_else(|| {
        ProviderError::unsupported("anthropic: file parts must carry `file_data` (a base64 data URL), not a `file_id`")
    })?;
    match parse_data_url(data) {
        Some(("application/pdf", b64)) => Ok(Block::Document {
            source: ImageSource::Base64 { media_type: "application/pdf".into(), data: b64.to_string() },
            title: file.get("filename").and_then(Value::as_str).map(str::to_string),
            cache_control: None,
        }),
        Some((other, _)) => Err(ProviderError::unsupported(format!(
            "anthropic: a file part of type {other:?} is not supported (PDF is)"
        ))),
        None => Err(ProviderError::unsupported("anthropic: `file_data` must be a base64 data URL")),
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
    Thinking {
        #[serde(default)]
        thinking: String,
        #[serde(default)]
        signature: String,
    },
    RedactedThinking {
        #[serde(default)]
        data: String,
    },
    /// server tool blocks and the like: not part of an OpenAI answer
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

    /// The prompt tokens read from Anthropic's prompt cache, in OpenAI's place for them.
    fn details(&self) -> Option<PromptTokensDetails> {
        let cached = self.cache_read_input_tokens.or(self.cache_creation_input_tokens.map(|_| 0))?;
        Some(PromptTokensDetails { cached_tokens: cached })
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
    let mut reasoning = String::new();
    let mut thinking = Vec::new();
    let mut calls = Vec::new();
    for block in resp.content {
        match block {
            RespBlock::Text { text: t } => text.push_str(&t),
            RespBlock::Thinking { thinking: t, signature } => {
                reasoning.push_str(&t);
                thinking.push(serde_json::json!({"type": "thinking", "thinking": t, "signature": signature}));
            }
            RespBlock::RedactedThinking { data } => {
                thinking.push(serde_json::json!({"type": "redacted_thinking", "data": data}));
            }
            RespBlock::ToolUse { id, name, input } => calls.push(ToolCall {
                id,
                kind: "function".into(),
                function: FunctionCall { name, arguments: serialise_input(&input) },
            }),
            RespBlock::Other => {}
        }
    }
    let content = (calls.is_empty() || !text.is_empty()).then_some(text);
    let mut usage = Usage::new(resp.usage.prompt_tokens().unwrap_or(0), resp.usage.output_tokens.unwrap_or(0));
    usage.prompt_tokens_details = resp.usage.details();
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
                reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
                thinking_blocks: (!thinking.is_empty()).then_some(thinking),
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
    ThinkingDelta {
        thinking: String,
    },
    SignatureDelta {
        signature: String,
    },
    /// citations_delta
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
    cached: Option<PromptTokensDetails>,
    /// The thinking block in flight (its index, text and signature): sent whole, as a
    /// `thinking_blocks` delta, when it stops, so a streamed answer can be echoed back too.
    thinking: Option<(u32, String, String)>,
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
            cached: None,
            thinking: None,
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
                self.cached = message.usage.details();
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
                RespBlock::Thinking { thinking, signature } => {
                    self.thinking = Some((index, thinking.clone(), signature));
                    if thinking.is_empty() {
                        Vec::new()
                    } else {
                        vec![self.chunk(Delta { reasoning_content: Some(thinking), ..Delta::default() }, None)]
                    }
                }
                RespBlock::RedactedThinking { data } => {
                    let block = serde_json::json!({"type": "redacted_thinking", "data": data});
                    vec![self.chunk(Delta { thinking_blocks: Some(vec![block]), ..Delta::default() }, None)]
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
                BlockDelta::ThinkingDelta { thinking } if thinking.is_empty() => Vec::new(),
                BlockDelta::ThinkingDelta { thinking } => {
                    if let Some((_, text, _)) = self.thinking.as_mut().filter(|t| t.0 == index) {
                        text.push_str(&thinking);
                    }
                    vec![self.chunk(Delta { reasoning_content: Some(thinking), ..Delta::default() }, None)]
                }
                BlockDelta::SignatureDelta { signature } => {
                    if let Some((_, _, sig)) = self.thinking.as_mut().filter(|t| t.0 == index) {
                        sig.push_str(&signature);
                    }
                    Vec::new()
                }
                BlockDelta::Other => Vec::new(),
            },
            StreamEvent::ContentBlockStop { index } if self.thinking.as_ref().is_some_and(|t| t.0 == index) => {
                let Some((_, thinking, signature)) = self.thinking.take() else { return Ok(Vec::new()) };
                let block = serde_json::json!({"type": "thinking", "thinking": thinking, "signature": signature});
                vec![self.chunk(Delta { thinking_blocks: Some(vec![block]), ..Delta::default() }, None)]
            }
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
                    self.cached = usage.details().or(self.cached);
                }
                let finish = finish_reason(delta.stop_reason.as_deref().unwrap_or("end_turn")).to_string();
                let mut usage = Usage::new(self.prompt_tokens.unwrap_or(0), self.completion_tokens);
                usage.prompt_tokens_details = self.cached;
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
