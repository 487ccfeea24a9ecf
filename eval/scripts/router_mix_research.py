#!/usr/bin/env python3
"""Router learner research on the mixed routing data (issue 11), reproducible.

Reads the routing files in eval/data/routing/ (MMLU, GSM8K, arena, and the four AlpacaEval
pair files) and the MiniLM vectors the Rust encoder stored in eval/.cache/embeddings/ (fill it
first with `switchyard eval routing --data <every file>`), then compares learners by 5-fold CV
(folds by a hash of the prompt text, so one instruction never sits on both sides, whatever the
pair file it comes from), over several seeds of the fold hash.

Usage:  python eval/scripts/router_mix_research.py [--seeds 3] [--only SPEC,...]
Needs numpy only.
"""
import argparse, hashlib, json, math, sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from router_research import metrics, text_features  # noqa: E402  (RouteLLM metric code, pinned by tests)

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "eval/data/routing"
PREMIUM = "gpt-4-1106-preview"
MIXTRAL = "mistralai/Mixtral-8x7B-Instruct-v0.1"
ALPACA = {
    "mixtral": "alpaca_dev_mixtral-8x7b-instruct-v0_1.jsonl",
    "mistral7b": "alpaca_dev_mistral-7b-instruct-v0_2.jsonl",
    "claude-instant": "alpaca_dev_claude-instant-1_2.jsonl",
    "gpt35": "alpaca_dev_gpt-3_5-turbo-1106.jsonl",
}


def load_store():
    """The Rust encoder's store: `<model>.v2.bin` = magic line + u32 dim, then records of
    sha256(text) (32 bytes), dim little-endian f32 and an 8-byte check (see src/eval/embeddings.rs)."""
    d = ROOT / "eval/.cache/embeddings"
    path = max(d.glob("*.v2.bin"), key=lambda p: p.stat().st_size)
    raw = path.read_bytes()
    magic = b"SWITCHYARD-EMBEDDINGS v2\n"
    assert raw.startswith(magic), path
    dim = int.from_bytes(raw[len(magic):len(magic) + 4], "little")
    body = raw[len(magic) + 4:]
    rec = 32 + dim * 4 + 8
    n = len(body) // rec
    a = np.frombuffer(body[: n * rec], dtype=np.uint8).reshape(n, rec)
    keys = [bytes(k) for k in a[:, :32]]
    vecs = a[:, 32:32 + dim * 4].copy().view("<f4").reshape(n, dim)
    return dict(zip(keys, vecs))


def sha(t):
    return hashlib.sha256(t.encode()).digest()


def read(name, cheap=MIXTRAL):
    rows = []
    for line in open(DATA / name, encoding="utf-8"):
        r = json.loads(line)
        if r.get("contaminated"):
            continue
        s = r["scores"]
        if cheap not in s:
            others = [m for m in s if m != PREMIUM]
            if len(others) != 1:
                continue
            c = others[0]
        else:
            c = cheap
        rows.append(dict(id=r["id"], prompt=r["prompt"], category=r.get("category", ""),
                         cheap=s[c], premium=s[PREMIUM], difficulty=r.get("difficulty")))
    if any(max(r["cheap"], r["premium"]) > 1 for r in rows):
        for r in rows:
            r["cheap"] = (r["cheap"] - 1) / 9
            r["premium"] = (r["premium"] - 1) / 9
    return rows


def fold(text, k, seed):
    h = hashlib.sha256(f"{seed}:{text}".encode()).digest()
    return int.from_bytes(h[:8], "little") % k


class DS:
    def __init__(self, name, rows, store):
        self.name = name
        rows = [r for r in rows if sha(r["prompt"]) in store]
        self.rows = rows
        self.E = np.stack([store[sha(r["prompt"])] for r in rows]).astype(np.float64)
        self.F = np.array([text_features(r["prompt"]) for r in rows], dtype=np.float64)
        self.c = np.array([r["cheap"] for r in rows])
        self.p = np.array([r["premium"] for r in rows])
        self.gain = self.p - self.c
        d = [r["difficulty"] for r in rows]
        self.diff = np.array([x if x is not None else np.nan for x in d], dtype=np.float64)
        self.cats = [r["category"] for r in rows]
        self.texts = [r["prompt"] for r in rows]
        self.length = np.array([len(t) for t in self.texts], dtype=np.float64)


