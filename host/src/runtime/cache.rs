//! The on-disk cache of compiled plugins, keyed by the file's content hash and the engine's
//! settings, so a restart or a re-drop of the same bytes skips compilation.
//!
//! Compiled artifacts are native code that is loaded without verification, so the cache
//! must be something only the gateway can write:
//!
//! - its directory is created `0700`, and before anything is read from it, it must be
//!   owned by the gateway's user with no group or other permissions (else the cache is
//!   off, with a warning);
//! - every entry carries an HMAC-SHA256 over the engine key, the content hash and the
//!   artifact, under a random key kept in the directory (`key`, `0600`); an entry whose
//!   tag does not verify is deleted, never loaded. Someone who can only write to the
//!   plugins directory (or copy an entry from another gateway) cannot forge one.

use std::fs::{self, OpenOptions};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use wasmtime::Engine;
use wasmtime::component::Component;

type Tag = Hmac<Sha256>;
const TAG_LEN: usize = 32;
const KEY_LEN: usize = 32;

/// Why the cache directory cannot be trusted or used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The directory or key file could not be created or read.
    #[error("{path}: {error}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The directory or key belongs to someone else or is open to others.
    #[error(
        "{path} is owned by uid {owner} with mode {mode:o}; it must be owned by this process's user (uid {uid}) with no group or other permissions"
    )]
    Untrusted {
        /// The path involved.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// Its permission bits.
        mode: u32,
        /// The gateway's user.
        uid: u32,
    },
}

/// Compiled artifacts under one directory.
pub(crate) struct ArtifactCache {
    dir: PathBuf,
    engine_key: String,
    key: [u8; KEY_LEN],
}

impl ArtifactCache {
    /// Opens (creating if needed) the cache in `dir`, checking that only this user can
    /// write to it, and loads (or creates) its signing key.
    pub(crate) fn open(dir: PathBuf, engine: &Engine) -> Result<Self, CacheError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |error| CacheError::Io { path, error }
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io(&dir))?;
        trusted(&dir)?;
        let key_path = dir.join("key");
        let key = match read_key(&key_path)? {
            Some(key) => key,
            None => {
                // Written aside and linked into place, so a concurrent reader never sees a
                // partial key and two gateways starting at once agree on one.
                let key: [u8; KEY_LEN] = rand::random();
                let temp = dir.join(format!("key.tmp{}", std::process::id()));
                let mut file = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&temp)
                    .map_err(io(&temp))?;
                file.write_all(&key).map_err(io(&temp))?;
                let linked = fs::hard_link(&temp, &key_path);
                let _ = fs::remove_file(&temp);
                match linked {
                    Ok(()) => key,
                    Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                        read_key(&key_path)?.ok_or_else(|| {
                            io(&key_path)(std::io::Error::other("the key file vanished"))
                        })?
                    }
                    Err(error) => return Err(io(&key_path)(error)),
                }
            }
        };
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        env!("CARGO_PKG_VERSION").hash(&mut hasher);
        Ok(Self {
            dir,
            engine_key: format!("{:016x}", hasher.finish()),
            key,
        })
    }

    fn path(&self, content_hash: &str) -> PathBuf {
        self.dir
            .join(format!("{content_hash}-{}.cwasm", self.engine_key))
    }

    fn tag(&self, content_hash: &str) -> Tag {
        let mut tag = Tag::new_from_slice(&self.key).expect("HMAC takes any key length");
        tag.update(self.engine_key.as_bytes());
        tag.update(b"\0");
        tag.update(content_hash.as_bytes());
        tag.update(b"\0");
        tag
    }

    /// The cached compilation of `content_hash`, if there is one and its tag verifies.
    pub(crate) fn get(&self, engine: &Engine, content_hash: &str) -> Option<Component> {
        let path = self.path(content_hash);
        let entry = fs::read(&path).ok()?;
        let reject = |why: &str| {
            tracing::warn!(path = %path.display(), why, "deleting a compiled-plugin cache entry");
            let _ = fs::remove_file(&path);
            None
        };
        if entry.len() < TAG_LEN {
            return reject("too short to hold a tag");
        }
        let (artifact, tag) = entry.split_at(entry.len() - TAG_LEN);
        let mut expected = self.tag(content_hash);
        expected.update(artifact);
        if expected.verify_slice(tag).is_err() {
            return reject("its tag does not verify: it was not written by this gateway");
        }
        // SAFETY: the bytes verified against an HMAC whose key only this user can read
        // (checked in `open`), so they are a `Component::serialize` output of an engine with
        // this configuration (the engine key is covered by the tag), written by `put`.
        #[expect(
            unsafe_code,
            reason = "loading our own precompiled, authenticated artifacts"
        )]
        let loaded = unsafe { Component::deserialize(engine, artifact) };
        match loaded {
            Ok(component) => Some(component),
            Err(error) => {
                tracing::warn!(path = %path.display(), error = %format!("{error:#}"), "ignoring unusable cached artifact");
                let _ = fs::remove_file(&path);
                None
            }
        }
    }

    /// Stores a compilation with its tag; failures are logged, never fatal.
    pub(crate) fn put(&self, content_hash: &str, component: &Component) {
        let result = (|| -> std::io::Result<()> {
            let mut bytes = component
                .serialize()
                .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
            let mut tag = self.tag(content_hash);
            tag.update(&bytes);
            bytes.extend_from_slice(&tag.finalize().into_bytes());
            let final_path = self.path(content_hash);
            let temp = final_path.with_extension(format!("tmp{}", std::process::id()));
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&temp)?;
            file.write_all(&bytes)?;
            fs::rename(&temp, &final_path)
        })();
        if let Err(error) = result {
            tracing::warn!(dir = %self.dir.display(), %error, "cannot write the compiled-plugin cache");
        }
    }
}

