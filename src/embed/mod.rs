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

/// One text's embedding: the cache's vector, and the router's extra views of the same forward
/// pass when the engine gives them.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedded {
    /// The last layer's mean pool, unit length: what the cache compares.
    pub vector: Vec<f32>,
    /// The embedding layer's and layer [`ROUTER_LAYER`]'s mean pools, each unit length (the
    /// router's gate and most of its heads read them; see `classify::trained`). `None` from
    /// candle's `BertModel`, which keeps its layers to itself: the router then scores as if
    /// these views were those of an average training prompt.
    pub views: Option<[Vec<f32>; 2]>,
}

impl Embedded {
    /// The router's input: the vector, then the views when there are any.
    pub fn router_input(&self) -> Vec<f32> {
        let mut x = self.vector.clone();
        if let Some([a, b]) = &self.views {
            x.extend_from_slice(a);
            x.extend_from_slice(b);
        }
        x
    }
}

pub use encoder::ROUTER_LAYER;

/// A text embedder. Implementations are synchronous; run them off the reactor.
pub trait Embedder: Send + Sync {
    /// The vector length.
    fn dim(&self) -> usize;
    /// One unit-length vector per text, in order.
    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError>;
    /// [`Embedded`] per text, in order: the vectors of [`Embedder::embed_batch`] and, if the
    /// engine has them, the router's views.
    fn embed_batch_full(&self, texts: &[&str]) -> Result<Vec<Embedded>, EmbedError> {
        Ok(self.embed_batch(texts)?.into_iter().map(|vector| Embedded { vector, views: None }).collect())
    }
    /// Word-piece count of a text, after truncation (for usage reporting).
    fn count_tokens(&self, text: &str) -> usize;
}

/// Cosine similarity of two unit vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
