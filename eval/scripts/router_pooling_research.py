#!/usr/bin/env python3
"""Does another view of the MiniLM forward pass route better than the cache's vector? (issue 11)

The shipped router reads the cache's embedding: the last layer's mean pool, L2-normalised. The
same forward pass also gives the [CLS] token, a max pool and every earlier layer, at no extra
serving cost. This script swaps the router's 384 embedding inputs for such a view (or appends
one) in every head and in the gate, and measures the shipped recipe (`router_feature_research.py`,
the `feat_noinflate` rule) by 5-fold CV over fold draws.

Fill eval/.cache/layers first:  python eval/scripts/minilm_layers.py --sets alpaca,arena,gsm8k,mmlu
(and python eval/scripts/minilm_prefix.py for the prefix views; --json keeps per-draw results)
Usage:  python eval/scripts/router_pooling_research.py --seeds 0-2 --view base --view cls ...
Views: base (the Rust vectors), mean<L> (layer L mean pool, L2-normalised), meanall, cls, max;
        first8/16/32/64, nl, sent (mean over the leading word pieces only; '_L3' for layer 3; from
        <set>_prefix.npz, made by minilm_prefix.py for all four sets: every head scores every row);
        '+' joins views (e.g. base+cls); 'alpaca=mean0,gate=mean0' sets the view per head / for
        the gate (the rest stay on base); 'alpaca=base|mean3' averages the z-scored outputs of one
        head per view; a suffix '*k' scales the ridge penalty of that run.
--spec adds "hard": 1 (each prompt scored by its most likely head) or "prior": {"arena": -1}
(log-prior offsets in the gate). Results (draws 0-2 unless said; chat = the Mixtral pair):
  base 0.551 chat / 0.532 arena; cls 0.562 / 0.538 but MMLU -0.013, GSM8K -0.017; max worse
  everywhere; mean3 0.569 / 0.544, MMLU 0.670, GSM8K 0.631; mean0 0.578 / 0.520; gate=mean0 alone
  0.576 / 0.512 (draws 3-7: 0.577 against 0.564, arena 0.527 against 0.538); alpaca=mean0 0.551.
  Hard gate and arena priors -0.5..-2: within 0.002 of base (8 draws). Averaging chat heads
  over views (base|mean3, base|mean0|mean3|cls, all seven layers): chat 0.550-0.552. Nothing
  kept; see eval/README.md.
  Task-statement views in the chat head only (research_stop14): first8..64, nl, sent and their
  layer-3 versions 0.543-0.555 chat (base 0.551), the other pairs within +-0.004; base+first8/16/
  32/nl/sent 0.551-0.552. Fresh draws 3-7 paired against base: first32 chat +0.0005 (3/5 up),
  base+first32 +0.0012 (3/5), other pairs +0.002..+0.003. On the 129 prompts with a blank-line
  input block the chat scores' rank correlation with the chat target is ~0 under every view.
  No gain; nothing kept.
Needs numpy.
"""
import argparse, hashlib, re, sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import router_feature_research as rfr  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ROOT / "eval/.cache/layers"
FILES = {"mmlu": "mmlu", "gsm8k": "gsm8k", "arena": "arena", "alpaca": "alpaca"}


def unit(X):
    return X / (np.linalg.norm(X, axis=1, keepdims=True) + 1e-12)


def load_layers():
    out = {}
    for g, f in FILES.items():
        z = np.load(LAYERS / f"{f}.npz")
        keys = [bytes(k) for k in z["keys"]]
        out[g] = {"index": {k: i for i, k in enumerate(keys)}, "mean": z["mean"], "cls": z["cls"], "max": z["max"]}
        pf = LAYERS / f"{f}_prefix.npz"  # minilm_prefix.py: first<k> / nl / sent at layers 3 and 6
        if pf.exists():
            p = np.load(pf)
            assert (p["keys"] == z["keys"]).all(), f"{pf} rows differ from {f}.npz: re-run both"
            out[g]["prefix"] = {v: p[v] for v in p.files if v not in ("keys", "layers") and not v.endswith("_n")}
            out[g]["prefix_layers"] = [int(x) for x in p["layers"]]
    return out


PREFIX = re.compile(r"(first\d+|nl|sent)(?:_L(\d))?$")


def prefix_view(z, g, v, idx):
    """'first16', 'nl', 'sent' (last layer) or with '_L3' (layer 3), from <set>_prefix.npz."""
    m = PREFIX.match(v)
    if "prefix" not in z or m.group(1) not in z["prefix"]:
        raise SystemExit(f"view {v} needs eval/.cache/layers/{FILES[g]}_prefix.npz with '{m.group(1)}' "
                         f"(python eval/scripts/minilm_prefix.py --sets {FILES[g]}): every head scores "
                         f"every set's rows, so a head on this view needs it for all four sets")
    layer = int(m.group(2) or 6)
    if layer not in z["prefix_layers"]:
        raise SystemExit(f"view {v}: {FILES[g]}_prefix.npz has layers {z['prefix_layers']} only")
    return unit(z["prefix"][m.group(1)][idx, z["prefix_layers"].index(layer)])


def view(L, g, texts, name, base):
    z = L[g]
    idx = np.array([z["index"][hashlib.sha256(t.encode()).digest()] for t in texts])
    parts = []
    for v in name.split("+"):
        if v == "base":
            parts.append(base)
        elif v == "meanall":
            parts.append(unit(z["mean"][idx].mean(1)))
        elif v.startswith("mean"):
            parts.append(unit(z["mean"][idx, int(v[4:])]))
        elif PREFIX.match(v):
            parts.append(prefix_view(z, g, v, idx))
        elif v in ("cls", "max"):
            parts.append(unit(z[v][idx]))
        else:
            raise SystemExit(f"unknown view {v}")
    return np.hstack(parts).astype(np.float64)


