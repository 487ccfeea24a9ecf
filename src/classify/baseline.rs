//! The prompt-length baseline: longer prompts go premium. It is what the trained router must beat,
//! and what serves `model: "auto"` when no trained router is installed.

use super::{Classifier, Feature};

/// `score = 1 − exp(−chars / scale)`: 0 for an empty prompt, → 1 for long ones. With the default
/// scale of 600 characters, a 400-character prompt scores ≈ 0.49.
pub struct LengthBaseline {
    pub scale: f32,
}

impl Default for LengthBaseline {
    fn default() -> Self {
        LengthBaseline { scale: 600.0 }
    }
}

impl Classifier for LengthBaseline {
    fn name(&self) -> &str {
        "length-baseline"
    }

    fn score(&self, prompt: &str, _vector: Option<&[f32]>) -> f32 {
        1.0 - (-(prompt.chars().count() as f32) / self.scale).exp()
    }

    fn explain(&self, prompt: &str, vector: Option<&[f32]>) -> Vec<Feature> {
        vec![Feature {
            name: format!("length ({} chars)", prompt.chars().count()),
            contribution: self.score(prompt, vector),
        }]
    }

    fn threshold_for_share(&self, _share: f32) -> Option<f32> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longer_scores_higher() {
        let b = LengthBaseline::default();
        assert!(b.score("hi", None) < b.score(&"word ".repeat(200), None));
        assert!(b.score("", None).abs() < 1e-6);
    }
}
