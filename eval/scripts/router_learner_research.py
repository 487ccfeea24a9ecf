#!/usr/bin/env python3
"""Learners for the chat (AlpacaEval) and arena heads of the gated-heads router (issue 11).

Everything else is today's Rust recipe (src/classify/train.rs): one ridge head per source group
(penalty lambda * max(1, 8000 / n_distinct), lambda = 1, standardised [embedding, 12 text features]),
each head z-scored on its own training prompts, a group-balanced one-vs-rest ridge gate (penalty 0.1,
normalised weights) with softmax temperature 30. Chat target = 0.5 * mean pair gain + 0.5 * (1 - 2 difficulty).
Here only the chat head and/or the arena head is swapped for another learner; the gate, the MMLU and
GSM8K heads stay as they are. The gate and the fixed heads are cached per (seed, fold).

Usage:  python eval/scripts/router_learner_research.py --final --seeds 0,1,2      (and --seeds 3,4,5,6,7)
        python eval/scripts/router_learner_research.py --seeds 0,1,2 --today --chat SPEC --arena SPEC \
               --combo '[CHAT SPEC, ARENA SPEC(, GSM8K SPEC)]' [--fixed]
  SPEC is JSON, e.g. {"l":"pca","r":64,"lam":1,"rows":8000}, {"l":"knn","k":40,"temp":1.0},
  {"l":"krr","s2":0.5,"lam":10,"feats":true}, {"l":"mlp","h":64,"wd":0.03,"aux":true},
  {"l":"rank","lam":1,"pca_in":64}, {"l":"rrr","r":2}, {"l":"blend_cv","a_spec":...,"b_spec":...};
  arena {"l":"same"} = no arena head of its own (arena-like prompts get the chat head).
  --fixed: each source scored by its own head alone (gate fixed to that head).
Needs numpy only.
"""
import argparse, json, sys, time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from router_mix_research import ALPACA, DS, fold, load_sets, load_store, read  # noqa: E402
from router_research import metrics  # noqa: E402

K = 5
PAIRS = ["alpaca-" + k for k in ALPACA]
SRC = ["alpaca", "arena", "gsm8k", "mmlu"]  # sorted group names, as in Rust


def load():
    sets = load_sets(load_store())
    m = sets["alpaca-mixtral"]
    for n in PAIRS:
        assert sets[n].texts == m.texts, n
    gain = np.mean([sets[n].gain for n in PAIRS], axis=0)
    targets = {"mmlu": sets["mmlu"].gain, "gsm8k": sets["gsm8k"].gain, "arena": sets["arena"].gain,
               "alpaca": 0.5 * gain + 0.5 * (1 - 2 * m.diff)}
    X = {"mmlu": np.hstack([sets["mmlu"].E, sets["mmlu"].F]), "gsm8k": np.hstack([sets["gsm8k"].E, sets["gsm8k"].F]),
         "arena": np.hstack([sets["arena"].E, sets["arena"].F]), "alpaca": np.hstack([m.E, m.F])}
    texts = {"mmlu": sets["mmlu"].texts, "gsm8k": sets["gsm8k"].texts, "arena": sets["arena"].texts, "alpaca": m.texts}
    aux = {"diff": m.diff, **{n: sets[n].gain for n in PAIRS}}
    return sets, X, targets, texts, aux


# ---------------------------------------------------------------------------------------------
# Rust-equivalent ridge (normalised weights, penalty lam added to the normalised Gram matrix)
# ---------------------------------------------------------------------------------------------
def ridge_fit(X, Y, w, lam):
    w = w / w.sum()
    mu = w @ X
    sd = np.sqrt(w @ (X - mu) ** 2)
    sd = np.where(sd < 1e-4, 1.0, sd)
    Z = (X - mu) / sd
    Y2 = Y if Y.ndim == 2 else Y[:, None]
    yb = w @ Y2
    A = (Z * w[:, None]).T @ Z + np.diag(np.broadcast_to(lam, (X.shape[1],)).astype(float))
    B = (Z * w[:, None]).T @ (Y2 - yb)
    beta = np.linalg.solve(A, B) / sd[:, None]
    bias = yb - mu @ beta
    if Y.ndim == 1:
        return beta[:, 0], bias[0]
    return beta, bias


