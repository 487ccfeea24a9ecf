//! Sending one request to a tier: retries with jittered exponential backoff (honouring
//! `Retry-After` up to a cap), a circuit breaker per deployment, in-order failover, an overall
//! deadline, and per-deployment concurrency caps: a deployment with `max_concurrency` calls in
//! flight is passed over for the next one in failover order (never queued for), so one slow
//! provider cannot hold every request slot of the gateway. Streams may fail over only until
//! their first chunk has arrived; a stream holds its deployment's slot until it ends.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use parking_lot::Mutex;
use rand::Rng;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{ChunkStream, Provider, ProviderError, TimeoutPhase, TokenCount};
use crate::api::{ChatRequest, ChatResponse, GatewayError};
use crate::config::{Deployment, DispatchConfig};

/// What a successful dispatch returns: the value and who produced it.
pub struct Outcome<T> {
    pub value: T,
    pub provider: String,
    pub model: String,
    /// Upstream calls made, the successful one included.
    pub attempts: u32,
    /// Answered from `larger`: every deployment of `targets` refused the prompt for its length.
    pub escalated: bool,
    /// The deployment's concurrency slot, held while the answer is still being read.
    slot: Option<OwnedSemaphorePermit>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

/// Calls remembered per deployment for the error rate; older ones fall out of the window anyway.
const WINDOW_CAP: usize = 4096;

#[derive(Debug, Default)]
struct Breaker {
    consecutive_failures: u32,
    opened_at: Option<Instant>,
    /// A half-open probe is in flight (since then). A probe whose caller went away (client
    /// disconnect) must not block the deployment forever, so a probe older than the cool-down
    /// no longer counts.
    probe_since: Option<Instant>,
    /// Recent calls (when, succeeded) within the error-rate window.
    recent: std::collections::VecDeque<(Instant, bool)>,
}

impl Breaker {
    /// The failure share over the window, once it holds `min` calls.
    fn error_rate(&mut self, window: Duration, min: u32) -> Option<f64> {
        while self.recent.front().is_some_and(|(t, _)| t.elapsed() > window) {
            self.recent.pop_front();
        }
        let n = self.recent.len();
        (n >= min.max(1) as usize).then(|| self.recent.iter().filter(|(_, ok)| !ok).count() as f64 / n as f64)
    }

    fn state(&self, cooldown: Duration) -> BreakerState {
        match self.opened_at {
            None => BreakerState::Closed,
            Some(t) if t.elapsed() >= cooldown => BreakerState::HalfOpen,
            Some(_) => BreakerState::Open,
        }
    }
}

/// Per-deployment counters for `/metrics`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DeploymentStats {
    pub requests: u64,
    pub failures: u64,
    /// Requests that passed this deployment over because it was at its `max_concurrency`.
    pub skipped_busy: u64,
    pub state: Option<BreakerState>,
}

pub struct Dispatcher {
    providers: HashMap<String, Arc<Provider>>,
    cfg: DispatchConfig,
    breakers: Mutex<HashMap<String, Breaker>>,
    stats: Mutex<HashMap<String, DeploymentStats>>,
    /// Per-deployment slots, for deployments with a `max_concurrency` (created on first use).
    caps: Mutex<HashMap<String, Arc<Semaphore>>>,
}

fn deployment_key(d: &Deployment) -> String {
    format!("{}:{}", d.provider, d.model)
}

impl Dispatcher {
    pub fn new(providers: HashMap<String, Arc<Provider>>, cfg: DispatchConfig) -> Self {
        Dispatcher { providers, cfg, breakers: Mutex::default(), stats: Mutex::default(), caps: Mutex::default() }
    }

    /// A slot on `d` if it has a cap: `Ok(None)` uncapped, `Err(())` at its cap. A deployment
    /// listed in several tiers shares one set of slots, sized by the first listing seen.
    fn take_slot(&self, key: &str, d: &Deployment) -> Result<Option<OwnedSemaphorePermit>, ()> {
        let Some(cap) = d.max_concurrency else { return Ok(None) };
        let sem = self.caps.lock().entry(key.to_string()).or_insert_with(|| Arc::new(Semaphore::new(cap))).clone();
        match sem.try_acquire_owned() {
            Ok(p) => Ok(Some(p)),
            Err(_) => {
                self.stats.lock().entry(key.to_string()).or_default().skipped_busy += 1;
                Err(())
            }
        }
    }

