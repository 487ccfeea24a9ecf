//! The trained router: a mixture of per-source linear heads on the prompt's MiniLM forward pass
//! (the one the cache ran: routing costs no second model call; three mean-pooled views of it,
//! [`View`]) plus [`features::text_features`].
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
//! Scoring is 2 × heads dot products of 396 numbers (each row reads one view and the text
//! features; the rest of its 1,164 weights are zero and skipped), about 2 µs. Loaded from
//! `models/router/router.json`; it cannot be constructed unloaded. The file carries the folded
//! weights, the training means (used for a prompt whose embedding is unavailable, and for
//! explanations), and a calibration table of training-score quantiles, so a target premium share
//! can be turned into a starting threshold.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{features, Classifier, Feature};

pub const EMBED_DIM: usize = 384;
/// The embedding part of the model input: three views of the prompt's one forward pass, each a
/// unit-length mean pool ([`View`]).
pub const VIEWS_DIM: usize = 3 * EMBED_DIM;
pub const DIM: usize = VIEWS_DIM + features::NAMES.len();
/// The length of the model input of files from before the views (the last layer only).
const DIM_V1: usize = EMBED_DIM + features::NAMES.len();

/// A view of the prompt in the model input: where its 384 numbers sit. Each head and gate row
/// reads one view (its weights elsewhere are zero) and the 12 text features. Why three: measured
/// by cross-validation (`eval/README.md`), the gate tells kinds of traffic apart best from the
/// word pieces (the embedding layer), the MMLU, arena and chat heads read difficulty best from
/// layer 3, and the GSM8K head from the last layer, the cache's vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Last,
    Embeddings,
    Layer3,
}

impl View {
    pub fn columns(self) -> std::ops::Range<usize> {
        let start = match self {
            View::Last => 0,
            View::Embeddings => EMBED_DIM,
            View::Layer3 => 2 * EMBED_DIM,
        };
        start..start + EMBED_DIM
    }
}

/// `bias + weights · x` over the model input x (embedding then text features).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Linear {
    /// The source group this head or gate row belongs to (`mmlu`, `gsm8k`, `alpaca_eval` …).
    pub name: String,
    pub weights: Vec<f32>,
    pub bias: f32,
    /// The parts of the input with any weight (a view's 384 and the text features): scoring
    /// skips the views a row does not read. Found when a router is built from the file
    /// ([`TrainedRouter::from_file`], which every router goes through), not stored.
    #[serde(skip)]
    spans: Vec<std::ops::Range<usize>>,
}

impl Linear {
    pub fn new(name: String, weights: Vec<f32>, bias: f32) -> Self {
        Linear { name, weights, bias, spans: Vec::new() }
    }

    fn find_spans(&mut self) {
        let blocks = (0..self.weights.len()).step_by(EMBED_DIM).map(|s| s..(s + EMBED_DIM).min(self.weights.len()));
        self.spans = blocks.filter(|r| self.weights[r.clone()].iter().any(|w| *w != 0.0)).collect();
    }

