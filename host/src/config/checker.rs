//! The checks that turn a decoded [`RawConfig`] into a [`Config`], recording every problem
//! with its place in the file.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::Method;
use http::uri::Authority;
use toml::Spanned;

use super::cache::{CacheStoreConfig, DEFAULT_CACHE_TOTAL_BYTES};
use super::error::Reporter;
use super::model::*;
use super::raw::{
    self, RawConfig, RawLimits, RawPlugins, RawRoute, RawStage, RawTracing, RawUpstream,
};
use super::template::{PathTemplate, path_captures};
use super::tunnel::{DEFAULT_TUNNEL_IDLE_TIMEOUT, DEFAULT_TUNNEL_MAX_LIFETIME, TunnelLimits};
use crate::normalize::{EscapedSlashes, PathPolicy};
use crate::router::RouteKey;

/// Turns a [`RawConfig`] into a [`Config`], recording every problem.
pub(super) struct Checker<'r, 'a> {
    pub(super) report: &'r mut Reporter<'a>,
    pub(super) path: &'a Path,
    pub(super) source: &'a str,
}

impl Checker<'_, '_> {
    fn location(&self, span: &Range<usize>) -> String {
        let start = span.start.min(self.source.len());
        let line = self.source[..start].matches('\n').count() + 1;
        let line_start = self.source[..start].rfind('\n').map_or(0, |i| i + 1);
        let column = self.source[line_start..start].chars().count() + 1;
        format!("{}:{line}:{column}", self.path.display())
    }

    pub(super) fn check(mut self, raw: RawConfig) -> Option<Config> {
        let base = self.path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let server = self.server(&raw, &base);
        let defaults = StageLimits::default().overridden_by(&raw.limits);
        self.limits("limits", &raw.limits, 0..0);
        let plugin_limits: BTreeMap<String, StageLimits> = raw
            .plugins
            .limits
            .iter()
            .map(|(name, limits)| {
                self.limits(
                    &format!("plugins.limits.{name}"),
                    limits.get_ref(),
                    limits.span(),
                );
                (name.to_string(), defaults.overridden_by(limits.get_ref()))
            })
            .collect();
        let dir = base.join(raw.plugins.dir.as_deref().unwrap_or(DEFAULT_PLUGIN_DIR));
        let cache_dir = raw
            .plugins
            .cache_dir
            .as_deref()
            .map_or_else(default_cache_dir, |cache| base.join(cache));
        if inside(&cache_dir, &dir) {
            self.report.error(
                0..0,
                "plugins.cache-dir",
                format!(
                    "`{}` is inside the plugins directory; compiled code must live where only the gateway writes (leave the key out for the default, `$XDG_CACHE_HOME/wasmgate`)",
                    cache_dir.display()
                ),
            );
        }
        let max_instances = raw.plugins.max_instances.unwrap_or(DEFAULT_MAX_INSTANCES);
        if max_instances == 0 {
            self.report
                .error(0..0, "plugins.max-instances", "must be at least 1");
        }
        let output = self.output_limits(&raw.plugins, &server);
        let plugins = PluginsConfig {
            dir,
            cache_dir,
            watch: raw.plugins.watch.unwrap_or(true),
            max_instances,
            output,
            counters: CounterBudget {
                keys: raw.plugins.counter_keys.unwrap_or(DEFAULT_COUNTER_KEYS),
                bytes: raw
                    .plugins
                    .counter_bytes
                    .map_or(DEFAULT_COUNTER_BYTES, |b| b.0 as usize),
            },
        };
        let admin = raw.admin.as_ref().and_then(|admin| {
            let listen = self.socket_addr(&admin.listen, "admin.listen")?;
            Some(AdminConfig {
                listen,
                metrics: admin.metrics.unwrap_or(DEFAULT_ADMIN_METRICS),
            })
        });
        let tracing = raw.tracing.as_ref().and_then(|t| self.tracing(t));
        let upstreams: BTreeMap<String, Arc<UpstreamConfig>> = raw
            .upstreams
            .iter()
            .filter_map(|(name, upstream)| {
                self.upstream(name, upstream, &base)
                    .map(|u| (name.to_string(), Arc::new(u)))
            })
            .collect();
        let routes = self.routes(&raw, &server, defaults, &plugin_limits);
        let state = raw
            .state
            .as_ref()
            .map_or(StateConfig::Local, |state| self.state(state));
        if !self.report.is_clean() {
            return None;
        }
        Some(Config {
            file: self.path.to_path_buf(),
            server,
            plugins,
            admin,
            tracing,
            cache: CacheStoreConfig {
                max_bytes: raw
                    .cache
                    .max_bytes
                    .map_or(DEFAULT_CACHE_TOTAL_BYTES, |b| b.0),
            },
            upstreams,
            routes,
            state,
        })
    }

    fn state(&mut self, raw: &Spanned<raw::RawState>) -> StateConfig {
        let span = raw.span();
        let s = raw.get_ref();
        match s.backend.as_ref().map(|b| (b.get_ref().as_str(), b.span())) {
            None | Some(("local", _)) => {
                if let Some(url) = &s.url {
                    self.report.error(
                        url.span(),
                        "state.url",
                        "only the `redis` backend takes a URL: add `backend = \"redis\"`",
                    );
                }
                StateConfig::Local
            }
            Some(("redis", _)) => self.redis(s, span),
            Some((other, span)) => {
                self.report.error(
                    span,
                    "state.backend",
                    format!(
                        "unknown backend `{}`: expected `local` or `redis`",
                        crate::text::escape_control(other)
                    ),
                );
                StateConfig::Local
            }
        }
    }

