"""The official `openai` Python package against a running Switchyard gateway.

Driven by tests/openai_client.rs, which starts the gateway (and its mock upstreams) and passes
the base URL in SWITCHYARD_BASE_URL. Exits non-zero on the first failure.
"""
import os
import sys

import openai
from openai import OpenAI

base = os.environ["SWITCHYARD_BASE_URL"]
model = os.environ.get("SWITCHYARD_MODEL", "cheap")
client = OpenAI(base_url=base, api_key=os.environ.get("SWITCHYARD_KEY", "unused"), max_retries=0)
question = os.environ.get("SWITCHYARD_QUESTION", "How do I reset my password?")
paraphrase = os.environ.get("SWITCHYARD_PARAPHRASE", "How can I reset my password?")


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


# non-streaming, with the raw response to read our headers
raw = client.chat.completions.with_raw_response.create(
    model=model, messages=[{"role": "user", "content": question}]
)
first = raw.parse()
check(raw.headers.get("x-switchyard-cache") == "miss", "first call is a miss")
check(first.choices[0].message.content, "first call has content")
check(first.choices[0].finish_reason == "stop", "finish_reason stop")
check(first.usage is not None and first.usage.total_tokens > 0, "usage present")

raw = client.chat.completions.with_raw_response.create(
    model=model, messages=[{"role": "user", "content": paraphrase}]
)
hit = raw.parse()
check(raw.headers.get("x-switchyard-cache") == "hit", "paraphrase is a cache hit")
check(float(raw.headers.get("x-switchyard-similarity")) > 0.9, "similarity header")
check(hit.choices[0].message.content == first.choices[0].message.content, "hit replays the answer")
check(hit.id != first.id, "hit has a fresh id")

# an answer taken back through the SDK's own request method: the question goes upstream again
gone = client.post(
    "/cache/invalidate", body={"model": model, "messages": [{"role": "user", "content": paraphrase}]}, cast_to=object
)
check(gone == {"object": "cache.invalidation", "deleted": 1}, f"invalidation through the SDK ({gone})")
raw = client.chat.completions.with_raw_response.create(
    model=model, messages=[{"role": "user", "content": question}]
)
check(raw.headers.get("x-switchyard-cache") == "miss", "taken back: the question is a miss again")

# streaming from upstream (a new question), with usage
stream_q = os.environ.get("SWITCHYARD_STREAM_QUESTION", "Name three rivers in Europe.")
stream = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": stream_q}],
    stream=True,
    stream_options={"include_usage": True},
)
parts, usage, finish = [], None, None
for chunk in stream:
    if chunk.usage:
        usage = chunk.usage
    for c in chunk.choices:
        if c.delta.content:
            parts.append(c.delta.content)
        if c.finish_reason:
            finish = c.finish_reason
streamed = "".join(parts)
check(len(streamed) > 0, "streamed content")
check(finish == "stop", "stream finish_reason")
check(usage is not None and usage.total_tokens > 0, "stream usage when include_usage")

# the same question streamed again comes from the cache, read through the raw response
raw = client.chat.completions.with_raw_response.create(
    model=model, messages=[{"role": "user", "content": stream_q}], stream=True
)
check(raw.headers.get("x-switchyard-cache") == "hit", "streamed repeat is a hit")
replayed = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
check(replayed == streamed, "stream replay matches")

# errors surface as the SDK's typed exceptions
try:
    client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    check(False, "unknown model raises")
except openai.NotFoundError as e:
    check(e.status_code == 404, "unknown model is a 404 NotFoundError")
try:
    client.chat.completions.create(model=model, messages=[])
    check(False, "empty messages raises")
except openai.BadRequestError as e:
    check(e.status_code == 400, "empty messages is a 400 BadRequestError")
    check(e.param == "messages", f"the error names messages (param {e.param!r})")
try:
    # the SDK's types say a number; Python sends what it is given
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}], temperature="hot")
    check(False, "a string temperature raises")
except openai.BadRequestError as e:
    check(e.param == "temperature", f"a wrongly typed field is named in BadRequestError.param (got {e.param!r})")

models = client.models.list()
check(any(m.id == "auto" for m in models.data), "models list includes auto")
emb = client.embeddings.create(model="all-MiniLM-L6-v2", input=["hello world"])
check(len(emb.data[0].embedding) == 384, "embeddings via the SDK (base64 decoding)")
# an upstream embedding model ([embeddings] in the test's config: text-embedding-3-small on a mock
# OpenAI server), with the SDK's default base64 encoding and `dimensions` passed on
emb = client.embeddings.create(model="text-embedding-3-small", input=["hello world", "goodbye"], dimensions=64)
check(emb.model == "text-embedding-3-small" and len(emb.data) == 2, "an upstream embedding model answers")
check(len(emb.data[1].embedding) == 64, "dimensions reach the upstream, base64 decoded by the SDK")
check(emb.usage.prompt_tokens == 3, f"the upstream's usage comes back (got {emb.usage.prompt_tokens})")
try:
    client.embeddings.create(model="text-embedding-3-large", input="hello")
    check(False, "an embedding model the gateway does not serve raises")
except openai.NotFoundError as e:
    check(e.status_code == 404, "an unserved embedding model is a 404, not the local model's vectors")
# OpenAI's other stateless endpoints pass through to the configured provider ([passthrough])
mod = client.moderations.create(model="omni-moderation-latest", input="how do I kill a zombie process?")
check(mod.results[0].flagged, "moderations pass through")
speech = client.audio.speech.create(model="tts-1", voice="alloy", input="hello")
check(speech.content == b"\xff\xfb\x90\x64hello", "speech audio bytes pass through")
tr = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", b"RIFF0000WAVE", "audio/wav"))
check(tr.text.endswith("form true"), f"a multipart transcription passes through ({tr.text!r})")
print("ALL OK")
