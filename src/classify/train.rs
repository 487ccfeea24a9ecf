//! Training the router: ridge regression of the quality gain (premium − cheap) on
//! [embedding, text features], standardised, closed form (Cholesky). Deterministic, ~1 s.
//!
//! Why these choices (measured by 5-fold CV in `eval/scripts/router_research.py`): the gain target
//! beats a 0/1 "premium is better" label by 0.02–0.03 APGR for every learner tried, because it keeps
//! the prompts where premium is *worse*; ridge matched kNN, an MLP and logistic regression at a
//! fraction of their cost.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::features::text_features;
use super::trained::{Linear, RouterFile, TrainedRouter, View, DIM, EMBED_DIM, VIEWS_DIM};

/// One evaluation/training row: a prompt and the two models' quality on it, scaled to 0..1.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: String,
    pub source: String,
    pub category: String,
    pub prompt: String,
    pub cheap: f64,
    pub premium: f64,
    /// Cross-model difficulty where the data has one (the mean win rate of many other models
    /// against the premium model; see [`target`]).
    pub difficulty: Option<f64>,
    pub contaminated: bool,
}

#[derive(Debug, Deserialize)]
struct RawRow {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    turns: Option<Vec<String>>,
    /// A model with a `null` score has none (the row is skipped, as one missing the model is).
    scores: BTreeMap<String, Option<f64>>,
    #[serde(default)]
    difficulty: Option<f64>,
    #[serde(default)]
    contaminated: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("{path}: {detail}")]
pub struct DataError {
    pub path: String,
    pub detail: String,
}

/// Reads a routing file. Rows lacking either model's score are skipped (the count is returned).
/// Scores above 1 (1–10 judge ratings) are rescaled to 0..1 as (s − 1)/9 for the whole file.
pub fn read_rows(path: &Path, cheap: &str, premium: &str) -> Result<(Vec<Row>, usize), DataError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| DataError { path: p.clone(), detail: e.to_string() })?;
    let mut raw = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let mut r: RawRow = serde_json::from_str(line)
            .map_err(|e| DataError { path: p.clone(), detail: format!("line {}: {e}", i + 1) })?;
        r.scores.retain(|_, s| s.is_some_and(f64::is_finite));
        raw.push((i, r));
    }
    let ten_point = raw.iter().any(|(_, r)| r.scores.values().flatten().any(|s| *s > 1.0));
    let scale = |s: f64| if ten_point { (s - 1.0) / 9.0 } else { s };
    // a file of one other pair (AlpacaEval ships one file per cheap model): when the named cheap
    // model is absent and every row compares exactly one other model with the premium one, that
    // model is this file's cheap model
    let mut other: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
    // (rows with a score missing are skipped below; they say nothing about the pair)
    let pairwise = raw
        .iter()
        .filter(|(_, r)| r.scores.len() >= 2)
        .all(|(_, r)| r.scores.len() == 2 && r.scores.contains_key(premium));
    for (_, r) in &raw {
        other.extend(r.scores.keys().map(String::as_str).filter(|m| *m != premium));
    }
    let detected =
        (pairwise && other.len() == 1 && !other.contains(cheap)).then(|| other.iter().next().copied()).flatten();
    if let Some(d) = detected {
        tracing::info!(file = %p, cheap = d, "the file compares another cheap model with the premium one; using it");
    }
    let cheap = detected.map(str::to_string).unwrap_or_else(|| cheap.to_string());
    let cheap = cheap.as_str();
    let mut rows = Vec::new();
    let mut skipped = 0;
    for (i, r) in raw {
        let (Some(Some(c)), Some(Some(pm))) = (r.scores.get(cheap), r.scores.get(premium)) else {
            skipped += 1;
            continue;
        };
        let prompt = r.prompt.or_else(|| r.turns.map(|t| t.join("\n"))).unwrap_or_default();
        if prompt.is_empty() {
            skipped += 1;
            continue;
        }
        rows.push(Row {
            id: r.id.unwrap_or_else(|| format!("{p}:{}", i + 1)),
            source: r.source.unwrap_or_default(),
            category: r.category.unwrap_or_default(),
            prompt,
            cheap: scale(*c),
            premium: scale(*pm),
            difficulty: r.difficulty,
            contaminated: r.contaminated,
        });
    }
    if rows.is_empty() {
        return Err(DataError { path: p, detail: format!("no row has scores for both {cheap:?} and {premium:?}") });
    }
    Ok((rows, skipped))
}

