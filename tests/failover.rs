#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Dispatch and failover through the real gateway, against mock OpenAI upstreams on loopback that
//! fail in scripted ways: each case asserts who was called how often and what the client got.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};
use switchyard::config::Config;

/// A tier `t` of deployments `a:m`, `b:m` (in that order) on the given mocks, cache off so every
/// request goes upstream. `dispatch` adds `[dispatch]` keys; `a_url` overrides a's base URL.
fn config(a: &MockUpstream, b: &MockUpstream, dispatch: &str, a_url: Option<&str>) -> Config {
    let text = format!(
        r#"
        [server]
        listen = "127.0.0.1:0"
        [cache]
        enabled = false
        [dispatch]
        backoff_base = "10ms"
        backoff_max = "50ms"
        breaker_cooldown = "1s"
        {dispatch}
        [router]
        cheap = "t"
        premium = "t"
        [tiers]
        t = ["a:m", "b:m"]
        [providers.a]
        kind = "openai"
        base_url = "{au}"
        api_key = "sk-a-secret-key"
        connect_timeout = "1s"
        first_byte_timeout = "500ms"
        [providers.b]
        kind = "openai"
        base_url = "{bu}"
        api_key = "sk-b-secret-key"
        first_byte_timeout = "2s"
        "#,
        au = a_url.map(str::to_string).unwrap_or_else(|| a.base_url()),
        bu = b.base_url(),
    );
    Config::parse(&text).unwrap_or_else(|e| panic!("test config: {e}\n{text}"))
}

fn ask(q: &str) -> Value {
    json!({"model": "t", "messages": [{"role": "user", "content": q}]})
}

async fn mocks() -> (MockUpstream, MockUpstream) {
    (MockUpstream::start("a").await, MockUpstream::start("b").await)
}

#[tokio::test]
async fn a_500_is_retried_on_the_same_deployment() {
    let (a, b) = mocks().await;
    a.then(Behavior::Status(500, None));
    let g = gateway(config(&a, &b, "", None)).await;
    let (status, h, body) = post_chat(&g, &ask("q1"), &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((a.calls(), b.calls()), (2, 0));
    assert_eq!(header(&h, "x-switchyard-provider"), "a");
    assert_eq!(header(&h, "x-switchyard-attempts"), "2");
    g.shutdown().await;
}

#[tokio::test]
async fn a_429_waits_for_retry_after_then_succeeds() {
    let (a, b) = mocks().await;
    a.then(Behavior::Status(429, Some("1")));
    let g = gateway(config(&a, &b, "", None)).await;
    let started = Instant::now();
    let (status, h, _) = post_chat(&g, &ask("q2"), &[]).await;
    assert_eq!(status, 200);
    // the provider asked for a second; the backoff alone would have been ≤ 50 ms
    assert!(started.elapsed() >= Duration::from_millis(900), "Retry-After was not honoured");
    assert_eq!((a.calls(), b.calls()), (2, 0));
    assert_eq!(header(&h, "x-switchyard-attempts"), "2");
    g.shutdown().await;
}

#[tokio::test]
async fn a_retry_after_beyond_the_cap_fails_over_at_once() {
    let (a, b) = mocks().await;
    a.then(Behavior::Status(429, Some("120")));
    let g = gateway(config(&a, &b, "", None)).await;
    let (status, h, _) = post_chat(&g, &ask("q3"), &[]).await;
    assert_eq!(status, 200);
    assert_eq!((a.calls(), b.calls()), (1, 1));
    assert_eq!(header(&h, "x-switchyard-provider"), "b");
    g.shutdown().await;
}

#[tokio::test]
async fn a_deployment_that_never_answers_times_out_and_fails_over() {
    let (a, b) = mocks().await;
    a.then(Behavior::Hang).then(Behavior::Hang);
    let g = gateway(config(&a, &b, "", None)).await;
    let (status, h, body) = post_chat(&g, &ask("q4"), &[]).await;
    assert_eq!(status, 200, "{body}");
    // first-byte timeout (500 ms) twice on a, then b
    assert_eq!((a.calls(), b.calls()), (2, 1));
    assert_eq!(header(&h, "x-switchyard-provider"), "b");
    assert_eq!(header(&h, "x-switchyard-attempts"), "3");
    assert!(body["choices"][0]["message"]["content"].as_str().unwrap().starts_with("b answer"));
    g.shutdown().await;
}

#[tokio::test]
async fn connection_refused_fails_over() {
    let (a, b) = mocks().await;
    // a port nobody listens on
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let g = gateway(config(&a, &b, "", Some(&format!("http://{closed}/v1")))).await;
    let (status, h, _) = post_chat(&g, &ask("q5"), &[]).await;
    assert_eq!(status, 200);
    assert_eq!((a.calls(), b.calls()), (0, 1));
    assert_eq!(header(&h, "x-switchyard-provider"), "b");
    g.shutdown().await;
}

#[tokio::test]
async fn a_400_is_returned_at_once_without_retry_or_failover() {
    let (a, b) = mocks().await;
    a.then(Behavior::Status(400, None));
    let g = gateway(config(&a, &b, "", None)).await;
    let (status, _, body) = post_chat(&g, &ask("q6"), &[]).await;
    assert_eq!(status, 400);
    assert_eq!((a.calls(), b.calls()), (1, 0));
    assert!(body["error"]["message"].as_str().unwrap().contains("a:m"), "{body}");
    assert!(!body.to_string().contains("sk-a-secret-key"));
    g.shutdown().await;
}

#[tokio::test]
async fn when_every_deployment_fails_the_client_gets_a_502_naming_them() {
    let (a, b) = mocks().await;
    for m in [&a, &b] {
        m.then(Behavior::Status(503, None)).then(Behavior::Status(503, None));
    }
    let g = gateway(config(&a, &b, "", None)).await;
    let (status, h, body) = post_chat(&g, &ask("q7"), &[]).await;
    assert_eq!(status, 502);
    assert_eq!((a.calls(), b.calls()), (2, 2));
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("a:m") && msg.contains("b:m"), "{msg}");
    assert!(!body.to_string().contains("secret-key"));
    assert!(h.get("x-request-id").is_some());
    g.shutdown().await;
}

