//! Holding `premium_share` on the traffic actually served.
//!
//! A threshold calibrated on the training mix gives another mix a very different premium share
//! (with 0.3 configured we measured 0.60 on chat instructions and 0.17 on MMLU questions). So the
//! threshold is taken from the recent distribution of the scores themselves: a [`ScoreWindow`]
//! keeps the last N scores in arrival order and sorted, and the threshold for share `s` is the
//! order statistic with a fraction `s` of the window at or above it. When scores arrive in any
//! exchangeable order, a new score's rank among the previous N is uniform, so it goes premium with
//! probability `s` whatever the score distribution and whatever N; N only decides how quickly a
//! change of mix is followed. Nothing here assumes a score range: only the order of scores is used.
//!
//! Until `warmup` scores have been seen, the threshold is blended from the training calibration
//! ([`Classifier::threshold_for_share`](super::Classifier::threshold_for_share)) towards the live
//! one, so a fresh gateway starts from its best prior and never from a handful of scores.
//!
//! Premium calls forced by conversation affinity count inside the share. They are taken out in
//! advance: the window is asked for `target − forced`, where `forced` is the share of the recent
//! decisions that went premium only because their conversation already had (exact when those
//! requests score like the rest). What remains — the window's lag after a change of mix, scores of
//! affinity-bound requests unlike the others — is corrected by feedback: each decision at the
//! configured share moves a correction by `gain · (target − outcome)` and lets it decay by `leak`,
//! a leaky integral whose memory is about `1 / leak` decisions, so an old overshoot is not paid back
//! forever; the correction is bounded by `max_correction` either way. The defaults were chosen by
//! simulating the controller on the router's scores of the dev files (single-kind streams, switches
//! MMLU → chat and chat → MMLU, 10–20% affinity-bound requests; see `tests/share.rs` for the same
//! streams through the real binary): a window of 128 with this feedback keeps every stream within
//! ±0.02 of 0.3 after the first 100 requests, where a window of 512 without feedback gave 0.67 over
//! the first 100 requests after a switch from MMLU to chat and 0.52 over the next 200.
//!
//! A per-request dial (`x-switchyard-premium-share`) reads the same live distribution at another
//! share. Its score joins the window (it is traffic like any other, and a tenant that only sends
//! dialled requests still gets a live distribution), but its outcome is kept out of the feedback:
//! a client asking for 10% on some requests must not make the controller raise everybody else's
//! share to bring the average back to 30%.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use super::{Feature, Router, TierChoice};

/// The last `cap` scores, in arrival order (a ring) and sorted (for order statistics).
///
/// A push costs two binary searches and two `memmove`s of at most `4·cap` bytes; a lookup is one
/// index. At a cap of a few hundred that is a few hundred nanoseconds, held under the tracker's lock.
#[derive(Debug, Clone)]
pub struct ScoreWindow {
    /// Scores ever offered (the warm-up counts these, not the window's length).
    seen: u64,
    ring: Vec<f32>,
    /// The ring slot the next score overwrites, once the ring is full.
    next: usize,
    sorted: Vec<f32>,
    cap: usize,
}

impl ScoreWindow {
    pub fn new(cap: usize) -> Self {
        let cap = cap.max(1);
        ScoreWindow { seen: 0, ring: Vec::with_capacity(cap), next: 0, sorted: Vec::with_capacity(cap), cap }
    }

    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// Adds a score, dropping the oldest when full. Non-finite scores are ignored (they carry no order).
    pub fn push(&mut self, score: f32) {
        self.seen += 1;
        if !score.is_finite() {
            return;
        }
        if self.ring.len() < self.cap {
            self.ring.push(score);
        } else {
            let old = std::mem::replace(&mut self.ring[self.next], score);
            self.next = (self.next + 1) % self.cap;
            if let Ok(i) = self.sorted.binary_search_by(|x| x.total_cmp(&old)) {
                self.sorted.remove(i);
            }
        }
        let i = self.sorted.partition_point(|x| x.total_cmp(&score).is_lt());
        self.sorted.insert(i, score);
    }

    /// The threshold (premium when `score >= threshold`) that sends a fraction `share` of scores
    /// drawn like the window's to premium, or None while the window is empty.
    ///
    /// With `n` scores in the window, a new score's rank among the `n + 1` is uniform, so taking
    /// the `k`-th largest window score with `k = round(share · (n + 1))` sends it premium with
    /// probability `k / (n + 1)`: unbiased up to rounding even for a small window. Share 0 is
    /// +∞ (never premium), share 1 is −∞ (always).
    pub fn threshold_for_share(&self, share: f32) -> Option<f32> {
        let n = self.sorted.len();
        if n == 0 {
            return None;
        }
        if share.is_nan() || share <= 0.0 {
            return Some(f32::INFINITY);
        }
        if share >= 1.0 {
            return Some(f32::NEG_INFINITY);
        }
        let k = (f64::from(share) * (n + 1) as f64).round() as usize;
        Some(match k {
            0 => f32::INFINITY,
            k if k > n => f32::NEG_INFINITY,
            k => self.sorted[n - k],
        })
    }
}

