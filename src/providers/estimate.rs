//! The input tokens of a chat request for an OpenAI-compatible upstream, estimated here: OpenAI
//! has no count endpoint for a chat request, and a Messages client (Claude Code, the `anthropic`
//! SDK's `messages.count_tokens`) routed to such a model should get a number, not a 400.
//!
//! The method is OpenAI's own (the cookbook's "How to count tokens with tiktoken"): text in
//! `cl100k_base` (the GPT-4 / GPT-3.5 encoding; the GPT-4o family's `o200k_base` gives a few
//! percent fewer tokens on English, other vendors' models their own), 3 tokens to frame each
//! message and 1 for a name, 3 to prime the reply, and tools as its `num_tokens_for_tools` (written
//! for the GPT-4o family). On the
//! cookbook's example conversation this gives the 129 tokens the API reported for GPT-4.
//! What the cookbook does not cover is approximated and said so: a nested parameter schema counts
//! as its JSON, a tool call as its name and arguments, an image at the high-detail price of a
//! 1024×1024 image (765 tokens; 85 at `detail: "low"`). Files and audio cannot be estimated
//! without decoding them.

use serde_json::Value;

use super::ProviderError;
use crate::api::{ChatRequest, Content, ContentPart, Role, Tool};
use crate::embed::cl100k::count;

const PER_MESSAGE: u64 = 3;
const PER_NAME: u64 = 1;
const REPLY_PRIMING: u64 = 3;
const IMAGE_HIGH: u64 = 765;
const IMAGE_LOW: u64 = 85;

/// The estimate, or `Unsupported` for a request with a file or audio part.
pub fn input_tokens(req: &ChatRequest) -> Result<u64, ProviderError> {
    let mut n = REPLY_PRIMING;
    for m in &req.messages {
        n += PER_MESSAGE + count(role(m.role)) as u64;
        if let Some(name) = &m.name {
            n += PER_NAME + count(name) as u64;
        }
        match &m.content {
            Some(Content::Text(t)) => n += count(t) as u64,
            Some(Content::Parts(parts)) => {
                for p in parts {
                    n += match p {
                        ContentPart::Text { text, .. } => count(text) as u64,
                        ContentPart::ImageUrl { image_url, .. } if image_url.detail.as_deref() == Some("low") => {
                            IMAGE_LOW
                        }
                        ContentPart::ImageUrl { .. } => IMAGE_HIGH,
                        ContentPart::InputAudio { .. } | ContentPart::File { .. } | ContentPart::Unknown => {
                            return Err(ProviderError::unsupported(
                                "a token estimate covers text, images and tools, not files or audio",
                            ))
                        }
                    };
                }
            }
            None => {}
        }
        for call in m.tool_calls.iter().flatten() {
            n += (count(&call.function.name) + count(&call.function.arguments)) as u64;
        }
    }
    Ok(n + tools(req.tools.as_deref().unwrap_or_default()))
}

fn role(r: Role) -> &'static str {
    match r {
        Role::System => "system",
        Role::Developer => "developer",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
        Role::Function => "function",
    }
}

/// The cookbook's `num_tokens_for_tools`: 7 a function and its `name:description`, 3 for its
/// properties and 3 plus `key:type:description` each (an enum: 3 less, then 3 and the value per
/// item), 12 at the end. What a property holds besides those (a nested schema) counts as its JSON.
fn tools(tools: &[Tool]) -> u64 {
    if tools.is_empty() {
        return 0;
    }
    let one_dot = |s: &str| s.strip_suffix('.').unwrap_or(s).to_string();
    let mut n: i64 = 12;
    for t in tools {
        let f = &t.function;
        n += 7 + count(&format!("{}:{}", f.name, one_dot(f.description.as_deref().unwrap_or_default()))) as i64;
        let props = f.parameters.as_ref().and_then(|p| p.get("properties")).and_then(Value::as_object);
        let Some(props) = props.filter(|p| !p.is_empty()) else { continue };
        n += 3;
        for (key, p) in props {
            n += 3;
            let text = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or_default();
            if let Some(items) = p.get("enum").and_then(Value::as_array) {
                n -= 3;
                for item in items {
                    let s = item.as_str().map_or_else(|| item.to_string(), str::to_string);
                    n += 3 + count(&s) as i64;
                }
            }
            n += count(&format!("{key}:{}:{}", text("type"), one_dot(text("description")))) as i64;
            if let Some(obj) = p.as_object() {
                let rest: serde_json::Map<String, Value> = obj
                    .iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "type" | "description" | "enum"))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if !rest.is_empty() {
                    n += count(&Value::Object(rest).to_string()) as i64;
                }
            }
        }
    }
    n.max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(v: Value) -> ChatRequest {
        serde_json::from_value(v).unwrap()
    }

    /// The cookbook's example conversation: the OpenAI API counted 129 prompt tokens for it on
    /// GPT-4 and GPT-3.5-turbo-0613, and so does the cookbook's function.
    #[test]
    fn the_cookbook_example_counts_129() {
        let r = req(json!({"model": "gpt-4", "messages": [
            {"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English."},
            {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
            {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
            {"role": "system", "name": "example_user", "content": "Let's circle back when we have more time to touch base on opportunities for increased leverage."},
            {"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to do better."},
            {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client deliverable."}
        ]}));
        assert_eq!(input_tokens(&r).unwrap(), 129);
    }

    /// Tools as the cookbook counts them; the expected number is its Python function's on the
    /// same tool with tiktoken's cl100k_base (68), plus the nested schema's JSON.
    #[test]
    fn tools_images_and_files() {
        let tool = json!({"type": "function", "function": {"name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {"type": "object", "properties": {
                "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                "unit": {"type": "string", "description": "The unit of temperature to return", "enum": ["celsius", "fahrenheit"]}},
                "required": ["location"]}}});
        let base = json!({"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]});
        let plain = input_tokens(&req(base.clone())).unwrap();
        assert_eq!(plain, 3 + 1 + 1 + 3, "framing, `user`, `hi`, priming");
        let mut with_tool = base.clone();
        with_tool["tools"] = json!([tool]);
        assert_eq!(input_tokens(&req(with_tool.clone())).unwrap() - plain, 68);
        // a nested schema counts as its JSON
        with_tool["tools"][0]["function"]["parameters"]["properties"]["unit"]["items"] = json!({"type": "string"});
        let nested = count(r#"{"items":{"type":"string"}}"#) as u64;
        assert_eq!(input_tokens(&req(with_tool)).unwrap() - plain, 68 + nested);

        let image = |detail: &str| {
            req(json!({"model": "gpt-4o", "messages": [{"role": "user", "content": [
                {"type": "text", "text": "hi"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": detail}}]}]}))
        };
        assert_eq!(input_tokens(&image("low")).unwrap(), plain + 85);
        assert_eq!(input_tokens(&image("auto")).unwrap(), plain + 765);
        let file = req(json!({"model": "gpt-4o", "messages": [{"role": "user", "content": [
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0x", "filename": "a.pdf"}}]}]}));
        assert!(matches!(input_tokens(&file), Err(ProviderError::Unsupported(_))));
        // a tool call and its result count
        let calls = req(json!({"model": "gpt-4", "messages": [
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_current_weather", "arguments": "{\"location\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "18C"}]}));
        let want = 3
            + 2 * 3
            + count("assistant")
            + count("tool")
            + count("get_current_weather")
            + count("{\"location\":\"Paris\"}")
            + count("18C");
        assert_eq!(input_tokens(&calls).unwrap(), want as u64);
    }
}