#[tokio::test]
async fn the_request_deadline_bounds_retries_and_failover() {
    let (a, b) = mocks().await;
    a.then(Behavior::Hang);
    // the deadline is shorter than a's first-byte timeout
    let g = gateway(config(&a, &b, "deadline = \"200ms\"", None)).await;
    let (status, _, body) = post_chat(&g, &ask("q8"), &[]).await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["type"], "timeout_error");
    assert_eq!(b.calls(), 0);
    g.shutdown().await;
}

#[tokio::test]
async fn the_fallback_tier_is_tried_after_the_tiers_own_deployments() {
    let (a, b) = mocks().await;
    a.then(Behavior::Status(500, None)).then(Behavior::Status(500, None));
    let text = format!(
        r#"
        [server]
        listen = "127.0.0.1:0"
        [cache]
        enabled = false
        [dispatch]
        backoff_base = "10ms"
        [tiers]
        premium = {{ deployments = ["a:large"], fallback_tier = "cheap" }}
        cheap = ["b:small"]
        [providers.a]
        kind = "openai"
        base_url = "{}"
        [providers.b]
        kind = "openai"
        base_url = "{}"
        "#,
        a.base_url(),
        b.base_url()
    );
    let g = gateway(Config::parse(&text).unwrap()).await;
    let (status, h, _) =
        post_chat(&g, &json!({"model": "premium", "messages": [{"role": "user", "content": "q9"}]}), &[]).await;
    assert_eq!(status, 200);
    assert_eq!((a.calls(), b.calls()), (2, 1));
    assert_eq!(header(&h, "x-switchyard-model"), "small");
    assert_eq!(header(&h, "x-switchyard-provider"), "b");
    g.shutdown().await;
}

/// Reads an SSE body with a real SSE client: (JSON events, whether `[DONE]` arrived).
async fn sse(resp: reqwest::Response) -> (Vec<Value>, bool) {
    use eventsource_stream::Eventsource;
    let mut events = resp.bytes_stream().eventsource();
    let (mut out, mut done) = (Vec::new(), false);
    while let Some(ev) = events.next().await {
        let Ok(ev) = ev else { break };
        if ev.data == "[DONE]" {
            done = true;
            break;
        }
        out.push(serde_json::from_str(&ev.data).unwrap());
    }
    (out, done)
}

fn stream_req(q: &str) -> Value {
    json!({"model": "t", "stream": true, "messages": [{"role": "user", "content": q}]})
}

