//! Requests and responses as a stage sees them.

use std::fmt;

use serde::{Serialize, de::DeserializeOwned};

use crate::{Headers, query};

const CONTENT_TYPE: &str = "content-type";
const JSON: &str = "application/json";

/// A request on its way through the pipeline.
///
/// `body` is `Some` only when the body is buffered for this stage
/// (`body = { buffer = true }` on the stage in the route config). In
/// [`Transform::on_request`](crate::Transform::on_request), returning a request
/// whose body is `None` leaves the body as it was; `Some` replaces it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// The method, upper-case: `GET`, `POST`, ...
    pub method: String,
    /// The path and query, for example `/users/42?verbose=1`.
    pub uri: String,
    /// The header fields.
    pub headers: Headers,
    /// The body, when buffered.
    pub body: Option<Vec<u8>>,
}

impl Request {
    /// A request with `method` and `uri`, no headers and no body. Handy in tests.
    pub fn new(method: &str, uri: &str) -> Self {
        Self {
            method: method.to_string(),
            uri: uri.to_string(),
            ..Self::default()
        }
    }

    /// Builder form of [`Headers::append`], for tests and examples.
    pub fn with_header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers.append(name, value);
        self
    }

    /// Builder form of setting `body`.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.get(name)
    }

    /// The first value of header `name` as text, if it is UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.headers.get_str(name)
    }

    /// The path part of the URI, without the query.
    pub fn path(&self) -> &str {
        split_uri(&self.uri).0
    }

    /// The raw query string without the `?`, if the URI has one.
    pub fn query(&self) -> Option<&str> {
        split_uri(&self.uri).1
    }

    /// The decoded query parameters, in order.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        self.query().map(query::parse).unwrap_or_default()
    }

    /// The first decoded value of query parameter `name`.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query_pairs()
            .into_iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
    }

    /// Replaces the path and keeps the query.
    pub fn set_path(&mut self, path: &str) {
        self.uri = join_uri(path, self.query());
    }

    /// Replaces the query with `pairs`, encoded; an empty list drops the `?`.
    pub fn set_query_pairs<N: AsRef<str>, V: AsRef<str>>(&mut self, pairs: &[(N, V)]) {
        let encoded = query::encode(pairs);
        let query = (!encoded.is_empty()).then_some(encoded.as_str());
        self.uri = join_uri(self.path(), query);
    }

    /// Parses the buffered body as JSON.
    pub fn body_json<T: DeserializeOwned>(&self) -> Result<T, BodyError> {
        parse_json(self.body.as_deref())
    }

    /// Replaces the body with `value` as JSON and sets `content-type`.
    pub fn set_body_json<T: Serialize + ?Sized>(&mut self, value: &T) {
        self.body = Some(to_json(value));
        self.headers.set(CONTENT_TYPE, JSON);
    }
}

/// A response: one a stage answers with, or the upstream's answer in
/// [`Transform::on_response`](crate::Transform::on_response).
///
/// In `on_response`, `body` is `None` unless the body is buffered for this
/// stage, and returning `None` keeps the body as it was. The constructors
/// below always set a body, possibly empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The status code; one a plugin answers with must be 200..=599.
    pub status: u16,
    /// The header fields.
    pub headers: Headers,
    /// The body; see the type's docs for `None`.
    pub body: Option<Vec<u8>>,
}

