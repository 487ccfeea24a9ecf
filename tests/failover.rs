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

#[tokio::test]
async fn a_prompt_too_long_for_one_deployment_goes_on_to_the_next_and_too_long_for_all_is_a_400() {
    let (a, b) = mocks().await;
    a.context_window(50);
    // two failures in a row would open a breaker: refusals for length must not count as failures
    let g = gateway(config(&a, &b, "breaker_failures = 2", None)).await;
    let long = "word ".repeat(20);
    for n in 1..=3 {
        let (status, h, body) = post_chat(&g, &ask(&format!("{long}{n}")), &[]).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(header(&h, "x-switchyard-provider"), "b");
        // refused once, not retried on the same deployment
        assert_eq!((a.calls(), b.calls()), (n, n));
    }
    let (status, h, _) = post_chat(&g, &ask("short"), &[]).await;
    assert_eq!((status, header(&h, "x-switchyard-provider")), (200, "a"), "a's breaker stayed closed");

    b.context_window(50);
    let (status, _, body) = post_chat(&g, &ask(&long), &[]).await;
    assert_eq!(status, 400, "{body}");
    let e = &body["error"];
    assert_eq!(
        (e["code"].as_str(), e["type"].as_str(), e["param"].as_str()),
        (Some("context_length_exceeded"), Some("invalid_request_error"), Some("messages")),
        "{body}"
    );
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains("a:m") && msg.contains("b:m") && msg.contains("maximum context length"), "{msg}");
    assert!(!body.to_string().contains("secret-key"));
    assert_eq!((a.calls(), b.calls()), (5, 4));
    g.shutdown().await;
}

