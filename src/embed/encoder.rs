//! The BERT encoder forward pass on pre-packed weights (the "fast" engine).
//!
//! Same weights, same arithmetic as candle's `BertModel` (which stays available as the `candle`
//! engine and is the reference this one is tested against), arranged for one core:
//! - every linear layer's weight is packed once at load (see [`kernel`]), and Q, K, V are one
//!   fused 384 → 1152 product;
//! - sequences are not padded: the tokens of a batch are concatenated, every linear layer runs
//!   once over all of them, and attention runs per sequence on its own rows, so a short prompt
//!   batched with a long one costs nothing extra and needs no mask;
//! - GELU uses a vectorisable erf, layer norm and softmax work row by row in place, and the
//!   scratch buffers live for the thread, so a forward pass allocates only its result.

use std::cell::RefCell;
use std::collections::HashMap;

use candle_core::{DType, Tensor};

use super::kernel::{self, Packed};

/// Why the fast engine cannot take a model (the caller falls back to candle or reports it).
#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    #[error("tensor {name}: {detail}")]
    Tensor { name: String, detail: String },
    #[error("unsupported model: {0}")]
    Unsupported(String),
}

/// The shape of a BERT encoder, from `config.json`.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub hidden: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub vocab: usize,
    pub max_positions: usize,
    pub eps: f32,
}

struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

/// Weights are held in f16 and widened in registers: exact for an f16 checkpoint like the
/// vendored one; for an f32 checkpoint it is the f16 rounding the model README bounds (cosine
/// ≥ 0.9995 against f32), and the `candle` engine keeps full f32.
type Weight = Packed<half::f16>;

struct Layer {
    qkv: Weight,
    qkv_bias: Vec<f32>,
    out: Weight,
    out_bias: Vec<f32>,
    attn_norm: Norm,
    up: Weight,
    up_bias: Vec<f32>,
    down: Weight,
    down_bias: Vec<f32>,
    out_norm: Norm,
}

pub struct Encoder {
    shape: Shape,
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    embed_norm: Norm,
    layers: Vec<Layer>,
}

/// Per-thread buffers, grown to the largest batch seen.
#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    tmp: Vec<f32>,
    inter: Vec<f32>,
    scores: Vec<f32>,
    keys: Packed<f32>,
    values: Packed<f32>,
}

/// Tokens' worth of scratch a thread keeps between forward passes (≈ 6 MB for MiniLM).
const KEEP_TOKENS: usize = 512;

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

fn sized(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

/// Reads named tensors out of a safetensors file as f32.
struct Weights(HashMap<String, Tensor>);

impl Weights {
    fn get(&self, name: &str, dims: &[usize]) -> Result<Vec<f32>, EncoderError> {
        let err = |detail: String| EncoderError::Tensor { name: name.to_string(), detail };
        let t =
            self.0.get(name).or_else(|| self.0.get(&format!("bert.{name}"))).ok_or_else(|| err("missing".into()))?;
        if t.dims() != dims {
            return Err(err(format!("shape {:?}, expected {dims:?}", t.dims())));
        }
        t.to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| err(e.to_string()))
    }

    fn norm(&self, prefix: &str, h: usize) -> Result<Norm, EncoderError> {
        Ok(Norm {
            gamma: self.get(&format!("{prefix}.weight"), &[h])?,
            beta: self.get(&format!("{prefix}.bias"), &[h])?,
        })
    }

    /// A PyTorch linear layer (`weight` is `[out, in]`), packed for `x · weightᵀ`.
    fn linear(&self, prefix: &str, inp: usize, out: usize) -> Result<(Weight, Vec<f32>), EncoderError> {
        let w = self.get(&format!("{prefix}.weight"), &[out, inp])?;
        Ok((Packed::new(inp, out, &w, 1, inp), self.get(&format!("{prefix}.bias"), &[out])?))
    }
}

