#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Spend control end to end: keys from a key file, limits and budgets counted in a real
//! `redis-server` across two replicas (in this process, and as two real `switchyard` processes),
//! the soft budget level, SIGHUP reload of the real binary,
//! refused pricier fallbacks, and the request log (no keys in it; a full queue never waits).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::redis_server::{free_port, start_redis_on};
use common::*;
use serde_json::{json, Value};
use switchyard::app::Running;
use switchyard::config::Config;
use switchyard::keys::{new_key, NewKey};

/// Limits count per UTC minute: a test that counts requests starts early in a minute, so its
/// requests do not straddle a window boundary.
async fn early_in_a_minute() {
    let s = switchyard::cache::unix_now() % 60;
    if s > 45 {
        tokio::time::sleep(Duration::from_secs(61 - s)).await;
    }
}

/// A key file in `dir` with these entries; returns (path, keys in entry order).
fn key_file(dir: &Path, entries: &[(&str, &str)]) -> (PathBuf, Vec<String>) {
    let mut text = String::new();
    let mut keys = Vec::new();
    for (name, extra) in entries {
        let (key, toml) = new_key(&NewKey { name: (*name).into(), ..NewKey::default() });
        text.push_str(&toml);
        text.push_str(extra);
        text.push('\n');
        keys.push(key);
    }
    let path = dir.join("keys.toml");
    std::fs::write(&path, text).unwrap();
    (path, keys)
}

/// The cheap/premium mocks with `server` lines, `tiers` and extra tables.
fn config(cheap: &MockUpstream, premium: &MockUpstream, server: &str, tiers: &str, tables: &str) -> Config {
    let text = format!(
        r#"
        [server]
        listen = "127.0.0.1:0"
        admin_key = "admin-secret-0123"
        {server}
        [dispatch]
        backoff_base = "10ms"
        backoff_max = "50ms"
        [tiers]
        {tiers}
        [providers.{c}]
        kind = "openai"
        base_url = "{cu}"
        api_key = "sk-cheap-secret-key"
        [providers.{p}]
        kind = "openai"
        base_url = "{pu}"
        api_key = "sk-premium-secret-key"
        [prices]
        mini = {{ input = 1.0, output = 2.0 }}
        large = {{ input = 10.0, output = 20.0 }}
        {tables}
        "#,
        c = cheap.name,
        p = premium.name,
        cu = cheap.base_url(),
        pu = premium.base_url(),
    );
    Config::parse(&text).unwrap_or_else(|e| panic!("test config: {e}\n{text}"))
}

const TIERS: &str = "cheap = [\"cheap:mini\"]\npremium = [\"premium:large\"]";

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

fn ask(model: &str, q: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": q}]})
}

async fn chat(g: &Running, key: &str, body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
    post_chat(g, body, &[("authorization", &bearer(key))]).await
}

