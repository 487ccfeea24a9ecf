//! Upstream providers. Each adapter translates our OpenAI-shaped request to its provider's wire
//! format and back, streaming included; [`dispatch`] adds retries, circuit breakers and failover.

pub mod anthropic;
pub mod dispatch;
pub mod estimate;
pub mod gemini;
pub mod openai;
pub mod sse;
mod wire;

use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;

use crate::api::{ChatChunk, ChatRequest, ChatResponse};
use crate::config::{ProviderConfig, ProviderKind, Secret};

pub use dispatch::{Dispatcher, Outcome};

/// A stream of OpenAI-shaped chunks from an upstream.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<ChatChunk, ProviderError>> + Send>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPhase {
    Connect,
    FirstByte,
    Total,
}

/// What went wrong talking to one deployment. Messages never contain the provider key.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ProviderError {
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("timed out ({0:?})")]
    Timeout(TimeoutPhase),
    #[error("HTTP {status}: {message}")]
    Status { status: u16, message: String, retry_after: Option<Duration> },
    #[error("unreadable response: {0}")]
    Decode(String),
    #[error("stream broke: {0}")]
    Stream(String),
    /// The adapter cannot express this request in its provider's API (e.g. `n > 1` for
    /// Anthropic). No call was made; another deployment of the tier may still serve it.
    #[error("cannot be sent to this provider: {0}")]
    Unsupported(String),
    /// The deployment refused the prompt as too long for its model's context window (with the
    /// room asked for the answer). Neither a fault of the deployment nor of the request: another
    /// deployment, with a larger window, may take it, so dispatch moves on instead of giving up.
    #[error("the prompt does not fit this model's context window: {0}")]
    ContextOverflow(String),
}

/// Whether an upstream's refusal says the prompt does not fit the model's context window, in the
/// words each provider uses: OpenAI and the servers that copy its API (vLLM, DeepSeek, Mistral:
/// "maximum context length", newer OpenAI models "exceeds the context window", the code
/// `context_length_exceeded`), Anthropic ("prompt is too long", "exceed context limit"), Gemini
/// ("input token count … exceeds the maximum number of tokens allowed"), llama.cpp ("exceeds the
/// available context size"). A false positive costs one more deployment's 400, never an answer.
pub fn is_context_overflow(status: u16, message: &str) -> bool {
    const SIGNS: [&str; 7] = [
        "context_length_exceeded",
        "maximum context length",
        "context window",
        "prompt is too long",
        "exceed context limit",
        "exceeds the maximum number of tokens",
        "exceeds the available context size",
    ];
    if !matches!(status, 400 | 413 | 422) {
        return false;
    }
    let m = message.to_ascii_lowercase();
    SIGNS.iter().any(|s| m.contains(s))
}

impl ProviderError {
    /// Transient: worth another try on the same or another deployment.
    pub fn retryable(&self) -> bool {
        match self {
            // an unreadable 200 (truncated or garbled JSON) is the deployment's fault, not the
            // request's: another try, here or on the next deployment, is what the client needs
            ProviderError::Connect(_)
            | ProviderError::Timeout(_)
            | ProviderError::Stream(_)
            | ProviderError::Decode(_) => true,
            ProviderError::Status { status, .. } => {
                matches!(status, 408 | 409 | 429 | 500 | 502 | 503 | 504 | 529)
            }
            ProviderError::Unsupported(_) | ProviderError::ContextOverflow(_) => false,
        }
    }

    /// A request the adapter cannot express in its provider's API (e.g. `n > 1` for Anthropic),
    /// found before spending an upstream call. Dispatch moves on to the tier's next deployment;
    /// if none can serve it, the client gets the 400 the provider would have given.
    pub fn unsupported(message: impl Into<String>) -> Self {
        ProviderError::Unsupported(message.into())
    }

    /// The same error with `key` replaced by `*****` wherever a message could carry it (an
    /// upstream's error text, a decoder's quote of an unexpected value, a broken stream's event).
    pub fn scrubbed(self, key: Option<&Secret>) -> Self {
        let Some(k) = key.map(Secret::expose).filter(|k| !k.is_empty()) else { return self };
        let clean = |m: String| if m.contains(k) { m.replace(k, "*****") } else { m };
        match self {
            ProviderError::Connect(m) => ProviderError::Connect(clean(m)),
            ProviderError::Status { status, message, retry_after } => {
                ProviderError::Status { status, message: clean(message), retry_after }
            }
            ProviderError::Decode(m) => ProviderError::Decode(clean(m)),
            ProviderError::Stream(m) => ProviderError::Stream(clean(m)),
            ProviderError::Unsupported(m) => ProviderError::Unsupported(clean(m)),
            ProviderError::ContextOverflow(m) => ProviderError::ContextOverflow(clean(m)),
            t @ ProviderError::Timeout(_) => t,
        }
    }