/// The signing key, if the file exists (it must be trusted and whole).
fn read_key(path: &Path) -> Result<Option<[u8; KEY_LEN]>, CacheError> {
    match fs::read(path) {
        Ok(bytes) => {
            trusted(path)?;
            <[u8; KEY_LEN]>::try_from(bytes.as_slice())
                .map(Some)
                .map_err(|_| CacheError::Io {
                    path: path.to_path_buf(),
                    error: std::io::Error::other("the key file is damaged; delete it"),
                })
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(CacheError::Io {
            path: path.to_path_buf(),
            error,
        }),
    }
}

/// Checks that `path` belongs to this process's user and is closed to everyone else.
fn trusted(path: &Path) -> Result<(), CacheError> {
    let meta = fs::symlink_metadata(path).map_err(|error| CacheError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    let uid = rustix::process::geteuid().as_raw();
    let mode = meta.permissions().mode() & 0o7777;
    if meta.uid() != uid || mode & 0o077 != 0 || meta.file_type().is_symlink() {
        return Err(CacheError::Untrusted {
            path: path.to_path_buf(),
            owner: meta.uid(),
            mode,
            uid,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("wasmgate-cache-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_directory_open_to_others_is_refused() {
        let dir = temp_dir("open");
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let engine = Engine::default();
        let error = ArtifactCache::open(dir.clone(), &engine)
            .err()
            .expect("refused");
        assert!(
            matches!(error, CacheError::Untrusted { mode: 0o777, .. }),
            "{error}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_new_directory_is_private_and_entries_without_a_valid_tag_are_deleted() {
        let dir = temp_dir("forged");
        let engine = Engine::default();
        let cache = ArtifactCache::open(dir.join("nested"), &engine).unwrap();
        let mode = fs::metadata(dir.join("nested"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700);
        let forged = cache.path("abc");
        fs::write(&forged, vec![7u8; 4096]).unwrap();
        assert!(cache.get(&engine, "abc").is_none());
        assert!(!forged.exists(), "a forged entry is deleted");
        fs::remove_dir_all(&dir).unwrap();
    }
}
