//! The OpenAI-compatible adapter: OpenAI itself and everything that speaks its API by `base_url`
//! (DeepSeek, Mistral, Groq, Together, OpenRouter, vLLM, Ollama, llama.cpp server), and Azure
//! OpenAI as a variant (deployment in the path, `api-version` query, `api-key` header).
//!
//! The request goes out as the client sent it, unknown fields included, with only `model` (and,
//! for streams, `stream_options.include_usage`, so we can price the call) changed, and tool call
//! ids stripped of state they carry for Gemini (`wire::encode_call_id`). Reasoning comes back as
//! `reasoning_content` whether the upstream calls it that or `reasoning` (`api::AssistantMessage`).

use futures_util::StreamExt;
use serde_json::Value;

use super::sse::SseDecoder;
use super::{ChunkStream, ProviderError, TimeoutPhase, Upstream};
use crate::api::{ChatChunk, ChatRequest, ChatResponse};

pub struct OpenAi {
    pub up: Upstream,
    azure: bool,
}

impl OpenAi {
    pub fn new(up: Upstream, azure: bool) -> Self {
        OpenAi { up, azure }
    }

    /// A POST of `body` to the API's `path` (`chat/completions`, `embeddings`) for `model`.
    fn request(&self, body: &Value, model: &str, path: &str) -> reqwest::RequestBuilder {
        let (url, mut rb);
        if self.azure {
            let version = self.up.config.api_version.clone().unwrap_or_default();
            url = format!("{}/openai/deployments/{model}/{path}", self.up.base_url);
            rb = self.up.post(url).query(&[("api-version", version)]);
            if let Some(k) = &self.up.key {
                rb = rb.header("api-key", k.expose());
            }
        } else {
            url = format!("{}/{path}", self.up.base_url);
            rb = self.up.post(url);
            if let Some(k) = &self.up.key {
                rb = rb.bearer_auth(k.expose());
            }
        }
        rb.json(body)
    }

    /// The request body to send: the client's, with our model and stream settings.
    pub fn to_openai(req: &ChatRequest, model: &str, stream: bool) -> Value {
        let mut out = req.clone();
        out.model = model.to_string();
        // ids that carry another provider's state (a conversation begun on Gemini) go bare:
        // OpenAI caps tool call ids at 40 characters
        for m in &mut out.messages {
            for call in m.tool_calls.iter_mut().flatten() {
                call.id = super::wire::bare_call_id(&call.id).to_string();
            }
            if let Some(id) = &mut m.tool_call_id {
                *id = super::wire::bare_call_id(id).to_string();
            }
            // Anthropic's signed thinking (a turn answered by Anthropic, carried back by the
            // client or by a stored Responses conversation) means nothing here, and a strict
            // server refuses message fields it does not know
            m.extra.remove("thinking_blocks");
        }
        if stream {
            out.stream = Some(true);
            out.stream_options = Some(crate::api::StreamOptions { include_usage: true });
        } else {
            out.stream = None;
            out.stream_options = None;
        }
        serde_json::to_value(out).unwrap_or(Value::Null)
    }

    /// A whole (non-streamed) JSON call: `body` to `path` for `model`, under the first-byte and
    /// total timeouts; the answer's bytes, or the provider's error.
    async fn call(&self, body: &Value, model: &str, path: &str) -> Result<bytes::Bytes, ProviderError> {
        let send = self.request(body, model, path).timeout(self.up.total_timeout).send();
        let resp = tokio::time::timeout(self.up.first_byte_timeout, send)
            .await
            .map_err(|_| ProviderError::Timeout(TimeoutPhase::FirstByte))?
            .map_err(|e| ProviderError::from_reqwest(e, TimeoutPhase::Total))?;
        if !resp.status().is_success() {
            return Err(self.up.error_from(resp).await);
        }
        resp.bytes().await.map_err(|e| ProviderError::from_reqwest(e, TimeoutPhase::Total))
    }