    fn from_reqwest(e: reqwest::Error, phase: TimeoutPhase) -> Self {
        if e.is_timeout() {
            ProviderError::Timeout(phase)
        } else if e.is_connect() {
            ProviderError::Connect(root_cause(&e))
        } else if e.is_decode() || e.is_body() {
            ProviderError::Stream(root_cause(&e))
        } else {
            ProviderError::Connect(root_cause(&e))
        }
    }
}

/// The innermost error message, without the URL reqwest prepends (URLs may carry keys in query
/// strings for some providers; we never put keys there, but we do not print them either way).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Parses `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(when.duration_since(std::time::SystemTime::now()).unwrap_or(Duration::ZERO))
}

/// The settings every adapter shares: one pooled client per provider, its timeouts, its key.
#[derive(Clone)]
pub struct Upstream {
    pub name: String,
    pub base_url: String,
    pub key: Option<Secret>,
    pub http: reqwest::Client,
    pub first_byte_timeout: Duration,
    pub total_timeout: Duration,
    pub config: ProviderConfig,
    /// `config.headers`, parsed once (validated with the config).
    headers: reqwest::header::HeaderMap,
}

impl Upstream {
    pub fn new(name: &str, config: &ProviderConfig, key: Option<Secret>) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout.0)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .build()?;
        Ok(Upstream {
            name: name.to_string(),
            base_url: config.base_url.trim_end_matches('/').to_string(),
            key,
            http,
            first_byte_timeout: config.first_byte_timeout.0,
            total_timeout: config.total_timeout.0,
            config: config.clone(),
            headers: config
                .headers
                .iter()
                .filter_map(|(k, v)| {
                    Some((reqwest::header::HeaderName::from_bytes(k.as_bytes()).ok()?, v.parse().ok()?))
                })
                .collect(),
        })
    }

    /// `providers.<name>` as configured: its key resolved (an error names the key), its client built.
    pub fn configured(name: &str, config: &ProviderConfig) -> Result<Self, String> {
        let key = match &config.api_key {
            Some(spec) => Some(spec.resolve(&format!("providers.{name}.api_key")).map_err(|e| e.to_string())?),
            None => None,
        };
        Upstream::new(name, config, key).map_err(|e| format!("providers.{name}: {e}"))
    }

    /// A POST to `url` with the provider's configured headers (most providers have none: no
    /// copy is made for them).
    pub fn post(&self, url: impl reqwest::IntoUrl) -> reqwest::RequestBuilder {
        let rb = self.http.post(url);
        if self.headers.is_empty() {
            rb
        } else {
            rb.headers(self.headers.clone())
        }
    }

    /// A configured header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Removes the provider key from any text that is about to leave the adapter.
    pub fn scrub(&self, text: &str) -> String {
        match &self.key {
            Some(k) if !k.expose().is_empty() => text.replace(k.expose(), "*****"),
            _ => text.to_string(),
        }
    }

    /// Reads an error response into a [`ProviderError::Status`], keeping the provider's message.
    pub async fn error_from(&self, resp: reqwest::Response) -> ProviderError {
        let status = resp.status().as_u16();
        let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
        let body = resp.text().await.unwrap_or_default();
        let parsed = serde_json::from_str::<serde_json::Value>(&body).ok();
        let message = parsed
            .as_ref()
            .and_then(|v| {
                v.pointer("/error/message")
                    .or_else(|| v.pointer("/message"))
                    .and_then(|m| m.as_str().map(str::to_string))
            })
            .unwrap_or_else(|| body.chars().take(300).collect());
        let code = parsed.as_ref().and_then(|v| v.pointer("/error/code")).and_then(|c| c.as_str());
        let message = self.scrub(&message);
        if code == Some("context_length_exceeded") || is_context_overflow(status, &message) {
            return ProviderError::ContextOverflow(message);
        }
        ProviderError::Status { status, message, retry_after }
    }

    /// Sends a request under the first-byte timeout (and, for non-streams, the total timeout).
    /// A non-2xx answer becomes the error `map_error(status, retry_after, body)` describes, with
    /// the key scrubbed from its message.
    pub async fn send(
        &self,
        rb: reqwest::RequestBuilder,
        stream: bool,
        map_error: fn(u16, Option<Duration>, &str) -> ProviderError,
    ) -> Result<reqwest::Response, ProviderError> {
        let rb = if stream { rb } else { rb.timeout(self.total_timeout) };
        let phase = if stream { TimeoutPhase::Connect } else { TimeoutPhase::Total };
        let resp = tokio::time::timeout(self.first_byte_timeout, rb.send())
            .await
            .map_err(|_| ProviderError::Timeout(TimeoutPhase::FirstByte))?
            .map_err(|e| ProviderError::from_reqwest(e, phase))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
        let body = resp.text().await.unwrap_or_default();
        Err(match map_error(status, retry_after, &body) {
            ProviderError::Status { status, message, .. } if is_context_overflow(status, &message) => {
                ProviderError::ContextOverflow(self.scrub(&message))
            }
            ProviderError::Status { status, message, retry_after } => {
                ProviderError::Status { status, message: self.scrub(&message), retry_after }
            }
            other => other,
        })
    }

    /// Reads a whole (non-streamed) success body, under the total timeout set by [`Upstream::send`].
    pub async fn body(&self, resp: reqwest::Response) -> Result<bytes::Bytes, ProviderError> {
        resp.bytes().await.map_err(|e| ProviderError::from_reqwest(e, TimeoutPhase::Total))
    }
}

