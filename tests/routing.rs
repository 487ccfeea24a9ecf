#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `model: "auto"` through the shipped trained router (`models/router`), on the real embedding,
//! against a cheap and a premium mock upstream on loopback.

mod common;

use common::*;
use serde_json::{json, Value};
use switchyard::classify::{Classifier, TrainedRouter};

/// A greeting: the cheap model answers it as well as the premium one.
const EASY: &str = "hi there";
/// An open question asking for expert depth: on the AlpacaEval instructions GPT-4 Turbo's answers
/// win most clearly on this kind of prompt (the shipped router learned it from them).
const HARD: &str = "Can you explain quantum entanglement to a physicist?";

fn auto(messages: Value) -> Value {
    json!({"model": "auto", "messages": messages})
}

fn shipped_router() -> TrainedRouter {
    TrainedRouter::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/router"))
        .expect("models/router is shipped")
}

#[tokio::test]
async fn auto_sends_an_easy_prompt_to_cheap_and_a_hard_one_to_premium() {
    let (cheap, premium) = (MockUpstream::start("cheap").await, MockUpstream::start("premium").await);
    // the operating point users set: 30% of (training) traffic to premium
    let g = gateway(config_for(&cheap, &premium, "[router]\npremium_share = 0.3")).await;
    let threshold = shipped_router().threshold_for_share(0.3).unwrap();

    let (status, h, _) = post_chat(&g, &auto(json!([{"role": "user", "content": EASY}])), &[]).await;
    assert_eq!(status, 200);
    let easy_score: f32 = header(&h, "x-switchyard-route-score").parse().unwrap();
    assert_eq!(header(&h, "x-switchyard-tier"), "cheap", "easy score {easy_score}, threshold {threshold}");
    assert_eq!(header(&h, "x-switchyard-model"), "mini");
    assert!(easy_score < threshold);

    let (status, h, _) = post_chat(&g, &auto(json!([{"role": "user", "content": HARD}])), &[]).await;
    assert_eq!(status, 200);
    let hard_score: f32 = header(&h, "x-switchyard-route-score").parse().unwrap();
    assert_eq!(header(&h, "x-switchyard-tier"), "premium", "hard score {hard_score}, threshold {threshold}");
    assert_eq!(header(&h, "x-switchyard-model"), "large");
    assert!(hard_score >= threshold);

    assert_eq!((cheap.calls(), premium.calls()), (1, 1));
    g.shutdown().await;
}

#[tokio::test]
async fn an_explicit_threshold_sets_the_operating_point() {
    for (threshold, prompt, tier) in [("2.0", HARD, "cheap"), ("-2.0", EASY, "premium")] {
        let (cheap, premium) = (MockUpstream::start("cheap").await, MockUpstream::start("premium").await);
        let g = gateway(config_for(&cheap, &premium, &format!("[router]\nthreshold = {threshold}"))).await;
        let (_, h, _) = post_chat(&g, &auto(json!([{"role": "user", "content": prompt}])), &[]).await;
        assert_eq!(header(&h, "x-switchyard-tier"), tier, "threshold {threshold}");
        g.shutdown().await;
    }
}

/// The per-request dial in the model name (`auto:0.1`), for clients that can set a model but no
/// header: its share is read from the same live distribution (0 = always cheap, 1 = always
/// premium), it wins over a header (a client default), it shares `auto`'s cache, and anything but
/// a share in 0..1 after the colon is a 400 naming `model`.
#[tokio::test]
async fn the_dial_can_ride_in_the_model_name() {
    let (cheap, premium) = (MockUpstream::start("cheap").await, MockUpstream::start("premium").await);
    let g = gateway(config_for(&cheap, &premium, "[router]\npremium_share = 0.3")).await;
    let ask = |model: &str, prompt: &str| json!({"model": model, "messages": [{"role": "user", "content": prompt}]});
    let (status, h, _) = post_chat(&g, &ask("auto:0", HARD), &[]).await;
    assert_eq!((status, header(&h, "x-switchyard-tier")), (200, "cheap"));
    assert_eq!(header(&h, "x-switchyard-route-threshold"), "inf");
    let (_, h, _) = post_chat(&g, &ask("auto:1", EASY), &[]).await;
    assert_eq!(header(&h, "x-switchyard-tier"), "premium");
    let (_, h, _) = post_chat(
        &g,
        &ask("auto:0", "Prove that there are infinitely many primes."),
        &[("x-switchyard-premium-share", "1")],
    )
    .await;
    assert_eq!(header(&h, "x-switchyard-tier"), "cheap", "the model name wins over the header");
    // the same prompt under `auto` is a hit on the answer `auto:0` stored
    let (_, h, _) = post_chat(&g, &ask("auto", HARD), &[]).await;
    assert_eq!(header(&h, "x-switchyard-cache"), "hit");
    assert_eq!((cheap.calls(), premium.calls()), (2, 1));
    for bad in ["auto:1.5", "auto:-0.1", "auto:lots", "auto:"] {
        let (status, _, body) = post_chat(&g, &ask(bad, EASY), &[]).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["param"], "model", "{bad}");
        assert!(body["error"]["message"].as_str().unwrap().contains("between 0 and 1"), "{body}");
    }
    let (status, _, _) = post_chat(&g, &ask("automatic", EASY), &[]).await;
    assert_eq!(status, 404);
    g.shutdown().await;
}

