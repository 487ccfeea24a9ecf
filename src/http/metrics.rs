//! `GET /metrics` in the Prometheus text format, written by hand: a dozen series do not need a crate.

use std::fmt::Write;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::classify::ShareStats;
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

/// `switchyard_http_requests_total{route,status}` and `switchyard_http_request_duration_seconds{route}`.
fn http(out: &mut String, m: &crate::metrics::HttpMetrics) {
    let routes = m.snapshot();
    let name = "switchyard_http_requests_total";
    let _ = writeln!(out, "# HELP {name} HTTP requests by route (the matched path) and status.\n# TYPE {name} counter");
    for (route, by_status, _) in &routes {
        for (status, n) in by_status {
            let _ = writeln!(out, "{name}{{route=\"{}\",status=\"{status}\"}} {n}", escape(route));
        }
    }
    let name = "switchyard_http_request_duration_seconds";
    let _ =
        writeln!(out, "# HELP {name} HTTP request time until the response starts, by route.\n# TYPE {name} histogram");
    for (route, _, (counts, sum)) in &routes {
        let route = escape(route);
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{{route=\"{route}\",le=\"{b}\"}} {}", counts[i]);
        }
        let total = counts.last().copied().unwrap_or(0);
        let _ = writeln!(out, "{name}_bucket{{route=\"{route}\",le=\"+Inf\"}} {total}");
        let _ = writeln!(out, "{name}_sum{{route=\"{route}\"}} {sum}\n{name}_count{{route=\"{route}\"}} {total}");
    }
}

fn gauge(out: &mut String, name: &str, help: &str, v: f64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
}

