#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Embedding latency and throughput on the real model, for both engines.
//!
//! A single prompt always runs on one thread; run this under `taskset -c 1` to pin it to one
//! core. `batch_32/2_threads` splits 32 prompts over two threads (run it unpinned). The candle
//! engine is measured with `RAYON_NUM_THREADS=1` (candle reads it per matmul).

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use switchyard::embed::{BertEmbedder, Embedder, Engine};

const PROMPT: &str = "How do I reset my password on the mobile app if I no longer have access to the email \
    address or the phone number I used when I signed up last year?";

fn bench(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2");
    let fast = BertEmbedder::load_with(&dir, 256, Engine::Fast, 2).expect("model");
    let candle = BertEmbedder::load_with(&dir, 256, Engine::Candle, 1).expect("model");
    // grow the prompt word by word until it is exactly 32 word pieces, [CLS]/[SEP] included
    let words: Vec<&str> = PROMPT.split(' ').collect();
    let prompt = (1..=words.len())
        .map(|n| words[..n].join(" "))
        .find(|p| fast.count_tokens(p) >= 32)
        .unwrap_or_else(|| PROMPT.to_string());
    println!("prompt: {prompt:?} ({} tokens)", fast.count_tokens(&prompt));
    let prompt = prompt.as_str();
    let long = "The quick brown fox jumps over the lazy dog. ".repeat(40);
    let mut g = c.benchmark_group("embed");
    g.bench_function("fast/single_32_tokens", |b| b.iter(|| fast.embed_batch(&[prompt]).expect("embed")));
    g.bench_function("fast/single_256_tokens_truncated", |b| b.iter(|| fast.embed_batch(&[&long]).expect("embed")));
    std::env::set_var("RAYON_NUM_THREADS", "1");
    g.bench_function("candle/single_32_tokens/1_thread", |b| b.iter(|| candle.embed_batch(&[prompt]).expect("embed")));
    let batch: Vec<String> = (0..32).map(|i| format!("{prompt} {i}")).collect();
    let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
    g.throughput(Throughput::Elements(32));
    g.bench_function("fast/batch_32/2_threads", |b| b.iter(|| fast.embed_batch(&refs).expect("embed")));
    g.finish();
}

criterion_group! { name = benches; config = Criterion::default().sample_size(30); targets = bench }
criterion_main!(benches);
