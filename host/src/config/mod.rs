//! The gateway config: `gateway.toml` parsed ([`raw`]), checked and resolved into [`Config`].
//!
//! Loading never stops at the first problem: every error found is reported, each naming the
//! file, line, column and key (see [`ConfigError`]).

mod cache;
mod checker;
mod compress;
mod decode;
mod error;
mod keypath;
mod model;
pub mod raw;
mod resilience;
mod template;
mod transcode;
mod tunnel;
mod units;

use std::path::Path;

pub use cache::{
    CacheConfig, CacheStoreConfig, DEFAULT_CACHE_OBJECT_BYTES, DEFAULT_CACHE_ROUTE_BYTES,
    DEFAULT_CACHE_TOTAL_BYTES, DEFAULT_COALESCE_WAIT, DEFAULT_HIT_FOR_PASS,
};
pub use checker::default_cache_dir;
pub use compress::{CompressConfig, CompressLevels, ContentCoding, MediaRange};
pub use error::{ConfigError, Diagnostic, Diagnostics};
pub use model::*;
pub use template::{PathTemplate, TemplatePart, path_captures};
pub use transcode::{
    DEFAULT_EMIT_DEFAULTS, DEFAULT_PROTO_FIELD_NAMES, DEFAULT_STREAM_FORMAT, TranscodeConfig,
};
pub use tunnel::{
    DEFAULT_TUNNEL_IDLE_TIMEOUT, DEFAULT_TUNNEL_MAX_LIFETIME, DEFAULT_UPGRADE, TunnelConfig,
    TunnelLimits,
};
pub use units::{ByteSize, ConfigDuration};

use crate::router::RouteKey;
use checker::Checker;
use error::Reporter;
use keypath::{key_path_at, section_of, within};

impl Config {
    /// Every route's router key, in config order.
    pub fn route_keys(&self) -> Vec<RouteKey> {
        self.routes.iter().map(RouteConfig::route_key).collect()
    }

    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let source = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        Self::parse(path, &source)
    }

    /// Checks config text; `path` names it in errors and anchors relative paths.
    ///
    /// Every problem is reported: decode errors (unknown keys, wrong types) and, for what
    /// decodes, the checks after it. Checks inside a section with a decode error are left
    /// out, as the entry taken out of it could make them report what is not wrong.
    pub fn parse(path: &Path, source: &str) -> Result<Self, ConfigError> {
        let mut report = Reporter::new(path, source);
        let decoded = decode::decode(source);
        let config = decoded.raw.and_then(|raw| {
            Checker {
                report: &mut report,
                path,
                source,
            }
            .check(raw)
        });
        if !decoded.errors.is_empty() {
            let sections: Vec<String> = decoded
                .errors
                .iter()
                .map(|error| section_of(&key_path_at(source, error.span.start)))
                .collect();
            report.retain(|found| !sections.iter().any(|section| within(&found.key, section)));
            for error in decoded.errors {
                let key = key_path_at(source, error.span.start);
                report.error(error.span, key, error.message);
            }
        }
        report.finish()?;
        Ok(config.expect("a clean report yields a config"))
    }
}
