#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The gateway under pressure and abuse: `Retry-After` on every 429/503 it answers; slow-loris
//! clients cut off by the header read and idle timeouts; header caps; snapshots that survive
//! `kill -9` of the real binary in the middle of a write.

mod common;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::binary::spawn_demo as spawn_gateway;
use common::*;
use serde_json::{json, Value};
use switchyard::app::{self, Running};
use switchyard::config::Config;

/// One tier `t` on mock `a`, cache off (no model loaded), with extra `[server]` and `[dispatch]`
/// keys.
fn config(a: &MockUpstream, server: &str, dispatch: &str) -> Config {
    let text = format!(
        r#"
        [server]
        listen = "127.0.0.1:0"
        {server}
        [cache]
        enabled = false
        [dispatch]
        attempts_per_deployment = 1
        {dispatch}
        [router]
        cheap = "t"
        premium = "t"
        [tiers]
        t = ["a:m"]
        [providers.a]
        kind = "openai"
        base_url = "{au}"
        first_byte_timeout = "30s"
        "#,
        au = a.base_url(),
    );
    Config::parse(&text).unwrap_or_else(|e| panic!("test config: {e}\n{text}"))
}

async fn start(cfg: Config) -> Running {
    app::start(cfg, None, false).await.expect("gateway starts")
}

fn ask(q: &str) -> Value {
    json!({"model": "t", "messages": [{"role": "user", "content": q}]})
}

fn retry_after(h: &axum::http::HeaderMap) -> Option<u64> {
    h.get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn concurrency_limit_answers_503_with_retry_after() {
    let a = MockUpstream::start("a").await;
    a.then(Behavior::Hang);
    let g = start(config(&a, "max_concurrency = 1", "")).await;
    let url = url(&g, "/v1/chat/completions");
    // the one slot is taken by a request the upstream never answers
    let held = tokio::spawn(async move { reqwest::Client::new().post(url).json(&ask("first")).send().await });
    while a.calls() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, headers, body) = post_chat(&g, &ask("second"), &[]).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "overloaded");
    assert_eq!(retry_after(&headers), Some(1), "a 503 for the concurrency limit must say when to retry");
    assert_eq!(a.calls(), 1, "the refused request never went upstream");
    held.abort();
}

#[tokio::test]
async fn open_breakers_answer_503_with_the_time_until_the_probe() {
    let a = MockUpstream::start("a").await;
    a.then(Behavior::Status(500, None));
    let g = start(config(&a, "", "breaker_failures = 1\nbreaker_cooldown = \"30s\"")).await;
    let (status, headers, _) = post_chat(&g, &ask("fails"), &[]).await;
    assert_eq!(status, 502);
    assert_eq!(retry_after(&headers), None, "a 502 is not a 'come back later'");
    // the breaker is open now: nothing is tried, and the client learns when a probe will be let through
    let (status, headers, body) = post_chat(&g, &ask("skipped"), &[]).await;
    assert_eq!(status, 503, "{body}");
    let ra = retry_after(&headers).expect("Retry-After on a breaker-open 503");
    assert!((1..=30).contains(&ra), "Retry-After {ra} must be within the 30 s cool-down");
    assert_eq!(a.calls(), 1);
}

#[tokio::test]
async fn rate_limited_upstreams_give_a_429_with_their_retry_after() {
    let a = MockUpstream::start("a").await;
    // longer than retry_after_cap: the dispatcher gives up at once and tells the client
    a.then(Behavior::Status(429, Some("7"))).then(Behavior::Status(429, None));
    let g = start(config(&a, "", "retry_after_cap = \"1s\"")).await;
    let (status, headers, body) = post_chat(&g, &ask("limited"), &[]).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(retry_after(&headers), Some(7), "the provider's own hint is passed on");
    let (status, headers, _) = post_chat(&g, &ask("limited again"), &[]).await;
    assert_eq!(status, 429);
    assert_eq!(retry_after(&headers), Some(1), "without a hint, the default");
}