def load_sets(store):
    """Every routing dev file as a DS: mmlu, gsm8k, arena and one alpaca-<pair> per pair file."""
    sets = {
        "mmlu": DS("mmlu", read("mmlu_dev.jsonl"), store),
        "gsm8k": DS("gsm8k", read("gsm8k_dev.jsonl"), store),
        "arena": DS("arena", read("arena_bench_v1.jsonl"), store),
    }
    for k, f in ALPACA.items():
        sets["alpaca-" + k] = DS("alpaca-" + k, read(f), store)
    return sets


def ridge(X, y, w, lam):
    mu = (X * w[:, None]).sum(0) / w.sum()
    Xc = X - mu
    sd = np.sqrt((Xc**2 * w[:, None]).sum(0) / w.sum()) + 1e-9
    Z = Xc / sd
    ym = (y * w).sum() / w.sum()
    A = (Z * w[:, None]).T @ Z + lam * np.eye(Z.shape[1])
    b = (Z * w[:, None]).T @ (y - ym)
    beta = np.linalg.solve(A, b)
    return lambda Xn: ((Xn - mu) / sd) @ beta + ym


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--baselines", action="store_true")
    ap.add_argument("--spec", action="append", default=[])
    args = ap.parse_args()
    sets = load_sets(load_store())
    for n, d in sets.items():
        print(n, len(d.rows), "cheap", round(d.c.mean(), 3), "premium", round(d.p.mean(), 3), file=sys.stderr)
    if args.baselines:
        for n, b in baselines(sets, args.seeds).items():
            print(n, b)
    for spec in (json.loads(s) for s in args.spec):
        r = report(sets, spec, args.seeds, args.k)
        print(json.dumps(spec), " ".join(f"{n}={m:.3f}±{s:.3f}" for n, (m, s) in r.items()), flush=True)
    return sets


# ----------------------------------------------------------------------------------------------
# Experiments
# ----------------------------------------------------------------------------------------------
TRAIN_SOURCES = ("mmlu", "gsm8k", "arena", "alpaca")


def alpaca_target(sets, how):
    m = sets["alpaca-mixtral"]
    if how == "mixtral":
        return m.gain
    if how == "pairs":
        return np.mean([sets["alpaca-" + k].gain for k in ALPACA], axis=0)
    if how == "difficulty":
        return 1 - 2 * m.diff
    if how == "mix":
        return 0.5 * (1 - 2 * m.diff) + 0.5 * np.mean([sets["alpaca-" + k].gain for k in ALPACA], axis=0)
    raise ValueError(how)


def X_of(d, feats=True):
    return np.hstack([d.E, d.F]) if feats else d.E


def cv(sets, spec, k=5, seed=0):
    """spec: dict(learner=..., lam=..., weights='balanced'|'uniform', alpaca=..., feats=bool)
    returns {set name: CV scores}."""
    names = ["mmlu", "gsm8k", "arena", "alpaca-mixtral"]
    folds = {n: np.array([fold(t, k, seed) for t in sets[n].texts]) for n in names}
    out = {n: np.zeros(len(sets[n].rows)) for n in sets}
    at = alpaca_target(sets, spec.get("alpaca", "mixtral"))
    srcw = spec.get("srcw", {})
    for f in range(k):
        Xs, ys, ws, src = [], [], [], []
        for n in names:
            tr = folds[n] != f
            if n == "alpaca-mixtral":
                y = at[tr]
            else:
                y = sets[n].gain[tr]
            X = X_of(sets[n], spec.get("feats", True))[tr]
            Xs.append(X); ys.append(y); src += [n] * tr.sum()
            if spec.get("weights", "balanced") == "balanced":
                w = np.full(tr.sum(), 1.0 / tr.sum()) * srcw.get(n, 1.0)
            else:
                w = np.ones(tr.sum())
            ws.append(w)
        X, y, w = np.vstack(Xs), np.concatenate(ys), np.concatenate(ws)
        w = w / w.mean()
        model = LEARNERS[spec["learner"]](X, y, w, np.array(src), spec)
        for n in sets:
            base = n if n in folds else "alpaca-mixtral"
            te = folds[base] == f
            out[n][te] = model(X_of(sets[n], spec.get("feats", True))[te])
    return out


def l_ridge(X, y, w, src, spec):
    return ridge(X, y, w, spec.get("lam", 1.0) * len(y))


def l_knn(X, y, w, src, spec):
    E = X[:, :384] / np.linalg.norm(X[:, :384], axis=1, keepdims=True)
    kk = spec.get("kn", 50)
    def f(Xn):
        En = Xn[:, :384] / np.linalg.norm(Xn[:, :384], axis=1, keepdims=True)
        S = En @ E.T
        idx = np.argpartition(-S, kk, axis=1)[:, :kk]
        s = np.take_along_axis(S, idx, 1)
        wt = np.exp(s / spec.get("temp", 0.05)) * w[idx]
        return (wt * y[idx]).sum(1) / wt.sum(1)
    return f