/// A follow-up turn of a conversation that went premium.
fn follow_up() -> Value {
    auto(json!([
        {"role": "user", "content": HARD},
        {"role": "assistant", "content": "Entanglement is a correlation between quantum systems ..."},
        {"role": "user", "content": EASY},
    ]))
}

#[tokio::test]
async fn a_conversation_moves_up_a_tier_but_never_down() {
    let (cheap, premium) = (MockUpstream::start("cheap").await, MockUpstream::start("premium").await);
    let g = gateway(config_for(&cheap, &premium, "[router]\npremium_share = 0.3")).await;
    let (_, h, _) = post_chat(&g, &auto(json!([{"role": "user", "content": HARD}])), &[]).await;
    assert_eq!(header(&h, "x-switchyard-tier"), "premium");
    // the easy follow-up alone would go cheap; in this thread it stays premium
    let (_, h, _) = post_chat(&g, &follow_up(), &[]).await;
    assert_eq!(header(&h, "x-switchyard-tier"), "premium");
    assert_eq!((cheap.calls(), premium.calls()), (0, 2));
    g.shutdown().await;
}

#[tokio::test]
async fn without_affinity_each_turn_is_routed_on_its_own() {
    let (cheap, premium) = (MockUpstream::start("cheap").await, MockUpstream::start("premium").await);
    let g = gateway(config_for(&cheap, &premium, "[router]\npremium_share = 0.3\naffinity = false")).await;
    let (_, h, _) = post_chat(&g, &auto(json!([{"role": "user", "content": HARD}])), &[]).await;
    assert_eq!(header(&h, "x-switchyard-tier"), "premium");
    let (_, h, _) = post_chat(&g, &follow_up(), &[]).await;
    assert_eq!(header(&h, "x-switchyard-tier"), "cheap");
    assert_eq!((cheap.calls(), premium.calls()), (1, 1));
    g.shutdown().await;
}

/// Affinity follows the conversation, not the cache: with the cache off for the gateway, or for
/// one request (`Cache-Control: no-store`), a conversation that went premium still stays there.
#[tokio::test]
async fn a_conversation_stays_premium_when_the_cache_is_not_in_play() {
    for (tables, headers) in [("[cache]\nenabled = false", &[][..]), ("", &[("cache-control", "no-store")][..])] {
        let (cheap, premium) = (MockUpstream::start("cheap").await, MockUpstream::start("premium").await);
        let g = gateway(config_for(&cheap, &premium, &format!("[router]\npremium_share = 0.3\n{tables}"))).await;
        let (_, h, _) = post_chat(&g, &auto(json!([{"role": "user", "content": HARD}])), headers).await;
        assert_eq!(header(&h, "x-switchyard-tier"), "premium", "{tables} {headers:?}");
        let (_, h, _) = post_chat(&g, &follow_up(), headers).await;
        assert_eq!(header(&h, "x-switchyard-tier"), "premium", "{tables} {headers:?}: the follow-up moved down");
        assert_eq!((cheap.calls(), premium.calls()), (0, 2));
        g.shutdown().await;
    }
}

