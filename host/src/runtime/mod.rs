//! The sandbox: one wasmtime `Engine` (pooling allocator, epoch interruption, fuel), the
//! `Linker` with the host imports, plugin compilation with an on-disk artifact cache, and
//! the per-call machinery in [`call`].

pub mod bindings;
pub mod cache;
pub mod call;
pub mod host;
pub mod plugin;
pub mod reuse;
mod ticker;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::metrics::Metrics;

pub use crate::state::{LocalState, SharedState};
pub use cache::CacheError;
pub use call::{Answer, Call, StageError, World};
pub use host::StageState;
pub use plugin::{Plugin, PluginError, PluginKind, PluginPre};
pub use reuse::{InstancePool, PoolStats, PoolStatus};

use host::LogBudget;

/// How often the epoch advances; deadlines are checked at this granularity.
pub const EPOCH_TICK: Duration = Duration::from_millis(2);

/// Engine-wide sandbox settings.
#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    /// Plugin instances alive at once (the pool size); more concurrent calls get a 503.
    pub max_instances: u32,
    /// Where compiled plugins are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// The process's metrics, which every live state records into; `None` turns them off.
    pub metrics: Option<Arc<Metrics>>,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        Self {
            max_instances: 1000,
            cache_dir: None,
            metrics: None,
        }
    }
}

/// The engine, linker and shared state every plugin call uses.
pub struct Runtime {
    engine: Engine,
    linker: Linker<StageState>,
    state: Arc<dyn SharedState>,
    cache: Option<cache::ArtifactCache>,
    ticker: ticker::EpochTicker,
    metrics: Option<Arc<Metrics>>,
}

/// Why the runtime could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the WebAssembly runtime: {0}")]
pub struct RuntimeError(String);

impl Runtime {
    /// Builds the engine (and its epoch ticker thread) and the linker.
    pub fn new(
        settings: &RuntimeSettings,
        state: Arc<dyn SharedState>,
    ) -> Result<Self, RuntimeError> {
        let fail = |e: wasmtime::Error| RuntimeError(format!("{e:#}"));
        let n = settings.max_instances.max(1);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(8))
            .total_memories(n.saturating_mul(2))
            .total_tables(n.saturating_mul(8))
            .total_stacks(n)
            .max_core_instances_per_component(64)
            .max_memories_per_component(8)
            .max_tables_per_component(64)
            .max_core_instance_size(8 << 20)
            .max_component_instance_size(8 << 20)
            .table_elements(100_000)
            // Unused slots stay warm (their memory image mapped, up to `keep_resident` bytes
            // resident) for quick reuse by the same plugin; bounding them bounds the memory
            // that old plugin versions can hold after hot reloads.
            .max_unused_warm_slots(32)
            // Reset only the pages a call dirtied (PAGEMAP_SCAN, Linux 6.7+) and keep them
            // resident, instead of dropping them and page-faulting them back next call.
            .pagemap_scan(Enabled::Auto)
            .linear_memory_keep_resident(2 << 20)
            .table_keep_resident(64 << 10);
        let mut config = wasmtime::Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .consume_fuel(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .memory_init_cow(true)
            .table_lazy_init(true)
            .max_wasm_stack(1 << 20)
            .async_stack_size(2 << 20);
        let engine = Engine::new(&config).map_err(fail)?;
        let mut linker: Linker<StageState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(fail)?;
        bindings::host::add_to_linker::<StageState, HasSelf<StageState>>(&mut linker, |s| s)
            .map_err(fail)?;
        bindings::types::add_to_linker::<StageState, HasSelf<StageState>>(&mut linker, |s| s)
            .map_err(fail)?;
        // Every world may import the state interfaces; a component that does not simply
        // leaves them unused, so components built against older worlds still link.
        bindings::counters::add_to_linker::<StageState, HasSelf<StageState>>(&mut linker, |s| s)
            .map_err(fail)?;
        bindings::trace::add_to_linker::<StageState, HasSelf<StageState>>(&mut linker, |s| s)
            .map_err(fail)?;
        bindings::metrics::add_to_linker::<StageState, HasSelf<StageState>>(&mut linker, |s| s)
            .map_err(fail)?;
        bindings::connection::add_to_linker::<StageState, HasSelf<StageState>>(&mut linker, |s| s)
            .map_err(fail)?;
        bindings::limiter::add_to_linker::<StageState, HasSelf<StageState>>(&mut linker, |s| s)
            .map_err(fail)?;
        bindings::kv::add_to_linker::<StageState, HasSelf<StageState>>(&mut linker, |s| s)
            .map_err(fail)?;
        let ticker = ticker::EpochTicker::start(engine.clone())
            .map_err(|e| RuntimeError(format!("cannot start the epoch thread: {e}")))?;
        let cache = settings.cache_dir.as_ref().and_then(|dir| {
            cache::ArtifactCache::open(dir.clone(), &engine)
                .inspect_err(|error| tracing::warn!(%error, "the compiled-plugin cache is off"))
                .ok()
        });
        Ok(Self {
            engine,
            linker,
            state,
            cache,
            ticker,
            metrics: settings.metrics.clone(),
        })
    }

