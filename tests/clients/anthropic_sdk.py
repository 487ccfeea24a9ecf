# The official `anthropic` Python package against Switchyard's /v1/messages.
# pip install anthropic; run `switchyard serve --demo` first (tests/clients.rs runs this file).
import os

import anthropic

client = anthropic.Anthropic(
    base_url=os.environ.get("SWITCHYARD_URL", "http://127.0.0.1:8080"),  # no /v1: the SDK adds it
    api_key=os.environ.get("SWITCHYARD_KEY", "unused"),  # sent as x-api-key
    max_retries=0,
)

# a message; `model="auto"` lets the router pick the tier ("cheap"/"premium" or a model name also work)
msg = client.messages.create(
    model="auto",
    max_tokens=256,
    system="Answer briefly.",
    messages=[{"role": "user", "content": "How do I reset my password?"}],
)
assert msg.content[0].type == "text" and msg.stop_reason == "end_turn" and msg.usage.output_tokens > 0

# a paraphrase is answered from the semantic cache
raw = client.messages.with_raw_response.create(
    model="auto",
    max_tokens=256,
    system="Answer briefly.",
    messages=[{"role": "user", "content": "How can I reset my password?"}],
)
assert raw.headers["x-switchyard-cache"] == "hit"
assert raw.parse().content[0].text == msg.content[0].text

# streaming, in Anthropic's event format
with client.messages.stream(
    model="auto", max_tokens=256, messages=[{"role": "user", "content": "Name three rivers in Europe."}]
) as stream:
    streamed = "".join(stream.text_stream)
    final = stream.get_final_message()
assert streamed and final.content[0].text == streamed and final.stop_reason == "end_turn"

# tools: the model asks for a call, the tool's result goes back as a tool_result block
tools = [
    {
        "name": "get_weather",
        "description": "Current weather for a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]
question = {"role": "user", "content": "What is the weather in Paris?"}
msg = client.messages.create(model="auto", max_tokens=256, tools=tools, messages=[question])
call = next(b for b in msg.content if b.type == "tool_use")
assert msg.stop_reason == "tool_use" and call.name == "get_weather" and call.input == {"city": "Paris"}
result = {"type": "tool_result", "tool_use_id": call.id, "content": "18 degrees and sunny"}
with client.messages.stream(
    model="auto",
    max_tokens=256,
    tools=tools,
    messages=[question, {"role": "assistant", "content": msg.content}, {"role": "user", "content": [result]}],
) as stream:
    answer = stream.get_final_message()
assert "18 degrees" in answer.content[0].text

# a streamed tool call arrives as input_json_delta events, assembled by the SDK
with client.messages.stream(model="auto", max_tokens=256, tools=tools, messages=[question]) as stream:
    streamed_call = stream.get_final_message().content[0]
assert streamed_call.type == "tool_use" and streamed_call.input == {"city": "Paris"}

# errors arrive in Anthropic's shape, as the SDK's typed exceptions
try:
    client.messages.create(model="no-such-model", max_tokens=16, messages=[question])
    raise AssertionError("an unknown model must fail")
except anthropic.NotFoundError as e:
    assert e.body["type"] == "error" and e.body["error"]["type"] == "not_found_error"
print("ALL OK")
