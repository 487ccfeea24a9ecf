#![allow(clippy::unwrap_used, clippy::expect_used)]
//! OpenAI's Responses API (`/v1/responses`) over raw HTTP, through a mock OpenAI upstream, with
//! gateway keys: the translation both ways, streaming events, the cache, and the stored
//! responses behind `previous_response_id` (kept per tenant). The official SDKs against it:
//! `tests/clients.rs` (tests/clients/openai_responses.py).

mod common;

use common::*;
use serde_json::{json, Value};

async fn post(g: &switchyard::app::Running, body: &Value, key: &str) -> reqwest::Response {
    reqwest::Client::new().post(url(g, "/v1/responses")).bearer_auth(key).json(body).send().await.unwrap()
}

async fn get(g: &switchyard::app::Running, id: &str, key: &str) -> (u16, Value) {
    let r = reqwest::Client::new().get(url(g, &format!("/v1/responses/{id}"))).bearer_auth(key).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn output_text(r: &Value) -> String {
    r["output"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["type"] == "message")
        .flat_map(|i| i["content"].as_array().unwrap().iter())
        .filter_map(|c| c["text"].as_str())
        .collect()
}

/// `event:` / `data:` pairs of an SSE body.
fn events(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let name = e.lines().find_map(|l| l.strip_prefix("event: ")).unwrap();
            let data: Value = serde_json::from_str(e.lines().find_map(|l| l.strip_prefix("data: ")).unwrap()).unwrap();
            assert_eq!(data["type"], name);
            data
        })
        .collect()
}

