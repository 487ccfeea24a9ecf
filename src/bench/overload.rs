//! `switchyard overload`: the gateway offered about twice the load it can carry on the semantic
//! path, to show what overload costs. In one process: the demo upstreams (OpenAI wire format, a
//! fixed latency), a gateway with the cache on and `server.max_concurrency` set, and a client.
//!
//! 1. **Capacity**: a few closed-loop workers send distinct prompts (every one a miss that is
//!    embedded, looked up and sent upstream) for a while; their throughput is the sustainable
//!    semantic-path rate S (the report says how many of them had to skip the lookup: ideally 0).
//! 2. **Overload**: an open-loop generator offers `multiplier × S` requests per second (new
//!    prompts, sent on schedule whether or not earlier ones finished) for the same time.
//!
//! Reported: the admitted requests' latency, how many were shed with 503 and whether each carried
//! `Retry-After`, how many skipped the semantic lookup because the embedder's queue was full,
//! any other error (there must be none), RSS before and after, panics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

use super::soak::{proc_sample, ProcSample};
use crate::app::{self, AppError};
use crate::config::Config;
use crate::embed::Embedder;

#[derive(Debug, Clone)]
pub struct OverloadOptions {
    /// Length of each phase.
    pub phase: Duration,
    pub max_concurrency: usize,
    /// Closed-loop workers of the capacity phase: few enough that the embedder keeps up.
    pub capacity_workers: usize,
    pub upstream_latency: Duration,
    /// Offered rate in phase 2, as a multiple of the measured capacity.
    pub multiplier: f64,
}

impl Default for OverloadOptions {
    fn default() -> Self {
        OverloadOptions {
            phase: Duration::from_secs(30),
            max_concurrency: 16,
            capacity_workers: 4,
            upstream_latency: Duration::from_millis(100),
            multiplier: 2.0,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct OverloadReport {
    pub max_concurrency: usize,
    pub upstream_latency_ms: f64,
    pub embed_max_wait_ms: f64,
    /// Phase 1: the sustainable semantic-path rate and its latency.
    pub capacity_workers: usize,
    pub capacity_rps: f64,
    /// Capacity-phase requests that skipped the semantic lookup (ideally none).
    pub capacity_skipped: u64,
    pub capacity_p50_ms: f64,
    pub capacity_p99_ms: f64,
    /// Phase 2.
    pub offered_rps: f64,
    pub offered: u64,
    pub admitted: u64,
    pub admitted_rps: f64,
    pub admitted_p50_ms: f64,
    pub admitted_p99_ms: f64,
    pub admitted_max_ms: f64,
    /// The bound admitted requests are held to, stated before phase 2 from the configuration and
    /// phase 1: `embed.max_wait` (the longest a request waits for its vector) + the upstream's
    /// latency + `max_concurrency` requests' worth of gateway work at the measured capacity.
    pub latency_bound_ms: f64,
    pub shed_503: u64,
    pub shed_with_retry_after: u64,
    pub shed_p99_ms: f64,
    /// Admitted requests that skipped the semantic lookup (embedder queue full or too slow).
    pub semantic_skipped: u64,
    /// … of which refused at once by the embedder (the rest waited out `embed.max_wait`).
    pub skipped_at_once: u64,
    pub other_errors: u64,
    pub other_samples: Vec<String>,
    pub rss_before: ProcSample,
    pub rss_after: ProcSample,
    pub panics: u64,
}

#[derive(Default)]
struct Tally {
    ok_ms: Mutex<Vec<f64>>,
    shed_ms: Mutex<Vec<f64>>,
    shed_ra: AtomicU64,
    other: AtomicU64,
    samples: Mutex<Vec<String>>,
}

static PANICS: AtomicU64 = AtomicU64::new(0);
static NEXT: AtomicU64 = AtomicU64::new(0);

const SUBJECTS: [&str; 12] = [
    "a sailboat",
    "a bakery",
    "a chess club",
    "a vegetable garden",
    "a podcast",
    "a bicycle shop",
    "a choir",
    "a beehive",
    "a food truck",
    "a library",
    "a pottery studio",
    "a rowing team",
];
const ASKS: [&str; 8] = [
    "How do I start",
    "What does it cost to run",
    "How do I insure",
    "How do I market",
    "How do I staff",
    "What permits do I need for",
    "How do I plan a budget for",
    "How do I find volunteers for",
];

/// A prompt no earlier request asked: every request is a semantic-path miss.
fn fresh_prompt() -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed) as usize;
    let (a, s) = (ASKS[n % ASKS.len()], SUBJECTS[(n / ASKS.len()) % SUBJECTS.len()]);
    format!("{a} {s} in town number {n}? (request {n})")
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        0.0
    } else {
        v[((v.len() - 1) as f64 * p).round() as usize]
    }
}

