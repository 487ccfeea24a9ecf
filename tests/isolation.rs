#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Tenant isolation at scale: adversarial lookups (identical prompts, near-identical prompts,
//! namespaces crafted to collide: tenants that are prefixes, case variants and confusables of
//! each other, separators inside keys, system prompts and parameters) against the local cache,
//! through the shared Redis tier (a real `redis-server`), and end to end through HTTP with many
//! gateway keys. Every stored answer names the tenant it belongs to; any hit served to another
//! tenant fails the test. The cache threshold is set low (0.5) so that a namespace leak could
//! not hide behind a strict threshold.
//!
//! Short by default (CI: 4,000 lookups each); `SWITCHYARD_ISOLATION_LOOKUPS=100000 cargo test
//! --test isolation -- --nocapture` runs 100k lookups on each of the local cache and the shared
//! tier.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::redis_server::start_redis;
use common::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use switchyard::api::{ChatRequest, ChatResponse};
use switchyard::cache::{CacheKey, CacheSettings, Lookup, SemanticCache, SharedSettings, SharedTier, StoredAnswer};
use switchyard::http::tenant_of;

fn lookups() -> usize {
    std::env::var("SWITCHYARD_ISOLATION_LOOKUPS").ok().and_then(|v| v.replace('_', "").parse().ok()).unwrap_or(4000)
}

