"""The official `openai` Python package through the gateway to an Anthropic- or Gemini-format upstream.

Driven by tests/openai_client.rs, which starts a mock upstream speaking the provider's own wire
format and a gateway whose `cheap` tier points at it; SWITCHYARD_PROVIDER names which one (it is
checked against the x-switchyard-provider header). Exits non-zero on the first failure.
"""
import json
import os
import sys

from openai import OpenAI

base = os.environ["SWITCHYARD_BASE_URL"]
provider = os.environ["SWITCHYARD_PROVIDER"]
client = OpenAI(base_url=base, api_key="unused", max_retries=0)
weather = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
    },
}


def check(cond, what):
    if not cond:
        print(f"FAILED [{provider}]: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok [{provider}]: {what}")


# plain request with a system prompt
raw = client.chat.completions.with_raw_response.create(
    model="cheap",
    messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the capital of Peru?"}],
)
resp = raw.parse()
check(raw.headers.get("x-switchyard-provider") == provider, "served by the expected provider")
check(resp.choices[0].message.content.endswith("What is the capital of Peru?"), "content")
check(resp.choices[0].finish_reason == "stop", "finish_reason stop")
check(resp.usage is not None and resp.usage.total_tokens > 0, "usage")

# streamed text with usage
stream = client.chat.completions.create(
    model="cheap",
    messages=[{"role": "user", "content": "Name three lakes in Canada."}],
    stream=True,
    stream_options={"include_usage": True},
)
parts, usage, finish, roles = [], None, None, []
for chunk in stream:
    if chunk.object != "chat.completion.chunk":
        check(False, f"chunk object {chunk.object!r}")
    if chunk.usage:
        usage = chunk.usage
    for c in chunk.choices:
        if c.delta.role:
            roles.append(c.delta.role)
        if c.delta.content:
            parts.append(c.delta.content)
        if c.finish_reason:
            finish = c.finish_reason
check("".join(parts).endswith("Name three lakes in Canada."), "streamed content")
check(len(parts) > 3, "content arrives in several chunks")
check(roles == ["assistant"], "role sent once")
check(finish == "stop", "stream finish_reason stop")
check(usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0, "stream usage")

# streamed tool call, folded the way SDK users do it
stream = client.chat.completions.create(
    model="cheap",
    messages=[{"role": "user", "content": "Do I need a coat in Paris?"}],
    tools=[weather],
    stream=True,
)
calls, finish = {}, None
for chunk in stream:
    for c in chunk.choices:
        for d in c.delta.tool_calls or []:
            call = calls.setdefault(d.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += d.id or ""
            if d.function:
                call["name"] += d.function.name or ""
                call["arguments"] += d.function.arguments or ""
        if c.finish_reason:
            finish = c.finish_reason
check(list(calls) == [0], "one tool call at index 0")
check(calls[0]["id"] != "" and calls[0]["name"] == "get_weather", "tool call id and name")
check(json.loads(calls[0]["arguments"]) == {"location": "Paris"}, "tool call arguments reassembled")
check(finish == "tool_calls", "finish_reason tool_calls")

# the tool result turn
done = client.chat.completions.create(
    model="cheap",
    messages=[
        {"role": "user", "content": "Do I need a coat in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": calls[0]["id"], "type": "function",
                 "function": {"name": "get_weather", "arguments": calls[0]["arguments"]}}
            ],
        },
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": "9°C, windy"},
    ],
    tools=[weather],
)
check(done.choices[0].message.content == "tool said: 9°C, windy", "answer after the tool result")
print("ALL OK")
