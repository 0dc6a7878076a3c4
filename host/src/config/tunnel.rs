//! HTTP/1.1 `Upgrade` tunnels (WebSocket and the like): which protocols a route lets
//! through (`upgrade`), and how long a tunnel may sit silent or stay open
//! (`tunnel-idle-timeout`, `tunnel-max-lifetime`, with gateway-wide defaults under
//! `[server]`). The code that acts on it is [`crate::tunnel`].

use std::time::Duration;

use toml::Spanned;

use super::Checker;
use super::units::ConfigDuration;

/// The protocols a route passes through when it does not say: WebSocket only.
pub const DEFAULT_UPGRADE: &[&str] = &["websocket"];
/// A tunnel with no bytes moving either way for this long is closed (both sides). Five
/// minutes: longer than the ping interval of common WebSocket stacks (20–60 s), so a live
/// but quiet socket stays open, while an abandoned one is reclaimed.
pub const DEFAULT_TUNNEL_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// A tunnel is closed this long after it opened, however busy: clients reconnect, and a
/// config change or a redeploy of the upstream reaches every socket within a day.
pub const DEFAULT_TUNNEL_MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// How long tunnels may last: `[server]`'s defaults, or a route's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelLimits {
    /// No bytes either way for this long closes the tunnel.
    pub idle_timeout: Duration,
    /// The tunnel is closed this long after it opened.
    pub max_lifetime: Duration,
}

impl Default for TunnelLimits {
    fn default() -> Self {
        Self {
            idle_timeout: DEFAULT_TUNNEL_IDLE_TIMEOUT,
            max_lifetime: DEFAULT_TUNNEL_MAX_LIFETIME,
        }
    }
}

/// A route's upgrade policy, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelConfig {
    /// Protocol names (the part of an `Upgrade` token before any `/`), lower-case, that the
    /// route passes to its upstream; empty refuses every upgrade (the request is then
    /// proxied as a plain request, without `Upgrade`).
    pub protocols: Vec<String>,
    /// The route's tunnel limits.
    pub limits: TunnelLimits,
}

impl Default for TunnelConfig {
    fn default() -> Self {
        Self {
            protocols: DEFAULT_UPGRADE.iter().map(|p| p.to_string()).collect(),
            limits: TunnelLimits::default(),
        }
    }
}

impl TunnelConfig {
    /// Whether `protocol` (an `Upgrade` token, `name` or `name/version`) may pass.
    pub fn allows(&self, protocol: &str) -> bool {
        let name = protocol.split('/').next().unwrap_or_default().trim();
        self.protocols.iter().any(|p| p.eq_ignore_ascii_case(name))
    }
}

/// Whether `text` is an HTTP token (RFC 9110 §5.6.2).
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Checker<'_, '_> {
    /// Checks a tunnel duration (`key` names it): it must be above zero.
    pub(super) fn tunnel_duration(
        &mut self,
        key: &str,
        value: Option<&Spanned<ConfigDuration>>,
        default: Duration,
    ) -> Duration {
        let Some(value) = value else {
            return default;
        };
        let duration = value.get_ref().0;
        if duration.is_zero() {
            self.report.error(
                value.span(),
                key,
                "must be above zero (a tunnel that may not last cannot open)",
            );
            return default;
        }
        duration
    }

    /// Checks a route's `upgrade` list (`key` is `routes[N].upgrade`) and its tunnel limits,
    /// with `server` giving the defaults.
    pub(super) fn tunnel(
        &mut self,
        key: &str,
        upgrade: Option<&Spanned<Vec<Spanned<String>>>>,
        idle_timeout: Option<&Spanned<ConfigDuration>>,
        max_lifetime: Option<&Spanned<ConfigDuration>>,
        server: TunnelLimits,
    ) -> TunnelConfig {
        let mut protocols = Vec::new();
        match upgrade {
            None => protocols = TunnelConfig::default().protocols,
            Some(list) => {
                for entry in list.get_ref() {
                    let text = entry.get_ref().trim().to_ascii_lowercase();
                    if !is_token(&text) {
                        self.report.error(
                            entry.span(),
                            format!("{key}.upgrade"),
                            format!(
                                "`{}` is not a protocol name: use an `Upgrade` token such as `websocket` (without a version)",
                                crate::text::escape_control(entry.get_ref())
                            ),
                        );
                    } else if text == "h2c" {
                        self.report.error(
                            entry.span(),
                            format!("{key}.upgrade"),
                            "`h2c` cannot be tunnelled: the gateway speaks HTTP/2 to clients itself (prior knowledge or TLS)",
                        );
                    } else if protocols.contains(&text) {
                        self.report.error(
                            entry.span(),
                            format!("{key}.upgrade"),
                            format!("`{text}` is listed twice"),
                        );
                    } else {
                        protocols.push(text);
                    }
                }
            }
        }
        let limits = TunnelLimits {
            idle_timeout: self.tunnel_duration(
                &format!("{key}.tunnel-idle-timeout"),
                idle_timeout,
                server.idle_timeout,
            ),
            max_lifetime: self.tunnel_duration(
                &format!("{key}.tunnel-max-lifetime"),
                max_lifetime,
                server.max_lifetime,
            ),
        };
        TunnelConfig { protocols, limits }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_match_by_name_without_version_or_case() {
        let config = TunnelConfig::default();
        assert!(config.allows("websocket"));
        assert!(config.allows("WebSocket"));
        assert!(config.allows("websocket/13"));
        assert!(!config.allows("h2c"));
        assert!(!config.allows(""));
    }

    #[test]
    fn tokens_are_checked() {
        assert!(is_token("websocket"));
        assert!(is_token("connect-udp"));
        assert!(!is_token("web socket"));
        assert!(!is_token("ws/13"));
        assert!(!is_token(""));
    }
}
