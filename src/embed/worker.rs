//! A dedicated inference thread fed by a bounded queue.
//!
//! Why a thread and not `spawn_blocking`: the model is CPU-bound for milliseconds, and batching
//! needs one place where concurrent requests meet. The worker blocks for the first job, then takes
//! whatever else is already queued (up to `max_batch` texts) and runs them in one forward pass.
//! A full queue refuses at once with [`EmbedError::Overloaded`]: the caller degrades to a cache
//! miss instead of waiting behind a backlog.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use super::{EmbedError, Embedder};

struct Job {
    texts: Vec<String>,
    reply: oneshot::Sender<Result<Vec<Vec<f32>>, EmbedError>>,
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
        let thread = std::thread::Builder::new()
            .name("switchyard-embed".into())
            .spawn(move || run(inner.as_ref(), rx, max_batch.max(1)))?;
        Ok((EmbedWorker { thread: Some(thread) }, EmbedHandle { tx, embedder }))
    }

    /// Waits for the thread to finish its queue (all handles must be dropped first).
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(embedder: &dyn Embedder, rx: Receiver<Job>, max_batch: usize) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        let mut n = jobs[0].texts.len();
        while n < max_batch {
            match rx.try_recv() {
                Ok(job) => {
                    n += job.texts.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let texts: Vec<&str> = jobs.iter().flat_map(|j| j.texts.iter().map(String::as_str)).collect();
        match embedder.embed_batch(&texts) {
            Ok(vectors) => {
                // hand each job its own slice of the batch, in order
                let mut rest = vectors.into_iter();
                for job in jobs {
                    let mine: Vec<Vec<f32>> = rest.by_ref().take(job.texts.len()).collect();
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
}

impl EmbedHandle {
    pub async fn embed_many(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        let (reply, rx) = oneshot::channel();
        match self.tx.try_send(Job { texts, reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(EmbedError::Overloaded),
            Err(TrySendError::Disconnected(_)) => return Err(EmbedError::Stopped),
        }
        rx.await.map_err(|_| EmbedError::Stopped)?
    }

    pub async fn embed(&self, text: String) -> Result<Vec<f32>, EmbedError> {
        self.embed_many(vec![text]).await?.pop().ok_or(EmbedError::Stopped)
    }

    pub fn dim(&self) -> usize {
        self.embedder.dim()
    }

    /// The synchronous embedder, for offline tools that batch by themselves.
    pub fn embedder(&self) -> &Arc<dyn Embedder> {
        &self.embedder
    }
}
