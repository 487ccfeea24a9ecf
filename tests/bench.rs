#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `switchyard bench` against the real gateway in demo mode (simulated upstreams on loopback).

mod common;

use std::time::Duration;

use switchyard::bench::{self, workload::Spec, BenchOptions};
use switchyard::config::Config;

#[tokio::test]
async fn bench_run_reports_hits_false_hits_and_costs() {
    let cfg = switchyard::app::demo_config(
        Config::parse("[server]\nlisten = \"127.0.0.1:0\"\n[tiers]\ncheap = [\"x:y\"]\n[providers.x]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:1\"\n[router]\ncheap = \"cheap\"\npremium = \"cheap\"").unwrap(),
        Duration::ZERO,
    )
    .await
    .unwrap();
    let g = common::gateway(cfg).await;
    let pairs = switchyard::eval::cache::read_pairs(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/eval/data/qqp_pairs_dev.jsonl"
    )))
    .unwrap();
    let pairs: Vec<_> = pairs.into_iter().take(400).collect();
    let out = tempfile::tempdir().unwrap();
    let opts = BenchOptions {
        target: format!("http://{}", g.addr),
        requests: 120,
        concurrency: 1,
        spec: Spec::default(),
        out: out.path().to_path_buf(),
        model: "auto".into(),
        key: None,
        premium_price: (2.5, 10.0),
    };
    let r = bench::run(&pairs, opts).await.unwrap();
    assert_eq!(r.requests, 120);
    assert_eq!(r.errors, 0);
    // sequential exact repeats must always be served from the cache
    assert_eq!(r.repeat_served, 1.0);
    assert!(r.hits > 0 && r.hit_rate > 0.2);
    assert_eq!(r.upstream_calls_avoided, r.hits);
    assert!(r.cost_without_cache_usd > r.cost_usd);
    assert!(r.cost_always_premium_usd > r.cost_without_cache_usd);
    for f in ["report.json", "report.md", "hits.svg"] {
        assert!(out.path().join(f).exists(), "{f}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(json["hits"], r.hits);
    g.shutdown().await;
}
