//! The Gemini API adapter (Google AI Studio): `POST {base_url}/{version}/models/{model}:generateContent`
//! and `:streamGenerateContent?alt=sse`.
//!
//! `base_url` is the Google SDK's base URL, `https://generativelanguage.googleapis.com`;
//! `api_version` is the path version (default `v1beta`). A `base_url` that already ends in a
//! version segment (`…/v1beta`, `…/v1`) is used as it is. The key goes in the `x-goog-api-key`
//! header, never in the URL, so it cannot leak through a logged URL or a reqwest error.
//!
//! Translation, OpenAI → Gemini: system and developer messages become `systemInstruction`;
//! roles are `user`/`model`; consecutive turns of one role are merged (parallel tool results share
//! one turn, as Gemini expects); tool results become `functionResponse` parts named after the
//! earlier tool call with that id; tool schemas go as `parametersJsonSchema` (full JSON Schema, so
//! OpenAI's `additionalProperties`/`strict` schemas are accepted). Back: text parts are joined,
//! thought parts (`thought: true`) become `reasoning_content`, each `functionCall` becomes one
//! tool call with a generated id (Gemini gives none, except when it does), candidates become
//! choices. `reasoning_effort` asks for the thoughts (`thinkingConfig.includeThoughts`).
//!
//! Thought signatures: Gemini 3 returns a `thoughtSignature` on the part beside (the first)
//! `functionCall` of a turn and rejects a follow-up whose `functionCall` part lacks it ("function
//! call is missing a thought_signature"). The signature rides inside the tool call id we give the
//! client ([`super::wire::encode_call_id`] says why the id rather than a gateway-side record) and
//! is put back beside the `functionCall` when the conversation returns. A call Gemini 3 did not
//! make itself has no signature to put back: a conversation begun on another provider that fails
//! over to Gemini 3, or a history the client built. For those the adapter sends the stand-in
//! Google documents for exactly this case ([`SKIP_SIGNATURE`]), so the failover is served instead
//! of refused with a 400.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::sse::SseEvent;
use super::wire::{arguments_object, decode_multi, encode_call_id, parse_data_url, split_call_id, unix_now, ChunkIds};
use super::{ChunkStream, ProviderError, Upstream};
use crate::api::{
    AssistantMessage, ChatChunk, ChatRequest, ChatResponse, Choice, Content, ContentPart, Delta, FunctionCall,
    FunctionCallDelta, Message, Role, ToolCall, ToolCallDelta, Usage,
};

pub const DEFAULT_VERSION: &str = "v1beta";

pub struct Gemini {
    pub up: Upstream,
    /// `{base_url}/{version}/models/`
    models_url: String,
}

impl Gemini {
    pub fn new(up: Upstream) -> Self {
        let base = up.base_url.as_str();
        let versioned = base.rsplit('/').next().is_some_and(|last| last.starts_with("v1"));
        let models_url = if versioned {
            format!("{base}/models/")
        } else {
            let version = up.config.api_version.as_deref().unwrap_or(DEFAULT_VERSION);
            format!("{base}/{version}/models/")
        };
        Gemini { up, models_url }
    }

    fn request(&self, body: &GenerateRequest, model: &str, stream: bool) -> reqwest::RequestBuilder {
        let action = if stream { "streamGenerateContent?alt=sse" } else { "generateContent" };
        self.post(model, action, body)
    }

    fn post(&self, model: &str, action: &str, body: &impl Serialize) -> reqwest::RequestBuilder {
        let model = model.strip_prefix("models/").unwrap_or(model);
        let mut rb = self.up.post(format!("{}{model}:{action}", self.models_url)).json(body);
        if let Some(k) = &self.up.key {
            rb = rb.header("x-goog-api-key", k.expose());
        }
        rb
    }

    /// The request body for `model`: [`to_gemini`], with Gemini 3's signature rule met.
    fn body(req: &ChatRequest, model: &str) -> Result<GenerateRequest, ProviderError> {
        let mut body = to_gemini(req)?;
        if model.starts_with("gemini-3") {
            sign_foreign_calls(&mut body);
        }
        Ok(body)
    }

