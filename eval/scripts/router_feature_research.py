#!/usr/bin/env python3
"""Gated-heads router (issue 11): inputs, penalties and targets, by 5-fold CV.

Re-implements the shipped Rust learner (src/classify/train.rs) exactly -- one ridge head per source
group on standardised inputs (sd < 1e-4 left unscaled), penalty lambda*max(1, 8000/n_distinct) on
the mean-normalised Gram, head output z-scored on its training prompts, group-balanced one-vs-rest
ridge gate (lambda 0.1) with softmax temperature 30 -- and adds knobs:

  phi        penalty multiplier on the text-feature dims (embedding dims keep 1)
  extra      extra cheap text features (groups of `EXTRA`)
  w          weight of (1 - 2*difficulty) in the chat target; pair term = mean gain of 4 pair files
  rank       rank-transform every head's target to [-1, 1]
  nested     per-head penalty multiplier chosen by inner 5-fold CV on the training folds only
  len_prior  arena head := (1-a)*head + a*z(log length)

Usage: python eval/scripts/router_feature_research.py --seeds 0-2 --spec '{"phi":0.1}' ...
Needs numpy only. The recommended recipe (issue 11, resa) is --spec '{"feat_noinflate":1}':
the 12 text features get lambda (uninflated), the 384 embedding dims lambda*max(1, 8000/n).
  python eval/scripts/router_feature_research.py --seeds 0-2 --spec '{}' --spec '{"feat_noinflate":1}'
  python eval/scripts/router_feature_research.py --seeds 3-7 --spec '{}' --spec '{"feat_noinflate":1}'
The arena_diff keys read arena_bench_v1.jsonl's other-model scores (not used by the recipe).
"""
import argparse, json, math, re, sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from router_research import metrics  # noqa: E402
from router_mix_research import ALPACA, MIXTRAL, PREMIUM, DS, fold, load_sets, load_store, read  # noqa: E402

GROUP_PENALTY_ROWS = 8000.0
GATE_LAMBDA = 0.1
GATE_T = 30.0
NE = 384
GROUPS = ["alpaca", "arena", "gsm8k", "mmlu"]  # Rust: sorted source names (alpaca_eval, arena-bench-v1, gsm8k, mmlu)
TEST = {"mmlu": "mmlu", "gsm8k": "gsm8k", "arena": "arena", **{"alpaca-" + k: "alpaca" for k in ALPACA}}

# ------------------------------------------------------------------------------------------------
# Extra cheap text features (each a small, defensible group)
# ------------------------------------------------------------------------------------------------
def _has(pat):
    r = re.compile(pat, re.I)
    return lambda t: float(bool(r.search(t)))


KW = {
    "write": r"\b(write|compose|draft|create)\b.{0,60}\b(story|poem|essay|letter|email|e-mail|song|lyrics|speech|blog|article|script|haiku|limerick|tweet|post|review|joke)s?\b",
    "rewrite": r"\b(rewrite|re-write|paraphrase|rephrase|edit|correct|proofread|improve)\b",
    "translate": r"\btranslat",
    "summarize": r"\b(summari[sz]e|summary|tl;?dr)\b",
    "list": r"\b(list|give (me )?(some |a few )?examples|brainstorm|ideas|suggest)\b",
    "explain": r"\b(explain|describe|why)\b",
    "code": r"\b(code|program|function|sql|python|javascript|java|c\+\+|script|regex|algorithm)\b",
    "classify": r"\b(classify|categori[sz]e|extract|identify)\b",
    "math": r"\b(calculate|compute|solve|equation|how many|how much|probability|integral|derivative)\b",
    "roleplay": r"\b(act as|pretend|you are a|imagine you|role[- ]?play)\b",
}


def f_kw(t):
    return [_has(p)(t) for p in KW.values()]


def f_input(t):
    # instruction followed by a blank line and more text; prompt wrapped in quotes
    s = t.strip()
    blank = "\n\n" in s and len(s.split("\n\n", 1)[1].strip()) > 0
    quoted = float(len(s) > 1 and s[0] in "\"'\u201c" and s[-1] in "\"'\u201d")
    return [float(blank), quoted]


def f_sent(t):
    sents = [x for x in re.split(r"[.!?]+(?:\s+|$)|\n+", t) if x.strip()]
    ns = max(1, len(sents))
    wps = len(t.split()) / ns
    return [math.log1p(ns), math.log1p(wps)]