/// The model input for a row: the three views of its embedding
/// ([`crate::embed::Embedded::router_input`]; a vector without its views gets zeros there), then
/// the text features.
pub fn input(prompt: &str, vector: &[f32]) -> Vec<f64> {
    let mut x: Vec<f64> = vector.iter().map(|v| *v as f64).collect();
    x.resize(VIEWS_DIM, 0.0);
    x.extend(text_features(prompt).iter().map(|v| *v as f64));
    x
}

/// Solves A x = b for symmetric positive-definite A (row-major n×n) by Cholesky.
fn cholesky_solve(a: &mut [f64], b: &[f64], n: usize) -> Option<Vec<f64>> {
    for j in 0..n {
        let mut d = a[j * n + j];
        for k in 0..j {
            d -= a[j * n + k] * a[j * n + k];
        }
        if d <= 0.0 {
            return None;
        }
        let d = d.sqrt();
        a[j * n + j] = d;
        for i in j + 1..n {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = s / d;
        }
    }
    let mut y = vec![0.0; n];
    for i in 0..n {
        let mut s = b[i];
        for k in 0..i {
            s -= a[i * n + k] * y[k];
        }
        y[i] = s / a[i * n + i];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let mut s = y[i];
        for k in i + 1..n {
            s -= a[k * n + i] * x[k];
        }
        x[i] = s / a[i * n + i];
    }
    Some(x)
}

/// The training target of a row: the quality gain premium − cheap. Where the data carries a
/// cross-model `difficulty` (AlpacaEval: the mean win rate of 54 other models against the premium
/// model on that instruction), the average of the pair's gain and 1 − 2·difficulty: one judged
/// pair is a noisy label (0 or 1 per prompt), the many-model average is not, and it does not
/// depend on which cheap model a user runs. Measured: +0.01–0.03 APGR on the chat files, for the
/// trained pair and the others alike.
pub fn target(r: &Row) -> f64 {
    let gain = r.premium - r.cheap;
    match r.difficulty {
        Some(d) if d.is_finite() => 0.5 * gain + 0.5 * (1.0 - 2.0 * d),
        _ => gain,
    }
}

/// A source group with fewer distinct prompts than this gets no head of its own.
pub const MIN_GROUP: usize = 50;

/// The input columns a head or the gate reads: one view of the embedding, and the text features.
fn columns(view: View) -> Vec<usize> {
    view.columns().chain(VIEWS_DIM..DIM).collect()
}

/// The view each head reads (see [`View`]): the last layer for GSM8K's word problems, layer 3
/// for every other source (MMLU, arena, chat, and any a user trains on).
fn head_view(group: &str) -> View {
    match group {
        "gsm8k" => View::Last,
        _ => View::Layer3,
    }
}

/// The view the gate reads.
const GATE_VIEW: View = View::Embeddings;

/// `xs` restricted to `cols`.
fn project(xs: &[Vec<f64>], cols: &[usize]) -> Vec<Vec<f64>> {
    xs.iter().map(|x| cols.iter().map(|&j| x[j]).collect()).collect()
}

/// Weights fitted on the columns `cols`, spread back over the whole model input (zero elsewhere).
fn spread(fitted: Vec<(Vec<f64>, f64)>, cols: &[usize]) -> Vec<(Vec<f64>, f64)> {
    fitted
        .into_iter()
        .map(|(w, b)| {
            let mut full = vec![0.0; DIM];
            for (&j, w) in cols.iter().zip(w) {
                full[j] = w;
            }
            (full, b)
        })
        .collect()
}

