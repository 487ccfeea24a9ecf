//! The request log: one JSON line per request, written off the request path.
//!
//! A request serialises its record and hands it to a bounded queue with `try_send`: when the
//! writer thread falls behind (slow disk, full disk, a FIFO nobody reads) the line is dropped and
//! counted, and the request never waits. The writer rotates the file by size and by age and keeps
//! the newest `keep` rotated files. The last records are also kept in memory for
//! `GET /admin/requests`, and every record, logged or not, feeds the live usage totals of
//! `GET /admin/usage`.
//!
//! `path = "-"` writes the lines to standard output instead, unrotated: in a container the
//! platform's log collector is the file, and the process must not rotate what it does not own.
//!
//! What is never in a record: provider keys and gateway keys (a record names the key's *name*,
//! or the tenant id for `server.gateway_keys`). Prompts and answers only when `log.content`
//! says so, in clear (`store`) or as SHA-256 (`hash`).

pub mod usage;

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{LogConfig, LogContent};

/// One request, as logged.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Record {
    /// RFC 3339 UTC, when the request arrived.
    pub time: String,
    pub request_id: String,
    /// The key's name (key file), the tenant id (`server.gateway_keys`), or `default`.
    pub key: String,
    /// The `model` the client asked for.
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_score: Option<f32>,
    /// `provider:model` that answered (for a hit: that first answered it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    pub attempts: u32,
    /// `hit`, `miss`, `bypass`, or `none` (refused before the cache).
    pub cache: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub similarity: Option<f32>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// USD; absent when the model has no known price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_saved: Option<f64>,
    /// Until the response was complete (a stream: its last byte).
    pub latency_ms: f64,
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
}

impl Record {
    /// The UTC day (`YYYY-MM-DD`) of the record.
    pub fn day(&self) -> &str {
        self.time.get(..10).unwrap_or("")
    }

