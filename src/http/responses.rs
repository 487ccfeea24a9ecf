//! `/v1/responses`: OpenAI's Responses API, served by the chat pipeline (see `api::responses`
//! for the translation), and the store that makes `previous_response_id` and
//! `GET /v1/responses/{id}` work.
//!
//! The store is in memory, per replica and bounded by bytes: the oldest responses are forgotten
//! first. A response is only ever read back by the tenant that made it; for anyone else it does
//! not exist (the same 404 as a response never made, so ids cannot be probed). Behind several
//! replicas, a client that continues by `previous_response_id` needs its requests to reach the
//! same replica; sending the whole `input` with `store: false` works anywhere.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::OwnedSemaphorePermit;

use super::handlers::{handle, meta_headers, sse_response};
use super::{authenticate, error_response, request_id, AppState};
use crate::api::responses::{self, Echo, Finished, StreamTranslator};
use crate::api::{parse_json, GatewayError};
use crate::pipeline::{Body, Served, StreamItem};

struct Stored {
    tenant: String,
    /// The conversation through this response's output, without `instructions`.
    conversation: Arc<Vec<Value>>,
    response: Arc<Value>,
    bytes: usize,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Stored>,
    /// Ids oldest first; may hold ids already deleted (skipped when their turn comes).
    order: VecDeque<String>,
    bytes: usize,
}

/// Stored responses, at most `budget` bytes of them (as serialised JSON).
pub struct ResponseStore {
    budget: usize,
    inner: Mutex<Inner>,
}

impl ResponseStore {
    /// A store of at most `budget` bytes; 0 stores nothing.
    pub fn new(budget: usize) -> Self {
        ResponseStore { budget, inner: Mutex::new(Inner::default()) }
    }

    /// Keeps a response, forgetting the oldest ones past the budget. A response larger than
    /// the whole budget is not kept.
    fn put(&self, id: &str, tenant: &str, conversation: Vec<Value>, response: Value) {
        let bytes = serde_json::to_vec(&conversation).map_or(0, |v| v.len())
            + serde_json::to_vec(&response).map_or(0, |v| v.len())
            + id.len()
            + tenant.len();
        if bytes > self.budget {
            return;
        }
        let mut inner = self.inner.lock();
        while inner.bytes + bytes > self.budget {
            let Some(old) = inner.order.pop_front() else { break };
            if let Some(gone) = inner.entries.remove(&old) {
                inner.bytes -= gone.bytes;
            }
        }
        let stored = Stored {
            tenant: tenant.to_string(),
            conversation: Arc::new(conversation),
            response: Arc::new(response),
            bytes,
        };
        if let Some(replaced) = inner.entries.insert(id.to_string(), stored) {
            inner.bytes -= replaced.bytes;
        }
        inner.bytes += bytes;
        inner.order.push_back(id.to_string());
        // deletes leave ids behind in `order`; keep it within a small multiple of what is live
        if inner.order.len() > 2 * inner.entries.len() + 1024 {
            let Inner { entries, order, .. } = &mut *inner;
            order.retain(|id| entries.contains_key(id));
        }
    }

    fn get<T>(&self, id: &str, tenant: &str, read: impl FnOnce(&Stored) -> T) -> Option<T> {
        let inner = self.inner.lock();
        inner.entries.get(id).filter(|s| s.tenant == tenant).map(read)
    }

    /// The conversation a follow-up to `id` continues, if `tenant` made `id` and it is kept.
    pub fn conversation(&self, id: &str, tenant: &str) -> Option<Arc<Vec<Value>>> {
        self.get(id, tenant, |s| s.conversation.clone())
    }

    /// The stored Responses object.
    pub fn response(&self, id: &str, tenant: &str) -> Option<Arc<Value>> {
        self.get(id, tenant, |s| s.response.clone())
    }

    /// Forgets `id` if `tenant` made it; whether it was there.
    pub fn delete(&self, id: &str, tenant: &str) -> bool {
        let mut inner = self.inner.lock();
        if inner.entries.get(id).is_none_or(|s| s.tenant != tenant) {
            return false;
        }
        if let Some(gone) = inner.entries.remove(id) {
            inner.bytes -= gone.bytes;
        }
        true
    }

    /// Bytes held (for tests and `/metrics`).
    pub fn bytes(&self) -> usize {
        self.inner.lock().bytes
    }
}

fn not_found(id: &str, param: Option<&str>) -> GatewayError {
    let message = match param {
        Some(_) => format!("Previous response with id '{id}' not found."),
        None => format!("Response with id '{id}' not found."),
    };
    GatewayError::ResponseNotFound { message, param: param.map(str::to_string) }
}

/// What the renderer needs of the parsed request.
struct Pending {
    echo: Echo,
    history: Vec<Value>,
    tenant: String,
}

/// Keeps a finished answer for follow-ups, if the request asked for it (`store`, on by default).
fn keep(store: &ResponseStore, id: &str, pending: Option<Pending>, finished: &Finished) {
    if let Some(Pending { mut history, tenant, .. }) = pending.filter(|p| p.echo.store) {
        history.push(finished.turn.clone());
        store.put(id, &tenant, history, finished.response.clone());
    }
}