/// One decision's outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Outcome {
    premium: bool,
    /// Premium only because of affinity.
    forced: bool,
}

/// The last `cap` outcomes with running counts: the realised share and the affinity-forced share.
#[derive(Debug, Clone)]
struct OutcomeWindow {
    ring: Vec<Outcome>,
    next: usize,
    premium: usize,
    forced: usize,
    cap: usize,
}

impl OutcomeWindow {
    fn new(cap: usize) -> Self {
        let cap = cap.max(1);
        OutcomeWindow { ring: Vec::with_capacity(cap), next: 0, premium: 0, forced: 0, cap }
    }

    fn push(&mut self, o: Outcome) {
        if self.ring.len() < self.cap {
            self.ring.push(o);
        } else {
            let old = std::mem::replace(&mut self.ring[self.next], o);
            self.next = (self.next + 1) % self.cap;
            self.premium -= usize::from(old.premium);
            self.forced -= usize::from(old.forced);
        }
        self.premium += usize::from(o.premium);
        self.forced += usize::from(o.forced);
    }

    /// Turns the newest cheap outcome into a forced premium one; false when there is none. The
    /// window is only ever read as counts, so which cheap outcome it is does not matter.
    fn escalate(&mut self) -> bool {
        // newest first: the slot before `next` (which stays 0 until the ring is full)
        let n = self.ring.len();
        let Some(i) = (1..=n).map(|k| (self.next + n - k) % n).find(|&i| !self.ring[i].premium) else {
            return false;
        };
        self.ring[i] = Outcome { premium: true, forced: true };
        self.premium += 1;
        self.forced += 1;
        true
    }

    fn share(&self) -> Option<f32> {
        (!self.ring.is_empty()).then(|| self.premium as f32 / self.ring.len() as f32)
    }

    fn forced_share(&self) -> f32 {
        if self.ring.is_empty() {
            0.0
        } else {
            self.forced as f32 / self.ring.len() as f32
        }
    }
}

/// How the live threshold is kept. Defaults chosen by measurement on single-kind streams from the
/// dev files (see `tests/share.rs` and the README's routing section).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShareSettings {
    /// Recent scores the threshold is read from (`router.share_window`).
    pub window: usize,
    /// Scores seen before the live threshold has fully replaced the training calibration
    /// (`router.share_warmup`); in between the two are blended linearly.
    pub warmup: usize,
    /// Feedback gain per decision.
    pub gain: f32,
    /// Share of the correction forgotten per decision (its memory is about `1 / leak` decisions).
    pub leak: f32,
    /// Largest correction of the share the window is asked for, either way.
    pub max_correction: f32,
    /// Tenants with their own share (and window) tracked at most; beyond, the global window serves.
    pub max_tenants: usize,
}

impl Default for ShareSettings {
    fn default() -> Self {
        ShareSettings { window: 128, warmup: 16, gain: 0.05, leak: 0.02, max_correction: 0.3, max_tenants: 4096 }
    }
}

/// What the operator configured for the default (non-tenant) traffic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OperatingPoint {
    /// `router.threshold`: a fixed score, never moved.
    Threshold(f32),
    /// `router.premium_share`: the share to hold on live traffic.
    Share(f32),
}

/// One request's routing inputs beyond the prompt.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ask<'a> {
    /// The tenant id (a hash, never the raw key).
    pub tenant: &'a str,
    /// The tenant's own `premium_share`, when its key has one: it gets its own window and target.
    pub tenant_share: Option<f32>,
    /// `x-switchyard-premium-share`: this request only, read from the same live distribution.
    pub dial: Option<f32>,
    /// The conversation already went premium (affinity): premium whatever the score.
    pub sticky_premium: bool,
    /// The key is past its soft budget level: cheap whatever the score or the conversation. Its
    /// score stays out of the window and its outcome out of the feedback (counted with the dialled
    /// decisions), so the other tenants' share is not raised to make up for it.
    pub premium_off: bool,
    /// The prompt had no embedding in time (the embedder was overloaded or failed): its score
    /// comes from the text features alone, on another scale than the others'. It is ranked among
    /// the recent scores of its own kind (a second window), so that neither population skews the
    /// threshold of the other and each goes premium at the asked share; its outcome counts in the
    /// share and the feedback like any other.
    pub degraded: bool,
}

/// A routing decision with what explains it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Routed {
    pub tier: TierChoice,
    pub score: f32,
    /// The threshold the score was compared with.
    pub threshold: f32,
    /// Premium only because the conversation already was (affinity).
    pub forced: bool,
}

/// One window with its target and feedback: the global one, or one per tenant with its own share.
struct ShareTracker {
    state: Mutex<TrackerState>,
}