/// Weighted ridge regression on standardised inputs, closed form, for several targets at once
/// (they share the Gram matrix), with a penalty per input dimension. Returns one (folded weights,
/// bias) per target.
fn ridge(xs: &[Vec<f64>], ws: &[f64], ys: &[Vec<f64>], penalty: &[f64]) -> Result<Vec<(Vec<f64>, f64)>, String> {
    let d = penalty.len();
    if xs.iter().any(|x| x.len() != d) {
        return Err("rows and penalties differ in length".into());
    }
    let wsum: f64 = ws.iter().sum();
    if xs.len() < 2 || wsum <= 0.0 {
        return Err("need at least two weighted rows".into());
    }
    let mut mu = vec![0.0; d];
    for (x, w) in xs.iter().zip(ws) {
        for j in 0..d {
            mu[j] += w * x[j] / wsum;
        }
    }
    let mut sd = vec![0.0; d];
    for (x, w) in xs.iter().zip(ws) {
        for j in 0..d {
            sd[j] += w * (x[j] - mu[j]).powi(2) / wsum;
        }
    }
    // near-constant dimensions stay unscaled: dividing by ~0 would blow their weight up and let
    // f16 rounding noise dominate the score
    let sd: Vec<f64> = sd.iter().map(|v| if v.sqrt() < 1e-4 { 1.0 } else { v.sqrt() }).collect();
    let ybar: Vec<f64> = ys.iter().map(|y| y.iter().zip(ws).map(|(y, w)| y * w).sum::<f64>() / wsum).collect();
    let mut gram = vec![0.0; d * d];
    let mut rhs = vec![vec![0.0; d]; ys.len()];
    let mut z = vec![0.0; d];
    for (r, (x, w)) in xs.iter().zip(ws).enumerate() {
        let w = w / wsum;
        for j in 0..d {
            z[j] = (x[j] - mu[j]) / sd[j];
        }
        for (t, y) in ys.iter().enumerate() {
            let d = w * (y[r] - ybar[t]);
            for (acc, zi) in rhs[t].iter_mut().zip(&z) {
                *acc += zi * d;
            }
        }
        for i in 0..d {
            let zi = w * z[i];
            let row = &mut gram[i * d..i * d + i + 1];
            for (g, zk) in row.iter_mut().zip(&z) {
                *g += zi * zk;
            }
        }
    }
    for i in 0..d {
        for k in 0..i {
            gram[k * d + i] = gram[i * d + k];
        }
        gram[i * d + i] += penalty[i];
    }
    let mut out = Vec::new();
    for (t, b) in rhs.iter().enumerate() {
        let w = cholesky_solve(&mut gram.clone(), b, d).ok_or("the system is not positive definite")?;
        let weights: Vec<f64> = (0..d).map(|j| w[j] / sd[j]).collect();
        let bias = ybar[t] - (0..d).map(|j| weights[j] * mu[j]).sum::<f64>();
        out.push((weights, bias));
    }
    Ok(out)
}

fn to_linear(name: &str, (w, b): &(Vec<f64>, f64), scale: f64, offset: f64) -> Linear {
    Linear::new(name.to_string(), w.iter().map(|w| (w / scale) as f32).collect(), ((b - offset) / scale) as f32)
}

/// The source groups of `rows`: each source with at least [`MIN_GROUP`] distinct prompts is a
/// group; the smaller ones are pooled, and a pool still too small joins the largest group.
fn groups(rows: &[Row]) -> (Vec<String>, Vec<usize>) {
    let mut distinct: BTreeMap<&str, std::collections::HashSet<&str>> = BTreeMap::new();
    for r in rows {
        distinct.entry(r.source.as_str()).or_default().insert(r.prompt.as_str());
    }
    let size = |s: &str| distinct.get(s).map_or(0, |p| p.len());
    let mut names: Vec<String> = distinct.keys().filter(|s| size(s) >= MIN_GROUP).map(|s| s.to_string()).collect();
    let small: usize = distinct.keys().filter(|s| size(s) < MIN_GROUP).map(|s| size(s)).sum();
    let largest = names.iter().max_by_key(|s| size(s)).cloned();
    let pool = if small >= MIN_GROUP || largest.is_none() {
        names.push("other".into());
        names.len() - 1
    } else {
        names.iter().position(|n| Some(n) == largest.as_ref()).unwrap_or(0)
    };
    let of = rows
        .iter()
        .map(|r| names.iter().position(|n| *n == r.source && size(n) >= MIN_GROUP).unwrap_or(pool))
        .collect();
    (names, of)
}

