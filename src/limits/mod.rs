//! Per-key rate limits (requests and tokens per minute) and budgets (USD per UTC day and month).
//!
//! Counted in-process with one replica, in Redis when the cache backend is Redis, so spreading a
//! key's requests over replicas does not multiply its limits. A request is *admitted* before it
//! costs anything (counting one request and an estimate of its tokens) and *settled* once its
//! usage and price are known (the token estimate corrected, the cost added to the budgets).
//! Windows are fixed and UTC-aligned (minute, day, month), so every replica computes the same
//! counter keys without talking to the others.
//!
//! Redis down ⇒ each replica counts locally (a looser guarantee: each replica then allows the
//! full limit on its own), logs the change once each way, and goes back to Redis when it answers.

pub mod clock;
mod memory;
mod redis;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::api::GatewayError;
use crate::keys::KeyPolicy;
use clock::{openai_duration, rfc3339, Windows};

/// USD are counted in nano-dollars: integers add atomically in Redis and never drift.
const NANO: f64 = 1e9;

/// The counters one request touches.
#[derive(Debug, Clone)]
pub struct CounterKeys {
    pub requests: String,
    pub tokens: String,
    pub day: String,
    pub month: String,
    pub window_ttl: u64,
    pub day_ttl: u64,
    pub month_ttl: u64,
}

impl CounterKeys {
    fn new(name: &str, w: &Windows) -> CounterKeys {
        CounterKeys {
            requests: format!("switchyard:lim:{name}:r:{}", w.minute),
            tokens: format!("switchyard:lim:{name}:t:{}", w.minute),
            day: format!("switchyard:lim:{name}:d:{}", w.day),
            month: format!("switchyard:lim:{name}:m:{}", w.month),
            window_ttl: 120,
            day_ttl: 2 * 86_400,
            month_ttl: 32 * 86_400,
        }
    }

    /// A key's token counts (`/v1/messages/count_tokens`) in a requests counter of their own.
    fn counts(name: &str, w: &Windows) -> CounterKeys {
        let mut k = CounterKeys::new(name, w);
        k.requests = format!("switchyard:lim:{name}:c:{}", w.minute);
        k
    }
}

/// What the admit step checks; 0 / -1 mean "no such limit".
#[derive(Debug, Clone, Copy)]
pub struct AdmitArgs {
    pub rpm: i64,
    pub tpm: i64,
    pub estimate: i64,
    /// nano-USD; -1: no budget
    pub budget_day: i64,
    pub budget_month: i64,
}

impl AdmitArgs {
    /// The same decision as the Lua script: budgets first (they reset later), then rates.
    fn verdict(&self, c: &Counts) -> u8 {
        if self.budget_day >= 0 && c.day >= self.budget_day {
            3
        } else if self.budget_month >= 0 && c.month >= self.budget_month {
            4
        } else if self.rpm > 0 && c.requests >= self.rpm {
            1
        } else if self.tpm > 0 && c.tokens > 0 && c.tokens + self.estimate > self.tpm {
            // a first request larger than the whole minute's tokens still goes through alone
            2
        } else {
            0
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct SettleArgs {
    pub token_delta: i64,
    pub nano_usd: i64,
}

/// Counter values after an admit (or as read, when refused).
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    pub verdict: u8,
    pub requests: i64,
    pub tokens: i64,
    pub day: i64,
    pub month: i64,
}

/// OpenAI's `x-ratelimit-*` headers for a limited key: (limit, remaining, seconds to reset).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RateHeaders {
    pub requests: Option<(u64, u64, u64)>,
    pub tokens: Option<(u64, u64, u64)>,
}

impl RateHeaders {
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::with_capacity(6);
        if let Some((l, r, s)) = self.requests {
            out.push(("x-ratelimit-limit-requests", l.to_string()));
            out.push(("x-ratelimit-remaining-requests", r.to_string()));
            out.push(("x-ratelimit-reset-requests", openai_duration(s)));
        }
        if let Some((l, r, s)) = self.tokens {
            out.push(("x-ratelimit-limit-tokens", l.to_string()));
            out.push(("x-ratelimit-remaining-tokens", r.to_string()));
            out.push(("x-ratelimit-reset-tokens", openai_duration(s)));
        }
        out
    }
}

