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
