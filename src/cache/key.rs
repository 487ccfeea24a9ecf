//! What a cached answer is keyed by.
//!
//! The **namespace** is everything that must be identical for an answer to be reusable: the tenant,
//! the model or tier asked for, the system prompt(s), every message other than the last user
//! message (earlier turns before it; tool calls and results after it), and the parameters that
//! shape the output (tools, tool_choice, response_format, n, a temperature bucket, stop, max tokens,
//! seed, and any pass-through field). Only the last user message is compared by meaning, and only
//! within one namespace. The **exact key** adds the normalised text of that message.

use sha2::{Digest, Sha256};

use crate::api::{ChatRequest, Content, ContentPart, Role};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Namespace(pub [u8; 16]);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ExactKey(pub [u8; 32]);

#[derive(Debug, Clone)]
pub struct CacheKey {
    pub namespace: Namespace,
    pub exact: ExactKey,
    /// The text compared by meaning: the last user message, whitespace-normalised.
    pub query: String,
}

/// Temperatures close together give answers of the same character; 0 stays apart from the rest.
fn temperature_bucket(t: Option<f64>) -> String {
    match t {
        None => "default".into(),
        Some(0.0) => "0".into(),
        Some(t) => format!("{:.2}", (t * 4.0).ceil() / 4.0),
    }
}

fn normalise(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl CacheKey {
    /// `None` when the request has no user message to compare (then it is not cached).
    pub fn new(req: &ChatRequest, tenant: &str, target: &str) -> Option<CacheKey> {
        let last_user = req.messages.iter().rposition(|m| m.role == Role::User)?;
        let query_msg = &req.messages[last_user];
        // Non-text parts (images, audio, files) of the compared message must match exactly.
        let non_text: Vec<&ContentPart> = match &query_msg.content {
            Some(Content::Parts(p)) => p.iter().filter(|p| !matches!(p, ContentPart::Text { .. })).collect(),
            _ => Vec::new(),
        };
        let query = normalise(&query_msg.text_content());

        let mut conv = Sha256::new();
        field(&mut conv, "tenant", tenant.as_bytes());
        for (i, m) in req.messages.iter().enumerate() {
            if i == last_user {
                field(&mut conv, "query-slot", b"");
                continue;
            }
            let json = serde_json::to_vec(m).unwrap_or_default();
            field(&mut conv, if i < last_user { "before" } else { "after" }, &json);
        }
        let mut ns = conv;
        field(&mut ns, "target", target.as_bytes());
        field(&mut ns, "non-text", &serde_json::to_vec(&non_text).unwrap_or_default());
        field(&mut ns, "tools", &serde_json::to_vec(&req.tools).unwrap_or_default());
        field(&mut ns, "tool_choice", &serde_json::to_vec(&req.tool_choice).unwrap_or_default());
        field(&mut ns, "response_format", &serde_json::to_vec(&req.response_format).unwrap_or_default());
        field(&mut ns, "n", req.n.unwrap_or(1).to_string().as_bytes());
        field(&mut ns, "temperature", temperature_bucket(req.temperature).as_bytes());
        field(&mut ns, "stop", &serde_json::to_vec(&req.stop).unwrap_or_default());
        field(&mut ns, "max_tokens", format!("{:?}", req.max_output_tokens()).as_bytes());
        field(&mut ns, "seed", format!("{:?}", req.seed).as_bytes());
        // pass-through fields (logprobs, presence_penalty, …); serde_json's map is sorted
        field(&mut ns, "extra", &serde_json::to_vec(&req.extra).unwrap_or_default());
        // only when asked for, so every other request keeps the namespace it had before the field
        if let Some(t) = &req.anthropic_thinking {
            field(&mut ns, "anthropic_thinking", &serde_json::to_vec(t).unwrap_or_default());
        }
        if let Some(k) = req.anthropic_top_k {
            field(&mut ns, "anthropic_top_k", k.to_string().as_bytes());
        }
        if let Some(b) = &req.anthropic_beta {
            field(&mut ns, "anthropic_beta", b.as_bytes());
        }
        let namespace = Namespace(truncate16(ns.finalize().into()));

        let mut ex = Sha256::new();
        field(&mut ex, "ns", &namespace.0);
        field(&mut ex, "query", query.as_bytes());
        let exact = ExactKey(ex.finalize().into());
        Some(CacheKey { namespace, exact, query })
    }
}

/// Where a request sits in its conversation, for routing affinity. Computed from the messages,
/// not the cache key, so affinity works whether or not the cache is in play (cache off,
/// `Cache-Control: no-store`, a key without cache).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thread {
    /// Tenant plus every message up to and including the first user message: what every turn
    /// of the conversation carries, the first turn included.
    pub opener: Namespace,
    /// The opener plus every message up to and including the first assistant reply; `None` on
    /// a first turn. Two conversations that open with the same message (a greeting, a stock
    /// question) part here, because their replies differ; a premium turn after the reply is
    /// remembered under this key, so it does not pull the other conversations up with it.
    pub reply: Option<Namespace>,
}

impl Thread {
    /// The key this turn's premium decision is remembered under.
    pub fn slot(&self) -> Namespace {
        self.reply.unwrap_or(self.opener)
    }
}

