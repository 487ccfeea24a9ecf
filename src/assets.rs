//! The model files the binary carries: MiniLM, the trained router and the cache rule.
//!
//! Why here and not `include_bytes!` in the library: every test binary links the library, and
//! 44 MB of weights in each of them would cost gigabytes of disk and link time. Only the
//! `switchyard` binary (src/main.rs) embeds the bytes and hands them over with [`install`]; the
//! library then falls back to them wherever a *default* path (`models/...`) does not exist on
//! disk, so a copied binary, `cargo install` or a container image runs with no source tree.
//! A path that is configured (not the default) always means the files at that path.

use std::path::Path;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

/// The bytes of the shipped model files, as compiled into a binary.
pub struct Bundle {
    /// `models/all-MiniLM-L6-v2/`: `config.json`, `tokenizer.json`, `model.safetensors` and
    /// the `SHA256SUMS` that lists them.
    pub model_config: &'static [u8],
    pub model_tokenizer: &'static [u8],
    pub model_weights: &'static [u8],
    pub model_sums: &'static str,
    /// `models/router/router.json`
    pub router: &'static [u8],
    /// `models/cache_rule.json`
    pub cache_rule: &'static [u8],
    /// `models/SHA256SUMS`: sums of `router/router.json` and `cache_rule.json`.
    pub sums: &'static str,
}

#[derive(Debug, thiserror::Error)]
#[error("embedded {name}: {detail} (the binary was built from files that do not match models/**/SHA256SUMS; update the sums with `sha256sum` after retraining and rebuild)")]
pub struct AssetError {
    pub name: String,
    pub detail: String,
}

static EMBEDDED: OnceLock<&'static Bundle> = OnceLock::new();

/// Verifies the bundle against its checksums and makes it the fallback for default paths.
/// A second call keeps the first bundle.
pub fn install(bundle: &'static Bundle) -> Result<(), AssetError> {
    bundle.verify()?;
    let _ = EMBEDDED.set(bundle);
    Ok(())
}

/// The installed bundle, if the running binary carries one.
pub fn embedded() -> Option<&'static Bundle> {
    EMBEDDED.get().copied()
}

/// Where a model file comes from.
pub enum Source<'a> {
    /// Files on disk, at this path.
    Disk(&'a Path),
    /// The bytes compiled into the binary.
    Embedded(&'static Bundle),
}

/// The source for `path`, whose built-in default is `default`: a configured path always means
/// disk; the default path means disk when it exists (a source checkout, a retrained router),
/// else the embedded copy when there is one, else disk (whose error then names the path).
pub fn resolve<'a>(path: &'a Path, default: &str) -> Source<'a> {
    if path != Path::new(default) || path.exists() {
        return Source::Disk(path);
    }
    match embedded() {
        Some(b) => Source::Embedded(b),
        None => Source::Disk(path),
    }
}

impl Bundle {
    /// Checks every file against the sum listed for it, and that every file has one.
    pub fn verify(&self) -> Result<(), AssetError> {
        let model = [
            ("config.json", self.model_config),
            ("tokenizer.json", self.model_tokenizer),
            ("model.safetensors", self.model_weights),
        ];
        check("all-MiniLM-L6-v2/", self.model_sums, &model)?;
        check("", self.sums, &[("router/router.json", self.router), ("cache_rule.json", self.cache_rule)])
    }
}

/// `sha256sum`-format `sums` must list each of `files`, with a matching digest.
pub fn check(prefix: &str, sums: &str, files: &[(&str, &[u8])]) -> Result<(), AssetError> {
    for (name, bytes) in files {
        let err = |detail: String| AssetError { name: format!("{prefix}{name}"), detail };
        let want = sums
            .lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                Some((it.next()?, it.next()?.trim_start_matches('*')))
            })
            .find(|(_, n)| n == name)
            .map(|(sum, _)| sum)
            .ok_or_else(|| err("no checksum listed".into()))?;
        let got = hex::encode(Sha256::digest(bytes));
        if got != want {
            return Err(err(format!("sha256 {got}, expected {want}")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The binary refuses to start when a shipped file and its sum disagree, so the repository
    /// must never hold such a pair (retrain → update `models/SHA256SUMS`).
    #[test]
    fn the_shipped_files_match_their_sums() {
        let read = |p: &str| std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("models").join(p)).unwrap();
        let sums = String::from_utf8(read("SHA256SUMS")).unwrap();
        check(
            "",
            &sums,
            &[("router/router.json", &read("router/router.json")), ("cache_rule.json", &read("cache_rule.json"))],
        )
        .unwrap();
        let model_sums = String::from_utf8(read("all-MiniLM-L6-v2/SHA256SUMS")).unwrap();
        check("", &model_sums, &[("config.json", &read("all-MiniLM-L6-v2/config.json"))]).unwrap();
        let e = check("", &sums, &[("cache_rule.json", b"{}")]).unwrap_err();
        assert!(e.to_string().contains("cache_rule.json") && e.to_string().contains("expected"), "{e}");
        let e = check("", &sums, &[("other.json", b"{}")]).unwrap_err();
        assert!(e.to_string().contains("no checksum"), "{e}");
    }
}
