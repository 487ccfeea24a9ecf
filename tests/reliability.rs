#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The gateway under pressure and abuse: `Retry-After` on every 429/503 it answers.

mod common;

use std::time::Duration;

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
