//! In-process counters with expiry: the single-replica backend, and every replica's fallback
//! while Redis is unreachable. Mirrors the Lua scripts in `redis.rs` step for step.

use std::collections::HashMap;

use parking_lot::Mutex;

use super::{AdmitArgs, CounterKeys, Counts, SettleArgs};

/// Inserts between sweeps of expired counters.
const SWEEP_EVERY: u64 = 1024;

#[derive(Default)]
pub struct Memory {
    inner: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// key → (value, expires at unix seconds)
    map: HashMap<String, (i64, u64)>,
    inserts: u64,
}

impl State {
    fn get(&self, key: &str, now: u64) -> i64 {
        self.map.get(key).filter(|(_, exp)| *exp > now).map_or(0, |(v, _)| *v)
    }

    fn incr(&mut self, key: &str, by: i64, ttl: u64, now: u64) -> i64 {
        self.inserts += 1;
        if self.inserts.is_multiple_of(SWEEP_EVERY) {
            self.map.retain(|_, (_, exp)| *exp > now);
        }
        let e = self.map.entry(key.to_string()).or_insert((0, 0));
        if e.1 <= now {
            e.0 = 0;
        }
        e.0 += by;
        e.1 = now + ttl;
        e.0
    }
}

impl Memory {
    pub fn admit(&self, k: &CounterKeys, a: &AdmitArgs, now: u64) -> Counts {
        let mut s = self.inner.lock();
        let mut c = Counts {
            verdict: 0,
            requests: s.get(&k.requests, now),
            tokens: s.get(&k.tokens, now),
            day: s.get(&k.day, now),
            month: s.get(&k.month, now),
        };
        c.verdict = a.verdict(&c);
        if c.verdict == 0 {
            c.requests = s.incr(&k.requests, 1, k.window_ttl, now);
            if a.estimate > 0 {
                c.tokens = s.incr(&k.tokens, a.estimate, k.window_ttl, now);
            }
        }
        c
    }

    pub fn settle(&self, k: &CounterKeys, a: &SettleArgs, now: u64) -> (i64, i64) {
        let mut s = self.inner.lock();
        if a.token_delta != 0 {
            s.incr(&k.tokens, a.token_delta, k.window_ttl, now);
        }
        if a.nano_usd > 0 {
            let d = s.incr(&k.day, a.nano_usd, k.day_ttl, now);
            let m = s.incr(&k.month, a.nano_usd, k.month_ttl, now);
            (d, m)
        } else {
            (s.get(&k.day, now), s.get(&k.month, now))
        }
    }
}
