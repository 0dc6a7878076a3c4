//! Hot reload: watch the plugin directory and the config file, debounce, rebuild the live
//! state off the request path and swap it atomically.
//!
//! Requests in flight keep the [`LiveState`] they started with; new requests get the new
//! one. A plugin file that fails to compile, implements no world or fails a stage's
//! `validate-config` is rejected and the last good version keeps serving. A deleted plugin
//! is unloaded (its routes answer 503). An invalid config is rejected whole.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::config::{Config, ConfigError};
use crate::gateway::{Gateway, LiveState};
use crate::metrics::{RejectReason, ReloadKind, ReloadOutcome};
use crate::plugins::{self, PluginSet};
use crate::runtime::PluginError;
use crate::tls::TlsListener;
use crate::tls::listener::{CertificateStatus, Reloaded};

/// How long a changed file must be quiet before it is reloaded.
pub const DEBOUNCE: Duration = Duration::from_millis(150);
/// The longest a changed file waits for quiet before it is reloaded anyway (a copy still in
/// progress is then caught by the stability check of [`read_when_stable`]).
pub const MAX_WAIT: Duration = Duration::from_secs(1);

/// What the last reloads did, for the admin API.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ReloadStatus {
    /// When the live state was last swapped (seconds since the Unix epoch).
    pub last_swap_unix: u64,
    /// Why the last config edit was rejected, if it was.
    pub config_error: Option<String>,
    /// Recent load, unload and reject events, newest last.
    pub events: Vec<String>,
    /// Config keys whose new values wait for a restart (empty when the running process
    /// serves the file as written).
    pub restart_required: Vec<String>,
    /// The TLS listeners' certificates: what each serves, and why its files on disk are
    /// refused, if they are.
    pub certificates: Vec<CertificateStatus>,
}

/// Shared reload status.
pub type SharedStatus = Arc<Mutex<ReloadStatus>>;

/// Watches files and reloads the gateway when they change.
pub struct Reloader {
    gateway: Arc<Gateway>,
    config_path: PathBuf,
    status: SharedStatus,
    /// The config the process started with: what restart-only keys still follow.
    started: Arc<Config>,
    /// The TLS listeners, whose certificate files are watched too.
    tls: Vec<Arc<TlsListener>>,
}

impl Reloader {
    /// A reloader for `gateway`, whose config came from `config_path`.
    pub fn new(gateway: Arc<Gateway>, config_path: PathBuf, status: SharedStatus) -> Self {
        let started = gateway.state().config.clone();
        Self {
            gateway,
            config_path,
            status,
            started,
            tls: Vec::new(),
        }
    }

    /// Also watches the certificate and key files of `listeners` and swaps in new pairs.
    pub fn with_tls(mut self, listeners: Vec<Arc<TlsListener>>) -> Self {
        self.status.lock().expect("status lock").certificates =
            listeners.iter().flat_map(|l| l.status()).collect();
        self.tls = listeners;
        self
    }

