#!/usr/bin/env python3
"""Combined views, an arena cross-model difficulty target, and one joint open-ended head (issue 11).

Extends `router_pooling_research.py` (same views, same '+', '|', 'head=view' and 'gate=view' syntax,
the shipped recipe = `router_feature_research.py` spec {"feat_noinflate": 1}) with two target knobs,
given after a '#' in a run as JSON:

  "adiff": D, "arena_w": w   the arena head's target := (1-w) * gain + w * (1 - 2*d), d the prompt's
                             cross-model difficulty from arena_bench_v1.jsonl's other 12-13 graded
                             models (Mixtral and gpt-4-1106 left out), like the chat head's target:
                               win    their mean win rate against gpt-4-1106 (ties 1/2)
                               ge     their share rating >= gpt-4-1106
                               score  0.5 - (gpt-4-1106 rating - their mean rating) / 18, so that
                                      1 - 2d is the mean gap on the gain's (x-1)/9 scale
                             APGR is still scored on the Mixtral-vs-gpt-4-1106 gain.
  "joint": 1 | "alpaca"      one head trained on the arena and AlpacaEval training rows together,
                             each source's target z-scored on its training rows, on the alpaca head's
                             view; 1 = it replaces both heads, "alpaca" = the chat head only
                             (the arena head stays its own). The gate is unchanged (four groups).
  "jw": a                    joint head: the arena rows' z-scored target scaled by a before stacking
  'gate=a|b' (view syntax)   the gate's softmax probabilities averaged over one gate per view

Usage (numpy only; nice, one BLAS thread; --cache is rfr's pickle of the loaded sets):
  python eval/scripts/router_combo_research.py --seeds 0-2 --cache /tmp/research15/sets.pkl \
      --run base --run 'alpaca=mean3,gate=mean0' --run 'base#{"adiff":"score","arena_w":0.5}' \
      --json /tmp/research15/sel.jsonl
  python eval/scripts/router_combo_research.py --paired base /tmp/research15/fresh.jsonl

Results (research15; 5-fold CV APGR, Python folds; raw per-draw numbers in /tmp/research15/*.jsonl;
M3 = "mmlu=mean3,arena=mean3,alpaca=mean3", GSM8K's head on base throughout). Draws 0-2, columns
MMLU / GSM8K / arena / chat Mixtral / Mistral-7B / claude-instant / GPT-3.5:
  base                                   0.658 0.648 0.532 0.551 0.539 0.539 0.516
  A  alpaca=mean3,gate=mean0             0.659 0.650 0.517 0.574 0.542 0.540 0.525
     arena=mean3,alpaca=mean3,gate=mean0 0.659 0.650 0.539 0.580 0.545 0.542 0.525
     M3,gate=mean0                       0.670 0.650 0.533 0.580 0.545 0.542 0.525
     M3,gate=mean3 / mean2 / cls         0.670 0.652 0.541-0.555 0.560-0.570 0.536-0.538 0.544-0.545 0.515-0.519
     gate=base+mean0 / mean3+mean0       0.659 0.648 0.523 / 0.515 0.565 / 0.560 (concatenated gates: worse than mean0)
     M3,gate=mean0|cls  (gate probs avg) 0.670 0.651 0.549 0.574 0.543 0.545 0.524
     M3,gate=mean0|mean0|cls (2/3, 1/3)  0.671 0.651 0.541 0.578 0.545 0.545 0.525
     M3,alpaca on base / base|mean3 / mean0, gate=mean0: chat 0.582 / 0.581 / 0.579, arena 0.527-0.533
  B  arena target (1-w)*gain + w*(1-2d), d from the other 12-13 models; on base:
       win  w=.25/.5/.75  arena 0.529/0.519/0.497  chat 0.551/0.552/0.559 (other pairs up to +0.010)
       ge   w=.25/.5/.75  arena 0.527/0.513/0.495  chat 0.550/0.550/0.556
       score w=.25/.5/.75/1 arena 0.530/0.522/0.514/0.510 chat 0.551/0.553/0.556/0.559
     (as a score itself, after judging, d ranks arena at 0.647 (win) / 0.707 (score)); on M3,gate=mean0
     or mean0|cls at w=.25: chat +0.001/0.000, arena -0.004/-0.006. The difficulty helps chat a little
     only at weights that cost arena 0.02-0.035.
  C  joint arena+AlpacaEval head (z-scored targets) for both: arena 0.464-0.494 (the chat rows'
     rule anti-transfers), chat 0.551-0.567; for the chat head only: chat 0.556-0.568, claude-instant
     -0.012..-0.016; with the arena target scaled 0.5: 0.560, arena 0.525. Not kept.
Fresh draws 3-7, paired against base (mean difference, draws up of 5; base 0.659 0.652 0.538 0.564
0.540 0.545 0.523):
  M3,gate=mean0           0.667 0.653 0.543 0.580 0.544 0.541 0.524
                          +0.008 (5) +0.001 (3) +0.005 (4) +0.016 (5) +0.004 (5) -0.004 (1) +0.002 (3)
  M3,gate=mean0|cls       0.667 0.653 0.559 0.574 0.543 0.548 0.527
                          +0.009 (5) +0.000 (3) +0.020 (5) +0.010 (5) +0.003 (5) +0.003 (4) +0.004 (4)
  M3,gate=mean0|mean0|cls 0.667 0.653 0.553 0.579 0.544 0.546 0.527   (picked after the first two)
                          +0.008 (5) +0.001 (4) +0.014 (4) +0.015 (5) +0.004 (5) +0.001 (4) +0.004 (4)
  arena=mean3,alpaca=mean3,gate=mean0: as M3,gate=mean0 but MMLU +0.000, arena 0.549 (+0.010)
  gate=mean0 alone: chat +0.013 (5), arena -0.011 (1), claude-instant -0.006 (0)
  Cross-pair (chat head on the Mixtral labels only), paired against base on those labels:
  M3,gate=mean0 Mixtral +0.017, other pairs +0.004 / -0.009 / -0.001; M3,gate=mean0|cls +0.016,
  +0.003 / -0.005 / -0.001.
Caveats: ~45 configurations chosen on the same 468 instructions; draws 3-7 re-draw the folds, not
the instructions, so they check fold noise, not the choice of gate view. Serving M3 + a mean0|cls
gate needs three more vectors from the encoder (layer-0 mean, layer-3 mean, [CLS]).
"""
import argparse, json, sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import router_feature_research as rfr  # noqa: E402
import router_pooling_research as rpr  # noqa: E402
from router_mix_research import MIXTRAL, PREMIUM  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ARENA = ROOT / "eval/data/routing/arena_bench_v1.jsonl"
BASE_SPEC = {"feat_noinflate": 1}


