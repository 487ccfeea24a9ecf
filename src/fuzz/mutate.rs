//! Mutators: bytes, JSON trees, SSE event lists, TOML lines. Each takes the run's RNG and returns a
//! new input; none of them knows what the target does with it.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::{json, Map, Value};

/// Field names of every wire format we read: mutated objects gain and lose these, so inputs hit
/// the fields the decoders care about rather than random ones.
pub const FIELDS: &[&str] = &[
    "model",
    "messages",
    "role",
    "content",
    "name",
    "tool_calls",
    "tool_call_id",
    "function",
    "arguments",
    "type",
    "text",
    "image_url",
    "url",
    "detail",
    "input_audio",
    "file",
    "tools",
    "tool_choice",
    "parameters",
    "description",
    "stream",
    "stream_options",
    "include_usage",
    "temperature",
    "top_p",
    "n",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "seed",
    "user",
    "response_format",
    "json_schema",
    "logprobs",
    "id",
    "object",
    "created",
    "choices",
    "index",
    "message",
    "delta",
    "finish_reason",
    "usage",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "error",
    "code",
    "param",
    "stop_reason",
    "stop_sequence",
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "content_block",
    "partial_json",
    "input",
    "thinking",
    "signature",
    "candidates",
    "parts",
    "functionCall",
    "functionResponse",
    "args",
    "finishReason",
    "usageMetadata",
    "promptTokenCount",
    "candidatesTokenCount",
    "totalTokenCount",
    "thoughtsTokenCount",
    "modelVersion",
    "responseId",
    "promptFeedback",
    "blockReason",
    "thought",
    "inlineData",
    "mimeType",
    "data",
    "status",
    "details",
    "reason",
];

/// Strings the decoders branch on.
const WORDS: &[&str] = &[
    "user",
    "assistant",
    "system",
    "developer",
    "tool",
    "function",
    "auto",
    "none",
    "required",
    "any",
    "text",
    "image_url",
    "input_audio",
    "file",
    "tool_use",
    "tool_result",
    "text_delta",
    "input_json_delta",
    "thinking_delta",
    "message_start",
    "message_delta",
    "message_stop",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "ping",
    "error",
    "end_turn",
    "max_tokens",
    "stop_sequence",
    "STOP",
    "MAX_TOKENS",
    "SAFETY",
    "RECITATION",
    "MALFORMED_FUNCTION_CALL",
    "length",
    "stop",
    "tool_calls",
    "content_filter",
    "json_object",
    "json_schema",
    "[DONE]",
    "data:image/png;base64,iVBORw0KGgo=",
    "data:;base64,",
    "data:image/png;base64,",
    "https://example.com/x.png",
    "{",
    "{}",
    "[]",
    "{\"a\":",
    "\u{0}",
    "\u{202e}",
    "ｓｙｓｔｅｍ",
    "ѕуѕtеm",
    "🦀🦀🦀",
    "e\u{301}",
    "\r\n\r\n",
    "\n\ndata: ",
    ":",
    "models/",
    "API key not valid",
    "API_KEY_INVALID",
    "overloaded_error",
    "",
];

