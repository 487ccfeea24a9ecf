//! Embeddings for offline evaluation and training, cached on disk by content hash so a rerun
//! embeds only what it has not seen.
//!
//! The store is one append-only file per model (`<dir>/<model sha>.v2.bin`): a header (magic line
//! and `dim`), then records of `sha256(text)` (32 bytes), `dim` little-endian f32 and a check
//! (the first 8 bytes of the SHA-256 of the key and the vector).
//!
//! Several runs (`eval cache` and `eval routing` at once) may share the file: every append takes
//! an exclusive lock on it (`flock`, through `File::lock`) and writes whole records in one write,
//! so records never interleave. The old format (no header, no check, appended through a buffered
//! writer without a lock) corrupted itself exactly that way — 8,630 of 75,445 vectors no longer
//! unit length and 268 NaN after two overlapping runs, read back without a word. Every record is
//! therefore checked when read (check bytes, finite, unit length within [`NORM_TOLERANCE`]) and a
//! bad one is dropped with a warning; it is embedded again when next needed. A file in the old
//! format is migrated once (its good records copied, the file renamed `*.bin.v1-migrated`). A
//! torn last record (a run killed mid-write) is cut off under the lock before anything is appended.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::embed::{EmbedError, Embedder};

const MAGIC: &[u8] = b"SWITCHYARD-EMBEDDINGS v2\n";
/// The magic line and `dim` (u32 LE).
const HEADER: usize = MAGIC.len() + 4;
const CHECK: usize = 8;
/// How far from 1 a stored vector's length may be: the model's outputs are L2-normalised (f32
/// rounding leaves them within 1e-6); anything further is damage.
pub const NORM_TOLERANCE: f32 = 1e-3;

pub struct EmbeddingStore {
    path: PathBuf,
    dim: usize,
    map: HashMap<[u8; 32], Vec<f32>>,
    dropped: usize,
}

