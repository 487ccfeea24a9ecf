#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The real `switchyard` binary: `serve --demo` answers, SIGTERM drains and writes the snapshot,
//! and a bad config is refused with a message naming the key.

use std::process::Command;
use std::time::Duration;

mod common;

use common::binary::{spawn_demo, BIN};

#[tokio::test]
async fn serve_demo_then_sigterm_writes_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("cache.snap");
    let cfg = dir.path().join("demo.toml");
    std::fs::write(&cfg, format!("[cache]\nsnapshot = {:?}\n", snap.display().to_string())).unwrap();
    let (mut child, addr) = spawn_demo(&cfg);
    let url = format!("http://{addr}/v1/chat/completions");
    let body =
        serde_json::json!({"model": "auto", "messages": [{"role": "user", "content": "How do I reset my password?"}]});
    let client = reqwest::Client::new();
    let r = client.post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.headers()["x-switchyard-cache"], "miss");
    let r = client.post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.headers()["x-switchyard-cache"], "hit");
    // the demo's simulated upstream embedding model, beside the local one
    let e: serde_json::Value = client
        .post(format!("http://{addr}/v1/embeddings"))
        .json(&serde_json::json!({"model": "demo-embed", "input": ["a", "b"], "dimensions": 8}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let v: Vec<f32> = serde_json::from_value(e["data"][1]["embedding"].clone()).unwrap();
    assert_eq!((e["model"].as_str(), v.len()), (Some("demo-embed"), 8), "{e}");
    assert!((v.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-4);

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let mut waited = 0;
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(waited < 100, "the gateway did not stop within 10 s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    };
    assert!(exit.success(), "{exit:?}");
    assert!(snap.exists(), "SIGTERM must write the cache snapshot");
}

#[test]
fn a_bad_config_is_refused_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "[tiers]\ncheap = [\"openai:gpt-4o-mini\"]\n[providers.openai]\nkind = \"openai\"\nbase_url = \"ftp://x\"\n",
    )
    .unwrap();
    let out = Command::new(BIN).args(["serve", "--config"]).arg(&cfg).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("providers.openai.base_url"), "{err}");
}

/// A routing file of our own (not one we ship): other model names, 1–10 ratings, a `turns` field.
fn write_routing_file(dir: &std::path::Path) -> std::path::PathBuf {
    let mut lines = Vec::new();
    for i in 0..40 {
        let hard = i % 2 == 0;
        let prompt = if hard {
            format!("Prove that the sum of the first {i} odd numbers is a perfect square, step by step.")
        } else {
            format!("Say hello to guest number {i}.")
        };
        let (small, big) = if hard { (3.0, 9.0) } else { (8.0, 8.0) };
        lines.push(
            serde_json::json!({"id": format!("t/{i}"), "source": "mine", "category": if hard { "maths" } else { "chat" },
                "prompt": prompt, "turns": [prompt], "scores": {"small-model": small, "big-model": big}})
            .to_string(),
        );
    }
    let path = dir.join("mine.jsonl");
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

#[test]
fn train_and_eval_routing_work_on_any_file_in_the_format() {
    let dir = tempfile::tempdir().unwrap();
    let data = write_routing_file(dir.path());
    let router = dir.path().join("router");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(BIN).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let d = data.to_str().unwrap();
    let md = run(&[
        "train",
        "router",
        "--data",
        d,
        "--cheap",
        "small-model",
        "--premium",
        "big-model",
        "--out",
        router.to_str().unwrap(),
    ]);
    assert!(md.contains("Trained on all 40 prompts"), "{md}");
    assert!(router.join("router.json").exists() && router.join("report.md").exists());

    for (extra, out) in [(vec!["--folds", "2"], "cv"), (vec!["--router", router.to_str().unwrap()], "saved")] {
        let out_dir = dir.path().join(out);
        let mut args = vec!["eval", "routing", "--data", d, "--cheap", "small-model", "--premium", "big-model"];
        args.extend(extra);
        args.extend(["--out", out_dir.to_str().unwrap()]);
        run(&args);
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out_dir.join("report.json")).unwrap()).unwrap();
        let ds = &report["datasets"][0];
        assert_eq!(ds["name"], "mine");
        assert_eq!(ds["n"], 40);
        // 1-10 ratings rescaled as (s - 1)/9: premium rated 9 and 8 -> mean (8/9 + 7/9)/2
        assert!((ds["premium_quality"].as_f64().unwrap() - (8.0 + 7.0) / 18.0).abs() < 1e-9, "{ds}");
        for r in ["switchyard", "switchyard-without-embedding", "random", "oracle", "prompt-length"] {
            let c = &ds["routers"][r];
            assert!(c["apgr"].is_number() && c["cpt50"].is_number() && c["cpt80"].is_number(), "{r}: {c}");
            assert!(c["curve"].as_array().unwrap().len() >= 2);
        }
        // the hard prompts are told apart from the easy ones, even out of fold: as good as the
        // oracle (0.75 here: PGR climbs to 1 at 50% premium, the share of hard prompts)
        let (ours, oracle) =
            (ds["routers"]["switchyard"]["apgr"].as_f64().unwrap(), ds["routers"]["oracle"]["apgr"].as_f64().unwrap());
        assert!((oracle - 0.75).abs() < 1e-9 && ours > oracle - 0.01, "ours {ours}, oracle {oracle}");
        assert!(out_dir.join("report.md").exists() && out_dir.join("curve.svg").exists());
    }
}

