//! Picking a tier for `model: "auto"`.
//!
//! A [`Classifier`] maps a prompt (and its cache embedding, so routing costs no second model call)
//! to a score: higher means the premium tier is more likely to be worth its price (the trained
//! router's score is the expected quality gain; the baseline's is in 0..1). The [`Router`] turns the
//! score into a tier with a threshold.

mod affinity;
mod baseline;
pub mod features;
pub mod share;
pub mod train;
pub mod trained;

pub use affinity::Affinity;
pub use baseline::LengthBaseline;
pub use share::{Ask, LiveRouter, OperatingPoint, Routed, ShareSettings, ShareStats};
pub use trained::TrainedRouter;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TierChoice {
    Cheap,
    Premium,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub tier: TierChoice,
    pub score: f32,
}

/// A named contribution to a score, for `switchyard route` explanations.
#[derive(Debug, Clone, PartialEq)]
pub struct Feature {
    pub name: String,
    pub contribution: f32,
}

pub trait Classifier: Send + Sync {
    fn name(&self) -> &str;
    /// Higher means the premium tier is more likely to be needed; the scale is the classifier's own.
    fn score(&self, prompt: &str, vector: Option<&[f32]>) -> f32;
    /// The largest contributions behind a score, most important first.
    fn explain(&self, prompt: &str, vector: Option<&[f32]>) -> Vec<Feature>;
    /// The threshold that sends about `share` of the training traffic to premium.
    fn threshold_for_share(&self, share: f32) -> Option<f32>;
    /// The same for prompts scored without their embedding. A classifier that scores those with
    /// other heads has their training scores' calibration too; their scale is not the main one.
    fn threshold_for_share_without_embedding(&self, share: f32) -> Option<f32> {
        self.threshold_for_share(share)
    }
    /// The share of the training traffic a fixed `threshold` sends to premium: the inverse of
    /// [`Classifier::threshold_for_share`], for a classifier with a calibration.
    fn share_for_threshold(&self, _threshold: f32) -> Option<f32> {
        None
    }
}

pub struct Router {
    classifier: Box<dyn Classifier>,
    threshold: f32,
}

impl Router {
    pub fn new(classifier: Box<dyn Classifier>, threshold: f32) -> Self {
        Router { classifier, threshold }
    }

    /// Builds the threshold from either an explicit value or a premium share (via calibration).
    pub fn with_operating_point(
        classifier: Box<dyn Classifier>,
        threshold: Option<f32>,
        premium_share: Option<f32>,
    ) -> Self {
        let t = threshold.or_else(|| premium_share.and_then(|s| classifier.threshold_for_share(s))).unwrap_or(0.5);
        Router::new(classifier, t)
    }

    pub fn name(&self) -> &str {
        self.classifier.name()
    }

    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// The classifier's score alone (the live threshold is [`LiveRouter`]'s business).
    pub fn score(&self, prompt: &str, vector: Option<&[f32]>) -> f32 {
        self.classifier.score(prompt, vector)
    }

    /// The threshold the training calibration gives for `share`, if the classifier has one: that
    /// of the prompts scored without their embedding when `degraded`.
    pub fn calibrated_threshold(&self, share: f32, degraded: bool) -> Option<f32> {
        if degraded {
            self.classifier.threshold_for_share_without_embedding(share)
        } else {
            self.classifier.threshold_for_share(share)
        }
    }

    /// An explicit `router.threshold` for a prompt scored `degraded` (without its embedding, by
    /// heads on another scale): the threshold there that sends the same share of the training
    /// traffic to premium, so that an overloaded embedder changes which prompts go premium but
    /// not how many. Unchanged for the main heads, or without a calibration.
    pub fn fixed_threshold(&self, threshold: f32, degraded: bool) -> f32 {
        if !degraded {
            return threshold;
        }
        self.classifier
            .share_for_threshold(threshold)
            .and_then(|share| self.classifier.threshold_for_share_without_embedding(share))
            .unwrap_or(threshold)
    }

    pub fn decide(&self, prompt: &str, vector: Option<&[f32]>) -> Decision {
        let score = self.classifier.score(prompt, vector);
        let tier = if score >= self.threshold { TierChoice::Premium } else { TierChoice::Cheap };
        Decision { tier, score }
    }

    pub fn explain(&self, prompt: &str, vector: Option<&[f32]>) -> Vec<Feature> {
        self.classifier.explain(prompt, vector)
    }
}
