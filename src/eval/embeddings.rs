//! Embeddings for offline evaluation and training, cached on disk by content hash so a rerun
//! embeds only what it has not seen.
//!
//! The store is one append-only file per model (`<dir>/<model sha>.bin`): records of
//! `sha256(text)` (32 bytes) followed by `dim` little-endian f32. A torn last record (a run killed
//! mid-write) is cut off on load, before anything is appended.

use std::collections::HashMap;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::embed::{EmbedError, Embedder};

pub struct EmbeddingStore {
    path: PathBuf,
    dim: usize,
    map: HashMap<[u8; 32], Vec<f32>>,
}

fn text_key(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

impl EmbeddingStore {
    /// Opens (or creates) the store for `model_id` under `dir`.
    pub fn open(dir: &Path, model_id: &str, dim: usize) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{model_id}.bin"));
        let mut map = HashMap::new();
        if let Ok(mut f) = std::fs::File::open(&path) {
            let mut bytes = Vec::new();
            f.read_to_end(&mut bytes)?;
            let rec = 32 + dim * 4;
            let whole = bytes.len() / rec * rec;
            if whole < bytes.len() {
                // a run killed mid-write left a torn record: cut it off, or every record
                // appended after it would be read out of step
                tracing::warn!(path = %path.display(), bytes = bytes.len() - whole, "dropping a torn record");
                std::fs::OpenOptions::new().write(true).open(&path)?.set_len(whole as u64)?;
            }
            for chunk in bytes[..whole].chunks_exact(rec) {
                let mut key = [0u8; 32];
                key.copy_from_slice(&chunk[..32]);
                let v = chunk[32..].chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
                map.insert(key, v);
            }
        }
        Ok(EmbeddingStore { path, dim, map })
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
        let mut missing: Vec<&str> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for t in texts {
            let k = text_key(t);
            if !self.map.contains_key(&k) && seen.insert(k) {
                missing.push(t);
            }
        }
        if !missing.is_empty() {
            // similar lengths together: padding is wasted work
            missing.sort_by_key(|t| t.len());
            let bar = ProgressBar::new(missing.len() as u64);
            bar.set_style(
                ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} texts ({per_sec}, eta {eta})")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_prefix(format!("embedding {label}"));
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(|e| EmbedError::Inference(e.to_string()))?;
            let mut w = BufWriter::new(file);
            for batch in missing.chunks(32) {
                let vectors = embedder.embed_batch(batch)?;
                for (t, v) in batch.iter().zip(vectors) {
                    let k = text_key(t);
                    let _ = w.write_all(&k);
                    for x in &v {
                        let _ = w.write_all(&x.to_le_bytes());
                    }
                    self.map.insert(k, v);
                }
                bar.inc(batch.len() as u64);
            }
            let _ = w.flush();
            bar.finish_and_clear();
        }
        Ok(texts.iter().map(|t| self.map.get(&text_key(t)).cloned().unwrap_or_else(|| vec![0.0; self.dim])).collect())
    }
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

    #[test]
    fn a_torn_record_is_cut_off_so_appends_stay_in_step() {
        let dir = tempfile::tempdir().unwrap();
        let dim = 4;
        let path = dir.path().join("m.bin");
        let mut bytes = Vec::new();
        for (text, x) in [("a", 1.0f32), ("b", 2.0)] {
            bytes.extend_from_slice(&text_key(text));
            for _ in 0..dim {
                bytes.extend_from_slice(&x.to_le_bytes());
            }
        }
        bytes.extend_from_slice(&text_key("torn")[..20]);
        std::fs::write(&path, &bytes).unwrap();
        let store = EmbeddingStore::open(dir.path(), "m", dim).unwrap();
        assert_eq!(store.len(), 2);
        assert_eq!(store.map[&text_key("b")], vec![2.0; dim]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 * (32 + 4 * dim as u64));
    }
}
