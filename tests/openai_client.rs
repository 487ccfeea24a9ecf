#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Client compatibility: the official `openai` Python package against the running gateway.
//! Needs a Python with `openai` installed: `.ci/run` makes `.venv`; SWITCHYARD_PYTHON points at it.

mod common;

use common::*;

pub fn python() -> String {
    if let Ok(p) = std::env::var("SWITCHYARD_PYTHON") {
        return p;
    }
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python");
    if std::path::Path::new(venv).exists() {
        venv.to_string()
    } else {
        "python3".to_string()
    }
}

pub async fn run_python_client(base_url: &str, envs: &[(&str, &str)]) {
    run_python_script(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/test_openai_client.py"), base_url, envs).await
}

pub async fn run_python_script(script: &str, base_url: &str, envs: &[(&str, &str)]) {
    let py = python();
    let mut cmd = tokio::process::Command::new(&py);
    cmd.arg(script).env("SWITCHYARD_BASE_URL", base_url);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {py}: {e}; run .ci/run (it creates .venv with the openai package)"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("ALL OK"),
        "python openai client failed ({py})\nstdout:\n{stdout}\nstderr:\n{stderr}\n(if `openai` is missing: run .ci/run, which installs it into .venv)"
    );
}

#[tokio::test]
async fn official_openai_python_client_works_against_the_gateway() {
    let (cheap, premium) = (MockUpstream::start("cheap").await, MockUpstream::start("premium").await);
    let emb = MockUpstream::start("emb").await;
    let extra = format!(
        "[embeddings]\nmodels = [\"emb:text-embedding-3-small\"]\n[passthrough]\nprovider = \"emb\"\n[providers.emb]\nkind = \"openai\"\nbase_url = \"{}\"\n",
        emb.base_url()
    );
    let g = gateway(config_for(&cheap, &premium, &extra)).await;
    run_python_client(&format!("http://{}/v1", g.addr), &[]).await;
    // the question twice (its answer was taken back in between), the streamed question once;
    // the rest came from the cache
    assert_eq!(cheap.calls(), 3);
    // one embeddings call upstream, in the SDK's base64 (the unserved model made none), then a
    // moderation, a speech and a transcription passed through
    assert_eq!(emb.calls(), 4);
    g.shutdown().await;
}

#[tokio::test]
async fn official_openai_python_client_streams_from_anthropic_and_gemini_upstreams() {
    use common::providers::{config, ProviderMock, ANTHROPIC_KEY, GEMINI_KEY};
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/test_provider_stream.py");
    let a = ProviderMock::anthropic("claude", ANTHROPIC_KEY).await;
    let g = gateway(config(&["anthropic:claude-haiku-4-5"], Some(&a), None)).await;
    run_python_script(script, &format!("http://{}/v1", g.addr), &[("SWITCHYARD_PROVIDER", "anthropic")]).await;
    assert_eq!(a.calls(), 4);
    g.shutdown().await;

    let gm = ProviderMock::gemini("gemini", GEMINI_KEY).await;
    let g = gateway(config(&["gemini:gemini-2.5-flash"], None, Some(&gm))).await;
    run_python_script(script, &format!("http://{}/v1", g.addr), &[("SWITCHYARD_PROVIDER", "gemini")]).await;
    assert_eq!(gm.calls(), 4);
    assert!(gm.requests().iter().any(|r| r.query.as_deref() == Some("alt=sse")));
    g.shutdown().await;
}
