//! Builds everything from a [`Config`] and runs it; the only place concrete types are chosen.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Semaphore};

use crate::assets;
use crate::cache::{CacheRule, CacheSettings, HnswParams, RuleKind, SemanticCache, SharedSettings, SharedTier};
use crate::classify::{LengthBaseline, LiveRouter, OperatingPoint, Router, ShareSettings, TrainedRouter};
use crate::config::{
    Config, Deployment, DeploymentSpec, DeploymentTable, Dur, Price, ProviderConfig, ProviderKind, SecretSpec, TierSpec,
};
use crate::embed::{BertEmbedder, EmbedHandle, EmbedWorker, Embedder};
use crate::http::{self, AppState};
use crate::pipeline::{Gateway, Tenant, Tier};
use crate::providers::{Dispatcher, Provider};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("embedding model: {0}")]
    Embed(#[from] crate::embed::EmbedError),
    #[error("{0}")]
    Provider(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Shared(#[from] crate::cache::shared::SharedError),
    #[error(transparent)]
    Keys(#[from] crate::keys::KeyFileError),
    #[error(transparent)]
    Limits(#[from] crate::limits::LimitsError),
    /// The Redis URL for stored Responses (the shared tier's) would not open.
    #[error("cache.backend (stored responses): {0}")]
    Responses(String),
    #[error("cache.redis_ca: cannot read {path}: {source}")]
    RedisCa { path: PathBuf, source: std::io::Error },
}

/// The Redis of `[cache] backend`, if it is one, with its CA file read.
pub fn redis_target(config: &Config) -> Result<Option<crate::redis_link::RedisTarget>, AppError> {
    let Some(url) = config.redis_url() else { return Ok(None) };
    let ca = match &config.cache.redis_ca {
        Some(path) => Some(std::fs::read(path).map_err(|source| AppError::RedisCa { path: path.clone(), source })?),
        None => None,
    };
    Ok(Some(crate::redis_link::RedisTarget { url: url.to_string(), ca }))
}

/// A path as configured: relative paths are relative to the working directory. (There is no
/// fallback to the source tree the binary was built in: the shipped model files are compiled
/// into the binary instead, see [`crate::assets`].)
pub fn locate(path: &Path) -> PathBuf {
    path.to_path_buf()
}

const DEFAULT_MODEL_DIR: &str = "models/all-MiniLM-L6-v2";
const DEFAULT_ROUTER_DIR: &str = "models/router";
const DEFAULT_CACHE_RULE: &str = "models/cache_rule.json";

/// The cache decision rule `serve` uses: `models/cache_rule.json` (measured by `eval cache`),
/// with `cache.threshold` / `cache.guard` from the config overriding it. Without the file, the
/// guarded rule at 0.965 (≈1% false hits on QQP for plain cosine).
pub fn shipped_cache_rule(config: &Config) -> CacheRule {
    let mut rule = match load_cache_rule(config) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "no shipped cache rule; using the guarded rule at 0.965");
            CacheRule::guarded(0.965)
        }
    };
    if let Some(t) = config.cache.threshold {
        rule.threshold = t;
    }
    match config.cache.guard {
        Some(true) => rule.rule = RuleKind::GuardedCosine,
        Some(false) => rule.rule = RuleKind::GlobalCosine,
        None => {}
    }
    rule
}

/// The measured cache rule file `cache.rule` names (on disk, else the one compiled in).
fn load_cache_rule(config: &Config) -> Result<CacheRule, String> {
    match assets::resolve(&config.cache.rule, DEFAULT_CACHE_RULE) {
        assets::Source::Disk(path) => CacheRule::load(path).map_err(|e| format!("{}: {e}", path.display())),
        assets::Source::Embedded(b) => {
            CacheRule::from_json(b.cache_rule).map_err(|e| format!("embedded cache rule: {e}"))
        }
    }
}

/// `switchyard check`: everything `serve` reads before it listens, read and checked, with no port
/// bound, no model loaded and no provider or Redis called: the config (secrets resolved), the key
/// file, the Redis CA, the router and the cache rule (an error here, where `serve` would fall
/// back with a warning). Returns what `serve` would run with, for a person to read, and the
/// warnings `serve` would log.
pub fn check(config: &Config) -> Result<(String, Vec<String>), AppError> {
    use std::fmt::Write;
    config.validate()?;
    let mut out = String::new();
    let mut warnings = Vec::new();
    let _ = writeln!(out, "listen      {}", config.server.listen);
    let keys = match (&config.server.keys_file, &config.server.gateway_keys) {
        (Some(path), _) => format!("{} keys in {}", crate::keys::load(path)?.len(), path.display()),
        (None, Some(spec)) => {
            let n = spec.resolve("server.gateway_keys")?.expose().split(',').filter(|k| !k.trim().is_empty()).count();
            format!("{n} gateway keys (server.gateway_keys)")
        }
        (None, None) => {
            warnings.push("no gateway keys: anyone who reaches the port can spend on the providers".to_string());
            "none: no authentication".to_string()
        }
    };
    let _ = writeln!(out, "keys        {keys}");
    let prices = crate::prices::merged(&config.prices);
    let priced = |model: &str, warnings: &mut Vec<String>| match prices.get(model) {
        Some(p) => format!("${} / ${} per M tokens", p.input, p.output),
        None => {
            warnings.push(format!("model {model:?} has no price: its requests are unpriced and budgets cannot count them (add it under [prices])"));
            "unpriced".to_string()
        }
    };
    for name in config.tiers.keys() {
        let mut line = String::new();
        for d in config.tier_deployments(name) {
            let _ = write!(line, "\n              {}:{} ({})", d.provider, d.model, priced(&d.model, &mut warnings));
        }
        let _ = writeln!(out, "tier        {name}{line}");
    }
    let router = load_router(&config.router).map_err(AppError::Provider)?;
    let point = match (config.router.threshold, config.router.premium_share) {
        (Some(t), _) => format!("fixed threshold {t}"),
        (None, s) => format!("premium share {} held on live traffic", s.unwrap_or(0.3)),
    };
    let _ = writeln!(
        out,
        "router      {} for `{}`: {point}; {} / {}",
        router.name(),
        config.router.alias,
        config.router.cheap,
        config.router.premium
    );
    let rule = load_cache_rule(config).map_err(AppError::Provider)?;
    let cache = if config.cache.enabled {
        let backend = match redis_target(config)? {
            Some(t) => format!("{}{}", t.redacted(), if t.ca.is_some() { " (CA file read)" } else { "" }),
            None => "memory".to_string(),
        };
        format!(
            "{} at {:.4}, ttl {:?}, backend {backend}",
            rule.name(),
            config.cache.threshold.unwrap_or(rule.threshold),
            config.cache.ttl.0
        )
    } else {
        "off".to_string()
    };
    let _ = writeln!(out, "cache       {cache}");
    let mut embeddings = format!("{} (local)", crate::config::LOCAL_EMBEDDING_MODEL);
    if !config.embeddings.local_aliases.is_empty() {
        let _ = write!(embeddings, " also as {}", config.embeddings.local_aliases.join(", "));
    }
    for d in config.embedding_deployments() {
        let _ = write!(embeddings, ", {} ({}, {})", d.model, d.provider, priced(&d.model, &mut warnings));
    }
    let _ = writeln!(out, "embeddings  {embeddings}");
    let passthrough = config.passthrough.provider.as_deref().unwrap_or("off");
    let _ = writeln!(out, "passthrough {passthrough}");
    let log = config.log.path.as_ref().map_or("off".to_string(), |p| p.display().to_string());
    let _ = writeln!(out, "request log {log}");
    warnings.sort();
    warnings.dedup();
    Ok((out, warnings))
}

/// The router `serve` and `route` use: the trained router in `router.model_dir` (default
/// `models/router`) at the configured operating point (`threshold`, or `premium_share` turned into a
/// threshold by its calibration table; default: 30% premium on the training distribution).
/// Without a trained router, the prompt-length baseline (threshold 0.5), with a warning.
pub fn build_router(config: &Config) -> Router {
    let router = match load_router(&config.router) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "no trained router; routing `auto` with the prompt-length baseline");
            Router::with_operating_point(
                Box::new(LengthBaseline::default()),
                config.router.threshold,
                config.router.premium_share,
            )
        }
    };
    tracing::info!(router = router.name(), threshold = router.threshold(), "router ready");
    router
}

