use serde::Serialize;

/// Every way a request can fail, as the client should see it. The status and the OpenAI error
/// `type`/`code` for each kind live in [`GatewayError::status`] and [`GatewayError::body`]: the one
/// place where our errors meet HTTP.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum GatewayError {
    #[error("{message}")]
    InvalidRequest { message: String, param: Option<String> },
    #[error("{0}")]
    Unauthorized(String),
    /// A model that does not exist (OpenAI's `model_not_found`).
    #[error("{0}")]
    NotFound(String),
    /// A path the gateway does not serve, in OpenAI's own words and code (`unknown_url`).
    #[error("Unknown request URL: {method} {path}. Please check the URL for typos, or see the docs at https://platform.openai.com/docs/api-reference/.")]
    UnknownUrl { method: String, path: String },
    /// A stored response (`/v1/responses`) this gateway does not hold for the caller: never
    /// made here, made under another key, or forgotten (the store is bounded and per replica).
    /// `param` names the request field that asked for it, if one did.
    #[error("{message}")]
    ResponseNotFound { message: String, param: Option<String> },
    /// A path the gateway serves, with the wrong method (405), in OpenAI's own words.
    #[error("Invalid method for URL ({method} {path})")]
    MethodNotAllowed { method: String, path: String },
    /// 403: the key is valid but may not do this (a model outside its allowed list).
    #[error("{0}")]
    Forbidden(String),
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    RateLimited(String),
    /// 429 from a key's own limits or budget (`code`: `rate_limit_exceeded` or
    /// `budget_exceeded`); `retry_after` is the seconds until the window resets.
    #[error("{message}")]
    LimitExceeded { message: String, code: &'static str, retry_after: u64 },
    /// 503: the gateway cannot take the request now (concurrency limit, a full queue, every
    /// deployment's breaker open). `retry_after` (seconds) becomes the `Retry-After` header.
    #[error("{message}")]
    Overloaded { message: String, retry_after: u64 },
    /// The upstream provider answered with an error, or could not be reached. `status` is the
    /// status we return, already chosen honestly by the dispatcher; `retry_after` is the
    /// provider's own hint (seconds), passed on with a 429.
    #[error("{message}")]
    Upstream { status: u16, provider: String, message: String, retry_after: Option<u64> },
    /// 400: the prompt fits no deployment that was tried (each refused it as longer than its
    /// model's context window). OpenAI's own code, `context_length_exceeded`, which SDKs and
    /// LangChain's trimming helpers look for.
    #[error("{0}")]
    ContextTooLong(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Internal(String),
}

/// The `Retry-After` a 503 or 429 carries when nothing better is known: pressure on the
/// gateway's own slots and queues clears within about a second.
pub const DEFAULT_RETRY_AFTER_SECS: u64 = 1;

impl GatewayError {
    /// A 503 for momentary overload, with the default `Retry-After`.
    pub fn overloaded(message: impl Into<String>) -> Self {
        GatewayError::Overloaded { message: message.into(), retry_after: DEFAULT_RETRY_AFTER_SECS }
    }

    /// Seconds a client should wait before retrying: every 429 and 503 we send carries one, so
    /// well-behaved clients (the OpenAI SDKs honour `Retry-After`) back off instead of hammering
    /// an overloaded gateway. `None` for the statuses where a retry is not the answer.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            GatewayError::Overloaded { retry_after, .. } => Some((*retry_after).max(1)),
            GatewayError::RateLimited(_) => Some(DEFAULT_RETRY_AFTER_SECS),
            GatewayError::LimitExceeded { retry_after, .. } => Some((*retry_after).max(1)),
            GatewayError::Upstream { status: 429 | 503, retry_after, .. } => {
                Some(retry_after.unwrap_or(DEFAULT_RETRY_AFTER_SECS).max(1))
            }
            _ => None,
        }
    }

    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> Self {
        GatewayError::InvalidRequest { message: message.into(), param: param.map(str::to_string) }
    }

    pub fn status(&self) -> u16 {
        match self {
            GatewayError::InvalidRequest { .. } | GatewayError::ContextTooLong(_) => 400,
            GatewayError::Unauthorized(_) => 401,
            GatewayError::NotFound(_) | GatewayError::UnknownUrl { .. } | GatewayError::ResponseNotFound { .. } => 404,
            GatewayError::MethodNotAllowed { .. } => 405,
            GatewayError::Forbidden(_) => 403,
            GatewayError::PayloadTooLarge { .. } => 413,
            GatewayError::RateLimited(_) | GatewayError::LimitExceeded { .. } => 429,
            GatewayError::Overloaded { .. } => 503,
            GatewayError::Upstream { status, .. } => *status,
            GatewayError::Timeout(_) => 504,
            GatewayError::Internal(_) => 500,
        }
    }

    fn kind_and_code(&self) -> (&'static str, Option<&'static str>) {
        match self {
            GatewayError::InvalidRequest { .. } => ("invalid_request_error", None),
            GatewayError::ContextTooLong(_) => ("invalid_request_error", Some("context_length_exceeded")),
            GatewayError::Unauthorized(_) => ("invalid_request_error", Some("invalid_api_key")),
            GatewayError::NotFound(_) => ("invalid_request_error", Some("model_not_found")),
            GatewayError::UnknownUrl { .. } => ("invalid_request_error", Some("unknown_url")),
            GatewayError::ResponseNotFound { param: Some(_), .. } => {
                ("invalid_request_error", Some("previous_response_not_found"))
            }
            GatewayError::ResponseNotFound { .. } => ("invalid_request_error", None),
            GatewayError::MethodNotAllowed { .. } => ("invalid_request_error", Some("method_not_allowed")),
            GatewayError::Forbidden(_) => ("permission_error", Some("model_not_allowed")),
            GatewayError::PayloadTooLarge { .. } => ("invalid_request_error", Some("request_too_large")),
            GatewayError::RateLimited(_) => ("rate_limit_error", Some("rate_limit_exceeded")),
            GatewayError::LimitExceeded { code: "budget_exceeded", .. } => {
                ("insufficient_quota", Some("budget_exceeded"))
            }
            GatewayError::LimitExceeded { code, .. } => ("rate_limit_error", Some(*code)),
            GatewayError::Overloaded { .. } => ("server_error", Some("overloaded")),
            GatewayError::Upstream { status, .. } if *status < 500 => ("invalid_request_error", Some("upstream_error")),
            GatewayError::Upstream { .. } => ("upstream_error", Some("upstream_error")),
            GatewayError::Timeout(_) => ("timeout_error", Some("timeout")),
            GatewayError::Internal(_) => ("server_error", None),
        }
    }

    pub fn body(&self) -> ErrorBody {
        let (kind, code) = self.kind_and_code();
        let param = match self {
            GatewayError::InvalidRequest { param, .. } | GatewayError::ResponseNotFound { param, .. } => param.clone(),
            GatewayError::ContextTooLong(_) => Some("messages".to_string()),
            _ => None,
        };
        ErrorBody {
            error: ErrorDetail {
                message: self.to_string(),
                kind: kind.to_string(),
                param,
                code: code.map(str::to_string),
            },
        }
    }
}

