//! `transform`: declarative rewrites of the request on its way in and the
//! response on its way out — headers, path, query, JSON body fields and the
//! status — all from the stage config. See `README.md`.

mod json_path;
mod template;

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use wasmgate_plugin_sdk::{Context, Headers, Request, Response, Transform, debug, warn};

use crate::{
    json_path::JsonPath,
    template::{Scope, Template},
};

/// The stage config: what to do to requests and to responses.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Edits on the way in.
    #[serde(default)]
    request: RequestOps,
    /// Edits on the way out.
    #[serde(default)]
    response: ResponseOps,
}

/// Edits of the request.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestOps {
    #[serde(default)]
    headers: HeaderOps,
    /// A regex rewrite of the path.
    #[serde(default)]
    path: Option<PathRewrite>,
    #[serde(default)]
    query: QueryOps,
    #[serde(default)]
    body: BodyOps,
}

/// Edits of the response.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResponseOps {
    #[serde(default)]
    headers: HeaderOps,
    #[serde(default)]
    body: BodyOps,
    /// Replaces the status code.
    #[serde(default)]
    status: Option<u16>,
}

/// Header edits, applied in this order: remove, rename, set, add.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderOps {
    #[serde(default)]
    remove: Vec<HeaderName>,
    #[serde(default)]
    rename: BTreeMap<HeaderName, HeaderName>,
    #[serde(default)]
    set: BTreeMap<HeaderName, Template>,
    #[serde(default)]
    add: BTreeMap<HeaderName, Template>,
}

/// Query edits, applied in this order: remove, rename, set, add.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryOps {
    #[serde(default)]
    remove: Vec<String>,
    #[serde(default)]
    rename: BTreeMap<String, String>,
    #[serde(default)]
    set: BTreeMap<String, Template>,
    #[serde(default)]
    add: BTreeMap<String, Template>,
}

/// JSON body edits, applied in this order: remove, rename, move, set.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BodyOps {
    #[serde(default)]
    remove: Vec<JsonPath>,
    /// Path → new name of its last segment.
    #[serde(default)]
    rename: BTreeMap<JsonPath, FieldName>,
    /// Path → new path.
    #[serde(default, rename = "move")]
    move_: BTreeMap<JsonPath, JsonPath>,
    /// Path → value; string values may hold placeholders.
    #[serde(default)]
    set: BTreeMap<JsonPath, SetValue>,
}

/// `pattern` (a regex) → `replacement` (`$1`, `${name}` for captures).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PathRewrite {
    pattern: Pattern,
    replacement: String,
}

/// A compiled regex.
#[derive(Deserialize)]
#[serde(try_from = "String")]
struct Pattern(regex_lite::Regex);

impl TryFrom<String> for Pattern {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        regex_lite::Regex::new(&text)
            .map(Pattern)
            .map_err(|err| format!("not a valid regex: {err}"))
    }
}

/// A header name: a valid HTTP token, kept lower-case.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
struct HeaderName(String);

impl TryFrom<String> for HeaderName {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if valid {
            Ok(HeaderName(name.to_ascii_lowercase()))
        } else {
            Err(format!("`{name}` is not a valid header name"))
        }
    }
}

/// A field name (one segment, no dots).
#[derive(Deserialize)]
#[serde(try_from = "String")]
struct FieldName(String);

impl TryFrom<String> for FieldName {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        if name.is_empty() || name.contains('.') {
            Err(format!(
                "`{name}` is not a field name (to move a field elsewhere, use `move`)"
            ))
        } else {
            Ok(FieldName(name))
        }
    }
}

/// A value to set: a string with placeholders, or any other JSON value as is.
#[derive(Deserialize)]
#[serde(try_from = "Value")]
enum SetValue {
    Template(Template),
    Json(Value),
}

impl TryFrom<Value> for SetValue {
    type Error = String;

    fn try_from(value: Value) -> Result<Self, String> {
        match value {
            Value::String(text) => Template::try_from(text).map(SetValue::Template),
            other => Ok(SetValue::Json(other)),
        }
    }
}

// === applying the edits ===

/// Header values must not carry CR, LF or other control bytes (a claim or a
/// query value could hold them); such values are dropped.
fn valid_header_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

impl HeaderOps {
    fn is_empty(&self) -> bool {
        self.remove.is_empty()
            && self.rename.is_empty()
            && self.set.is_empty()
            && self.add.is_empty()
    }

    fn apply(&self, headers: &mut Headers, ctx: &Context, query: &[(String, String)]) {
        if self.is_empty() {
            return;
        }
        for name in &self.remove {
            headers.remove(&name.0);
        }
        for (from, to) in &self.rename {
            headers.rename(&from.0, &to.0);
        }
        // Render from the headers as they were before set/add, so the order
        // of entries does not matter.
        let snapshot = headers.clone();
        let scope = Scope {
            ctx,
            query,
            headers: &snapshot,
        };
        let render = |name: &HeaderName, template: &Template| {
            let value = template.render(&scope)?;
            if valid_header_value(&value) {
                Some(value)
            } else {
                warn!(
                    "header `{}` not set: its value holds control characters",
                    name.0
                );
                None
            }
        };
        for (name, template) in &self.set {
            match render(name, template) {
                Some(value) => headers.set(&name.0, value),
                None => {
                    headers.remove(&name.0);
                }
            }
        }
        for (name, template) in &self.add {
            if let Some(value) = render(name, template) {
                headers.append(&name.0, value);
            }
        }
    }
}