/// Two conversations that open with the same greeting: a premium turn in one must not pull the
/// other up. They part at their first reply, which differs.
#[tokio::test]
async fn a_premium_turn_holds_its_own_conversation_not_every_one_that_opened_alike() {
    let (cheap, premium) = (MockUpstream::start("cheap").await, MockUpstream::start("premium").await);
    let g = gateway(config_for(&cheap, &premium, "[router]\npremium_share = 0.3")).await;
    let turn = |reply: &str, next: &str| json!([{"role": "user", "content": EASY}, {"role": "assistant", "content": reply}, {"role": "user", "content": next}]);
    let (_, h, _) = post_chat(&g, &auto(json!([{"role": "user", "content": EASY}])), &[]).await;
    assert_eq!(header(&h, "x-switchyard-tier"), "cheap");
    // conversation A asks something hard on its second turn
    let (_, h, _) = post_chat(&g, &auto(turn("Hello! How can I help?", HARD)), &[]).await;
    assert_eq!(header(&h, "x-switchyard-tier"), "premium");
    // conversation B, same greeting, another reply, an easy second turn: routed on its own
    let (_, h, _) = post_chat(&g, &auto(turn("Hi! What is on your mind?", EASY)), &[]).await;
    assert_eq!(header(&h, "x-switchyard-tier"), "cheap", "B was pulled up by A");
    assert!(h.get("x-switchyard-route-affinity").is_none());
    // A's third turn is easy, and stays premium
    let mut a3 = turn("Hello! How can I help?", HARD);
    a3.as_array_mut().unwrap().extend([
        json!({"role": "assistant", "content": "Entanglement is ..."}),
        json!({"role": "user", "content": EASY}),
    ]);
    let (_, h, _) = post_chat(&g, &auto(a3), &[]).await;
    assert_eq!(header(&h, "x-switchyard-tier"), "premium", "A moved down");
    assert_eq!(header(&h, "x-switchyard-route-affinity"), "premium");
    g.shutdown().await;
}

/// SIGHUP reads the router file again: a retrained router goes live without a restart (here the
/// shipped one with every head's bias raised by 1, which raises every score by exactly 1), and a
/// file that does not load leaves the running router in place. The real binary, `serve --demo`.
#[tokio::test]
async fn sighup_reloads_the_router_file() {
    let dir = tempfile::tempdir().unwrap();
    let router_dir = dir.path().join("router");
    std::fs::create_dir(&router_dir).unwrap();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/router/router.json");
    let mut file: Value = serde_json::from_slice(&std::fs::read(&shipped).unwrap()).unwrap();
    std::fs::write(router_dir.join("router.json"), file.to_string()).unwrap();
    let cfg = dir.path().join("switchyard.toml");
    let text = format!("[router]\nmodel_dir = {:?}\n[cache]\nenabled = false\n", router_dir.display().to_string());
    std::fs::write(&cfg, text).unwrap();
    let (mut child, addr) = common::binary::spawn_demo(&cfg);
    let client = reqwest::Client::new();
    let score = async || -> f32 {
        let r = client
            .post(format!("http://{addr}/v1/chat/completions"))
            .json(&auto(json!([{"role": "user", "content": HARD}])));
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.headers()["x-switchyard-route-score"].to_str().unwrap().parse().unwrap()
    };
    let metric = async |name: &str| -> f64 {
        let m = client.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap();
        m.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).and_then(|v| v.parse().ok()).unwrap()
    };
    let hup_until = async |name: &str| {
        let pid = child.id();
        assert!(std::process::Command::new("sh").args(["-c", &format!("kill -HUP {pid}")]).status().unwrap().success());
        for _ in 0..100 {
            if metric(name).await >= 1.0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("{name} never moved after SIGHUP");
    };

    let before = score().await;
    for h in file["heads"].as_array_mut().unwrap() {
        h["bias"] = json!(h["bias"].as_f64().unwrap() + 1.0);
    }
    std::fs::write(router_dir.join("router.json"), file.to_string()).unwrap();
    assert_eq!(score().await, before, "nothing changes before the signal");
    hup_until("switchyard_router_reloads_total").await;
    let after = score().await;
    assert!((after - before - 1.0).abs() < 1e-3, "{before} -> {after}");

    std::fs::write(router_dir.join("router.json"), "{\"kind\": \"broken").unwrap();
    hup_until("switchyard_router_reload_failures_total").await;
    assert_eq!(score().await, after, "the running router stays");
    assert_eq!(metric("switchyard_router_reloads_total").await, 1.0);
    let _ = child.kill();
    let _ = child.wait();
}
