//! The `switchyard` command line. Everything real lives in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use switchyard::{app, classify, config::Config, embed::cosine};

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "An OpenAI-compatible LLM gateway with a semantic cache and a cost-saving router"
)]
struct Cli {
    /// How logs are written to standard error: `text` for people, `json` (one object a line, the
    /// request's id on each line written while serving it) for log collectors. Default: the
    /// `SWITCHYARD_LOG_FORMAT` environment variable, else text.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Installs the log subscriber (`RUST_LOG` filters it, `info` by default) in the chosen format.
fn init_logging(flag: Option<LogFormat>) -> anyhow::Result<LogFormat> {
    // set but empty (a template that left it blank) counts as unset
    let from_env = std::env::var("SWITCHYARD_LOG_FORMAT").ok().filter(|v| !v.trim().is_empty());
    let format = match (flag, from_env) {
        (Some(f), _) => f,
        (None, Some(v)) => <LogFormat as clap::ValueEnum>::from_str(v.trim(), true)
            .map_err(|_| anyhow::anyhow!("SWITCHYARD_LOG_FORMAT={v:?}: expected text or json"))?,
        (None, None) => LogFormat::Text,
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.init(),
        // the event's fields at the top level, and the span it was logged in (`request`, with
        // its `request_id`) as `span`: what collectors index without a parsing rule
        LogFormat::Json => logs.json().flatten_event(true).with_current_span(true).with_span_list(false).init(),
    }
    Ok(format)
}

#[derive(Subcommand)]
enum Command {
    /// Serve the OpenAI-compatible API.
    Serve {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Two simulated upstream tiers on loopback; no keys needed.
        #[arg(long)]
        demo: bool,
        /// Latency of the simulated upstreams, in milliseconds.
        #[arg(long, default_value_t = 300)]
        demo_latency_ms: u64,
    },
    /// Read and check everything `serve` would (config and its secrets, key file, Redis CA,
    /// router, cache rule) without serving, and print what it would run with; exits 1 on the
    /// first problem, naming it. For a deploy pipeline, before the new config goes out.
    Check {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Embed a text and print a summary of its vector.
    Embed {
        text: String,
        #[arg(long)]
        config: Option<PathBuf>,
        /// Embed the text this many times and print latency percentiles.
        #[arg(long, default_value_t = 1)]
        repeat: usize,
    },
    /// Cache-hit benchmark: replay a realistic workload against a running gateway.
    Bench {
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        target: String,
        /// `default`, or key=value pairs: repeat, paraphrase, near_miss, novel (shares), zipf, seed
        #[arg(long, default_value = "default")]
        workload: String,
        #[arg(long, default_value_t = 2000)]
        requests: usize,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        #[arg(long, default_value = "var/bench")]
        out: PathBuf,
        /// Labelled pairs the workload is built from
        #[arg(long, default_value = "eval/data/qqp_pairs_dev.jsonl")]
        pairs: PathBuf,
        #[arg(long, default_value = "auto")]
        model: String,
        /// Gateway key, if the gateway requires one
        #[arg(long)]
        key: Option<String>,
        /// Premium model price, USD per million input,output tokens (for the always-premium comparison)
        #[arg(long, default_value = "2.5,10")]
        premium_price: String,
    },
    /// Fault soak: mixed traffic through an in-process gateway whose tiers each have a
    /// fault-injecting upstream before a healthy one; prints the figures, fails on a broken contract.
    Soak {
        /// Minutes of traffic, warm-up (a fifth, at most one minute) included.
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Also write the report as JSON here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Overload run: measures the semantic-path capacity of an in-process gateway on the demo
    /// upstreams, then offers it `multiplier` times that; prints the figures, fails if not held.
    Overload {
        /// Seconds of each phase (capacity, then overload).
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        #[arg(long, default_value_t = 16)]
        max_concurrency: usize,
        /// Closed-loop workers measuring the capacity.
        #[arg(long, default_value_t = 4)]
        capacity_workers: usize,
        #[arg(long, default_value_t = 100)]
        upstream_latency_ms: u64,
        #[arg(long, default_value_t = 2.0)]
        multiplier: f64,
        /// Also write the report as JSON here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Offline training.
    Train {
        #[command(subcommand)]
        what: TrainWhat,
    },
    /// Offline evaluation.
    Eval {
        #[command(subcommand)]
        what: EvalWhat,
    },
    /// Gateway keys for the key file (`server.keys_file`).
    Keys {
        #[command(subcommand)]
        what: KeysWhat,
    },
    /// Summarise request logs by key, model and UTC day.
    Usage {
        /// Request log files (rotated ones too).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Group by: all (key, model and day), key, model or day.
        #[arg(long, default_value = "all")]
        by: String,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the router's decision for a prompt.
    Route {
        prompt: String,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum KeysWhat {
    /// Print a fresh key alone on the first line, then the TOML entry (its hash) to append to the key file.
    New {
        name: String,
        #[arg(long)]
        rpm: Option<u64>,
        #[arg(long)]
        tpm: Option<u64>,
        /// USD per UTC day
        #[arg(long)]
        budget_day: Option<f64>,
        /// USD per UTC month
        #[arg(long)]
        budget_month: Option<f64>,
    },
}

#[derive(Subcommand)]
enum TrainWhat {
    /// Train the router (ridge regression of premium − cheap quality on the embedding + text features).
    Router {
        #[arg(long, required = true)]
        data: Vec<PathBuf>,
        #[arg(long, default_value = "mistralai/Mixtral-8x7B-Instruct-v0.1")]
        cheap: String,
        #[arg(long, default_value = "gpt-4-1106-preview")]
        premium: String,
        #[arg(long, default_value = "models/router")]
        out: PathBuf,
        #[arg(long, default_value_t = 1.0)]
        lambda: f64,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum EvalWhat {
    /// Routers' cost/quality curves, APGR and CPT, as RouteLLM measures them.
    Routing {
        #[arg(long, required = true)]
        data: Vec<PathBuf>,
        #[arg(long, default_value = "mistralai/Mixtral-8x7B-Instruct-v0.1")]
        cheap: String,
        #[arg(long, default_value = "gpt-4-1106-preview")]
        premium: String,
        /// Score this trained router (else: k-fold CV, or --train)
        #[arg(long)]
        router: Option<PathBuf>,
        /// Train on these files and test on --data (cross-distribution)
        #[arg(long)]
        train: Vec<PathBuf>,
        /// CV mode: also score these files (same folds by id) without ever training on them
        #[arg(long)]
        eval_only: Vec<PathBuf>,
        #[arg(long, default_value_t = 5)]
        folds: usize,
        /// CV mode: repeat with this many fold draws
        #[arg(long, default_value_t = 3)]
        seeds: usize,
        /// Report quality at this premium share (default: the config's router.premium_share or 0.3)
        #[arg(long)]
        share: Option<f64>,
        #[arg(long)]
        exclude_contaminated: bool,
        #[arg(long, default_value_t = 1.0)]
        lambda: f64,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Cache decision rules on labelled question pairs: recall vs false hits, CV, shipped rule.
    Cache {
        /// JSONL of {"a", "b", "duplicate"}
        #[arg(long)]
        pairs: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 0.01)]
        target_false_hit: f64,
        /// Cross-validation folds for the honest recall (0 or 1: none).
        #[arg(long, default_value_t = 5)]
        folds: usize,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// The shipped model files, compiled into this binary only (not the library: every test binary
/// would carry 44 MB). `serve` and the other commands use them wherever the default `models/`
/// paths do not exist, so the binary runs from any directory.
static BUNDLE: switchyard::assets::Bundle = switchyard::assets::Bundle {
    model_config: include_bytes!("../models/all-MiniLM-L6-v2/config.json"),
    model_tokenizer: include_bytes!("../models/all-MiniLM-L6-v2/tokenizer.json"),
    model_weights: include_bytes!("../models/all-MiniLM-L6-v2/model.safetensors"),
    model_sums: include_str!("../models/all-MiniLM-L6-v2/SHA256SUMS"),
    router: include_bytes!("../models/router/router.json"),
    cache_rule: include_bytes!("../models/cache_rule.json"),
    sums: include_str!("../models/SHA256SUMS"),
};

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None => Ok(Config::default()),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let log_format = init_logging(cli.log_format)?;
    let started = std::time::Instant::now();
    switchyard::assets::install(&BUNDLE)?;
    tracing::debug!(ms = started.elapsed().as_millis() as u64, "embedded model files verified");
    match cli.command {
        Command::Serve { config, listen, demo, demo_latency_ms } => {
            let mut cfg = if demo {
                let base = match &config {
                    Some(p) => Config::load_partial(p)?,
                    None => Config::default(),
                };
                app::demo_config(base, Duration::from_millis(demo_latency_ms)).await?
            } else if let Some(p) = &config {
                Config::load(p)?
            } else {
                let (cfg, found) = app::config_from_env()?;
                tracing::info!("{found}");
                cfg
            };
            if let Some(l) = listen {
                cfg.server.listen = l;
            }
            let embedder = app::load_embedder(&cfg)?;
            let running = app::start(cfg, Some(embedder), true).await?;
            tracing::info!(addr = %running.addr, demo, "switchyard listening");
            // the first line of standard output, which scripts read the address from (JSON too
            // when the logs are: a request log on standard output is then JSON throughout)
            if log_format == LogFormat::Json {
                println!("{}", serde_json::json!({ "listening": format!("http://{}", running.addr) }));
            } else {
                println!("switchyard listening on http://{}", running.addr);
            }
            running.wait().await;
        }
        Command::Check { config } => {
            let (cfg, from) = match &config {
                Some(p) => (Config::load(p)?, p.display().to_string()),
                None => app::config_from_env()?,
            };
            let (summary, warnings) = app::check(&cfg)?;
            println!("ok: {from}");
            print!("{summary}");
            for w in warnings {
                println!("warning: {w}");
            }
        }
        Command::Embed { text, config, repeat } => {
            let cfg = load_config(config.as_ref())?;
            let e = app::load_embedder(&cfg)?;
            let mut times = Vec::with_capacity(repeat.max(1));
            let mut v = Vec::new();
            for _ in 0..repeat.max(1) {
                let started = std::time::Instant::now();
                v = e.embed_batch(&[&text]).context("embedding failed")?.remove(0);
                times.push(started.elapsed());
            }
            times.sort();
            let took = times[times.len() / 2];
            if repeat > 1 {
                let p = |q: f64| times[((times.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
                println!(
                    "{repeat} runs: p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  min {:.2} ms",
                    p(0.5),
                    p(0.9),
                    p(0.99),
                    p(0.0)
                );
            }
            let head: Vec<String> = v.iter().take(8).map(|x| format!("{x:+.4}")).collect();
            println!(
                "dim {}  norm {:.4}  tokens {}  took {:.1} ms",
                v.len(),
                cosine(&v, &v).sqrt(),
                e.count_tokens(&text),
                took.as_secs_f64() * 1e3
            );
            println!("[{}, …]", head.join(", "));
        }
        Command::Eval { what: EvalWhat::Cache { pairs, out, target_false_hit, folds, config } } => {
            let cfg = load_config(config.as_ref())?;
            let embedder = app::load_embedder(&cfg)?;
            let opts = switchyard::eval::cache::CacheEvalOptions {
                pairs,
                out,
                target_false_hit,
                folds,
                shipped: app::shipped_cache_rule(&cfg),
                cache_dir: app::embedding_cache_dir(),
                model_dir: app::locate(&cfg.embed.model_dir),
            };
            let report = switchyard::eval::cache::evaluate(&embedder, &opts)?;
            switchyard::eval::cache::write_report(&report, &opts)?;
            print!("{}", std::fs::read_to_string(opts.out.join("report.md"))?);
        }
        Command::Bench { target, workload, requests, concurrency, out, pairs, model, key, premium_price } => {
            let spec = switchyard::bench::workload::Spec::parse(&workload).map_err(anyhow::Error::msg)?;
            let pairs = switchyard::eval::cache::read_pairs(&app::locate(&pairs))?;
            let (pi, po) = premium_price
                .split_once(',')
                .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)))
                .context("--premium-price must be INPUT,OUTPUT in USD per million tokens")?;
            let opts = switchyard::bench::BenchOptions {
                target,
                requests,
                concurrency,
                spec,
                out: out.clone(),
                model,
                key,
                premium_price: (pi, po),
            };
            switchyard::bench::run(&pairs, opts).await?;
            print!("{}", std::fs::read_to_string(out.join("report.md"))?);
        }
        Command::Overload { seconds, max_concurrency, capacity_workers, upstream_latency_ms, multiplier, out } => {
            let embedder = app::load_embedder(&Config::default())?;
            let opts = switchyard::bench::overload::OverloadOptions {
                phase: Duration::from_secs(seconds.max(1)),
                max_concurrency: max_concurrency.max(1),
                capacity_workers,
                upstream_latency: Duration::from_millis(upstream_latency_ms),
                multiplier,
            };
            let report = switchyard::bench::overload::run(opts, embedder).await?;
            save_json(out.as_deref(), &report)?;
            print!("{}", report.markdown());
            for s in &report.other_samples {
                println!("error: {s}");
            }
            anyhow::ensure!(report.holds(), "overload was not held (see above)");
        }
        Command::Soak { minutes, concurrency, out } => {
            let embedder = app::load_embedder(&Config::default())?;
            let opts = switchyard::bench::soak::SoakOptions {
                concurrency,
                ..switchyard::bench::soak::SoakOptions::minutes(minutes)
            };
            let report = switchyard::bench::soak::run(opts, embedder).await?;
            save_json(out.as_deref(), &report)?;
            print!("{}", report.markdown());
            for s in &report.unexpected_samples {
                println!("unexpected: {s}");
            }
            anyhow::ensure!(report.contract_holds(), "the soak broke the contract (see above)");
        }
        Command::Train { what: TrainWhat::Router { data, cheap, premium, out, lambda, config } } => {
            let cfg = load_config(config.as_ref())?;
            let embedder = app::load_embedder(&cfg)?;
            let report = app::train_router(&cfg, &embedder, &data, &cheap, &premium, lambda, &out)?;
            print!("{report}");
        }
        Command::Eval {
            what:
                EvalWhat::Routing {
                    data,
                    cheap,
                    premium,
                    router,
                    train,
                    eval_only,
                    folds,
                    seeds,
                    share,
                    exclude_contaminated,
                    lambda,
                    out,
                    config,
                },
        } => {
            let cfg = load_config(config.as_ref())?;
            let embedder = app::load_embedder(&cfg)?;
            let opts = switchyard::eval::routing::RoutingEvalOptions {
                data,
                cheap,
                premium,
                router,
                train,
                eval_only,
                folds,
                seeds,
                share: share.or(cfg.router.premium_share.map(f64::from)).unwrap_or(0.3),
                exclude_contaminated,
                lambda,
                out: out.clone(),
                cache_dir: app::embedding_cache_dir(),
                model_dir: app::locate(&cfg.embed.model_dir),
            };
            let report = switchyard::eval::routing::evaluate(&embedder, &opts)?;
            switchyard::eval::routing::write_report(&report, &out)?;
            print!("{}", std::fs::read_to_string(out.join("report.md"))?);
        }
        Command::Keys { what: KeysWhat::New { name, rpm, tpm, budget_day, budget_month } } => {
            let opts = switchyard::keys::NewKey { name, rpm, tpm, budget_day, budget_month };
            let (key, toml) = switchyard::keys::new_key(&opts);
            // the entry must load: check it the way the gateway will
            switchyard::keys::parse(&toml, std::path::Path::new("<new key>"))?;
            println!("{key}");
            print!("{toml}");
        }
        Command::Usage { files, by, json } => {
            let by: switchyard::reqlog::usage::By = by.parse().map_err(anyhow::Error::msg)?;
            let book = switchyard::reqlog::usage::UsageBook::default();
            for f in &files {
                let skipped = book.read_file(f).with_context(|| format!("reading {}", f.display()))?;
                if skipped > 0 {
                    eprintln!("{}: {skipped} lines are not request records (skipped)", f.display());
                }
            }
            let rows = book.summary(by);
            if json {
                println!("{}", serde_json::to_string_pretty(&serde_json::json!({"object": "list", "data": rows}))?);
            } else {
                print!("{}", switchyard::reqlog::usage::table(&rows, by));
            }
        }
        Command::Route { prompt, config } => {
            let cfg = load_config(config.as_ref())?;
            let e = app::load_embedder(&cfg)?;
            let v = e.embed_batch_full(&[&prompt])?.remove(0).router_input();
            // no live traffic here: the threshold is the training calibration's (serve then follows the traffic)
            let router = app::live_router(&cfg, app::build_router(&cfg));
            let d = router.decide(&prompt, Some(&v), &classify::Ask::default());
            let tier = match d.tier {
                classify::TierChoice::Cheap => &cfg.router.cheap,
                classify::TierChoice::Premium => &cfg.router.premium,
            };
            let point = match router.point() {
                classify::OperatingPoint::Threshold(_) => "router.threshold".to_string(),
                classify::OperatingPoint::Share(s) => format!("premium_share {s} by the training calibration"),
            };
            println!(
                "router {}  score {:.4}  threshold {:.4} ({point})  tier {tier}",
                router.name(),
                d.score,
                d.threshold
            );
            for f in router.explain(&prompt, Some(&v)) {
                println!("  {:<40} {:+.4}", f.name, f.contribution);
            }
        }
    }
    Ok(())
}

/// Writes a run's report as JSON to `out`, if one was asked for.
fn save_json(out: Option<&std::path::Path>, report: &impl serde::Serialize) -> anyhow::Result<()> {
    if let Some(path) = out {
        std::fs::write(path, serde_json::to_string_pretty(report)?)?;
    }
    Ok(())
}
