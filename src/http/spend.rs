//! The per-request accounting around a chat call: a key's limits and budget are checked before
//! the pipeline runs (and its `x-ratelimit-*` headers set on whatever the response is), then,
//! once the answer is complete (a stream: at its end), the limits are settled with the real
//! tokens and cost and the request is recorded in the ledger (usage totals, request log).

use std::sync::Arc;
use std::time::Instant;

use axum::http::{HeaderMap, HeaderValue};

use super::AppState;
use crate::api::{ChatRequest, GatewayError, Usage};
use crate::keys::KeyPolicy;
use crate::limits::{Admission, RateHeaders};
use crate::pipeline::{CacheStatus, Meta, StreamEnd, Tenant};
use crate::reqlog::Record;

pub struct Account {
    state: AppState,
    started: Instant,
    record: Record,
    policy: Option<Arc<KeyPolicy>>,
    admission: Option<Admission>,
    pub headers: RateHeaders,
}

/// 403 when the key's allowed models leave `model` out (`router_alias` allowed: its dials too).
pub fn check_model(policy: &KeyPolicy, model: &str, router_alias: &str) -> Result<(), GatewayError> {
    if policy.allows_model(model, router_alias) {
        return Ok(());
    }
    Err(GatewayError::Forbidden(format!(
        "key `{}` may not use model `{model}` (allowed: {})",
        policy.name,
        policy.models.as_deref().unwrap_or_default().join(", ")
    )))
}