    pub async fn chat(&self, req: &ChatRequest, model: &str) -> Result<ChatResponse, ProviderError> {
        let body = Self::body(req, model)?;
        let resp = self.up.send(self.request(&body, model, false), false, map_error).await?;
        let bytes = self.up.body(resp).await?;
        let parsed: GenerateResponse =
            serde_json::from_slice(&bytes).map_err(|e| ProviderError::Decode(format!("gemini response: {e}")))?;
        Ok(from_gemini(parsed, model))
    }

    /// The input tokens Gemini counts for this request (`models/{model}:countTokens`): the same
    /// translation as a call, sent whole as `generateContentRequest` so that the system
    /// instruction and the tool declarations are counted too (bare `contents` would leave them
    /// out); the generation settings, which are not input, are left off.
    pub async fn count_tokens(&self, req: &ChatRequest, model: &str) -> Result<u64, ProviderError> {
        let mut body = Self::body(req, model)?;
        body.generation_config = None;
        let name = format!("models/{}", model.strip_prefix("models/").unwrap_or(model));
        let count = CountRequest { generate_content_request: CountedRequest { model: name, request: body } };
        let resp = self.up.send(self.post(model, "countTokens", &count), false, map_error).await?;
        let bytes = self.up.body(resp).await?;
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Count {
            /// proto3 JSON leaves a zero out
            #[serde(default)]
            total_tokens: u64,
        }
        let count: Count =
            serde_json::from_slice(&bytes).map_err(|e| ProviderError::Decode(format!("gemini token count: {e}")))?;
        Ok(count.total_tokens)
    }

    pub async fn chat_stream(&self, req: &ChatRequest, model: &str) -> Result<ChunkStream, ProviderError> {
        let body = Self::body(req, model)?;
        let resp = self.up.send(self.request(&body, model, true), true, map_error).await?;
        let deadline = tokio::time::Instant::now() + self.up.total_timeout;
        let mut state = StreamState::new(model, req.n.unwrap_or(1));
        let up = self.up.clone();
        Ok(decode_multi(resp, deadline, move |ev| {
            state.on_event(ev).map_err(|e| match e {
                ProviderError::Stream(m) => ProviderError::Stream(up.scrub(&m)),
                other => other,
            })
        }))
    }
}

/// Google's error body, `{"error":{"code","message","status"}}` (sometimes inside an array), as a
/// [`ProviderError::Status`]. An invalid key is a 400 at Google; we report it as the 401 it is, so
/// the dispatcher treats it as the gateway's credential problem rather than the client's mistake.
pub fn map_error(status: u16, retry_after: Option<std::time::Duration>, body: &str) -> ProviderError {
    // (serde would read an array into a struct by position, so the two shapes are told apart first)
    let parsed: Option<GError> = if body.trim_start().starts_with('[') {
        serde_json::from_str::<Vec<ErrorBody>>(body).ok().and_then(|v| v.into_iter().next()).map(|b| b.error)
    } else {
        serde_json::from_str::<ErrorBody>(body).ok().map(|b| b.error)
    };
    let Some(err) = parsed else {
        return ProviderError::Status { status, message: body.chars().take(300).collect(), retry_after };
    };
    let bad_key = err.details.iter().any(|d| d.get("reason").and_then(Value::as_str) == Some("API_KEY_INVALID"))
        || err.message.contains("API key not valid");
    let status = if bad_key { 401 } else { status };
    let message = if err.status.is_empty() { err.message } else { format!("{}: {}", err.status, err.message) };
    ProviderError::Status { status, message, retry_after }
}

// ---- request ----------------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GenerateRequest {
    pub contents: Vec<GContent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_instruction: Option<GContent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation_config: Option<GenerationConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<GTool>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_config: Option<GToolConfig>,
}

/// `countTokens`'s body: the call it would be, model named inside.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct CountRequest {
    generate_content_request: CountedRequest,
}

#[derive(Debug, Serialize)]
struct CountedRequest {
    model: String,
    #[serde(flatten)]
    request: GenerateRequest,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GContent {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    pub parts: Vec<Part>,
}

/// A part as sent: its one data field, and the thought signature Gemini gave it, if any.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Part {
    #[serde(flatten)]
    pub data: GPart,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thought_signature: Option<String>,
}

impl From<GPart> for Part {
    fn from(data: GPart) -> Self {
        Part { data, thought_signature: None }
    }
}

