#!/usr/bin/env python3
"""Chat head: stacking, learned attention pooling, a denoised target (issue 11, research24).

Three ideas for the chat (AlpacaEval) head of the shipped recipe (MMLU/arena/chat heads on layer 3's
mean, GSM8K's on the last layer, the gate on the word-piece mean; `router_combo_research.py`
'mmlu=mean3,arena=mean3,alpaca=mean3,gate=mean0', reproduced exactly here as `base`):

  1. stacking   "stack": [...]  the MMLU / GSM8K / arena heads' scores (each trained on its own
                source's training rows only, so out-of-sample on every chat row) as extra inputs
                of the chat head's ridge (text-feature penalty), with or without its embedding
                ("stack_emb": 0); "gate" adds the gate's 4 log-probabilities, "gatexh" the gate's
                mixture of the three other heads.
                "meta": heads|prod|both|chatprod  a second-level ridge over [chat head (out-of-fold
                from an inner 5-fold split of the training chat rows), MMLU, GSM8K, arena head]
                scores ('heads'), or over the gate-weighted products P_h*H_h ('prod', which can
                reproduce the gate's own mixture), replacing the chat head; "meta_y": "mixtral"
                fits that read-out on the Mixtral pair's gain.
  2. attention  "attn": 1  the chat head pools layer-L token states ("attn_layer" 3 or 0) with
                softmax(q.h_t) weights, q (384) learned jointly with the ridge read-out by variable
                projection (closed-form ridge for fixed q, L-BFGS on q with the envelope gradient,
                penalty attn_lq*|q|^2 on a loss normalised by var(y), q0 = 0 = the plain mean);
                "attn_arena": 1 adds the arena training rows with their own read-out (shared q).
                MMLU/GSM8K rows (no token states kept) are scored by the chat head on the plain
                mean; they reach it with gate weight ~0 (their APGR is unchanged to 4 decimals).
  3. IRT target "irt": 1  a 1PL item-response model fitted on the training chat rows only: the four
                pairs' outcomes (the cheap model's score, ties 1/2, GPT-3.5's judge probabilities
                as soft labels) ~ sigmoid(theta_pair - b_i), the 54-model difficulty as a binomial
                share with "irt_neff" trials ~ sigmoid(theta_54 - b_i), prior b_i ~ N(0, irt_sb^2),
                MAP; the chat head's target := b_i ('gain': the model's mean gain over the four
                pairs; 'mix': z(b) averaged with the shipped target).
  "chat_only": 1 is a diagnostic (chat rows scored by the chat head alone: no router, it needs the
  source), as is "pair": "mixtral" (cross-pair: the chat head on the Mixtral labels only).

Build (numpy MiniLM; ~6 min on 2 cores; per-token layer-0/3 states for the 468 chat and 293 arena
prompts only, float16, truncated to 256 word pieces like the gateway):
  OUT=/tmp/research24; S=eval/scripts/router_chat_stack_research.py; P=.venv/bin/python
  for k in 0 1; do OMP_NUM_THREADS=1 nice -n 10 $P $S build --shard $k/2 & done; wait
  $P $S merge --n 2
Run (numpy, scipy; writes /tmp/research24/sets.pkl on first use):
  OMP_NUM_THREADS=1 nice -n 10 $P $S run --seeds 0-2 --json $OUT/sel.jsonl --run base \
      --run 'attn0_lq0.1_ar#{"attn":1,"attn_lq":0.1,"attn_layer":0,"attn_arena":1}' ...
  OMP_NUM_THREADS=1 nice -n 10 $P $S run --seeds 3-7 --json $OUT/fresh.jsonl --run base --run ...
  $P $S paired --json $OUT/fresh.jsonl --base base

Results (research24; 5-fold CV APGR, Python folds by prompt, contaminated rows out; raw per-draw
numbers in /tmp/research24/{sel,fresh,xpair}.jsonl). Draws 0-2, columns MMLU / GSM8K / arena /
chat Mixtral / Mistral-7B / claude-instant / GPT-3.5:
  base (shipped)                              0.670 0.650 0.533 0.580 0.545 0.542 0.525
  chat_only (diagnostic)                      0.670 0.650 0.533 0.555 0.546 0.557 0.532
  1 stacking, other heads as chat-head inputs:
    S3  mmlu+gsm8k+arena                      0.670 0.650 0.532 0.577 0.543 0.540 0.524
    S3g + gate log-probs                      0.670 0.650 0.533 0.578 0.545 0.539 0.523
    S3gx + gate mixture of the others         0.670 0.650 0.531 0.577 0.544 0.539 0.523
    one head at a time: arena / mmlu / gsm8k  0.532 arena; chat 0.580/0.578/0.581, 0.544-0.545, 0.541-0.543, 0.524-0.525
    gate mixture of the others only           0.670 0.650 0.532 0.580 0.544 0.542 0.525
    S3 / S3g without the embedding            0.670 0.650 0.529-0.531 0.576-0.577 0.540-0.541 0.532-0.534 0.520
    S3 / S3g chat_only                        chat 0.552 / 0.550 0.547 / 0.546 0.555 / 0.552 0.532 / 0.529 (chat head alone: 0.555 0.546 0.557 0.532)
    S3 on the Mixtral labels only             0.670 0.650 0.523 0.583 0.540 0.520 0.519 (same labels without S3: 0.525 0.585 0.540 0.521 0.520)
  1b meta (second-level) chat head:
    heads / prod / both / chatprod            0.670 0.650 0.524-0.533 0.574-0.580 0.539-0.543 0.532-0.541 0.522-0.524
      (prod's weights on P_h*H_h: chat +0.077, MMLU -0.001, GSM8K +0.011, arena -0.008: the other heads
      get ~0 weight)
    heads, penalty x100                       0.670 0.650 0.524 0.578 0.542 0.534 0.524
    read-out on the Mixtral gain (heads / prod / heads half-half)  chat Mixtral 0.561 / 0.574 / 0.569
  2 attention pooling (q learned, lq = attn_lq):
    layer 3, q = 0 (= base exactly)           0.670 0.650 0.533 0.580 0.545 0.542 0.525
    layer 3, lq 0.001 / 0.01 / 0.03 / 0.05    0.670 0.650 0.533-0.540 0.550-0.569 0.534-0.546 0.528-0.539 0.509-0.520
    layer 3, lq 0.07 / 0.1 / 0.15 / 0.2 / 0.3 0.670 0.650 0.532-0.535 0.576 / 0.582 / 0.579 / 0.579 / 0.579
                                                0.551 / 0.552 / 0.548 / 0.547 / 0.546  0.542 / 0.545 / 0.543 / 0.543 / 0.542
                                                0.521 / 0.524 / 0.525 / 0.525 / 0.525   (|q| 0.8 / 0.49 / 0.24 / 0.15 / 0.09)
    layer 3, lq 0.1 +arena / lq 0.03 +arena   0.670 0.650 0.532 / 0.536 0.579 / 0.570 0.550 / 0.543 0.541 / 0.535 0.522 / 0.518
    layer 0, q = 0 (chat head on mean0)       0.670 0.650 0.533 0.579 0.542 0.536 0.520
    layer 0, lq 0.01 / 0.05 / 0.1 / 0.3       0.670 0.650 0.529-0.536 0.573 / 0.579 / 0.586 / 0.583 0.536 / 0.539 / 0.553 / 0.546
                                                0.532 / 0.527 / 0.537 / 0.539  0.510 / 0.510 / 0.514 / 0.520
    layer 0 +arena, lq 0.07 / 0.1 / 0.15      0.670 0.650 0.531-0.533 0.588 / 0.586 / 0.585 0.556 / 0.555 / 0.553
                                                0.545 / 0.543 / 0.542  0.517 / 0.518 / 0.519
    What q learns (layer 0, all chat rows, mean q.h_t of word pieces seen >= 15 times, centred per
    prompt): up 'description' +1.7, 'recipe' +1.5, 'trying', 'name', 'how', 'tell', 'using', 'why',
    'explain', 'best', 'help' +0.8..1.3; down '.', '!', 'a', ')', 'i', 'be', ',', [SEP], 'an', 'the'
    -0.5..-0.9 (layer 3 alike, with 'step' and 'code' up): a learned task-word weighting.
  3 IRT target:
    n_eff 54 / 10 / 4 / 1 / 0 (b)             0.670 0.650 0.532-0.536 0.569 / 0.578 / 0.579 / 0.583 / 0.582
                                                0.535 / 0.542 / 0.546 / 0.547 / 0.547  0.533 / 0.538 / 0.540 / 0.540 / 0.540
                                                0.516 / 0.522 / 0.524 / 0.525 / 0.525
    n_eff 54, prior sd 3                      0.670 0.650 0.536 0.564 0.531 0.527 0.514
    'gain' n_eff 54 / 10 / 4; 'mix' n_eff 10  0.670 0.650 0.533-0.535 0.575-0.579 0.540-0.545 0.541-0.543 0.522-0.525
    (the more weight on the 54-model difficulty, the worse; at n_eff <= 1 it is the shipped target
    through a logit, +-0.003)
Fresh draws 3-7, paired against base (base 0.667 0.653 0.543 0.580 0.544 0.541 0.524; mean
difference, draws up of 5); the first three picked on draws 0-2 (best mean of the four chat columns,
best chat Mixtral, best IRT); attn0 +arena was picked on draws 0-2 too but run after the first three:
  attn3_lq0.1         0.667 0.653 0.545 0.578 0.550 0.545 0.524
                      +0.000 (0) -0.000 (0) +0.002 (4) -0.002 (1) +0.005 (5) +0.004 (4) -0.000 (2)
  attn0_lq0.1         0.667 0.653 0.547 0.588 0.549 0.535 0.516
                      +0.000 (0) -0.000 (0) +0.004 (4) +0.008 (4) +0.005 (5) -0.005 (1) -0.009 (0)
  attn0_lq0.1 +arena  0.667 0.653 0.546 0.589 0.550 0.542 0.520
                      +0.000 (0) -0.000 (0) +0.003 (4) +0.010 (4) +0.006 (5) +0.001 (3) -0.005 (0)
  irt n_eff 1         0.667 0.653 0.542 0.580 0.546 0.539 0.525
                      +0.000 (0) -0.000 (0) -0.001 (1) +0.001 (3) +0.002 (3) -0.002 (0) +0.001 (5)
  (MMLU and GSM8K "0 up" because they are unchanged to 4 decimals.)
  Cross-pair (chat head on the Mixtral labels only), paired against base on those labels
  (0.580 on Mixtral, other pairs 0.541 / 0.522 / 0.520):
  attn3_lq0.1 Mixtral -0.006 (0), other pairs -0.001 (3) / -0.000 (3) / +0.001 (4)
  attn0_lq0.1 -0.001 (3), -0.004 (1) / +0.002 (3) / -0.004 (1)
  attn0_lq0.1 +arena +0.004 (4), +0.002 (4) / +0.005 (4) / -0.001 (3); arena +0.006 (4)
Verdict. Stacking does nothing: the other heads' scores get ~0 weight when a ridge on the chat target
may use them, as inputs or as a second-level read-out (even on the Mixtral pair's own labels), and
the chat head with them is no better alone (0.552 vs 0.555). The gate's lift on the Mixtral file
(chat head alone 0.555 -> gated 0.580) is not learnable signal in the other heads for this target;
it is pair-specific: the same gating costs claude-instant 0.015 and GPT-3.5 0.007 against the chat
head alone. The IRT target is the shipped one with a logit at best (+-0.002 on fresh draws) and
worse the more it leans on the 54-model difficulty. Learned attention pooling is the only thing that
moved: on the word pieces with the arena rows sharing q, chat Mixtral 0.580 -> 0.589 (+0.010, 4/5
draws up) and Mistral-7B +0.006 (5/5), claude-instant +0.001, but GPT-3.5 -0.005 (0/5 up), arena
+0.003, MMLU and GSM8K unchanged; cross-pair +0.004 / +0.002 / +0.005 / -0.001. It is about a sixth
of the way from 0.576 to 0.60, was chosen among ~20 attention settings on the same 468
instructions (lq 0.05 and 0.1 differ by 0.007-0.01 on chat: q is noisy at 468 rows), needs the
word-piece states and a 384-d query per head at serve time, and costs the GPT-3.5 file on every
fresh draw. Not a clear win; nothing here reaches 0.60 or 0.55.
"""
import argparse, hashlib, json, sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
ROOT = HERE.parents[1]
SETS = ["alpaca", "arena", "gsm8k", "mmlu"]
TOK_SETS = ["alpaca", "arena"]
TOK_LAYERS = [0, 3]