/// A request's input tokens: counted by the provider, or `estimated` here (OpenAI-compatible).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenCount {
    pub tokens: u64,
    pub estimated: bool,
}

/// The provider kinds. An enum, not a trait object: the set is closed and known at build time.
pub enum Provider {
    OpenAi(openai::OpenAi),
    Anthropic(anthropic::Anthropic),
    Gemini(gemini::Gemini),
}

impl Provider {
    pub fn new(name: &str, config: &ProviderConfig) -> Result<Provider, String> {
        let up = Upstream::configured(name, config)?;
        Ok(match config.kind {
            ProviderKind::Openai => Provider::OpenAi(openai::OpenAi::new(up, false)),
            ProviderKind::Azure => Provider::OpenAi(openai::OpenAi::new(up, true)),
            ProviderKind::Anthropic => Provider::Anthropic(anthropic::Anthropic::new(up)),
            ProviderKind::Gemini => Provider::Gemini(gemini::Gemini::new(up)),
        })
    }

    pub fn name(&self) -> &str {
        match self {
            Provider::OpenAi(p) => &p.up.name,
            Provider::Anthropic(p) => &p.up.name,
            Provider::Gemini(p) => &p.up.name,
        }
    }

    fn key(&self) -> Option<&Secret> {
        match self {
            Provider::OpenAi(p) => p.up.key.as_ref(),
            Provider::Anthropic(p) => p.up.key.as_ref(),
            Provider::Gemini(p) => p.up.key.as_ref(),
        }
    }

    /// Every error leaves through here with the provider key scrubbed from its message: the one
    /// place that covers all adapters and every error kind. (An OpenAI-wire upstream that quoted
    /// the key in a mid-stream error event reached the client's error event and the logs before
    /// this existed; `tests/secrets.rs` found it.)
    pub async fn chat(&self, req: &ChatRequest, model: &str) -> Result<ChatResponse, ProviderError> {
        let r = match self {
            Provider::OpenAi(p) => p.chat(req, model).await,
            Provider::Anthropic(p) => p.chat(req, model).await,
            Provider::Gemini(p) => p.chat(req, model).await,
        };
        r.map_err(|e| e.scrubbed(self.key()))
    }

    /// As [`Provider::chat`]: the error that fails the call and every error item of the stream
    /// are scrubbed.
    pub async fn chat_stream(&self, req: &ChatRequest, model: &str) -> Result<ChunkStream, ProviderError> {
        use futures_util::StreamExt;
        let r = match self {
            Provider::OpenAi(p) => p.chat_stream(req, model).await,
            Provider::Anthropic(p) => p.chat_stream(req, model).await,
            Provider::Gemini(p) => p.chat_stream(req, model).await,
        };
        let key = self.key().cloned();
        match r {
            Ok(stream) => Ok(Box::pin(stream.map(move |item| item.map_err(|e| e.scrubbed(key.as_ref()))))),
            Err(e) => Err(e.scrubbed(key.as_ref())),
        }
    }

