//! The request path, top to bottom: validate → exact cache → embed → semantic cache → coalesce →
//! route → dispatch → store. A failure of the embedder or the cache only turns a request into a
//! miss; it never becomes the client's error.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::api::{response_to_chunks, ChatChunk, ChatRequest, ChatResponse, ChunkAccumulator, GatewayError, Usage};
use crate::cache::{
    thread_of, unix_now, CacheKey, ExactKey, Hit, HitKind, Lookup, SemanticCache, StoredAnswer, Thread,
};
use crate::classify::{Affinity, Ask, LiveRouter, Routed, TierChoice};
use crate::config::{Deployment, Price};
use crate::embed::{EmbedHandle, Embedded};
use crate::metrics::Metrics;
use crate::providers::{Dispatcher, Outcome, TokenCount};

/// Characters per replayed SSE chunk when a cached answer is streamed.
const REPLAY_PIECE: usize = 24;
/// Premium threads remembered for routing affinity (the idlest are forgotten first).
const AFFINITY_CAP: usize = 100_000;

/// Who is asking: the tenant id (a hash of the gateway key, never the key) and what its key sets.
/// Built by the HTTP layer from the key table, so where a per-key setting comes from (the config
/// today, a keys file later) is not the pipeline's business.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tenant {
    pub id: String,
    /// The tenant's own `premium_share` (with its own score window), else the global operating point.
    pub premium_share: Option<f32>,
    /// The key file's entry for this key (limits, budgets, allowed models), if it came from there.
    pub policy: Option<Arc<crate::keys::KeyPolicy>>,
}

/// Request-level options from headers.
#[derive(Debug, Clone, Default)]
pub struct RequestCtx {
    pub tenant: String,
    /// The tenant's own premium share, from its key.
    pub tenant_share: Option<f32>,
    /// `x-switchyard-premium-share`: route this request at another share of the live distribution.
    pub premium_share: Option<f32>,
    /// `Cache-Control: no-cache`: do not look up (but store).
    pub no_cache: bool,
    /// `Cache-Control: no-store`: do not store (nor look up).
    pub no_store: bool,
    /// `Cache-Control: max-age=N`: only serve entries at most this old.
    pub max_age: Option<Duration>,
    /// `x-switchyard-cache-threshold`: may only raise the configured threshold.
    pub threshold: Option<f32>,
    /// The key's spend reached its soft budget level: `auto` must not choose premium.
    pub premium_off: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
    Bypass,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Bypass => "bypass",
        }
    }
}

/// What the response headers report.
#[derive(Debug, Clone)]
pub struct Meta {
    pub cache: CacheStatus,
    pub similarity: Option<f32>,
    pub tier: String,
    pub model: String,
    pub provider: String,
    /// USD this request cost upstream; unknown for a stream until it ends, or for a model with
    /// no known price.
    pub cost: Option<f64>,
    /// Tokens of the answer (for a hit: of the stored answer); a stream's arrive in `Served::done`.
    pub usage: Option<Usage>,
    pub cost_saved: Option<f64>,
    pub attempts: u32,
    pub route_score: Option<f32>,
    /// The threshold the score was compared with.
    pub route_threshold: Option<f32>,
    /// Premium only because the conversation already was (affinity), not by this turn's score.
    pub route_affinity: bool,
}

pub enum StreamItem {
    Chunk(ChatChunk),
    /// The upstream failed after the first byte: the stream ends with this error event.
    Error(GatewayError),
}

pub type ReplyStream = Pin<Box<dyn Stream<Item = StreamItem> + Send>>;

pub enum Body {
    /// Boxed: an answer is far larger than a stream handle, and most served bodies move a few
    /// times on the way out.
    Json(Box<ChatResponse>),
    Stream(ReplyStream),
}

pub struct Served {
    pub meta: Meta,
    pub body: Body,
    /// For a streamed miss: how the stream ended (usage and cost for limits, budgets and the
    /// request log). Dropped unsent if the client goes away first.
    pub done: Option<tokio::sync::oneshot::Receiver<StreamEnd>>,
}

/// The end of a relayed stream.
#[derive(Debug, Clone)]
pub struct StreamEnd {
    pub usage: Option<Usage>,
    pub cost: Option<f64>,
    /// The answer's text (for the request log, when it keeps content).
    pub answer: String,
    /// False when the upstream failed mid-stream.
    pub complete: bool,
}

/// Where a request's `model` sends it.
enum Route {
    /// The router alias: the classifier picks the tier; `dial` is the premium share asked for in
    /// the model name (`auto:0.1`), for this request only.
    Auto {
        dial: Option<f32>,
    },
    Tier(String),
    /// A concrete model name, served by these deployments.
    Model(Vec<Deployment>),
}

#[derive(Clone)]
enum Flight {
    Pending,
    Done(Arc<StoredAnswer>),
    Failed,
}

/// Removes a coalescing slot when the leader finishes or is dropped (client gone, error).
struct FlightGuard {
    gateway: Arc<Gateway>,
    key: ExactKey,
    tx: watch::Sender<Flight>,
    published: bool,
}

impl FlightGuard {
    fn publish(&mut self, answer: Arc<StoredAnswer>) {
        self.published = true;
        let _ = self.tx.send(Flight::Done(answer));
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        if !self.published {
            let _ = self.tx.send(Flight::Failed);
        }
        self.gateway.inflight.lock().remove(&self.key);
    }
}

