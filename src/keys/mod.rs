//! The key file (`server.keys_file`): gateway keys declared by their SHA-256, each with a name
//! (the tenant) and its own limits, budgets and settings. The plain key exists only on the
//! client's side and once on the screen of whoever ran `switchyard keys new`; a leaked key file
//! reveals no key. The table is swapped whole on reload, so a request sees either the old file
//! or the new one, never half of each, and a bad file keeps the old table.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::RwLock;
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read key file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("key file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("key file {path}: {key}: {message}")]
    Invalid { path: PathBuf, key: String, message: String },
}

/// One key's settings, as written in the file (`[[keys]]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeyPolicy {
    /// The tenant: cache namespace, router share window, limits, logs and metrics all use it.
    pub name: String,
    /// Lowercase hex SHA-256 of the key.
    pub sha256: String,
    /// Models this key may ask for (the router alias, tier names or model names). Absent: all.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// Requests per minute.
    #[serde(default)]
    pub rpm: Option<u64>,
    /// Tokens (prompt + completion) per minute.
    #[serde(default)]
    pub tpm: Option<u64>,
    /// USD per UTC day.
    #[serde(default)]
    pub budget_day: Option<f64>,
    /// USD per UTC calendar month.
    #[serde(default)]
    pub budget_month: Option<f64>,
    /// The router's premium share for this key (its own score window).
    #[serde(default)]
    pub premium_share: Option<f32>,
    /// Semantic cache for this key's requests (default on).
    #[serde(default = "yes")]
    pub cache: bool,
}

fn yes() -> bool {
    true
}

impl KeyPolicy {
    /// Whether this key has any limit or budget to count.
    pub fn is_limited(&self) -> bool {
        self.rpm.is_some() || self.tpm.is_some() || self.budget_day.is_some() || self.budget_month.is_some()
    }

    /// Whether the key may ask for `model`. A key allowed the router alias may also dial it in
    /// the model name (`auto:0.1`, the same router at another share); no other name is read that
    /// way (`phi3:3.8` is a model of its own).
    pub fn allows_model(&self, model: &str, router_alias: &str) -> bool {
        let dialled = model.strip_prefix(router_alias).is_some_and(|rest| rest.starts_with(':'));
        self.models.as_ref().is_none_or(|m| m.iter().any(|x| x == model || (dialled && x == router_alias)))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    #[serde(default)]
    keys: Vec<KeyPolicy>,
}

/// key hash (hex) → policy.
pub type KeyTable = HashMap<String, Arc<KeyPolicy>>;

/// Lowercase hex SHA-256 of a presented key: how the file stores it and how it is looked up.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Parses and checks a key file's text; errors name the entry (`keys[2].rpm`).
pub fn parse(text: &str, path: &Path) -> Result<KeyTable, KeyFileError> {
    let file: KeyFile =
        toml::from_str(text).map_err(|e| KeyFileError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
    let bad = |i: usize, field: &str, message: &str| KeyFileError::Invalid {
        path: path.to_path_buf(),
        key: format!("keys[{i}].{field}"),
        message: message.to_string(),
    };
    let mut table = KeyTable::new();
    let mut names = std::collections::HashSet::new();
    for (i, k) in file.keys.into_iter().enumerate() {
        let name_ok = !k.name.is_empty()
            && k.name.len() <= 64
            && k.name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !name_ok {
            return Err(bad(i, "name", "must be 1-64 characters of letters, digits, '-', '_' or '.'"));
        }
        // a name that looks like a `server.gateway_keys` tenant id, or the no-auth tenant, would
        // share that tenant's cache namespace and router window
        if crate::config::is_tenant_id(&k.name) || k.name == "default" {
            return Err(bad(i, "name", "is reserved (`default` and `t-` + 12 hex digits name other tenants)"));
        }
        if !names.insert(k.name.clone()) {
            return Err(bad(i, "name", "is used by another key"));
        }
        if k.sha256.len() != 64 || !k.sha256.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad(i, "sha256", "must be 64 lowercase hex digits (`switchyard keys new` prints it)"));
        }
        if k.rpm == Some(0) || k.tpm == Some(0) {
            return Err(bad(i, if k.rpm == Some(0) { "rpm" } else { "tpm" }, "must be at least 1"));
        }
        for (field, v) in [("budget_day", k.budget_day), ("budget_month", k.budget_month)] {
            if v.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
                return Err(bad(i, field, "must be a non-negative number of USD"));
            }
        }
        if k.premium_share.is_some_and(|s| !(0.0..=1.0).contains(&s)) {
            return Err(bad(i, "premium_share", "must be between 0 and 1"));
        }
        let hash = k.sha256.clone();
        if table.insert(hash, Arc::new(k)).is_some() {
            return Err(bad(i, "sha256", "is the hash of another entry's key"));
        }
    }
    Ok(table)
}