/// One part: exactly one of these keys, which is how serde writes an externally tagged enum.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub enum GPart {
    Text(String),
    InlineData(Blob),
    FileData(FileData),
    FunctionCall(GFunctionCall),
    FunctionResponse(GFunctionResponse),
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Blob {
    pub mime_type: String,
    pub data: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FileData {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    pub file_uri: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GFunctionCall {
    pub name: String,
    pub args: Value,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GFunctionResponse {
    pub name: String,
    pub response: Value,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GenerationConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_mime_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_json_schema: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking_config: Option<ThinkingConfig>,
}

/// Only `includeThoughts` is set: budgets and levels differ per Gemini generation (a wrong one is
/// a 400), so the model's own default applies.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ThinkingConfig {
    pub include_thoughts: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking_budget: Option<u64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GTool {
    pub function_declarations: Vec<FunctionDeclaration>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FunctionDeclaration {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters_json_schema: Option<Value>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GToolConfig {
    pub function_calling_config: FunctionCallingConfig,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FunctionCallingConfig {
    pub mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_function_names: Option<Vec<String>>,
}

/// The thought signature Google's guide says to send for a function call that Gemini 3 did not
/// make ("transferring a conversation trace from another model ... or injecting a custom function
/// call"): it skips the validation that would otherwise refuse the request.
pub const SKIP_SIGNATURE: &str = "skip_thought_signature_validator";

/// Gemini 3 requires a signature on the first `functionCall` of each model turn; the ones we
/// have came back inside the call id, the rest get [`SKIP_SIGNATURE`].
pub fn sign_foreign_calls(body: &mut GenerateRequest) {
    for turn in body.contents.iter_mut().filter(|c| c.role == Some("model")) {
        if let Some(part) = turn.parts.iter_mut().find(|p| matches!(p.data, GPart::FunctionCall(_))) {
            part.thought_signature.get_or_insert_with(|| SKIP_SIGNATURE.to_string());
        }
    }
}

/// The Gemini request for `req`. Fails (as a 400) only for what Gemini cannot express: a tool
/// result whose call is not in the conversation, non-object tool arguments, the `function` role.
pub fn to_gemini(req: &ChatRequest) -> Result<GenerateRequest, ProviderError> {
    let mut system: Vec<Part> = Vec::new();
    let mut contents: Vec<GContent> = Vec::with_capacity(req.messages.len());
    for (i, m) in req.messages.iter().enumerate() {
        let (role, parts) = match m.role {
            Role::System | Role::Developer => {
                let text = m.text_content();
                if !text.is_empty() {
                    system.push(GPart::Text(text).into());
                }
                continue;
            }
            Role::User => ("user", parts_of(content_parts(m.content.as_ref())?)),
            Role::Assistant => {
                let mut parts = parts_of(content_parts(m.content.as_ref())?);
                for call in m.tool_calls.iter().flatten() {
                    let (_, thought_signature) = split_call_id(&call.id);
                    parts.push(Part {
                        data: GPart::FunctionCall(GFunctionCall {
                            name: call.function.name.clone(),
                            args: arguments_object(&call.function.arguments)?,
                        }),
                        thought_signature,
                    });
                }
                ("model", parts)
            }
            Role::Tool => {
                let name = tool_name(&req.messages[..i], m).ok_or_else(|| {
                    ProviderError::unsupported(format!(
                        "gemini: tool message {:?} answers no tool call earlier in the conversation",
                        m.tool_call_id.as_deref().unwrap_or_default()
                    ))
                })?;
                ("user", vec![GPart::FunctionResponse(GFunctionResponse { name, response: tool_response(m) }).into()])
            }
            Role::Function => {
                return Err(ProviderError::unsupported(
                    "gemini: the legacy `function` role is not supported; use `tool` messages",
                ))
            }
        };
        if parts.is_empty() {
            continue;
        }
        match contents.last_mut() {
            Some(last) if last.role == Some(role) => last.parts.extend(parts),
            _ => contents.push(GContent { role: Some(role), parts }),
        }
    }

    let tools: Option<Vec<GTool>> = req.tools.as_ref().filter(|t| !t.is_empty()).map(|tools| {
        vec![GTool {
            function_declarations: tools
                .iter()
                .filter(|t| t.kind == "function")
                .map(|t| FunctionDeclaration {
                    name: t.function.name.clone(),
                    description: t.function.description.clone(),
                    parameters_json_schema: t.function.parameters.clone(),
                })
                .collect(),
        }]
    });
    let tool_config = match (&tools, &req.tool_choice) {
        (Some(_), Some(choice)) => Some(GToolConfig { function_calling_config: calling_config(choice) }),
        _ => None,
    };

    let (response_mime_type, response_json_schema) = response_format(req.response_format.as_ref());
    let config = GenerationConfig {
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.top_k(),
        max_output_tokens: req.max_output_tokens(),
        stop_sequences: req.stop.as_ref().map(|s| s.to_vec()).filter(|v| !v.is_empty()),
        candidate_count: req.n.filter(|&n| n > 1),
        seed: req.seed,
        presence_penalty: req.extra.get("presence_penalty").and_then(Value::as_f64),
        frequency_penalty: req.extra.get("frequency_penalty").and_then(Value::as_f64),
        response_mime_type,
        response_json_schema,
        thinking_config: wants_thoughts(req)
            .then(|| ThinkingConfig { include_thoughts: true, thinking_budget: thinking_budget(req) }),
    };

    Ok(GenerateRequest {
        contents,
        system_instruction: (!system.is_empty()).then_some(GContent { role: None, parts: system }),
        generation_config: (config != GenerationConfig::default()).then_some(config),
        tools,
        tool_config,
    })
}

fn parts_of(parts: Vec<GPart>) -> Vec<Part> {
    parts.into_iter().map(Part::from).collect()
}

/// A client that sets `reasoning_effort` (other than `none`), or Anthropic's `thinking` (as the
/// Messages API and LiteLLM clients send it), wants to see the reasoning.
fn wants_thoughts(req: &ChatRequest) -> bool {
    req.extra.get("reasoning_effort").and_then(Value::as_str).is_some_and(|e| e != "none")
        || req.thinking().is_some_and(|t| t["type"] != "disabled")
}

/// Anthropic's `thinking.budget_tokens` is Gemini's `thinkingBudget` (both cap the thinking tokens).
fn thinking_budget(req: &ChatRequest) -> Option<u64> {
    req.thinking().and_then(|t| t.get("budget_tokens")).and_then(Value::as_u64)
}

/// `auto | none | required | {"type":"function","function":{"name"}}` → `functionCallingConfig`.
fn calling_config(choice: &Value) -> FunctionCallingConfig {
    let mode = |mode| FunctionCallingConfig { mode, allowed_function_names: None };
    match choice {
        Value::String(s) => match s.as_str() {
            "none" => mode("NONE"),
            "required" => mode("ANY"),
            _ => mode("AUTO"),
        },
        v => match v.pointer("/function/name").and_then(Value::as_str) {
            Some(name) => FunctionCallingConfig { mode: "ANY", allowed_function_names: Some(vec![name.to_string()]) },
            None => mode("AUTO"),
        },
    }
}

/// `response_format` json_object / json_schema → `responseMimeType` (+ `responseJsonSchema`).
fn response_format(format: Option<&Value>) -> (Option<String>, Option<Value>) {
    match format.and_then(|f| f.get("type")).and_then(Value::as_str) {
        Some("json_object") => (Some("application/json".into()), None),
        Some("json_schema") => {
            (Some("application/json".into()), format.and_then(|f| f.pointer("/json_schema/schema")).cloned())
        }
        _ => (None, None),
    }
}

/// The function a tool message answers: the latest earlier assistant tool call with its id
/// (Gemini matches responses by name), else the message's own `name`.
fn tool_name(before: &[Message], tool: &Message) -> Option<String> {
    let id = tool.tool_call_id.as_deref()?;
    before
        .iter()
        .rev()
        .flat_map(|m| m.tool_calls.iter().flatten())
        .find(|c| c.id == id)
        .map(|c| c.function.name.clone())
        .or_else(|| tool.name.clone())
}

/// Gemini wants the result as a JSON object: a JSON object result goes as it is, anything else
/// under `output` (the key Google documents for a function's output).
fn tool_response(m: &Message) -> Value {
    let text = m.text_content();
    match serde_json::from_str::<Value>(&text) {
        Ok(v @ Value::Object(_)) => v,
        Ok(v) => json!({ "output": v }),
        Err(_) => json!({ "output": text }),
    }
}

fn content_parts(content: Option<&Content>) -> Result<Vec<GPart>, ProviderError> {
    match content {
        None => Ok(Vec::new()),
        Some(Content::Text(t)) if t.is_empty() => Ok(Vec::new()),
        Some(Content::Text(t)) => Ok(vec![GPart::Text(t.clone())]),
        Some(Content::Parts(parts)) => {
            let mut out = Vec::with_capacity(parts.len());
            for p in parts {
                match p {
                    ContentPart::Text { text, .. } if text.is_empty() => {}
                    ContentPart::Text { text, .. } => out.push(GPart::Text(text.clone())),
                    ContentPart::ImageUrl { image_url, .. } => out.push(media_part(&image_url.url)),
                    ContentPart::InputAudio { input_audio } => {
                        let data = input_audio.get("data").and_then(Value::as_str).unwrap_or_default();
                        let format = input_audio.get("format").and_then(Value::as_str).unwrap_or("wav");
                        out.push(GPart::InlineData(Blob { mime_type: format!("audio/{format}"), data: data.into() }));
                    }
                    ContentPart::File { file, .. } => match file.get("file_data").and_then(Value::as_str) {
                        Some(url) if parse_data_url(url).is_some() => out.push(media_part(url)),
                        _ => {
                            return Err(ProviderError::unsupported(
                                "gemini: file parts must carry `file_data` as a base64 data URL",
                            ))
                        }
                    },
                    ContentPart::Unknown => {
                        return Err(ProviderError::unsupported("gemini: unknown content part type"))
                    }
                }
            }
            Ok(out)
        }
    }
}

/// A data URL as inline bytes; any other URL as `fileData` (Gemini fetches it).
fn media_part(url: &str) -> GPart {
    match parse_data_url(url) {
        Some((mime, data)) => GPart::InlineData(Blob { mime_type: mime.to_string(), data: data.to_string() }),
        None => GPart::FileData(FileData { mime_type: guess_mime(url), file_uri: url.to_string() }),
    }
}

fn guess_mime(url: &str) -> Option<String> {
    let path = url.split(['?', '#']).next().unwrap_or(url).to_ascii_lowercase();
    let ext = path.rsplit('.').next()?;
    let mime = match ext {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "heic" => "image/heic",
        "pdf" => "application/pdf",
        _ => return None,
    };
    Some(mime.to_string())
}

// ---- response ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateResponse {
    #[serde(default)]
    pub candidates: Vec<Candidate>,
    #[serde(default)]
    pub prompt_feedback: Option<PromptFeedback>,
    #[serde(default)]
    pub usage_metadata: Option<UsageMetadata>,
    #[serde(default)]
    pub model_version: Option<String>,
    #[serde(default)]
    pub response_id: Option<String>,
    /// Only in a stream, where a failure arrives as an event.
    #[serde(default)]
    error: Option<GError>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    #[serde(default)]
    pub content: Option<RespContent>,
    #[serde(default)]
    pub finish_reason: Option<String>,
    #[serde(default)]
    pub index: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RespContent {
    #[serde(default)]
    pub parts: Vec<RespPart>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RespPart {
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub thought: Option<bool>,
    #[serde(default)]
    pub function_call: Option<RespFunctionCall>,
    #[serde(default)]
    pub thought_signature: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RespFunctionCall {
    #[serde(default)]
    pub id: Option<String>,
    pub name: String,
    #[serde(default)]
    pub args: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromptFeedback {
    #[serde(default)]
    pub block_reason: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageMetadata {
    #[serde(default)]
    pub prompt_token_count: u64,
    #[serde(default)]
    pub candidates_token_count: u64,
    #[serde(default)]
    pub thoughts_token_count: u64,
    #[serde(default)]
    pub tool_use_prompt_token_count: u64,
    #[serde(default)]
    pub total_token_count: Option<u64>,
    /// Prompt tokens served from Gemini's (implicit or explicit) context cache.
    #[serde(default)]
    pub cached_content_token_count: Option<u64>,
}

impl UsageMetadata {
    /// Thinking tokens are billed as output, as OpenAI counts reasoning tokens in completion_tokens.
    pub fn to_usage(self) -> Usage {
        // saturating: the counts come from the upstream, and u64::MAX + 1 must not panic
        let prompt = self.prompt_token_count.saturating_add(self.tool_use_prompt_token_count);
        let completion = self.candidates_token_count.saturating_add(self.thoughts_token_count);
        let mut usage = Usage::new(prompt, completion);
        usage.prompt_tokens_details =
            self.cached_content_token_count.map(|cached_tokens| crate::api::PromptTokensDetails { cached_tokens });
        usage.completion_tokens_details =
            (self.thoughts_token_count > 0).then(|| crate::api::CompletionTokensDetails {
                reasoning_tokens: Some(self.thoughts_token_count),
                ..Default::default()
            });
        usage
    }
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: GError,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct GError {
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    details: Vec<Value>,
}

/// Gemini's `finishReason` as an OpenAI `finish_reason`; `tool_calls` when the turn ended in calls.
pub fn finish_reason(reason: &str, has_calls: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION" => "content_filter",
        _ if has_calls => "tool_calls",
        _ => "stop",
    }
}

/// Gemini seldom gives calls an id; OpenAI clients need one to answer with, unique in the thread.
fn call_id(given: Option<String>) -> String {
    given
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("call_{}", &uuid::Uuid::new_v4().simple().to_string()[..24]))
}

fn tool_call(fc: RespFunctionCall, signature: Option<&str>) -> ToolCall {
    let arguments = match &fc.args {
        None | Some(Value::Null) => "{}".to_string(),
        Some(v) => serde_json::to_string(v).unwrap_or_else(|_| "{}".to_string()),
    };
    let id = encode_call_id(&call_id(fc.id), signature);
    ToolCall { id, kind: "function".into(), function: FunctionCall { name: fc.name, arguments } }
}

/// One candidate's parts split into answer text, thought text and tool calls.
fn split_parts(parts: Vec<RespPart>) -> (String, String, Vec<ToolCall>) {
    let (mut text, mut thoughts, mut calls) = (String::new(), String::new(), Vec::new());
    for part in parts {
        if part.thought == Some(true) {
            if let Some(t) = part.text {
                thoughts.push_str(&t);
            }
            continue;
        }
        if let Some(t) = part.text {
            text.push_str(&t);
        }
        if let Some(fc) = part.function_call {
            calls.push(tool_call(fc, part.thought_signature.as_deref()));
        }
    }
    (text, thoughts, calls)
}

pub fn from_gemini(resp: GenerateResponse, requested_model: &str) -> ChatResponse {
    let mut choices = Vec::with_capacity(resp.candidates.len().max(1));
    for (pos, cand) in resp.candidates.into_iter().enumerate() {
        let (text, thoughts, calls) = split_parts(cand.content.map(|c| c.parts).unwrap_or_default());
        let finish = finish_reason(cand.finish_reason.as_deref().unwrap_or("STOP"), !calls.is_empty());
        choices.push(Choice {
            index: cand.index.unwrap_or(pos as u32),
            message: AssistantMessage {
                role: "assistant".into(),
                content: (calls.is_empty() || !text.is_empty()).then_some(text),
                reasoning_content: (!thoughts.is_empty()).then_some(thoughts),
                thinking_blocks: None,
                tool_calls: (!calls.is_empty()).then_some(calls),
                refusal: None,
            },
            finish_reason: Some(finish.to_string()),
            logprobs: None,
        });
    }
    if choices.is_empty() {
        // the prompt itself was blocked (promptFeedback.blockReason): no candidates at all
        choices.push(Choice {
            index: 0,
            message: AssistantMessage::empty(),
            finish_reason: Some("content_filter".into()),
            logprobs: None,
        });
    }
    ChatResponse {
        id: resp.response_id.map_or_else(new_id, |r| format!("chatcmpl-{r}")),
        object: "chat.completion".into(),
        created: unix_now(),
        model: resp.model_version.unwrap_or_else(|| requested_model.to_string()),
        choices,
        usage: Some(resp.usage_metadata.unwrap_or_default().to_usage()),
        system_fingerprint: None,
        extra: Default::default(),
    }
}

fn new_id() -> String {
    format!("chatcmpl-{}", uuid::Uuid::new_v4().simple())
}

// ---- stream -----------------------------------------------------------------------------------

/// Per-candidate progress in a stream.
#[derive(Debug, Clone, Copy, Default)]
struct CandidateState {
    role_sent: bool,
    calls: u32,
    finished: bool,
}

/// Translates one Gemini stream (each SSE event a whole `GenerateContentResponse`) into chunks.
/// Gemini repeats the running `usageMetadata` on events; the usage chunk is sent once, when every
/// expected candidate has finished.
#[derive(Debug)]
pub struct StreamState {
    ids: ChunkIds,
    id_set: bool,
    expected: u32,
    candidates: Vec<CandidateState>,
    usage: Usage,
    usage_sent: bool,
}

impl StreamState {
    pub fn new(requested_model: &str, n: u32) -> Self {
        StreamState {
            ids: ChunkIds { id: new_id(), created: unix_now(), model: requested_model.to_string() },
            id_set: false,
            expected: n.max(1),
            candidates: Vec::new(),
            usage: Usage::default(),
            usage_sent: false,
        }
    }

    fn candidate(&mut self, index: u32) -> &mut CandidateState {
        let i = index as usize;
        if self.candidates.len() <= i {
            self.candidates.resize(i + 1, CandidateState::default());
        }
        &mut self.candidates[i]
    }

    fn chunk(&mut self, index: u32, mut delta: Delta, finish: Option<String>) -> ChatChunk {
        let c = self.candidate(index);
        if !c.role_sent {
            c.role_sent = true;
            delta.role = Some("assistant".into());
        }
        self.ids.chunk(index, delta, finish)
    }

    pub fn on_event(&mut self, ev: &SseEvent) -> Result<Vec<ChatChunk>, ProviderError> {
        if ev.data.trim().is_empty() || ev.data.trim() == "[DONE]" {
            return Ok(Vec::new());
        }
        let resp: GenerateResponse =
            serde_json::from_str(&ev.data).map_err(|e| ProviderError::Decode(format!("gemini stream event: {e}")))?;
        if let Some(err) = resp.error {
            let message = if err.status.is_empty() { err.message } else { format!("{}: {}", err.status, err.message) };
            return Err(ProviderError::Stream(message));
        }
        if !self.id_set {
            self.id_set = true;
            if let Some(r) = &resp.response_id {
                self.ids.id = format!("chatcmpl-{r}");
            }
            if let Some(m) = &resp.model_version {
                self.ids.model.clone_from(m);
            }
        }
        if let Some(u) = resp.usage_metadata {
            self.usage = u.to_usage();
        }
        let mut out = Vec::new();
        let blocked = resp.candidates.is_empty() && resp.prompt_feedback.is_some_and(|f| f.block_reason.is_some());
        if blocked {
            for i in 0..self.expected {
                self.candidate(i).finished = true;
                out.push(self.chunk(i, Delta::default(), Some("content_filter".into())));
            }
        }
        for (pos, cand) in resp.candidates.into_iter().enumerate() {
            let index = cand.index.unwrap_or(pos as u32);
            if index >= crate::api::MAX_CHOICES {
                // one state slot per index up to it: a hostile index would allocate gigabytes
                return Err(ProviderError::Decode(format!(
                    "gemini stream event: candidate index {index} out of range"
                )));
            }
            let (text, thoughts, calls) = split_parts(cand.content.map(|c| c.parts).unwrap_or_default());
            if !thoughts.is_empty() {
                out.push(self.chunk(index, Delta { reasoning_content: Some(thoughts), ..Delta::default() }, None));
            }
            if !text.is_empty() {
                out.push(self.chunk(index, Delta { content: Some(text), ..Delta::default() }, None));
            }
            for call in calls {
                let k = self.candidate(index).calls;
                self.candidate(index).calls += 1;
                let delta = Delta {
                    tool_calls: Some(vec![ToolCallDelta {
                        index: k,
                        id: Some(call.id),
                        kind: Some("function".into()),
                        function: Some(FunctionCallDelta {
                            name: Some(call.function.name),
                            arguments: Some(call.function.arguments),
                        }),
                    }]),
                    ..Delta::default()
                };
                out.push(self.chunk(index, delta, None));
            }
            if let Some(reason) = cand.finish_reason.as_deref().filter(|r| !r.is_empty()) {
                let has_calls = self.candidate(index).calls > 0;
                self.candidate(index).finished = true;
                out.push(self.chunk(index, Delta::default(), Some(finish_reason(reason, has_calls).to_string())));
            }
        }
        let finished = self.candidates.iter().filter(|c| c.finished).count() as u32;
        if !self.usage_sent && finished >= self.expected {
            self.usage_sent = true;
            out.push(self.ids.usage_chunk(self.usage));
        }
        Ok(out)
    }
}

#[cfg(test)]
#[path = "gemini_tests.rs"]
mod tests;
