//! The trained router: ridge regression of the expected quality gain (premium − cheap) on the
//! prompt's MiniLM embedding (the cache's vector: routing costs no second model call) plus
//! [`features::text_features`]. Scoring is 396 multiply-adds.
//!
//! Loaded from `models/router/router.json`; it cannot be constructed unloaded. The file carries
//! the folded weights, the training means (used for a prompt whose embedding is unavailable, and
//! for explanations), and a calibration table of training-score quantiles, so a target premium
//! share can be turned into a threshold.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{features, Classifier, Feature};

pub const EMBED_DIM: usize = 384;
pub const DIM: usize = EMBED_DIM + features::NAMES.len();

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RouterFile {
    pub kind: String,
    /// Folded weights: score = bias + Σ w_j x_j.
    pub weights: Vec<f32>,
    pub bias: f32,
    /// Training means of x, per dimension.
    pub mean: Vec<f32>,
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
        if file.weights.len() != DIM || file.mean.len() != DIM {
            return Err(format!(
                "expected {DIM} weights and means, found {} and {}",
                file.weights.len(),
                file.mean.len()
            ));
        }
        if file.quantiles.len() != 101 {
            return Err("expected 101 calibration quantiles".into());
        }
        if file.weights.iter().chain(&file.mean).chain(&file.quantiles).any(|x| !x.is_finite())
            || !file.bias.is_finite()
        {
            return Err("non-finite numbers".into());
        }
        Ok(TrainedRouter { file })
    }

    pub fn load(dir: &Path) -> Result<Self, RouterError> {
        let path = dir.join("router.json");
        let err = |detail: String| RouterError { path: path.display().to_string(), detail };
        let text = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
        let file: RouterFile = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
        TrainedRouter::from_file(file).map_err(err)
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
}

impl Classifier for TrainedRouter {
    fn name(&self) -> &str {
        "ridge-gain"
    }

    fn score(&self, prompt: &str, vector: Option<&[f32]>) -> f32 {
        let x = self.input(prompt, vector);
        self.file.bias + x.iter().zip(&self.file.weights).map(|(a, w)| a * w).sum::<f32>()
    }

    fn explain(&self, prompt: &str, vector: Option<&[f32]>) -> Vec<Feature> {
        let x = self.input(prompt, vector);
        let contrib = |j: usize| self.file.weights[j] * (x[j] - self.file.mean[j]);
        let mut out: Vec<Feature> = features::NAMES
            .iter()
            .enumerate()
            .map(|(i, n)| Feature { name: (*n).to_string(), contribution: contrib(EMBED_DIM + i) })
            .collect();
        out.push(Feature {
            name: "embedding (what the prompt is about)".into(),
            contribution: (0..EMBED_DIM).map(contrib).sum(),
        });
        out.push(Feature {
            name: "average prompt".into(),
            contribution: self.file.bias + (0..DIM).map(|j| self.file.weights[j] * self.file.mean[j]).sum::<f32>(),
        });
        out.sort_by(|a, b| b.contribution.abs().total_cmp(&a.contribution.abs()));
        out.truncate(6);
        out
    }

    fn threshold_for_share(&self, share: f32) -> Option<f32> {
        let q = ((1.0 - share.clamp(0.0, 1.0)) * 100.0).round() as usize;
        self.file.quantiles.get(q.min(100)).copied()
    }
}