/// Who is answering a streamed miss: for pricing, metrics and the stored answer.
struct Origin {
    tier: String,
    provider: String,
    model: String,
}

pub struct Tier {
    pub name: String,
    /// The tier's deployments, then its fallback tier's.
    pub targets: Vec<Deployment>,
    /// `targets` split by tier (own, then fallbacks): weights reorder only within a group.
    groups: Vec<std::ops::Range<usize>>,
    /// `tiers.<name>.allow_pricier_fallback`: failover may move to a pricier deployment.
    pub allow_pricier_fallback: bool,
}

impl Tier {
    /// `groups`: the tier's own deployments, then each fallback tier's, in order.
    pub fn new(name: &str, groups: Vec<Vec<Deployment>>) -> Tier {
        let mut targets = Vec::new();
        let mut ranges = Vec::new();
        for g in groups {
            let start = targets.len();
            targets.extend(g);
            ranges.push(start..targets.len());
        }
        Tier { name: name.to_string(), targets, groups: ranges, allow_pricier_fallback: false }
    }

    /// The tier's own deployments, without its fallback tiers'.
    pub fn own(&self) -> &[Deployment] {
        self.groups.first().and_then(|r| self.targets.get(r.clone())).unwrap_or(&[])
    }

    /// The order to try deployments in for one request. A group where any deployment has a
    /// `weight` is ordered by weighted random sampling without replacement (Efraimidis–Spirakis:
    /// sort by u^(1/w)), so traffic splits by weight and the rest of the group is still the
    /// failover path; weight 0 means "only when the others fail". Otherwise config order.
    pub fn order(&self) -> Vec<Deployment> {
        use rand::Rng;
        let mut out = Vec::with_capacity(self.targets.len());
        let mut rng = rand::thread_rng();
        for r in &self.groups {
            let group = &self.targets[r.clone()];
            if group.iter().all(|d| d.weight.is_none()) {
                out.extend_from_slice(group);
                continue;
            }
            let mut keyed: Vec<(f64, &Deployment)> = group
                .iter()
                .map(|d| {
                    let w = d.weight.unwrap_or(1) as f64;
                    let key = if w > 0.0 { rng.gen::<f64>().powf(1.0 / w) } else { -1.0 };
                    (key, d)
                })
                .collect();
            keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
            out.extend(keyed.into_iter().map(|(_, d)| d.clone()));
        }
        out
    }
}

/// An upstream model's embeddings, as [`Gateway::embeddings`] returns them.
pub struct UpstreamEmbeddings {
    /// The upstream's answer, passed on as it is.
    pub body: serde_json::Value,
    /// `provider:model` that answered.
    pub deployment: String,
    pub attempts: u32,
    pub usage: Option<Usage>,
    /// USD; `None` when the model has no known price.
    pub cost: Option<f64>,
}

pub struct Gateway {
    pub embed: Option<EmbedHandle>,
    pub cache: Option<Arc<SemanticCache>>,
    pub router: LiveRouter,
    pub router_alias: String,
    pub cheap_tier: String,
    pub premium_tier: String,
    pub affinity: bool,
    pub dispatch: Dispatcher,
    pub tiers: HashMap<String, Tier>,
    pub prices: BTreeMap<String, Price>,
    pub metrics: Metrics,
    /// The shared tier on Redis, when several replicas serve each other's answers.
    pub shared: Option<crate::cache::SharedTier>,
    /// How long a request waits for its embedding before it goes on without one (`embed.max_wait`).
    pub embed_wait: Duration,
    /// `[embeddings] models`: upstream embedding models `/v1/embeddings` forwards to.
    pub embedding_models: Vec<Deployment>,
    /// `[embeddings] local_aliases`: other names the local MiniLM answers to.
    pub local_embedding_aliases: Vec<String>,
    inflight: Mutex<HashMap<ExactKey, watch::Receiver<Flight>>>,
    threads: Affinity,
}

#[allow(clippy::too_many_arguments)]
impl Gateway {
    pub fn new(
        embed: Option<EmbedHandle>,
        cache: Option<Arc<SemanticCache>>,
        router: LiveRouter,
        router_alias: String,
        cheap_tier: String,
        premium_tier: String,
        affinity: bool,
        dispatch: Dispatcher,
        tiers: HashMap<String, Tier>,
        prices: BTreeMap<String, Price>,
    ) -> Self {
        Gateway {
            embed,
            cache,
            router,
            router_alias,
            cheap_tier,
            premium_tier,
            affinity,
            dispatch,
            tiers,
            prices,
            metrics: Metrics::default(),
            shared: None,
            embed_wait: Duration::from_millis(500),
            embedding_models: Vec::new(),
            local_embedding_aliases: Vec::new(),
            inflight: Mutex::default(),
            threads: Affinity::new(AFFINITY_CAP),
        }
    }
}

impl Gateway {
    /// Stores a complete answer in the local cache and offers it to the other replicas.
    fn remember(&self, cache: &SemanticCache, key: &CacheKey, vector: Option<&[f32]>, answer: &StoredAnswer) {
        cache.store(key, vector, answer.clone());
        if let Some(shared) = &self.shared {
            shared.publish(key, vector, answer);
        }
    }