/// An unlabelled counter: a count that only grows (`rate()` and `increase()` need the type; a
/// `_total` series typed gauge is refused by OpenMetrics parsers and flagged by `promtool`).
fn total(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// An f32 as the f64 with the same shortest decimal form (0.3, not 0.30000001192092896).
pub(super) fn as_f64(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

/// The live operating point per score window: `global` (every tenant without a share of its own)
/// and each tenant with one, by tenant id (a hash; keys never appear here).
fn route_shares(out: &mut String, stats: &[ShareStats]) {
    type Series = (&'static str, &'static str, &'static str, fn(&ShareStats) -> Option<f64>);
    let series: [Series; 6] = [
        ("switchyard_route_premium_share_target", "gauge", "The configured premium share (absent for a fixed router.threshold).", |s| {
            s.target.map(as_f64)
        }),
        (
            "switchyard_route_premium_share_realised",
            "gauge",
            "Premium share of the last router.share_window routed decisions (affinity and prompts too long for the cheap tier included, dialled requests excluded).",
            |s| s.realised.map(as_f64),
        ),
        ("switchyard_route_threshold", "gauge", "The router-score threshold a request at the configured share is compared with now.", |s| {
            Some(as_f64(s.threshold))
        }),
        ("switchyard_route_decisions_total", "counter", "Routing decisions at the configured operating point.", |s| {
            Some(s.decisions as f64)
        }),
        ("switchyard_route_dialled_total", "counter", "Routing decisions kept out of the share: at a per-request x-switchyard-premium-share, or for a key past its soft budget.", |s| {
            Some(s.dialled as f64)
        }),
        (
            "switchyard_route_affinity_total",
            "counter",
            "Routing decisions sent premium only because their conversation already was (inside the realised share).",
            |s| Some(s.affinity as f64),
        ),
    ];
    for (name, kind, help, value) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for s in stats {
            if let Some(v) = value(s) {
                let _ = writeln!(out, "{name}{{tenant=\"{}\"}} {v}", escape(&s.tenant));
            }
        }
    }
}

/// Per key limits and budgets (key *names*, never keys), the limits backend, the request log.
fn spend(out: &mut String, state: &AppState) {
    use std::sync::atomic::Ordering::Relaxed;
    let l = &state.limits;
    let _ = writeln!(out, "# HELP switchyard_key_refused_total Requests refused by a key's limits, by key and reason (requests, tokens, budget, count_requests).\n# TYPE switchyard_key_refused_total counter");
    for (k, reason, n) in l.refused() {
        let _ = writeln!(out, "switchyard_key_refused_total{{key=\"{}\",reason=\"{reason}\"}} {n}", escape(&k));
    }
    let spend = l.spend();
    let _ = writeln!(out, "# HELP switchyard_key_spend_usd Spend in the current UTC day / month, by key (as last counted by this replica).\n# TYPE switchyard_key_spend_usd gauge");
    for (k, s) in &spend {
        let k = escape(k);
        let _ = writeln!(out, "switchyard_key_spend_usd{{key=\"{k}\",period=\"day\"}} {}", s.day_usd);
        let _ = writeln!(out, "switchyard_key_spend_usd{{key=\"{k}\",period=\"month\"}} {}", s.month_usd);
    }
    let _ = writeln!(
        out,
        "# HELP switchyard_key_budget_usd A key's budget, by period.\n# TYPE switchyard_key_budget_usd gauge"
    );
    for (k, s) in &spend {
        for (period, b) in [("day", s.budget_day), ("month", s.budget_month)] {
            if let Some(b) = b {
                let _ = writeln!(out, "switchyard_key_budget_usd{{key=\"{}\",period=\"{period}\"}} {b}", escape(k));
            }
        }
    }
    let _ = writeln!(out, "# HELP switchyard_key_budget_state 0 under the soft level, 1 soft level reached (auto stays cheap), 2 spent (429 budget_exceeded).\n# TYPE switchyard_key_budget_state gauge");
    for (k, s) in &spend {
        let _ = writeln!(out, "switchyard_key_budget_state{{key=\"{}\"}} {}", escape(k), s.state(l.soft));
    }
    if l.shared() {
        gauge(
            out,
            "switchyard_limits_degraded",
            "1 while Redis is unreachable and this replica counts limits on its own.",
            f64::from(u8::from(l.degraded())),
        );
        total(
            out,
            "switchyard_limits_redis_errors_total",
            "Limit checks and settles that could not use Redis (counted on this replica instead).",
            l.redis_errors.load(Relaxed),
        );
    }
    if let Some(ks) = &state.key_store {
        gauge(out, "switchyard_keys", "Keys in the key file now in use.", ks.table().len() as f64);
        total(out, "switchyard_keys_reloads_total", "Key file reloads that took effect.", ks.reloads.load(Relaxed));
        total(
            out,
            "switchyard_keys_reload_failures_total",
            "Key file reloads refused (the old keys stayed).",
            ks.reload_failures.load(Relaxed),
        );
    }
    if let Some(s) = state.ledger.stats() {
        let _ = writeln!(out, "# HELP switchyard_request_log_lines_total Request log lines, by outcome (dropped: the queue was full).\n# TYPE switchyard_request_log_lines_total counter");
        for (k, v) in [
            ("written", s.written.load(Relaxed)),
            ("dropped", s.dropped.load(Relaxed)),
            ("error", s.errors.load(Relaxed)),
        ] {
            let _ = writeln!(out, "switchyard_request_log_lines_total{{result=\"{k}\"}} {v}");
        }
    }
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
    counter(
        &mut out,
        "switchyard_unpriced_requests_total",
        "Answered requests whose model has no known price (no x-switchyard-cost header), by model.",
        "model",
        &m.unpriced,
    );
    counter(
        &mut out,
        "switchyard_fallbacks_total",
        "Requests answered by another model than routed, by price direction; pricier_refused: failed because only pricier fallbacks were left.",
        "direction",
        &m.fallbacks,
    );
    spend(&mut out, &state);
    histogram(
        &mut out,
        "switchyard_request_duration_seconds",
        "Chat request time until the response starts.",
        &m.request_seconds,
    );
    histogram(&mut out, "switchyard_embed_duration_seconds", "Time waiting for a prompt embedding.", &m.embed_seconds);
    http(&mut out, &m.http);
    counter(
        &mut out,
        "switchyard_embed_skipped_total",
        "Requests served without a prompt vector (exact lookup only), by cause.",
        "cause",
        &m.embed_skipped,
    );
    route_shares(&mut out, &g.router.stats());
    let relaxed = std::sync::atomic::Ordering::Relaxed;
    total(
        &mut out,
        "switchyard_router_reloads_total",
        "Routers swapped in while serving (SIGHUP).",
        g.router.reloads.load(relaxed),
    );
    total(
        &mut out,
        "switchyard_router_reload_failures_total",
        "Router reloads refused (the file did not load; the running router stayed).",
        g.router.reload_failures.load(relaxed),
    );
    total(
        &mut out,
        "switchyard_embed_failures_total",
        "Embeddings that failed or timed out (served as misses).",
        m.embed_failures.load(relaxed),
    );
    total(
        &mut out,
        "switchyard_stream_errors_total",
        "Streams ended by an upstream failure after the first byte.",
        m.stream_errors.load(relaxed),
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
        let _ = writeln!(out, "switchyard_cache_removals_total{{reason=\"invalidated\"}} {}", s.invalidations);
    }
    if let Some(shared) = &g.shared {
        use std::sync::atomic::Ordering::Relaxed;
        let st = &shared.stats;
        let _ = writeln!(out, "# HELP switchyard_shared_tier_entries_total Entries through the shared Redis tier, by event.\n# TYPE switchyard_shared_tier_entries_total counter");
        for (event, v) in [
            ("published", st.published.load(Relaxed)),
            ("received", st.received.load(Relaxed)),
            ("dropped", st.dropped.load(Relaxed)),
            ("malformed", st.malformed.load(Relaxed)),
        ] {
            let _ = writeln!(out, "switchyard_shared_tier_entries_total{{event=\"{event}\"}} {v}");
        }
        let _ = writeln!(out, "# HELP switchyard_shared_tier_errors_total Failed Redis connections and commands.\n# TYPE switchyard_shared_tier_errors_total counter");
        let _ = writeln!(out, "switchyard_shared_tier_errors_total {}", st.errors.load(Relaxed));
    }
    let rs = state.responses.stats();
    gauge(
        &mut out,
        "switchyard_responses_stored",
        "Responses API answers held for previous_response_id.",
        rs.entries as f64,
    );
    gauge(
        &mut out,
        "switchyard_responses_stored_bytes",
        "Memory those answers take (serialised JSON).",
        rs.bytes as f64,
    );
    if let Some((mirrored, unmirrored, errors)) = rs.shared {
        let _ = writeln!(out, "# HELP switchyard_responses_redis_total Stored responses written to Redis, or not (too many writes in flight, Redis down).\n# TYPE switchyard_responses_redis_total counter");
        let _ = writeln!(out, "switchyard_responses_redis_total{{event=\"mirrored\"}} {mirrored}");
        let _ = writeln!(out, "switchyard_responses_redis_total{{event=\"unmirrored\"}} {unmirrored}");
        let _ = writeln!(out, "# HELP switchyard_responses_redis_errors_total Failed Redis commands of the stored responses.\n# TYPE switchyard_responses_redis_errors_total counter");
        let _ = writeln!(out, "switchyard_responses_redis_errors_total {errors}");
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
    let _ = writeln!(out, "# HELP switchyard_deployment_busy_total Requests that passed a deployment over because it was at its max_concurrency.\n# TYPE switchyard_deployment_busy_total counter");
    for (d, s) in &stats {
        let _ = writeln!(out, "switchyard_deployment_busy_total{{deployment=\"{}\"}} {}", escape(d), s.skipped_busy);
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