    pub async fn chat(&self, req: &ChatRequest, model: &str) -> Result<ChatResponse, ProviderError> {
        let bytes = self.call(&Self::to_openai(req, model, false), model, "chat/completions").await?;
        serde_json::from_slice(&bytes).map_err(|e| ProviderError::Decode(e.to_string()))
    }

    /// `POST /embeddings` with the client's body (its `input`, `dimensions`, `encoding_format`,
    /// `user` as sent) for `model`. The answer must be OpenAI's list of embeddings; it goes back
    /// to the client as the upstream wrote it.
    pub async fn embeddings(&self, body: &Value, model: &str) -> Result<Value, ProviderError> {
        let mut body = body.clone();
        body["model"] = Value::String(model.to_string());
        let bytes = self.call(&body, model, "embeddings").await?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| ProviderError::Decode(e.to_string()))?;
        if !v["data"].is_array() {
            return Err(ProviderError::Decode("an embeddings answer without a `data` list".into()));
        }
        Ok(v)
    }

    pub async fn chat_stream(&self, req: &ChatRequest, model: &str) -> Result<ChunkStream, ProviderError> {
        let body = Self::to_openai(req, model, true);
        let send = self.request(&body, model, "chat/completions").send();
        let resp = tokio::time::timeout(self.up.first_byte_timeout, send)
            .await
            .map_err(|_| ProviderError::Timeout(TimeoutPhase::FirstByte))?
            .map_err(|e| ProviderError::from_reqwest(e, TimeoutPhase::Connect))?;
        if !resp.status().is_success() {
            return Err(self.up.error_from(resp).await);
        }
        let deadline = tokio::time::Instant::now() + self.up.total_timeout;
        Ok(decode_stream(resp, deadline, parse_stream_event))
    }
}

/// One event of an OpenAI stream: a chunk, `None` at `[DONE]`, or the error event an upstream
/// sends mid-stream.
pub fn parse_stream_event(data: &str) -> Result<Option<ChatChunk>, ProviderError> {
    if data.trim() == "[DONE]" {
        return Ok(None);
    }
    let v: Value = serde_json::from_str(data).map_err(|e| ProviderError::Decode(e.to_string()))?;
    if let Some(err) = v.get("error") {
        let message = err.get("message").and_then(Value::as_str).unwrap_or("upstream error");
        return Err(ProviderError::Stream(message.to_string()));
    }
    let chunk = serde_json::from_value::<ChatChunk>(v).map_err(|e| ProviderError::Decode(e.to_string()))?;
    check_indices(&chunk)?;
    Ok(Some(chunk))
}

/// A chunk whose choice or tool-call index is out of range is a broken stream, not a reason to
/// allocate a slot for every index below it.
fn check_indices(chunk: &ChatChunk) -> Result<(), ProviderError> {
    for c in &chunk.choices {
        if c.index >= crate::api::MAX_CHOICES {
            return Err(ProviderError::Decode(format!("choice index {} out of range", c.index)));
        }
        for d in c.delta.tool_calls.iter().flatten() {
            if d.index >= crate::api::MAX_TOOL_CALLS {
                return Err(ProviderError::Decode(format!("tool call index {} out of range", d.index)));
            }
        }
    }
    Ok(())
}

/// Turns an SSE response into chunks with `parse` (which returns `Ok(None)` at the end marker).
/// The stream ends with an error if the body breaks or the deadline passes before the end.
pub fn decode_stream<F>(resp: reqwest::Response, deadline: tokio::time::Instant, mut parse: F) -> ChunkStream
where
    F: FnMut(&str) -> Result<Option<ChatChunk>, ProviderError> + Send + 'static,
{
    let body = resp.bytes_stream();
    let s = async_stream(body, deadline, move |ev| parse(&ev.data));
    Box::pin(s)
}

