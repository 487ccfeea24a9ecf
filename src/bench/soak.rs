//! `switchyard soak`: mixed traffic (streamed and not, hits and misses, all three routes) for a
//! fixed time through a real gateway whose tiers each put a fault-injecting upstream
//! ([`crate::faults`]) before one healthy deployment. The contract it checks: every request is
//! answered, except a stream that had already started when its upstream broke, which must end
//! with an error event (and be counted by the gateway as such). Memory (RSS) and open file
//! descriptors are sampled after warm-up and at the end, both at a quiet moment between phases.
//!
//! Everything runs in this one process (gateway, upstreams, client), so RSS and descriptor
//! counts cover all of it: a leak anywhere shows.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::app::{self, AppError};
use crate::config::Config;
use crate::embed::Embedder;
use crate::faults::{self, FaultMix};

#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// Traffic after warm-up.
    pub duration: Duration,
    /// Traffic before the first memory/descriptor sample (the cache fills, pools open).
    pub warmup: Duration,
    pub concurrency: usize,
    /// Distinct prompts in the cold pool (the hot set is 50 more); the cache holds fewer, so
    /// misses go on for the whole run.
    pub prompts: usize,
    pub max_entries: usize,
    pub seed: u64,
}

impl SoakOptions {
    /// `minutes` of traffic after a warm-up of a fifth of it (at most a minute).
    pub fn minutes(minutes: f64) -> SoakOptions {
        let total = Duration::from_secs_f64((minutes * 60.0).max(1.0));
        let warmup = (total / 5).min(Duration::from_secs(60));
        SoakOptions { duration: total - warmup, warmup, concurrency: 8, prompts: 3000, max_entries: 1000, seed: 7 }
    }
}

/// Resident memory and open descriptors of this process.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ProcSample {
    pub rss_mb: f64,
    pub fds: usize,
}

/// Reads `/proc/self` (Linux); zeros elsewhere.
pub fn proc_sample() -> ProcSample {
    let rss_kb = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .unwrap_or(0.0);
    let fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0);
    ProcSample { rss_mb: rss_kb / 1024.0, fds }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SoakReport {
    pub seconds: f64,
    pub warmup_seconds: f64,
    pub concurrency: usize,
    pub requests: u64,
    pub streamed: u64,
    pub hits: u64,
    pub misses: u64,
    /// Answered in full (JSON, or a stream that ended with `[DONE]`).
    pub answered: u64,
    /// Streams that had started and then ended with an error event: allowed, and counted.
    pub broken_streams: u64,
    /// The gateway's own count of such streams (`switchyard_stream_errors_total`).
    pub gateway_stream_errors: u64,
    /// Anything else the client saw go wrong: must be zero.
    pub unexpected_errors: u64,
    pub unexpected_samples: Vec<String>,
    /// Calls to the fault-injecting upstreams, by what was injected.
    pub faults_injected: BTreeMap<String, u64>,
    pub healthy_upstream_calls: u64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
    pub after_warmup: ProcSample,
    pub at_end: ProcSample,
    pub max_rss_mb: f64,
    pub rss_growth_pct: f64,
    pub fd_growth: i64,
    /// Panics anywhere in the process during the run (a hook counts them).
    pub panics: u64,
}

#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    streamed: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    answered: AtomicU64,
    broken: AtomicU64,
    unexpected: AtomicU64,
    samples: Mutex<Vec<String>>,
    latencies_ms: Mutex<Vec<f64>>,
}

impl Tally {
    fn unexpected(&self, what: String) {
        self.unexpected.fetch_add(1, Ordering::Relaxed);
        let mut s = self.samples.lock();
        if s.len() < 10 {
            s.push(what);
        }
    }
}

static PANICS: AtomicU64 = AtomicU64::new(0);

