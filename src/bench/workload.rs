//! Realistic, seeded request streams built from labelled question pairs.
//!
//! Questions recur with a Zipf popularity, as exact repeats and as paraphrases (a true duplicate of
//! a question already asked), mixed with novel questions and near misses (a labelled
//! *non*-duplicate of a question already asked — the requests a cache must not answer from
//! memory). Every request carries its ground truth: the equivalence class of its question (texts
//! joined by duplicate labels), so a hit can be judged right or wrong.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::eval::cache::Pair;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// First time this question is asked.
    Novel,
    /// The very same text again.
    Repeat,
    /// A labelled duplicate of a question already asked.
    Paraphrase,
    /// A labelled non-duplicate of a question already asked.
    NearMiss,
}

#[derive(Debug, Clone)]
pub struct Request {
    pub question: String,
    pub kind: Kind,
}

/// The mix, as shares of the stream (normalised), plus popularity skew and pool size.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Spec {
    pub repeat: f64,
    pub paraphrase: f64,
    pub near_miss: f64,
    pub novel: f64,
    pub zipf: f64,
    pub seed: u64,
}

impl Default for Spec {
    fn default() -> Self {
        Spec { repeat: 0.30, paraphrase: 0.25, near_miss: 0.15, novel: 0.30, zipf: 1.1, seed: 42 }
    }
}

impl Spec {
    /// `default`, or `key=value,…` over the defaults (keys: repeat, paraphrase, near_miss, novel,
    /// zipf, seed).
    pub fn parse(s: &str) -> Result<Spec, String> {
        let mut spec = Spec::default();
        if s.trim().is_empty() || s == "default" || s == "zipf" {
            return Ok(spec);
        }
        for part in s.split(',') {
            let (k, v) = part.split_once('=').ok_or_else(|| format!("workload: {part:?} is not key=value"))?;
            let v: f64 = v.trim().parse().map_err(|_| format!("workload: {k} must be a number"))?;
            match k.trim() {
                "repeat" => spec.repeat = v,
                "paraphrase" => spec.paraphrase = v,
                "near_miss" | "nearmiss" => spec.near_miss = v,
                "novel" => spec.novel = v,
                "zipf" => spec.zipf = v,
                "seed" => spec.seed = v as u64,
                other => return Err(format!("workload: unknown key {other:?}")),
            }
        }
        if [spec.repeat, spec.paraphrase, spec.near_miss, spec.novel].iter().any(|x| *x < 0.0) {
            return Err("workload: shares must be ≥ 0".into());
        }
        Ok(spec)
    }
}

/// Union-find over texts joined by duplicate labels: the ground truth of "same question".
pub struct Truth {
    id: HashMap<String, usize>,
    parent: Vec<usize>,
}

impl Truth {
    pub fn new(pairs: &[Pair]) -> Self {
        let mut t = Truth { id: HashMap::new(), parent: Vec::new() };
        for p in pairs {
            let (a, b) = (t.intern(&p.a), t.intern(&p.b));
            if p.duplicate {
                let (ra, rb) = (t.find(a), t.find(b));
                t.parent[ra] = rb;
            }
        }
        t
    }

    fn intern(&mut self, s: &str) -> usize {
        if let Some(&i) = self.id.get(s) {
            return i;
        }
        let i = self.parent.len();
        self.parent.push(i);
        self.id.insert(s.to_string(), i);
        i
    }

    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    /// True when both texts are known and labelled (transitively) the same question.
    pub fn same(&mut self, a: &str, b: &str) -> bool {
        if a == b {
            return true;
        }
        match (self.id.get(a).copied(), self.id.get(b).copied()) {
            (Some(x), Some(y)) => self.find(x) == self.find(y),
            _ => false,
        }
    }
}

/// Draws an index in 0..n with P(i) ∝ 1/(i+1)^s.
fn zipf(rng: &mut StdRng, n: usize, s: f64) -> usize {
    // inverse CDF on the fly; n is at most a few thousand asked questions
    let total: f64 = (1..=n).map(|k| (k as f64).powf(-s)).sum();
    let mut u = rng.gen::<f64>() * total;
    for k in 1..=n {
        u -= (k as f64).powf(-s);
        if u <= 0.0 {
            return k - 1;
        }
    }
    n - 1
}

