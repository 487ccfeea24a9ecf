//! The semantic cache: exact fast path, per-namespace nearest-neighbour lookup, TTL, bounded size
//! with approximate-LRU eviction, snapshots.
//!
//! It takes plain `&[f32]` vectors and knows nothing of the model that made them.

pub mod guard;
pub mod index;
mod key;
pub mod rule;
pub mod shared;
pub(crate) mod snapshot;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::RwLock;

use crate::api::ChatResponse;
pub use index::{HnswParams, VectorIndex};
pub use key::{thread_of, CacheKey, ExactKey, Namespace, Thread};
pub use rule::{CacheRule, RuleKind};
pub use shared::{SharedSettings, SharedTier};

#[derive(Debug, Clone)]
pub struct CacheSettings {
    pub threshold: f32,
    pub ttl: Duration,
    pub max_entries: usize,
    pub hnsw_from: usize,
    pub hnsw: HnswParams,
    /// Plain cosine, or cosine with the near-miss guard's vetoes and penalties.
    pub rule: RuleKind,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            threshold: 0.965,
            ttl: Duration::from_secs(86400),
            max_entries: 1_000_000,
            hnsw_from: 4096,
            hnsw: HnswParams::default(),
            rule: RuleKind::GuardedCosine,
        }
    }
}

/// What was answered, and what it cost, for replay and for the cost-saved header.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StoredAnswer {
    pub response: ChatResponse,
    pub tier: String,
    pub provider: String,
    pub cost: f64,
}

pub struct Entry {
    pub id: u64,
    pub namespace: Namespace,
    pub exact: ExactKey,
    pub question: String,
    pub answer: Arc<StoredAnswer>,
    pub stored_at: u64,
    pub expires_at: u64,
    last_used: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HitKind {
    Exact,
    Semantic,
}

pub struct Hit {
    pub entry: Arc<Entry>,
    pub similarity: f32,
    pub kind: HitKind,
}

/// Limits on what a lookup may return, from the request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Lookup {
    /// Per-request threshold; only ever raises the configured one.
    pub threshold: Option<f32>,
    /// `Cache-Control: max-age`: only entries younger than this.
    pub max_age: Option<Duration>,
}

#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct CacheStats {
    pub entries: u64,
    pub exact_hits: u64,
    pub semantic_hits: u64,
    pub misses: u64,
    pub guard_vetoes: u64,
    pub evictions: u64,
    pub expirations: u64,
    /// Entries removed on request (`POST /v1/cache/invalidate`, or another replica's).
    pub invalidations: u64,
    pub namespaces: u64,
}

#[derive(Default)]
struct Counters {
    exact_hits: AtomicU64,
    semantic_hits: AtomicU64,
    misses: AtomicU64,
    guard_vetoes: AtomicU64,
    evictions: AtomicU64,
    expirations: AtomicU64,
    invalidations: AtomicU64,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<u64, Arc<Entry>>,
    exact: HashMap<ExactKey, u64>,
    indexes: HashMap<Namespace, VectorIndex>,
    next_id: u64,
}

/// Neighbours an invalidation looks at: far more than the near-identical copies of one question
/// a namespace holds in practice (a paraphrase served from the cache is not stored again).
const INVALIDATE_NEIGHBOURS: usize = 64;