const VERBS: [&str; 15] = [
    "repair",
    "paint",
    "clean",
    "insure",
    "sell",
    "store",
    "photograph",
    "ship",
    "measure",
    "restore",
    "rent",
    "heat",
    "cool",
    "decorate",
    "inspect",
];
const THINGS: [&str; 20] = [
    "a wooden canoe",
    "an old piano",
    "a leather sofa",
    "a vintage bicycle",
    "a marble countertop",
    "a glass aquarium",
    "a cast iron pan",
    "a brick chimney",
    "a wool carpet",
    "a ceramic vase",
    "a copper kettle",
    "an oak staircase",
    "a silk scarf",
    "a bamboo fence",
    "a stone patio",
    "a vinyl record",
    "a porcelain doll",
    "a steel shed",
    "a clay pot",
    "a felt hat",
];
const PLACES: [&str; 10] = [
    "in Norway",
    "near the coast",
    "in a desert climate",
    "on a tight budget",
    "before winter",
    "for a museum",
    "in a small apartment",
    "for a wedding",
    "after a flood",
    "without power tools",
];

/// The `i`-th prompt of the pool: distinct combinations of a verb, a thing and a circumstance.
fn prompt(i: usize) -> String {
    let v = VERBS[i % VERBS.len()];
    let t = THINGS[(i / VERBS.len()) % THINGS.len()];
    let p = PLACES[(i / (VERBS.len() * THINGS.len())) % PLACES.len()];
    format!("How should I {v} {t} {p}?")
}

fn config(
    cheap_faulty: &str,
    premium_faulty: &str,
    cheap_ok: &str,
    premium_ok: &str,
    max_entries: usize,
) -> Result<Config, AppError> {
    let faulty = |name: &str, url: &str| {
        format!(
            "[providers.{name}]\nkind = \"openai\"\nbase_url = \"{url}\"\nfirst_byte_timeout = \"1s\"\ntotal_timeout = \"10s\"\n"
        )
    };
    let healthy = |name: &str, url: &str| format!("[providers.{name}]\nkind = \"openai\"\nbase_url = \"{url}\"\n");
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
request_timeout = "60s"
[cache]
max_entries = {max_entries}
[dispatch]
attempts_per_deployment = 2
backoff_base = "20ms"
backoff_max = "200ms"
retry_after_cap = "2s"
deadline = "30s"
breaker_cooldown = "1s"
[tiers]
cheap = ["faulty-cheap:soak-mini", "healthy-cheap:soak-mini"]
premium = ["faulty-premium:soak-large", "healthy-premium:soak-large"]
[prices]
soak-mini = {{ input = 0.15, output = 0.60 }}
soak-large = {{ input = 2.50, output = 10.00 }}
{}{}{}{}"#,
        faulty("faulty-cheap", cheap_faulty),
        faulty("faulty-premium", premium_faulty),
        healthy("healthy-cheap", cheap_ok),
        healthy("healthy-premium", premium_ok),
    );
    Ok(Config::parse(&text)?)
}