# ------------------------------------------------------------------------------------------------
# build: forward pass (minilm_layers.MiniLM), pooled views for all sets, token states for two
# ------------------------------------------------------------------------------------------------
def build(out, shard):
    from minilm_layers import MiniLM, texts_of
    k, n = map(int, shard.split("/"))
    m = MiniLM()
    (out / "shards").mkdir(parents=True, exist_ok=True)
    for name in SETS:
        texts = texts_of(name)
        rows = list(range(k, len(texts), n))
        means, cls, mx, lens, hs = [], [], [], [], {L: [] for L in TOK_LAYERS}
        for j, i in enumerate(rows):
            ls = m.layers(texts[i])
            means.append(np.stack([l.mean(0) for l in ls]))
            cls.append(ls[-1][0]); mx.append(ls[-1].max(0)); lens.append(len(ls[0]))
            if name in TOK_SETS:
                for L in TOK_LAYERS:
                    hs[L].append(ls[L].astype(np.float16))
            if j % 500 == 0:
                print(f"shard {shard} {name}: {j}/{len(rows)}", file=sys.stderr, flush=True)
        extra = {f"h{L}": np.concatenate(hs[L]) for L in TOK_LAYERS} if name in TOK_SETS else {}
        np.savez(out / "shards" / f"{name}.{k}of{n}.npz", rows=np.array(rows), mean=np.array(means),
                 cls=np.array(cls), max=np.array(mx), lens=np.array(lens), **extra)