impl Encoder {
    /// Builds the encoder from the tensors of a `BertModel` checkpoint.
    pub fn load(tensors: HashMap<String, Tensor>, shape: Shape, hidden_act: &str) -> Result<Self, EncoderError> {
        if hidden_act != "gelu" {
            return Err(EncoderError::Unsupported(format!(
                "hidden_act {hidden_act:?} (the fast engine does erf GELU)"
            )));
        }
        if shape.heads == 0 || !shape.hidden.is_multiple_of(shape.heads) {
            return Err(EncoderError::Unsupported(format!("{} heads for hidden size {}", shape.heads, shape.hidden)));
        }
        let w = Weights(tensors);
        let h = shape.hidden;
        let word = w.get("embeddings.word_embeddings.weight", &[shape.vocab, h])?;
        let position = w.get("embeddings.position_embeddings.weight", &[shape.max_positions, h])?;
        let token_type = w.get("embeddings.token_type_embeddings.weight", &[2, h])?[..h].to_vec();
        let embed_norm = w.norm("embeddings.LayerNorm", h)?;
        let mut layers = Vec::with_capacity(shape.layers);
        for i in 0..shape.layers {
            let p = format!("encoder.layer.{i}");
            // Q, K and V side by side: one [h, 3h] product instead of three [h, h] ones
            let mut qkv_w = Vec::with_capacity(3 * h * h);
            let mut qkv_bias = Vec::with_capacity(3 * h);
            for part in ["query", "key", "value"] {
                qkv_w.extend(w.get(&format!("{p}.attention.self.{part}.weight"), &[h, h])?);
                qkv_bias.extend(w.get(&format!("{p}.attention.self.{part}.bias"), &[h])?);
            }
            let (out, out_bias) = w.linear(&format!("{p}.attention.output.dense"), h, h)?;
            let (up, up_bias) = w.linear(&format!("{p}.intermediate.dense"), h, shape.intermediate)?;
            let (down, down_bias) = w.linear(&format!("{p}.output.dense"), shape.intermediate, h)?;
            layers.push(Layer {
                qkv: Packed::new(h, 3 * h, &qkv_w, 1, h),
                qkv_bias,
                out,
                out_bias,
                attn_norm: w.norm(&format!("{p}.attention.output.LayerNorm"), h)?,
                up,
                up_bias,
                down,
                down_bias,
                out_norm: w.norm(&format!("{p}.output.LayerNorm"), h)?,
            });
        }
        Ok(Encoder { shape, word, position, token_type, embed_norm, layers })
    }