struct TrackerState {
    point: OperatingPoint,
    scores: ScoreWindow,
    /// The scores of prompts routed without their embedding ([`Ask::degraded`]).
    degraded_scores: ScoreWindow,
    outcomes: OutcomeWindow,
    correction: f32,
    decisions: u64,
    premium: u64,
    dialled: u64,
    /// Decisions premium only because of affinity (dialled ones included).
    affinity: u64,
}

impl TrackerState {
    /// The share to ask the window for: the target, less what affinity already sends premium,
    /// plus the feedback correction.
    fn asked(&self, target: f32) -> f32 {
        target - self.outcomes.forced_share() + self.correction
    }
}

impl ShareTracker {
    fn new(point: OperatingPoint, settings: &ShareSettings) -> Self {
        ShareTracker {
            state: Mutex::new(TrackerState {
                point,
                scores: ScoreWindow::new(settings.window),
                degraded_scores: ScoreWindow::new(settings.window),
                outcomes: OutcomeWindow::new(settings.window),
                correction: 0.0,
                decisions: 0,
                premium: 0,
                dialled: 0,
                affinity: 0,
            }),
        }
    }
}

/// What `/metrics` shows for one window.
#[derive(Debug, Clone, PartialEq)]
pub struct ShareStats {
    /// `global` (every tenant without a share of its own) or the tenant id.
    pub tenant: String,
    /// The configured share, when the operating point is a share.
    pub target: Option<f32>,
    /// Premium share over the last `window` decisions at the configured operating point
    /// (affinity included, dialled requests excluded).
    pub realised: Option<f32>,
    /// The threshold a request at the configured operating point would be compared with now.
    pub threshold: f32,
    /// The feedback correction currently added to the target.
    pub correction: f32,
    pub window_len: usize,
    pub decisions: u64,
    pub premium: u64,
    pub dialled: u64,
    /// Decisions premium only because their conversation already was: at the configured share
    /// they are inside `realised` (and `premium`), taken out of what the score window is asked for.
    pub affinity: u64,
}

/// A [`Router`] whose threshold follows live traffic so that the configured premium share holds.
pub struct LiveRouter {
    /// Swapped whole when a retrained router is reloaded ([`LiveRouter::replace`]).
    router: RwLock<Arc<Router>>,
    point: OperatingPoint,
    settings: ShareSettings,
    global: ShareTracker,
    tenants: RwLock<HashMap<String, Arc<ShareTracker>>>,
    /// Routers swapped in while serving, and reloads refused (the file did not load).
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
}

impl LiveRouter {
    pub fn new(router: Router, point: OperatingPoint, settings: ShareSettings) -> Self {
        let global = ShareTracker::new(point, &settings);
        LiveRouter {
            router: RwLock::new(Arc::new(router)),
            point,
            settings,
            global,
            tenants: RwLock::default(),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
        }
    }

    pub fn name(&self) -> String {
        self.router().name().to_string()
    }

    /// The router now (a reload may swap it for the next request).
    pub fn router(&self) -> Arc<Router> {
        self.router.read().clone()
    }

    /// Swaps in `router` (a retrained file, reloaded while serving). Its scores are on a scale of
    /// their own, so every window starts over, from the new router's calibration as at start; the
    /// realised share and its feedback carry on, as they count outcomes, not scores.
    pub fn replace(&self, router: Router) {
        *self.router.write() = Arc::new(router);
        self.reloads.fetch_add(1, Ordering::Relaxed);
        let tenants: Vec<Arc<ShareTracker>> = self.tenants.read().values().cloned().collect();
        for t in std::iter::once(&self.global).chain(tenants.iter().map(|t| &**t)) {
            let mut st = t.state.lock();
            st.scores = ScoreWindow::new(self.settings.window);
            st.degraded_scores = ScoreWindow::new(self.settings.window);
        }
    }

    pub fn point(&self) -> OperatingPoint {
        self.point
    }

    pub fn settings(&self) -> &ShareSettings {
        &self.settings
    }

    pub fn explain(&self, prompt: &str, vector: Option<&[f32]>) -> Vec<Feature> {
        self.router().explain(prompt, vector)
    }

    /// Scores the prompt (before any lock is taken) and decides, with one router throughout: a
    /// reload in between cannot compare one router's score with the other's calibration.
    pub fn decide(&self, prompt: &str, vector: Option<&[f32]>, ask: &Ask<'_>) -> Routed {
        let router = self.router();
        let score = router.score(prompt, vector);
        self.decide_with(&router, score, ask)
    }

    /// Compares `score` with the live threshold of the asker's window (see [`LiveRouter::decide`]).
    pub fn decide_score(&self, score: f32, ask: &Ask<'_>) -> Routed {
        self.decide_with(&self.router(), score, ask)
    }

