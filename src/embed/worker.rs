//! A dedicated inference thread fed by a bounded queue.
//!
//! Why a thread and not `spawn_blocking`: the model is CPU-bound for milliseconds, and batching
//! needs one place where concurrent requests meet. The worker blocks for the first job, then takes
//! whatever else is already queued (up to `max_batch` texts) and runs them in one forward pass.
//! A full queue refuses at once with [`EmbedError::Overloaded`]: the caller degrades to a cache
//! miss instead of waiting behind a backlog. So does a queue whose backlog would take longer than
//! the caller is willing to wait ([`EmbedHandle::with_max_wait`]), judged from the measured time
//! per text: under overload a FIFO queue otherwise makes *every* caller wait out its deadline and
//! then go without (each job finishes just after its caller gave up), where refusing the excess
//! at the door keeps the admitted ones in time.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{EmbedError, Embedded, Embedder};

struct Job {
    texts: Vec<String>,
    reply: oneshot::Sender<Result<Vec<Embedded>, EmbedError>>,
}

/// Owns the thread; dropping every [`EmbedHandle`] stops it.
pub struct EmbedWorker {
    thread: Option<JoinHandle<()>>,
}

impl EmbedWorker {
    pub fn start(
        embedder: Arc<dyn Embedder>,
        queue: usize,
        max_batch: usize,
    ) -> std::io::Result<(EmbedWorker, EmbedHandle)> {
        let (tx, rx) = sync_channel::<Job>(queue.max(1));
        let inner = embedder.clone();
        let load = Arc::new(Load::default());
        let worker_load = load.clone();
        let thread = std::thread::Builder::new()
            .name("switchyard-embed".into())
            .spawn(move || run(inner.as_ref(), rx, max_batch.max(1), &worker_load))?;
        Ok((EmbedWorker { thread: Some(thread) }, EmbedHandle { tx, embedder, load, max_wait: None }))
    }

    /// Waits for the thread to finish its queue (all handles must be dropped first).
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the worker has in hand, for admission: texts queued and not yet taken, and the recent
/// inference time per text (an exponential moving average, in microseconds).
#[derive(Default)]
struct Load {
    queued: AtomicUsize,
    /// Texts in the batch being embedded now: a new job waits for all of it, then its own batch.
    in_progress: AtomicUsize,
    micros_per_text: AtomicU64,
}

impl Load {
    /// The expected time until `texts` more would be embedded, behind what is queued. An empty
    /// queue always admits, so one slow batch (a CPU stall) cannot shut the door for good: the
    /// next admitted job measures again.
    fn expected_wait(&self, texts: usize) -> Duration {
        let queued = self.queued.load(Ordering::Relaxed);
        if queued == 0 {
            return Duration::ZERO;
        }
        let per = self.micros_per_text.load(Ordering::Relaxed);
        let n = self.in_progress.load(Ordering::Relaxed) + queued + texts;
        Duration::from_micros(per.saturating_mul(n as u64))
    }

