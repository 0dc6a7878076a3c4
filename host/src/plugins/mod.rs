//! The plugin directory: every `NAME.wasm` in it is plugin `NAME`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::runtime::{Plugin, Runtime};

/// The plugins currently known: loaded ones, and files that were rejected with why.
#[derive(Debug, Default, Clone)]
pub struct PluginSet {
    /// Loaded plugins by name.
    pub loaded: BTreeMap<String, Arc<Plugin>>,
    /// Files that failed to load, by plugin name, with the error.
    pub rejected: BTreeMap<String, String>,
}

/// The plugin name of a path: `dir/NAME.wasm` is `NAME`; other files are not plugins.
pub fn plugin_name(path: &Path) -> Option<String> {
    if path.extension()? != "wasm" {
        return None;
    }
    let stem = path.file_stem()?.to_str()?;
    let valid = !stem.is_empty()
        && stem
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    valid.then(|| stem.to_string())
}

/// What a plugin path holds: `Ok` for a regular file (or a link to one), `Err` with why
/// anything else (a directory, FIFO, socket or device) is not a plugin file.
pub fn file_kind(meta: &std::fs::Metadata) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    let kind = meta.file_type();
    let what = if kind.is_file() {
        return Ok(());
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else {
        "not a file"
    };
    Err(format!("not a regular file ({what})"))
}

/// The `NAME.wasm` entries in `dir` (files, or anything else under such a name, which then
/// fails to load with a clear reason), by plugin name.
pub fn plugin_files(dir: &Path) -> BTreeMap<String, PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter_map(|path| plugin_name(&path).map(|name| (name, path)))
        .collect()
}

/// Loads every plugin in `dir`. Blocking (compiles): call it off the request path.
pub fn load_dir(runtime: &Runtime, dir: &Path) -> PluginSet {
    let mut set = PluginSet::default();
    for (name, path) in plugin_files(dir) {
        match runtime.load_file(&name, &path) {
            Ok(plugin) => {
                tracing::info!(plugin = %name, world = %plugin.kind, hash = %&plugin.hash[..12], from_cache = plugin.from_cache, "plugin loaded");
                set.loaded.insert(name, Arc::new(plugin));
            }
            Err(error) => {
                tracing::error!(plugin = %name, file = %path.display(), %error, "plugin rejected");
                set.rejected.insert(name, error.to_string());
            }
        }
    }
    set
}
