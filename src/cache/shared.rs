//! The shared cache tier on Redis, for several replicas behind one load balancer.
//!
//! Redis holds a **stream of inserts** (`XADD`, trimmed to about `max_entries`); every replica
//! publishes what it stores and tails the stream (`XREAD BLOCK`) into its own in-memory cache, so
//! exact and semantic lookups stay local (microseconds, no network hop on the hit path) while an
//! answer fetched by one replica is served by all. A replica that starts replays the stream from
//! the beginning, so a new or restarted replica is warm. Entries carry their expiry; expired ones
//! are skipped on replay.
//!
//! Redis is an accelerator, never a dependency of serving: if it is down or slow, publishing
//! waits in a bounded queue (`cache.shared_queue`; beyond it new entries are dropped, counted)
//! and resumes when Redis returns, the tail reconnects with backoff, and requests are served from
//! the local cache and the upstreams as usual, never waiting on Redis.
//!
//! Namespaces include the tenant, so a mirrored entry is only ever served to its own tenant.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};
use tokio::sync::mpsc;

use bincode::Options;

use super::snapshot::{codec, Record};
use super::{CacheKey, SemanticCache, StoredAnswer};

/// Times one entry is offered to a reachable Redis before it is dropped (counted).
const PUBLISH_TRIES: u32 = 3;
/// Stream entries read per `XREAD`.
const READ_BATCH: usize = 256;
/// How long one `XREAD` blocks waiting for new entries.
const BLOCK: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    #[error("cache.backend {url:?}: {detail}")]
    Url { url: String, detail: String },
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct SharedStats {
    pub published: AtomicU64,
    pub received: AtomicU64,
    pub dropped: AtomicU64,
    pub errors: AtomicU64,
    /// Stream entries that were not a record we can use (undecodable, wrong vector size, not
    /// finite): skipped. Anything that can write to the Redis can write to the stream.
    pub malformed: AtomicU64,
}