def merge(out, n):
    from minilm_layers import texts_of
    (out / "layers").mkdir(parents=True, exist_ok=True)
    (out / "tok").mkdir(parents=True, exist_ok=True)
    for name in SETS:
        texts = texts_of(name)
        parts = [np.load(out / "shards" / f"{name}.{k}of{n}.npz") for k in range(n)]
        rows = np.concatenate([p["rows"] for p in parts])
        order = np.argsort(rows)
        assert (rows[order] == np.arange(len(texts))).all()
        cat = lambda key: np.concatenate([p[key] for p in parts])[order]
        keys = np.frombuffer(b"".join(hashlib.sha256(t.encode()).digest() for t in texts), np.uint8).reshape(-1, 32)
        np.savez(out / "layers" / f"{name}.npz", mean=cat("mean"), cls=cat("cls"), max=cat("max"), keys=keys)
        if name in TOK_SETS:
            seqs = {f"h{L}": [] for L in TOK_LAYERS}
            for p in parts:
                offs = np.concatenate([[0], np.cumsum(p["lens"])])
                for key in seqs:
                    seqs[key] += [p[key][offs[i]:offs[i + 1]] for i in range(len(p["lens"]))]
            lens = cat("lens")
            np.savez(out / "tok" / f"{name}.npz", keys=keys, lens=lens,
                     **{key: np.concatenate([v[i] for i in order]) for key, v in seqs.items()})
        print(f"{name}: {len(texts)} prompts")



