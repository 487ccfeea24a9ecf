//! A per-namespace vector index: an exact flat scan while the namespace is small, an HNSW graph
//! (hnsw_rs) beyond `hnsw_from` entries. This is the only file that knows hnsw_rs.
//!
//! hnsw_rs cannot delete, so removed ids are tombstoned and skipped; the graph is rebuilt from
//! its live points when tombstones outnumber them.

use std::collections::HashSet;

use hnsw_rs::prelude::{Distance, Hnsw};

/// `1 − cos` for unit vectors, clamped at 0. hnsw_rs's own `DistDot` asserts `dot ≤ 1`, which
/// float rounding breaks for a vector compared with itself — a panic on the request path.
#[derive(Debug, Clone, Copy, Default)]
pub struct CosineDistance;

impl Distance<f32> for CosineDistance {
    fn eval(&self, va: &[f32], vb: &[f32]) -> f32 {
        (1.0 - dot(va, vb)).max(0.0)
    }
}

/// HNSW parameters, chosen by measurement (see `benches/index.rs` and README).
#[derive(Debug, Clone, Copy)]
pub struct HnswParams {
    pub m: usize,
    pub ef_construction: usize,
    pub ef_search: usize,
}

impl Default for HnswParams {
    fn default() -> Self {
        HnswParams { m: 16, ef_construction: 64, ef_search: 48 }
    }
}

pub enum VectorIndex {
    Flat { ids: Vec<u64>, data: Vec<f32>, dim: usize },
    Hnsw { graph: Box<Hnsw<'static, f32, CosineDistance>>, dead: HashSet<u64>, live: usize, params: HnswParams },
}

const LAYERS: usize = 16;

impl VectorIndex {
    pub fn flat(dim: usize) -> Self {
        VectorIndex::Flat { ids: Vec::new(), data: Vec::new(), dim }
    }

    /// An HNSW index over `items`, inserted in parallel.
    pub fn hnsw(items: &[(u64, Vec<f32>)], params: HnswParams) -> Self {
        let graph = Hnsw::<f32, CosineDistance>::new(
            params.m,
            items.len().max(1024),
            LAYERS,
            params.ef_construction,
            CosineDistance,
        );
        let refs: Vec<(&Vec<f32>, usize)> = items.iter().map(|(id, v)| (v, *id as usize)).collect();
        graph.parallel_insert(&refs);
        VectorIndex::Hnsw { graph: Box::new(graph), dead: HashSet::new(), live: items.len(), params }
    }