/// A request let through: its headers, whether the soft budget level is reached, and what to
/// settle later.
#[derive(Debug)]
pub struct Admission {
    pub headers: RateHeaders,
    /// Spend is at or past the soft level of a budget: `auto` must not choose premium.
    pub soft_budget: bool,
    pub ticket: Ticket,
}

/// What a settle needs: the counters the request was admitted on and its token estimate.
#[derive(Debug, Clone)]
pub struct Ticket {
    pub name: String,
    keys: CounterKeys,
    estimate: u64,
    remote: bool,
}

/// A refused request: the 429 and the headers it carries.
#[derive(Debug)]
pub struct Refusal {
    pub error: GatewayError,
    pub headers: RateHeaders,
}

/// Spend as last seen for a key, for `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeySpend {
    pub day_usd: f64,
    pub month_usd: f64,
    pub budget_day: Option<f64>,
    pub budget_month: Option<f64>,
}

impl KeySpend {
    /// 0 under the soft level, 1 at or past it (premium off), 2 exhausted (refused).
    pub fn state(&self, soft: f64) -> u8 {
        let mut s = 0;
        for (spent, budget) in [(self.day_usd, self.budget_day), (self.month_usd, self.budget_month)] {
            if let Some(b) = budget {
                if spent >= b {
                    s = s.max(2);
                } else if spent >= soft * b {
                    s = s.max(1);
                }
            }
        }
        s
    }
}

pub struct Limits {
    local: memory::Memory,
    redis: Option<redis::RedisCounters>,
    /// Share of a budget at which `auto` stops choosing premium.
    pub soft: f64,
    degraded: AtomicBool,
    pub redis_errors: AtomicU64,
    /// (key name, reason) → refused requests
    refused: Mutex<BTreeMap<(String, &'static str), u64>>,
    spend: Mutex<HashMap<String, KeySpend>>,
}

#[derive(Debug, thiserror::Error)]
#[error("limits.backend: {0}")]
pub struct LimitsError(String);

impl Limits {
    /// In-process counting, or in the Redis `redis` (connected now; if it is down the gateway
    /// still starts and counts locally until it answers).
    pub async fn start(redis: Option<&crate::redis_link::RedisTarget>, soft: f64) -> Result<Arc<Limits>, LimitsError> {
        let redis = match redis {
            Some(target) => Some(redis::RedisCounters::new(target).map_err(|e| LimitsError(e.to_string()))?),
            None => None,
        };
        let limits = Limits {
            local: memory::Memory::default(),
            redis,
            soft,
            degraded: AtomicBool::new(false),
            redis_errors: AtomicU64::new(0),
            refused: Mutex::default(),
            spend: Mutex::default(),
        };
        if let Some(r) = &limits.redis {
            if r.connection().await.is_none() {
                limits.went_down("cannot connect");
            }
        }
        Ok(Arc::new(limits))
    }

    pub fn shared(&self) -> bool {
        self.redis.is_some()
    }

    /// Whether this replica is counting locally because Redis is unreachable.
    pub fn degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    fn went_down(&self, why: &str) {
        self.redis_errors.fetch_add(1, Ordering::Relaxed);
        if !self.degraded.swap(true, Ordering::Relaxed) {
            tracing::warn!(reason = why, "limits: Redis unreachable; counting on this replica only until it is back");
        }
    }

    fn came_back(&self) {
        if self.degraded.swap(false, Ordering::Relaxed) {
            tracing::info!("limits: Redis reachable again; counting across replicas");
        }
    }