    fn redis(&mut self, s: &raw::RawState, span: Range<usize>) -> StateConfig {
        let url = match &s.url {
            None => {
                self.report.error(
                    span.clone(),
                    "state.url",
                    "the `redis` backend needs a URL, such as `redis://127.0.0.1:6379`",
                );
                String::new()
            }
            Some(url) => {
                let text = url.get_ref();
                let shown = crate::text::escape_control(&redact_url(text)).into_owned();
                if text.starts_with("rediss://") {
                    self.report.error(
                        url.span(),
                        "state.url",
                        format!("`{shown}`: TLS to Redis (`rediss://`) is not supported yet; use `redis://` on a trusted network"),
                    );
                } else if let Err(error) = redis::Client::open(text.as_str()) {
                    // The crate's error text can quote the URL: say what is wrong without it.
                    let kind = if text.starts_with("redis://")
                        || text.starts_with("redis+unix://")
                        || text.starts_with("unix://")
                    {
                        format!("{:?}", error.kind())
                    } else {
                        "expected `redis://host:port[/db]`".to_string()
                    };
                    self.report.error(
                        url.span(),
                        "state.url",
                        format!("`{shown}` is not a valid Redis URL ({kind})"),
                    );
                }
                text.clone()
            }
        };
        let key_prefix = match &s.key_prefix {
            None => DEFAULT_STATE_KEY_PREFIX.to_string(),
            Some(prefix) => {
                let text = prefix.get_ref();
                let valid = !text.is_empty()
                    && text.len() <= 64
                    && text
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
                if !valid {
                    self.report.error(
                        prefix.span(),
                        "state.key-prefix",
                        "use 1 to 64 letters, digits, `-`, `_`, `.` and `:`",
                    );
                }
                text.clone()
            }
        };
        let on_unavailable = match s
            .on_unavailable
            .as_ref()
            .map(|p| (p.get_ref().as_str(), p.span()))
        {
            None => Unavailable::Closed,
            Some(("closed", _)) => Unavailable::Closed,
            Some(("open", _)) => Unavailable::Open,
            Some(("local", _)) => Unavailable::Local,
            Some((other, span)) => {
                self.report.error(
                    span,
                    "state.on-unavailable",
                    format!(
                        "unknown policy `{}`: expected `closed`, `open` or `local`",
                        crate::text::escape_control(other)
                    ),
                );
                Unavailable::Closed
            }
        };
        let mut at_least_one = |value: &Option<Spanned<u32>>, key: &str, default: u32| match value {
            None => default,
            Some(value) => {
                if *value.get_ref() == 0 {
                    self.report.error(value.span(), key, "must be at least 1");
                }
                (*value.get_ref()).max(1)
            }
        };
        let connections = at_least_one(
            &s.connections,
            "state.connections",
            DEFAULT_STATE_CONNECTIONS,
        );
        let instances = at_least_one(&s.instances, "state.instances", DEFAULT_STATE_INSTANCES);
        let breaker_failures = at_least_one(
            &s.breaker_failures,
            "state.breaker-failures",
            DEFAULT_STATE_BREAKER_FAILURES,
        );
        let timeout = s.timeout.map_or(DEFAULT_STATE_TIMEOUT, |d| d.0);
        if timeout.is_zero() {
            self.report
                .error(span.clone(), "state.timeout", "must be more than 0ms");
        }
        StateConfig::Redis(RedisConfig {
            url,
            cluster: s.cluster.unwrap_or(DEFAULT_STATE_CLUSTER),
            key_prefix,
            timeout,
            connect_timeout: s
                .connect_timeout
                .map_or(DEFAULT_STATE_CONNECT_TIMEOUT, |d| d.0),
            connections: connections as usize,
            on_unavailable,
            instances,
            breaker_failures,
            breaker_cool_off: s
                .breaker_cool_off
                .map_or(DEFAULT_STATE_BREAKER_COOL_OFF, |d| d.0),
        })
    }

    fn tracing(&mut self, raw: &RawTracing) -> Option<TracingConfig> {
        let endpoint = match raw.endpoint.get_ref().parse::<http::Uri>() {
            Ok(uri) if uri.scheme_str() == Some("http") && uri.authority().is_some() => Some(uri),
            _ => {
                self.report.error(
                    raw.endpoint.span(),
                    "tracing.endpoint",
                    format!(
                        "`{}` is not an OTLP/HTTP endpoint: expected http://HOST:PORT/v1/traces",
                        crate::text::escape_control(raw.endpoint.get_ref())
                    ),
                );
                None
            }
        };
        let sampling_ratio = match &raw.sampling_ratio {
            Some(ratio) if !(0.0..=1.0).contains(ratio.get_ref()) => {
                self.report.error(
                    ratio.span(),
                    "tracing.sampling-ratio",
                    "must be between 0.0 and 1.0",
                );
                None
            }
            Some(ratio) => Some(*ratio.get_ref()),
            None => Some(DEFAULT_SAMPLING_RATIO),
        };
        let service_name = match &raw.service_name {
            Some(name)
                if name.get_ref().is_empty() || name.get_ref().chars().any(char::is_control) =>
            {
                self.report.error(
                    name.span(),
                    "tracing.service-name",
                    "must be a non-empty name without control characters",
                );
                None
            }
            Some(name) => Some(name.get_ref().clone()),
            None => Some(DEFAULT_SERVICE_NAME.to_string()),
        };
        Some(TracingConfig {
            endpoint: endpoint?,
            sampling_ratio: sampling_ratio?,
            trust_incoming_sampled: raw
                .trust_incoming_sampled
                .unwrap_or(DEFAULT_TRUST_INCOMING_SAMPLED),
            service_name: service_name?,
            export_interval: raw.export_interval.map_or(DEFAULT_EXPORT_INTERVAL, |d| d.0),
            export_timeout: raw.export_timeout.map_or(DEFAULT_EXPORT_TIMEOUT, |d| d.0),
        })
    }

    fn server(&mut self, raw: &RawConfig, base: &Path) -> ServerConfig {
        let s = &raw.server;
        let listeners: Vec<ListenerConfig> = raw
            .listeners
            .iter()
            .enumerate()
            .filter_map(|(index, listener)| {
                self.listener(&format!("listeners[{index}]"), listener.get_ref(), base)
            })
            .collect();
        let listen = match &s.listen {
            None if !raw.listeners.is_empty() => Vec::new(),
            None => vec![DEFAULT_LISTEN.parse().expect("the default address parses")],
            Some(list) => {
                if list.get_ref().is_empty() && raw.listeners.is_empty() {
                    self.report
                        .error(list.span(), "server.listen", "needs at least one address");
                }
                list.get_ref()
                    .iter()
                    .filter_map(|addr| self.socket_addr(addr, "server.listen"))
                    .collect()
            }
        };
        let max_connections = s.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if max_connections == 0 {
            self.report
                .error(0..0, "server.max-connections", "must be at least 1");
        }
        let escaped_slashes = match s
            .escaped_slashes
            .as_ref()
            .map(|e| (e.get_ref().as_str(), e.span()))
        {
            None | Some(("reject", _)) => EscapedSlashes::Reject,
            Some(("keep", _)) => EscapedSlashes::Keep,
            Some(("decode", _)) => EscapedSlashes::Decode,
            Some((other, span)) => {
                self.report.error(
                    span,
                    "server.escaped-slashes",
                    format!("unknown policy `{other}`: expected `reject`, `keep` or `decode`"),
                );
                EscapedSlashes::Reject
            }
        };
        ServerConfig {
            listen,
            listeners,
            header_read_timeout: s
                .header_read_timeout
                .map_or(DEFAULT_HEADER_READ_TIMEOUT, |d| d.0),
            idle_timeout: s.idle_timeout.map_or(DEFAULT_IDLE_TIMEOUT, |d| d.0),
            max_header_bytes: s
                .max_header_bytes
                .map_or(DEFAULT_MAX_HEADER_BYTES, |b| b.0 as usize),
            max_body_bytes: s.max_body_bytes.map(|b| b.0),
            max_connections: max_connections as usize,
            shutdown_grace: s.shutdown_grace.map_or(DEFAULT_SHUTDOWN_GRACE, |d| d.0),
            tunnel: TunnelLimits {
                idle_timeout: self.tunnel_duration(
                    "server.tunnel-idle-timeout",
                    s.tunnel_idle_timeout.as_ref(),
                    DEFAULT_TUNNEL_IDLE_TIMEOUT,
                ),
                max_lifetime: self.tunnel_duration(
                    "server.tunnel-max-lifetime",
                    s.tunnel_max_lifetime.as_ref(),
                    DEFAULT_TUNNEL_MAX_LIFETIME,
                ),
            },
            path_policy: PathPolicy {
                escaped_slashes,
                merge_slashes: s.merge_slashes.unwrap_or(true),
            },
        }
    }

