use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `POST /v1/chat/completions` request body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Everything we do not model (logprobs, presence_penalty, metadata, …): passed through as is.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// Extended thinking asked for through the Messages API (Anthropic's
    /// `{"type": "enabled", "budget_tokens": N}`). Not a wire field of this request: the
    /// Anthropic adapter sends it and the Gemini adapter asks for thoughts with its budget, but an
    /// OpenAI-compatible upstream never sees it (OpenAI refuses fields it does not know, and a
    /// Messages client routed to one must not fail for asking). A chat client's own `thinking`
    /// stays in `extra` and goes out as sent.
    #[serde(skip)]
    pub anthropic_thinking: Option<Value>,
    /// `top_k` asked for through the Messages API: carried like
    /// [`ChatRequest::anthropic_thinking`], for the adapters whose providers sample by it
    /// (Anthropic, Gemini), and never sent to an OpenAI-compatible upstream, which refuses it.
    /// A chat client's own `top_k` (vLLM and others take it) stays in `extra` and goes out as sent.
    #[serde(skip)]
    pub anthropic_top_k: Option<u32>,
    /// The client's `anthropic-beta` header (Claude Code and the Anthropic SDKs send one for
    /// interleaved thinking, a longer context, fine-grained tool streaming): sent on to Anthropic
    /// upstreams with the provider's configured flags, and to no other provider.
    #[serde(skip)]
    pub anthropic_beta: Option<String>,
}

impl ChatRequest {
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    pub fn include_usage(&self) -> bool {
        self.stream_options.as_ref().is_some_and(|o| o.include_usage)
    }

    /// The token budget the client asked for, whichever field it used.
    pub fn max_output_tokens(&self) -> Option<u32> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// Anthropic's `thinking` object, whoever sent it: a chat client (as a pass-through field)
    /// or a Messages client ([`ChatRequest::anthropic_thinking`]). Only an object counts.
    pub fn thinking(&self) -> Option<&Value> {
        self.extra.get("thinking").or(self.anthropic_thinking.as_ref()).filter(|t| t.is_object())
    }

    /// For a deployment that reasons (`reasoning = true`): a Messages client's `thinking` becomes
    /// the `reasoning_effort` its budget is closest to (the inverse of the Anthropic adapter's
    /// 1024 / 2048 / 4096 tokens for low / medium / high), unless the client set an effort itself.
    pub fn apply_thinking_as_reasoning_effort(&mut self) {
        let Some(thinking) = &self.anthropic_thinking else { return };
        if self.extra.contains_key("reasoning_effort") {
            return;
        }
        let effort = match thinking.get("budget_tokens").and_then(Value::as_u64) {
            Some(b) if b < 2048 => "low",
            Some(b) if b >= 4096 => "high",
            _ => "medium",
        };
        self.extra.insert("reasoning_effort".into(), Value::from(effort));
    }

    /// `top_k`, whoever sent it: a chat client (as a pass-through field) or a Messages client
    /// ([`ChatRequest::anthropic_top_k`]). A value that is not a whole number ≥ 1 counts as none.
    pub fn top_k(&self) -> Option<u32> {
        match self.extra.get("top_k") {
            Some(v) => v.as_u64().and_then(|k| u32::try_from(k).ok()).filter(|&k| k >= 1),
            None => self.anthropic_top_k,
        }
    }

    /// Checks what serde cannot: the shape rules OpenAI enforces. Returns the offending param.
    pub fn validate(&self) -> Result<(), (String, &'static str)> {
        if self.model.trim().is_empty() {
            return Err(("`model` must not be empty".into(), "model"));
        }
        if self.messages.is_empty() {
            return Err(("`messages` must contain at least one message".into(), "messages"));
        }
        if let Some(n) = self.n {
            if n == 0 || n > 128 {
                return Err(("`n` must be between 1 and 128".into(), "n"));
            }
        }
        if let Some(t) = self.temperature {
            if !(0.0..=2.0).contains(&t) {
                return Err(("`temperature` must be between 0 and 2".into(), "temperature"));
            }
        }
        if let Some(p) = self.top_p {
            if !(0.0..=1.0).contains(&p) {
                return Err(("`top_p` must be between 0 and 1".into(), "top_p"));
            }
        }
        for m in &self.messages {
            if m.role == Role::Tool && m.tool_call_id.is_none() {
                return Err(("messages with role `tool` must have a `tool_call_id`".into(), "messages"));
            }
            if m.content.is_none() && m.tool_calls.is_none() && m.role != Role::Assistant {
                return Err(("every non-assistant message needs `content`".into(), "messages"));
            }
            if let Some(Content::Parts(parts)) = &m.content {
                if parts.iter().any(|p| matches!(p, ContentPart::Unknown)) {
                    return Err((
                        "content parts must have type `text`, `image_url`, `input_audio` or `file`".into(),
                        "messages",
                    ));
                }
            }
        }
        Ok(())
    }

