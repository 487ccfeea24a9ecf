//! Process-wide counters, rendered as Prometheus text by `http::metrics` and as JSON for the
//! dashboard by `http::stats`, plus a short rolling history of them for the dashboard's charts.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

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

/// The `q`-quantile (0..1) of a histogram given as cumulative bucket counts (one per bound in
/// [`BUCKETS`], then +Inf), interpolated linearly inside the bucket the rank falls in, as
/// Prometheus' `histogram_quantile` does, so the dashboard and a PromQL panel agree. A rank in the
/// +Inf bucket answers the largest finite bound; an empty histogram answers `None`.
pub fn quantile(cumulative: &[u64], q: f64) -> Option<f64> {
    let total = *cumulative.last()?;
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let i = cumulative.iter().position(|&c| c as f64 >= rank)?;
    let Some(&upper) = BUCKETS.get(i) else {
        return BUCKETS.last().copied();
    };
    let (lower, before) = if i == 0 { (0.0, 0) } else { (BUCKETS[i - 1], cumulative[i - 1]) };
    let inside = cumulative[i] - before;
    if inside == 0 {
        return Some(upper);
    }
    Some(lower + (upper - lower) * (rank - before as f64) / inside as f64)
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
    pub fn get(&self, label: &str) -> f64 {
        self.map.lock().get(label).copied().unwrap_or(0.0)
    }
    pub fn sum(&self) -> f64 {
        // a fold from +0.0: `Iterator::sum` of no floats is -0.0, which JSON would show as "-0"
        self.map.lock().values().fold(0.0, |a, b| a + b)
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
    /// Answered requests whose model has no known price, by model
    pub unpriced: Labeled,
    /// Requests answered by another model than routed, by price direction (cheaper, pricier,
    /// same_price, unknown_price), `pricier_refused` failures, and `larger_context`: prompts `auto`
    /// moved to the premium tier because no cheap deployment could take their length
    pub fallbacks: Labeled,
    pub request_seconds: Histogram,
    pub embed_seconds: Histogram,
    pub embed_failures: AtomicU64,
    /// Requests that went on without a vector (no semantic lookup), by cause: queue_full,
    /// timeout (`embed.max_wait`), failed.
    pub embed_skipped: Labeled,
    pub stream_errors: AtomicU64,
    /// Every HTTP request, whatever its route.
    pub http: HttpMetrics,
    /// Samples of the counters above, for the dashboard's charts over the last minutes.
    pub history: History,
}

/// Every HTTP request by route and status, and its time until the response head by route: what
/// an operator's dashboard shows first, for every endpoint (the chat-specific series above say
/// more about chat). A route is the matched path template (`/v1/responses/{id}`, never the id) or
/// `unmatched`, so the label sets stay few.
#[derive(Default)]
pub struct HttpMetrics {
    routes: Mutex<BTreeMap<String, RouteSeries>>,
}

/// One route's requests by status and its time histogram.
#[derive(Default)]
struct RouteSeries {
    by_status: BTreeMap<u16, u64>,
    seconds: Histogram,
}

/// One route as rendered: its requests by status, and its histogram's cumulative counts and sum.
pub type RouteSnapshot = (String, Vec<(u16, u64)>, (Vec<u64>, f64));

impl HttpMetrics {
    /// One lock and, once the route has been seen, no allocation.
    pub fn observe(&self, route: &str, status: u16, seconds: f64) {
        let mut routes = self.routes.lock();
        if !routes.contains_key(route) {
            routes.insert(route.to_string(), RouteSeries::default());
        }
        if let Some(r) = routes.get_mut(route) {
            *r.by_status.entry(status).or_default() += 1;
            r.seconds.observe(seconds);
        }
    }

    /// Every route, ordered, with its statuses ordered.
    pub fn snapshot(&self) -> Vec<RouteSnapshot> {
        let routes = self.routes.lock();
        routes
            .iter()
            .map(|(route, r)| {
                (route.clone(), r.by_status.iter().map(|(s, n)| (*s, *n)).collect(), r.seconds.snapshot())
            })
            .collect()
    }
}

impl Metrics {
    /// The counters as they stand now (cumulative since start), stamped `t_ms` (Unix ms).
    /// `premium_tier` names the tier whose share is reported; `realised_share` comes from the
    /// router, which keeps its own window.
    pub fn sample(&self, t_ms: u64, premium_tier: &str, realised_share: Option<f64>) -> Sample {
        let (latency, _) = self.request_seconds.snapshot();
        Sample {
            t_ms,
            requests: latency.last().copied().unwrap_or(0),
            hit_exact: self.requests.get("hit_exact"),
            hit_semantic: self.requests.get("hit_semantic"),
            outcomes: self.requests.sum(),
            errors: self.errors.sum(),
            routed: self.routed.sum(),
            routed_premium: self.routed.get(premium_tier),
            cost: self.cost.sum(),
            saved_cache: self.cost_saved.get("cache"),
            saved_routing: self.cost_saved.get("routing"),
            latency,
            realised_share,
        }
    }
}

/// One sample of the cumulative counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    pub t_ms: u64,
    /// Chat requests finished (every outcome, errors included): the latency histogram's count.
    pub requests: u64,
    pub hit_exact: f64,
    pub hit_semantic: f64,
    /// Requests that reached a cache outcome (hits of every kind, misses, bypasses).
    pub outcomes: f64,
    pub errors: f64,
    /// Requests sent upstream, and those of them sent to the premium tier.
    pub routed: f64,
    pub routed_premium: f64,
    pub cost: f64,
    pub saved_cache: f64,
    pub saved_routing: f64,
    /// Cumulative latency bucket counts, as [`Histogram::snapshot`].
    pub latency: Vec<u64>,
    pub realised_share: Option<f64>,
}

