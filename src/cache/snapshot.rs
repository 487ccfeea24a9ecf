//! Snapshot of the memory cache: our own format, written to a temporary file, fsynced and
//! renamed over the old one (and the directory fsynced), so a crash or `kill -9` mid-write leaves
//! the previous snapshot in place.
//!
//! Format v2: the magic line, the bincode body (`Vec<Record>`), then a 40-byte trailer: the body's
//! length (u64 LE) and its SHA-256. A torn, truncated or bit-flipped file fails the length or the
//! checksum before a single entry is restored, so the gateway starts empty instead of serving
//! garbage. The body is also decoded with a byte limit (its length), so no length field read from
//! disk can make us allocate more than the file holds — a v1 file (no trailer, still read) with
//! corrupt bytes used to panic with "capacity overflow".
//!
//! Indexes are rebuilt on restore (HNSW in parallel) rather than dumped: hnsw_rs's own reload
//! was not reliable in our tests, and rebuilding is what keeps the format independent of it.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bincode::Options;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{unix_now, ExactKey, Namespace, SemanticCache, StoredAnswer, VectorIndex};

pub(crate) const MAGIC_V1: &[u8] = b"SWITCHYARD-CACHE-SNAPSHOT v1\n";
pub(crate) const MAGIC: &[u8] = b"SWITCHYARD-CACHE-SNAPSHOT v2\n";
/// Body length (u64 LE) + SHA-256 of the body.
const TRAILER: usize = 8 + 32;

/// bincode as `bincode::serialize` writes it (fixed-width integers, little endian), but reading at
/// most `limit` bytes in all: every length prefix is checked against it before allocating.
pub(crate) fn codec(limit: u64) -> impl Options {
    bincode::DefaultOptions::new().with_fixint_encoding().allow_trailing_bytes().with_limit(limit)
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

/// Temporary files of one process get distinct names, so a periodic snapshot and the one written
/// at shutdown never write the same file.
static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

fn tmp_prefix(path: &Path) -> String {
    format!("{}.tmp.", path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default())
}

/// One cached entry as it is written to a snapshot and to the shared tier's stream.
#[derive(Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) namespace: Namespace,
    pub(crate) exact: ExactKey,
    pub(crate) question: String,
    pub(crate) vector: Option<Vec<f32>>,
    /// JSON, because the answer holds free-form JSON that bincode cannot read back.
    pub(crate) answer: String,
    pub(crate) stored_at: u64,
    pub(crate) expires_at: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("snapshot {path} is not a Switchyard cache snapshot or is corrupt: {detail}")]
    Format { path: String, detail: String },
}

impl SemanticCache {
    /// Inserts an entry another replica stored (shared tier). False if expired or unreadable.
    pub(crate) fn insert_record(&self, rec: Record) -> bool {
        if rec.expires_at <= unix_now() {
            return false;
        }
        // the stream is writable by anything that can reach Redis: check what a snapshot checks
        if rec.vector.as_ref().is_some_and(|v| v.len() != self.dim || v.iter().any(|x| !x.is_finite())) {
            return false;
        }
        let Ok(answer) = serde_json::from_str::<StoredAnswer>(&rec.answer) else { return false };
        self.insert(
            rec.namespace,
            rec.exact,
            rec.question,
            rec.vector.as_deref(),
            Arc::new(answer),
            rec.stored_at,
            rec.expires_at,
        );
        true
    }

