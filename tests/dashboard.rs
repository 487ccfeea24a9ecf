#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The dashboard in a real browser: headless Chromium opens `/dashboard` (with the admin key as
//! HTTP Basic credentials, as an operator's browser would) on a gateway that has served hits,
//! misses, both tiers and an error, and the numbers it renders are checked against `/metrics`.
//! A screenshot of the run is kept under `target/tmp/` (the path is printed).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use switchyard::app::Running;

const ADMIN: &str = "adm-dashboard-test-key";

/// The browser: `SWITCHYARD_CHROMIUM`, else the first of the usual names on PATH. CI installs
/// Debian's `chromium` (`.ci/run`), so a missing browser fails the test rather than skipping it.
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("SWITCHYARD_CHROMIUM") {
        return PathBuf::from(p);
    }
    for name in ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"] {
        for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!("no Chromium found: install Debian's `chromium` (.ci/run does) or set SWITCHYARD_CHROMIUM");
}

/// Runs headless Chromium on `url` with `args`; returns stdout. `--virtual-time-budget` lets the
/// page's timers run (virtual time waits while its fetches are in flight), so the page has
/// fetched `/admin/stats` and rendered before the DOM is dumped, without sleeping in real time.
/// Async: the gateway under test runs on this test's runtime and must serve the browser meanwhile.
async fn headless(url: &str, args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let run = tokio::process::Command::new(chromium())
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"])
        .args(["--hide-scrollbars", "--mute-audio", "--disable-extensions", "--virtual-time-budget=5000"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("chromium finishes within 2 minutes")
        .expect("chromium runs");
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The opening tag of the element with `id` in serialised HTML, and the text right after it.
fn element<'a>(dom: &'a str, id: &str) -> (&'a str, &'a str) {
    let at = dom.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no element #{id} in the page"));
    let start = dom[..at].rfind('<').unwrap();
    let end = at + dom[at..].find('>').unwrap();
    let text_end = end + 1 + dom[end + 1..].find('<').unwrap();
    (&dom[start..=end], &dom[end + 1..text_end])
}

fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    Some(&tag[at..at + tag[at..].find('"')?])
}

/// The raw number the page rendered for `id` (its data-value), and the text shown.
fn rendered(dom: &str, id: &str) -> (f64, String) {
    let (tag, text) = element(dom, id);
    let v = attr(tag, "data-value").unwrap_or_else(|| panic!("#{id} has no data-value: {tag}"));
    (v.parse().unwrap_or_else(|_| panic!("#{id} data-value {v:?}")), text.to_string())
}

/// `/metrics` as series name with labels → value.
async fn metrics(g: &Running) -> HashMap<String, f64> {
    let text = reqwest::get(url(g, "/metrics")).await.unwrap().text().await.unwrap();
    check_exposition(&text);
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
        .collect()
}

fn sum(m: &HashMap<String, f64>, prefix: &str) -> f64 {
    m.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, v)| v).sum()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// Serves some traffic: a miss and an exact hit on cheap, a semantic hit (paraphrase), `auto`
/// prompts the router sends cheap and premium, and a request for a model no tier serves.
async fn traffic(g: &Running) {
    let ask = |model: &str, q: &str| json!({"model": model, "messages": [{"role": "user", "content": q}]});
    for (body, cache) in [
        (ask("cheap", "How do I reset my password?"), "miss"),
        (ask("cheap", "How do I reset my password?"), "hit"),
        (ask("cheap", "How can I reset my password?"), "hit"),
        (ask("auto", "hi there"), "miss"),
        (ask("auto", "Can you explain quantum entanglement to a physicist?"), "miss"),
        (ask("auto", "Can you explain quantum entanglement to a physicist?"), "hit"),
    ] {
        let (status, h, _) = post_chat(g, &body, &[]).await;
        assert_eq!((status, header(&h, "x-switchyard-cache")), (200, cache), "{body}");
    }
    // an easy follow-up in the premium conversation: premium by affinity alone
    let follow_up = json!({"model": "auto", "messages": [
        {"role": "user", "content": "Can you explain quantum entanglement to a physicist?"},
        {"role": "assistant", "content": "Entanglement is a correlation between quantum systems ..."},
        {"role": "user", "content": "hi there"}]});
    let (status, h, _) = post_chat(g, &follow_up, &[]).await;
    assert_eq!((status, header(&h, "x-switchyard-route-affinity")), (200, "premium"));
    let (status, _, _) = post_chat(g, &ask("no-such-model", "hello"), &[]).await;
    assert!(status >= 400);
}

fn screenshot_path() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png")
}

