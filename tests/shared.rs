#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The shared cache tier against a real `redis-server` (started here on a free port): replicas
//! serve each other's answers, exactly and by meaning, never across tenants; a replica started
//! later replays the stream; a gateway whose Redis is down still serves; and Redis stopped,
//! restarted, slowed (`DEBUG SLEEP`) and paused (`CLIENT PAUSE`) while serving fails no request,
//! crosses no tenant, and the replicas catch up once it is back. Stored Responses
//! (`previous_response_id`) are continued across replicas.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::redis_server::{start_redis, start_redis_on};
use common::*;
use serde_json::Value;
use switchyard::app::Running;
use switchyard::config::Config;

/// A replica: the usual two-tier config on `cheap`/`premium`, cache on the shared tier.
fn replica_config(cheap: &MockUpstream, premium: &MockUpstream, redis_url: &str) -> Config {
    let extra = format!("gateway_keys = \"key-alice,key-bob\"\n[cache]\nbackend = \"{redis_url}\"");
    config_for(cheap, premium, &extra)
}

/// Waits until `g` holds `n` cache entries (mirroring is asynchronous).
async fn wait_for_entries(g: &Running, n: f64) {
    // a bound, not a timing assertion: a replica reconnecting after an outage backs off up to 5 s
    for _ in 0..300 {
        if metric(g, "switchyard_cache_entries").await >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("replica never received {n} entries");
}

fn content(body: &Value) -> String {
    body["choices"][0]["message"]["content"].as_str().unwrap_or_default().to_string()
}

const ALICE: (&str, &str) = ("authorization", "Bearer key-alice");
const BOB: (&str, &str) = ("authorization", "Bearer key-bob");

#[tokio::test]
async fn replicas_serve_each_others_answers_but_never_across_tenants() {
    let r = start_redis().await;
    let redis_url = format!("redis://127.0.0.1:{}", r.port);
    // each replica has its own upstreams, so who answered is visible
    let (c1, p1) = (MockUpstream::start("cheap1").await, MockUpstream::start("premium1").await);
    let (c2, p2) = (MockUpstream::start("cheap2").await, MockUpstream::start("premium2").await);
    let a = gateway(replica_config(&c1, &p1, &redis_url)).await;
    let b = gateway(replica_config(&c2, &p2, &redis_url)).await;

    let (s, h, first) = post_chat(&a, &user("How do I reset my password?"), &[ALICE]).await;
    assert_eq!((s, header(&h, "x-switchyard-cache")), (200, "miss"));
    wait_for_entries(&b, 1.0).await;

    // replica b: the same question is an exact hit on a's answer, with no upstream call
    let (_, h, body) = post_chat(&b, &user("How do I reset my password?"), &[ALICE]).await;
    assert_eq!(header(&h, "x-switchyard-cache"), "hit");
    assert_eq!(content(&body), content(&first));
    // a paraphrase is a semantic hit on it
    let (_, h, body) = post_chat(&b, &user("How can I reset my password?"), &[ALICE]).await;
    assert_eq!(header(&h, "x-switchyard-cache"), "hit");
    assert!(header(&h, "x-switchyard-similarity").parse::<f32>().unwrap() < 1.0);
    assert_eq!(content(&body), content(&first));
    assert_eq!(c2.calls(), 0, "replica b never went upstream");
    // another tenant on replica b: a miss, answered by b's own upstream
    let (_, h, body) = post_chat(&b, &user("How do I reset my password?"), &[BOB]).await;
    assert_eq!(header(&h, "x-switchyard-cache"), "miss");
    assert!(content(&body).starts_with("cheap2 answer"));
    assert_eq!(c2.calls(), 1);

    // and b's answer for bob reaches a, for bob only
    wait_for_entries(&a, 2.0).await;
    let (_, h, body) = post_chat(&a, &user("How do I reset my password?"), &[BOB]).await;
    assert_eq!(header(&h, "x-switchyard-cache"), "hit");
    assert!(content(&body).starts_with("cheap2 answer"));
    assert_eq!(c1.calls(), 1);
    assert!(metric(&a, "switchyard_shared_tier_entries_total{event=\"published\"}").await >= 1.0);
    assert!(metric(&b, "switchyard_shared_tier_entries_total{event=\"received\"}").await >= 1.0);

    // a replica started later replays the stream: warm from its first request
    let (c3, p3) = (MockUpstream::start("cheap3").await, MockUpstream::start("premium3").await);
    let c = gateway(replica_config(&c3, &p3, &redis_url)).await;
    wait_for_entries(&c, 2.0).await;
    let (_, h, _) = post_chat(&c, &user("How can I reset my password?"), &[ALICE]).await;
    assert_eq!(header(&h, "x-switchyard-cache"), "hit");
    assert_eq!(c3.calls(), 0);

    for g in [a, b, c] {
        g.shutdown().await;
    }
}

#[tokio::test]
async fn an_invalidation_on_one_replica_takes_the_answer_back_on_every_replica() {
    let r = start_redis().await;
    let redis_url = format!("redis://127.0.0.1:{}", r.port);
    let (c1, p1) = (MockUpstream::start("cheap1").await, MockUpstream::start("premium1").await);
    let (c2, p2) = (MockUpstream::start("cheap2").await, MockUpstream::start("premium2").await);
    let a = gateway(replica_config(&c1, &p1, &redis_url)).await;
    let b = gateway(replica_config(&c2, &p2, &redis_url)).await;
    let q = user("How do I reset my password?");
    post_chat(&a, &q, &[ALICE]).await;
    post_chat(&a, &q, &[BOB]).await;
    wait_for_entries(&b, 2.0).await;

    // alice takes her answer back on replica b, by a paraphrase
    let resp = reqwest::Client::new()
        .post(url(&b, "/v1/cache/invalidate"))
        .header(ALICE.0, ALICE.1)
        .json(&user("How can I reset my password?"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["deleted"], 1);
    // replica a hears of it through the stream
    for _ in 0..300 {
        if metric(&a, "switchyard_cache_entries").await <= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, h, body) = post_chat(&a, &q, &[ALICE]).await;
    assert_eq!(header(&h, "x-switchyard-cache"), "miss", "taken back on replica a too");
    assert_eq!(content(&body), "cheap1 answer #3 to: How do I reset my password?");
    let (_, h, _) = post_chat(&a, &q, &[BOB]).await;
    assert_eq!(header(&h, "x-switchyard-cache"), "hit", "bob's answer stays");
    assert_eq!(metric(&a, r#"switchyard_cache_removals_total{reason="invalidated"}"#).await, 1.0);

    // a replica started now replays insert, invalidation, insert: it serves the new answer
    let (c3, p3) = (MockUpstream::start("cheap3").await, MockUpstream::start("premium3").await);
    let c = gateway(replica_config(&c3, &p3, &redis_url)).await;
    // the replay is applied entry by entry: wait for its last step, not a count on the way
    for _ in 0..300 {
        let gone = metric(&c, r#"switchyard_cache_removals_total{reason="invalidated"}"#).await;
        if gone >= 1.0 && metric(&c, "switchyard_cache_entries").await >= 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, h, body) = post_chat(&c, &q, &[ALICE]).await;
    assert_eq!(header(&h, "x-switchyard-cache"), "hit");
    assert_eq!(content(&body), "cheap1 answer #3 to: How do I reset my password?");
    assert_eq!(c3.calls(), 0);
    for g in [a, b, c] {
        g.shutdown().await;
    }
}

async fn respond(g: &Running, body: &Value, key: &str) -> (u16, Value) {
    let r = reqwest::Client::new().post(url(g, "/v1/responses")).bearer_auth(key).json(body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn stored(g: &Running, id: &str, key: &str, method: reqwest::Method) -> u16 {
    let r = reqwest::Client::new().request(method, url(g, &format!("/v1/responses/{id}"))).bearer_auth(key);
    r.send().await.unwrap().status().as_u16()
}

/// Stored Responses across replicas: a follow-up by `previous_response_id` may reach any replica,
/// a delete on one is seen by all, another tenant finds nothing anywhere, and with Redis gone each
/// replica still continues what it holds itself.
#[tokio::test]
async fn a_response_stored_on_one_replica_is_continued_and_deleted_on_another() {
    use serde_json::json;
    let r = start_redis().await;
    let (c1, p1) = (MockUpstream::start("cheap1").await, MockUpstream::start("premium1").await);
    let (c2, p2) = (MockUpstream::start("cheap2").await, MockUpstream::start("premium2").await);
    let a = gateway(replica_config(&c1, &p1, &r.url())).await;
    let b = gateway(replica_config(&c2, &p2, &r.url())).await;

    let (st, first) = respond(&a, &json!({"model": "cheap", "input": "Plan a trip to Oslo"}), "key-alice").await;
    assert_eq!(st, 200, "{first}");
    let id = first["id"].as_str().unwrap().to_string();
    // the mirror is written in the background: wait for it (a bound, not a timing assertion)
    let mut found = false;
    for _ in 0..100 {
        if stored(&b, &id, "key-alice", reqwest::Method::GET).await == 200 {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(found, "replica b never saw the response stored on a");
    let next = json!({"model": "cheap", "input": "And in winter?", "previous_response_id": id});
    let (st, second) = respond(&b, &next, "key-alice").await;
    assert_eq!(st, 200);
    let msgs = c2.last_body()["messages"].clone();
    assert_eq!(msgs[0]["content"], "Plan a trip to Oslo", "{msgs}");
    assert_eq!(msgs[1]["content"], first["output"][0]["content"][0]["text"]);
    assert_eq!(msgs[2]["content"], "And in winter?");
    // its input items, listed by replica a: the turn made on a, then the one made on b
    let list_url = url(&a, &format!("/v1/responses/{}/input_items?order=asc", second["id"].as_str().unwrap()));
    let mut listed = Value::Null;
    for _ in 0..100 {
        let r = reqwest::Client::new().get(&list_url).bearer_auth("key-alice").send().await.unwrap();
        if r.status() == 200 {
            listed = r.json().await.unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let data = listed["data"].as_array().expect("replica a never saw the follow-up stored on b");
    assert_eq!(data.len(), 3, "{listed}");
    assert_eq!(data[0]["content"][0]["text"], "Plan a trip to Oslo");
    assert_eq!(data[1], first["output"][0]);
    assert_eq!(data[2]["content"][0]["text"], "And in winter?");
    // another tenant: nothing, on either replica
    assert_eq!(respond(&b, &next, "key-bob").await.0, 404);
    assert_eq!(stored(&a, &id, "key-bob", reqwest::Method::GET).await, 404);
    // deleted on b: gone on a too, although a holds its own copy
    assert_eq!(stored(&b, &id, "key-alice", reqwest::Method::DELETE).await, 200);
    assert_eq!(stored(&a, &id, "key-alice", reqwest::Method::GET).await, 404);
    assert_eq!(respond(&a, &next, "key-alice").await.0, 404);

    assert!(metric(&a, "switchyard_responses_redis_total{event=\"mirrored\"}").await >= 1.0);

    // Redis gone: a replica continues what it holds itself
    let (_, kept) = respond(&a, &json!({"model": "cheap", "input": "Name a fjord"}), "key-alice").await;
    drop(r);
    let follow = json!({"model": "cheap", "input": "How deep is it?", "previous_response_id": kept["id"]});
    let (st, body) = respond(&a, &follow, "key-alice").await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(c1.last_body()["messages"][0]["content"], "Name a fjord");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_gateway_whose_redis_is_down_still_serves() {
    // a port nobody listens on
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (cheap, premium) = (MockUpstream::start("cheap").await, MockUpstream::start("premium").await);
    let g = gateway(replica_config(&cheap, &premium, &format!("redis://:hunter2@127.0.0.1:{port}"))).await;
    let (s, h, _) = post_chat(&g, &user("What is the boiling point of water?"), &[ALICE]).await;
    assert_eq!((s, header(&h, "x-switchyard-cache")), (200, "miss"));
    // the local cache still works
    let (s, h, _) = post_chat(&g, &user("What is the boiling point of water?"), &[ALICE]).await;
    assert_eq!((s, header(&h, "x-switchyard-cache")), (200, "hit"));
    assert_eq!(cheap.calls(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = reqwest::get(url(&g, "/metrics")).await.unwrap().text().await.unwrap();
    check_exposition(&m);
    assert!(!m.contains("hunter2"), "the Redis password must not leak");
    assert!(metric(&g, "switchyard_shared_tier_errors_total").await >= 1.0, "{m}");
    g.shutdown().await;
}

/// Managed Redis services take TLS and a password: `rediss://:password@host`, with a private
/// CA's certificate in `cache.redis_ca`. Two replicas share an answer through a `redis-server`
/// that accepts nothing else; a replica that does not trust its certificate (no CA given, so the
/// system's roots) cannot connect, and serves on its own; the password shows nowhere.
#[tokio::test]
async fn replicas_share_answers_over_tls_with_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let (redis, ca) = common::redis_server::start_tls_redis(dir.path(), "tls-s3cret").await;
    let redis_url = format!("rediss://:tls-s3cret@127.0.0.1:{}", redis.port);
    let tls = |c: &MockUpstream, p: &MockUpstream, ca: Option<&std::path::Path>| {
        let ca = ca.map(|ca| format!("\nredis_ca = \"{}\"", ca.display())).unwrap_or_default();
        let extra = format!("gateway_keys = \"key-alice,key-bob\"\n[cache]\nbackend = \"{redis_url}\"{ca}");
        config_for(c, p, &extra)
    };
    let (c1, p1) = (MockUpstream::start("cheap1").await, MockUpstream::start("premium1").await);
    let (c2, p2) = (MockUpstream::start("cheap2").await, MockUpstream::start("premium2").await);
    let (c3, p3) = (MockUpstream::start("cheap3").await, MockUpstream::start("premium3").await);
    let a = gateway(tls(&c1, &p1, Some(&ca))).await;
    let b = gateway(tls(&c2, &p2, Some(&ca))).await;
    let untrusting = gateway(tls(&c3, &p3, None)).await;

    let (s, h, first) = post_chat(&a, &user("How do I reset my password?"), &[ALICE]).await;
    assert_eq!((s, header(&h, "x-switchyard-cache")), (200, "miss"));
    wait_for_entries(&b, 1.0).await;
    let (_, h, body) = post_chat(&b, &user("How can I reset my password?"), &[ALICE]).await;
    assert_eq!(header(&h, "x-switchyard-cache"), "hit", "shared over TLS");
    assert_eq!(content(&body), content(&first));
    assert_eq!(c2.calls(), 0);

    // no trust, no connection: it answers from its own upstream and counts the failures
    let (s, h, body) = post_chat(&untrusting, &user("How do I reset my password?"), &[ALICE]).await;
    assert_eq!((s, header(&h, "x-switchyard-cache")), (200, "miss"));
    assert!(content(&body).starts_with("cheap3 answer"));
    for _ in 0..100 {
        if metric(&untrusting, "switchyard_shared_tier_errors_total").await >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(metric(&untrusting, "switchyard_shared_tier_errors_total").await >= 1.0);
    assert_eq!(metric(&untrusting, "switchyard_shared_tier_entries_total{event=\"received\"}").await, 0.0);
    for g in [&a, &b, &untrusting] {
        let m = reqwest::get(url(g, "/metrics")).await.unwrap().text().await.unwrap();
        assert!(!m.contains("tls-s3cret"), "the Redis password must not leak");
    }
    for g in [a, b, untrusting] {
        g.shutdown().await;
    }
}

/// Sends a command with `redis-cli` without waiting for its answer (`DEBUG SLEEP` blocks it).
fn redis_cli(port: u16, args: &[&str]) -> Child {
    Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-cli must be installed (.ci/run installs redis-server)")
}

/// Asks every question of `qs` on `g` for `who`; every one must be answered.
async fn ask_all(g: &Running, qs: &[String], who: (&str, &str)) -> Vec<String> {
    let mut out = Vec::new();
    for q in qs {
        let (s, _, body) = post_chat(g, &user(q), &[who]).await;
        assert_eq!(s, 200, "a request failed because of Redis: {body}");
        out.push(content(&body));
    }
    out
}

#[tokio::test]
async fn redis_stopped_restarted_and_slowed_while_serving_fails_no_request() {
    let r = start_redis().await;
    let port = r.port;
    let redis_url = format!("redis://127.0.0.1:{port}");
    let (c1, p1) = (MockUpstream::start("cheap1").await, MockUpstream::start("premium1").await);
    let (c2, p2) = (MockUpstream::start("cheap2").await, MockUpstream::start("premium2").await);
    let a = gateway(replica_config(&c1, &p1, &redis_url)).await;
    let b = gateway(replica_config(&c2, &p2, &redis_url)).await;
    // distinct topics per phase, so no answer is a semantic hit for another phase's question
    let qs = |tag: &str| -> Vec<String> {
        let topics: &[&str] = match tag {
            "slow" => &["How do tides work?", "What causes inflation?", "How do vaccines train the immune system?"],
            "paused" => &["Why do cats purr?", "How is steel made?", "What is a black hole?"],
            "down" => &[
                "How do I bake sourdough bread?",
                "What is the tallest mountain in Africa?",
                "How do solar panels make electricity?",
            ],
            "down, on b" => {
                &["How do bees make honey?", "Who painted the Sistine Chapel ceiling?", "Why does ice float?"]
            }
            _ => &["What does a compiler do?"],
        };
        topics.iter().map(|t| t.to_string()).collect()
    };

    // slowed: the whole server sleeps 3 s, then clients are paused 2 s, while both replicas serve
    let mut sleeper = redis_cli(port, &["DEBUG", "SLEEP", "3"]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    ask_all(&a, &qs("slow"), ALICE).await;
    ask_all(&b, &qs("slow"), BOB).await;
    let _ = sleeper.wait();
    let _ = redis_cli(port, &["CLIENT", "PAUSE", "2000", "ALL"]).wait();
    ask_all(&a, &qs("paused"), ALICE).await;

    // stopped: killed outright; both replicas keep serving, their local caches too
    drop(r);
    let down = qs("down");
    let answers = ask_all(&a, &down, ALICE).await;
    assert_eq!(ask_all(&a, &down, ALICE).await, answers, "the local cache serves while Redis is down");
    ask_all(&b, &qs("down, on b"), BOB).await;
    let errors_while_down = metric(&a, "switchyard_shared_tier_errors_total").await;

    // restarted, empty: the answers a stored while Redis was down reach b once it is back
    let published_before = metric(&a, "switchyard_shared_tier_entries_total{event=\"published\"}").await;
    let entries_before = metric(&b, "switchyard_cache_entries").await;
    let _r = start_redis_on(port).await;
    wait_for_entries(&b, entries_before + 3.0).await;
    assert!(metric(&a, "switchyard_shared_tier_entries_total{event=\"published\"}").await >= published_before + 3.0);
    let calls = (c1.calls(), c2.calls());
    for (q, answer) in down.iter().zip(&answers) {
        let (s, h, body) = post_chat(&b, &user(q), &[ALICE]).await;
        assert_eq!(
            (s, header(&h, "x-switchyard-cache")),
            (200, "hit"),
            "b caught up on what a answered during the outage"
        );
        assert_eq!(&content(&body), answer);
    }
    // never across tenants: bob asking the same on b is a miss answered by b's own upstream
    let (s, h, body) = post_chat(&b, &user(&down[0]), &[BOB]).await;
    assert_eq!((s, header(&h, "x-switchyard-cache")), (200, "miss"));
    assert!(content(&body).starts_with("cheap2 answer"), "{body}");
    assert_eq!((c1.calls(), c2.calls()), (calls.0, calls.1 + 1));
    // and mirroring goes on as before
    let entries_before = metric(&b, "switchyard_cache_entries").await;
    let fresh = qs("after");
    ask_all(&a, &fresh, ALICE).await;
    wait_for_entries(&b, entries_before + 1.0).await;
    let (_, h, _) = post_chat(&b, &user(&fresh[0]), &[ALICE]).await;
    assert_eq!(header(&h, "x-switchyard-cache"), "hit");
    assert!(errors_while_down >= 1.0, "the outage was seen and counted");
    for g in [a, b] {
        g.shutdown().await;
    }
}

#[test]
fn a_bad_backend_is_refused_with_the_key_named() {
    let err = Config::parse("[cache]\nbackend = \"memcached://x\"").unwrap_err().to_string();
    assert!(err.contains("cache.backend"), "{err}");
}