def ridge_head(X, y, lam_scale=1.0, rows=8000.0):
    lam = lam_scale * max(1.0, rows / len(y))
    b, c = ridge_fit(X, y, np.ones(len(y)), lam)
    return lambda Xn: Xn @ b + c


def zscore(h, Xtr, train_pred=None):
    t = h(Xtr) if train_pred is None else train_pred
    m, s = t.mean(), t.std()
    s = s if s > 1e-9 else 1.0
    return lambda Xn: (h(Xn) - m) / s


# ---------------------------------------------------------------------------------------------
# Candidate learners for a small head: f(X, y, spec, ctx) -> (predict fn, train predictions or None)
# ---------------------------------------------------------------------------------------------
def unit(E):
    return E / np.linalg.norm(E, axis=1, keepdims=True)


def h_ridge(X, y, spec, ctx):
    return ridge_head(X, y, spec.get("lam", 1.0), spec.get("rows", 8000.0)), None


def knn_predict(S, y, k, temp, self_mask=None):
    if self_mask is not None:
        S = S.copy(); S[self_mask] = -9
    k = min(k, S.shape[1] - 1)
    idx = np.argpartition(-S, k - 1, axis=1)[:, :k]
    s = np.take_along_axis(S, idx, 1)
    wt = np.exp((s - s.max(1, keepdims=True)) / temp)
    return (wt * y[idx]).sum(1) / wt.sum(1)


def h_ridge2(X, y, spec, ctx):
    """Ridge with its own penalty for the 12 text features: lamE * max(1, 8000/n) on the 384 embedding
    dims, lamF * max(1, 8000/n) on the text features (standardised inputs)."""
    g = max(1.0, 8000.0 / len(y))
    lam = np.r_[np.full(384, spec.get("lamE", 1.0) * g), np.full(X.shape[1] - 384, spec.get("lamF", 1.0) * g)]
    b, c = ridge_fit(X, y, np.ones(len(y)), lam)
    return (lambda Xn: Xn @ b + c), None


def h_knn(X, y, spec, ctx):
    E = unit(X[:, :384]); k, t = spec.get("k", 50), spec.get("temp", 0.05)
    S = E @ E.T
    loo = knn_predict(S, y, k, t, np.eye(len(y), dtype=bool))
    return (lambda Xn: knn_predict(unit(Xn[:, :384]) @ E.T, y, k, t)), loo


def inner_preds(X, y, spec, ctx, folds=5, seed=0):
    """Inner-CV predictions of a head spec on its own training rows (random 5-fold split)."""
    idx = np.random.default_rng(seed).permutation(len(y)) % folds
    out = np.zeros(len(y))
    for f in range(folds):
        h, _ = LEARN[spec["l"]](X[idx != f], y[idx != f], spec, ctx)
        out[idx == f] = h(X[idx == f])
    return out


def h_knn_cv(X, y, spec, ctx):
    """kNN with k and temperature chosen by inner 5-fold CV (Pearson correlation with the target)."""
    best = None
    for k in spec.get("ks", [10, 25, 50, 100, 200]):
        for t in spec.get("temps", [0.02, 0.05, 0.1, 1.0]):
            c = {"l": "knn", "k": k, "temp": t}
            r = np.corrcoef(inner_preds(X, y, c, ctx), y)[0, 1]
            if best is None or r > best[0]:
                best = (r, c)
    ctx.setdefault("log", []).append(best[1])
    return h_knn(X, y, best[1], ctx)


def h_blend_cv(X, y, spec, ctx):
    """a * z(head A) + (1 - a) * z(head B), a in {0, .25, .5, .75, 1} chosen by inner CV correlation."""
    pa = inner_preds(X, y, spec["a_spec"], ctx); pb = inner_preds(X, y, spec["b_spec"], ctx)
    za, zb = (pa - pa.mean()) / pa.std(), (pb - pb.mean()) / pb.std()
    a = max([0, 0.25, 0.5, 0.75, 1.0], key=lambda a: np.corrcoef(a * za + (1 - a) * zb, y)[0, 1])
    return h_blend(X, y, dict(spec, l="blend", a=a), ctx)


