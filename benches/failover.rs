#![allow(clippy::unwrap_used, clippy::expect_used)]
//! What a failover hop costs: the same request through a tier whose first deployment answers
//! 503 at once (one attempt, then the next deployment), against a tier that goes straight to the
//! healthy deployment. Both upstreams are real HTTP servers on loopback; cache off.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::serve::ListenerExt;
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;
use switchyard::api::ChatRequest;
use switchyard::app;
use switchyard::config::Config;
use switchyard::pipeline::{Gateway, RequestCtx};

async fn ok() -> impl IntoResponse {
    axum::Json(json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}
    }))
}

async fn overloaded() -> impl IntoResponse {
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({"error": {"message": "overloaded", "type": "server_error"}})))
}

fn request(model: &str) -> ChatRequest {
    serde_json::from_value(json!({"model": model, "messages": [{"role": "user", "content": "hello"}]})).unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let gateway: Arc<Gateway> = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route("/ok/v1/chat/completions", post(ok))
            .route("/fail/v1/chat/completions", post(overloaded));
        tokio::spawn(async move { axum::serve(listener.tap_io(switchyard::app::no_delay), app).await.unwrap() });
        let cfg = Config::parse(&format!(
            r#"
            [cache]
            enabled = false
            [dispatch]
            attempts_per_deployment = 1
            breaker_failures = 1000000
            breaker_min_requests = 1000000
            [router]
            cheap = "direct"
            premium = "hop"
            [tiers]
            direct = ["good:m"]
            hop = ["bad:m", "good:m"]
            [providers.good]
            kind = "openai"
            base_url = "http://{addr}/ok/v1"
            [providers.bad]
            kind = "openai"
            base_url = "http://{addr}/fail/v1"
            "#
        ))
        .unwrap();
        let (g, worker) = app::build_gateway(&cfg, None).unwrap();
        std::mem::forget(worker);
        g
    });
    let ctx = RequestCtx { tenant: "bench".into(), ..RequestCtx::default() };
    let served = rt.block_on(gateway.chat(request("hop"), ctx.clone())).unwrap();
    assert_eq!((served.meta.provider.as_str(), served.meta.attempts), ("good", 2), "the hop tier must fail over");
    let mut g = c.benchmark_group("failover");
    g.bench_function("direct", |b| b.iter(|| rt.block_on(gateway.chat(request("direct"), ctx.clone())).unwrap()));
    g.bench_function("one_hop_after_503", |b| {
        b.iter(|| rt.block_on(gateway.chat(request("hop"), ctx.clone())).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