    /// Watches the plugin directory and the config file until the process ends.
    pub fn spawn(self) -> notify::Result<()> {
        let (tx, rx) = mpsc::unbounded_channel::<PathBuf>();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Ok(event) = event
                    && !event.kind.is_access()
                {
                    for path in event.paths {
                        let _ = tx.send(path);
                    }
                }
            })?;
        let state = self.gateway.state();
        let plugin_dir = state.config.plugins.dir.clone();
        std::fs::create_dir_all(&plugin_dir).ok();
        watcher.watch(&plugin_dir, RecursiveMode::NonRecursive)?;
        let config_dir = self
            .config_path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        watcher.watch(&config_dir, RecursiveMode::NonRecursive)?;
        let cert_dirs = self.cert_dirs();
        for dir in &cert_dirs {
            watcher.watch(dir, RecursiveMode::NonRecursive)?;
        }
        // The `.proto` files of transcoding routes: a change recompiles them with the config.
        let proto_dirs = proto_dirs(&state.config);
        for dir in &proto_dirs {
            if let Err(error) = watcher.watch(dir, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %dir.display(), %error, "cannot watch a .proto directory; its changes apply on the next config reload");
            }
        }
        tracing::info!(plugins = %plugin_dir.display(), config = %self.config_path.display(), "watching for changes");
        tokio::spawn(async move {
            let _watcher = watcher;
            self.run(rx, plugin_dir, cert_dirs, proto_dirs).await;
        });
        Ok(())
    }

    /// The directories of every TLS listener's certificate and key files.
    fn cert_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self.tls.iter().flat_map(|l| l.watched_dirs()).collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }

    async fn run(
        self,
        mut rx: mpsc::UnboundedReceiver<PathBuf>,
        plugin_dir: PathBuf,
        cert_dirs: Vec<PathBuf>,
        proto_dirs: Vec<PathBuf>,
    ) {
        let mut watched = Watched::new(&self.config_path, &plugin_dir, &cert_dirs);
        watched.proto_dirs = proto_dirs.iter().map(|d| canonical(d)).collect();
        let mut pending = Pending::default();
        loop {
            let due = pending.next_due();
            tokio::select! {
                path = rx.recv() => match path {
                    Some(path) => {
                        if let Some(change) = watched.classify(&path) {
                            pending.touch(change, tokio::time::Instant::now());
                        }
                    }
                    None => return,
                },
                () = sleep_until(due), if due.is_some() => {
                    let ready = pending.take_due(tokio::time::Instant::now());
                    if ready.contains(&Change::Certificates) {
                        self.reload_certificates();
                    }
                    let config_changed = ready.contains(&Change::Config);
                    let plugins: BTreeSet<String> = ready
                        .into_iter()
                        .filter_map(|change| match change {
                            Change::Plugin(name) => Some(name),
                            Change::Config | Change::Certificates => None,
                        })
                        .collect();
                    tracing::debug!(config_changed, ?plugins, "file changes");
                    self.reload(config_changed, plugins).await;
                }
            }
        }
    }

    /// Applies plugin changes, then a config change; each is all-or-nothing.
    pub async fn reload(&self, config_changed: bool, changed_plugins: BTreeSet<String>) {
        if !changed_plugins.is_empty() {
            self.reload_plugins(changed_plugins).await;
        }
        if config_changed {
            self.reload_config().await;
        }
    }

    /// Reads every TLS certificate again; new pairs that pass the checks are swapped in,
    /// refused ones are logged and shown on `/status` while the last good pair serves.
    pub fn reload_certificates(&self) {
        for listener in &self.tls {
            for done in listener.reload() {
                match done {
                    Reloaded::Swapped { cert, sha256 } => {
                        self.event(format!("certificate {cert} reloaded ({})", &sha256[..12]));
                    }
                    Reloaded::Rejected { cert, reason } => {
                        self.event(format!("certificate {cert} rejected: {reason}"));
                    }
                }
            }
        }
        self.status.lock().expect("status lock").certificates =
            self.tls.iter().flat_map(|l| l.status()).collect();
    }

    async fn reload_plugins(&self, names: BTreeSet<String>) {
        let current = self.gateway.state();
        let dir = current.config.plugins.dir.clone();
        let mut candidate: PluginSet = (*current.plugins).clone();
        let mut changed = Vec::new();
        for name in names {
            let path = dir.join(format!("{name}.wasm"));
            let kind = match std::fs::metadata(&path) {
                Ok(meta) => Some(plugins::file_kind(&meta)),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
                Err(error) => Some(Err(error.to_string())),
            };
            if let Some(Err(reason)) = kind {
                tracing::error!(plugin = %name, file = %path.display(), %reason, "plugin rejected; the last good version keeps serving");
                self.event(format!("plugin `{name}` rejected: {reason}"));
                self.count(
                    ReloadKind::Plugin,
                    ReloadOutcome::Rejected(RejectReason::Read),
                );
                candidate.rejected.insert(name.clone(), reason);
                continue;
            }
            if kind.is_none() {
                if candidate.loaded.remove(&name).is_some() {
                    self.event(format!("plugin `{name}` unloaded (file removed)"));
                    self.count(ReloadKind::Plugin, ReloadOutcome::Unloaded);
                    tracing::warn!(plugin = %name, "plugin unloaded: its file was removed; routes using it answer 503");
                    changed.push(name.clone());
                }
                candidate.rejected.remove(&name);
                continue;
            }
            let Some(bytes) = read_when_stable(&path).await else {
                continue;
            };
            let unchanged = candidate
                .loaded
                .get(&name)
                .is_some_and(|p| p.hash == crate::runtime::content_hash(&bytes));
            if unchanged {
                candidate.rejected.remove(&name);
                continue;
            }
            let runtime = self.gateway.runtime().clone();
            let plugin_name = name.clone();
            let loaded =
                tokio::task::spawn_blocking(move || runtime.load_bytes(&plugin_name, &bytes)).await;
            let loaded = loaded.map(|result| {
                result.and_then(|plugin| match candidate.loaded.get(&name) {
                    Some(old) if old.kind != plugin.kind => Err(PluginError::Link {
                        plugin: name.clone(),
                        world: plugin.kind.world(),
                        message: format!(
                            "the loaded version implements world `{}`; a plugin keeps its world across reloads (delete the file first to change it)",
                            old.kind
                        ),
                    }),
                    _ => Ok(plugin),
                })
            });
            match loaded {
                Ok(Ok(plugin)) => {
                    tracing::info!(plugin = %name, world = %plugin.kind, hash = %&plugin.hash[..12], from_cache = plugin.from_cache, "plugin compiled; validating");
                    candidate.loaded.insert(name.clone(), Arc::new(plugin));
                    candidate.rejected.remove(&name);
                    changed.push(name);
                }
                Ok(Err(error)) => {
                    tracing::error!(plugin = %name, %error, "plugin rejected; the last good version keeps serving");
                    self.event(format!("plugin `{name}` rejected: {error}"));
                    let reason = match &error {
                        PluginError::Read { .. } => RejectReason::Read,
                        PluginError::Compile { .. } => RejectReason::Compile,
                        PluginError::WrongWorld { .. } | PluginError::Link { .. } => {
                            RejectReason::World
                        }
                    };
                    self.count(ReloadKind::Plugin, ReloadOutcome::Rejected(reason));
                    candidate.rejected.insert(name, error.to_string());
                }
                Err(join) => tracing::error!(plugin = %name, error = %join, "plugin load panicked"),
            }
        }
        if changed.is_empty() && candidate.rejected == current.plugins.rejected {
            return;
        }
        let runtime = self.gateway.runtime().clone();
        let built = LiveState::build(
            current.config.clone(),
            Arc::new(candidate.clone()),
            &runtime,
            Some(&current),
        )
        .await;
        let state = match built {
            Ok(state) => state,
            Err(problems) => {
                // Put back the last good version of every plugin a stage refused.
                let refused: BTreeSet<&str> = problems
                    .iter()
                    .filter_map(|p| p.plugin.as_deref())
                    .collect();
                for name in refused {
                    let message: Vec<String> = problems
                        .iter()
                        .filter(|p| p.plugin.as_deref() == Some(name))
                        .map(ToString::to_string)
                        .collect();
                    tracing::error!(plugin = %name, problems = %message.join("; "), "plugin rejected by a stage's validate-config; the last good version keeps serving");
                    self.event(format!("plugin `{name}` rejected: {}", message.join("; ")));
                    self.count(
                        ReloadKind::Plugin,
                        ReloadOutcome::Rejected(RejectReason::Validate),
                    );
                    match current.plugins.loaded.get(name) {
                        Some(previous) => {
                            candidate.loaded.insert(name.to_string(), previous.clone())
                        }
                        None => candidate.loaded.remove(name),
                    };
                    candidate
                        .rejected
                        .insert(name.to_string(), message.join("; "));
                }
                match LiveState::build(
                    current.config.clone(),
                    Arc::new(candidate.clone()),
                    &runtime,
                    Some(&current),
                )
                .await
                {
                    Ok(state) => state,
                    Err(problems) => {
                        tracing::error!(
                            ?problems,
                            "cannot rebuild the live state; keeping the current one"
                        );
                        return;
                    }
                }
            }
        };
        for name in changed {
            if let Some(plugin) = state.plugins.loaded.get(&name)
                && !current
                    .plugins
                    .loaded
                    .get(&name)
                    .is_some_and(|old| Arc::ptr_eq(old, plugin))
            {
                tracing::info!(plugin = %name, world = %plugin.kind, hash = %&plugin.hash[..12], "plugin loaded");
                self.event(format!(
                    "plugin `{name}` loaded ({}, {})",
                    plugin.kind,
                    &plugin.hash[..12]
                ));
                self.count(ReloadKind::Plugin, ReloadOutcome::Loaded);
            }
        }
        self.swap(state);
    }

    async fn reload_config(&self) {
        let current = self.gateway.state();
        let path = self.config_path.clone();
        let config = match tokio::task::spawn_blocking(move || Config::load(&path)).await {
            Ok(Ok(config)) => config,
            Ok(Err(error)) => {
                let message = match &error {
                    ConfigError::Invalid(diagnostics) => diagnostics.to_string(),
                    other => other.to_string(),
                };
                tracing::error!("config rejected; the current config keeps serving:\n{message}");
                self.event("config rejected".to_string());
                self.count(
                    ReloadKind::Config,
                    ReloadOutcome::Rejected(RejectReason::Config),
                );
                self.status.lock().expect("status lock").config_error = Some(message);
                return;
            }
            Err(join) => {
                tracing::error!(error = %join, "config load panicked");
                return;
            }
        };
        let pending = restart_required(&self.started, &config);
        if !pending.is_empty() {
            tracing::warn!(keys = %pending.join(", "), "these config changes take effect after a restart; every other change applies now");
        }
        let runtime = self.gateway.runtime().clone();
        match LiveState::build(
            Arc::new(config),
            current.plugins.clone(),
            &runtime,
            Some(&current),
        )
        .await
        {
            Ok(state) => {
                runtime.state().set_budget(state.config.plugins.counters);
                self.status.lock().expect("status lock").restart_required = pending;
                tracing::info!(routes = state.config.routes.len(), "config reloaded");
                self.event("config reloaded".to_string());
                self.count(ReloadKind::Config, ReloadOutcome::Loaded);
                self.status.lock().expect("status lock").config_error = None;
                self.swap(state);
            }
            Err(problems) => {
                let message: Vec<String> = problems.iter().map(ToString::to_string).collect();
                tracing::error!(
                    "config rejected; the current config keeps serving:\n{}",
                    message.join("\n")
                );
                self.event("config rejected".to_string());
                self.count(
                    ReloadKind::Config,
                    ReloadOutcome::Rejected(RejectReason::Validate),
                );
                self.status.lock().expect("status lock").config_error = Some(message.join("\n"));
            }
        }
    }

    fn swap(&self, state: LiveState) {
        self.gateway.swap(state);
        let mut status = self.status.lock().expect("status lock");
        status.last_swap_unix = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
    }

    fn count(&self, kind: ReloadKind, outcome: ReloadOutcome) {
        if let Some(metrics) = self.gateway.runtime().metrics() {
            metrics.reload(kind, outcome);
        }
    }

    fn event(&self, text: String) {
        let mut status = self.status.lock().expect("status lock");
        status.events.push(text);
        let excess = status.events.len().saturating_sub(50);
        status.events.drain(..excess);
    }
}