/// Shared by the adapters: SSE events in, parsed items out, with the overall deadline applied.
pub fn async_stream<S, F, T>(
    body: S,
    deadline: tokio::time::Instant,
    on_event: F,
) -> impl futures_util::Stream<Item = Result<T, ProviderError>> + Send
where
    S: futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send + Unpin + 'static,
    F: FnMut(super::sse::SseEvent) -> Result<Option<T>, ProviderError> + Send + 'static,
    T: Send + 'static,
{
    struct State<S, F> {
        body: S,
        decoder: SseDecoder,
        pending: std::collections::VecDeque<super::sse::SseEvent>,
        on_event: F,
        done: bool,
    }
    let state = State { body, decoder: SseDecoder::default(), pending: Default::default(), on_event, done: false };
    futures_util::stream::unfold(state, move |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            while let Some(ev) = st.pending.pop_front() {
                match (st.on_event)(ev) {
                    Ok(Some(item)) => return Some((Ok(item), st)),
                    Ok(None) => {
                        if st.pending.is_empty() {
                            // an end marker: drain nothing more
                        }
                        continue;
                    }
                    Err(e) => {
                        st.done = true;
                        return Some((Err(e), st));
                    }
                }
            }
            match tokio::time::timeout_at(deadline, st.body.next()).await {
                Err(_) => {
                    st.done = true;
                    return Some((Err(ProviderError::Timeout(TimeoutPhase::Total)), st));
                }
                Ok(None) => {
                    st.done = true;
                    if let Some(ev) = st.decoder.finish() {
                        if let Ok(Some(item)) = (st.on_event)(ev) {
                            return Some((Ok(item), st));
                        }
                    }
                    return None;
                }
                Ok(Some(Err(e))) => {
                    st.done = true;
                    return Some((Err(ProviderError::Stream(super::root_cause(&e))), st));
                }
                Ok(Some(Ok(bytes))) => match st.decoder.push(&bytes) {
                    Ok(evs) => st.pending.extend(evs),
                    Err(e) => {
                        st.done = true;
                        return Some((Err(ProviderError::Stream(e)), st));
                    }
                },
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anthropic_thinking_blocks_stay_behind() {
        let req: ChatRequest = serde_json::from_value(serde_json::json!({"model": "auto", "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello.", "thinking_blocks": [{"type": "thinking", "thinking": "t", "signature": "s"}]},
            {"role": "user", "content": "Bye"}]}))
        .unwrap();
        let body = OpenAi::to_openai(&req, "gpt-5-mini", false);
        assert_eq!(body["messages"][1], serde_json::json!({"role": "assistant", "content": "Hello."}));
    }

    /// Found by the fuzzer (`openai-sse`): a chunk with choice index 3,360,957,551 made the
    /// accumulator allocate a slot for every index below it (gigabytes; the input hung the run).
    #[test]
    fn out_of_range_indices_are_a_broken_stream() {
        let chunk = |choice: u64, call: u64| {
            serde_json::json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "choices": [{"index": choice, "delta": {"tool_calls": [{"index": call, "function": {"arguments": "{}"}}]}, "finish_reason": null}]})
            .to_string()
        };
        assert!(
            matches!(parse_stream_event(&chunk(3_360_957_551, 0)), Err(ProviderError::Decode(m)) if m.contains("out of range"))
        );
        assert!(
            matches!(parse_stream_event(&chunk(0, 4_000_000_000)), Err(ProviderError::Decode(m)) if m.contains("out of range"))
        );
        assert!(parse_stream_event(&chunk(127, 1023)).unwrap().is_some());
        // and the accumulator, whoever feeds it, ignores what is out of range
        let mut acc = crate::api::ChunkAccumulator::default();
        let far: ChatChunk = serde_json::from_str(&chunk(u32::MAX as u64, 0)).unwrap();
        acc.push(&far);
        assert!(acc.finish().choices.is_empty());
    }
}