/// The trained router of `router.model_dir` (on disk, else the one compiled in for the default
/// directory) at the configured operating point.
fn load_router(config: &crate::config::RouterConfig) -> Result<Router, String> {
    let dir = config.model_dir.as_deref().unwrap_or(Path::new(DEFAULT_ROUTER_DIR));
    let loaded = match assets::resolve(dir, DEFAULT_ROUTER_DIR) {
        assets::Source::Disk(dir) => TrainedRouter::load(dir).map_err(|e| format!("{}: {e}", dir.display())),
        assets::Source::Embedded(b) => TrainedRouter::from_json(b.router).map_err(|e| format!("embedded router: {e}")),
    }?;
    let share = config.premium_share.or(if config.threshold.is_none() { Some(0.3) } else { None });
    Ok(Router::with_operating_point(Box::new(loaded), config.threshold, share))
}

/// On SIGHUP, the router file is read again: a retrained router goes live without a restart,
/// which would lose the share windows and, without a snapshot, the cache. A file that does not
/// load leaves the running router in place and says why.
fn watch_router(gateway: &Arc<Gateway>, config: &crate::config::RouterConfig, signals: bool) {
    #[cfg(unix)]
    if signals {
        let weak = Arc::downgrade(gateway);
        let config = config.clone();
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(mut hup) => {
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        let Some(g) = weak.upgrade() else { break };
                        let c = config.clone();
                        match tokio::task::spawn_blocking(move || load_router(&c)).await {
                            Ok(Ok(r)) => {
                                tracing::info!(
                                    router = r.name(),
                                    threshold = r.threshold(),
                                    "router reloaded (SIGHUP)"
                                );
                                g.router.replace(r);
                            }
                            Ok(Err(e)) => {
                                g.router.reload_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                tracing::error!(error = %e, "router reload failed; the running router stays");
                            }
                            Err(e) => tracing::error!(error = %e, "router reload failed; the running router stays"),
                        }
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP; the router reloads only on restart"),
        }
    }
    #[cfg(not(unix))]
    let _ = (gateway, config, signals);
}

