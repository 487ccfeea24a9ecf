#!/usr/bin/env python3
"""Rarity-weighted pooling of the MiniLM forward pass for the router (issue 11, research22).

Plain mean pooling weighs every word piece the same. This script pools the same forward pass with
weights from how rare each word piece is in the dev prompts (no labels), and measures those views
in the router's heads and gate with the harness of `router_combo_research.py` (same run syntax).

  build   python eval/scripts/router_idf_research.py build --shard 0/2   (and 1/2 in parallel)
          python eval/scripts/router_idf_research.py merge
          MiniLM in numpy (minilm_layers.MiniLM), truncated to 256 word pieces like the gateway.
          Writes OUT/layers/<set>.npz in minilm_layers.py's format (mean[L], cls, max, keys: the
          existing views keep working) and OUT/tok/<set>.npz with every prompt's word-piece ids and
          per-token hidden states at layers 0, 3 and 6 (float16).
  run     python eval/scripts/router_idf_research.py run --seeds 0-2 --cache OUT/sets.pkl \
              --run 'mmlu=mean3,arena=mean3,alpaca=mean3,gate=mean0' --run '...gate=idf0' --json F
  paired  python eval/scripts/router_idf_research.py paired BASE F
  (OUT = /tmp/research22 by default, --out to change)

New views (L = layer 0, 3 or 6; every view is L2-normalised afterwards, as in the harness, so
dividing a weighted sum by the sum of its weights changes nothing):
  idf<L>      sum_t w(t) h_L(t), w = log(N / df(wp)), N = unique dev prompts of all four sources
              (alpaca, arena, gsm8k, mmlu: 11,510), df = how many of them contain the word piece
              (after truncation to 256). [CLS] and [SEP] get weight 0.
  idfs<L>     as idf<L> but [CLS] and [SEP] each get the mean weight of the prompt's other pieces.
  idfb<L>     source-balanced IDF: df/N replaced by the mean over the four sources of the
              fraction of that source's prompts containing the word piece (MMLU is 85% of the
              prompts and would otherwise decide what is "common"). Specials weight 0.
  sif<k>_<L>  SIF (Arora et al. 2017): w = a / (a + p(wp)), a = 10^-k, p = the word piece's share
              of all word-piece tokens in the dev prompts (specials excluded from p and weight 0).
  sifpc<k>_<L> the same with the first principal direction removed (uncentred first right
              singular vector of all dev prompts' SIF vectors of that layer, all sources; no labels).
  idfpc<L>    idf<L> with the first principal direction removed likewise.
Weights and frequencies come from all dev prompt texts (no labels, not per fold): an unsupervised
statistic of traffic the gateway could keep, like the cache's own vectors.
Needs numpy, tokenizers, safetensors.

Results (research22; 5-fold CV APGR, Python folds; raw per-draw numbers in /tmp/research22/sel.jsonl,
fresh.jsonl, fresh_xpair.jsonl; shipped = "mmlu=mean3,arena=mean3,alpaca=mean3,gate=mean0", GSM8K's
head on base; every row below changes only what it names). Draws 0-2, columns MMLU / GSM8K /
arena / chat Mixtral / Mistral-7B / claude-instant / GPT-3.5:
  shipped                                  0.670 0.650 0.533 0.580 0.545 0.542 0.525
  H1/H2 in the gate (heads as shipped):
    gate=idf0 / idfs0 / idfb0 / idfpc0     0.670-0.671 0.651-0.652 0.533-0.540 0.562-0.568 0.538-0.542 0.537-0.541 0.517-0.519
    gate=sif3_0 / sif4_0 / sifpc3_0 / sifpc4_0  0.670-0.671 0.650-0.652 0.533-0.540 0.556-0.567 0.536-0.539 0.537-0.544 0.517-0.519
    gate=idf3 / idfb3 / sif3_3             0.670 0.652 0.544-0.546 0.574-0.576 0.535-0.538 0.542-0.544 0.516-0.517
    gate=idf6                              0.669 0.648 0.544 0.552 0.539 0.539 0.517
    gate=mean0+idf0 / mean0|idf0           0.670-0.671 0.651-0.653 0.534-0.537 0.573 0.544-0.548 0.538-0.541 0.520-0.521
    gate=idf0|cls / idfb0|cls              0.671 0.651 0.549-0.553 0.563-0.566 0.539-0.540 0.542-0.544 0.519
    (the IDF-weighted gates tell the sources apart less well: mean gate weight of a chat prompt on
    the chat head 0.779 with mean0, 0.751 / 0.757 / 0.757 with idf0 / idfs0 / sif3_0; the common
    pieces -- punctuation, 'the', MMLU's 'a'..'d' and 'answer' -- are what carries the source)
  H1/H2 in the chat head (gate=mean0):
    alpaca=idf3 / idfs3 / idfb3            0.670 0.650 0.531-0.533 0.580-0.581 0.547-0.549 0.542-0.543 0.524
    alpaca=idfpc3                          0.670 0.650 0.533 0.582 0.550 0.544 0.525
    alpaca=idf0 / idfs0 / idfpc0 / idfb0   0.670 0.650 0.534-0.535 0.582-0.584 0.546-0.548 0.540-0.541 0.521-0.522
    alpaca=idf6                            0.670 0.650 0.528 0.578 0.544 0.541 0.524
    alpaca=sif3_3 / sif4_3                 0.670 0.650 0.531-0.532 0.581-0.582 0.547-0.548 0.541-0.543 0.524-0.525
    alpaca=sifpc3_3 / sifpc4_3             0.670 0.650 0.530-0.533 0.581-0.582 0.548-0.550 0.542-0.544 0.524-0.525
    alpaca=sif3_0 / sifpc3_0               0.670 0.650 0.534-0.536 0.583 0.547 0.540-0.541 0.521-0.522
    alpaca=mean3|idf3 / mean3|idf0 / idf0+mean3  0.670 0.650 0.533-0.534 0.581-0.583 0.547-0.548 0.542-0.544 0.523-0.525
  H1 in other heads: arena=idf3 / idfb3 / sif3_3: arena 0.525-0.527 (below length, 0.529);
    mmlu=idf3: MMLU 0.666; gsm8k=idf6: GSM8K 0.651, the rest as shipped.
  Gate and head together: alpaca=idf0,gate=mean0|idf3 0.670 0.651 0.541 0.583 0.545 0.543 0.519;
    alpaca=idfpc3,gate=mean0|mean0|cls 0.671 0.651 0.542 0.579 0.550 0.546 0.525.
  H3, TF-IDF (1 + log tf, the IDF above, L2 rows, vocabulary = the chat prompts' word pieces)
  dual ridge on the chat rows' target:
    alone as the chat head, penalty 1 / 3 / 10  chat 0.529 / 0.535 / 0.538, other pairs 0.502-0.519
    'blend<lam>@<b>' = (1-b) z(shipped head) + b z(TF-IDF), re-z-scored: b 0.1 / 0.2 / 0.3 at
      penalty 3: chat 0.578 / 0.576 / 0.576, other pairs -0.003..+0.001; penalty 1 / 10 at b 0.2:
      0.577 / 0.578 (b 0: 0.580 0.545 0.542 0.525, the shipped head exactly)
    'mean3|tfidf<lam>@<c>' (the harness's average, which also shrinks the chat head's scale in the
      gate's mixture): chat 0.569-0.574.
  62 configurations on draws 0-2 (the sifpc/idfpc directions: uncentred first singular vector of
  all dev prompts' pooled vectors, all four sources).
Fresh draws 3-7, the best three chat-head views by the mean of the four chat columns on draws 0-2
(idfpc3 0.5503, sifpc3_3 0.5498, and idf0 as the best on the Mixtral pair, 0.584), paired against
shipped (0.667 0.653 0.543 0.580 0.544 0.541 0.524; mean difference, draws up of 5):
  alpaca=idfpc3     0.667 0.653 0.544 0.581 0.549 0.542 0.525
                    +0.000 (0) +0.000 (0) +0.001 (3) +0.001 (4) +0.005 (5) +0.002 (5) +0.001 (4)
  alpaca=sifpc3_3   0.667 0.653 0.544 0.580 0.547 0.542 0.525
                    +0.000 (0) +0.000 (0) +0.001 (4) +0.000 (3) +0.003 (5) +0.001 (5) +0.001 (4)
  alpaca=idf0       0.667 0.653 0.542 0.583 0.547 0.539 0.521
                    +0.000 (0) -0.000 (0) -0.001 (1) +0.004 (5) +0.003 (5) -0.002 (1) -0.003 (0)
  (MMLU and GSM8K 0/5 "up" because they are unchanged to 4 decimals: the chat head hardly
  touches them through the gate.)
  Cross-pair (chat head on the Mixtral pair's labels only, {"pair": "mixtral"}), paired against
  shipped on those labels (0.580 on Mixtral, other pairs 0.541 / 0.522 / 0.520):
  idfpc3 Mixtral +0.002 (4), other pairs +0.006 (5) / +0.003 (4) / +0.001 (4);
  sifpc3_3 +0.002 (4), +0.004 (5) / +0.003 (5) / +0.001 (4); idf0 -0.000 (3), +0.005 (4) / +0.003 (5) / -0.001 (1).
Verdict: not kept. Rarity weighting hurts the gate (chat Mixtral 0.552-0.576 against 0.580) and the
arena head (below prompt length); in the chat head it is within +0.004 of the plain mean on every
pair (idfpc3: small, consistent, +0.001 to +0.005 on the four pairs, far under the +0.008 on chat
Mixtral asked for shipping). A TF-IDF bag of word pieces reads less than the embedding (0.535
alone) and blending it in only costs. Caveat: all choices were made on the same 468 instructions;
draws 3-7 re-split the folds, not the instructions.
"""
import argparse, hashlib, json, sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