# ------------------------------------------------------------------------------------------------
# run: the shipped recipe (router_combo_research.cv with M3, gate=mean0) with a pluggable chat head
# ------------------------------------------------------------------------------------------------
import router_feature_research as rfr  # noqa: E402
import router_pooling_research as rpr  # noqa: E402
from router_mix_research import ALPACA  # noqa: E402

BASE_SPEC = {"feat_noinflate": 1}
HV = {"mmlu": "mean3", "arena": "mean3", "alpaca": "mean3", "gsm8k": "base"}
GV = "mean0"
OTHER = ["mmlu", "gsm8k", "arena"]


def gate_fn(V, gv, folds, f):
    """rpr.gate_probs, but returning a function of a group's row mask (all rows can be scored)."""
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

    def P(g, m):
        Zt = (V.X(g, gv)[m] - mu) / sd
        O = np.stack([Zt @ b + ym for b, ym in B], 1) * rfr.GATE_T
        O -= O.max(1, keepdims=True)
        E = np.exp(O)
        return E / E.sum(1, keepdims=True)
    return P


def fit(X, y, g, spec, ne=384):
    rfr.NE = ne
    return rfr.fit_head(X, y, spec, g, 0, 0)


# ---------------- idea 3: an item-response target ------------------------------------------------
def irt_target(exp, tr, spec):
    """1PL item-response model on the chat training rows only. Outcome of pair j on instruction i:
    the cheap model's score s_ij in [0, 1] (ties 1/2, GPT-3.5's judge probabilities as they are),
    P(cheap wins) = sigmoid(theta_j - b_i). The 54-model difficulty d_i (their mean win rate) enters
    as a binomial share with n_eff trials: P = sigmoid(theta_54 - b_i). Prior b_i ~ N(0, sb^2),
    MAP by Newton/L-BFGS. Returns b_i (higher = premium needed more) for the training rows, or the
    model-implied mean gain over the four pairs (spec irt_out='gain')."""
    from scipy.optimize import minimize
    S = np.stack([exp.sets["alpaca-" + k].c for k in ALPACA], 1)[tr]  # cheap model scores, n x 4
    d = exp.sets["alpaca-mixtral"].diff[tr]
    n = len(d)
    neff = spec.get("irt_neff", 54.0)
    sb = spec.get("irt_sb", 1.5)
    wp = spec.get("irt_wpair", 1.0)

    def obj(x):
        th, t54, b = x[:4], x[4], x[5:]
        Z = th[None, :] - b[:, None]
        Pp = 1 / (1 + np.exp(-Z))
        z5 = t54 - b
        P5 = 1 / (1 + np.exp(-z5))
        ll = wp * (S * np.log(Pp + 1e-12) + (1 - S) * np.log(1 - Pp + 1e-12)).sum() \
            + neff * (d * np.log(P5 + 1e-12) + (1 - d) * np.log(1 - P5 + 1e-12)).sum()
        R = wp * (S - Pp)  # d ll / d Z
        r5 = neff * (d - P5)
        g_th = R.sum(0)
        g_t54 = r5.sum()
        g_b = -R.sum(1) - r5 - b / sb ** 2
        lp = ll - 0.5 * (b ** 2).sum() / sb ** 2 - 0.5 * (th ** 2).sum() / 100 - 0.5 * t54 ** 2 / 100
        return -lp, -np.concatenate([g_th, [g_t54 - t54 / 100], g_b])

    x0 = np.zeros(5 + n)
    r = minimize(obj, x0, jac=True, method="L-BFGS-B", options={"maxiter": 500})
    th, t54, b = r.x[:4], r.x[4], r.x[5:]
    if spec.get("irt_out") == "gain":
        return np.mean(1 - 2 / (1 + np.exp(-(th[None, :] - b[:, None]))), 1)
    if spec.get("irt_out") == "mix":  # the latent averaged with the shipped target's pair term
        y0 = exp.target("alpaca", BASE_SPEC)[tr]
        z = (b - b.mean()) / b.std()
        return 0.5 * z + 0.5 * (y0 - y0.mean()) / y0.std()
    return b