async fn one(client: &reqwest::Client, url: &str, t: &Tally) {
    let body = serde_json::json!({"model": "cheap", "messages": [{"role": "user", "content": fresh_prompt()}]});
    let started = Instant::now();
    match client.post(url).json(&body).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let retry_after = r.headers().contains_key("retry-after");
            let ok = r.bytes().await.is_ok();
            let ms = started.elapsed().as_secs_f64() * 1e3;
            match (status, ok) {
                (200, true) => t.ok_ms.lock().push(ms),
                (503, true) => {
                    t.shed_ms.lock().push(ms);
                    if retry_after {
                        t.shed_ra.fetch_add(1, Ordering::Relaxed);
                    }
                }
                _ => {
                    t.other.fetch_add(1, Ordering::Relaxed);
                    t.samples.lock().push(format!("HTTP {status}"));
                }
            }
        }
        Err(e) => {
            t.other.fetch_add(1, Ordering::Relaxed);
            let mut s = t.samples.lock();
            if s.len() < 10 {
                s.push(e.to_string());
            }
        }
    }
}

async fn metric(client: &reqwest::Client, base: &str, series: &str) -> f64 {
    let text = match client.get(format!("{base}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => return 0.0,
    };
    // every labelled series of `series` (the prefix up to `{`), summed
    text.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.trim().parse::<f64>().ok()))
        .sum()
}

pub async fn run(opts: OverloadOptions, embedder: Arc<dyn Embedder>) -> Result<OverloadReport, AppError> {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::Relaxed);
        previous(info);
    }));
    let base_cfg = Config::parse_partial(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nmax_concurrency = {}\n",
        opts.max_concurrency
    ))?;
    let cfg = app::demo_config(base_cfg, opts.upstream_latency).await?;
    let max_wait = cfg.embed.max_wait.0;
    let g = app::start(cfg, Some(embedder), false).await?;
    let base = format!("http://{}", g.addr);
    let url = format!("{base}/v1/chat/completions");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| AppError::Provider(e.to_string()))?;

    // phase 1: capacity, closed loop (nothing is shed)
    let cap = Tally::default();
    let until = Instant::now() + opts.phase;
    let started = Instant::now();
    let workers = (0..opts.capacity_workers.clamp(1, opts.max_concurrency)).map(|_| async {
        while Instant::now() < until {
            one(&client, &url, &cap).await;
        }
    });
    futures_util::future::join_all(workers).await;
    let secs = started.elapsed().as_secs_f64();
    let mut cap_ms = cap.ok_ms.lock().clone();
    let capacity_rps = cap_ms.len() as f64 / secs.max(1e-9);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = proc_sample();
    let capacity_skipped = metric(&client, &base, "switchyard_embed_skipped_total{").await;
    let full_before = metric(&client, &base, "switchyard_embed_skipped_total{cause=\"queue_full\"}").await;

    // phase 2: open loop at `multiplier` × capacity
    let rate = (capacity_rps * opts.multiplier).max(1.0);
    let t = Arc::new(Tally::default());
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let until = Instant::now() + opts.phase;
    let started = Instant::now();
    let mut tasks = Vec::new();
    let mut offered = 0u64;
    while Instant::now() < until {
        tick.tick().await;
        offered += 1;
        let (client, url, t) = (client.clone(), url.clone(), t.clone());
        tasks.push(tokio::spawn(async move { one(&client, &url, &t).await }));
    }
    let offer_secs = started.elapsed().as_secs_f64();
    for task in tasks {
        let _ = task.await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = proc_sample();
    let skipped = metric(&client, &base, "switchyard_embed_skipped_total{").await - capacity_skipped;
    let at_once = metric(&client, &base, "switchyard_embed_skipped_total{cause=\"queue_full\"}").await - full_before;
    g.shutdown().await;

    let other_samples = t.samples.lock().clone();
    let mut ok = t.ok_ms.lock().clone();
    let mut shed = t.shed_ms.lock().clone();
    let per_request_ms = 1e3 / capacity_rps.max(1e-9);
    Ok(OverloadReport {
        max_concurrency: opts.max_concurrency,
        upstream_latency_ms: opts.upstream_latency.as_secs_f64() * 1e3,
        embed_max_wait_ms: max_wait.as_secs_f64() * 1e3,
        capacity_workers: opts.capacity_workers,
        capacity_rps,
        capacity_skipped: capacity_skipped as u64,
        capacity_p50_ms: pct(&mut cap_ms, 0.5),
        capacity_p99_ms: pct(&mut cap_ms, 0.99),
        offered_rps: offered as f64 / offer_secs.max(1e-9),
        offered,
        admitted: ok.len() as u64,
        admitted_rps: ok.len() as f64 / offer_secs.max(1e-9),
        admitted_p50_ms: pct(&mut ok, 0.5),
        admitted_p99_ms: pct(&mut ok, 0.99),
        admitted_max_ms: ok.last().copied().unwrap_or(0.0),
        latency_bound_ms: max_wait.as_secs_f64() * 1e3
            + opts.upstream_latency.as_secs_f64() * 1e3
            + opts.max_concurrency as f64 * per_request_ms,
        shed_503: shed.len() as u64,
        shed_with_retry_after: t.shed_ra.load(Ordering::Relaxed),
        shed_p99_ms: pct(&mut shed, 0.99),
        semantic_skipped: skipped.max(0.0) as u64,
        skipped_at_once: at_once.max(0.0) as u64,
        other_errors: t.other.load(Ordering::Relaxed),
        other_samples,
        rss_before,
        rss_after,
        panics: PANICS.load(Ordering::Relaxed),
    })
}

