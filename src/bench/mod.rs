//! `switchyard bench`: a load generator for cache-hit benchmark runs against a live gateway.
//!
//! It replays a seeded [`workload`] with `concurrency` workers, reads the gateway's headers
//! (`x-switchyard-cache`, `-cost`, `-cost-saved`, `-tier`) and the answer, and — because the demo
//! upstream's answers name the question they answer — judges every hit against the ground truth.

pub mod overload;
pub mod soak;
pub mod workload;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use parking_lot::Mutex;
use serde::Serialize;

use crate::eval::plot::{line_plot, Series};
use workload::{Kind, Request, Spec, Truth};

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub target: String,
    pub requests: usize,
    pub concurrency: usize,
    pub spec: Spec,
    pub out: PathBuf,
    pub model: String,
    pub key: Option<String>,
    /// USD per million tokens (input, output) of the premium tier's model, for the
    /// always-premium comparison.
    pub premium_price: (f64, f64),
}

#[derive(Debug, Clone, Serialize)]
struct Outcome {
    kind: Kind,
    status: u16,
    cache: String,
    false_hit: bool,
    latency_ms: f64,
    cost: f64,
    saved: f64,
    tier: String,
    tokens: (u64, u64),
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub n: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub target: String,
    pub workload: Spec,
    pub requests: usize,
    pub concurrency: usize,
    pub errors: usize,
    pub seconds: f64,
    pub throughput_rps: f64,
    pub hit_rate: f64,
    pub hits: usize,
    pub false_hits: usize,
    pub false_hit_rate_of_hits: f64,
    /// Share of near-miss requests that were (wrongly) served from the cache.
    pub near_miss_served: f64,
    /// Share of paraphrase requests served from the cache.
    pub paraphrase_served: f64,
    pub repeat_served: f64,
    pub latency_hit: Latency,
    pub latency_miss: Latency,
    pub upstream_calls_avoided: usize,
    pub cost_usd: f64,
    pub cost_without_cache_usd: f64,
    pub cost_always_premium_usd: f64,
    pub premium_share_of_misses: f64,
}

fn latency(mut v: Vec<f64>) -> Latency {
    v.sort_by(f64::total_cmp);
    let q = |p: f64| if v.is_empty() { 0.0 } else { v[((v.len() - 1) as f64 * p).round() as usize] };
    Latency { n: v.len(), p50_ms: q(0.5), p95_ms: q(0.95), p99_ms: q(0.99) }
}

/// The question an answer is for, when the upstream is the demo (it echoes the question).
fn answered_question(content: &str) -> Option<&str> {
    content.split_once("simulated answer to: ").map(|(_, q)| q)
}

async fn one(client: &reqwest::Client, opts: &BenchOptions, req: &Request) -> Outcome {
    let body = serde_json::json!({"model": opts.model, "messages": [{"role": "user", "content": req.question}]});
    let mut rb = client.post(format!("{}/v1/chat/completions", opts.target.trim_end_matches('/'))).json(&body);
    if let Some(k) = &opts.key {
        rb = rb.bearer_auth(k);
    }
    let started = Instant::now();
    let resp = rb.send().await;
    let mut o = Outcome {
        kind: req.kind,
        status: 0,
        cache: String::new(),
        false_hit: false,
        latency_ms: 0.0,
        cost: 0.0,
        saved: 0.0,
        tier: String::new(),
        tokens: (0, 0),
    };
    let Ok(resp) = resp else {
        o.latency_ms = started.elapsed().as_secs_f64() * 1e3;
        return o;
    };
    o.status = resp.status().as_u16();
    let h = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    o.cache = h("x-switchyard-cache");
    o.tier = h("x-switchyard-tier");
    o.cost = h("x-switchyard-cost").parse().unwrap_or(0.0);
    o.saved = h("x-switchyard-cost-saved").parse().unwrap_or(0.0);
    let v: serde_json::Value = resp.json().await.unwrap_or_default();
    o.latency_ms = started.elapsed().as_secs_f64() * 1e3;
    o.tokens =
        (v["usage"]["prompt_tokens"].as_u64().unwrap_or(0), v["usage"]["completion_tokens"].as_u64().unwrap_or(0));
    if o.cache == "hit" {
        let content = v["choices"][0]["message"]["content"].as_str().unwrap_or("");
        o.false_hit = match answered_question(content) {
            Some(q) => q != req.question && !same_question(q, &req.question),
            None => false,
        };
    }
    o
}

/// Set per run: the ground truth is shared by the workers.
static TRUTH: Mutex<Option<Truth>> = Mutex::new(None);

fn same_question(a: &str, b: &str) -> bool {
    TRUTH.lock().as_mut().is_some_and(|t| t.same(a, b))
}