pub fn load(path: &Path) -> Result<KeyTable, KeyFileError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| KeyFileError::Read { path: path.to_path_buf(), source })?;
    parse(&text, path)
}

/// The live key table and its file; reloads replace the table atomically.
pub struct KeyStore {
    path: PathBuf,
    table: RwLock<Arc<KeyTable>>,
    modified: RwLock<Option<SystemTime>>,
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
}

impl KeyStore {
    /// Loads the file; at start a bad file is an error (the gateway must not run open).
    pub fn open(path: &Path) -> Result<KeyStore, KeyFileError> {
        let table = load(path)?;
        Ok(KeyStore {
            path: path.to_path_buf(),
            table: RwLock::new(Arc::new(table)),
            modified: RwLock::new(mtime(path)),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
        })
    }

    /// The policy of a presented key, if the file has it.
    pub fn lookup(&self, presented: &str) -> Option<Arc<KeyPolicy>> {
        let hash = hash_key(presented);
        self.table.read().get(&hash).cloned()
    }

    pub fn table(&self) -> Arc<KeyTable> {
        self.table.read().clone()
    }

    /// Rereads the file. A bad file keeps the current table and says why.
    pub fn reload(&self, why: &str) -> bool {
        *self.modified.write() = mtime(&self.path);
        match load(&self.path) {
            Ok(t) => {
                let n = t.len();
                *self.table.write() = Arc::new(t);
                self.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(keys = n, trigger = why, "key file reloaded");
                true
            }
            Err(e) => {
                self.reload_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, trigger = why, "key file not reloaded; keeping the keys in use");
                false
            }
        }
    }

    /// Reloads when the file's modification time changed since the last (re)load.
    pub fn reload_if_changed(&self) {
        let now = mtime(&self.path);
        if now != *self.modified.read() {
            self.reload("file changed");
        }
    }
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Options of `switchyard keys new`.
#[derive(Debug, Default, Clone)]
pub struct NewKey {
    pub name: String,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub budget_day: Option<f64>,
    pub budget_month: Option<f64>,
}