    pub async fn chat(self: &Arc<Self>, req: ChatRequest, ctx: RequestCtx) -> Result<Served, GatewayError> {
        let started = Instant::now();
        let result = self.chat_inner(req, ctx).await;
        self.metrics.request_seconds.observe(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            self.metrics.errors.add(&e.status().to_string(), 1.0);
        }
        result
    }

    async fn chat_inner(self: &Arc<Self>, req: ChatRequest, ctx: RequestCtx) -> Result<Served, GatewayError> {
        // 1. validate and resolve where it may go, before spending anything
        req.validate().map_err(|(m, p)| GatewayError::invalid(m, Some(p)))?;
        let route = self.resolve(&req.model)?;

        // 2. the cache key; no key (no user message) or no-store ⇒ the cache is bypassed
        let cache = self.cache.clone().filter(|_| !ctx.no_store);
        let key = cache.as_ref().and_then(|_| self.cache_key(&req, &route, &ctx.tenant));
        let lookup = Lookup { threshold: ctx.threshold, max_age: ctx.max_age };
        let may_look = key.is_some() && !ctx.no_cache;

        // 3. exact fast path, before any model work
        if let (Some(cache), Some(key), true) = (&cache, &key, may_look) {
            if let Some(hit) = cache.exact(key, &lookup) {
                self.metrics.requests.add("hit_exact", 1.0);
                return Ok(self.serve_hit(&req, hit));
            }
        }

        // 4. one embedding, shared by the semantic lookup and the router
        let needs_vector = key.is_some() || matches!(route, Route::Auto { .. });
        let query_text = key.as_ref().map(|k| k.query.clone()).unwrap_or_else(|| last_user_text(&req));
        let embedded = if needs_vector { self.embed_text(&query_text).await } else { None };
        // the router reads the same forward pass's earlier layers too (`Embedded::views`)
        let router_input =
            embedded.as_ref().filter(|_| matches!(route, Route::Auto { .. })).map(Embedded::router_input);
        let vector = embedded.map(|e| e.vector);

        // 5. semantic lookup within the namespace
        if let (Some(cache), Some(key), true) = (&cache, &key, may_look) {
            match vector.as_deref() {
                Some(v) => {
                    if let Some(hit) = cache.nearest(key, v, &lookup) {
                        self.metrics.requests.add("hit_semantic", 1.0);
                        return Ok(self.serve_hit(&req, hit));
                    }
                }
                None => cache.record_miss(),
            }
        }

        // 6. coalesce identical concurrent misses: one upstream call, the others wait for it
        let mut guard = None;
        if let (Some(key), true) = (&key, may_look) {
            match self.join_or_lead(key.exact) {
                Ok(g) => guard = Some(g),
                Err(mut rx) => {
                    let waited =
                        tokio::time::timeout(Duration::from_secs(300), rx.wait_for(|f| !matches!(f, Flight::Pending)))
                            .await;
                    if let Ok(Ok(flight)) = waited {
                        if let Flight::Done(answer) = flight.clone() {
                            self.metrics.requests.add("hit_coalesced", 1.0);
                            return Ok(self.serve_answer(&req, answer, CacheStatus::Hit, Some(1.0)));
                        }
                    }
                    // the leader failed: try on our own
                }
            }
        }

        // 7. route: the router reads the prompt as the user wrote it (its text features count
        // lines and answer options, which the cache key's whitespace-normalised text has lost);
        // the vector is the same either way, as the tokenizer splits on any whitespace
        let route_text = if matches!(route, Route::Auto { .. }) { last_user_text(&req) } else { String::new() };
        // affinity follows the conversation whether or not the cache is in play (cache off,
        // `no-store`, a key without cache): the thread comes from the messages, not the cache key
        let thread = match (&route, self.affinity) {
            (Route::Auto { .. }, true) => thread_of(&req, &ctx.tenant),
            _ => None,
        };
        let (tier, mut targets, routed) = self.route(&route, &route_text, router_input.as_deref(), thread, &ctx);
        let (route_score, route_threshold) = (routed.map(|r| r.score), routed.map(|r| r.threshold));
        let route_affinity = routed.is_some_and(|r| r.forced);
        // images go only to deployments that can see them
        if req.has_images() {
            targets.retain(|d| d.vision);
            if targets.is_empty() {
                return Err(GatewayError::invalid(
                    format!("the request carries images, but no deployment of tier `{tier}` is marked `vision = true`"),
                    Some("messages"),
                ));
            }
        }
        let (targets, held_back) = self.cap_fallback(&tier, targets);
        // (after the cap: a premium fallback it held back is still where a long prompt may go)
        let larger = self.larger_windows(&route, &tier, &targets, req.has_images(), &ctx);
        self.metrics.routed.add(&tier, 1.0);
        let status = if key.is_some() { CacheStatus::Miss } else { CacheStatus::Bypass };
        self.metrics.requests.add(status.as_str(), 1.0);
        let store = cache.zip(key).map(|(c, k)| (c, k, vector));

        // 8. dispatch, 9. store
        if req.is_stream() {
            let out = self
                .dispatch
                .send_stream(&targets, &larger, &req)
                .await
                .map_err(|e| self.refused_fallback(e, &tier, &held_back))?;
            let tier = self.answered_by(&out, tier, &targets, &route, thread, &ctx);
            let meta = Meta {
                cache: status,
                similarity: None,
                tier: tier.clone(),
                model: out.model.clone(),
                provider: out.provider.clone(),
                cost: None,
                usage: None,
                cost_saved: None,
                attempts: out.attempts,
                route_score,
                route_threshold,
                route_affinity,
            };
            let origin = Origin { tier, provider: out.provider, model: out.model };
            let (tx, rx) = tokio::sync::oneshot::channel();
            let stream = self.clone().relay(out.value, req.include_usage(), origin, store, guard, tx);
            return Ok(Served { meta, body: Body::Stream(stream), done: Some(rx) });
        }

        let out = self
            .dispatch
            .send(&targets, &larger, &req)
            .await
            .map_err(|e| self.refused_fallback(e, &tier, &held_back))?;
        let tier = self.answered_by(&out, tier, &targets, &route, thread, &ctx);
        let response = out.value;
        let cost = self.price(&out.model, response.usage);
        let saved = cost.map(|c| self.routing_saving(&route, &tier, response.usage, c));
        self.metrics.cost.add(&out.model, cost.unwrap_or(0.0));
        self.metrics.cost_saved.add("routing", saved.unwrap_or(0.0));
        let answer = Arc::new(StoredAnswer {
            response: response.clone(),
            tier: tier.clone(),
            provider: out.provider.clone(),
            cost: cost.unwrap_or(0.0),
        });
        if let Some((cache, key, vector)) = &store {
            if response.is_complete() {
                self.remember(cache, key, vector.as_deref(), &answer);
            }
        }
        if let Some(g) = guard.as_mut() {
            if response.is_complete() {
                g.publish(answer);
            }
        }
        let usage = response.usage;
        Ok(Served {
            meta: Meta {
                cache: status,
                similarity: None,
                tier,
                model: out.model,
                provider: out.provider,
                cost,
                usage,
                cost_saved: saved,
                attempts: out.attempts,
                route_score,
                route_threshold,
                route_affinity,
            },
            body: Body::Json(Box::new(response)),
            done: None,
        })
    }

