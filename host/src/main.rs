//! The `wasmgate` command: `run` serves a config, `check` validates it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use wasmgate::config::{Config, ConfigError};
use wasmgate::gateway::Gateway;
use wasmgate::server::Server;

/// An API gateway whose request pipeline is made of sandboxed WebAssembly components.
#[derive(Parser)]
#[command(name = "wasmgate", version, about)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the gateway described by a config file.
    Run {
        /// The config file.
        #[arg(long, short, default_value = "config/gateway.toml")]
        config: PathBuf,
        /// Worker threads (default: one per core).
        #[arg(long, env = "WASMGATE_WORKER_THREADS")]
        workers: Option<usize>,
    },
    /// Check a config file and exit non-zero with every problem found.
    Check {
        /// The config file.
        #[arg(long, short, default_value = "config/gateway.toml")]
        config: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Run { config, workers } => run(&config, workers),
        Command::Check { config } => check(&config),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Loads a config, printing every diagnostic on failure.
fn load(path: &Path) -> anyhow::Result<Option<Config>> {
    match Config::load(path) {
        Ok(config) => Ok(Some(config)),
        Err(ConfigError::Invalid(diagnostics)) => {
            eprintln!("{diagnostics}");
            Ok(None)
        }
        Err(error) => Err(error.into()),
    }
}

fn check(path: &Path) -> anyhow::Result<ExitCode> {
    let Some(config) = load(path)? else {
        return Ok(ExitCode::FAILURE);
    };
    println!(
        "{}: ok ({} routes, {} upstreams)",
        path.display(),
        config.routes.len(),
        config.upstreams.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn run(path: &Path, workers: Option<usize>) -> anyhow::Result<ExitCode> {
    let Some(config) = load(path)? else {
        return Ok(ExitCode::FAILURE);
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = workers {
        runtime.worker_threads(workers.max(1));
    }
    let runtime = runtime.enable_all().build().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let settings = config.server.clone();
        let gateway = Arc::new(Gateway::new(config));
        let server = Server::bind(settings, gateway).await?;
        for addr in server.local_addrs() {
            tracing::info!(%addr, "listening");
        }
        let drained = server.serve(shutdown_signal()).await;
        if drained {
            tracing::info!("shut down cleanly");
        } else {
            tracing::warn!("grace period over; closing remaining connections");
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutdown signal received");
}