    /// True when any message carries an image part.
    pub fn has_images(&self) -> bool {
        self.messages.iter().any(|m| match &m.content {
            Some(Content::Parts(parts)) => parts.iter().any(|p| matches!(p, ContentPart::ImageUrl { .. })),
            _ => false,
        })
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s.clone()],
            Stop::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
    Function,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Message {
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Message {
            role,
            content: Some(Content::Text(text.into())),
            name: None,
            tool_calls: None,
            tool_call_id: None,
            extra: Map::new(),
        }
    }

    /// The message's text: the string content, or its text parts joined by newlines.
    pub fn text_content(&self) -> String {
        match &self.content {
            None => String::new(),
            Some(Content::Text(s)) => s.clone(),
            Some(Content::Parts(parts)) => parts
                .iter()
                .filter_map(|p| match p {
                    ContentPart::Text { text, .. } => Some(text.as_str()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    /// `cache_control` (Anthropic prompt caching, as LiteLLM-style clients put it on parts) is
    /// carried so the Anthropic adapter can place the breakpoint and OpenAI-compatible proxies
    /// that understand it (OpenRouter) get it as sent.
    Text {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<Value>,
    },
    ImageUrl {
        image_url: ImageUrl,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<Value>,
    },
    InputAudio {
        input_audio: Value,
    },
    File {
        file: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<Value>,
    },
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageUrl {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Tool {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionDef,
    /// Anthropic prompt caching on a tool definition (a breakpoint after the tools).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FunctionDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionCall,
}

fn function_type() -> String {
    "function".into()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FunctionCall {
    pub name: String,
    /// A JSON document as a string, exactly as OpenAI sends it.
    pub arguments: String,
}

/// Non-streamed `chat.completion` object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChatResponse {
    pub id: String,
    #[serde(default = "completion_object")]
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<Choice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn completion_object() -> String {
    "chat.completion".into()
}

impl ChatResponse {
    /// True when every choice ended naturally (not truncated, not filtered): only such answers are cached.
    pub fn is_complete(&self) -> bool {
        !self.choices.is_empty()
            && self.choices.iter().all(|c| matches!(c.finish_reason.as_deref(), Some("stop") | Some("tool_calls")))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Choice {
    pub index: u32,
    pub message: AssistantMessage,
    #[serde(default)]
    pub finish_reason: Option<String>,
    #[serde(default)]
    pub logprobs: Option<Value>,
}

/// The assistant's message in a response. `refusal` is always written (`null` when absent): the
/// OpenAI spec lists it as required. `reasoning_content` is the field OpenAI-compatible clients
/// (DeepSeek's, vLLM's, LiteLLM's) read thinking from; upstreams that call it `reasoning`
/// (OpenRouter, newer vLLM) are read into it too.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(from = "WireAssistantMessage")]
pub struct AssistantMessage {
    pub role: String,
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// Anthropic's thinking blocks with their signatures, to be echoed back on the next turn
    /// (LiteLLM's field; see `providers::anthropic`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking_blocks: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    pub refusal: Option<String>,
}

impl AssistantMessage {
    /// An empty assistant message, the start of one being built.
    pub fn empty() -> Self {
        AssistantMessage {
            role: "assistant".into(),
            content: None,
            reasoning_content: None,
            thinking_blocks: None,
            tool_calls: None,
            refusal: None,
        }
    }
}

/// What an upstream may send as the message (either name for the reasoning).
#[derive(Deserialize)]
struct WireAssistantMessage {
    #[serde(default = "assistant_role")]
    role: String,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    reasoning: Option<Value>,
    #[serde(default)]
    thinking_blocks: Option<Vec<Value>>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCall>>,
    #[serde(default)]
    refusal: Option<String>,
}

impl From<WireAssistantMessage> for AssistantMessage {
    fn from(w: WireAssistantMessage) -> Self {
        AssistantMessage {
            role: w.role,
            content: w.content,
            reasoning_content: w.reasoning_content.or_else(|| reasoning_text(w.reasoning)),
            thinking_blocks: w.thinking_blocks,
            tool_calls: w.tool_calls,
            refusal: w.refusal,
        }
    }
}

/// `reasoning` as text: a string as it is; anything else (an object some proxies send) is not
/// text a client can show, and is dropped.
fn reasoning_text(v: Option<Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
}

fn assistant_role() -> String {
    "assistant".into()
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// How much of the prompt the provider served from its prompt cache (OpenAI's own field;
    /// Anthropic's `cache_read_input_tokens` lands here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    /// How the completion's tokens split (OpenAI's own field, kept as the upstream sent it: a
    /// reasoning model's `reasoning_tokens` are what its users watch; Gemini's thought tokens
    /// land here too).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "lenient_details")]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct PromptTokensDetails {
    #[serde(default)]
    pub cached_tokens: u64,
}

/// OpenAI's `completion_tokens_details`. Each count is optional: servers that speak OpenAI's API
/// send some of them, or `null`, and a count we cannot read must not fail the whole answer.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct CompletionTokensDetails {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accepted_prediction_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected_prediction_tokens: Option<u64>,
}

/// `completion_tokens_details` as far as it can be read: an object's unsigned counts; anything
/// else (null, a string, a negative number) is left out rather than refused.
fn lenient_details<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<CompletionTokensDetails>, D::Error> {
    let v = Option::<Value>::deserialize(d)?;
    let Some(Value::Object(m)) = v else { return Ok(None) };
    let get = |k: &str| m.get(k).and_then(Value::as_u64);
    let details = CompletionTokensDetails {
        reasoning_tokens: get("reasoning_tokens"),
        audio_tokens: get("audio_tokens"),
        accepted_prediction_tokens: get("accepted_prediction_tokens"),
        rejected_prediction_tokens: get("rejected_prediction_tokens"),
    };
    Ok((details != CompletionTokensDetails::default()).then_some(details))
}

impl Usage {
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
            prompt_tokens_details: None,
            completion_tokens_details: None,
        }
    }
}

/// One `chat.completion.chunk` of a stream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChatChunk {
    pub id: String,
    #[serde(default = "chunk_object")]
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChunkChoice>,
    /// Present (possibly `null`) only when the client asked for usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

fn chunk_object() -> String {
    "chat.completion.chunk".into()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: Delta,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(from = "WireDelta")]
pub struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Thinking, as the streams of DeepSeek/vLLM-style servers carry it; `reasoning` (OpenRouter,
    /// newer vLLM) is read into it. Not a serde alias: an upstream that sends both names in one
    /// delta must not turn into a decode error that breaks the stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// Completed, signed Anthropic thinking blocks (see [`AssistantMessage::thinking_blocks`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking_blocks: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
}

#[derive(Deserialize)]
struct WireDelta {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    reasoning: Option<Value>,
    #[serde(default)]
    thinking_blocks: Option<Vec<Value>>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallDelta>>,
    #[serde(default)]
    refusal: Option<String>,
}

impl From<WireDelta> for Delta {
    fn from(w: WireDelta) -> Self {
        Delta {
            role: w.role,
            content: w.content,
            reasoning_content: w.reasoning_content.or_else(|| reasoning_text(w.reasoning)),
            thinking_blocks: w.thinking_blocks,
            tool_calls: w.tool_calls,
            refusal: w.refusal,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ToolCallDelta {
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionCallDelta>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FunctionCallDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

/// Folds a stream of chunks back into the complete response, so a streamed answer can be cached
/// and later replayed either way.
/// Choice indices of a stream run below this (`n` is at most 128).
pub const MAX_CHOICES: u32 = 128;
/// Tool-call indices within one choice run below this. Both bounds exist because accumulating a
/// chunk allocates one slot per index up to it: an upstream that sends index 3,360,957,551 (the
/// fuzzer did) would otherwise make the gateway allocate gigabytes and stall.
pub const MAX_TOOL_CALLS: u32 = 1024;

#[derive(Debug, Default)]
pub struct ChunkAccumulator {
    id: String,
    created: u64,
    model: String,
    choices: Vec<(AssistantMessage, Option<String>)>,
    usage: Option<Usage>,
}

impl ChunkAccumulator {
    pub fn push(&mut self, chunk: &ChatChunk) {
        if self.id.is_empty() {
            self.id = chunk.id.clone();
            self.created = chunk.created;
            self.model = chunk.model.clone();
        }
        if chunk.usage.is_some() {
            self.usage = chunk.usage;
        }
        // the stream decoders refuse out-of-range indices; ignored here too, so no caller can
        // make this allocate without bound
        for c in chunk.choices.iter().filter(|c| c.index < MAX_CHOICES) {
            let i = c.index as usize;
            while self.choices.len() <= i {
                self.choices.push((AssistantMessage::empty(), None));
            }
            let (msg, finish) = &mut self.choices[i];
            if let Some(text) = &c.delta.content {
                msg.content.get_or_insert_with(String::new).push_str(text);
            }
            if let Some(r) = &c.delta.reasoning_content {
                msg.reasoning_content.get_or_insert_with(String::new).push_str(r);
            }
            if let Some(b) = &c.delta.thinking_blocks {
                msg.thinking_blocks.get_or_insert_with(Vec::new).extend(b.iter().cloned());
            }
            if let Some(r) = &c.delta.refusal {
                msg.refusal.get_or_insert_with(String::new).push_str(r);
            }
            for d in c.delta.tool_calls.iter().flatten().filter(|d| d.index < MAX_TOOL_CALLS) {
                let calls = msg.tool_calls.get_or_insert_with(Vec::new);
                let k = d.index as usize;
                while calls.len() <= k {
                    calls.push(ToolCall {
                        id: String::new(),
                        kind: "function".into(),
                        function: FunctionCall { name: String::new(), arguments: String::new() },
                    });
                }
                let call = &mut calls[k];
                if let Some(id) = &d.id {
                    call.id.push_str(id);
                }
                if let Some(f) = &d.function {
                    if let Some(n) = &f.name {
                        call.function.name.push_str(n);
                    }
                    if let Some(a) = &f.arguments {
                        call.function.arguments.push_str(a);
                    }
                }
            }
            if c.finish_reason.is_some() {
                *finish = c.finish_reason.clone();
            }
        }
    }

    pub fn finish(self) -> ChatResponse {
        ChatResponse {
            id: self.id,
            object: "chat.completion".into(),
            created: self.created,
            model: self.model,
            choices: self
                .choices
                .into_iter()
                .enumerate()
                .map(|(i, (message, finish_reason))| Choice { index: i as u32, message, finish_reason, logprobs: None })
                .collect(),
            usage: self.usage,
            system_fingerprint: None,
            extra: Map::new(),
        }
    }
}

/// Turns a complete response into the chunks a stream of it would have had: role, content in
/// pieces of about `piece` characters, tool calls, finish reason, then usage if asked for.
pub fn response_to_chunks(resp: &ChatResponse, include_usage: bool, piece: usize) -> Vec<ChatChunk> {
    let piece = piece.max(1);
    let mk = |choices: Vec<ChunkChoice>, usage: Option<Usage>| ChatChunk {
        id: resp.id.clone(),
        object: "chat.completion.chunk".into(),
        created: resp.created,
        model: resp.model.clone(),
        choices,
        usage,
    };
    let mut out = Vec::new();
    for c in &resp.choices {
        out.push(mk(
            vec![ChunkChoice {
                index: c.index,
                delta: Delta { role: Some("assistant".into()), ..Delta::default() },
                finish_reason: None,
            }],
            None,
        ));
        if let Some(r) = c.message.reasoning_content.as_deref().filter(|r| !r.is_empty()) {
            out.push(mk(
                vec![ChunkChoice {
                    index: c.index,
                    delta: Delta { reasoning_content: Some(r.to_string()), ..Delta::default() },
                    finish_reason: None,
                }],
                None,
            ));
        }
        if let Some(b) = c.message.thinking_blocks.as_ref().filter(|b| !b.is_empty()) {
            out.push(mk(
                vec![ChunkChoice {
                    index: c.index,
                    delta: Delta { thinking_blocks: Some(b.clone()), ..Delta::default() },
                    finish_reason: None,
                }],
                None,
            ));
        }
        if let Some(text) = &c.message.content {
            let mut start = 0;
            let chars: Vec<(usize, char)> = text.char_indices().collect();
            while start < chars.len() {
                let end = (start + piece).min(chars.len());
                let from = chars[start].0;
                let to = if end == chars.len() { text.len() } else { chars[end].0 };
                out.push(mk(
                    vec![ChunkChoice {
                        index: c.index,
                        delta: Delta { content: Some(text[from..to].to_string()), ..Delta::default() },
                        finish_reason: None,
                    }],
                    None,
                ));
                start = end;
            }
        }
        for (k, call) in c.message.tool_calls.iter().flatten().enumerate() {
            out.push(mk(
                vec![ChunkChoice {
                    index: c.index,
                    delta: Delta {
                        tool_calls: Some(vec![ToolCallDelta {
                            index: k as u32,
                            id: Some(call.id.clone()),
                            kind: Some("function".into()),
                            function: Some(FunctionCallDelta {
                                name: Some(call.function.name.clone()),
                                arguments: Some(call.function.arguments.clone()),
                            }),
                        }]),
                        ..Delta::default()
                    },
                    finish_reason: None,
                }],
                None,
            ));
        }
        out.push(mk(
            vec![ChunkChoice { index: c.index, delta: Delta::default(), finish_reason: c.finish_reason.clone() }],
            None,
        ));
    }
    if include_usage {
        out.push(mk(Vec::new(), Some(resp.usage.unwrap_or_default())));
    }
    out
}

/// `GET /v1/models` entries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelList {
    pub object: String,
    pub data: Vec<ModelInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelInfo {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub owned_by: String,
}

/// `POST /v1/embeddings` request.
#[derive(Debug, Clone, Deserialize)]
pub struct EmbeddingsRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub input: EmbeddingInput,
    #[serde(default)]
    pub encoding_format: Option<String>,
    #[serde(default)]
    pub dimensions: Option<u32>,
    #[serde(default)]
    pub user: Option<String>,
}

/// Every input form the OpenAI spec allows: a string, strings, token ids, arrays of token ids
/// (cl100k_base ids; see `embed::cl100k`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    One(String),
    Many(Vec<String>),
    Tokens(Vec<u32>),
    TokenArrays(Vec<Vec<u32>>),
}

impl EmbeddingInput {
    /// The text inputs (none for token ids).
    pub fn texts(&self) -> Vec<&str> {
        match self {
            EmbeddingInput::One(s) => vec![s.as_str()],
            EmbeddingInput::Many(v) => v.iter().map(String::as_str).collect(),
            EmbeddingInput::Tokens(_) | EmbeddingInput::TokenArrays(_) => Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct EmbeddingsResponse {
    pub object: &'static str,
    pub data: Vec<EmbeddingData>,
    pub model: String,
    pub usage: EmbeddingUsage,
}

#[derive(Debug, Clone, Serialize)]
pub struct EmbeddingData {
    pub object: &'static str,
    pub index: usize,
    pub embedding: Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct EmbeddingUsage {
    pub prompt_tokens: u64,
    pub total_tokens: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(text: &str) -> ChatResponse {
        ChatResponse {
            id: "chatcmpl-1".into(),
            object: "chat.completion".into(),
            created: 1,
            model: "m".into(),
            choices: vec![Choice {
                index: 0,
                message: AssistantMessage {
                    role: "assistant".into(),
                    content: Some(text.into()),
                    reasoning_content: Some("thinking it over".into()),
                    thinking_blocks: Some(vec![
                        serde_json::json!({"type": "thinking", "thinking": "t", "signature": "s"}),
                    ]),
                    tool_calls: Some(vec![ToolCall {
                        id: "call_1".into(),
                        kind: "function".into(),
                        function: FunctionCall { name: "f".into(), arguments: "{\"a\":1}".into() },
                    }]),
                    refusal: None,
                },
                finish_reason: Some("stop".into()),
                logprobs: None,
            }],
            usage: Some(Usage::new(3, 4)),
            system_fingerprint: None,
            extra: Map::new(),
        }
    }

    #[test]
    fn chunks_round_trip_through_the_accumulator() {
        let resp = response("héllo wörld, a longer answer");
        let chunks = response_to_chunks(&resp, true, 5);
        assert!(chunks.len() > 4);
        let mut acc = ChunkAccumulator::default();
        for c in &chunks {
            acc.push(c);
        }
        assert_eq!(acc.finish(), resp);
    }

    #[test]
    fn unknown_fields_are_kept_and_unknown_roles_rejected() {
        let req: ChatRequest =
            serde_json::from_str(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"logit_bias":{"1":2}}"#)
                .unwrap();
        assert_eq!(req.extra["logit_bias"]["1"], 2);
        let back = serde_json::to_value(&req).unwrap();
        assert_eq!(back["logit_bias"]["1"], 2);
        let bad = serde_json::from_str::<ChatRequest>(r#"{"model":"m","messages":[{"role":"wizard","content":"hi"}]}"#);
        assert!(bad.is_err());
    }

    #[test]
    fn reasoning_is_read_under_either_name() {
        let m: AssistantMessage =
            serde_json::from_str(r#"{"role":"assistant","content":"4","reasoning":"2+2"}"#).unwrap();
        assert_eq!(m.reasoning_content.as_deref(), Some("2+2"));
        let m: AssistantMessage = serde_json::from_str(
            r#"{"role":"assistant","content":"4","reasoning_content":"a","reasoning":"b","refusal":null}"#,
        )
        .unwrap();
        assert_eq!(m.reasoning_content.as_deref(), Some("a"));
        let back = serde_json::to_value(&m).unwrap();
        assert_eq!(back["refusal"], Value::Null, "refusal is always written");
        assert!(back.get("reasoning").is_none());
        let d: Delta = serde_json::from_str(r#"{"reasoning":"x","reasoning_content":"x"}"#).unwrap();
        assert_eq!(d.reasoning_content.as_deref(), Some("x"), "both names at once are not an error");
        let d: Delta = serde_json::from_str(r#"{"reasoning":"y"}"#).unwrap();
        assert_eq!(d.reasoning_content.as_deref(), Some("y"));
        assert_eq!(serde_json::to_string(&Delta::default()).unwrap(), "{}");
    }

    #[test]
    fn validation_names_the_param() {
        let req: ChatRequest = serde_json::from_str(r#"{"model":"m","messages":[]}"#).unwrap();
        assert_eq!(req.validate().unwrap_err().1, "messages");
    }

    /// `completion_tokens_details` comes through as the upstream sent it, and what cannot be
    /// read in it is left out, never a decode error.
    #[test]
    fn completion_token_details_pass_through_and_never_fail_an_answer() {
        let usage = |details: &str| -> Usage {
            serde_json::from_str(&format!(
                r#"{{"prompt_tokens":5,"completion_tokens":40,"total_tokens":45,"completion_tokens_details":{details}}}"#
            ))
            .unwrap()
        };
        let full =
            r#"{"reasoning_tokens":32,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}"#;
        let u = usage(full);
        assert_eq!(u.completion_tokens_details.unwrap().reasoning_tokens, Some(32));
        let v = serde_json::to_value(u).unwrap();
        assert_eq!(v["completion_tokens_details"], serde_json::from_str::<Value>(full).unwrap());
        assert_eq!(usage(r#"{"reasoning_tokens":7}"#).completion_tokens_details.unwrap().reasoning_tokens, Some(7));
        for odd in ["null", r#"{"reasoning_tokens":null}"#, r#"{"reasoning_tokens":"many"}"#, "[]", "{}"] {
            assert_eq!(usage(odd).completion_tokens_details, None, "{odd}");
        }
        let none: Usage =
            serde_json::from_str(r#"{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}"#).unwrap();
        assert!(serde_json::to_value(none).unwrap().get("completion_tokens_details").is_none());
    }
}
