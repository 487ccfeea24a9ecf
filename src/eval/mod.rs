//! Offline evaluation: the routing harness (`switchyard eval routing`) and the cache-quality
//! harness (`switchyard eval cache`), with what they share — an on-disk embedding store and plots.

pub mod cache;
pub mod embeddings;
pub mod plot;
pub mod routing;