    fn apply(&self, x: &[f32]) -> f32 {
        let dot = |r: &std::ops::Range<usize>| {
            x[r.clone()].iter().zip(&self.weights[r.clone()]).map(|(a, w)| a * w).sum::<f32>()
        };
        self.bias + self.spans.iter().map(dot).sum::<f32>()
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
    /// The same recipe trained with the embedding left out (its views all zero): the router for a
    /// prompt whose embedding did not come in time (an overloaded embedder). Scoring such a prompt
    /// with this file's own heads, the training mean in place of the embedding, is no better than
    /// random (5-fold CV: MMLU 0.48, chat 0.48–0.49); these heads read the text features the
    /// prompt has. Files from before it have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub without_embedding: Option<Box<RouterFile>>,
}

#[derive(Debug, thiserror::Error)]
#[error("router {path}: {detail}")]
pub struct RouterError {
    pub path: String,
    pub detail: String,
}

pub struct TrainedRouter {
    file: RouterFile,
    /// [`RouterFile::without_embedding`], ready to score.
    without_embedding: Option<Box<TrainedRouter>>,
}

impl TrainedRouter {
    pub fn from_file(mut file: RouterFile) -> Result<Self, String> {
        upgrade_v1(&mut file);
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
        for l in file.heads.iter_mut().chain(file.gate.iter_mut()) {
            l.find_spans();
        }
        let linear_ok = |l: &Linear| l.bias.is_finite() && l.weights.iter().all(|w| w.is_finite());
        if !file.heads.iter().chain(&file.gate).all(linear_ok)
            || !file.mean.iter().chain(&file.quantiles).all(|x| x.is_finite())
            || !file.gate_temperature.is_finite()
        {
            return Err("non-finite numbers".into());
        }
        let without_embedding = match file.without_embedding.take() {
            Some(f) if f.without_embedding.is_none() => {
                let r = TrainedRouter::from_file(*f).map_err(|e| format!("without_embedding: {e}"))?;
                // the file keeps the checked copy (spans found), so a loaded file equals a fitted one
                file.without_embedding = Some(Box::new(r.file.clone()));
                Some(Box::new(r))
            }
            Some(_) => return Err("without_embedding: nested too deep".into()),
            None => None,
        };
        Ok(TrainedRouter { file, without_embedding })
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

    /// The model input for a prompt. `vector` is [`crate::embed::Embedded::router_input`]: the
    /// cache's vector and the two earlier views, or the cache's vector alone (candle's engine),
    /// or nothing (no embedding in time). What is missing is taken from the training means, so
    /// the prompt scores as an average one on that part.
    fn input(&self, prompt: &str, vector: Option<&[f32]>) -> Vec<f32> {
        let mut x = Vec::with_capacity(DIM);
        match vector {
            Some(v) if v.len() == VIEWS_DIM => x.extend_from_slice(v),
            Some(v) if v.len() == EMBED_DIM => {
                x.extend_from_slice(v);
                x.extend_from_slice(&self.file.mean[EMBED_DIM..VIEWS_DIM]);
            }
            _ => x.extend_from_slice(&self.file.mean[..VIEWS_DIM]),
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
            .map(|(i, n)| Feature { name: (*n).to_string(), contribution: contrib(VIEWS_DIM + i) })
            .collect();
        parts.push(Feature {
            name: "embedding (what the prompt is about)".into(),
            contribution: (0..VIEWS_DIM).map(contrib).sum(),
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

/// A file from before the views (every row 396 long: the last layer, then the text features)
/// is the same model with zero weights on the views; its means there are never read.
fn upgrade_v1(file: &mut RouterFile) {
    let widen = |v: &mut Vec<f32>| {
        if v.len() == DIM_V1 {
            let features = v.split_off(EMBED_DIM);
            v.resize(VIEWS_DIM, 0.0);
            v.extend(features);
        }
    };
    for l in file.heads.iter_mut().chain(file.gate.iter_mut()) {
        widen(&mut l.weights);
    }
    widen(&mut file.mean);
    file.head_means.iter_mut().for_each(widen);
}

impl Classifier for TrainedRouter {
    fn name(&self) -> &str {
        &self.file.kind
    }

    fn score(&self, prompt: &str, vector: Option<&[f32]>) -> f32 {
        match (vector, &self.without_embedding) {
            (None, Some(r)) => r.score(prompt, Some(&[0.0; VIEWS_DIM])),
            _ => self.score_input(&self.input(prompt, vector)),
        }
    }

    fn explain(&self, prompt: &str, vector: Option<&[f32]>) -> Vec<Feature> {
        if let (None, Some(r)) = (vector, &self.without_embedding) {
            return r.explain(prompt, Some(&[0.0; VIEWS_DIM]));
        }
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

    fn threshold_for_share_without_embedding(&self, share: f32) -> Option<f32> {
        match &self.without_embedding {
            Some(r) => r.threshold_for_share(share),
            None => self.threshold_for_share(share),
        }
    }

    /// One minus the fraction of training scores below `threshold`, interpolated between the
    /// calibration's quantiles.
    fn share_for_threshold(&self, threshold: f32) -> Option<f32> {
        let q = &self.file.quantiles;
        let below = match q.iter().position(|&x| x > threshold) {
            None => 1.0,
            Some(0) => 0.0,
            Some(i) => {
                let (lo, hi) = (q[i - 1], q[i]);
                let within = if hi > lo { (threshold - lo) / (hi - lo) } else { 0.0 };
                ((i - 1) as f32 + within) / 100.0
            }
        };
        Some(1.0 - below)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A one-head file of `weights.len()` inputs, every mean `mean`.
    fn one_head(weights: Vec<f32>, bias: f32, mean: f32, head_means: bool) -> RouterFile {
        let d = weights.len();
        RouterFile {
            kind: "gated-heads".into(),
            heads: vec![Linear::new("all".into(), weights, bias)],
            gate: vec![],
            gate_temperature: 30.0,
            mean: vec![mean; d],
            head_means: if head_means { vec![vec![mean; d]] } else { vec![] },
            quantiles: (0..=100).map(|q| q as f32).collect(),
            trained_on: vec![],
            cheap_model: "c".into(),
            premium_model: "p".into(),
            lambda: 1.0,
            n: 1,
            without_embedding: None,
        }
    }

    #[test]
    fn a_threshold_maps_back_to_the_share_it_was_calibrated_for() {
        let mut file = one_head(vec![1.0; DIM], 0.0, 0.0, true);
        // training scores spread unevenly: the calibration is not linear
        file.quantiles = (0..=100).map(|q| (q as f32 / 100.0).powi(2) * 8.0 - 3.0).collect();
        let r = TrainedRouter::from_file(file).unwrap();
        for share in [0.0, 0.1, 0.3, 0.5, 0.9, 1.0] {
            let t = r.threshold_for_share(share).unwrap();
            assert!((r.share_for_threshold(t).unwrap() - share).abs() < 1e-4, "{share}");
        }
        assert_eq!(r.share_for_threshold(-100.0), Some(1.0), "below every training score: all premium");
        assert_eq!(r.share_for_threshold(100.0), Some(0.0));
    }

    #[test]
    fn a_file_from_before_the_views_scores_as_it_did() {
        // a one-head v1 file: 396 weights, the last layer's 384 then the text features
        let mut weights = vec![0.0f32; DIM_V1];
        weights[0] = 2.0;
        weights[EMBED_DIM] = 0.5; // the first text feature
        let r = TrainedRouter::from_file(one_head(weights, 0.1, 0.25, true)).unwrap();
        assert_eq!(r.file().heads[0].weights.len(), DIM);
        let mut v = vec![0.0f32; EMBED_DIM];
        v[0] = 1.0;
        let f0 = features::text_features("hello")[0];
        let want = 0.1 + 2.0 + 0.5 * f0;
        assert!((r.score("hello", Some(&v)) - want).abs() < 1e-5, "the cache's vector alone");
        let mut full = v.clone();
        full.extend(vec![0.3f32; 2 * EMBED_DIM]);
        assert!((r.score("hello", Some(&full)) - want).abs() < 1e-5, "the views change nothing");
        assert_eq!(r.file().mean[EMBED_DIM - 1], 0.25);
    }

    /// A prompt without its embedding is scored by the text-only heads the file carries, on zero
    /// views as they were trained; with an embedding, by the main heads. A file without them
    /// scores it as before (the training mean for the embedding).
    #[test]
    fn a_prompt_without_its_embedding_is_scored_by_the_text_only_heads() {
        let file = |first_feature: f32, bias: f32| {
            let mut weights = vec![0.0f32; DIM];
            weights[0] = 2.0; // an embedding weight: the text-only heads have none in practice
            weights[VIEWS_DIM] = first_feature;
            one_head(weights, bias, 0.5, false)
        };
        let f0 = features::text_features("hello")[0];
        let mut main = file(0.5, 0.1);
        let plain = TrainedRouter::from_file(main.clone()).unwrap();
        assert!((plain.score("hello", None) - (0.1 + 2.0 * 0.5 + 0.5 * f0)).abs() < 1e-5);
        main.without_embedding = Some(Box::new(file(3.0, -1.0)));
        let r = TrainedRouter::from_file(main.clone()).unwrap();
        assert!((r.score("hello", None) - (-1.0 + 3.0 * f0)).abs() < 1e-5, "the text-only heads, zero views");
        let v = vec![1.0f32; VIEWS_DIM];
        assert!((r.score("hello", Some(&v)) - (0.1 + 2.0 + 0.5 * f0)).abs() < 1e-5, "the main heads");
        // it survives a save and load, and a nested one is refused
        let back: RouterFile = serde_json::from_str(&serde_json::to_string(&main).unwrap()).unwrap();
        assert_eq!(back, main);
        let mut nested = file(0.0, 0.0);
        nested.without_embedding = Some(Box::new(main));
        assert!(TrainedRouter::from_file(nested).is_err());
    }

    /// The text-only heads' scores have a scale of their own, so their share is read from their
    /// own training quantiles; a file without them has only the main calibration.
    #[test]
    fn the_text_only_heads_carry_their_own_calibration() {
        let mut main = one_head(vec![0.0; DIM], 0.0, 0.0, false);
        let plain = TrainedRouter::from_file(main.clone()).unwrap();
        assert_eq!(plain.threshold_for_share_without_embedding(0.3), Some(70.0));
        let mut text_only = one_head(vec![0.0; DIM], 0.0, 0.0, false);
        text_only.quantiles = (0..=100).map(|q| q as f32 / 1000.0).collect();
        main.without_embedding = Some(Box::new(text_only));
        let r = TrainedRouter::from_file(main).unwrap();
        assert_eq!(r.threshold_for_share(0.3), Some(70.0));
        assert_eq!(r.threshold_for_share_without_embedding(0.3), Some(0.07));
    }
}