# ---------------- idea 2: learned attention pooling ----------------------------------------------
class Tok:
    def __init__(self, out, exp):
        self.seg = {}
        for g in TOK_SETS:
            z = np.load(out / "tok" / f"{g}.npz")
            keys = [bytes(k) for k in z["keys"]]
            idx = {k: i for i, k in enumerate(keys)}
            offs = np.concatenate([[0], np.cumsum(z["lens"])])
            H = {L: z[f"h{L}"].astype(np.float32) for L in TOK_LAYERS}
            rows = [idx[hashlib.sha256(t.encode()).digest()] for t in exp.gsrc[g].texts]
            self.seg[g] = {L: [H[L][offs[i]:offs[i + 1]] for i in rows] for L in TOK_LAYERS}

    def packed(self, g, L, m):
        """tokens of the rows in mask m, concatenated, with segment starts."""
        seqs = [s for s, k in zip(self.seg[g][L], m) if k]
        lens = np.array([len(s) for s in seqs])
        return np.concatenate(seqs).astype(np.float64), np.concatenate([[0], np.cumsum(lens)[:-1]]), lens


def attn_pool(T, starts, lens, q):
    s = T @ q
    # segment softmax
    mx = np.maximum.reduceat(s, starts)
    e = np.exp(s - np.repeat(mx, lens))
    den = np.add.reduceat(e, starts)
    a = e / np.repeat(den, lens)
    v = np.add.reduceat(T * a[:, None], starts)
    return v, a