#[tokio::test]
async fn chromium_renders_the_numbers_metrics_counts() {
    let (cheap, premium) = (MockUpstream::start("cheap").await, MockUpstream::start("premium").await);
    let extra = format!("admin_key = \"{ADMIN}\"\n[router]\npremium_share = 0.3");
    let g = gateway(config_for(&cheap, &premium, &extra)).await;
    traffic(&g).await;
    assert_eq!((cheap.calls(), premium.calls()), (2, 2));
    let m = metrics(&g).await;

    let page = format!("http://operator:{ADMIN}@{}/dashboard", g.addr);
    let dom = headless(&page, &["--dump-dom"]).await;
    let (tag, _) = element(&dom, "status");
    assert!(dom.contains("<body data-rendered=\""), "{tag}");
    let times: u32 = attr(&dom[dom.find("<body").unwrap()..], "data-rendered").unwrap().parse().unwrap();
    assert!(times >= 1, "the page never rendered the stats: {}", element(&dom, "status").1);

    // requests: every chat request, the error included (the latency histogram's count)
    let total = m["switchyard_request_duration_seconds_count"];
    assert_eq!(total, 8.0);
    assert_eq!(rendered(&dom, "total-requests"), (total, "8".to_string()));
    assert_eq!(rendered(&dom, "errors").0, sum(&m, "switchyard_errors_total"));

    // hit rates: of the requests that reached a cache outcome
    let outcomes = sum(&m, "switchyard_requests_total");
    let exact = m["switchyard_requests_total{cache=\"hit_exact\"}"];
    let semantic = m["switchyard_requests_total{cache=\"hit_semantic\"}"];
    assert_eq!((exact, semantic, outcomes), (2.0, 1.0, 7.0));
    assert_eq!(rendered(&dom, "hit-exact").0, exact);
    assert_eq!(rendered(&dom, "hit-semantic").0, semantic);
    let (rate, shown) = rendered(&dom, "exact-rate");
    assert!(close(rate, exact / outcomes) && shown == pct(exact / outcomes), "{rate} {shown}");
    let (rate, shown) = rendered(&dom, "semantic-rate");
    assert!(close(rate, semantic / outcomes) && shown == pct(semantic / outcomes), "{rate} {shown}");

    // money: spend, and what the cache and the router saved
    let cost = sum(&m, "switchyard_cost_usd_total");
    assert!(cost > 0.0);
    assert!(close(rendered(&dom, "cost").0, cost));
    let shown: f64 = rendered(&dom, "cost").1.strip_prefix('$').unwrap().parse().unwrap();
    assert!((shown - cost).abs() <= 0.05 * cost, "{shown} shown for {cost}");
    let saved_cache = m["switchyard_cost_saved_usd_total{cause=\"cache\"}"];
    let saved_routing = m["switchyard_cost_saved_usd_total{cause=\"routing\"}"];
    assert!(saved_cache > 0.0 && saved_routing > 0.0, "{saved_cache} {saved_routing}");
    assert!(close(rendered(&dom, "saved-cache").0, saved_cache));
    assert!(close(rendered(&dom, "saved-routing").0, saved_routing));

    // the router's operating point
    let target = m["switchyard_route_premium_share_target{tenant=\"global\"}"];
    let realised = m["switchyard_route_premium_share_realised{tenant=\"global\"}"];
    assert_eq!(target, 0.3);
    assert!(close(rendered(&dom, "share-target").0, target));
    assert_eq!(rendered(&dom, "share-target").1, "30.0%");
    assert!((rendered(&dom, "share-realised").0 - realised).abs() < 1e-6);
    let affinity = m["switchyard_route_affinity_total{tenant=\"global\"}"];
    assert_eq!(affinity, 1.0);
    assert_eq!(rendered(&dom, "share-affinity"), (affinity, "1".to_string()));

    // latency: the median falls in the histogram bucket /metrics puts it in
    let p50 = rendered(&dom, "p50").0;
    let bounds: Vec<(f64, f64)> = m
        .iter()
        .filter_map(|(k, v)| {
            let le = k.strip_prefix("switchyard_request_duration_seconds_bucket{le=\"")?.strip_suffix("\"}")?;
            le.parse::<f64>().ok().map(|le| (le, *v))
        })
        .collect();
    let mut bounds = bounds;
    bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let i = bounds.iter().position(|(_, c)| *c >= total / 2.0).unwrap();
    let lower = if i == 0 { 0.0 } else { bounds[i - 1].0 };
    assert!(p50 > lower && p50 <= bounds[i].0, "p50 {p50} outside ({lower}, {}]", bounds[i].0);
    assert!(rendered(&dom, "p99").0 >= p50);

    // each deployment with its calls and breaker state
    for (deployment, calls) in [("cheap:mini", 2.0), ("premium:large", 2.0)] {
        let ok = m[&format!("switchyard_upstream_attempts_total{{deployment=\"{deployment}\",result=\"ok\"}}")];
        assert_eq!(ok, calls);
        assert_eq!(m[&format!("switchyard_breaker_state{{deployment=\"{deployment}\"}}")], 0.0);
        let row = dom.find(&format!("data-deployment=\"{deployment}\"")).expect("deployment row");
        let row = &dom[dom[..row].rfind('<').unwrap()..];
        let row = &row[..row.find('>').unwrap()];
        assert_eq!(attr(row, "data-requests"), Some(calls.to_string().as_str()), "{row}");
        assert_eq!(attr(row, "data-breaker"), Some("closed"), "{row}");
    }

    // no request log on this gateway (GET /admin/requests is 404): its panel stays hidden
    let (panel, _) = element(&dom, "requests-panel");
    assert!(panel.contains(" hidden"), "{panel}");

    // a picture of the run
    let shot = screenshot_path();
    headless(&page, &[&format!("--screenshot={}", shot.display()), "--window-size=1280,1100"]).await;
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{} bytes", png.len());
    println!("dashboard screenshot: {}", shot.display());
    g.shutdown().await;
}