    /// May this deployment be tried now? Half-open lets exactly one probe through.
    fn admit(&self, key: &str) -> bool {
        let mut breakers = self.breakers.lock();
        let Some(b) = breakers.get_mut(key) else { return true };
        match b.state(self.cfg.breaker_cooldown.0) {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen => {
                let cooldown = self.cfg.breaker_cooldown.0;
                if b.probe_since.is_some_and(|t| t.elapsed() < cooldown) {
                    return false;
                }
                b.probe_since = Some(Instant::now());
                true
            }
        }
    }

    /// Counts one call in the stats (any error is a failure there) and, when it says something
    /// about the deployment's health, in its breaker.
    fn record_call(&self, key: &str, ok: bool, health_signal: bool) {
        {
            let mut stats = self.stats.lock();
            let s = stats.entry(key.to_string()).or_default();
            s.requests += 1;
            if !ok {
                s.failures += 1;
            }
        }
        if health_signal {
            self.record(key, ok);
        }
    }

    /// Updates the breaker with one call's outcome.
    fn record(&self, key: &str, ok: bool) {
        let mut breakers = self.breakers.lock();
        let b = breakers.entry(key.to_string()).or_default();
        if b.recent.len() >= WINDOW_CAP {
            b.recent.pop_front();
        }
        b.recent.push_back((Instant::now(), ok));
        if ok {
            if b.opened_at.is_some() {
                tracing::info!(deployment = key, "circuit breaker closed");
                // a fresh start: the failures that opened it must not reopen it at once
                b.recent.clear();
            }
            b.consecutive_failures = 0;
            b.opened_at = None;
            b.probe_since = None;
            return;
        }
        b.consecutive_failures += 1;
        let rate = b.error_rate(self.cfg.breaker_window.0, self.cfg.breaker_min_requests);
        let too_many = b.consecutive_failures >= self.cfg.breaker_failures;
        let too_often = rate.is_some_and(|r| r >= self.cfg.breaker_error_rate);
        let probe_failed = b.probe_since.is_some();
        if probe_failed || too_many || too_often {
            if b.opened_at.is_none() || probe_failed {
                tracing::warn!(
                    deployment = key,
                    consecutive_failures = b.consecutive_failures,
                    error_rate = rate.unwrap_or(0.0),
                    probe_failed,
                    "circuit breaker opened"
                );
            }
            b.opened_at = Some(Instant::now());
        }
        b.probe_since = None;
    }

