//! The on-disk cache of compiled plugins, keyed by the file's content hash and the engine's
//! settings, so a restart or a re-drop of the same bytes skips compilation.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;

use wasmtime::Engine;
use wasmtime::component::Component;

/// Compiled artifacts under one directory.
pub(crate) struct ArtifactCache {
    dir: PathBuf,
    engine_key: String,
}

impl ArtifactCache {
    pub(crate) fn new(dir: PathBuf, engine: &Engine) -> Self {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        env!("CARGO_PKG_VERSION").hash(&mut hasher);
        Self {
            dir,
            engine_key: format!("{:016x}", hasher.finish()),
        }
    }

    fn path(&self, content_hash: &str) -> PathBuf {
        self.dir
            .join(format!("{content_hash}-{}.cwasm", self.engine_key))
    }

    /// The cached compilation of `content_hash`, if any and still loadable.
    pub(crate) fn get(&self, engine: &Engine, content_hash: &str) -> Option<Component> {
        let path = self.path(content_hash);
        if !path.is_file() {
            return None;
        }
        // SAFETY: the file was written by `put` below from a `Component::serialize` of this
        // engine's configuration (the name carries the engine's compatibility hash), and it
        // was renamed into place only once complete. The cache directory must be writable
        // only by the gateway's user, like the gateway binary itself.
        #[expect(unsafe_code, reason = "loading our own precompiled artifacts")]
        let loaded = unsafe { Component::deserialize_file(engine, &path) };
        match loaded {
            Ok(component) => Some(component),
            Err(error) => {
                tracing::warn!(path = %path.display(), error = %format!("{error:#}"), "ignoring unusable cached artifact");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Stores a compilation; failures are logged, never fatal.
    pub(crate) fn put(&self, content_hash: &str, component: &Component) {
        let result = (|| -> std::io::Result<()> {
            let bytes = component
                .serialize()
                .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
            std::fs::create_dir_all(&self.dir)?;
            let final_path = self.path(content_hash);
            let temp = final_path.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&temp, bytes)?;
            std::fs::rename(&temp, &final_path)
        })();
        if let Err(error) = result {
            tracing::warn!(dir = %self.dir.display(), %error, "cannot write the compiled-plugin cache");
        }
    }
}