/// The router at the configured operating point on live traffic: `router.threshold` is a fixed
/// score; otherwise `router.premium_share` (default 0.3) is held on the traffic served, starting
/// from the router's training calibration (see `classify::share`).
pub fn live_router(config: &Config, router: Router) -> LiveRouter {
    let point = match config.router.threshold {
        Some(t) => OperatingPoint::Threshold(t),
        None => OperatingPoint::Share(config.router.premium_share.unwrap_or(0.3)),
    };
    let settings = ShareSettings {
        window: config.router.share_window,
        warmup: config.router.share_warmup,
        ..ShareSettings::default()
    };
    LiveRouter::new(router, point, settings)
}

/// `switchyard train router`: embeds the data (cached on disk), fits, saves the router and a
/// training report into `out`. Returns the report's Markdown.
pub fn train_router(
    config: &Config,
    embedder: &Arc<dyn Embedder>,
    data: &[PathBuf],
    cheap: &str,
    premium: &str,
    lambda: f64,
    out: &Path,
) -> Result<String, AppError> {
    use crate::classify::Classifier;
    use crate::eval::routing::{curve, load_embedded, Grid};
    let model_dir = locate(&config.embed.model_dir);
    let mut store = crate::eval::embeddings::RouterStore::open(
        &embedding_cache_dir(),
        &crate::eval::embeddings::model_id(&model_dir),
        embedder.dim(),
    )?;
    let sets = load_embedded(embedder, &mut store, data, cheap, premium, false)
        .map_err(|e| AppError::Provider(e.to_string()))?;
    let rows: Vec<_> = sets.iter().flat_map(|s| s.1.clone()).collect();
    let vecs: Vec<_> = sets.iter().flat_map(|s| s.2.clone()).collect();
    let started = Instant::now();
    let files: Vec<String> = data.iter().map(|p| p.display().to_string()).collect();
    let router = crate::classify::train::fit(&rows, &vecs, lambda, (cheap, premium, files.clone()))
        .map_err(AppError::Provider)?;
    let took = started.elapsed();
    router.save(out)?;
    let mut md = format!(
        "# Router training report\n\nLearner: a mixture of per-source heads (`gated-heads`): one ridge regression per source \
         group (lambda = {lambda}, raised on the embedding dimensions for small groups, the text features keep it) of the quality gain premium - cheap (averaged with 1 - 2 x difficulty \
         where the data has a cross-model difficulty) on one 384-d MiniLM view of the prompt (layer 3's mean pool; the last layer's, \
         the cache's vector, for GSM8K) + 12 text features, each head z-scored on its own training prompts, mixed by a \
         group-balanced linear softmax gate on the embedding layer's mean pool (the word pieces) + the text features. Heads: {}.\n\nCheap model `{cheap}`, premium model `{premium}` \
         (files of another pair use their own cheap model).\n\n\
         **Trained on all {} prompts of**: {} (contaminated prompts included). Fit took {:.2} s.\n\n\
         In-sample numbers (optimistic; the honest cross-validated ones are in eval/reports/routing/):\n\n\
         | file | n | APGR (in-sample) | CPT(50%) | CPT(80%) |\n|---|---|---|---|---|\n",
        router.file().heads.iter().map(|h| format!("`{}`", h.name)).collect::<Vec<_>>().join(", "),
        rows.len(),
        files.join(", "),
        took.as_secs_f64()
    );
    for (name, rows, vecs) in &sets {
        let s: Vec<f64> = rows.iter().zip(vecs).map(|(r, v)| router.score(&r.prompt, Some(v)) as f64).collect();
        let c: Vec<f64> = rows.iter().map(|r| r.cheap).collect();
        let p: Vec<f64> = rows.iter().map(|r| r.premium).collect();
        let k = curve(&s, &c, &p, Grid::Qcut10);
        md.push_str(&format!(
            "| {name} | {} | {:.3} | {:.1}% | {:.1}% |\n",
            rows.len(),
            k.apgr,
            k.cpt50 * 100.0,
            k.cpt80 * 100.0
        ));
    }
    let q = &router.file().quantiles;
    md.push_str(&format!(
        "\nCalibration (threshold for a premium share on the training distribution): 10% -> {:.4}, 30% -> {:.4}, 50% -> {:.4}, 70% -> {:.4}.\n",
        q[90], q[70], q[50], q[30]
    ));
    std::fs::write(out.join("report.md"), &md)?;
    Ok(md)
}

