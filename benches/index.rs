#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Vector index lookups at 10k / 100k / 1M entries in one namespace: exact flat scan vs HNSW,
//! with recall@1 of both against exact f32 search (the index stores f16), build speed and
//! memory per entry printed (live heap bytes counted at the allocator, and the RSS growth, which
//! adds the allocator's per-allocation overhead).
//!
//! Vectors: the real MiniLM embeddings of the QQP questions when `eval cache` has cached them
//! (eval/.cache/embeddings), otherwise clustered synthetic unit vectors; larger sizes add
//! noisy copies (cosine ≈ 0.9 to their source), which keeps the clustered shape of real data.
//! Sizes: SWITCHYARD_INDEX_SIZES (default "10000,100000,1000000").

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use switchyard::cache::{HnswParams, VectorIndex};

/// Counts live heap bytes and allocations, so memory per entry is measured exactly rather than
/// read off the RSS, which the allocator's caching and the page size blur.
struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static LIVE_ALLOCS: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Relaxed);
        LIVE_ALLOCS.fetch_add(1, Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Relaxed);
        LIVE_ALLOCS.fetch_sub(1, Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size as isize - layout.size() as isize, Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const DIM: usize = 384;

fn normalise(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
    v
}

fn gaussian(rng: &mut StdRng) -> f32 {
    // Box–Muller
    let (u, v): (f32, f32) = (rng.gen_range(1e-7..1.0), rng.gen());
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f32::consts::PI * v).cos()
}

fn base_vectors(rng: &mut StdRng) -> Vec<Vec<f32>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = switchyard::eval::embeddings::model_id(&dir.join("models/all-MiniLM-L6-v2"));
    if let Ok(store) =
        switchyard::eval::embeddings::EmbeddingStore::open(&dir.join("eval/.cache/embeddings"), &model, DIM)
    {
        if store.len() >= 10_000 {
            println!("using {} real MiniLM vectors from the eval cache", store.len());
            return store.vectors().cloned().collect();
        }
    }
    println!(
        "no cached real vectors: using clustered synthetic vectors \
         (`switchyard eval cache --pairs eval/data/qqp_pairs_dev.jsonl` caches real ones)"
    );
    let centers: Vec<Vec<f32>> = (0..2000).map(|_| normalise((0..DIM).map(|_| gaussian(rng)).collect())).collect();
    (0..20_000)
        .map(|i| normalise(centers[i % centers.len()].iter().map(|c| c + 0.08 * gaussian(rng)).collect()))
        .collect()
}

fn noisy(rng: &mut StdRng, v: &[f32], sigma: f32) -> Vec<f32> {
    normalise(v.iter().map(|x| x + sigma * gaussian(rng)).collect())
}

fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<usize>().ok()))
        .map_or(0, |pages| pages * 4096)
}

fn bench(c: &mut Criterion) {
    let sizes: Vec<usize> = std::env::var("SWITCHYARD_INDEX_SIZES")
        .unwrap_or_else(|_| "10000,100000,1000000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let mut rng = StdRng::seed_from_u64(7);
    let base = base_vectors(&mut rng);
    let params = HnswParams::default();
    let mut g = c.benchmark_group("index");
    g.sample_size(20);
    for &n in &sizes {
        // σ = 0.016 per dimension moves a unit vector to cosine ≈ 0.91 of its source
        let items: Vec<(u64, Vec<f32>)> = (0..n)
            .map(|i| {
                let b = &base[i % base.len()];
                let v = if i < base.len() { b.clone() } else { noisy(&mut rng, b, 0.016) };
                (i as u64, v)
            })
            .collect();
        let queries: Vec<Vec<f32>> = (0..300).map(|i| noisy(&mut rng, &items[(i * 7919) % n].1, 0.01)).collect();
        // the exact answer, in f32, by brute force
        let truth: Vec<u64> = queries
            .iter()
            .map(|q| {
                let dot = |v: &[f32]| v.iter().zip(q).map(|(a, b)| a * b).sum::<f32>();
                items.iter().max_by(|a, b| dot(&a.1).total_cmp(&dot(&b.1))).map_or(0, |x| x.0)
            })
            .collect();

        let before = rss_bytes();
        let (bytes_before, allocs_before) = (LIVE_BYTES.load(Relaxed), LIVE_ALLOCS.load(Relaxed));
        let started = std::time::Instant::now();
        let mut hnsw = VectorIndex::hnsw(&items, params);
        let build = started.elapsed();
        let hnsw_bytes = rss_bytes().saturating_sub(before);
        let heap_bytes = LIVE_BYTES.load(Relaxed) - bytes_before;
        let heap_allocs = LIVE_ALLOCS.load(Relaxed) - allocs_before;
        let mut flat = VectorIndex::flat(DIM);
        for (id, v) in &items {
            flat.insert(*id, v);
        }
        drop(items);
        let recall = |ix: &VectorIndex| {
            queries.iter().zip(&truth).filter(|(q, t)| ix.search(q, 1).first().map(|x| x.0) == Some(**t)).count()
        };
        let (hits, flat_hits) = (recall(&hnsw), recall(&flat));
        println!(
            "n={n}: HNSW (M {}, ef_construction {}, ef_search {}) built in {:.1} s ({:.0} inserts/s on 2 threads), \
             recall@1 vs exact f32 search {:.3} ({hits}/{}; the flat f16 scan: {flat_hits}), \
             memory per entry (graph + vector): {:.0} heap bytes in {:.1} allocations, {:.0} bytes of RSS",
            params.m,
            params.ef_construction,
            params.ef_search,
            build.as_secs_f64(),
            n as f64 / build.as_secs_f64(),
            hits as f64 / queries.len() as f64,
            queries.len(),
            heap_bytes as f64 / n as f64,
            heap_allocs as f64 / n as f64,
            hnsw_bytes as f64 / n as f64
        );
        // ef_search trades lookup time for recall without a rebuild (`cache.hnsw_ef_search`)
        for ef in [32, 128, 256] {
            hnsw.set_ef_search(ef);
            let started = std::time::Instant::now();
            let hits = recall(&hnsw);
            let per_lookup = started.elapsed() / queries.len() as u32;
            println!(
                "    ef_search {ef}: recall@1 {:.3}, {:.0} µs a lookup (mean of {})",
                hits as f64 / queries.len() as f64,
                per_lookup.as_secs_f64() * 1e6,
                queries.len()
            );
        }
        hnsw.set_ef_search(params.ef_search);
        let mut qi = 0;
        g.bench_with_input(BenchmarkId::new("hnsw", n), &n, |b, _| {
            b.iter(|| {
                qi = (qi + 1) % queries.len();
                hnsw.search(&queries[qi], 4)
            })
        });
        if n <= 100_000 {
            g.bench_with_input(BenchmarkId::new("flat", n), &n, |b, _| {
                b.iter(|| {
                    qi = (qi + 1) % queries.len();
                    flat.search(&queries[qi], 4)
                })
            });
        } else {
            let started = std::time::Instant::now();
            for q in queries.iter().take(20) {
                std::hint::black_box(flat.search(q, 4));
            }
            println!(
                "n={n}: flat scan {:.1} ms per lookup (20 lookups, not a criterion sample)",
                started.elapsed().as_secs_f64() * 1e3 / 20.0
            );
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
