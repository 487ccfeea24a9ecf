#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The real `switchyard` binary: `serve --demo` answers, SIGTERM drains and writes the snapshot,
//! and a bad config is refused with a message naming the key.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

#[tokio::test]
async fn serve_demo_then_sigterm_writes_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("cache.snap");
    let cfg = dir.path().join("demo.toml");
    std::fs::write(&cfg, format!("[cache]\nsnapshot = {:?}\n", snap.display().to_string())).unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--demo", "--demo-latency-ms", "0", "--listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().rsplit("http://").next().unwrap().to_string();
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