    /// The key `req` is looked up and stored under. A dial picks a tier, not an answer:
    /// `auto:0.1` shares the cache of `auto`, as the header does.
    fn cache_key(&self, req: &ChatRequest, route: &Route, tenant: &str) -> Option<CacheKey> {
        let cache_model = if matches!(route, Route::Auto { .. }) { &self.router_alias } else { &req.model };
        CacheKey::new(req, tenant, cache_model)
    }

    /// Takes back what the cache could answer `req` with, for the caller's tenant only: its
    /// exact entry and every entry the semantic lookup could serve for it (see
    /// [`SemanticCache::invalidate`]), here and, through the shared tier, on every replica. The
    /// key is computed as a request's is, so the body a client sent finds what it was served.
    /// Without the prompt's vector only the exact entry could be found, so a busy embedder is a
    /// 503 to retry rather than half an invalidation.
    pub async fn invalidate(&self, req: &ChatRequest, ctx: &RequestCtx) -> Result<usize, GatewayError> {
        req.validate().map_err(|(m, p)| GatewayError::invalid(m, Some(p)))?;
        let route = self.resolve(&req.model)?;
        let (Some(cache), Some(key)) = (&self.cache, self.cache_key(req, &route, &ctx.tenant)) else {
            return Ok(0);
        };
        let vector = match &self.embed {
            Some(_) => Some(self.embed_text(&key.query).await.ok_or_else(|| {
                GatewayError::overloaded(
                    "the embedder is busy, so the similar entries cannot be found; nothing was removed, retry",
                )
            })?),
            None => None,
        };
        let vector = vector.map(|e| e.vector);
        let removed = cache.invalidate(&key, vector.as_deref());
        if let Some(shared) = &self.shared {
            shared.publish_invalidation(&key, vector.as_deref());
        }
        tracing::info!(tenant = %ctx.tenant, removed, "cache entries invalidated");
        Ok(removed)
    }

    /// Whether `/v1/embeddings` answers `model` (none: the client named none) with the local
    /// MiniLM: its own name, or an alias the operator gave it.
    pub fn is_local_embedding(&self, model: Option<&str>) -> bool {
        model.is_none_or(|m| {
            m == crate::config::LOCAL_EMBEDDING_MODEL || self.local_embedding_aliases.iter().any(|a| a == m)
        })
    }

