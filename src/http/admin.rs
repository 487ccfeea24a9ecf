//! Operator endpoints (`server.admin_key`): live usage totals and the last requests.

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::{authenticate_admin, error_response, request_id, AppState};
use crate::api::GatewayError;
use crate::reqlog::usage::By;

/// Records `GET /admin/requests` returns by default and at most.
const DEFAULT_RECENT: usize = 50;
const MAX_RECENT: usize = 1000;

/// A query parameter's raw value (ids and small enums: nothing here needs percent-decoding).
pub(super) fn param<'a>(query: &'a Option<String>, name: &str) -> Option<&'a str> {
    query.as_deref()?.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

/// `GET /admin/usage[?by=all|key|model|day]`: requests, tokens, cost, saved and hit rate by key,
/// model and UTC day since the gateway started (the same totals `switchyard usage` reads from
/// the log).
pub async fn usage(State(state): State<AppState>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    let rid = request_id(&headers);
    if let Err(e) = authenticate_admin(&state, &headers) {
        return error_response(&e, &rid);
    }
    let by = match param(&query, "by").map(str::parse::<By>).unwrap_or(Ok(By::All)) {
        Ok(b) => b,
        Err(m) => return error_response(&GatewayError::invalid(m, Some("by")), &rid),
    };
    let rows = state.ledger.usage.summary(by);
    axum::Json(serde_json::json!({"object": "list", "data": rows})).into_response()
}

/// `GET /admin/requests?limit=N`: the last N request-log records, newest first, exactly as the
/// log lines; 404 when the request log is off.
pub async fn requests(State(state): State<AppState>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    let rid = request_id(&headers);
    if let Err(e) = authenticate_admin(&state, &headers) {
        return error_response(&e, &rid);
    }
    let limit = match param(&query, "limit").map(str::parse::<usize>) {
        None => DEFAULT_RECENT,
        Some(Ok(n)) if n >= 1 => n.min(MAX_RECENT),
        Some(_) => {
            let e = GatewayError::invalid(format!("limit must be an integer from 1 to {MAX_RECENT}"), Some("limit"));
            return error_response(&e, &rid);
        }
    };
    let Some(lines) = state.ledger.recent(limit) else {
        let e = GatewayError::NotFound("the request log is off: set [log] path in the config".into());
        return error_response(&e, &rid);
    };
    let mut body = String::with_capacity(32 + lines.iter().map(|l| l.len() + 1).sum::<usize>());
    body.push_str("{\"object\":\"list\",\"data\":[");
    for (i, l) in lines.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(l);
    }
    body.push_str("]}");
    let mut resp = body.into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}