/// Where offline commands keep embeddings by content hash (`eval/.cache/embeddings`).
pub fn embedding_cache_dir() -> PathBuf {
    locate(Path::new("eval")).join(".cache/embeddings")
}

/// Loads the embedding model named by the config.
pub fn load_embedder(config: &Config) -> Result<Arc<dyn Embedder>, AppError> {
    let (max, engine, threads) = (config.embed.max_tokens, config.embed.engine, config.embed.threads);
    let started = Instant::now();
    let (e, from) = match assets::resolve(&config.embed.model_dir, DEFAULT_MODEL_DIR) {
        assets::Source::Disk(dir) => (BertEmbedder::load_with(dir, max, engine, threads)?, dir.display().to_string()),
        assets::Source::Embedded(b) => (BertEmbedder::load_embedded(b, max, engine, threads)?, "<embedded>".into()),
    };
    tracing::info!(
        from = %from,
        engine = ?e.engine(),
        threads = config.embed.threads,
        ms = started.elapsed().as_millis() as u64,
        "embedding model loaded"
    );
    Ok(Arc::new(e))
}

/// A running gateway.
pub struct Running {
    pub addr: SocketAddr,
    pub gateway: Arc<Gateway>,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops accepting, drains in-flight requests, writes the snapshot, and returns when done.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }

    /// Waits until the server stops (on SIGTERM/SIGINT when started with `signals`).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Builds the gateway from `config` with an already-loaded embedder (tests share one).
pub fn build_gateway(
    config: &Config,
    embedder: Option<Arc<dyn Embedder>>,
) -> Result<(Arc<Gateway>, Option<EmbedWorker>), AppError> {
    let (worker, handle): (Option<EmbedWorker>, Option<EmbedHandle>) = match embedder {
        Some(e) => {
            let (w, h) = EmbedWorker::start(e, config.embed.queue, config.embed.max_batch)?;
            (Some(w), Some(h.with_max_wait(config.embed.max_wait.0)))
        }
        None => (None, None),
    };
    let cache = if config.cache.enabled {
        let dim = handle.as_ref().map_or(384, EmbedHandle::dim);
        let rule = shipped_cache_rule(config);
        tracing::info!(rule = rule.name(), threshold = rule.threshold, "cache decision rule");
        let settings = CacheSettings {
            threshold: rule.threshold,
            ttl: config.cache.ttl.0,
            max_entries: config.cache.max_entries,
            hnsw_from: config.cache.hnsw_from,
            hnsw: HnswParams { ef_search: config.cache.hnsw_ef_search, ..HnswParams::default() },
            rule: rule.rule,
        };
        let cache = Arc::new(SemanticCache::new(settings, dim));
        if let Some(path) = &config.cache.snapshot {
            match cache.load_snapshot(path) {
                Ok(n) => tracing::info!(entries = n, path = %path.display(), "cache snapshot restored"),
                // one line, and no panic: a bad file on disk must not become a crash loop
                Err(e) => tracing::error!(error = %e, "cache snapshot not restored; starting with an empty cache"),
            }
        }
        Some(cache)
    } else {
        None
    };

    let mut providers = HashMap::new();
    for (name, pc) in &config.providers {
        providers.insert(name.clone(), Arc::new(Provider::new(name, pc).map_err(AppError::Provider)?));
    }
    let dispatch = Dispatcher::new(providers, config.dispatch.clone());

    let mut tiers = HashMap::new();
    for (name, spec) in &config.tiers {
        let mut groups = vec![config.tier_deployments(name)];
        let mut seen = vec![name.clone()];
        let mut fb = spec.fallback_tier().map(str::to_string);
        while let Some(f) = fb.filter(|f| !seen.contains(f)) {
            groups.push(config.tier_deployments(&f));
            fb = config.tiers.get(&f).and_then(|t| t.fallback_tier()).map(str::to_string);
            seen.push(f);
        }
        let mut tier = Tier::new(name, groups);
        tier.allow_pricier_fallback = spec.allow_pricier_fallback();
        tiers.insert(name.clone(), tier);
    }
    let prices = crate::prices::merged(&config.prices);
    let embedding_models = config.embedding_deployments();
    warn_unpriced(&tiers, &embedding_models, &prices);

    let router = live_router(config, build_router(config));

    let shared = match (&cache, redis_target(config)?) {
        (Some(cache), Some(redis)) => {
            let settings = SharedSettings {
                redis,
                stream: config.cache.shared_stream.clone(),
                max_len: config.cache.max_entries,
                queue: config.cache.shared_queue,
            };
            Some(SharedTier::start(cache.clone(), settings)?)
        }
        _ => None,
    };

    let mut gateway = Gateway::new(
        handle,
        cache,
        router,
        config.router.alias.clone(),
        config.router.cheap.clone(),
        config.router.premium.clone(),
        config.router.affinity,
        dispatch,
        tiers,
        prices,
    );
    gateway.shared = shared;
    gateway.embed_wait = config.embed.max_wait.0;
    gateway.embedding_models = embedding_models;
    gateway.local_embedding_aliases = config.embeddings.local_aliases.clone();
    Ok((Arc::new(gateway), worker))
}