/// A file that matters to the gateway.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Change {
    /// The config file.
    Config,
    /// `NAME.wasm` in the plugin directory.
    Plugin(String),
    /// Anything in a directory holding TLS certificate or key files (a rename or a
    /// symlink swap may change a file without an event on its own name).
    Certificates,
}

/// The paths whose changes matter; everything else in the watched directories is ignored,
/// so a busy unrelated file can never delay a reload.
struct Watched {
    config_dir: PathBuf,
    config_name: Option<std::ffi::OsString>,
    plugin_dir: PathBuf,
    cert_dirs: Vec<PathBuf>,
    /// Directories of transcoding routes' `.proto` files: a `.proto` changing there reloads
    /// the config, which recompiles them.
    proto_dirs: Vec<PathBuf>,
}

impl Watched {
    fn new(config_path: &Path, plugin_dir: &Path, cert_dirs: &[PathBuf]) -> Self {
        Self {
            config_dir: canonical(config_path.parent().unwrap_or(Path::new("."))),
            config_name: config_path.file_name().map(|n| n.to_os_string()),
            plugin_dir: canonical(plugin_dir),
            cert_dirs: cert_dirs.iter().map(|d| canonical(d)).collect(),
            proto_dirs: Vec::new(),
        }
    }

    fn classify(&self, path: &Path) -> Option<Change> {
        let parent = canonical(path.parent().unwrap_or(Path::new(".")));
        if path.file_name().map(|n| n.to_os_string()) == self.config_name
            && parent == self.config_dir
        {
            return Some(Change::Config);
        }
        if parent == self.plugin_dir
            && let Some(name) = plugins::plugin_name(path)
        {
            return Some(Change::Plugin(name));
        }
        if self.proto_dirs.contains(&parent) && path.extension().is_some_and(|ext| ext == "proto") {
            return Some(Change::Config);
        }
        self.cert_dirs
            .contains(&parent)
            .then_some(Change::Certificates)
    }
}