ROOT = HERE.parents[1]
SETS = ["alpaca", "arena", "gsm8k", "mmlu"]
TOK_LAYERS = [0, 3, 6]
CLS_ID, SEP_ID = 101, 102


# ------------------------------------------------------------------------------------------------
# build: forward pass, per-token states
# ------------------------------------------------------------------------------------------------
def build(out, shard):
    from minilm_layers import MiniLM, texts_of
    k, n = map(int, shard.split("/"))
    m = MiniLM()
    (out / "shards").mkdir(parents=True, exist_ok=True)
    for name in SETS:
        texts = texts_of(name)
        rows = list(range(k, len(texts), n))
        means, cls, mx, ids, hs = [], [], [], [], {L: [] for L in TOK_LAYERS}
        for j, i in enumerate(rows):
            t = texts[i]
            ls = m.layers(t)
            means.append(np.stack([l.mean(0) for l in ls]))
            cls.append(ls[-1][0]); mx.append(ls[-1].max(0))
            ids.append(np.array(m.tok.encode(t).ids, dtype=np.int32))
            for L in TOK_LAYERS:
                hs[L].append(ls[L].astype(np.float16))
            if j % 500 == 0:
                print(f"shard {shard} {name}: {j}/{len(rows)}", file=sys.stderr, flush=True)
        np.savez(out / "shards" / f"{name}.{k}of{n}.npz", rows=np.array(rows), mean=np.array(means),
                 cls=np.array(cls), max=np.array(mx), lens=np.array([len(x) for x in ids]),
                 ids=np.concatenate(ids), **{f"h{L}": np.concatenate(hs[L]) for L in TOK_LAYERS})


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
        # token arrays: split each shard by its lens, reorder by row
        seqs = {key: [] for key in ["ids"] + [f"h{L}" for L in TOK_LAYERS]}
        for p in parts:
            offs = np.concatenate([[0], np.cumsum(p["lens"])])
            for key in seqs:
                a = p[key]
                seqs[key] += [a[offs[i]:offs[i + 1]] for i in range(len(p["lens"]))]
        lens = np.array([len(s) for s in seqs["ids"]])[order]
        np.savez(out / "tok" / f"{name}.npz", keys=keys, lens=lens,
                 **{key: np.concatenate([v[i] for i in order]) for key, v in seqs.items()})
        print(f"{name}: {len(texts)} prompts, {lens.sum()} word pieces")


