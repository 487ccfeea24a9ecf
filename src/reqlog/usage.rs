//! Usage totals by key, model and UTC day: folded live from every request (`GET /admin/usage`)
//! or from a log file afterwards (`switchyard usage`). The same fold, so both agree.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;

use parking_lot::Mutex;
use serde::Serialize;

use super::Record;

/// How rows are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    /// key, model and day
    All,
    Key,
    Model,
    Day,
}

impl std::str::FromStr for By {
    type Err = String;
    fn from_str(s: &str) -> Result<By, String> {
        match s {
            "all" => Ok(By::All),
            "key" => Ok(By::Key),
            "model" => Ok(By::Model),
            "day" => Ok(By::Day),
            _ => Err(format!("unknown grouping {s:?} (use all, key, model or day)")),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Row {
    pub key: String,
    pub model: String,
    pub day: String,
    pub requests: u64,
    pub errors: u64,
    pub cache_hits: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// USD of priced requests.
    pub cost: f64,
    pub cost_saved: f64,
    /// Answered requests whose model has no known price (their cost is not in `cost`).
    pub unpriced: u64,
    pub hit_rate: f64,
}

impl Row {
    fn add(&mut self, r: &Record) {
        self.requests += 1;
        if r.status >= 400 {
            self.errors += 1;
        }
        if r.cache == "hit" {
            self.cache_hits += 1;
        }
        self.prompt_tokens += r.prompt_tokens;
        self.completion_tokens += r.completion_tokens;
        match r.cost {
            Some(c) => self.cost += c,
            None if r.status < 400 && r.cache != "hit" => self.unpriced += 1,
            None => {}
        }
        self.cost_saved += r.cost_saved.unwrap_or(0.0);
        self.hit_rate = self.cache_hits as f64 / self.requests as f64;
    }

    fn merge(&mut self, o: &Row) {
        self.requests += o.requests;
        self.errors += o.errors;
        self.cache_hits += o.cache_hits;
        self.prompt_tokens += o.prompt_tokens;
        self.completion_tokens += o.completion_tokens;
        self.cost += o.cost;
        self.cost_saved += o.cost_saved;
        self.unpriced += o.unpriced;
        self.hit_rate = if self.requests == 0 { 0.0 } else { self.cache_hits as f64 / self.requests as f64 };
    }
}

/// Totals by (key, model, day).
#[derive(Default)]
pub struct UsageBook {
    rows: Mutex<BTreeMap<(String, String, String), Row>>,
}

impl UsageBook {
    pub fn add(&self, r: &Record) {
        let k = (r.key.clone(), r.answering_model().to_string(), r.day().to_string());
        let mut rows = self.rows.lock();
        let row = rows.entry(k).or_insert_with(|| Row {
            key: r.key.clone(),
            model: r.answering_model().to_string(),
            day: r.day().to_string(),
            ..Row::default()
        });
        row.add(r);
    }

    /// Rows grouped `by`, sorted by key, model, day.
    pub fn summary(&self, by: By) -> Vec<Row> {
        let rows = self.rows.lock();
        let mut out: BTreeMap<(String, String, String), Row> = BTreeMap::new();
        for ((k, m, d), row) in rows.iter() {
            let key = match by {
                By::All => (k.clone(), m.clone(), d.clone()),
                By::Key => (k.clone(), String::new(), String::new()),
                By::Model => (String::new(), m.clone(), String::new()),
                By::Day => (String::new(), String::new(), d.clone()),
            };
            let e = out.entry(key.clone()).or_insert_with(|| Row {
                key: key.0.clone(),
                model: key.1.clone(),
                day: key.2.clone(),
                ..Row::default()
            });
            e.merge(row);
        }
        out.into_values().collect()
    }

    /// Folds a log file; returns the lines that were not records (skipped).
    pub fn read_file(&self, path: &Path) -> std::io::Result<u64> {
        let f = std::fs::File::open(path)?;
        let mut bad = 0;
        for line in std::io::BufReader::new(f).lines() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Record>(&line) {
                Ok(r) => self.add(&r),
                Err(_) => bad += 1,
            }
        }
        Ok(bad)
    }
}

/// A fixed-width text table.
pub fn table(rows: &[Row], by: By) -> String {
    let mut out = String::new();
    let (k, m, d) = match by {
        By::All => (true, true, true),
        By::Key => (true, false, false),
        By::Model => (false, true, false),
        By::Day => (false, false, true),
    };
    let mut head = String::new();
    if k {
        head.push_str(&format!("{:<20} ", "key"));
    }
    if m {
        head.push_str(&format!("{:<28} ", "model"));
    }
    if d {
        head.push_str(&format!("{:<10} ", "day"));
    }
    head.push_str(&format!(
        "{:>9} {:>7} {:>12} {:>12} {:>12} {:>12} {:>8} {:>9}",
        "requests", "errors", "prompt_tok", "compl_tok", "cost_usd", "saved_usd", "hit_rate", "unpriced"
    ));
    out.push_str(head.trim_end());
    out.push('\n');
    let mut total = Row::default();
    for r in rows {
        total.merge(r);
        let mut line = String::new();
        if k {
            line.push_str(&format!("{:<20} ", r.key));
        }
        if m {
            line.push_str(&format!("{:<28} ", r.model));
        }
        if d {
            line.push_str(&format!("{:<10} ", r.day));
        }
        line.push_str(&format!(
            "{:>9} {:>7} {:>12} {:>12} {:>12.6} {:>12.6} {:>7.1}% {:>9}",
            r.requests,
            r.errors,
            r.prompt_tokens,
            r.completion_tokens,
            r.cost,
            r.cost_saved,
            r.hit_rate * 100.0,
            r.unpriced
        ));
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str(&format!(
        "total: {} requests, {} tokens, USD {:.6} spent, USD {:.6} saved, hit rate {:.1}%\n",
        total.requests,
        total.prompt_tokens + total.completion_tokens,
        total.cost,
        total.cost_saved,
        total.hit_rate * 100.0
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str, model: &str, day: &str, cache: &str, cost: Option<f64>) -> Record {
        Record {
            time: format!("{day}T10:00:00Z"),
            key: key.into(),
            model: "auto".into(),
            deployment: Some(format!("p:{model}")),
            cache: cache.into(),
            prompt_tokens: 10,
            completion_tokens: 20,
            cost,
            cost_saved: Some(if cache == "hit" { 0.5 } else { 0.0 }),
            status: 200,
            ..Record::default()
        }
    }

    #[test]
    fn totals_by_key_model_and_day() {
        let b = UsageBook::default();
        b.add(&rec("a", "mini", "2026-12-01", "miss", Some(1.0)));
        b.add(&rec("a", "mini", "2026-12-01", "hit", Some(0.0)));
        b.add(&rec("a", "large", "2026-12-02", "miss", None));
        b.add(&rec("b", "mini", "2026-12-02", "miss", Some(2.0)));
        let all = b.summary(By::All);
        assert_eq!(all.len(), 3);
        let a_mini = &all[1];
        assert_eq!((a_mini.key.as_str(), a_mini.model.as_str(), a_mini.requests), ("a", "mini", 2));
        assert_eq!((a_mini.cost, a_mini.cost_saved, a_mini.hit_rate), (1.0, 0.5, 0.5));
        let keys = b.summary(By::Key);
        assert_eq!(
            keys.iter().map(|r| (r.key.as_str(), r.requests, r.unpriced)).collect::<Vec<_>>(),
            [("a", 3, 1), ("b", 1, 0)]
        );
        let days = b.summary(By::Day);
        assert_eq!(days.iter().map(|r| r.requests).collect::<Vec<_>>(), [2, 2]);
        let t = table(&keys, By::Key);
        assert!(t.contains("total: 4 requests, 120 tokens, USD 3.000000 spent"), "{t}");
    }
}