def h_krr(X, y, spec, ctx):
    """Kernel ridge, kernel exp((cos - 1) / s2) (RBF on the unit sphere, s2 = 2 sigma^2) or 'cos'
    (linear in the unit embedding, + optional power). Optional linear ridge on the 12 text features first
    (spec feats=True): KRR then fits the residual."""
    E = unit(X[:, :384]); s2 = spec.get("s2", 0.5); lam = spec.get("lam", 1.0)
    kern = (lambda S: np.exp((S - 1) / s2)) if spec.get("kernel", "rbf") == "rbf" else (lambda S: S)
    base = lambda Xn: np.zeros(len(Xn))
    r = y
    if spec.get("feats"):
        b, c = ridge_fit(X[:, 384:], y, np.ones(len(y)), spec.get("flam", 1.0))
        base = lambda Xn: Xn[:, 384:] @ b + c
        r = y - base(X)
    ym = r.mean()
    Kt = kern(E @ E.T)
    alpha = np.linalg.solve(Kt + lam * np.eye(len(y)), r - ym)
    return (lambda Xn: base(Xn) + kern(unit(Xn[:, :384]) @ E.T) @ alpha + ym), None


def h_blend(X, y, spec, ctx):
    """a * z(ridge head) + (1 - a) * z(second head), each z-scored on its own training predictions."""
    h1, p1 = LEARN[spec["a_spec"]["l"]](X, y, spec["a_spec"], ctx)
    h2, p2 = LEARN[spec["b_spec"]["l"]](X, y, spec["b_spec"], ctx)
    z1 = zscore(h1, X, p1); z2 = zscore(h2, X, p2)
    a = spec.get("a", 0.5)
    t1 = z1(X) if p1 is None else (p1 - p1.mean()) / p1.std()
    t2 = z2(X) if p2 is None else (p2 - p2.mean()) / p2.std()
    return (lambda Xn: a * z1(Xn) + (1 - a) * z2(Xn)), a * t1 + (1 - a) * t2


def h_pca(X, y, spec, ctx):
    """PCA of the embedding (fitted on every source's training prompts, ctx['pca']), top r dims
    (optionally whitened), plus the 12 text features, then ridge (penalty lam on standardised inputs)."""
    mu, V = ctx["pca_" + spec.get("basis", "all")]; r = spec.get("r", 64)
    P = V[:, :r]
    f = lambda Xn: np.hstack([(Xn[:, :384] - mu) @ P, Xn[:, 384:]])
    lam = spec.get("lam", 1.0) * (max(1.0, spec["rows"] / len(y)) if "rows" in spec else 1.0)
    b, c = ridge_fit(f(X), y, np.ones(len(y)), lam)
    return (lambda Xn: f(Xn) @ b + c), None


def h_rrr(X, y, spec, ctx):
    """Reduced-rank multi-task ridge: targets [1-2 diff, 4 pair gains] (ctx['Y'], standardised), ridge,
    then fitted values projected onto their top-r right singular vectors; the chat score = the same
    0.5/0.5 mix of the projected predictions."""
    Y = ctx["Y"]; lam = spec.get("lam", 1.0) * max(1.0, 8000.0 / len(y)); r = spec.get("r", 1)
    ym, ys = Y.mean(0), Y.std(0)
    Yz = (Y - ym) / ys
    B, c = ridge_fit(X, Yz, np.ones(len(y)), lam)
    F = X @ B + c
    _, _, Vt = np.linalg.svd(F - F.mean(0), full_matrices=False)
    Pr = Vt[:r].T @ Vt[:r]
    mixw = np.array([0.5] + [0.125] * 4) * ys  # back to target units, then the 0.5/0.5 mix
    return (lambda Xn: ((Xn @ B + c) @ Pr) @ mixw), None


