//! The trained router: a mixture of per-source linear heads on the prompt's MiniLM embedding (the
//! cache's vector: routing costs no second model call) plus [`features::text_features`].
//!
//! Why a mixture: what makes a prompt need the premium model differs by kind of traffic. On
//! multiple-choice knowledge questions it is the subject, on maths word problems the number of
//! steps, on open chat instructions how open-ended the request is; one linear model over all of
//! them learns the largest source's rule (MMLU was 89% of the rows) and is no better than random
//! on chat. So each source group gets its own ridge head, every head's output is z-scored on its
//! own training prompts (so no head wins by scale alone), and a linear softmax gate, trained with
//! the groups balanced, says how much each head applies to this prompt. Measured by 5-fold CV in
//! `eval/scripts/router_mix_research.py` and `switchyard eval routing`.
//!
//! Scoring is (2 × heads + 12) dot products of 396 numbers, about a microsecond. Loaded from
//! `models/router/router.json`; it cannot be constructed unloaded. The file carries the folded
//! weights, the training means (used for a prompt whose embedding is unavailable, and for
//! explanations), and a calibration table of training-score quantiles, so a target premium share
//! can be turned into a starting threshold.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{features, Classifier, Feature};

pub const EMBED_DIM: usize = 384;
pub const DIM: usize = EMBED_DIM + features::NAMES.len();

/// `bias + weights · x` over the model input x (embedding then text features).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Linear {
    /// The source group this head or gate row belongs to (`mmlu`, `gsm8k`, `alpaca_eval` …).
    pub name: String,
    pub weights: Vec<f32>,
    pub bias: f32,
}