    /// Runs the admit step on `keys`: in Redis when shared and reachable (then `true`), else here.
    async fn count(&self, keys: &CounterKeys, args: &AdmitArgs, now: u64) -> (Counts, bool) {
        if let Some(r) = &self.redis {
            if let Some(mut conn) = r.connection().await {
                match r.admit(&mut conn, keys, args).await {
                    Ok(c) => {
                        self.came_back();
                        return (c, true);
                    }
                    Err(e) => {
                        r.failed();
                        self.went_down(&e.to_string());
                    }
                }
            } else {
                self.went_down("cannot connect");
            }
        }
        (self.local.admit(keys, args, now), false)
    }

    /// Checks and counts one request of `key` with an estimate of its tokens.
    pub async fn admit(&self, key: &KeyPolicy, estimate: u64) -> Result<Admission, Refusal> {
        let now = clock::now();
        let w = Windows::at(now);
        let keys = CounterKeys::new(&key.name, &w);
        let nano = |b: Option<f64>| b.map_or(-1, |b| (b * NANO).round() as i64);
        let args = AdmitArgs {
            rpm: key.rpm.map_or(0, |v| v as i64),
            tpm: key.tpm.map_or(0, |v| v as i64),
            estimate: estimate as i64,
            budget_day: nano(key.budget_day),
            budget_month: nano(key.budget_month),
        };
        let (c, remote) = self.count(&keys, &args, now).await;
        self.note_spend(key, c.day, c.month);

        let remaining = |limit: i64, used: i64| (limit - used).max(0) as u64;
        let mut headers = RateHeaders::default();
        if let Some(rpm) = key.rpm {
            headers.requests = Some((rpm, remaining(rpm as i64, c.requests), w.minute_reset));
        }
        if let Some(tpm) = key.tpm {
            headers.tokens = Some((tpm, remaining(tpm as i64, c.tokens), w.minute_reset));
        }
        let (reason, error) = match c.verdict {
            0 => {
                let soft = |spent: i64, budget: i64| budget >= 0 && spent as f64 >= self.soft * budget as f64;
                let soft_budget = soft(c.day, args.budget_day) || soft(c.month, args.budget_month);
                let ticket = Ticket { name: key.name.clone(), keys, estimate, remote };
                return Ok(Admission { headers, soft_budget, ticket });
            }
            1 => (
                "requests",
                GatewayError::LimitExceeded {
                    message: format!(
                        "rate limit reached for key `{}`: {} requests per minute; retry in {}s",
                        key.name,
                        args.rpm,
                        w.minute_reset
                    ),
                    code: "rate_limit_exceeded",
                    retry_after: w.minute_reset,
                },
            ),
            2 => (
                "tokens",
                GatewayError::LimitExceeded {
                    message: format!(
                        "rate limit reached for key `{}`: {} tokens per minute (used {}, this request ≈ {estimate}); retry in {}s",
                        key.name, args.tpm, c.tokens, w.minute_reset
                    ),
                    code: "rate_limit_exceeded",
                    retry_after: w.minute_reset,
                },
            ),
            v => {
                let (period, budget, reset) = if v == 3 {
                    ("daily", key.budget_day, w.day_reset)
                } else {
                    ("monthly", key.budget_month, w.month_reset)
                };
                (
                    "budget",
                    GatewayError::LimitExceeded {
                        message: format!(
                            "the {period} budget of key `{}` (USD {}) is spent; it resets at {}",
                            key.name,
                            budget.unwrap_or(0.0),
                            rfc3339(now + reset)
                        ),
                        code: "budget_exceeded",
                        retry_after: reset,
                    },
                )
            }
        };
        *self.refused.lock().entry((key.name.clone(), reason)).or_insert(0) += 1;
        Err(Refusal { error, headers })
    }

