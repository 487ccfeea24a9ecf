//! The shipped cache decision rule: which similarity threshold, and whether the near-miss guard
//! vetoes. Its parameters live in `models/cache_rule.json`, beside the router, and are what
//! `serve` uses by default and what `switchyard eval cache` scores as "shipped".

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::guard;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleKind {
    /// One global cosine threshold: what GPTCache and most gateways do.
    GlobalCosine,
    /// A cosine threshold, and the near-miss guard's veto.
    GuardedCosine,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheRule {
    pub rule: RuleKind,
    pub threshold: f32,
    /// Free-form provenance: how and on what the threshold was chosen.
    #[serde(default)]
    pub notes: String,
}

#[derive(Debug, thiserror::Error)]
#[error("cache rule {path}: {detail}")]
pub struct RuleError {
    path: String,
    detail: String,
}

impl CacheRule {
    pub fn global(threshold: f32) -> Self {
        CacheRule { rule: RuleKind::GlobalCosine, threshold, notes: String::new() }
    }

    pub fn guarded(threshold: f32) -> Self {
        CacheRule { rule: RuleKind::GuardedCosine, threshold, notes: String::new() }
    }

    pub fn load(path: &Path) -> Result<Self, RuleError> {
        let err = |detail: String| RuleError { path: path.display().to_string(), detail };
        let text = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        Self::from_json(&text).map_err(err)
    }

    /// Parses and checks a rule file's contents (the embedded copy has no path).
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let rule: CacheRule = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if !(0.0..=1.0).contains(&rule.threshold) {
            return Err("threshold must be between 0 and 1".into());
        }
        Ok(rule)
    }

    pub fn name(&self) -> &'static str {
        match self.rule {
            RuleKind::GlobalCosine => "global-cosine",
            RuleKind::GuardedCosine => "guarded-cosine",
        }
    }

    /// The score the threshold is compared with: the cosine, less the guard's penalties, or −1
    /// when the guard vetoes.
    pub fn score(&self, cached: &str, query: &str, cosine: f32) -> f32 {
        score(self.rule, cached, query, cosine)
    }
}

pub fn score(rule: RuleKind, cached: &str, query: &str, cosine: f32) -> f32 {
    match rule {
        RuleKind::GlobalCosine => cosine,
        RuleKind::GuardedCosine => guard::guarded_score(cached, query, cosine).unwrap_or(-1.0),
    }
}