/// One warning per configured model with no price in the catalog or `[prices]`: its requests
/// get no cost header, count in no budget and show in `switchyard_unpriced_requests_total`.
fn warn_unpriced(
    tiers: &HashMap<String, Tier>,
    embedding_models: &[Deployment],
    prices: &std::collections::BTreeMap<String, Price>,
) {
    let mut models: Vec<&str> = tiers
        .values()
        .flat_map(|t| t.targets.iter().map(|d| d.model.as_str()))
        .chain(embedding_models.iter().map(|d| d.model.as_str()))
        .filter(|m| !prices.contains_key(*m))
        .collect();
    models.sort_unstable();
    models.dedup();
    for m in models {
        tracing::warn!(model = m, "no known price for this model: its requests are unpriced (add it under [prices])");
    }
}

/// The key file, reloaded on SIGHUP (with `signals`) and when its modification time changes.
fn watch_keys(store: &Arc<crate::keys::KeyStore>, every: Duration, signals: bool) {
    if !every.is_zero() {
        let weak = Arc::downgrade(store);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(s) = weak.upgrade() else { break };
                // a file read, off the async workers
                let _ = tokio::task::spawn_blocking(move || s.reload_if_changed()).await;
            }
        });
    }
    #[cfg(unix)]
    if signals {
        let weak = Arc::downgrade(store);
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(mut hup) => {
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        let Some(s) = weak.upgrade() else { break };
                        let _ = tokio::task::spawn_blocking(move || s.reload("SIGHUP")).await;
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP; the key file reloads only when it changes"),
        }
    }
    #[cfg(not(unix))]
    let _ = signals;
}

/// gateway key → tenant, with the tenant's own premium share from `router.tenant_share`. A share
/// given for a tenant id that no key has is refused: it would silently do nothing.
fn gateway_keys(config: &Config) -> Result<HashMap<String, Tenant>, AppError> {
    let mut keys = HashMap::new();
    if let Some(spec) = &config.server.gateway_keys {
        let secret = spec.resolve("server.gateway_keys")?;
        for k in secret.expose().split(',').map(str::trim).filter(|k| !k.is_empty()) {
            let id = http::tenant_of(k);
            let premium_share = config.router.tenant_share.get(&id).copied();
            keys.insert(k.to_string(), Tenant { id, premium_share, policy: None });
        }
    }
    for id in config.router.tenant_share.keys() {
        if !keys.values().any(|t| &t.id == id) {
            return Err(crate::config::invalid(
                format!("router.tenant_share.{id}"),
                "no key in server.gateway_keys has this tenant id",
            )
            .into());
        }
    }
    Ok(keys)
}