impl OverloadReport {
    /// Held: no error but 503s, every 503 with `Retry-After`, admitted latency within the bound,
    /// no panic.
    pub fn holds(&self) -> bool {
        self.other_errors == 0
            && self.panics == 0
            && self.shed_with_retry_after == self.shed_503
            && self.admitted_max_ms <= self.latency_bound_ms
    }

    pub fn markdown(&self) -> String {
        format!(
            "| figure | value |\n|---|---|\n\
             | setup | max_concurrency {}, upstream latency {:.0} ms, embed.max_wait {:.0} ms |\n\
             | capacity ({} closed-loop workers, every request a semantic-path miss) | {:.1} req/s, p50 {:.1} ms, p99 {:.1} ms ({} skipped the lookup) |\n\
             | offered (open loop) | {:.1} req/s ({} requests) |\n\
             | admitted | {} ({:.1} req/s), latency p50 {:.1} / p99 {:.1} / max {:.1} ms (bound {:.0} ms) |\n\
             | shed with 503 | {} ({} with Retry-After), p99 {:.1} ms |\n\
             | admitted without the semantic lookup (embedder busy) | {} ({} refused at once, the rest after waiting embed.max_wait) |\n\
             | other errors | {} |\n\
             | RSS before → after overload | {:.1} → {:.1} MB ({:+.1}%) |\n\
             | open fds before → after | {} → {} |\n\
             | panics | {} |\n",
            self.max_concurrency,
            self.upstream_latency_ms,
            self.embed_max_wait_ms,
            self.capacity_workers,
            self.capacity_rps,
            self.capacity_p50_ms,
            self.capacity_p99_ms,
            self.capacity_skipped,
            self.offered_rps,
            self.offered,
            self.admitted,
            self.admitted_rps,
            self.admitted_p50_ms,
            self.admitted_p99_ms,
            self.admitted_max_ms,
            self.latency_bound_ms,
            self.shed_503,
            self.shed_with_retry_after,
            self.shed_p99_ms,
            self.semantic_skipped,
            self.skipped_at_once,
            self.other_errors,
            self.rss_before.rss_mb,
            self.rss_after.rss_mb,
            (self.rss_after.rss_mb / self.rss_before.rss_mb.max(1e-9) - 1.0) * 100.0,
            self.rss_before.fds,
            self.rss_after.fds,
            self.panics,
        )
    }
}
