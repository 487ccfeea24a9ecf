#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `premium_share` holds on the traffic actually served. The real binary (`serve --demo`, fresh
//! each time) is driven over HTTP with streams of one kind of prompt built from the dev files —
//! chat instructions, GSM8K word problems, MMLU questions — with `model: "auto"` and distinct
//! prompts (so the cache serves nothing), and the premium share is counted from the
//! `x-switchyard-tier` header. With the training calibration alone (before live calibration) the
//! configured 0.3 gave 0.60 on chat and 0.17 on MMLU.

use std::process::Child;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

mod common;

use common::binary::spawn_demo;
const TARGET: f64 = 0.3;
const TOLERANCE: f64 = 0.05;
/// Requests in flight at once: decisions still happen one at a time, in roughly send order.
const CONCURRENCY: usize = 8;

struct Demo {
    child: Child,
    base: String,
}

impl Demo {
    fn start(config: &str) -> Demo {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("demo.toml");
        std::fs::write(&cfg, config).unwrap();
        let (child, addr) = spawn_demo(&cfg);
        Demo { child, base: format!("http://{addr}") }
    }

    /// Sends the prompts in order (a few in flight) and returns, per prompt, whether it went
    /// premium; None for a cache hit (not routed) or an unexpected status.
    async fn drive(&self, prompts: &[String], dial: Option<&'static str>) -> Vec<Option<bool>> {
        self.drive_dialled(prompts.iter().map(|p| (p.clone(), dial)).collect()).await
    }