/// The [`Thread`] of a request; `None` when it has no user message.
pub fn thread_of(req: &ChatRequest, tenant: &str) -> Option<Thread> {
    let first_user = req.messages.iter().position(|m| m.role == Role::User)?;
    let mut th = Sha256::new();
    field(&mut th, "tenant", tenant.as_bytes());
    for m in &req.messages[..=first_user] {
        field(&mut th, "m", &serde_json::to_vec(m).unwrap_or_default());
    }
    let opener = Namespace(truncate16(th.clone().finalize().into()));
    let reply = req.messages[first_user + 1..].iter().position(|m| m.role == Role::Assistant).map(|i| {
        for m in &req.messages[first_user + 1..=first_user + 1 + i] {
            field(&mut th, "m", &serde_json::to_vec(m).unwrap_or_default());
        }
        Namespace(truncate16(th.finalize().into()))
    });
    Some(Thread { opener, reply })
}

/// Length-prefixed so that no two different field sequences hash the same.
fn field(h: &mut Sha256, name: &str, value: &[u8]) {
    h.update((name.len() as u64).to_le_bytes());
    h.update(name.as_bytes());
    h.update((value.len() as u64).to_le_bytes());
    h.update(value);
}

fn truncate16(full: [u8; 32]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: &str) -> ChatRequest {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn namespace_separates_what_must_not_share_answers() {
        let base = r#"{"model":"auto","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"How do I reset my password?"}]}"#;
        let k = CacheKey::new(&req(base), "t1", "auto").unwrap();
        assert_eq!(k.query, "How do I reset my password?");
        let same = CacheKey::new(&req(&base.replace("my password?", "my  password? ")), "t1", "auto").unwrap();
        assert_eq!(k.exact, same.exact);
        let other_tenant = CacheKey::new(&req(base), "t2", "auto").unwrap();
        assert_ne!(k.namespace, other_tenant.namespace);
        let other_system = CacheKey::new(&req(&base.replace("Be brief.", "Be verbose.")), "t1", "auto").unwrap();
        assert_ne!(k.namespace, other_system.namespace);
        let hot =
            CacheKey::new(&req(&base.replace("\"auto\",", "\"auto\",\"temperature\":1.5,")), "t1", "auto").unwrap();
        assert_ne!(k.namespace, hot.namespace);
        let other_model = CacheKey::new(&req(base), "t1", "premium").unwrap();
        assert_ne!(k.namespace, other_model.namespace);
        // a Messages client's extended thinking changes the answer's content
        let mut thinking = req(base);
        thinking.anthropic_thinking = Some(serde_json::json!({"type": "enabled", "budget_tokens": 1024}));
        assert_ne!(k.namespace, CacheKey::new(&thinking, "t1", "auto").unwrap().namespace);
        // and so does its top_k
        let mut top_k = req(base);
        top_k.anthropic_top_k = Some(5);
        assert_ne!(k.namespace, CacheKey::new(&top_k, "t1", "auto").unwrap().namespace);
        // and the client's beta flags (they can change what Anthropic answers)
        let mut beta = req(base);
        beta.anthropic_beta = Some("interleaved-thinking-2025-05-14".into());
        assert_ne!(k.namespace, CacheKey::new(&beta, "t1", "auto").unwrap().namespace);
        // the compared message itself does not enter the namespace
        let para = CacheKey::new(&req(&base.replace("How do I", "How can I")), "t1", "auto").unwrap();
        assert_eq!(k.namespace, para.namespace);
        assert_ne!(k.exact, para.exact);
    }

    #[test]
    fn every_turn_of_a_conversation_shares_its_opener_and_parts_from_others_at_the_reply() {
        let first = r#"{"model":"auto","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Explain entanglement."}]}"#;
        let later = r#"{"model":"auto","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Explain entanglement."},{"role":"assistant","content":"It is a correlation."},{"role":"user","content":"Shorter?"}]}"#;
        let t1 = thread_of(&req(first), "t1").unwrap();
        assert_eq!(t1.reply, None);
        assert_eq!(t1.slot(), t1.opener);
        let t2 = thread_of(&req(later), "t1").unwrap();
        assert_eq!(t2.opener, t1.opener);
        let reply = t2.reply.expect("a turn after a reply has a reply key");
        assert_eq!(t2.slot(), reply);
        // a third turn carries the same opener and reply
        let third = later.replace(
            r#""Shorter?"}"#,
            r#""Shorter?"},{"role":"assistant","content":"Linked."},{"role":"user","content":"Thanks"}"#,
        );
        assert_eq!(thread_of(&req(&third), "t1"), Some(t2));
        // another conversation with the same opener parts at its own reply
        let other_reply = later.replace("It is a correlation.", "Two particles share one state.");
        let t3 = thread_of(&req(&other_reply), "t1").unwrap();
        assert_eq!(t3.opener, t1.opener);
        assert_ne!(t3.reply, Some(reply));

        assert_ne!(thread_of(&req(later), "t2").unwrap().opener, t1.opener, "threads are per tenant");
        let other = first.replace("Explain entanglement.", "Explain superposition.");
        assert_ne!(thread_of(&req(&other), "t1").unwrap().opener, t1.opener);
        assert_eq!(thread_of(&req(r#"{"model":"m","messages":[{"role":"system","content":"x"}]}"#), "t1"), None);
    }

    #[test]
    fn no_user_message_means_no_key() {
        assert!(
            CacheKey::new(&req(r#"{"model":"m","messages":[{"role":"system","content":"x"}]}"#), "t", "m").is_none()
        );
    }
}