def arena_difficulty(exp, how):
    if not hasattr(exp, "_adiff15"):
        raw = {}
        for line in open(ARENA, encoding="utf-8"):
            r = json.loads(line)
            raw[r["prompt"]] = r["scores"]
        out = {"win": [], "ge": [], "score": []}
        for t in exp.gsrc["arena"].texts:
            sc = raw[t]; p = sc[PREMIUM]
            o = np.array([x for m, x in sc.items() if m not in (PREMIUM, MIXTRAL) and x is not None], float)
            out["win"].append(np.mean(np.where(o > p, 1.0, np.where(o == p, 0.5, 0.0))))
            out["ge"].append(np.mean(o >= p))
            out["score"].append(0.5 - (p - o.mean()) / 18)
        exp._adiff15 = {k: np.array(v) for k, v in out.items()}
    return exp._adiff15[how]


def target(exp, g, spec):
    if g == "arena" and spec.get("adiff"):
        d = arena_difficulty(exp, spec["adiff"])
        w = spec.get("arena_w", 0.5)
        return (1 - w) * exp.gsrc["arena"].gain + w * (1 - 2 * d)
    return exp.target(g, spec)


def fit(V, g, v, tr, y, spec, seed, f):
    X = V.X(g, v)
    rfr.NE = X.shape[1] - V.exp.gsrc[g].F.shape[1]
    return rfr.fit_head(X[tr], y[tr], spec, g, 0, seed * 100 + f)


