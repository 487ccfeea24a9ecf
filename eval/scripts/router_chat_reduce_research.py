#!/usr/bin/env python3
"""Chat head on a whitened or PLS-reduced embedding (research_stop14b, issue 11).

The shipped recipe (`router_feature_research.py`, spec {"feat_noinflate": 1}) is kept for the
MMLU, GSM8K and arena heads and the gate; only the chat (alpaca) head's 384 embedding inputs change:

  base              the shipped chat head (the cache's MiniLM vector + 12 text features)
  zca:A[*S]         generalised ridge: the 384 dims multiplied by W = (C + A*tr(C)/384*I)^(-1/2),
                    C the covariance of the embedding over every prompt of the four sets (MMLU,
                    GSM8K, arena, AlpacaEval; unsupervised, no labels, so it may see the test
                    folds), then the shipped standardise + ridge; *S scales the chat head's penalty
  zcab:A[*S]        the same with C group-balanced (each of the four sets weight 1/4)
  pls:K[*S]         PLS1 (NIPALS) of the chat target on the centred embedding, fitted on the
                    training fold's chat rows only; the K scores + 12 text features into the ridge
                    (text features penalty lambda, the K scores lambda*S*8000/n as the embedding)
  plsz:K[*S]        the same with the embedding dims standardised (training fold) before PLS
  plain[*S]         controls: the shipped chat head with its penalty scaled by S;
  none              the chat head on the 12 text features alone

Every head scores every set's rows (the gate mixes them), so the chat head's transform is applied to
all four sets' vectors. Usage (numpy only; nice -n 19, one BLAS thread):
  python eval/scripts/router_chat_reduce_research.py --seeds 0-2 --cache eval/.cache/stop14b/sets.pkl \
      --v base --v zca:0.1 --v pls:8*0.1 --json eval/.cache/stop14b/sel.jsonl
  python eval/scripts/router_chat_reduce_research.py --paired base eval/.cache/stop14b/fresh.jsonl

Results (5-fold CV APGR; heads other than chat and the gate are the shipped recipe; raw per-draw
numbers in eval/.cache/stop14b/{sel,fresh}.jsonl; full write-up in /work/notes/research_stop14b.md).
Draws 0-2, chat Mixtral / Mistral-7B / claude-instant / GPT-3.5 (MMLU 0.658 and GSM8K 0.648 for all):
  base 0.551 / 0.539 / 0.539 / 0.516, arena 0.532
  zca  a in {0.01,0.1,1} x penalty {0.3,1,3}: 0.548-0.555 / 0.533-0.537 / 0.535-0.538 / 0.515-0.517
       (group-balanced C: 0.545-0.555, other pairs lower still); x10: 0.556-0.557
  pls  k in {4,8,16,32} x penalty {0.01..3}: 0.511-0.555, best k=8 x3 0.555 / 0.533 / 0.533 / 0.513;
       at the shipped penalty 0.546-0.552; standardised before PLS: 0.546-0.552
  controls: plain ridge x3 0.554, x10 0.558 (other pairs 0.538 / 0.538 / 0.516);
            chat head on the 12 text features alone 0.552 / 0.533 / 0.533 / 0.511
Fresh draws 3-7 paired against base (mean difference, draws up of 5):
  zca:0.01*3  Mixtral +0.0029 (5/5), Mistral-7B -0.0049 (0/5), claude -0.0033 (0/5), GPT-3.5 -0.0019 (0/5),
              arena +0.0026, MMLU/GSM8K 0.0000
  pls:8*3     Mixtral +0.0011 (2/5), -0.0072 / -0.0076 / -0.0049 (0/5 each), arena +0.0040
  plain*3     Mixtral +0.0021 (5/5), -0.0015 / -0.0026 / -0.0009; plain*10 +0.0035 (4/5), -0.0018 / -0.0037 / -0.0014
  Against plain ridge at the same penalty, whitening adds +0.0007 (zca:0.01*3 vs plain*3) and +0.0001
  (zca:1*10 vs plain*10) on Mixtral and loses 0.001-0.003 on the other pairs. Verdict: neither kept;
  the Mixtral gain is the larger penalty's (the embedding barely helps the chat head on that pair).
"""
import argparse, json, sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import router_feature_research as rfr  # noqa: E402

SPEC = {"feat_noinflate": 1}


def zca(exp, a, balanced=False):
    E = [exp.gsrc[g].E.astype(np.float64) for g in rfr.GROUPS]
    if balanced:
        mu = np.mean([e.mean(0) for e in E], 0)
        C = np.mean([(e - mu).T @ (e - mu) / len(e) for e in E], 0)
    else:
        X = np.vstack(E)
        mu = X.mean(0)
        C = (X - mu).T @ (X - mu) / len(X)
    s, V = np.linalg.eigh(C)
    s = np.maximum(s, 0) + a * np.trace(C) / C.shape[0]
    return mu, (V / np.sqrt(s)) @ V.T


