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
    fn arguments() {
        assert_eq!(arguments_object("").unwrap(), serde_json::json!({}));
        assert_eq!(arguments_object(r#"{"city":"Paris"}"#).unwrap()["city"], "Paris");
        assert!(arguments_object("[1]").is_err());
        assert!(arguments_object("{oops").is_err());
    }
}
