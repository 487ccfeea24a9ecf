//! Switchyard: an OpenAI-compatible LLM gateway with an in-process semantic cache and a
//! cost-saving router. See `DESIGN.md`-style overview in README.md; the request path reads top
//! to bottom in [`pipeline`].

pub mod api;
pub mod app;
pub mod assets;
pub mod bench;
pub mod cache;
pub mod classify;
pub mod config;
pub mod demo;
pub mod embed;
pub mod eval;
pub mod faults;
/// The fuzz harness (`examples/fuzz.rs`, `tests/fuzz.rs`); not part of the gateway's API.
#[doc(hidden)]
pub mod fuzz;
pub mod http;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod pipeline;
pub mod prices;
pub mod providers;
pub mod redis_link;
pub mod reqlog;
pub mod simd;