# ------------------------------------------------------------------------------------------------
# weighted views
# ------------------------------------------------------------------------------------------------
class Tok:
    """Per-token data of all four sets and the unsupervised word-piece statistics."""

    def __init__(self, out):
        self.d = {s: dict(np.load(out / "tok" / f"{s}.npz")) for s in SETS}
        for s, z in self.d.items():
            z["off"] = np.concatenate([[0], np.cumsum(z["lens"])])
            z["doc"] = np.repeat(np.arange(len(z["lens"])), z["lens"])
        V = 30522
        # document frequency over the unique prompts of all sets (a prompt in two sets counts once)
        seen, df, tf = set(), np.zeros(V), np.zeros(V)
        dfs = {}
        for s, z in self.d.items():
            dfs[s] = np.zeros(V)
            for i in range(len(z["lens"])):
                u = np.unique(z["ids"][z["off"][i]:z["off"][i + 1]])
                dfs[s][u] += 1
                key = bytes(z["keys"][i])
                if key in seen:
                    continue
                seen.add(key)
                df[u] += 1
                np.add.at(tf, z["ids"][z["off"][i]:z["off"][i + 1]], 1)
        self.N = len(seen)
        self.df = df
        tf[[CLS_ID, SEP_ID]] = 0
        self.p = tf / tf.sum()
        self.idf = np.log(self.N / np.maximum(df, 1))
        frac = np.mean([dfs[s] / len(self.d[s]["lens"]) for s in SETS], 0)
        self.idfb = np.log(1.0 / np.maximum(frac, 1e-6))
        self.cache = {}

    def weights(self, kind, ids):
        if kind in ("idf", "idfs", "idfpc"):
            w = self.idf[ids]
        elif kind == "idfb":
            w = self.idfb[ids]
        elif kind.startswith("sif"):
            a = 10.0 ** -int(kind.lstrip("sifpc"))
            w = a / (a + self.p[ids])
        else:
            raise KeyError(kind)
        sp = (ids == CLS_ID) | (ids == SEP_ID)
        w = np.where(sp, 0.0, w)
        if kind == "idfs":  # specials get the mean weight of the prompt's other pieces (per prompt)
            pass  # handled in pooled()
        return w, sp

    def pooled(self, kind, L):
        """(set -> (n, 384)) weighted pools, unnormalised sums / sum of weights."""
        key = (kind, L)
        if key in self.cache:
            return self.cache[key]
        out = {}
        for s, z in self.d.items():
            w, sp = self.weights(kind, z["ids"])
            if kind == "idfs":
                sums = np.bincount(z["doc"], weights=w, minlength=len(z["lens"]))
                cnt = np.bincount(z["doc"], weights=(~sp).astype(float), minlength=len(z["lens"]))
                w = np.where(sp, (sums / np.maximum(cnt, 1))[z["doc"]], w)
            H = z[f"h{L}"].astype(np.float32) * w[:, None].astype(np.float32)
            S = np.add.reduceat(H, z["off"][:-1], axis=0)
            W = np.add.reduceat(w, z["off"][:-1])
            out[s] = S / np.maximum(W, 1e-9)[:, None]
        if kind.endswith("pc") or "pc" in kind:
            A = np.vstack([out[s] for s in SETS]).astype(np.float64)
            # unique prompts only for the fit would be cleaner; duplicates across sets are few
            u = np.linalg.svd(A, full_matrices=False)[2][0]
            out = {s: X - np.outer(X @ u, u) for s, X in out.items()}
        self.cache[key] = out
        return out