    /// Compares `score` with the live threshold of the asker's window, then adds the score to the
    /// window (so it is ranked among the previous scores, not itself) and, unless dialled, the
    /// outcome to the feedback.
    fn decide_with(&self, router: &Router, score: f32, ask: &Ask<'_>) -> Routed {
        let tenant = ask.tenant_share.and_then(|share| self.tenant(ask.tenant, share));
        let tracker = tenant.as_deref().unwrap_or(&self.global);
        let mut st = tracker.state.lock();
        if let (Some(share), false) = (ask.tenant_share, std::ptr::eq(tracker, &self.global)) {
            // the tenant's share follows what its key says now (a reloaded key file takes effect)
            st.point = OperatingPoint::Share(share);
        }
        let window = if ask.degraded { &st.degraded_scores } else { &st.scores };
        let threshold = match ask.dial {
            Some(d) => self.threshold_at(router, window, d, ask.degraded),
            None => match st.point {
                OperatingPoint::Threshold(t) => router.fixed_threshold(t, ask.degraded),
                OperatingPoint::Share(s) => self.threshold_at(router, window, st.asked(s), ask.degraded),
            },
        };
        let by_score = score >= threshold;
        let premium = !ask.premium_off && (by_score || ask.sticky_premium);
        let forced = premium && !by_score;
        // a key past its soft budget is not eligible for premium: its scores would skew the
        // window the others are ranked in
        if !ask.premium_off {
            let window = if ask.degraded { &mut st.degraded_scores } else { &mut st.scores };
            window.push(score);
        }
        st.affinity += u64::from(forced);
        if ask.dial.is_some() || ask.premium_off {
            st.dialled += 1;
        } else {
            st.outcomes.push(Outcome { premium, forced });
            st.decisions += 1;
            st.premium += u64::from(premium);
            if let OperatingPoint::Share(s) = st.point {
                let ShareSettings { gain, leak, max_correction: m, .. } = self.settings;
                let step = gain * (s - f32::from(u8::from(premium)));
                st.correction = (st.correction * (1.0 - leak) + step).clamp(-m, m);
            }
        }
        drop(st);
        Routed { tier: if premium { TierChoice::Premium } else { TierChoice::Cheap }, score, threshold, forced }
    }

    /// A request decided cheap that was served premium after all, because no cheap deployment
    /// could take the prompt's length (the pipeline's escalation). It counts inside the share
    /// like a premium call forced by affinity: one cheap outcome of the asker's window becomes a
    /// forced premium one, and the feedback takes the step a premium decision would have taken,
    /// so the others' share makes room for it. Dialled requests and keys past their soft budget
    /// stay out of the feedback, as in [`LiveRouter::decide`].
    pub fn escalated(&self, ask: &Ask<'_>) {
        if ask.dial.is_some() || ask.premium_off {
            return;
        }
        let tenant = ask.tenant_share.and_then(|share| self.tenant(ask.tenant, share));
        let mut st = tenant.as_deref().unwrap_or(&self.global).state.lock();
        if !st.outcomes.escalate() {
            return;
        }
        st.premium += 1;
        if let OperatingPoint::Share(_) = st.point {
            let ShareSettings { gain, max_correction: m, .. } = self.settings;
            st.correction = (st.correction - gain).clamp(-m, m);
        }
    }

    /// The threshold for `share` on `window`: the training calibration at first (that of the
    /// text-only heads for the `degraded` window), blended linearly into the live order statistic
    /// over the window's first `warmup` scores. Without a calibration (the length baseline) the
    /// live one from the first score; with neither, the router's static threshold.
    fn threshold_at(&self, router: &Router, window: &ScoreWindow, share: f32, degraded: bool) -> f32 {
        let share = if share.is_nan() { 0.0 } else { share.clamp(0.0, 1.0) };
        if share <= 0.0 {
            return f32::INFINITY;
        }
        if share >= 1.0 {
            return f32::NEG_INFINITY;
        }
        let live = window.threshold_for_share(share).filter(|t| t.is_finite());
        let calibrated = router.calibrated_threshold(share, degraded).filter(|t| t.is_finite());
        let warmup = self.settings.warmup as u64;
        match (live, calibrated) {
            (Some(l), Some(c)) if window.seen < warmup => {
                let w = window.seen as f32 / warmup as f32;
                w * l + (1.0 - w) * c
            }
            (Some(l), _) => l,
            (None, Some(c)) => c,
            (None, None) => router.threshold(),
        }
    }

    /// The tracker of a tenant with its own share, created on first use. None past `max_tenants`.
    fn tenant(&self, id: &str, share: f32) -> Option<Arc<ShareTracker>> {
        let point = OperatingPoint::Share(share);
        if let Some(t) = self.tenants.read().get(id) {
            return Some(t.clone());
        }
        let mut map = self.tenants.write();
        if map.len() >= self.settings.max_tenants && !map.contains_key(id) {
            tracing::warn!(
                tenant = id,
                max = self.settings.max_tenants,
                "too many tenant shares; using the global window"
            );
            return None;
        }
        Some(map.entry(id.to_string()).or_insert_with(|| Arc::new(ShareTracker::new(point, &self.settings))).clone())
    }