def h_mlp(X, y, spec, ctx):
    """One hidden layer (tanh), standardised inputs, Adam, L2 weight decay, early stopping on a 20%
    inner split (the epoch count chosen there is then used to refit on all rows), restarts averaged.
    aux=True: a second output for 1 - 2 difficulty (multi-task)."""
    rng = np.random.default_rng(spec.get("rs", 0))
    mu, sd = X.mean(0), X.std(0); sd = np.where(sd < 1e-4, 1.0, sd)
    Z = (X - mu) / sd
    ym, ysd = y.mean(), y.std()
    T = ((y - ym) / ysd)[:, None]
    if spec.get("aux"):
        d = ctx["Y"][:, 0]; T = np.hstack([T, ((d - d.mean()) / d.std())[:, None]])
    H, wd, lr, E_max = spec.get("h", 64), spec.get("wd", 1e-2), spec.get("lr", 1e-3), spec.get("epochs", 300)
    nets = []

    def train(Zt, Tt, epochs, seed, Zv=None, Tv=None):
        g = np.random.default_rng(seed)
        W1 = g.normal(0, 1 / np.sqrt(Zt.shape[1]), (Zt.shape[1], H)); b1 = np.zeros(H)
        W2 = g.normal(0, 1 / np.sqrt(H), (H, Tt.shape[1])); b2 = np.zeros(Tt.shape[1])
        ps = [W1, b1, W2, b2]; m = [np.zeros_like(p) for p in ps]; v = [np.zeros_like(p) for p in ps]
        best, best_ep, hist = 1e9, 0, []
        for ep in range(1, epochs + 1):
            A = np.tanh(Zt @ W1 + b1); O = A @ W2 + b2
            G = 2 * (O - Tt) / len(Zt)
            if Tt.shape[1] > 1:
                G[:, 1:] *= spec.get("aux_w", 0.5)
            gW2 = A.T @ G + wd * W2; gb2 = G.sum(0)
            GA = (G @ W2.T) * (1 - A ** 2)
            gW1 = Zt.T @ GA + wd * W1; gb1 = GA.sum(0)
            for i, gr in enumerate([gW1, gb1, gW2, gb2]):
                m[i] = 0.9 * m[i] + 0.1 * gr; v[i] = 0.999 * v[i] + 0.001 * gr ** 2
                ps[i] -= lr * (m[i] / (1 - 0.9 ** ep)) / (np.sqrt(v[i] / (1 - 0.999 ** ep)) + 1e-8)
            if Zv is not None and ep % 5 == 0:
                pv = np.tanh(Zv @ W1 + b1) @ W2[:, 0] + b2[0]
                l = np.mean((pv - Tv[:, 0]) ** 2)
                if l < best:
                    best, best_ep = l, ep
        return ps, best_ep

    for rs in range(spec.get("restarts", 5)):
        perm = rng.permutation(len(Z)); nv = len(Z) // 5
        va, tr = perm[:nv], perm[nv:]
        _, ep = train(Z[tr], T[tr], E_max, 1000 * rs + 1, Z[va], T[va])
        ps, _ = train(Z, T, max(ep, 5), 1000 * rs + 2)
        nets.append([p.copy() for p in ps])

    def f(Xn):
        Zn = (Xn - mu) / sd
        return np.mean([np.tanh(Zn @ W1 + b1) @ W2[:, 0] + b2[0] for W1, b1, W2, b2 in nets], axis=0)
    return f, None


def pca_wrap(learner):
    """spec pca_in=r: the learner sees [top-r PCA scores of the embedding (ctx basis 'all'), 12 text features]."""
    def g(X, y, spec, ctx):
        r = spec.get("pca_in")
        if not r:
            return learner(X, y, spec, ctx)
        mu, V = ctx["pca_all"]; P = V[:, :r]
        f = lambda Xn: np.hstack([(Xn[:, :384] - mu) @ P, Xn[:, 384:]])
        h, p = learner(f(X), y, spec, ctx)
        return (lambda Xn: h(f(Xn))), p
    return g


