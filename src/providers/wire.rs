//! Small pieces the non-OpenAI adapters share: data URLs, tool-call arguments, chunk building,
//! and turning an SSE body into chunks when one upstream event may become several chunks.

use serde_json::{Map, Value};

use super::openai::async_stream;
use super::sse::SseEvent;
use super::{ChunkStream, ProviderError};
use crate::api::{ChatChunk, ChunkChoice, Delta, Usage};

/// Seconds since the epoch, for `created`.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A `data:` URL split into its media type and base64 payload. `None` for anything else
/// (http URLs, or data URLs that are not base64).
pub fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media_type = meta.strip_suffix(";base64")?;
    Some((if media_type.is_empty() { "application/octet-stream" } else { media_type }, data))
}

/// OpenAI sends tool-call arguments as a JSON string; Anthropic and Gemini want the object.
/// An empty string is the empty object; anything that is not a JSON object is the client's error.
pub fn arguments_object(arguments: &str) -> Result<Value, ProviderError> {
    if arguments.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(ProviderError::unsupported("tool call `arguments` must be a JSON object encoded as a string")),
    }
}

/// Between a tool call's own id and the provider state carried with it (see [`encode_call_id`]).
/// A `.` never occurs in base64url, so the last separator in an id is always ours.
const CARRY_SEP: &str = ".ts.";

/// Longest provider state a tool call id carries. Gemini's signatures are a few hundred bytes to
/// a few KiB; past this the id would burden every client that stores it, and the state is dropped
/// (with a warning) instead.
pub const MAX_CARRIED: usize = 32 * 1024;

/// A tool call id that carries `state` (Gemini's `thoughtSignature`, base64) back to us: an
/// OpenAI client echoes exactly what it was given in `tool_calls[].id` on the next turn and
/// nothing else, so the id is the one carrier that needs no gateway-side memory. That makes it
/// work across replicas without the Redis tier, survive restarts, cache replays and TTLs, and
/// cost nothing per request. The state is re-spelt as unpadded base64url so the id stays within
/// `[A-Za-z0-9_.-]`. Returns `base` unchanged when there is no state or it is too long.
pub fn encode_call_id(base: &str, state: Option<&str>) -> String {
    match state {
        Some(s) if !s.is_empty() && s.len() <= MAX_CARRIED && is_base64(s) => {
            let url: String = s
                .chars()
                .filter(|&c| c != '=')
                .map(|c| match c {
                    '+' => '-',
                    '/' => '_',
                    c => c,
                })
                .collect();
            format!("{base}{CARRY_SEP}{url}")
        }
        Some(s) if !s.is_empty() => {
            tracing::warn!(len = s.len(), "a provider signature was too long or not base64; it is not carried");
            base.to_string()
        }
        _ => base.to_string(),
    }
}

/// The inverse of [`encode_call_id`]: the call's own id, and the carried state as standard padded
/// base64 (what Gemini sent). Ids we did not make come back as they are, without state.
pub fn split_call_id(id: &str) -> (&str, Option<String>) {
    match id.rsplit_once(CARRY_SEP) {
        Some((base, url))
            if !url.is_empty() && url.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            let mut s: String = url
                .chars()
                .map(|c| match c {
                    '-' => '+',
                    '_' => '/',
                    c => c,
                })
                .collect();
            while !s.len().is_multiple_of(4) {
                s.push('=');
            }
            (base, Some(s))
        }
        _ => (id, None),
    }
}

/// The id an upstream that does not know our carrier should see (OpenAI caps ids at 40
/// characters; Anthropic allows only `[A-Za-z0-9_-]`).
pub fn bare_call_id(id: &str) -> &str {
    split_call_id(id).0
}

fn is_base64(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_'))
}

/// The identity every chunk of one stream shares.
#[derive(Debug, Clone, Default)]
pub struct ChunkIds {
    pub id: String,
    pub created: u64,
    pub model: String,
}

impl ChunkIds {
    pub fn chunk(&self, index: u32, delta: Delta, finish_reason: Option<String>) -> ChatChunk {
        ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice { index, delta, finish_reason }],
            usage: None,
        }
    }

    /// The closing usage chunk (no choices). Always emitted: the pipeline forwards it only to
    /// clients that asked for `stream_options.include_usage`, and prices the call from it.
    pub fn usage_chunk(&self, usage: Usage) -> ChatChunk {
        ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            choices: Vec::new(),
            usage: Some(usage),
        }
    }
}

/// Like `openai::decode_stream`, for adapters whose one upstream event can become zero, one or
/// several OpenAI chunks.
pub fn decode_multi<F>(resp: reqwest::Response, deadline: tokio::time::Instant, mut on_event: F) -> ChunkStream
where
    F: FnMut(&SseEvent) -> Result<Vec<ChatChunk>, ProviderError> + Send + 'static,
{
    use futures_util::StreamExt;
    let events = async_stream(resp.bytes_stream(), deadline, move |ev| on_event(&ev).map(Some));
    Box::pin(events.flat_map(|item| {
        let items: Vec<Result<ChatChunk, ProviderError>> = match item {
            Ok(chunks) => chunks.into_iter().map(Ok).collect(),
            Err(e) => vec![Err(e)],
        };
        futures_util::stream::iter(items)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_urls() {
        assert_eq!(parse_data_url("data:image/png;base64,iVBO"), Some(("image/png", "iVBO")));
        assert_eq!(parse_data_url("https://example.com/cat.png"), None);
        assert_eq!(parse_data_url("data:text/plain,hello"), None);
    }

    #[test]
    fn call_ids_carry_signatures_both_ways() {
        for sig in ["CiQBcsjafE+/abc==", "Zm9vYmFy", "Zm9vYg==", "a-b_c"] {
            let id = encode_call_id("call_1", Some(sig));
            assert!(id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)), "{id}");
            let (base, back) = split_call_id(&id);
            assert_eq!(base, "call_1");
            let want = sig.replace('-', "+").replace('_', "/");
            let want =
                format!("{}{}", want.trim_end_matches('='), "=".repeat((4 - want.trim_end_matches('=').len() % 4) % 4));
            assert_eq!(back.as_deref(), Some(want.as_str()));
        }
        assert_eq!(encode_call_id("call_1", None), "call_1");
        assert_eq!(encode_call_id("call_1", Some("not base64!")), "call_1");
        assert_eq!(encode_call_id("call_1", Some(&"A".repeat(MAX_CARRIED + 1))), "call_1");
        assert_eq!(split_call_id("call_abc"), ("call_abc", None));
        assert_eq!(bare_call_id("toolu_01.ts.QUJD"), "toolu_01");
    }

    #[test]
    fn arguments() {
        assert_eq!(arguments_object("").unwrap(), serde_json::json!({}));
        assert_eq!(arguments_object(r#"{"city":"Paris"}"#).unwrap()["city"], "Paris");
        assert!(arguments_object("[1]").is_err());
        assert!(arguments_object("{oops").is_err());
    }
}
