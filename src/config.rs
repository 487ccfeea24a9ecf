//! The TOML configuration: typed, defaulted, validated with errors that name the offending key.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

/// `t-` and 12 lowercase hex digits: the form tenant ids take (`http::tenant_of`).
pub fn is_tenant_id(s: &str) -> bool {
    s.strip_prefix("t-").is_some_and(|h| h.len() == 12 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), message: message.into() }
}

/// A secret (provider or gateway key). Printing it, in logs or debug output, shows `*****`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("*****")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("*****")
    }
}

/// How a secret is written in the file: `env:NAME` (read from the environment at load) or the
/// literal value (discouraged, but handy for local tests).
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct SecretSpec(String);

impl fmt::Debug for SecretSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.strip_prefix("env:") {
            Some(name) => write!(f, "env:{name}"),
            None => f.write_str("*****"),
        }
    }
}

impl SecretSpec {
    pub fn env(name: &str) -> Self {
        SecretSpec(format!("env:{name}"))
    }
    pub fn literal(value: &str) -> Self {
        SecretSpec(value.to_string())
    }
    pub fn resolve(&self, key: &str) -> Result<Secret, ConfigError> {
        match self.0.strip_prefix("env:") {
            Some(name) => match std::env::var(name) {
                Ok(v) if !v.trim().is_empty() => Ok(Secret(v.trim().to_string())),
                _ => Err(invalid(key, format!("environment variable {name} is not set"))),
            },
            None => Ok(Secret(self.0.clone())),
        }
    }
}

/// A duration written as `250ms`, `30s`, `5m`, `24h` or `7d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map(Dur).map_err(serde::de::Error::custom)
    }
}

/// 100 years: longer than any timeout, TTL or interval means anything.
const MAX_DURATION_SECS: f64 = 100.0 * 365.0 * 86400.0;

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?} (use e.g. 30s, 5m, 24h)"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return Err(format!("invalid duration unit in {s:?} (use ms, s, m, h or d)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("invalid duration {s:?}"));
    }
    // Durations are added to `Instant::now()` on the request path; one that overflows it would
    // panic there (and one past `Duration::MAX` panicked here, found by the fuzzer).
    if secs > MAX_DURATION_SECS {
        return Err(format!("duration {s:?} is too long (at most 100 years)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub embed: EmbedConfig,
    pub cache: CacheConfig,
    pub router: RouterConfig,
    pub dispatch: DispatchConfig,
    pub tiers: BTreeMap<String, TierSpec>,
    pub providers: BTreeMap<String, ProviderConfig>,
    /// USD per million tokens, by upstream model name; overrides the shipped catalog.
    pub prices: BTreeMap<String, Price>,
    pub limits: LimitsConfig,
    /// The request log (`[log] path = "var/requests.jsonl"` turns it on).
    pub log: LogConfig,
    /// Upstream embedding models `/v1/embeddings` forwards to.
    pub embeddings: EmbeddingsConfig,
    /// Where OpenAI's other stateless endpoints (moderations, images, audio, completions) go.
    pub passthrough: PassthroughConfig,
}

/// `[passthrough] provider = "openai"`: `/v1/moderations`, `/v1/images/*`, `/v1/audio/*` and
/// `/v1/completions` are forwarded as they are to that OpenAI-compatible provider. None: 404.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PassthroughConfig {
    pub provider: Option<String>,
}

/// The model name under which `/v1/embeddings` serves the in-process MiniLM (the cache's own
/// embedding), also used when a request names no model.
pub const LOCAL_EMBEDDING_MODEL: &str = "all-MiniLM-L6-v2";

/// `[embeddings] models = ["openai:text-embedding-3-small", …]`: a client asking
/// `/v1/embeddings` for `text-embedding-3-small` gets that model's vectors from its deployments
/// (several of one model fail over in config order). Any other name but the local model's is a
/// 404: vectors from a model other than the one asked for would silently mix vector spaces.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddingsConfig {
    pub models: Vec<DeploymentSpec>,
    /// Other names the local model answers to, for clients that cannot change the name they ask
    /// for (LangChain's `OpenAIEmbeddings` asks for `text-embedding-ada-002` by default). An
    /// explicit choice, and the answer still names `all-MiniLM-L6-v2`.
    pub local_aliases: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Share of a key's budget at which `model: "auto"` stops choosing premium for that key.
    pub soft_budget: f64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig { soft_budget: 0.8 }
    }
}