def attn_head(exp, V, tok, folds, f, spec, y_al):
    """Chat head on softmax(q.h_t)-pooled layer-L states (L2-normalised like the views) + the 12
    text features, q (384) learned jointly with the ridge read-out by variable projection:
    for fixed q the read-out is the shipped ridge (closed form); q follows the gradient of the
    training loss at the optimal read-out (envelope theorem), L-BFGS, penalty lq*|q|^2, q0 = 0
    (= the mean pool). With 'attn_arena': 1 the arena head's training rows join the loss with their
    own read-out (shared q), each group's squared error normalised by its target variance. Rows of
    sets without token states (MMLU, GSM8K) are scored on the plain mean (q = 0)."""
    from scipy.optimize import minimize
    L = spec.get("attn_layer", 3)
    lq = spec.get("attn_lq", 1.0)
    groups = ["alpaca"] + (["arena"] if spec.get("attn_arena") else [])
    data = {}
    for g in groups:
        tr = folds[g] != f
        T, st, ln = tok.packed(g, L, tr)
        y = y_al if g == "alpaca" else exp.target("arena", spec)
        F = exp.gsrc[g].F[tr]
        v0, _ = attn_pool(T, st, ln, np.zeros(T.shape[1]))
        u0 = v0 / np.linalg.norm(v0, axis=1, keepdims=True)
        X0 = np.hstack([u0, F])
        mu, sd = rfr.standardise(X0, np.ones(len(X0)))
        n = len(X0)
        pen = np.ones(X0.shape[1]); pen[384:] = 1.0 / max(1.0, rfr.GROUP_PENALTY_ROWS / n)
        mult = max(1.0, rfr.GROUP_PENALTY_ROWS / n) * spec.get("lam", 1.0)
        data[g] = dict(T=T, st=st, ln=ln, y=y[tr], F=F, mu=mu, sd=sd, pen=pen * mult, n=n)

    def solve(D, Z):
        yc = D["y"] - D["y"].mean()
        G = Z.T @ Z / D["n"] + np.diag(D["pen"])
        return np.linalg.solve(G, Z.T @ yc / D["n"])

    def obj(q):
        tot, grad = lq * q @ q, 2 * lq * q
        for g, D in data.items():
            v, a = attn_pool(D["T"], D["st"], D["ln"], q)
            nv = np.linalg.norm(v, axis=1, keepdims=True)
            u = v / nv
            Z = (np.hstack([u, D["F"]]) - D["mu"]) / D["sd"]
            beta = solve(D, Z)
            r = Z @ beta - (D["y"] - D["y"].mean())
            vy = D["y"].var()
            tot += (r @ r / D["n"] + beta @ (D["pen"] * beta)) / vy
            # d loss / d q = (2/n) sum_i r_i c_i . dv_i/dq, c_i = (I - u u^T) (beta_e / sd_e) / |v_i|
            be = beta[:384] / D["sd"][:384]
            c = (be[None, :] - u * (u @ be)[:, None]) / nv
            ch = np.einsum("td,td->t", D["T"], np.repeat(c, D["ln"], 0))  # c_i . h_t
            vt = np.repeat(v, D["ln"], 0)
            w = (a * ch)[:, None] * (D["T"] - vt)  # a_t (c.h_t) (h_t - v)
            gi = np.add.reduceat(w, D["st"])
            grad += 2 / D["n"] * (r[:, None] * gi).sum(0) / vy
        return tot, grad

    q = np.zeros(384)
    if spec.get("attn_iter", 40):
        q = minimize(obj, q, jac=True, method="L-BFGS-B", options={"maxiter": spec.get("attn_iter", 40)}).x
    attn_head.obj = obj
    D = data["alpaca"]
    v, _ = attn_pool(D["T"], D["st"], D["ln"], q)
    Z = (np.hstack([v / np.linalg.norm(v, axis=1, keepdims=True), D["F"]]) - D["mu"]) / D["sd"]
    beta = solve(D, Z)
    ym = D["y"].mean()
    trs = Z @ beta + ym
    m, s = trs.mean(), trs.std() + 1e-9
    mu, sd = D["mu"], D["sd"]

    def score(g, mask):
        if g in TOK_SETS:
            T, st, ln = tok.packed(g, L, mask)
            v, _ = attn_pool(T, st, ln, q)
        else:
            v = rpr.view(V.L, g, list(np.array(exp.gsrc[g].texts, dtype=object)[mask]), f"mean{L}", None)
        u = v / np.linalg.norm(v, axis=1, keepdims=True)
        Zt = (np.hstack([u, exp.gsrc[g].F[mask]]) - mu) / sd
        return (Zt @ beta + ym - m) / s
    score.qnorm = float(np.linalg.norm(q))
    return score


