//! Fuzzes the gateway's parsers and decoders (see `src/fuzz/`).
//!
//! `cargo run --example fuzz -- --target all --iters 1000000 [--seed N]`
//! `cargo run --example fuzz -- --target request --seed 1 --replay 4711` re-runs one input
//! unprotected, so a panic shows with its backtrace; `--list` names the targets, `--seeds` shows
//! what each target makes of its seeds.

use std::process::ExitCode;
use std::time::Duration;

use switchyard::fuzz::{self, Options, TrackingAlloc, TARGETS};

#[global_allocator]
static ALLOC: TrackingAlloc = TrackingAlloc;

fn main() -> ExitCode {
    let mut opts = Options { iters: 1_000_000, ..Options::default() };
    let mut which = "all".to_string();
    let mut replay: Option<u64> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_default();
        match a.as_str() {
            "--target" => which = val(),
            "--iters" => opts.iters = val().replace('_', "").parse().unwrap_or(opts.iters),
            "--seed" => opts.seed = val().parse().unwrap_or(opts.seed),
            "--time-cap-ms" => opts.time_cap = Duration::from_millis(val().parse().unwrap_or(5000)),
            "--replay" => replay = val().parse().ok(),
            "--seeds" => {
                // each target's seeds and what the target makes of them: the recipes start here
                for t in TARGETS {
                    for (i, s) in t.seeds().iter().enumerate() {
                        println!("{:<19} seed {i}: {:?}", t.name, t.check(s));
                    }
                }
                return ExitCode::SUCCESS;
            }
            "--list" => {
                for t in TARGETS {
                    println!("{:<19} {}", t.name, t.about);
                }
                return ExitCode::SUCCESS;
            }
            _ => {
                eprintln!("usage: fuzz [--target NAME|all] [--iters N] [--seed N] [--time-cap-ms MS] [--replay INDEX] [--list] [--seeds]");
                return ExitCode::from(2);
            }
        }
    }
    let targets: Vec<_> = if which == "all" {
        TARGETS.iter().collect()
    } else {
        match fuzz::target(&which) {
            Some(t) => vec![t],
            None => {
                eprintln!("no target {which:?}; --list shows them");
                return ExitCode::from(2);
            }
        }
    };
    if let Some(i) = replay {
        for t in targets {
            let input = t.input(&t.seeds(), opts.seed, i);
            println!("{} input {i} ({} bytes): {}", t.name, input.len(), fuzz::show(&input));
            println!("=> {:?}", t.check(&input));
        }
        return ExitCode::SUCCESS;
    }
    println!("seed {}, {} inputs per target, time cap {:?} per input", opts.seed, opts.iters, opts.time_cap);
    let mut failed = false;
    for t in targets {
        let report = fuzz::run(t, &opts);
        println!("{report}");
        for f in &report.failures {
            failed = true;
            println!(
                "  {:?} at input {} ({} bytes, shrunk to {}): {}\n    input: {}",
                f.kind,
                f.index,
                f.original_len,
                f.input.len(),
                f.message,
                fuzz::show(&f.input)
            );
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