def cv(V, spec, seed, hv, gv, k=5):
    exp = V.exp
    folds = {g: np.array([rfr.fold(t, k, seed) for t in exp.gsrc[g].texts]) for g in rfr.GROUPS}
    scores = {g: np.zeros(len(exp.gsrc[g].texts)) for g in rfr.GROUPS}
    joint = spec.get("joint")
    for f in range(k):
        # 'gate=a|b': the gate's probabilities averaged over one gate per view
        Ps = [rpr.gate_probs(V, v, folds, f, spec.get("prior")) for v in gv.split("|")]
        P = {g: np.mean([p[g] for p in Ps], 0) for g in rfr.GROUPS}
        heads = {}
        for h in rfr.GROUPS:
            if joint and (h == "alpaca" or (h == "arena" and joint != "alpaca")):
                continue
            tr = folds[h] != f
            y = target(exp, h, spec)
            heads[h] = [(v, fit(V, h, v, tr, y, spec, seed, f)) for v in hv[h].split("|")]
        if joint:
            hs = []
            for v in hv["alpaca"].split("|"):
                Xs, ys = [], []
                for g, a in (("alpaca", 1.0), ("arena", spec.get("jw", 1.0))):
                    tr = folds[g] != f
                    y = target(exp, g, spec)[tr]
                    Xs.append(V.X(g, v)[tr]); ys.append(a * (y - y.mean()) / y.std())
                X = np.vstack(Xs)
                rfr.NE = X.shape[1] - exp.gsrc["alpaca"].F.shape[1]
                hs.append((v, rfr.fit_head(X, np.concatenate(ys), spec, "alpaca", 0, seed * 100 + f)))
            heads["alpaca"] = hs
            if joint != "alpaca":
                heads["arena"] = hs
        for g in rfr.GROUPS:
            te = folds[g] == f
            H = np.stack([np.mean([fn(V.X(g, v)[te]) for v, fn in heads[h]], 0) for h in rfr.GROUPS], 1)
            scores[g][te] = (P[g] * H).sum(1)
    return scores


def paired(path, base):
    rows = [json.loads(l) for l in open(path)]
    b = next(r for r in rows if r["view"] == base)
    for r in rows:
        if r is b:
            continue
        assert r["seeds"] == b["seeds"]
        out = []
        for n, v in r["res"].items():
            d = np.array(v) - np.array(b["res"][n])
            out.append(f"{n.replace('alpaca-', 'a-')} {np.mean(v):.3f} {d.mean():+.4f} ({(d > 0).sum()}/{len(d)})")
        print(f"{r['view']}\n    vs {base}: " + "; ".join(out))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0-2")
    ap.add_argument("--run", action="append", default=[])
    ap.add_argument("--cache")
    ap.add_argument("--json")
    ap.add_argument("--paired", nargs=2, metavar=("BASE", "JSONL"))
    a = ap.parse_args()
    if a.paired:
        return paired(a.paired[1], a.paired[0])
    exp = rfr.Exp(rfr.load(a.cache))
    V = rpr.Views(exp, rpr.load_layers())
    seeds = rfr.parse_seeds(a.seeds)
    for name in a.run or ["base"]:
        vname, _, js = name.partition("#")
        vname, _, kk = vname.partition("*")
        spec = dict(BASE_SPEC, **(json.loads(js) if js else {}))
        spec["lam"] = spec.get("lam", 1.0) * (float(kk) if kk else 1.0)
        hv, gv = rpr.parse_view(vname)
        res = {}
        for seed in seeds:
            sc = cv(V, spec, seed, hv, gv)
            for n, g in rfr.TEST.items():
                d = exp.sets[n]
                res.setdefault(n, []).append(rfr.metrics(sc[g], d.c, d.p)["apgr"])
        print(f"{name}\n    {rfr.fmt(res)}", flush=True)
        if a.json:
            with open(a.json, "a") as fh:
                fh.write(json.dumps({"view": name, "seeds": seeds, "res": res}) + "\n")


if __name__ == "__main__":
    main()