/// Builds `n` requests. Popularity rank is the order in which questions were first asked.
pub fn generate(pairs: &[Pair], spec: &Spec, n: usize) -> Vec<Request> {
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let mut dup: Vec<&Pair> = pairs.iter().filter(|p| p.duplicate).collect();
    let mut non: Vec<&Pair> = pairs.iter().filter(|p| !p.duplicate).collect();
    // a seeded shuffle so different seeds give different streams
    for v in [&mut dup, &mut non] {
        for i in (1..v.len()).rev() {
            let j = rng.gen_range(0..=i);
            v.swap(i, j);
        }
    }
    // questions that have a paraphrase, or a near miss, available
    let mut asked: Vec<(String, Option<String>, Option<String>)> = Vec::new(); // (question, paraphrase, near miss)
    let (mut next_dup, mut next_non) = (0usize, 0usize);
    let mut asked_paraphrases = std::collections::HashSet::new();
    let total = spec.repeat + spec.paraphrase + spec.near_miss + spec.novel;
    let total = if total > 0.0 { total } else { 1.0 };
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let u = rng.gen::<f64>() * total;
        let want = if u < spec.novel {
            Kind::Novel
        } else if u < spec.novel + spec.repeat {
            Kind::Repeat
        } else if u < spec.novel + spec.repeat + spec.paraphrase {
            Kind::Paraphrase
        } else {
            Kind::NearMiss
        };
        let pick =
            |rng: &mut StdRng, asked: &Vec<(String, Option<String>, Option<String>)>| zipf(rng, asked.len(), spec.zipf);
        match want {
            Kind::Repeat if !asked.is_empty() => {
                let i = pick(&mut rng, &asked);
                out.push(Request { question: asked[i].0.clone(), kind: Kind::Repeat });
            }
            Kind::Paraphrase if asked.iter().any(|a| a.1.is_some()) => {
                let i = loop {
                    let i = pick(&mut rng, &asked);
                    if asked[i].1.is_some() {
                        break i;
                    }
                };
                // after its first time, a paraphrase is a repeat of itself
                let kind = if asked_paraphrases.contains(&i) { Kind::Repeat } else { Kind::Paraphrase };
                asked_paraphrases.insert(i);
                if let Some(p) = asked[i].1.clone() {
                    out.push(Request { question: p, kind });
                }
            }
            Kind::NearMiss if asked.iter().any(|a| a.2.is_some()) => {
                let i = loop {
                    let i = pick(&mut rng, &asked);
                    if asked[i].2.is_some() {
                        break i;
                    }
                };
                // a near miss is used once: asked again it would be a repeat of itself
                if let Some(p) = asked[i].2.take() {
                    out.push(Request { question: p, kind: Kind::NearMiss });
                }
            }
            _ => {
                // a new question: alternate sources so both paraphrases and near misses exist later
                let from_dup = next_dup < dup.len() && (next_non >= non.len() || rng.gen_bool(0.5));
                if from_dup {
                    let p = dup[next_dup];
                    next_dup += 1;
                    asked.push((p.a.clone(), Some(p.b.clone()), None));
                    out.push(Request { question: p.a.clone(), kind: Kind::Novel });
                } else if next_non < non.len() {
                    let p = non[next_non];
                    next_non += 1;
                    asked.push((p.a.clone(), None, Some(p.b.clone())));
                    out.push(Request { question: p.a.clone(), kind: Kind::Novel });
                } else {
                    break; // the pairs file is exhausted
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs() -> Vec<Pair> {
        (0..200)
            .map(|i| Pair {
                a: format!("question {i}"),
                b: format!("question {i} reworded"),
                duplicate: i % 2 == 0,
                kind: None,
            })
            .collect()
    }

    #[test]
    fn seeded_reproducible_and_ground_truth_holds() {
        let p = pairs();
        let spec = Spec::default();
        let a = generate(&p, &spec, 500);
        let b = generate(&p, &spec, 500);
        assert_eq!(a.len(), 500);
        assert!(a.iter().zip(&b).all(|(x, y)| x.question == y.question && x.kind == y.kind));
        let mut truth = Truth::new(&p);
        let mut seen: Vec<&str> = Vec::new();
        for r in &a {
            match r.kind {
                Kind::Repeat => assert!(seen.contains(&r.question.as_str())),
                Kind::Paraphrase => {
                    assert!(seen.iter().any(|s| s != &r.question && truth.same(s, &r.question)));
                    assert!(!seen.contains(&r.question.as_str()), "a paraphrase is new text");
                }
                Kind::NearMiss => assert!(!seen.iter().any(|s| truth.same(s, &r.question))),
                Kind::Novel => assert!(!seen.contains(&r.question.as_str())),
            }
            seen.push(&r.question);
        }
        for k in [Kind::Repeat, Kind::Paraphrase, Kind::NearMiss, Kind::Novel] {
            assert!(a.iter().any(|r| r.kind == k), "{k:?} missing");
        }
        let other = generate(&p, &Spec { seed: 7, ..Spec::default() }, 500);
        assert!(other.iter().zip(&a).any(|(x, y)| x.question != y.question));
        assert!(Spec::parse("repeat=0.5,zipf=1.3").is_ok());
        assert!(Spec::parse("bogus=1").is_err());
    }
}
