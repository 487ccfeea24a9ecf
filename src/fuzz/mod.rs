//! A fuzzer for everything that reads untrusted bytes: the chat request parser and its
//! validation, the three providers' request translators, their responses, their SSE streams, the
//! config loader, the shared tier's Redis stream records and the snapshot reader.
//!
//! Why not cargo-fuzz: libFuzzer needs a nightly toolchain, and no coverage-guided fuzzer on
//! crates.io works on stable without one. So this is generation plus structure-aware mutation of
//! real seeds (the provider fixtures in `tests/fixtures`, the wire formats from the providers'
//! docs, the config sketch), mixed with byte-level mutation and plain random bytes, all from one
//! deterministic seed: input `i` of a run is a pure function of `(seed, i)`, so any finding is
//! replayed with `--replay i`.
//!
//! For every input the harness checks the contract, not just "no crash":
//! - no panic (caught with `catch_unwind`; the failing input is shrunk and reported);
//! - no hang (a watchdog thread aborts the run, naming the input, past a per-input time cap);
//! - no unbounded allocation (with [`TrackingAlloc`] installed: the largest single allocation an
//!   input causes must stay under a cap);
//! - every rejection on the request path is an OpenAI-shaped error with a 4xx status, and every
//!   upstream failure becomes an OpenAI-shaped 4xx/5xx.
//!
//! Run it with `cargo run --example fuzz -- --target all --iters 1000000` (add `--release` for
//! speed; the README's figures are from the dev profile, whose dependencies are optimised);
//! `cargo test --test fuzz` runs 20k inputs per target.

mod mutate;
mod targets;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;

pub use targets::TARGETS;

/// What a target did with an input that met the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Parsed and processed all the way through.
    Accepted,
    /// Refused, with an error of the right shape.
    Rejected,
}

/// `Err` is a contract violation (not a panic): a rejection of the wrong shape or status.
pub type Verdict = Result<Outcome, String>;

/// One fuzz target: where its seeds come from, how inputs are made, what must hold.
pub struct Target {
    pub name: &'static str,
    pub about: &'static str,
    seeds: fn() -> Vec<Vec<u8>>,
    generate: fn(&mut StdRng, &[Vec<u8>]) -> Vec<u8>,
    check: fn(&[u8]) -> Verdict,
}

impl Target {
    /// The input a run with `seed` feeds as number `index`.
    pub fn input(&self, seeds: &[Vec<u8>], seed: u64, index: u64) -> Vec<u8> {
        let mut rng = StdRng::seed_from_u64(mix(seed, index));
        let mut input = (self.generate)(&mut rng, seeds);
        input.truncate(MAX_INPUT);
        input
    }

    pub fn seeds(&self) -> Vec<Vec<u8>> {
        (self.seeds)()
    }

    /// Runs one input without any protection (for `--replay`: the panic and its backtrace show).
    pub fn check(&self, input: &[u8]) -> Verdict {
        (self.check)(input)
    }
}

/// Inputs are cut to this many bytes: big enough for deep nesting and long fields, small enough
/// to keep a million inputs in seconds.
pub const MAX_INPUT: usize = 64 * 1024;

fn mix(seed: u64, index: u64) -> u64 {
    // splitmix64 of the pair: neighbouring indices get unrelated streams
    let mut z = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[derive(Debug, Clone)]
pub struct Options {
    pub iters: u64,
    pub seed: u64,
    /// One input taking longer than this is a hang: the run stops and names it.
    pub time_cap: Duration,
    /// One allocation larger than this, caused by one input of at most [`MAX_INPUT`] bytes, is
    /// unbounded allocation (only checked with [`TrackingAlloc`] installed).
    pub alloc_cap: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options { iters: 20_000, seed: 1, time_cap: Duration::from_secs(5), alloc_cap: 64 << 20 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureKind {
    Panic,
    Violation,
    Allocation,
}

#[derive(Debug, Clone)]
pub struct Failure {
    pub index: u64,
    pub kind: FailureKind,
    pub message: String,
    /// The input shrunk while it still fails the same way.
    pub input: Vec<u8>,
    pub original_len: usize,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub target: &'static str,
    pub inputs: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub elapsed: Duration,
    pub slowest: Duration,
    /// The largest single allocation any input caused (0 when not tracked).
    pub largest_alloc: usize,
    pub failures: Vec<Failure>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        write!(
            f,
            "{:<19} {:>9} inputs ({:>9} accepted, {:>9} rejected) in {:>7.1} s ({:>6.0}/s); slowest {:.1} ms; largest allocation {}; failures {}",
            self.target,
            self.inputs,
            self.accepted,
            self.rejected,
            secs,
            self.inputs as f64 / secs.max(1e-9),
            self.slowest.as_secs_f64() * 1e3,
            if self.largest_alloc == 0 { "untracked".to_string() } else { format!("{:.1} KiB", self.largest_alloc as f64 / 1024.0) },
            self.failures.len()
        )
    }
}

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

/// The system allocator, remembering the largest single request made on each thread. Install it
/// as `#[global_allocator]` in the binary that fuzzes to turn on the allocation check.
pub struct TrackingAlloc;

fn note(size: usize) {
    let _ = LARGEST.try_with(|l| {
        if size > l.get() {
            l.set(size);
        }
    });
}

unsafe impl GlobalAlloc for TrackingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

fn take_largest() -> usize {
    LARGEST.try_with(|l| l.replace(0)).unwrap_or(0)
}

/// Panics are caught and reported by the harness; the default hook would print each one.
fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_FUZZ.with(Cell::get) {
                default(info);
            }
        }));
    });
}