pub struct SemanticCache {
    settings: CacheSettings,
    dim: usize,
    inner: RwLock<Inner>,
    counters: Counters,
    clock: AtomicU64,
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl SemanticCache {
    pub fn new(settings: CacheSettings, dim: usize) -> Self {
        SemanticCache {
            settings,
            dim,
            inner: RwLock::new(Inner { next_id: 1, ..Inner::default() }),
            counters: Counters::default(),
            clock: AtomicU64::new(1),
        }
    }

    pub fn settings(&self) -> &CacheSettings {
        &self.settings
    }

    /// The vector size this cache indexes.
    pub fn dim(&self) -> usize {
        self.dim
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    fn usable(&self, e: &Entry, now: u64, lookup: &Lookup) -> bool {
        if e.expires_at <= now {
            return false;
        }
        match lookup.max_age {
            Some(age) => now.saturating_sub(e.stored_at) <= age.as_secs(),
            None => true,
        }
    }

    /// The exact fast path: same namespace and same normalised question.
    pub fn exact(&self, key: &CacheKey, lookup: &Lookup) -> Option<Hit> {
        let now = unix_now();
        let inner = self.inner.read();
        let entry = inner.exact.get(&key.exact).and_then(|id| inner.entries.get(id))?;
        if !self.usable(entry, now, lookup) {
            return None;
        }
        entry.last_used.store(self.tick(), Ordering::Relaxed);
        self.counters.exact_hits.fetch_add(1, Ordering::Relaxed);
        Some(Hit { entry: entry.clone(), similarity: 1.0, kind: HitKind::Exact })
    }

    /// The nearest usable entry in the key's namespace whose rule score (cosine, less the guard's
    /// penalties; vetoed pairs never) clears the threshold. Counts a miss when there is none.
    pub fn nearest(&self, key: &CacheKey, vector: &[f32], lookup: &Lookup) -> Option<Hit> {
        let threshold = lookup.threshold.map_or(self.settings.threshold, |t| t.max(self.settings.threshold));
        let now = unix_now();
        let found = {
            let inner = self.inner.read();
            let candidates = inner.indexes.get(&key.namespace).map(|ix| ix.search(vector, 4)).unwrap_or_default();
            let mut found = None;
            for (id, sim) in candidates {
                if sim < threshold {
                    break;
                }
                let Some(entry) = inner.entries.get(&id) else { continue };
                if !self.usable(entry, now, lookup) {
                    continue;
                }
                let score = rule::score(self.settings.rule, &entry.question, &key.query, sim);
                if score < threshold {
                    if score < 0.0 {
                        self.counters.guard_vetoes.fetch_add(1, Ordering::Relaxed);
                    }
                    continue;
                }
                found = Some(Hit { entry: entry.clone(), similarity: sim.min(1.0), kind: HitKind::Semantic });
                break;
            }
            found
        };
        match &found {
            Some(hit) => {
                hit.entry.last_used.store(self.tick(), Ordering::Relaxed);
                self.counters.semantic_hits.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                self.counters.misses.fetch_add(1, Ordering::Relaxed);
            }
        }
        found
    }

    /// Removes what could answer `key`: its exact entry, and every entry of its namespace whose
    /// rule score against it (cosine less the guard's penalties, as [`SemanticCache::nearest`]
    /// scores it) clears the configured threshold. That is every entry a request for `key` might
    /// be served, whatever stricter threshold or `max-age` it adds. Returns how many went.
    pub fn invalidate(&self, key: &CacheKey, vector: Option<&[f32]>) -> usize {
        let threshold = self.settings.threshold;
        let mut inner = self.inner.write();
        let mut gone: Vec<u64> = inner.exact.get(&key.exact).copied().into_iter().collect();
        if let (Some(v), Some(ix)) = (vector.filter(|v| v.len() == self.dim), inner.indexes.get(&key.namespace)) {
            for (id, sim) in ix.search(v, INVALIDATE_NEIGHBOURS) {
                if sim < threshold {
                    break;
                }
                let Some(entry) = inner.entries.get(&id) else { continue };
                if rule::score(self.settings.rule, &entry.question, &key.query, sim) >= threshold && !gone.contains(&id)
                {
                    gone.push(id);
                }
            }
        }
        for &id in &gone {
            self.remove_locked(&mut inner, id);
        }
        self.counters.invalidations.fetch_add(gone.len() as u64, Ordering::Relaxed);
        gone.len()
    }

    /// Counts a miss for a lookup that never reached [`SemanticCache::nearest`] (no vector).
    pub fn record_miss(&self) {
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// Stores an answer. `vector` may be `None` (embedder overloaded): then only the exact path
    /// can serve it.
    pub fn store(&self, key: &CacheKey, vector: Option<&[f32]>, answer: StoredAnswer) {
        let now = unix_now();
        self.insert(
            key.namespace,
            key.exact,
            key.query.clone(),
            vector,
            Arc::new(answer),
            now,
            now + self.settings.ttl.as_secs(),
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn insert(
        &self,
        namespace: Namespace,
        exact: ExactKey,
        question: String,
        vector: Option<&[f32]>,
        answer: Arc<StoredAnswer>,
        stored_at: u64,
        expires_at: u64,
    ) {
        if vector.is_some_and(|v| v.len() != self.dim) {
            return; // a bug upstream of us; never index a wrong-sized vector
        }
        let mut inner = self.inner.write();
        // replacing the same question: drop the old entry first
        if let Some(old) = inner.exact.get(&exact).copied() {
            self.remove_locked(&mut inner, old);
        }
        while inner.entries.len() >= self.settings.max_entries {
            if !self.evict_one(&mut inner, stored_at) {
                break;
            }
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let entry = Arc::new(Entry {
            id,
            namespace,
            exact,
            question,
            answer,
            stored_at,
            expires_at,
            last_used: AtomicU64::new(self.tick()),
        });
        inner.entries.insert(id, entry);
        inner.exact.insert(exact, id);
        if let Some(v) = vector {
            let (dim, settings) = (self.dim, &self.settings);
            let ix = inner.indexes.entry(namespace).or_insert_with(|| VectorIndex::flat(dim));
            ix.insert(id, v);
            // grown past the flat scan's budget, or too many tombstones: (re)build the graph
            if (ix.is_flat() && ix.len() >= settings.hnsw_from) || ix.needs_rebuild() {
                *ix = VectorIndex::hnsw(&ix.items(), settings.hnsw);
            }
        }
    }

    fn remove_locked(&self, inner: &mut Inner, id: u64) {
        if let Some(e) = inner.entries.remove(&id) {
            if inner.exact.get(&e.exact) == Some(&id) {
                inner.exact.remove(&e.exact);
            }
            if let Some(ix) = inner.indexes.get_mut(&e.namespace) {
                ix.remove(id);
                if ix.is_empty() {
                    inner.indexes.remove(&e.namespace);
                }
            }
        }
    }

    /// Approximate LRU, as Redis does it: among a sample of entries, drop an expired one if any,
    /// else the least recently used. O(sample) instead of keeping a global ordering under the lock.
    fn evict_one(&self, inner: &mut Inner, now: u64) -> bool {
        let victim = inner
            .entries
            .values()
            .take(32)
            .min_by_key(|e| if e.expires_at <= now { 0 } else { e.last_used.load(Ordering::Relaxed) })
            .map(|e| (e.id, e.expires_at <= now));
        match victim {
            Some((id, expired)) => {
                self.remove_locked(inner, id);
                if expired {
                    self.counters.expirations.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.counters.evictions.fetch_add(1, Ordering::Relaxed);
                }
                true
            }
            None => false,
        }
    }

    /// Drops every expired entry; run periodically so expired answers do not hold memory.
    pub fn purge_expired(&self) -> usize {
        let now = unix_now();
        let mut inner = self.inner.write();
        let dead: Vec<u64> = inner.entries.values().filter(|e| e.expires_at <= now).map(|e| e.id).collect();
        for id in &dead {
            self.remove_locked(&mut inner, *id);
        }
        self.counters.expirations.fetch_add(dead.len() as u64, Ordering::Relaxed);
        dead.len()
    }

    pub fn stats(&self) -> CacheStats {
        let inner = self.inner.read();
        let c = &self.counters;
        CacheStats {
            entries: inner.entries.len() as u64,
            exact_hits: c.exact_hits.load(Ordering::Relaxed),
            semantic_hits: c.semantic_hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            guard_vetoes: c.guard_vetoes.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
            expirations: c.expirations.load(Ordering::Relaxed),
            invalidations: c.invalidations.load(Ordering::Relaxed),
            namespaces: inner.indexes.len() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ChatRequest;

    fn key(q: &str, tenant: &str) -> CacheKey {
        let req: ChatRequest = serde_json::from_value(serde_json::json!({
            "model": "m", "messages": [{"role": "user", "content": q}]
        }))
        .unwrap();
        CacheKey::new(&req, tenant, "m").unwrap()
    }

    fn answer(text: &str) -> StoredAnswer {
        let response: ChatResponse = serde_json::from_value(serde_json::json!({
            "id": "x", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]
        }))
        .unwrap();
        StoredAnswer { response, tier: "cheap".into(), provider: "p".into(), cost: 0.5 }
    }

    fn v(x: f32, y: f32) -> Vec<f32> {
        let n = (x * x + y * y).sqrt();
        vec![x / n, y / n]
    }

    #[test]
    fn exact_semantic_threshold_namespace_eviction() {
        let cache = SemanticCache::new(
            CacheSettings { threshold: 0.9, max_entries: 3, rule: RuleKind::GlobalCosine, ..Default::default() },
            2,
        );
        let k1 = key("alpha question", "t");
        cache.store(&k1, Some(&v(1.0, 0.0)), answer("A"));
        assert_eq!(cache.exact(&k1, &Lookup::default()).unwrap().kind, HitKind::Exact);
        let k2 = key("alpha question reworded", "t");
        assert!(cache.exact(&k2, &Lookup::default()).is_none());
        let hit = cache.nearest(&k2, &v(1.0, 0.1), &Lookup::default()).unwrap();
        assert_eq!(hit.entry.answer.response.choices[0].message.content.as_deref(), Some("A"));
        // a request may raise the threshold but never lower it
        assert!(cache.nearest(&k2, &v(1.0, 0.1), &Lookup { threshold: Some(0.999), ..Default::default() }).is_none());
        assert!(cache.nearest(&k2, &v(1.0, 0.6), &Lookup { threshold: Some(0.1), ..Default::default() }).is_none());
        // other tenant: never
        assert!(cache.nearest(&key("alpha question reworded", "u"), &v(1.0, 0.0), &Lookup::default()).is_none());
        // eviction keeps the size bounded
        for i in 0..5 {
            cache.store(&key(&format!("q{i}"), "t"), Some(&v(0.0, 1.0)), answer("B"));
        }
        let s = cache.stats();
        assert_eq!(s.entries, 3);
        assert_eq!(s.evictions, 3);
    }

    #[test]
    fn guard_vetoes_number_changes() {
        let cache = SemanticCache::new(CacheSettings { threshold: 0.5, ..Default::default() }, 2);
        cache.store(&key("What is 2+3?", "t"), Some(&v(1.0, 0.0)), answer("5"));
        assert!(cache.nearest(&key("What is 2+4?", "t"), &v(1.0, 0.0), &Lookup::default()).is_none());
        assert_eq!(cache.stats().guard_vetoes, 1);
    }

    #[test]
    fn expired_entries_are_not_served() {
        let cache = SemanticCache::new(CacheSettings { ttl: Duration::from_secs(0), ..Default::default() }, 2);
        let k = key("q", "t");
        cache.store(&k, Some(&v(1.0, 0.0)), answer("A"));
        assert!(cache.exact(&k, &Lookup::default()).is_none());
        assert_eq!(cache.purge_expired(), 1);
    }
}
