#!/usr/bin/env python3
"""Quick exploration of extra features (GBT ceiling / penalised cosine) — reuses cache_rule_research."""
import sys, json, numpy as np
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import cache_rule_research as R
from sklearn.model_selection import StratifiedKFold

pairs = R.load_pairs(str(R.ROOT / "eval/data/qqp_pairs_dev.jsonl"))
y = np.array([r["duplicate"] for r in pairs])
E, qidx = R.embed_lookup(str(R.RES / "qqp_emb.npy"), str(R.RES / "qqp_emb_index.json"))
ia = np.array([qidx[r["a"]] for r in pairs]); ib = np.array([qidx[r["b"]] for r in pairs])
X = R.feature_matrix([(r["a"], r["b"]) for r in pairs]); X["cos"] = np.sum(E[ia] * E[ib], 1).astype(float)
folds = list(StratifiedKFold(5, shuffle=True, random_state=0).split(np.zeros(len(y)), y))

def cv(rule):
    rs, fs = [], []
    for tr, te in folds:
        rule.fit(R.subset(X, tr), y[tr]); h = rule.predict(R.subset(X, te))
        rs.append(h[y[te]].mean()); fs.append(h[~y[te]].mean())
    rule.fit(X, y)
    print(f"{rule.name[:110]:110s} rec {np.mean(rs):.4f}±{np.std(rs):.4f} fhr {np.mean(fs):.4f}", rule.describe() if not isinstance(rule, R.GBT) else "", flush=True)

HARD2 = ["num_diff", "neg_mis", "ent_swap", "antonym"]
base = R.FEATS
extra = ["wh_mis", "ca_only", "cb_only", "c_only_max", "c_only_min", "long_diff", "len_min", "len_max"]
for a in sys.argv[1:] or ["gbt", "pen"]:
    if a == "gbt":
        cv(R.GBT(base + extra, name="GBT base+extra"))
        cv(R.GBT(["len_min", "len_max"], name="GBT cos+len"))
        cv(R.GBT(HARD2 + ["len_min", "len_max"], name="GBT cos+hard+len"))
        cv(R.GBT(HARD2 + ["len_min", "len_max", "c_only_max", "c_only_min", "long_diff", "wh_mis"], name="GBT cos+hard+len+conly+wh"))
    if a == "emb":
        X["ab"] = E[ia] * E[ib]; X["absdiff"] = np.abs(E[ia] - E[ib])
        cv(R.LogReg([], emb=True, C=0.1, name="LR [cos,a*b,|a-b|]"))
        cv(R.LogReg(HARD2, emb=True, C=0.1, veto=HARD2, name="LR [cos,a*b,|a-b|]+veto"))
        cv(R.LogReg(["num_one", "ent_one", "wh_mis", "len_min", "len_max"], emb=True, C=0.1, veto=HARD2, name="LR [cos,a*b,|a-b|,num_one,ent_one,wh,len]+veto"))
    if a == "gbt2":
        cv(R.GBT(HARD2, name="GBT cos+hard"))
        cv(R.GBT(base + extra, name="GBT base+extra"))
    if a == "lin":
        cv(R.LinearScore(["num_one", "ent_one", "wh_mis", "len_min", "c_only_max", "c_only_min", "long_diff", "cjac"], veto=HARD2))
        cv(R.LinearScore(["num_one", "ent_one", "wh_mis", "len_min", "len_max"], veto=HARD2))
    if a == "pen":
        cv(R.Guard(HARD2 + ["wh_mis"]))
        cv(R.Penalised(["wh_mis", "long_diff", "c_only_max", "c_only_min"], veto=HARD2))
        cv(R.Penalised(["num_one", "ent_one", "wh_mis", "c_swap"], veto=HARD2))
