//! The operator's view: `GET /admin/stats` (compact JSON for the dashboard, read from the same
//! counters `/metrics` renders) and `GET /dashboard` (one self-contained HTML page polling it).
//!
//! The page computes nothing it could get wrong silently: rates, percentiles and per-interval
//! series are computed here (and unit-tested in `metrics`), the page only formats and draws them.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::metrics::as_f64;
use super::{authenticate_admin, error_response, request_id, AppState};
use crate::metrics::{quantile, History};
use crate::pipeline::Gateway;
use crate::providers::dispatch::BreakerState;

/// The page, compiled into the binary: no files to ship, no CDN, works offline.
const PAGE: &str = include_str!("dashboard.html");

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The router's realised premium share for tenants without a share of their own.
fn global_share(g: &Gateway) -> Option<crate::classify::ShareStats> {
    g.router.stats().into_iter().find(|s| s.tenant == "global")
}

/// Samples the counters every [`History::PERIOD`] while the gateway lives. Holds only a weak
/// reference, so it ends with the gateway instead of keeping it alive.
pub fn spawn_sampler(gateway: &Arc<Gateway>) -> tokio::task::JoinHandle<()> {
    let gateway: Weak<Gateway> = Arc::downgrade(gateway);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(History::PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(g) = gateway.upgrade() else { break };
            let realised = global_share(&g).and_then(|s| s.realised).map(as_f64);
            let sample = g.metrics.sample(now_ms(), &g.premium_tier, realised);
            g.metrics.history.push(sample);
        }
    })
}

fn breaker_name(s: Option<BreakerState>) -> &'static str {
    match s {
        Some(BreakerState::Open) => "open",
        Some(BreakerState::HalfOpen) => "half_open",
        _ => "closed",
    }
}

/// Every configured deployment (with the tiers that list it first-hand) and every one the
/// dispatcher has called, with its calls, failures and breaker state.
fn deployments(g: &Gateway) -> Vec<Value> {
    let mut rows: BTreeMap<String, (Vec<String>, u64, u64, Option<BreakerState>)> = BTreeMap::new();
    let mut tiers: Vec<_> = g.tiers.values().collect();
    tiers.sort_by(|a, b| a.name.cmp(&b.name));
    for t in tiers {
        for d in t.own() {
            let row = rows.entry(format!("{}:{}", d.provider, d.model)).or_default();
            if !row.0.contains(&t.name) {
                row.0.push(t.name.clone());
            }
        }
    }
    for (name, s) in g.dispatch.stats() {
        let row = rows.entry(name).or_default();
        (row.1, row.2, row.3) = (s.requests, s.failures, s.state);
    }
    rows.into_iter()
        .map(|(name, (tiers, requests, failures, state))| {
            json!({
                "deployment": name,
                "tiers": tiers,
                "requests": requests,
                "failures": failures,
                "breaker": breaker_name(state),
            })
        })
        .collect()
}

/// The JSON behind the dashboard. Totals are since start; `history` holds the intervals of the
/// last minutes (see [`crate::metrics::Interval`]).
pub fn snapshot(state: &AppState) -> Value {
    let g = &state.gateway;
    let m = &g.metrics;
    let now = m.sample(now_ms(), &g.premium_tier, None);
    let ratio = |n: f64, d: f64| (d > 0.0).then(|| n / d);
    let (counts, sum) = m.request_seconds.snapshot();
    let share = global_share(g);
    json!({
        "object": "switchyard.stats",
        "time": now.t_ms,
        "uptime_seconds": state.started.elapsed().as_secs_f64(),
        "period_seconds": History::PERIOD.as_secs_f64(),
        "totals": {
            "requests": now.requests,
            "hit_exact": now.hit_exact,
            "hit_semantic": now.hit_semantic,
            "hit_coalesced": m.requests.get("hit_coalesced"),
            "miss": m.requests.get("miss"),
            "bypass": m.requests.get("bypass"),
            "errors": now.errors,
            "exact_rate": ratio(now.hit_exact, now.outcomes),
            "semantic_rate": ratio(now.hit_semantic, now.outcomes),
            "cost_usd": now.cost,
            "saved_cache_usd": now.saved_cache,
            "saved_routing_usd": now.saved_routing,
        },
        "routed": m.routed.snapshot().into_iter().collect::<BTreeMap<_, _>>(),
        "premium_share": {
            "tier": g.premium_tier,
            "target": share.as_ref().and_then(|s| s.target).map(as_f64),
            "realised": share.as_ref().and_then(|s| s.realised).map(as_f64),
            "threshold": share.as_ref().map(|s| as_f64(s.threshold)),
            "of_routed": ratio(now.routed_premium, now.routed),
            "affinity": share.as_ref().map(|s| s.affinity),
        },
        "latency": {
            "count": now.requests,
            "mean": ratio(sum, now.requests as f64),
            "p50": quantile(&counts, 0.5),
            "p95": quantile(&counts, 0.95),
            "p99": quantile(&counts, 0.99),
        },
        "deployments": deployments(g),
        "cache": g.cache.as_ref().map(|c| {
            let s = c.stats();
            json!({"entries": s.entries, "namespaces": s.namespaces})
        }),
        "history": m.history.intervals(),
    })
}

pub async fn stats(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(e) = authenticate_admin(&state, &headers) {
        return error_response(&e, &request_id(&headers));
    }
    let mut resp = axum::Json(snapshot(&state)).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The page. A refusal carries `WWW-Authenticate: Basic` so a browser asks for the admin key
/// (any user name, the key as password); the page's own requests then reuse those credentials.
pub async fn dashboard(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(e) = authenticate_admin(&state, &headers) {
        let mut resp = error_response(&e, &request_id(&headers));
        if resp.status() == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"switchyard\", charset=\"UTF-8\""),
            );
        }
        return resp;
    }
    let mut resp = axum::response::Html(PAGE).into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // everything is inline and same-origin: nothing else may load or run
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    resp
}