fn text_key(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// A vector worth keeping: the right length, finite, unit length.
fn sound(v: &[f32], dim: usize) -> bool {
    v.len() == dim
        && v.iter().all(|x| x.is_finite())
        && (v.iter().map(|x| x * x).sum::<f32>().sqrt() - 1.0).abs() <= NORM_TOLERANCE
}

fn record_len(dim: usize) -> usize {
    32 + dim * 4 + CHECK
}

fn check(key: &[u8], vector_bytes: &[u8]) -> [u8; CHECK] {
    let mut h = Sha256::new();
    h.update(key);
    h.update(vector_bytes);
    let mut out = [0u8; CHECK];
    out.copy_from_slice(&h.finalize()[..CHECK]);
    out
}

fn encode(out: &mut Vec<u8>, key: &[u8; 32], v: &[f32]) {
    let start = out.len();
    out.extend_from_slice(key);
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
    let c = check(&out[start..start + 32], &out[start + 32..]);
    out.extend_from_slice(&c);
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

/// The file, locked exclusively until dropped (the lock is released on close, and by the kernel
/// if the process dies).
struct Locked(File);

impl Locked {
    fn open(path: &Path) -> std::io::Result<Self> {
        let f = OpenOptions::new().read(true).append(true).create(true).open(path)?;
        f.lock()?;
        Ok(Locked(f))
    }

    /// Cuts a torn last record (a writer killed mid-write) so appends stay in step. Returns the
    /// bytes dropped.
    fn cut_torn_tail(&self, dim: usize) -> std::io::Result<u64> {
        let len = self.0.metadata()?.len();
        let body = len.saturating_sub(HEADER as u64);
        let torn = body % record_len(dim) as u64;
        if torn > 0 {
            self.0.set_len(len - torn)?;
        }
        Ok(torn)
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

impl EmbeddingStore {
    /// Opens (or creates) the store for `model_id` under `dir`, migrating a store in the old
    /// format. Bad records are dropped (counted in [`EmbeddingStore::dropped`]) with a warning.
    pub fn open(dir: &Path, model_id: &str, dim: usize) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{model_id}.v2.bin"));
        let lock = Locked::open(&path)?;
        let mut store = EmbeddingStore { path, dim, map: HashMap::new(), dropped: 0 };
        let mut bytes = Vec::new();
        (&lock.0).seek(SeekFrom::Start(0))?;
        (&lock.0).read_to_end(&mut bytes)?;
        if bytes.is_empty() {
            let mut header = MAGIC.to_vec();
            header.extend_from_slice(&(dim as u32).to_le_bytes());
            (&lock.0).write_all(&header)?;
            store.migrate(&lock, &dir.join(format!("{model_id}.bin")))?;
            return Ok(store);
        }
        if bytes.len() < HEADER || !bytes.starts_with(MAGIC) || bytes[MAGIC.len()..HEADER] != (dim as u32).to_le_bytes()
        {
            // not ours, or for another dimension: keep it aside and start over
            let aside = store.path.with_extension("bin.corrupt");
            tracing::warn!(path = %store.path.display(), moved_to = %aside.display(), "embedding store has a bad header; starting a new one");
            std::fs::rename(&store.path, &aside)?;
            drop(lock);
            return Self::open(dir, model_id, dim);
        }
        let torn = lock.cut_torn_tail(dim)?;
        if torn > 0 {
            tracing::warn!(path = %store.path.display(), bytes = torn, "dropping a torn record");
        }
        drop(lock);
        let rec = record_len(dim);
        let body = &bytes[HEADER..];
        for chunk in body[..body.len() / rec * rec].chunks_exact(rec) {
            let (key, rest) = chunk.split_at(32);
            let (vector, c) = rest.split_at(dim * 4);
            let v = floats(vector);
            if c != check(key, vector) || !sound(&v, dim) {
                store.dropped += 1;
                continue;
            }
            let mut k = [0u8; 32];
            k.copy_from_slice(key);
            store.map.insert(k, v);
        }
        if store.dropped > 0 {
            tracing::warn!(
                path = %store.path.display(),
                dropped = store.dropped,
                kept = store.map.len(),
                "embedding store: dropped damaged records (bad check, non-finite or not unit length); they will be embedded again"
            );
        }
        Ok(store)
    }

    /// Copies the good records of an old-format store (`32-byte key + dim f32`, no check) into
    /// this one, then renames the old file so it is migrated once.
    fn migrate(&mut self, lock: &Locked, legacy: &Path) -> std::io::Result<()> {
        let Ok(bytes) = std::fs::read(legacy) else { return Ok(()) };
        let rec = 32 + self.dim * 4;
        let mut out = Vec::new();
        let mut bad = 0usize;
        for chunk in bytes.chunks_exact(rec) {
            let v = floats(&chunk[32..]);
            if !sound(&v, self.dim) {
                bad += 1;
                continue;
            }
            let mut k = [0u8; 32];
            k.copy_from_slice(&chunk[..32]);
            encode(&mut out, &k, &v);
            self.map.insert(k, v);
        }
        (&lock.0).write_all(&out)?;
        let mut done = legacy.as_os_str().to_owned();
        done.push(".v1-migrated");
        std::fs::rename(legacy, &done)?;
        tracing::warn!(
            from = %legacy.display(),
            kept = self.map.len(),
            dropped = bad,
            torn_bytes = bytes.len() % rec,
            "embedding store migrated to the checked format"
        );
        self.dropped += bad;
        Ok(())
    }

    /// Appends records, whole, in one write under the file lock.
    fn append(&self, records: &[([u8; 32], &[f32])]) -> std::io::Result<()> {
        let mut out = Vec::with_capacity(records.len() * record_len(self.dim));
        for (k, v) in records {
            encode(&mut out, k, v);
        }
        let lock = Locked::open(&self.path)?;
        lock.cut_torn_tail(self.dim)?;
        (&lock.0).write_all(&out)
    }

    /// Stores freshly embedded vectors (on disk and in memory); one that is not sound (the
    /// embedder's bug, or damage in flight) is kept in memory only, with a warning.
    fn keep(&mut self, keys: &[[u8; 32]], vectors: Vec<Vec<f32>>) -> Result<(), EmbedError> {
        let records: Vec<([u8; 32], &[f32])> =
            keys.iter().zip(&vectors).filter(|(_, v)| sound(v, self.dim)).map(|(k, v)| (*k, v.as_slice())).collect();
        let unsound = keys.len() - records.len();
        self.append(&records).map_err(|e| EmbedError::Inference(format!("embedding store: {e}")))?;
        if unsound > 0 {
            tracing::warn!(count = unsound, "the embedder returned vectors that are not unit length; not stored");
        }
        for (k, v) in keys.iter().zip(vectors) {
            self.map.insert(*k, v);
        }
        Ok(())
    }

    /// Records dropped as damaged when the store was opened.
    pub fn dropped(&self) -> usize {
        self.dropped
    }

    /// Every stored vector (for benchmarks that want realistic vectors), in a fixed order (by
    /// text hash) so that runs over them repeat.
    pub fn vectors(&self) -> impl Iterator<Item = &Vec<f32>> {
        let mut entries: Vec<(&[u8; 32], &Vec<f32>)> = self.map.iter().collect();
        entries.sort_unstable_by_key(|(k, _)| *k);
        entries.into_iter().map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Vectors for `texts`, in order, embedding (with a progress bar) only the ones not stored.
    pub fn embed_all(
        &mut self,
        embedder: &Arc<dyn Embedder>,
        texts: &[String],
        label: &str,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let missing = missing(texts, |k| !self.map.contains_key(k));
        if !missing.is_empty() {
            let bar = progress(missing.len(), label);
            for batch in missing.chunks(32) {
                let vectors = embedder.embed_batch(batch)?;
                let keys: Vec<[u8; 32]> = batch.iter().map(|t| text_key(t)).collect();
                self.keep(&keys, vectors)?;
                bar.inc(batch.len() as u64);
            }
            bar.finish_and_clear();
        }
        Ok(texts.iter().map(|t| self.map.get(&text_key(t)).cloned().unwrap_or_else(|| vec![0.0; self.dim])).collect())
    }
}

/// The router's inputs for offline training and evaluation: the cache's vectors and the two
/// earlier views of the same forward pass ([`crate::embed::Embedded`]), in three stores of one
/// view each (`<model>`, `<model>-embeddings`, `<model>-layer3`) so each keeps the unit-length
/// check. A text any of them lacks is embedded once and written to all three.
pub struct RouterStore {
    stores: [EmbeddingStore; 3],
}

impl RouterStore {
    pub fn open(dir: &Path, model_id: &str, dim: usize) -> std::io::Result<Self> {
        let open = |suffix: &str| EmbeddingStore::open(dir, &format!("{model_id}{suffix}"), dim);
        Ok(RouterStore { stores: [open("")?, open("-embeddings")?, open("-layer3")?] })
    }

    /// [`crate::embed::Embedded::router_input`] for each text, in order; the vector alone (and
    /// nothing stored for the views) from an engine without them.
    pub fn embed_all(
        &mut self,
        embedder: &Arc<dyn Embedder>,
        texts: &[String],
        label: &str,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let missing = missing(texts, |k| self.stores.iter().any(|s| !s.map.contains_key(k)));
        if !missing.is_empty() {
            let bar = progress(missing.len(), label);
            for batch in missing.chunks(32) {
                let full = embedder.embed_batch_full(batch)?;
                let (mut keys, mut last) = (Vec::new(), Vec::new());
                let (mut viewed, mut embedded, mut early) = (Vec::new(), Vec::new(), Vec::new());
                for (t, e) in batch.iter().zip(full) {
                    let k = text_key(t);
                    if let Some([a, b]) = e.views {
                        viewed.push(k);
                        embedded.push(a);
                        early.push(b);
                    }
                    keys.push(k);
                    last.push(e.vector);
                }
                for (store, (keys, vectors)) in
                    self.stores.iter_mut().zip([(keys, last), (viewed.clone(), embedded), (viewed, early)])
                {
                    // each store only what it lacks (a text missing from one may be in the others)
                    let (keys, vectors): (Vec<_>, Vec<_>) =
                        keys.into_iter().zip(vectors).filter(|(k, _)| !store.map.contains_key(k)).unzip();
                    store.keep(&keys, vectors)?;
                }
                bar.inc(batch.len() as u64);
            }
            bar.finish_and_clear();
        }
        Ok(texts
            .iter()
            .map(|t| {
                let k = text_key(t);
                let mut x = self.stores[0].map.get(&k).cloned().unwrap_or_else(|| vec![0.0; self.stores[0].dim]);
                if let (Some(a), Some(b)) = (self.stores[1].map.get(&k), self.stores[2].map.get(&k)) {
                    x.extend_from_slice(a);
                    x.extend_from_slice(b);
                }
                x
            })
            .collect())
    }
}

/// The distinct texts `lacks` says are not stored, shortest first (similar lengths together:
/// padding is wasted work).
fn missing(texts: &[String], lacks: impl Fn(&[u8; 32]) -> bool) -> Vec<&str> {
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<&str> = texts
        .iter()
        .filter(|t| {
            let k = text_key(t);
            lacks(&k) && seen.insert(k)
        })
        .map(String::as_str)
        .collect();
    out.sort_by_key(|t| t.len());
    out
}

fn progress(n: usize, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(n as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} texts ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("embedding {label}"));
    bar
}

/// A short identifier of the model's weights (from its SHA256SUMS), so cached vectors never
/// outlive a model change.
pub fn model_id(model_dir: &Path) -> String {
    let sums = std::fs::read_to_string(model_dir.join("SHA256SUMS")).unwrap_or_default();
    let line = sums.lines().find(|l| l.contains("model.safetensors")).unwrap_or("unknown");
    format!("minilm-{}", &hex::encode(Sha256::digest(line.as_bytes()))[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MiniLM's size: records of 1,576 bytes, a 32-text batch of 50 KB, written by the old
    /// buffered writer in 8 KiB pieces that split records.
    const DIM: usize = 384;

    /// A deterministic unit vector per text.
    struct Fake;

    impl Embedder for Fake {
        fn dim(&self) -> usize {
            DIM
        }
        fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
            // as a model would, take a while: the writers' appends then fall at random phases
            std::thread::sleep(std::time::Duration::from_micros(300));
            Ok(texts.iter().map(|t| unit(t)).collect())
        }
        fn count_tokens(&self, text: &str) -> usize {
            text.len()
        }
    }

    fn unit(t: &str) -> Vec<f32> {
        let h = text_key(t);
        let v: Vec<f32> = (0..DIM).map(|i| h[i % 32] as f32 + i as f32 + 1.0).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect()
    }

    fn texts(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix} text {i}")).collect()
    }

    /// Counts the texts it embeds; gives views (as the fast engine does) or not (candle).
    struct Viewing {
        views: bool,
        embedded: std::sync::atomic::AtomicUsize,
    }

    impl Embedder for Viewing {
        fn dim(&self) -> usize {
            DIM
        }
        fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
            Ok(self.embed_batch_full(texts)?.into_iter().map(|e| e.vector).collect())
        }
        fn embed_batch_full(&self, texts: &[&str]) -> Result<Vec<crate::embed::Embedded>, EmbedError> {
            self.embedded.fetch_add(texts.len(), std::sync::atomic::Ordering::Relaxed);
            Ok(texts
                .iter()
                .map(|t| crate::embed::Embedded {
                    vector: unit(t),
                    views: self.views.then(|| [unit(&format!("{t} early")), unit(&format!("{t} middle"))]),
                })
                .collect())
        }
        fn count_tokens(&self, text: &str) -> usize {
            text.len()
        }
    }

    #[test]
    fn the_router_store_keeps_each_view_and_embeds_a_text_once() {
        let dir = tempfile::tempdir().unwrap();
        let fake = Arc::new(Viewing { views: true, embedded: Default::default() });
        let embedder: Arc<dyn Embedder> = fake.clone();
        let ts = texts("r", 40);
        // a text the cache's store already has (from `eval cache`, say) is embedded once more
        // for its views, and not appended to the cache's store again
        EmbeddingStore::open(dir.path(), "m", DIM).unwrap().embed_all(&embedder, &ts[..10], "x").unwrap();
        let mut store = RouterStore::open(dir.path(), "m", DIM).unwrap();
        let got = store.embed_all(&embedder, &ts, "x").unwrap();
        assert_eq!(got[3], [unit("r text 3"), unit("r text 3 early"), unit("r text 3 middle")].concat());
        assert_eq!(fake.embedded.load(std::sync::atomic::Ordering::Relaxed), 10 + 40);
        let again = RouterStore::open(dir.path(), "m", DIM).unwrap().embed_all(&embedder, &ts, "x").unwrap();
        assert_eq!(again, got);
        assert_eq!(fake.embedded.load(std::sync::atomic::Ordering::Relaxed), 50, "nothing embedded again");
        let bytes = std::fs::metadata(dir.path().join("m.v2.bin")).unwrap().len() as usize;
        assert_eq!(bytes, HEADER + 40 * record_len(DIM), "each text once in the cache's store");

        // an engine without views: the vector alone, and nothing stored for the views
        let plain: Arc<dyn Embedder> = Arc::new(Viewing { views: false, embedded: Default::default() });
        let other = tempfile::tempdir().unwrap();
        let got = RouterStore::open(other.path(), "m", DIM).unwrap().embed_all(&plain, &ts[..2], "x").unwrap();
        assert_eq!(got[0], unit("r text 0"));
        assert_eq!(RouterStore::open(other.path(), "m", DIM).unwrap().stores[1].len(), 0);
    }

    #[test]
    fn two_concurrent_writers_leave_every_record_whole() {
        let dir = tempfile::tempdir().unwrap();
        let embedder: Arc<dyn Embedder> = Arc::new(Fake);
        let who = ["one", "two", "three"];
        let start = Arc::new(std::sync::Barrier::new(who.len()));
        let writers: Vec<_> = who
            .into_iter()
            .map(|who| {
                let (dir, embedder, start) = (dir.path().to_path_buf(), embedder.clone(), start.clone());
                std::thread::spawn(move || {
                    let mut store = EmbeddingStore::open(&dir, "m", DIM).unwrap();
                    start.wait();
                    for round in 0..20 {
                        store.embed_all(&embedder, &texts(&format!("{who} {round}"), 64), who).unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let store = EmbeddingStore::open(dir.path(), "m", DIM).unwrap();
        assert_eq!(store.dropped(), 0, "no record may be damaged by a concurrent append");
        assert_eq!(store.len(), 3 * 20 * 64);
        for who in ["one", "two", "three"] {
            for t in texts(&format!("{who} 7"), 64) {
                assert_eq!(store.map[&text_key(&t)], unit(&t));
            }
        }
    }

    #[test]
    fn damaged_records_are_dropped_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let embedder: Arc<dyn Embedder> = Arc::new(Fake);
        let mut store = EmbeddingStore::open(dir.path(), "m", DIM).unwrap();
        store.embed_all(&embedder, &texts("a", 10), "a").unwrap();
        let path = dir.path().join("m.v2.bin");
        let mut bytes = std::fs::read(&path).unwrap();
        let rec = record_len(DIM);
        // record 1: a flipped vector byte (check fails); record 2: NaN with a valid check;
        // record 3: not unit length with a valid check; then a torn record
        bytes[HEADER + rec + 40] ^= 1;
        let mut nan = Vec::new();
        let mut v = vec![0.0; DIM];
        v[0] = f32::NAN;
        encode(&mut nan, &text_key("a text 2"), &v);
        bytes[HEADER + 2 * rec..HEADER + 3 * rec].copy_from_slice(&nan);
        let mut long = Vec::new();
        v[0] = 2.0;
        encode(&mut long, &text_key("a text 3"), &v);
        bytes[HEADER + 3 * rec..HEADER + 4 * rec].copy_from_slice(&long);
        bytes.extend_from_slice(&[7u8; 20]);
        std::fs::write(&path, &bytes).unwrap();

        let mut store = EmbeddingStore::open(dir.path(), "m", DIM).unwrap();
        assert_eq!((store.len(), store.dropped()), (7, 3));
        assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, HEADER + 10 * rec, "torn tail cut");
        // the dropped ones are embedded again and appended in step
        let got = store.embed_all(&embedder, &texts("a", 10), "a").unwrap();
        assert_eq!(got[2], unit("a text 2"));
        let store = EmbeddingStore::open(dir.path(), "m", DIM).unwrap();
        assert_eq!(store.len(), 10);
    }

    #[test]
    fn an_old_format_store_is_migrated_without_its_bad_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = Vec::new();
        for (text, v) in [("a", unit("a")), ("b", vec![f32::NAN; DIM]), ("c", vec![0.3; DIM]), ("d", unit("d"))] {
            bytes.extend_from_slice(&text_key(text));
            for x in v {
                bytes.extend_from_slice(&x.to_le_bytes());
            }
        }
        bytes.extend_from_slice(&text_key("torn")[..20]);
        std::fs::write(dir.path().join("m.bin"), &bytes).unwrap();
        let store = EmbeddingStore::open(dir.path(), "m", DIM).unwrap();
        assert_eq!((store.len(), store.dropped()), (2, 2));
        assert!(dir.path().join("m.bin.v1-migrated").exists() && !dir.path().join("m.bin").exists());
        let store = EmbeddingStore::open(dir.path(), "m", DIM).unwrap();
        assert_eq!((store.len(), store.dropped()), (2, 0));
        assert_eq!(store.map[&text_key("d")], unit("d"));
    }
}