def f_person(t):
    w = re.findall(r"[A-Za-z']+", t)
    first = sum(x.lower() in ("i", "my", "me", "i'm", "i've", "mine", "we", "our") for x in w)
    you = sum(x.lower() in ("you", "your") for x in w)
    s = t.strip()
    return [float(first > 0), float(you > 0), float(s.endswith("?")), float(bool(re.match(r"^(please\s+)?(write|give|list|create|make|describe|explain|tell|generate|rewrite|translate|summari[sz]e|find|help|suggest|provide|compose|name|what|how|why|can|could|is|are|do|does)\b", s, re.I)))]


def f_len2(t):
    l = math.log1p(len(t))
    return [l * l, float(len(t) < 60), float(len(t) > 400)]


EXTRA = {"len2": f_len2, "kw": f_kw, "input": f_input, "sent": f_sent, "person": f_person}


# ------------------------------------------------------------------------------------------------
def load(cache=None):
    import os, pickle
    if cache and os.path.exists(cache):
        return pickle.load(open(cache, "rb"))
    sets = load_sets(load_store())
    a = [sets["alpaca-" + k] for k in ALPACA]
    assert all(x.texts == a[0].texts for x in a)
    if cache:
        pickle.dump(sets, open(cache, "wb"))
    return sets


def standardise(X, w):
    mu = (X * w[:, None]).sum(0) / w.sum()
    sd = np.sqrt(((X - mu) ** 2 * w[:, None]).sum(0) / w.sum())
    sd[sd < 1e-4] = 1.0
    return mu, sd


class Exp:
    def __init__(self, sets):
        self.sets = sets
        self.gsrc = {"mmlu": sets["mmlu"], "gsm8k": sets["gsm8k"], "arena": sets["arena"], "alpaca": sets["alpaca-mixtral"]}
        self.featcache = {}
        self.gatecache = {}

    def X(self, g, extra=()):
        key = (g, tuple(extra))
        if key not in self.featcache:
            d = self.gsrc[g]
            cols = [d.E, d.F] + [np.array([EXTRA[e](t) for t in d.texts], dtype=np.float64) for e in extra]
            self.featcache[key] = np.hstack(cols)
        return self.featcache[key]

    def target(self, g, spec):
        s = self.sets
        if g == "arena" and spec.get("arena_diff"):
            # the arena file's own many-model difficulty, like AlpacaEval's: the mean win rate
            # (ties 1/2) of the 13 other graded models against the premium model on that prompt
            d = self.arena_difficulty(spec["arena_diff"])
            w = spec.get("arena_w", 0.5)
            y = (1 - w) * self.gsrc[g].gain + w * (1 - 2 * d)
        elif g != "alpaca":
            y = self.gsrc[g].gain.copy()
        else:
            w = spec.get("w", 0.5)
            pair = np.mean([s["alpaca-" + k].gain for k in ALPACA], axis=0) if spec.get("pair", "mean") == "mean" \
                else s["alpaca-" + spec["pair"]].gain
            y = w * (1 - 2 * s["alpaca-mixtral"].diff) + (1 - w) * pair
        return y

    def arena_difficulty(self, how):
        if not hasattr(self, "_adiff"):
            raw = {}
            for line in open(Path(__file__).resolve().parents[2] / "eval/data/routing/arena_bench_v1.jsonl"):
                r = json.loads(line)
                raw[r["prompt"]] = r["scores"]
            out = {}
            for how_ in ("win", "score"):
                v = []
                for t in self.gsrc["arena"].texts:
                    sc = raw[t]; p = sc[PREMIUM]
                    others = [x for m, x in sc.items() if m not in (PREMIUM, MIXTRAL)]
                    if how_ == "win":
                        v.append(np.mean([1.0 if x > p else 0.5 if x == p else 0.0 for x in others]))
                    else:  # mean score gap on the 1..10 scale, mapped like a win rate: 0.5 - gap/18
                        v.append(0.5 - (p - np.mean(others)) / 18)
                out[how_] = np.array(v)
            self._adiff = out
        return self._adiff[how]

    def gate(self, seed, f, folds, gate_extra=()):
        key = (seed, f, tuple(gate_extra))
        if key in self.gatecache:
            return self.gatecache[key]
        Xs, lab = [], []
        for j, g in enumerate(GROUPS):
            tr = folds[g] != f
            Xs.append(self.X(g, gate_extra)[tr]); lab += [j] * tr.sum()
        X, lab = np.vstack(Xs), np.array(lab)
        cnt = np.bincount(lab)
        w = 1.0 / cnt[lab]; w = w / w.sum()
        mu, sd = standardise(X, w)
        Z = (X - mu) / sd
        G = (Z * w[:, None]).T @ Z + GATE_LAMBDA * np.eye(Z.shape[1])
        out = {}
        B = []
        for j in range(len(GROUPS)):
            y = (lab == j).astype(float); ym = (y * w).sum()
            B.append((np.linalg.solve(G, (Z * w[:, None]).T @ (y - ym)), ym))
        for g in GROUPS:
            te = folds[g] == f
            Zt = (self.X(g, gate_extra)[te] - mu) / sd
            O = np.stack([Zt @ b + ym for b, ym in B], 1) * GATE_T
            O -= O.max(1, keepdims=True)
            P = np.exp(O); P /= P.sum(1, keepdims=True)
            out[g] = P
        self.gatecache[key] = out
        return out