async fn metrics(g: &Running) -> String {
    let text = reqwest::get(url(g, "/metrics")).await.unwrap().text().await.unwrap();
    check_exposition(&text);
    text
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(&format!("{series} "))).and_then(|v| v.parse().ok()).unwrap_or(0.0)
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn limits_and_budgets_hold_when_requests_alternate_between_replicas() {
    let r = start_redis_on(free_port()).await;
    let dir = tempfile::tempdir().unwrap();
    // mini answers cost $0.00005 each: a $0.00012 day budget pays for three, refuses the fourth
    let (path, keys) =
        key_file(dir.path(), &[("limited", "rpm = 4\ntpm = 100000"), ("budget", "budget_day = 0.00012"), ("free", "")]);
    let server = format!("keys_file = {:?}", path.display().to_string());
    let tables = format!("[cache]\nbackend = \"redis://127.0.0.1:{}\"", r.port);
    let (c1, p1) = (MockUpstream::start("cheap").await, MockUpstream::start("premium").await);
    let (c2, p2) = (MockUpstream::start("cheap").await, MockUpstream::start("premium").await);
    let a = gateway(config(&c1, &p1, &server, TIERS, &tables)).await;
    let b = gateway(config(&c2, &p2, &server, TIERS, &tables)).await;
    let (limited, budget, free) = (&keys[0], &keys[1], &keys[2]);
    early_in_a_minute().await;

    for i in 0..4 {
        if i == 2 {
            // Redis forgets the scripts (a restart, a failover, SCRIPT FLUSH): the replicas, which
            // send them by SHA-1, load them again and count on in Redis, not locally
            let mut c = redis::Client::open(format!("redis://127.0.0.1:{}", r.port))
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            let () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut c).await.unwrap();
        }
        let g = if i % 2 == 0 { &a } else { &b };
        let (s, h, body) = chat(g, limited, &ask("cheap", &format!("limited question number {i}"))).await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(header(&h, "x-ratelimit-limit-requests"), "4");
        assert_eq!(header(&h, "x-ratelimit-remaining-requests"), (3 - i).to_string());
        assert_eq!(header(&h, "x-ratelimit-limit-tokens"), "100000");
        assert!(header(&h, "x-ratelimit-reset-requests").ends_with('s'));
    }
    // each replica saw two requests; together they are the key's four
    for g in [&a, &b] {
        let (s, h, body) = chat(g, limited, &ask("cheap", "one more limited question")).await;
        assert_eq!(s, 429, "{body}");
        assert_eq!(code(&body), "rate_limit_exceeded");
        assert_eq!(body["error"]["type"], "rate_limit_error");
        assert_eq!(header(&h, "x-ratelimit-remaining-requests"), "0");
        let retry: u64 = header(&h, "retry-after").parse().unwrap();
        assert!((1..=60).contains(&retry));
    }
    // another key is served meanwhile, on both replicas, with no rate headers (it has no limits)
    for (i, g) in [&a, &b].into_iter().enumerate() {
        let (s, h, _) = chat(g, free, &ask("cheap", &format!("question {i} from the free key"))).await;
        assert_eq!(s, 200);
        assert_eq!(header(&h, "x-ratelimit-limit-requests"), "");
    }

    for i in 0..3 {
        let g = if i % 2 == 0 { &b } else { &a };
        let (s, h, body) = chat(g, budget, &ask("cheap", &format!("budget question number {i}"))).await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(header(&h, "x-switchyard-cost").parse::<f64>().unwrap(), 0.00005);
    }
    for g in [&a, &b] {
        let (s, h, body) = chat(g, budget, &ask("cheap", "budget question past the budget")).await;
        assert_eq!(s, 429, "{body}");
        assert_eq!(code(&body), "budget_exceeded");
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains("resets at") && msg.ends_with("T00:00:00Z"), "{msg}");
        assert!(header(&h, "retry-after").parse::<u64>().unwrap() <= 86_400);
    }
    let m = metrics(&a).await;
    assert_eq!(metric(&m, "switchyard_key_budget_state{key=\"budget\"}"), 2.0, "{m}");
    assert!(metric(&m, "switchyard_key_refused_total{key=\"limited\",reason=\"requests\"}") >= 1.0);
    assert_eq!(metric(&m, "switchyard_limits_degraded"), 0.0);
    assert_eq!(c1.calls() + c2.calls(), 4 + 2 + 3, "no refused request reached an upstream");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn redis_down_means_local_limits_then_recovery() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let (path, keys) = key_file(dir.path(), &[("limited", "rpm = 2")]);
    let server = format!("keys_file = {:?}", path.display().to_string());
    let tables = format!("[cache]\nbackend = \"redis://127.0.0.1:{port}\"");
    let (c, p) = (MockUpstream::start("cheap").await, MockUpstream::start("premium").await);
    let g = gateway(config(&c, &p, &server, TIERS, &tables)).await;
    early_in_a_minute().await;
    // Redis is down: this replica still enforces the limit on its own
    for i in 0..2 {
        let (s, _, body) = chat(&g, &keys[0], &ask("cheap", &format!("while redis is down {i}"))).await;
        assert_eq!(s, 200, "{body}");
    }
    let (s, _, body) = chat(&g, &keys[0], &ask("cheap", "third while redis is down")).await;
    assert_eq!((s, code(&body)), (429, "rate_limit_exceeded"));
    assert_eq!(metric(&metrics(&g).await, "switchyard_limits_degraded"), 1.0);
    // Redis comes up: the replica goes back to it (fresh counters there) within its retry interval
    let _r = start_redis_on(port).await;
    let mut recovered = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (s, _, _) = chat(&g, &keys[0], &ask("cheap", "after redis is back")).await;
        if s == 200 {
            recovered = true;
            break;
        }
    }
    assert!(recovered, "limits never went back to Redis");
    assert_eq!(metric(&metrics(&g).await, "switchyard_limits_degraded"), 0.0);
    g.shutdown().await;
}