/// Binds, serves, and returns a handle. With `signals`, SIGTERM/SIGINT also shut it down.
pub async fn start(config: Config, embedder: Option<Arc<dyn Embedder>>, signals: bool) -> Result<Running, AppError> {
    let keys = gateway_keys(&config)?;
    let key_store = match &config.server.keys_file {
        Some(path) => {
            let store = Arc::new(crate::keys::KeyStore::open(path)?);
            tracing::info!(path = %path.display(), keys = store.table().len(), "key file loaded");
            watch_keys(&store, config.server.keys_reload_interval.0, signals);
            Some(store)
        }
        None => None,
    };
    let redis = redis_target(&config)?;
    let limits = crate::limits::Limits::start(redis.as_ref(), config.limits.soft_budget).await?;
    let ledger = Arc::new(crate::reqlog::Ledger::start(&config.log)?);
    let ledger_at_exit = ledger.clone();
    let (gateway, worker) = build_gateway(&config, embedder)?;
    watch_router(&gateway, &config.router, signals);
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .map_err(|source| AppError::Listen { addr: config.server.listen, source })?;
    let addr = listener.local_addr()?;
    let state = AppState {
        gateway: gateway.clone(),
        keys: Arc::new(keys),
        key_store,
        limits,
        ledger,
        admin_key: match &config.server.admin_key {
            Some(k) => Some(k.resolve("server.admin_key")?.expose().to_string()),
            None => None,
        },
        max_body: config.server.max_body_bytes,
        request_timeout: config.server.request_timeout.0,
        started: Instant::now(),
        slots: Arc::new(Semaphore::new(config.server.max_concurrency)),
        responses: Arc::new(
            http::responses::ResponseStore::new(
                config.server.responses_store_bytes,
                config.server.responses_ttl.0,
                redis.as_ref(),
            )
            .map_err(|e| AppError::Responses(e.to_string()))?,
        ),
        passthrough: http::passthrough_upstream(&config).map_err(AppError::Provider)?,
        draining: Arc::default(),
    };
    let draining = state.draining.clone();
    let delay = config.server.shutdown_delay.0;
    let app = http::router(state);
    let (tx, rx) = oneshot::channel::<()>();
    let grace = config.server.shutdown_grace.0;
    let snapshot = config.cache.snapshot.clone();
    let gw = gateway.clone();

    // the dashboard's charts: a sample of the counters every few seconds, bounded
    let sampler = http::stats::spawn_sampler(&gateway);

    // expired entries should not hold memory until they are next looked at
    if let Some(cache) = gateway.cache.clone() {
        let weak = Arc::downgrade(&cache);
        drop(cache);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                let Some(c) = weak.upgrade() else { break };
                c.purge_expired();
            }
        });
    }

    // periodic snapshots, off the request path; the one at shutdown waits for a write in progress
    let snapshot_lock = Arc::new(tokio::sync::Mutex::new(()));
    let periodic = match (&snapshot, gateway.cache.clone()) {
        (Some(path), Some(cache)) if !config.cache.snapshot_interval.0.is_zero() => {
            Some(tokio::spawn(periodic_snapshots(
                Arc::downgrade(&cache),
                path.clone(),
                config.cache.snapshot_interval.0,
                snapshot_lock.clone(),
            )))
        }
        _ => None,
    };
    let limits = http::server::ConnLimits {
        header_read_timeout: config.server.header_read_timeout.0,
        keep_alive_timeout: config.server.keep_alive_timeout.0,
        max_header_bytes: config.server.max_header_bytes,
        max_headers: config.server.max_headers,
    };

    let task = tokio::spawn(async move {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut stop_rx2 = stop_rx.clone();
        let trigger = async move {
            tokio::select! {
                _ = rx => {},
                _ = shutdown_signal(signals) => {},
            }
            draining.store(true, std::sync::atomic::Ordering::Relaxed);
            if !delay.is_zero() {
                tracing::info!(delay = ?delay, "shutting down: /health says draining; still serving meanwhile");
                tokio::time::sleep(delay).await;
            }
            tracing::info!("shutting down: draining in-flight requests");
            let _ = stop_tx.send(true);
        };
        tokio::spawn(trigger);
        let server = http::server::serve(listener, app, limits, stop_rx);
        let drained = async {
            let _ = stop_rx2.wait_for(|s| *s).await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            _ = server => {}
            _ = drained => { tracing::warn!("shutdown grace period over; closing remaining connections"); }
        }
        if let Some(p) = periodic {
            p.abort();
        }
        sampler.abort();
        if let (Some(path), Some(cache)) = (snapshot, gw.cache.as_ref()) {
            match write_snapshot(cache.clone(), path.clone(), &snapshot_lock).await {
                Ok(n) => tracing::info!(entries = n, path = %path.display(), "cache snapshot written"),
                Err(e) => tracing::error!(error = %e, "cache snapshot failed"),
            }
        }
        drop(worker);
        if !ledger_at_exit.flush(Duration::from_secs(5)).await {
            tracing::warn!("request log: lines still queued after 5 s at shutdown; they are lost");
        }
    });
    Ok(Running { addr, gateway, shutdown: Some(tx), task })
}

