//! `/v1/responses`: OpenAI's Responses API, served by the chat pipeline (see `api::responses`
//! for the translation), and the store that makes `previous_response_id`,
//! `GET /v1/responses/{id}` and its `input_items` work. A stored response keeps its turns twice,
//! as chat messages (what a follow-up sends upstream) and as Responses items with their ids (what
//! `input_items` lists): deriving one from the other would lose the ids clients page by.
//!
//! The store is in memory, bounded by bytes (the oldest responses are forgotten first) and by age
//! (`server.responses_ttl`). A response is only ever read back by the tenant that made it; for
//! anyone else it does not exist (the same 404 as a response never made, so ids cannot be
//! probed). With the shared tier on (`cache.backend = "redis://…"`) every stored response is also
//! written to Redis under its tenant and expires there with the same age, so a follow-up reaching
//! another replica finds it, and a delete on one replica is seen by all (a tombstone). Redis is
//! asked first when it is reachable; when it is down or slow (250 ms), each replica still serves
//! what it holds itself, as the cache does.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::admin::param;
use super::handlers::{handle, meta_headers, translated_sse};
use super::{authenticate, error_response, request_id, AppState};
use crate::api::responses::{self, Echo, Finished, StreamTranslator};
use crate::api::{parse_json, GatewayError};
use crate::pipeline::{Body, Served};
use crate::redis_link::RedisLink;

/// Writes to Redis in flight at once; past it a response is kept locally only.
const SHARED_WRITES: usize = 256;

/// A stored response as Redis holds it (a deleted one is `{"deleted": true}`).
#[derive(serde::Serialize)]
struct Record<'a> {
    conversation: &'a [Value],
    items: &'a [Value],
    response: &'a Value,
}

/// One stored response: the conversation through its output (without `instructions`), the
/// input items it was made from (those it continued, then its own), and the Responses object.
#[derive(Clone)]
struct Kept {
    conversation: Arc<Vec<Value>>,
    items: Arc<Vec<Value>>,
    response: Arc<Value>,
}

/// What a follow-up continues: the stored conversation (chat messages, for the pipeline) and the
/// same turns as Responses items (for its own input item list), each through the output.
pub struct Continued {
    pub conversation: Vec<Value>,
    pub items: Vec<Value>,
}

struct Stored {
    tenant: String,
    kept: Kept,
    bytes: usize,
    at: Instant,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Stored>,
    /// Ids oldest first; may hold ids already deleted (skipped when their turn comes).
    order: VecDeque<String>,
    bytes: usize,
}

/// The Redis half of the store.
struct Shared {
    link: Arc<RedisLink>,
    writes: Arc<Semaphore>,
    counts: Arc<SharedCounts>,
}

/// What happened to the Redis writes and reads, for `/metrics`.
#[derive(Default)]
struct SharedCounts {
    mirrored: AtomicU64,
    /// Not written to Redis: too many writes in flight, or Redis down.
    unmirrored: AtomicU64,
    errors: AtomicU64,
}

/// The store's numbers for `/metrics`.
pub struct StoreStats {
    pub entries: usize,
    pub bytes: usize,
    /// (mirrored, unmirrored, Redis errors), with the shared tier on.
    pub shared: Option<(u64, u64, u64)>,
}

/// Stored responses: at most `budget` bytes of them (as serialised JSON) in memory, none older
/// than `ttl`; mirrored to Redis when the shared tier is on.
pub struct ResponseStore {
    budget: usize,
    ttl: Duration,
    inner: Mutex<Inner>,
    shared: Option<Shared>,
}

fn redis_key(tenant: &str, id: &str) -> String {
    format!("switchyard:response:{tenant}:{id}")
}

impl ResponseStore {
    /// A store of at most `budget` bytes (0 stores nothing) kept for `ttl`, mirrored to the Redis
    /// `redis` if one is given.
    pub fn new(
        budget: usize,
        ttl: Duration,
        redis: Option<&crate::redis_link::RedisTarget>,
    ) -> redis::RedisResult<Self> {
        let shared = match redis {
            Some(target) => {
                let link = Arc::new(RedisLink::new(target)?);
                Some(Shared { link, writes: Arc::new(Semaphore::new(SHARED_WRITES)), counts: Arc::default() })
            }
            None => None,
        };
        Ok(ResponseStore { budget, ttl, inner: Mutex::new(Inner::default()), shared })
    }

