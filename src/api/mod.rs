//! OpenAI wire types and the one table that maps our error kinds to HTTP.
//!
//! These are our own structs rather than an SDK's: they accept exactly what the OpenAI API accepts
//! (unknown fields are kept in `extra` and passed through to OpenAI-compatible upstreams) and they
//! serialise back to what OpenAI clients parse.

mod error;
pub mod messages;
mod parse;
pub mod responses;
mod types;

pub use error::{ErrorBody, ErrorDetail, GatewayError, DEFAULT_RETRY_AFTER_SECS};
pub use parse::{from_value, parse_json};
pub use types::*;

/// A stream translator from chat chunks to another API's events (Anthropic's Messages, OpenAI's
/// Responses): stateful, because those event formats open and close content blocks.
pub trait EventTranslator: Send + 'static {
    /// The events for one chunk (possibly none).
    fn chunk(&mut self, chunk: &ChatChunk) -> String;
    /// The events for an error after the stream began (the stream then ends).
    fn error(&mut self, e: &GatewayError) -> String;
}