    /// `/v1/embeddings` for an upstream model: the client's OpenAI-format body sent to the
    /// deployments of `model` under `[embeddings]` in config order, with a chat call's retries,
    /// breakers and failover, and priced by the catalog. A model no deployment serves is a 404
    /// (the local model is the handler's business, before this).
    pub async fn embeddings(&self, model: &str, body: &serde_json::Value) -> Result<UpstreamEmbeddings, GatewayError> {
        let targets: Vec<Deployment> = self.embedding_models.iter().filter(|d| d.model == model).cloned().collect();
        if targets.is_empty() {
            let mut served: Vec<&str> = self.embedding_models.iter().map(|d| d.model.as_str()).collect();
            served.sort_unstable();
            served.dedup();
            served.insert(0, crate::config::LOCAL_EMBEDDING_MODEL);
            return Err(GatewayError::NotFound(format!(
                "the embedding model `{model}` does not exist on this gateway (it serves: {})",
                served.join(", ")
            )));
        }
        let out = self.dispatch.embeddings(&targets, body).await?;
        let usage = out.value.pointer("/usage/prompt_tokens").and_then(serde_json::Value::as_u64).map(|t| Usage {
            prompt_tokens: t,
            total_tokens: t,
            ..Usage::default()
        });
        let cost = self.price(&out.model, usage);
        self.metrics.cost.add(&out.model, cost.unwrap_or(0.0));
        Ok(UpstreamEmbeddings {
            deployment: format!("{}:{}", out.provider, out.model),
            attempts: out.attempts,
            body: out.value,
            usage,
            cost,
        })
    }

    /// The input tokens of `req` as the upstream that would serve it counts them (Anthropic's or
    /// Gemini's count endpoint, an estimate for an OpenAI-compatible one; see
    /// [`Dispatcher::count_tokens`]). `auto` may land on either tier: the premium tier's
    /// deployments are asked first, then the cheap tier's.
    pub async fn count_tokens(&self, req: &ChatRequest) -> Result<TokenCount, GatewayError> {
        let targets: Vec<Deployment> = match self.resolve(&req.model)? {
            Route::Auto { .. } => [&self.premium_tier, &self.cheap_tier]
                .into_iter()
                .filter_map(|t| self.tiers.get(t))
                .flat_map(Tier::order)
                .collect(),
            Route::Tier(t) => self.tiers.get(&t).map(Tier::order).unwrap_or_default(),
            Route::Model(ds) => ds,
        };
        self.dispatch.count_tokens(&targets, req).await
    }

    fn resolve(&self, model: &str) -> Result<Route, GatewayError> {
        if model == self.router_alias {
            return Ok(Route::Auto { dial: None });
        }
        if self.tiers.contains_key(model) {
            return Ok(Route::Tier(model.to_string()));
        }
        let mut found: Vec<Deployment> = Vec::new();
        for t in self.tiers.values() {
            for d in &t.targets {
                if d.model == model && !found.contains(d) {
                    found.push(d.clone());
                }
            }
        }
        // `auto:0.1`: the per-request dial in the model name, for clients that can set a model
        // but no header (a configured model of that name, above, comes first)
        let dial = model.strip_prefix(self.router_alias.as_str()).and_then(|rest| rest.strip_prefix(':'));
        if let (true, Some(share)) = (found.is_empty(), dial) {
            return match share.trim().parse::<f32>() {
                Ok(s) if (0.0..=1.0).contains(&s) => Ok(Route::Auto { dial: Some(s) }),
                _ => Err(GatewayError::invalid(
                    format!(
                        "`{model}`: after `{}:` comes the premium share for this request, a number between 0 and 1",
                        self.router_alias
                    ),
                    Some("model"),
                )),
            };
        }
        if found.is_empty() {
            return Err(GatewayError::NotFound(format!(
                "the model `{model}` does not exist on this gateway; use `{}`, a tier name, or a configured model (see GET /v1/models)",
                self.router_alias
            )));
        }
        Ok(Route::Model(found))
    }

    /// The tier for a request. For the alias: the live router's decision, with affinity (a
    /// conversation that went premium stays premium, and that premium call counts in the share).
    fn route(
        &self,
        route: &Route,
        prompt: &str,
        vector: Option<&[f32]>,
        thread: Option<Thread>,
        ctx: &RequestCtx,
    ) -> (String, Vec<Deployment>, Option<Routed>) {
        let (tier, routed) = match route {
            Route::Model(ds) => {
                let tier = self
                    .tiers
                    .iter()
                    .find(|(_, t)| t.targets.contains(&ds[0]))
                    .map(|(n, _)| n.clone())
                    .unwrap_or_default();
                return (tier, ds.clone(), None);
            }
            Route::Tier(t) => (t.clone(), None),
            Route::Auto { dial } => {
                // the thread table is only held for a lookup and an insert; the router scores
                // before it takes its window's lock
                let sticky_premium = thread.is_some_and(|t| self.threads.is_premium(&t));
                let ask = Ask {
                    tenant: &ctx.tenant,
                    tenant_share: ctx.tenant_share,
                    // a share in the model name is chosen per call; a header may be a client default
                    dial: dial.or(ctx.premium_share),
                    sticky_premium,
                    // the key's spend is past its soft budget level: premium is off for this key
                    premium_off: ctx.premium_off,
                    // the embedder is there but gave no vector in time: a text-features-only score
                    degraded: vector.is_none() && self.embed.is_some(),
                };
                let d = self.router.decide(prompt, vector, &ask);
                if let (Some(t), TierChoice::Premium) = (thread, d.tier) {
                    self.threads.remember_premium(&t);
                }
                let name = match d.tier {
                    TierChoice::Cheap => self.cheap_tier.clone(),
                    TierChoice::Premium => self.premium_tier.clone(),
                };
                (name, Some(d))
            }
        };
        let targets = self.tiers.get(&tier).map(Tier::order).unwrap_or_default();
        (tier, targets, routed)
    }

