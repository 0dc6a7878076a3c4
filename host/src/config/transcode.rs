//! A route's `transcode` key: serve a gRPC upstream as a JSON API from its `.proto` files.
//! The files are compiled here, at load (and so by `wasmgate check`), and their problems
//! reported at the `.proto` file's line; the terminal that serves it is
//! [`crate::pipeline::terminal::transcode`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use super::Checker;
use super::error::Diagnostic;
use super::raw::{RawConfig, UpstreamName};
use crate::transcode::{Api, JsonOptions, LoadError, StreamFormat};

/// `stream-format` by default.
pub const DEFAULT_STREAM_FORMAT: &str = "ndjson";
/// `emit-defaults` by default: fields holding their default value are left out, as proto3
/// JSON does.
pub const DEFAULT_EMIT_DEFAULTS: bool = false;
/// `proto-field-names` by default: lowerCamelCase JSON names.
pub const DEFAULT_PROTO_FIELD_NAMES: bool = false;

/// A route's `transcode` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawTranscode {
    /// The gRPC upstream the calls go to.
    pub upstream: Spanned<UpstreamName>,
    /// The `.proto` files that define the services (relative to the config file).
    pub protos: Spanned<Vec<Spanned<String>>>,
    /// Directories imports are looked up in (relative to the config file); each file's own
    /// directory is searched after them.
    pub include: Option<Vec<Spanned<String>>>,
    /// Services (or single methods) served, by full name; every service when absent.
    pub services: Option<Spanned<Vec<Spanned<String>>>>,
    /// Server-streamed messages as `"ndjson"` (default) or `"sse"`, when `Accept` does not say.
    pub stream_format: Option<Spanned<String>>,
    /// Write fields holding their default value.
    pub emit_defaults: Option<bool>,
    /// Write `.proto` field names instead of lowerCamelCase JSON names.
    pub proto_field_names: Option<bool>,
}

/// A route's `transcode`, checked and compiled.
#[derive(Debug, Clone)]
pub struct TranscodeConfig {
    /// The upstream's name.
    pub upstream: String,
    /// The `.proto` files (resolved paths).
    pub protos: Vec<PathBuf>,
    /// Include directories (resolved paths).
    pub include: Vec<PathBuf>,
    /// The compiled service and its bindings.
    pub api: Arc<Api>,
}

impl TranscodeConfig {
    /// Every file and directory whose change means a recompile: the `.proto` files' and
    /// include directories.
    pub fn watched_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self
            .protos
            .iter()
            .filter_map(|p| p.parent().map(Path::to_path_buf))
            .chain(self.include.iter().cloned())
            .collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }
}

impl Checker<'_, '_> {
    /// Checks a route's `transcode` and compiles its files.
    pub(super) fn transcode(
        &mut self,
        key: &str,
        spanned: &Spanned<RawTranscode>,
        raw: &RawConfig,
        base: &Path,
    ) -> Option<TranscodeConfig> {
        let key = format!("{key}.transcode");
        let t = spanned.get_ref();
        let upstream = t.upstream.get_ref();
        let mut ok = true;
        match raw.upstreams.get(upstream) {
            None => {
                self.report.error(
                    t.upstream.span(),
                    format!("{key}.upstream"),
                    format!("unknown upstream `{upstream}`"),
                );
                ok = false;
            }
            Some(target) => {
                let protocol = target
                    .get_ref()
                    .protocol
                    .as_ref()
                    .map(|p| p.get_ref().as_str());
                if !matches!(protocol, Some("h2c" | "h2")) {
                    self.report.error(
                        t.upstream.span(),
                        format!("{key}.upstream"),
                        format!("upstream `{upstream}` speaks HTTP/1.1, and gRPC needs HTTP/2: set `protocol = \"h2c\"` (or `\"h2\"` over TLS) on it"),
                    );
                }
            }
        }
        if t.protos.get_ref().is_empty() {
            self.report.error(
                t.protos.span(),
                format!("{key}.protos"),
                "needs at least one .proto file",
            );
            return None;
        }
        let stream_format = match t
            .stream_format
            .as_ref()
            .map(|f| (f.get_ref().as_str(), f.span()))
        {
            None | Some(("ndjson", _)) => StreamFormat::Ndjson,
            Some(("sse", _)) => StreamFormat::Sse,
            Some((other, span)) => {
                self.report.error(
                    span,
                    format!("{key}.stream-format"),
                    format!(
                        "unknown format `{}`: expected `ndjson` or `sse`",
                        crate::text::escape_control(other)
                    ),
                );
                ok = false;
                StreamFormat::Ndjson
            }
        };
        let protos: Vec<PathBuf> = t
            .protos
            .get_ref()
            .iter()
            .map(|p| base.join(p.get_ref()))
            .collect();
        let include: Vec<PathBuf> = t
            .include
            .iter()
            .flatten()
            .map(|d| base.join(d.get_ref()))
            .collect();
        for (dir, written) in include.iter().zip(t.include.iter().flatten()) {
            if !dir.is_dir() {
                self.report.error(
                    written.span(),
                    format!("{key}.include"),
                    format!("`{}` is not a directory", dir.display()),
                );
                ok = false;
            }
        }
        let selectors: Vec<String> = t
            .services
            .iter()
            .flat_map(|s| s.get_ref().iter().map(|s| s.get_ref().clone()))
            .collect();
        let json = JsonOptions {
            emit_defaults: t.emit_defaults.unwrap_or(DEFAULT_EMIT_DEFAULTS),
            proto_field_names: t.proto_field_names.unwrap_or(DEFAULT_PROTO_FIELD_NAMES),
        };
        if !ok {
            return None;
        }
        match Api::load(&protos, &include, &selectors, json, stream_format) {
            Ok(api) => Some(TranscodeConfig {
                upstream: upstream.to_string(),
                protos,
                include,
                api: Arc::new(api),
            }),
            Err(LoadError::Proto(error)) => {
                match (error.file.clone(), error.position) {
                    (Some(file), Some((line, column))) => self.report.push(Diagnostic {
                        file,
                        line,
                        column,
                        key: format!("{key}.protos"),
                        message: error.message.clone(),
                        snippet: error.snippet.clone(),
                    }),
                    _ => self.report.error(
                        t.protos.span(),
                        format!("{key}.protos"),
                        error.to_string(),
                    ),
                }
                None
            }
            Err(LoadError::Rules(problems)) => {
                let (span, field) = match &t.services {
                    Some(services) => (services.span(), "services"),
                    None => (t.protos.span(), "protos"),
                };
                for problem in problems {
                    self.report
                        .error(span.clone(), format!("{key}.{field}"), problem);
                }
                None
            }
        }
    }
}
