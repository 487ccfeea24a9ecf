#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Overload and faults: a deployment at its `max_concurrency` is passed over (or, when every
//! one is, the client gets 503 + `Retry-After`) instead of queued for; a full embedder queue
//! costs a request only its semantic lookup; and a short fault soak — a fault-injecting upstream
//! before a healthy one in each tier — answers every request but the streams that broke after
//! their first byte, which end with an error event and are counted (`switchyard soak` is the
//! ten-minute version).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use switchyard::app::{self, Running};
use switchyard::bench::soak::{self, SoakOptions};
use switchyard::config::Config;
use switchyard::embed::{EmbedError, Embedder};

/// Tier `t`: deployment `a` (with `cap` as its max_concurrency), then `b`. Cache off.
fn capped(a: &MockUpstream, b: Option<&MockUpstream>, cap: usize) -> Config {
    let second = b.map(|b| format!(", \"{}:m\"", b.name)).unwrap_or_default();
    let providers: String = [Some(a), b]
        .into_iter()
        .flatten()
        .map(|u| {
            format!(
                "[providers.{}]\nkind = \"openai\"\nbase_url = \"{}\"\nfirst_byte_timeout = \"1s\"\n",
                u.name,
                u.base_url()
            )
        })
        .collect();
    let text = format!(
        r#"
        [server]
        listen = "127.0.0.1:0"
        [cache]
        enabled = false
        [dispatch]
        attempts_per_deployment = 1
        [router]
        cheap = "t"
        premium = "t"
        [tiers]
        t = [{{ provider = "{a}", model = "m", max_concurrency = {cap} }}{second}]
        {providers}
        "#,
        a = a.name,
    );
    Config::parse(&text).unwrap_or_else(|e| panic!("test config: {e}\n{text}"))
}

/// The soak and the overload run sample this process's memory and descriptors: the tests of this
/// file run one at a time, so no other test's sockets are counted in them.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn ask(q: &str) -> Value {
    json!({"model": "t", "messages": [{"role": "user", "content": q}]})
}

async fn metrics(g: &Running) -> String {
    let text = reqwest::get(url(g, "/metrics")).await.unwrap().text().await.unwrap();
    check_exposition(&text);
    text
}

async fn wait_for_calls(u: &MockUpstream, n: usize) {
    for _ in 0..400 {
        if u.calls() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{} never got {n} calls", u.name);
}

#[tokio::test]
async fn a_deployment_at_its_cap_is_passed_over_not_queued_for() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let slow = MockUpstream::start("slow").await;
    let fast = MockUpstream::start("fast").await;
    // both of slow's slots are taken by calls it never answers (until its 1 s first-byte timeout)
    slow.then(Behavior::Hang).then(Behavior::Hang);
    let g = app::start(capped(&slow, Some(&fast), 2), None, false).await.unwrap();
    let held: Vec<_> = (0..2)
        .map(|i| {
            let u = url(&g, "/v1/chat/completions");
            tokio::spawn(async move { reqwest::Client::new().post(u).json(&ask(&format!("held {i}"))).send().await })
        })
        .collect();
    wait_for_calls(&slow, 2).await;
    for i in 0..3 {
        let (status, h, body) = post_chat(&g, &ask(&format!("while full {i}")), &[]).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(header(&h, "x-switchyard-provider"), "fast", "a full deployment is skipped, not waited for");
    }
    assert_eq!(slow.calls(), 2, "no third call went to the deployment at its cap");
    let m = metrics(&g).await;
    assert!(m.contains("switchyard_deployment_busy_total{deployment=\"slow:m\"} 3"), "{m}");
    // the held requests time out on slow, fail over to fast, and give their slots back
    for h in held {
        assert_eq!(h.await.unwrap().unwrap().status(), 200);
    }
    let (status, h, _) = post_chat(&g, &ask("after"), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "x-switchyard-provider"), "slow", "slots are released when the call ends");
}

#[tokio::test]
async fn every_deployment_at_its_cap_answers_503_with_retry_after() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let slow = MockUpstream::start("slow").await;
    slow.then(Behavior::Hang);
    let g = app::start(capped(&slow, None, 1), None, false).await.unwrap();
    let u = url(&g, "/v1/chat/completions");
    let held = tokio::spawn(async move { reqwest::Client::new().post(u).json(&ask("held")).send().await });
    wait_for_calls(&slow, 1).await;
    let (status, h, body) = post_chat(&g, &ask("refused"), &[]).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "overloaded");
    assert!(body["error"]["message"].as_str().unwrap().contains("concurrency limit"), "{body}");
    assert_eq!(header(&h, "retry-after"), "1");
    assert_eq!(slow.calls(), 1, "the refused request was not queued behind the held one");
    held.abort();
}

