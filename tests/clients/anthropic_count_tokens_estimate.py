# The official `anthropic` package's `messages.count_tokens` against `serve --demo`, whose simulated
# models are OpenAI-compatible: no provider count endpoint, so the gateway estimates the count
# (OpenAI's cookbook method, cl100k_base) and says so in a header.
import os

import anthropic

client = anthropic.Anthropic(base_url=os.environ["SWITCHYARD_URL"], api_key="unused", max_retries=0)
raw = client.messages.with_raw_response.count_tokens(
    model="auto",
    system="Be brief.",
    messages=[{"role": "user", "content": "What is a river delta?"}],
)
assert raw.headers["x-switchyard-token-count"] == "estimated", raw.headers
# tiktoken: `system` 1 + `Be brief.` 3, `user` 1 + `What is a river delta?` 6; 3 a message, 3 to prime the reply
assert raw.parse().input_tokens == 20, raw.parse()

# a PDF cannot be estimated without reading it: the SDK's typed error, in Anthropic's shape
pdf = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}}
try:
    client.messages.count_tokens(model="auto", messages=[{"role": "user", "content": [pdf]}])
    raise AssertionError("a PDF must not be estimated")
except anthropic.BadRequestError as e:
    assert "not files or audio" in e.body["error"]["message"], e.body
print("ALL OK")