    /// The process's metrics, kept for its whole life (across reloads); `None` when off.
    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.metrics.as_ref()
    }

    /// The shared state backend (counters, limiter cells, key-values).
    pub fn state(&self) -> &Arc<dyn SharedState> {
        &self.state
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles (or loads from the cache) and links the plugin in `path`. Blocking: call it
    /// off the request path.
    pub fn load_file(&self, name: &str, path: &Path) -> Result<Plugin, PluginError> {
        let read_error = |message: String| PluginError::Read {
            plugin: name.to_string(),
            message,
        };
        let meta = std::fs::metadata(path).map_err(|e| read_error(e.to_string()))?;
        crate::plugins::file_kind(&meta).map_err(read_error)?;
        let bytes = std::fs::read(path).map_err(|e| PluginError::Read {
            plugin: name.to_string(),
            message: e.to_string(),
        })?;
        self.load_bytes(name, &bytes)
    }

    /// Compiles (or loads from the cache) and links a plugin from its bytes. Blocking.
    pub fn load_bytes(&self, name: &str, bytes: &[u8]) -> Result<Plugin, PluginError> {
        if !bytes.starts_with(WASM_MAGIC) {
            return Err(PluginError::Compile {
                plugin: name.to_string(),
                message: "not a WebAssembly binary (it does not start with `\\0asm`); only binary components are loaded".into(),
            });
        }
        let hash = content_hash(bytes);
        let cached = self
            .cache
            .as_ref()
            .and_then(|cache| cache.get(&self.engine, &hash));
        let from_cache = cached.is_some();
        let component = match cached {
            Some(component) => component,
            None => {
                let started = Instant::now();
                let component = Component::from_binary(&self.engine, bytes).map_err(|e| {
                    PluginError::Compile {
                        plugin: name.to_string(),
                        message: crate::text::untrusted(&format!("{e:#}")),
                    }
                })?;
                if let Some(metrics) = &self.metrics {
                    metrics.compiled(name, started.elapsed());
                }
                if let Some(cache) = &self.cache {
                    cache.put(&hash, &component);
                }
                component
            }
        };
        let kind = plugin::detect_kind(&self.engine, &component, name)?;
        let pre = plugin::prepare(&self.linker, &component, kind, name)?;
        Ok(Plugin {
            name: name.to_string(),
            kind,
            hash,
            size: bytes.len() as u64,
            loaded_at: SystemTime::now(),
            from_cache,
            pre,
            log_budget: Arc::new(LogBudget::default()),
        })
    }
}

/// The first bytes of every WebAssembly binary.
const WASM_MAGIC: &[u8] = b"\0asm";

/// SHA-256 of a plugin file, in hex: its identity in the cache and the admin API.
pub fn content_hash(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
