//! `switchyard eval routing`: cost/quality curves of routers on prompts with both models' quality,
//! measured the way RouteLLM measures them (Ong et al., arXiv 2406.18665; `routellm/evals`), so our
//! numbers stand next to theirs.
//!
//! For a router's scores: thresholds at the 11 edges of `qcut(scores, 10)`; premium iff score ≥
//! edge (the last edge: > edge, so the curve spans share 0 to 1); quality = mean of the chosen
//! model's score. PGR = (quality − cheap)/(premium − cheap). **APGR** = trapezoid area of PGR over
//! premium share; **CPT(x)** = the smallest premium share whose PGR reaches x (linear
//! interpolation on the first crossing). Ties keep all 11 edges (= random tie-breaking).
//!
//! The reported `curve` is finer than the 11 qcut points: quality at every 1% of premium share
//! ([`fine_curve`]), for plots and for reading off any operating point.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::embeddings::{model_id, RouterStore};
use super::plot::{line_plot, Series};
use crate::classify::train::{fit, read_rows, DataError, Row};
use crate::classify::{Classifier, TrainedRouter};
use crate::embed::Embedder;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grid {
    /// RouteLLM's: 11 quantile edges.
    Qcut10,
    /// A threshold at every distinct score, plus the all-cheap point.
    Exact,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Curve {
    pub apgr: f64,
    pub cpt50: f64,
    pub cpt80: f64,
    /// `[premium_share, quality]`, by increasing share.
    pub curve: Vec<[f64; 2]>,
}

fn qcut_edges(sorted: &[f64]) -> Vec<f64> {
    let n = sorted.len();
    (0..=10)
        .map(|k| {
            let (lo, rem) = (((n - 1) * k) / 10, ((n - 1) * k) % 10);
            if rem == 0 || lo + 1 >= n {
                sorted[lo]
            } else {
                sorted[lo] + (rem as f64 / 10.0) * (sorted[lo + 1] - sorted[lo])
            }
        })
        .collect()
}

/// The curve of a router's `scores` on prompts with `cheap`/`premium` qualities.
pub fn curve(scores: &[f64], cheap: &[f64], premium: &[f64], grid: Grid) -> Curve {
    let n = scores.len().max(1);
    let total_gain: f64 = premium.iter().zip(cheap).map(|(p, c)| p - c).sum();
    let point = |premium_if: &dyn Fn(f64) -> bool| {
        let (mut k, mut q, mut g) = (0usize, 0.0, 0.0);
        for i in 0..scores.len() {
            if premium_if(scores[i]) {
                k += 1;
                q += premium[i];
                g += premium[i] - cheap[i];
            } else {
                q += cheap[i];
            }
        }
        let pgr = if total_gain.abs() > 1e-12 { g / total_gain } else { 0.0 };
        (k as f64 / n as f64, q / n as f64, pgr)
    };
    let mut sorted = scores.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mut pts: Vec<(f64, f64, f64)> = match grid {
        Grid::Qcut10 => {
            let edges = qcut_edges(&sorted);
            edges
                .iter()
                .enumerate()
                .map(|(k, e)| if k < 10 { point(&|s| s >= *e) } else { point(&|s| s > *e) })
                .collect()
        }
        Grid::Exact => {
            let mut uniq = sorted.clone();
            uniq.dedup();
            let mut v: Vec<(f64, f64, f64)> = uniq.iter().map(|t| point(&|s| s >= *t)).collect();
            v.push(point(&|_| false));
            v
        }
    };
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    let apgr = pts.windows(2).map(|w| (w[1].0 - w[0].0) * (w[0].2 + w[1].2) / 2.0).sum();
    let cpt = |x: f64| {
        if pts[0].2 >= x - 1e-9 {
            return pts[0].0;
        }
        for w in pts.windows(2) {
            if w[0].2 < x - 1e-9 && x <= w[1].2 + 1e-9 {
                let f = if (w[1].2 - w[0].2).abs() > 1e-12 { (x - w[0].2) / (w[1].2 - w[0].2) } else { 0.0 };
                return w[0].0 + f * (w[1].0 - w[0].0);
            }
        }
        1.0
    };
    Curve { apgr, cpt50: cpt(0.5), cpt80: cpt(0.8), curve: fine_curve(scores, cheap, premium) }
}

/// Quality at premium shares 0%, 1%, … 100%: the top `share` of prompts by score go premium. A
/// group of tied scores straddling the cut contributes pro rata (the expected value of breaking
/// ties at random), so a router that cannot tell prompts apart is not credited with an order.
pub fn fine_curve(scores: &[f64], cheap: &[f64], premium: &[f64]) -> Vec<[f64; 2]> {
    let n = scores.len();
    if n == 0 {
        return Vec::new();
    }
    let cq = cheap.iter().sum::<f64>() / n as f64;
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    // tie groups in descending score order: (size, total gain)
    let mut groups: Vec<(usize, f64)> = Vec::new();
    let mut i = 0;
    while i < n {
        let mut j = i;
        let mut gain = 0.0;
        while j < n && scores[order[j]] == scores[order[i]] {
            gain += premium[order[j]] - cheap[order[j]];
            j += 1;
        }
        groups.push((j - i, gain));
        i = j;
    }
    (0..=100)
        .map(|k| {
            let want = k as f64 / 100.0 * n as f64;
            let (mut taken, mut gain) = (0.0, 0.0);
            for &(size, g) in &groups {
                if taken >= want {
                    break;
                }
                let part = (want - taken).min(size as f64);
                gain += g * part / size as f64;
                taken += part;
            }
            [k as f64 / 100.0, cq + gain / n as f64]
        })
        .collect()
}

/// Random routing's expected curve: the straight line from all-cheap to all-premium.
pub fn random_curve(cheap: &[f64], premium: &[f64]) -> Curve {
    let n = cheap.len().max(1) as f64;
    let (cq, pq) = (cheap.iter().sum::<f64>() / n, premium.iter().sum::<f64>() / n);
    let curve = (0..=100).map(|k| k as f64 / 100.0).map(|s| [s, cq + s * (pq - cq)]).collect();
    Curve { apgr: 0.5, cpt50: 0.5, cpt80: 0.8, curve }
}

#[derive(Debug, Clone, Serialize)]
pub struct DatasetReport {
    pub name: String,
    pub n: usize,
    pub cheap_quality: f64,
    pub premium_quality: f64,
    pub routers: BTreeMap<String, Curve>,
    /// Quality of each router at the configured premium share (`share`), read off its curve.
    pub share: f64,
    pub at_share: BTreeMap<String, f64>,
    /// CV mode: each seed's APGR (folds drawn anew per seed) for the learned routers.
    pub apgr_by_seed: BTreeMap<String, Vec<f64>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RoutingReport {
    pub datasets: Vec<DatasetReport>,
    pub method: String,
}

pub struct RoutingEvalOptions {
    pub data: Vec<PathBuf>,
    pub cheap: String,
    pub premium: String,
    pub router: Option<PathBuf>,
    /// Train on these files instead (cross-distribution), evaluate on `data`.
    pub train: Vec<PathBuf>,
    /// CV mode: files scored with the others' folds but never trained on (e.g. the other model
    /// pairs' files of the same prompts: "trained for one cheap model, used with another").
    pub eval_only: Vec<PathBuf>,
    pub folds: usize,
    /// CV mode: repeat the cross-validation with this many fold draws.
    pub seeds: usize,
    /// The premium share at which quality is reported (the config's `premium_share`).
    pub share: f64,
    pub exclude_contaminated: bool,
    pub lambda: f64,
    pub out: PathBuf,
    pub cache_dir: PathBuf,
    pub model_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum RoutingEvalError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("embedding: {0}")]
    Embed(#[from] crate::embed::EmbedError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("router: {0}")]
    Router(String),
}

/// The fold of a prompt, by a hash of its id (seed 0) or of the seed and the id. Rows of one
/// prompt in several pair files share an id, so they always fall in the same fold.
fn fold_of(id: &str, folds: usize, seed: usize) -> usize {
    let h = if seed == 0 { Sha256::digest(id.as_bytes()) } else { Sha256::digest(format!("{seed}:{id}").as_bytes()) };
    (u64::from_le_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]) % folds as u64) as usize
}

