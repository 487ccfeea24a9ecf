#!/usr/bin/env python3
"""Writes tests/fixtures/cl100k_encode.jsonl: texts and the ids OpenAI's tiktoken encodes them to
(`encode_ordinary`, cl100k_base), the reference `src/embed/cl100k.rs`'s encoder is tested against.

tiktoken downloads its vocabulary at run time; where that is not reachable, rebuild the file from
the vendored one (its SHA-256 is then checked by tiktoken against OpenAI's published hash):

  python eval/scripts/make_cl100k_fixture.py --rebuild-cache /tmp/tk
  TIKTOKEN_CACHE_DIR=/tmp/tk python eval/scripts/make_cl100k_fixture.py

Texts: edge cases (whitespace runs, contractions, long runs of one character, emoji, CJK,
combining marks, CRLF, code), 300 random strings over a mixed alphabet, and 150 dev prompts
(every 88th of the routing files, in file order). On this machine the encoder was also checked
against all 17,772 dev prompts and QQP questions: every id identical.
"""
import argparse, base64, glob, hashlib, json, os, random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"

EDGE = ["", " ", "  ", "\n", "\n\n\n", "a  \n  b", "hello   ", "   hello", "I'm you'RE they'll we'VE it's",
        "12345678901", "x=1+2*3;;;;;;;", "😀😀 emoji 🚀", "日本語のテキストです。", "Ünïcödé çåsé",
        "\t\ttabs\tand  spaces \r\n crlf", "-" * 1000, "=" * 600 + "\n", "a" * 3000, " " * 700 + "x",
        "def f(x):\n    return x ** 2\n\n\n", "<|endoftext|> special", "URL https://example.com/a?b=c&d=e#f",
        "   \n   \n", "\u00a0nbsp\u2003em", "ab\u0301c", "x" + "!" * 2000]


def rebuild(cache):
    raw = (ROOT / "assets/tiktoken/cl100k_base.ranks").read_bytes()
    lines, at, rank = [], 0, 0
    while at < len(raw):
        n = raw[at]
        lines.append(base64.b64encode(raw[at + 1:at + 1 + n]) + b" " + str(rank).encode())
        at, rank = at + 1 + n, rank + 1
    os.makedirs(cache, exist_ok=True)
    Path(cache, hashlib.sha1(URL.encode()).hexdigest()).write_bytes(b"\n".join(lines) + b"\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rebuild-cache")
    a = ap.parse_args()
    if a.rebuild_cache:
        return rebuild(a.rebuild_cache)
    import tiktoken
    enc = tiktoken.get_encoding("cl100k_base")
    prompts = []
    for f in sorted(glob.glob(str(ROOT / "eval/data/routing/*.jsonl"))):
        prompts += [json.loads(l)["prompt"] for l in open(f, encoding="utf-8")]
    rng = random.Random(1)
    rand = ["".join(rng.choice(" \n\tab'1é😀.,;:-_ABC世") for _ in range(rng.randint(1, 80))) for _ in range(300)]
    texts = list(dict.fromkeys(EDGE + rand + prompts[::88]))
    with open(ROOT / "tests/fixtures/cl100k_encode.jsonl", "w", encoding="utf-8") as out:
        for t in texts:
            out.write(json.dumps({"text": t, "ids": enc.encode_ordinary(t)}, ensure_ascii=False) + "\n")
    print(len(texts), "texts")


if __name__ == "__main__":
    main()