pub fn interesting_value(rng: &mut StdRng, depth: usize) -> Value {
    match rng.gen_range(0..22) {
        0 => Value::Null,
        1 => json!(rng.gen::<bool>()),
        2 => json!(*[0i64, -1, 1, 2, 3, 7, 64, 255, 256, 65535, i32::MAX as i64, i64::MIN, i64::MAX]
            .choose(rng)
            .unwrap_or(&0)),
        3 => json!(u64::MAX),
        4 => json!(*[0.0f64, -0.0, 0.5, 1.0, 1.5, 2.0, 2.0000001, -1.0, 1e308, -1e308, 1e-308, 4294967296.0]
            .choose(rng)
            .unwrap_or(&0.0)),
        5 => json!(WORDS.choose(rng).copied().unwrap_or("")),
        6 => json!("x".repeat(rng.gen_range(0..4096))),
        7 => Value::Array(Vec::new()),
        8 => Value::Object(Map::new()),
        9 => {
            // nested arrays: deep, but within serde_json's recursion limit and just past it
            let depth = *[8usize, 100, 126, 127, 128, 200].choose(rng).unwrap_or(&8);
            let mut v = json!(1);
            for _ in 0..depth {
                v = Value::Array(vec![v]);
            }
            v
        }
        10 => json!({"role": WORDS.choose(rng).copied().unwrap_or("user"), "content": "hi"}),
        11 => json!({"type": "text", "text": "a part"}),
        12 => json!({"type": "image_url", "image_url": {"url": WORDS.choose(rng).copied().unwrap_or("")}}),
        13 => json!({"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}),
        14 => json!({"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}),
        15 => json!({"functionCall": {"name": "f", "args": {"x": 1}}}),
        16 => json!({"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}),
        17 if depth < 4 => {
            let mut m = Map::new();
            for _ in 0..rng.gen_range(0..4) {
                m.insert(FIELDS.choose(rng).copied().unwrap_or("x").to_string(), interesting_value(rng, depth + 1));
            }
            Value::Object(m)
        }
        18 if depth < 4 => Value::Array((0..rng.gen_range(0..4)).map(|_| interesting_value(rng, depth + 1)).collect()),
        19 => json!(rng.gen::<u32>()),
        20 => json!(rng.gen::<f64>() * 4.0 - 1.0),
        _ => json!(String::from_utf8_lossy(&random_bytes(rng, 16))),
    }
}

pub fn random_bytes(rng: &mut StdRng, max: usize) -> Vec<u8> {
    let n = rng.gen_range(0..=max);
    (0..n).map(|_| rng.gen()).collect()
}

/// A random node of `v` (depth-first walk that stops at each level with some probability).
fn pick<'a>(rng: &mut StdRng, v: &'a mut Value) -> &'a mut Value {
    let stop = rng.gen_bool(0.3);
    let len = match v {
        Value::Array(a) => a.len(),
        Value::Object(m) => m.len(),
        _ => 0,
    };
    if stop || len == 0 {
        return v;
    }
    let i = rng.gen_range(0..len);
    match v {
        Value::Array(a) => pick(rng, &mut a[i]),
        Value::Object(m) => match m.values_mut().nth(i) {
            Some(child) => pick(rng, child),
            None => unreachable_value(),
        },
        _ => unreachable_value(),
    }
}

/// Never reached (the length was checked); a leaked `Null` keeps the walk total without a panic.
fn unreachable_value() -> &'static mut Value {
    Box::leak(Box::new(Value::Null))
}

/// One structural edit somewhere in the tree.
pub fn mutate_json(rng: &mut StdRng, root: &mut Value, donors: &[Value]) {
    let node = pick(rng, root);
    match rng.gen_range(0..10) {
        0 | 1 => *node = interesting_value(rng, 0),
        2 => {
            if let Some(d) = donors.choose(rng) {
                let mut d = d.clone();
                *node = pick(rng, &mut d).clone();
            }
        }
        3 | 4 => match node {
            Value::Object(m) => {
                let k = FIELDS.choose(rng).copied().unwrap_or("x").to_string();
                m.insert(k, interesting_value(rng, 0));
            }
            Value::Array(a) => a.push(interesting_value(rng, 0)),
            _ => *node = interesting_value(rng, 0),
        },
        5 | 6 => match node {
            Value::Object(m) if !m.is_empty() => {
                let i = rng.gen_range(0..m.len());
                if let Some(k) = m.keys().nth(i).cloned() {
                    m.remove(&k);
                }
            }
            Value::Array(a) if !a.is_empty() => {
                let i = rng.gen_range(0..a.len());
                a.remove(i);
            }
            _ => *node = Value::Null,
        },
        7 => {
            if let Value::Array(a) = node {
                if let Some(x) = a.choose(rng).cloned() {
                    for _ in 0..rng.gen_range(1..40) {
                        a.push(x.clone());
                    }
                }
                a.shuffle(rng);
            }
        }
        8 => {
            if let Value::String(s) = node {
                match rng.gen_range(0..4) {
                    0 => s.truncate(
                        s.char_indices().nth(rng.gen_range(0..=s.chars().count())).map_or(s.len(), |(i, _)| i),
                    ),
                    1 => s.push_str(WORDS.choose(rng).copied().unwrap_or("")),
                    2 => *s = WORDS.choose(rng).copied().unwrap_or("").to_string(),
                    _ => *s = s.repeat(rng.gen_range(2..50)),
                }
            } else {
                *node = json!(WORDS.choose(rng).copied().unwrap_or(""));
            }
        }
        _ => {
            if let Value::Object(m) = node {
                // rename a key to a known one: fields that must not appear together do
                if let Some(k) = m.keys().next().cloned() {
                    if let Some(v) = m.remove(&k) {
                        m.insert(FIELDS.choose(rng).copied().unwrap_or("x").to_string(), v);
                    }
                }
            } else {
                *node = interesting_value(rng, 0);
            }
        }
    }
}

/// Byte-level edits: flips, inserts, deletes, splices, and tokens that matter to JSON and SSE.
pub fn mutate_bytes(rng: &mut StdRng, data: &mut Vec<u8>, donors: &[Vec<u8>]) {
    const TOKENS: &[&[u8]] = &[
        b"\"",
        b"\\",
        b"\\u",
        b"\\ud800",
        b"{",
        b"}",
        b"[",
        b"]",
        b",",
        b":",
        b"null",
        b"1e999",
        b"-",
        b"\n",
        b"\r",
        b"\r\n",
        b"\n\n",
        b"data: ",
        b"event: ",
        b"\xff",
        b"\xc3",
        b"\xe2\x80\xae",
        b"\0",
    ];
    let n = data.len();
    match rng.gen_range(0..8) {
        0 if n > 0 => {
            let i = rng.gen_range(0..n);
            data[i] ^= 1 << rng.gen_range(0..8);
        }
        1 if n > 0 => {
            let i = rng.gen_range(0..n);
            data[i] = rng.gen();
        }
        2 => {
            let i = rng.gen_range(0..=n);
            let t = TOKENS.choose(rng).copied().unwrap_or(b"");
            data.splice(i..i, t.iter().copied());
        }
        3 if n > 0 => {
            let i = rng.gen_range(0..n);
            let len = rng.gen_range(1..=(n - i).min(64));
            data.drain(i..i + len);
        }
        4 => data.truncate(rng.gen_range(0..=n)),
        5 if n > 0 => {
            // duplicate a slice in place
            let i = rng.gen_range(0..n);
            let len = rng.gen_range(1..=(n - i).min(256));
            let slice: Vec<u8> = data[i..i + len].to_vec();
            let at = rng.gen_range(0..=n);
            data.splice(at..at, slice);
        }
        6 => {
            if let Some(d) = donors.choose(rng) {
                let cut = rng.gen_range(0..=n);
                let from = rng.gen_range(0..=d.len());
                data.truncate(cut);
                data.extend_from_slice(&d[from..]);
            }
        }
        _ if n >= 8 => {
            // a length-like integer anywhere: what binary decoders trust
            let i = rng.gen_range(0..=n - 8);
            let v: u64 = *[0u64, 1, 7, 255, 384, 65536, u32::MAX as u64, 1 << 40, u64::MAX / 2, u64::MAX]
                .choose(rng)
                .unwrap_or(&0);
            let width = *[1usize, 2, 4, 8].choose(rng).unwrap_or(&8);
            data[i..i + width].copy_from_slice(&v.to_le_bytes()[..width]);
        }
        _ => data.push(rng.gen()),
    }
}

/// The usual recipe: pick a seed, make a few structural edits, sometimes a few byte edits; now
/// and then pure noise.
pub fn json_input(rng: &mut StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
    if rng.gen_ratio(1, 20) || seeds.is_empty() {
        return random_bytes(rng, 512);
    }
    let donors: Vec<Value> = seeds.iter().filter_map(|s| serde_json::from_slice(s).ok()).collect();
    let seed = seeds.choose(rng).cloned().unwrap_or_default();
    let mut out = match serde_json::from_slice::<Value>(&seed) {
        Ok(mut v) => {
            for _ in 0..rng.gen_range(0..6) {
                mutate_json(rng, &mut v, &donors);
            }
            serde_json::to_vec(&v).unwrap_or(seed)
        }
        Err(_) => seed,
    };
    if rng.gen_ratio(1, 3) {
        for _ in 0..rng.gen_range(1..5) {
            mutate_bytes(rng, &mut out, seeds);
        }
    }
    out
}

/// SSE streams: events are dropped, repeated, reordered; their JSON edited as trees; line endings
/// and framing varied; then byte edits.
pub fn sse_input(rng: &mut StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
    if rng.gen_ratio(1, 20) || seeds.is_empty() {
        return random_bytes(rng, 512);
    }
    let seed = seeds.choose(rng).cloned().unwrap_or_default();
    let text = String::from_utf8_lossy(&seed).into_owned();
    let mut events: Vec<(Option<String>, String)> = text
        .split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .map(|block| {
            let mut name = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    name = Some(v.to_string());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push_str(v);
                }
            }
            (name, data)
        })
        .collect();
    let donors: Vec<Value> = events.iter().filter_map(|(_, d)| serde_json::from_str(d).ok()).collect();
    for _ in 0..rng.gen_range(0..6) {
        if events.is_empty() {
            break;
        }
        let i = rng.gen_range(0..events.len());
        match rng.gen_range(0..6) {
            0 => {
                events.remove(i);
            }
            1 => {
                let e = events[i].clone();
                events.insert(rng.gen_range(0..=events.len()), e);
            }
            2 => {
                let j = rng.gen_range(0..events.len());
                events.swap(i, j);
            }
            3 => events[i].0 = Some(WORDS.choose(rng).copied().unwrap_or("").to_string()),
            _ => {
                if let Ok(mut v) = serde_json::from_str::<Value>(&events[i].1) {
                    for _ in 0..rng.gen_range(1..4) {
                        mutate_json(rng, &mut v, &donors);
                    }
                    events[i].1 = v.to_string();
                }
            }
        }
    }
    let eol = *["\n", "\r\n", "\r"].choose(rng).unwrap_or(&"\n");
    let mut out = String::new();
    for (name, data) in &events {
        if rng.gen_ratio(1, 30) {
            out.push_str(&format!(": keep-alive{eol}{eol}"));
        }
        if let Some(n) = name {
            out.push_str(&format!("event: {n}{eol}"));
        }
        out.push_str(&format!("data: {data}{eol}{eol}"));
    }
    let mut out = out.into_bytes();
    if rng.gen_ratio(1, 3) {
        for _ in 0..rng.gen_range(1..5) {
            mutate_bytes(rng, &mut out, seeds);
        }
    }
    out
}

/// TOML by lines: values swapped for hostile ones, lines dropped, repeated, moved, sections and
/// keys added.
pub fn toml_input(rng: &mut StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
    const VALUES: &[&str] = &[
        "\"\"",
        "0",
        "-1",
        "1",
        "2.5",
        "-0.5",
        "1e400",
        "nan",
        "inf",
        "-inf",
        "18446744073709551616",
        "true",
        "[]",
        "{}",
        "\"env:SWITCHYARD_FUZZ_UNSET\"",
        "\"env:\"",
        "\"0s\"",
        "\"1x\"",
        "\"99999999999999999h\"",
        "\"-5s\"",
        "\"1.5ms\"",
        "\"http://\"",
        "\"ftp://x\"",
        "\"127.0.0.1:99999\"",
        "\"redis://\"",
        "\"auto\"",
        "\"openai\"",
        "\"nope:m\"",
        "[\"a:b\"]",
        "[\"\"]",
        "{ input = -1.0, output = 1e309 }",
        "\"t-0123456789ab\"",
        "\"🦀\"",
        "\"a\\u0000b\"",
    ];
    const LINES: &[&str] = &[
        "[server]",
        "[cache]",
        "[embed]",
        "[router]",
        "[dispatch]",
        "[tiers]",
        "[prices]",
        "[providers.x]",
        "[providers.openai]",
        "[router.tenant_share]",
        "[[tiers.cheap]]",
        "kind = \"anthropic\"",
        "kind = \"gemini\"",
        "kind = \"azure\"",
        "base_url = \"http://127.0.0.1:1\"",
        "api_key = \"k\"",
        "threshold = 0.9",
        "premium_share = 0.3",
        "gateway_keys = \"k1,k2\"",
        "backend = \"redis://127.0.0.1:1\"",
        "backend = \"rediss://:pw@127.0.0.1:1\"",
        "redis_ca = \"/nonexistent/ca.pem\"",
        "[embeddings]",
        "models = [\"openai:text-embedding-3-small\", \"x:all-MiniLM-L6-v2\"]",
        "[passthrough]",
        "provider = \"openai\"",
        "cheap = [\"x:m\"]",
        "premium = { fallback = \"cheap\", deployments = [\"x:m\"] }",
        "max_concurrency = 0",
        "snapshot_interval = \"1s\"",
        "ttl = \"1h\"",
        "max_entries = 0",
        "\"t-0123456789ab\" = 2.0",
    ];
    if rng.gen_ratio(1, 20) || seeds.is_empty() {
        return random_bytes(rng, 512);
    }
    let seed = seeds.choose(rng).cloned().unwrap_or_default();
    let mut lines: Vec<String> = String::from_utf8_lossy(&seed).lines().map(str::to_string).collect();
    // few edits: validation refuses most configs with several wrong values, and the point is to
    // reach the code past the first refusal too
    for _ in 0..rng.gen_range(0..4) {
        let n = lines.len();
        match rng.gen_range(0..6) {
            0 | 1 if n > 0 => {
                let i = rng.gen_range(0..n);
                if let Some((k, _)) = lines[i].split_once('=') {
                    lines[i] = format!("{}= {}", k, VALUES.choose(rng).copied().unwrap_or("0"));
                }
            }
            2 if n > 0 => {
                lines.remove(rng.gen_range(0..n));
            }
            3 if n > 0 => {
                let l = lines[rng.gen_range(0..n)].clone();
                lines.insert(rng.gen_range(0..=n), l);
            }
            4 if n > 1 => lines.swap(rng.gen_range(0..n), rng.gen_range(0..n)),
            _ => lines.insert(rng.gen_range(0..=n), LINES.choose(rng).copied().unwrap_or("").to_string()),
        }
    }
    let mut out = lines.join("\n").into_bytes();
    if rng.gen_ratio(1, 4) {
        for _ in 0..rng.gen_range(1..4) {
            mutate_bytes(rng, &mut out, seeds);
        }
    }
    out
}