#[tokio::test]
async fn the_soft_budget_level_turns_premium_off_for_that_key_only() {
    let dir = tempfile::tempdir().unwrap();
    // a premium answer costs $0.0005: 83% of a $0.0006 budget, past the 80% soft level
    let (path, keys) = key_file(dir.path(), &[("thrifty", "budget_day = 0.0006"), ("rich", "")]);
    let server = format!("keys_file = {:?}", path.display().to_string());
    // every `auto` request scores premium
    let tables = "[router]\nthreshold = -1000000.0";
    let (c, p) = (MockUpstream::start("cheap").await, MockUpstream::start("premium").await);
    let g = gateway(config(&c, &p, &server, TIERS, tables)).await;
    let (thrifty, rich) = (&keys[0], &keys[1]);

    let (s, h, _) = chat(&g, thrifty, &ask("auto", "Prove that there are infinitely many primes.")).await;
    assert_eq!((s, header(&h, "x-switchyard-tier")), (200, "premium"));
    let m = metrics(&g).await;
    assert_eq!(metric(&m, "switchyard_key_budget_state{key=\"thrifty\"}"), 1.0, "{m}");
    for q in ["Explain the Riemann hypothesis in depth.", "Derive the Black-Scholes equation."] {
        let (s, h, body) = chat(&g, thrifty, &ask("auto", q)).await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(header(&h, "x-switchyard-tier"), "cheap", "past the soft level, auto stays cheap");
        let (s, h, _) = chat(&g, rich, &ask("auto", q)).await;
        assert_eq!((s, header(&h, "x-switchyard-tier")), (200, "premium"), "another key is not affected");
    }
    // $0.0005 + 2 × $0.00005 = the whole budget: refused now
    let (s, _, body) = chat(&g, thrifty, &ask("auto", "One question too many.")).await;
    assert_eq!((s, code(&body)), (429, "budget_exceeded"));
    assert_eq!(p.calls(), 1 + 2);
    // a model outside a key's list is refused
    std::fs::write(
        &path,
        std::fs::read_to_string(&path).unwrap().replace("name = \"rich\"", "name = \"rich\"\nmodels = [\"cheap\"]"),
    )
    .unwrap();
    let mut refused = false;
    for _ in 0..50 {
        let (s, _, body) = chat(&g, rich, &ask("premium", "Is this allowed?")).await;
        if s == 403 {
            assert_eq!(code(&body), "model_not_allowed");
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "the changed key file was not picked up");
    g.shutdown().await;
}

#[tokio::test]
async fn a_pricier_fallback_is_refused_unless_the_tier_allows_it() {
    let (c, p) = (MockUpstream::start("cheap").await, MockUpstream::start("premium").await);
    let tiers =
        "cheap = { deployments = [\"cheap:mini\"], fallback_tier = \"premium\" }\npremium = [\"premium:large\"]";
    let g = gateway(config(&c, &p, "", tiers, "[cache]\nenabled = false")).await;
    c.then(Behavior::Status(500, None)).then(Behavior::Status(500, None));
    let (s, _, body) = post_chat(&g, &ask("cheap", "q1"), &[]).await;
    assert_eq!(s, 502, "{body}");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("fallback to pricier premium:large refused") && msg.contains("tiers.cheap.allow_pricier_fallback"),
        "{msg}"
    );
    assert_eq!(p.calls(), 0, "the pricier deployment was never called");
    assert_eq!(metric(&metrics(&g).await, "switchyard_fallbacks_total{direction=\"pricier_refused\"}"), 1.0);
    // a prompt too long for the cheap model is the client's to shorten: OpenAI's 400 says so,
    // whatever fallback the tier holds back
    c.context_window(40);
    let (s, _, body) = post_chat(&g, &ask("cheap", &"a long question ".repeat(4)), &[]).await;
    assert_eq!((s, body["error"]["code"].as_str()), (400, Some("context_length_exceeded")), "{body}");
    assert_eq!(p.calls(), 0);
    c.context_window(0);
    g.shutdown().await;

    let tiers = "cheap = { deployments = [\"cheap:mini\"], fallback_tier = \"premium\", allow_pricier_fallback = true }\npremium = [\"premium:large\"]";
    let g = gateway(config(&c, &p, "", tiers, "[cache]\nenabled = false")).await;
    c.then(Behavior::Status(500, None)).then(Behavior::Status(500, None));
    let (s, h, body) = post_chat(&g, &ask("cheap", "q2"), &[]).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(header(&h, "x-switchyard-model"), "large");
    assert_eq!(metric(&metrics(&g).await, "switchyard_fallbacks_total{direction=\"pricier\"}"), 1.0);
    // a fallback to a cheaper model is always allowed, and counted as such
    let tiers = "premium = { deployments = [\"premium:large\"], fallback_tier = \"cheap\" }\ncheap = [\"cheap:mini\"]";
    g.shutdown().await;
    let g = gateway(config(&c, &p, "", tiers, "[cache]\nenabled = false")).await;
    p.then(Behavior::Status(500, None)).then(Behavior::Status(500, None));
    let (s, h, _) = post_chat(&g, &ask("premium", "q3"), &[]).await;
    assert_eq!((s, header(&h, "x-switchyard-model")), (200, "mini"));
    assert_eq!(metric(&metrics(&g).await, "switchyard_fallbacks_total{direction=\"cheaper\"}"), 1.0);
    g.shutdown().await;
}

