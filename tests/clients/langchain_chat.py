# LangChain's ChatOpenAI (pip install langchain-openai) against Switchyard.
# Run `switchyard serve --demo` first (tests/clients.rs runs this file).
import os

from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

llm = ChatOpenAI(
    base_url=os.environ.get("SWITCHYARD_URL", "http://127.0.0.1:8080") + "/v1",
    api_key=os.environ.get("SWITCHYARD_KEY", "unused"),
    model="auto",
    max_retries=0,
)

reply = llm.invoke("How do I reset my password?")
assert reply.content

streamed = "".join(chunk.content for chunk in llm.stream("Name three rivers in Europe."))
assert streamed


@tool
def get_weather(city: str) -> str:
    """Current weather for a city."""
    return f"18 degrees and sunny in {city}"


# tool binding: the model asks for the tool, we run it and send back its result
with_tools = llm.bind_tools([get_weather])
question = HumanMessage("What is the weather in Paris?")
ai = with_tools.invoke([question])
assert ai.tool_calls[0]["name"] == "get_weather" and ai.tool_calls[0]["args"] == {"city": "Paris"}
result = ToolMessage(get_weather.invoke(ai.tool_calls[0]["args"]), tool_call_id=ai.tool_calls[0]["id"])
final = with_tools.invoke([question, ai, result])
assert "18 degrees" in final.content

# streamed tool calls are assembled by LangChain from the chunks
chunks = list(with_tools.stream([question]))
assembled = chunks[0]
for c in chunks[1:]:
    assembled = assembled + c
assert assembled.tool_calls[0]["args"] == {"city": "Paris"}


class Person(BaseModel):
    name: str
    age: int


# structured output (a json_schema response_format), parsed into the model
person = llm.with_structured_output(Person).invoke("Extract the person: Alice is 30 years old.")
assert person == Person(name="Alice", age=30)
print("ALL OK")
