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
    #[command(subcommand)]
    command: Command,
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
    /// Embed a text and print a summary of its vector.
    Embed {
        text: String,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print the router's decision for a prompt.
    Route {
        prompt: String,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None => Ok(Config::default()),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve { config, listen, demo, demo_latency_ms } => {
            let mut cfg = if demo {
                app::demo_config(load_config(config.as_ref())?, Duration::from_millis(demo_latency_ms)).await?
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
            println!("switchyard listening on http://{}", running.addr);
            running.wait().await;
        }
        Command::Embed { text, config } => {
            let cfg = load_config(config.as_ref())?;
            let e = app::load_embedder(&cfg)?;
            let started = std::time::Instant::now();
            let v = e.embed_batch(&[&text]).context("embedding failed")?.remove(0);
            let took = started.elapsed();
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
        Command::Route { prompt, config } => {
            let cfg = load_config(config.as_ref())?;
            let e = app::load_embedder(&cfg)?;
            let v = e.embed_batch(&[&prompt])?.remove(0);
            let router = classify::Router::with_operating_point(
                Box::new(classify::LengthBaseline::default()),
                cfg.router.threshold,
                cfg.router.premium_share,
            );
            let d = router.decide(&prompt, Some(&v));
            let tier = match d.tier {
                classify::TierChoice::Cheap => &cfg.router.cheap,
                classify::TierChoice::Premium => &cfg.router.premium,
            };
            println!(
                "router {}  score {:.4}  threshold {:.4}  tier {tier}",
                router.name(),
                d.score,
                router.threshold()
            );
            for f in router.explain(&prompt, Some(&v)) {
                println!("  {:<40} {:+.4}", f.name, f.contribution);
            }
        }
    }
    Ok(())
}
