// The official `openai` Node package against Switchyard.
// npm install openai; run `switchyard serve --demo` first (tests/clients.rs runs this file).
import assert from "node:assert/strict";
import OpenAI from "openai";

const client = new OpenAI({
  baseURL: (process.env.SWITCHYARD_URL ?? "http://127.0.0.1:8080") + "/v1",
  apiKey: process.env.SWITCHYARD_KEY ?? "unused",
  maxRetries: 0,
});

const ask = (content) => [{ role: "user", content }];
const first = await client.chat.completions.create({ model: "auto", messages: ask("How do I reset my password?") });
assert.ok(first.choices[0].message.content);

// a paraphrase comes from the semantic cache (our headers say how each request was served)
const { data: hit, response } = await client.chat.completions
  .create({ model: "auto", messages: ask("How can I reset my password?") })
  .withResponse();
assert.equal(response.headers.get("x-switchyard-cache"), "hit");
assert.equal(hit.choices[0].message.content, first.choices[0].message.content);

// streaming, with usage at the end
const stream = await client.chat.completions.create({
  model: "auto",
  messages: ask("Name three rivers in Europe."),
  stream: true,
  stream_options: { include_usage: true },
});
let text = "";
let usage = null;
for await (const chunk of stream) {
  text += chunk.choices[0]?.delta?.content ?? "";
  usage = chunk.usage ?? usage;
}
assert.ok(text.length > 0 && usage.total_tokens > 0);

// tools
const tools = [
  {
    type: "function",
    function: {
      name: "get_weather",
      description: "Current weather for a city",
      parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
    },
  },
];
const called = await client.chat.completions.create({ model: "auto", messages: ask("What is the weather in Paris?"), tools });
const call = called.choices[0].message.tool_calls[0];
assert.equal(called.choices[0].finish_reason, "tool_calls");
assert.deepEqual(JSON.parse(call.function.arguments), { city: "Paris" });

// the Responses API is the same pipeline: this request is the first one above, so the cache answers
const { data: resp, response: raw } = await client.responses
  .create({ model: "auto", input: "How do I reset my password?" })
  .withResponse();
assert.equal(raw.headers.get("x-switchyard-cache"), "hit");
assert.equal(resp.output_text, first.choices[0].message.content);
const events = await client.responses.create({ model: "auto", input: "Name two oceans.", stream: true });
let streamed = "";
for await (const e of events) if (e.type === "response.output_text.delta") streamed += e.delta;
assert.ok(streamed.length > 0);
// what a response was made from, walked with the SDK's async iterator (one item a page)
const listed = [];
for await (const item of client.responses.inputItems.list(resp.id, { limit: 1 })) listed.push(item);
assert.deepEqual(listed.map((i) => [i.role, i.content[0].text]), [["user", "How do I reset my password?"]]);

// unknown models are a typed 404
await assert.rejects(
  client.chat.completions.create({ model: "no-such-model", messages: ask("x") }),
  (e) => e instanceof OpenAI.NotFoundError,
);
console.log("ALL OK");
