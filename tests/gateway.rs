#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The gateway end to end: real model, real index, real HTTP on loopback, mock upstreams that
//! count their calls.

mod common;

use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::time::Duration;

fn content(body: &Value) -> String {
    body["choices"][0]["message"]["content"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn exact_semantic_and_namespace_rules() {
    let (cheap, premium) = (MockUpstream::start("cheap").await, MockUpstream::start("premium").await);
    let g = gateway(config_for(&cheap, &premium, "")).await;

    let q = user("How do I reset my password?");
    let (s, h, first) = post_chat(&g, &q, &[]).await;
    assert_eq!(s, 200, "{first}");
    assert_eq!(header(&h, "x-switchyard-cache"), "miss");
    assert_eq!(header(&h, "x-switchyard-tier"), "cheap");
    assert_eq!(header(&h, "x-switchyard-model"), "mini");
    assert_eq!(header(&h, "x-switchyard-provider"), "cheap");
    assert!(header(&h, "x-request-id").starts_with("req_"));
    // 10 prompt tokens at $1/M + 20 completion tokens at $2/M
    assert_eq!(header(&h, "x-switchyard-cost").parse::<f64>().unwrap(), 0.00005);
    assert_eq!(cheap.calls(), 1);

    // identical: exact path, no upstream call, fresh id
    let (s, h, again) = post_chat(&g, &q, &[]).await;
    assert_eq!(s, 200);
    assert_eq!(header(&h, "x-switchyard-cache"), "hit");
    assert_eq!(header(&h, "x-switchyard-similarity"), "1.0000");
    assert_eq!(header(&h, "x-switchyard-cost").parse::<f64>().unwrap(), 0.0);
    assert_eq!(header(&h, "x-switchyard-cost-saved").parse::<f64>().unwrap(), 0.00005);
    assert_eq!(content(&again), content(&first));
    assert_ne!(again["id"], first["id"]);
    assert_eq!(cheap.calls(), 1);

    // paraphrase: semantic hit
    let (_, h, para) = post_chat(&g, &user("How can I reset my password?"), &[]).await;
    assert_eq!(header(&h, "x-switchyard-cache"), "hit", "paraphrase should hit");
    let sim: f32 = header(&h, "x-switchyard-similarity").parse().unwrap();
    assert!(sim > 0.965 && sim < 1.0, "similarity {sim}");
    assert_eq!(content(&para), content(&first));
    assert_eq!(cheap.calls(), 1);

    // unrelated: miss
    let (_, h, _) = post_chat(&g, &user("What is the boiling point of water at sea level?"), &[]).await;
    assert_eq!(header(&h, "x-switchyard-cache"), "miss");
    assert_eq!(cheap.calls(), 2);

    // same question, different system prompt: miss
    let with_system = json!({"model": "cheap", "messages": [
        {"role": "system", "content": "Answer like a pirate."},
        {"role": "user", "content": "How do I reset my password?"}]});
    let (_, h, _) = post_chat(&g, &with_system, &[]).await;
    assert_eq!(header(&h, "x-switchyard-cache"), "miss");
    assert_eq!(cheap.calls(), 3);

    // same question after an earlier turn: miss
    let later_turn = json!({"model": "cheap", "messages": [
        {"role": "user", "content": "I use the mobile app."},
        {"role": "assistant", "content": "Got it."},
        {"role": "user", "content": "How do I reset my password?"}]});
    let (_, h, _) = post_chat(&g, &later_turn, &[]).await;
    assert_eq!(header(&h, "x-switchyard-cache"), "miss");
    assert_eq!(cheap.calls(), 4);

    // different output-shaping parameters: miss
    let mut hot = q.clone();
    hot["temperature"] = json!(1.8);
    let (_, h, _) = post_chat(&g, &hot, &[]).await;
    assert_eq!(header(&h, "x-switchyard-cache"), "miss");
    assert_eq!(cheap.calls(), 5);

    // a near miss that differs in a number is not served, however close it embeds
    let (_, _, _) = post_chat(&g, &user("Is the iPhone 13 waterproof?"), &[]).await;
    let (_, h, _) = post_chat(&g, &user("Is the iPhone 14 waterproof?"), &[]).await;
    assert_eq!(header(&h, "x-switchyard-cache"), "miss");
    assert_eq!(cheap.calls(), 7);
    g.shutdown().await;
}

#[tokio::test]
async fn tenants_never_share_answers_and_keys_are_enforced() {
    let (cheap, premium) = (MockUpstream::start("cheap").await, MockUpstream::start("premium").await);
    std::env::set_var("SWITCHYARD_TEST_KEYS_A", "key-alpha,key-beta");
    let g = gateway(config_for(&cheap, &premium, r#"gateway_keys = "env:SWITCHYARD_TEST_KEYS_A""#)).await;
    let q = user("How do I reset my password?");
    let (s, _, body) = post_chat(&g, &q, &[]).await;
    assert_eq!(s, 401);
    assert_eq!(body["error"]["code"], "invalid_api_key");
    let (s, _, _) = post_chat(&g, &q, &[("authorization", "Bearer wrong")]).await;
    assert_eq!(s, 401);
    assert_eq!(cheap.calls(), 0);

    let (s, h, _) = post_chat(&g, &q, &[("authorization", "Bearer key-alpha")]).await;
    assert_eq!((s, header(&h, "x-switchyard-cache")), (200, "miss"));
    let (_, h, _) = post_chat(&g, &q, &[("authorization", "Bearer key-alpha")]).await;
    assert_eq!(header(&h, "x-switchyard-cache"), "hit");
    let (_, h, _) = post_chat(&g, &q, &[("authorization", "Bearer key-beta")]).await;
    assert_eq!(header(&h, "x-switchyard-cache"), "miss", "another tenant must not see tenant A's answer");
    assert_eq!(cheap.calls(), 2);
    // the gateway key is not the provider key: upstream saw the provider's
    assert_eq!(header(&cheap.last_headers(), "authorization"), "Bearer sk-cheap-secret-key");
    g.shutdown().await;
}

#[tokio::test]
async fn cache_control_and_threshold_header() {
    let (cheap, premium) = (MockUpstream::start("cheap").await, MockUpstream::start("premium").await);
    let g = gateway(config_for(&cheap, &premium, "")).await;
    let q = user("How do I reset my password?");
    // no-store: neither looked up nor stored
    let (_, h, _) = post_chat(&g, &q, &[("cache-control", "no-store")]).await;
    assert_eq!(header(&h, "x-switchyard-cache"), "bypass");
    let (_, h, _) = post_chat(&g, &q, &[]).await;
    assert_eq!(header(&h, "x-switchyard-cache"), "miss");
    // no-cache: skips the lookup, still stores
    let (_, h, _) = post_chat(&g, &q, &[("cache-control", "no-cache")]).await;
    assert_eq!(header(&h, "x-switchyard-cache"), "miss");
    assert_eq!(cheap.calls(), 3);
    // max-age=0 excludes everything older than now… an entry stored this second is still 0 s old
    let (_, h, _) = post_chat(&g, &q, &[("cache-control", "max-age=3600")]).await;
    assert_eq!(header(&h, "x-switchyard-cache"), "hit");
    // a per-request threshold may raise the bar…
    let para = user("How can I reset my password?");
    let (_, h, _) = post_chat(&g, &para, &[("x-switchyard-cache-threshold", "0.9999")]).await;
    assert_eq!(header(&h, "x-switchyard-cache"), "miss");
    // …but never lower it below the configured one
    let loose = user("How do I change my email address?");
    let (_, h, _) = post_chat(&g, &loose, &[("x-switchyard-cache-threshold", "0.1")]).await;
    assert_eq!(header(&h, "x-switchyard-cache"), "miss");
    let (s, _, body) = post_chat(&g, &q, &[("x-switchyard-cache-threshold", "lots")]).await;
    assert_eq!(s, 400);
    assert_eq!(body["error"]["param"], "x-switchyard-cache-threshold");
    g.shutdown().await;
}

#[tokio::test]
async fn truncated_answers_are_not_cached() {
    let (cheap, premium) = (MockUpstream::start("cheap").await, MockUpstream::start("premium").await);
    let g = gateway(config_for(&cheap, &premium, "")).await;
    cheap.then(Behavior::Truncated);
    let q = user("Write a long essay about rivers.");
    let (_, _, b) = post_chat(&g, &q, &[]).await;
    assert_eq!(b["choices"][0]["finish_reason"], "length");
    let (_, h, _) = post_chat(&g, &q, &[]).await;
    assert_eq!(header(&h, "x-switchyard-cache"), "miss");
    assert_eq!(cheap.calls(), 2);
    g.shutdown().await;
}

#[tokio::test]
async fn concurrent_identical_misses_make_one_upstream_call() {
    let cheap = MockUpstream::start_with("cheap", Duration::from_millis(400)).await;
    let premium = MockUpstream::start("premium").await;
    let g = gateway(config_for(&cheap, &premium, "")).await;
    let q = user("What is the tallest mountain in Africa?");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let body = q.clone();
        let u = url(&g, "/v1/chat/completions");
        tasks.push(tokio::spawn(async move {
            let r = reqwest::Client::new().post(u).json(&body).send().await.unwrap();
            let cache = r.headers()["x-switchyard-cache"].to_str().unwrap().to_string();
            let v: Value = r.json().await.unwrap();
            (cache, v["choices"][0]["message"]["content"].as_str().unwrap().to_string())
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    assert_eq!(cheap.calls(), 1, "identical concurrent misses must be coalesced");
    assert_eq!(results.iter().filter(|(c, _)| c == "miss").count(), 1);
    assert!(results.iter().all(|(_, text)| text == &results[0].1));
    g.shutdown().await;
}

/// Reads an SSE response with a real SSE client (eventsource-stream).
async fn sse(resp: reqwest::Response) -> (Vec<Value>, bool) {
    use eventsource_stream::Eventsource;
    let mut events = resp.bytes_stream().eventsource();
    let mut out = Vec::new();
    let mut done = false;
    while let Some(ev) = events.next().await {
        let ev = ev.unwrap();
        if ev.data == "[DONE]" {
            done = true;
            break;
        }
        out.push(serde_json::from_str(&ev.data).unwrap());
    }
    (out, done)
}

fn joined(chunks: &[Value]) -> String {
    chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect()
}

#[tokio::test]
async fn streaming_from_upstream_and_from_cache() {
    let (cheap, premium) = (MockUpstream::start("cheap").await, MockUpstream::start("premium").await);
    let g = gateway(config_for(&cheap, &premium, "")).await;
    let client = reqwest::Client::new();
    let body = json!({"model": "cheap", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "Name three rivers in Europe."}]});

    let r = client.post(url(&g, "/v1/chat/completions")).json(&body).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    assert_eq!(r.headers()["x-switchyard-cache"], "miss");
    let (chunks, done) = sse(r).await;
    assert!(done);
    let text = joined(&chunks);
    assert_eq!(text, "cheap answer #1 to: Name three rivers in Europe.");
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
    assert_eq!(chunks.last().unwrap()["usage"]["total_tokens"], 30, "include_usage honoured");
    // the upstream was asked for usage whatever the client asked
    assert_eq!(cheap.last_body()["stream_options"]["include_usage"], true);

    // the streamed answer was stored; replayed as a stream…
    let r = client.post(url(&g, "/v1/chat/completions")).json(&body).send().await.unwrap();
    assert_eq!(r.headers()["x-switchyard-cache"], "hit");
    let (replayed, done) = sse(r).await;
    assert!(done);
    assert_eq!(joined(&replayed), text);
    assert!(replayed.iter().any(|c| c["choices"][0]["finish_reason"] == "stop"));
    // …and as JSON to a non-streaming request for the same question
    let mut plain = body.clone();
    plain.as_object_mut().unwrap().remove("stream");
    plain.as_object_mut().unwrap().remove("stream_options");
    let (_, h, json_body) = post_chat(&g, &plain, &[]).await;
    assert_eq!(header(&h, "x-switchyard-cache"), "hit");
    assert_eq!(content(&json_body), text);

    // a JSON-stored answer replays as a stream; usage only when asked
    let (_, _, _) = post_chat(&g, &user("Name three rivers in Asia."), &[]).await;
    let r = client
        .post(url(&g, "/v1/chat/completions"))
        .json(&json!({"model": "cheap", "stream": true, "messages": [{"role": "user", "content": "Name three rivers in Asia."}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-switchyard-cache"], "hit");
    let (chunks, _) = sse(r).await;
    assert_eq!(joined(&chunks), "cheap answer #2 to: Name three rivers in Asia.");
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    assert_eq!(cheap.calls(), 2);
    g.shutdown().await;
}

async fn invalidate(g: &switchyard::app::Running, body: &Value, key: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(url(g, "/v1/cache/invalidate"))
        .header("authorization", format!("Bearer {key}"))
        .json(body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn an_invalidation_takes_back_what_would_answer_a_prompt_for_its_tenant_only() {
    let (cheap, premium) = (MockUpstream::start("cheap").await, MockUpstream::start("premium").await);
    std::env::set_var("SWITCHYARD_TEST_KEYS_INV", "key-alpha,key-beta");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config_for(&cheap, &premium, r#"gateway_keys = "env:SWITCHYARD_TEST_KEYS_INV""#);
    cfg.cache.snapshot = Some(dir.path().join("cache.snap"));
    let g = gateway(cfg.clone()).await;
    let (alpha, beta) = (("authorization", "Bearer key-alpha"), ("authorization", "Bearer key-beta"));
    let reset = user("How do I reset my password?");
    for who in [alpha, beta] {
        post_chat(&g, &reset, &[who]).await;
    }
    post_chat(&g, &user("What is the capital of Australia?"), &[alpha]).await;
    assert_eq!(cheap.calls(), 3);

    // a paraphrase finds the entry it would be served (a semantic neighbour, not the same text)
    let (s, body) = invalidate(&g, &user("How can I reset my password?"), "key-alpha").await;
    assert_eq!((s, &body), (200, &json!({"object": "cache.invalidation", "deleted": 1})));
    assert_eq!(metric(&g, r#"switchyard_cache_removals_total{reason="invalidated"}"#).await, 1.0);
    let (_, h, _) = post_chat(&g, &reset, &[alpha]).await;
    assert_eq!(header(&h, "x-switchyard-cache"), "miss", "alpha's answer was taken back");
    assert_eq!(cheap.calls(), 4);
    // beta's copy of the same question, and alpha's other answers, are untouched
    for (q, who) in [(&reset, beta), (&user("What is the capital of Australia?"), alpha)] {
        let (_, h, _) = post_chat(&g, q, &[who]).await;
        assert_eq!(header(&h, "x-switchyard-cache"), "hit");
    }
    // an unrelated prompt takes nothing back; the cache's namespace rules apply (another model
    // or temperature is another namespace)
    let (s, body) = invalidate(&g, &user("What is the tallest mountain in Europe?"), "key-alpha").await;
    assert_eq!((s, body["deleted"].as_u64()), (200, Some(0)));
    let mut hot = user("What is the capital of Australia?");
    hot["temperature"] = json!(1.5);
    assert_eq!(invalidate(&g, &hot, "key-alpha").await.1["deleted"], 0);

    // a bad key, a bad body, an unknown model: the usual errors, nothing removed
    assert_eq!(invalidate(&g, &reset, "wrong").await.0, 401);
    let (s, e) = invalidate(&g, &json!({"model": "cheap", "messages": "hi"}), "key-alpha").await;
    assert_eq!((s, e["error"]["param"].as_str()), (400, Some("messages")), "{e}");
    let (s, _) =
        invalidate(&g, &json!({"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}), "key-alpha").await;
    assert_eq!(s, 404);

    // taken back for good: a restart from the snapshot does not bring it back
    let (s, body) = invalidate(&g, &user("What is the capital of Australia?"), "key-alpha").await;
    assert_eq!((s, body["deleted"].as_u64()), (200, Some(1)));
    g.shutdown().await;
    let g = gateway(cfg).await;
    let (_, h, _) = post_chat(&g, &user("What is the capital of Australia?"), &[alpha]).await;
    assert_eq!(header(&h, "x-switchyard-cache"), "miss");
    let (_, h, _) = post_chat(&g, &reset, &[beta]).await;
    assert_eq!(header(&h, "x-switchyard-cache"), "hit");
    g.shutdown().await;
}

#[tokio::test]
async fn snapshot_survives_a_restart() {
    let (cheap, premium) = (MockUpstream::start("cheap").await, MockUpstream::start("premium").await);
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("cache.snap");
    let extra = format!("[cache]\nsnapshot = {:?}", snap.display().to_string());
    let cfg = config_for(&cheap, &premium, "");
    let mut cfg_text = cfg.clone();
    cfg_text.cache.snapshot = Some(snap.clone());
    let _ = extra;
    let g = gateway(cfg_text.clone()).await;
    post_chat(&g, &user("How do I reset my password?"), &[]).await;
    post_chat(&g, &user("What is the capital of Australia?"), &[]).await;
    g.shutdown().await; // drains and writes the snapshot
    assert!(snap.exists());
    assert_eq!(cheap.calls(), 2);

    let g = gateway(cfg_text).await;
    let (_, h, body) = post_chat(&g, &user("How can I reset my password?"), &[]).await;
    assert_eq!(header(&h, "x-switchyard-cache"), "hit");
    assert_eq!(content(&body), "cheap answer #1 to: How do I reset my password?");
    let (_, h, _) = post_chat(&g, &user("What is the capital of Australia?"), &[]).await;
    assert_eq!(header(&h, "x-switchyard-cache"), "hit");
    assert_eq!(cheap.calls(), 2);
    g.shutdown().await;
}

#[tokio::test]
async fn bad_input_gets_openai_errors_and_the_server_keeps_serving() {
    let (cheap, premium) = (MockUpstream::start("cheap").await, MockUpstream::start("premium").await);
    let g = gateway(config_for(&cheap, &premium, "")).await;
    let client = reqwest::Client::new();
    let u = url(&g, "/v1/chat/completions");
    let raw = |body: Vec<u8>| client.post(&u).header("content-type", "application/json").body(body).send();

    // (body, status, in the message, `param`: the field a wrong shape is about, as OpenAI names it)
    let cases: Vec<(Vec<u8>, u16, &str, Option<&str>)> = vec![
        (b"{not json".to_vec(), 400, "not valid JSON", None),
        (b"".to_vec(), 400, "empty", None),
        (br#"{"model": 5, "messages": []}"#.to_vec(), 400, "invalid type", Some("model")),
        (br#"{"model": "cheap", "messages": "hi"}"#.to_vec(), 400, "invalid type", Some("messages")),
        (br#"{"model": "cheap", "messages": []}"#.to_vec(), 400, "at least one message", Some("messages")),
        (
            br#"{"model": "cheap", "messages": [{"role": "wizard", "content": "hi"}]}"#.to_vec(),
            400,
            "unknown variant",
            Some("messages[0].role"),
        ),
        (
            br#"{"model": "cheap", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}"#.to_vec(),
            400,
            "invalid type",
            Some("temperature"),
        ),
        (br#"{"messages": [{"role": "user", "content": "hi"}]}"#.to_vec(), 400, "missing field", Some("model")),
        (
            br#"{"model": "cheap", "messages": [{"role": "user", "content": "hi"}], "temperature": 7}"#.to_vec(),
            400,
            "temperature",
            Some("temperature"),
        ),
        (
            br#"{"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}"#.to_vec(),
            404,
            "does not exist",
            None,
        ),
    ];
    for (body, status, needle, param) in cases {
        let r = raw(body.clone()).await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{}", String::from_utf8_lossy(&body));
        let v: Value = r.json().await.unwrap();
        let err = &v["error"];
        assert!(err["message"].as_str().unwrap().contains(needle), "{v}");
        assert!(err["type"].is_string() && err.get("param").is_some() && err.get("code").is_some(), "{v}");
        assert_eq!(err["param"].as_str(), param, "{v}");
    }
    // 10 MB body
    let mut big = br#"{"model": "cheap", "messages": [{"role": "user", "content": ""#.to_vec();
    big.extend(std::iter::repeat_n(b'a', 10 * 1024 * 1024));
    big.extend(br#""}]}"#);
    let r = raw(big).await.unwrap();
    assert_eq!(r.status().as_u16(), 413);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "request_too_large");
    // unknown route
    let r = client.get(url(&g, "/v1/nope")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert!(r.json::<Value>().await.unwrap()["error"]["message"].is_string());

    assert_eq!(cheap.calls(), 0, "nothing bad reached the upstream");
    let (s, _, _) = post_chat(&g, &user("still there?"), &[]).await;
    assert_eq!(s, 200);
    g.shutdown().await;
}

#[tokio::test]
async fn models_embeddings_health_metrics_and_passthrough() {
    let (cheap, premium) = (MockUpstream::start("cheap").await, MockUpstream::start("premium").await);
    let g = gateway(config_for(&cheap, &premium, "")).await;
    let client = reqwest::Client::new();

    let models: Value = client.get(url(&g, "/v1/models")).send().await.unwrap().json().await.unwrap();
    let ids: Vec<&str> = models["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    for want in ["auto", "cheap", "premium", "mini", "large"] {
        assert!(ids.contains(&want), "{ids:?}");
    }

    let emb: Value = client
        .post(url(&g, "/v1/embeddings"))
        .json(&json!({"input": ["How do I reset my password?", "How can I reset my password?"], "model": "all-MiniLM-L6-v2"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let a: Vec<f32> = serde_json::from_value(emb["data"][0]["embedding"].clone()).unwrap();
    let b: Vec<f32> = serde_json::from_value(emb["data"][1]["embedding"].clone()).unwrap();
    assert_eq!(a.len(), 384);
    let cos: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
    assert!(cos > 0.95, "{cos}");
    assert!(emb["usage"]["prompt_tokens"].as_u64().unwrap() >= 16);

    // unknown fields pass through to an OpenAI-compatible upstream; concrete model names route
    let body = json!({"model": "large", "messages": [{"role": "user", "content": "hi"}], "logit_bias": {"50256": -100}, "presence_penalty": 0.5});
    let (s, h, _) = post_chat(&g, &body, &[]).await;
    assert_eq!(s, 200);
    assert_eq!(header(&h, "x-switchyard-tier"), "premium");
    assert_eq!(premium.last_body()["logit_bias"]["50256"], -100);
    assert_eq!(premium.last_body()["presence_penalty"], 0.5);
    assert_eq!(premium.last_body()["model"], "large");

    let health: Value = client.get(url(&g, "/health")).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");
    let metrics = client.get(url(&g, "/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("switchyard_requests_total{cache=\"miss\"} 1"), "{metrics}");
    check_exposition(&metrics);
    assert!(metrics.contains("switchyard_cache_entries 1"));
    assert!(metrics.contains("switchyard_breaker_state{deployment=\"premium:large\"} 0"));
    assert!(!metrics.contains("sk-premium-secret-key") && !metrics.contains("sk-cheap-secret-key"));
    g.shutdown().await;
}

#[tokio::test]
async fn without_a_trained_router_auto_uses_the_length_baseline() {
    let (cheap, premium) = (MockUpstream::start("cheap").await, MockUpstream::start("premium").await);
    let no_router = tempfile::tempdir().unwrap();
    let extra = format!("[router]\nthreshold = 0.5\nmodel_dir = {:?}", no_router.path().display().to_string());
    let g = gateway(config_for(&cheap, &premium, &extra)).await;
    let (_, h, _) =
        post_chat(&g, &json!({"model": "auto", "messages": [{"role": "user", "content": "hi there"}]}), &[]).await;
    assert_eq!(header(&h, "x-switchyard-tier"), "cheap");
    assert!(header(&h, "x-switchyard-route-score").parse::<f32>().unwrap() < 0.5);
    let long = "Explain, step by step and with proofs, ".repeat(30);
    let (_, h, _) =
        post_chat(&g, &json!({"model": "auto", "messages": [{"role": "user", "content": long}]}), &[]).await;
    assert_eq!(header(&h, "x-switchyard-tier"), "premium");
    assert_eq!((cheap.calls(), premium.calls()), (1, 1));
    g.shutdown().await;
}

#[tokio::test]
async fn images_go_only_to_vision_deployments() {
    let (cheap, premium) = (MockUpstream::start("cheap").await, MockUpstream::start("premium").await);
    let mut cfg = config_for(&cheap, &premium, "");
    cfg.tiers.insert(
        "premium".into(),
        switchyard::config::TierSpec::List(vec![switchyard::config::DeploymentSpec::Full(
            switchyard::config::DeploymentTable {
                provider: "premium".into(),
                model: "large".into(),
                vision: true,
                reasoning: false,
                weight: None,
                max_concurrency: None,
            },
        )]),
    );
    let g = gateway(cfg).await;
    let image = |model: &str| {
        json!({"model": model, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]})
    };
    let (s, _, body) = post_chat(&g, &image("cheap"), &[]).await;
    assert_eq!(s, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("vision"));
    let (s, h, _) = post_chat(&g, &image("premium"), &[]).await;
    assert_eq!(s, 200);
    assert_eq!(header(&h, "x-switchyard-provider"), "premium");
    assert_eq!(
        premium.last_body()["messages"][0]["content"][1]["image_url"]["url"],
        "data:image/png;base64,iVBORw0KGgo="
    );
    assert_eq!(cheap.calls(), 0);
    g.shutdown().await;
}

#[tokio::test]
async fn answers_from_dated_model_snapshots_are_priced_by_the_configured_model() {
    let (cheap, premium) = (MockUpstream::start("cheap").await, MockUpstream::start("premium").await);
    cheap.then(Behavior::Dated).then(Behavior::Dated);
    let g = gateway(config_for(&cheap, &premium, "")).await;
    // non-stream: the cost header prices 10 prompt + 20 completion tokens of `mini` ($1/$2 per M)
    let (_, h, body) = post_chat(&g, &user("What is the tallest mountain in Africa?"), &[]).await;
    assert_eq!(body["model"], "mini-2024-07-18", "the client sees the upstream's model name");
    assert_eq!(header(&h, "x-switchyard-cost"), "0.00005000");
    // stream: priced when it ends, into the spend metric
    let body =
        json!({"model": "cheap", "stream": true, "messages": [{"role": "user", "content": "Name a river in Peru."}]});
    let r = reqwest::Client::new().post(url(&g, "/v1/chat/completions")).json(&body).send().await.unwrap();
    let (chunks, done) = sse(r).await;
    assert!(done && chunks.iter().all(|c| c["model"] == "mini-2024-07-18"));
    let metrics = reqwest::get(url(&g, "/metrics")).await.unwrap().text().await.unwrap();
    let spent: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("switchyard_cost_usd_total{model=\"mini\"} "))
        .unwrap_or_else(|| panic!("no spend for mini: {metrics}"))
        .parse()
        .unwrap();
    assert!((spent - 0.0001).abs() < 1e-9, "two calls of $0.00005, got {spent}");
    g.shutdown().await;
}

/// `/v1/embeddings` serves the model asked for: the local MiniLM under its own name (or no
/// name), an upstream model's deployments under `[embeddings]` (failover, the provider's key,
/// the client's fields passed through, priced, logged), and a 404 for anything else — never
/// another model's vectors under the name asked for.
#[tokio::test]
async fn embeddings_are_from_the_model_asked_for() {
    let (cheap, premium) = (MockUpstream::start("cheap").await, MockUpstream::start("premium").await);
    let (first, second) = (MockUpstream::start("emb1").await, MockUpstream::start("emb2").await);
    for _ in 0..2 {
        first.then(Behavior::Status(503, None)); // both attempts on the first deployment
    }
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        r#"
        [log]
        path = "{log}"
        [embeddings]
        models = ["{a}:text-embedding-3-small", "{b}:text-embedding-3-small"]
        local_aliases = ["text-embedding-ada-002"]
        [providers.{a}]
        kind = "openai"
        base_url = "{au}"
        api_key = "sk-emb1-provider-key"
        [providers.{b}]
        kind = "openai"
        base_url = "{bu}"
        api_key = "sk-emb2-provider-key"
        "#,
        log = dir.path().join("requests.jsonl").display(),
        a = first.name,
        b = second.name,
        au = first.base_url(),
        bu = second.base_url(),
    );
    let g = gateway(config_for(&cheap, &premium, &format!("gateway_keys = \"sk-gw-tenant\"\n{extra}"))).await;
    let client = reqwest::Client::new();
    let embed = |body: Value| {
        let req = client.post(url(&g, "/v1/embeddings")).bearer_auth("sk-gw-tenant").json(&body);
        async move {
            let r = req.send().await.unwrap();
            let (status, headers) = (r.status().as_u16(), r.headers().clone());
            (status, headers, r.json::<Value>().await.unwrap())
        }
    };

    // the local model: by its name, by no name, or by an alias the operator chose (the answer
    // still names the model that made it)
    for body in [
        json!({"input": "hello"}),
        json!({"model": "all-MiniLM-L6-v2", "input": "hello"}),
        json!({"model": "text-embedding-ada-002", "input": "hello"}),
    ] {
        let (s, _, e) = embed(body).await;
        assert_eq!(s, 200, "{e}");
        assert_eq!(e["model"], "all-MiniLM-L6-v2");
        assert_eq!(e["data"][0]["embedding"].as_array().unwrap().len(), 384);
    }
    assert_eq!(first.calls() + second.calls(), 0);

    // an upstream model: its deployments in order, the client's fields passed on
    let (s, h, e) = embed(json!({"model": "text-embedding-3-small", "input": ["one two three", "four"],
        "dimensions": 256, "user": "u-42", "encoding_format": "float"}))
    .await;
    assert_eq!(s, 200, "{e}");
    assert_eq!((first.calls(), second.calls()), (2, 1), "two attempts on the failing one, then failover");
    assert_eq!((header(&h, "x-switchyard-provider"), header(&h, "x-switchyard-attempts")), ("emb2", "3"));
    assert_eq!(e["data"].as_array().unwrap().len(), 2);
    assert_eq!(e["data"][1]["embedding"].as_array().unwrap().len(), 256, "`dimensions` reached the upstream");
    assert_eq!(e["usage"]["prompt_tokens"], 4);
    let sent = second.last_body();
    assert_eq!((sent["model"].as_str(), sent["user"].as_str()), (Some("text-embedding-3-small"), Some("u-42")));
    let auth = second.last_headers()["authorization"].to_str().unwrap().to_string();
    assert_eq!(auth, "Bearer sk-emb2-provider-key", "the provider's key upstream, never the gateway key");
    // 4 tokens at the catalog's $0.02 per million
    assert_eq!(header(&h, "x-switchyard-cost"), "0.00000008");
    let metrics = client.get(url(&g, "/metrics")).send().await.unwrap().text().await.unwrap();
    let spent: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("switchyard_cost_usd_total{model=\"text-embedding-3-small\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no spend for the embedding model in /metrics"));
    assert!((spent - 8e-8).abs() < 1e-12, "{spent}");

    // base64, as the OpenAI SDKs ask by default: passed through as the upstream wrote it
    let (s, _, e) = embed(json!({"model": "text-embedding-3-small", "input": "x", "encoding_format": "base64"})).await;
    assert_eq!(s, 200, "{e}");
    assert_eq!(e["data"][0]["embedding"].as_str().unwrap().len(), 8192, "1536 f32s (6144 bytes) in base64");

    // any other name: 404, naming what is served
    let (s, _, e) = embed(json!({"model": "text-embedding-3-large", "input": "hello"})).await;
    assert_eq!(s, 404, "{e}");
    assert_eq!(e["error"]["code"], "model_not_found");
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(msg.contains("all-MiniLM-L6-v2") && msg.contains("text-embedding-3-small"), "{msg}");
    // a bad body is the client's 400 before any call
    let calls = second.calls();
    let (s, _, e) = embed(json!({"model": "text-embedding-3-small", "input": 5})).await;
    assert_eq!(s, 400, "{e}");
    assert_eq!(second.calls(), calls);

    // listed, and recorded in the request log like a chat call
    let models: Value =
        client.get(url(&g, "/v1/models")).bearer_auth("sk-gw-tenant").send().await.unwrap().json().await.unwrap();
    let ids: Vec<&str> = models["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&"all-MiniLM-L6-v2") && ids.contains(&"text-embedding-3-small"), "{ids:?}");
    g.shutdown().await;
    let log = std::fs::read_to_string(dir.path().join("requests.jsonl")).unwrap();
    let records: Vec<Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let rec = records.iter().find(|r| r["status"] == 200).unwrap();
    assert_eq!(rec["model"], "text-embedding-3-small");
    assert_eq!((rec["deployment"].as_str(), rec["attempts"].as_u64()), (Some("emb2:text-embedding-3-small"), Some(3)));
    assert_eq!(rec["prompt_tokens"], 4);
    assert!(records.iter().any(|r| r["status"] == 404 && r["error"] == "model_not_found"));
    for secret in ["sk-emb1-provider-key", "sk-emb2-provider-key", "sk-gw-tenant"] {
        assert!(!log.contains(secret));
    }
}

/// Every route is counted by status and timed, under its path template (never an id), and a path
/// the gateway does not serve as `unmatched`: the series an operator's dashboard starts from.
#[tokio::test]
async fn every_route_is_counted_by_status_and_timed() {
    let (cheap, premium) = (MockUpstream::start("cheap").await, MockUpstream::start("premium").await);
    let g = gateway(config_for(&cheap, &premium, "")).await;
    let client = reqwest::Client::new();
    for _ in 0..2 {
        let (s, _, _) = post_chat(&g, &user("What is the capital of France?"), &[]).await;
        assert_eq!(s, 200);
    }
    let (s, _, _) = post_chat(&g, &json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}), &[]).await;
    assert_eq!(s, 404);
    let r = client.get(url(&g, "/v1/responses/resp_does_not_exist")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = client.get(url(&g, "/no/such/path")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let m = client.get(url(&g, "/metrics")).send().await.unwrap().text().await.unwrap();
    check_exposition(&m);
    let value = |series: &str| -> f64 {
        m.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{m}"))
    };
    assert_eq!(value("switchyard_http_requests_total{route=\"/v1/chat/completions\",status=\"200\"}"), 2.0);
    assert_eq!(value("switchyard_http_requests_total{route=\"/v1/chat/completions\",status=\"404\"}"), 1.0);
    assert_eq!(value("switchyard_http_requests_total{route=\"/v1/responses/{id}\",status=\"404\"}"), 1.0);
    assert_eq!(value("switchyard_http_requests_total{route=\"unmatched\",status=\"404\"}"), 1.0);
    assert_eq!(value("switchyard_http_request_duration_seconds_count{route=\"/v1/chat/completions\"}"), 3.0);
    assert!(!m.contains("resp_does_not_exist") && !m.contains("/no/such/path"), "no ids or raw paths as labels");
    g.shutdown().await;
}