    /// Deployment → (requests, failures, breaker state), for `/metrics`.
    pub fn stats(&self) -> Vec<(String, DeploymentStats)> {
        let breakers = self.breakers.lock();
        let mut out: Vec<(String, DeploymentStats)> = self
            .stats
            .lock()
            .iter()
            .map(|(k, s)| {
                let mut s = s.clone();
                s.state = Some(breakers.get(k).map_or(BreakerState::Closed, |b| b.state(self.cfg.breaker_cooldown.0)));
                (k.clone(), s)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Option<Duration> {
        if let Some(ra) = retry_after {
            // a provider asking us to wait longer than we are willing to: go elsewhere now
            return (ra <= self.cfg.retry_after_cap.0).then_some(ra);
        }
        let base = self.cfg.backoff_base.0.as_secs_f64() * 2f64.powi(attempt as i32);
        let capped = base.min(self.cfg.backoff_max.0.as_secs_f64());
        let jitter = rand::thread_rng().gen_range(0.5..=1.0);
        Some(Duration::from_secs_f64(capped * jitter))
    }

    /// Non-streaming: the first successful answer along `targets`, then along `larger` when
    /// every deployment tried refused the prompt as longer than its context window (`auto`
    /// gives its premium tier there for a prompt it routed cheap; otherwise it is empty).
    pub async fn send(
        &self,
        targets: &[Deployment],
        larger: &[Deployment],
        req: &ChatRequest,
    ) -> Result<Outcome<ChatResponse>, GatewayError> {
        self.run(targets, larger, req, |p: Arc<Provider>, d: &Deployment, req: ChatRequest| {
            let (req, model) = for_deployment(d, req);
            async move { p.chat(&req, &model).await }
        })
        .await
    }

    /// Embeddings (an OpenAI-format body) from the first deployment along `targets` that answers,
    /// with the retries, breakers, caps and deadline of a chat call.
    pub async fn embeddings(
        &self,
        targets: &[Deployment],
        body: &serde_json::Value,
    ) -> Result<Outcome<serde_json::Value>, GatewayError> {
        self.run(targets, &[], body, |p: Arc<Provider>, d: &Deployment, body: serde_json::Value| {
            let model = d.model.clone();
            async move { p.embeddings(&body, &model).await }
        })
        .await
    }

    /// The input tokens of `req`, counted by the first deployment along `targets` whose provider
    /// can count them (Anthropic, Gemini; an OpenAI-compatible one estimates them, see
    /// [`super::estimate`]). A count is not a generation: no retries, breakers or concurrency
    /// slots, and a deployment that fails hands over to the next one that can count. None able:
    /// a 400 that says so.
    pub async fn count_tokens(&self, targets: &[Deployment], req: &ChatRequest) -> Result<TokenCount, GatewayError> {
        let mut errors: Vec<(String, ProviderError)> = Vec::new();
        for d in targets {
            let Some(p) = self.providers.get(&d.provider) else { continue };
            match p.count_tokens(req, &d.model).await {
                Ok(n) => return Ok(n),
                Err(e) => {
                    let fatal = !e.retryable() && !matches!(e, ProviderError::Unsupported(_));
                    errors.push((deployment_key(d), e));
                    if fatal {
                        break;
                    }
                }
            }
        }
        if errors.iter().all(|(_, e)| matches!(e, ProviderError::Unsupported(_))) {
            let tried = errors.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(", ");
            return Err(GatewayError::invalid(
                format!(
                    "these tokens cannot be counted: an OpenAI-compatible deployment estimates text, images and tools only (not files or audio), and this model has no Anthropic or Gemini deployment to count them (its deployments: {tried})"
                ),
                None,
            ));
        }
        Err(summarise(&errors, 0, false))
    }

    /// Streaming: the first deployment whose stream yields a first chunk (`larger` as for
    /// [`Dispatcher::send`]). Failures after that are the caller's to report (the client has
    /// bytes already).
    pub async fn send_stream(
        &self,
        targets: &[Deployment],
        larger: &[Deployment],
        req: &ChatRequest,
    ) -> Result<Outcome<ChunkStream>, GatewayError> {
        let mut out = self.stream_first_chunk(targets, larger, req).await?;
        if let Some(slot) = out.slot.take() {
            // the deployment is busy until the stream ends (or the client drops it)
            out.value = Box::pin(out.value.map(move |item| {
                let _held = &slot;
                item
            }));
        }
        Ok(out)
    }

    async fn stream_first_chunk(
        &self,
        targets: &[Deployment],
        larger: &[Deployment],
        req: &ChatRequest,
    ) -> Result<Outcome<ChunkStream>, GatewayError> {
        self.run(targets, larger, req, |p: Arc<Provider>, d: &Deployment, req: ChatRequest| {
            let (req, model) = for_deployment(d, req);
            async move {
                let timeout = p.first_byte_timeout();
                let mut stream = p.chat_stream(&req, &model).await?;
                match tokio::time::timeout(timeout, stream.next()).await {
                    Err(_) => Err(ProviderError::Timeout(TimeoutPhase::FirstByte)),
                    Ok(None) => Err(ProviderError::Stream("stream ended before any chunk".into())),
                    Ok(Some(Err(e))) => Err(e),
                    Ok(Some(Ok(first))) => {
                        let rest: ChunkStream =
                            Box::pin(futures_util::stream::once(async move { Ok(first) }).chain(stream));
                        Ok(rest)
                    }
                }
            }
        })
        .await
    }

    async fn run<R: Clone, T, F, Fut>(
        &self,
        targets: &[Deployment],
        larger: &[Deployment],
        req: &R,
        call: F,
    ) -> Result<Outcome<T>, GatewayError>
    where
        F: Fn(Arc<Provider>, &Deployment, R) -> Fut,
        Fut: std::future::Future<Output = Result<T, ProviderError>>,
    {
        let deadline = tokio::time::Instant::now() + self.cfg.deadline.0;
        let mut attempts = 0u32;
        let mut errors: Vec<(String, ProviderError)> = Vec::new();
        let mut skipped_open = 0usize;
        let mut skipped_busy = 0usize;
        let tail = larger.iter().map(|d| (d, true));
        // decided once, on reaching `larger`: from there it fails over like any tier
        let mut may_escalate: Option<bool> = None;
        for (d, escalation) in targets.iter().map(|d| (d, false)).chain(tail) {
            if escalation && !*may_escalate.get_or_insert_with(|| only_too_long(&errors)) {
                break;
            }
            let Some(provider) = self.providers.get(&d.provider).cloned() else { continue };
            let key = deployment_key(d);
            // at its cap: go on to the next deployment rather than wait for a slot
            let Ok(mut slot) = self.take_slot(&key, d) else {
                skipped_busy += 1;
                continue;
            };
            for attempt in 0..self.cfg.attempts_per_deployment {
                if !self.admit(&key) {
                    skipped_open += 1;
                    break;
                }
                attempts += 1;
                let fut = call(provider.clone(), d, req.clone());
                let result = match tokio::time::timeout_at(deadline, fut).await {
                    Ok(r) => r,
                    Err(_) => {
                        self.record_call(&key, false, true);
                        errors.push((key.clone(), ProviderError::Timeout(TimeoutPhase::Total)));
                        return Err(summarise(&errors, skipped_open, true));
                    }
                };
                match result {
                    Ok(value) => {
                        self.record_call(&key, true, true);
                        return Ok(Outcome {
                            value,
                            provider: d.provider.clone(),
                            model: d.model.clone(),
                            attempts,
                            escalated: escalation,
                            slot: slot.take(),
                        });
                    }
                    Err(ProviderError::ContextOverflow(why)) => {
                        // a call was made and refused for its length: the deployment is up (its
                        // breaker hears a success), and only a larger window can help
                        tracing::info!(deployment = %key, reason = %why, "prompt longer than this deployment's context window");
                        self.record_call(&key, false, false);
                        self.record(&key, true);
                        errors.push((key.clone(), ProviderError::ContextOverflow(why)));
                        break;
                    }
                    Err(ProviderError::Unsupported(why)) => {
                        // nothing was sent: not an attempt, not a failure of the deployment
                        attempts -= 1;
                        tracing::info!(deployment = %key, reason = %why, "request not expressible for this deployment");
                        errors.push((key.clone(), ProviderError::Unsupported(why)));
                        break;
                    }
                    Err(e) => {
                        tracing::info!(deployment = %key, attempt, error = %e, "upstream attempt failed");
                        let retryable = e.retryable();
                        let retry_after = match &e {
                            ProviderError::Status { retry_after, .. } => *retry_after,
                            _ => None,
                        };
                        // only transient failures count against the breaker: a 400 is the client's
                        // fault, and says the deployment is up
                        self.record_call(&key, false, false);
                        self.record(&key, !retryable);
                        errors.push((key.clone(), e));
                        if !retryable {
                            return Err(summarise(&errors, skipped_open, false));
                        }
                        if attempt + 1 < self.cfg.attempts_per_deployment {
                            let Some(wait) = self.backoff(attempt, retry_after) else { break };
                            if tokio::time::Instant::now() + wait >= deadline {
                                break;
                            }
                            tokio::time::sleep(wait).await;
                        }
                    }
                }
            }
        }
        if errors.is_empty() && skipped_busy > 0 {
            return Err(GatewayError::Overloaded {
                message: "every deployment of this tier is at its concurrency limit; retry shortly".into(),
                retry_after: crate::api::DEFAULT_RETRY_AFTER_SECS,
            });
        }
        if errors.is_empty() && skipped_open > 0 {
            return Err(GatewayError::Overloaded {
                message: "every deployment of this tier is unavailable (circuit breakers open)".into(),
                retry_after: self.first_reopening(targets),
            });
        }
        Err(summarise(&errors, skipped_open, false))
    }

    /// Whole seconds until the first open breaker among `targets` lets a probe through: the
    /// honest `Retry-After` when every deployment is open (at least 1).
    fn first_reopening(&self, targets: &[Deployment]) -> u64 {
        let cooldown = self.cfg.breaker_cooldown.0;
        let breakers = self.breakers.lock();
        targets
            .iter()
            .filter_map(|d| breakers.get(&deployment_key(d))?.opened_at)
            .map(|t| cooldown.saturating_sub(t.elapsed()))
            .min()
            .map_or(crate::api::DEFAULT_RETRY_AFTER_SECS, |left| left.as_secs_f64().ceil() as u64)
            .max(1)
    }
}

/// A chat request as `d` takes it, and the model name to send: a reasoning model gets a
/// Messages client's `thinking` as its `reasoning_effort`.
fn for_deployment(d: &Deployment, mut req: ChatRequest) -> (ChatRequest, String) {
    if d.reasoning {
        req.apply_thinking_as_reasoning_effort();
    }
    (req, d.model.clone())
}

/// Whether the calls so far all ended in a refusal for length (deployments that could not express
/// the request made none): only then may a prompt move on to a larger window.
fn only_too_long(errors: &[(String, ProviderError)]) -> bool {
    let too_long = |e: &ProviderError| matches!(e, ProviderError::ContextOverflow(_));
    errors.iter().any(|(_, e)| too_long(e))
        && errors.iter().all(|(_, e)| too_long(e) || matches!(e, ProviderError::Unsupported(_)))
}

/// One honest client-facing error from every attempt's failure. Public for the fuzzer, which
/// checks that every translator rejection becomes an OpenAI-shaped error through this same path.
pub fn summarise(errors: &[(String, ProviderError)], skipped_open: usize, deadline: bool) -> GatewayError {
    let Some((key, _)) = errors.last() else {
        return if skipped_open > 0 {
            GatewayError::overloaded("every deployment of this tier is unavailable (circuit breakers open)")
        } else {
            GatewayError::overloaded("no deployment is configured for this tier")
        };
    };
    let provider = key.split(':').next().unwrap_or_default().to_string();
    let trail = errors.iter().map(|(k, e)| format!("{k}: {e}")).collect::<Vec<_>>().join("; ");
    if deadline {
        return GatewayError::Timeout(format!("the request deadline passed ({trail})"));
    }
    // Deployments that could not express the request made no call. If none got as far as a
    // call, the request itself is the problem (400); otherwise the real failure decides.
    let Some((key, last)) = errors.iter().rev().find(|(_, e)| !matches!(e, ProviderError::Unsupported(_))) else {
        return GatewayError::Upstream {
            status: 400,
            provider,
            message: format!("no deployment of this tier can take this request ({trail})"),
            retry_after: None,
        };
    };
    let provider = key.split(':').next().unwrap_or_default().to_string();
    if let ProviderError::ContextOverflow(_) = last {
        return GatewayError::ContextTooLong(format!(
            "the prompt is longer than the context window of every deployment tried; shorten the messages or ask for fewer output tokens ({trail})"
        ));
    }
    match last {
        ProviderError::Status { status, message, .. } => match status {
            400 | 404 | 409 | 413 | 422 => GatewayError::Upstream {
                status: *status,
                provider,
                message: format!("provider {key} refused the request: {message}"),
                retry_after: None,
            },
            401 | 403 => GatewayError::Upstream {
                status: 502,
                provider,
                message: format!("provider {key} rejected the gateway's credentials (HTTP {status})"),
                retry_after: None,
            },
            429 => GatewayError::Upstream {
                status: 429,
                provider,
                message: format!("every deployment is rate limited ({trail})"),
                // the longest wait any rate-limited deployment asked for
                retry_after: errors
                    .iter()
                    .filter_map(|(_, e)| match e {
                        ProviderError::Status { status: 429, retry_after: Some(ra), .. } => {
                            Some(ra.as_secs_f64().ceil() as u64)
                        }
                        _ => None,
                    })
                    .max(),
            },
            _ => GatewayError::Upstream {
                status: 502,
                provider,
                message: format!("upstream failed ({trail})"),
                retry_after: None,
            },
        },
        ProviderError::Timeout(_) => GatewayError::Timeout(format!("upstream timed out ({trail})")),
        _ => GatewayError::Upstream {
            status: 502,
            provider,
            message: format!("upstream failed ({trail})"),
            retry_after: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dispatcher(failures: u32, rate: f64, min: u32, cooldown_ms: u64) -> Dispatcher {
        let cfg = DispatchConfig {
            breaker_failures: failures,
            breaker_error_rate: rate,
            breaker_min_requests: min,
            breaker_cooldown: crate::config::Dur(Duration::from_millis(cooldown_ms)),
            ..DispatchConfig::default()
        };
        Dispatcher::new(HashMap::new(), cfg)
    }

    fn state(d: &Dispatcher, key: &str) -> BreakerState {
        let mut b = d.breakers.lock();
        b.get_mut(key).map_or(BreakerState::Closed, |b| b.state(d.cfg.breaker_cooldown.0))
    }

    #[test]
    fn consecutive_failures_open_then_half_open_probe_closes() {
        let d = dispatcher(3, 1.0, 1000, 50);
        for _ in 0..2 {
            d.record("a", false);
        }
        assert!(d.admit("a"), "two failures are below the limit");
        d.record("a", false);
        assert_eq!(state(&d, "a"), BreakerState::Open);
        assert!(!d.admit("a"), "open: skipped");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(state(&d, "a"), BreakerState::HalfOpen);
        assert!(d.admit("a"), "half-open: one probe");
        assert!(!d.admit("a"), "only one probe at a time");
        d.record("a", true);
        assert_eq!(state(&d, "a"), BreakerState::Closed);
        assert!(d.admit("a") && d.admit("a"));
    }

    #[test]
    fn a_failed_probe_reopens_for_another_cooldown() {
        let d = dispatcher(1, 1.0, 1000, 50);
        d.record("a", false);
        std::thread::sleep(Duration::from_millis(60));
        assert!(d.admit("a"));
        d.record("a", false);
        assert_eq!(state(&d, "a"), BreakerState::Open);
        assert!(!d.admit("a"));
    }

    #[test]
    fn an_abandoned_probe_does_not_block_forever() {
        let d = dispatcher(1, 1.0, 1000, 50);
        d.record("a", false);
        std::thread::sleep(Duration::from_millis(60));
        assert!(d.admit("a")); // the probe's caller goes away without recording anything
        assert!(!d.admit("a"));
        std::thread::sleep(Duration::from_millis(60));
        assert!(d.admit("a"), "a stale probe no longer holds the slot");
    }

    #[test]
    fn error_rate_over_the_window_opens_without_a_failure_streak() {
        // never two failures in a row, but half of all calls fail
        let d = dispatcher(100, 0.5, 10, 1000);
        for i in 0..9 {
            d.record("a", i % 2 == 0);
        }
        assert_eq!(state(&d, "a"), BreakerState::Closed, "fewer calls than the minimum");
        d.record("a", false); // 10 calls, 5 failed
        assert_eq!(state(&d, "a"), BreakerState::Open);
        // a healthy deployment with the odd failure stays closed
        for i in 0..50 {
            d.record("b", i % 5 != 0);
        }
        assert_eq!(state(&d, "b"), BreakerState::Closed);
    }
}