#[tokio::test]
async fn an_unpriced_model_gets_no_cost_header_and_is_counted() {
    let (c, p) = (MockUpstream::start("cheap").await, MockUpstream::start("premium").await);
    let tiers = "cheap = [\"cheap:mystery-model\"]\npremium = [\"premium:large\"]";
    let g = gateway(config(&c, &p, "", tiers, "[cache]\nenabled = false")).await;
    let (s, h, _) = post_chat(&g, &ask("cheap", "what does this cost?"), &[]).await;
    assert_eq!(s, 200);
    assert!(h.get("x-switchyard-cost").is_none(), "unknown price: no header rather than a wrong one");
    assert_eq!(metric(&metrics(&g).await, "switchyard_unpriced_requests_total{model=\"mystery-model\"}"), 1.0);
    // and the catalog prices a model the config does not list
    let tiers = "cheap = [\"cheap:gpt-4o-mini\"]\npremium = [\"premium:large\"]";
    g.shutdown().await;
    let g = gateway(config(&c, &p, "", tiers, "[cache]\nenabled = false")).await;
    let (_, h, _) = post_chat(&g, &ask("cheap", "what does this cost?"), &[]).await;
    // 10 prompt tokens at $0.15/M + 20 completion tokens at $0.60/M
    assert!((header(&h, "x-switchyard-cost").parse::<f64>().unwrap() - 0.0000135).abs() < 1e-12);
    g.shutdown().await;
}

