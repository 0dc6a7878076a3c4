//! URI templates: `/users/{id}/orders?limit={query.limit}`.
//!
//! `{name}` is the route's path parameter `name`; `{query.name}` a query
//! parameter of the client's request; `{identity.subject}`,
//! `{identity.claims.name}` and `{vars.name}` come from the context. Values
//! are percent-encoded, so they cannot add path segments or parameters.

use serde::Deserialize;
use wasmgate_plugin_sdk::{Context, query};

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Param(String),
    Query(String),
    Subject,
    Claim(String),
    Var(String),
}

/// A parsed URI template.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct UriTemplate(Vec<Part>);

impl TryFrom<String> for UriTemplate {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        if !text.starts_with('/') {
            return Err(format!(
                "`{text}` must start with `/` (the upstream is named separately)"
            ));
        }
        let mut parts = Vec::new();
        let mut rest = text.as_str();
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("`{text}` has a `{{` without its `}}`"))?;
            let name = &rest[open + 1..open + close];
            parts.push(parse_placeholder(name).map_err(|why| format!("in `{text}`: {why}"))?);
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("`{text}` has a `}}` without its `{{`"));
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(UriTemplate(parts))
    }
}

fn parse_placeholder(name: &str) -> Result<Part, String> {
    let valid = |name: &str| {
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    if !valid(name) {
        return Err(format!("`{{{name}}}` is not a placeholder"));
    }
    let named = |prefix: &str| name.strip_prefix(prefix).filter(|rest| !rest.is_empty());
    Ok(if name == "identity.subject" {
        Part::Subject
    } else if let Some(query) = named("query.") {
        Part::Query(query.to_string())
    } else if let Some(claim) = named("identity.claims.") {
        Part::Claim(claim.to_string())
    } else if let Some(var) = named("vars.") {
        Part::Var(var.to_string())
    } else if name.contains('.') {
        return Err(format!(
            "unknown placeholder `{{{name}}}`: use NAME (a path parameter), query.NAME, \
             identity.subject, identity.claims.NAME or vars.NAME"
        ));
    } else {
        Part::Param(name.to_string())
    })
}

impl UriTemplate {
    /// Fills the template; missing values become empty.
    pub fn render(&self, ctx: &Context, query: &[(String, String)]) -> String {
        let mut out = String::new();
        for part in &self.0 {
            let value = match part {
                Part::Text(text) => {
                    out.push_str(text);
                    continue;
                }
                Part::Param(name) => ctx.param(name),
                Part::Query(name) => query
                    .iter()
                    .find(|(key, _)| key == name)
                    .map(|(_, value)| value.as_str()),
                Part::Subject => ctx.subject(),
                Part::Claim(name) => ctx.claim(name),
                Part::Var(name) => ctx.var(name),
            };
            out.push_str(&query::encode_component(value.unwrap_or_default()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(text: &str) -> Result<UriTemplate, String> {
        UriTemplate::try_from(text.to_string())
    }

    #[test]
    fn fills_and_encodes() {
        let ctx = Context {
            params: vec![("id".into(), "4/2".into())],
            ..Context::default()
        };
        let query = vec![("limit".to_string(), "5&x=1".to_string())];
        let uri = template("/users/{id}/orders?limit={query.limit}&who={identity.subject}")
            .unwrap()
            .render(&ctx, &query);
        assert_eq!(uri, "/users/4%2F2/orders?limit=5%26x%3D1&who=");
    }

    #[test]
    fn rejects_bad_templates() {
        assert!(
            template("users/{id}")
                .unwrap_err()
                .contains("must start with `/`")
        );
        assert!(
            template("/users/{id")
                .unwrap_err()
                .contains("without its `}`")
        );
        assert!(
            template("/users/id}")
                .unwrap_err()
                .contains("without its `{`")
        );
        assert!(
            template("/x/{quer.y}")
                .unwrap_err()
                .contains("unknown placeholder")
        );
        assert!(
            template("/x/{}")
                .unwrap_err()
                .contains("is not a placeholder")
        );
    }
}
