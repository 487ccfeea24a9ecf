#!/usr/bin/env python3
"""Prefix-pooled views of the MiniLM-L6 forward pass (issue 11 research, "task statement" idea).

Many chat instructions are a task statement followed by pasted input ("Write a confirmation email
...\n\nA meeting has been scheduled ..."). The cache's mean pool over all tokens is dominated by
the pasted text, while how hard the prompt is for a cheap model may depend mostly on the task
statement. The forward pass already has every token's state, so a mean over only the leading
tokens is free at serving time. This script stores such views for `router_pooling_research.py`
(view names first8 .. first64, nl, sent, with a '_L3' suffix for layer 3).

Per prompt (rows in file order, sha256 keys like minilm_layers.py), for layers 3 and 6 (last),
each a mean over the content word pieces only ([CLS] and [SEP] left out), unnormalised:
  first<k>  the first k word pieces after [CLS], k in 8, 16, 32, 64 (all of them if fewer)
  nl        the word pieces that start before the first "\\n" after the first non-blank character
            (the whole prompt if it has none)
  sent      the word pieces up to and including the first '.', '?' or '!' followed by whitespace
            (the whole prompt if none)
Same numpy BERT, tokenizer and 256-piece truncation as minilm_layers.py (which it imports).

Usage:  python eval/scripts/minilm_prefix.py [--sets alpaca,arena,gsm8k,mmlu]
Writes eval/.cache/layers/<set>_prefix.npz: keys (n, 32), layers (2,) = [3, 6],
  <view> (n, 2, 384) float32 and <view>_n (n,) word pieces pooled, for each view above.
Needs numpy, tokenizers, safetensors. About 10 s for alpaca, 5 min for all four sets on one core.

Result (research_stop14, chat head only, `router_pooling_research.py --view alpaca=first32` etc.):
no view helps. The chat prompts are short (median 22 content word pieces; nl cuts 30% of them,
first32 33%). Draws 0-2, chat Mixtral: base 0.551, first8 0.553, first16 0.550, first32 0.555,
first64 0.551, nl 0.549, sent 0.550, layer-3 versions 0.543-0.550, base+prefix 0.551-0.552.
Fresh draws 3-7 paired: first32 +0.0005, base+first32 +0.0012 (3/5 draws up each).
"""
import argparse, hashlib, re, sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from minilm_layers import OUT, MiniLM, texts_of  # noqa: E402

KS = (8, 16, 32, 64)
LAYERS = (3, 6)
SENT_END = re.compile(r"[.?!](?=\s)")


def cuts(text):
    """Character cut-offs: word pieces starting before the cut are pooled (None = whole prompt)."""
    lead = len(text) - len(text.lstrip())
    nl = text.find("\n", lead)
    m = SENT_END.search(text, lead)
    return {"nl": nl if nl >= 0 else None, "sent": m.end() if m else None}


def prefix_views(states, offsets, text):
    """states: list of (n, 384) per layer; offsets: per word piece (start, end) incl. [CLS]/[SEP]."""
    n = len(offsets)
    content = np.arange(1, n - 1)  # drop [CLS] and [SEP]
    sel = {f"first{k}": content[:k] for k in KS}
    starts = np.array([s for s, _ in offsets])
    for name, cut in cuts(text).items():
        sel[name] = content if cut is None else content[starts[content] < cut]
    out = {}
    for name, idx in sel.items():
        if len(idx) == 0:  # cannot happen for non-empty prompts; keep the whole prompt then
            idx = content
        out[name] = (np.stack([states[L][idx].mean(0) for L in LAYERS]), len(idx))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", default="alpaca,arena,gsm8k,mmlu")
    a = ap.parse_args()
    m = MiniLM()
    for name in a.sets.split(","):
        texts = texts_of(name)
        acc, keys = {}, []
        for i, t in enumerate(texts):
            states = m.layers(t)
            enc = m.tok.encode(t)
            assert len(enc.ids) == len(states[0])
            for v, (x, cnt) in prefix_views(states, enc.offsets, t).items():
                acc.setdefault(v, []).append(x)
                acc.setdefault(v + "_n", []).append(cnt)
            keys.append(hashlib.sha256(t.encode()).digest())
            if i % 500 == 0:
                print(f"{name}: {i}/{len(texts)}", file=sys.stderr, flush=True)
        arrays = {v: np.array(x, dtype=np.float32 if not v.endswith("_n") else np.int32) for v, x in acc.items()}
        np.savez(OUT / f"{name}_prefix.npz", keys=np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(-1, 32),
                 layers=np.array(LAYERS), **arrays)
        summary = ", ".join(f"{v} {np.median(arrays[v + '_n']):.0f}" for v in ("first64", "nl", "sent"))
        print(f"{name}: {len(texts)} prompts; median word pieces pooled: {summary}")


if __name__ == "__main__":
    main()