# ---------------- idea 1b: a second-level (meta) chat head ---------------------------------------
def meta_head(V, heads, P, folds, f, seed, y, spec):
    """The chat head := ridge over [chat head, MMLU head, GSM8K head, arena head] scores ('heads'),
    or over the gate-weighted products P_h * H_h ('prod': can reproduce the gate's own mixture with
    weights 1), or both ('both'), fitted on the chat training rows, where the chat head's score is
    out-of-fold from an inner 5-fold split of those rows (the other heads never saw chat rows).
    Output z-scored on the training rows, then mixed by the gate like any head."""
    exp = V.exp
    tr = folds["alpaca"] != f
    Xa = V.X("alpaca", HV["alpaca"])
    inner = np.array([rfr.fold(t, 5, 1000 + seed * 10 + f) for t in exp.gsrc["alpaca"].texts])
    oof = np.zeros(len(tr))
    for k in range(5):
        a, b = tr & (inner != k), tr & (inner == k)
        oof[b] = fit(Xa[a], y[a], "alpaca", spec)(Xa[b])
    full = fit(Xa[tr], y[tr], "alpaca", spec)
    kind = spec["meta"]

    def M(g, m, chat):
        H = np.stack([chat] + [heads[h](g, m) for h in OTHER], 1)  # order: alpaca, mmlu, gsm8k, arena
        Pm = P(g, m)[:, [rfr.GROUPS.index(h) for h in ["alpaca"] + OTHER]]
        cols = {"heads": [H], "prod": [Pm * H], "both": [H, Pm * H], "chatprod": [H[:, :1], (Pm * H)[:, 1:]]}[kind]
        return np.hstack(cols)
    Mt = M("alpaca", tr, oof[tr])
    mu, sd = Mt.mean(0), Mt.std(0) + 1e-9
    Z = (Mt - mu) / sd
    lam = spec.get("meta_lam", 1.0)
    n = len(Z)
    ym = y[tr]
    if spec.get("meta_y"):  # the meta read-out on another target, e.g. one pair's gain ('mixtral')
        ym = exp.sets["alpaca-" + spec["meta_y"]].gain[tr]
        if spec.get("meta_yw"):  # ... averaged with the chat head's target
            ym = spec["meta_yw"] * (ym - ym.mean()) / ym.std() + (1 - spec["meta_yw"]) * (y[tr] - y[tr].mean()) / y[tr].std()
    beta = np.linalg.solve(Z.T @ Z / n + lam * np.eye(Z.shape[1]) / n * spec.get("meta_scale", 10.0),
                           Z.T @ (ym - ym.mean()) / n)
    trs = Z @ beta
    m0, s0 = trs.mean(), trs.std() + 1e-9
    meta_head.betas.append(beta * 1)

    def score(g, m):
        Xg = V.X(g, HV["alpaca"])[m]
        return (((M(g, m, full(Xg)) - mu) / sd) @ beta - m0) / s0
    return score


meta_head.betas = []