def h_rank(X, y, spec, ctx):
    """Linear model on standardised inputs, pairwise logistic loss on all training pairs with
    |y_i - y_j| > margin (pair weight |y_i - y_j| if spec wpair), L2 penalty lam, full-batch Adam."""
    mu, sd = X.mean(0), X.std(0); sd = np.where(sd < 1e-4, 1.0, sd)
    Z = (X - mu) / sd
    i, j = np.where(y[:, None] - y[None, :] > spec.get("margin", 0.05))
    pw = (y[i] - y[j]) if spec.get("wpair") else np.ones(len(i))
    pw = pw / pw.mean()
    D = Z[i] - Z[j]
    w = np.zeros(Z.shape[1]); m = np.zeros_like(w); v = np.zeros_like(w)
    lam, lr = spec.get("lam", 1.0), spec.get("lr", 0.01)
    for ep in range(1, spec.get("epochs", 300) + 1):
        s = D @ w
        g = -(pw * (1 / (1 + np.exp(s)))) @ D / len(D) + lam * w
        m = 0.9 * m + 0.1 * g; v = 0.999 * v + 0.001 * g ** 2
        w -= lr * (m / (1 - 0.9 ** ep)) / (np.sqrt(v / (1 - 0.999 ** ep)) + 1e-8)
    return (lambda Xn: ((Xn - mu) / sd) @ w), None


LEARN = {"ridge": h_ridge, "ridge2": h_ridge2, "knn_cv": h_knn_cv, "blend_cv": h_blend_cv, "knn": h_knn, "krr": h_krr, "blend": h_blend, "pca": h_pca, "rrr": h_rrr,
         "mlp": pca_wrap(h_mlp), "rank": pca_wrap(h_rank)}


# ---------------------------------------------------------------------------------------------
# CV with cached gate + fixed heads
# ---------------------------------------------------------------------------------------------
class CV:
    def __init__(self, sets, X, targets, texts, aux):
        self.sets, self.X, self.t, self.texts, self.aux = sets, X, targets, texts, aux
        self.cache = {}

    def folds(self, seed):
        return {s: np.array([fold(t, K, seed) for t in self.texts[s]]) for s in SRC}

    def base(self, seed, f):
        key = (seed, f)
        if key in self.cache:
            return self.cache[key]
        fo = self.folds(seed)
        tr = {s: fo[s] != f for s in SRC}
        te = {s: fo[s] == f for s in SRC}
        heads = {}
        for s in SRC:
            h = ridge_head(self.X[s][tr[s]], self.t[s][tr[s]])
            heads[s] = zscore(h, self.X[s][tr[s]])
        Xg = np.vstack([self.X[s][tr[s]] for s in SRC])
        gi = np.concatenate([np.full(tr[s].sum(), j) for j, s in enumerate(SRC)])
        cnt = np.bincount(gi)
        Yg = (gi[:, None] == np.arange(len(SRC))[None, :]).astype(float)
        B, c = ridge_fit(Xg, Yg, 1.0 / cnt[gi], 0.1)
        out = {}
        for s in SRC:
            Xt = self.X[s][te[s]]
            O = (Xt @ B + c) * 30.0
            O -= O.max(1, keepdims=True); P = np.exp(O); P /= P.sum(1, keepdims=True)
            H = np.stack([heads[g](Xt) for g in SRC], 1)
            out[s] = (P, H)
        Xall = np.vstack([self.X[s][tr[s]] for s in SRC])
        ctx = {}
        for name, wts in (("all", np.ones(len(gi))), ("balanced", 1.0 / cnt[gi]), ("chat", (gi == 0).astype(float))):
            wts = wts / wts.sum()
            mu = wts @ Xall[:, :384]
            C = ((Xall[:, :384] - mu) * wts[:, None]).T @ (Xall[:, :384] - mu)
            ev, V = np.linalg.eigh(C)
            ctx["pca_" + name] = (mu, V[:, ::-1])
        self.cache[key] = (tr, te, out, ctx)
        return self.cache[key]

    def run(self, seed, chat=None, arena=None, fixed=False, gsm=None):
        """Scores for every row of every set (CV). chat / arena: head specs replacing today's ridge
        head (None = today's). fixed=True: gate fixed to the source's own head (head alone)."""
        sc = {s: np.zeros(len(self.t[s])) for s in SRC}
        for f in range(K):
            tr, te, out, ctx = self.base(seed, f)
            for s in SRC:
                P, H = out[s]
                H = H.copy()
                for j, (g, spec) in enumerate(zip(SRC, [chat, arena, gsm, None])):
                    if spec is None or spec.get("l") == "same":
                        continue
                    hk = (seed, f, g, json.dumps(spec, sort_keys=True))
                    if hk not in self.cache:
                        Xtr, ytr = self.X[g][tr[g]], self.t[g][tr[g]]
                        if g == "alpaca" and spec.get("pool_arena"):
                            # chat head fitted on chat + arena rows (arena gain rescaled to the chat target's sd)
                            ya = self.t["arena"][tr["arena"]]
                            ya = (ya - ya.mean()) / ya.std() * ytr.std() + ytr.mean()
                            Xtr = np.vstack([Xtr, self.X["arena"][tr["arena"]]]); ytr = np.r_[ytr, ya]
                        c2 = dict(ctx)
                        if g == "alpaca":
                            c2["Y"] = np.stack([1 - 2 * self.aux["diff"][tr[g]]] + [self.aux[n][tr[g]] for n in PAIRS], 1)
                        else:
                            c2["Y"] = np.stack([ytr] * 5, 1)
                        h, p = LEARN[spec["l"]](Xtr, ytr, spec, c2)
                        self.cache[hk] = zscore(h, Xtr, p)
                    H[:, j] = self.cache[hk](self.X[s][te[s]])
                if arena is not None and arena.get("l") == "same":
                    H[:, 1] = H[:, 0]  # no arena head of its own: arena-like prompts get the chat head
                if fixed:
                    sc[s][te[s]] = H[:, SRC.index(s)]
                else:
                    sc[s][te[s]] = (P * H).sum(1)
        return sc

    def apgr(self, sc):
        S = self.sets
        r = {n: metrics(sc[n], S[n].c, S[n].p)["apgr"] for n in ("mmlu", "gsm8k", "arena")}
        for n in PAIRS:
            r[n] = metrics(sc["alpaca"], S[n].c, S[n].p)["apgr"]
        return r

    def report(self, seeds, chat=None, arena=None, fixed=False, gsm=None):
        res = {}
        for seed in seeds:
            for n, v in self.apgr(self.run(seed, chat, arena, fixed, gsm)).items():
                res.setdefault(n, []).append(v)
        return {n: (float(np.mean(v)), float(np.std(v))) for n, v in res.items()}