    pub fn len(&self) -> usize {
        match self {
            VectorIndex::Flat { ids, .. } => ids.len(),
            VectorIndex::Hnsw { live, .. } => *live,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_flat(&self) -> bool {
        matches!(self, VectorIndex::Flat { .. })
    }

    pub fn insert(&mut self, id: u64, vector: &[f32]) {
        match self {
            VectorIndex::Flat { ids, data, .. } => {
                ids.push(id);
                data.extend_from_slice(vector);
            }
            VectorIndex::Hnsw { graph, live, .. } => {
                graph.insert_slice((vector, id as usize));
                *live += 1;
            }
        }
    }

    pub fn remove(&mut self, id: u64) {
        match self {
            VectorIndex::Flat { ids, data, dim } => {
                if let Some(pos) = ids.iter().position(|&x| x == id) {
                    let last = ids.len() - 1;
                    ids.swap_remove(pos);
                    if pos != last {
                        let (head, tail) = data.split_at_mut(last * *dim);
                        head[pos * *dim..(pos + 1) * *dim].copy_from_slice(&tail[..*dim]);
                    }
                    data.truncate(last * *dim);
                }
            }
            VectorIndex::Hnsw { dead, live, .. } => {
                if dead.insert(id) {
                    *live = live.saturating_sub(1);
                }
            }
        }
    }

    /// Tombstones outnumber live points: worth rebuilding.
    pub fn needs_rebuild(&self) -> bool {
        match self {
            VectorIndex::Flat { .. } => false,
            VectorIndex::Hnsw { dead, live, .. } => dead.len() > 1024 && dead.len() > *live,
        }
    }

    /// Every live (id, vector).
    pub fn items(&self) -> Vec<(u64, Vec<f32>)> {
        match self {
            VectorIndex::Flat { ids, data, dim } => {
                ids.iter().enumerate().map(|(i, id)| (*id, data[i * dim..(i + 1) * dim].to_vec())).collect()
            }
            VectorIndex::Hnsw { graph, dead, .. } => graph
                .get_point_indexation()
                .into_iter()
                .map(|p| (p.get_origin_id() as u64, p.get_v().to_vec()))
                .filter(|(id, _)| !dead.contains(id))
                .collect(),
        }
    }

    /// Up to `k` nearest live ids with their cosine similarity, best first.
    pub fn search(&self, query: &[f32], k: usize) -> Vec<(u64, f32)> {
        match self {
            VectorIndex::Flat { ids, data, dim } => {
                let mut best: Vec<(u64, f32)> = Vec::with_capacity(k + 1);
                for (i, chunk) in data.chunks_exact(*dim).enumerate() {
                    let s = dot(chunk, query);
                    if best.len() < k || s > best[best.len() - 1].1 {
                        let pos = best.partition_point(|(_, b)| *b >= s);
                        best.insert(pos, (ids[i], s));
                        best.truncate(k);
                    }
                }
                best
            }
            VectorIndex::Hnsw { graph, dead, params, .. } => {
                // ask for a few more than k so tombstones do not starve the answer
                let want = k + dead.len().min(8);
                graph
                    .search(query, want, params.ef_search.max(want))
                    .into_iter()
                    .map(|n| (n.d_id as u64, 1.0 - n.distance))
                    .filter(|(id, _)| !dead.contains(id))
                    .take(k)
                    .collect()
            }
        }
    }
}

/// Dot product written so LLVM vectorises it (8 independent accumulators).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(seed: u64, dim: usize) -> Vec<f32> {
        let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let mut v: Vec<f32> = (0..dim)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((x >> 33) as f32 / (1u64 << 31) as f32) - 0.5
            })
            .collect();
        let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
        v.iter_mut().for_each(|a| *a /= n);
        v
    }

    #[test]
    fn flat_and_hnsw_agree_and_removal_works() {
        let dim = 32;
        let items: Vec<(u64, Vec<f32>)> = (0..2000).map(|i| (i, unit(i, dim))).collect();
        let mut flat = VectorIndex::flat(dim);
        for (id, v) in &items {
            flat.insert(*id, v);
        }
        let mut hnsw = VectorIndex::hnsw(&items, HnswParams::default());
        let mut agree = 0;
        for q in 0..100u64 {
            let query = unit(10_000 + q, dim);
            if flat.search(&query, 1)[0].0 == hnsw.search(&query, 1)[0].0 {
                agree += 1;
            }
        }
        assert!(agree >= 95, "recall@1 {agree}/100");
        // an item finds itself, and stops finding itself once removed
        let (id, v) = &items[7];
        assert_eq!(flat.search(v, 1)[0].0, *id);
        assert_eq!(hnsw.search(v, 1)[0].0, *id);
        flat.remove(*id);
        hnsw.remove(*id);
        assert_ne!(flat.search(v, 1)[0].0, *id);
        assert_ne!(hnsw.search(v, 1)[0].0, *id);
        assert_eq!(flat.len(), 1999);
        assert_eq!(hnsw.items().len(), 1999);
        // the flat index keeps ids and vectors aligned after swap_remove
        let (id2, v2) = &items[1999];
        let (got, sim) = flat.search(v2, 1)[0];
        assert_eq!(got, *id2);
        assert!((sim - 1.0).abs() < 1e-5);
    }
}
