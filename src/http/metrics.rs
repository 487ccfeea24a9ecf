//! `GET /metrics` in the Prometheus text format, written by hand: a dozen series do not need a crate.

use std::fmt::Write;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::metrics::{Histogram, Labeled, BUCKETS};
use crate::providers::dispatch::BreakerState;

fn counter(out: &mut String, name: &str, help: &str, label: &str, series: &Labeled) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (k, v) in series.snapshot() {
        let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {v}", escape(&k));
    }
}

fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    let (counts, sum) = h.snapshot();
    for (i, b) in BUCKETS.iter().enumerate() {
        let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {}", counts[i]);
    }
    let total = counts.last().copied().unwrap_or(0);
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}\n{name}_sum {sum}\n{name}_count {total}");
}

fn gauge(out: &mut String, name: &str, help: &str, v: f64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

pub async fn render(State(state): State<AppState>) -> Response {
    let g = &state.gateway;
    let m = &g.metrics;
    let mut out = String::with_capacity(4096);
    counter(&mut out, "switchyard_requests_total", "Chat requests by cache outcome.", "cache", &m.requests);
    counter(&mut out, "switchyard_errors_total", "Chat requests that failed, by HTTP status.", "status", &m.errors);
    counter(&mut out, "switchyard_routed_total", "Requests sent upstream, by tier.", "tier", &m.routed);
    counter(&mut out, "switchyard_cost_usd_total", "Upstream spend in USD, by model.", "model", &m.cost);
    counter(
        &mut out,
        "switchyard_cost_saved_usd_total",
        "USD not spent, by cause (cache or routing).",
        "cause",
        &m.cost_saved,
    );
    histogram(
        &mut out,
        "switchyard_request_duration_seconds",
        "Chat request time until the response starts.",
        &m.request_seconds,
    );
    histogram(&mut out, "switchyard_embed_duration_seconds", "Time waiting for a prompt embedding.", &m.embed_seconds);
    let relaxed = std::sync::atomic::Ordering::Relaxed;
    gauge(
        &mut out,
        "switchyard_embed_failures_total",
        "Embeddings that failed or timed out (served as misses).",
        m.embed_failures.load(relaxed) as f64,
    );
    gauge(
        &mut out,
        "switchyard_stream_errors_total",
        "Streams ended by an upstream failure after the first byte.",
        m.stream_errors.load(relaxed) as f64,
    );
    if let Some(cache) = &g.cache {
        let s = cache.stats();
        gauge(&mut out, "switchyard_cache_entries", "Entries in the semantic cache.", s.entries as f64);
        gauge(&mut out, "switchyard_cache_namespaces", "Namespaces with a vector index.", s.namespaces as f64);
        let _ = writeln!(out, "# HELP switchyard_cache_lookups_total Cache lookups by result.\n# TYPE switchyard_cache_lookups_total counter");
        for (k, v) in [
            ("exact_hit", s.exact_hits),
            ("semantic_hit", s.semantic_hits),
            ("miss", s.misses),
            ("guard_veto", s.guard_vetoes),
        ] {
            let _ = writeln!(out, "switchyard_cache_lookups_total{{result=\"{k}\"}} {v}");
        }
        let _ = writeln!(out, "# HELP switchyard_cache_removals_total Entries removed, by reason.\n# TYPE switchyard_cache_removals_total counter");
        let _ = writeln!(out, "switchyard_cache_removals_total{{reason=\"evicted\"}} {}", s.evictions);
        let _ = writeln!(out, "switchyard_cache_removals_total{{reason=\"expired\"}} {}", s.expirations);
    }
    if let Some(shared) = &g.shared {
        use std::sync::atomic::Ordering::Relaxed;
        let st = &shared.stats;
        let _ = writeln!(out, "# HELP switchyard_shared_tier_entries_total Entries through the shared Redis tier, by event.\n# TYPE switchyard_shared_tier_entries_total counter");
        for (event, v) in [
            ("published", st.published.load(Relaxed)),
            ("received", st.received.load(Relaxed)),
            ("dropped", st.dropped.load(Relaxed)),
        ] {
            let _ = writeln!(out, "switchyard_shared_tier_entries_total{{event=\"{event}\"}} {v}");
        }
        let _ = writeln!(out, "# HELP switchyard_shared_tier_errors_total Failed Redis connections and commands.\n# TYPE switchyard_shared_tier_errors_total counter");
        let _ = writeln!(out, "switchyard_shared_tier_errors_total {}", st.errors.load(Relaxed));
    }
    let stats = g.dispatch.stats();
    let _ = writeln!(out, "# HELP switchyard_upstream_attempts_total Upstream calls by deployment and result.\n# TYPE switchyard_upstream_attempts_total counter");
    for (d, s) in &stats {
        let d = escape(d);
        let _ = writeln!(
            out,
            "switchyard_upstream_attempts_total{{deployment=\"{d}\",result=\"ok\"}} {}",
            s.requests - s.failures
        );
        let _ =
            writeln!(out, "switchyard_upstream_attempts_total{{deployment=\"{d}\",result=\"error\"}} {}", s.failures);
    }
    let _ = writeln!(out, "# HELP switchyard_breaker_state Circuit breaker per deployment: 0 closed, 1 half-open, 2 open.\n# TYPE switchyard_breaker_state gauge");
    for (d, s) in &stats {
        let v = match s.state {
            Some(BreakerState::Open) => 2,
            Some(BreakerState::HalfOpen) => 1,
            _ => 0,
        };
        let _ = writeln!(out, "switchyard_breaker_state{{deployment=\"{}\"}} {v}", escape(d));
    }
    let mut resp = out.into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    resp
}