    /// The input tokens the provider counts for `req`, by its count endpoint (Anthropic's
    /// `count_tokens`, Gemini's `countTokens`). OpenAI-compatible APIs have none for a chat
    /// request: theirs is estimated here, without a call ([`estimate`]), on a blocking thread (a
    /// body of a few MB is a second of encoding).
    pub async fn count_tokens(&self, req: &ChatRequest, model: &str) -> Result<TokenCount, ProviderError> {
        let counted = |tokens| TokenCount { tokens, estimated: false };
        let r = match self {
            Provider::Anthropic(p) => p.count_tokens(req, model).await.map(counted),
            Provider::Gemini(p) => p.count_tokens(req, model).await.map(counted),
            Provider::OpenAi(_) => {
                let req = req.clone();
                match tokio::task::spawn_blocking(move || estimate::input_tokens(&req)).await {
                    Ok(r) => r.map(|tokens| TokenCount { tokens, estimated: true }),
                    Err(e) => Err(ProviderError::unsupported(format!("the token estimate failed: {e}"))),
                }
            }
        };
        r.map_err(|e| e.scrubbed(self.key()))
    }

    /// Embeddings in OpenAI's format (OpenAI-compatible and Azure providers; the config refuses
    /// the others for `[embeddings]`, so they answer as unable, with no call).
    pub async fn embeddings(&self, body: &serde_json::Value, model: &str) -> Result<serde_json::Value, ProviderError> {
        let r = match self {
            Provider::OpenAi(p) => p.embeddings(body, model).await,
            Provider::Anthropic(_) | Provider::Gemini(_) => {
                Err(ProviderError::unsupported("this provider has no OpenAI-format embeddings API"))
            }
        };
        r.map_err(|e| e.scrubbed(self.key()))
    }

    pub fn first_byte_timeout(&self) -> Duration {
        match self {
            Provider::OpenAi(p) => p.up.first_byte_timeout,
            Provider::Anthropic(p) => p.up.first_byte_timeout,
            Provider::Gemini(p) => p.up.first_byte_timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_for_length_are_told_in_each_providers_words() {
        for m in [
            // OpenAI (older and newer models), vLLM, DeepSeek
            "This model's maximum context length is 128000 tokens. However, your messages resulted in 130412 tokens.",
            "Your input exceeds the context window of this model. Please adjust your input and try again.",
            // Mistral
            "Prompt contains 40000 tokens and 0 draft tokens, too large for model with 32768 maximum context length",
            // Anthropic (as the adapter words it: type, then message)
            "invalid_request_error: prompt is too long: 215000 tokens > 200000 maximum",
            "invalid_request_error: input length and `max_tokens` exceed context limit: 198000 + 8192 > 200000",
            // Gemini
            "INVALID_ARGUMENT: The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
            // llama.cpp's server
            "the request exceeds the available context size, try increasing it",
        ] {
            assert!(is_context_overflow(400, m), "{m}");
        }
        assert!(!is_context_overflow(500, "This model's maximum context length is 8192 tokens"));
        for m in ["max_tokens: Field required", "Invalid value for 'temperature'", "messages: roles must alternate"] {
            assert!(!is_context_overflow(400, m), "{m}");
        }
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        let later = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(30));
        let d = parse_retry_after(&later).unwrap();
        assert!(d <= Duration::from_secs(30) && d >= Duration::from_secs(28));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn every_error_kind_is_scrubbed_of_the_key() {
        let key = Secret::new("sk-live-0123456789");
        // serde_json quotes the offending value: a malformed success body can carry the key
        let decode = serde_json::from_str::<u64>("\"sk-live-0123456789\"").unwrap_err().to_string();
        assert!(decode.contains("sk-live-0123456789"), "{decode}");
        for e in [
            ProviderError::Decode(decode),
            ProviderError::Stream("aborted for Bearer sk-live-0123456789".into()),
            ProviderError::Connect("sk-live-0123456789".into()),
            ProviderError::Unsupported("sk-live-0123456789".into()),
            ProviderError::Status { status: 401, message: "bad key sk-live-0123456789".into(), retry_after: None },
        ] {
            let s = e.scrubbed(Some(&key)).to_string();
            assert!(!s.contains("sk-live-0123456789") && s.contains("*****"), "{s}");
        }
        assert_eq!(ProviderError::Stream("x".into()).scrubbed(None), ProviderError::Stream("x".into()));
    }

    #[test]
    fn what_is_retryable() {
        let s = |status| ProviderError::Status { status, message: String::new(), retry_after: None };
        for st in [408, 409, 429, 500, 502, 503, 504, 529] {
            assert!(s(st).retryable(), "{st}");
        }
        for st in [400, 401, 403, 404, 422] {
            assert!(!s(st).retryable(), "{st}");
        }
    }
}
