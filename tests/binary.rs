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
