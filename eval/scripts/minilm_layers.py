#!/usr/bin/env python3
"""MiniLM-L6 forward pass in numpy, keeping every layer (issue 11 research).

The gateway pools only the last layer (mean over tokens, L2-normalised) because that is what the
cache compares. The router could read other views of the same forward pass at no extra serving
cost: the [CLS] token, a max pool, or the mean of an earlier layer. This script computes them for
the routing dev prompts so `router_pooling_research.py` can measure whether any of them helps.

It re-implements BERT from `models/all-MiniLM-L6-v2/model.safetensors` (f16 weights, computed in
f32) and the vendored tokenizer, truncated to 256 word pieces like the gateway. `--check` compares
its last-layer mean pool with the Rust encoder's stored vectors (eval/.cache/embeddings).

Usage:  python eval/scripts/minilm_layers.py [--sets alpaca,arena,gsm8k,mmlu] [--check]
Writes eval/.cache/layers/<set>.npz with, per prompt (rows in file order, sha256 keys):
  mean[L]  mean pool of layer L = 0 (embeddings) .. 6, unnormalised  (n, 7, 384)
  cls      last-layer [CLS] vector                                    (n, 384)
  max      last-layer max pool                                        (n, 384)
Needs numpy, tokenizers, safetensors.
"""
import argparse, hashlib, json, math, sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models/all-MiniLM-L6-v2"
DATA = ROOT / "eval/data/routing"
OUT = ROOT / "eval/.cache/layers"
SETS = {
    "alpaca": ["alpaca_dev_mixtral-8x7b-instruct-v0_1.jsonl"],
    "arena": ["arena_bench_v1.jsonl"],
    "gsm8k": ["gsm8k_dev.jsonl"],
    "mmlu": ["mmlu_dev.jsonl"],
}


class MiniLM:
    def __init__(self):
        w = {k: v.astype(np.float32) for k, v in load_file(str(MODEL / "model.safetensors")).items()
             if k != "embeddings.position_ids"}
        self.w = w
        self.cfg = json.loads((MODEL / "config.json").read_text())
        self.tok = Tokenizer.from_file(str(MODEL / "tokenizer.json"))
        self.tok.enable_truncation(256)
        self.tok.no_padding()

    @staticmethod
    def ln(x, g, b, eps=1e-12):
        m = x.mean(-1, keepdims=True)
        v = ((x - m) ** 2).mean(-1, keepdims=True)
        return (x - m) / np.sqrt(v + eps) * g + b

    @staticmethod
    def gelu(x):
        return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))  # BERT's exact (erf) GELU

    def layers(self, text):
        w, H = self.w, self.cfg["num_attention_heads"]
        ids = np.array(self.tok.encode(text).ids)
        n, d = len(ids), self.cfg["hidden_size"]
        x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:n] \
            + w["embeddings.token_type_embeddings.weight"][0]
        x = self.ln(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        out = [x]
        hd = d // H
        for i in range(self.cfg["num_hidden_layers"]):
            p = f"encoder.layer.{i}."
            lin = lambda z, name: z @ w[p + name + ".weight"].T + w[p + name + ".bias"]
            q = lin(x, "attention.self.query").reshape(n, H, hd).transpose(1, 0, 2)
            k = lin(x, "attention.self.key").reshape(n, H, hd).transpose(1, 0, 2)
            v = lin(x, "attention.self.value").reshape(n, H, hd).transpose(1, 0, 2)
            s = q @ k.transpose(0, 2, 1) / math.sqrt(hd)
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            a = (s @ v).transpose(1, 0, 2).reshape(n, d)
            x = self.ln(lin(a, "attention.output.dense") + x, w[p + "attention.output.LayerNorm.weight"],
                        w[p + "attention.output.LayerNorm.bias"])
            h = self.gelu(lin(x, "intermediate.dense"))
            x = self.ln(lin(h, "output.dense") + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
            out.append(x)
        return out


def _erf(x):
    """erf by Numerical Recipes' erfc approximation (fractional error < 1.2e-7), vectorised."""
    z = np.abs(x).astype(np.float64)
    t = 1.0 / (1.0 + 0.5 * z)
    r = t * np.exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886187 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
    return (np.sign(x) * (1.0 - r)).astype(np.float32)


def texts_of(name):
    out, seen = [], set()
    for f in SETS[name]:
        for line in open(DATA / f, encoding="utf-8"):
            t = json.loads(line)["prompt"]
            if t not in seen:
                seen.add(t)
                out.append(t)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", default="alpaca,arena,gsm8k,mmlu")
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args()
    m = MiniLM()
    OUT.mkdir(parents=True, exist_ok=True)
    store = None
    if a.check:
        from router_mix_research import load_store
        store = load_store()
    for name in a.sets.split(","):
        texts = texts_of(name)
        means, cls, mx, keys = [], [], [], []
        worst = 1.0
        for i, t in enumerate(texts):
            ls = m.layers(t)
            means.append(np.stack([l.mean(0) for l in ls]))
            cls.append(ls[-1][0])
            mx.append(ls[-1].max(0))
            keys.append(hashlib.sha256(t.encode()).digest())
            if store is not None and keys[-1] in store:
                v = means[-1][-1] / np.linalg.norm(means[-1][-1])
                worst = min(worst, float(v @ store[keys[-1]]))
            if i % 500 == 0:
                print(f"{name}: {i}/{len(texts)}", file=sys.stderr)
        np.savez(OUT / f"{name}.npz", mean=np.array(means), cls=np.array(cls), max=np.array(mx),
                 keys=np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(-1, 32))
        print(f"{name}: {len(texts)} prompts" + (f", worst cosine to the Rust vectors {worst:.6f}" if store else ""))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
