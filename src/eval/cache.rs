//! `switchyard eval cache`: how often each cache decision rule serves a true duplicate (recall)
//! and how often it serves a non-duplicate (false hits), across thresholds, on labelled pairs
//! `{"a", "b", "duplicate"}` — `a` plays the cached question, `b` the new one.
//!
//! The honest number is cross-validated: each fold's threshold for the target false-hit rate is
//! chosen on the other folds and scored on this one. `shipped` applies the rule in
//! `models/cache_rule.json` exactly as `serve` does, refitting nothing, so a held-out file can be
//! scored honestly.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::embeddings::{model_id, EmbeddingStore};
use super::plot::{line_plot, Series};
use crate::cache::CacheRule;
use crate::embed::{cosine, Embedder};

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{path}: {detail}")]
    Data { path: String, detail: String },
    #[error("embedding: {0}")]
    Embed(#[from] crate::embed::EmbedError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Rule(#[from] crate::cache::rule::RuleError),
}

#[derive(Debug, Clone, Deserialize)]
pub struct Pair {
    pub a: String,
    pub b: String,
    /// Absent in constructed near-miss files, whose pairs are all non-duplicates by construction.
    #[serde(default)]
    pub duplicate: bool,
    /// Optional category (near-miss type), reported separately.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

pub fn read_pairs(path: &Path) -> Result<Vec<Pair>, EvalError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| EvalError::Data { path: path.display().to_string(), detail: e.to_string() })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let p: Pair = serde_json::from_str(line).map_err(|e| EvalError::Data {
            path: path.display().to_string(),
            detail: format!("line {}: {e} (expected {{\"a\", \"b\", \"duplicate\"}})", i + 1),
        })?;
        out.push(p);
    }
    if out.is_empty() {
        return Err(EvalError::Data { path: path.display().to_string(), detail: "no pairs".into() });
    }
    Ok(out)
}

/// A rule's score for every pair (served when score ≥ threshold).
pub struct Scored {
    pub name: String,
    pub scores: Vec<f32>,
}

/// (false-hit rate, recall) of serving every pair with score ≥ `t`, over the pairs in `idx`.
pub fn rates(scores: &[f32], labels: &[bool], idx: &[usize], t: f32) -> (f64, f64) {
    let (mut fp, mut neg, mut tp, mut pos) = (0usize, 0usize, 0usize, 0usize);
    for &i in idx {
        let served = scores[i] >= t;
        if labels[i] {
            pos += 1;
            tp += served as usize;
        } else {
            neg += 1;
            fp += served as usize;
        }
    }
    (fp as f64 / neg.max(1) as f64, tp as f64 / pos.max(1) as f64)
}

/// The lowest threshold whose false-hit rate on `idx` is at most `target`.
pub fn threshold_for(scores: &[f32], labels: &[bool], idx: &[usize], target: f64) -> f32 {
    let mut neg: Vec<f32> = idx.iter().filter(|&&i| !labels[i]).map(|&i| scores[i]).collect();
    neg.sort_by(|a, b| b.total_cmp(a));
    let allowed = (target * neg.len() as f64).floor() as usize;
    match neg.get(allowed) {
        // strictly above the first negative we may not serve
        Some(&s) => next_up(s.max(-1.0)),
        None => -1.0,
    }
}

fn next_up(x: f32) -> f32 {
    if x.is_nan() || x == f32::INFINITY {
        return x;
    }
    let bits = x.to_bits();
    let next = if x == 0.0 {
        1
    } else if x > 0.0 {
        bits + 1
    } else {
        bits - 1
    };
    f32::from_bits(next)
}

#[derive(Debug, Clone, Serialize)]
pub struct CvResult {
    pub folds: usize,
    pub recall_mean: f64,
    pub recall_sd: f64,
    pub false_hit_rate_mean: f64,
}