def eig_ridge(Z, y, pen):
    """Ridge on mean-normalised Gram with diagonal penalty vector pen -> (V, s, b') so that
    beta(l) = D^-1/2 V diag(1/(s+l)) V^T D^-1/2 b for penalty l*pen."""
    n = len(y)
    d = np.sqrt(pen)
    Zs = Z / d
    G = Zs.T @ Zs / n
    b = Zs.T @ (y - y.mean()) / n
    s, V = np.linalg.eigh(G)
    return d, s, V, V.T @ b


def beta_of(er, lam):
    d, s, V, vb = er
    return (V @ (vb / (s + lam))) / d


def fit_head(X, y, spec, g, n_feat_extra, rng_seed):
    n = len(y)
    nb = X.shape[1]
    mu, sd = standardise(X, np.ones(n))
    Z = (X - mu) / sd
    if spec.get("rank"):
        r = np.argsort(np.argsort(y, kind="stable"), kind="stable")
        y = 2 * r / (n - 1) - 1
    phi = spec.get("phi", 1.0)
    phi = spec.get("phi_" + g, phi)
    pen = np.ones(nb)
    pen[NE:] = max(phi, 1e-6)
    mult = max(1.0, GROUP_PENALTY_ROWS / n) * spec.get("lam", 1.0) * spec.get("lam_" + g, 1.0)
    if spec.get("feat_noinflate") and "phi_" + g not in spec:
        # the small-group penalty inflation applies to the embedding dims only: the text
        # features keep lambda * phi
        pen[NE:] = max(phi / max(1.0, GROUP_PENALTY_ROWS / n), 1e-6)
    er = eig_ridge(Z, y, pen)
    if spec.get("nested"):
        grid = spec.get("grid", [0.125, 0.25, 0.5, 1, 2, 4, 8])
        # inner 5-fold on this group's training rows (fold hash with another seed)
        inner = np.array([int(x) for x in np.random.default_rng(rng_seed).integers(0, 5, n)])
        pred = np.zeros((len(grid), n))
        for k in range(5):
            tr, te = inner != k, inner == k
            m2, s2 = standardise(X[tr], np.ones(tr.sum()))
            Zi = (X[tr] - m2) / s2
            eri = eig_ridge(Zi, y[tr], pen)
            Zt = (X[te] - m2) / s2
            for gi, gm in enumerate(grid):
                pred[gi, te] = Zt @ beta_of(eri, mult * gm)
        crit = [np.corrcoef(p, y)[0, 1] for p in pred]
        mult *= grid[int(np.argmax(crit))]
    beta = beta_of(er, mult)
    ym = y.mean()
    tr_scores = Z @ beta + ym
    m, s = tr_scores.mean(), tr_scores.std() + 1e-9
    return lambda Xn: (((Xn - mu) / sd) @ beta + ym - m) / s


HEADS = {}