/// Runs the benchmark and writes report.json, report.md and hits.svg into `opts.out`.
pub async fn run(pairs: &[crate::eval::cache::Pair], opts: BenchOptions) -> std::io::Result<BenchReport> {
    let requests = workload::generate(pairs, &opts.spec, opts.requests);
    *TRUTH.lock() = Some(Truth::new(pairs));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(opts.concurrency.max(1))
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(std::io::Error::other)?;
    let bar = ProgressBar::new(requests.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("bench [{bar:40}] {pos}/{len} requests ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(requests);
    let results: Arc<Mutex<Vec<Option<Outcome>>>> = Arc::new(Mutex::new(vec![None; requests.len()]));
    let opts = Arc::new(opts);
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..opts.concurrency.max(1) {
        let (next, requests, results, opts, client, bar) =
            (next.clone(), requests.clone(), results.clone(), opts.clone(), client.clone(), bar.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(req) = requests.get(i) else { break };
                let o = one(&client, &opts, req).await;
                results.lock()[i] = Some(o);
                bar.inc(1);
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    let seconds = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let outcomes: Vec<Outcome> = results.lock().iter().flatten().cloned().collect();
    let report = summarise(&opts, &outcomes, seconds);
    write(&opts.out, &report, &outcomes)?;
    Ok(report)
}

fn summarise(opts: &BenchOptions, outs: &[Outcome], seconds: f64) -> BenchReport {
    let ok: Vec<&Outcome> = outs.iter().filter(|o| o.status == 200).collect();
    let hits: Vec<&&Outcome> = ok.iter().filter(|o| o.cache == "hit").collect();
    let misses: Vec<&&Outcome> = ok.iter().filter(|o| o.cache != "hit").collect();
    let served = |k: Kind| {
        let all = ok.iter().filter(|o| o.kind == k).count();
        let hit = ok.iter().filter(|o| o.kind == k && o.cache == "hit").count();
        hit as f64 / all.max(1) as f64
    };
    let cost: f64 = ok.iter().map(|o| o.cost).sum();
    let saved_by_cache: f64 = hits.iter().map(|o| o.saved).sum();
    let (pi, po) = opts.premium_price;
    let premium: f64 = ok.iter().map(|o| (o.tokens.0 as f64 * pi + o.tokens.1 as f64 * po) / 1e6).sum();
    let false_hits = hits.iter().filter(|o| o.false_hit).count();
    BenchReport {
        target: opts.target.clone(),
        workload: opts.spec.clone(),
        requests: outs.len(),
        concurrency: opts.concurrency,
        errors: outs.len() - ok.len(),
        seconds,
        throughput_rps: outs.len() as f64 / seconds.max(1e-9),
        hit_rate: hits.len() as f64 / ok.len().max(1) as f64,
        hits: hits.len(),
        false_hits,
        false_hit_rate_of_hits: false_hits as f64 / hits.len().max(1) as f64,
        near_miss_served: served(Kind::NearMiss),
        paraphrase_served: served(Kind::Paraphrase),
        repeat_served: served(Kind::Repeat),
        latency_hit: latency(hits.iter().map(|o| o.latency_ms).collect()),
        latency_miss: latency(misses.iter().map(|o| o.latency_ms).collect()),
        upstream_calls_avoided: hits.len(),
        cost_usd: cost,
        cost_without_cache_usd: cost + saved_by_cache,
        cost_always_premium_usd: premium,
        premium_share_of_misses: misses.iter().filter(|o| o.tier == "premium").count() as f64
            / misses.len().max(1) as f64,
    }
}

fn write(out: &Path, r: &BenchReport, outs: &[Outcome]) -> std::io::Result<()> {
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("report.json"), serde_json::to_string_pretty(r).unwrap_or_default())?;
    let md = format!(
        "# Cache-hit benchmark\n\nTarget `{}`, {} requests, concurrency {}, workload {:?}.\n\n\
         | metric | value |\n|---|---|\n\
         | throughput | {:.0} req/s over {:.1} s |\n| errors | {} |\n\
         | hit rate | {:.1}% ({} hits = upstream calls avoided) |\n\
         | false hits | {} ({:.2}% of hits) |\n\
         | served from cache: repeats / paraphrases / near misses | {:.1}% / {:.1}% / {:.1}% |\n\
         | latency, hits: p50 / p95 / p99 | {:.2} / {:.2} / {:.2} ms |\n\
         | latency, misses: p50 / p95 / p99 | {:.1} / {:.1} / {:.1} ms |\n\
         | cost with Switchyard | ${:.6} |\n| cost without the cache | ${:.6} |\n\
         | cost sending everything to premium, no cache | ${:.6} |\n\
         | premium share of misses (router) | {:.1}% |\n\n\
         False hits are judged against QQP's duplicate labels, which are noisy: some \"false\" hits are true paraphrases.\n",
        r.target,
        r.requests,
        r.concurrency,
        r.workload,
        r.throughput_rps,
        r.seconds,
        r.errors,
        r.hit_rate * 100.0,
        r.hits,
        r.false_hits,
        r.false_hit_rate_of_hits * 100.0,
        r.repeat_served * 100.0,
        r.paraphrase_served * 100.0,
        r.near_miss_served * 100.0,
        r.latency_hit.p50_ms,
        r.latency_hit.p95_ms,
        r.latency_hit.p99_ms,
        r.latency_miss.p50_ms,
        r.latency_miss.p95_ms,
        r.latency_miss.p99_ms,
        r.cost_usd,
        r.cost_without_cache_usd,
        r.cost_always_premium_usd,
        r.premium_share_of_misses * 100.0,
    );
    std::fs::write(out.join("report.md"), md)?;
    // cumulative hit rate and rolling miss latency, by request index
    let mut hits = 0usize;
    let cumulative: Vec<(f64, f64)> = outs
        .iter()
        .enumerate()
        .map(|(i, o)| {
            hits += (o.cache == "hit") as usize;
            (i as f64 + 1.0, hits as f64 / (i as f64 + 1.0))
        })
        .collect();
    let n = outs.len().max(1) as f64;
    let svg = line_plot(
        "Cumulative cache hit rate over the run",
        "request",
        "hit rate",
        (0.0, n),
        (0.0, 1.0),
        &[Series { name: "hit rate".into(), points: cumulative, dashed: false }],
    );
    std::fs::write(out.join("hits.svg"), svg)?;
    Ok(())
}
