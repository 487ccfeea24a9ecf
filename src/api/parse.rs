//! Request bodies in, typed requests or an OpenAI-shaped 400 out. One function, shared by the
//! handlers and the fuzzer (`src/fuzz/`), so what is fuzzed is what serves.

use super::GatewayError;

/// Parses a JSON request body. Every failure is a [`GatewayError::InvalidRequest`] (400) whose
/// message says whether the body was not JSON at all or JSON of the wrong shape; a wrong shape
/// names the field in `param` (`temperature`, `messages[0].content`), as OpenAI's errors do, so
/// an SDK's `BadRequestError.param` points at what to fix.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, GatewayError> {
    if bytes.is_empty() {
        return Err(GatewayError::invalid("the request body is empty; send a JSON object", None));
    }
    match serde_json::from_slice(bytes) {
        Ok(v) => Ok(v),
        Err(e) if is_syntax(&e) => Err(syntax_error(e)),
        // read again, tracking the path: only a body that fails pays for it
        Err(e) => {
            let mut de = serde_json::Deserializer::from_slice(bytes);
            match serde_path_to_error::deserialize::<_, T>(&mut de) {
                Err(at) => Err(shape_error(&at.path().to_string(), at.into_inner())),
                Ok(_) => Err(shape_error(".", e)),
            }
        }
    }
}

/// [`parse_json`] for a body already read as JSON (the Messages count endpoint edits it first).
pub fn from_value<T: serde::de::DeserializeOwned>(value: &serde_json::Value) -> Result<T, GatewayError> {
    T::deserialize(value).map_err(|e| match serde_path_to_error::deserialize::<_, T>(value) {
        Err(at) => shape_error(&at.path().to_string(), at.into_inner()),
        Ok(_) => shape_error(".", e),
    })
}

fn is_syntax(e: &serde_json::Error) -> bool {
    matches!(e.classify(), serde_json::error::Category::Syntax | serde_json::error::Category::Eof)
}

fn syntax_error(e: serde_json::Error) -> GatewayError {
    GatewayError::invalid(format!("the request body is not valid JSON: {e}"), None)
}

/// A body of the wrong shape, `path` being where serde found it (`.` at the top level).
fn shape_error(path: &str, e: serde_json::Error) -> GatewayError {
    if is_syntax(&e) {
        return syntax_error(e);
    }
    let param = field_param(path, &e.to_string());
    let msg = match &param {
        Some(p) => format!("invalid request: `{p}`: {e}"),
        None => format!("invalid request: {e}"),
    };
    GatewayError::invalid(msg, param.as_deref())
}

/// The field a shape error is about: the path where it failed, plus the field's name when serde
/// says one is missing there (its path is the object that lacks it). `None` at the top level.
fn field_param(path: &str, message: &str) -> Option<String> {
    let at = (path != ".").then_some(path);
    let missing = message.strip_prefix("missing field `").and_then(|m| m.split('`').next());
    match (at, missing) {
        (Some(at), Some(field)) => Some(format!("{at}.{field}")),
        (None, Some(field)) => Some(field.to_string()),
        (Some(at), None) => Some(at.to_string()),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ChatRequest;

    fn param_of(body: &str) -> (Option<String>, String) {
        match parse_json::<ChatRequest>(body.as_bytes()) {
            Err(GatewayError::InvalidRequest { message, param }) => (param, message),
            other => panic!("expected a 400 for {body}, got {other:?}"),
        }
    }

    #[test]
    fn a_wrongly_typed_or_missing_field_is_named() {
        let msg = r#"[{"role":"user","content":"hi"}]"#;
        for (body, param) in [
            (format!(r#"{{"model":"auto","messages":{msg},"temperature":"x"}}"#), "temperature"),
            (format!(r#"{{"model":"auto","messages":{msg},"max_tokens":-1}}"#), "max_tokens"),
            (
                format!(r#"{{"model":"auto","messages":{msg},"stream_options":{{"include_usage":1}}}}"#),
                "stream_options.include_usage",
            ),
            (format!(r#"{{"messages":{msg}}}"#), "model"),
            (r#"{"model":"auto","messages":"hi"}"#.to_string(), "messages"),
            (r#"{"model":"auto","messages":[{"role":"bogus","content":"x"}]}"#.to_string(), "messages[0].role"),
            (r#"{"model":"auto","messages":[{"content":"x"}]}"#.to_string(), "messages[0].role"),
            (r#"{"model":"auto","messages":[{"role":"user","content":5}]}"#.to_string(), "messages[0].content"),
        ] {
            let (got, message) = param_of(&body);
            assert_eq!(got.as_deref(), Some(param), "{body}: {message}");
            assert!(message.contains(&format!("`{param}`")), "{message}");
        }
    }

    #[test]
    fn not_json_is_said_so_and_names_no_field() {
        let trailing = r#"{"model":"auto","messages":[{"role":"user","content":"x"}]} trailing"#;
        for body in [r#"{"model":"auto","#, trailing, "nope"] {
            let (param, message) = param_of(body);
            assert_eq!(param, None, "{body}");
            assert!(message.starts_with("the request body is not valid JSON"), "{body}: {message}");
        }
        // a JSON value of the wrong kind at the top is a shape error with no field to name
        let (param, message) = param_of("[1]");
        assert_eq!(param, None);
        assert!(message.starts_with("invalid request: "), "{message}");
    }
}
