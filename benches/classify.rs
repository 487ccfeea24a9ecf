#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The cost routing adds to a request: text features + one 1,164-long dot product per head and gate
//! row, on the three views of the prompt's forward pass (`Embedded::router_input`);
//! and what holding the premium share on live traffic adds to each decision (the score window's
//! order statistic and update, the feedback, under the window's lock).

use criterion::{criterion_group, criterion_main, Criterion};
use switchyard::classify::{Ask, Classifier, LiveRouter, OperatingPoint, Router, ShareSettings, TrainedRouter};

fn bench(c: &mut Criterion) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/router");
    let router = TrainedRouter::load(&dir).expect("models/router (run `switchyard train router`)");
    let v: Vec<f32> = (0..3 * 384).map(|i| ((i as f32) * 0.37).sin() / 11.0).collect();
    let prompt = "James decides to run 3 sprints 3 times a week. He runs 60 meters each sprint. How many total meters does he run a week?";
    c.bench_function("route/score", |b| b.iter(|| router.score(std::hint::black_box(prompt), Some(&v))));
    let long = prompt.repeat(40);
    c.bench_function("route/score_long_prompt", |b| b.iter(|| router.score(std::hint::black_box(&long), Some(&v))));
    live_share(c, &dir);
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

/// The added cost per decision: `decide_score` on a full window (the score is given, so only the
/// live-threshold work is timed), for the global window, a tenant's own window (one more map
/// lookup), and with the other core hammering the same window (lock contention).
fn live_share(c: &mut Criterion, dir: &std::path::Path) {
    for window in [128usize, 512, 4096] {
        let router = Router::with_operating_point(Box::new(TrainedRouter::load(dir).unwrap()), None, Some(0.3));
        let settings = ShareSettings { window, ..ShareSettings::default() };
        let live = LiveRouter::new(router, OperatingPoint::Share(0.3), settings);
        // scores with a fixed pseudo-random order, so each push moves the sorted window
        let scores: Vec<f32> =
            (0..8192u32).map(|i| ((i.wrapping_mul(2_654_435_761) >> 8) as f32 / 16_777_216.0) - 0.5).collect();
        let global = Ask { tenant: "default", ..Ask::default() };
        for s in &scores {
            live.decide_score(*s, &global);
        }
        let mut i = 0;
        c.bench_function(&format!("route/live_share_decision/window_{window}"), |b| {
            b.iter(|| {
                i = (i + 1) % scores.len();
                live.decide_score(std::hint::black_box(scores[i]), &global)
            })
        });
        let tenant = Ask { tenant: "t-0123456789ab", tenant_share: Some(0.1), ..Ask::default() };
        c.bench_function(&format!("route/live_share_decision_tenant/window_{window}"), |b| {
            b.iter(|| {
                i = (i + 1) % scores.len();
                live.decide_score(std::hint::black_box(scores[i]), &tenant)
            })
        });
        if window == 128 {
            let stop = std::sync::atomic::AtomicBool::new(false);
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    let mut j = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        j = (j + 7) % scores.len();
                        live.decide_score(scores[j], &global);
                    }
                });
                c.bench_function("route/live_share_decision/window_128_contended", |b| {
                    b.iter(|| {
                        i = (i + 1) % scores.len();
                        live.decide_score(std::hint::black_box(scores[i]), &global)
                    })
                });
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            });
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