/// What happened between two samples, as the dashboard plots it. Rates are `None` when their
/// denominator is zero (nothing to divide), so a quiet interval is a gap, not a fake 0%.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Interval {
    /// End of the interval, Unix ms.
    pub t: u64,
    pub rps: f64,
    pub exact_rate: Option<f64>,
    pub semantic_rate: Option<f64>,
    /// USD spent upstream, and saved by the cache and by routing, within the interval.
    pub cost: f64,
    pub saved_cache: f64,
    pub saved_routing: f64,
    /// Latency percentiles of the requests finished within the interval, seconds.
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    /// Premium share of the requests routed within the interval (pinned tiers included).
    pub premium_share: Option<f64>,
    /// The router's realised share at the end of the interval (its own window of decisions).
    pub realised_share: Option<f64>,
    pub errors: f64,
}

impl Interval {
    pub fn between(a: &Sample, b: &Sample) -> Interval {
        let secs = (b.t_ms.saturating_sub(a.t_ms) as f64 / 1000.0).max(1e-3);
        let ratio = |n: f64, d: f64| (d > 0.0).then(|| n / d);
        let outcomes = b.outcomes - a.outcomes;
        let latency: Vec<u64> = b.latency.iter().zip(&a.latency).map(|(x, y)| x.saturating_sub(*y)).collect();
        Interval {
            t: b.t_ms,
            rps: b.requests.saturating_sub(a.requests) as f64 / secs,
            exact_rate: ratio(b.hit_exact - a.hit_exact, outcomes),
            semantic_rate: ratio(b.hit_semantic - a.hit_semantic, outcomes),
            cost: b.cost - a.cost,
            saved_cache: b.saved_cache - a.saved_cache,
            saved_routing: b.saved_routing - a.saved_routing,
            p50: quantile(&latency, 0.5),
            p95: quantile(&latency, 0.95),
            p99: quantile(&latency, 0.99),
            premium_share: ratio(b.routed_premium - a.routed_premium, b.routed - a.routed),
            realised_share: b.realised_share,
            errors: b.errors - a.errors,
        }
    }
}