/// Runs the soak and returns its figures; the caller judges them (the test asserts, the CLI
/// prints and exits non-zero on a broken contract).
pub async fn run(opts: SoakOptions, embedder: Arc<dyn Embedder>) -> Result<SoakReport, AppError> {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::Relaxed);
        previous(info);
    }));
    let panics_before = PANICS.load(Ordering::Relaxed);

    let mix = |seed| FaultMix { seed, ..FaultMix::default() };
    let faulty_cheap = faults::spawn(mix(opts.seed)).await?;
    let faulty_premium = faults::spawn(mix(opts.seed + 1)).await?;
    let ok_cheap = crate::demo::spawn(Duration::from_millis(5)).await?;
    let ok_premium = crate::demo::spawn(Duration::from_millis(5)).await?;
    let cfg = config(
        &faulty_cheap.base_url(),
        &faulty_premium.base_url(),
        &ok_cheap.base_url(),
        &ok_premium.base_url(),
        opts.max_entries,
    )?;
    let gateway = app::start(cfg, Some(embedder), false).await?;
    let base = format!("http://{}", gateway.addr);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(opts.concurrency.max(1))
        .timeout(Duration::from_secs(90))
        .build()
        .map_err(|e| AppError::Provider(e.to_string()))?;

    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    phase(&client, &base, &opts, opts.warmup, opts.seed, &Tally::default()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_warmup = proc_sample();
    let stream_errors_before = metric(&client, &base, "switchyard_stream_errors_total").await;
    let max_rss = Arc::new(Mutex::new(after_warmup.rss_mb));
    let sampler = {
        let max_rss = max_rss.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let s = proc_sample();
                let mut m = max_rss.lock();
                *m = m.max(s.rss_mb);
            }
        })
    };
    let main_started = Instant::now();
    phase(&client, &base, &opts, opts.duration, opts.seed + 100, &tally).await;
    let seconds = main_started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    sampler.abort();
    let at_end = proc_sample();

    let stream_errors = metric(&client, &base, "switchyard_stream_errors_total").await - stream_errors_before;
    let mut faults_injected = faulty_cheap.injected();
    for (k, v) in faulty_premium.injected() {
        *faults_injected.entry(k).or_insert(0) += v;
    }
    let mut lat = std::mem::take(&mut *tally.latencies_ms.lock());
    lat.sort_by(f64::total_cmp);
    let q = |p: f64| if lat.is_empty() { 0.0 } else { lat[((lat.len() - 1) as f64 * p).round() as usize] };
    let t = &tally;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let report = SoakReport {
        seconds,
        warmup_seconds: (main_started - started).as_secs_f64(),
        concurrency: opts.concurrency,
        requests: load(&t.requests),
        streamed: load(&t.streamed),
        hits: load(&t.hits),
        misses: load(&t.misses),
        answered: load(&t.answered),
        broken_streams: load(&t.broken),
        gateway_stream_errors: stream_errors.max(0.0) as u64,
        unexpected_errors: load(&t.unexpected),
        unexpected_samples: t.samples.lock().clone(),
        faults_injected,
        healthy_upstream_calls: ok_cheap.calls.load(Ordering::Relaxed) + ok_premium.calls.load(Ordering::Relaxed),
        latency_p50_ms: q(0.5),
        latency_p99_ms: q(0.99),
        latency_max_ms: lat.last().copied().unwrap_or(0.0),
        after_warmup,
        at_end,
        max_rss_mb: *max_rss.lock(),
        rss_growth_pct: (at_end.rss_mb / after_warmup.rss_mb.max(1e-9) - 1.0) * 100.0,
        fd_growth: at_end.fds as i64 - after_warmup.fds as i64,
        panics: PANICS.load(Ordering::Relaxed) - panics_before,
    };
    gateway.shutdown().await;
    Ok(report)
}

/// One unlabelled series from the gateway's `/metrics` (0 when absent).
async fn metric(client: &reqwest::Client, base: &str, name: &str) -> f64 {
    let text = match client.get(format!("{base}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => return 0.0,
    };
    text.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).and_then(|v| v.parse().ok()).unwrap_or(0.0)
}

/// `concurrency` workers sending mixed traffic until `length` has passed; waits for all of them.
async fn phase(client: &reqwest::Client, base: &str, opts: &SoakOptions, length: Duration, seed: u64, tally: &Tally) {
    let until = Instant::now() + length;
    let workers = (0..opts.concurrency.max(1)).map(|w| {
        let mut rng = StdRng::seed_from_u64(seed * 1000 + w as u64);
        async move {
            while Instant::now() < until {
                // 40%: a hot set of 50 prompts (hits); otherwise the cold pool (mostly misses)
                let i = if rng.gen_bool(0.4) { rng.gen_range(0..50) } else { 50 + rng.gen_range(0..opts.prompts) };
                let model = ["auto", "cheap", "premium"][rng.gen_range(0..3)];
                let stream = rng.gen_bool(0.5);
                one(client, base, &prompt(i), model, stream, tally).await;
            }
        }
    });
    futures_util::future::join_all(workers).await;
}