impl GatewayError {
    /// The same error as Anthropic's Messages API words it, for `/v1/messages`:
    /// `{"type": "error", "error": {"type", "message"}}`, with the same HTTP status. The
    /// `type` names are Anthropic's (their SDKs pick exception classes by status, not by name).
    pub fn anthropic_body(&self) -> serde_json::Value {
        let kind = match self {
            GatewayError::InvalidRequest { .. }
            | GatewayError::PayloadTooLarge { .. }
            | GatewayError::ContextTooLong(_) => "invalid_request_error",
            GatewayError::Unauthorized(_) => "authentication_error",
            GatewayError::NotFound(_) | GatewayError::UnknownUrl { .. } | GatewayError::ResponseNotFound { .. } => {
                "not_found_error"
            }
            GatewayError::MethodNotAllowed { .. } => "invalid_request_error",
            GatewayError::Forbidden(_) => "permission_error",
            GatewayError::RateLimited(_) | GatewayError::LimitExceeded { .. } => "rate_limit_error",
            GatewayError::Overloaded { .. } => "overloaded_error",
            GatewayError::Upstream { status: 401, .. } => "authentication_error",
            GatewayError::Upstream { status: 403, .. } => "permission_error",
            GatewayError::Upstream { status: 404, .. } => "not_found_error",
            GatewayError::Upstream { status: 429, .. } => "rate_limit_error",
            GatewayError::Upstream { status, .. } if *status < 500 => "invalid_request_error",
            GatewayError::Upstream { status: 503 | 529, .. } => "overloaded_error",
            GatewayError::Upstream { .. } | GatewayError::Timeout(_) | GatewayError::Internal(_) => "api_error",
        };
        serde_json::json!({"type": "error", "error": {"type": kind, "message": self.to_string()}})
    }
}

/// `{"error": {"message", "type", "param", "code"}}`, as OpenAI sends it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct ErrorDetail {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    pub code: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_has_all_four_fields() {
        let e = GatewayError::invalid("bad", Some("messages"));
        let v = serde_json::to_value(e.body()).unwrap();
        assert_eq!(e.status(), 400);
        assert_eq!(v["error"]["message"], "bad");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "messages");
        assert!(v["error"].as_object().unwrap().contains_key("code"));
    }

    #[test]
    fn unknown_urls_and_wrong_methods_speak_openai() {
        let e = GatewayError::UnknownUrl { method: "POST".into(), path: "/v1/foo".into() };
        assert_eq!(e.status(), 404);
        assert!(e.to_string().starts_with("Unknown request URL: POST /v1/foo."), "{e}");
        assert_eq!(e.body().error.code.as_deref(), Some("unknown_url"));
        let e = GatewayError::MethodNotAllowed { method: "GET".into(), path: "/v1/chat/completions".into() };
        assert_eq!((e.status(), e.to_string().as_str()), (405, "Invalid method for URL (GET /v1/chat/completions)"));
    }

    #[test]
    fn anthropic_errors_have_their_shape() {
        let v = GatewayError::invalid("bad", Some("messages")).anthropic_body();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["message"], "bad");
        assert_eq!(GatewayError::Unauthorized("no".into()).anthropic_body()["error"]["type"], "authentication_error");
        assert_eq!(GatewayError::overloaded("busy").anthropic_body()["error"]["type"], "overloaded_error");
    }

    #[test]
    fn every_429_and_503_has_a_retry_after() {
        assert_eq!(GatewayError::overloaded("busy").retry_after(), Some(1));
        assert_eq!(GatewayError::Overloaded { message: "open".into(), retry_after: 0 }.retry_after(), Some(1));
        assert_eq!(GatewayError::RateLimited("slow down".into()).retry_after(), Some(1));
        let up = |status, retry_after| GatewayError::Upstream {
            status,
            provider: "p".into(),
            message: "m".into(),
            retry_after,
        };
        assert_eq!(up(429, Some(7)).retry_after(), Some(7));
        assert_eq!(up(429, None).retry_after(), Some(1));
        assert_eq!(up(502, Some(7)).retry_after(), None);
        assert_eq!(GatewayError::invalid("bad", None).retry_after(), None);
    }
}