#[tokio::test]
async fn the_log_never_contains_a_key_and_the_admin_endpoints_read_it() {
    let dir = tempfile::tempdir().unwrap();
    let (path, keys) = key_file(dir.path(), &[("team-a", "rpm = 100")]);
    let log = dir.path().join("var/requests.jsonl");
    let server = format!("keys_file = {:?}\ngateway_keys = \"gw-plain-key-0123\"", path.display().to_string());
    let tables = format!("[log]\npath = {:?}\ncontent = \"store\"", log.display().to_string());
    let (c, p) = (MockUpstream::start("cheap").await, MockUpstream::start("premium").await);
    let g = gateway(config(&c, &p, &server, TIERS, &tables)).await;
    let team = &keys[0];

    let (s, h, _) = chat(&g, team, &ask("cheap", "What is the capital of France?")).await;
    assert_eq!((s, header(&h, "x-ratelimit-limit-requests")), (200, "100"));
    let (s, _, _) = chat(&g, team, &ask("cheap", "What is the capital of France?")).await; // a hit
    assert_eq!(s, 200);
    // a stream: the rate headers are on it too, and its tokens are logged at its end
    let resp = reqwest::Client::new()
        .post(url(&g, "/v1/chat/completions"))
        .header("authorization", bearer(team))
        .json(&json!({"model": "cheap", "stream": true, "messages": [{"role": "user", "content": "Stream me a haiku about rivers"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-ratelimit-limit-requests"], "100");
    let text = resp.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"));
    let (s, _, _) = chat(&g, "gw-plain-key-0123", &ask("cheap", "Hello from the gateway_keys key")).await;
    assert_eq!(s, 200);
    let (s, _, _) = chat(&g, "sk-bogus-key-0123", &ask("cheap", "who am I?")).await;
    assert_eq!(s, 401);

    let mut lines = Vec::new();
    for _ in 0..100 {
        lines = std::fs::read_to_string(&log).unwrap_or_default().lines().map(str::to_string).collect();
        if lines.len() >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(lines.len(), 5, "{lines:?}");
    let all = lines.join("\n");
    for secret in [team.as_str(), "gw-plain-key-0123", "sk-bogus-key-0123", "sk-cheap-secret-key", "admin-secret-0123"]
    {
        assert!(!all.contains(secret), "a key reached the request log");
    }
    let recs: Vec<Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let by_prompt =
        |p: &str| recs.iter().filter(|r| r["prompt"].as_str().is_some_and(|x| x.contains(p))).collect::<Vec<_>>();
    let france = by_prompt("France");
    assert_eq!(france.len(), 2);
    assert_eq!((france[0]["key"].as_str(), france[0]["cache"].as_str()), (Some("team-a"), Some("miss")));
    assert_eq!(france[0]["cost"], 0.00005);
    assert_eq!(france[0]["deployment"], "cheap:mini");
    assert_eq!((france[0]["prompt_tokens"].as_u64(), france[0]["completion_tokens"].as_u64()), (Some(10), Some(20)));
    assert!(france[0]["answer"].as_str().unwrap().contains("capital of France"));
    assert_eq!((france[1]["cache"].as_str(), france[1]["cost"].as_f64()), (Some("hit"), Some(0.0)));
    assert_eq!(france[1]["cost_saved"], 0.00005);
    let stream = by_prompt("haiku");
    assert_eq!((stream[0]["status"].as_u64(), stream[0]["completion_tokens"].as_u64()), (Some(200), Some(20)));
    assert!(by_prompt("gateway_keys")[0]["key"].as_str().unwrap().starts_with("t-"));
    let refused = recs.iter().find(|r| r["status"] == 401).unwrap();
    assert_eq!((refused["key"].as_str(), refused["error"].as_str()), (Some("-"), Some("invalid_api_key")));

    // the admin endpoints: the same records newest first, and live usage totals
    let admin = reqwest::Client::new();
    let get = |path: &str, key: Option<&str>| {
        let mut rb = admin.get(url(&g, path));
        if let Some(k) = key {
            rb = rb.header("authorization", bearer(k));
        }
        rb.send()
    };
    assert_eq!(get("/admin/requests", Some(team)).await.unwrap().status(), 401, "a gateway key is not the admin key");
    let recent: Value = get("/admin/requests?limit=2", Some("admin-secret-0123")).await.unwrap().json().await.unwrap();
    assert_eq!(recent["object"], "list");
    let data = recent["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[0], recs[4]);
    assert_eq!(data[1], recs[3]);
    let bad = get("/admin/requests?limit=abc", Some("admin-secret-0123")).await.unwrap();
    assert_eq!(bad.status(), 400);
    let usage: Value = get("/admin/usage?by=key", Some("admin-secret-0123")).await.unwrap().json().await.unwrap();
    let team_row = usage["data"].as_array().unwrap().iter().find(|r| r["key"] == "team-a").unwrap().clone();
    assert_eq!((team_row["requests"].as_u64(), team_row["cache_hits"].as_u64()), (Some(3), Some(1)));
    assert_eq!(team_row["cost"], 0.0001);
    assert!(!metrics(&g).await.contains(team.as_str()));

    // `switchyard usage` over the file gives the same totals
    let out = Command::new(common::binary::BIN).args(["usage", "--by", "key", "--json"]).arg(&log).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let offline: Value = serde_json::from_slice(&out.stdout).unwrap();
    let offline_team = offline["data"].as_array().unwrap().iter().find(|r| r["key"] == "team-a").unwrap().clone();
    assert_eq!(offline_team, team_row);
    g.shutdown().await;

    // with the log off, /admin/requests is a 404 in OpenAI's error shape
    let g = gateway(config(&c, &p, "", TIERS, "")).await;
    let resp = reqwest::Client::new()
        .get(url(&g, "/admin/requests"))
        .header("authorization", bearer("admin-secret-0123"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.json::<Value>().await.unwrap()["error"]["message"].as_str().unwrap().contains("request log is off"));
    g.shutdown().await;
}

#[tokio::test]
async fn a_full_log_queue_never_delays_a_request() {
    let dir = tempfile::tempdir().unwrap();
    // a FIFO nobody reads: the writer thread blocks opening it, forever
    let fifo = dir.path().join("requests.jsonl");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let tables = format!("[log]\npath = {:?}\nqueue = 1\n[cache]\nenabled = false", fifo.display().to_string());
    let (c, p) = (MockUpstream::start("cheap").await, MockUpstream::start("premium").await);
    let g = gateway(config(&c, &p, "", TIERS, &tables)).await;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    for i in 0..20 {
        let resp = client.post(url(&g, "/v1/chat/completions")).json(&ask("cheap", &format!("q{i}"))).send().await;
        assert_eq!(resp.expect("a request waited on the log").status(), 200);
    }
    let m = metrics(&g).await;
    let dropped = metric(&m, "switchyard_request_log_lines_total{result=\"dropped\"}");
    // one line is held by the blocked writer, one waits in the queue; the rest were dropped
    assert!(dropped >= 18.0, "{m}");
    assert_eq!(metric(&m, "switchyard_request_log_lines_total{result=\"written\"}"), 0.0);
    g.shutdown().await;
}

/// The real binary, SIGHUP: a new key works and the removed one stops, with no restart; a bad
/// file is refused and the keys in use stay.
/// The same limits with two real `switchyard` processes sharing one `redis-server`, requests
/// alternating between them: the key's budget of requests per minute holds for the pair.
#[tokio::test]
async fn limits_hold_across_two_gateway_processes() {
    let r = start_redis_on(free_port()).await;
    let dir = tempfile::tempdir().unwrap();
    let (keys_path, keys) = key_file(dir.path(), &[("limited", "rpm = 3"), ("free", "")]);
    let cfg = dir.path().join("switchyard.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nkeys_file = {:?}\n[cache]\nbackend = \"redis://127.0.0.1:{}\"\n",
            keys_path.display().to_string(),
            r.port
        ),
    )
    .unwrap();
    let (mut one, addr_one) = common::binary::spawn_demo(&cfg);
    let (mut two, addr_two) = common::binary::spawn_demo(&cfg);
    let client = reqwest::Client::new();
    let send = |addr: &str, key: &str, q: String| {
        let req = client
            .post(format!("http://{addr}/v1/chat/completions"))
            .header("authorization", bearer(key))
            .json(&ask("cheap", &q));
        async move {
            let resp = req.send().await.unwrap();
            let remaining = header(resp.headers(), "x-ratelimit-remaining-requests").to_string();
            (resp.status().as_u16(), remaining)
        }
    };
    early_in_a_minute().await;
    let mut seen = Vec::new();
    for i in 0..3 {
        let addr = if i % 2 == 0 { &addr_one } else { &addr_two };
        seen.push(send(addr, &keys[0], format!("process question {i}")).await);
    }
    assert_eq!(seen, [(200, "2".to_string()), (200, "1".to_string()), (200, "0".to_string())]);
    for addr in [&addr_one, &addr_two] {
        assert_eq!(send(addr, &keys[0], "one too many".into()).await.0, 429, "{addr}");
        assert_eq!(send(addr, &keys[1], format!("free key on {addr}")).await.0, 200, "{addr}");
    }
    for child in [&mut one, &mut two] {
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[tokio::test]
async fn sighup_reloads_the_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let (keys_path, first) = key_file(dir.path(), &[("alice", "")]);
    let (second_text, second) = {
        let (key, toml) = new_key(&NewKey { name: "bob".into(), ..NewKey::default() });
        (toml, key)
    };
    let cfg = dir.path().join("switchyard.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nkeys_file = {:?}\nkeys_reload_interval = \"0s\"\n[cache]\nenabled = false\n",
            keys_path.display().to_string()
        ),
    )
    .unwrap();
    let (mut child, addr) = common::binary::spawn_demo(&cfg);
    let client = reqwest::Client::new();
    let status = |key: String| {
        let req = client
            .post(format!("http://{addr}/v1/chat/completions"))
            .header("authorization", bearer(&key))
            .json(&ask("cheap", "hello"));
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let metric_of = |name: &'static str| {
        let req = client.get(format!("http://{addr}/metrics"));
        async move { metric(&req.send().await.unwrap().text().await.unwrap(), name) }
    };
    // the shell's own `kill`: no procps needed on a bare CI image
    let hup =
        |pid: u32| assert!(Command::new("sh").args(["-c", &format!("kill -HUP {pid}")]).status().unwrap().success());

    assert_eq!(status(first[0].clone()).await, 200);
    assert_eq!(status(second.clone()).await, 401);
    std::fs::write(&keys_path, &second_text).unwrap();
    assert_eq!(status(second.clone()).await, 401, "no polling: only SIGHUP reloads here");
    hup(child.id());
    let mut reloaded = false;
    for _ in 0..100 {
        if metric_of("switchyard_keys_reloads_total").await >= 1.0 {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reloaded, "SIGHUP did not reload the key file");
    assert_eq!(status(second.clone()).await, 200);
    assert_eq!(status(first[0].clone()).await, 401);

    std::fs::write(&keys_path, "[[keys]]\nname = \"broken").unwrap();
    hup(child.id());
    let mut refused = false;
    for _ in 0..100 {
        if metric_of("switchyard_keys_reload_failures_total").await >= 1.0 {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "the bad file was not seen");
    assert_eq!(status(second.clone()).await, 200, "a bad file keeps the keys in use");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn keys_new_prints_the_key_alone_then_the_entry() {
    let out = Command::new(common::binary::BIN)
        .args(["keys", "new", "team-b", "--rpm", "60", "--tpm", "90000", "--budget-day", "5", "--budget-month", "100"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let (key, entry) = text.split_once('\n').unwrap();
    assert!(key.starts_with("sy-") && !key.contains(' '));
    assert!(!entry.contains(key));
    let table = switchyard::keys::parse(entry, Path::new("new")).unwrap();
    let p = &table[&switchyard::keys::hash_key(key)];
    assert_eq!(
        (p.name.as_str(), p.rpm, p.tpm, p.budget_day, p.budget_month),
        ("team-b", Some(60), Some(90000), Some(5.0), Some(100.0))
    );
}

/// `count_tokens` takes the key's `rpm` in a counter of its own (as Anthropic limits counts apart
/// from messages): a key's counts are refused past it with Anthropic's 429 and never reach the
/// provider, while its calls still go through; its budget does not refuse a count, which costs
/// nothing.
#[tokio::test]
async fn token_counts_are_rate_limited_per_key_apart_from_calls() {
    use common::providers::{config, ProviderMock};
    let dir = tempfile::tempdir().unwrap();
    let (path, keys) = key_file(dir.path(), &[("counter", "rpm = 2\nbudget_month = 100.0")]);
    let a = ProviderMock::anthropic("claude", common::providers::ANTHROPIC_KEY).await;
    let mut cfg = config(&["anthropic:claude-haiku-4-5"], Some(&a), None);
    cfg.server.keys_file = Some(path);
    let g = gateway(cfg).await;
    let count = async || {
        let r = reqwest::Client::new()
            .post(url(&g, "/v1/messages/count_tokens"))
            .header("x-api-key", &keys[0])
            .header("anthropic-version", "2023-06-01")
            .json(&json!({"model": "cheap", "messages": [{"role": "user", "content": "How tall is Everest?"}]}))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.headers().clone(), r.json::<Value>().await.unwrap())
    };
    early_in_a_minute().await;
    for left in ["1", "0"] {
        let (s, h, body) = count().await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(header(&h, "x-ratelimit-limit-requests"), "2");
        assert_eq!(header(&h, "x-ratelimit-remaining-requests"), left);
        assert_eq!(header(&h, "x-ratelimit-limit-tokens"), "", "a count has no tokens to limit");
    }
    let (s, h, body) = count().await;
    assert_eq!(
        (s, body["type"].as_str(), body["error"]["type"].as_str()),
        (429, Some("error"), Some("rate_limit_error"))
    );
    assert!(body["error"]["message"].as_str().unwrap().contains("2 token counts per minute"), "{body}");
    assert!((1..=60).contains(&header(&h, "retry-after").parse::<u64>().unwrap()));
    assert_eq!(a.requests().len(), 2, "the refused count never reached Anthropic");
    // the key's calls have their own two a minute
    for i in 0..2 {
        let (s, _, body) = chat(&g, &keys[0], &ask("cheap", &format!("a call after the counts, {i}"))).await;
        assert_eq!(s, 200, "{body}");
    }
    let m = metrics(&g).await;
    assert_eq!(metric(&m, "switchyard_key_refused_total{key=\"counter\",reason=\"count_requests\"}"), 1.0, "{m}");
    assert_eq!(metric(&m, "switchyard_key_refused_total{key=\"counter\",reason=\"requests\"}"), 0.0, "{m}");
    g.shutdown().await;
}

/// `[passthrough]`: OpenAI's stateless endpoints an app calls besides chat (moderations, speech,
/// a multipart transcription) go to the configured provider as they are, with its key, under the
/// caller's `rpm`, logged; a key the gateway cannot hold to its budget or model list is refused;
/// an upstream error comes back with the provider key scrubbed; stateful paths (files) are never
/// forwarded, and without `[passthrough]` nothing is.
#[tokio::test]
async fn openai_stateless_endpoints_pass_through_and_keys_stay_in_charge() {
    let dir = tempfile::tempdir().unwrap();
    let (path, keys) = key_file(
        dir.path(),
        &[("plain", "rpm = 3"), ("budgeted", "budget_day = 1.0"), ("narrow", "models = [\"auto\"]"), ("free", "")],
    );
    let server = format!("keys_file = {:?}", path.display().to_string());
    let log = dir.path().join("requests.jsonl");
    let tables = format!("[passthrough]\nprovider = \"cheap\"\n[log]\npath = {:?}", log.display().to_string());
    let (cheap, premium) = (MockUpstream::start("cheap").await, MockUpstream::start("premium").await);
    let g = gateway(config(&cheap, &premium, &server, TIERS, &tables)).await;
    let (plain, budgeted, narrow, free) = (&keys[0], &keys[1], &keys[2], &keys[3]);
    let client = reqwest::Client::new();
    let post = |path: &str, key: Option<&str>| {
        let rb = client.post(url(&g, path));
        match key {
            Some(k) => rb.bearer_auth(k),
            None => rb,
        }
    };
    early_in_a_minute().await;

    let r = post("/v1/moderations", Some(plain))
        .json(&json!({"model": "omni-moderation-latest", "input": "how do I kill a zombie process?"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(r.headers(), "x-ratelimit-remaining-requests"), "2", "counted against the key's rpm");
    assert_eq!(header(r.headers(), "x-switchyard-provider"), "cheap");
    let m: Value = r.json().await.unwrap();
    assert_eq!(m["results"][0]["flagged"], true);
    assert_eq!(
        cheap.last_headers()["authorization"],
        "Bearer sk-cheap-secret-key",
        "the provider's key, not the caller's"
    );

    let r = post("/v1/audio/speech", Some(plain))
        .json(&json!({"model": "tts-1", "voice": "alloy", "input": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!((r.status().as_u16(), header(r.headers(), "content-type")), (200, "audio/mpeg"));
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"\xFF\xFB\x90\x64hello", "audio bytes as the provider sent them");

    let boundary = "switchyard-test-boundary";
    let form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF0000WAVE\r\n--{boundary}--\r\n"
    );
    let r = post("/v1/audio/transcriptions", Some(plain))
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .body(form.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let t: Value = r.json().await.unwrap();
    assert_eq!(t["text"], format!("heard {} bytes, form true", form.len()), "the multipart body unchanged");
    // the key's fourth request in the minute
    let r = post("/v1/moderations", Some(plain)).json(&json!({"input": "x"})).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(cheap.calls(), 3);

    // what the gateway cannot hold a key to: refused before any call
    for key in [budgeted, narrow] {
        let r = post("/v1/moderations", Some(key)).json(&json!({"input": "x"})).send().await.unwrap();
        assert_eq!(r.status(), 403);
        let e: Value = r.json().await.unwrap();
        assert!(e["error"]["message"].as_str().unwrap().contains("budget or an allowed-models list"), "{e}");
    }
    assert_eq!(post("/v1/moderations", None).json(&json!({"input": "x"})).send().await.unwrap().status(), 401);
    assert_eq!(cheap.calls(), 3);

    // the provider's error, its key scrubbed
    cheap.then(Behavior::Status(500, None));
    let r = post("/v1/moderations", Some(free)).json(&json!({"input": "x"})).send().await.unwrap();
    assert_eq!(r.status(), 500);
    let text = r.text().await.unwrap();
    assert!(text.contains("mock error 500 for Bearer *****") && !text.contains("sk-cheap-secret-key"), "{text}");

    // stateful paths are not forwarded
    for (method, path) in [
        (reqwest::Method::GET, "/v1/files"),
        (reqwest::Method::POST, "/v1/files"),
        (reqwest::Method::POST, "/v1/batches"),
    ] {
        let r = client.request(method, url(&g, path)).bearer_auth(free).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "unknown_url");
    }
    assert_eq!(cheap.calls(), 4);
    g.shutdown().await;
    let records: Vec<Value> =
        std::fs::read_to_string(&log).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let first = &records[0];
    assert_eq!(
        (first["model"].as_str(), first["deployment"].as_str()),
        (Some("omni-moderation-latest"), Some("cheap:moderations"))
    );
    assert_eq!((first["status"].as_u64(), first["key"].as_str()), (Some(200), Some("plain")));
    assert!(records.iter().any(|r| r["status"] == 429) && records.iter().any(|r| r["status"] == 500));

    // without [passthrough], nothing is forwarded
    let g = gateway(config(&cheap, &premium, &server, TIERS, "")).await;
    let r =
        client.post(url(&g, "/v1/moderations")).bearer_auth(free).json(&json!({"input": "x"})).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(cheap.calls(), 4);
    g.shutdown().await;
}