impl QueryOps {
    fn is_empty(&self) -> bool {
        self.remove.is_empty()
            && self.rename.is_empty()
            && self.set.is_empty()
            && self.add.is_empty()
    }

    fn apply(&self, req: &mut Request, ctx: &Context) {
        if self.is_empty() {
            return;
        }
        let original = req.query_pairs();
        let mut pairs = original.clone();
        pairs.retain(|(name, _)| !self.remove.contains(name));
        for (from, to) in &self.rename {
            for (name, _) in pairs.iter_mut().filter(|(name, _)| name == from) {
                name.clone_from(to);
            }
        }
        let scope = Scope {
            ctx,
            query: &original,
            headers: &req.headers,
        };
        let mut rendered = Vec::new();
        for (name, template) in &self.set {
            rendered.push((true, name.clone(), template.render(&scope)));
        }
        for (name, template) in &self.add {
            rendered.push((false, name.clone(), template.render(&scope)));
        }
        for (replace, name, value) in rendered {
            if replace {
                pairs.retain(|(existing, _)| *existing != name);
            }
            if let Some(value) = value {
                pairs.push((name, value));
            }
        }
        req.set_query_pairs(&pairs);
    }
}

impl BodyOps {
    fn is_empty(&self) -> bool {
        self.remove.is_empty()
            && self.rename.is_empty()
            && self.move_.is_empty()
            && self.set.is_empty()
    }

    /// Edits a buffered JSON body. Returns the new body, or `None` when there
    /// is nothing to do or the body is not JSON (it is then left alone).
    fn apply(&self, body: Option<&[u8]>, scope: &Scope<'_>) -> Option<Vec<u8>> {
        if self.is_empty() {
            return None;
        }
        let Some(body) = body else {
            debug!("body edits skipped: the body is not buffered for this stage");
            return None;
        };
        let mut document: Value = match serde_json::from_slice(body) {
            Ok(document) => document,
            Err(err) => {
                debug!("body edits skipped: the body is not JSON ({err})");
                return None;
            }
        };
        for path in &self.remove {
            json_path::remove(&mut document, path);
        }
        for (path, name) in &self.rename {
            json_path::move_value(&mut document, path, &path.sibling(&name.0));
        }
        for (from, to) in &self.move_ {
            json_path::move_value(&mut document, from, to);
        }
        for (path, value) in &self.set {
            let value = match value {
                SetValue::Json(value) => value.clone(),
                SetValue::Template(template) => match template.render(scope) {
                    Some(text) => Value::String(text),
                    None => continue,
                },
            };
            json_path::set(&mut document, path, value);
        }
        serde_json::to_vec(&document).ok()
    }
}

/// Keeps `content-length` true to a replaced body, when the message has one.
fn update_length(headers: &mut Headers, body: &[u8]) {
    if headers.contains("content-length") {
        headers.set("content-length", body.len().to_string());
    }
}

/// The plugin.
pub struct Transformer;

impl Transform for Transformer {
    type Config = Config;

    fn validate(config: &Config) -> Result<(), String> {
        if let Some(status) = config.response.status
            && !(100..=599).contains(&status)
        {
            return Err(format!(
                "response.status: {status} is not an HTTP status (100-599)"
            ));
        }
        if let Some(rewrite) = &config.request.path
            && rewrite.replacement.is_empty()
        {
            return Err("request.path.replacement: must not be empty".to_string());
        }
        Ok(())
    }

    fn on_request(config: &Config, mut req: Request, ctx: &Context) -> Result<Request, Response> {
        let ops = &config.request;
        let query = req.query_pairs();
        ops.headers.apply(&mut req.headers, ctx, &query);
        if let Some(rewrite) = &ops.path {
            let path = req.path().to_string();
            let rewritten = rewrite
                .pattern
                .0
                .replace(&path, rewrite.replacement.as_str());
            if rewritten != path {
                let rewritten = if rewritten.starts_with('/') {
                    rewritten.into_owned()
                } else {
                    format!("/{rewritten}")
                };
                req.set_path(&rewritten);
            }
        }
        ops.query.apply(&mut req, ctx);
        let scope = Scope {
            ctx,
            query: &query,
            headers: &req.headers,
        };
        if let Some(body) = ops.body.apply(req.body.as_deref(), &scope) {
            update_length(&mut req.headers, &body);
            req.body = Some(body);
        }
        Ok(req)
    }

    fn on_response(config: &Config, mut resp: Response, ctx: &Context) -> Response {
        let ops = &config.response;
        ops.headers.apply(&mut resp.headers, ctx, &[]);
        let scope = Scope {
            ctx,
            query: &[],
            headers: &resp.headers,
        };
        if let Some(body) = ops.body.apply(resp.body.as_deref(), &scope) {
            update_length(&mut resp.headers, &body);
            resp.body = Some(body);
        }
        if let Some(status) = ops.status {
            resp.status = status;
        }
        resp
    }
}

wasmgate_plugin_sdk::export_transform!(Transformer);

#[cfg(test)]
mod tests;