    /// Keeps a response, forgetting the oldest ones past the budget, and mirrors it to Redis.
    fn put(&self, id: &str, tenant: &str, conversation: Vec<Value>, items: Vec<Value>, response: Value) {
        if self.budget == 0 {
            return;
        }
        // serialised once: its length is what the budget counts, and it is what Redis holds
        let record = serde_json::to_string(&Record { conversation: &conversation, items: &items, response: &response })
            .unwrap_or_default();
        let bytes = record.len() + id.len() + tenant.len();
        if let Some(shared) = &self.shared {
            self.publish(shared, id, tenant, record);
        }
        let kept = Kept { conversation: Arc::new(conversation), items: Arc::new(items), response: Arc::new(response) };
        self.keep_locally(id, tenant, kept, bytes);
    }

    fn keep_locally(&self, id: &str, tenant: &str, kept: Kept, bytes: usize) {
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
        let stored = Stored { tenant: tenant.to_string(), kept, bytes, at: Instant::now() };
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

    /// Writes the response to Redis in the background (a bounded number at once: past it, and
    /// while Redis is down, the response is this replica's only).
    fn publish(&self, shared: &Shared, id: &str, tenant: &str, record: String) {
        let Ok(permit) = shared.writes.clone().try_acquire_owned() else {
            tracing::debug!("stored response not mirrored to Redis: too many writes in flight");
            shared.counts.unmirrored.fetch_add(1, Relaxed);
            return;
        };
        let (link, counts) = (shared.link.clone(), shared.counts.clone());
        let (key, ttl) = (redis_key(tenant, id), self.ttl.as_secs().max(1));
        tokio::spawn(async move {
            let _permit = permit;
            let Some(mut conn) = link.connection().await else {
                counts.unmirrored.fetch_add(1, Relaxed);
                return;
            };
            let set: redis::RedisResult<()> =
                redis::cmd("SET").arg(&key).arg(record).arg("EX").arg(ttl).query_async(&mut conn).await;
            match set {
                Ok(()) => counts.mirrored.fetch_add(1, Relaxed),
                Err(e) => {
                    tracing::debug!(error = %e, "stored response not mirrored to Redis");
                    link.failed();
                    counts.errors.fetch_add(1, Relaxed);
                    counts.unmirrored.fetch_add(1, Relaxed)
                }
            };
        });
    }

    /// What Redis holds for the key: `Some(Some(kept))`, `Some(None)` for a deleted or
    /// unreadable one, `None` when Redis has nothing or cannot be asked.
    async fn ask_redis(&self, shared: &Shared, key: &str) -> Option<Option<Kept>> {
        let mut conn = shared.link.connection().await?;
        let got: redis::RedisResult<Option<String>> = redis::cmd("GET").arg(key).query_async(&mut conn).await;
        let text = match got {
            Ok(t) => t?,
            Err(e) => {
                tracing::debug!(error = %e, "stored response lookup in Redis failed; using this replica's");
                shared.link.failed();
                shared.counts.errors.fetch_add(1, Relaxed);
                return None;
            }
        };
        let mut v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if v["deleted"] == true || !v["conversation"].is_array() {
            return Some(None);
        }
        let mut array = |field: &str| match v[field].take() {
            Value::Array(a) => a,
            _ => Vec::new(), // `items` in a record written before they were kept
        };
        let (conversation, items) = (array("conversation"), array("items"));
        Some(Some(Kept {
            conversation: Arc::new(conversation),
            items: Arc::new(items),
            response: Arc::new(v["response"].take()),
        }))
    }

    /// A stored response, if `tenant` made it and it is still kept (Redis first, then this
    /// replica's memory).
    async fn lookup(&self, id: &str, tenant: &str) -> Option<Kept> {
        if let Some(shared) = &self.shared {
            match self.ask_redis(shared, &redis_key(tenant, id)).await {
                Some(Some(kept)) => return Some(kept),
                Some(None) => return None,
                None => {}
            }
        }
        let inner = self.inner.lock();
        inner.entries.get(id).filter(|s| s.tenant == tenant && s.at.elapsed() < self.ttl).map(|s| s.kept.clone())
    }

    /// What a follow-up to `id` continues.
    pub async fn continued(&self, id: &str, tenant: &str) -> Option<Continued> {
        let kept = self.lookup(id, tenant).await?;
        let mut items = kept.items.as_ref().clone();
        if let Some(output) = kept.response["output"].as_array() {
            items.extend(output.iter().cloned());
        }
        Some(Continued { conversation: kept.conversation.as_ref().clone(), items })
    }

    /// The input items a stored response was made from, oldest first.
    pub async fn input_items(&self, id: &str, tenant: &str) -> Option<Arc<Vec<Value>>> {
        self.lookup(id, tenant).await.map(|k| k.items)
    }

    /// The stored Responses object.
    pub async fn response(&self, id: &str, tenant: &str) -> Option<Arc<Value>> {
        self.lookup(id, tenant).await.map(|k| k.response)
    }

    /// Forgets `id` if `tenant` made it, here and (with a tombstone, so no replica serves its
    /// own copy) in Redis; whether it was there.
    pub async fn delete(&self, id: &str, tenant: &str) -> bool {
        let existed = self.lookup(id, tenant).await.is_some();
        {
            let mut inner = self.inner.lock();
            if inner.entries.get(id).is_some_and(|s| s.tenant == tenant) {
                if let Some(gone) = inner.entries.remove(id) {
                    inner.bytes -= gone.bytes;
                }
            }
        }
        if let (true, Some(shared)) = (existed, &self.shared) {
            if let Some(mut conn) = shared.link.connection().await {
                let set: redis::RedisResult<()> = redis::cmd("SET")
                    .arg(redis_key(tenant, id))
                    .arg(r#"{"deleted":true}"#)
                    .arg("EX")
                    .arg(self.ttl.as_secs().max(1))
                    .query_async(&mut conn)
                    .await;
                if set.is_err() {
                    shared.link.failed();
                    shared.counts.errors.fetch_add(1, Relaxed);
                }
            }
        }
        existed
    }

    /// Bytes held in memory (for tests).
    pub fn bytes(&self) -> usize {
        self.inner.lock().bytes
    }

    pub fn stats(&self) -> StoreStats {
        let (entries, bytes) = {
            let inner = self.inner.lock();
            (inner.entries.len(), inner.bytes)
        };
        let shared = self.shared.as_ref().map(|s| {
            let c = &s.counts;
            (c.mirrored.load(Relaxed), c.unmirrored.load(Relaxed), c.errors.load(Relaxed))
        });
        StoreStats { entries, bytes, shared }
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
    items: Vec<Value>,
    tenant: String,
}

/// Keeps a finished answer for follow-ups: the conversation through its turn, its input items,
/// and the object.
fn keep(
    store: &ResponseStore,
    id: &str,
    tenant: &str,
    (mut history, items): (Vec<Value>, Vec<Value>),
    finished: Finished,
) {
    history.push(finished.turn);
    store.put(id, tenant, history, items, finished.response);
}

/// `POST /v1/responses`.
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let id = responses::new_id("resp");
    let pending: Mutex<Option<Pending>> = Mutex::new(None);
    let parse = async |bytes: &[u8], tenant: &str| {
        let req: responses::ResponsesRequest = parse_json(bytes)?;
        let previous = match &req.previous_response_id {
            Some(p) => {
                state.responses.continued(p, tenant).await.ok_or_else(|| not_found(p, Some("previous_response_id")))?
            }
            None => Continued { conversation: Vec::new(), items: Vec::new() },
        };
        let prepared = responses::to_chat_request(req, previous.conversation)?;
        let mut items = previous.items;
        items.extend(prepared.items);
        let (echo, history, tenant) = (prepared.echo, prepared.history, tenant.to_string());
        *pending.lock() = Some(Pending { echo, history, items, tenant });
        Ok(prepared.chat)
    };
    let render = |served: Served, rid: &str, slot: OwnedSemaphorePermit| -> Response {
        // `parse` recorded the request before the pipeline could serve it; only a bug gets here
        let Some(Pending { echo, history, items, tenant }) = pending.lock().take() else {
            return error_response(&GatewayError::Internal("a response was served for no parsed request".into()), rid);
        };
        let store = state.responses.clone();
        let stored = echo.store;
        let mut resp = match served.body {
            Body::Json(r) => {
                let finished = responses::to_response(&r, &id, &echo);
                let body = axum::Json(&finished.response).into_response();
                if stored {
                    keep(&store, &id, &tenant, (history, items), finished);
                }
                body
            }
            Body::Stream(stream) => {
                let id = id.clone();
                translated_sse(stream, slot, StreamTranslator::new(id.clone(), echo), move |t| {
                    let (events, finished) = t.finish();
                    if stored {
                        keep(&store, &id, &tenant, (history, items), finished);
                    }
                    events
                })
            }
        };
        meta_headers(&mut resp, &served.meta, rid);
        resp
    };
    handle(&state, &headers, body, parse, render, responses_error).await
}

/// Errors about the translated chat request name the field this client sent: `messages` is
/// `input` here.
fn responses_error(e: &GatewayError, rid: &str) -> Response {
    match e {
        GatewayError::InvalidRequest { message, param: Some(p) } if p == "messages" => {
            error_response(&GatewayError::invalid(message.replace("`messages`", "`input`"), Some("input")), rid)
        }
        _ => error_response(e, rid),
    }
}

/// `GET /v1/responses/{id}`: a stored response, to the tenant that made it.
pub async fn retrieve(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let rid = request_id(&headers);
    let found = async {
        let tenant = authenticate(&state, &headers)?;
        state.responses.response(&id, &tenant.id).await.ok_or_else(|| not_found(&id, None))
    };
    match found.await {
        Ok(r) => axum::Json(r.as_ref().clone()).into_response(),
        Err(e) => error_response(&e, &rid),
    }
}

/// Input items listed at most, and by default, per page (OpenAI's bounds).
const MAX_ITEMS_PAGE: usize = 100;
const DEFAULT_ITEMS_PAGE: usize = 20;

/// One page of a stored response's input items, as `GET /v1/responses/{id}/input_items` lists
/// them: newest first unless `asc`, starting after the item `after`.
fn items_page(items: &[Value], limit: usize, asc: bool, after: Option<&str>) -> Result<Value, GatewayError> {
    let ordered: Vec<&Value> = match asc {
        true => items.iter().collect(),
        false => items.iter().rev().collect(),
    };
    let start = match after {
        Some(a) => match ordered.iter().position(|i| i["id"] == a) {
            Some(p) => p + 1,
            None => {
                return Err(GatewayError::invalid(
                    format!("no input item with id '{a}' in this response"),
                    Some("after"),
                ))
            }
        },
        None => 0,
    };
    let page: Vec<&Value> = ordered.iter().skip(start).take(limit).copied().collect();
    let id_of = |v: Option<&&Value>| v.map_or(Value::Null, |v| v["id"].clone());
    Ok(json!({
        "object": "list",
        "data": page,
        "first_id": id_of(page.first()),
        "last_id": id_of(page.last()),
        "has_more": start + page.len() < ordered.len(),
    }))
}

/// `GET /v1/responses/{id}/input_items[?limit=&order=&after=]`: the items a stored response was
/// made from, those it continued through `previous_response_id` included (its own output is
/// not an input: that is `GET /v1/responses/{id}`). `include` is accepted and changes nothing:
/// nothing here is left out to begin with.
pub async fn input_items(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let rid = request_id(&headers);
    let listed = async {
        let tenant = authenticate(&state, &headers)?;
        let limit = match param(&query, "limit").map(str::parse::<usize>) {
            None => DEFAULT_ITEMS_PAGE,
            Some(Ok(n)) if (1..=MAX_ITEMS_PAGE).contains(&n) => n,
            Some(_) => {
                let m = format!("limit must be an integer from 1 to {MAX_ITEMS_PAGE}");
                return Err(GatewayError::invalid(m, Some("limit")));
            }
        };
        let asc = match param(&query, "order") {
            None | Some("desc") => false,
            Some("asc") => true,
            Some(_) => return Err(GatewayError::invalid("order must be `asc` or `desc`", Some("order"))),
        };
        let items = state.responses.input_items(&id, &tenant.id).await.ok_or_else(|| not_found(&id, None))?;
        items_page(&items, limit, asc, param(&query, "after"))
    };
    match listed.await {
        Ok(page) => axum::Json(page).into_response(),
        Err(e) => error_response(&e, &rid),
    }
}

/// `DELETE /v1/responses/{id}`.
pub async fn delete(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let rid = request_id(&headers);
    let deleted = async {
        let tenant = authenticate(&state, &headers)?;
        match state.responses.delete(&id, &tenant.id).await {
            true => Ok(()),
            false => Err(not_found(&id, None)),
        }
    };
    match deleted.await {
        Ok(()) => axum::Json(json!({"id": id, "object": "response", "deleted": true})).into_response(),
        Err(e) => error_response(&e, &rid),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn conv(text: &str) -> Vec<Value> {
        vec![json!({"role": "user", "content": text})]
    }

    fn store(budget: usize, ttl: Duration) -> ResponseStore {
        ResponseStore::new(budget, ttl, None).unwrap()
    }

    #[tokio::test]
    async fn a_tenant_reads_only_its_own_responses() {
        let s = store(1 << 20, DAY);
        s.put("resp_a", "t-1", conv("hi"), vec![], json!({"id": "resp_a"}));
        assert_eq!(s.continued("resp_a", "t-1").await.unwrap().conversation[0]["content"], "hi");
        assert!(s.continued("resp_a", "t-2").await.is_none());
        assert!(s.response("resp_a", "t-2").await.is_none());
        assert!(!s.delete("resp_a", "t-2").await, "another tenant cannot delete it");
        assert!(s.delete("resp_a", "t-1").await);
        assert!(s.response("resp_a", "t-1").await.is_none());
        assert_eq!(s.bytes(), 0);
    }

    #[tokio::test]
    async fn a_follow_up_continues_the_items_and_the_output() {
        let s = store(1 << 20, DAY);
        let items = vec![json!({"id": "msg_1", "type": "message", "role": "user"})];
        let output = json!({"output": [{"id": "msg_2", "type": "message", "role": "assistant"}]});
        s.put("resp_a", "t", conv("hi"), items, output);
        let c = s.continued("resp_a", "t").await.unwrap();
        assert_eq!(c.conversation, conv("hi"));
        let ids: Vec<&str> = c.items.iter().map(|i| i["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["msg_1", "msg_2"]);
        assert_eq!(s.input_items("resp_a", "t").await.unwrap().len(), 1, "its own output is not an input");
        assert!(s.continued("resp_a", "u").await.is_none() && s.input_items("resp_a", "u").await.is_none());
    }

    #[test]
    fn input_items_page_newest_first_by_default() {
        let items: Vec<Value> = (0..5).map(|i| json!({"id": format!("msg_{i}")})).collect();
        let ids = |v: &Value| {
            v["data"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_string()).collect::<Vec<_>>()
        };
        let p = items_page(&items, 2, false, None).unwrap();
        assert_eq!(ids(&p), ["msg_4", "msg_3"]);
        assert_eq!(
            (p["first_id"].as_str(), p["last_id"].as_str(), p["has_more"].as_bool()),
            (Some("msg_4"), Some("msg_3"), Some(true))
        );
        let p = items_page(&items, 2, false, Some("msg_3")).unwrap();
        assert_eq!(ids(&p), ["msg_2", "msg_1"]);
        let p = items_page(&items, 2, false, Some("msg_1")).unwrap();
        assert_eq!((ids(&p), p["has_more"].as_bool()), (vec!["msg_0".to_string()], Some(false)));
        let p = items_page(&items, 20, true, Some("msg_2")).unwrap();
        assert_eq!(ids(&p), ["msg_3", "msg_4"]);
        assert!(matches!(items_page(&items, 2, true, Some("msg_9")), Err(GatewayError::InvalidRequest { .. })));
        let p = items_page(&items, 2, true, Some("msg_4")).unwrap();
        assert_eq!((p["data"].as_array().unwrap().len(), p["has_more"].as_bool()), (0, Some(false)));
    }

    #[tokio::test]
    async fn the_oldest_are_forgotten_past_the_budget_and_the_age() {
        let one = {
            let s = store(1 << 20, DAY);
            s.put("resp_0", "t", conv(&"x".repeat(100)), vec![], json!({}));
            s.bytes()
        };
        let s = store(3 * one, DAY);
        for i in 0..5 {
            s.put(&format!("resp_{i}"), "t", conv(&"x".repeat(100)), vec![], json!({}));
            assert!(s.bytes() <= 3 * one);
        }
        assert!(s.response("resp_0", "t").await.is_none() && s.response("resp_1", "t").await.is_none());
        for i in 2..5 {
            assert!(s.response(&format!("resp_{i}"), "t").await.is_some());
        }
        // larger than the whole budget: not kept, nothing else evicted for it
        s.put("resp_big", "t", conv(&"x".repeat(10 * one)), vec![], json!({}));
        assert!(s.response("resp_big", "t").await.is_none() && s.response("resp_4", "t").await.is_some());
        // a store of 0 bytes keeps nothing
        let off = store(0, DAY);
        off.put("resp_x", "t", conv("hi"), vec![], json!({}));
        assert!(off.response("resp_x", "t").await.is_none());
        // past its age a response is gone
        let brief = store(1 << 20, Duration::from_millis(20));
        brief.put("resp_y", "t", conv("hi"), vec![], json!({}));
        assert!(brief.response("resp_y", "t").await.is_some());
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert!(brief.response("resp_y", "t").await.is_none());
    }

    #[tokio::test]
    async fn deleted_ids_do_not_pile_up_in_the_order() {
        let s = store(1 << 30, DAY);
        for i in 0..10_000 {
            let id = format!("resp_{i}");
            s.put(&id, "t", conv("hi"), vec![], json!({}));
            s.delete(&id, "t").await;
        }
        assert!(s.inner.lock().order.len() <= 1024 + 1);
    }
}
