//! Path templates (`/users/{id}`): parsing, the captures a route provides, and the paths
//! rewrites and redirects build from them.

use super::model::{PathMatch, RouteConfig};

/// A path template for rewrites: literal text with `{name}` captures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    /// Literal text and capture names, in order.
    pub parts: Vec<TemplatePart>,
}

/// One piece of a [`PathTemplate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart {
    /// Copied as is.
    Literal(String),
    /// Replaced by the named capture.
    Capture(String),
}

impl PathTemplate {
    /// Parses `"/v1/users/{id}"`; `{*rest}` and `{rest}` are the same capture.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(TemplatePart::Literal(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("unclosed `{{` in `{text}`"))?;
            let name = rest[open + 1..open + close].trim_start_matches('*');
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(format!("invalid capture name `{name}` in `{text}`"));
            }
            parts.push(TemplatePart::Capture(name.to_string()));
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("unmatched `}}` in `{text}`"));
        }
        if !rest.is_empty() {
            parts.push(TemplatePart::Literal(rest.to_string()));
        }
        Ok(Self { parts })
    }

    /// Capture names used by the template.
    pub fn captures(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|part| match part {
            TemplatePart::Capture(name) => Some(name.as_str()),
            TemplatePart::Literal(_) => None,
        })
    }
}

/// Capture names a path match provides.
pub fn path_captures(path: &PathMatch) -> Vec<String> {
    match path {
        PathMatch::Prefix(_) => vec!["rest".to_string()],
        PathMatch::Pattern(pattern) => PathTemplate::parse(pattern)
            .map(|t| t.captures().map(str::to_string).collect())
            .unwrap_or_default(),
    }
}

impl RouteConfig {
    /// The path and query the upstream receives: the request's, after `strip-prefix` or
    /// `rewrite` (filled in from the path captures `params`).
    pub fn upstream_path(
        &self,
        uri: &http::Uri,
        params: &[(String, String)],
    ) -> Result<http::uri::PathAndQuery, http::uri::InvalidUri> {
        let path = uri.path();
        let new_path = if let Some(template) = &self.rewrite {
            let mut out = String::with_capacity(path.len());
            for part in &template.parts {
                match part {
                    TemplatePart::Literal(text) => out.push_str(text),
                    TemplatePart::Capture(name) => {
                        if let Some((_, value)) = params.iter().find(|(k, _)| k == name) {
                            out.push_str(value);
                        }
                    }
                }
            }
            if matches!(self.path, PathMatch::Prefix(_)) || out.is_empty() {
                out = out.replace("//", "/");
            }
            if out.is_empty() { "/".to_string() } else { out }
        } else if let Some(prefix) = &self.strip_prefix {
            let rest = path.strip_prefix(prefix.as_str()).unwrap_or(path);
            if rest.starts_with('/') {
                rest.to_string()
            } else {
                format!("/{rest}")
            }
        } else {
            return Ok(uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")));
        };
        let with_query = match uri.query() {
            Some(query) => format!("{new_path}?{query}"),
            None => new_path,
        };
        http::uri::PathAndQuery::try_from(with_query)
    }
}
