//! Sending one request to a tier: retries with jittered exponential backoff (honouring
//! `Retry-After` up to a cap), a circuit breaker per deployment, in-order failover, an overall
//! deadline. Streams may fail over only until their first chunk has arrived.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use parking_lot::Mutex;
use rand::Rng;

use super::{ChunkStream, Provider, ProviderError, TimeoutPhase};
use crate::api::{ChatRequest, ChatResponse, GatewayError};
use crate::config::{Deployment, DispatchConfig};

/// What a successful dispatch returns: the value and who produced it.
pub struct Outcome<T> {
    pub value: T,
    pub provider: String,
    pub model: String,
    /// Upstream calls made, the successful one included.
    pub attempts: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug)]
struct Breaker {
    consecutive_failures: u32,
    opened_at: Option<Instant>,
    probing: bool,
}

impl Breaker {
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
    pub state: Option<BreakerState>,
}

pub struct Dispatcher {
    providers: HashMap<String, Arc<Provider>>,
    cfg: DispatchConfig,
    breakers: Mutex<HashMap<String, Breaker>>,
    stats: Mutex<HashMap<String, DeploymentStats>>,
}

fn deployment_key(d: &Deployment) -> String {
    format!("{}:{}", d.provider, d.model)
}

impl Dispatcher {
    pub fn new(providers: HashMap<String, Arc<Provider>>, cfg: DispatchConfig) -> Self {
        Dispatcher { providers, cfg, breakers: Mutex::default(), stats: Mutex::default() }
    }

    /// May this deployment be tried now? Half-open lets exactly one probe through.
    fn admit(&self, key: &str) -> bool {
        let mut breakers = self.breakers.lock();
        let Some(b) = breakers.get_mut(key) else { return true };
        match b.state(self.cfg.breaker_cooldown.0) {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen if b.probing => false,
            BreakerState::HalfOpen => {
                b.probing = true;
                true
            }
        }
    }

    fn record(&self, key: &str, ok: bool) {
        {
            let mut stats = self.stats.lock();
            let s = stats.entry(key.to_string()).or_default();
            s.requests += 1;
            if !ok {
                s.failures += 1;
            }
        }
        let mut breakers = self.breakers.lock();
        let b = breakers.entry(key.to_string()).or_insert(Breaker {
            consecutive_failures: 0,
            opened_at: None,
            probing: false,
        });
        if ok {
            *b = Breaker { consecutive_failures: 0, opened_at: None, probing: false };
        } else {
            b.consecutive_failures += 1;
            if b.probing || b.consecutive_failures >= self.cfg.breaker_failures {
                if b.opened_at.is_none() || b.probing {
                    tracing::warn!(deployment = key, "circuit breaker opened");
                }
                b.opened_at = Some(Instant::now());
            }
            b.probing = false;
        }
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

    /// Non-streaming: the first successful answer along `targets`.
    pub async fn send(&self, targets: &[Deployment], req: &ChatRequest) -> Result<Outcome<ChatResponse>, GatewayError> {
        self.run(
            targets,
            req,
            |p: Arc<Provider>, model: String, req: ChatRequest| async move { p.chat(&req, &model).await },
        )
        .await
    }

    /// Streaming: the first deployment whose stream yields a first chunk. Failures after that
    /// are the caller's to report (the client has bytes already).
    pub async fn send_stream(
        &self,
        targets: &[Deployment],
        req: &ChatRequest,
    ) -> Result<Outcome<ChunkStream>, GatewayError> {
        self.run(targets, req, |p: Arc<Provider>, model: String, req: ChatRequest| async move {
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
        })
        .await
    }

    async fn run<T, F, Fut>(
        &self,
        targets: &[Deployment],
        req: &ChatRequest,
        call: F,
    ) -> Result<Outcome<T>, GatewayError>
    where
        F: Fn(Arc<Provider>, String, ChatRequest) -> Fut,
        Fut: std::future::Future<Output = Result<T, ProviderError>>,
    {
        let deadline = tokio::time::Instant::now() + self.cfg.deadline.0;
        let mut attempts = 0u32;
        let mut errors: Vec<(String, ProviderError)> = Vec::new();
        let mut skipped_open = 0usize;
        for d in targets {
            let Some(provider) = self.providers.get(&d.provider).cloned() else { continue };
            let key = deployment_key(d);
            for attempt in 0..self.cfg.attempts_per_deployment {
                if !self.admit(&key) {
                    skipped_open += 1;
                    break;
                }
                attempts += 1;
                let fut = call(provider.clone(), d.model.clone(), req.clone());
                let result = match tokio::time::timeout_at(deadline, fut).await {
                    Ok(r) => r,
                    Err(_) => {
                        self.record(&key, false);
                        errors.push((key.clone(), ProviderError::Timeout(TimeoutPhase::Total)));
                        return Err(summarise(&errors, skipped_open, true));
                    }
                };
                match result {
                    Ok(value) => {
                        self.record(&key, true);
                        return Ok(Outcome { value, provider: d.provider.clone(), model: d.model.clone(), attempts });
                    }
                    Err(e) => {
                        tracing::info!(deployment = %key, attempt, error = %e, "upstream attempt failed");
                        let retryable = e.retryable();
                        let retry_after = match &e {
                            ProviderError::Status { retry_after, .. } => *retry_after,
                            _ => None,
                        };
                        // only transient failures count against the breaker: a 400 is the client's
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
        Err(summarise(&errors, skipped_open, false))
    }
}

/// One honest client-facing error from every attempt's failure.
fn summarise(errors: &[(String, ProviderError)], skipped_open: usize, deadline: bool) -> GatewayError {
    let Some((key, last)) = errors.last() else {
        return if skipped_open > 0 {
            GatewayError::Overloaded("every deployment of this tier is unavailable (circuit breakers open)".into())
        } else {
            GatewayError::Overloaded("no deployment is configured for this tier".into())
        };
    };
    let provider = key.split(':').next().unwrap_or_default().to_string();
    let trail = errors.iter().map(|(k, e)| format!("{k}: {e}")).collect::<Vec<_>>().join("; ");
    if deadline {
        return GatewayError::Timeout(format!("the request deadline passed ({trail})"));
    }
    match last {
        ProviderError::Status { status, message, .. } => match status {
            400 | 404 | 409 | 413 | 422 => GatewayError::Upstream {
                status: *status,
                provider,
                message: format!("provider {key} refused the request: {message}"),
            },
            401 | 403 => GatewayError::Upstream {
                status: 502,
                provider,
                message: format!("provider {key} rejected the gateway's credentials (HTTP {status})"),
            },
            429 => GatewayError::Upstream {
                status: 429,
                provider,
                message: format!("every deployment is rate limited ({trail})"),
            },
            _ => GatewayError::Upstream { status: 502, provider, message: format!("upstream failed ({trail})") },
        },
        ProviderError::Timeout(_) => GatewayError::Timeout(format!("upstream timed out ({trail})")),
        _ => GatewayError::Upstream { status: 502, provider, message: format!("upstream failed ({trail})") },
    }
}
