#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Our candle embedder against sentence-transformers' vectors for the same model.

mod common;

use serde_json::Value;

#[test]
fn vectors_match_sentence_transformers() {
    let fixture: Value = serde_json::from_str(include_str!("fixtures/minilm_reference.json")).unwrap();
    let sentences: Vec<&str> = fixture["sentences"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    let reference: Vec<Vec<f32>> = serde_json::from_value(fixture["vectors"].clone()).unwrap();
    let e = common::embedder();
    // batched (with padding) and one at a time must both match
    let batched = e.embed_batch(&sentences).unwrap();
    for (i, s) in sentences.iter().enumerate() {
        let single = e.embed_batch(&[s]).unwrap().remove(0);
        for (how, v) in [("batched", &batched[i]), ("single", &single)] {
            let cos: f32 = v.iter().zip(&reference[i]).map(|(a, b)| a * b).sum();
            assert!(cos >= 0.999, "{how} sentence {i} ({s:.40}…): cosine {cos}");
            let norm: f32 = v.iter().map(|a| a * a).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4);
        }
    }
}

/// The router's views of the same forward pass (the embedding layer's and layer 3's mean pools)
/// against a float32 numpy MiniLM (`eval/scripts/minilm_layers.py`, which matches
/// sentence-transformers' last layer to a cosine of 0.999999); candle's engine has none.
#[test]
fn the_routers_views_match_a_reference_forward_pass() {
    let fixture: Value = serde_json::from_str(include_str!("fixtures/minilm_views_reference.json")).unwrap();
    let sentences: Vec<&str> = fixture["sentences"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    let reference = |view: &str| -> Vec<Vec<f32>> { serde_json::from_value(fixture[view].clone()).unwrap() };
    let (embeddings, layer3) = (reference("embeddings"), reference("layer3"));
    let e = common::embedder();
    let batched = e.embed_batch_full(&sentences).unwrap();
    for (i, s) in sentences.iter().enumerate() {
        let single = e.embed_batch_full(&[s]).unwrap().remove(0);
        for (how, got) in [("batched", &batched[i]), ("single", &single)] {
            let [early, middle] = got.views.as_ref().expect("the fast engine gives the views");
            for (view, v, want) in [("embeddings", early, &embeddings[i]), ("layer 3", middle, &layer3[i])] {
                let cos: f32 = v.iter().zip(want).map(|(a, b)| a * b).sum();
                assert!(cos >= 0.999, "{how} sentence {i}, {view}: cosine {cos}");
            }
            let input = got.router_input();
            assert_eq!(input.len(), 3 * 384);
            assert_eq!(input[..384], got.vector[..]);
        }
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2");
    let candle = switchyard::embed::BertEmbedder::load_with(&dir, 256, switchyard::embed::Engine::Candle, 1).unwrap();
    use switchyard::embed::Embedder;
    let got = candle.embed_batch_full(&sentences[..1]).unwrap().remove(0);
    assert!(got.views.is_none());
    assert_eq!(got.router_input(), got.vector);
}

#[test]
fn a_corrupt_or_missing_model_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2");
    for f in ["config.json", "tokenizer.json", "SHA256SUMS"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let err = switchyard::embed::BertEmbedder::load(dir.path(), 256).err().unwrap().to_string();
    assert!(err.contains("model.safetensors") && err.contains("missing"), "{err}");
    std::fs::write(dir.path().join("model.safetensors"), b"not weights").unwrap();
    let err = switchyard::embed::BertEmbedder::load(dir.path(), 256).err().unwrap().to_string();
    assert!(err.contains("model.safetensors") && err.contains("corrupt"), "{err}");
}

/// The fast engine computes what candle's BertModel computes: same vectors to float rounding,
/// one at a time and in mixed-length batches split over threads.
#[test]
fn the_fast_engine_matches_candles_bert_model() {
    use switchyard::embed::{BertEmbedder, Embedder, Engine};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2");
    let fast = BertEmbedder::load_with(&dir, 256, Engine::Fast, 3).unwrap();
    let candle = BertEmbedder::load_with(&dir, 256, Engine::Candle, 1).unwrap();
    assert_eq!(fast.engine(), Engine::Fast);
    assert_eq!(candle.engine(), Engine::Candle);
    let long = "The quick brown fox jumps over the lazy dog. ".repeat(40); // truncated to 256 tokens
    let texts: Vec<String> = vec![
        "hi".into(),
        "How do I reset my password?".into(),
        "Écris un poème sur la mer, s'il te plaît — en alexandrins.".into(),
        "fn main() { println!(\"{}\", (1..=10).map(|x| x * x).sum::<u32>()); }".into(),
        "What is the capital of Australia, and why isn't it Sydney?".into(),
        long,
        "".into(),
        "🙂🙂🙂 emoji only".into(),
        "Summarise the following paragraph in one sentence: the committee met on Tuesday to discuss \
         the budget, and after a long debate agreed to postpone the decision until next month."
            .into(),
    ];
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let want = candle.embed_batch(&refs).unwrap();
    let batched = fast.embed_batch(&refs).unwrap();
    assert_eq!(batched.len(), refs.len());
    for (i, text) in refs.iter().enumerate() {
        let single = fast.embed_batch(&[text]).unwrap().remove(0);
        for (how, v) in [("batched", &batched[i]), ("single", &single)] {
            let cos: f32 = v.iter().zip(&want[i]).map(|(a, b)| a * b).sum();
            assert!(cos > 0.99999, "{how} text {i}: cosine {cos} against candle");
        }
    }
    assert_eq!(fast.count_tokens(&texts[5]), 256);
}