    fn output_limits(&mut self, raw: &RawPlugins, server: &ServerConfig) -> OutputLimits {
        let header_fields = raw.output_header_fields.unwrap_or(MAX_HEADER_FIELDS);
        if header_fields == 0 || header_fields > HEADER_FIELDS_CEILING {
            self.report.error(
                0..0,
                "plugins.output-header-fields",
                format!("must be between 1 and {HEADER_FIELDS_CEILING}"),
            );
        }
        let aggregate_calls = raw.aggregate_calls.unwrap_or(DEFAULT_AGGREGATE_CALLS);
        if aggregate_calls == 0 || aggregate_calls > 1024 {
            self.report.error(
                0..0,
                "plugins.aggregate-calls",
                "must be between 1 and 1024",
            );
        }
        let aggregate_bytes = raw.aggregate_bytes.map_or(DEFAULT_AGGREGATE_BYTES, |b| b.0);
        let aggregate_bytes_total = raw
            .aggregate_bytes_total
            .map_or(DEFAULT_AGGREGATE_BYTES_TOTAL, |b| b.0);
        if aggregate_bytes > aggregate_bytes_total {
            self.report.error(
                0..0,
                "plugins.aggregate-bytes",
                "must not be more than `plugins.aggregate-bytes-total`",
            );
        }
        if aggregate_bytes_total > u64::from(u32::MAX) {
            self.report.error(
                0..0,
                "plugins.aggregate-bytes-total",
                "must be at most 4GiB",
            );
        }
        OutputLimits {
            header_fields,
            header_bytes: raw
                .output_header_bytes
                .map_or(server.max_header_bytes, |b| b.0 as usize),
            aggregate_calls,
            aggregate_bytes,
            aggregate_bytes_total,
        }
    }

    fn limits(&mut self, key: &str, raw: &RawLimits, span: Range<usize>) {
        if raw.memory.is_some_and(|m| m.0 < 64 << 10) {
            self.report.error(
                span.clone(),
                format!("{key}.memory"),
                "must be at least 64KiB (one wasm page)",
            );
        }
        if raw.deadline.is_some_and(|d| d.0.is_zero()) {
            self.report.error(
                span.clone(),
                format!("{key}.deadline"),
                "must be more than zero",
            );
        }
        let reuse = raw.reuse.unwrap_or_default();
        if reuse.max_calls == Some(0) {
            self.report.error(
                span.clone(),
                format!("{key}.reuse.max-calls"),
                "must be at least 1 (1 is a fresh instance per call)",
            );
        }
        if reuse.max_idle == Some(0) {
            self.report.error(
                span.clone(),
                format!("{key}.reuse.max-idle"),
                "must be at least 1; leave `reuse` out for a fresh instance per call",
            );
        }
        if reuse.max_memory.is_some_and(|m| m.0 < 64 << 10) {
            self.report.error(
                span,
                format!("{key}.reuse.max-memory"),
                "must be at least 64KiB (one wasm page)",
            );
        }
    }