/// Whether prompts and answers go in the request log.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogContent {
    #[default]
    Off,
    /// In clear.
    Store,
    /// As `sha256:<hex>`: equal prompts can be matched, their text cannot be read.
    Hash,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// The JSON-lines file, or `-` for standard output (not rotated: in a container the
    /// platform's collector owns the stream); none: no log (usage totals are still kept for
    /// `/admin/usage`).
    pub path: Option<PathBuf>,
    /// Lines waiting for the writer; past it lines are dropped (and counted), never waited for.
    pub queue: usize,
    /// Rotate when the file reaches this size (0: never by size).
    pub max_bytes: u64,
    /// Rotate when the file is this old (0s: never by age).
    pub max_age: Dur,
    /// Rotated files kept (the oldest are deleted).
    pub keep: usize,
    pub content: LogContent,
    /// Records kept in memory for `GET /admin/requests`.
    pub recent: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            path: None,
            queue: 4096,
            max_bytes: 100 * 1024 * 1024,
            max_age: Dur(Duration::from_secs(86_400)),
            keep: 7,
            content: LogContent::Off,
            recent: 1000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Comma-separated gateway keys; each key is a tenant. None: no authentication, one tenant.
    pub gateway_keys: Option<SecretSpec>,
    /// The key for the operator's endpoints (`/admin/*`, `/dashboard`). Separate from gateway
    /// keys so a tenant can never read another tenant's usage. None: those endpoints are open
    /// when no gateway keys are set, and refused (401) when gateway keys are set.
    pub admin_key: Option<SecretSpec>,
    /// The key file: gateway keys by SHA-256 with names, limits and budgets (see `keys`).
    /// Reloaded on SIGHUP and when it changes; works alongside `gateway_keys`.
    pub keys_file: Option<PathBuf>,
    /// How often the key file's modification time is checked (0s: only on SIGHUP).
    pub keys_reload_interval: Dur,
    pub max_body_bytes: usize,
    pub request_timeout: Dur,
    pub shutdown_grace: Dur,
    /// After SIGTERM, keep serving this long while `/health` answers 503 `draining`, before
    /// accepting stops: a load balancer or Kubernetes takes the replica out of rotation first,
    /// so the requests it still sends meanwhile are served, not refused. 0s: stop at once.
    pub shutdown_delay: Dur,
    /// Requests handled at once; past it a request gets 503 with `Retry-After`.
    pub max_concurrency: usize,
    /// The time a client has to send a request's headers, from their first byte (or from the
    /// connect, for a connection that has sent nothing): slow-loris clients are cut off.
    pub header_read_timeout: Dur,
    /// A kept-alive connection with no request in flight is closed after this long. Longer than
    /// the idle expiry of common client pools (reqwest 90 s, httpx 5 s), so the client, not the
    /// server, closes first and never sends a request into a connection being closed.
    pub keep_alive_timeout: Dur,
    /// Largest request head (request line + headers) accepted; larger gets 431.
    pub max_header_bytes: usize,
    /// Most headers a request may carry; more gets 431.
    pub max_headers: usize,
    /// Memory for Responses API answers kept for `previous_response_id` and
    /// `GET /v1/responses/{id}` (per replica; the oldest are forgotten first). 0 keeps none.
    pub responses_store_bytes: usize,
    /// How long a stored response can be continued or read back (in memory, and in Redis with
    /// the shared tier on).
    pub responses_ttl: Dur,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            gateway_keys: None,
            admin_key: None,
            keys_file: None,
            keys_reload_interval: Dur(Duration::from_secs(2)),
            max_body_bytes: 4 * 1024 * 1024,
            request_timeout: Dur(Duration::from_secs(300)),
            shutdown_grace: Dur(Duration::from_secs(30)),
            shutdown_delay: Dur(Duration::ZERO),
            max_concurrency: 4096,
            header_read_timeout: Dur(Duration::from_secs(10)),
            keep_alive_timeout: Dur(Duration::from_secs(120)),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            responses_store_bytes: 64 * 1024 * 1024,
            responses_ttl: Dur(Duration::from_secs(24 * 3600)),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbedConfig {
    pub model_dir: PathBuf,
    /// Prompts are embedded from their first `max_tokens` word pieces (MiniLM was trained on 256).
    pub max_tokens: usize,
    pub max_batch: usize,
    /// Pending embedding requests before new ones are refused: the request then skips the
    /// semantic lookup (exact match only) and is routed without a vector, instead of waiting.
    pub queue: usize,
    /// The longest a request waits for its embedding (queue + inference) before it goes on
    /// without one, as above. Jobs whose caller stopped waiting are dropped unprocessed, so an
    /// overloaded embedder catches up instead of computing vectors nobody reads.
    pub max_wait: Dur,
    /// Threads one batched forward pass may use (the batch is split between them; a single
    /// prompt runs on one). Default: the machine's cores, at most 4.
    pub threads: usize,
    /// `fast` (our packed-weight encoder) or `candle` (candle-transformers' BertModel).
    pub engine: crate::embed::Engine,
}