class Views:
    """Inputs per (group, view): the view's vectors then the 12 text features."""

    def __init__(self, exp, L):
        self.exp, self.L, self.cache = exp, L, {}
        self.base = {g: d.E for g, d in exp.gsrc.items()}

    def X(self, g, v):
        if (g, v) not in self.cache:
            d = self.exp.gsrc[g]
            self.cache[(g, v)] = np.hstack([view(self.L, g, d.texts, v, self.base[g]), d.F])
        return self.cache[(g, v)]


def gate_probs(V, gv, folds, f, prior=None):
    """rfr.Exp.gate on view `gv`: group-balanced one-vs-rest ridge, softmax at temperature 30."""
    Xs, lab = [], []
    for j, g in enumerate(rfr.GROUPS):
        tr = folds[g] != f
        Xs.append(V.X(g, gv)[tr]); lab += [j] * tr.sum()
    X, lab = np.vstack(Xs), np.array(lab)
    w = 1.0 / np.bincount(lab)[lab]; w = w / w.sum()
    mu, sd = rfr.standardise(X, w)
    Z = (X - mu) / sd
    G = (Z * w[:, None]).T @ Z + rfr.GATE_LAMBDA * np.eye(Z.shape[1])
    B = []
    for j in range(len(rfr.GROUPS)):
        y = (lab == j).astype(float); ym = (y * w).sum()
        B.append((np.linalg.solve(G, (Z * w[:, None]).T @ (y - ym)), ym))
    out = {}
    for g in rfr.GROUPS:
        Zt = (V.X(g, gv)[folds[g] == f] - mu) / sd
        O = np.stack([Zt @ b + ym for b, ym in B], 1) * rfr.GATE_T
        if prior:  # log-prior offsets per group, e.g. {"arena": -1}
            O += np.array([prior.get(g2, 0.0) for g2 in rfr.GROUPS])
        O -= O.max(1, keepdims=True)
        P = np.exp(O); out[g] = P / P.sum(1, keepdims=True)
    return out


def cv_views(V, spec, seed, hv, gv, k=5):
    """rfr.cv with head h reading view hv[h] (every group's rows are scored by every head in its
    own view) and the gate reading view gv."""
    exp = V.exp
    folds = {g: np.array([rfr.fold(t, k, seed) for t in exp.gsrc[g].texts]) for g in rfr.GROUPS}
    scores = {g: np.zeros(len(exp.gsrc[g].texts)) for g in rfr.GROUPS}
    for f in range(k):
        P = gate_probs(V, gv, folds, f, spec.get("prior"))
        heads = {}
        for h in rfr.GROUPS:
            tr = folds[h] != f
            heads[h] = []
            for v in hv[h].split("|"):  # 'a|b': one head per view, their z-scored outputs averaged
                X = V.X(h, v)
                rfr.NE = X.shape[1] - exp.gsrc[h].F.shape[1]
                heads[h].append((v, rfr.fit_head(X[tr], exp.target(h, spec)[tr], spec, h, 0, seed * 100 + f)))
        for g in rfr.GROUPS:
            te = folds[g] == f
            H = np.stack([np.mean([fn(V.X(g, v)[te]) for v, fn in heads[h]], 0) for h in rfr.GROUPS], 1)
            Pg = P[g]
            if spec.get("hard"):  # each prompt scored by its most likely head alone
                Pg = (Pg == Pg.max(1, keepdims=True)).astype(float)
            scores[g][te] = (Pg * H).sum(1)
    return scores


def parse_view(name):
    """'cls' = every head and the gate on cls; 'alpaca=mean0,mmlu=mean3' = those heads on those
    views, the rest and the gate on base; 'gate=...' sets the gate's view."""
    if "=" not in name:
        return {g: name for g in rfr.GROUPS}, name
    hv = {g: "base" for g in rfr.GROUPS}
    gv = "base"
    for part in name.split(","):
        g, v = part.split("=")
        if g == "gate":
            gv = v
        else:
            hv[g] = v
    return hv, gv


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0-2")
    ap.add_argument("--view", action="append", default=[])
    ap.add_argument("--spec", default='{"feat_noinflate": 1}')
    ap.add_argument("--json", help="append raw per-draw results here (for paired comparisons)")
    a = ap.parse_args()
    import json
    spec0 = json.loads(a.spec)
    sets = rfr.load()
    exp = rfr.Exp(sets)
    V = Views(exp, load_layers())
    for name in a.view or ["base"]:
        vname, _, k = name.partition("*")
        spec = dict(spec0, lam=spec0.get("lam", 1.0) * (float(k) if k else 1.0))
        hv, gv = parse_view(vname)
        res = {}
        for seed in rfr.parse_seeds(a.seeds):
            sc = cv_views(V, spec, seed, hv, gv)
            for n, g in rfr.TEST.items():
                d = exp.sets[n]
                res.setdefault(n, []).append(rfr.metrics(sc[g], d.c, d.p)["apgr"])
        print(f"{name:>30}: {rfr.fmt(res)}", flush=True)
        if a.json:
            with open(a.json, "a") as fh:
                fh.write(json.dumps({"view": name, "seeds": rfr.parse_seeds(a.seeds), "res": res}) + "\n")


if __name__ == "__main__":
    main()