/// K-fold cross-validation at a target false-hit rate; folds by a hash of the pair's position.
pub fn cross_validate(scores: &[f32], labels: &[bool], folds: usize, target: f64) -> CvResult {
    let fold_of = |i: usize| (i.wrapping_mul(2654435761) >> 7) % folds;
    let mut recalls = Vec::new();
    let mut fhrs = Vec::new();
    for f in 0..folds {
        let train: Vec<usize> = (0..scores.len()).filter(|&i| fold_of(i) != f).collect();
        let test: Vec<usize> = (0..scores.len()).filter(|&i| fold_of(i) == f).collect();
        let t = threshold_for(scores, labels, &train, target);
        let (fhr, rec) = rates(scores, labels, &test, t);
        recalls.push(rec);
        fhrs.push(fhr);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let m = mean(&recalls);
    let sd = (recalls.iter().map(|r| (r - m).powi(2)).sum::<f64>() / (recalls.len().max(2) - 1) as f64).sqrt();
    CvResult { folds, recall_mean: m, recall_sd: sd, false_hit_rate_mean: mean(&fhrs) }
}

#[derive(Debug, Clone, Serialize)]
pub struct RuleReport {
    /// The threshold meeting the target false-hit rate on this file (fitted here).
    pub threshold: f32,
    pub false_hit_rate: f64,
    pub recall: f64,
    /// `[threshold, false_hit_rate, recall]` from 0.70 to 1.00.
    pub curve: Vec<[f64; 3]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cv: Option<CvResult>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TypeServed {
    pub n: usize,
    pub shipped: f64,
    pub global_cosine_0_966: f64,
}

/// The global-cosine threshold with 1% false hits on the QQP dev pairs (reproduced by `eval cache`).
pub const BASELINE_THRESHOLD: f32 = 0.966;

#[derive(Debug, Clone, Serialize)]
pub struct Shipped {
    pub rule: String,
    pub threshold: f32,
    pub false_hit_rate: f64,
    pub recall: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Recommended {
    pub rule: String,
    pub threshold: f32,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CacheReport {
    pub n: usize,
    /// Per pair `type` (near-miss files): share of pairs served, by the shipped rule and by the
    /// global-cosine baseline at its 1%-false-hit threshold on QQP dev (0.966).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub served_by_type: std::collections::BTreeMap<String, TypeServed>,
    pub duplicates: usize,
    pub target_false_hit: f64,
    pub rules: std::collections::BTreeMap<String, RuleReport>,
    pub recommended: Recommended,
    pub shipped: Shipped,
}

pub struct CacheEvalOptions {
    pub pairs: PathBuf,
    pub out: PathBuf,
    pub target_false_hit: f64,
    pub folds: usize,
    pub shipped: CacheRule,
    pub cache_dir: PathBuf,
    pub model_dir: PathBuf,
}

/// Scores every rule on the pairs; embeddings come from (and go to) the on-disk store.
pub fn evaluate(embedder: &Arc<dyn Embedder>, opts: &CacheEvalOptions) -> Result<CacheReport, EvalError> {
    let pairs = read_pairs(&opts.pairs)?;
    let mut store = EmbeddingStore::open(&opts.cache_dir, &model_id(&opts.model_dir), embedder.dim())?;
    let texts: Vec<String> = pairs.iter().flat_map(|p| [p.a.clone(), p.b.clone()]).collect();
    let vectors = store.embed_all(embedder, &texts, "pairs")?;
    let cos: Vec<f32> = (0..pairs.len()).map(|i| cosine(&vectors[2 * i], &vectors[2 * i + 1])).collect();
    let labels: Vec<bool> = pairs.iter().map(|p| p.duplicate).collect();
    let rules = [CacheRule::global(0.0), CacheRule::guarded(0.0)];
    let scored: Vec<Scored> = rules
        .iter()
        .map(|r| Scored {
            name: r.name().to_string(),
            scores: pairs.iter().zip(&cos).map(|(p, c)| r.score(&p.a, &p.b, *c)).collect(),
        })
        .collect();
    let all: Vec<usize> = (0..pairs.len()).collect();
    let mut reports = std::collections::BTreeMap::new();
    for s in &scored {
        let t = threshold_for(&s.scores, &labels, &all, opts.target_false_hit);
        let (fhr, rec) = rates(&s.scores, &labels, &all, t);
        let curve = (0..=120)
            .map(|k| {
                let th = 0.70 + 0.0025 * k as f64;
                let (f, r) = rates(&s.scores, &labels, &all, th as f32);
                [th, f, r]
            })
            .collect();
        let has_both = labels.iter().any(|l| *l) && labels.iter().any(|l| !*l);
        let cv = (opts.folds >= 2 && has_both)
            .then(|| cross_validate(&s.scores, &labels, opts.folds, opts.target_false_hit));
        reports.insert(s.name.clone(), RuleReport { threshold: t, false_hit_rate: fhr, recall: rec, curve, cv });
    }
    let best = reports
        .iter()
        .max_by(|a, b| {
            let key = |r: &RuleReport| r.cv.as_ref().map_or(r.recall, |c| c.recall_mean);
            key(a.1).total_cmp(&key(b.1))
        })
        .map(|(n, r)| (n.clone(), r.threshold))
        .unwrap_or_default();
    let shipped_scores: Vec<f32> = pairs.iter().zip(&cos).map(|(p, c)| opts.shipped.score(&p.a, &p.b, *c)).collect();
    let (sf, sr) = rates(&shipped_scores, &labels, &all, opts.shipped.threshold);
    let mut served_by_type = std::collections::BTreeMap::new();
    let mut kinds: Vec<&String> = pairs.iter().filter_map(|p| p.kind.as_ref()).collect();
    kinds.sort();
    kinds.dedup();
    for k in kinds.into_iter().cloned().chain(pairs.iter().any(|p| p.kind.is_some()).then(|| "all".to_string())) {
        let idx: Vec<usize> = (0..pairs.len()).filter(|&i| k == "all" || pairs[i].kind.as_ref() == Some(&k)).collect();
        let share =
            |scores: &[f32], t: f32| idx.iter().filter(|&&i| scores[i] >= t).count() as f64 / idx.len().max(1) as f64;
        served_by_type.insert(
            k,
            TypeServed {
                n: idx.len(),
                shipped: share(&shipped_scores, opts.shipped.threshold),
                global_cosine_0_966: share(&cos, BASELINE_THRESHOLD),
            },
        );
    }
    Ok(CacheReport {
        n: pairs.len(),
        served_by_type,
        duplicates: labels.iter().filter(|l| **l).count(),
        target_false_hit: opts.target_false_hit,
        rules: reports,
        recommended: Recommended {
            rule: best.0,
            threshold: best.1,
            reason: format!(
                "highest {} recall at {:.1}% false hits; threshold fitted on this whole file",
                if opts.folds >= 2 { "cross-validated" } else { "in-sample" },
                opts.target_false_hit * 100.0
            ),
        },
        shipped: Shipped {
            rule: opts.shipped.name().to_string(),
            threshold: opts.shipped.threshold,
            false_hit_rate: sf,
            recall: sr,
        },
    })
}

/// Writes report.json, report.md and roc.svg into `out`.
pub fn write_report(report: &CacheReport, opts: &CacheEvalOptions) -> Result<(), EvalError> {
    std::fs::create_dir_all(&opts.out)?;
    std::fs::write(opts.out.join("report.json"), serde_json::to_string_pretty(report).unwrap_or_default())?;
    let mut md = format!(
        "# Cache decision rules on `{}`\n\n{} pairs ({} duplicates). Target false-hit rate {:.1}%.\n\n\
         | rule | threshold | false hits | recall | CV recall (mean ± sd) | CV false hits |\n|---|---|---|---|---|---|\n",
        opts.pairs.display(),
        report.n,
        report.duplicates,
        report.target_false_hit * 100.0
    );
    for (name, r) in &report.rules {
        let (cv, cvf) = match &r.cv {
            Some(c) => (
                format!("{:.1}% ± {:.1} ({} folds)", c.recall_mean * 100.0, c.recall_sd * 100.0, c.folds),
                format!("{:.2}%", c.false_hit_rate_mean * 100.0),
            ),
            None => ("–".into(), "–".into()),
        };
        md.push_str(&format!(
            "| {name} | {:.4} | {:.2}% | {:.1}% | {cv} | {cvf} |\n",
            r.threshold,
            r.false_hit_rate * 100.0,
            r.recall * 100.0
        ));
    }
    let s = &report.shipped;
    md.push_str(&format!(
        "\n**Shipped** (as `serve` uses it, nothing refitted): `{}` at {:.4} → {:.2}% false hits, {:.1}% recall.\n\n\
         **Recommended**: `{}` at {:.4} ({}).\n\n",
        s.rule,
        s.threshold,
        s.false_hit_rate * 100.0,
        s.recall * 100.0,
        report.recommended.rule,
        report.recommended.threshold,
        report.recommended.reason
    ));
    if !report.served_by_type.is_empty() {
        md.push_str(&format!(
            "Served from the cache, by pair type (every pair here is a non-duplicate):\n\n| type | n | shipped rule | global cosine at {BASELINE_THRESHOLD} |\n|---|---|---|---|\n"
        ));
        for (k, t) in &report.served_by_type {
            md.push_str(&format!(
                "| {k} | {} | {:.2}% | {:.2}% |\n",
                t.n,
                t.shipped * 100.0,
                t.global_cosine_0_966 * 100.0
            ));
        }
        md.push('\n');
    }
    md.push_str("At common gateway thresholds:\n\n| threshold | rule | false hits | recall |\n|---|---|---|---|\n");
    for th in [0.80, 0.85, 0.90, 0.95] {
        for (name, r) in &report.rules {
            if let Some(p) = r.curve.iter().find(|p| (p[0] - th).abs() < 1e-9) {
                md.push_str(&format!("| {th:.2} | {name} | {:.1}% | {:.1}% |\n", p[1] * 100.0, p[2] * 100.0));
            }
        }
    }
    std::fs::write(opts.out.join("report.md"), md)?;
    let series: Vec<Series> = report
        .rules
        .iter()
        .map(|(name, r)| Series {
            name: name.clone(),
            points: r.curve.iter().map(|p| (p[1], p[2])).collect(),
            dashed: name == "global-cosine",
        })
        .collect();
    let svg = line_plot(
        "Recall vs false-hit rate (thresholds 0.70–1.00)",
        "false-hit rate",
        "recall (duplicates served)",
        (0.0, 0.10),
        (0.0, 0.6),
        &series,
    );
    std::fs::write(opts.out.join("roc.svg"), svg)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::RuleKind;

    #[test]
    fn threshold_meets_the_target_and_cv_never_sees_its_test_fold() {
        // 10 negatives with scores 0.0..0.9, 10 positives with scores 0.5..0.95
        let mut scores: Vec<f32> = (0..10).map(|i| i as f32 / 10.0).collect();
        scores.extend((0..10).map(|i| 0.5 + i as f32 / 20.0));
        let labels: Vec<bool> = (0..20).map(|i| i >= 10).collect();
        let all: Vec<usize> = (0..20).collect();
        // 10% false hits: one negative (0.9) may be served, 0.8 may not
        let t = threshold_for(&scores, &labels, &all, 0.10);
        assert!(t > 0.8 && t <= 0.8001, "{t}");
        let (fhr, rec) = rates(&scores, &labels, &all, t);
        assert!((fhr - 0.1).abs() < 1e-12);
        assert!((rec - 0.3).abs() < 1e-12, "{rec}"); // 0.85, 0.9, 0.95
                                                     // 0% false hits: nothing at or below the top negative
        let t0 = threshold_for(&scores, &labels, &all, 0.0);
        assert!(t0 > 0.9);
        let cv = cross_validate(&scores, &labels, 5, 0.10);
        assert_eq!(cv.folds, 5);
        assert!(cv.recall_mean >= 0.0 && cv.recall_mean <= 1.0);
    }

    #[test]
    fn the_guarded_rule_vetoes_what_the_global_rule_serves() {
        let g = CacheRule::global(0.9);
        let r = CacheRule::guarded(0.9);
        assert_eq!(g.score("Is the iPhone 13 waterproof?", "Is the iPhone 14 waterproof?", 0.98), 0.98);
        assert_eq!(r.score("Is the iPhone 13 waterproof?", "Is the iPhone 14 waterproof?", 0.98), -1.0);
        assert_eq!(r.rule, RuleKind::GuardedCosine);
    }
}
