"""cl100k_base.tiktoken (base64 token, rank per line) -> cl100k_base.ranks (length byte + bytes, rank order)."""
import base64, hashlib, sys

src, dst = sys.argv[1], sys.argv[2]
assert hashlib.sha256(open(src, "rb").read()).hexdigest() == "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
toks = {}
for line in open(src, "rb"):
    b, r = line.split()
    toks[int(r)] = base64.b64decode(b)
assert sorted(toks) == list(range(len(toks)))
out = bytearray()
for i in range(len(toks)):
    assert len(toks[i]) < 256
    out.append(len(toks[i]))
    out += toks[i]
open(dst, "wb").write(out)
print(len(toks), len(out), hashlib.sha256(out).hexdigest())