fn name_of(p: &Path) -> String {
    p.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| p.display().to_string())
}

/// One input file: its name, its rows and their embeddings.
pub type EmbeddedSet = (String, Vec<Row>, Vec<Vec<f32>>);

/// Reads, embeds (via the on-disk store) and returns rows with their vectors.
pub fn load_embedded(
    embedder: &Arc<dyn Embedder>,
    store: &mut RouterStore,
    files: &[PathBuf],
    cheap: &str,
    premium: &str,
    exclude_contaminated: bool,
) -> Result<Vec<EmbeddedSet>, RoutingEvalError> {
    let mut out = Vec::new();
    for f in files {
        let (mut rows, skipped) = read_rows(f, cheap, premium)?;
        if skipped > 0 {
            tracing::warn!(file = %f.display(), skipped, "rows without both models' scores skipped");
        }
        if exclude_contaminated {
            rows.retain(|r| !r.contaminated);
        }
        let texts: Vec<String> = rows.iter().map(|r| r.prompt.clone()).collect();
        let vectors = store.embed_all(embedder, &texts, &name_of(f))?;
        out.push((name_of(f), rows, vectors));
    }
    Ok(out)
}

pub fn evaluate(embedder: &Arc<dyn Embedder>, opts: &RoutingEvalOptions) -> Result<RoutingReport, RoutingEvalError> {
    let mut store = RouterStore::open(&opts.cache_dir, &model_id(&opts.model_dir), embedder.dim())?;
    let mut sets =
        load_embedded(embedder, &mut store, &opts.data, &opts.cheap, &opts.premium, opts.exclude_contaminated)?;
    let n_data = sets.len();
    let mut seeds_apgr: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    let meta = |files: &[PathBuf]| {
        (opts.cheap.as_str(), opts.premium.as_str(), files.iter().map(|f| f.display().to_string()).collect())
    };
    // our router's score for every row of every set, never from a model that saw the row
    // the category lookup (each category's mean gain on the training folds), CV mode only: the
    // bar a learner must clear to have learned more than the subject label, which serving never sees
    let mut lookup: Option<Vec<Vec<f64>>> = None;
    // the router as the gateway serves a prompt that got no embedding in time (an overloaded
    // embedder): text features alone, the training mean in place of the embedding
    let without_embedding: Vec<Vec<f64>>;
    let (ours, method): (Vec<Vec<f64>>, String) = if let Some(dir) = &opts.router {
        let r = TrainedRouter::load(dir).map_err(|e| RoutingEvalError::Router(e.to_string()))?;
        let s;
        (s, without_embedding) = score_sets(&r, &sets);
        (s, format!("router loaded from {}", dir.display()))
    } else if !opts.train.is_empty() {
        let train =
            load_embedded(embedder, &mut store, &opts.train, &opts.cheap, &opts.premium, opts.exclude_contaminated)?;
        let rows: Vec<Row> = train.iter().flat_map(|t| t.1.clone()).collect();
        let vecs: Vec<Vec<f32>> = train.iter().flat_map(|t| t.2.clone()).collect();
        let r = fit(&rows, &vecs, opts.lambda, meta(&opts.train)).map_err(RoutingEvalError::Router)?;
        let s;
        (s, without_embedding) = score_sets(&r, &sets);
        (
            s,
            format!(
                "trained on {} ({} prompts), tested on the evaluated files",
                opts.train.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
                rows.len()
            ),
        )
    } else {
        let k = opts.folds.max(2);
        let extra = load_embedded(
            embedder,
            &mut store,
            &opts.eval_only,
            &opts.cheap,
            &opts.premium,
            opts.exclude_contaminated,
        )?;
        sets.extend(extra);
        let mut first: Option<CvScores> = None;
        for seed in 0..opts.seeds.max(1) {
            let cv = cross_validate(&sets, n_data, k, seed, opts.lambda, &meta(&opts.data))?;
            for (si, (name, rows, _)) in sets.iter().enumerate() {
                let cheap: Vec<f64> = rows.iter().map(|r| r.cheap).collect();
                let premium: Vec<f64> = rows.iter().map(|r| r.premium).collect();
                for (router, s) in [
                    ("switchyard", &cv.router[si]),
                    ("switchyard-without-embedding", &cv.without_embedding[si]),
                    ("category-lookup", &cv.by_category[si]),
                ] {
                    let c = curve(s, &cheap, &premium, Grid::Qcut10);
                    seeds_apgr.entry((name.clone(), router.to_string())).or_default().push(c.apgr);
                }
            }
            if first.is_none() {
                first = Some(cv);
            }
        }
        let cv = first.unwrap_or_default();
        lookup = Some(cv.by_category);
        without_embedding = cv.without_embedding;
        let scores = cv.router;
        (
            scores,
            format!(
                "{k}-fold cross-validation over the pooled files, {} fold draw(s) (folds by hash of id; every prompt scored by a model not trained on it{})",
                opts.seeds.max(1),
                if opts.eval_only.is_empty() { String::new() } else { format!("; {} scored but never trained on", opts.eval_only.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")) }
            ),
        )
    };
    let mut datasets = Vec::new();
    let mut pooled: Vec<f64> = Vec::new();
    let add = |name: String, ours: &[f64], lookup: Option<&[f64]>, degraded: &[f64], rows: &[Row]| {
        let cheap: Vec<f64> = rows.iter().map(|r| r.cheap).collect();
        let premium: Vec<f64> = rows.iter().map(|r| r.premium).collect();
        let length: Vec<f64> = rows.iter().map(|r| r.prompt.chars().count() as f64).collect();
        let gain: Vec<f64> = rows.iter().map(|r| r.premium - r.cheap).collect();
        let n = rows.len().max(1) as f64;
        let mut routers = BTreeMap::new();
        routers.insert("switchyard".to_string(), curve(ours, &cheap, &premium, Grid::Qcut10));
        routers.insert("prompt-length".to_string(), curve(&length, &cheap, &premium, Grid::Qcut10));
        routers.insert("random".to_string(), random_curve(&cheap, &premium));
        routers.insert("oracle".to_string(), curve(&gain, &cheap, &premium, Grid::Exact));
        // where every row has a cross-model difficulty (AlpacaEval: 54 other models judged on the
        // same instruction), ranking by it shows how far a router reading only the text could go:
        // a ceiling known only after judging, not a router
        let difficulty: Option<Vec<f64>> = rows.iter().map(|r| r.difficulty.map(|d| 1.0 - 2.0 * d)).collect();
        if let Some(d) = difficulty.filter(|d| !d.is_empty()) {
            routers.insert("difficulty-after-judging".to_string(), curve(&d, &cheap, &premium, Grid::Qcut10));
        }
        if let Some(l) = lookup {
            routers.insert("category-lookup".to_string(), curve(l, &cheap, &premium, Grid::Qcut10));
        }
        routers.insert("switchyard-without-embedding".to_string(), curve(degraded, &cheap, &premium, Grid::Qcut10));
        let at_share = routers.iter().map(|(k, c)| (k.clone(), quality_at(&c.curve, opts.share))).collect();
        let apgr_by_seed = seeds_apgr
            .iter()
            .filter(|((set, _), _)| *set == name)
            .map(|((_, router), v)| (router.clone(), v.clone()))
            .collect();
        DatasetReport {
            name,
            n: rows.len(),
            cheap_quality: cheap.iter().sum::<f64>() / n,
            premium_quality: premium.iter().sum::<f64>() / n,
            routers,
            share: opts.share,
            at_share,
            apgr_by_seed,
        }
    };
    let mut pooled_lookup: Vec<f64> = Vec::new();
    let mut pooled_degraded: Vec<f64> = Vec::new();
    let mut all_rows: Vec<Row> = Vec::new();
    for (si, (name, rows, _)) in sets.iter().enumerate() {
        let l = lookup.as_ref().map(|l| l[si].as_slice());
        let d = without_embedding[si].as_slice();
        datasets.push(add(name.clone(), &ours[si], l, d, rows));
        // "overall" is the traffic the router was evaluated on, not the extra pair files
        if si < n_data {
            pooled.extend(&ours[si]);
            pooled_lookup.extend(l.unwrap_or_default());
            pooled_degraded.extend(d);
            all_rows.extend(rows.iter().cloned());
        }
    }
    if n_data > 1 {
        let l = lookup.as_ref().map(|_| pooled_lookup.as_slice());
        datasets.push(add("overall".into(), &pooled, l, &pooled_degraded, &all_rows));
    }
    Ok(RoutingReport { datasets, method })
}

/// One router's scores of every row of every set: with the row's embedding, and as the gateway
/// scores a prompt whose embedding did not come in time.
fn score_sets(r: &TrainedRouter, sets: &[EmbeddedSet]) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let with = |vector: bool| -> Vec<Vec<f64>> {
        sets.iter()
            .map(|(_, rows, vs)| {
                rows.iter()
                    .zip(vs)
                    .map(|(row, v)| r.score(&row.prompt, vector.then_some(v.as_slice())) as f64)
                    .collect()
            })
            .collect()
    };
    (with(true), with(false))
}

/// Cross-validated scores per set and row.
#[derive(Debug, Default)]
struct CvScores {
    /// The router's.
    router: Vec<Vec<f64>>,
    /// The same fold's router, for a prompt served without its embedding (text features alone).
    without_embedding: Vec<Vec<f64>>,
    /// The category lookup's.
    by_category: Vec<Vec<f64>>,
}

/// Quality at premium share `share` on a curve of `[share, quality]` points (linear between them).
fn quality_at(curve: &[[f64; 2]], share: f64) -> f64 {
    for w in curve.windows(2) {
        let ([s0, q0], [s1, q1]) = (w[0], w[1]);
        if (s0..=s1).contains(&share) {
            return if s1 > s0 { q0 + (share - s0) / (s1 - s0) * (q1 - q0) } else { q1 };
        }
    }
    curve.last().map_or(f64::NAN, |p| p[1])
}

/// Scores of one k-fold cross-validation: every row of every set scored by a router fitted on the
/// other folds of the first `n_train` sets (the rest are scored, never trained on); beside them the
/// category lookup (each source/category's mean gain on the training folds): the bar a learner
/// must clear to have learned more than the subject label, which serving never sees.
fn cross_validate(
    sets: &[EmbeddedSet],
    n_train: usize,
    k: usize,
    seed: usize,
    lambda: f64,
    meta: &(&str, &str, Vec<String>),
) -> Result<CvScores, RoutingEvalError> {
    let mut scores: Vec<Vec<f64>> = sets.iter().map(|s| vec![0.0; s.1.len()]).collect();
    let mut by_category = scores.clone();
    let mut without_embedding = scores.clone();
    let folds: Vec<Vec<usize>> =
        sets.iter().map(|(_, rows, _)| rows.iter().map(|r| fold_of(&r.id, k, seed)).collect()).collect();
    for f in 0..k {
        let mut rows: Vec<Row> = Vec::new();
        let mut vecs: Vec<Vec<f32>> = Vec::new();
        for (si, (_, set_rows, set_vecs)) in sets.iter().enumerate().take(n_train) {
            for (i, (row, v)) in set_rows.iter().zip(set_vecs).enumerate() {
                if folds[si][i] != f {
                    rows.push(row.clone());
                    vecs.push(v.clone());
                }
            }
        }
        let r = fit(&rows, &vecs, lambda, meta.clone()).map_err(RoutingEvalError::Router)?;
        let mut gains: BTreeMap<(&str, &str), (f64, usize)> = BTreeMap::new();
        for row in &rows {
            let g = gains.entry((row.source.as_str(), row.category.as_str())).or_default();
            g.0 += row.premium - row.cheap;
            g.1 += 1;
        }
        let overall = rows.iter().map(|r| r.premium - r.cheap).sum::<f64>() / rows.len().max(1) as f64;
        for (si, (_, set_rows, set_vecs)) in sets.iter().enumerate() {
            for (i, (row, v)) in set_rows.iter().zip(set_vecs).enumerate() {
                if folds[si][i] == f {
                    scores[si][i] = r.score(&row.prompt, Some(v)) as f64;
                    without_embedding[si][i] = r.score(&row.prompt, None) as f64;
                    by_category[si][i] = gains
                        .get(&(row.source.as_str(), row.category.as_str()))
                        .map_or(overall, |(g, n)| g / *n as f64);
                }
            }
        }
    }
    Ok(CvScores { router: scores, without_embedding, by_category })
}

pub fn write_report(report: &RoutingReport, out: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("report.json"), serde_json::to_string_pretty(report).unwrap_or_default())?;
    let mut md = format!("# Routing evaluation\n\nMethod: {}.\n\nMetrics as in RouteLLM (qcut10 thresholds; CPT as premium-call share).\n\n", report.method);
    let share = report.datasets.first().map_or(0.3, |d| d.share);
    md.push_str(&format!(
        "| dataset | n | cheap quality | premium quality | router | APGR | CPT(50%) | CPT(80%) | quality at {:.0}% premium | APGR per fold draw |\n|---|---|---|---|---|---|---|---|---|---|\n",
        share * 100.0
    ));
    for d in &report.datasets {
        for (name, c) in &d.routers {
            let seeds = d.apgr_by_seed.get(name).map_or(String::new(), |v| {
                let m = v.iter().sum::<f64>() / v.len().max(1) as f64;
                let sd = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len().max(1) as f64).sqrt();
                format!("{m:.3} ± {sd:.3} ({})", v.iter().map(|x| format!("{x:.3}")).collect::<Vec<_>>().join(", "))
            });
            md.push_str(&format!(
                "| {} | {} | {:.3} | {:.3} | {name} | {:.3} | {:.1}% | {:.1}% | {:.3} | {seeds} |\n",
                d.name,
                d.n,
                d.cheap_quality,
                d.premium_quality,
                c.apgr,
                c.cpt50 * 100.0,
                c.cpt80 * 100.0,
                d.at_share.get(name).copied().unwrap_or(f64::NAN),
            ));
        }
    }
    std::fs::write(out.join("report.md"), md)?;
    for d in &report.datasets {
        let series: Vec<Series> = [
            "switchyard",
            "switchyard-without-embedding",
            "category-lookup",
            "prompt-length",
            "random",
            "difficulty-after-judging",
            "oracle",
        ]
        .iter()
        .filter_map(|n| d.routers.get(*n).map(|c| (n, c)))
        .map(|(n, c)| Series {
            name: format!("{n} (APGR {:.3})", c.apgr),
            points: c.curve.iter().map(|p| (p[0], p[1])).collect(),
            dashed: *n != "switchyard",
        })
        .collect();
        let lo = d.cheap_quality.min(d.premium_quality) - 0.05;
        let hi = d
            .routers
            .get("oracle")
            .map_or(d.premium_quality, |o| o.curve.iter().map(|p| p[1]).fold(d.premium_quality, f64::max))
            + 0.02;
        let svg = line_plot(
            &format!("Quality vs premium share: {}", d.name),
            "premium-call share",
            "quality",
            (0.0, 1.0),
            (lo.max(0.0), hi.min(1.0)),
            &series,
        );
        let file = if d.name == "overall" || report.datasets.len() == 1 {
            "curve.svg".to_string()
        } else {
            format!("curve-{}.svg", d.name)
        };
        std::fs::write(out.join(file), svg)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-computed cases (exact fractions) from the research notes.
    #[test]
    fn metrics_match_hand_computed_cases() {
        let fixture: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/router_metric_cases.json")).unwrap();
        for case in fixture["cases"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let prompts = case["prompts"].as_array().unwrap();
            let s: Vec<f64> = prompts.iter().map(|p| p["router_score"].as_f64().unwrap()).collect();
            let c: Vec<f64> = prompts.iter().map(|p| p["cheap"].as_f64().unwrap()).collect();
            let p: Vec<f64> = prompts.iter().map(|p| p["premium"].as_f64().unwrap()).collect();
            for (grid, key) in [(Grid::Qcut10, "qcut10"), (Grid::Exact, "exact")] {
                let got = curve(&s, &c, &p, grid);
                let want = &case[key];
                for (m, v) in [("apgr", got.apgr), ("cpt50", got.cpt50), ("cpt80", got.cpt80)] {
                    let w = want[m]["value"].as_f64().unwrap();
                    assert!((v - w).abs() < 1e-9, "{name} {key} {m}: got {v}, want {w}");
                }
            }
            let gain: Vec<f64> = p.iter().zip(&c).map(|(a, b)| a - b).collect();
            let oracle = curve(&gain, &c, &p, Grid::Exact);
            for (m, v) in [("apgr", oracle.apgr), ("cpt50", oracle.cpt50), ("cpt80", oracle.cpt80)] {
                let w = case["oracle"][m]["value"].as_f64().unwrap();
                assert!((v - w).abs() < 1e-9, "{name} oracle {m}: got {v}, want {w}");
            }
        }
    }

    #[test]
    fn fine_curve_ranks_and_splits_ties() {
        // gains 1, 0, 1, 0 with scores 3, 2, 2, 1: at 25% the top prompt (gain 1); at 50% one of
        // the two tied prompts, on average half of their gain 1
        let c = fine_curve(&[3.0, 2.0, 2.0, 1.0], &[0.0, 1.0, 0.0, 1.0], &[1.0, 1.0, 1.0, 1.0]);
        assert_eq!(c.len(), 101);
        assert!((c[0][1] - 0.5).abs() < 1e-12);
        assert!((c[25][1] - 0.75).abs() < 1e-12);
        assert!((c[50][1] - 0.875).abs() < 1e-12);
        assert!((c[75][1] - 1.0).abs() < 1e-12);
        assert!((c[100][1] - 1.0).abs() < 1e-12);
    }

    #[test]
    fn random_is_the_diagonal() {
        let r = random_curve(&[0.0, 1.0], &[1.0, 1.0]);
        assert_eq!((r.apgr, r.cpt50, r.cpt80), (0.5, 0.5, 0.8));
    }
}