def parse_new(v):
    import re
    m = re.fullmatch(r"(idfpc|idfs|idfb|idf|sifpc\d|sif\d)_?(\d)", v)
    return (m.group(1), int(m.group(2))) if m else None


# ------------------------------------------------------------------------------------------------
# H3: TF-IDF bag of word pieces, ridge on the chat rows, blended into the chat head
# ------------------------------------------------------------------------------------------------
GROUP_OFF = {g: 100000 * i for i, g in enumerate(SETS)}


class TfIdf:
    """Rows = every prompt of every set (global id = GROUP_OFF[set] + row), columns = the word
    pieces of the alpaca prompts (the only ones a head trained on chat rows can weigh); each row's
    tf (1 + log count) * idf over all its word pieces, L2-normalised over all of them."""

    def __init__(self, tok, sub=True):
        za = tok.d["alpaca"]
        vocab = np.unique(za["ids"])
        vocab = vocab[(vocab != CLS_ID) & (vocab != SEP_ID)]
        col = -np.ones(30522, dtype=np.int64); col[vocab] = np.arange(len(vocab))
        self.M = {}
        for s, z in tok.d.items():
            n = len(z["lens"])
            X = np.zeros((n, len(vocab)), np.float32)
            for i in range(n):
                ids = z["ids"][z["off"][i]:z["off"][i + 1]]
                ids = ids[(ids != CLS_ID) & (ids != SEP_ID)]
                u, c = np.unique(ids, return_counts=True)
                v = ((1 + np.log(c)) if sub else c) * tok.idf[u]
                nrm = np.linalg.norm(v) + 1e-12
                keep = col[u] >= 0
                X[i, col[u[keep]]] = v[keep] / nrm
            self.M[s] = X
        self.index = {s: {bytes(k): i for i, k in enumerate(tok.d[s]["keys"])} for s in SETS}
        self.h2t = {}

    def rows(self, gid):
        gid = gid.astype(np.int64)
        out = np.zeros((len(gid), self.M["alpaca"].shape[1]), np.float32)
        for s, o in GROUP_OFF.items():
            m = (gid >= o) & (gid < o + 100000)
            if m.any():
                out[m] = self.M[s][self.h2t[s][gid[m] - o]]
        return out


