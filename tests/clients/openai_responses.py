# The official `openai` Python package's Responses API against Switchyard's /v1/responses.
# pip install openai; run `switchyard serve --demo` first (tests/clients.rs runs this file).
import json
import os

import openai

client = openai.OpenAI(
    base_url=os.environ.get("SWITCHYARD_URL", "http://127.0.0.1:8080") + "/v1",
    api_key=os.environ.get("SWITCHYARD_KEY", "unused"),
    max_retries=0,
)

# a response; `model="auto"` lets the router pick the tier
first = client.responses.create(model="auto", instructions="Answer briefly.", input="How do I reset my password?")
assert first.status == "completed" and first.output_text and first.usage.output_tokens > 0

# a paraphrase is answered from the semantic cache
raw = client.responses.with_raw_response.create(
    model="auto", instructions="Answer briefly.", input="How can I reset my password?"
)
assert raw.headers["x-switchyard-cache"] == "hit"
assert raw.parse().output_text == first.output_text

# a follow-up continues the stored conversation, and the stored response can be read back
follow = client.responses.create(model="auto", input="And on my phone?", previous_response_id=first.id)
assert follow.previous_response_id == first.id and follow.output_text
assert client.responses.retrieve(first.id).output_text == first.output_text
# what it was made from: the first turn (input and output) and its own input, newest first
items = client.responses.input_items.list(follow.id)
assert [i.role for i in items.data] == ["user", "assistant", "user"]
assert items.data[0].content[0].text == "And on my phone?" and items.data[1].id == first.output[0].id
# iterating pages through them (one item a page here, oldest first) with the SDK's cursor
paged = [i.id for i in client.responses.input_items.list(follow.id, order="asc", limit=1)]
assert paged == [i.id for i in reversed(items.data)]

# streaming, with the SDK's own event accumulation
with client.responses.stream(model="auto", input="Name three rivers in Europe.") as stream:
    streamed = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
    final = stream.get_final_response()
assert streamed and final.output_text == streamed and final.status == "completed"

# reasoning (the demo reasons when asked, as reasoning models do): a reasoning item first,
# its summary streamed as reasoning_summary_text deltas
thought = client.responses.create(model="auto", input="Is 1009 a prime number?", reasoning={"effort": "low"})
assert thought.output[0].type == "reasoning" and thought.output[0].summary[0].text.startswith("Thinking")
assert thought.output_text and thought.output[1].type == "message"
with client.responses.stream(model="auto", input="Is 4001 a prime number?", reasoning={"effort": "low"}) as stream:
    summary = "".join(e.delta for e in stream if e.type == "response.reasoning_summary_text.delta")
    final = stream.get_final_response()
assert summary == final.output[0].summary[0].text and summary.endswith("Is 4001 a prime number?")

# function tools: the model calls one, its output goes back with previous_response_id
tools = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]
called = client.responses.create(model="auto", input="What is the weather in Paris?", tools=tools)
call = next(item for item in called.output if item.type == "function_call")
assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
answered = client.responses.create(
    model="auto",
    previous_response_id=called.id,
    input=[{"type": "function_call_output", "call_id": call.call_id, "output": "18C and sunny"}],
    tools=tools,
)
assert "18C and sunny" in answered.output_text

# errors are the SDK's typed exceptions
try:
    client.responses.create(model="auto", input="x", previous_response_id="resp_unknown")
    raise AssertionError("an unknown previous response must be refused")
except openai.NotFoundError as e:
    assert e.code == "previous_response_not_found"
client.responses.delete(first.id)
try:
    client.responses.retrieve(first.id)
    raise AssertionError("a deleted response must be gone")
except openai.NotFoundError:
    pass
print("ALL OK")