/// Fits the router on `rows` with their embeddings: one ridge head per source group (penalty
/// `lambda`, raised on the embedding dimensions for small groups: [`head_penalty`]), z-scored,
/// mixed by a group-balanced linear softmax gate.
pub fn fit(
    rows: &[Row],
    vectors: &[Vec<f32>],
    lambda: f64,
    meta: (&str, &str, Vec<String>),
) -> Result<TrainedRouter, String> {
    let router = fit_heads(rows, vectors, lambda, meta.clone())?;
    // the same recipe with the embedding left out, for prompts served without one
    let zeros: Vec<Vec<f32>> = vectors.iter().map(|v| vec![0.0; v.len()]).collect();
    let text_only = fit_heads(rows, &zeros, lambda, meta)?;
    let mut file = router.file().clone();
    file.without_embedding = Some(Box::new(text_only.file().clone()));
    TrainedRouter::from_file(file)
}

/// The gated heads on `vectors` and the text features, calibrated on the training scores.
fn fit_heads(
    rows: &[Row],
    vectors: &[Vec<f32>],
    lambda: f64,
    meta: (&str, &str, Vec<String>),
) -> Result<TrainedRouter, String> {
    let n = rows.len();
    if n < 2 || vectors.len() != n {
        return Err("need at least two rows, each with its embedding".into());
    }
    let xs: Vec<Vec<f64>> = rows.iter().zip(vectors).map(|(r, v)| input(&r.prompt, v)).collect();
    let ys: Vec<f64> = rows.iter().map(target).collect();
    let (names, of) = groups(rows);
    let mut heads = Vec::new();
    let mut head_means = Vec::new();
    for (g, name) in names.iter().enumerate() {
        let idx: Vec<usize> = (0..n).filter(|i| of[*i] == g).collect();
        let distinct: std::collections::HashSet<&str> = idx.iter().map(|i| rows[*i].prompt.as_str()).collect();
        let gx: Vec<Vec<f64>> = idx.iter().map(|i| xs[*i].clone()).collect();
        head_means.push(column_means(&gx));
        let gy: Vec<f64> = idx.iter().map(|i| ys[*i]).collect();
        let cols = columns(head_view(name));
        let sub = project(&gx, &cols);
        let fitted =
            spread(ridge(&sub, &vec![1.0; sub.len()], &[gy], &head_penalty(lambda, distinct.len(), &sub))?, &cols);
        let train: Vec<f64> = gx.iter().map(|x| dot(x, &fitted[0].0) + fitted[0].1).collect();
        let m = train.iter().sum::<f64>() / train.len() as f64;
        let sd = (train.iter().map(|s| (s - m).powi(2)).sum::<f64>() / train.len() as f64).sqrt();
        heads.push(to_linear(name, &fitted[0], if sd > 1e-9 { sd } else { 1.0 }, m));
    }
    let gate = if names.len() > 1 {
        let mut count = vec![0usize; names.len()];
        for g in &of {
            count[*g] += 1;
        }
        let ws: Vec<f64> = of.iter().map(|g| 1.0 / count[*g] as f64).collect();
        let targets: Vec<Vec<f64>> =
            (0..names.len()).map(|g| of.iter().map(|o| if *o == g { 1.0 } else { 0.0 }).collect()).collect();
        let cols = columns(GATE_VIEW);
        let fitted = spread(ridge(&project(&xs, &cols), &ws, &targets, &vec![GATE_LAMBDA; cols.len()])?, &cols);
        names.iter().zip(&fitted).map(|(name, f)| to_linear(name, f, 1.0, 0.0)).collect()
    } else {
        Vec::new()
    };
    let mean = column_means(&xs);
    let mut router = TrainedRouter::from_file(RouterFile {
        kind: "gated-heads".into(),
        heads,
        gate,
        gate_temperature: GATE_TEMPERATURE,
        mean,
        head_means,
        quantiles: vec![0.0; 101],
        trained_on: meta.2,
        cheap_model: meta.0.into(),
        premium_model: meta.1.into(),
        lambda,
        n,
        without_embedding: None,
    })?;
    let mut scores: Vec<f64> =
        xs.iter().map(|x| router.score_x(&x.iter().map(|v| *v as f32).collect::<Vec<f32>>()) as f64).collect();
    scores.sort_by(f64::total_cmp);
    let quantiles = (0..=100)
        .map(|q| {
            let pos = (n - 1) as f64 * q as f64 / 100.0;
            let (lo, frac) = (pos.floor() as usize, pos.fract());
            let hi = (lo + 1).min(n - 1);
            (scores[lo] + frac * (scores[hi] - scores[lo])) as f32
        })
        .collect();
    let mut file = router.file().clone();
    file.quantiles = quantiles;
    router = TrainedRouter::from_file(file)?;
    Ok(router)
}

