//! Values with placeholders: `"{identity.subject}"`, `"tenant-{params.id}"`.
//! Parsed once from the config, so a misspelt placeholder is a config error.

use serde::Deserialize;
use wasmgate_plugin_sdk::{Context, Headers};

/// Where a placeholder's value comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Source {
    Route,
    ClientIp,
    RequestId,
    Subject,
    Claim(String),
    Param(String),
    Var(String),
    Query(String),
    Header(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Value(Source),
}

/// A string with `{placeholders}`; `{{` and `}}` are literal braces.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Template {
    parts: Vec<Part>,
}

/// What placeholders are filled from.
pub struct Scope<'a> {
    /// The request context.
    pub ctx: &'a Context,
    /// The decoded query of the request (empty in the response phase).
    pub query: &'a [(String, String)],
    /// The headers of the message being transformed.
    pub headers: &'a Headers,
}

impl Template {
    /// Fills the placeholders. `None` when the template has placeholders and
    /// every one of them is empty or missing: a header set from
    /// `{identity.subject}` is then left out instead of sent empty.
    pub fn render(&self, scope: &Scope<'_>) -> Option<String> {
        let mut out = String::new();
        let mut placeholders = 0;
        let mut filled = 0;
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Value(source) => {
                    placeholders += 1;
                    if let Some(value) = lookup(source, scope).filter(|value| !value.is_empty()) {
                        filled += 1;
                        out.push_str(&value);
                    }
                }
            }
        }
        (placeholders == 0 || filled > 0).then_some(out)
    }
}

fn lookup(source: &Source, scope: &Scope<'_>) -> Option<String> {
    let ctx = scope.ctx;
    let found = match source {
        Source::Route => Some(ctx.route.as_str()),
        Source::ClientIp => Some(ctx.client_ip.as_str()),
        Source::RequestId => Some(ctx.request_id.as_str()),
        Source::Subject => ctx.subject(),
        Source::Claim(name) => ctx.claim(name),
        Source::Param(name) => ctx.param(name),
        Source::Var(name) => ctx.var(name),
        Source::Query(name) => scope
            .query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str()),
        Source::Header(name) => scope.headers.get_str(name),
    };
    found.map(str::to_string)
}

impl TryFrom<String> for Template {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for c in chars.by_ref() {
                        if c == '}' {
                            closed = true;
                            break;
                        }
                        name.push(c);
                    }
                    if !closed {
                        return Err(format!("in `{text}`: a `{{` without its `}}`"));
                    }
                    let source =
                        parse_source(&name).map_err(|why| format!("in `{text}`: {why}"))?;
                    if !literal.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Value(source));
                }
                '}' => {
                    return Err(format!(
                        "in `{text}`: a lone `}}` (write `}}}}` for a brace)"
                    ));
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template { parts })
    }
}

fn parse_source(name: &str) -> Result<Source, String> {
    let named = |prefix: &str| {
        name.strip_prefix(prefix)
            .filter(|rest| !rest.is_empty())
            .map(str::to_string)
    };
    Ok(match name {
        "route" => Source::Route,
        "client-ip" => Source::ClientIp,
        "request-id" => Source::RequestId,
        "identity.subject" => Source::Subject,
        _ => {
            if let Some(claim) = named("identity.claims.") {
                Source::Claim(claim)
            } else if let Some(param) = named("params.") {
                Source::Param(param)
            } else if let Some(var) = named("vars.") {
                Source::Var(var)
            } else if let Some(query) = named("query.") {
                Source::Query(query)
            } else if let Some(header) = named("header.") {
                Source::Header(header)
            } else {
                return Err(format!(
                    "unknown placeholder `{{{name}}}`: use route, client-ip, request-id, identity.subject, \
                     identity.claims.NAME, params.NAME, vars.NAME, query.NAME or header.NAME"
                ));
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use wasmgate_plugin_sdk::Identity;

    use super::*;

    fn template(text: &str) -> Result<Template, String> {
        Template::try_from(text.to_string())
    }

    #[test]
    fn renders_placeholders() {
        let ctx = Context {
            route: "orders".into(),
            identity: Some(Identity::new("alice").with_claim("tenant", "acme")),
            params: vec![("id".into(), "42".into())],
            ..Context::default()
        };
        let headers = Headers::new().with("x-trace", "t1");
        let query = vec![("v".to_string(), "2".to_string())];
        let scope = Scope {
            ctx: &ctx,
            query: &query,
            headers: &headers,
        };
        let t = template("{identity.subject}@{identity.claims.tenant} on {route}/{params.id} v{query.v} {header.x-trace} {{x}}").unwrap();
        assert_eq!(
            t.render(&scope).as_deref(),
            Some("alice@acme on orders/42 v2 t1 {x}")
        );
        assert_eq!(template("{vars.missing}").unwrap().render(&scope), None);
        assert_eq!(
            template("plain").unwrap().render(&scope).as_deref(),
            Some("plain")
        );
    }

    #[test]
    fn rejects_unknown_placeholders() {
        assert!(
            template("{identiy.subject}")
                .unwrap_err()
                .contains("unknown placeholder `{identiy.subject}`")
        );
        assert!(template("{params.}").is_err());
        assert!(template("a } b").unwrap_err().contains("lone `}`"));
        assert!(template("{route").unwrap_err().contains("without its `}`"));
    }
}