    /// Checks and counts one token count of `key`. Anthropic limits counts apart from messages,
    /// so the key's `rpm` applies to its counts in a counter of their own: a client that counts
    /// before each call does not halve its calls. A count has no tokens and costs nothing, so
    /// neither the key's `tpm` nor its budgets refuse one.
    pub async fn admit_count(&self, key: &KeyPolicy) -> Result<RateHeaders, Refusal> {
        let Some(rpm) = key.rpm else { return Ok(RateHeaders::default()) };
        let now = clock::now();
        let w = Windows::at(now);
        let args = AdmitArgs { rpm: rpm as i64, tpm: 0, estimate: 0, budget_day: -1, budget_month: -1 };
        let (c, _) = self.count(&CounterKeys::counts(&key.name, &w), &args, now).await;
        let headers = RateHeaders {
            requests: Some((rpm, (rpm as i64 - c.requests).max(0) as u64, w.minute_reset)),
            tokens: None,
        };
        if c.verdict == 0 {
            return Ok(headers);
        }
        *self.refused.lock().entry((key.name.clone(), "count_requests")).or_insert(0) += 1;
        let error = GatewayError::LimitExceeded {
            message: format!(
                "rate limit reached for key `{}`: {rpm} token counts per minute; retry in {}s",
                key.name, w.minute_reset
            ),
            code: "rate_limit_exceeded",
            retry_after: w.minute_reset,
        };
        Err(Refusal { error, headers })
    }

    /// Corrects the token count with the real usage (`None`: keep the estimate) and adds the
    /// cost to the budgets (`None`: unpriced or nothing answered).
    pub async fn settle(&self, key: &KeyPolicy, t: &Ticket, tokens: Option<u64>, cost: Option<f64>) {
        let args = SettleArgs {
            token_delta: tokens.map_or(0, |n| n as i64 - t.estimate as i64),
            nano_usd: cost.map_or(0, |c| (c.max(0.0) * NANO).round() as i64),
        };
        if args.token_delta == 0 && args.nano_usd == 0 {
            return;
        }
        let mut out = None;
        if t.remote {
            if let Some(r) = &self.redis {
                if let Some(mut conn) = r.connection().await {
                    match r.settle(&mut conn, &t.keys, &args).await {
                        Ok(v) => out = Some(v),
                        Err(e) => {
                            r.failed();
                            self.went_down(&e.to_string());
                        }
                    }
                }
            }
        }
        let (day, month) = out.unwrap_or_else(|| self.local.settle(&t.keys, &args, clock::now()));
        self.note_spend(key, day, month);
    }

    fn note_spend(&self, key: &KeyPolicy, day: i64, month: i64) {
        if key.budget_day.is_none() && key.budget_month.is_none() {
            return;
        }
        self.spend.lock().insert(
            key.name.clone(),
            KeySpend {
                day_usd: day as f64 / NANO,
                month_usd: month as f64 / NANO,
                budget_day: key.budget_day,
                budget_month: key.budget_month,
            },
        );
    }