/// `POST /v1/responses`.
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let id = responses::new_id("resp");
    let pending: Mutex<Option<Pending>> = Mutex::new(None);
    let parse = |bytes: &[u8], tenant: &str| {
        let req: responses::ResponsesRequest = parse_json(bytes)?;
        let previous = match &req.previous_response_id {
            Some(p) => state
                .responses
                .conversation(p, tenant)
                .ok_or_else(|| not_found(p, Some("previous_response_id")))?
                .as_ref()
                .clone(),
            None => Vec::new(),
        };
        let prepared = responses::to_chat_request(req, previous)?;
        *pending.lock() = Some(Pending { echo: prepared.echo, history: prepared.history, tenant: tenant.to_string() });
        Ok(prepared.chat)
    };
    let render = |served: Served, rid: &str, slot: OwnedSemaphorePermit| -> Response {
        let pending = pending.lock().take();
        let store = state.responses.clone();
        let mut resp = match served.body {
            Body::Json(r) => {
                let echo = pending.as_ref().map(|p| p.echo.clone()).unwrap_or_else(default_echo);
                let finished = responses::to_response(&r, &id, &echo);
                keep(&store, &id, pending, &finished);
                axum::Json(finished.response).into_response()
            }
            Body::Stream(stream) => {
                let echo = pending.as_ref().map(|p| p.echo.clone()).unwrap_or_else(default_echo);
                let events = Arc::new(Mutex::new(StreamTranslator::new(id.clone(), echo)));
                let tail = events.clone();
                let id = id.clone();
                sse_response(
                    stream,
                    slot,
                    move |item| match item {
                        StreamItem::Chunk(c) => events.lock().chunk(&c),
                        StreamItem::Error(e) => events.lock().error(&e),
                    },
                    move || {
                        let (events, finished) = tail.lock().finish();
                        keep(&store, &id, pending, &finished);
                        events
                    },
                )
            }
        };
        meta_headers(&mut resp, &served.meta, rid);
        resp
    };
    handle(&state, &headers, body, parse, render, error_response).await
}

/// Only reached if the pipeline served a request whose parse did not record it: a bug.
fn default_echo() -> Echo {
    Echo {
        model: String::new(),
        instructions: None,
        max_output_tokens: None,
        temperature: None,
        top_p: None,
        tools: Vec::new(),
        tool_choice: json!("auto"),
        parallel_tool_calls: true,
        text: json!({"format": {"type": "text"}}),
        reasoning: Value::Null,
        metadata: json!({}),
        user: None,
        store: false,
        previous_response_id: None,
    }
}

/// `GET /v1/responses/{id}`: a stored response, to the tenant that made it.
pub async fn retrieve(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let rid = request_id(&headers);
    let found = authenticate(&state, &headers)
        .and_then(|t| state.responses.response(&id, &t.id).ok_or_else(|| not_found(&id, None)));
    match found {
        Ok(r) => axum::Json(r.as_ref().clone()).into_response(),
        Err(e) => error_response(&e, &rid),
    }
}

/// `DELETE /v1/responses/{id}`.
pub async fn delete(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let rid = request_id(&headers);
    let deleted = authenticate(&state, &headers).and_then(|t| {
        if state.responses.delete(&id, &t.id) {
            Ok(())
        } else {
            Err(not_found(&id, None))
        }
    });
    match deleted {
        Ok(()) => axum::Json(json!({"id": id, "object": "response", "deleted": true})).into_response(),
        Err(e) => error_response(&e, &rid),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn conv(text: &str) -> Vec<Value> {
        vec![json!({"role": "user", "content": text})]
    }

    #[test]
    fn a_tenant_reads_only_its_own_responses() {
        let s = ResponseStore::new(1 << 20);
        s.put("resp_a", "t-1", conv("hi"), json!({"id": "resp_a"}));
        assert_eq!(s.conversation("resp_a", "t-1").unwrap()[0]["content"], "hi");
        assert!(s.conversation("resp_a", "t-2").is_none());
        assert!(s.response("resp_a", "t-2").is_none());
        assert!(!s.delete("resp_a", "t-2"), "another tenant cannot delete it");
        assert!(s.delete("resp_a", "t-1"));
        assert!(s.response("resp_a", "t-1").is_none());
        assert_eq!(s.bytes(), 0);
    }

    #[test]
    fn the_oldest_are_forgotten_past_the_budget() {
        let one = {
            let s = ResponseStore::new(1 << 20);
            s.put("resp_0", "t", conv(&"x".repeat(100)), json!({}));
            s.bytes()
        };
        let s = ResponseStore::new(3 * one);
        for i in 0..5 {
            s.put(&format!("resp_{i}"), "t", conv(&"x".repeat(100)), json!({}));
            assert!(s.bytes() <= 3 * one);
        }
        assert!(s.response("resp_0", "t").is_none() && s.response("resp_1", "t").is_none());
        assert!((2..5).all(|i| s.response(&format!("resp_{i}"), "t").is_some()));
        // larger than the whole budget: not kept, nothing else evicted for it
        s.put("resp_big", "t", conv(&"x".repeat(10 * one)), json!({}));
        assert!(s.response("resp_big", "t").is_none() && s.response("resp_4", "t").is_some());
        // a store of 0 bytes keeps nothing
        let off = ResponseStore::new(0);
        off.put("resp_x", "t", conv("hi"), json!({}));
        assert!(off.response("resp_x", "t").is_none());
    }

    #[test]
    fn deleted_ids_do_not_pile_up_in_the_order() {
        let s = ResponseStore::new(1 << 30);
        for i in 0..10_000 {
            let id = format!("resp_{i}");
            s.put(&id, "t", conv("hi"), json!({}));
            s.delete(&id, "t");
        }
        assert!(s.inner.lock().order.len() <= 1024 + 1);
    }
}