/// A running shared tier: the publish queue and the two background tasks (stopped on drop).
pub struct SharedTier {
    /// (stream field, bincode): `e` an entry stored, `d` an invalidation
    tx: mpsc::Sender<(&'static str, Vec<u8>)>,
    pub stats: Arc<SharedStats>,
    ttl: Duration,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for SharedTier {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Where the tier lives in Redis.
#[derive(Debug, Clone)]
pub struct SharedSettings {
    /// `redis://` or `rediss://` (TLS), and a private CA if any.
    pub redis: crate::redis_link::RedisTarget,
    /// The stream key; replicas that should share answers use the same one.
    pub stream: String,
    /// Approximate stream length kept (`XADD … MAXLEN ~`).
    pub max_len: usize,
    /// Inserts waiting to be published (`cache.shared_queue`); beyond this, new ones are dropped
    /// for the other replicas (and counted), so a slow Redis cannot grow memory or slow requests.
    pub queue: usize,
}

impl SharedTier {
    /// Starts publishing to and tailing `settings.stream`. Must run inside a tokio runtime.
    /// Fails only on a malformed URL; an unreachable Redis is retried in the background.
    pub fn start(cache: Arc<SemanticCache>, settings: SharedSettings) -> Result<SharedTier, SharedError> {
        let client = settings
            .redis
            .client()
            .map_err(|e| SharedError::Url { url: settings.redis.redacted(), detail: e.to_string() })?;
        let replica = format!("{:016x}", rand::random::<u64>());
        let stats = Arc::new(SharedStats::default());
        let (tx, rx) = mpsc::channel(settings.queue.max(1));
        let ttl = cache.settings().ttl;
        let publisher =
            tokio::spawn(publish_loop(client.clone(), settings.clone(), replica.clone(), rx, stats.clone()));
        let tail = tokio::spawn(tail_loop(client, settings.clone(), replica, cache, stats.clone()));
        tracing::info!(url = %settings.redis.redacted(), stream = %settings.stream, "shared cache tier on Redis");
        Ok(SharedTier { tx, stats, ttl, tasks: vec![publisher, tail] })
    }

    /// Queues an answer the local cache just stored, for the other replicas. Never waits.
    pub fn publish(&self, key: &CacheKey, vector: Option<&[f32]>, answer: &StoredAnswer) {
        let now = super::unix_now();
        let record = Record {
            namespace: key.namespace,
            exact: key.exact,
            question: key.query.clone(),
            vector: vector.map(<[f32]>::to_vec),
            answer: serde_json::to_string(answer).unwrap_or_default(),
            stored_at: now,
            expires_at: now + self.ttl.as_secs(),
        };
        self.queue("e", &record);
    }

    /// Queues an invalidation the local cache just carried out, so every replica removes the
    /// same entries (each by its own index, with the same rule). It follows the inserts in the
    /// stream, so a replica that replays the stream on start removes them again. Never waits.
    pub fn publish_invalidation(&self, key: &CacheKey, vector: Option<&[f32]>) {
        let inv = Invalidation {
            namespace: key.namespace,
            exact: key.exact,
            question: key.query.clone(),
            vector: vector.map(<[f32]>::to_vec),
        };
        self.queue("d", &inv);
    }

    /// Puts one stream entry (`field` = its bincode) in the publish queue, or counts it dropped
    /// when the queue is full.
    fn queue(&self, field: &'static str, value: &impl serde::Serialize) {
        let Ok(bytes) = bincode::serialize(value) else { return };
        if self.tx.try_send((field, bytes)).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What a `d` stream entry carries: the key and vector an invalidation was asked for.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Invalidation {
    namespace: super::Namespace,
    exact: super::ExactKey,
    question: String,
    vector: Option<Vec<f32>>,
}

async fn connect(client: &redis::Client, response_timeout: Duration) -> redis::RedisResult<MultiplexedConnection> {
    let cfg = AsyncConnectionConfig::new()
        .set_connection_timeout(Duration::from_secs(2))
        .set_response_timeout(response_timeout);
    client.get_multiplexed_async_connection_with_config(&cfg).await
}

/// Reconnect backoff: 0.2 s doubling to 5 s.
fn backoff(failures: u32) -> Duration {
    Duration::from_millis((200u64 << failures.min(5)).min(5000))
}

async fn publish_loop(
    client: redis::Client,
    settings: SharedSettings,
    replica: String,
    mut rx: mpsc::Receiver<(&'static str, Vec<u8>)>,
    stats: Arc<SharedStats>,
) {
    let mut con: Option<MultiplexedConnection> = None;
    let mut failures = 0u32;
    let mut retry_at = tokio::time::Instant::now();
    // the entry being published, kept across a Redis outage: while it waits, the bounded queue
    // behind it holds the rest (and `publish` drops what does not fit), so when Redis returns
    // the other replicas catch up on what was answered meanwhile, up to `cache.shared_queue`
    let mut pending: Option<((&'static str, Vec<u8>), u32)> = None;
    loop {
        let ((field, bytes), tries) = match pending.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(b) => (b, 0),
                None => return,
            },
        };
        if con.is_none() {
            tokio::time::sleep_until(retry_at).await;
            match connect(&client, Duration::from_secs(2)).await {
                Ok(c) => con = Some(c),
                Err(e) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    if failures == 0 {
                        tracing::warn!(error = %e, "shared cache tier unreachable; serving from the local cache");
                    }
                    retry_at = tokio::time::Instant::now() + backoff(failures);
                    failures += 1;
                    pending = Some(((field, bytes), tries));
                    continue;
                }
            }
        }
        let Some(c) = con.as_mut() else { continue };
        let sent: redis::RedisResult<Value> = redis::cmd("XADD")
            .arg(&settings.stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(settings.max_len)
            .arg("*")
            .arg("r")
            .arg(&replica)
            .arg(field)
            .arg(&bytes)
            .query_async(c)
            .await;
        match sent {
            Ok(_) => {
                stats.published.fetch_add(1, Ordering::Relaxed);
                if failures > 0 {
                    tracing::info!("shared cache tier reachable again");
                }
                failures = 0;
            }
            Err(e) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "shared cache tier: publish failed");
                con = None;
                retry_at = tokio::time::Instant::now() + backoff(failures);
                failures += 1;
                // an entry Redis keeps refusing (not just an outage) must not block the queue
                if tries + 1 < PUBLISH_TRIES {
                    pending = Some(((field, bytes), tries + 1));
                } else {
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

async fn tail_loop(
    client: redis::Client,
    settings: SharedSettings,
    replica: String,
    cache: Arc<SemanticCache>,
    stats: Arc<SharedStats>,
) {
    // "0": replay everything still in the stream, then follow it
    let mut last_id = "0".to_string();
    let mut failures = 0u32;
    loop {
        let mut con = match connect(&client, BLOCK + Duration::from_secs(3)).await {
            Ok(c) => c,
            Err(e) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                if failures == 0 {
                    tracing::warn!(error = %e, "shared cache tier unreachable; will retry");
                }
                tokio::time::sleep(backoff(failures)).await;
                failures += 1;
                continue;
            }
        };
        failures = 0;
        loop {
            let read: redis::RedisResult<Value> = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(READ_BATCH)
                .arg("BLOCK")
                .arg(BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&settings.stream)
                .arg(&last_id)
                .query_async(&mut con)
                .await;
            match read {
                Ok(v) => {
                    for (id, fields) in stream_entries(&v) {
                        last_id = id;
                        match apply(&cache, &fields, &replica) {
                            Applied::Inserted | Applied::Removed => stats.received.fetch_add(1, Ordering::Relaxed),
                            Applied::Malformed => stats.malformed.fetch_add(1, Ordering::Relaxed),
                            Applied::Skipped => 0,
                        };
                    }
                }
                Err(e) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "shared cache tier: read failed; reconnecting");
                    tokio::time::sleep(backoff(0)).await;
                    break;
                }
            }
        }
    }
}

/// A stream entry's field/value pairs.
pub(crate) type Fields = Vec<(String, Vec<u8>)>;

/// What one stream entry did to the local cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    Inserted,
    /// Another replica's invalidation, carried out here.
    Removed,
    /// Written by this replica, or expired: nothing to do.
    Skipped,
    /// Not a usable record: counted, never a panic.
    Malformed,
}

/// Decodes one stream entry and inserts it into `cache`. The fuzzer drives this too.
pub(crate) fn apply(cache: &SemanticCache, fields: &[(String, Vec<u8>)], replica: &str) -> Applied {
    match decode(fields, replica) {
        Decoded::Own => Applied::Skipped,
        Decoded::Malformed => Applied::Malformed,
        Decoded::Invalidation(inv) => {
            if inv.vector.as_ref().is_some_and(|v| v.len() != cache.dim() || v.iter().any(|x| !x.is_finite())) {
                return Applied::Malformed;
            }
            let key = CacheKey { namespace: inv.namespace, exact: inv.exact, query: inv.question };
            cache.invalidate(&key, inv.vector.as_deref());
            Applied::Removed
        }
        Decoded::Record(rec) => {
            if rec.vector.as_ref().is_some_and(|v| v.len() != cache.dim() || v.iter().any(|x| !x.is_finite())) {
                Applied::Malformed
            } else if cache.insert_record(rec) {
                Applied::Inserted
            } else {
                Applied::Skipped
            }
        }
    }
}

enum Decoded {
    Own,
    Malformed,
    Record(Record),
    Invalidation(Invalidation),
}

/// A stream entry's record, unless this replica wrote it (it is in the local cache already).
/// Decoded within the entry's own size: no length field in it can make us allocate more.
fn decode(fields: &[(String, Vec<u8>)], replica: &str) -> Decoded {
    let from = fields.iter().find(|(k, _)| k == "r").map(|(_, v)| v.as_slice());
    if from == Some(replica.as_bytes()) {
        return Decoded::Own;
    }
    if let Some(bytes) = fields.iter().find(|(k, _)| k == "d").map(|(_, v)| v.as_slice()) {
        return match codec(bytes.len() as u64).deserialize(bytes) {
            Ok(inv) => Decoded::Invalidation(inv),
            Err(_) => Decoded::Malformed,
        };
    }
    let Some(bytes) = fields.iter().find(|(k, _)| k == "e").map(|(_, v)| v.as_slice()) else {
        return Decoded::Malformed;
    };
    match codec(bytes.len() as u64).deserialize(bytes) {
        Ok(rec) => Decoded::Record(rec),
        Err(_) => Decoded::Malformed,
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// `XREAD`'s reply as (entry id, fields). RESP2: `[[stream, [[id, [k, v, …]], …]]]`; RESP3 may
/// give a map of stream → entries. Anything else (a timeout's nil) is no entries.
pub(crate) fn stream_entries(v: &Value) -> Vec<(String, Fields)> {
    let streams: Vec<&Value> = match v {
        Value::Array(s) => s.iter().filter_map(|s| if let Value::Array(p) = s { p.get(1) } else { None }).collect(),
        Value::Map(m) => m.iter().map(|(_, e)| e).collect(),
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    for entries in streams {
        let Value::Array(entries) = entries else { continue };
        for e in entries {
            let Value::Array(parts) = e else { continue };
            let (Some(id), Some(Value::Array(kv))) = (parts.first().and_then(text), parts.get(1)) else { continue };
            let fields = kv
                .chunks_exact(2)
                .filter_map(|p| match (&p[0], &p[1]) {
                    (k, Value::BulkString(b)) => Some((text(k)?, b.clone())),
                    _ => None,
                })
                .collect();
            out.push((id, fields));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xread_replies_are_parsed_and_own_entries_skipped() {
        let b = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let entry = |id: &str, r: &str| Value::Array(vec![b(id), Value::Array(vec![b("r"), b(r), b("e"), b("x")])]);
        let reply = Value::Array(vec![Value::Array(vec![
            b("switchyard:cache"),
            Value::Array(vec![entry("1-0", "me"), entry("2-0", "other")]),
        ])]);
        let got = stream_entries(&reply);
        assert_eq!(got.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(), ["1-0", "2-0"]);
        assert!(matches!(decode(&got[0].1, "me"), Decoded::Own), "own entry");
        assert!(matches!(decode(&got[1].1, "me"), Decoded::Malformed), "not a record: counted, not a panic");
        assert!(stream_entries(&Value::Nil).is_empty());
    }

    /// Anything that can write to the Redis can write to the stream: records with a NaN or
    /// wrong-sized vector (NaN ones used to be indexed) or a length field claiming 2^64 bytes are
    /// skipped and counted, and never reach the index.
    #[test]
    fn hostile_records_are_counted_as_malformed_and_never_indexed() {
        use crate::cache::{CacheSettings, ExactKey, Namespace};
        let cache = SemanticCache::new(CacheSettings::default(), 3);
        let now = super::super::unix_now();
        let answer = r#"{"response": {"id": "x", "created": 1, "model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]}, "tier": "cheap", "provider": "p", "cost": 0.0}"#;
        let rec = |vector: Option<Vec<f32>>| Record {
            namespace: Namespace([1; 16]),
            exact: ExactKey([2; 32]),
            question: "q".into(),
            vector,
            answer: answer.into(),
            stored_at: now,
            expires_at: now + 60,
        };
        let fields =
            |r: &Record| vec![("r".to_string(), b"other".to_vec()), ("e".to_string(), bincode::serialize(r).unwrap())];
        assert_eq!(apply(&cache, &fields(&rec(Some(vec![f32::NAN, 0.0, 1.0]))), "me"), Applied::Malformed);
        assert_eq!(apply(&cache, &fields(&rec(Some(vec![f32::INFINITY, 0.0, 1.0]))), "me"), Applied::Malformed);
        assert_eq!(apply(&cache, &fields(&rec(Some(vec![1.0, 0.0]))), "me"), Applied::Malformed);
        // the question's length prefix (after the 16 + 32 key bytes) set to u64::MAX
        let mut huge = bincode::serialize(&rec(None)).unwrap();
        huge[48..56].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(apply(&cache, &[("e".to_string(), huge)], "me"), Applied::Malformed);
        assert_eq!(apply(&cache, &[("x".to_string(), b"no record field".to_vec())], "me"), Applied::Malformed);
        assert_eq!(cache.stats().entries, 0);
        assert_eq!(apply(&cache, &fields(&rec(Some(vec![1.0, 0.0, 0.0]))), "me"), Applied::Inserted);
        assert_eq!(cache.stats().entries, 1);
    }
}