/// Changes waiting for their path to go quiet: each is due [`DEBOUNCE`] after its last
/// event, and at the latest [`MAX_WAIT`] after its first, however busy the path stays.
#[derive(Default)]
struct Pending {
    /// Change → (first event, last event).
    changes: BTreeMap<Change, (tokio::time::Instant, tokio::time::Instant)>,
}

impl Pending {
    fn touch(&mut self, change: Change, now: tokio::time::Instant) {
        self.changes
            .entry(change)
            .and_modify(|(_, last)| *last = now)
            .or_insert((now, now));
    }

    fn due_at(first: tokio::time::Instant, last: tokio::time::Instant) -> tokio::time::Instant {
        (last + DEBOUNCE).min(first + MAX_WAIT)
    }

    fn next_due(&self) -> Option<tokio::time::Instant> {
        self.changes
            .values()
            .map(|&(first, last)| Self::due_at(first, last))
            .min()
    }

    fn take_due(&mut self, now: tokio::time::Instant) -> Vec<Change> {
        let due: Vec<Change> = self
            .changes
            .iter()
            .filter(|(_, (first, last))| Self::due_at(*first, *last) <= now)
            .map(|(change, _)| change.clone())
            .collect();
        for change in &due {
            self.changes.remove(change);
        }
        due
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

/// Reads a file once its size and modification time stop changing, so a copy in progress
/// is not loaded half-written. `None` if it vanished.
async fn read_when_stable(path: &Path) -> Option<Vec<u8>> {
    let mut last = None;
    for _ in 0..100 {
        let meta = std::fs::metadata(path).ok().filter(|m| m.is_file())?;
        let now = (meta.len(), meta.modified().ok());
        if last == Some(now) {
            return std::fs::read(path).ok();
        }
        last = Some(now);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::read(path).ok()
}

fn canonical(path: &Path) -> PathBuf {
    let path = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}

/// The keys whose values in `new` differ from those the process started with and that only
/// a restart applies: listeners, the admin listener, the connection limit, the plugin
/// directory and watcher, the compile cache, the sandbox pool size and tracing. TLS listeners
/// (addresses, certificate entries) are restart-only too; certificate *files* reload. Everything else
/// (routes, upstreams, stages, limits, timeouts, path policy, plugin output bounds)
/// applies on reload.
pub fn restart_required(started: &Config, new: &Config) -> Vec<String> {
    let (a, b) = (started, new);
    [
        ("server.listen", a.server.listen != b.server.listen),
        ("listeners", a.server.listeners != b.server.listeners),
        (
            "server.max-connections",
            a.server.max_connections != b.server.max_connections,
        ),
        (
            "admin.listen",
            a.admin.map(|a| a.listen) != b.admin.map(|b| b.listen),
        ),
        (
            "admin.metrics",
            a.admin.map(|a| a.metrics) != b.admin.map(|b| b.metrics),
        ),
        ("plugins.dir", a.plugins.dir != b.plugins.dir),
        (
            "plugins.cache-dir",
            a.plugins.cache_dir != b.plugins.cache_dir,
        ),
        ("plugins.watch", a.plugins.watch != b.plugins.watch),
        (
            "plugins.max-instances",
            a.plugins.max_instances != b.plugins.max_instances,
        ),
        ("tracing", a.tracing != b.tracing),
        ("state", a.state != b.state),
    ]
    .into_iter()
    .filter(|(_, changed)| *changed)
    .map(|(key, _)| key.to_string())
    .collect()
}

/// The directories holding transcoding routes' `.proto` files and imports.
fn proto_dirs(config: &Config) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = config
        .routes
        .iter()
        .filter_map(|route| route.transcode.as_ref())
        .flat_map(crate::config::TranscodeConfig::watched_dirs)
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

/// Which routes use each plugin, for the admin API.
pub fn routes_by_plugin(state: &LiveState) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for route in &state.config.routes {
        for stage in &route.stages {
            map.entry(stage.plugin.clone())
                .or_default()
                .push(route.name.clone());
        }
    }
    map
}
