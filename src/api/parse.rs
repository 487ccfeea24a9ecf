//! Request bodies in, typed requests or an OpenAI-shaped 400 out. One function, shared by the
//! handlers and the fuzzer (`src/fuzz/`), so what is fuzzed is what serves.

use super::GatewayError;

/// Parses a JSON request body. Every failure is a [`GatewayError::InvalidRequest`] (400) whose
/// message says whether the body was not JSON at all or JSON of the wrong shape.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, GatewayError> {
    if bytes.is_empty() {
        return Err(GatewayError::invalid("the request body is empty; send a JSON object", None));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        let msg = match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                format!("the request body is not valid JSON: {e}")
            }
            _ => format!("invalid request: {e}"),
        };
        GatewayError::invalid(msg, None)
    })
}
