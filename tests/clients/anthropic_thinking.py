# The official `anthropic` package with extended thinking against Switchyard. tests/clients.rs
# starts the gateway in front of a mock Anthropic upstream (which signs its thinking and refuses a
# tool-use turn sent back without it), runs this file, then checks what the upstream received.
import os

import anthropic

client = anthropic.Anthropic(base_url=os.environ["SWITCHYARD_URL"], api_key="unused", max_retries=0)
thinking = {"type": "enabled", "budget_tokens": 1024}
tools = [{
    "name": "get_weather",
    "description": "Current weather for a place",
    "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
}]

# the answer opens with the model's signed thinking
messages = [{"role": "user", "content": "Is it raining in Paris?"}]
first = client.messages.create(model="auto", max_tokens=2048, thinking=thinking, tools=tools, messages=messages)
assert first.content[0].type == "thinking", first
assert first.content[0].thinking == "Considering: Is it raining in Paris?", first
assert first.content[0].signature, first
assert first.stop_reason == "tool_use", first

# the tool loop: the answer's content goes back as it came, thinking block and signature included
call = next(b for b in first.content if b.type == "tool_use")
messages += [
    {"role": "assistant", "content": first.content},
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "light rain"}]},
]
second = client.messages.create(model="auto", max_tokens=2048, thinking=thinking, tools=tools, messages=messages)
assert second.content[-1].type == "text" and second.content[-1].text == "tool said: light rain", second

# streamed: the SDK assembles the thinking block, its signature from the signature_delta
with client.messages.stream(
    model="auto", max_tokens=2048, thinking=thinking,
    messages=[{"role": "user", "content": "Name a quiet museum in Rome."}],
) as stream:
    thoughts = "".join(e.thinking for e in stream if e.type == "thinking")
    final = stream.get_final_message()
assert thoughts == "Considering: Name a quiet museum in Rome.", thoughts
assert final.content[0].type == "thinking" and final.content[0].thinking == thoughts, final
assert final.content[0].signature.startswith("EqQBmock"), final
assert final.content[1].type == "text" and final.content[1].text, final
print("ALL OK")
