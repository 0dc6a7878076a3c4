//! The `wasmgate` command: `run` serves a config, `check` validates it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use wasmgate::config::{Config, ConfigError};
use wasmgate::gateway::{Gateway, LiveState};
use wasmgate::metrics::Metrics;
use wasmgate::plugins::{self, PluginSet};
use wasmgate::reload::{Reloader, SharedStatus};
use wasmgate::runtime::{Runtime, RuntimeSettings};
use wasmgate::server::Server;
use wasmgate::trace::Tracing;

/// mimalloc: the request path allocates many small short-lived objects (headers, futures,
/// buffers); it serves them measurably cheaper than the system allocator (see bench/).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        /// Worker threads, each serving its connections on its own (default: one per core).
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
    wasmgate::tls::install_default_provider();
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
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

/// The sandbox runtime and the plugins the config's plugin directory holds.
fn start_runtime(config: &Config) -> anyhow::Result<(Arc<Runtime>, PluginSet)> {
    start_runtime_with(config, None)
}

/// Like [`start_runtime`], recording into `metrics` when given.
fn start_runtime_with(
    config: &Config,
    metrics: Option<Arc<Metrics>>,
) -> anyhow::Result<(Arc<Runtime>, PluginSet)> {
    let settings = RuntimeSettings {
        max_instances: config.plugins.max_instances,
        cache_dir: Some(config.plugins.cache_dir.clone()),
        metrics,
    };
    let state = wasmgate::state::from_config(
        &config.state,
        config.plugins.counters,
        settings.metrics.as_ref(),
    )?;
    if let wasmgate::config::StateConfig::Redis(redis) = &config.state {
        tracing::info!(
            url = %redis.redacted_url(),
            cluster = redis.cluster,
            "shared state in Redis"
        );
    }
    let runtime = Arc::new(Runtime::new(&settings, state)?);
    let plugins = plugins::load_dir(&runtime, &config.plugins.dir);
    Ok((runtime, plugins))
}

fn check(path: &Path) -> anyhow::Result<ExitCode> {
    let Some(config) = load(path)? else {
        return Ok(ExitCode::FAILURE);
    };
    let (runtime, plugins) = start_runtime(&config)?;
    let mut problems: Vec<String> = Vec::new();
    for (name, error) in &plugins.rejected {
        problems.push(format!("plugin `{name}` is rejected: {error}"));
    }
    for route in &config.routes {
        for (index, stage) in route.stages.iter().enumerate() {
            if !plugins.loaded.contains_key(&stage.plugin)
                && !plugins.rejected.contains_key(&stage.plugin)
            {
                problems.push(format!(
                    "{}: route `{}` stage {index}: plugin `{}` not found in {}",
                    stage.location,
                    route.name,
                    stage.plugin,
                    config.plugins.dir.display()
                ));
            }
        }
    }
    let runtime_for_build = runtime.clone();
    let built = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            LiveState::build(
                Arc::new(config),
                Arc::new(plugins),
                &runtime_for_build,
                None,
            )
            .await
        });
    let state = match built {
        Ok(state) => Some(state),
        Err(stage_problems) => {
            problems.extend(stage_problems.iter().map(ToString::to_string));
            None
        }
    };
    if !problems.is_empty() {
        for problem in &problems {
            eprintln!("error: {problem}");
        }
        eprintln!(
            "{} error{} in config",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" }
        );
        return Ok(ExitCode::FAILURE);
    }
    let state = state.expect("no problems means a built state");
    println!(
        "{}: ok ({} routes, {} upstreams, {} plugins)",
        path.display(),
        state.config.routes.len(),
        state.config.upstreams.len(),
        state.plugins.loaded.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn run(path: &Path, workers: Option<usize>) -> anyhow::Result<ExitCode> {
    let Some(config) = load(path)? else {
        return Ok(ExitCode::FAILURE);
    };
    let workers = workers.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    wasmgate::workers::set_count(workers);
    // This thread runs the control plane (startup, reload, admin API, signals); requests are
    // served by the worker threads `Server::serve` starts.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        // Metrics are collected only when the admin listener serves them.
        let metrics = config
            .admin
            .filter(|admin| admin.metrics)
            .map(|_| Arc::new(Metrics::new()));
        let (sandbox, plugins) = start_runtime_with(&config, metrics)?;
        // Check Redis and load its scripts before the first request; the workers make their
        // own connections on first use.
        let shared = sandbox.state().clone();
        tokio::spawn(async move { shared.warm_up().await });
        for route in &config.routes {
            for stage in &route.stages {
                if !plugins.loaded.contains_key(&stage.plugin) {
                    tracing::warn!(route = %route.name, plugin = %stage.plugin, "stage plugin is not loaded; the route answers 503 until it is");
                }
            }
        }
        let settings = config.server.clone();
        let state = match LiveState::build(Arc::new(config), Arc::new(plugins), &sandbox, None).await {
            Ok(state) => state,
            Err(problems) => {
                for problem in &problems {
                    eprintln!("error: {problem}");
                }
                return Ok(ExitCode::FAILURE);
            }
        };
        let admin = state.config.admin;
        let watch = state.config.plugins.watch;
        let tracer = match &state.config.tracing {
            Some(settings) => {
                let tracer = Tracing::start(settings, tokio::runtime::Handle::current())?;
                tracing::info!(endpoint = %settings.endpoint, ratio = settings.sampling_ratio, "exporting traces");
                Some(Arc::new(tracer))
            }
            None => None,
        };
        let mut gateway = Gateway::new(sandbox, state);
        if let Some(tracer) = &tracer {
            gateway = gateway.with_tracing(tracer.clone());
        }
        let gateway = Arc::new(gateway);
        let status = SharedStatus::default();
        let server = Server::bind(settings, gateway.clone()).await?;
        let reloader = Reloader::new(gateway.clone(), path.to_path_buf(), status.clone())
            .with_tls(server.tls_listeners());
        if watch {
            reloader
                .spawn()
                .context("cannot watch the plugin directory, config file and certificates")?;
        }
        if let Some(admin) = admin {
            let bound = wasmgate::admin::spawn(admin.listen, gateway.clone(), status.clone()).await?;
            tracing::info!(addr = %bound, "admin API listening");
        }
        for (addr, tls) in server.bound() {
            tracing::info!(%addr, workers, tls, "listening");
        }
        let drained = server
            .serve(shutdown_signal())
            .await
            .context("cannot start the worker threads")?;
        if drained {
            tracing::info!("shut down cleanly");
        } else {
            tracing::warn!("grace period over; closing remaining connections");
        }
        if let Some(tracer) = tracer {
            // Flushing waits on exports that run on this runtime: block elsewhere.
            let _ = tokio::task::spawn_blocking(move || tracer.shutdown()).await;
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