    /// The prompt's vector, or None when the embedder cannot give one in time: the request then
    /// skips the semantic lookup (exact match only) and is routed without it. A full queue
    /// refuses at once, so an overloaded embedder costs a request nothing but the lookup.
    async fn embed_text(&self, text: &str) -> Option<Embedded> {
        let embed = self.embed.as_ref()?;
        let started = Instant::now();
        let result = tokio::time::timeout(self.embed_wait, embed.embed_full(text.to_string())).await;
        self.metrics.embed_seconds.observe(started.elapsed().as_secs_f64());
        let skipped = match result {
            Ok(Ok(v)) => return Some(v),
            // expected under overload, and frequent then: counted, not logged per request
            Ok(Err(crate::embed::EmbedError::Overloaded)) => "queue_full",
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "embedding failed; serving as a cache miss");
                "failed"
            }
            Err(_) => "timeout",
        };
        self.metrics.embed_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.metrics.embed_skipped.add(skipped, 1.0);
        None
    }

    fn join_or_lead(self: &Arc<Self>, key: ExactKey) -> Result<FlightGuard, watch::Receiver<Flight>> {
        let mut inflight = self.inflight.lock();
        if let Some(rx) = inflight.get(&key) {
            return Err(rx.clone());
        }
        let (tx, rx) = watch::channel(Flight::Pending);
        inflight.insert(key, rx);
        Ok(FlightGuard { gateway: self.clone(), key, tx, published: false })
    }

    /// USD for an answer; `None` when the model has no known price (or the answer no usage):
    /// unknown is never priced as zero.
    fn price(&self, model: &str, usage: Option<Usage>) -> Option<f64> {
        match (self.prices.get(model), usage) {
            (Some(p), Some(u)) => Some(p.cost(u.prompt_tokens, u.completion_tokens)),
            _ => {
                self.metrics.unpriced.add(model, 1.0);
                None
            }
        }
    }

    /// Keeps the routed deployment and every failover target not pricier than it; the rest are
    /// held back unless the tier allows pricier fallback. Unknown prices cannot be compared and
    /// are kept (the start-up warning names them).
    fn cap_fallback(&self, tier: &str, targets: Vec<Deployment>) -> (Vec<Deployment>, Vec<Deployment>) {
        let allowed = self.tiers.get(tier).is_some_and(|t| t.allow_pricier_fallback);
        let Some(first) = targets.first() else { return (targets, Vec::new()) };
        let Some(base) = self.prices.get(&first.model).map(crate::prices::blended) else {
            return (targets, Vec::new());
        };
        if allowed {
            return (targets, Vec::new());
        }
        let (mut keep, mut held) = (Vec::with_capacity(targets.len()), Vec::new());
        for (i, d) in targets.into_iter().enumerate() {
            let pricier = i > 0 && self.prices.get(&d.model).is_some_and(|p| crate::prices::blended(p) > base);
            if pricier {
                held.push(d);
            } else {
                keep.push(d);
            }
        }
        (keep, held)
    }

    /// A failed dispatch that had pricier fallbacks held back says so: the operator's config,
    /// not the upstream, decided the outcome.
    fn refused_fallback(&self, e: GatewayError, tier: &str, held: &[Deployment]) -> GatewayError {
        if held.is_empty() || matches!(e, GatewayError::InvalidRequest { .. } | GatewayError::ContextTooLong(_)) {
            return e;
        }
        self.metrics.fallbacks.add("pricier_refused", 1.0);
        let names: Vec<String> = held.iter().map(|d| format!("{}:{}", d.provider, d.model)).collect();
        GatewayError::Upstream {
            status: 502,
            provider: "switchyard".into(),
            message: format!(
                "{e}; fallback to pricier {} refused (set tiers.{tier}.allow_pricier_fallback = true to allow it)",
                names.join(", ")
            ),
            retry_after: None,
        }
    }

    /// Where a prompt the router sent to the cheap tier goes when no cheap deployment can take
    /// it for its length: the premium tier's deployments (those not already tried, and only those
    /// that can see its images). `auto` let the router choose the tier, and a prompt the cheap
    /// model cannot read at all is not a cheap request; a client that named a tier or a model
    /// gets that tier's failover only, and the 400 if none of it fits. So does a request that
    /// may not go premium at all: dialled to share 0, or from a key past its soft budget.
    fn larger_windows(
        &self,
        route: &Route,
        tier: &str,
        targets: &[Deployment],
        images: bool,
        ctx: &RequestCtx,
    ) -> Vec<Deployment> {
        let Route::Auto { dial } = route else { return Vec::new() };
        let never_premium = dial.or(ctx.premium_share) == Some(0.0) || ctx.premium_off;
        if never_premium || tier != self.cheap_tier || tier == self.premium_tier {
            return Vec::new();
        }
        let Some(premium) = self.tiers.get(&self.premium_tier) else { return Vec::new() };
        premium.order().into_iter().filter(|d| !targets.contains(d) && (d.vision || !images)).collect()
    }

    /// The tier that answered, with what that says counted. Usually the tier routed to (any
    /// failover counted by direction). But when a prompt `auto` routed cheap was answered by the
    /// premium tier because no cheap deployment could take its length, the premium tier: counted
    /// inside the share (as a premium call forced by affinity is), and its conversation stays
    /// premium so later turns do not pay a refused call first.
    fn answered_by<T>(
        &self,
        out: &Outcome<T>,
        tier: String,
        targets: &[Deployment],
        route: &Route,
        thread: Option<Thread>,
        ctx: &RequestCtx,
    ) -> String {
        if !out.escalated {
            self.count_fallback(targets, &out.model);
            return tier;
        }
        self.metrics.fallbacks.add("larger_context", 1.0);
        if let Route::Auto { dial } = route {
            self.router.escalated(&Ask {
                tenant: &ctx.tenant,
                tenant_share: ctx.tenant_share,
                dial: dial.or(ctx.premium_share),
                sticky_premium: false,
                premium_off: ctx.premium_off,
                degraded: false,
            });
        }
        if let (Some(t), true) = (thread, self.affinity) {
            self.threads.remember_premium(&t);
        }
        self.premium_tier.clone()
    }

    /// Counts a request answered by another model than the one it was routed to, by direction.
    fn count_fallback(&self, targets: &[Deployment], answered: &str) {
        let Some(first) = targets.first().filter(|d| d.model != answered) else { return };
        let price = |m: &str| self.prices.get(m).map(crate::prices::blended);
        let direction = match (price(&first.model), price(answered)) {
            (Some(a), Some(b)) if b > a => "pricier",
            (Some(a), Some(b)) if b < a => "cheaper",
            (Some(_), Some(_)) => "same_price",
            _ => "unknown_price",
        };
        self.metrics.fallbacks.add(direction, 1.0);
    }

    /// What routing saved against sending this request to the premium tier's first deployment.
    fn routing_saving(&self, route: &Route, tier: &str, usage: Option<Usage>, cost: f64) -> f64 {
        if !matches!(route, Route::Auto { .. }) || tier == self.premium_tier {
            return 0.0;
        }
        let premium_model = self.tiers.get(&self.premium_tier).and_then(|t| t.targets.first()).map(|d| d.model.clone());
        let premium = premium_model.and_then(|m| self.prices.get(&m).copied());
        match (premium, usage) {
            (Some(p), Some(u)) => (p.cost(u.prompt_tokens, u.completion_tokens) - cost).max(0.0),
            _ => 0.0,
        }
    }

    fn serve_hit(&self, req: &ChatRequest, hit: Hit) -> Served {
        let sim = match hit.kind {
            HitKind::Exact => 1.0,
            HitKind::Semantic => hit.similarity,
        };
        self.serve_answer(req, hit.entry.answer.clone(), CacheStatus::Hit, Some(sim))
    }

    /// Replays a stored answer as a fresh response (new id and created), as JSON or as SSE to
    /// match the request, whichever way it was stored.
    fn serve_answer(
        &self,
        req: &ChatRequest,
        answer: Arc<StoredAnswer>,
        cache: CacheStatus,
        similarity: Option<f32>,
    ) -> Served {
        self.metrics.cost_saved.add("cache", answer.cost);
        let mut response = answer.response.clone();
        response.id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
        response.created = unix_now();
        let meta = Meta {
            cache,
            similarity,
            tier: answer.tier.clone(),
            model: response.model.clone(),
            provider: answer.provider.clone(),
            cost: Some(0.0),
            usage: response.usage,
            cost_saved: Some(answer.cost),
            attempts: 0,
            route_score: None,
            route_threshold: None,
            route_affinity: false,
        };
        let body = if req.is_stream() {
            let chunks = response_to_chunks(&response, req.include_usage(), REPLAY_PIECE);
            Body::Stream(Box::pin(futures_util::stream::iter(chunks.into_iter().map(StreamItem::Chunk))))
        } else {
            Body::Json(Box::new(response))
        };
        Served { meta, body, done: None }
    }

    /// Passes upstream chunks to the client while folding them into the complete answer; at the
    /// end stores it (if it finished naturally) and hands it to coalesced waiters. A failure, or an
    /// upstream that stops without a finish reason, ends the stream with an error event.
    fn relay(
        self: Arc<Self>,
        upstream: crate::providers::ChunkStream,
        include_usage: bool,
        origin: Origin,
        store: Option<(Arc<SemanticCache>, CacheKey, Option<Vec<f32>>)>,
        guard: Option<FlightGuard>,
        done: tokio::sync::oneshot::Sender<StreamEnd>,
    ) -> ReplyStream {
        struct St {
            up: crate::providers::ChunkStream,
            acc: ChunkAccumulator,
            done: bool,
            gw: Arc<Gateway>,
            include_usage: bool,
            tier: String,
            provider: String,
            /// The configured model name (prices are keyed by it; upstreams answer with dated names)
            model: String,
            store: Option<(Arc<SemanticCache>, CacheKey, Option<Vec<f32>>)>,
            guard: Option<FlightGuard>,
            end: Option<tokio::sync::oneshot::Sender<StreamEnd>>,
        }
        let st = St {
            up: upstream,
            acc: ChunkAccumulator::default(),
            done: false,
            gw: self,
            include_usage,
            tier: origin.tier,
            provider: origin.provider,
            model: origin.model,
            store,
            guard,
            end: Some(done),
        };
        impl St {
            fn finish(&mut self, usage: Option<Usage>, cost: Option<f64>, complete: bool) {
                if let Some(tx) = self.end.take() {
                    let _ = tx.send(StreamEnd { usage, cost, answer: String::new(), complete });
                }
            }
        }
        Box::pin(futures_util::stream::unfold(st, |mut st| async move {
            loop {
                if st.done {
                    return None;
                }
                match st.up.next().await {
                    Some(Ok(chunk)) => {
                        st.acc.push(&chunk);
                        if chunk.choices.is_empty() && !st.include_usage {
                            continue; // the usage chunk we asked for on our own account
                        }
                        let mut chunk = chunk;
                        if !st.include_usage {
                            chunk.usage = None;
                        }
                        return Some((StreamItem::Chunk(chunk), st));
                    }
                    Some(Err(e)) => {
                        st.done = true;
                        st.finish(None, None, false);
                        st.gw.metrics.stream_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let err = GatewayError::Upstream {
                            status: 502,
                            provider: st.provider.clone(),
                            message: format!("upstream stream failed: {e}"),
                            retry_after: None,
                        };
                        return Some((StreamItem::Error(err), st));
                    }
                    None => {
                        st.done = true;
                        let response = std::mem::take(&mut st.acc).finish();
                        if response.choices.iter().any(|c| c.finish_reason.is_none()) || response.choices.is_empty() {
                            st.finish(response.usage, None, false);
                            st.gw.metrics.stream_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let err = GatewayError::Upstream {
                                status: 502,
                                provider: st.provider.clone(),
                                message: "upstream stream ended before the answer was complete".into(),
                                retry_after: None,
                            };
                            return Some((StreamItem::Error(err), st));
                        }
                        let cost = st.gw.price(&st.model, response.usage);
                        st.gw.metrics.cost.add(&st.model, cost.unwrap_or(0.0));
                        let text = response.choices.first().and_then(|c| c.message.content.clone()).unwrap_or_default();
                        if let Some(tx) = st.end.take() {
                            let _ = tx.send(StreamEnd { usage: response.usage, cost, answer: text, complete: true });
                        }
                        let answer = Arc::new(StoredAnswer {
                            response: response.clone(),
                            tier: st.tier.clone(),
                            provider: st.provider.clone(),
                            cost: cost.unwrap_or(0.0),
                        });
                        if response.is_complete() {
                            if let Some((cache, key, vector)) = &st.store {
                                st.gw.remember(cache, key, vector.as_deref(), &answer);
                            }
                            if let Some(g) = st.guard.as_mut() {
                                g.publish(answer);
                            }
                        }
                        return None;
                    }
                }
            }
        }))
    }

    /// Model ids for `GET /v1/models`: the alias, the tiers, every configured model, and the
    /// embedding models.
    pub fn model_ids(&self) -> Vec<(String, String)> {
        let mut out = vec![(self.router_alias.clone(), "switchyard".to_string())];
        let mut tiers: Vec<&String> = self.tiers.keys().collect();
        tiers.sort();
        for t in &tiers {
            out.push(((*t).clone(), "switchyard".into()));
        }
        for t in tiers {
            for d in &self.tiers[t].targets {
                if !out.iter().any(|(id, _)| id == &d.model) {
                    out.push((d.model.clone(), d.provider.clone()));
                }
            }
        }
        // the embedding models `/v1/embeddings` serves: the local one, then the upstream ones
        if self.embed.is_some() {
            out.push((crate::config::LOCAL_EMBEDDING_MODEL.into(), "switchyard".into()));
        }
        for d in &self.embedding_models {
            if !out.iter().any(|(id, _)| id == &d.model) {
                out.push((d.model.clone(), d.provider.clone()));
            }
        }
        out
    }
}