/// The ridge penalty of a head trained on the rows `xs` (`distinct` prompts), per input dimension.
/// A small group overfits the 384 embedding dimensions, so their penalty grows as the group
/// shrinks; the 12 text features keep `lambda` whatever the group's size. They are few, and what
/// some sources need most: with the grown penalty on them too, the 293-prompt arena head could not
/// even learn the prompt length it needed to beat the length baseline. A feature that hardly varies
/// in the group (fewer than [`MIN_FEATURE_SUPPORT`] rows off its median: one chat instruction
/// with A./B. options) gets the grown penalty, or a single row would set its weight. Measured by
/// 5-fold CV over 8 fold draws (`switchyard eval routing`, stop-10 recipe → this): GSM8K 0.634 →
/// 0.654, arena 0.510 → 0.545, MMLU and the chat files within ±0.003
/// (`eval/scripts/router_feature_research.py` found the first part).
/// `xs` are the head's columns: one view (384), then the text features.
fn head_penalty(lambda: f64, distinct: usize, xs: &[Vec<f64>]) -> Vec<f64> {
    let grown = lambda * (GROUP_PENALTY_ROWS / distinct.max(1) as f64).max(1.0);
    let d = xs.first().map_or(0, Vec::len);
    (0..d).map(|j| if j < EMBED_DIM || support(xs, j) < MIN_FEATURE_SUPPORT { grown } else { lambda }).collect()
}

/// Rows off its median a text feature needs in a group to keep the base penalty there (10 and 30
/// measured alike: GSM8K +0.006 either way, which has a few rare layout features; 30 also arena
/// +0.004).
const MIN_FEATURE_SUPPORT: usize = 30;

/// How many rows of `xs` differ from the median in dimension `j` (for a 0/1 feature, how many
/// have the rarer value).
fn support(xs: &[Vec<f64>], j: usize) -> usize {
    let mut v: Vec<f64> = xs.iter().map(|x| x[j]).collect();
    v.sort_by(f64::total_cmp);
    let median = v.get(v.len() / 2).copied().unwrap_or(0.0);
    v.iter().filter(|x| (*x - median).abs() > 1e-9).count()
}

/// Distinct prompts at which a group's head is penalised with `lambda` itself; a group of n < this
/// gets `lambda · GROUP_PENALTY_ROWS / n` on its embedding dimensions. Chosen by 5-fold CV over
/// 2000 / 4000 / 8000 / 16000 (MMLU's 9.9k prompts then get 1, GSM8K's 900 about 9, the 468 chat
/// instructions 17): larger values help the small chat groups by up to 0.005 APGR and cost the
/// others nothing.
const GROUP_PENALTY_ROWS: f64 = 8000.0;
/// Ridge penalty of the gate (one-vs-rest on the group labels). 0.1 against 1 and 10: a sharper
/// gate lets MMLU prompts use the MMLU head alone (+0.01 APGR on MMLU, −0.005 on GSM8K).
const GATE_LAMBDA: f64 = 0.1;
/// Sharpness of the gate: the one-vs-rest outputs are near 0/1, so 30 makes a clear group's
/// weight ≈ 1 while a prompt between groups still mixes them (3 and 10 measured worse).
const GATE_TEMPERATURE: f32 = 30.0;

