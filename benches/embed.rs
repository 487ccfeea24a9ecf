#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Embedding latency and throughput on the real model.
//!
//! `single_32_tokens/1_thread`: one 32-token prompt on one core (candle reads RAYON_NUM_THREADS
//! per matmul, so the bench switches it). `batch_32/2_threads`: 32 prompts in one forward pass.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use switchyard::app::load_embedder;
use switchyard::config::Config;

const PROMPT_32: &str =
    "How do I reset my password on the mobile app if I no longer have access to the email address I used to sign up?";

fn bench(c: &mut Criterion) {
    let e = load_embedder(&Config::default()).expect("model");
    // grow the prompt word by word until it is exactly 32 word pieces, [CLS]/[SEP] included
    let words: Vec<&str> = PROMPT_32.split(' ').collect();
    let prompt = (1..=words.len())
        .map(|n| words[..n].join(" "))
        .find(|p| e.count_tokens(p) >= 32)
        .unwrap_or_else(|| PROMPT_32.to_string());
    println!("prompt: {prompt:?} ({} tokens)", e.count_tokens(&prompt));
    let prompt = prompt.as_str();
    let mut g = c.benchmark_group("embed");
    std::env::set_var("RAYON_NUM_THREADS", "1");
    g.bench_function("single_32_tokens/1_thread", |b| b.iter(|| e.embed_batch(&[prompt]).expect("embed")));
    let long = "The quick brown fox jumps over the lazy dog. ".repeat(40);
    g.bench_function("single_256_tokens_truncated/1_thread", |b| b.iter(|| e.embed_batch(&[&long]).expect("embed")));
    std::env::set_var("RAYON_NUM_THREADS", "2");
    let batch: Vec<String> = (0..32).map(|i| format!("{prompt} {i}")).collect();
    let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
    g.throughput(Throughput::Elements(32));
    g.bench_function("batch_32/2_threads", |b| b.iter(|| e.embed_batch(&refs).expect("embed")));
    g.finish();
}

criterion_group! { name = benches; config = Criterion::default().sample_size(30); targets = bench }
criterion_main!(benches);
