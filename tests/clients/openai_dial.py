# The official `openai` package against `serve --demo`, for a client that can set a model but no
# header: the premium share for one request rides in the model name (`auto:0.1`).
import os

from openai import BadRequestError, OpenAI

client = OpenAI(base_url=os.environ["SWITCHYARD_URL"] + "/v1", api_key="unused", max_retries=0)
question = [{"role": "user", "content": "Can you explain quantum entanglement to a physicist?"}]
for model, tier in [("auto:0", "cheap"), ("auto:1", "premium")]:
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=question, extra_headers={"cache-control": "no-store"}
    )
    assert raw.headers["x-switchyard-tier"] == tier, (model, raw.headers)
    assert raw.parse().choices[0].message.content
try:
    client.chat.completions.create(model="auto:2", messages=question)
    raise AssertionError("a share above 1 must be refused")
except BadRequestError as e:
    assert e.body["param"] == "model", e.body
print("ALL OK")