/// Writes the snapshot on a blocking thread; one write at a time. The lock is held by the write
/// itself, so aborting the periodic task mid-write cannot let the shutdown snapshot start before
/// it ends (and be renamed over by an older one).
async fn write_snapshot(
    cache: Arc<SemanticCache>,
    path: PathBuf,
    lock: &Arc<tokio::sync::Mutex<()>>,
) -> Result<usize, String> {
    let one_at_a_time = lock.clone().lock_owned().await;
    let write = move || {
        let _held = one_at_a_time;
        cache.save_snapshot(&path)
    };
    match tokio::task::spawn_blocking(write).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(format!("snapshot task failed: {e}")),
    }
}

/// Rewrites the snapshot every `every` while the cache lives, skipping the write when nothing
/// was stored or removed since the last one, so a crash loses at most `every` of answers.
async fn periodic_snapshots(
    cache: std::sync::Weak<SemanticCache>,
    path: PathBuf,
    every: Duration,
    lock: Arc<tokio::sync::Mutex<()>>,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut written = cache.upgrade().map(|c| c.generation());
    loop {
        tick.tick().await;
        let Some(c) = cache.upgrade() else { break };
        let generation = c.generation();
        if written == Some(generation) {
            continue;
        }
        match write_snapshot(c, path.clone(), &lock).await {
            Ok(n) => {
                written = Some(generation);
                tracing::debug!(entries = n, path = %path.display(), "periodic cache snapshot written");
            }
            Err(e) => tracing::warn!(error = %e, "periodic cache snapshot failed; will retry"),
        }
    }
}

/// Turns Nagle's algorithm off on an accepted connection. A stream's events are small writes; with
/// Nagle on, every stream after the first on a kept-alive connection held its last bytes until the
/// client's delayed ACK arrived (≈ 40 ms on Linux), so streams finished late through the gateway
/// (`cargo bench --bench stream` measures it). The gateway's accept loop ([`http::server`]) does
/// this itself; the test mocks and benches use it with `axum::serve`.
pub fn no_delay(tcp: &mut tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY on an accepted connection");
    }
}

