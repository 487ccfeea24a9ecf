//! Sentence embeddings, in process: MiniLM-L6, mean pooled and L2-normalised. The forward pass
//! runs on our packed-weight encoder ([`Engine::Fast`]) or on candle's `BertModel`
//! ([`Engine::Candle`], the reference); both load the same safetensors through candle.
//!
//! [`Embedder`] is synchronous and knows nothing of async; [`worker::EmbedWorker`] runs it on a
//! dedicated thread fed by a bounded queue, so inference never blocks the async reactor and
//! concurrent requests are micro-batched into one forward pass.

mod bert;
pub mod cl100k;
mod encoder;
pub mod kernel;
mod pool;
pub mod worker;

pub use bert::{BertEmbedder, Engine, ModelFiles};
pub use worker::{EmbedHandle, EmbedWorker};

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("model file {path} is missing: {hint}")]
    Missing { path: String, hint: String },
    #[error("model file {path} is corrupt ({detail}): {hint}")]
    Corrupt { path: String, detail: String, hint: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("inference: {0}")]
    Inference(String),
    #[error("the embedding queue is full")]
    Overloaded,
    #[error("the embedding worker has stopped")]
    Stopped,
}

/// A text embedder. Implementations are synchronous; run them off the reactor.
pub trait Embedder: Send + Sync {
    /// The vector length.
    fn dim(&self) -> usize;
    /// One unit-length vector per text, in order.
    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError>;
    /// Word-piece count of a text, after truncation (for usage reporting).
    fn count_tokens(&self, text: &str) -> usize;
}

/// Cosine similarity of two unit vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