    /// Every window's target, realised share and live threshold, the global one first.
    pub fn stats(&self) -> Vec<ShareStats> {
        let mut out = vec![self.stats_of("global", &self.global)];
        let map = self.tenants.read();
        let mut ids: Vec<&String> = map.keys().collect();
        ids.sort();
        out.extend(ids.into_iter().map(|id| self.stats_of(id, &map[id])));
        out
    }

    fn stats_of(&self, tenant: &str, t: &ShareTracker) -> ShareStats {
        let router = self.router();
        let st = t.state.lock();
        let (target, threshold) = match st.point {
            OperatingPoint::Threshold(th) => (None, th),
            OperatingPoint::Share(s) => (Some(s), self.threshold_at(&router, &st.scores, st.asked(s), false)),
        };
        ShareStats {
            tenant: tenant.to_string(),
            target,
            realised: st.outcomes.share(),
            threshold,
            correction: st.correction,
            window_len: st.scores.len(),
            decisions: st.decisions,
            premium: st.premium,
            dialled: st.dialled,
            affinity: st.affinity,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{Classifier, Feature};
    use rand::{Rng, SeedableRng};

    fn sorted_copy(w: &ScoreWindow) -> Vec<f32> {
        let mut v = w.ring.clone();
        v.sort_by(f32::total_cmp);
        v
    }

    #[test]
    fn the_window_keeps_the_last_n_scores_sorted() {
        let mut w = ScoreWindow::new(5);
        assert_eq!(w.threshold_for_share(0.3), None);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut all = Vec::new();
        for i in 0..200 {
            // repeated values too: removal must take out exactly one copy
            let s = if i % 7 == 0 { 0.5 } else { rng.gen::<f32>() };
            all.push(s);
            w.push(s);
            let mut last: Vec<f32> = all.iter().rev().take(5).copied().collect();
            last.sort_by(f32::total_cmp);
            assert_eq!(w.sorted, last);
            assert_eq!(sorted_copy(&w), last);
        }
        w.push(f32::NAN);
        w.push(f32::INFINITY);
        assert_eq!(w.len(), 5, "non-finite scores are ignored");
    }

    #[test]
    fn the_order_statistic_leaves_the_share_at_or_above_it() {
        let mut w = ScoreWindow::new(1000);
        for i in 0..999 {
            w.push(i as f32); // 0 … 998: n + 1 = 1000 ranks
        }
        assert_eq!(w.threshold_for_share(0.3), Some(699.0)); // 300 of 999 scores ≥ 699
        assert_eq!(w.threshold_for_share(0.1), Some(899.0));
        assert_eq!(w.threshold_for_share(0.0), Some(f32::INFINITY));
        assert_eq!(w.threshold_for_share(1.0), Some(f32::NEG_INFINITY));
        assert_eq!(w.threshold_for_share(0.0001), Some(f32::INFINITY));
        // any scale: only the order counts
        let mut v = ScoreWindow::new(10);
        for s in [-300.0, 1e6, 5.0, -2.5] {
            v.push(s);
        }
        assert_eq!(v.threshold_for_share(0.4), Some(5.0));
    }

    /// For i.i.d. scores the share sent premium is the target whatever the window size and the
    /// distribution, once warm.
    #[test]
    fn a_small_window_is_unbiased_on_stationary_traffic() {
        for (cap, share) in [(16, 0.3), (64, 0.3), (512, 0.1), (512, 0.5)] {
            let mut w = ScoreWindow::new(cap);
            let mut rng = rand::rngs::StdRng::seed_from_u64(cap as u64);
            let (mut n, mut premium) = (0, 0);
            for i in 0..60_000 {
                let s: f32 = rng.gen::<f32>().powi(3) * 7.0 - 2.0; // skewed, off any unit scale
                if i >= cap {
                    n += 1;
                    premium += usize::from(s >= w.threshold_for_share(share).unwrap());
                }
                w.push(s);
            }
            let got = premium as f32 / n as f32;
            assert!((got - share).abs() < 0.01, "cap {cap} share {share}: {got}");
        }
    }

    /// A classifier that returns the prompt parsed as a number, calibrated as if its training
    /// scores were uniform on 0..1.
    struct Numeric;
    impl Classifier for Numeric {
        fn name(&self) -> &str {
            "numeric"
        }
        fn score(&self, prompt: &str, _vector: Option<&[f32]>) -> f32 {
            prompt.parse().unwrap_or(f32::NAN)
        }
        fn explain(&self, _prompt: &str, _vector: Option<&[f32]>) -> Vec<Feature> {
            Vec::new()
        }
        fn threshold_for_share(&self, share: f32) -> Option<f32> {
            Some(1.0 - share)
        }
        /// Its prompts without an embedding score as if uniform on 5..6.
        fn threshold_for_share_without_embedding(&self, share: f32) -> Option<f32> {
            Some(6.0 - share)
        }
        fn share_for_threshold(&self, threshold: f32) -> Option<f32> {
            Some((1.0 - threshold).clamp(0.0, 1.0))
        }
    }

    /// `router.threshold = 0.7` sends the training traffic's top 30% to premium; a prompt scored
    /// without its embedding (text-only heads, another scale) is held to the threshold that does
    /// the same on that scale, not to 0.7, which every such score would pass.
    #[test]
    fn an_explicit_threshold_means_the_same_share_for_prompts_without_their_embedding() {
        let router = Router::with_operating_point(Box::new(Numeric), Some(0.7), None);
        let r = LiveRouter::new(router, OperatingPoint::Threshold(0.7), ShareSettings::default());
        let degraded = Ask { degraded: true, ..Ask::default() };
        let d = r.decide_score(5.69, &degraded);
        assert_eq!((d.tier, d.threshold), (TierChoice::Cheap, 5.7));
        assert_eq!(r.decide_score(5.71, &degraded).tier, TierChoice::Premium);
        let (n, p) = run(&r, (0..1000).map(|i| 5.0 + i as f32 / 1000.0), &degraded);
        assert_eq!((n, p), (1000, 300));
        // the main heads' scores still meet 0.7 itself
        let d = r.decide_score(0.69, &Ask::default());
        assert_eq!((d.tier, d.threshold), (TierChoice::Cheap, 0.7));
    }

    fn live(share: f32) -> LiveRouter {
        let router = Router::with_operating_point(Box::new(Numeric), None, Some(share));
        LiveRouter::new(router, OperatingPoint::Share(share), ShareSettings::default())
    }

    fn run(r: &LiveRouter, scores: impl Iterator<Item = f32>, ask: &Ask<'_>) -> (usize, usize) {
        let (mut n, mut p) = (0, 0);
        for s in scores {
            n += 1;
            p += usize::from(r.decide_score(s, ask).tier == TierChoice::Premium);
        }
        (n, p)
    }

    #[test]
    fn the_share_holds_on_a_mix_the_calibration_never_saw() {
        let r = live(0.3);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        // training calibration says 0.7; this traffic scores 0.6..0.9: calibration alone gives 2/3
        let mut scores = std::iter::repeat_with(move || 0.6 + 0.3 * rng.gen::<f32>());
        let ask = Ask { tenant: "default", ..Ask::default() };
        let _warm = run(&r, scores.by_ref().take(100), &ask);
        let (n, p) = run(&r, scores.by_ref().take(2000), &ask);
        let got = p as f32 / n as f32;
        assert!((got - 0.3).abs() < 0.02, "{got}");
        let st = &r.stats()[0];
        assert_eq!(st.target, Some(0.3));
        assert!((st.realised.unwrap() - 0.3).abs() < 0.05, "{st:?}");
        assert!(st.threshold > 0.6 && st.threshold < 0.9, "{st:?}");
    }

    /// Prompts routed without their embedding score on another scale (here far above the
    /// others). Ranked in one window with the rest, they would all go premium and push the
    /// others' threshold up until nearly none of them did; in a window of their own each kind
    /// goes premium at the asked share.
    #[test]
    fn prompts_routed_without_their_embedding_are_ranked_among_their_own_kind() {
        let r = live(0.3);
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let (mut n, mut p) = ([0usize; 2], [0usize; 2]);
        for i in 0..6000 {
            // one request in four finds the embedder overloaded
            let degraded = i % 4 == 0;
            let score = if degraded { 5.0 + rng.gen::<f32>() } else { rng.gen::<f32>() };
            let d = r.decide_score(score, &Ask { tenant: "default", degraded, ..Ask::default() });
            if i >= 1000 {
                n[usize::from(degraded)] += 1;
                p[usize::from(degraded)] += usize::from(d.tier == TierChoice::Premium);
            }
        }
        for kind in 0..2 {
            let got = p[kind] as f32 / n[kind] as f32;
            assert!((got - 0.3).abs() < 0.03, "degraded = {}: premium share {got}", kind == 1);
        }
        let st = &r.stats()[0];
        assert!((st.realised.unwrap() - 0.3).abs() < 0.05, "{st:?}");
        assert!(st.threshold < 1.0, "the live threshold is the normal prompts' own: {st:?}");
    }

    #[test]
    fn affinity_forced_premium_is_counted_inside_the_share() {
        let r = live(0.3);
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let (mut n, mut p, mut forced, mut all_forced) = (0, 0, 0, 0);
        for i in 0..6000 {
            // one request in ten continues a conversation that already went premium
            let ask = Ask { tenant: "default", sticky_premium: i % 10 == 0, ..Ask::default() };
            let d = r.decide_score(rng.gen(), &ask);
            all_forced += u64::from(d.forced);
            if i >= 1000 {
                n += 1;
                p += usize::from(d.tier == TierChoice::Premium);
                forced += usize::from(d.forced);
            }
        }
        let got = p as f32 / n as f32;
        assert!(forced > 0);
        // every affinity-forced decision is counted (`/metrics` shows it)
        assert_eq!(r.stats()[0].affinity, all_forced);
        assert!((got - 0.3).abs() < 0.015, "realised {got} with {forced} forced");
    }

    /// Prompts too long for the cheap tier are served premium whatever the router decided. Counted
    /// inside the share, the others make room for them and premium calls stay at the target; not
    /// counted, they would come on top of it (here 0.3 + 0.7 × 0.1 = 0.37).
    #[test]
    fn premium_calls_for_prompts_too_long_for_the_cheap_tier_are_counted_inside_the_share() {
        let r = live(0.3);
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        let (mut n, mut p) = (0, 0);
        let ask = Ask { tenant: "default", ..Ask::default() };
        for i in 0..6000 {
            let d = r.decide_score(rng.gen(), &ask);
            // one request in ten is longer than the cheap model's context window
            let premium = d.tier == TierChoice::Premium || i % 10 == 0;
            if d.tier == TierChoice::Cheap && i % 10 == 0 {
                r.escalated(&ask);
            }
            if i >= 1000 {
                n += 1;
                p += usize::from(premium);
            }
        }
        let got = p as f32 / n as f32;
        assert!((got - 0.3).abs() < 0.015, "premium calls {got}");
        let st = &r.stats()[0];
        assert!((st.realised.unwrap() - 0.3).abs() < 0.05, "{st:?}");

        // a dialled request's escalation stays out of the feedback, as its decision does
        let before = r.stats()[0].clone();
        r.escalated(&Ask { tenant: "default", dial: Some(0.5), ..Ask::default() });
        r.escalated(&Ask { tenant: "default", premium_off: true, ..Ask::default() });
        assert_eq!(r.stats()[0], before);
    }

    #[test]
    fn an_escalation_turns_one_cheap_outcome_into_a_forced_premium_one_in_any_ring_position() {
        let mut w = OutcomeWindow::new(4);
        assert!(!w.escalate(), "nothing to turn");
        for premium in [true, false, true] {
            w.push(Outcome { premium, forced: false });
        }
        assert!(w.escalate());
        assert_eq!((w.premium, w.forced), (3, 1));
        assert!(!w.escalate(), "no cheap outcome left");
        // wrapped: the ring's newest entries are before `next`
        for _ in 0..6 {
            w.push(Outcome { premium: false, forced: false });
        }
        assert!(w.escalate() && w.escalate());
        assert_eq!((w.premium, w.forced, w.ring.iter().filter(|o| o.premium).count()), (2, 2, 2));
        assert_eq!(w.share(), Some(0.5));
    }

    #[test]
    fn a_dial_reads_the_live_distribution_without_moving_the_others_share() {
        let r = live(0.3);
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let (mut n, mut p, mut dn, mut dp) = (0, 0, 0, 0);
        for i in 0..8000 {
            let dial = (i % 2 == 0).then_some(0.1);
            let ask = Ask { tenant: "default", dial, ..Ask::default() };
            let d = r.decide_score(3.0 + rng.gen::<f32>(), &ask);
            let premium = usize::from(d.tier == TierChoice::Premium);
            if i < 1000 {
                continue;
            }
            if dial.is_some() {
                dn += 1;
                dp += premium;
            } else {
                n += 1;
                p += premium;
            }
        }
        let (dialled, others) = (dp as f32 / dn as f32, p as f32 / n as f32);
        assert!((dialled - 0.1).abs() < 0.02, "dialled {dialled}");
        assert!((others - 0.3).abs() < 0.02, "others {others}");
        assert_eq!(r.stats()[0].dialled, 4000);
    }

    #[test]
    fn a_key_past_its_soft_budget_stays_cheap_without_raising_the_others_share() {
        let r = live(0.3);
        let mut rng = rand::rngs::StdRng::seed_from_u64(12);
        let (mut n, mut p, mut off_premium) = (0, 0, 0);
        for i in 0..8000 {
            // half the traffic is a key past its soft budget, with hard prompts and premium threads
            let off = i % 2 == 0;
            let ask = Ask { tenant: "default", premium_off: off, sticky_premium: off, ..Ask::default() };
            let d = r.decide_score(if off { 3.0 } else { rng.gen() }, &ask);
            let premium = usize::from(d.tier == TierChoice::Premium);
            if off {
                off_premium += premium;
                assert!(!d.forced);
            } else if i >= 1000 {
                n += 1;
                p += premium;
            }
        }
        assert_eq!(off_premium, 0, "premium is off for that key, affinity included");
        // its cheap outcomes are kept out of the feedback: the others get the configured share,
        // not more to make up for it
        let others = p as f32 / n as f32;
        assert!((others - 0.3).abs() < 0.02, "others {others}");
        assert_eq!(r.stats()[0].dialled, 4000);
    }

    #[test]
    fn tenants_with_their_own_share_get_their_own_window() {
        let r = live(0.3);
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        let (mut a, mut b) = ((0, 0), (0, 0));
        for i in 0..6000 {
            // tenant b sends much harder prompts and wants 10%; the global share is not its business
            let (ask, s) = if i % 2 == 0 {
                (Ask { tenant: "t-a", ..Ask::default() }, rng.gen::<f32>())
            } else {
                (Ask { tenant: "t-b", tenant_share: Some(0.1), ..Ask::default() }, 2.0 + rng.gen::<f32>())
            };
            let premium = usize::from(r.decide_score(s, &ask).tier == TierChoice::Premium);
            if i >= 1000 {
                let c = if i % 2 == 0 { &mut a } else { &mut b };
                c.0 += 1;
                c.1 += premium;
            }
        }
        let (sa, sb) = (a.1 as f32 / a.0 as f32, b.1 as f32 / b.0 as f32);
        assert!((sa - 0.3).abs() < 0.02, "global {sa}");
        assert!((sb - 0.1).abs() < 0.02, "tenant {sb}");
        let stats = r.stats();
        assert_eq!(stats.iter().map(|s| s.tenant.as_str()).collect::<Vec<_>>(), ["global", "t-b"]);
        assert_eq!(stats[1].target, Some(0.1));
    }

    #[test]
    fn an_explicit_threshold_is_never_moved() {
        let router = Router::with_operating_point(Box::new(Numeric), Some(0.5), None);
        let r = LiveRouter::new(router, OperatingPoint::Threshold(0.5), ShareSettings::default());
        let ask = Ask { tenant: "default", ..Ask::default() };
        for _ in 0..1000 {
            let d = r.decide_score(0.9, &ask);
            assert_eq!((d.tier, d.threshold), (TierChoice::Premium, 0.5));
        }
        assert_eq!(r.stats()[0].threshold, 0.5);
        // the dial still reads the live distribution
        let d = r.decide_score(0.9, &Ask { tenant: "default", dial: Some(0.0), ..Ask::default() });
        assert_eq!(d.tier, TierChoice::Cheap);
    }

    /// A router swapped in while serving scores on a scale of its own: the windows start over,
    /// from its calibration; the realised share carries on.
    #[test]
    fn a_replaced_router_starts_its_windows_over_from_its_calibration() {
        struct Shifted;
        impl Classifier for Shifted {
            fn name(&self) -> &str {
                "shifted"
            }
            fn score(&self, prompt: &str, _vector: Option<&[f32]>) -> f32 {
                prompt.parse::<f32>().unwrap_or(f32::NAN) + 10.0
            }
            fn explain(&self, _prompt: &str, _vector: Option<&[f32]>) -> Vec<Feature> {
                Vec::new()
            }
            fn threshold_for_share(&self, share: f32) -> Option<f32> {
                Some(11.0 - share)
            }
        }
        let r = live(0.3);
        let ask = Ask { tenant: "default", ..Ask::default() };
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        run(&r, (0..500).map(|_| rng.gen::<f32>()), &ask);
        let realised = r.stats()[0].realised;
        r.replace(Router::with_operating_point(Box::new(Shifted), None, Some(0.3)));
        assert_eq!((r.name(), r.reloads.load(Ordering::Relaxed)), ("shifted".to_string(), 1));
        let d = r.decide("0.65", None, &ask);
        assert!((d.threshold - 10.7).abs() < 0.05, "from the new calibration: {}", d.threshold);
        assert_eq!(r.stats()[0].window_len, 1, "the old scores are gone");
        assert_eq!(r.stats()[0].decisions, 501, "the decisions and their outcomes carry on");
        assert_eq!(r.stats()[0].realised.is_some(), realised.is_some());
        let (n, p) = run(&r, (0..2000).map(|_| 10.0 + rng.gen::<f32>()), &ask);
        assert!((p as f32 / n as f32 - 0.3).abs() < 0.03, "{p} of {n}");
    }

    #[test]
    fn warm_up_starts_from_the_calibration() {
        let r = live(0.3);
        let ask = Ask { tenant: "default", ..Ask::default() };
        let d = r.decide_score(0.69, &ask);
        assert_eq!((d.tier, d.threshold), (TierChoice::Cheap, 0.7));
        let d = r.decide_score(0.71, &ask);
        assert_eq!(d.tier, TierChoice::Premium);
        // still almost the calibration's (at the share the feedback now asks for), a sixteenth live
        assert!(d.threshold != 0.7 && (d.threshold - 0.7).abs() < 0.03, "{}", d.threshold);
        // a prompt scored without its embedding starts from its own heads' calibration
        let degraded = Ask { degraded: true, ..ask };
        let d = r.decide_score(5.6, &degraded);
        assert!((d.threshold - 5.7).abs() < 0.03, "{}", d.threshold);
        assert_eq!(d.tier, TierChoice::Cheap);
    }
}