#[tokio::test]
async fn the_dashboard_and_its_stats_need_the_admin_key() {
    let (cheap, premium) = (MockUpstream::start("cheap").await, MockUpstream::start("premium").await);
    let extra = format!("admin_key = \"{ADMIN}\"\ngateway_keys = \"sk-gw-tenant\"");
    let g = gateway(config_for(&cheap, &premium, &extra)).await;
    let client = reqwest::Client::new();
    let get = |path: &str, auth: Option<&str>| {
        let mut rb = client.get(url(&g, path));
        if let Some(a) = auth {
            rb = rb.header("authorization", a);
        }
        rb.send()
    };
    // "operator:<key>" and "operator:wrong" in Basic form
    let basic_ok = format!("Basic {}", b64(&format!("operator:{ADMIN}")));
    let basic_bad = format!("Basic {}", b64("operator:wrong"));
    for path in ["/dashboard", "/admin/stats"] {
        for auth in [None, Some(basic_bad.as_str()), Some("Bearer sk-gw-tenant")] {
            let resp = get(path, auth).await.unwrap();
            assert_eq!(resp.status(), 401, "{path} {auth:?}");
            let challenge = resp.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_string());
            if path == "/dashboard" {
                assert!(challenge.unwrap().starts_with("Basic realm=\"switchyard\""));
            }
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["error"]["code"], "invalid_api_key", "{body}");
            assert!(!body.to_string().contains(ADMIN));
        }
    }
    let page = get("/dashboard", Some(&basic_ok)).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(page.headers()["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
    // (the SVG namespace is a name, not a fetch)
    let html = page.text().await.unwrap().replace("\"http://www.w3.org/2000/svg\"", "SVGNS");
    // self-contained: nothing fetched from anywhere but the gateway itself
    assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("src=\""), "external reference");

    let stats: Value = get("/admin/stats", Some(&format!("Bearer {ADMIN}"))).await.unwrap().json().await.unwrap();
    assert_eq!(stats["object"], "switchyard.stats");
    assert_eq!(stats["totals"]["requests"], 0);
    let names: Vec<&str> =
        stats["deployments"].as_array().unwrap().iter().map(|d| d["deployment"].as_str().unwrap()).collect();
    // configured deployments are listed before they have been called
    assert_eq!(names, ["cheap:mini", "premium:large"]);
    assert_eq!(stats["deployments"][0]["breaker"], "closed");
    assert_eq!(stats["deployments"][0]["tiers"], json!(["cheap"]));
    g.shutdown().await;
}

