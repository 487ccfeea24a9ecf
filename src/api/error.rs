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
    #[error("{0}")]
    NotFound(String),
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    RateLimited(String),
    #[error("{0}")]
    Overloaded(String),
    /// The upstream provider answered with an error, or could not be reached. `status` is the
    /// status we return, already chosen honestly by the dispatcher.
    #[error("{message}")]
    Upstream { status: u16, provider: String, message: String },
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Internal(String),
}

impl GatewayError {
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> Self {
        GatewayError::InvalidRequest { message: message.into(), param: param.map(str::to_string) }
    }

    pub fn status(&self) -> u16 {
        match self {
            GatewayError::InvalidRequest { .. } => 400,
            GatewayError::Unauthorized(_) => 401,
            GatewayError::NotFound(_) => 404,
            GatewayError::PayloadTooLarge { .. } => 413,
            GatewayError::RateLimited(_) => 429,
            GatewayError::Overloaded(_) => 503,
            GatewayError::Upstream { status, .. } => *status,
            GatewayError::Timeout(_) => 504,
            GatewayError::Internal(_) => 500,
        }
    }

    fn kind_and_code(&self) -> (&'static str, Option<&'static str>) {
        match self {
            GatewayError::InvalidRequest { .. } => ("invalid_request_error", None),
            GatewayError::Unauthorized(_) => ("invalid_request_error", Some("invalid_api_key")),
            GatewayError::NotFound(_) => ("invalid_request_error", Some("model_not_found")),
            GatewayError::PayloadTooLarge { .. } => ("invalid_request_error", Some("request_too_large")),
            GatewayError::RateLimited(_) => ("rate_limit_error", Some("rate_limit_exceeded")),
            GatewayError::Overloaded(_) => ("server_error", Some("overloaded")),
            GatewayError::Upstream { status, .. } if *status < 500 => ("invalid_request_error", Some("upstream_error")),
            GatewayError::Upstream { .. } => ("upstream_error", Some("upstream_error")),
            GatewayError::Timeout(_) => ("timeout_error", Some("timeout")),
            GatewayError::Internal(_) => ("server_error", None),
        }
    }

    pub fn body(&self) -> ErrorBody {
        let (kind, code) = self.kind_and_code();
        let param = match self {
            GatewayError::InvalidRequest { param, .. } => param.clone(),
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
}
