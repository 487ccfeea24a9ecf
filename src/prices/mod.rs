//! The price catalog: list prices for the current models of the big providers, shipped inside
//! the binary (`catalog.toml`, each row with its source and date) so a gateway prices requests
//! without the operator copying numbers around. `[prices]` in the config overrides rows. A model
//! in neither is *unknown*: never priced as zero, because a zero would make budgets silently
//! unenforced and cost headers wrong.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config::Price;

const CATALOG: &str = include_str!("catalog.toml");

/// One row of the shipped catalog.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CatalogRow {
    pub provider: String,
    pub model: String,
    /// USD per million prompt tokens.
    pub input: f64,
    /// USD per million completion tokens.
    pub output: f64,
    /// An embedding model (`/v1/embeddings`): it bills input tokens only, `output` is 0.
    #[serde(default)]
    pub embedding: bool,
    /// USD per million prompt tokens read from the provider's prompt cache, where published.
    #[serde(default)]
    pub cached_input: Option<f64>,
    /// The provider's pricing page.
    pub source: String,
    /// When the row was checked (YYYY-MM-DD).
    pub date: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    model: Vec<CatalogRow>,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("price catalog: {0}")]
    Parse(String),
    #[error("price catalog: model {0:?} appears twice")]
    Duplicate(String),
}

/// The rows shipped with the binary. Checked by a unit test, so it cannot fail in a release.
pub fn shipped() -> Result<Vec<CatalogRow>, CatalogError> {
    let file: CatalogFile = toml::from_str(CATALOG).map_err(|e| CatalogError::Parse(e.to_string()))?;
    let mut seen = std::collections::BTreeSet::new();
    for r in &file.model {
        if !seen.insert(r.model.clone()) {
            return Err(CatalogError::Duplicate(r.model.clone()));
        }
    }
    Ok(file.model)
}

/// The prices a gateway uses: the shipped catalog, then the config's `[prices]` on top.
pub fn merged(overrides: &BTreeMap<String, Price>) -> BTreeMap<String, Price> {
    let mut out: BTreeMap<String, Price> = match shipped() {
        Ok(rows) => rows
            .into_iter()
            .map(|r| (r.model, Price { input: r.input, output: r.output, cached_input: r.cached_input }))
            .collect(),
        Err(e) => {
            tracing::error!(error = %e, "the shipped price catalog is unreadable; only [prices] is used");
            BTreeMap::new()
        }
    };
    out.extend(overrides.iter().map(|(k, v)| (k.clone(), *v)));
    out
}

/// A blended USD-per-million price used to compare two models' cost (three prompt tokens per
/// completion token, a typical chat mix). Only for ordering models, never for billing.
pub fn blended(p: &Price) -> f64 {
    (3.0 * p.input + p.output) / 4.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_catalog_parses_and_every_row_has_a_source_and_date() {
        let rows = shipped().unwrap();
        assert!(rows.len() >= 30, "{} rows", rows.len());
        for r in &rows {
            assert!(r.source.starts_with("https://"), "{}: source {:?}", r.model, r.source);
            let d: Vec<&str> = r.date.split('-').collect();
            assert!(
                d.len() == 3 && d[0].len() == 4 && d.iter().all(|p| p.parse::<u32>().is_ok()),
                "{}: date {:?}",
                r.model,
                r.date
            );
            if r.embedding {
                assert!(r.input > 0.0 && r.output == 0.0, "{}: an embedding model bills input only", r.model);
            } else {
                assert!(r.input > 0.0 && r.output > 0.0, "{}: zero price", r.model);
            }
            assert!(r.cached_input.is_none_or(|c| c < r.input), "{}: cached input not cheaper", r.model);
        }
        for provider in ["openai", "anthropic", "google", "mistral", "deepseek", "xai", "groq", "together"] {
            assert!(rows.iter().any(|r| r.provider == provider), "no row for {provider}");
        }
    }

    #[test]
    fn config_prices_override_the_catalog() {
        let mut o = BTreeMap::new();
        o.insert("gpt-4o".to_string(), Price { input: 1.0, output: 2.0, cached_input: None });
        o.insert("my-local-model".to_string(), Price { input: 0.0, output: 0.0, cached_input: None });
        let m = merged(&o);
        assert_eq!(m["gpt-4o"].input, 1.0);
        assert_eq!(m["gpt-4o-mini"].input, 0.15);
        assert!(m.contains_key("my-local-model"));
        assert!(!m.contains_key("no-such-model"));
    }
}