fn last_user_text(req: &ChatRequest) -> String {
    req.messages.iter().rev().find(|m| m.role == crate::api::Role::User).map(|m| m.text_content()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(p: &str, weight: Option<u32>) -> Deployment {
        Deployment {
            provider: p.into(),
            model: "m".into(),
            vision: false,
            reasoning: false,
            weight,
            max_concurrency: None,
        }
    }

    #[test]
    fn unweighted_tiers_keep_config_order() {
        let t = Tier::new("t", vec![vec![dep("a", None), dep("b", None)], vec![dep("c", None)]]);
        let order: Vec<String> = t.order().into_iter().map(|d| d.provider).collect();
        assert_eq!(order, ["a", "b", "c"]);
    }

    #[test]
    fn weights_split_first_choice_and_keep_the_rest_for_failover() {
        let t = Tier::new(
            "t",
            vec![vec![dep("a", Some(3)), dep("b", Some(1)), dep("backup", Some(0))], vec![dep("fallback", None)]],
        );
        let mut first_a = 0;
        for _ in 0..4000 {
            let order: Vec<String> = t.order().into_iter().map(|d| d.provider).collect();
            assert_eq!(order.len(), 4);
            assert_eq!(&order[2..], ["backup", "fallback"], "weight 0 last in its group; fallback tier after");
            first_a += usize::from(order[0] == "a");
        }
        let share = first_a as f64 / 4000.0;
        assert!((0.70..0.80).contains(&share), "a should go first ~75% of the time, got {share}");
    }
}