/// The binary carries its model, router and cache rule: copied alone into an empty directory and
/// run there (no source tree, no `models/`), it embeds, routes and answers a paraphrase from the
/// cache; a configured `model_dir` still means that directory (and a missing one is an error).
#[tokio::test]
async fn a_copied_binary_runs_from_an_empty_directory_and_hits_on_a_paraphrase() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("switchyard");
    std::fs::copy(BIN, &bin).unwrap();
    let mut child = Command::new(&bin)
        .args(["serve", "--demo", "--demo-latency-ms", "0", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env_remove("CARGO_MANIFEST_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().rsplit("http://").next().unwrap().to_string();
    let url = format!("http://{addr}/v1/chat/completions");
    let client = reqwest::Client::new();
    let ask = |q: &str| serde_json::json!({"model": "auto", "messages": [{"role": "user", "content": q}]});
    let r = client.post(&url).json(&ask("How do I reset my password?")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-switchyard-cache"], "miss");
    let r = client.post(&url).json(&ask("How can I reset my password?")).send().await.unwrap();
    assert_eq!(r.headers()["x-switchyard-cache"], "hit", "a paraphrase must hit with the embedded model");
    child.kill().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    let _ = child.wait();
    assert!(err.contains("embedding model loaded") && err.contains("<embedded>"), "{err}");
    assert!(!err.contains("no trained router") && !err.contains("no shipped cache rule"), "{err}");
    assert!(!dir.path().join("models").exists());

    // an explicitly configured path is never replaced by the embedded copy
    let cfg = dir.path().join("other.toml");
    std::fs::write(&cfg, "[embed]\nmodel_dir = \"elsewhere/minilm\"\n").unwrap();
    let out = Command::new(&bin)
        .args(["serve", "--demo", "--listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("elsewhere/minilm"), "{err}");
}

/// For a log collector: `--log-format json` writes every log line as one JSON object, and a line
/// logged while a request is served (here: its first deployment failing) carries the request's
/// id; `[log] path = "-"` puts the request records on standard output, after a JSON banner, and
/// SIGTERM flushes them before the process exits. Neither stream shows a provider key.
#[tokio::test]
async fn json_logs_and_the_request_log_on_stdout_for_a_log_collector() {
    use common::{Behavior, MockUpstream};
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;
    let down = MockUpstream::start("down").await;
    down.then(Behavior::Status(500, None));
    let up = MockUpstream::start("up").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("switchyard.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[log]
path = "-"
[dispatch]
attempts_per_deployment = 1
[tiers]
cheap = ["down:mini", "up:mini"]
premium = ["up:large"]
[providers.down]
kind = "openai"
base_url = "{}"
api_key = "sk-down-provider-key"
[providers.up]
kind = "openai"
base_url = "{}"
api_key = "sk-up-provider-key"
"#,
            down.base_url(),
            up.base_url()
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut stderr = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).unwrap();
        s
    });
    let mut banner = String::new();
    stdout.read_line(&mut banner).unwrap();
    let banner: serde_json::Value = serde_json::from_str(&banner).unwrap();
    let base = banner["listening"].as_str().unwrap().to_string();

    let client = reqwest::Client::new();
    let ask = serde_json::json!({"model": "cheap", "messages": [{"role": "user", "content": "Hello there"}]});
    let r = client
        .post(format!("{base}/v1/chat/completions"))
        .header("x-request-id", "req-json-logs-1")
        .json(&ask)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-switchyard-attempts"], "2", "the first deployment failed once");
    let r = client
        .post(format!("{base}/v1/chat/completions"))
        .header("x-request-id", "req-json-logs-2")
        .json(&serde_json::json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // at once: the shutdown itself must flush what is still queued
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert!(child.wait().unwrap().success());
    let logs = err_reader.join().unwrap();

    let records: Vec<serde_json::Value> =
        rest.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    assert_eq!(records.len(), 2, "{rest}");
    assert_eq!(records[0]["request_id"], "req-json-logs-1");
    assert_eq!((records[0]["status"].as_u64(), records[0]["attempts"].as_u64()), (Some(200), Some(2)));
    assert_eq!(records[0]["deployment"], "up:mini");
    assert_eq!(records[1]["request_id"], "req-json-logs-2");
    assert_eq!((records[1]["status"].as_u64(), records[1]["error"].as_str()), (Some(404), Some("model_not_found")));

    let lines: Vec<serde_json::Value> =
        logs.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    assert!(lines.iter().all(|l| l["timestamp"].is_string() && l["level"].is_string() && l["message"].is_string()));
    let failed = lines
        .iter()
        .find(|l| l["message"] == "upstream attempt failed")
        .unwrap_or_else(|| panic!("no failed attempt logged:\n{logs}"));
    assert_eq!(failed["deployment"], "down:mini");
    assert_eq!(failed["span"]["request_id"], "req-json-logs-1", "{failed}");
    assert!(lines.iter().any(|l| l["message"] == "switchyard listening"));
    for secret in ["sk-down-provider-key", "sk-up-provider-key"] {
        assert!(!logs.contains(secret) && !rest.contains(secret));
    }

    // the format can come from the environment, and a wrong one is refused at start
    let out = Command::new(BIN)
        .args(["embed", "hello"])
        .env("SWITCHYARD_LOG_FORMAT", "yaml")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SWITCHYARD_LOG_FORMAT"));
    let out = Command::new(BIN)
        .args(["embed", "hello"])
        .env("SWITCHYARD_LOG_FORMAT", "json")
        .env("RUST_LOG", "debug")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.lines().count() > 0 && err.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()),
        "{err}"
    );
}

/// `switchyard check` reads everything `serve` would before it listens and prints what it would
/// run with (no key or password shown, unpriced models warned of); the first problem, including
/// the ones `serve` would only warn of (a router or cache rule that does not load), fails it
/// with the key named.
#[test]
fn check_reads_everything_serve_would_and_names_the_first_problem() {
    let dir = tempfile::tempdir().unwrap();
    let good = r#"
[server]
gateway_keys = "k1,k2"
[cache]
backend = "rediss://:hunter2@cache.example:6380"
[tiers]
cheap = ["oa:gpt-4o-mini"]
premium = ["oa:my-finetune"]
[providers.oa]
kind = "openai"
base_url = "https://api.openai.com/v1"
api_key = "sk-check-literal"
[embeddings]
models = ["oa:text-embedding-3-small"]
[passthrough]
provider = "oa"
"#;
    let run = |text: &str| {
        let path = dir.path().join("switchyard.toml");
        std::fs::write(&path, text).unwrap();
        let out =
            Command::new(BIN).args(["check", "--config"]).arg(&path).env_remove("RUST_BACKTRACE").output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, out, err) = run(good);
    assert!(ok, "{out}{err}");
    for want in [
        "keys        2 gateway keys",
        "oa:gpt-4o-mini ($0.15 / $0.6 per M tokens)",
        "oa:my-finetune (unpriced)",
        "router      gated-heads for `auto`: premium share 0.3",
        "backend rediss://*****@cache.example:6380",
        "text-embedding-3-small (oa, $0.02",
        "passthrough oa",
        "warning: model \"my-finetune\" has no price",
    ] {
        assert!(out.contains(want), "{want:?} missing from\n{out}");
    }
    assert!(!out.contains("hunter2") && !out.contains("sk-check-literal") && !out.contains("k1,k2"), "{out}");

    let keys = dir.path().join("keys.toml");
    std::fs::write(&keys, "[[key]]\nname = \"broken\"\n").unwrap();
    let missing = dir.path().join("missing");
    for (bad, says) in [
        (good.replace("sk-check-literal", "env:SWITCHYARD_SURELY_UNSET"), "providers.oa.api_key"),
        (
            good.replace("gateway_keys = \"k1,k2\"", &format!("keys_file = {:?}", keys.display().to_string())),
            "keys.toml",
        ),
        (
            good.replace("[cache]", &format!("[cache]\nredis_ca = {:?}", missing.display().to_string())),
            "cache.redis_ca: cannot read",
        ),
        (
            good.replace("[server]", &format!("[router]\nmodel_dir = {:?}\n[server]", missing.display().to_string())),
            "missing",
        ),
        (good.replace("[cache]", &format!("[cache]\nrule = {:?}", missing.display().to_string())), "missing"),
    ] {
        let (ok, out, err) = run(&bad);
        assert!(!ok, "{bad}\n{out}");
        assert!(err.contains(says), "{says:?} missing from\n{err}");
    }
}