    /// Per key: spend as last seen, for `/metrics`.
    pub fn spend(&self) -> Vec<(String, KeySpend)> {
        let mut v: Vec<_> = self.spend.lock().iter().map(|(k, s)| (k.clone(), *s)).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// (key name, reason, count) of refused requests.
    pub fn refused(&self) -> Vec<(String, &'static str, u64)> {
        self.refused.lock().iter().map(|((k, r), n)| (k.clone(), *r, *n)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(rpm: Option<u64>, tpm: Option<u64>, budget_day: Option<f64>) -> KeyPolicy {
        KeyPolicy {
            name: "k".into(),
            sha256: String::new(),
            models: None,
            rpm,
            tpm,
            budget_day,
            budget_month: None,
            premium_share: None,
            cache: true,
        }
    }

    #[tokio::test]
    async fn requests_per_minute_are_counted_and_refused_with_headers() {
        let l = Limits::start(None, 0.8).await.unwrap();
        let k = key(Some(2), None, None);
        let a = l.admit(&k, 0).await.unwrap();
        assert_eq!(a.headers.requests.map(|h| (h.0, h.1)), Some((2, 1)));
        l.admit(&k, 0).await.unwrap();
        let r = l.admit(&k, 0).await.unwrap_err();
        assert_eq!(r.error.status(), 429);
        assert_eq!(r.headers.requests.map(|h| h.1), Some(0));
        assert!(r.error.retry_after().is_some_and(|s| (1..=60).contains(&s)));
        let other = KeyPolicy { name: "other".into(), ..k.clone() };
        assert!(l.admit(&other, 0).await.is_ok(), "another key has its own counters");
    }

    #[tokio::test]
    async fn token_counts_have_their_own_requests_counter_and_no_budget() {
        let l = Limits::start(None, 0.8).await.unwrap();
        let k = key(Some(2), Some(10), Some(0.0));
        assert!(l.admit(&k, 1).await.is_err(), "the day's budget of 0 is spent");
        assert_eq!(l.admit_count(&k).await.unwrap().requests.map(|h| (h.0, h.1)), Some((2, 1)));
        assert!(l.admit_count(&k).await.unwrap().tokens.is_none());
        let r = l.admit_count(&k).await.unwrap_err();
        assert_eq!(r.error.status(), 429);
        assert!(r.error.to_string().contains("token counts per minute"), "{}", r.error);
        assert_eq!(r.headers.requests.map(|h| h.1), Some(0));
        assert!(l.refused().contains(&("k".into(), "count_requests", 1)));
        // the key's calls are counted apart from its counts
        let calls = KeyPolicy { budget_day: None, ..k.clone() };
        assert!(l.admit(&calls, 1).await.is_ok(), "two counts do not use up two calls");
        let unlimited = key(None, None, None);
        for _ in 0..5 {
            assert_eq!(l.admit_count(&unlimited).await.unwrap(), RateHeaders::default());
        }
    }

    #[tokio::test]
    async fn tokens_are_estimated_then_corrected() {
        let l = Limits::start(None, 0.8).await.unwrap();
        let k = key(None, Some(100), None);
        let a = l.admit(&k, 90).await.unwrap();
        assert_eq!(a.headers.tokens.map(|h| h.1), Some(10));
        assert!(l.admit(&k, 20).await.is_err(), "90 + 20 > 100");
        // the real usage was 30 tokens: the next 20 fit
        l.settle(&k, &a.ticket, Some(30), None).await;
        let b = l.admit(&k, 20).await.unwrap();
        assert_eq!(b.headers.tokens.map(|h| h.1), Some(50));
    }

    #[tokio::test]
    async fn budgets_go_soft_then_refuse_with_the_reset_time() {
        let l = Limits::start(None, 0.8).await.unwrap();
        let k = key(None, None, Some(1.0));
        let a = l.admit(&k, 0).await.unwrap();
        assert!(!a.soft_budget);
        l.settle(&k, &a.ticket, None, Some(0.85)).await;
        let b = l.admit(&k, 0).await.unwrap();
        assert!(b.soft_budget, "85% of the budget is past the 80% soft level");
        assert_eq!(l.spend()[0].1.state(0.8), 1);
        l.settle(&k, &b.ticket, None, Some(0.2)).await;
        let r = l.admit(&k, 0).await.unwrap_err();
        assert_eq!(r.error.body().error.code.as_deref(), Some("budget_exceeded"));
        assert!(r.error.to_string().contains("resets at") && r.error.to_string().ends_with("T00:00:00Z"));
        assert_eq!(l.spend()[0].1.state(0.8), 2);
    }

    #[test]
    fn headers_use_openai_names_and_durations() {
        let h = RateHeaders { requests: Some((60, 59, 360)), tokens: Some((1000, 0, 1)) };
        let p = h.pairs();
        assert!(p.contains(&("x-ratelimit-reset-requests", "6m0s".into())));
        assert!(p.contains(&("x-ratelimit-remaining-tokens", "0".into())));
        assert_eq!(p.len(), 6);
    }
}