impl Linear {
    fn apply(&self, x: &[f32]) -> f32 {
        self.bias + x.iter().zip(&self.weights).map(|(a, w)| a * w).sum::<f32>()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RouterFile {
    pub kind: String,
    /// One head per source group; each scores the z-scored expected quality gain (premium − cheap).
    pub heads: Vec<Linear>,
    /// One gate row per head (empty with a single head): p = softmax(temperature · gate(x)).
    pub gate: Vec<Linear>,
    pub gate_temperature: f32,
    /// Training means of x, per dimension.
    pub mean: Vec<f32>,
    /// Each head's own training means of x (one row per head; empty in files from before they were
    /// kept). Explanations measure a prompt against the prompts of its own kind: against the
    /// pooled mean, which is mostly MMLU, every chat instruction "lacks" answer options.
    #[serde(default)]
    pub head_means: Vec<Vec<f32>>,
    /// Training-score quantiles q_0 … q_100: the threshold for premium share s is q_{100(1−s)}.
    pub quantiles: Vec<f32>,
    pub trained_on: Vec<String>,
    pub cheap_model: String,
    pub premium_model: String,
    pub lambda: f64,
    pub n: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("router {path}: {detail}")]
pub struct RouterError {
    pub path: String,
    pub detail: String,
}

pub struct TrainedRouter {
    file: RouterFile,
}

impl TrainedRouter {
    pub fn from_file(file: RouterFile) -> Result<Self, String> {
        if file.heads.is_empty() {
            return Err("no heads".into());
        }
        if file.heads.len() > 1 && file.gate.len() != file.heads.len() {
            return Err(format!("{} heads need as many gate rows, found {}", file.heads.len(), file.gate.len()));
        }
        if file.heads.iter().chain(&file.gate).any(|l| l.weights.len() != DIM) || file.mean.len() != DIM {
            return Err(format!("expected {DIM} weights and means per head and gate row"));
        }
        if !file.head_means.is_empty()
            && (file.head_means.len() != file.heads.len()
                || file.head_means.iter().any(|m| m.len() != DIM || !m.iter().all(|x| x.is_finite())))
        {
            return Err(format!("expected no head means or {DIM} finite ones per head"));
        }
        if file.quantiles.len() != 101 {
            return Err("expected 101 calibration quantiles".into());
        }
        let linear_ok = |l: &Linear| l.bias.is_finite() && l.weights.iter().all(|w| w.is_finite());
        if !file.heads.iter().chain(&file.gate).all(linear_ok)
            || !file.mean.iter().chain(&file.quantiles).all(|x| x.is_finite())
            || !file.gate_temperature.is_finite()
        {
            return Err("non-finite numbers".into());
        }
        Ok(TrainedRouter { file })
    }

    pub fn load(dir: &Path) -> Result<Self, RouterError> {
        let path = dir.join("router.json");
        let err = |detail: String| RouterError { path: path.display().to_string(), detail };
        let text = std::fs::read(&path).map_err(|e| err(e.to_string()))?;
        Self::from_json(&text).map_err(err)
    }

    /// Parses and checks a `router.json` (the embedded copy has no path).
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let file: RouterFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        TrainedRouter::from_file(file)
    }

    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("router.json"), serde_json::to_string(&self.file).unwrap_or_default())
    }

    pub fn file(&self) -> &RouterFile {
        &self.file
    }

    fn input(&self, prompt: &str, vector: Option<&[f32]>) -> Vec<f32> {
        let mut x = Vec::with_capacity(DIM);
        match vector {
            Some(v) if v.len() == EMBED_DIM => x.extend_from_slice(v),
            _ => x.extend_from_slice(&self.file.mean[..EMBED_DIM]),
        }
        x.extend_from_slice(&features::text_features(prompt));
        x
    }

    /// How much each head applies to `x` (sums to 1).
    pub fn gate_weights(&self, x: &[f32]) -> Vec<f32> {
        if self.file.heads.len() == 1 {
            return vec![1.0];
        }
        let logits: Vec<f32> = self.file.gate.iter().map(|g| self.file.gate_temperature * g.apply(x)).collect();
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
        let sum: f32 = exp.iter().sum();
        exp.iter().map(|e| e / sum).collect()
    }

    fn score_input(&self, x: &[f32]) -> f32 {
        let p = self.gate_weights(x);
        self.file.heads.iter().zip(&p).map(|(h, p)| p * h.apply(x)).sum()
    }

    /// The score of the model input `x` (embedding then text features), for training code.
    pub fn score_x(&self, x: &[f32]) -> f32 {
        self.score_input(x)
    }

    /// The score of `x` split into the 12 text features, the embedding and the average prompt of
    /// the prompt's kind: the parts sum to the score. Each head's part is measured from the mean
    /// of its own training prompts (the pooled mean for files without them), as
    /// score = Σ_h p_h (b_h + w_h·m_h) + Σ_j Σ_h p_h w_hj (x_j − m_hj).
    pub(crate) fn parts(&self, x: &[f32], p: &[f32]) -> Vec<Feature> {
        let means: Vec<&[f32]> = (0..self.file.heads.len())
            .map(|h| self.file.head_means.get(h).map_or(self.file.mean.as_slice(), Vec::as_slice))
            .collect();
        let contrib = |j: usize| {
            self.file.heads.iter().zip(p).zip(&means).map(|((h, p), m)| p * h.weights[j] * (x[j] - m[j])).sum::<f32>()
        };
        let mut parts: Vec<Feature> = features::NAMES
            .iter()
            .enumerate()
            .map(|(i, n)| Feature { name: (*n).to_string(), contribution: contrib(EMBED_DIM + i) })
            .collect();
        parts.push(Feature {
            name: "embedding (what the prompt is about)".into(),
            contribution: (0..EMBED_DIM).map(contrib).sum(),
        });
        parts.push(Feature {
            name: "average prompt of its kind".into(),
            contribution: self
                .file
                .heads
                .iter()
                .zip(p)
                .zip(&means)
                .map(|((h, p), m)| p * (h.bias + h.weights.iter().zip(*m).map(|(w, m)| w * m).sum::<f32>()))
                .sum(),
        });
        parts
    }
}

impl Classifier for TrainedRouter {
    fn name(&self) -> &str {
        &self.file.kind
    }

    fn score(&self, prompt: &str, vector: Option<&[f32]>) -> f32 {
        self.score_input(&self.input(prompt, vector))
    }

    fn explain(&self, prompt: &str, vector: Option<&[f32]>) -> Vec<Feature> {
        let x = self.input(prompt, vector);
        let p = self.gate_weights(&x);
        let mut out: Vec<Feature> = Vec::new();
        if self.file.heads.len() > 1 {
            // the heads that apply, most weight first (those under 0.5% left out)
            let mut gate: Vec<(&Linear, f32)> =
                self.file.heads.iter().zip(p.iter().copied()).filter(|(_, p)| *p >= 0.005).collect();
            gate.sort_by(|a, b| b.1.total_cmp(&a.1));
            out.extend(gate.into_iter().map(|(h, p)| Feature {
                name: format!("gate: looks like {} ({:.0}%)", h.name, p * 100.0),
                contribution: 0.0,
            }));
        }
        let mut parts = self.parts(&x, &p);
        parts.sort_by(|a, b| b.contribution.abs().total_cmp(&a.contribution.abs()));
        parts.truncate(6);
        out.extend(parts);
        out
    }

    fn threshold_for_share(&self, share: f32) -> Option<f32> {
        let q = ((1.0 - share.clamp(0.0, 1.0)) * 100.0).round() as usize;
        self.file.quantiles.get(q.min(100)).copied()
    }
}