/// Sets `x-ratelimit-*` headers (none for a key without limits).
pub fn set_rate_headers(rate: &RateHeaders, h: &mut HeaderMap) {
    for (name, value) in rate.pairs() {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
}

impl Account {
    pub fn new(state: &AppState, rid: &str) -> Account {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let secs = now.as_secs();
        let mut time = crate::limits::clock::rfc3339(secs);
        // milliseconds, for ordering records within a second
        time.insert_str(time.len() - 1, &format!(".{:03}", now.subsec_millis()));
        Account {
            state: state.clone(),
            started: Instant::now(),
            record: Record {
                time,
                request_id: rid.to_string(),
                key: "-".into(),
                cache: "none".into(),
                ..Record::default()
            },
            policy: None,
            admission: None,
            headers: RateHeaders::default(),
        }
    }

    pub fn tenant(&mut self, t: &Tenant) {
        self.record.key = t.id.clone();
        self.policy = t.policy.clone();
    }

    /// Checks the key's allowed models and limits for this request; the error is the response.
    /// Returns whether premium is off for it (soft budget level reached).
    pub async fn admit(&mut self, req: &ChatRequest) -> Result<bool, GatewayError> {
        let prompt = (self.state.ledger.content() != crate::config::LogContent::Off)
            .then(|| req.messages.iter().map(|m| m.text_content()).collect::<Vec<_>>().join("\n"));
        self.admit_model(&req.model, estimate_tokens(req), prompt.as_deref()).await
    }

    /// [`Account::admit`] for any call: the model asked for, the tokens it may use (corrected at
    /// the end), and its prompt for the log.
    pub async fn admit_model(&mut self, model: &str, tokens: u64, prompt: Option<&str>) -> Result<bool, GatewayError> {
        self.record.model = model.to_string();
        if let Some(p) = prompt {
            self.record.prompt = self.state.ledger.content_of(p);
        }
        let Some(policy) = self.policy.clone() else { return Ok(false) };
        check_model(&policy, model, &self.state.gateway.router_alias)?;
        if !policy.is_limited() {
            return Ok(false);
        }
        match self.state.limits.admit(&policy, tokens).await {
            Ok(a) => {
                self.headers = a.headers.clone();
                let soft = a.soft_budget;
                self.admission = Some(a);
                Ok(soft)
            }
            Err(r) => {
                self.headers = r.headers;
                Err(r.error)
            }
        }
    }

    /// Whether the key turned the semantic cache off.
    pub fn cache_off(&self) -> bool {
        self.policy.as_ref().is_some_and(|p| !p.cache)
    }

    /// Sets the `x-ratelimit-*` headers of a limited key.
    pub fn set_headers(&self, h: &mut HeaderMap) {
        set_rate_headers(&self.headers, h);
    }

    /// A response head with what the pipeline said about it.
    pub fn served(&mut self, m: &Meta) {
        let r = &mut self.record;
        r.tier = (!m.tier.is_empty()).then(|| m.tier.clone());
        r.route_score = m.route_score;
        r.deployment = Some(format!("{}:{}", m.provider, m.model));
        r.attempts = m.attempts;
        r.cache = m.cache.as_str().to_string();
        r.similarity = m.similarity;
        r.cost_saved = m.cost_saved;
    }

    /// A call that no cache was asked about (embeddings) went to `deployment` in `attempts` calls.
    pub fn upstream(&mut self, deployment: String, attempts: u32) {
        self.record.deployment = Some(deployment);
        self.record.attempts = attempts;
        self.record.cache = crate::pipeline::CacheStatus::Bypass.as_str().to_string();
    }

    /// The request ended: settle its limits and record it.
    pub async fn finish(
        mut self,
        status: u16,
        error: Option<&GatewayError>,
        usage: Option<Usage>,
        cost: Option<f64>,
        answer: Option<&str>,
    ) {
        let hit = self.record.cache == CacheStatus::Hit.as_str();
        if let (Some(p), Some(a)) = (&self.policy, &self.admission) {
            // upstream tokens: a hit or a failure spent none; an answer without usage keeps the estimate
            let tokens = if hit || status >= 400 { Some(0) } else { usage.map(|u| u.total_tokens) };
            let spent = if hit { None } else { cost };
            self.state.limits.settle(p, &a.ticket, tokens, spent).await;
        }
        let r = &mut self.record;
        r.status = status;
        r.error = error.and_then(|e| e.body().error.code).or_else(|| error.map(|e| e.body().error.kind));
        if let Some(u) = usage {
            r.prompt_tokens = u.prompt_tokens;
            r.completion_tokens = u.completion_tokens;
        }
        r.cost = cost;
        if let Some(a) = answer {
            r.answer = self.state.ledger.content_of(a);
        }
        r.latency_ms = (self.started.elapsed().as_secs_f64() * 1e3 * 1000.0).round() / 1000.0;
        self.state.ledger.record(&self.record);
    }

    /// The request failed with `e`, answered by `resp`: the key's rate headers on it, settled and
    /// recorded.
    pub async fn failed(self, e: &GatewayError, mut resp: axum::response::Response) -> axum::response::Response {
        self.set_headers(resp.headers_mut());
        self.finish(e.status(), Some(e), None, None, None).await;
        resp
    }

    /// A stream's end (or its client leaving: `Err`), settled and recorded off the request path.
    pub fn finish_stream(self, done: tokio::sync::oneshot::Receiver<StreamEnd>) {
        tokio::spawn(async move {
            match done.await {
                Ok(end) if end.complete => self.finish(200, None, end.usage, end.cost, Some(&end.answer)).await,
                Ok(end) => {
                    let e = GatewayError::Upstream {
                        status: 502,
                        provider: String::new(),
                        message: "stream failed".into(),
                        retry_after: None,
                    };
                    self.finish(502, Some(&e), end.usage, end.cost, None).await
                }
                // the client went away before the end: nginx's 499
                Err(_) => self.finish(499, None, None, None, None).await,
            }
        });
    }
}

/// Tokens a request may use, before it is sent: its text at ≈ 4 characters a token, plus the
/// completion tokens it asks for. Corrected with the real usage when the answer is complete.
pub fn estimate_tokens(req: &ChatRequest) -> u64 {
    let chars: usize = req.messages.iter().map(|m| m.text_content().len()).sum();
    (chars as u64).div_ceil(4) + u64::from(req.max_output_tokens().unwrap_or(0))
}