# ---------------- the CV ------------------------------------------------------------------------
def cv(V, tok, spec, seed, k=5):
    exp = V.exp
    folds = {g: np.array([rfr.fold(t, k, seed) for t in exp.gsrc[g].texts]) for g in rfr.GROUPS}
    scores = {g: np.zeros(len(exp.gsrc[g].texts)) for g in rfr.GROUPS}
    allm = {g: np.ones(len(exp.gsrc[g].texts), bool) for g in rfr.GROUPS}
    info = []
    for f in range(k):
        P = gate_fn(V, GV, folds, f)
        heads = {}
        for h in OTHER:
            tr = folds[h] != f
            fn = fit(V.X(h, HV[h])[tr], exp.target(h, spec)[tr], h, spec, V.X(h, HV[h]).shape[1] - 12)
            heads[h] = (lambda fn, h: lambda g, m: fn(V.X(g, HV[h])[m]))(fn, h)
        # the chat head
        tr = folds["alpaca"] != f
        if spec.get("irt"):
            y = np.zeros(len(tr)); y[tr] = irt_target(exp, tr, spec)
        else:
            y = exp.target("alpaca", spec)
        stack = spec.get("stack", [])
        if stack:
            def S(g, m):
                cols = [heads[h](g, m) for h in stack if h in heads]
                if "gate" in stack:
                    cols += list(np.log(P(g, m) + 1e-6).T)
                if "gatexh" in stack:  # the gate's mixture of the three other heads
                    Pm = P(g, m)
                    cols.append(sum(Pm[:, rfr.GROUPS.index(h)] * heads[h](g, m) for h in OTHER))
                return np.stack(cols, 1)
            emb = spec.get("stack_emb", 1)
            def XS(g, m):
                parts = ([V.X(g, HV["alpaca"])[m]] if emb else [exp.gsrc[g].F[m]]) + [S(g, m)]
                return np.hstack(parts)
            fn = fit(XS("alpaca", tr), y[tr], "alpaca", spec, 384 if emb else 0)
            heads["alpaca"] = lambda g, m: fn(XS(g, m))
        elif spec.get("meta"):
            heads["alpaca"] = meta_head(V, heads, P, folds, f, seed, y, spec)
        elif spec.get("attn"):
            sc = attn_head(exp, V, tok, folds, f, spec, y)
            info.append(sc.qnorm)
            heads["alpaca"] = sc
        else:
            fn = fit(V.X("alpaca", HV["alpaca"])[tr], y[tr], "alpaca", spec)
            heads["alpaca"] = lambda g, m: fn(V.X(g, HV["alpaca"])[m])
        for g in rfr.GROUPS:
            te = folds[g] == f
            H = np.stack([heads[h](g, te) for h in rfr.GROUPS], 1)
            Pg = P(g, te)
            if spec.get("chat_only") and g == "alpaca":  # diagnostic: chat rows by the chat head alone
                Pg = np.zeros_like(Pg); Pg[:, 0] = 1
            scores[g][te] = (Pg * H).sum(1)
    return scores, info


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd")
    ap.add_argument("--seeds", default="0-2")
    ap.add_argument("--run", action="append", default=[])
    ap.add_argument("--out", default="/tmp/research24")
    ap.add_argument("--cache", default="/tmp/research24/sets.pkl")
    ap.add_argument("--json")
    ap.add_argument("--base", default="base")
    a = ap.parse_args()
    if a.cmd == "paired":
        import router_combo_research as rcr
        return rcr.paired(a.json, a.base)
    out = Path(a.out)
    rpr.LAYERS = out / "layers"
    exp = rfr.Exp(rfr.load(a.cache))
    V = rpr.Views(exp, rpr.load_layers())
    tok = Tok(out, exp) if any("attn" in r for r in a.run) else None
    seeds = rfr.parse_seeds(a.seeds)
    for name in a.run or ["base"]:
        nm, _, js = name.partition("#")
        spec = dict(BASE_SPEC, **(json.loads(js) if js else {}))
        res, infos = {}, []
        for seed in seeds:
            sc, info = cv(V, tok, spec, seed)
            infos += info
            for n, g in rfr.TEST.items():
                d = exp.sets[n]
                res.setdefault(n, []).append(rfr.metrics(sc[g], d.c, d.p)["apgr"])
        extra = f"  |q| {np.mean(infos):.3f}" if infos else ""
        if meta_head.betas:
            extra += "  meta weights " + " ".join(f"{x:+.3f}" for x in np.mean(meta_head.betas, 0))
            meta_head.betas.clear()
        print(f"{name}\n    {rfr.fmt(res)}{extra}", flush=True)
        if a.json:
            with open(a.json, "a") as fh:
                fh.write(json.dumps({"view": name, "seeds": seeds, "res": res}) + "\n")


if __name__ == "__main__":
    if sys.argv[1:2] in (["build"], ["merge"]):
        ap = argparse.ArgumentParser()
        ap.add_argument("cmd"); ap.add_argument("--shard", default="0/1"); ap.add_argument("--n", type=int, default=2)
        ap.add_argument("--out", default="/tmp/research24")
        a = ap.parse_args()
        build(Path(a.out), a.shard) if a.cmd == "build" else merge(Path(a.out), a.n)
    else:
        main()