#[tokio::test]
async fn responses_are_served_cached_and_continued_per_tenant() {
    let (cheap, premium) = (MockUpstream::start("cheap").await, MockUpstream::start("premium").await);
    let g = gateway(config_for(&cheap, &premium, r#"gateway_keys = "key-a,key-b""#)).await;
    let first = json!({"model": "cheap", "instructions": "Be brief.", "input": "How do I reset my password?",
        "max_output_tokens": 64, "metadata": {"team": "search"}});
    let r = post(&g, &first, "key-a").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-switchyard-cache"], "miss");
    let a: Value = r.json().await.unwrap();
    assert_eq!(a["object"], "response");
    assert_eq!(a["status"], "completed");
    assert!(a["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(a["instructions"], "Be brief.");
    assert_eq!(a["metadata"], json!({"team": "search"}));
    assert_eq!(a["usage"]["input_tokens"], 10);
    assert_eq!(a["usage"]["output_tokens"], 20);
    assert_eq!(output_text(&a), "cheap answer #1 to: How do I reset my password?");
    let up = cheap.last_body();
    assert_eq!(
        up["messages"],
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How do I reset my password?"}])
    );
    assert_eq!(up["max_completion_tokens"], 64);

    // a paraphrase: the semantic cache answers, in the Responses shape, with a new id
    let para = json!({"model": "cheap", "instructions": "Be brief.", "input": "How can I reset my password?", "max_output_tokens": 64});
    let r = post(&g, &para, "key-a").await;
    assert_eq!(r.headers()["x-switchyard-cache"], "hit");
    let hit: Value = r.json().await.unwrap();
    assert_eq!(output_text(&hit), output_text(&a));
    assert_ne!(hit["id"], a["id"]);
    assert_eq!(cheap.calls(), 1);

    // a follow-up continues the stored conversation; the instructions are not inherited
    let id = a["id"].as_str().unwrap();
    let next = json!({"model": "cheap", "input": "And on my phone?", "previous_response_id": id});
    let r = post(&g, &next, "key-a").await;
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["previous_response_id"], id);
    let up = cheap.last_body();
    let msgs = up["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 3, "{up}");
    assert_eq!(msgs[0], json!({"role": "user", "content": "How do I reset my password?"}));
    assert_eq!(msgs[1]["role"], "assistant");
    assert_eq!(msgs[1]["content"], output_text(&a).as_str());
    assert_eq!(msgs[2]["content"], "And on my phone?");

    // the stored response, to its tenant only; another tenant cannot read, continue or delete it
    let (status, got) = get(&g, id, "key-a").await;
    assert_eq!((status, &got["id"]), (200, &a["id"]));
    assert_eq!(output_text(&got), output_text(&a));
    let (status, e) = get(&g, id, "key-b").await;
    assert_eq!(status, 404);
    assert_eq!(e["error"]["message"], format!("Response with id '{id}' not found."));
    let r = post(&g, &next, "key-b").await;
    assert_eq!(r.status(), 404);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "previous_response_not_found");
    assert_eq!(e["error"]["param"], "previous_response_id");
    let del = |key: &'static str| {
        let u = url(&g, &format!("/v1/responses/{id}"));
        async move { reqwest::Client::new().delete(u).bearer_auth(key).send().await.unwrap() }
    };
    assert_eq!(del("key-b").await.status(), 404);
    let r = del("key-a").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"id": id, "object": "response", "deleted": true}));
    assert_eq!(get(&g, id, "key-a").await.0, 404);
    assert_eq!(post(&g, &next, "key-a").await.status(), 404);

    // store: false keeps nothing
    let held = metric(&g, "switchyard_responses_stored").await;
    let r = post(&g, &json!({"model": "cheap", "input": "Name a colour", "store": false}), "key-a").await;
    let unstored: Value = r.json().await.unwrap();
    assert_eq!(unstored["store"], false);
    assert_eq!(get(&g, unstored["id"].as_str().unwrap(), "key-a").await.0, 404);
    assert_eq!(metric(&g, "switchyard_responses_stored").await, held);
    // what is held is on /metrics: the paraphrase hit and the follow-up (the first was deleted)
    assert_eq!(held, 2.0);
    assert!(metric(&g, "switchyard_responses_stored_bytes").await > 100.0);

    // errors are OpenAI-shaped: no key, a bad field, an unknown model, a hosted tool
    let r = post(&g, &first, "wrong").await;
    assert_eq!(r.status(), 401);
    for (body, status, needle) in [
        (json!({"model": "cheap"}), 400, "input"),
        (json!({"model": "cheap", "input": "x", "tools": [{"type": "web_search"}]}), 400, "tools[0]"),
        (json!({"model": "nope", "input": "x"}), 404, "nope"),
        // no deployment here sees images: the error names `input`, the field this client sent
        (
            json!({"model": "cheap", "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]}]}),
            400,
            "vision",
        ),
    ] {
        let r = post(&g, &body, "key-a").await;
        assert_eq!(r.status(), status, "{body}");
        let e: Value = r.json().await.unwrap();
        assert!(e["error"]["message"].as_str().unwrap().contains(needle), "{e}");
        if needle == "vision" {
            assert_eq!(e["error"]["param"], "input", "{e}");
        }
    }
    g.shutdown().await;
}

/// `GET /v1/responses/{id}/input_items` with a query.
async fn items(g: &switchyard::app::Running, id: &str, query: &str, key: &str) -> (u16, Value) {
    let u = url(g, &format!("/v1/responses/{id}/input_items{query}"));
    let r = reqwest::Client::new().get(u).bearer_auth(key).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn ids(list: &Value) -> Vec<String> {
    list["data"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn input_items_list_what_a_response_was_made_from_to_its_tenant() {
    let (cheap, premium) = (MockUpstream::start("cheap").await, MockUpstream::start("premium").await);
    let g = gateway(config_for(&cheap, &premium, r#"gateway_keys = "key-a,key-b""#)).await;
    let first = json!({"model": "cheap", "instructions": "Be brief.", "input": "Name a river"});
    let a: Value = post(&g, &first, "key-a").await.json().await.unwrap();
    let a_id = a["id"].as_str().unwrap();
    // a streamed follow-up with items, one of them carrying the client's own id
    let next = json!({"model": "cheap", "stream": true, "previous_response_id": a_id, "input": [
        {"role": "user", "content": "Which sea does it reach?"},
        {"type": "message", "id": "msg_client", "role": "user", "content": [{"type": "input_text", "text": "And how long is it?"}]},
    ]});
    let ev = events(&post(&g, &next, "key-a").await.text().await.unwrap());
    let b_id = ev.last().unwrap()["response"]["id"].as_str().unwrap().to_string();

    // newest first by default: this request's input, then the first response's output and input
    let (status, list) = items(&g, &b_id, "", "key-a").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["object"], "list");
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 4, "{list}");
    assert_eq!(data[0]["id"], "msg_client");
    assert_eq!(data[1]["content"], json!([{"type": "input_text", "text": "Which sea does it reach?"}]));
    assert_eq!(data[2], a["output"][0], "the earlier output item, as the earlier response returned it");
    assert_eq!(data[3]["content"][0]["text"], "Name a river");
    assert!(data.iter().all(|i| i["type"] == "message" && i["status"] == "completed"));
    assert!(!data.iter().any(|i| i["role"] == "system"), "instructions are not input items");
    assert_eq!((list["first_id"].as_str(), list["has_more"].as_bool()), (Some("msg_client"), Some(false)));
    assert_eq!(list["last_id"], data[3]["id"]);

    // paged, in either order
    let all = ids(&list);
    let (_, page) = items(&g, &b_id, "?order=asc&limit=3", "key-a").await;
    let asc: Vec<String> = all.iter().rev().cloned().collect();
    assert_eq!(ids(&page), asc[..3]);
    assert_eq!(page["has_more"], true);
    let (_, rest) = items(&g, &b_id, &format!("?order=asc&limit=3&after={}", asc[2]), "key-a").await;
    assert_eq!((ids(&rest), rest["has_more"].as_bool()), (asc[3..].to_vec(), Some(false)));
    let (_, first_items) = items(&g, a_id, "?include[]=message.input_image.image_url", "key-a").await;
    assert_eq!(ids(&first_items), all[3..], "the first response was made from its own input only");

    // another tenant, a bad query, a deleted response
    let (status, e) = items(&g, &b_id, "", "key-b").await;
    assert_eq!(
        (status, e["error"]["message"].as_str()),
        (404, Some(format!("Response with id '{b_id}' not found.").as_str()))
    );
    for (q, param) in
        [("?limit=0", "limit"), ("?limit=101", "limit"), ("?order=up", "order"), ("?after=msg_nope", "after")]
    {
        let (status, e) = items(&g, &b_id, q, "key-a").await;
        assert_eq!((status, e["error"]["param"].as_str()), (400, Some(param)), "{q}: {e}");
    }
    let u = url(&g, &format!("/v1/responses/{b_id}"));
    assert_eq!(reqwest::Client::new().delete(u).bearer_auth("key-a").send().await.unwrap().status(), 200);
    assert_eq!(items(&g, &b_id, "", "key-a").await.0, 404);
    g.shutdown().await;
}

#[tokio::test]
async fn a_streamed_response_is_the_documented_event_sequence_and_can_be_continued() {
    let (cheap, premium) = (MockUpstream::start("cheap").await, MockUpstream::start("premium").await);
    let g = gateway(config_for(&cheap, &premium, "")).await;
    let r = post(&g, &json!({"model": "cheap", "input": "Name a river", "stream": true}), "").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let ev = events(&r.text().await.unwrap());
    let kinds: Vec<&str> = ev.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        &kinds[..4],
        ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"]
    );
    assert_eq!(
        &kinds[kinds.len() - 4..],
        ["response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"]
    );
    assert!(kinds[4..kinds.len() - 4].iter().all(|k| *k == "response.output_text.delta"));
    let seq: Vec<u64> = ev.iter().map(|e| e["sequence_number"].as_u64().unwrap()).collect();
    assert_eq!(seq, (0..ev.len() as u64).collect::<Vec<_>>());
    let deltas: String = ev.iter().filter_map(|e| e["delta"].as_str()).collect();
    assert_eq!(deltas, "cheap answer #1 to: Name a river");
    let done = &ev[ev.len() - 1]["response"];
    assert_eq!(output_text(done), deltas);
    assert_eq!(done["usage"]["output_tokens"], 20);
    assert_eq!(cheap.last_body()["stream_options"]["include_usage"], true);

    // stored when the stream ended: a follow-up continues it
    let id = done["id"].as_str().unwrap();
    let r =
        post(&g, &json!({"model": "cheap", "input": "Which sea does it reach?", "previous_response_id": id}), "").await;
    assert_eq!(r.status(), 200);
    let msgs = cheap.last_body()["messages"].clone();
    assert_eq!(msgs[1], json!({"role": "assistant", "content": deltas}));

    // a stream cut by max_output_tokens ends in response.incomplete
    cheap.then(Behavior::Truncated);
    let r = post(&g, &json!({"model": "cheap", "input": "Tell a long story", "stream": true}), "").await;
    let ev = events(&r.text().await.unwrap());
    let last = ev.last().unwrap();
    assert_eq!(last["type"], "response.incomplete");
    assert_eq!(last["response"]["incomplete_details"]["reason"], "max_output_tokens");

    // an upstream that breaks mid-stream (after failover can no longer help): error, then response.failed
    cheap.then(Behavior::BreakAfterFirst);
    let r = post(&g, &json!({"model": "cheap", "input": "Another story", "stream": true}), "").await;
    let ev = events(&r.text().await.unwrap());
    let kinds: Vec<&str> = ev.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(&kinds[kinds.len() - 2..], ["error", "response.failed"], "{kinds:?}");
    assert!(!kinds.contains(&"response.completed"));
    g.shutdown().await;
}
