//! One lazily (re)connected Redis connection with short timeouts, for the features that use Redis
//! as an accelerator shared by replicas, never as a dependency of serving (the limits' counters,
//! stored Responses): while Redis is down at most one caller a second pays for a connection
//! attempt, and every command is bounded by the response timeout.

use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;

/// How long a command waits for Redis before the caller does without it.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(250);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Between connection attempts while Redis is down.
const RETRY_EVERY: Duration = Duration::from_secs(1);

pub struct RedisLink {
    client: redis::Client,
    conn: Mutex<Option<MultiplexedConnection>>,
    /// While Redis is unreachable, the next connection attempt is not before this.
    retry_at: Mutex<Instant>,
}

impl RedisLink {
    pub fn new(url: &str) -> redis::RedisResult<RedisLink> {
        Ok(RedisLink {
            client: redis::Client::open(url)?,
            conn: Mutex::new(None),
            retry_at: Mutex::new(Instant::now()),
        })
    }

    /// The connection, (re)connecting if it is time to try; `None` while Redis counts as down.
    pub async fn connection(&self) -> Option<MultiplexedConnection> {
        if let Some(c) = self.conn.lock().clone() {
            return Some(c);
        }
        {
            let mut at = self.retry_at.lock();
            if Instant::now() < *at {
                return None;
            }
            *at = Instant::now() + RETRY_EVERY;
        }
        let cfg =
            AsyncConnectionConfig::new().set_connection_timeout(CONNECT_TIMEOUT).set_response_timeout(RESPONSE_TIMEOUT);
        match self.client.get_multiplexed_async_connection_with_config(&cfg).await {
            Ok(c) => {
                *self.conn.lock() = Some(c.clone());
                Some(c)
            }
            Err(_) => None,
        }
    }

    /// A command failed: drop the connection so the next call reconnects (after `RETRY_EVERY`).
    pub fn failed(&self) {
        *self.conn.lock() = None;
        *self.retry_at.lock() = Instant::now() + RETRY_EVERY;
    }
}