/// Reads until the server closes the connection; what it sent before that. Panics (instead of
/// hanging the test run) if the connection is still open after `guard` — a generous bound, not a
/// timing assertion.
async fn read_until_closed(tcp: &mut tokio::net::TcpStream, guard: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(guard, tcp.read(&mut buf)).await {
            Err(_) => panic!("the server kept the connection open ({} bytes so far)", got.len()),
            Ok(Ok(0)) | Ok(Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

const SLOW: &str = "header_read_timeout = \"300ms\"\nkeep_alive_timeout = \"600ms\"";

#[tokio::test]
async fn a_client_that_stalls_mid_header_is_disconnected() {
    let a = MockUpstream::start("a").await;
    let g = start(config(&a, SLOW, "")).await;
    let mut tcp = tokio::net::TcpStream::connect(g.addr).await.unwrap();
    tcp.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: appl").await.unwrap();
    // ... and nothing more: the gateway must close the connection, not wait forever
    let got = read_until_closed(&mut tcp, Duration::from_secs(20)).await;
    assert!(!String::from_utf8_lossy(&got).contains("200 OK"));
    assert_eq!(a.calls(), 0);

    // a connection that never sends a byte is closed too
    let mut silent = tokio::net::TcpStream::connect(g.addr).await.unwrap();
    read_until_closed(&mut silent, Duration::from_secs(20)).await;

    // the gateway keeps serving everyone else
    let (status, _, _) = post_chat(&g, &ask("still there?"), &[]).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_but_a_slow_answer_is_not_cut() {
    // the upstream takes longer than both timeouts: a request in flight is not "idle"
    let a = MockUpstream::start_with("a", Duration::from_millis(1500)).await;
    let g = start(config(&a, SLOW, "")).await;
    let mut tcp = tokio::net::TcpStream::connect(g.addr).await.unwrap();
    let body = ask("slow one").to_string();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    // the answer arrives whole, then the idle kept-alive connection is closed
    let got = String::from_utf8_lossy(&read_until_closed(&mut tcp, Duration::from_secs(20)).await).to_string();
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(got.contains("slow one"), "{got}");
    assert_eq!(a.calls(), 1);
}

#[tokio::test]
async fn oversized_or_too_many_headers_get_431() {
    let a = MockUpstream::start("a").await;
    let g = start(config(&a, "max_header_bytes = 8192\nmax_headers = 20", "")).await;
    let client = reqwest::Client::new();
    let chat = url(&g, "/v1/chat/completions");
    let r = client.post(&chat).header("x-big", "v".repeat(16 * 1024)).json(&ask("big")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 431);
    let mut rb = client.post(&chat).json(&ask("many"));
    for i in 0..40 {
        rb = rb.header(format!("x-h{i}"), "v");
    }
    assert_eq!(rb.send().await.unwrap().status().as_u16(), 431);
    assert_eq!(a.calls(), 0);
    let (status, _, _) = post_chat(&g, &ask("normal"), &[]).await;
    assert_eq!(status, 200);
}

fn snapshot_entries(path: &std::path::Path) -> usize {
    let cache = switchyard::cache::SemanticCache::new(switchyard::cache::CacheSettings::default(), 384);
    cache.load_snapshot(path).unwrap_or_else(|e| panic!("the snapshot must stay loadable: {e}"))
}

fn tmp_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().contains(".tmp.")).count()
}

// multi-threaded: the kill loop below spins on one thread while the requests go on on the other
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_snapshots_are_written_leaves_the_previous_one_loadable() {
    use rand::Rng;
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("cache.snap");
    let cfg = dir.path().join("gw.toml");
    std::fs::write(
        &cfg,
        format!("[cache]\nsnapshot = {:?}\nsnapshot_interval = \"100ms\"\n", snap.display().to_string()),
    )
    .unwrap();
    let filler = "and some more words to make the stored answer large enough to take a while to write ".repeat(16);
    let mut rng = rand::thread_rng();
    let (mut kept, mut interrupted) = (0usize, 0usize);
    for round in 0..6 {
        let (mut child, addr) = spawn_gateway(&cfg);
        if round > 0 {
            // the restarted gateway restored what the last snapshot held
            let health: serde_json::Value =
                reqwest::get(format!("http://{addr}/health")).await.unwrap().json().await.unwrap();
            assert!(health["cache_entries"].as_u64().unwrap() as usize >= kept, "{health}");
        }
        // keep storing new answers, so snapshots keep being written
        let url = format!("http://{addr}/v1/chat/completions");
        let filler = filler.clone();
        let load = tokio::spawn(async move {
            let client = reqwest::Client::new();
            for i in 0.. {
                let q = format!("round {round} question {i}: {filler}");
                let body = json!({"model": "cheap", "messages": [{"role": "user", "content": q}]});
                if client.post(&url).json(&body).send().await.is_err() {
                    break;
                }
            }
        });
        // let this run store a few more answers (so its periodic snapshots have news to write)
        let started = std::time::Instant::now();
        loop {
            let health: serde_json::Value =
                reqwest::get(format!("http://{addr}/health")).await.unwrap().json().await.unwrap();
            if health["cache_entries"].as_u64().unwrap() as usize >= kept + 5 && snap.exists() {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(120), "the gateway stored nothing new: {health}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(200..800))).await;
        if round % 2 == 1 {
            // aim at a write in progress: kill as soon as a temporary file shows up
            let t = std::time::Instant::now();
            while tmp_files(dir.path()) == 0 && t.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_micros(200));
            }
            std::thread::sleep(Duration::from_micros(rng.gen_range(0..3000)));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        load.abort();
        interrupted += usize::from(tmp_files(dir.path()) > 0);
        let n = snapshot_entries(&snap);
        assert!(n >= kept && n > 0, "round {round}: the snapshot holds {n} entries, fewer than the {kept} before");
        assert_eq!(tmp_files(dir.path()), 0, "a load removes what a killed writer left");
        kept = n;
    }
    println!("6 kills, {interrupted} in the middle of a snapshot write; the last snapshot holds {kept} entries");
}

/// `server.shutdown_delay`: after the shutdown signal the replica keeps serving while `/health`
/// answers 503 `draining` (a readiness probe takes it out of rotation), and only then stops
/// accepting: a request a load balancer still sends in that time is served, not refused.
#[tokio::test]
async fn during_the_shutdown_delay_health_says_draining_and_requests_are_still_served() {
    let (cheap, premium) = (MockUpstream::start("cheap").await, MockUpstream::start("premium").await);
    let g = gateway(config_for(&cheap, &premium, "shutdown_delay = \"1500ms\"")).await;
    let addr = g.addr;
    let client = reqwest::Client::new();
    let health = |client: reqwest::Client| async move {
        let r = client.get(format!("http://{addr}/health")).send().await.unwrap();
        (r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap()["status"].as_str().unwrap().to_string())
    };
    assert_eq!(health(client.clone()).await, (200, "ok".to_string()));
    let stopping = tokio::spawn(g.shutdown());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(health(client.clone()).await, (503, "draining".to_string()));
    let r = client
        .post(format!("http://{addr}/v1/chat/completions"))
        .json(&serde_json::json!({"model": "cheap", "messages": [{"role": "user", "content": "still there?"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "served during the delay");
    stopping.await.unwrap();
    // a new connection after it (pooled ones are closed by the drain)
    assert!(reqwest::Client::new().get(format!("http://{addr}/health")).send().await.is_err(), "no longer accepting");
}
