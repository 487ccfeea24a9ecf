//! Process-wide counters, rendered as Prometheus text by `http::metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use std::collections::BTreeMap;

/// Latency histogram bucket bounds, seconds.
pub const BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; 16],
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, seconds: f64) {
        let i = BUCKETS.iter().position(|b| seconds <= *b).unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    /// (cumulative counts per bucket incl. +Inf, sum in seconds)
    pub fn snapshot(&self) -> (Vec<u64>, f64) {
        let mut acc = 0;
        let mut out = Vec::with_capacity(BUCKETS.len() + 1);
        for c in &self.counts {
            acc += c.load(Ordering::Relaxed);
            out.push(acc);
        }
        (out, self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6)
    }
}

/// Counters keyed by a small set of label values.
#[derive(Default)]
pub struct Labeled {
    map: Mutex<BTreeMap<String, f64>>,
}

impl Labeled {
    pub fn add(&self, label: &str, v: f64) {
        *self.map.lock().entry(label.to_string()).or_insert(0.0) += v;
    }
    pub fn snapshot(&self) -> Vec<(String, f64)> {
        self.map.lock().iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

#[derive(Default)]
pub struct Metrics {
    /// by cache outcome: hit_exact, hit_semantic, hit_coalesced, miss, bypass
    pub requests: Labeled,
    /// by HTTP status
    pub errors: Labeled,
    /// by tier
    pub routed: Labeled,
    /// USD spent upstream, by model
    pub cost: Labeled,
    /// USD not spent thanks to the cache or the router
    pub cost_saved: Labeled,
    pub request_seconds: Histogram,
    pub embed_seconds: Histogram,
    pub embed_failures: AtomicU64,
    /// Requests that went on without a vector (no semantic lookup), by cause: queue_full,
    /// timeout (`embed.max_wait`), failed.
    pub embed_skipped: Labeled,
    pub stream_errors: AtomicU64,
}
