//! A compiled, linked plugin: which world it implements and a pre-instantiated component.

use std::sync::Arc;
use std::time::SystemTime;

use wasmtime::Engine;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker};

use super::bindings::{AggregatePre, AuthPre, RateLimitPre, TransformPre};
use super::host::{LogBudget, StageState};

/// The export that every world has.
pub const CONFIG_CHECK_EXPORT: &str = "wasmgate:plugin/config-check@0.1.0";

/// The stage kind a plugin implements, from the WIT world its exports match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginKind {
    /// `world auth`
    Auth,
    /// `world rate-limit`
    RateLimit,
    /// `world transform`
    Transform,
    /// `world aggregate`
    Aggregate,
}

impl PluginKind {
    /// The WIT world's name.
    pub fn world(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::RateLimit => "rate-limit",
            Self::Transform => "transform",
            Self::Aggregate => "aggregate",
        }
    }

    /// The function exports that identify the world.
    fn exports(self) -> &'static [&'static str] {
        match self {
            Self::Auth => &["authenticate"],
            Self::RateLimit => &["check"],
            Self::Transform => &["on-request", "on-response"],
            Self::Aggregate => &["plan", "merge"],
        }
    }

    const ALL: [PluginKind; 4] = [
        Self::Auth,
        Self::RateLimit,
        Self::Transform,
        Self::Aggregate,
    ];
}

impl std::fmt::Display for PluginKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.world())
    }
}

/// Why a plugin file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The file could not be read.
    #[error("cannot read plugin `{plugin}`: {message}")]
    Read {
        /// Plugin name.
        plugin: String,
        /// The I/O error.
        message: String,
    },
    /// The bytes are not a valid WebAssembly component.
    #[error("plugin `{plugin}` is not a valid WebAssembly component: {message}")]
    Compile {
        /// Plugin name.
        plugin: String,
        /// What the compiler said.
        message: String,
    },
    /// The exports match no wasmgate world.
    #[error(
        "plugin `{plugin}` implements no wasmgate world: expected the exports of one of \
         auth (authenticate), rate-limit (check), transform (on-request, on-response) or \
         aggregate (plan, merge), plus `{CONFIG_CHECK_EXPORT}`; found: {found}"
    )]
    WrongWorld {
        /// Plugin name.
        plugin: String,
        /// The exports found.
        found: String,
    },
    /// The component's imports or export types do not fit the world.
    #[error("plugin `{plugin}` does not fit world `{world}`: {message}")]
    Link {
        /// Plugin name.
        plugin: String,
        /// The world its exports suggest.
        world: &'static str,
        /// What did not fit.
        message: String,
    },
}

/// A loaded plugin, ready to instantiate cheaply for each call.
pub struct Plugin {
    /// Its name: the file name without `.wasm`.
    pub name: String,
    /// The world it implements.
    pub kind: PluginKind,
    /// SHA-256 of the file, in hex.
    pub hash: String,
    /// File size in bytes.
    pub size: u64,
    /// When it was loaded.
    pub loaded_at: SystemTime,
    /// Whether the compiled code came from the on-disk cache.
    pub from_cache: bool,
    pub pre: PluginPre,
    pub(crate) log_budget: Arc<LogBudget>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

/// The pre-instantiated component, typed by world.
pub enum PluginPre {
    Auth(AuthPre<StageState>),
    RateLimit(RateLimitPre<StageState>),
    Transform(TransformPre<StageState>),
    Aggregate(AggregatePre<StageState>),
}

/// Finds the world from the component's exports.
pub(crate) fn detect_kind(
    engine: &Engine,
    component: &Component,
    plugin: &str,
) -> Result<PluginKind, PluginError> {
    let ty = component.component_type();
    let exports: Vec<(String, bool)> = ty
        .exports(engine)
        .map(|(name, item)| {
            (
                name.to_string(),
                matches!(item.ty, ComponentItem::ComponentFunc(_)),
            )
        })
        .collect();
    let has = |name: &str| exports.iter().any(|(n, is_func)| n == name && *is_func);
    let matching: Vec<PluginKind> = PluginKind::ALL
        .into_iter()
        .filter(|kind| kind.exports().iter().all(|export| has(export)))
        .collect();
    let has_config_check = exports.iter().any(|(n, _)| n == CONFIG_CHECK_EXPORT);
    match matching.as_slice() {
        [kind] if has_config_check => Ok(*kind),
        _ => {
            let found: Vec<&str> = exports.iter().map(|(n, _)| n.as_str()).collect();
            let found = if found.is_empty() {
                "no exports".to_string()
            } else {
                found.join(", ")
            };
            Err(PluginError::WrongWorld {
                plugin: plugin.to_string(),
                found,
            })
        }
    }
}

/// Links `component` as `kind`, checking its imports and export types.
pub(crate) fn prepare(
    linker: &Linker<StageState>,
    component: &Component,
    kind: PluginKind,
    plugin: &str,
) -> Result<PluginPre, PluginError> {
    let link = |error: wasmtime::Error| PluginError::Link {
        plugin: plugin.to_string(),
        world: kind.world(),
        message: crate::text::untrusted(&format!("{error:#}")),
    };
    let pre = linker.instantiate_pre(component).map_err(link)?;
    Ok(match kind {
        PluginKind::Auth => PluginPre::Auth(AuthPre::new(pre).map_err(link)?),
        PluginKind::RateLimit => PluginPre::RateLimit(RateLimitPre::new(pre).map_err(link)?),
        PluginKind::Transform => PluginPre::Transform(TransformPre::new(pre).map_err(link)?),
        PluginKind::Aggregate => PluginPre::Aggregate(AggregatePre::new(pre).map_err(link)?),
    })
}