    fn socket_addr(&mut self, text: &Spanned<String>, key: &str) -> Option<SocketAddr> {
        match text.get_ref().parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.report.error(
                    text.span(),
                    key,
                    format!(
                        "`{}` is not an address: expected IP:PORT, such as 127.0.0.1:8080",
                        text.get_ref()
                    ),
                );
                None
            }
        }
    }

    /// A `[[listeners]]` entry; its certificate files are read and checked.
    fn listener(
        &mut self,
        key: &str,
        raw: &raw::RawListener,
        base: &Path,
    ) -> Option<ListenerConfig> {
        let address = self.socket_addr(&raw.address, &format!("{key}.address"));
        let min_version = match raw
            .min_tls_version
            .as_ref()
            .map_or((DEFAULT_MIN_TLS_VERSION, 0..0), |v| {
                (v.get_ref().as_str(), v.span())
            }) {
            ("1.2", _) => TlsVersion::Tls12,
            ("1.3", _) => TlsVersion::Tls13,
            (other, span) => {
                self.report.error(
                    span,
                    format!("{key}.min-tls-version"),
                    format!(
                        "`{other}` is not a TLS version the gateway offers: use \"1.2\" or \"1.3\""
                    ),
                );
                TlsVersion::Tls12
            }
        };
        if raw.certificates.is_empty() {
            if let Some(version) = &raw.min_tls_version {
                self.report.error(
                    version.span(),
                    format!("{key}.min-tls-version"),
                    "a listener without `certificates` is plain HTTP; add a certificate for TLS",
                );
            }
            return Some(ListenerConfig {
                address: address?,
                tls: None,
            });
        }
        let mut certificates = Vec::new();
        let mut served: BTreeMap<String, usize> = BTreeMap::new();
        for (index, spanned) in raw.certificates.iter().enumerate() {
            let key = format!("{key}.certificates[{index}]");
            if let Some((certificate, names)) = self.certificate(&key, spanned, base) {
                for name in names {
                    if let Some(first) = served.insert(name.clone(), index) {
                        self.report.error(
                            spanned.span(),
                            format!("{key}.names"),
                            format!("`{name}` is already served by certificates[{first}]"),
                        );
                    }
                }
                certificates.push(certificate);
            }
        }
        let defaults = certificates.iter().filter(|c| c.default).count();
        if defaults > 1 {
            self.report.error(
                raw.certificates[0].span(),
                format!("{key}.certificates"),
                "more than one certificate has `default = true`",
            );
        }
        if defaults == 0
            && let Some(first) = certificates.first_mut()
        {
            first.default = true;
        }
        Some(ListenerConfig {
            address: address?,
            tls: Some(ListenerTls {
                min_version,
                certificates,
            }),
        })
    }

    /// A certificate entry, and the SNI names it serves (when its files could be read).
    fn certificate(
        &mut self,
        key: &str,
        spanned: &Spanned<raw::RawCertificate>,
        base: &Path,
    ) -> Option<(CertificateConfig, Vec<String>)> {
        let raw = spanned.get_ref();
        let (cert, key_file) = (base.join(raw.cert.get_ref()), base.join(raw.key.get_ref()));
        let pair = match crate::tls::certs::load_pair(&cert, &key_file) {
            Ok(pair) => Some(pair),
            Err(error) => {
                let (span, field) = match &error {
                    crate::tls::CertError::Read { path, .. }
                    | crate::tls::CertError::Pem { path, .. }
                        if *path == key_file =>
                    {
                        (raw.key.span(), "key")
                    }
                    crate::tls::CertError::Key { .. } => (raw.key.span(), "key"),
                    _ => (raw.cert.span(), "cert"),
                };
                self.report
                    .error(span, format!("{key}.{field}"), error.to_string());
                None
            }
        };
        let names: Vec<String> = raw
            .names
            .iter()
            .flatten()
            .filter_map(|name| {
                let text = name.get_ref().to_ascii_lowercase();
                if is_server_name_pattern(&text) {
                    Some(text)
                } else {
                    self.report.error(
                        name.span(),
                        format!("{key}.names"),
                        format!("`{text}` is not a server name (use `api.example.com` or `*.example.com`)"),
                    );
                    None
                }
            })
            .collect();
        if raw.names.is_none()
            && let Some(pair) = &pair
            && pair.info.dns_names.is_empty()
        {
            self.report.error(
                raw.cert.span(),
                format!("{key}.names"),
                "the certificate has no DNS names; list the SNI names it serves in `names`",
            );
        }
        let ca = raw.client_ca.as_ref().map(|ca| {
            let path = base.join(ca.get_ref());
            if let Err(error) = crate::tls::certs::load_roots(&path) {
                self.report
                    .error(ca.span(), format!("{key}.client-ca"), error.to_string());
            }
            path
        });
        let mode = raw
            .client_auth
            .as_ref()
            .map_or((DEFAULT_CLIENT_AUTH, 0..0), |m| {
                (m.get_ref().as_str(), m.span())
            });
        let client_auth = match (mode, ca) {
            (("off", _), None) => ClientAuth::Off,
            (("off", _), Some(_)) => {
                let span = raw.client_ca.as_ref().map_or(0..0, Spanned::span);
                self.report.error(
                    span,
                    format!("{key}.client-ca"),
                    "`client-ca` needs `client-auth = \"optional\"` or `\"required\"`",
                );
                ClientAuth::Off
            }
            (("optional" | "required", span), None) => {
                self.report.error(
                    span,
                    format!("{key}.client-auth"),
                    "client certificates need `client-ca`: the CA bundle they must chain to",
                );
                ClientAuth::Off
            }
            (("optional", _), Some(ca)) => ClientAuth::Optional { ca },
            (("required", _), Some(ca)) => ClientAuth::Required { ca },
            ((other, span), _) => {
                self.report.error(
                    span,
                    format!("{key}.client-auth"),
                    format!("unknown policy `{other}`: expected `off`, `optional` or `required`"),
                );
                ClientAuth::Off
            }
        };
        let served = if raw.names.is_some() {
            names.clone()
        } else {
            pair.map(|pair| pair.info.dns_names).unwrap_or_default()
        };
        let config = CertificateConfig {
            cert,
            key: key_file,
            names,
            default: raw.default.unwrap_or(false),
            client_auth,
        };
        Some((config, served))
    }

    /// An upstream's TLS settings, its files read and checked; `None` for plain HTTP.
    fn upstream_tls(
        &mut self,
        key: &str,
        raw: &RawUpstream,
        https: bool,
        targets: &[Authority],
        base: &Path,
    ) -> Option<UpstreamTlsConfig> {
        let tls = https || raw.tls == Some(true);
        let tls_keys = [
            (&raw.tls_server_name, "tls-server-name"),
            (&raw.tls_ca, "tls-ca"),
            (&raw.tls_client_cert, "tls-client-cert"),
            (&raw.tls_client_key, "tls-client-key"),
        ];
        if !tls {
            for (value, name) in tls_keys {
                if let Some(value) = value {
                    self.report.error(
                        value.span(),
                        format!("{key}.{name}"),
                        "this upstream speaks plain HTTP; use https:// targets or `tls = true`",
                    );
                }
            }
            return None;
        }
        let server_name = raw.tls_server_name.as_ref().and_then(|name| {
            let text = name.get_ref().to_ascii_lowercase();
            if rustls::pki_types::ServerName::try_from(text.as_str()).is_ok() {
                Some(text)
            } else {
                self.report.error(
                    name.span(),
                    format!("{key}.tls-server-name"),
                    format!("`{text}` is not a server name"),
                );
                None
            }
        });
        if raw.tls_server_name.is_none() {
            for target in targets {
                if target
                    .host()
                    .trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .is_ok()
                {
                    self.report.error(
                        raw.targets.span(),
                        format!("{key}.tls-server-name"),
                        format!(
                            "target `{target}` is an IP address: set `tls-server-name` to the name its certificate is verified against"
                        ),
                    );
                    break;
                }
            }
        }
        let ca = raw.tls_ca.as_ref().map(|ca| {
            let path = base.join(ca.get_ref());
            if let Err(error) = crate::tls::certs::load_roots(&path) {
                self.report
                    .error(ca.span(), format!("{key}.tls-ca"), error.to_string());
            }
            path
        });
        let client_cert = match (&raw.tls_client_cert, &raw.tls_client_key) {
            (None, None) => None,
            (Some(cert), Some(client_key)) => {
                let (cert_path, key_path) =
                    (base.join(cert.get_ref()), base.join(client_key.get_ref()));
                if let Err(error) = crate::tls::certs::load_pair(&cert_path, &key_path) {
                    self.report.error(
                        cert.span(),
                        format!("{key}.tls-client-cert"),
                        error.to_string(),
                    );
                }
                Some((cert_path, key_path))
            }
            (Some(one), None) | (None, Some(one)) => {
                self.report.error(
                    one.span(),
                    format!("{key}.tls-client-cert"),
                    "set both `tls-client-cert` and `tls-client-key`",
                );
                None
            }
        };
        Some(UpstreamTlsConfig {
            server_name,
            ca,
            client_cert,
        })
    }

    fn balance(&mut self, key: &str, raw: &RawUpstream) -> Balance {
        let span = raw.balance.as_ref().map_or(0..0, Spanned::span);
        let balance = match raw.balance.as_ref().map(|b| b.get_ref().as_str()) {
            None | Some("least-request") => Balance::LeastRequest,
            Some("round-robin") => Balance::RoundRobin,
            Some("weighted-round-robin") => Balance::WeightedRoundRobin,
            Some("random") => Balance::Random,
            Some("hash") => match &raw.hash_on {
                None => {
                    self.report.error(
                        span,
                        format!("{key}.hash-on"),
                        "`balance = \"hash\"` needs `hash-on`: `client-ip`, `header:NAME`, `cookie:NAME` or `param:NAME`",
                    );
                    Balance::LeastRequest
                }
                Some(on) => match parse_hash_on(on.get_ref()) {
                    Some(on) => Balance::Hash(on),
                    None => {
                        self.report.error(
                            on.span(),
                            format!("{key}.hash-on"),
                            format!(
                                "`{}` is not `client-ip`, `header:NAME`, `cookie:NAME` or `param:NAME`",
                                crate::text::escape_control(on.get_ref())
                            ),
                        );
                        Balance::LeastRequest
                    }
                },
            },
            Some(other) => {
                self.report.error(
                    span,
                    format!("{key}.balance"),
                    format!("unknown policy `{other}`: expected `least-request`, `round-robin`, `weighted-round-robin`, `random` or `hash`"),
                );
                Balance::LeastRequest
            }
        };
        if raw.hash_on.is_some() && !matches!(balance, Balance::Hash(_)) {
            let span = raw.hash_on.as_ref().map_or(0..0, Spanned::span);
            self.report.error(
                span,
                format!("{key}.hash-on"),
                "only applies with `balance = \"hash\"`",
            );
        }
        balance
    }

    fn upstream(
        &mut self,
        name: &str,
        spanned: &Spanned<RawUpstream>,
        base: &Path,
    ) -> Option<UpstreamConfig> {
        let key = format!("upstreams.{name}");
        let raw = spanned.get_ref();
        if raw.targets.get_ref().is_empty() {
            self.report.error(
                raw.targets.span(),
                format!("{key}.targets"),
                "needs at least one target",
            );
        }
        let mut targets = Vec::new();
        let mut weights = Vec::new();
        let (mut https, mut http) = (false, false);
        for target in raw.targets.get_ref() {
            let (text, weight) = match target.get_ref().split_once(char::is_whitespace) {
                Some((address, rest)) => {
                    let weight = rest
                        .trim()
                        .strip_prefix("weight=")
                        .and_then(|w| w.parse::<u32>().ok())
                        .filter(|w| (1..=1000).contains(w));
                    if weight.is_none() {
                        self.report.error(
                            target.span(),
                            format!("{key}.targets"),
                            format!("`{rest}` after the address: expected `weight=N` (1-1000)"),
                        );
                    }
                    (address, weight.unwrap_or(1))
                }
                None => (target.get_ref().as_str(), 1),
            };
            let (scheme_https, rest) =
                match (text.strip_prefix("https://"), text.strip_prefix("http://")) {
                    (Some(rest), _) => (true, rest),
                    (None, Some(rest)) => (false, rest),
                    (None, None) => (false, text),
                };
            https |= scheme_https;
            http |= !scheme_https;
            let bare = rest.trim_end_matches('/');
            match bare.parse::<Authority>() {
                Ok(authority) if !bare.contains('@') && (authority.port_u16().is_some() || scheme_https) => {
                    let authority = if authority.port_u16().is_none() {
                        format!("{bare}:443").parse().unwrap_or(authority)
                    } else {
                        authority
                    };
                    targets.push(authority);
                    weights.push(weight);
                }
                _ => self.report.error(
                    target.span(),
                    format!("{key}.targets"),
                    format!("`{text}` is not a target: expected HOST:PORT, http://HOST:PORT or https://HOST[:PORT]"),
                ),
            }
        }
        if https && (http || raw.tls == Some(false)) {
            self.report.error(
                raw.targets.span(),
                format!("{key}.targets"),
                "mixes https:// and plain targets: list all targets as https://, or as HOST:PORT with `tls = true`",
            );
        }
        // A mixed list is reported once; its TLS settings are not checked further.
        let tls = if https && http {
            None
        } else {
            self.upstream_tls(&key, raw, https, &targets, base)
        };
        let balance = self.balance(&key, raw);
        let protocol = self.protocol(&key, raw, tls.is_some() || https);
        let health_check = raw
            .health_check
            .as_ref()
            .map(|h| self.health_check(&format!("{key}.health-check"), h.get_ref()));
        if let (
            Some(HealthCheck {
                kind: CheckKind::Grpc { .. },
                ..
            }),
            Some(raw_check),
        ) = (&health_check, &raw.health_check)
            && !protocol.is_http2()
        {
            let span = raw_check
                .get_ref()
                .kind
                .as_ref()
                .map_or(0..0, Spanned::span);
            self.report.error(
                span,
                format!("{key}.health-check.kind"),
                "gRPC health checks need an HTTP/2 upstream: set `protocol = \"h2c\"` or `\"h2\"`",
            );
        }
        let outlier = self.outlier(
            &format!("{key}.outlier"),
            raw.outlier
                .as_ref()
                .map_or(&Default::default(), Spanned::get_ref),
        );
        let breaker = self.breaker(
            &format!("{key}.breaker"),
            raw.breaker
                .as_ref()
                .map_or(&Default::default(), Spanned::get_ref),
        );
        let retry_budget = self.retry_budget(
            &format!("{key}.retry-budget"),
            raw.retry_budget
                .as_ref()
                .map_or(&Default::default(), Spanned::get_ref),
        );
        Some(UpstreamConfig {
            name: name.to_string(),
            targets,
            weights,
            balance,
            health_check,
            outlier,
            breaker,
            retry_budget,
            connect_timeout: raw.connect_timeout.map_or(DEFAULT_CONNECT_TIMEOUT, |d| d.0),
            timeout: raw.timeout.map_or(DEFAULT_UPSTREAM_TIMEOUT, |d| d.0),
            max_idle_per_target: raw
                .max_idle_per_target
                .unwrap_or(DEFAULT_MAX_IDLE_PER_TARGET),
            idle_timeout: raw
                .idle_timeout
                .map_or(DEFAULT_UPSTREAM_IDLE_TIMEOUT, |d| d.0),
            tls,
            protocol,
            max_concurrent_streams: self.max_concurrent_streams(&key, raw, protocol),
            dns_refresh: self.dns_refresh(&key, raw),
        })
    }

    /// `protocol`: HTTP/1.1, or HTTP/2 with or without TLS, consistent with the targets.
    fn protocol(&mut self, key: &str, raw: &RawUpstream, tls: bool) -> UpstreamProtocol {
        let Some(spanned) = &raw.protocol else {
            return UpstreamProtocol::Http1;
        };
        let (protocol, mismatch) = match spanned.get_ref().as_str() {
            "http1" => (UpstreamProtocol::Http1, None),
            "h2c" => (
                UpstreamProtocol::H2c,
                tls.then_some("`h2c` is HTTP/2 without TLS, but this upstream speaks TLS: use `h2`"),
            ),
            "h2" => (
                UpstreamProtocol::H2,
                (!tls).then_some("`h2` is HTTP/2 over TLS: list https:// targets or set `tls = true`, or use `h2c` for HTTP/2 without TLS"),
            ),
            other => {
                self.report.error(
                    spanned.span(),
                    format!("{key}.protocol"),
                    format!(
                        "unknown protocol `{}`: expected `http1`, `h2c` or `h2`",
                        crate::text::escape_control(other)
                    ),
                );
                return UpstreamProtocol::Http1;
            }
        };
        if let Some(message) = mismatch {
            self.report
                .error(spanned.span(), format!("{key}.protocol"), message);
        }
        protocol
    }

    /// `dns-refresh`: at least a second.
    fn dns_refresh(&mut self, key: &str, raw: &RawUpstream) -> std::time::Duration {
        let refresh = raw.dns_refresh.map_or(DEFAULT_DNS_REFRESH, |d| d.0);
        if refresh < std::time::Duration::from_secs(1) {
            self.report
                .error(0..0, format!("{key}.dns-refresh"), "must be at least 1s");
        }
        refresh.max(std::time::Duration::from_secs(1))
    }

    /// `max-concurrent-streams`: only for HTTP/2, at least 1.
    fn max_concurrent_streams(
        &mut self,
        key: &str,
        raw: &RawUpstream,
        protocol: UpstreamProtocol,
    ) -> u32 {
        let Some(spanned) = &raw.max_concurrent_streams else {
            return DEFAULT_MAX_CONCURRENT_STREAMS;
        };
        let streams = *spanned.get_ref();
        if !protocol.is_http2() {
            self.report.error(
                spanned.span(),
                format!("{key}.max-concurrent-streams"),
                "streams are HTTP/2's: set `protocol = \"h2c\"` or `\"h2\"`, or remove this key",
            );
        } else if streams == 0 {
            self.report.error(
                spanned.span(),
                format!("{key}.max-concurrent-streams"),
                "must be at least 1",
            );
        }
        streams.max(1)
    }

    fn routes(
        &mut self,
        raw: &RawConfig,
        server: &ServerConfig,
        defaults: StageLimits,
        plugin_limits: &BTreeMap<String, StageLimits>,
    ) -> Vec<RouteConfig> {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        let mut routes = Vec::new();
        for (index, spanned) in raw.routes.iter().enumerate() {
            let route = spanned.get_ref();
            let key = format!("routes[{index}]");
            let name = route.name.get_ref();
            if let Some(first) = seen.insert(name, index) {
                let other = self.location(&raw.routes[first].get_ref().name.span());
                self.report.error(
                    route.name.span(),
                    format!("{key}.name"),
                    format!("route name `{name}` is already used by routes[{first}] at {other}"),
                );
            }
            if let Some(built) = self.route(&key, spanned, raw, server, defaults, plugin_limits) {
                routes.push(built);
            }
        }
        self.conflicts(raw, &routes);
        routes
    }

    fn route(
        &mut self,
        key: &str,
        spanned: &Spanned<RawRoute>,
        raw: &RawConfig,
        server: &ServerConfig,
        defaults: StageLimits,
        plugin_limits: &BTreeMap<String, StageLimits>,
    ) -> Option<RouteConfig> {
        let route = spanned.get_ref();
        let path = match (&route.path, &route.prefix) {
            (Some(path), None) => {
                self.path_text(path, &format!("{key}.path"));
                PathMatch::Pattern(path.get_ref().clone())
            }
            (None, Some(prefix)) => {
                self.path_text(prefix, &format!("{key}.prefix"));
                if prefix.get_ref().contains(['{', '}']) {
                    self.report.error(
                        prefix.span(),
                        format!("{key}.prefix"),
                        "a prefix cannot hold captures; use `path` with `{*rest}`",
                    );
                }
                PathMatch::Prefix(prefix.get_ref().trim_end_matches('/').to_string())
            }
            (Some(path), Some(_)) => {
                self.report.error(
                    path.span(),
                    format!("{key}.path"),
                    "set either `path` or `prefix`, not both",
                );
                return None;
            }
            (None, None) => {
                self.report
                    .error(spanned.span(), key, "a route needs `path` or `prefix`");
                return None;
            }
        };
        let captures = path_captures(&path);
        let hosts = route
            .hosts
            .iter()
            .flatten()
            .filter_map(|host| {
                let text = host.get_ref().to_ascii_lowercase();
                let bare = text.strip_prefix("*.").unwrap_or(&text);
                let ok = !bare.is_empty()
                    && bare.parse::<Authority>().is_ok()
                    && !bare.contains(['*', ':', '/']);
                if !ok {
                    self.report.error(
                        host.span(),
                        format!("{key}.hosts"),
                        format!(
                            "`{text}` is not a host name (use `example.com` or `*.example.com`)"
                        ),
                    );
                }
                ok.then_some(text)
            })
            .collect();
        let methods = route.methods.as_ref().map(|methods| {
            methods
                .iter()
                .filter_map(|m| {
                    let text = m.get_ref();
                    match Method::from_bytes(text.as_bytes()) {
                        Ok(method) if text.chars().all(|c| c.is_ascii_uppercase()) => Some(method),
                        _ => {
                            self.report.error(
                                m.span(),
                                format!("{key}.methods"),
                                format!(
                                    "`{text}` is not an HTTP method: use an upper-case token such as GET"
                                ),
                            );
                            None
                        }
                    }
                })
                .collect::<Vec<_>>()
        });
        if let Some(upstream) = &route.upstream {
            if !raw.upstreams.contains_key(upstream.get_ref()) {
                let known: Vec<&str> = raw.upstreams.keys().map(|name| &**name).collect();
                let known = if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                };
                self.report.error(
                    upstream.span(),
                    format!("{key}.upstream"),
                    format!(
                        "unknown upstream `{}` (defined upstreams: {known})",
                        upstream.get_ref()
                    ),
                );
            }
        } else if route.stages.is_empty() && route.respond.is_none() && route.transcode.is_none() {
            self.report.error(
                spanned.span(),
                key,
                "a route needs a terminal: `upstream`, `respond`, `transcode`, or an aggregate stage last in `stages`",
            );
        }
        if route.transcode.is_some() {
            let other = [
                (route.upstream.as_ref().map(Spanned::span), "upstream"),
                (route.respond.as_ref().map(Spanned::span), "respond"),
                (
                    route.strip_prefix.as_ref().map(Spanned::span),
                    "strip-prefix",
                ),
                (route.rewrite.as_ref().map(Spanned::span), "rewrite"),
            ];
            for (span, name) in other {
                if let Some(span) = span {
                    self.report.error(
                        span,
                        format!("{key}.{name}"),
                        format!("a `transcode` route takes its upstream and paths from `transcode`; remove `{name}`"),
                    );
                }
            }
        }
        if let (Some(_), Some(respond)) = (&route.upstream, &route.respond) {
            self.report.error(
                respond.span(),
                format!("{key}.respond"),
                "set either `upstream` or `respond`, not both",
            );
        }
        let respond = route
            .respond
            .as_ref()
            .and_then(|respond| self.respond(&format!("{key}.respond"), respond, &captures));
        let transcode = route.transcode.as_ref().and_then(|transcode| {
            let base = self.path.parent().unwrap_or(Path::new(".")).to_path_buf();
            self.transcode(key, transcode, raw, &base)
        });
        let strip_prefix = route.strip_prefix.as_ref().map(|strip| {
            let text = strip.get_ref().trim_end_matches('/').to_string();
            let literal = match &path {
                PathMatch::Pattern(p) => p.split('{').next().unwrap_or(""),
                PathMatch::Prefix(p) => p.as_str(),
            };
            if !strip.get_ref().starts_with('/') || !literal.starts_with(&text) {
                self.report.error(
                    strip.span(),
                    format!("{key}.strip-prefix"),
                    format!("`{}` is not a prefix of the route's path", strip.get_ref()),
                );
            }
            text
        });
        let rewrite = route.rewrite.as_ref().and_then(|rewrite| match PathTemplate::parse(rewrite.get_ref()) {
            Ok(template) => {
                if !rewrite.get_ref().starts_with('/') {
                    self.report.error(rewrite.span(), format!("{key}.rewrite"), "must start with `/`");
                }
                for capture in template.captures() {
                    if !captures.iter().any(|c| c == capture) {
                        let known = if captures.is_empty() { "none".to_string() } else { captures.join(", ") };
                        self.report.error(rewrite.span(), format!("{key}.rewrite"), format!("`{{{capture}}}` is not captured by the route's path (captures: {known})"));
                    }
                }
                Some(template)
            }
            Err(message) => {
                self.report.error(rewrite.span(), format!("{key}.rewrite"), message);
                None
            }
        });
        if strip_prefix.is_some() && rewrite.is_some() {
            let span = route.rewrite.as_ref().map_or(0..0, Spanned::span);
            self.report.error(
                span,
                format!("{key}.rewrite"),
                "set either `strip-prefix` or `rewrite`, not both",
            );
        }
        let known_upstreams: BTreeSet<String> =
            raw.upstreams.keys().map(ToString::to_string).collect();
        let stages = route
            .stages
            .iter()
            .enumerate()
            .map(|(i, stage)| {
                self.stage(
                    &format!("{key}.stages[{i}]"),
                    stage,
                    defaults,
                    plugin_limits,
                    &known_upstreams,
                )
            })
            .collect();
        Some(RouteConfig {
            name: route.name.get_ref().to_string(),
            hosts,
            methods,
            path,
            upstream: route.upstream.as_ref().map(|u| u.get_ref().to_string()),
            respond,
            transcode,
            strip_prefix,
            rewrite,
            timeout: route.timeout.map(|d| d.0),
            retry: Arc::new(
                route
                    .retry
                    .as_ref()
                    .map_or_else(RetryPolicy::default, |retry| {
                        self.retry(&format!("{key}.retry"), retry.get_ref(), retry.span())
                    }),
            ),
            preserve_host: route.preserve_host.unwrap_or(false),
            max_body_bytes: route.max_body_bytes.map(|b| b.0).or(server.max_body_bytes),
            stages,
            compress: route
                .compress
                .as_ref()
                .and_then(|compress| self.compress(&format!("{key}.compress"), compress)),
            cache: route
                .cache
                .as_ref()
                .and_then(|cache| self.cache(&format!("{key}.cache"), cache)),
            tunnel: self.tunnel(
                key,
                route.upgrade.as_ref(),
                route.tunnel_idle_timeout.as_ref(),
                route.tunnel_max_lifetime.as_ref(),
                server.tunnel,
            ),
            location: self.location(&route.name.span()),
        })
    }

    fn respond(
        &mut self,
        key: &str,
        spanned: &Spanned<raw::RawRespond>,
        captures: &[String],
    ) -> Option<RespondConfig> {
        let raw = spanned.get_ref();
        let span = spanned.span();
        let location = raw
            .location
            .as_ref()
            .and_then(|text| match PathTemplate::parse(text) {
                Ok(template) => {
                    for capture in template.captures() {
                        if !captures.iter().any(|c| c == capture) {
                            self.report.error(
                                span.clone(),
                                format!("{key}.location"),
                                format!("`{{{capture}}}` is not captured by the route's path"),
                            );
                        }
                    }
                    Some(template)
                }
                Err(message) => {
                    self.report
                        .error(span.clone(), format!("{key}.location"), message);
                    None
                }
            });
        let default_status = if location.is_some() { 302 } else { 200 };
        let code = raw.status.unwrap_or(default_status);
        let status = match http::StatusCode::from_u16(code) {
            Ok(status) if location.is_some() && !status.is_redirection() => {
                self.report.error(
                    span.clone(),
                    format!("{key}.status"),
                    format!("a redirect (`location`) needs a 3xx status, not {code}"),
                );
                None
            }
            Ok(status) if (200..=599).contains(&code) => Some(status),
            _ => {
                self.report.error(
                    span.clone(),
                    format!("{key}.status"),
                    format!("{code} is not a status a route can answer with (200 to 599)"),
                );
                None
            }
        };
        let mut headers = http::HeaderMap::new();
        for (name, value) in &raw.headers {
            let field = (
                http::header::HeaderName::from_bytes(name.as_bytes()),
                http::HeaderValue::from_str(value),
            );
            match field {
                (Ok(name), Ok(value)) => {
                    headers.append(name, value);
                }
                _ => self.report.error(
                    span.clone(),
                    format!("{key}.headers"),
                    format!("`{name}: {value}` is not a valid header field"),
                ),
            }
        }
        let body = raw.body.clone().unwrap_or_default();
        if !body.is_empty() && !headers.contains_key(http::header::CONTENT_TYPE) {
            headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; charset=utf-8"),
            );
        }
        Some(RespondConfig {
            status: status?,
            headers,
            body: body.into(),
            location,
        })
    }

    fn path_text(&mut self, path: &Spanned<String>, key: &str) {
        let text = path.get_ref();
        if !text.starts_with('/') {
            self.report
                .error(path.span(), key, format!("`{text}` must start with `/`"));
        }
        if text.contains(['?', '#', ' ']) {
            self.report.error(
                path.span(),
                key,
                format!("`{text}` must be a path only, without query, fragment or spaces"),
            );
        }
    }

    fn stage(
        &mut self,
        key: &str,
        spanned: &Spanned<RawStage>,
        defaults: StageLimits,
        plugin_limits: &BTreeMap<String, StageLimits>,
        known_upstreams: &BTreeSet<String>,
    ) -> StageConfig {
        let stage = spanned.get_ref();
        let plugin = stage.plugin.get_ref().clone();
        let on_error = match stage.on_error.as_ref().map(|o| o.get_ref().as_str()) {
            None | Some("fail-closed") => OnError::FailClosed,
            Some("fail-open") => OnError::FailOpen,
            Some(other) => {
                let span = stage.on_error.as_ref().map_or(0..0, Spanned::span);
                self.report.error(
                    span,
                    format!("{key}.on-error"),
                    format!("unknown policy `{other}`: expected `fail-closed` or `fail-open`"),
                );
                OnError::FailClosed
            }
        };
        let base = plugin_limits.get(&*plugin).copied().unwrap_or(defaults);
        let limits = match &stage.limits {
            Some(raw) => {
                self.limits(&format!("{key}.limits"), raw, spanned.span());
                base.overridden_by(raw)
            }
            None => base,
        };
        let upstreams = stage
            .upstreams
            .iter()
            .flatten()
            .filter_map(|name| {
                if known_upstreams.contains(&**name.get_ref()) {
                    Some(name.get_ref().to_string())
                } else {
                    self.report.error(
                        name.span(),
                        format!("{key}.upstreams"),
                        format!("unknown upstream `{}`", name.get_ref()),
                    );
                    None
                }
            })
            .collect();
        let config = stage.config.clone().unwrap_or_default();
        let config_json = serde_json::to_string(&config).unwrap_or_else(|_| "{}".to_string());
        StageConfig {
            plugin: plugin.to_string(),
            config_json: config_json.into(),
            on_error,
            buffer_body: stage
                .body
                .as_ref()
                .filter(|body| body.buffer)
                .map(|body| body.max_bytes.map_or(DEFAULT_BUFFER_BYTES, |b| b.0)),
            limits,
            upstreams,
            location: self.location(&stage.plugin.span()),
        }
    }

    /// Reports routes that the router could not tell apart, naming both sides.
    fn conflicts(&mut self, raw: &RawConfig, routes: &[RouteConfig]) {
        let keys: Vec<RouteKey> = routes.iter().map(RouteConfig::route_key).collect();
        let conflicts = crate::router::Router::new(&keys).err().unwrap_or_default();
        for conflict in conflicts {
            let span_of = |name: &str| {
                raw.routes
                    .iter()
                    .find(|r| &**r.get_ref().name.get_ref() == name)
                    .map_or(0..0, |r| {
                        r.get_ref()
                            .path
                            .as_ref()
                            .or(r.get_ref().prefix.as_ref())
                            .map_or(r.span(), Spanned::span)
                    })
            };
            let (first, second) = (span_of(&conflict.first), span_of(&conflict.second));
            let index = raw
                .routes
                .iter()
                .position(|r| **r.get_ref().name.get_ref() == conflict.second)
                .unwrap_or(0);
            let message = format!(
                "route `{}` conflicts with route `{}` at {}: {}",
                conflict.second,
                conflict.first,
                self.location(&first),
                conflict.reason
            );
            self.report
                .error(second, format!("routes[{index}].path"), message);
        }
    }
}