    /// A number that changes whenever entries are added or removed: the periodic snapshot skips
    /// writing when it is the same as at the last write.
    pub fn generation(&self) -> u64 {
        let inner = self.inner.read();
        inner.next_id
            + self.counters.evictions.load(std::sync::atomic::Ordering::Relaxed)
            + self.counters.expirations.load(std::sync::atomic::Ordering::Relaxed)
            + self.counters.invalidations.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Writes every live entry to `path` atomically (temporary file, fsync, rename, fsync of the
    /// directory). Returns the number written.
    pub fn save_snapshot(&self, path: &Path) -> Result<usize, SnapshotError> {
        let io = |source| SnapshotError::Io { path: path.display().to_string(), source };
        let records: Vec<Record> = {
            let inner = self.inner.read();
            let now = unix_now();
            let mut vectors: HashMap<u64, Vec<f32>> = HashMap::new();
            for ix in inner.indexes.values() {
                vectors.extend(ix.items());
            }
            inner
                .entries
                .values()
                .filter(|e| e.expires_at > now)
                .map(|e| Record {
                    namespace: e.namespace,
                    exact: e.exact,
                    question: e.question.clone(),
                    vector: vectors.remove(&e.id),
                    answer: serde_json::to_string(e.answer.as_ref()).unwrap_or_default(),
                    stored_at: e.stored_at,
                    expires_at: e.expires_at,
                })
                .collect()
        };
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io)?;
        let seq = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!("{}{}.{seq}", tmp_prefix(path), std::process::id()));
        let written = (|| {
            let file = File::create(&tmp).map_err(io)?;
            let mut w = BufWriter::new(file);
            w.write_all(MAGIC).map_err(io)?;
            let mut body = Hashing { inner: &mut w, hasher: Sha256::new(), len: 0 };
            bincode::DefaultOptions::new()
                .with_fixint_encoding()
                .serialize_into(&mut body, &records)
                .map_err(|e| SnapshotError::Format { path: path.display().to_string(), detail: e.to_string() })?;
            let (len, digest) = (body.len, body.hasher.finalize());
            w.write_all(&len.to_le_bytes()).map_err(io)?;
            w.write_all(&digest).map_err(io)?;
            let file = w.into_inner().map_err(|e| io(e.into_error()))?;
            file.sync_all().map_err(io)?;
            std::fs::rename(&tmp, path).map_err(io)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written?;
        // the rename itself is durable only once the directory is
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(records.len())
    }

    /// Restores entries from `path` (expired ones are skipped). A missing file is not an error.
    /// A torn or corrupt file is an error and restores nothing. Temporary files left by a
    /// process killed mid-write are removed.
    pub fn load_snapshot(&self, path: &Path) -> Result<usize, SnapshotError> {
        remove_leftovers(path);
        let records = match read_records(path) {
            Ok(r) => r,
            Err(SnapshotError::Format { path: p, detail }) => {
                // keep the bad file for inspection, out of the way of the next snapshot
                let to = quarantine_path(path);
                let detail = match std::fs::rename(path, &to) {
                    Ok(()) => format!("{detail}; moved to {}", to.display()),
                    Err(_) => detail,
                };
                return Err(SnapshotError::Format { path: p, detail });
            }
            Err(e) => return Err(e),
        };
        Ok(self.restore(records))
    }

    /// Restores from a snapshot held in memory: the same checks as a file, for the fuzzer.
    pub(crate) fn load_snapshot_bytes(&self, bytes: &[u8]) -> Result<usize, SnapshotError> {
        let records = read_records_from(std::io::Cursor::new(bytes), bytes.len() as u64, "<memory>")?;
        Ok(self.restore(records))
    }

    /// Inserts what a verified snapshot holds; entries that fail a check (expired, unreadable
    /// answer, a vector of the wrong size or not finite) are skipped.
    fn restore(&self, records: Vec<Record>) -> usize {
        let now = unix_now();
        let mut n = 0;
        let mut by_ns: HashMap<Namespace, Vec<(u64, Vec<f32>)>> = HashMap::new();
        {
            let mut inner = self.inner.write();
            for rec in records {
                if rec.expires_at <= now || inner.entries.len() >= self.settings.max_entries {
                    continue;
                }
                let Ok(answer) = serde_json::from_str::<StoredAnswer>(&rec.answer) else { continue };
                if rec.vector.as_ref().is_some_and(|v| v.len() != self.dim || v.iter().any(|x| !x.is_finite())) {
                    continue;
                }
                let id = inner.next_id;
                inner.next_id += 1;
                if let Some(v) = rec.vector {
                    by_ns.entry(rec.namespace).or_default().push((id, v));
                }
                inner.exact.insert(rec.exact, id);
                inner.entries.insert(
                    id,
                    Arc::new(super::Entry {
                        id,
                        namespace: rec.namespace,
                        exact: rec.exact,
                        question: rec.question,
                        answer: Arc::new(answer),
                        stored_at: rec.stored_at,
                        expires_at: rec.expires_at,
                        last_used: std::sync::atomic::AtomicU64::new(self.tick()),
                    }),
                );
                n += 1;
            }
            for (ns, items) in by_ns {
                let ix = if items.len() >= self.settings.hnsw_from {
                    VectorIndex::hnsw(&items, self.settings.hnsw)
                } else {
                    let mut ix = VectorIndex::flat(self.dim);
                    for (id, v) in &items {
                        ix.insert(*id, v);
                    }
                    ix
                };
                inner.indexes.insert(ns, ix);
            }
        }
        n
    }
}

/// Removes `<name>.tmp.*` beside `path`: what a process killed while writing a snapshot left.
fn remove_leftovers(path: &Path) {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let prefix = tmp_prefix(path);
    let Ok(list) = std::fs::read_dir(dir) else { return };
    for e in list.flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Reads and verifies a snapshot: nothing is returned unless the whole file checks out.
fn read_records(path: &Path) -> Result<Vec<Record>, SnapshotError> {
    let p = path.display().to_string();
    let io = |source| SnapshotError::Io { path: p.clone(), source };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(io(source)),
    };
    let size = file.metadata().map_err(io)?.len();
    read_records_from(file, size, &p)
}

/// [`read_records`] on any seekable source of `size` bytes (`p` names it in errors).
fn read_records_from<R: Read + Seek>(mut file: R, size: u64, p: &str) -> Result<Vec<Record>, SnapshotError> {
    let bad = |detail: String| SnapshotError::Format { path: p.to_string(), detail };
    let io = |source| SnapshotError::Io { path: p.to_string(), source };
    let mut magic = vec![0u8; MAGIC.len()];
    file.read_exact(&mut magic).map_err(|e| bad(format!("header: {e}")))?;
    if magic == MAGIC_V1 {
        // the old format has no checksum: decoded within the file's size, and whatever decodes
        // is checked entry by entry as for v2
        let body = size.saturating_sub(MAGIC_V1.len() as u64);
        return codec(body).deserialize_from(BufReader::new(file)).map_err(|e| bad(e.to_string()));
    }
    if magic != MAGIC {
        return Err(bad("bad header".into()));
    }
    let Some(body_len) = size.checked_sub((MAGIC.len() + TRAILER) as u64) else {
        return Err(bad(format!("truncated: {size} bytes")));
    };
    file.seek(SeekFrom::Start(size - TRAILER as u64)).map_err(io)?;
    let mut trailer = [0u8; TRAILER];
    file.read_exact(&mut trailer).map_err(io)?;
    let mut len = [0u8; 8];
    len.copy_from_slice(&trailer[..8]);
    let recorded = u64::from_le_bytes(len);
    if recorded != body_len {
        return Err(bad(format!("torn or truncated: the body is {body_len} bytes, the trailer says {recorded}")));
    }
    // checksum first, in one pass that allocates nothing: decoding garbage is never attempted
    file.seek(SeekFrom::Start(MAGIC.len() as u64)).map_err(io)?;
    let mut hashing = Hashing { inner: BufReader::new(&mut file).take(body_len), hasher: Sha256::new(), len: 0 };
    std::io::copy(&mut hashing, &mut std::io::sink()).map_err(io)?;
    if hashing.len != body_len || hashing.hasher.finalize()[..] != trailer[8..] {
        return Err(bad("checksum mismatch (the file was corrupted after it was written)".into()));
    }
    file.seek(SeekFrom::Start(MAGIC.len() as u64)).map_err(io)?;
    codec(body_len).deserialize_from(BufReader::new(file).take(body_len)).map_err(|e| bad(e.to_string()))
}

/// Where a snapshot found corrupt is moved, for inspection, so the next write does not destroy it.
fn quarantine_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".corrupt");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use crate::api::ChatRequest;