/// The real model, slowed down, so its queue of one fills.
struct Slow(Arc<dyn Embedder>);

impl Embedder for Slow {
    fn dim(&self) -> usize {
        self.0.dim()
    }
    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        std::thread::sleep(Duration::from_millis(300));
        self.0.embed_batch(texts)
    }
    fn count_tokens(&self, text: &str) -> usize {
        self.0.count_tokens(text)
    }
}

#[tokio::test]
async fn a_full_embedder_queue_costs_only_the_semantic_lookup() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let up = MockUpstream::start("up").await;
    let text = format!(
        r#"
        [server]
        listen = "127.0.0.1:0"
        [embed]
        queue = 1
        max_batch = 1
        [router]
        cheap = "t"
        premium = "t"
        [tiers]
        t = ["up:m"]
        [providers.up]
        kind = "openai"
        base_url = "{}"
        "#,
        up.base_url()
    );
    let cfg = Config::parse(&text).unwrap();
    let g = app::start(cfg, Some(Arc::new(Slow(embedder()))), false).await.unwrap();
    let questions: Vec<String> = [
        "How do volcanoes form?",
        "Write a haiku about autumn rain.",
        "What is the derivative of sin(x)?",
        "Recommend a good beginner guitar.",
        "Why is the sky blue?",
        "Translate 'good morning' into Japanese.",
    ]
    .map(String::from)
    .to_vec();
    let bodies: Vec<Value> = questions.iter().map(|q| ask(q)).collect();
    let sent = bodies.iter().map(|b| post_chat(&g, b, &[]));
    for (status, _, body) in futures_util::future::join_all(sent).await {
        assert_eq!(status, 200, "an overloaded embedder never fails a request: {body}");
    }
    let m = metrics(&g).await;
    let skipped: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix("switchyard_embed_skipped_total{cause=\"queue_full\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(skipped >= 1.0, "six at once into a queue of one: some must skip the embedding\n{m}");
    // every answer was stored, the skipped ones without a vector: the exact path still serves them
    for q in &questions {
        let (status, h, _) = post_chat(&g, &ask(q), &[]).await;
        assert_eq!(status, 200);
        assert_eq!(header(&h, "x-switchyard-cache"), "hit", "{q}");
    }
    assert_eq!(up.calls(), 6);
}

#[tokio::test]
async fn short_fault_soak_answers_everything_but_counted_broken_streams() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let opts = SoakOptions {
        duration: Duration::from_secs(20),
        warmup: Duration::from_secs(6),
        concurrency: 6,
        prompts: 600,
        max_entries: 200,
        seed: 11,
    };
    let r = soak::run(opts, embedder()).await.unwrap();
    println!("{}", r.markdown());
    assert_eq!(r.unexpected_errors, 0, "client-visible errors: {:?}", r.unexpected_samples);
    assert_eq!(r.panics, 0);
    assert_eq!(r.broken_streams, r.gateway_stream_errors, "every broken stream is counted by the gateway");
    assert!(r.answered + r.broken_streams == r.requests);
    assert!(r.hits > 0 && r.misses > 0 && r.streamed > 0 && r.streamed < r.requests, "mixed traffic: {r:?}");
    for f in switchyard::faults::Fault::ALL {
        let name = serde_json::to_value(f).unwrap().as_str().unwrap().to_string();
        assert!(r.faults_injected.get(&name).copied().unwrap_or(0) > 0, "{name} was never injected: {r:?}");
    }
    assert!(r.healthy_upstream_calls > 0);
    assert!(r.fd_growth <= 8, "descriptors leak: {r:?}");
    assert!(r.rss_growth_pct < 10.0, "memory grows: {r:?}");
}

#[tokio::test]
async fn a_short_overload_run_sheds_only_with_503_and_retry_after() {
    let _serial = ONE_AT_A_TIME.lock().await;
    // `switchyard overload` in small: latency figures are the command's to report, not asserted here
    let opts = switchyard::bench::overload::OverloadOptions {
        phase: Duration::from_secs(4),
        max_concurrency: 4,
        capacity_workers: 2,
        upstream_latency: Duration::from_millis(50),
        multiplier: 2.0,
    };
    let r = switchyard::bench::overload::run(opts, embedder()).await.unwrap();
    println!("{}", r.markdown());
    assert!(r.capacity_rps > 0.0 && r.admitted > 0, "{r:?}");
    assert_eq!(r.other_errors, 0, "only 503s may be refused: {:?}", r.other_samples);
    assert_eq!(r.shed_with_retry_after, r.shed_503, "every 503 says when to retry");
    assert_eq!(r.admitted + r.shed_503, r.offered);
    assert_eq!(r.panics, 0);
}