    /// Per token-id sequence (each already truncated to the position limit and never empty: the
    /// tokenizer adds `[CLS]` and `[SEP]`), the mean pools, L2-normalised, of the last layer, of
    /// the embedding layer's output and of layer [`ROUTER_LAYER`]'s: the cache reads the first,
    /// the router all three.
    pub fn embed_pooled(&self, seqs: &[&[u32]]) -> Result<Vec<[Vec<f32>; 3]>, EncoderError> {
        let s = self.shape;
        for seq in seqs {
            if seq.is_empty() || seq.len() > s.max_positions {
                return Err(EncoderError::Unsupported(format!("a sequence of {} tokens", seq.len())));
            }
            if let Some(bad) = seq.iter().find(|&&id| id as usize >= s.vocab) {
                return Err(EncoderError::Unsupported(format!("token id {bad} outside the vocabulary")));
            }
        }
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let out = self.forward(&mut scratch, seqs);
            // keep buffers for everyday batches; give back what one huge batch grew them to
            if scratch.inter.len() > KEEP_TOKENS * s.intermediate {
                *scratch = Scratch::default();
            }
            Ok(out)
        })
    }

    fn forward(&self, sc: &mut Scratch, seqs: &[&[u32]]) -> Vec<[Vec<f32>; 3]> {
        let s = self.shape;
        let (h, inter, heads) = (s.hidden, s.intermediate, s.heads);
        let d = h / heads;
        let scale = 1.0 / (d as f32).sqrt();
        let n: usize = seqs.iter().map(|q| q.len()).sum();
        let longest = seqs.iter().map(|q| q.len()).max().unwrap_or(0);
        let Scratch { x, qkv, ctx, tmp, inter: up, scores, keys, values } = sc;
        let x = sized(x, n * h);
        let qkv = sized(qkv, n * 3 * h);
        let ctx = sized(ctx, n * h);
        let tmp = sized(tmp, n * h);
        let up = sized(up, n * inter);
        let scores = sized(scores, longest * longest);

        // embeddings: word + position + token type 0, then layer norm
        let mut row = 0;
        for seq in seqs {
            for (pos, &id) in seq.iter().enumerate() {
                let xr = &mut x[row * h..(row + 1) * h];
                let (wr, pr) = (&self.word[id as usize * h..][..h], &self.position[pos * h..][..h]);
                for (((v, w), p), t) in xr.iter_mut().zip(wr).zip(pr).zip(&self.token_type) {
                    *v = w + p + t;
                }
                add_norm(xr, &[], &self.embed_norm, s.eps);
                row += 1;
            }
        }

        let embedded = mean_pools(x, seqs, h);
        let mut early = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            if i == ROUTER_LAYER {
                early = mean_pools(x, seqs, h);
            }
            kernel::matmul(x, h, n, &layer.qkv, Some(&layer.qkv_bias), qkv, 3 * h);
            // attention, per sequence and head, on that sequence's rows only
            let mut start = 0;
            for seq in seqs {
                let len = seq.len();
                let rows = &qkv[start * 3 * h..(start + len) * 3 * h];
                for hd in 0..heads {
                    let (q, k, v) = (hd * d, h + hd * d, 2 * h + hd * d);
                    keys.repack(d, len, &rows[k..], 1, 3 * h); // Kᵀ: [d, len]
                    kernel::matmul(&rows[q..], 3 * h, len, keys, None, scores, len);
                    for r in scores[..len * len].chunks_exact_mut(len) {
                        kernel::softmax_scaled(r, scale);
                    }
                    values.repack(len, d, &rows[v..], 3 * h, 1); // V: [len, d]
                    kernel::matmul(scores, len, len, values, None, &mut ctx[start * h + hd * d..], h);
                }
                start += len;
            }
            kernel::matmul(ctx, h, n, &layer.out, Some(&layer.out_bias), tmp, h);
            for (xr, tr) in x.chunks_exact_mut(h).zip(tmp.chunks_exact(h)) {
                add_norm(xr, tr, &layer.attn_norm, s.eps);
            }
            kernel::matmul(x, h, n, &layer.up, Some(&layer.up_bias), up, inter);
            kernel::gelu_erf(up);
            kernel::matmul(up, inter, n, &layer.down, Some(&layer.down_bias), tmp, h);
            for (xr, tr) in x.chunks_exact_mut(h).zip(tmp.chunks_exact(h)) {
                add_norm(xr, tr, &layer.out_norm, s.eps);
            }
        }

        if early.is_empty() {
            early = mean_pools(x, seqs, h); // a model with no more than ROUTER_LAYER layers
        }
        let last = mean_pools(x, seqs, h);
        last.into_iter().zip(embedded).zip(early).map(|((l, e), m)| [l, e, m]).collect()
    }
}

/// The hidden state the router reads besides the last layer's and the embedding layer's: the
/// output of this many transformer layers (of MiniLM's 6). Chosen by cross-validation in
/// `eval/scripts/router_pooling_research.py` and `router_combo_research.py`.
pub const ROUTER_LAYER: usize = 3;

/// Mean pooling over each sequence's tokens of `x` ([tokens, h]), then unit length.
fn mean_pools(x: &[f32], seqs: &[&[u32]], h: usize) -> Vec<Vec<f32>> {
    let mut out = Vec::with_capacity(seqs.len());
    let mut start = 0;
    for seq in seqs {
        let mut v = vec![0f32; h];
        for xr in x[start * h..(start + seq.len()) * h].chunks_exact(h) {
            for (a, b) in v.iter_mut().zip(xr) {
                *a += b;
            }
        }
        let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
        v.iter_mut().for_each(|a| *a /= norm);
        out.push(v);
        start += seq.len();
    }
    out
}

fn add_norm(x: &mut [f32], residual: &[f32], norm: &Norm, eps: f32) {
    kernel::add_layer_norm(x, residual, &norm.gamma, &norm.beta, eps);
}