    /// The model that answered, else the one asked for.
    pub fn answering_model(&self) -> &str {
        self.deployment.as_deref().and_then(|d| d.split_once(':').map(|(_, m)| m)).unwrap_or(&self.model)
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct LogStats {
    pub written: AtomicU64,
    pub dropped: AtomicU64,
    pub errors: AtomicU64,
    pub rotations: AtomicU64,
    /// Lines handed to the writer, and lines it has finished with (written and flushed, or
    /// failed): equal when nothing is waiting, which is what [`Ledger::flush`] waits for.
    queued: AtomicU64,
    settled: AtomicU64,
}

/// Accounting for every request: live usage totals always, the log file and the recent-records
/// ring when `[log]` has a path.
pub struct Ledger {
    pub usage: usage::UsageBook,
    log: Option<Writer>,
    content: LogContent,
}

struct Writer {
    tx: SyncSender<String>,
    recent: Mutex<VecDeque<Arc<str>>>,
    recent_cap: usize,
    stats: Arc<LogStats>,
}

impl Ledger {
    /// Usage totals only, no file.
    pub fn off() -> Ledger {
        Ledger { usage: usage::UsageBook::default(), log: None, content: LogContent::Off }
    }

    /// Starts the writer thread for `cfg.path` (if any). The directory is created; an
    /// unwritable path is an error at start, not a silent gap in the log.
    pub fn start(cfg: &LogConfig) -> std::io::Result<Ledger> {
        let Some(path) = cfg.path.clone() else { return Ok(Ledger::off()) };
        let (tx, rx) = std::sync::mpsc::sync_channel(cfg.queue.max(1));
        let stats = Arc::new(LogStats::default());
        let st = stats.clone();
        let writer = std::thread::Builder::new().name("request-log".into());
        if path.as_os_str() == STDOUT {
            writer.spawn(move || stdout_loop(rx, st))?;
        } else {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let rotation = Rotation { max_bytes: cfg.max_bytes, max_age: cfg.max_age.0, keep: cfg.keep };
            writer.spawn(move || write_loop(path, rotation, rx, st))?;
        }
        Ok(Ledger {
            usage: usage::UsageBook::default(),
            log: Some(Writer { tx, recent: Mutex::new(VecDeque::new()), recent_cap: cfg.recent.max(1), stats }),
            content: cfg.content,
        })
    }

    pub fn enabled(&self) -> bool {
        self.log.is_some()
    }

    pub fn content(&self) -> LogContent {
        self.content
    }

    /// The prompt or answer as the log keeps it (`None` when content is off).
    pub fn content_of(&self, text: &str) -> Option<String> {
        match self.content {
            LogContent::Off => None,
            LogContent::Store => Some(text.to_string()),
            LogContent::Hash => Some(format!("sha256:{}", hex::encode(Sha256::digest(text.as_bytes())))),
        }
    }

    pub fn stats(&self) -> Option<&LogStats> {
        self.log.as_ref().map(|w| &*w.stats)
    }

    /// Counts the request in the usage totals and queues its line. Never blocks.
    pub fn record(&self, rec: &Record) {
        self.usage.add(rec);
        let Some(w) = &self.log else { return };
        let Ok(line) = serde_json::to_string(rec) else { return };
        let line: Arc<str> = Arc::from(line);
        {
            let mut recent = w.recent.lock();
            if recent.len() >= w.recent_cap {
                recent.pop_front();
            }
            recent.push_back(line.clone());
        }
        match w.tx.try_send(line.to_string()) {
            Ok(()) => {
                w.stats.queued.fetch_add(1, Ordering::Release);
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                w.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Waits, up to `limit`, until every queued line is written and flushed: at shutdown the
    /// last requests' lines must not die with the process. False if the limit ran out.
    pub async fn flush(&self, limit: Duration) -> bool {
        let Some(w) = &self.log else { return true };
        let deadline = Instant::now() + limit;
        while w.stats.settled.load(Ordering::Acquire) < w.stats.queued.load(Ordering::Acquire) {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        true
    }

    /// The last `n` records, newest first, as their JSON lines; `None` when the log is off.
    pub fn recent(&self, n: usize) -> Option<Vec<Arc<str>>> {
        let w = self.log.as_ref()?;
        let recent = w.recent.lock();
        Some(recent.iter().rev().take(n).cloned().collect())
    }
}

/// The `path` that means standard output.
pub const STDOUT: &str = "-";

/// The writer thread for standard output: one locked, buffered handle, flushed when the queue is
/// momentarily empty (a collector sees each burst at once, and a busy gateway writes in blocks).
fn stdout_loop(rx: Receiver<String>, stats: Arc<LogStats>) {
    let stdout = std::io::stdout();
    let mut logged_error = false;
    while let Ok(first) = rx.recv() {
        let mut out = std::io::BufWriter::new(stdout.lock());
        let mut line = Some(first);
        let mut burst = 0;
        while let Some(l) = line.take() {
            burst += 1;
            match out.write_all(l.as_bytes()).and_then(|_| out.write_all(b"\n")) {
                Ok(()) => stats.written.fetch_add(1, Ordering::Relaxed),
                Err(e) => {
                    if !logged_error {
                        logged_error = true;
                        tracing::error!(error = %e, "request log: cannot write to standard output; lines are dropped");
                    }
                    stats.errors.fetch_add(1, Ordering::Relaxed)
                }
            };
            line = rx.try_recv().ok();
        }
        if out.flush().is_err() {
            stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        stats.settled.fetch_add(burst, Ordering::Release);
    }
}

#[derive(Debug, Clone, Copy)]
struct Rotation {
    max_bytes: u64,
    max_age: Duration,
    keep: usize,
}

fn open(path: &Path) -> std::io::Result<(File, u64)> {
    let f = OpenOptions::new().create(true).append(true).open(path)?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    Ok((f, len))
}

/// The writer thread: appends lines, flushes when the queue is momentarily empty, rotates.
fn write_loop(path: PathBuf, rot: Rotation, rx: Receiver<String>, stats: Arc<LogStats>) {
    let mut current: Option<(std::io::BufWriter<File>, u64, Instant)> = None;
    let mut logged_error = false;
    while let Ok(first) = rx.recv() {
        let mut line = Some(first);
        let mut burst = 0;
        while let Some(l) = line.take() {
            burst += 1;
            if current.as_ref().is_some_and(|(_, size, opened)| {
                (rot.max_bytes > 0 && *size >= rot.max_bytes)
                    || (!rot.max_age.is_zero() && opened.elapsed() >= rot.max_age)
            }) {
                if let Some((mut w, _, _)) = current.take() {
                    let _ = w.flush();
                }
                rotate(&path, rot.keep);
                stats.rotations.fetch_add(1, Ordering::Relaxed);
            }
            if current.is_none() {
                match open(&path) {
                    Ok((f, len)) => current = Some((std::io::BufWriter::new(f), len, Instant::now())),
                    Err(e) => {
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                        if !logged_error {
                            logged_error = true;
                            tracing::error!(path = %path.display(), error = %e, "request log: cannot open the file; lines are dropped");
                        }
                    }
                }
            }
            if let Some((w, size, _)) = current.as_mut() {
                match w.write_all(l.as_bytes()).and_then(|_| w.write_all(b"\n")) {
                    Ok(()) => {
                        *size += l.len() as u64 + 1;
                        stats.written.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                        if !logged_error {
                            logged_error = true;
                            tracing::error!(path = %path.display(), error = %e, "request log: write failed");
                        }
                        current = None;
                    }
                }
            } else {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
            line = rx.try_recv().ok();
        }
        if let Some((w, _, _)) = current.as_mut() {
            let _ = w.flush();
        }
        stats.settled.fetch_add(burst, Ordering::Release);
    }
}

/// `requests.jsonl` → `requests.jsonl.<unix seconds>[.<n>]`; keeps the newest `keep`.
fn rotate(path: &Path, keep: usize) {
    let stamp = crate::limits::clock::now();
    let mut target = PathBuf::from(format!("{}.{stamp}", path.display()));
    let mut n = 1;
    while target.exists() {
        target = PathBuf::from(format!("{}.{stamp}.{n}", path.display()));
        n += 1;
    }
    if let Err(e) = std::fs::rename(path, &target) {
        tracing::warn!(error = %e, "request log: rotation failed");
        return;
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else { return };
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let prefix = format!("{name}.");
    let mut rotated: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(&prefix)))
                .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
                .collect()
        })
        .unwrap_or_default();
    rotated.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
    for (_, old) in rotated.into_iter().skip(keep) {
        let _ = std::fs::remove_file(old);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Dur;

    fn cfg(path: PathBuf, max_bytes: u64) -> LogConfig {
        LogConfig { path: Some(path), max_bytes, keep: 2, ..LogConfig::default() }
    }

    fn rec(i: usize) -> Record {
        Record {
            time: "2026-12-02T01:00:00Z".into(),
            request_id: format!("req_{i}"),
            key: "a".into(),
            ..Record::default()
        }
    }

    #[test]
    fn lines_are_written_rotated_by_size_and_old_files_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("requests.jsonl");
        let ledger = Ledger::start(&cfg(path.clone(), 300)).unwrap();
        let stats = ledger.stats().unwrap();
        for i in 0..40 {
            ledger.record(&rec(i));
            // one at a time, so the queue never overflows in this test
            while stats.written.load(Ordering::Relaxed) + stats.dropped.load(Ordering::Relaxed) < (i + 1) as u64 {
                std::thread::yield_now();
            }
        }
        assert_eq!(stats.dropped.load(Ordering::Relaxed), 0);
        assert!(stats.rotations.load(Ordering::Relaxed) >= 3);
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().filter_map(Result::ok).collect();
        assert_eq!(files.len(), 3, "the live file and keep = 2 rotated ones");
        let live = std::fs::read_to_string(&path).unwrap();
        let last: Record = serde_json::from_str(live.lines().last().unwrap()).unwrap();
        assert_eq!(last.request_id, "req_39");
        let recent = ledger.recent(2).unwrap();
        assert!(recent[0].contains("req_39") && recent[1].contains("req_38"));
        assert_eq!(ledger.usage.summary(usage::By::Key)[0].requests, 40);
    }

    #[tokio::test]
    async fn flush_waits_until_every_queued_line_is_written() {
        // a FIFO as the log file: the writer blocks until somebody reads, as on a stalled disk
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.fifo");
        assert!(std::process::Command::new("mkfifo").arg(&path).status().unwrap().success());
        let ledger = Ledger::start(&cfg(path.clone(), 0)).unwrap();
        for i in 0..100 {
            ledger.record(&rec(i));
        }
        assert!(!ledger.flush(Duration::from_millis(100)).await, "nothing can be written yet");
        let reader = std::thread::spawn(move || std::fs::read_to_string(path).unwrap());
        assert!(ledger.flush(Duration::from_secs(10)).await);
        drop(ledger); // the writer closes the FIFO, so the reader sees its end
        let lines = reader.join().unwrap();
        assert_eq!(lines.lines().count(), 100);
        assert!(lines.lines().last().unwrap().contains("req_99"));
        assert!(Ledger::off().flush(Duration::ZERO).await, "no log: nothing to wait for");
    }

    #[test]
    fn rotation_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        let mut c = cfg(path.clone(), 0);
        c.max_age = Dur(Duration::from_millis(1));
        let ledger = Ledger::start(&c).unwrap();
        let stats = ledger.stats().unwrap();
        for i in 0..3 {
            ledger.record(&rec(i));
            while stats.written.load(Ordering::Relaxed) < (i + 1) as u64 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        assert!(stats.rotations.load(Ordering::Relaxed) >= 1);
    }

    #[test]
    fn content_is_off_stored_or_hashed() {
        let mut l = Ledger::off();
        assert_eq!(l.content_of("hi"), None);
        l.content = LogContent::Hash;
        assert_eq!(
            l.content_of("hi").unwrap(),
            "sha256:8f434346648f6b96df89dda901c5176b10a6d83961dd3c1ac88b59b2dc327aa4"
        );
        l.content = LogContent::Store;
        assert_eq!(l.content_of("hi").as_deref(), Some("hi"));
        assert!(l.recent(5).is_none(), "no ring when the log is off");
    }
}