#[tokio::test]
async fn without_any_keys_the_dashboard_is_open() {
    let (cheap, premium) = (MockUpstream::start("cheap").await, MockUpstream::start("premium").await);
    let g = gateway(config_for(&cheap, &premium, "")).await;
    let resp = reqwest::get(url(&g, "/dashboard")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let stats: Value = reqwest::get(url(&g, "/admin/stats")).await.unwrap().json().await.unwrap();
    assert_eq!(stats["object"], "switchyard.stats");
    g.shutdown().await;
}

/// The request-log panel's tolerance of records with missing fields:
/// the real page and the real stats, served next to a request log answering 200, one record with
/// every field and one with almost none. The table shows both, "–" for what is missing.
#[tokio::test]
async fn the_request_log_panel_renders_records_tolerantly() {
    use axum::routing::get;
    let (cheap, premium) = (MockUpstream::start("cheap").await, MockUpstream::start("premium").await);
    let g = gateway(config_for(&cheap, &premium, "")).await;
    let page = reqwest::get(url(&g, "/dashboard")).await.unwrap().text().await.unwrap();
    let stats = reqwest::get(url(&g, "/admin/stats")).await.unwrap().text().await.unwrap();
    let log = json!({"object": "list", "data": [
        {"time": "2026-12-02T01:02:03Z", "request_id": "req_full", "key": "t-0123456789ab", "model": "mini",
         "tier": "cheap", "route_score": 0.12, "deployment": "cheap:mini", "attempts": 1, "cache": "hit",
         "similarity": 0.9812, "prompt_tokens": 10, "completion_tokens": 20, "cost": 0.0, "cost_saved": 0.00005,
         "latency_ms": 3.25, "status": 200},
        {"request_id": "req_sparse", "status": 502},
    ]});
    let app = axum::Router::new()
        .route("/dashboard", get(move || async move { axum::response::Html(page) }))
        .route("/admin/stats", get(move || async move { ([("content-type", "application/json")], stats) }))
        .route("/admin/requests", get(move || async move { axum::Json(log) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dom = headless(&format!("http://{addr}/dashboard"), &["--dump-dom"]).await;
    let (panel, _) = element(&dom, "requests-panel");
    assert!(!panel.contains(" hidden"), "the panel should show: {panel}");
    let table = &dom[dom.find("id=\"requests\"").unwrap()..];
    let table = &table[..table.find("</table>").unwrap()];
    let cells = |row: &str| -> Vec<String> {
        row.split("<td")
            .skip(1)
            .map(|c| {
                let c = &c[c.find('>').unwrap() + 1..];
                let c = c.strip_prefix("<span class=\"hit\">").unwrap_or(c);
                c[..c.find('<').unwrap()].to_string()
            })
            .collect()
    };
    let rows: Vec<Vec<String>> = table.split("<tr>").skip(2).map(cells).collect();
    assert_eq!(rows.len(), 2, "{table}");
    let full = &rows[0];
    assert_eq!(full[1..6], ["req_full", "mini", "cheap", "cheap:mini", "hit"], "{full:?}");
    assert_eq!(full[6..], ["0.981", "10 / 20", "$0", "$0.000050", "3.3 ms", "200"], "{full:?}");
    let sparse = &rows[1];
    assert_eq!(sparse[1], "req_sparse");
    assert_eq!(sparse[11], "502");
    assert!(sparse[..1].iter().chain(&sparse[2..11]).all(|c| c == "–"), "{sparse:?}");
    g.shutdown().await;
}

fn b64(s: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, &c)| acc | (c as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The request-log panel against the gateway's own request log: with `[log]` on, the page shows
/// the records `GET /admin/requests` returns, newest first, with their cache outcome and status.
#[tokio::test]
async fn with_the_request_log_on_the_panel_shows_the_gateways_own_records() {
    let (cheap, premium) = (MockUpstream::start("cheap").await, MockUpstream::start("premium").await);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("requests.jsonl");
    let extra = format!("admin_key = \"{ADMIN}\"\n[log]\npath = {:?}", log.display().to_string());
    let g = gateway(config_for(&cheap, &premium, &extra)).await;
    traffic(&g).await;

    let records: Value = reqwest::Client::new()
        .get(url(&g, "/admin/requests?limit=25"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let records = records["data"].as_array().unwrap().clone();
    assert_eq!(records.len(), 8, "every chat request is logged: {records:?}");

    let page = format!("http://operator:{ADMIN}@{}/dashboard", g.addr);
    let dom = headless(&page, &["--dump-dom"]).await;
    let (panel, _) = element(&dom, "requests-panel");
    assert!(!panel.contains(" hidden"), "the log is on, the panel should show: {panel}");
    let table = &dom[dom.find("id=\"requests\"").unwrap()..];
    let table = &table[..table.find("</table>").unwrap()];
    let rows: Vec<&str> = table.split("<tr>").skip(2).collect();
    assert_eq!(rows.len(), records.len(), "{table}");
    for (row, record) in rows.iter().zip(&records) {
        let id = record["request_id"].as_str().unwrap();
        assert!(row.contains(&format!(">{id}<")), "row for {id}: {row}");
        let status = record["status"].as_u64().unwrap().to_string();
        assert!(row.contains(&format!(">{status}<")), "status {status} in {row}");
    }
    // newest first: the last request sent (the unknown model) heads the table
    assert!(records[0]["status"].as_u64().unwrap() >= 400, "{:?}", records[0]);
    g.shutdown().await;
}