/// The mean of each input dimension over `xs` (the router file keeps them for explanations and
/// for a prompt without an embedding).
fn column_means(xs: &[Vec<f64>]) -> Vec<f32> {
    let n = xs.len().max(1) as f64;
    (0..DIM).map(|j| (xs.iter().map(|x| x[j]).sum::<f64>() / n) as f32).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::Classifier;

    /// A router input whose three views are all `v`: whichever view a head reads sees it.
    fn views(v: Vec<f32>) -> Vec<f32> {
        v.repeat(3)
    }

    #[test]
    fn cholesky_solves_a_small_system() {
        let mut a = vec![4.0, 2.0, 2.0, 3.0];
        let x = cholesky_solve(&mut a, &[2.0, 1.0], 2).unwrap();
        assert!((x[0] - 0.5).abs() < 1e-12 && x[1].abs() < 1e-12);
    }

    #[test]
    fn train_save_load_score_round_trip() {
        // premium helps exactly on prompts whose embedding points along dim 0
        let mut rows = Vec::new();
        let mut vecs = Vec::new();
        for i in 0..200 {
            let hard = i % 2 == 0;
            let mut v = vec![0.0f32; EMBED_DIM];
            v[if hard { 0 } else { 1 }] = 1.0;
            v[2 + i % 7] = 0.3;
            vecs.push(views(v));
            rows.push(Row {
                id: i.to_string(),
                source: "s".into(),
                category: "c".into(),
                prompt: if hard { format!("prove theorem {i}") } else { "hi".into() },
                cheap: if hard { 0.0 } else { 1.0 },
                premium: 1.0,
                difficulty: None,
                contaminated: false,
            });
        }
        let r = fit(&rows, &vecs, 1.0, ("c", "p", vec!["synthetic".into()])).unwrap();
        let dir = tempfile::tempdir().unwrap();
        r.save(dir.path()).unwrap();
        let loaded = TrainedRouter::load(dir.path()).unwrap();
        assert_eq!(loaded.file(), r.file());
        let hard = loaded.score(&rows[0].prompt, Some(&vecs[0]));
        let easy = loaded.score(&rows[1].prompt, Some(&vecs[1]));
        assert!(hard > easy + 0.5, "hard {hard} easy {easy}");
        // calibration: the 30% threshold sends about 30% of the training prompts to premium
        let t = loaded.threshold_for_share(0.3).unwrap();
        let above = rows.iter().zip(&vecs).filter(|(r, v)| loaded.score(&r.prompt, Some(v)) >= t).count();
        assert!((50..=70).contains(&above), "{above} of 200 above the 30% threshold {t}");
        assert!(loaded.explain("prove theorem 0", Some(&vecs[0])).len() > 2);
        // without the embedding the text-only heads still tell them apart (here by the text alone)
        assert!(loaded.file().without_embedding.is_some());
        let (hard, easy) = (loaded.score(&rows[0].prompt, None), loaded.score(&rows[1].prompt, None));
        assert!(hard > easy, "without the embedding: hard {hard} easy {easy}");
    }

    fn row(i: usize, source: &str, prompt: String, cheap: f64, premium: f64) -> Row {
        Row {
            id: format!("{source}-{i}"),
            source: source.into(),
            category: String::new(),
            prompt,
            cheap,
            premium,
            difficulty: None,
            contaminated: false,
        }
    }

    #[test]
    fn each_source_gets_its_own_head_and_the_gate_picks_it() {
        // two sources that live in different parts of the embedding space (dims 0 and 1); in
        // "quiz" premium helps when dim 2 is high, in "chat" when dim 3 is high, the other way
        // round from what a single pooled model would learn from the larger source alone
        let (mut rows, mut vecs) = (Vec::new(), Vec::new());
        for i in 0..400 {
            let (source, home, signal, noise) = if i % 4 == 0 { ("chat", 1, 3, 2) } else { ("quiz", 0, 2, 3) };
            let hard = (i / 4) % 2 == 0;
            let mut v = vec![0.0f32; EMBED_DIM];
            v[home] = 1.0;
            v[signal] = if hard { 0.5 } else { 0.0 };
            v[noise] = if i % 3 == 0 { 0.5 } else { 0.0 };
            v[10 + i % 50] = 0.2;
            vecs.push(views(v));
            // distinct prompts whose text features are the same within a source (no digits, one
            // length): the signal is in the embedding only, as the test intends
            let tag: String = [i / 676, i / 26 % 26, i % 26].iter().map(|d| char::from(b'a' + *d as u8)).collect();
            rows.push(row(i, source, format!("{source} prompt {tag}"), if hard { 0.0 } else { 1.0 }, 1.0));
        }
        let r = fit(&rows, &vecs, 1.0, ("c", "p", vec![])).unwrap();
        let names: Vec<&str> = r.file().heads.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["chat", "quiz"]);
        let x = |i: usize| {
            let mut x = vecs[i].clone();
            x.extend_from_slice(&crate::classify::features::text_features(&rows[i].prompt));
            x
        };
        // the gate recognises each source
        assert!(r.gate_weights(&x(0))[0] > 0.9, "chat row gated {:?}", r.gate_weights(&x(0)));
        assert!(r.gate_weights(&x(1))[1] > 0.9, "quiz row gated {:?}", r.gate_weights(&x(1)));
        // and within each source the hard prompts score above the easy ones
        for source in ["chat", "quiz"] {
            let (mut hard, mut easy) = (Vec::new(), Vec::new());
            for (i, row) in rows.iter().enumerate().filter(|(_, r)| r.source == source) {
                let s = r.score(&row.prompt, Some(&vecs[i]));
                if row.cheap == 0.0 {
                    hard.push(s)
                } else {
                    easy.push(s)
                }
            }
            let min_hard = hard.iter().copied().fold(f32::INFINITY, f32::min);
            let max_easy = easy.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert!(min_hard > max_easy, "{source}: hard from {min_hard}, easy up to {max_easy}");
        }
    }

    #[test]
    fn an_explanation_adds_up_to_the_score_and_measures_each_head_from_its_own_prompts() {
        // every "quiz" prompt ends in a question mark, one "chat" prompt in ten does (all of them
        // hard ones, so the chat head weighs it): against the pooled mean, mostly quiz, every chat
        // prompt would seem to lack a question mark; against its own kind it hardly does
        let (mut rows, mut vecs) = (Vec::new(), Vec::new());
        for i in 0..400 {
            let (source, home) = if i % 4 == 0 { ("chat", 1) } else { ("quiz", 0) };
            let hard = (i / 4) % 2 == 0;
            let mut v = vec![0.0f32; EMBED_DIM];
            v[home] = 1.0;
            v[2 + home] = if hard { 0.5 } else { 0.0 };
            v[10 + i % 50] = 0.2;
            vecs.push(views(v));
            let mark = if source == "quiz" || (hard && i % 40 == 0) { "?" } else { "" };
            rows.push(row(i, source, format!("{source} prompt {i}{mark}"), if hard { 0.0 } else { 1.0 }, 1.0));
        }
        let r = fit(&rows, &vecs, 1.0, ("c", "p", vec![])).unwrap();
        assert_eq!(r.file().head_means.len(), 2);
        let mut pooled_file = r.file().clone();
        pooled_file.head_means.clear();
        let pooled = TrainedRouter::from_file(pooled_file).unwrap();
        let qmark = |parts: &[crate::classify::Feature]| {
            parts.iter().find(|f| f.name == "has_qmark").map(|f| f.contribution.abs()).unwrap()
        };
        for i in [4, 12, 20] {
            let mut x = vecs[i].clone();
            x.extend_from_slice(&crate::classify::features::text_features(&rows[i].prompt));
            let p = r.gate_weights(&x);
            for router in [&r, &pooled] {
                let sum: f32 = router.parts(&x, &p).iter().map(|f| f.contribution).sum();
                assert!((sum - r.score_x(&x)).abs() < 1e-3, "parts {sum} vs score {}", r.score_x(&x));
            }
            let (own, against_pooled) = (qmark(&r.parts(&x, &p)), qmark(&pooled.parts(&x, &p)));
            assert!(against_pooled > 0.05, "the chat head weighs the question mark: {against_pooled}");
            assert!(own < against_pooled / 3.0, "chat row {i}: {own} against its kind, {against_pooled} pooled");
        }
    }

    #[test]
    fn small_sources_share_a_head() {
        let (mut rows, mut vecs) = (Vec::new(), Vec::new());
        for i in 0..200 {
            let source = match i % 10 {
                0 => "tiny-a",
                1 => "tiny-b",
                _ => "big",
            };
            let mut v = vec![0.0f32; EMBED_DIM];
            v[i % 7] = 1.0;
            vecs.push(views(v));
            rows.push(row(i, source, format!("p{i}"), (i % 2) as f64, 1.0));
        }
        // 20 + 20 distinct prompts: pooled "other" is under MIN_GROUP, so it joins "big"
        let r = fit(&rows, &vecs, 1.0, ("c", "p", vec![])).unwrap();
        assert_eq!(r.file().heads.len(), 1);
        assert!(r.file().gate.is_empty());
    }

    #[test]
    fn a_small_group_is_penalised_more_on_the_embedding_but_not_on_the_text_features() {
        // 400 rows: feature 0 varies on every row, feature 1 is 1 on only 5 rows, the rest are 0
        let xs: Vec<Vec<f64>> = (0..400)
            .map(|i| {
                let mut x = vec![0.0; EMBED_DIM + crate::classify::features::NAMES.len()];
                x[EMBED_DIM] = i as f64;
                x[EMBED_DIM + 1] = if i < 5 { 1.0 } else { 0.0 };
                x
            })
            .collect();
        let small = head_penalty(1.0, 400, &xs);
        assert!(small[..EMBED_DIM].iter().all(|p| *p == 20.0));
        assert_eq!(small[EMBED_DIM], 1.0, "a feature that varies keeps the base penalty");
        assert_eq!(small[EMBED_DIM + 1], 20.0, "a feature set on 5 rows of 400 is not fitted from them");
        assert_eq!(support(&xs, EMBED_DIM + 1), 5);
        let large = head_penalty(2.0, 20_000, &xs);
        assert!(large[..EMBED_DIM + 1].iter().all(|p| *p == 2.0));
    }

    #[test]
    fn each_head_and_the_gate_read_their_own_view() {
        let (mut rows, mut vecs) = (Vec::new(), Vec::new());
        for i in 0..300 {
            let source = ["gsm8k", "mmlu", "chat"][i % 3];
            let v: Vec<f32> = (0..VIEWS_DIM).map(|j| (((i * 31 + j * 17) % 101) as f32 / 101.0) - 0.5).collect();
            vecs.push(v);
            rows.push(row(i, source, format!("{source} {i}"), (i % 2) as f64, 1.0));
        }
        let r = fit(&rows, &vecs, 1.0, ("c", "p", vec![])).unwrap();
        let reads = |l: &Linear| -> Vec<View> {
            [View::Last, View::Embeddings, View::Layer3]
                .into_iter()
                .filter(|v| l.weights[v.columns()].iter().any(|w| *w != 0.0))
                .collect()
        };
        for h in &r.file().heads {
            let want = if h.name == "gsm8k" { View::Last } else { View::Layer3 };
            assert_eq!(reads(h), [want], "head {}", h.name);
            assert!(h.weights[VIEWS_DIM..].iter().any(|w| *w != 0.0), "the text features too");
        }
        assert!(r.file().gate.iter().all(|g| reads(g) == [View::Embeddings]));
        // a prompt whose views are missing (candle's engine) still scores, on the vector alone
        let alone = r.score(&rows[0].prompt, Some(&vecs[0][..EMBED_DIM]));
        assert!(alone.is_finite());
    }

    #[test]
    fn difficulty_is_averaged_into_the_target() {
        let mut r = row(0, "chat", "p".into(), 1.0, 0.0);
        assert_eq!(target(&r), -1.0);
        r.difficulty = Some(0.25);
        assert!((target(&r) - (-0.5 + 0.5 * 0.5)).abs() < 1e-12);
    }

    #[test]
    fn a_file_of_another_pair_uses_its_own_cheap_model() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pair.jsonl");
        std::fs::write(
            &path,
            "{\"id\":\"a\",\"prompt\":\"x\",\"scores\":{\"big\":1.0,\"small-2\":0.0},\"difficulty\":0.4}\n\
             {\"id\":\"b\",\"prompt\":\"y\",\"scores\":{\"big\":0.3,\"small-2\":0.7}}\n",
        )
        .unwrap();
        let (rows, skipped) = read_rows(&path, "small-1", "big").unwrap();
        assert_eq!(skipped, 0);
        assert_eq!((rows[0].cheap, rows[0].premium, rows[0].difficulty), (0.0, 1.0, Some(0.4)));
        assert_eq!((rows[1].cheap, rows[1].premium, rows[1].difficulty), (0.7, 0.3, None));
    }

    #[test]
    fn a_null_score_skips_its_row_and_not_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pair.jsonl");
        std::fs::write(
            &path,
            "{\"id\":\"a\",\"prompt\":\"x\",\"scores\":{\"big\":1.0,\"small-2\":null}}\n\
             {\"id\":\"b\",\"prompt\":\"y\",\"scores\":{\"big\":0.3,\"small-2\":0.7},\"difficulty\":null}\n",
        )
        .unwrap();
        let (rows, skipped) = read_rows(&path, "small-1", "big").unwrap();
        assert_eq!((rows.len(), skipped), (1, 1));
        assert_eq!((rows[0].id.as_str(), rows[0].cheap, rows[0].difficulty), ("b", 0.7, None));
    }
}