/// `client-ip`, `header:NAME`, `cookie:NAME` or `param:NAME`.
fn parse_hash_on(text: &str) -> Option<HashOn> {
    match text.split_once(':') {
        None if text == "client-ip" => Some(HashOn::ClientIp),
        Some(("header", name)) => http::HeaderName::from_bytes(name.as_bytes())
            .ok()
            .map(HashOn::Header),
        Some(("cookie", name)) if !name.is_empty() => Some(HashOn::Cookie(name.to_string())),
        Some(("param", name)) if !name.is_empty() => Some(HashOn::Param(name.to_string())),
        _ => None,
    }
}

/// The default cache directory: `$XDG_CACHE_HOME/wasmgate`, else `~/.cache/wasmgate`,
/// else a per-user directory under the system's temporary directory.
pub fn default_cache_dir() -> PathBuf {
    let from_env = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if let Some(cache) = from_env("XDG_CACHE_HOME") {
        return cache.join("wasmgate");
    }
    if let Some(home) = from_env("HOME") {
        return home.join(".cache").join("wasmgate");
    }
    std::env::temp_dir().join(format!(
        "wasmgate-cache-{}",
        rustix::process::geteuid().as_raw()
    ))
}

/// Whether `name` is a server name or a `*.` wildcard over one.
fn is_server_name_pattern(name: &str) -> bool {
    let bare = name.strip_prefix("*.").unwrap_or(name);
    !bare.is_empty()
        && !bare.contains('*')
        && bare.parse::<std::net::IpAddr>().is_err()
        && rustls::pki_types::ServerName::try_from(bare).is_ok()
}

/// Whether `path` is `dir` or inside it, comparing real paths where they exist.
fn inside(path: &Path, dir: &Path) -> bool {
    let real = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    let (path, dir) = (real(path), real(dir));
    path.starts_with(&dir)
}
