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

/// The Redis the replicas share: `redis://` or, with TLS, `rediss://`
/// (`[user:password@]host:port[/db]`), and the PEM of the CA that signed the server's certificate
/// when the system's store does not hold it (a private CA). Its `Debug` hides the password.
#[derive(Clone)]
pub struct RedisTarget {
    pub url: String,
    pub ca: Option<Vec<u8>>,
}

impl RedisTarget {
    pub fn new(url: impl Into<String>) -> RedisTarget {
        RedisTarget { url: url.into(), ca: None }
    }

    /// A client for it: TLS verified against `ca` when one is given, else as the URL says
    /// (`rediss://` against the system's roots).
    pub fn client(&self) -> redis::RedisResult<redis::Client> {
        match &self.ca {
            Some(pem) => redis::Client::build_with_tls(
                self.url.as_str(),
                redis::TlsCertificates { client_tls: None, root_cert: Some(pem.clone()) },
            ),
            None => redis::Client::open(self.url.as_str()),
        }
    }

    /// The URL without its password, for logs and errors.
    pub fn redacted(&self) -> String {
        let url = &self.url;
        match (url.find("://"), url.rfind('@')) {
            (Some(s), Some(at)) if at > s => format!("{}://*****@{}", &url[..s], &url[at + 1..]),
            _ => url.to_string(),
        }
    }
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTarget").field("url", &self.redacted()).field("ca", &self.ca.is_some()).finish()
    }
}

pub struct RedisLink {
    client: redis::Client,
    conn: Mutex<Option<MultiplexedConnection>>,
    /// While Redis is unreachable, the next connection attempt is not before this.
    retry_at: Mutex<Instant>,
}

impl RedisLink {
    pub fn new(target: &RedisTarget) -> redis::RedisResult<RedisLink> {
        Ok(RedisLink { client: target.client()?, conn: Mutex::new(None), retry_at: Mutex::new(Instant::now()) })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_logs() {
        let t = RedisTarget::new("rediss://user:hunter2@cache:6380/0");
        assert_eq!(t.redacted(), "rediss://*****@cache:6380/0");
        assert!(!format!("{t:?}").contains("hunter2"));
        assert_eq!(RedisTarget::new("redis://127.0.0.1:6379").redacted(), "redis://127.0.0.1:6379");
    }
}
