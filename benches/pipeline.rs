#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The hit path inside the process, through `Gateway::chat` (no HTTP): an exact repeat, and a
//! semantic hit for a 32-token paraphrase (which includes embedding it with the real model).

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use switchyard::api::ChatRequest;
use switchyard::app;
use switchyard::config::Config;
use switchyard::pipeline::{Gateway, RequestCtx};

/// 32 word pieces each, [CLS] and [SEP] included.
const STORED: &str = "How do I reset my password on the mobile app if I no longer have access to the email address or the phone number I used when I signed up";
const PARAPHRASE: &str = "How can I reset my password on the mobile app if I no longer have access to the email address or the phone number I used when I signed up";

fn request(q: &str) -> ChatRequest {
    serde_json::from_value(serde_json::json!({"model": "cheap", "messages": [{"role": "user", "content": q}]}))
        .expect("request")
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let gateway: Arc<Gateway> = rt.block_on(async {
        let cfg = app::demo_config(
            Config::parse("[tiers]\ncheap = [\"x:y\"]\n[providers.x]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:1\"\n[router]\npremium = \"cheap\"").expect("config"),
            Duration::ZERO,
        )
        .await
        .expect("demo");
        let embedder = app::load_embedder(&cfg).expect("model");
        println!("paraphrase: {} tokens", embedder.count_tokens(PARAPHRASE));
        let (g, worker) = app::build_gateway(&cfg, Some(embedder)).expect("gateway");
        std::mem::forget(worker); // keep the inference thread for the whole bench
        let ctx = RequestCtx { tenant: "bench".into(), ..RequestCtx::default() };
        g.chat(request(STORED), ctx).await.expect("first call");
        g
    });
    let ctx = RequestCtx { tenant: "bench".into(), ..RequestCtx::default() };
    let served = rt.block_on(gateway.chat(request(PARAPHRASE), ctx.clone())).expect("call");
    assert_eq!(served.meta.cache, switchyard::pipeline::CacheStatus::Hit, "the paraphrase must be a semantic hit");
    println!("paraphrase similarity {:?}", served.meta.similarity);
    let mut g = c.benchmark_group("hit_path");
    g.bench_function("exact_repeat", |b| {
        b.iter(|| rt.block_on(gateway.chat(request(STORED), ctx.clone())).expect("hit"))
    });
    g.bench_function("semantic_paraphrase_32_tokens", |b| {
        b.iter(|| rt.block_on(gateway.chat(request(PARAPHRASE), ctx.clone())).expect("hit"))
    });
    g.finish();
}

criterion_group! { name = benches; config = Criterion::default().sample_size(30); targets = bench }
criterion_main!(benches);