/// A fresh key (`sy-` and 48 hex digits from the OS-seeded CSPRNG) and the TOML entry to append
/// to the key file. The key is returned once; only its hash is in the TOML.
pub fn new_key(opts: &NewKey) -> (String, String) {
    let mut bytes = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut bytes);
    let key = format!("sy-{}", hex::encode(bytes));
    let mut toml = format!("[[keys]]\nname = {:?}\nsha256 = \"{}\"\n", opts.name, hash_key(&key));
    if let Some(v) = opts.rpm {
        toml.push_str(&format!("rpm = {v}\n"));
    }
    if let Some(v) = opts.tpm {
        toml.push_str(&format!("tpm = {v}\n"));
    }
    if let Some(v) = opts.budget_day {
        toml.push_str(&format!("budget_day = {v:?}\n"));
    }
    if let Some(v) = opts.budget_month {
        toml.push_str(&format!("budget_month = {v:?}\n"));
    }
    (key, toml)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_round_trips_through_the_file() {
        let opts = NewKey { name: "team-a".into(), rpm: Some(60), budget_day: Some(5.0), ..NewKey::default() };
        let (key, toml) = new_key(&opts);
        assert!(key.starts_with("sy-") && key.len() == 51);
        assert!(!toml.contains(&key), "the key itself never goes in the file");
        let t = parse(&toml, Path::new("k.toml")).unwrap();
        let p = &t[&hash_key(&key)];
        assert_eq!((p.name.as_str(), p.rpm, p.budget_day, p.cache), ("team-a", Some(60), Some(5.0), true));
        assert_ne!(new_key(&opts).0, key);
    }

    #[test]
    fn a_key_allowed_the_router_may_dial_it_in_the_model_name_and_nothing_else() {
        let toml = format!("[[keys]]\nname = \"a\"\nsha256 = \"{}\"\nmodels = [\"auto\", \"phi3\"]", hash_key("x"));
        let t = parse(&toml, Path::new("k.toml")).unwrap();
        let p = &t[&hash_key("x")];
        for (model, ok) in [
            ("auto", true),
            ("auto:0.1", true),
            ("auto:bad", true),
            ("phi3", true),
            ("phi3:3.8", false),
            ("autox", false),
        ] {
            // `auto:bad` passes the key; the gateway refuses it with a 400 naming `model`
            assert_eq!(p.allows_model(model, "auto"), ok, "{model}");
        }
        assert!(!p.allows_model("router:0.1", "router"), "the alias is the gateway's, not a fixed word");
    }

    #[test]
    fn bad_entries_are_refused_naming_the_entry() {
        let h = hash_key("x");
        let cases = [
            (format!("[[keys]]\nname = \"a b\"\nsha256 = \"{h}\""), "keys[0].name"),
            (format!("[[keys]]\nname = \"t-0123456789ab\"\nsha256 = \"{h}\""), "keys[0].name"),
            ("[[keys]]\nname = \"a\"\nsha256 = \"xyz\"".to_string(), "keys[0].sha256"),
            (format!("[[keys]]\nname = \"a\"\nsha256 = \"{h}\"\nrpm = 0"), "keys[0].rpm"),
            (
                format!(
                    "[[keys]]\nname = \"a\"\nsha256 = \"{h}\"\n[[keys]]\nname = \"a\"\nsha256 = \"{}\"",
                    hash_key("y")
                ),
                "keys[1].name",
            ),
            (
                format!("[[keys]]\nname = \"a\"\nsha256 = \"{h}\"\n[[keys]]\nname = \"b\"\nsha256 = \"{h}\""),
                "keys[1].sha256",
            ),
            (format!("[[keys]]\nname = \"a\"\nsha256 = \"{h}\"\nbudget_day = -1.0"), "keys[0].budget_day"),
            (format!("[[keys]]\nname = \"a\"\nsha256 = \"{h}\"\nbogus = 1"), "bogus"),
        ];
        for (text, want) in cases {
            let e = parse(&text, Path::new("k.toml")).unwrap_err().to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
    }

    #[test]
    fn a_bad_reload_keeps_the_old_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        let (key, toml) = new_key(&NewKey { name: "a".into(), ..NewKey::default() });
        std::fs::write(&path, &toml).unwrap();
        let store = KeyStore::open(&path).unwrap();
        assert!(store.lookup(&key).is_some());
        assert!(store.lookup("sy-other").is_none());
        std::fs::write(&path, "[[keys]]\nname = ").unwrap();
        assert!(!store.reload("test"));
        assert!(store.lookup(&key).is_some(), "a bad file keeps the keys in use");
        let (key2, toml2) = new_key(&NewKey { name: "b".into(), ..NewKey::default() });
        std::fs::write(&path, toml2).unwrap();
        assert!(store.reload("test"));
        assert!(store.lookup(&key).is_none() && store.lookup(&key2).is_some());
    }
}