impl Default for EmbedConfig {
    fn default() -> Self {
        EmbedConfig {
            model_dir: PathBuf::from("models/all-MiniLM-L6-v2"),
            max_tokens: 256,
            max_batch: 32,
            // two full batches: an admitted request waits behind little, so it is served well
            // within `max_wait`; beyond it, requests go on without a vector at once
            queue: 64,
            max_wait: Dur(Duration::from_millis(500)),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get().min(4)),
            engine: crate::embed::Engine::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    pub enabled: bool,
    /// The decision rule (threshold + near-miss guard) measured and shipped in `models/`.
    pub rule: PathBuf,
    /// Overrides the rule's cosine threshold.
    pub threshold: Option<f32>,
    pub ttl: Dur,
    pub max_entries: usize,
    /// Memory-backend persistence: written every `snapshot_interval` and on shutdown (atomic
    /// replace, checksummed), restored at start; a corrupt file is set aside and the cache starts empty.
    pub snapshot: Option<PathBuf>,
    /// How often the snapshot is rewritten while serving (only when the cache changed), so a
    /// crash or `kill -9` loses at most this much. `0s`: only on shutdown.
    pub snapshot_interval: Dur,
    /// Entries in one namespace at which its exact flat scan is replaced by an HNSW graph.
    pub hnsw_from: usize,
    /// Candidates an HNSW lookup keeps: higher finds the true nearest neighbour more often in
    /// very large namespaces, at a proportional cost per lookup (`cargo bench --bench index`).
    pub hnsw_ef_search: usize,
    /// Overrides the rule's near-miss guard (number/negation/entity/antonym conflicts veto a hit).
    pub guard: Option<bool>,
    /// `"memory"` (default), or a Redis URL for the shared tier: replicas pointing at the same
    /// Redis and `shared_stream` serve each other's answers. `redis://[user:password@]host:port`,
    /// or `rediss://…` for TLS (managed Redis services require it).
    pub backend: String,
    /// For `rediss://`: the PEM file of the CA that signed the server's certificate, when the
    /// system's trust store does not hold it (a private CA). None: the system's roots.
    pub redis_ca: Option<PathBuf>,
    /// The Redis stream the replicas share.
    pub shared_stream: String,
    /// Answers waiting to be published to the shared tier; past it (Redis slow or down) new ones
    /// are dropped for the other replicas and counted, never waited for.
    pub shared_queue: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: true,
            rule: PathBuf::from("models/cache_rule.json"),
            threshold: None,
            ttl: Dur(Duration::from_secs(24 * 3600)),
            max_entries: 1_000_000,
            snapshot: None,
            snapshot_interval: Dur(Duration::from_secs(60)),
            hnsw_from: 4096,
            hnsw_ef_search: 64,
            guard: None,
            backend: "memory".into(),
            redis_ca: None,
            shared_stream: "switchyard:cache".into(),
            shared_queue: 4096,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterConfig {
    /// The model name that asks the router to choose.
    pub alias: String,
    pub cheap: String,
    pub premium: String,
    /// Premium when the score is at or above this.
    pub threshold: Option<f32>,
    /// Or: the share of traffic to send premium, turned into a threshold by calibration.
    pub premium_share: Option<f32>,
    /// Trained router directory; when absent or missing, the prompt-length baseline is used.
    pub model_dir: Option<PathBuf>,
    /// Within one conversation, never move down a tier.
    pub affinity: bool,
    /// Recent router scores the live threshold is read from (per window: the global one, and one
    /// per tenant with its own share). Larger follows a change of mix more slowly.
    pub share_window: usize,
    /// Scores seen before the live threshold has fully replaced the training calibration.
    pub share_warmup: usize,
    /// A premium share of its own for a tenant, keyed by tenant id (`t-` and the first 12 hex
    /// digits of the key's SHA-256, as `/metrics` shows it; the raw key never goes in the file).
    /// Such a tenant gets its own score window; every other tenant shares the global one.
    pub tenant_share: BTreeMap<String, f32>,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            alias: "auto".into(),
            cheap: "cheap".into(),
            premium: "premium".into(),
            threshold: None,
            premium_share: None,
            model_dir: None,
            affinity: true,
            share_window: 128,
            share_warmup: 16,
            tenant_share: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatchConfig {
    /// Attempts on one deployment (first try included) before failing over.
    pub attempts_per_deployment: u32,
    pub backoff_base: Dur,
    pub backoff_max: Dur,
    /// The longest `Retry-After` we will wait for before failing over instead.
    pub retry_after_cap: Dur,
    /// The whole request, across every retry and failover.
    pub deadline: Dur,
    /// Open a deployment's breaker after this many failures in a row …
    pub breaker_failures: u32,
    /// … or when at least this share of its calls in the last `breaker_window` failed …
    pub breaker_error_rate: f64,
    pub breaker_window: Dur,
    /// … counting only once the window holds this many calls (two failures out of three is noise).
    pub breaker_min_requests: u32,
    /// How long an open breaker stays open before one probe is let through (half-open).
    pub breaker_cooldown: Dur,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            attempts_per_deployment: 2,
            backoff_base: Dur(Duration::from_millis(100)),
            backoff_max: Dur(Duration::from_secs(2)),
            retry_after_cap: Dur(Duration::from_secs(10)),
            deadline: Dur(Duration::from_secs(300)),
            breaker_failures: 5,
            breaker_error_rate: 0.5,
            breaker_window: Dur(Duration::from_secs(60)),
            breaker_min_requests: 20,
            breaker_cooldown: Dur(Duration::from_secs(30)),
        }
    }
}

/// A tier: an ordered list of deployments, written `["provider:model", …]` or as a table.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TierSpec {
    List(Vec<DeploymentSpec>),
    Table(TierTable),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierTable {
    pub deployments: Vec<DeploymentSpec>,
    #[serde(default)]
    pub fallback_tier: Option<String>,
    /// Let failover move a request to a deployment pricier than the one it was routed to.
    /// Off by default: a misconfigured fallback must not silently raise spend.
    #[serde(default)]
    pub allow_pricier_fallback: bool,
}

impl TierSpec {
    pub fn deployments(&self) -> &[DeploymentSpec] {
        match self {
            TierSpec::List(d) => d,
            TierSpec::Table(t) => &t.deployments,
        }
    }
    pub fn allow_pricier_fallback(&self) -> bool {
        matches!(self, TierSpec::Table(t) if t.allow_pricier_fallback)
    }
    pub fn fallback_tier(&self) -> Option<&str> {
        match self {
            TierSpec::List(_) => None,
            TierSpec::Table(t) => t.fallback_tier.as_deref(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum DeploymentSpec {
    Short(String),
    Full(DeploymentTable),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentTable {
    pub provider: String,
    pub model: String,
    #[serde(default)]
    pub vision: bool,
    /// The model reasons and takes `reasoning_effort` (OpenAI's o-series and gpt-5, DeepSeek-R1
    /// or QwQ behind vLLM): an Anthropic-style `thinking` request (a Messages client's) is sent
    /// to it as a `reasoning_effort`. Not set, the model never sees one it did not ask for:
    /// OpenAI refuses `reasoning_effort` on models that do not reason.
    #[serde(default)]
    pub reasoning: bool,
    #[serde(default)]
    pub weight: Option<u32>,
    /// Calls in flight to this deployment at most; a request finding it full goes on to the next
    /// deployment (failover order) instead of queueing, so one slow provider cannot hold every
    /// slot of the gateway. None: no cap beyond `server.max_concurrency`.
    #[serde(default)]
    pub max_concurrency: Option<usize>,
}

/// A deployment after validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    pub provider: String,
    pub model: String,
    pub vision: bool,
    /// See [`DeploymentTable::reasoning`].
    pub reasoning: bool,
    /// Share of the tier's traffic this deployment takes first (weighted random order). `None` on
    /// every deployment of a tier: strict config order (primary, then failover).
    pub weight: Option<u32>,
    /// See [`DeploymentTable::max_concurrency`].
    pub max_concurrency: Option<usize>,
}

impl DeploymentSpec {
    fn resolve(&self, key: &str) -> Result<Deployment, ConfigError> {
        match self {
            DeploymentSpec::Short(s) => {
                let (p, m) = s
                    .split_once(':')
                    .filter(|(p, m)| !p.is_empty() && !m.is_empty())
                    .ok_or_else(|| invalid(key, format!("{s:?} must be \"provider:model\"")))?;
                Ok(Deployment {
                    provider: p.into(),
                    model: m.into(),
                    vision: false,
                    reasoning: false,
                    weight: None,
                    max_concurrency: None,
                })
            }
            DeploymentSpec::Full(t) => Ok(Deployment {
                provider: t.provider.clone(),
                model: t.model.clone(),
                vision: t.vision,
                reasoning: t.reasoning,
                weight: t.weight,
                max_concurrency: t.max_concurrency,
            }),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI and every server that speaks its API (vLLM, Ollama, Groq, Together, …).
    Openai,
    /// Azure OpenAI: deployment in the path, `api-version` query, `api-key` header.
    Azure,
    Anthropic,
    Gemini,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    pub base_url: String,
    #[serde(default)]
    pub api_key: Option<SecretSpec>,
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
    #[serde(default = "default_first_byte_timeout")]
    pub first_byte_timeout: Dur,
    #[serde(default = "default_total_timeout")]
    pub total_timeout: Dur,
    /// Anthropic requires `max_tokens`; used when the client gave none.
    #[serde(default = "default_max_tokens")]
    pub default_max_tokens: u32,
    /// Headers sent on every call to this provider: Anthropic's `anthropic-beta` flags,
    /// OpenRouter's `HTTP-Referer` / `X-Title`, a proxy's routing header. Not for credentials:
    /// the headers that carry a key are refused here (use `api_key`, which is kept out of logs,
    /// errors and metrics).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// Headers that carry a provider key: set by `api_key` only.
const CREDENTIAL_HEADERS: [&str; 5] =
    ["authorization", "x-api-key", "api-key", "x-goog-api-key", "proxy-authorization"];

fn default_connect_timeout() -> Dur {
    Dur(Duration::from_secs(5))
}
fn default_first_byte_timeout() -> Dur {
    Dur(Duration::from_secs(60))
}
fn default_total_timeout() -> Dur {
    Dur(Duration::from_secs(600))
}
fn default_max_tokens() -> u32 {
    4096
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// USD per million prompt tokens.
    pub input: f64,
    /// USD per million completion tokens.
    pub output: f64,
    /// USD per million prompt tokens read from the provider's prompt cache (informational: the
    /// cost of a request is charged at `input`, an upper bound).
    #[serde(default)]
    pub cached_input: Option<f64>,
}

impl Price {
    pub const fn new(input: f64, output: f64) -> Price {
        Price { input, output, cached_input: None }
    }

    pub fn cost(&self, prompt_tokens: u64, completion_tokens: u64) -> f64 {
        (prompt_tokens as f64 * self.input + completion_tokens as f64 * self.output) / 1e6
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse { path: path.to_path_buf(), message },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let cfg = Config::parse_partial(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses without the cross-reference checks, for `--demo`, which supplies its own tiers and
    /// providers and validates afterwards.
    pub fn parse_partial(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse { path: PathBuf::from("<config>"), message: e.to_string() })
    }

    pub fn load_partial(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Config::parse_partial(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse { path: path.to_path_buf(), message },
            other => other,
        })
    }

    /// Checks every cross-reference and range. Secrets are checked for presence here too, so a
    /// missing `env:` variable is reported at start, not on the first request.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(k) = &self.server.gateway_keys {
            k.resolve("server.gateway_keys")?;
        }
        if let Some(k) = &self.server.admin_key {
            k.resolve("server.admin_key")?;
        }
        if self.server.max_body_bytes < 1024 {
            return Err(invalid("server.max_body_bytes", "must be at least 1024"));
        }
        if self.server.max_concurrency == 0 {
            return Err(invalid("server.max_concurrency", "must be at least 1"));
        }
        if self.server.header_read_timeout.0.is_zero() {
            return Err(invalid("server.header_read_timeout", "must be more than 0"));
        }
        if self.server.keep_alive_timeout.0.is_zero() {
            return Err(invalid("server.keep_alive_timeout", "must be more than 0"));
        }
        if !(1024..=256 * 1024).contains(&self.server.max_header_bytes) {
            return Err(invalid("server.max_header_bytes", "must be between 1024 and 262144"));
        }
        if !(1..=1000).contains(&self.server.max_headers) {
            return Err(invalid("server.max_headers", "must be between 1 and 1000"));
        }
        let every = self.cache.snapshot_interval.0;
        if !every.is_zero() && every < Duration::from_millis(100) {
            return Err(invalid("cache.snapshot_interval", "must be 0s (only on shutdown) or at least 100ms"));
        }
        if self.embed.max_tokens == 0 || self.embed.max_tokens > 512 {
            return Err(invalid("embed.max_tokens", "must be between 1 and 512"));
        }
        if self.embed.max_batch == 0 || self.embed.queue == 0 || self.embed.threads == 0 {
            return Err(invalid("embed", "max_batch, queue and threads must be at least 1"));
        }
        if self.cache.threshold.is_some_and(|t| !(0.0..=1.0).contains(&t)) {
            return Err(invalid("cache.threshold", "must be a cosine similarity between 0 and 1"));
        }
        if self.embed.max_wait.0.is_zero() {
            return Err(invalid("embed.max_wait", "must be more than 0"));
        }
        if self.cache.shared_queue == 0 {
            return Err(invalid("cache.shared_queue", "must be at least 1"));
        }
        if self.cache.max_entries == 0 {
            return Err(invalid("cache.max_entries", "must be at least 1"));
        }
        if !(1..=4096).contains(&self.cache.hnsw_ef_search) {
            return Err(invalid("cache.hnsw_ef_search", "must be between 1 and 4096"));
        }
        if let Some(t) = self.router.threshold {
            // a score on the router's own scale, which changes with the router: only finiteness is ours to check
            if !t.is_finite() {
                return Err(invalid("router.threshold", "must be a finite number"));
            }
        }
        if let Some(s) = self.router.premium_share {
            if !(0.0..=1.0).contains(&s) {
                return Err(invalid("router.premium_share", "must be between 0 and 1"));
            }
        }
        if !(16..=65_536).contains(&self.router.share_window) {
            return Err(invalid("router.share_window", "must be between 16 and 65536"));
        }
        if self.router.share_warmup > self.router.share_window {
            return Err(invalid("router.share_warmup", "must not exceed router.share_window"));
        }
        for (tenant, s) in &self.router.tenant_share {
            let key = format!("router.tenant_share.{tenant}");
            if !is_tenant_id(tenant) {
                return Err(invalid(
                    key,
                    "must be a tenant id: `t-` and the first 12 hex digits of the key's SHA-256 (as /metrics shows it)",
                ));
            }
            if !(0.0..=1.0).contains(s) {
                return Err(invalid(key, "must be between 0 and 1"));
            }
            if self.server.gateway_keys.is_none() {
                return Err(invalid(key, "needs server.gateway_keys (tenants are gateway keys)"));
            }
        }
        if self.router.threshold.is_some() && self.router.premium_share.is_some() {
            return Err(invalid("router", "give either threshold or premium_share, not both"));
        }
        let rate = self.dispatch.breaker_error_rate;
        if !(rate > 0.0 && rate <= 1.0) {
            return Err(invalid("dispatch.breaker_error_rate", "must be in (0, 1]"));
        }
        if self.dispatch.breaker_failures == 0 {
            return Err(invalid("dispatch.breaker_failures", "must be at least 1"));
        }
        let backend = self.cache.backend.as_str();
        if backend != "memory" && !backend.starts_with("redis://") && !backend.starts_with("rediss://") {
            return Err(invalid("cache.backend", "must be \"memory\", a redis:// URL or a rediss:// (TLS) URL"));
        }
        if self.cache.redis_ca.is_some() && !backend.starts_with("rediss://") {
            return Err(invalid("cache.redis_ca", "is for a TLS backend (rediss://)"));
        }
        if !(self.limits.soft_budget > 0.0 && self.limits.soft_budget <= 1.0) {
            return Err(invalid("limits.soft_budget", "must be in (0, 1]"));
        }
        if self.log.queue == 0 || self.log.recent == 0 {
            return Err(invalid("log", "queue and recent must be at least 1"));
        }
        if let Some(p) = &self.server.keys_file {
            if p.as_os_str().is_empty() {
                return Err(invalid("server.keys_file", "must be a path"));
            }
        }
        if self.dispatch.attempts_per_deployment == 0 {
            return Err(invalid("dispatch.attempts_per_deployment", "must be at least 1"));
        }
        for (name, p) in &self.providers {
            let key = format!("providers.{name}");
            if !(p.base_url.starts_with("http://") || p.base_url.starts_with("https://")) {
                return Err(invalid(format!("{key}.base_url"), "must start with http:// or https://"));
            }
            for (name, value) in &p.headers {
                let at = format!("{key}.headers.{name}");
                if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    return Err(invalid(at, "is not a valid header name"));
                }
                if CREDENTIAL_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                    return Err(invalid(at, "carries a key: set it with api_key, which is kept out of logs"));
                }
                if reqwest::header::HeaderValue::from_str(value).is_err() {
                    return Err(invalid(at, "must be visible ASCII"));
                }
            }
            if let Some(k) = &p.api_key {
                k.resolve(&format!("{key}.api_key"))?;
            }
            if p.kind == ProviderKind::Azure && p.api_version.is_none() {
                return Err(invalid(format!("{key}.api_version"), "is required for kind = \"azure\""));
            }
        }
        if self.tiers.is_empty() {
            return Err(invalid("tiers", "at least one tier is needed"));
        }
        for (name, tier) in &self.tiers {
            let key = format!("tiers.{name}");
            if tier.deployments().is_empty() {
                return Err(invalid(&key, "needs at least one deployment"));
            }
            for (i, d) in tier.deployments().iter().enumerate() {
                let dk = format!("{key}[{i}]");
                let d = d.resolve(&dk)?;
                if d.max_concurrency == Some(0) {
                    return Err(invalid(format!("{dk}.max_concurrency"), "must be at least 1"));
                }
                if !self.providers.contains_key(&d.provider) {
                    return Err(invalid(dk, format!("unknown provider {:?}", d.provider)));
                }
            }
            if let Some(fb) = tier.fallback_tier() {
                if !self.tiers.contains_key(fb) || fb == name {
                    return Err(invalid(format!("{key}.fallback_tier"), format!("unknown tier {fb:?}")));
                }
            }
        }
        for tier in [&self.router.cheap, &self.router.premium] {
            if !self.tiers.contains_key(tier) {
                return Err(invalid("router", format!("tier {tier:?} is not defined under [tiers]")));
            }
        }
        if let Some(name) = &self.passthrough.provider {
            match self.providers.get(name).map(|p| p.kind) {
                None => return Err(invalid("passthrough.provider", format!("unknown provider {name:?}"))),
                Some(ProviderKind::Openai) => {}
                Some(_) => {
                    return Err(invalid(
                        "passthrough.provider",
                        "must be kind = \"openai\": requests are forwarded in OpenAI's paths and format",
                    ))
                }
            }
        }
        for (i, d) in self.embeddings.models.iter().enumerate() {
            let dk = format!("embeddings.models[{i}]");
            let d = d.resolve(&dk)?;
            if self.embeddings.local_aliases.contains(&d.model) {
                return Err(invalid(dk, format!("{:?} is also in embeddings.local_aliases", d.model)));
            }
            if d.max_concurrency == Some(0) {
                return Err(invalid(format!("{dk}.max_concurrency"), "must be at least 1"));
            }
            if d.model == LOCAL_EMBEDDING_MODEL {
                return Err(invalid(dk, format!("{LOCAL_EMBEDDING_MODEL} is the gateway's own model")));
            }
            match self.providers.get(&d.provider).map(|p| p.kind) {
                None => return Err(invalid(dk, format!("unknown provider {:?}", d.provider))),
                Some(ProviderKind::Openai | ProviderKind::Azure) => {}
                Some(_) => {
                    return Err(invalid(
                        dk,
                        "embeddings are forwarded in OpenAI's format: the provider must be kind = \"openai\" or \"azure\" (Anthropic has no embeddings API; Gemini serves OpenAI's at https://generativelanguage.googleapis.com/v1beta/openai)",
                    ))
                }
            }
        }
        Ok(())
    }

    /// The upstream embedding deployments, resolved. Only valid after [`Config::validate`].
    pub fn embedding_deployments(&self) -> Vec<Deployment> {
        self.embeddings.models.iter().filter_map(|d| d.resolve("").ok()).collect()
    }

    /// Whether the cache backend is a Redis (the shared tier, shared limits and stored responses).
    pub fn redis_url(&self) -> Option<&str> {
        let b = self.cache.backend.as_str();
        (b.starts_with("redis://") || b.starts_with("rediss://")).then_some(b)
    }

    /// Deployments of a tier, resolved. Only valid after [`Config::validate`].
    pub fn tier_deployments(&self, tier: &str) -> Vec<Deployment> {
        self.tiers
            .get(tier)
            .map(|t| t.deployments().iter().filter_map(|d| d.resolve("").ok()).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the fuzzer (`config`): `"9999999999999999h"` panicked in `Duration::from_secs_f64`
    /// instead of failing validation; durations past 100 years are refused by name.
    #[test]
    fn absurd_durations_are_errors_not_panics() {
        assert!(parse_duration("9999999999999999h").unwrap_err().contains("too long"));
        assert!(parse_duration("5000000000000000000s").is_err());
        assert_eq!(parse_duration("3650d").unwrap(), Duration::from_secs(3650 * 86400));
        let text = "[tiers]\ncheap = [\"x:m\"]\n[providers.x]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:1/v1\"\nfirst_byte_timeout = \"9999999999999999h\"\n";
        let e = Config::parse(text).unwrap_err().to_string();
        assert!(e.contains("too long"), "{e}");
    }

    const GOOD: &str = r#"
        [cache]
        threshold = 0.97
        ttl = "1h"
        [tiers]
        cheap = ["openai:gpt-4o-mini"]
        premium = { deployments = [{ provider = "openai", model = "gpt-4o", vision = true }, { provider = "openai", model = "o4-mini", reasoning = true }], fallback_tier = "cheap" }
        [providers.openai]
        kind = "openai"
        base_url = "https://api.openai.com/v1"
        api_key = "sk-literal"
        [prices]
        "gpt-4o" = { input = 2.5, output = 10.0 }
        "o4-mini" = { input = 1.1, output = 4.4 }
    "#;

    /// Configured provider headers must be valid and must not carry a key (that is `api_key`'s,
    /// which is kept out of logs).
    #[test]
    fn provider_headers_are_checked() {
        let with = |headers: &str| {
            Config::parse(
                &GOOD.replace("api_key = \"sk-literal\"", &format!("api_key = \"sk-literal\"\nheaders = {headers}")),
            )
        };
        let ok = with(r#"{ "HTTP-Referer" = "https://app.example", "anthropic-beta" = "a,b" }"#).unwrap();
        assert_eq!(ok.providers["openai"].headers["HTTP-Referer"], "https://app.example");
        for (bad, why) in [
            (r#"{ "Authorization" = "Bearer sk-1" }"#, "api_key"),
            (r#"{ "x-api-key" = "sk-1" }"#, "api_key"),
            (r#"{ "bad header" = "x" }"#, "header name"),
            (r#"{ "x-a" = "line\nbreak" }"#, "ASCII"),
        ] {
            let e = with(bad).unwrap_err().to_string();
            assert!(e.contains("providers.openai.headers") && e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn parses_a_full_config() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.cache.ttl.0, Duration::from_secs(3600));
        assert_eq!(c.cache.threshold, Some(0.97));
        assert_eq!(c.tier_deployments("premium")[0].model, "gpt-4o");
        assert!(c.tier_deployments("premium")[0].vision);
        let premium = c.tier_deployments("premium");
        assert_eq!((premium[0].reasoning, premium[1].reasoning), (false, true));
        assert!(!c.tier_deployments("cheap")[0].reasoning);
        assert_eq!(c.tiers["premium"].fallback_tier(), Some("cheap"));
        assert!((c.prices["gpt-4o"].cost(1_000_000, 0) - 2.5).abs() < 1e-9);
    }

    #[test]
    fn errors_name_the_key() {
        let bad = GOOD.replace("threshold = 0.97", "threshold = 1.5");
        assert!(Config::parse(&bad).unwrap_err().to_string().starts_with("cache.threshold"));
        let bad = GOOD.replace("ttl = \"1h\"", "ttl = \"1h\"\nhnsw_ef_search = 0");
        assert!(Config::parse(&bad).unwrap_err().to_string().starts_with("cache.hnsw_ef_search"));
        let bad = GOOD.replace("openai:gpt-4o-mini", "nope:gpt-4o-mini");
        assert!(Config::parse(&bad).unwrap_err().to_string().contains("tiers.cheap[0]"));
        let bad = GOOD.replace("ttl = \"1h\"", "ttl = \"1h\"\nbogus = 1");
        assert!(Config::parse(&bad).unwrap_err().to_string().contains("bogus"));
        for (key, value) in [
            ("server.header_read_timeout", "\"0s\""),
            ("server.keep_alive_timeout", "\"0s\""),
            ("server.max_header_bytes", "512"),
            ("server.max_headers", "0"),
            ("cache.snapshot_interval", "\"10ms\""),
        ] {
            let (table, k) = key.split_once('.').unwrap();
            let bad = match table {
                "cache" => GOOD.replace("[cache]", &format!("[cache]\n{k} = {value}")),
                _ => format!("[{table}]\n{k} = {value}\n{GOOD}"),
            };
            let e = Config::parse(&bad).unwrap_err().to_string();
            assert!(e.starts_with(key), "{key} = {value}: {e}");
        }
        let ok = GOOD.replace("ttl = \"1h\"", "ttl = \"1h\"\nsnapshot_interval = \"0s\"");
        assert!(Config::parse(&ok).unwrap().cache.snapshot_interval.0.is_zero());
        let bad = GOOD.replace("sk-literal", "env:SWITCHYARD_SURELY_UNSET_VAR");
        let e = Config::parse(&bad).unwrap_err().to_string();
        assert!(e.contains("providers.openai.api_key") && e.contains("SWITCHYARD_SURELY_UNSET_VAR"));
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("sk-very-secret");
        assert_eq!(format!("{s} {s:?}"), "***** *****");
        assert_eq!(format!("{:?}", SecretSpec::literal("sk-x")), "*****");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172800));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn tenant_shares_are_checked_and_name_their_key() {
        let ok = format!("[server]\ngateway_keys = \"k1\"\n{GOOD}\n[router.tenant_share]\n\"t-0123456789ab\" = 0.1\n");
        assert_eq!(Config::parse(&ok).unwrap().router.tenant_share["t-0123456789ab"], 0.1);
        let no_keys = GOOD.to_string() + "\n[router.tenant_share]\n\"t-0123456789ab\" = 0.1\n";
        assert!(Config::parse(&no_keys).unwrap_err().to_string().contains("needs server.gateway_keys"));
        let bad_id = GOOD.to_string() + "\n[router.tenant_share]\n\"sk-raw-key\" = 0.1\n";
        let e = Config::parse(&bad_id).unwrap_err().to_string();
        assert!(e.starts_with("router.tenant_share.sk-raw-key: must be a tenant id"), "{e}");
        let bad_share = GOOD.to_string() + "\n[router.tenant_share]\n\"t-0123456789ab\" = 1.5\n";
        assert!(Config::parse(&bad_share).unwrap_err().to_string().starts_with("router.tenant_share.t-0123456789ab"));
    }

    #[test]
    fn a_tls_redis_backend_and_its_ca() {
        let with = |cache: &str| GOOD.replace("ttl = \"1h\"", &format!("ttl = \"1h\"\n{cache}"));
        let ok = Config::parse(&with("backend = \"rediss://:pw@cache:6380\"\nredis_ca = \"ca.pem\"")).unwrap();
        assert_eq!(ok.redis_url(), Some("rediss://:pw@cache:6380"));
        let e = Config::parse(&with("backend = \"redis://cache:6379\"\nredis_ca = \"ca.pem\"")).unwrap_err();
        assert!(e.to_string().starts_with("cache.redis_ca: is for a TLS backend"), "{e}");
        let e = Config::parse(&with("backend = \"http://cache:6379\"")).unwrap_err();
        assert!(e.to_string().starts_with("cache.backend"), "{e}");
        assert_eq!(Config::parse(&with("backend = \"memory\"")).unwrap().redis_url(), None);
    }

    #[test]
    fn passthrough_names_an_openai_provider() {
        let ok = Config::parse(&format!("{GOOD}\n[passthrough]\nprovider = \"openai\"\n")).unwrap();
        assert_eq!(ok.passthrough.provider.as_deref(), Some("openai"));
        let e = Config::parse(&format!("{GOOD}\n[passthrough]\nprovider = \"nowhere\"\n")).unwrap_err();
        assert!(e.to_string().starts_with("passthrough.provider: unknown provider"), "{e}");
        let an = "[providers.an]\nkind = \"anthropic\"\nbase_url = \"https://api.anthropic.com\"\n";
        let e = Config::parse(&format!("{GOOD}\n{an}[passthrough]\nprovider = \"an\"\n")).unwrap_err();
        assert!(e.to_string().starts_with("passthrough.provider: must be kind = \"openai\""), "{e}");
    }

    #[test]
    fn embedding_models_must_name_an_openai_format_provider() {
        let with = |models: &str, extra: &str| format!("{GOOD}\n[embeddings]\nmodels = {models}\n{extra}");
        let ok = Config::parse(&with(r#"["openai:text-embedding-3-small"]"#, "")).unwrap();
        assert_eq!(ok.embedding_deployments()[0].model, "text-embedding-3-small");
        let anthropic = "[providers.an]\nkind = \"anthropic\"\nbase_url = \"https://api.anthropic.com\"\n";
        for (models, extra, says) in [
            (r#"["nowhere:text-embedding-3-small"]"#, "", "unknown provider"),
            (r#"["an:voyage-3"]"#, anthropic, "kind = \"openai\" or \"azure\""),
            (r#"["openai:all-MiniLM-L6-v2"]"#, "", "the gateway's own model"),
            (r#"["text-embedding-3-small"]"#, "", "provider:model"),
            (r#"["openai:m"]"#, "local_aliases = [\"m\"]", "also in embeddings.local_aliases"),
        ] {
            let e = Config::parse(&with(models, extra)).unwrap_err().to_string();
            assert!(e.starts_with("embeddings.models[0]") && e.contains(says), "{models}: {e}");
        }
    }
}