async fn one(client: &reqwest::Client, base: &str, q: &str, model: &str, stream: bool, t: &Tally) {
    let body = serde_json::json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": q}]});
    t.requests.fetch_add(1, Ordering::Relaxed);
    if stream {
        t.streamed.fetch_add(1, Ordering::Relaxed);
    }
    let started = Instant::now();
    let resp = match client.post(format!("{base}/v1/chat/completions")).json(&body).send().await {
        Ok(r) => r,
        Err(e) => return t.unexpected(format!("request failed: {e}")),
    };
    let status = resp.status().as_u16();
    let cache = resp.headers().get("x-switchyard-cache").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    if status != 200 {
        let text = resp.text().await.unwrap_or_default();
        return t
            .unexpected(format!("HTTP {status} (stream {stream}): {}", text.chars().take(300).collect::<String>()));
    }
    if cache == "hit" {
        t.hits.fetch_add(1, Ordering::Relaxed);
    } else {
        t.misses.fetch_add(1, Ordering::Relaxed);
    }
    let content = if stream {
        let mut body = resp.bytes_stream();
        let mut buf = Vec::new();
        while let Some(part) = body.next().await {
            match part {
                Ok(b) => buf.extend_from_slice(&b),
                Err(e) => return t.unexpected(format!("stream body broke without an error event: {e}")),
            }
        }
        let text = String::from_utf8_lossy(&buf).to_string();
        let mut content = String::new();
        let mut done = false;
        for data in text.split("\n\n").filter_map(|e| e.trim().strip_prefix("data: ")) {
            if data == "[DONE]" {
                done = true;
                continue;
            }
            let Ok(v) = serde_json::from_str::<serde_json::Value>(data) else {
                return t.unexpected(format!("unparseable SSE event: {}", data.chars().take(200).collect::<String>()));
            };
            if v.get("error").is_some() {
                // the contract's one allowed failure: a started stream ends with an error event
                t.broken.fetch_add(1, Ordering::Relaxed);
                return;
            }
            if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
                content.push_str(c);
            }
        }
        if !done {
            return t.unexpected("stream ended without [DONE] or an error event".into());
        }
        content
    } else {
        match resp.json::<serde_json::Value>().await {
            Ok(v) => v["choices"][0]["message"]["content"].as_str().unwrap_or_default().to_string(),
            Err(e) => return t.unexpected(format!("unreadable JSON answer: {e}")),
        }
    };
    if !content.contains("simulated answer to: ") {
        return t.unexpected(format!("not an answer: {}", content.chars().take(200).collect::<String>()));
    }
    t.answered.fetch_add(1, Ordering::Relaxed);
    t.latencies_ms.lock().push(started.elapsed().as_secs_f64() * 1e3);
}

impl SoakReport {
    /// The contract: no client-visible error but counted broken streams, every one of them
    /// counted by the gateway too, nothing panicked.
    pub fn contract_holds(&self) -> bool {
        self.unexpected_errors == 0 && self.panics == 0 && self.broken_streams == self.gateway_stream_errors
    }

    pub fn markdown(&self) -> String {
        let faults: Vec<String> = self.faults_injected.iter().map(|(k, v)| format!("{k} {v}")).collect();
        format!(
            "| figure | value |\n|---|---|\n\
             | traffic | {:.0} s after {:.0} s warm-up, {} workers |\n\
             | requests | {} ({} streamed; {} hits, {} misses) |\n\
             | answered in full | {} |\n\
             | streams broken after their first byte (error event, allowed) | {} (gateway counted {}) |\n\
             | unexpected client-visible errors | {} |\n\
             | panics | {} |\n\
             | upstream calls by injected fault | {} |\n\
             | healthy-deployment calls | {} |\n\
             | latency of answered requests p50 / p99 / max | {:.1} / {:.1} / {:.1} ms |\n\
             | RSS after warm-up → end (max) | {:.1} → {:.1} MB ({:+.1}%, max {:.1} MB) |\n\
             | open fds after warm-up → end | {} → {} ({:+}) |\n",
            self.seconds,
            self.warmup_seconds,
            self.concurrency,
            self.requests,
            self.streamed,
            self.hits,
            self.misses,
            self.answered,
            self.broken_streams,
            self.gateway_stream_errors,
            self.unexpected_errors,
            self.panics,
            faults.join(", "),
            self.healthy_upstream_calls,
            self.latency_p50_ms,
            self.latency_p99_ms,
            self.latency_max_ms,
            self.after_warmup.rss_mb,
            self.at_end.rss_mb,
            self.rss_growth_pct,
            self.max_rss_mb,
            self.after_warmup.fds,
            self.at_end.fds,
            self.fd_growth,
        )
    }
}
