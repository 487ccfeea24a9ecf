//! Snapshot of the memory cache: our own format (a magic line, then bincode records), written to
//! a temporary file and renamed over the old one so a crash mid-write never leaves a torn file.
//! Indexes are rebuilt on restore (HNSW in parallel) rather than dumped: hnsw_rs's own reload
//! was not reliable in our tests, and rebuilding is what keeps the format independent of it.

use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{unix_now, ExactKey, Namespace, SemanticCache, StoredAnswer, VectorIndex};

const MAGIC: &[u8] = b"SWITCHYARD-CACHE-SNAPSHOT v1\n";

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

    /// Writes every live entry to `path` atomically. Returns the number written.
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
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        {
            let file = std::fs::File::create(&tmp).map_err(io)?;
            let mut w = BufWriter::new(file);
            w.write_all(MAGIC).map_err(io)?;
            bincode::serialize_into(&mut w, &records)
                .map_err(|e| SnapshotError::Format { path: path.display().to_string(), detail: e.to_string() })?;
            let file = w.into_inner().map_err(|e| io(e.into_error()))?;
            file.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(io)?;
        Ok(records.len())
    }

    /// Restores entries from `path` (expired ones are skipped). A missing file is not an error.
    pub fn load_snapshot(&self, path: &Path) -> Result<usize, SnapshotError> {
        let p = path.display().to_string();
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(source) => return Err(SnapshotError::Io { path: p, source }),
        };
        let mut r = BufReader::new(file);
        let mut magic = vec![0u8; MAGIC.len()];
        r.read_exact(&mut magic).map_err(|e| SnapshotError::Format { path: p.clone(), detail: e.to_string() })?;
        if magic != MAGIC {
            return Err(SnapshotError::Format { path: p, detail: "bad header".into() });
        }
        let records: Vec<Record> = bincode::deserialize_from(&mut r)
            .map_err(|e| SnapshotError::Format { path: p.clone(), detail: e.to_string() })?;
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
                if rec.vector.as_ref().is_some_and(|v| v.len() != self.dim) {
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
        Ok(n)
    }
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
}