#[tokio::test]
async fn a_stream_that_breaks_before_its_first_byte_fails_over() {
    let (a, b) = mocks().await;
    a.then(Behavior::BreakBeforeFirst).then(Behavior::BreakBeforeFirst);
    let g = gateway(config(&a, &b, "", None)).await;
    let r = reqwest::Client::new().post(url(&g, "/v1/chat/completions")).json(&stream_req("q10")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-switchyard-provider"], "b");
    let (chunks, done) = sse(r).await;
    assert!(done);
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert!(text.starts_with("b answer"), "{text}");
    assert!(chunks.iter().all(|c| c.get("error").is_none()));
    assert_eq!((a.calls(), b.calls()), (2, 1));
    g.shutdown().await;
}

#[tokio::test]
async fn a_stream_that_breaks_after_its_first_byte_ends_with_an_error_event() {
    let (a, b) = mocks().await;
    a.then(Behavior::BreakAfterFirst);
    let g = gateway(config(&a, &b, "", None)).await;
    let r = reqwest::Client::new().post(url(&g, "/v1/chat/completions")).json(&stream_req("q11")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let (events, done) = sse(r).await;
    assert!(!done, "a broken stream must not look complete: {events:?}");
    let text: String = events.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "partial ");
    let last = events.last().unwrap();
    assert!(last["error"]["message"].as_str().is_some(), "last event should be an error: {last}");
    assert!(!last.to_string().contains("secret-key"));
    // the client already had bytes: no failover
    assert_eq!((a.calls(), b.calls()), (1, 0));
    g.shutdown().await;
}

fn breaker_state(metrics: &str, deployment: &str) -> String {
    let prefix = format!("switchyard_breaker_state{{deployment=\"{deployment}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap_or("missing").to_string()
}

#[tokio::test]
async fn the_circuit_breaker_opens_skips_half_opens_and_closes() {
    let (a, b) = mocks().await;
    for _ in 0..2 {
        a.then(Behavior::Status(503, None));
    }
    // two failures in a row open a's breaker; one attempt per deployment
    let g = gateway(config(&a, &b, "breaker_failures = 2\nattempts_per_deployment = 1", None)).await;
    let metrics = || async { reqwest::get(url(&g, "/metrics")).await.unwrap().text().await.unwrap() };

    for q in ["q12", "q13"] {
        let (status, h, _) = post_chat(&g, &ask(q), &[]).await;
        assert_eq!((status, header(&h, "x-switchyard-provider")), (200, "b"));
    }
    assert_eq!((a.calls(), b.calls()), (2, 2));
    assert_eq!(breaker_state(&metrics().await, "a:m"), "2", "open");

    // open: a is skipped without a call
    let (_, h, _) = post_chat(&g, &ask("q14"), &[]).await;
    assert_eq!(header(&h, "x-switchyard-provider"), "b");
    assert_eq!(header(&h, "x-switchyard-attempts"), "1");
    assert_eq!((a.calls(), b.calls()), (2, 3));

    // after the cool-down one probe goes to a; it succeeds and closes the breaker
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(breaker_state(&metrics().await, "a:m"), "1", "half-open");
    let (_, h, _) = post_chat(&g, &ask("q15"), &[]).await;
    assert_eq!(header(&h, "x-switchyard-provider"), "a");
    assert_eq!(breaker_state(&metrics().await, "a:m"), "0", "closed");
    let (_, h, _) = post_chat(&g, &ask("q16"), &[]).await;
    assert_eq!(header(&h, "x-switchyard-provider"), "a");
    assert_eq!((a.calls(), b.calls()), (4, 3));
    let m = metrics().await;
    assert!(m.contains("switchyard_upstream_attempts_total{deployment=\"a:m\",result=\"error\"} 2"), "{m}");
    assert!(!m.contains("secret-key"));
    g.shutdown().await;
}

#[tokio::test]
async fn a_client_that_disconnects_cancels_the_upstream_call() {
    let (a, b) = mocks().await;
    a.then(Behavior::Hang);
    let g = gateway(config(&a, &b, "", None)).await;
    let client = reqwest::Client::builder().timeout(Duration::from_millis(200)).build().unwrap();
    let r = client.post(url(&g, "/v1/chat/completions")).json(&ask("q17")).send().await;
    assert!(r.is_err(), "the client gave up");
    // Had the gateway carried on, a's first-byte timeout (500 ms) would have fired and a second
    // attempt gone out. It drops the request instead: the mock's hanging handler is dropped and
    // nothing more is sent.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(a.cancelled(), 1, "the upstream call was not dropped");
    assert_eq!((a.calls(), b.calls()), (1, 0), "the request outlived its client");
    g.shutdown().await;
}