def pls1(X, y, k):
    """NIPALS PLS1 on centred X (n x p), y (n). Returns R (p x k) so that scores T = Xc @ R."""
    X = X.copy(); y = y.copy()
    W, P = [], []
    for _ in range(k):
        w = X.T @ y
        w /= np.linalg.norm(w) + 1e-300
        t = X @ w
        tt = t @ t
        p = X.T @ t / tt
        q = (y @ t) / tt
        X -= np.outer(t, p)
        y -= q * t
        W.append(w); P.append(p)
    W, P = np.array(W).T, np.array(P).T
    return W @ np.linalg.inv(P.T @ W)


def parse(v):
    name, _, s = v.partition("*")
    kind, _, arg = name.partition(":")
    return kind, (float(arg) if arg else None), (float(s) if s else 1.0)


def run(exp, v, seed, k=5, zcache={}):
    kind, arg, scale = parse(v)
    folds = {g: np.array([rfr.fold(t, k, seed) for t in exp.gsrc[g].texts]) for g in rfr.GROUPS}
    scores = {g: np.zeros(len(exp.gsrc[g].texts)) for g in rfr.GROUPS}
    yc = exp.target("alpaca", SPEC)
    if kind in ("zca", "zcab"):
        key = (kind, arg)
        if key not in zcache:
            zcache[key] = zca(exp, arg, kind == "zcab")
        mu, W = zcache[key]
    for f in range(k):
        P = exp.gate(seed, f, folds)
        heads = {}
        for g in rfr.GROUPS:
            if g == "alpaca" and kind != "base":
                continue
            key = ("stop14b", seed, f, g)
            if key not in rfr.HEADS:
                rfr.NE = 384
                tr = folds[g] != f
                rfr.HEADS[key] = rfr.fit_head(exp.X(g)[tr], exp.target(g, SPEC)[tr], SPEC, g, 0, seed * 100 + f)
            heads[g] = rfr.HEADS[key]
        tr = folds["alpaca"] != f
        spec = dict(SPEC, lam_alpaca=scale)
        if kind in ("zca", "zcab"):
            emb = lambda g: (exp.gsrc[g].E - mu) @ W
        elif kind == "plain":  # the shipped inputs, through this path (controls for the penalty scale)
            emb = lambda g: exp.gsrc[g].E
        elif kind == "none":  # no embedding: the 12 text features only
            emb = lambda g: np.zeros((len(exp.gsrc[g].E), 0))
        elif kind in ("pls", "plsz"):
            E = exp.gsrc["alpaca"].E[tr].astype(np.float64)
            m = E.mean(0)
            sd = E.std(0) if kind == "plsz" else np.ones(E.shape[1])
            sd[sd < 1e-4] = 1.0
            R = pls1((E - m) / sd, yc[tr] - yc[tr].mean(), int(arg))
            emb = lambda g: ((exp.gsrc[g].E - m) / sd) @ R
        if kind != "base":
            Xc = {g: np.hstack([emb(g), exp.gsrc[g].F]) for g in rfr.GROUPS}
            rfr.NE = Xc["alpaca"].shape[1] - exp.gsrc["alpaca"].F.shape[1]
            fh = rfr.fit_head(Xc["alpaca"][tr], yc[tr], spec, "alpaca", 0, seed * 100 + f)
            rfr.NE = 384
            heads["alpaca"] = (lambda fh, Xc: lambda g, te: fh(Xc[g][te]))(fh, Xc)
        for g in rfr.GROUPS:
            te = folds[g] == f
            Xt = exp.X(g)[te]
            H = np.stack([heads[h](g, te) if (h == "alpaca" and kind != "base") else heads[h](Xt)
                          for h in rfr.GROUPS], 1)
            scores[g][te] = (P[g] * H).sum(1)
    return scores


def paired(path, base):
    rows = [json.loads(l) for l in open(path)]
    b = next(r for r in rows if r["view"] == base)
    for r in rows:
        if r is b:
            continue
        out = []
        for n, v in r["res"].items():
            d = np.array(v) - np.array(b["res"][n])
            out.append(f"{n.replace('alpaca-', 'a-')} {np.mean(v):.3f} {d.mean():+.4f} ({(d > 0).sum()}/{len(d)} up)")
        print(f"{r['view']:>14} vs {base}: " + "; ".join(out))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0-2")
    ap.add_argument("--v", action="append", default=[])
    ap.add_argument("--cache")
    ap.add_argument("--json")
    ap.add_argument("--paired", nargs=2, metavar=("BASE", "JSONL"))
    a = ap.parse_args()
    if a.paired:
        return paired(a.paired[1], a.paired[0])
    exp = rfr.Exp(rfr.load(a.cache))
    seeds = rfr.parse_seeds(a.seeds)
    for v in a.v or ["base"]:
        res = {}
        for seed in seeds:
            sc = run(exp, v, seed)
            for n, g in rfr.TEST.items():
                d = exp.sets[n]
                res.setdefault(n, []).append(rfr.metrics(sc[g], d.c, d.p)["apgr"])
        print(f"{v:>14}: {rfr.fmt(res)}", flush=True)
        if a.json:
            with open(a.json, "a") as fh:
                fh.write(json.dumps({"view": v, "seeds": seeds, "res": res}) + "\n")


if __name__ == "__main__":
    main()
