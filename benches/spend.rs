#![allow(clippy::unwrap_used, clippy::expect_used)]
//! What spend control adds to every request on the pass-through path, measured on the work the
//! HTTP layer does for it: look the bearer key up in the key file's table (SHA-256 + map), admit
//! it against its limits and budgets, settle the real tokens and cost, and queue its request-log
//! line (serialise, ring buffer, bounded channel to the writer thread). Once with in-process
//! counters, once with the counters in a real `redis-server` (skipped when none is installed),
//! where the two Lua round trips on loopback dominate.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use switchyard::config::LogConfig;
use switchyard::keys::{new_key, KeyStore, NewKey};
use switchyard::limits::Limits;
use switchyard::reqlog::{Ledger, Record};

fn record(key: &str) -> Record {
    Record {
        time: "2026-12-02T01:00:00.123Z".into(),
        request_id: "req_0123456789abcdef0123456789abcdef".into(),
        key: key.into(),
        model: "auto".into(),
        tier: Some("cheap".into()),
        route_score: Some(0.42),
        deployment: Some("openai:gpt-4o-mini".into()),
        attempts: 1,
        cache: "miss".into(),
        prompt_tokens: 120,
        completion_tokens: 300,
        cost: Some(0.000198),
        cost_saved: Some(0.0027),
        latency_ms: 812.5,
        status: 200,
        ..Record::default()
    }
}

struct RedisServer(std::process::Child);

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis() -> Option<(RedisServer, u16)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let server = RedisServer(child);
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some((server, port));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// One request's worth: key lookup, admit, settle, log line.
async fn once(store: &KeyStore, key: &str, limits: &Arc<Limits>, ledger: &Ledger) {
    let policy = store.lookup(key).unwrap();
    let a = limits.admit(&policy, 150).await.unwrap();
    limits.settle(&policy, &a.ticket, Some(420), Some(0.000198)).await;
    ledger.record(&record(&policy.name));
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let opts = NewKey {
        name: "bench".into(),
        rpm: Some(1 << 40),
        tpm: Some(1 << 50),
        budget_day: Some(1e9),
        budget_month: Some(1e9),
    };
    let (key, toml) = new_key(&opts);
    // a realistic table: the key among a thousand others
    let mut text = toml;
    for i in 0..999 {
        text.push_str(&new_key(&NewKey { name: format!("other-{i}"), ..NewKey::default() }).1);
    }
    let path = dir.path().join("keys.toml");
    std::fs::write(&path, text).unwrap();
    let store = KeyStore::open(&path).unwrap();
    let log = LogConfig { path: Some(dir.path().join("requests.jsonl")), ..LogConfig::default() };
    let ledger = Ledger::start(&log).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();

    let mut g = c.benchmark_group("spend_per_request");
    g.bench_function("key_lookup", |b| b.iter(|| store.lookup(&key).unwrap()));
    g.bench_function("log_record", |b| b.iter(|| ledger.record(&record("bench"))));
    let local = rt.block_on(Limits::start(None, 0.8)).unwrap();
    g.bench_function("keys_limits_log_in_process", |b| b.iter(|| rt.block_on(once(&store, &key, &local, &ledger))));
    if let Some((_server, port)) = start_redis() {
        let shared = rt
            .block_on(Limits::start(
                Some(&switchyard::redis_link::RedisTarget::new(format!("redis://127.0.0.1:{port}"))),
                0.8,
            ))
            .unwrap();
        assert!(!shared.degraded(), "redis must be reachable for this bench");
        g.bench_function("keys_limits_log_redis", |b| b.iter(|| rt.block_on(once(&store, &key, &shared, &ledger))));
    } else {
        eprintln!("no redis-server: skipping keys_limits_log_redis");
    }
    g.finish();
    let s = ledger.stats().unwrap();
    eprintln!(
        "request log: {} written, {} dropped",
        s.written.load(std::sync::atomic::Ordering::Relaxed),
        s.dropped.load(std::sync::atomic::Ordering::Relaxed)
    );
}

criterion_group! { name = benches; config = Criterion::default().sample_size(50); targets = bench }
criterion_main!(benches);