# the recommendation: chat head = ridge on [top-64 PCA scores of the embedding (PCA of every training
# prompt), 12 text features], today's penalty lambda * max(1, 8000 / n); optional arena head = kNN
FINAL_CHAT = {"l": "pca", "r": 64, "lam": 1.0, "rows": 8000.0}
FINAL_ARENA = {"l": "knn", "k": 40, "temp": 1.0}

SHORT = {"mmlu": "mmlu", "gsm8k": "gsm8k", "arena": "arena", "alpaca-mixtral": "mixtral",
         "alpaca-mistral7b": "mis7b", "alpaca-claude-instant": "claude", "alpaca-gpt35": "gpt35"}


def fmt(r):
    return " ".join(f"{SHORT[n]}={m:.3f}±{s:.3f}" for n, (m, s) in r.items())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--chat", action="append", default=[])
    ap.add_argument("--arena", action="append", default=[])
    ap.add_argument("--combo", action="append", default=[], help='JSON [chat spec, arena spec]')
    ap.add_argument("--fixed", action="store_true", help="gate fixed to each source's own head")
    ap.add_argument("--today", action="store_true")
    ap.add_argument("--final", action="store_true", help="today vs the recommended chat head (+ optional arena kNN)")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    cv = CV(*load())
    if args.final:
        args.today = True
        args.chat.append(json.dumps(FINAL_CHAT))
        args.combo.append(json.dumps([FINAL_CHAT, FINAL_ARENA]))
    if args.today:
        print("today", fmt(cv.report(seeds, fixed=args.fixed)), flush=True)
    for c in args.chat:
        t = time.time()
        print("chat", c, fmt(cv.report(seeds, chat=json.loads(c), fixed=args.fixed)), f"{time.time()-t:.0f}s", flush=True)
    for a in args.arena:
        print("arena", a, fmt(cv.report(seeds, arena=json.loads(a), fixed=args.fixed)), flush=True)
    for c in args.combo:
        ch, ar, *gs = json.loads(c)
        print("combo", c, fmt(cv.report(seeds, chat=ch, arena=ar, fixed=args.fixed, gsm=gs[0] if gs else None)), flush=True)
    return cv


if __name__ == "__main__":
    main()