def install_tfidf(tok):
    """View 'tfidf<lam>@<c>' (chat head only): a dual ridge (penalty lam) on the TF-IDF rows,
    output z-scored on its training rows and scaled by c; with 'mean3|tfidf1@0.5' the chat head is
    the mean of the shipped head's z-score and 0.5 x this one's (blend weight c/(1+c))."""
    import router_combo_research as rcr
    import router_feature_research as rfr
    import router_pooling_research as rpr
    T = TfIdf(tok)
    prev_view, prev_fit = rpr.view, rcr.fit

    def view(L, g, texts, name, base):
        if name.startswith("tfidf") or name.startswith("blend"):
            # one column: a global row id (GROUP_OFF + the harness's row); T.h2t maps it to the
            # TF-IDF matrix's row
            s = rpr.FILES[g]
            T.h2t[s] = np.array([T.index[s][hashlib.sha256(t.encode()).digest()] for t in texts])
            return (np.arange(len(texts)) + GROUP_OFF[s])[:, None].astype(np.float64)
        return prev_view(L, g, texts, name, base)

    def tfidf_head(X, yt, lam):
        ym = yt.mean()
        alpha = np.linalg.solve(X @ X.T + lam * np.eye(len(yt)), yt - ym)
        beta = X.T @ alpha
        trs = X @ beta
        return beta, trs.mean(), trs.std() + 1e-9

    def fit(V, g, v, tr, y, spec, seed, f):
        if v.startswith("blend"):
            # 'blend<lam>@<b>[:<view>]': (1-b) * z(shipped head on <view>, default mean3)
            # + b * z(TF-IDF ridge), re-z-scored on the training rows; one head, same scale
            # as any other head in the gate's mixture
            lam, _, rest = v[5:].partition("@")
            b, _, hv = rest.partition(":")
            lam, b, hv = float(lam), float(b), hv or "mean3"
            gid = V.X(g, v)[:, 0]
            f1 = prev_fit(V, g, hv, tr, y, spec, seed, f)
            beta, m, s = tfidf_head(T.rows(gid[tr]).astype(np.float64), y[tr], lam)

            def raw(gids):
                parts = np.zeros(len(gids))
                for g2 in rfr.GROUPS:
                    o = GROUP_OFF[rpr.FILES[g2]]
                    msk = (gids >= o) & (gids < o + 100000)
                    if msk.any():
                        parts[msk] = f1(V.X(g2, hv)[(gids[msk] - o).astype(int)])
                return (1 - b) * parts + b * (T.rows(gids).astype(np.float64) @ beta - m) / s
            trb = raw(gid[tr]); mb, sb = trb.mean(), trb.std() + 1e-9
            return lambda Xn: (raw(Xn[:, 0]) - mb) / sb
        if not v.startswith("tfidf"):
            return prev_fit(V, g, v, tr, y, spec, seed, f)
        lam, _, c = v[5:].partition("@")
        lam, c = float(lam or 1), float(c or 1)
        beta, m, s = tfidf_head(T.rows(V.X(g, v)[tr, 0]).astype(np.float64), y[tr], lam)
        return lambda Xn: c * (T.rows(Xn[:, 0]).astype(np.float64) @ beta - m) / s

    rpr.view, rcr.fit = view, fit