async fn shutdown_signal(enabled: bool) {
    if !enabled {
        std::future::pending::<()>().await;
    }
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// The demo setup: two simulated OpenAI-format upstreams (cheap and premium) on loopback.
pub async fn demo_config(mut config: Config, latency: Duration) -> Result<Config, AppError> {
    let cheap = crate::demo::spawn(latency).await?;
    let premium = crate::demo::spawn(latency).await?;
    tracing::info!(cheap = %cheap.base_url(), premium = %premium.base_url(), latency_ms = latency.as_millis() as u64, "demo upstreams (OpenAI wire format) listening");
    config.providers.clear();
    config.tiers.clear();
    for (name, up) in [("demo-cheap", &cheap), ("demo-premium", &premium)] {
        config.providers.insert(name.into(), provider(ProviderKind::Openai, &up.base_url(), None));
    }
    // both simulated models reason when asked, as `reasoning = true` says
    let reasoning = |provider: &str, model: &str| {
        TierSpec::List(vec![DeploymentSpec::Full(DeploymentTable {
            provider: provider.into(),
            model: model.into(),
            vision: false,
            reasoning: true,
            weight: None,
            max_concurrency: None,
        })])
    };
    config.tiers.insert("cheap".into(), reasoning("demo-cheap", "demo-mini"));
    config.tiers.insert("premium".into(), reasoning("demo-premium", "demo-large"));
    config.prices.insert("demo-mini".into(), Price::new(0.15, 0.60));
    config.prices.insert("demo-large".into(), Price::new(2.50, 10.00));
    // an upstream embedding model beside the local one, as `[embeddings]` configures them
    config.embeddings.models = vec![DeploymentSpec::Short("demo-cheap:demo-embed".into())];
    config.prices.insert("demo-embed".into(), Price::new(0.02, 0.0));
    config.validate()?;
    Ok(config)
}

fn provider(kind: ProviderKind, base_url: &str, key: Option<SecretSpec>) -> ProviderConfig {
    ProviderConfig {
        kind,
        base_url: base_url.into(),
        api_key: key,
        api_version: None,
        connect_timeout: Dur(Duration::from_secs(5)),
        first_byte_timeout: Dur(Duration::from_secs(60)),
        total_timeout: Dur(Duration::from_secs(600)),
        default_max_tokens: 4096,
        headers: Default::default(),
    }
}

/// A provider `config_from_env` sets up when its key is in the environment.
struct EnvProvider {
    var: &'static str,
    name: &'static str,
    kind: ProviderKind,
    base_url: &'static str,
    cheap: (&'static str, Price),
    premium: (&'static str, Price),
}

/// In failover order. Prices are USD per million tokens, as published.
const ENV_PROVIDERS: [EnvProvider; 3] = [
    EnvProvider {
        var: "OPENAI_API_KEY",
        name: "openai",
        kind: ProviderKind::Openai,
        base_url: "https://api.openai.com/v1",
        cheap: ("gpt-4o-mini", Price::new(0.15, 0.60)),
        premium: ("gpt-4o", Price::new(2.50, 10.00)),
    },
    EnvProvider {
        var: "ANTHROPIC_API_KEY",
        name: "anthropic",
        kind: ProviderKind::Anthropic,
        base_url: "https://api.anthropic.com",
        cheap: ("claude-haiku-4-5", Price::new(1.00, 5.00)),
        premium: ("claude-sonnet-4-5", Price::new(3.00, 15.00)),
    },
    EnvProvider {
        var: "GEMINI_API_KEY",
        name: "gemini",
        kind: ProviderKind::Gemini,
        base_url: "https://generativelanguage.googleapis.com",
        cheap: ("gemini-2.5-flash", Price::new(0.30, 2.50)),
        premium: ("gemini-2.5-pro", Price::new(1.25, 10.00)),
    },
];

/// With no config file: tiers built from the provider keys found in the environment, one
/// deployment per provider and tier, in the order OpenAI, Anthropic, Gemini (the failover order).
/// Returns the config and a human sentence saying what was found.
pub fn config_from_env() -> Result<(Config, String), AppError> {
    let mut config = Config::default();
    let set = |n: &str| std::env::var(n).map(|v| !v.trim().is_empty()).unwrap_or(false);
    let mut cheap: Vec<Deployment> = Vec::new();
    let mut premium: Vec<Deployment> = Vec::new();
    let mut found = Vec::new();
    let d = |p: &str, m: &str| Deployment {
        provider: p.into(),
        model: m.into(),
        vision: true,
        reasoning: false,
        weight: None,
        max_concurrency: None,
    };
    for p in ENV_PROVIDERS {
        if !set(p.var) {
            continue;
        }
        config.providers.insert(p.name.into(), provider(p.kind, p.base_url, Some(SecretSpec::env(p.var))));
        let ((cheap_model, cheap_price), (premium_model, premium_price)) = (p.cheap, p.premium);
        cheap.push(d(p.name, cheap_model));
        premium.push(d(p.name, premium_model));
        config.prices.insert(cheap_model.into(), cheap_price);
        config.prices.insert(premium_model.into(), premium_price);
        found.push(format!("{} ({}: {cheap_model} / {premium_model})", p.var, p.name));
    }
    if cheap.is_empty() {
        return Err(AppError::Provider(
            "no config file and no usable provider key in the environment (set OPENAI_API_KEY, ANTHROPIC_API_KEY or GEMINI_API_KEY, pass --config FILE, or try --demo)".into(),
        ));
    }
    // written out as tables so that `vision = true` survives (these models all take images)
    let spec = |ds: &[Deployment]| {
        TierSpec::List(
            ds.iter()
                .map(|d| {
                    DeploymentSpec::Full(DeploymentTable {
                        provider: d.provider.clone(),
                        model: d.model.clone(),
                        vision: d.vision,
                        reasoning: d.reasoning,
                        weight: None,
                        max_concurrency: None,
                    })
                })
                .collect(),
        )
    };
    config.tiers.insert("cheap".into(), spec(&cheap));
    config.tiers.insert("premium".into(), spec(&premium));
    // OpenAI's embedding models too, so that an SDK asking for them gets them (priced by the
    // shipped catalog; without an OpenAI key they are a 404, never the local model's vectors),
    // and its other stateless endpoints (moderations, images, audio)
    if config.providers.get("openai").is_some_and(|p| p.kind == ProviderKind::Openai) {
        config.embeddings.models = ["text-embedding-3-small", "text-embedding-3-large"]
            .map(|m| DeploymentSpec::Short(format!("openai:{m}")))
            .to_vec();
        config.passthrough.provider = Some("openai".into());
    }
    config.validate()?;
    Ok((config, format!("no config file; found {}", found.join(", "))))
}