/// Gateway keys built to collide: prefixes, case, whitespace-free confusables (Cyrillic е/а/о,
/// fullwidth), separators, and keys that spell another key's tenant id.
fn adversarial_keys() -> Vec<String> {
    let mut keys: Vec<String> = [
        "key",
        "key1",
        "key12",
        "key123",
        "KEY",
        "Key",
        "kеy",
        "kеу",
        "ｋｅｙ",
        "key:1",
        "key|1",
        "key/1",
        "key=1",
        "key;1",
        "key\t1",
        "key.1",
        "k:ey",
        "ke:y",
        ":key",
        "key:",
        "tenant",
        "tenant:key",
        "sk-alice",
        "sk-alice2",
        "sk-аlice",
        "sk-alicе",
        "sk-ALICE",
        "a",
        "aa",
        "aaa",
        "0",
        "00",
        "t-000000000000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // a key that is another key's tenant id, and one that is its hex digest prefix
    keys.push(tenant_of("key"));
    keys.push(tenant_of("key").trim_start_matches("t-").to_string());
    keys
}

/// Shapes of the parts of a request that make the namespace: crafted so that naive
/// concatenation of (tenant, system prompt, model, params) would make some of them equal.
fn shapes() -> Vec<Value> {
    vec![
        json!({"model": "auto"}),
        json!({"model": "auto", "system": "Be brief."}),
        json!({"model": "auto", "system": "key1"}),
        json!({"model": "auto:key", "system": "1"}),
        json!({"model": "auto", "system": "tenant=key|system=Be brief."}),
        json!({"model": "auto", "system": "\"},{\"role\":\"user\",\"content\":\"x"}),
        json!({"model": "auto", "system": "Ве brief."}),
        json!({"model": "cheap", "temperature": 0.0}),
        json!({"model": "cheap", "temperature": 0.2, "user": "key"}),
        json!({"model": "cheap", "extra": {"tenant": "key"}}),
        json!({"model": "auto", "before": ["earlier question", "earlier answer"]}),
        json!({"model": "auto", "before": ["earlier question earlier answer"]}),
    ]
}

fn request(shape: &Value, prompt: &str) -> ChatRequest {
    let mut messages = Vec::new();
    if let Some(s) = shape["system"].as_str() {
        messages.push(json!({"role": "system", "content": s}));
    }
    if let Some(b) = shape["before"].as_array() {
        for (i, t) in b.iter().enumerate() {
            messages.push(json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": t}));
        }
    }
    messages.push(json!({"role": "user", "content": prompt}));
    let mut req = json!({"model": shape["model"], "messages": messages});
    for k in ["temperature", "user"] {
        if !shape[k].is_null() {
            req[k] = shape[k].clone();
        }
    }
    if let Some(extra) = shape["extra"].as_object() {
        for (k, v) in extra {
            req[k] = v.clone();
        }
    }
    serde_json::from_value(req).unwrap()
}

const PROMPTS: &[&str] = &[
    "How do I reset my password?",
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain what a mutex is.",
    "How many days are in a leap year?",
    "Translate 'good morning' into Spanish.",
    "What is the boiling point of water at sea level?",
    "Summarise the plot of Hamlet in one sentence.",
    "Give me three tips for a job interview.",
    "What does HTTP status 429 mean?",
    "Convert 100 Fahrenheit to Celsius.",
    "Who wrote Pride and Prejudice?",
];

/// Near-identical variants: what a cache should (within one tenant) treat as the same question.
fn variants(p: &str) -> Vec<String> {
    vec![
        p.to_string(),
        format!("  {p}  "),
        p.to_lowercase(),
        p.trim_end_matches('?').to_string(),
        p.replace('a', "а"), // Cyrillic а: looks identical
        format!("{p} Thanks!"),
    ]
}

/// Real vectors for every variant (the model), then cheap perturbations of them for volume.
struct Vectors {
    real: HashMap<String, Vec<f32>>,
}

impl Vectors {
    fn new() -> Vectors {
        let texts: Vec<String> = PROMPTS.iter().flat_map(|p| variants(p)).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let vecs = embedder().embed_batch(&refs).unwrap();
        Vectors { real: texts.into_iter().zip(vecs).collect() }
    }

    /// The text's real vector, nudged by noise of size `eps` and renormalised.
    fn near(&self, text: &str, rng: &mut StdRng, eps: f32) -> Vec<f32> {
        let v = &self.real[text];
        let mut out: Vec<f32> = v.iter().map(|x| x + eps * (rng.gen::<f32>() - 0.5)).collect();
        let n = out.iter().map(|x| x * x).sum::<f32>().sqrt();
        out.iter_mut().for_each(|x| *x /= n);
        out
    }
}

fn answer(owner: &str, i: usize) -> StoredAnswer {
    let response: ChatResponse = serde_json::from_value(json!({
        "id": format!("chatcmpl-{i}"), "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("answer {i} for {owner}")}, "finish_reason": "stop"}]
    }))
    .unwrap();
    // `provider` carries the owner's tenant id: what a hit is checked against
    StoredAnswer { response, tier: "cheap".into(), provider: owner.into(), cost: 0.0 }
}

fn settings() -> CacheSettings {
    // small namespaces switch to HNSW early, so both index kinds are attacked
    CacheSettings { threshold: 0.5, hnsw_from: 6, ..CacheSettings::default() }
}

#[derive(Default, Debug)]
struct Tally {
    lookups: usize,
    own_hits: usize,
    exact_hits: usize,
    semantic_hits: usize,
    cross: Vec<String>,
}

/// Stores answers for every tenant (each tenant a random half of prompt×shape), returning what
/// was stored as (tenant, shape, variant).
fn populate(
    cache: &SemanticCache,
    tier: Option<&SharedTier>,
    vectors: &Vectors,
    keys: &[String],
    rng: &mut StdRng,
) -> Vec<(String, usize, String)> {
    let shapes = shapes();
    let mut stored = Vec::new();
    let mut i = 0;
    for key in keys {
        let tenant = tenant_of(key);
        for (s, shape) in shapes.iter().enumerate() {
            for p in PROMPTS {
                if rng.gen_bool(0.5) {
                    continue;
                }
                let text = variants(p).choose(rng).unwrap().clone();
                let req = request(shape, &text);
                let k = CacheKey::new(&req, &tenant, &req.model).unwrap();
                let v = vectors.near(&text, rng, 0.002);
                let a = answer(&tenant, i);
                cache.store(&k, Some(&v), a.clone());
                if let Some(t) = tier {
                    t.publish(&k, Some(&v), &a);
                }
                stored.push((tenant.clone(), s, text));
                i += 1;
            }
        }
    }
    stored
}

/// `n` lookups: mostly another tenant asking exactly or nearly what was stored (the attack),
/// some the owner asking again (so hits are possible at all and are counted).
fn attack(
    cache: &SemanticCache,
    vectors: &Vectors,
    keys: &[String],
    stored: &[(String, usize, String)],
    n: usize,
    rng: &mut StdRng,
) -> Tally {
    let shapes = shapes();
    let mut t = Tally::default();
    for _ in 0..n {
        let (owner, s, text) = stored.choose(rng).unwrap();
        let requester = if rng.gen_ratio(1, 8) { owner.clone() } else { tenant_of(keys.choose(rng).unwrap()) };
        // identical text, another variant of it, or a variant under another crafted shape
        let asked = match rng.gen_range(0..3) {
            0 => text.clone(),
            _ => {
                let base = PROMPTS.iter().find(|p| variants(p).contains(text)).unwrap();
                variants(base).choose(rng).unwrap().clone()
            }
        };
        let shape = if rng.gen_ratio(1, 4) { shapes.choose(rng).unwrap() } else { &shapes[*s] };
        let req = request(shape, &asked);
        let key = CacheKey::new(&req, &requester, &req.model).unwrap();
        let v = vectors.near(&asked, rng, 0.01);
        t.lookups += 1;
        let hit = match cache.exact(&key, &Lookup::default()) {
            Some(h) => {
                t.exact_hits += 1;
                Some(h)
            }
            None => cache.nearest(&key, &v, &Lookup::default()).inspect(|_| t.semantic_hits += 1),
        };
        if let Some(h) = hit {
            if h.entry.answer.provider == requester {
                t.own_hits += 1;
            } else if t.cross.len() < 10 {
                t.cross.push(format!(
                    "tenant {requester} asked {asked:?} and got {:?} (stored by {})",
                    h.entry.answer.response.choices[0].message.content, h.entry.answer.provider
                ));
            } else {
                t.cross.push(String::new());
            }
        }
    }
    t
}

fn check(where_: &str, t: &Tally) {
    println!(
        "{where_}: {} lookups, {} hits ({} exact, {} semantic), all to their own tenant: {}; cross-tenant hits: {}",
        t.lookups,
        t.exact_hits + t.semantic_hits,
        t.exact_hits,
        t.semantic_hits,
        t.own_hits,
        t.cross.len()
    );
    assert!(t.cross.is_empty(), "{where_}: {} cross-tenant hits, e.g.\n{}", t.cross.len(), t.cross.join("\n"));
    // the attack is real only if the same lookups do hit for the owner
    assert!(t.own_hits > t.lookups / 50, "{where_}: only {} own-tenant hits in {} lookups", t.own_hits, t.lookups);
    assert!(t.semantic_hits > 0 && t.exact_hits > 0, "{where_}: both paths must be exercised: {t:?}");
}

#[test]
fn adversarial_tenants_never_share_answers_in_the_local_cache() {
    let keys = adversarial_keys();
    let tenants: std::collections::HashSet<String> = keys.iter().map(|k| tenant_of(k)).collect();
    assert_eq!(tenants.len(), keys.len(), "every key is its own tenant");
    let vectors = Vectors::new();
    let mut rng = StdRng::seed_from_u64(13);
    let cache = SemanticCache::new(settings(), embedder().dim());
    let stored = populate(&cache, None, &vectors, &keys, &mut rng);
    let t = attack(&cache, &vectors, &keys, &stored, lookups(), &mut rng);
    println!("local cache: {} entries from {} tenants", stored.len(), keys.len());
    check("local cache", &t);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversarial_tenants_never_share_answers_through_the_shared_tier() {
    let r = start_redis().await;
    let shared = SharedSettings {
        redis: switchyard::redis_link::RedisTarget::new(r.url()),
        stream: "switchyard:isolation".into(),
        max_len: 1_000_000,
        queue: 4096,
    };
    let keys = adversarial_keys();
    let vectors = Vectors::new();
    let mut rng = StdRng::seed_from_u64(17);
    // replica A stores and publishes; replica B only ever sees entries through Redis
    let a = Arc::new(SemanticCache::new(settings(), embedder().dim()));
    let b = Arc::new(SemanticCache::new(settings(), embedder().dim()));
    let tier_a = SharedTier::start(a.clone(), shared.clone()).unwrap();
    let _tier_b = SharedTier::start(b.clone(), shared).unwrap();
    // both connected before publishing (a publish while Redis is unreachable is dropped)
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stored = populate(&a, Some(&tier_a), &vectors, &keys, &mut rng);
    let want = a.stats().entries;
    for _ in 0..200 {
        if b.stats().entries >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(b.stats().entries, want, "replica B mirrored every entry through Redis");
    let n = lookups();
    let t = tokio::task::spawn_blocking(move || attack(&b, &vectors, &keys, &stored, n, &mut rng)).await.unwrap();
    println!("shared tier: {want} entries mirrored through Redis");
    check("shared tier (replica B)", &t);
}

fn content(body: &Value) -> String {
    body["choices"][0]["message"]["content"].as_str().unwrap_or_default().to_string()
}

/// End to end: the real gateway with one gateway key per adversarial tenant, each sending the
/// same and nearly the same prompts twice. A miss names its upstream call (`answer #n`); every
/// hit must carry a call made for the same tenant.
#[tokio::test]
async fn many_gateway_keys_never_share_answers_over_http() {
    // header values are ASCII: the confusable keys cannot even be sent, so they are left out here
    let keys: Vec<String> =
        adversarial_keys().into_iter().filter(|k| k.is_ascii() && !k.contains(',') && k.trim() == k).collect();
    let cheap = MockUpstream::start("cheap").await;
    let premium = MockUpstream::start("premium").await;
    let extra = format!("gateway_keys = {:?}\n[cache]\nthreshold = 0.5", keys.join(","));
    let g = gateway(config_for(&cheap, &premium, &extra)).await;
    let mut owner: HashMap<String, String> = HashMap::new(); // answer text → tenant key
    let (mut hits, mut misses) = (0, 0);
    for round in 0..2 {
        for key in &keys {
            for (i, p) in PROMPTS.iter().take(3).enumerate() {
                let prompt = if round == 0 { p.to_string() } else { variants(p)[1 + i % 3].clone() };
                let auth = format!("Bearer {key}");
                let (status, headers, body) = post_chat(
                    &g,
                    &json!({"model": "cheap", "messages": [{"role": "user", "content": prompt}]}),
                    &[("authorization", auth.as_str())],
                )
                .await;
                assert_eq!(status, 200, "{key:?}: {body}");
                let text = content(&body);
                match header(&headers, "x-switchyard-cache") {
                    "hit" => {
                        hits += 1;
                        assert_eq!(owner.get(&text), Some(key), "tenant {key:?} was served {text:?}");
                    }
                    _ => {
                        misses += 1;
                        assert!(owner.insert(text.clone(), key.clone()).is_none(), "a fresh answer is new");
                    }
                }
            }
        }
    }
    println!(
        "HTTP: {} gateway keys, {} requests: {misses} misses, {hits} hits, all to their own tenant",
        keys.len(),
        hits + misses
    );
    assert_eq!(misses, keys.len() * 3, "the first round is all misses, even for identical prompts across keys");
    assert_eq!(hits, keys.len() * 3, "the second round (near-identical prompts) is all own-tenant hits");
}