def l_heads(X, y, w, src, spec):
    """One ridge head per source, mixed by a softmax gate (nearest training prompts' sources)."""
    groups = spec.get("groups", {})
    src = np.array([groups.get(s, s) for s in src])
    names = sorted(set(src))
    heads = {}
    for n in names:
        m = src == n
        lam = spec.get("lam_" + n.split("-")[0], spec.get("lam", 1.0))
        if spec.get("head_feats") == "F" and n in spec.get("f_only", []):
            mu = X[m].mean(0)
            heads[n] = (lambda h: lambda Xn: h(Xn[:, 384:]))(ridge(X[m][:, 384:], y[m], np.ones(m.sum()), lam * m.sum()))
        else:
            heads[n] = ridge(X[m], y[m], np.ones(m.sum()), lam * m.sum())
        if spec.get("z", False):
            tr = heads[n](X[m])
            heads[n] = (lambda h, a, b: lambda Xn: (h(Xn) - a) / b)(heads[n], tr.mean(), tr.std() + 1e-9)
    E = X[:, :384] / np.linalg.norm(X[:, :384], axis=1, keepdims=True)
    sidx = np.array([names.index(s) for s in src])
    kk = spec.get("gate_k", 20)
    if spec.get("gate") == "logreg":
        from sklearn.linear_model import LogisticRegression
        mu, sd = X.mean(0), X.std(0) + 1e-9
        g = LogisticRegression(C=spec.get("gate_C", 1.0), class_weight="balanced", max_iter=500).fit((X - mu) / sd, sidx)
    if spec.get("gate") == "ridge":
        # one-vs-rest ridge on one-hot source labels, classes balanced: closed form, like the heads
        cw = np.array([1.0 / (sidx == j).sum() for j in sidx]); cw /= cw.mean()
        gates = [ridge(X, (sidx == j).astype(float), cw, spec.get("gate_lam", 1.0) * len(sidx)) for j in range(len(names))]
    def f(Xn):
        if spec.get("gate") == "ridge":
            O = np.stack([g(Xn) for g in gates], 1) * spec.get("gate_t", 10.0)
            O -= O.max(1, keepdims=True)
            P = np.exp(O); P /= P.sum(1, keepdims=True)
        elif spec.get("gate") == "logreg":
            P = g.predict_proba((Xn - mu) / sd)
        else:
            En = Xn[:, :384] / np.linalg.norm(Xn[:, :384], axis=1, keepdims=True)
            S = En @ E.T
            idx = np.argpartition(-S, kk, axis=1)[:, :kk]
            P = np.zeros((len(Xn), len(names)))
            for j in range(len(names)):
                P[:, j] = (sidx[idx] == j).mean(1)
        H = np.stack([heads[n](Xn) for n in names], 1)
        if spec.get("hard", False):
            P = (P == P.max(1, keepdims=True)).astype(float)
            P /= P.sum(1, keepdims=True)
        # put every head on one scale: z-score within its own training source
        return (P * H).sum(1)
    return f


LEARNERS = {"ridge": l_ridge, "knn": l_knn, "heads": l_heads}


def report(sets, spec, seeds, k=5):
    res = {}
    for seed in range(seeds):
        sc = cv(sets, spec, k, seed)
        for n in sets:
            d = sets[n]
            res.setdefault(n, []).append(metrics(sc[n], d.c, d.p)["apgr"])
        # overall: mmlu + gsm8k + alpaca-mixtral pooled
        pool = ["mmlu", "gsm8k", "alpaca-mixtral"]
        s = np.concatenate([sc[n] for n in pool])
        c = np.concatenate([sets[n].c for n in pool]); p = np.concatenate([sets[n].p for n in pool])
        res.setdefault("overall", []).append(metrics(s, c, p)["apgr"])
    return {n: (float(np.mean(v)), float(np.std(v))) for n, v in res.items()}


def baselines(sets, seeds):
    rng = np.random.default_rng(0)
    out = {}
    for n, d in sets.items():
        out[n] = {"length": metrics(d.length, d.c, d.p)["apgr"],
                  "neg-length": metrics(-d.length, d.c, d.p)["apgr"],
                  "difficulty(oracle-ish)": metrics(-np.nan_to_num(d.diff), d.c, d.p)["apgr"] if not np.isnan(d.diff).all() else None}
    return out


if __name__ == "__main__":
    main()