thread_local! {
    static IN_FUZZ: Cell<bool> = const { Cell::new(false) };
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".into()
    }
}

/// One protected run of `check`: a panic, a violation or too big an allocation is a failure.
fn probe(
    check: fn(&[u8]) -> Verdict,
    input: &[u8],
    alloc_cap: usize,
) -> (Result<Outcome, (FailureKind, String)>, usize) {
    take_largest();
    IN_FUZZ.with(|f| f.set(true));
    let r = catch_unwind(AssertUnwindSafe(|| check(input)));
    IN_FUZZ.with(|f| f.set(false));
    let largest = take_largest();
    let r = match r {
        Err(p) => Err((FailureKind::Panic, panic_message(p.as_ref()))),
        Ok(Err(v)) => Err((FailureKind::Violation, v)),
        Ok(Ok(_)) if largest > alloc_cap => Err((
            FailureKind::Allocation,
            format!("one allocation of {largest} bytes for an input of {} bytes", input.len()),
        )),
        Ok(Ok(o)) => Ok(o),
    };
    (r, largest)
}

/// Greedy delta debugging: drop chunks (halving their size) while the input still fails the
/// same way. Bounded, so a slow target cannot stall the report.
fn shrink(check: fn(&[u8]) -> Verdict, input: &[u8], kind: &FailureKind, alloc_cap: usize) -> Vec<u8> {
    let mut cur = input.to_vec();
    let mut chunk = (cur.len() / 2).max(1);
    let mut tries = 0;
    while tries < 4000 {
        let mut i = 0;
        let mut progressed = false;
        while i < cur.len() && tries < 4000 {
            let end = (i + chunk).min(cur.len());
            let candidate: Vec<u8> = cur[..i].iter().chain(&cur[end..]).copied().collect();
            tries += 1;
            if matches!(probe(check, &candidate, alloc_cap).0, Err((ref k, _)) if k == kind) {
                cur = candidate;
                progressed = true;
            } else {
                i += chunk;
            }
        }
        if !progressed {
            if chunk == 1 {
                break;
            }
            chunk /= 2;
        }
    }
    cur
}

/// Runs `opts.iters` inputs through `target`. A hang ends the process (after printing which
/// input, and writing it to the temp dir): a stuck thread cannot be stopped from the outside.
pub fn run(target: &Target, opts: &Options) -> Report {
    quiet_panics();
    let seeds = target.seeds();
    let busy_since = Arc::new(AtomicU64::new(0)); // nanos since `base` + 1; 0 = idle
    let current = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let base = Instant::now();
    let watchdog = {
        let (busy_since, current, done) = (busy_since.clone(), current.clone(), done.clone());
        let (cap, name, seed, seeds) = (opts.time_cap, target.name, opts.seed, seeds.clone());
        let generate = target.generate;
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                let since = busy_since.load(Ordering::Relaxed);
                if since == 0 {
                    continue;
                }
                let running = base.elapsed().saturating_sub(Duration::from_nanos(since - 1));
                if running > cap {
                    let i = current.load(Ordering::Relaxed);
                    let mut rng = StdRng::seed_from_u64(mix(seed, i));
                    let mut input = generate(&mut rng, &seeds);
                    input.truncate(MAX_INPUT);
                    let path = std::env::temp_dir().join(format!("switchyard-fuzz-hang-{name}-{seed}-{i}.bin"));
                    let _ = std::fs::write(&path, &input);
                    eprintln!(
                        "fuzz {name}: input {i} (seed {seed}) still running after {running:?}: a hang. Input ({} bytes) written to {}; replay with --target {name} --seed {seed} --replay {i}",
                        input.len(),
                        path.display()
                    );
                    std::process::exit(3);
                }
            }
        })
    };
    let mut report = Report {
        target: target.name,
        inputs: 0,
        accepted: 0,
        rejected: 0,
        elapsed: Duration::ZERO,
        slowest: Duration::ZERO,
        largest_alloc: 0,
        failures: Vec::new(),
    };
    let started = Instant::now();
    for i in 0..opts.iters {
        let input = target.input(&seeds, opts.seed, i);
        current.store(i, Ordering::Relaxed);
        let t0 = Instant::now();
        busy_since.store(base.elapsed().as_nanos() as u64 + 1, Ordering::Relaxed);
        let (r, largest) = probe(target.check, &input, opts.alloc_cap);
        busy_since.store(0, Ordering::Relaxed);
        report.slowest = report.slowest.max(t0.elapsed());
        report.largest_alloc = report.largest_alloc.max(largest);
        report.inputs += 1;
        match r {
            Ok(Outcome::Accepted) => report.accepted += 1,
            Ok(Outcome::Rejected) => report.rejected += 1,
            Err((kind, message)) => {
                // one shrunk example per distinct message is enough to act on
                if report.failures.len() < 20 && !report.failures.iter().any(|f| f.message == message) {
                    let small = shrink(target.check, &input, &kind, opts.alloc_cap);
                    report.failures.push(Failure { index: i, kind, message, input: small, original_len: input.len() });
                }
            }
        }
    }
    report.elapsed = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let _ = watchdog.join();
    report
}

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// An input as text for a report: printable ASCII as is, everything else escaped.
pub fn show(input: &[u8]) -> String {
    input.escape_ascii().to_string()
}