def install_views(out):
    """Point the harness at OUT/layers and teach router_pooling_research.view the new names."""
    import router_pooling_research as rpr
    rpr.LAYERS = out / "layers"
    tok = Tok(out)
    print(f"IDF over {tok.N} unique dev prompts", file=sys.stderr)
    orig = rpr.view

    def view(L, g, texts, name, base):
        parts = []
        for v in name.split("+"):
            pn = parse_new(v)
            if pn is None:
                parts.append(orig(L, g, texts, v, base))
                continue
            z = tok.d[rpr.FILES[g]]
            index = {bytes(k): i for i, k in enumerate(z["keys"])}
            idx = np.array([index[hashlib.sha256(t.encode()).digest()] for t in texts])
            parts.append(rpr.unit(tok.pooled(*pn)[rpr.FILES[g]][idx]).astype(np.float64))
        return np.hstack(parts)

    rpr.view = view
    return tok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["build", "merge", "run", "paired", "stats"])
    ap.add_argument("rest", nargs="*")
    ap.add_argument("--out", default="/tmp/research22")
    ap.add_argument("--shard", default="0/1")
    ap.add_argument("--seeds", default="0-2")
    ap.add_argument("--run", action="append", default=[])
    ap.add_argument("--cache")
    ap.add_argument("--json")
    a = ap.parse_args()
    out = Path(a.out)
    if a.cmd == "build":
        return build(out, a.shard)
    if a.cmd == "merge":
        return merge(out, int(a.shard.split("/")[1]))
    import router_combo_research as rcr
    if a.cmd == "paired":
        return rcr.paired(a.rest[1], a.rest[0])
    tok = install_views(out)
    if any("tfidf" in r or "blend" in r for r in a.run):
        install_tfidf(tok)
    if a.cmd == "stats":
        from tokenizers import Tokenizer
        t = Tokenizer.from_file(str(ROOT / "models/all-MiniLM-L6-v2/tokenizer.json"))
        o = np.argsort(tok.idf)
        print("lowest idf:", [(t.id_to_token(int(i)), round(tok.idf[i], 2)) for i in o[:25]])
        return
    import router_feature_research as rfr
    import router_pooling_research as rpr
    exp = rfr.Exp(rfr.load(a.cache))
    V = rpr.Views(exp, rpr.load_layers())
    seeds = rfr.parse_seeds(a.seeds)
    for name in a.run:
        vname, _, js = name.partition("#")
        vname, _, kk = vname.partition("*")
        spec = dict(rcr.BASE_SPEC, **(json.loads(js) if js else {}))
        spec["lam"] = spec.get("lam", 1.0) * (float(kk) if kk else 1.0)
        hv, gv = rpr.parse_view(vname)
        res = {}
        for seed in seeds:
            sc = rcr.cv(V, spec, seed, hv, gv)
            for n, g in rfr.TEST.items():
                d = exp.sets[n]
                res.setdefault(n, []).append(rfr.metrics(sc[g], d.c, d.p)["apgr"])
        print(f"{name}\n    {rfr.fmt(res)}", flush=True)
        if a.json:
            with open(a.json, "a") as fh:
                fh.write(json.dumps({"view": name, "seeds": seeds, "res": res}) + "\n")


if __name__ == "__main__":
    main()
