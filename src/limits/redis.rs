//! Counters in Redis, shared by every replica: one atomic Lua script checks all of a key's limits
//! and counts the request, another adds the real tokens and the cost afterwards. Every counter
//! key expires with its window, so Redis holds only the current minute, day and month.
//!
//! The scripts go by their SHA-1 (EVALSHA, through the `redis` crate's `Script`): a request sends
//! its keys and numbers, not the script's few hundred bytes. A Redis that does not know a script
//! (restarted, flushed, another replica's) answers NOSCRIPT, and `Script` loads it and retries.

use redis::aio::MultiplexedConnection;

use super::{AdmitArgs, CounterKeys, Counts, SettleArgs};
use crate::redis_link::RedisLink;

/// verdicts: 0 admitted, 1 requests per minute, 2 tokens per minute, 3 day budget, 4 month budget
const ADMIT: &str = r"
local req = tonumber(redis.call('GET', KEYS[1]) or '0')
local tok = tonumber(redis.call('GET', KEYS[2]) or '0')
local day = tonumber(redis.call('GET', KEYS[3]) or '0')
local mon = tonumber(redis.call('GET', KEYS[4]) or '0')
local rpm, tpm, est = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local bd, bm = tonumber(ARGV[4]), tonumber(ARGV[5])
local v = 0
if bd >= 0 and day >= bd then v = 3
elseif bm >= 0 and mon >= bm then v = 4
elseif rpm > 0 and req >= rpm then v = 1
elseif tpm > 0 and tok > 0 and tok + est > tpm then v = 2 end
if v == 0 then
  req = redis.call('INCR', KEYS[1])
  redis.call('EXPIRE', KEYS[1], ARGV[6])
  if est > 0 then
    tok = redis.call('INCRBY', KEYS[2], est)
    redis.call('EXPIRE', KEYS[2], ARGV[6])
  end
end
return {v, req, tok, day, mon}
";

const SETTLE: &str = r"
if tonumber(ARGV[1]) ~= 0 then
  redis.call('INCRBY', KEYS[1], ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
local day = tonumber(redis.call('GET', KEYS[2]) or '0')
local mon = tonumber(redis.call('GET', KEYS[3]) or '0')
if tonumber(ARGV[2]) > 0 then
  day = redis.call('INCRBY', KEYS[2], ARGV[2])
  redis.call('EXPIRE', KEYS[2], ARGV[4])
  mon = redis.call('INCRBY', KEYS[3], ARGV[2])
  redis.call('EXPIRE', KEYS[3], ARGV[5])
end
return {day, mon}
";

pub struct RedisCounters {
    link: RedisLink,
    admit: redis::Script,
    settle: redis::Script,
}

impl RedisCounters {
    pub fn new(target: &crate::redis_link::RedisTarget) -> redis::RedisResult<RedisCounters> {
        Ok(RedisCounters {
            link: RedisLink::new(target)?,
            admit: redis::Script::new(ADMIT),
            settle: redis::Script::new(SETTLE),
        })
    }

    /// The connection; `None` while Redis counts as down (see [`RedisLink`]).
    pub async fn connection(&self) -> Option<MultiplexedConnection> {
        self.link.connection().await
    }

    /// A command failed: the next call reconnects.
    pub fn failed(&self) {
        self.link.failed()
    }

    pub async fn admit(
        &self,
        conn: &mut MultiplexedConnection,
        k: &CounterKeys,
        a: &AdmitArgs,
    ) -> redis::RedisResult<Counts> {
        let v: Vec<i64> = self
            .admit
            .key(&k.requests)
            .key(&k.tokens)
            .key(&k.day)
            .key(&k.month)
            .arg(a.rpm)
            .arg(a.tpm)
            .arg(a.estimate)
            .arg(a.budget_day)
            .arg(a.budget_month)
            .arg(k.window_ttl)
            .invoke_async(conn)
            .await?;
        match v.as_slice() {
            [verdict, requests, tokens, day, month] => {
                Ok(Counts { verdict: *verdict as u8, requests: *requests, tokens: *tokens, day: *day, month: *month })
            }
            _ => Err((redis::ErrorKind::TypeError, "unexpected reply from the admit script").into()),
        }
    }

    pub async fn settle(
        &self,
        conn: &mut MultiplexedConnection,
        k: &CounterKeys,
        a: &SettleArgs,
    ) -> redis::RedisResult<(i64, i64)> {
        let v: Vec<i64> = self
            .settle
            .key(&k.tokens)
            .key(&k.day)
            .key(&k.month)
            .arg(a.token_delta)
            .arg(a.nano_usd)
            .arg(k.window_ttl)
            .arg(k.day_ttl)
            .arg(k.month_ttl)
            .invoke_async(conn)
            .await?;
        match v.as_slice() {
            [d, m] => Ok((*d, *m)),
            _ => Err((redis::ErrorKind::TypeError, "unexpected reply from the settle script").into()),
        }
    }
}