    fn observe(&self, took: Duration, texts: usize) {
        let per = (took.as_micros() as u64) / texts.max(1) as u64;
        let old = self.micros_per_text.load(Ordering::Relaxed);
        let new = if old == 0 { per } else { (old * 7 + per) / 8 };
        self.micros_per_text.store(new, Ordering::Relaxed);
    }
}

fn run(embedder: &dyn Embedder, rx: Receiver<Job>, max_batch: usize, load: &Load) {
    while let Ok(first) = rx.recv() {
        // a job whose caller stopped waiting (its `max_wait` passed, or the client left) is
        // dropped unprocessed: under overload the worker must catch up, not compute stale vectors
        let mut jobs: Vec<Job> = Vec::new();
        let mut n = 0;
        let mut next = Some(first);
        while let Some(job) = next.take() {
            load.queued.fetch_sub(job.texts.len().min(load.queued.load(Ordering::Relaxed)), Ordering::Relaxed);
            if !job.reply.is_closed() {
                n += job.texts.len();
                jobs.push(job);
            }
            if n < max_batch {
                next = rx.try_recv().ok();
            }
        }
        if jobs.is_empty() {
            continue;
        }
        let texts: Vec<&str> = jobs.iter().flat_map(|j| j.texts.iter().map(String::as_str)).collect();
        let started = Instant::now();
        load.in_progress.store(texts.len(), Ordering::Relaxed);
        let result = embedder.embed_batch_full(&texts);
        load.in_progress.store(0, Ordering::Relaxed);
        load.observe(started.elapsed(), texts.len());
        match result {
            Ok(vectors) => {
                // hand each job its own slice of the batch, in order
                let mut rest = vectors.into_iter();
                for job in jobs {
                    let mine: Vec<Embedded> = rest.by_ref().take(job.texts.len()).collect();
                    let _ = job.reply.send(Ok(mine));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for job in jobs {
                    let _ = job.reply.send(Err(EmbedError::Inference(msg.clone())));
                }
            }
        }
    }
}

/// Cheap to clone; submits texts to the worker.
#[derive(Clone)]
pub struct EmbedHandle {
    tx: SyncSender<Job>,
    embedder: Arc<dyn Embedder>,
    load: Arc<Load>,
    max_wait: Option<Duration>,
}

impl EmbedHandle {
    /// Refuse (as [`EmbedError::Overloaded`]) a request whose expected wait, at the measured time
    /// per text behind what is queued, exceeds `max_wait`: its caller would give up first.
    pub fn with_max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = Some(max_wait);
        self
    }

    pub async fn embed_many(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(self.embed_many_full(texts).await?.into_iter().map(|e| e.vector).collect())
    }

    /// As [`EmbedHandle::embed_many`], with the router's views.
    pub async fn embed_many_full(&self, texts: Vec<String>) -> Result<Vec<Embedded>, EmbedError> {
        let n = texts.len();
        if self.max_wait.is_some_and(|w| self.load.expected_wait(n) > w) {
            return Err(EmbedError::Overloaded);
        }
        let (reply, rx) = oneshot::channel();
        // counted before the send, so the worker never takes a job it has not seen counted
        self.load.queued.fetch_add(n, Ordering::Relaxed);
        match self.tx.try_send(Job { texts, reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.load.queued.fetch_sub(n, Ordering::Relaxed);
                return Err(EmbedError::Overloaded);
            }
            Err(TrySendError::Disconnected(_)) => {
                self.load.queued.fetch_sub(n, Ordering::Relaxed);
                return Err(EmbedError::Stopped);
            }
        }
        rx.await.map_err(|_| EmbedError::Stopped)?
    }

    pub async fn embed(&self, text: String) -> Result<Vec<f32>, EmbedError> {
        self.embed_many(vec![text]).await?.pop().ok_or(EmbedError::Stopped)
    }

    /// One text's vector and the router's views.
    pub async fn embed_full(&self, text: String) -> Result<Embedded, EmbedError> {
        self.embed_many_full(vec![text]).await?.pop().ok_or(EmbedError::Stopped)
    }

    pub fn dim(&self) -> usize {
        self.embedder.dim()
    }

    /// The synchronous embedder, for offline tools that batch by themselves.
    pub fn embedder(&self) -> &Arc<dyn Embedder> {
        &self.embedder
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Records the batch sizes it is called with; slow enough that requests pile up.
    struct Recording {
        batches: parking_lot::Mutex<Vec<usize>>,
        calls: AtomicUsize,
    }

    impl Embedder for Recording {
        fn dim(&self) -> usize {
            1
        }
        fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.batches.lock().push(texts.len());
            std::thread::sleep(Duration::from_millis(30));
            Ok(texts.iter().map(|t| vec![t.len() as f32]).collect())
        }
        fn count_tokens(&self, text: &str) -> usize {
            text.len()
        }
    }

    #[tokio::test]
    async fn concurrent_requests_are_batched_and_answered_in_order() {
        let rec = Arc::new(Recording { batches: Default::default(), calls: AtomicUsize::new(0) });
        let (worker, handle) = EmbedWorker::start(rec.clone(), 64, 32).unwrap();
        let mut tasks = Vec::new();
        for i in 0..20 {
            let h = handle.clone();
            tasks.push(tokio::spawn(async move { h.embed("x".repeat(i + 1)).await }));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap().unwrap(), vec![(i + 1) as f32], "each caller gets its own vector");
        }
        let batches = rec.batches.lock().clone();
        assert_eq!(batches.iter().sum::<usize>(), 20);
        assert!(batches.iter().any(|b| *b > 1), "requests that queue up share a forward pass: {batches:?}");
        drop(handle);
        worker.join();
    }

    #[tokio::test]
    async fn abandoned_jobs_are_dropped_unprocessed() {
        let rec = Arc::new(Recording { batches: Default::default(), calls: AtomicUsize::new(0) });
        let (worker, handle) = EmbedWorker::start(rec.clone(), 64, 1).unwrap();
        // the first job occupies the worker (one job per batch); ten more are queued behind it
        // and abandoned at once, as callers whose `max_wait` passed
        use futures_util::FutureExt;
        let mut first = Box::pin(handle.embed("first".into()));
        assert!((&mut first).now_or_never().is_none(), "queued, not done");
        for i in 0..10 {
            let abandoned = Box::pin(handle.embed(format!("gone {i}"))).now_or_never();
            assert!(abandoned.is_none());
        }
        assert!(first.await.is_ok());
        assert_eq!(handle.embed("last".into()).await.unwrap(), vec![4.0]);
        let texts: usize = rec.batches.lock().iter().sum();
        assert_eq!(texts, 2, "only the jobs someone waited for were embedded: {:?}", rec.batches.lock());
        drop(handle);
        worker.join();
    }

    #[tokio::test]
    async fn a_backlog_longer_than_max_wait_refuses_at_once() {
        let rec = Arc::new(Recording { batches: Default::default(), calls: AtomicUsize::new(0) });
        let (_worker, handle) = EmbedWorker::start(rec, 64, 1).unwrap();
        let handle = handle.with_max_wait(Duration::from_millis(100));
        // one call teaches the worker its time per text (30 ms)
        handle.embed("warm".into()).await.unwrap();
        // a burst: about three fit in 100 ms behind one another, the rest are refused at once
        let futs: Vec<_> = (0..12).map(|i| handle.embed(format!("burst {i}"))).collect();
        let results = futures_util::future::join_all(futs).await;
        let refused = results.iter().filter(|r| matches!(r, Err(EmbedError::Overloaded))).count();
        assert!((1..12).contains(&refused), "some admitted, the excess refused: {refused} of 12");
        assert!(results.iter().all(|r| r.is_ok() || matches!(r, Err(EmbedError::Overloaded))));
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let rec = Arc::new(Recording { batches: Default::default(), calls: AtomicUsize::new(0) });
        let (_worker, handle) = EmbedWorker::start(rec, 1, 1).unwrap();
        let mut results = Vec::new();
        let futs: Vec<_> = (0..6).map(|_| handle.embed("x".into())).collect();
        for r in futures_util::future::join_all(futs).await {
            results.push(r);
        }
        assert!(results.iter().any(|r| matches!(r, Err(EmbedError::Overloaded))), "a bounded queue must refuse");
        assert!(results.iter().any(|r| r.is_ok()));
    }
}