def cv(exp, spec, seed, k=5):
    extra = spec.get("extra", [])
    folds = {g: np.array([fold(t, k, seed) for t in exp.gsrc[g].texts]) for g in GROUPS}
    scores = {g: np.zeros(len(exp.gsrc[g].texts)) for g in GROUPS}
    for f in range(k):
        P = exp.gate(seed, f, folds, extra if spec.get("gate_extra") else ())
        heads = {}
        for g in GROUPS:
            tr = folds[g] != f
            X = exp.X(g, extra)
            y = exp.target(g, spec)
            key = (seed, f, g, tuple(extra), spec.get("phi_" + g, spec.get("phi", 1.0)),
                   bool(spec.get("feat_noinflate")) and "phi_" + g not in spec, spec.get("rank"), spec.get("nested"),
                   str(spec.get("grid")), spec.get("lam", 1.0) * spec.get("lam_" + g, 1.0),
                   (spec.get("w", 0.5), spec.get("pair", "mean")) if g == "alpaca" else None,
                   (spec.get("arena_diff"), spec.get("arena_w", 0.5)) if g == "arena" else None)
            if key not in HEADS:
                HEADS[key] = fit_head(X[tr], y[tr], spec, g, len(extra), seed * 100 + f)
            heads[g] = HEADS[key]
        if spec.get("merge"):
            # one chat head for AlpacaEval + arena rows, each source's target z-scored
            Xm, ym = [], []
            for g in ("alpaca", "arena"):
                tr = folds[g] != f
                y = exp.target(g, spec)[tr]
                Xm.append(exp.X(g, extra)[tr]); ym.append((y - y.mean()) / y.std())
            key = (seed, f, "merge", tuple(extra), spec.get("phi_alpaca", spec.get("phi", 1.0)), spec.get("w", 0.5),
                   bool(spec.get("feat_noinflate")), spec.get("lam", 1.0) * spec.get("lam_alpaca", 1.0), spec.get("merge"))
            if key not in HEADS:
                HEADS[key] = fit_head(np.vstack(Xm), np.concatenate(ym), spec, "alpaca", len(extra), 0)
            heads["alpaca"] = HEADS[key]
            if spec.get("merge") != "alpaca_only":
                heads["arena"] = HEADS[key]
        for g in GROUPS:
            te = folds[g] == f
            Xt = exp.X(g, extra)[te]
            H = np.stack([heads[h](Xt) for h in GROUPS], 1)
            a = spec.get("len_prior", 0.0)
            if a and spec.get("len_prior_on", "arena") in GROUPS:
                h = spec.get("len_prior_on", "arena")
                j = GROUPS.index(h)
                tr = folds[h] != f
                L = np.log1p(exp.gsrc[h].length[tr])
                lt = np.log1p(np.array([len(t) for t in np.array(exp.gsrc[g].texts, dtype=object)[te]], dtype=float))
                H[:, j] = (1 - a) * H[:, j] + a * (lt - L.mean()) / L.std()
            Pg = P[g]
            if spec.get("gate_oracle"):  # diagnostic only: each prompt scored by its own source's head
                Pg = np.zeros_like(Pg); Pg[:, GROUPS.index(g)] = 1
            scores[g][te] = (Pg * H).sum(1)
    return scores


def evaluate(exp, spec, seeds):
    res = {}
    for seed in seeds:
        sc = cv(exp, spec, seed)
        for n, g in TEST.items():
            d = exp.sets[n]
            res.setdefault(n, []).append(metrics(sc[g], d.c, d.p)["apgr"])
    return res


def fmt(res):
    return " ".join(f"{n.replace('alpaca-', 'a-')}={np.mean(v):.3f}±{np.std(v):.3f}" for n, v in res.items())


def parse_seeds(s):
    if "-" in s:
        a, b = s.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(x) for x in s.split(",")]


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0-2")
    ap.add_argument("--spec", action="append", default=[])
    ap.add_argument("--json", help="append raw per-seed results here")
    ap.add_argument("--cache", help="pickle of the loaded sets (made on first use; text features are slow)")
    args = ap.parse_args()
    seeds = parse_seeds(args.seeds)
    exp = Exp(load(args.cache))
    for s in args.spec or ["{}"]:
        spec = json.loads(s)
        r = evaluate(exp, spec, seeds)
        print(json.dumps(spec), fmt(r), flush=True)
        if args.json:
            with open(args.json, "a") as fh:
                fh.write(json.dumps({"spec": spec, "seeds": seeds, "res": r}) + "\n")
