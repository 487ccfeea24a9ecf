#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A short run of the fuzzer (`src/fuzz/`) over every target: 20k inputs each, the same
//! contract as the million-input runs (`cargo run --example fuzz`), in seconds.

use switchyard::fuzz::{self, Options, TrackingAlloc, TARGETS};

#[global_allocator]
static ALLOC: TrackingAlloc = TrackingAlloc;

fn short_run(name: &str) {
    let target = fuzz::target(name).expect("a target of that name");
    // a different seed from the long runs': CI explores new inputs rather than replaying them
    let report = fuzz::run(target, &Options { iters: 20_000, seed: 20_261_202, ..Options::default() });
    println!("{report}");
    let shown: Vec<String> = report
        .failures
        .iter()
        .map(|f| format!("{:?} at input {}: {}\n  shrunk input: {}", f.kind, f.index, f.message, fuzz::show(&f.input)))
        .collect();
    assert!(report.failures.is_empty(), "{name}: {} failure(s):\n{}", shown.len(), shown.join("\n"));
    assert_eq!(report.inputs, 20_000);
    // the recipe must reach past the parsers: a target whose inputs were all refused would be
    // fuzzing only the first line of its decoder
    assert!(report.accepted > 200, "{name}: only {} of 20000 inputs were accepted", report.accepted);
    assert!(report.rejected > 200, "{name}: only {} of 20000 inputs were rejected", report.rejected);
    assert!(report.largest_alloc > 0, "the allocation check is on");
}

#[test]
fn every_target_is_exercised_here() {
    let names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
    assert_eq!(
        names,
        [
            "request",
            "responses-request",
            "messages-request",
            "cl100k",
            "openai-response",
            "openai-sse",
            "anthropic-response",
            "anthropic-sse",
            "gemini-response",
            "gemini-sse",
            "config",
            "shared-record",
            "snapshot"
        ]
    );
}

#[test]
fn fuzz_request() {
    short_run("request");
}
#[test]
fn fuzz_responses_request() {
    short_run("responses-request");
}
#[test]
fn fuzz_messages_request() {
    short_run("messages-request");
}
#[test]
fn fuzz_cl100k() {
    short_run("cl100k");
}
#[test]
fn fuzz_openai_response() {
    short_run("openai-response");
}
#[test]
fn fuzz_openai_sse() {
    short_run("openai-sse");
}
#[test]
fn fuzz_anthropic_response() {
    short_run("anthropic-response");
}
#[test]
fn fuzz_anthropic_sse() {
    short_run("anthropic-sse");
}
#[test]
fn fuzz_gemini_response() {
    short_run("gemini-response");
}
#[test]
fn fuzz_gemini_sse() {
    short_run("gemini-sse");
}
#[test]
fn fuzz_config() {
    short_run("config");
}
#[test]
fn fuzz_shared_record() {
    short_run("shared-record");
}
#[test]
fn fuzz_snapshot() {
    short_run("snapshot");
}