impl Response {
    /// A response with `status`, no headers and an empty body.
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Headers::new(),
            body: Some(Vec::new()),
        }
    }

    /// A JSON response: `value` serialized, with `content-type: application/json`.
    ///
    /// ```
    /// use wasmgate_plugin_sdk::Response;
    ///
    /// let response = Response::json(200, &serde_json::json!({ "ok": true }));
    /// assert_eq!(response.body.as_deref(), Some(&br#"{"ok":true}"#[..]));
    /// ```
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Self {
        let mut response = Self::new(status);
        response.set_body_json(value);
        response
    }

    /// A plain-text response (`text/plain; charset=utf-8`).
    pub fn text(status: u16, text: impl Into<String>) -> Self {
        Self::new(status)
            .with_header(CONTENT_TYPE, "text/plain; charset=utf-8")
            .with_body(text.into())
    }

    /// A refusal in the gateway's error shape:
    /// `{"error": code, "message": message}` with `content-type: application/json`.
    ///
    /// ```
    /// use wasmgate_plugin_sdk::Response;
    ///
    /// let response = Response::deny(403, "forbidden", "this key may not write");
    /// assert_eq!(response.status, 403);
    /// let body: serde_json::Value = response.body_json().unwrap();
    /// assert_eq!(body["error"], "forbidden");
    /// ```
    pub fn deny(status: u16, code: &str, message: &str) -> Self {
        Self::json(
            status,
            &serde_json::json!({ "error": code, "message": message }),
        )
    }

    /// Builder form of [`Headers::append`].
    pub fn with_header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers.append(name, value);
        self
    }

    /// Builder form of setting `body`.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.get(name)
    }

    /// The first value of header `name` as text, if it is UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.headers.get_str(name)
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Parses the body as JSON.
    pub fn body_json<T: DeserializeOwned>(&self) -> Result<T, BodyError> {
        parse_json(self.body.as_deref())
    }

    /// Replaces the body with `value` as JSON and sets `content-type`.
    pub fn set_body_json<T: Serialize + ?Sized>(&mut self, value: &T) {
        self.body = Some(to_json(value));
        self.headers.set(CONTENT_TYPE, JSON);
    }
}

/// Why a body could not be read as JSON.
#[derive(Debug)]
pub enum BodyError {
    /// The body was not buffered for this stage (it is `None`).
    NotBuffered,
    /// The body is not valid JSON, or not the expected shape.
    Json(serde_json::Error),
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::NotBuffered => f.write_str(
                "the body is not buffered for this stage (set `body = { buffer = true }` on the stage)",
            ),
            BodyError::Json(err) => write!(f, "the body is not the expected JSON: {err}"),
        }
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BodyError::NotBuffered => None,
            BodyError::Json(err) => Some(err),
        }
    }
}

fn parse_json<T: DeserializeOwned>(body: Option<&[u8]>) -> Result<T, BodyError> {
    let body = body.ok_or(BodyError::NotBuffered)?;
    serde_json::from_slice(body).map_err(BodyError::Json)
}

fn to_json<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Serializing to a Vec fails only for maps with non-string keys or a
    // failing `Serialize` impl; an empty JSON null is the least surprising
    // stand-in, and the mistake shows in the response.
    serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec())
}

fn split_uri(uri: &str) -> (&str, Option<&str>) {
    let uri = uri.split_once('#').map_or(uri, |(before, _)| before);
    match uri.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (uri, None),
    }
}

fn join_uri(path: &str, query: Option<&str>) -> String {
    match query {
        Some(query) => format!("{path}?{query}"),
        None => path.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_and_query() {
        let mut req = Request::new("GET", "/a/b?x=1&y=%20");
        assert_eq!(req.path(), "/a/b");
        assert_eq!(req.query(), Some("x=1&y=%20"));
        assert_eq!(req.query_param("y").as_deref(), Some(" "));
        req.set_path("/c");
        assert_eq!(req.uri, "/c?x=1&y=%20");
        req.set_query_pairs::<&str, &str>(&[]);
        assert_eq!(req.uri, "/c");
    }

    #[test]
    fn json_bodies() {
        let mut req = Request::new("POST", "/");
        assert!(matches!(
            req.body_json::<serde_json::Value>(),
            Err(BodyError::NotBuffered)
        ));
        req.set_body_json(&serde_json::json!({ "a": 1 }));
        assert_eq!(req.header_str("Content-Type"), Some("application/json"));
        let value: serde_json::Value = req.body_json().unwrap();
        assert_eq!(value["a"], 1);
    }
}