    /// As [`Demo::drive`], each prompt with its own `x-switchyard-premium-share` (or none).
    async fn drive_dialled(&self, prompts: Vec<(String, Option<&'static str>)>) -> Vec<Option<bool>> {
        let client = reqwest::Client::new();
        let url = format!("{}/v1/chat/completions", self.base);
        futures_util::stream::iter(prompts)
            .map(|(p, dial)| {
                let (client, url) = (client.clone(), url.clone());
                async move {
                    let body = json!({"model": "auto", "messages": [{"role": "user", "content": p}]});
                    let mut req = client.post(&url).json(&body);
                    if let Some(d) = dial {
                        req = req.header("x-switchyard-premium-share", d);
                    }
                    let r = req.send().await.unwrap();
                    assert_eq!(r.status(), 200);
                    let h = r.headers();
                    if h["x-switchyard-cache"] != "miss" {
                        return None;
                    }
                    assert!(
                        h.contains_key("x-switchyard-route-score") && h.contains_key("x-switchyard-route-threshold")
                    );
                    Some(h["x-switchyard-tier"] == "premium")
                }
            })
            .buffered(CONCURRENCY)
            .collect()
            .await
    }

    async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.base)).await.unwrap().text().await.unwrap()
    }

    /// Every request so far was routed with its embedding (none went on without a vector).
    async fn assert_embedded(&self) {
        let m = self.metrics().await;
        let skipped: f64 = m
            .lines()
            .filter(|l| l.starts_with("switchyard_embed_skipped_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert_eq!(skipped, 0.0, "requests routed without their embedding:\n{m}");
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Prompts of one dev file, shuffled with a fixed seed (the files are ordered by subject).
fn prompts(file: &str, seed: u64) -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("eval/data/routing").join(file);
    let mut out: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["prompt"].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out.dedup();
    out.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    out
}

/// Premium share of the routed requests among `outcomes`.
fn share(outcomes: &[Option<bool>]) -> f64 {
    let routed: Vec<bool> = outcomes.iter().flatten().copied().collect();
    assert!(
        routed.len() * 10 >= outcomes.len() * 9,
        "the cache served too much: {} of {}",
        routed.len(),
        outcomes.len()
    );
    routed.iter().filter(|p| **p).count() as f64 / routed.len() as f64
}

/// Requests after `from` until every later run of 100 consecutive requests is within tolerance.
fn recovery(outcomes: &[Option<bool>], from: usize) -> usize {
    let mut last_bad = from;
    for end in from + 100..=outcomes.len() {
        if (share(&outcomes[end - 100..end]) - TARGET).abs() > TOLERANCE {
            last_bad = end - 100 + 1;
        }
    }
    last_bad - from
}

fn gauge(metrics: &str, name: &str, tenant: &str) -> f64 {
    let prefix = format!("{name}{{tenant=\"{tenant}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{prefix}missing:\n{metrics}"))
        .parse()
        .unwrap()
}

/// `embed.max_wait` long enough that every prompt waits for its embedding: these tests measure
/// the share the router holds on what it reads, and on a loaded 2-core test machine (six debug
/// gateways at once) the default 500 ms sent nearly every request on without its vector
/// (`embed_skipped`), routing on the text features alone. [`Demo::assert_embedded`] checks it.
const CONFIG: &str = "[router]\npremium_share = 0.3\n[embed]\nmax_wait = \"300s\"\n";

/// A fresh gateway, `n` prompts of one kind; returns the gateway (still running) and the prompts.
async fn one_kind(file: &str, n: usize) -> (Demo, Vec<String>) {
    let demo = Demo::start(CONFIG);
    let ps = prompts(file, 42);
    let out = demo.drive(&ps[..n], None).await;
    let (first, after) = (share(&out[..100]), share(&out[100..]));
    eprintln!("{file}: premium share {first:.3} over the first 100 requests, {after:.3} over requests 101..{n}");
    demo.assert_embedded().await;
    let m = demo.metrics().await;
    assert_eq!(gauge(&m, "switchyard_route_premium_share_target", "global"), TARGET);
    let window = share(&out[n - 128..]);
    let realised = gauge(&m, "switchyard_route_premium_share_realised", "global");
    // (decisions are made in about send order, a few in flight)
    assert!((realised - window).abs() < 0.03, "the gauge is over the last 128 decisions: {realised} vs {window}");
    assert!(gauge(&m, "switchyard_route_threshold", "global").is_finite());
    assert!(
        (after - TARGET).abs() <= TOLERANCE,
        "{file}: realised premium share after the first 100 requests is {after:.3}, configured {TARGET}"
    );
    (demo, ps)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_share_holds_on_chat_instructions() {
    one_kind("alpaca_dev_mixtral-8x7b-instruct-v0_1.jsonl", 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_share_holds_on_mmlu_and_recovers_when_the_mix_turns_to_chat() {
    let demo = Demo::start(CONFIG);
    let mut ps: Vec<String> = prompts("mmlu_dev.jsonl", 42).into_iter().take(300).collect();
    ps.extend(prompts("alpaca_dev_mixtral-8x7b-instruct-v0_1.jsonl", 7).into_iter().take(300));
    let out = demo.drive(&ps, None).await;
    demo.assert_embedded().await;
    let (mmlu, chat) = (share(&out[100..300]), share(&out[300..]));
    let rec = recovery(&out, 300);
    eprintln!(
        "mmlu then chat: {:.3} over the first 100, {mmlu:.3} over MMLU 101..300; chat {chat:.3} over 301..600, \
         {:.3} over its first 100, {:.3} over its last 200; recovered {rec} requests after the change",
        share(&out[..100]),
        share(&out[300..400]),
        share(&out[400..]),
    );
    assert!((mmlu - TARGET).abs() <= TOLERANCE, "MMLU after the first 100 requests: {mmlu:.3}");
    assert!(rec <= 200, "not back within ±{TOLERANCE} of {TARGET} 200 requests after the mix changed ({rec})");
    assert!((share(&out[400..]) - TARGET).abs() <= TOLERANCE);
}

/// On maths word problems; then `x-switchyard-premium-share` routes some requests at another share
/// of the same live distribution without moving the share everybody else gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_share_holds_on_maths_word_problems_and_the_dial_picks_another_share() {
    let (demo, ps) = one_kind("gsm8k_dev.jsonl", 300).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/chat/completions", demo.base);
    for bad in ["1.5", "-0.1", "a lot", "NaN"] {
        let r = client
            .post(&url)
            .header("x-switchyard-premium-share", bad)
            .json(&json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["param"], "x-switchyard-premium-share");
        assert!(body["error"]["message"].as_str().unwrap().contains("x-switchyard-premium-share"));
        assert_eq!(body["error"]["type"], "invalid_request_error");
    }
    // the stream goes on, two requests in three dialled down to 0.1. The dialled share is a
    // sample: no feedback holds it (that would move everybody else's share), so its error is the
    // sampling error of its count, about 0.017 for 300 requests at 0.1, plus the window's; 150
    // dialled requests (one in three) failed ±0.05 about once in ten runs (0.153 seen)
    let dialled_at = |i: usize| !i.is_multiple_of(3);
    let mixed: Vec<(String, Option<&str>)> =
        ps[300..750].iter().enumerate().map(|(i, p)| (p.clone(), dialled_at(i).then_some("0.1"))).collect();
    let out = demo.drive_dialled(mixed).await;
    let pick = |dialled: bool| -> Vec<Option<bool>> {
        out.iter().enumerate().filter(|(i, _)| dialled_at(*i) == dialled).map(|(_, o)| *o).collect()
    };
    let (normal, dialled) = (pick(false), pick(true));
    let (n, d) = (share(&normal), share(&dialled));
    eprintln!("dial: {d:.3} premium among {} requests at 0.1; {n:.3} among the {} others", dialled.len(), normal.len());
    assert!((d - 0.1).abs() <= TOLERANCE, "dialled 0.1: {d:.3}");
    assert!((n - TARGET).abs() <= TOLERANCE, "the others: {n:.3}");
    // the extremes
    let none = demo.drive(&ps[750..770], Some("0")).await;
    let all = demo.drive(&ps[770..790], Some("1")).await;
    assert_eq!((share(&none), share(&all)), (0.0, 1.0));
    let m = demo.metrics().await;
    assert_eq!(gauge(&m, "switchyard_route_dialled_total", "global"), (dialled.len() + 40) as f64);
}

/// A gateway key with its own `premium_share` gets it (and its own window); `/metrics` names the
/// tenant by its hash, never by the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_with_its_own_share_gets_it() {
    let frugal = switchyard::http::tenant_of("key-frugal");
    let demo = Demo::start(&format!(
        "[server]\ngateway_keys = \"key-default,key-frugal\"\n{CONFIG}[router.tenant_share]\n\"{frugal}\" = 0.0\n"
    ));
    let client = reqwest::Client::new();
    let url = format!("{}/v1/chat/completions", demo.base);
    let ps = prompts("alpaca_dev_mixtral-8x7b-instruct-v0_1.jsonl", 5);
    let mut tiers = Vec::new();
    for (i, p) in ps[..60].iter().enumerate() {
        let key = if i % 2 == 0 { "key-default" } else { "key-frugal" };
        let r = client
            .post(&url)
            .bearer_auth(key)
            .json(&json!({"model": "auto", "messages": [{"role": "user", "content": p}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        tiers.push((key, r.headers()["x-switchyard-tier"].to_str().unwrap().to_string()));
    }
    let premium = |k: &str| tiers.iter().filter(|(key, t)| *key == k && t == "premium").count();
    assert_eq!(premium("key-frugal"), 0);
    assert!(premium("key-default") > 0);
    let m = demo.metrics().await;
    assert_eq!(gauge(&m, "switchyard_route_premium_share_target", &frugal), 0.0);
    assert_eq!(gauge(&m, "switchyard_route_premium_share_realised", &frugal), 0.0);
    assert_eq!(gauge(&m, "switchyard_route_premium_share_target", "global"), TARGET);
    assert!(!m.contains("key-frugal") && !m.contains("key-default"));
}

/// Follow-up turns as people write them: short, and on their own mostly for the cheap tier.
const FOLLOW_UPS: [&str; 12] = [
    "Thanks. Can you explain that in more detail?",
    "Can you give me an example?",
    "Make it shorter, please.",
    "Why is that?",
    "Are you sure? Please check your answer again.",
    "Can you put that in a table?",
    "What would change if the numbers were doubled?",
    "Explain it like I'm five.",
    "Now write that as a short email to my manager.",
    "Which of these matters most, and why?",
    "Can you summarise that in one sentence?",
    "What are the common mistakes here?",
];

/// Follow-ups favour conversations that went premium this many times over the others (hard
/// questions draw more follow-ups), which puts more affinity-forced premium calls in the share.
const PREMIUM_FOLLOW_WEIGHT: u32 = 4;

/// How close the conversational stream's share must come to the target (see its test).
const AFFINITY_TOLERANCE: f64 = 0.03;

/// One request of a conversational stream.
enum Turn {
    /// Starts a conversation (by `key`, if any) with a prompt from the dev files.
    Fresh { prompt: String, key: Option<String> },
    /// The next user turn of an earlier, answered conversation (picked when the request is sent):
    /// its earlier turns and answers, then `text`.
    FollowUp { text: String },
}

/// A conversation as the client holds it.
struct Conversation {
    messages: Vec<Value>,
    key: Option<String>,
    /// Some earlier turn went premium.
    premium: bool,
    /// The last turn sent is answered (its answer is in `messages`).
    answered: bool,
}

/// What one request got.
#[derive(Debug, Clone)]
struct Served {
    key: Option<String>,
    follow_up: bool,
    /// An earlier turn of its conversation went premium.
    after_premium: bool,
    /// None: a cache hit (not routed).
    premium: Option<bool>,
    /// `x-switchyard-route-affinity`: premium only because the conversation already was.
    affinity: bool,
}

/// `n` requests: fresh prompts from `pool` by the keys in turn, and (past the first
/// `2 · CONCURRENCY`, when earlier conversations are answered) with probability `follow_share` a
/// follow-up instead — two times in three a short generic follow-up, else another question
/// from the pool.
fn conversations(pool: &mut Vec<String>, keys: &[Option<&str>], n: usize, follow_share: f64, seed: u64) -> Vec<Turn> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut fresh = 0;
    (0..n)
        .map(|j| {
            if j >= 2 * CONCURRENCY && rng.gen_bool(follow_share) {
                let text = if rng.gen_bool(2.0 / 3.0) {
                    FOLLOW_UPS.choose(&mut rng).unwrap().to_string()
                } else {
                    pool.pop().unwrap()
                };
                Turn::FollowUp { text }
            } else {
                fresh += 1;
                Turn::Fresh { prompt: pool.pop().unwrap(), key: keys[(fresh - 1) % keys.len()].map(str::to_string) }
            }
        })
        .collect()
}

/// A mix of the dev files, shuffled: chat instructions, GSM8K word problems, MMLU questions.
fn mixed_pool(seed: u64) -> Vec<String> {
    let mut pool: Vec<String> =
        prompts("alpaca_dev_mixtral-8x7b-instruct-v0_1.jsonl", seed).into_iter().take(400).collect();
    pool.extend(prompts("gsm8k_dev.jsonl", seed).into_iter().take(300));
    pool.extend(prompts("mmlu_dev.jsonl", seed).into_iter().take(300));
    pool.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    pool
}

impl Demo {
    /// Sends the turns in order (a few in flight). A follow-up continues an answered conversation
    /// with its earlier turns and the answers the gateway gave, as an OpenAI client does.
    async fn converse(&self, turns: Vec<Turn>, seed: u64) -> Vec<Served> {
        let client = reqwest::Client::new();
        let url = format!("{}/v1/chat/completions", self.base);
        let convs: Arc<Mutex<Vec<Conversation>>> = Arc::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        futures_util::stream::iter(turns)
            .map(|turn| {
                // built when `buffered` starts it, from the answers in so far
                let (conv, follow_up, after_premium, messages, key) = {
                    let mut convs = convs.lock().unwrap();
                    match turn {
                        Turn::Fresh { prompt, key } => {
                            let messages = vec![json!({"role": "user", "content": prompt})];
                            let c = Conversation {
                                messages: messages.clone(),
                                key: key.clone(),
                                premium: false,
                                answered: false,
                            };
                            convs.push(c);
                            (convs.len() - 1, false, false, messages, key)
                        }
                        Turn::FollowUp { text } => {
                            let ready: Vec<usize> = (0..convs.len()).filter(|i| convs[*i].answered).collect();
                            let weight = |i: &usize| if convs[*i].premium { PREMIUM_FOLLOW_WEIGHT } else { 1 };
                            let conv = *ready.choose_weighted(&mut rng, weight).expect("an answered conversation");
                            let c = &mut convs[conv];
                            c.answered = false;
                            c.messages.push(json!({"role": "user", "content": text}));
                            (conv, true, c.premium, c.messages.clone(), c.key.clone())
                        }
                    }
                };
                let (client, url, convs) = (client.clone(), url.clone(), convs.clone());
                async move {
                    let mut req = client.post(&url).json(&json!({"model": "auto", "messages": messages}));
                    if let Some(k) = &key {
                        req = req.bearer_auth(k);
                    }
                    let r = req.send().await.unwrap();
                    assert_eq!(r.status(), 200);
                    let h = r.headers().clone();
                    let body: Value = r.json().await.unwrap();
                    let answer = body["choices"][0]["message"]["content"].as_str().unwrap().to_string();
                    let routed = h["x-switchyard-cache"] == "miss";
                    let premium = h["x-switchyard-tier"] == "premium";
                    let affinity = h.get("x-switchyard-route-affinity").is_some_and(|v| v == "premium");
                    let mut convs = convs.lock().unwrap();
                    let c = &mut convs[conv];
                    c.messages.push(json!({"role": "assistant", "content": answer}));
                    c.answered = true;
                    c.premium |= premium;
                    Served { key, follow_up, after_premium, premium: routed.then_some(premium), affinity }
                }
            })
            .buffered(CONCURRENCY)
            .collect()
            .await
    }
}

/// The premium share (affinity included) among `served`.
fn served_share(served: &[&Served]) -> f64 {
    share(&served.iter().map(|s| s.premium).collect::<Vec<_>>())
}

/// Affinity — a conversation that went premium never moves down — and the configured share at
/// once: about a fifth of the requests are later turns of earlier conversations (mostly short
/// follow-ups that on their own would go cheap, and more often on conversations that went
/// premium), the rest fresh chat, GSM8K and MMLU prompts.
/// The premium calls affinity forces are counted inside the 0.3, not on top of it. Every request
/// is distinct (a follow-up's earlier turns are in its cache namespace), so the cache serves
/// almost nothing and `share` checks that it served under a tenth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn affinity_is_counted_inside_the_share() {
    let n = 400;
    let demo = Demo::start(CONFIG);
    let turns = conversations(&mut mixed_pool(11), &[None], n, 0.22, 11);
    let out = demo.converse(turns, 11).await;
    demo.assert_embedded().await;
    let follow: Vec<&Served> = out.iter().filter(|s| s.follow_up).collect();
    let sticky: Vec<&Served> = follow.iter().copied().filter(|s| s.after_premium).collect();
    let forced = out.iter().filter(|s| s.affinity).count();
    let all: Vec<&Served> = out.iter().collect();
    let (first, after) = (served_share(&all[..100]), served_share(&all[100..]));
    eprintln!(
        "affinity: {} follow-ups ({} after a premium turn), {forced} premium by affinity alone; \
         premium share {first:.3} over the first 100 requests, {after:.3} over 101..{n}",
        follow.len(),
        sticky.len()
    );
    let fraction = follow.len() as f64 / n as f64;
    assert!((0.15..=0.25).contains(&fraction), "follow-ups are {fraction:.3} of the stream");
    // (a) no turn after a premium turn is served cheap
    for s in &sticky {
        assert_ne!(s.premium, Some(false), "a conversation moved down a tier: {s:?}");
    }
    // affinity is exercised: enough follow-ups would have gone cheap on their own score
    assert!(forced * 50 >= n, "only {forced} premium calls were forced by affinity");
    assert!(out.iter().all(|s| !s.affinity || (s.after_premium && s.premium == Some(true))));
    // (b) the share, affinity-forced premium included, holds after the first 100 requests: within
    // ±0.03, tighter than the other streams' ±0.05 because ±0.05 would also pass a gateway that
    // adds affinity on top of the share (by hand, with neither the subtraction nor the feedback,
    // this stream gave 0.337; with both, ten runs gave 0.293–0.307)
    assert!(
        (after - TARGET).abs() <= AFFINITY_TOLERANCE,
        "realised premium share after the first 100 requests is {after:.3}"
    );
    // (c) /metrics reports the same share over its window, and the forced decisions
    let m = demo.metrics().await;
    assert_eq!(gauge(&m, "switchyard_route_premium_share_target", "global"), TARGET);
    let realised = gauge(&m, "switchyard_route_premium_share_realised", "global");
    let window = served_share(&all[n - 128..]);
    assert!((realised - window).abs() < 0.03, "the gauge is over the last 128 decisions: {realised} vs {window}");
    assert_eq!(gauge(&m, "switchyard_route_affinity_total", "global"), forced as f64);
    let routed = out.iter().filter(|s| s.premium.is_some()).count();
    assert_eq!(gauge(&m, "switchyard_route_decisions_total", "global"), routed as f64);
}

/// A key file with two keys, one with `premium_share = 0.1`: driven interleaved (conversations
/// included), each key gets its own share, and `/metrics` names the tenant by the key's name —
/// neither key nor its hash appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_file_premium_share_is_held_for_that_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    let mut keys = Vec::new();
    for (name, extra) in [("team-a", ""), ("frugal", "premium_share = 0.1\n")] {
        let (key, entry) =
            switchyard::keys::new_key(&switchyard::keys::NewKey { name: name.into(), ..Default::default() });
        text.push_str(&entry);
        text.push_str(extra);
        keys.push(key);
    }
    let path = dir.path().join("keys.toml");
    std::fs::write(&path, text).unwrap();
    let demo = Demo::start(&format!("[server]\nkeys_file = {:?}\n{CONFIG}", path.display().to_string()));
    let n = 600;
    let turns = conversations(&mut mixed_pool(23), &[Some(&keys[0]), Some(&keys[1])], n, 0.15, 23);
    let out = demo.converse(turns, 23).await;
    let of = |k: &str| -> Vec<&Served> { out.iter().filter(|s| s.key.as_deref() == Some(k)).collect() };
    let (a, f) = (of(&keys[0]), of(&keys[1]));
    let (sa, sf) = (served_share(&a[100..]), served_share(&f[100..]));
    eprintln!(
        "key file: team-a {sa:.3} premium over its requests after its first 100 ({} in all), frugal {sf:.3} ({} in all)",
        a.len(),
        f.len()
    );
    assert!(a.len() >= 200 && f.len() >= 200, "{} and {}", a.len(), f.len());
    assert!((sf - 0.1).abs() <= TOLERANCE, "the key with premium_share 0.1 got {sf:.3}");
    assert!((sa - TARGET).abs() <= TOLERANCE, "the key without got {sa:.3}");
    for s in out.iter().filter(|s| s.after_premium) {
        assert_ne!(s.premium, Some(false), "a conversation moved down a tier: {s:?}");
    }
    demo.assert_embedded().await;
    let m = demo.metrics().await;
    assert_eq!(gauge(&m, "switchyard_route_premium_share_target", "frugal"), 0.1);
    let realised = gauge(&m, "switchyard_route_premium_share_realised", "frugal");
    let window = served_share(&f[f.len() - 128..]);
    assert!((realised - window).abs() < 0.03, "frugal's gauge is over its last 128 decisions: {realised} vs {window}");
    assert_eq!(gauge(&m, "switchyard_route_premium_share_target", "global"), TARGET);
    let frugal_forced = f.iter().filter(|s| s.affinity).count();
    assert_eq!(gauge(&m, "switchyard_route_affinity_total", "frugal"), frugal_forced as f64);
    for k in &keys {
        assert!(
            !m.contains(k.as_str()) && !m.contains(&switchyard::keys::hash_key(k)),
            "a key or its hash in /metrics"
        );
    }
}
