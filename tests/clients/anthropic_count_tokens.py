# The official `anthropic` package's `messages.count_tokens` against Switchyard. tests/clients.rs
# starts the gateway in front of a mock Anthropic upstream, runs this file, then checks what the
# upstream received. The mock counts 2 system words + 3 per message + 5 message words = 10.
import os

import anthropic

client = anthropic.Anthropic(base_url=os.environ["SWITCHYARD_URL"], api_key="unused", max_retries=0)
counted = client.messages.count_tokens(
    model="auto",
    system="Be brief.",
    messages=[{"role": "user", "content": "What is a river delta?"}],
)
assert counted.input_tokens == 10, counted

# a model the gateway does not have: the SDK's typed error, in Anthropic's shape
try:
    client.messages.count_tokens(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    raise AssertionError("an unknown model must fail")
except anthropic.NotFoundError as e:
    assert e.body["error"]["type"] == "not_found_error"
print("ALL OK")