    #[test]
    fn snapshot_round_trip_with_flat_and_hnsw_namespaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.snap");
        let settings = CacheSettings { threshold: 0.99, hnsw_from: 50, ..Default::default() };
        let cache = SemanticCache::new(settings.clone(), 3);
        let mk = |q: &str, t: &str| {
            let req: ChatRequest =
                serde_json::from_value(serde_json::json!({"model": "m", "messages": [{"role": "user", "content": q}]}))
                    .unwrap();
            CacheKey::new(&req, t, "m").unwrap()
        };
        let answer: StoredAnswer = serde_json::from_value(serde_json::json!({
            "response": {"id": "x", "created": 1, "model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}], "custom": {"a": 1}},
            "tier": "cheap", "provider": "p", "cost": 0.25
        })).unwrap();
        for i in 0..120 {
            let a = i as f32 / 120.0;
            let v = [a.cos(), a.sin(), 0.0];
            cache.store(&mk(&format!("q{i}"), "big"), Some(&v), answer.clone());
        }
        cache.store(&mk("small", "small"), Some(&[0.0, 0.0, 1.0]), answer.clone());
        assert_eq!(cache.save_snapshot(&path).unwrap(), 121);

        let restored = SemanticCache::new(settings, 3);
        assert_eq!(restored.load_snapshot(&path).unwrap(), 121);
        let hit = restored
            .nearest(&mk("q7 again", "big"), &[(7f32 / 120.0).cos(), (7f32 / 120.0).sin(), 0.0], &Lookup::default())
            .unwrap();
        assert_eq!(hit.entry.question, "q7");
        assert_eq!(hit.entry.answer.response.extra["custom"]["a"], 1);
        assert!(restored.exact(&mk("small", "small"), &Lookup::default()).is_some());
        // garbage is refused with a clear error, not a panic
        std::fs::write(&path, b"nonsense").unwrap();
        assert!(restored.load_snapshot(&path).unwrap_err().to_string().contains("not a Switchyard"));
    }