/// A cheap tier with a small window (`a:small`), a premium one (`premium`, deployments on b)
/// with a large one, and a fixed router threshold no score reaches: `auto` routes everything cheap.
fn small_and_large(a: &MockUpstream, b: &MockUpstream, premium: &str) -> Config {
    small_and_large_with(a, b, r#"["a:small"]"#, premium)
}

fn small_and_large_with(a: &MockUpstream, b: &MockUpstream, cheap: &str, premium: &str) -> Config {
    let text = format!(
        r#"
        [server]
        listen = "127.0.0.1:0"
        [cache]
        enabled = false
        [dispatch]
        backoff_base = "10ms"
        [router]
        threshold = 1000000.0
        [tiers]
        cheap = {cheap}
        premium = [{premium}]
        [providers.a]
        kind = "openai"
        base_url = "{}"
        [providers.b]
        kind = "openai"
        base_url = "{}"
        [prices]
        small = {{ input = 0.15, output = 0.60 }}
        large = {{ input = 2.50, output = 10.00 }}
        "#,
        a.base_url(),
        b.base_url()
    );
    Config::parse(&text).unwrap()
}

#[tokio::test]
async fn auto_sends_a_prompt_too_long_for_the_cheap_tier_to_the_premium_tier_and_keeps_its_conversation_there() {
    let (a, b) = mocks().await;
    a.context_window(60);
    let g = gateway(small_and_large(&a, &b, r#""b:large""#)).await;
    let auto = |messages: Value| json!({"model": "auto", "messages": messages});

    let (status, h, _) = post_chat(&g, &auto(json!([{"role": "user", "content": "hello"}])), &[]).await;
    assert_eq!((status, header(&h, "x-switchyard-tier")), (200, "cheap"));

    let long = "Summarise this for me please: ".to_string() + &"lorem ipsum ".repeat(8);
    let (status, h, body) = post_chat(&g, &auto(json!([{"role": "user", "content": long}])), &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((header(&h, "x-switchyard-tier"), header(&h, "x-switchyard-model")), ("premium", "large"));
    // the refused cheap call and the premium one
    assert_eq!(header(&h, "x-switchyard-attempts"), "2");
    assert!(!header(&h, "x-switchyard-route-score").is_empty());
    assert_eq!((a.calls(), b.calls()), (2, 1));
    assert_eq!(metric(&g, r#"switchyard_fallbacks_total{direction="larger_context"}"#).await, 1.0);

    // the conversation goes on at the premium tier without another refused call
    let answer = body["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    let follow_up = auto(json!([
        {"role": "user", "content": long},
        {"role": "assistant", "content": answer},
        {"role": "user", "content": "shorter"}
    ]));
    let (status, h, _) = post_chat(&g, &follow_up, &[]).await;
    assert_eq!((status, header(&h, "x-switchyard-tier")), (200, "premium"));
    assert_eq!(header(&h, "x-switchyard-route-affinity"), "premium");
    assert_eq!((a.calls(), b.calls()), (2, 2));

    // streamed, the same
    let mut streamed = auto(json!([{"role": "user", "content": format!("{long} (streamed)")}]));
    streamed["stream"] = json!(true);
    let resp = reqwest::Client::new().post(url(&g, "/v1/chat/completions")).json(&streamed).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["x-switchyard-tier"], "premium");
    let (events, done) = sse(resp).await;
    assert!(done && events.iter().any(|e| e["model"] == "large"), "{events:?}");
    assert_eq!((a.calls(), b.calls()), (3, 3));
    // inside the realised share: cheap, escalated, affinity, escalated
    let realised = metric(&g, r#"switchyard_route_premium_share_realised{tenant="global"}"#).await;
    assert_eq!(realised, 0.75);

    // a request that may not go premium gets OpenAI's 400 instead: dialled to share 0, or a
    // client that named the cheap tier
    for body in [
        json!({"model": "auto:0", "messages": [{"role": "user", "content": format!("{long} (dial)")}]}),
        json!({"model": "cheap", "messages": [{"role": "user", "content": format!("{long} (tier)")}]}),
    ] {
        let (status, _, e) = post_chat(&g, &body, &[]).await;
        assert_eq!((status, e["error"]["code"].as_str()), (400, Some("context_length_exceeded")), "{e}");
    }
    assert_eq!((a.calls(), b.calls()), (5, 3));
    g.shutdown().await;
}

#[tokio::test]
async fn a_prompt_moved_to_the_premium_tier_for_its_length_fails_over_within_it() {
    let (a, b) = mocks().await;
    a.context_window(20);
    let g = gateway(small_and_large(&a, &b, r#""b:large", "b:large2""#)).await;
    // the first premium deployment is down: its failures do not stop the escalation there
    b.then(Behavior::Status(500, None)).then(Behavior::Status(500, None));
    let (status, h, body) = post_chat(
        &g,
        &json!({"model": "auto", "messages": [{"role": "user", "content": "a prompt longer than twenty"}]}),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((header(&h, "x-switchyard-tier"), header(&h, "x-switchyard-model")), ("premium", "large2"));
    assert_eq!(header(&h, "x-switchyard-attempts"), "4");
    assert_eq!((a.calls(), b.calls()), (1, 3));
    g.shutdown().await;
}

#[tokio::test]
async fn a_premium_fallback_the_cheap_tier_holds_back_still_takes_a_prompt_too_long_for_it() {
    let (a, b) = mocks().await;
    a.context_window(20);
    // the cheap tier falls back to the premium one, which the price rule holds back from failover
    let cheap = r#"{ deployments = ["a:small"], fallback_tier = "premium" }"#;
    let g = gateway(small_and_large_with(&a, &b, cheap, r#""b:large""#)).await;
    let long = json!({"model": "auto", "messages": [{"role": "user", "content": "a prompt longer than twenty"}]});
    let (status, h, body) = post_chat(&g, &long, &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((header(&h, "x-switchyard-tier"), header(&h, "x-switchyard-model")), ("premium", "large"));
    // a failure of the cheap deployment is still not a reason to go pricier
    a.then(Behavior::Status(500, None)).then(Behavior::Status(500, None));
    let (status, _, body) =
        post_chat(&g, &json!({"model": "auto", "messages": [{"role": "user", "content": "short"}]}), &[]).await;
    assert_eq!(status, 502, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("allow_pricier_fallback"), "{body}");
    assert_eq!(b.calls(), 1);
    g.shutdown().await;
}