/// The last [`History::CAPACITY`] samples, taken every [`History::PERIOD`] by a task the app
/// starts: ten minutes of charts in ≈ 300 × 200 bytes, and nothing kept beyond that.
#[derive(Default)]
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    pub const PERIOD: std::time::Duration = std::time::Duration::from_secs(2);
    pub const CAPACITY: usize = 301;

    pub fn push(&self, s: Sample) {
        let mut q = self.samples.lock();
        if q.len() == Self::CAPACITY {
            q.pop_front();
        }
        q.push_back(s);
    }

    /// The intervals between consecutive samples, oldest first.
    pub fn intervals(&self) -> Vec<Interval> {
        let q = self.samples.lock();
        q.iter().zip(q.iter().skip(1)).map(|(a, b)| Interval::between(a, b)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cumulative(per_bucket: &[(usize, u64)]) -> Vec<u64> {
        let mut counts = vec![0u64; BUCKETS.len() + 1];
        for &(i, n) in per_bucket {
            counts[i] += n;
        }
        counts
            .iter()
            .scan(0, |acc, c| {
                *acc += c;
                Some(*acc)
            })
            .collect()
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket_like_prometheus() {
        assert_eq!(quantile(&cumulative(&[]), 0.5), None);
        // 10 requests in (0.01, 0.025]: the median sits halfway through that bucket
        let c = cumulative(&[(5, 10)]);
        let p50 = quantile(&c, 0.5).unwrap();
        assert!((p50 - 0.0175).abs() < 1e-12, "{p50}");
        // 90 fast (≤ 0.5 ms) and 10 in (1, 2.5]: p50 is fast, p95 in the slow bucket
        let c = cumulative(&[(0, 90), (11, 10)]);
        assert!(quantile(&c, 0.5).unwrap() <= 0.0005);
        let p95 = quantile(&c, 0.95).unwrap();
        assert!(p95 > 1.0 && p95 <= 2.5, "{p95}");
        // beyond the last bound: the last finite bound, not infinity
        assert_eq!(quantile(&cumulative(&[(15, 3)]), 0.99), Some(30.0));
    }

    #[test]
    fn the_histogram_and_the_quantile_agree() {
        let h = Histogram::default();
        for _ in 0..99 {
            h.observe(0.003);
        }
        h.observe(7.0);
        let (c, _) = h.snapshot();
        let p50 = quantile(&c, 0.5).unwrap();
        assert!(p50 > 0.0025 && p50 <= 0.005, "{p50}");
        let p99 = quantile(&c, 0.995).unwrap();
        assert!(p99 > 5.0 && p99 <= 10.0, "{p99}");
    }

    #[test]
    fn intervals_are_differences_of_samples_and_the_history_is_bounded() {
        let m = Metrics::default();
        m.history.push(m.sample(1_000, "premium", None));
        for _ in 0..3 {
            m.requests.add("hit_exact", 1.0);
            m.request_seconds.observe(0.001);
        }
        m.requests.add("miss", 1.0);
        m.routed.add("premium", 1.0);
        m.cost.add("large", 0.5);
        m.request_seconds.observe(0.2);
        m.history.push(m.sample(3_000, "premium", Some(0.25)));
        let iv = m.history.intervals();
        assert_eq!(iv.len(), 1);
        let i = &iv[0];
        assert_eq!((i.t, i.rps), (3_000, 2.0));
        assert_eq!((i.exact_rate, i.semantic_rate), (Some(0.75), Some(0.0)));
        assert_eq!((i.cost, i.premium_share, i.realised_share), (0.5, Some(1.0), Some(0.25)));
        // a quiet interval has no rates
        m.history.push(m.sample(5_000, "premium", Some(0.25)));
        let quiet = &m.history.intervals()[1];
        assert_eq!((quiet.rps, quiet.exact_rate, quiet.p50), (0.0, None, None));
        assert!(m.errors.sum().is_sign_positive(), "no errors is 0, not -0");
        for t in 0..(History::CAPACITY as u64 + 10) {
            m.history.push(m.sample(10_000 + t, "premium", None));
        }
        assert_eq!(m.history.intervals().len(), History::CAPACITY - 1);
    }
}