    /// A cache of `n` entries in two namespaces, saved to `path`; returns the file's bytes.
    fn saved(path: &std::path::Path, n: usize) -> Vec<u8> {
        let cache = SemanticCache::new(CacheSettings { threshold: 0.99, hnsw_from: 10_000, ..Default::default() }, 3);
        let answer: StoredAnswer = serde_json::from_value(serde_json::json!({
            "response": {"id": "x", "created": 1, "model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "content": "an answer of some length"}, "finish_reason": "stop"}]},
            "tier": "cheap", "provider": "p", "cost": 0.25
        }))
        .unwrap();
        for i in 0..n {
            let req: ChatRequest = serde_json::from_value(
                serde_json::json!({"model": "m", "messages": [{"role": "user", "content": format!("question {i}")}]}),
            )
            .unwrap();
            let key = CacheKey::new(&req, if i % 2 == 0 { "a" } else { "b" }, "m").unwrap();
            let a = i as f32 / n as f32;
            cache.store(&key, Some(&[a.cos(), a.sin(), 0.0]), answer.clone());
        }
        assert_eq!(cache.save_snapshot(path).unwrap(), n);
        std::fs::read(path).unwrap()
    }

    fn load(path: &std::path::Path, bytes: &[u8]) -> (Result<usize, super::SnapshotError>, u64) {
        std::fs::write(path, bytes).unwrap();
        let cache = SemanticCache::new(CacheSettings::default(), 3);
        let r = cache.load_snapshot(path);
        (r, cache.stats().entries)
    }

    #[test]
    fn flipped_or_truncated_snapshots_restore_nothing_and_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.snap");
        let good = saved(&path, 60);
        assert_eq!(load(&path, &good).0.unwrap(), 60);
        // every byte of the header and trailer, and a stride through the body
        let mut positions: Vec<usize> = (0..64).chain(good.len() - 64..good.len()).collect();
        positions.extend((0..good.len()).step_by(good.len() / 97 + 1));
        for &pos in &positions {
            for run in [1, 64] {
                let mut bad = good.clone();
                for b in bad.iter_mut().skip(pos).take(run) {
                    *b ^= 0xA5;
                }
                let (r, entries) = load(&path, &bad);
                let e = r.expect_err(&format!("{run} byte(s) flipped at {pos} must be detected"));
                assert_eq!(entries, 0, "a corrupt snapshot restores nothing (flip at {pos})");
                assert!(e.to_string().contains("corrupt"), "{e}");
                assert!(path.with_file_name("cache.snap.corrupt").exists(), "the bad file is kept aside");
            }
        }
        for len in (0..good.len()).step_by(good.len() / 101 + 1).chain([good.len() - 1, good.len() - 40]) {
            let (r, entries) = load(&path, &good[..len]);
            assert!(r.is_err(), "a snapshot cut at {len} of {} bytes must be refused", good.len());
            assert_eq!(entries, 0);
        }
        // a temporary file left by a killed writer is cleaned up and does not matter
        std::fs::write(dir.path().join("cache.snap.tmp.999.0"), &good[..good.len() / 2]).unwrap();
        assert_eq!(load(&path, &good).0.unwrap(), 60);
        assert!(!dir.path().join("cache.snap.tmp.999.0").exists());
    }

    #[test]
    fn old_v1_snapshots_still_load_and_corrupt_ones_cannot_make_us_allocate_or_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.snap");
        let v2 = saved(&path, 60);
        // v1 was the magic line and the bare bincode body
        let body = &v2[super::MAGIC.len()..v2.len() - super::TRAILER];
        let v1: Vec<u8> = super::MAGIC_V1.iter().chain(body).copied().collect();
        assert_eq!(load(&path, &v1).0.unwrap(), 60);
        // the bug this guards against: 64 bytes flipped in the middle made bincode read a huge
        // length and abort with "capacity overflow"; now every length is bounded by the file
        for pos in (super::MAGIC_V1.len()..v1.len()).step_by(7) {
            let mut bad = v1.clone();
            for b in bad.iter_mut().skip(pos).take(64) {
                *b = !*b;
            }
            let _ = load(&path, &bad);
        }
        let mut huge = super::MAGIC_V1.to_vec();
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        huge.extend_from_slice(&[0xFF; 64]);
        assert!(load(&path, &huge).0.is_err());
    }
}
