#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The cost routing adds to a request: text features + 396 multiply-adds, on the cache's vector.

use criterion::{criterion_group, criterion_main, Criterion};
use switchyard::classify::{Classifier, TrainedRouter};

fn bench(c: &mut Criterion) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/router");
    let router = TrainedRouter::load(&dir).expect("models/router (run `switchyard train router`)");
    let v: Vec<f32> = (0..384).map(|i| ((i as f32) * 0.37).sin() / 11.0).collect();
    let prompt = "James decides to run 3 sprints 3 times a week. He runs 60 meters each sprint. How many total meters does he run a week?";
    c.bench_function("route/score", |b| b.iter(|| router.score(std::hint::black_box(prompt), Some(&v))));
    let long = prompt.repeat(40);
    c.bench_function("route/score_long_prompt", |b| b.iter(|| router.score(std::hint::black_box(&long), Some(&v))));
    c.bench_function("cache/guard_pair", |b| {
        b.iter(|| {
            switchyard::cache::guard::guarded_score(
                std::hint::black_box("What is the syllabus for 2nd year B.Tech in Delhi University?"),
                "What's the syllabus for the 2nd year of B.Tech at Delhi University?",
                0.97,
            )
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
