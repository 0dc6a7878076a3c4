//! HTTP/JSON → gRPC transcoding: a gRPC service served as a JSON API from its `.proto`
//! files and their `google.api.http` annotations.
//!
//! At load, [`protos`] compiles the route's files (no `protoc`), and [`rules`] turns each
//! annotated method into [`Binding`]s (path template, body, response body). Per request,
//! the route's terminal (`pipeline::terminal::transcode`) looks up the binding,
//! [`request`] builds the request message from path, query and JSON body, the call goes
//! to the upstream as one gRPC frame, and [`response`] answers with JSON (unary), NDJSON
//! or SSE (server streaming), or the call's `google.rpc.Status` as JSON with the mapped
//! HTTP status ([`wire`]).

pub mod protos;
pub mod request;
pub mod response;
pub mod rules;
pub mod template;
pub mod wire;

use std::path::PathBuf;

use http::Method;
use prost_reflect::{DescriptorPool, SerializeOptions};

pub use protos::ProtoError;
pub use rules::Binding;

/// How server-streamed messages are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFormat {
    /// One JSON message per line, `application/x-ndjson`.
    Ndjson,
    /// One `data:` event per message, `text/event-stream`.
    Sse,
}

/// How messages are written as JSON (input accepts both field name forms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JsonOptions {
    /// Write fields that hold their default value (`0`, `""`, `false`, `[]`).
    pub emit_defaults: bool,
    /// Write the `.proto` field names (`shelf_id`) instead of lowerCamelCase (`shelfId`).
    pub proto_field_names: bool,
}

impl JsonOptions {
    /// prost-reflect's options for these.
    pub fn serialize_options(&self) -> SerializeOptions {
        SerializeOptions::new()
            .skip_default_fields(!self.emit_defaults)
            .use_proto_field_name(self.proto_field_names)
    }
}

/// What a route serves: the compiled descriptors and the HTTP bindings of its methods.
#[derive(Debug, Clone)]
pub struct Api {
    /// Every message, service and extension of the route's files and their imports.
    pub pool: DescriptorPool,
    /// The bindings, in file and method order (the first match wins).
    pub bindings: Vec<Binding>,
    /// JSON output options.
    pub json: JsonOptions,
    /// The streaming format when the client's `Accept` does not choose one.
    pub stream_format: StreamFormat,
}

/// Why a route's `.proto` files cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// A file does not compile.
    #[error(transparent)]
    Proto(#[from] ProtoError),
    /// The files compile, but the methods cannot be served as configured.
    #[error("{}", .0.join("; "))]
    Rules(Vec<String>),
}

/// What a request finds among the bindings.
pub enum Lookup<'a> {
    /// A binding for the method and path, with the path's variables.
    Found(&'a Binding, Vec<(Vec<String>, String)>),
    /// The path matches bindings, but for other methods.
    WrongMethod(Vec<Method>),
    /// No binding's template matches the path.
    NotFound,
}

impl Api {
    /// Compiles `files` (with imports from `include`) and binds the methods `selectors`
    /// name (every service when empty).
    pub fn load(
        files: &[PathBuf],
        include: &[PathBuf],
        selectors: &[String],
        json: JsonOptions,
        stream_format: StreamFormat,
    ) -> Result<Self, LoadError> {
        let pool = protos::compile(files, include)?;
        let bindings = rules::bindings(&pool, selectors).map_err(LoadError::Rules)?;
        Ok(Self {
            pool,
            bindings,
            json,
            stream_format,
        })
    }

    /// The binding for `method` and `path`.
    pub fn lookup(&self, method: &Method, path: &str) -> Lookup<'_> {
        let mut allowed = Vec::new();
        for binding in &self.bindings {
            if let Some(variables) = binding.template.matches(path) {
                if binding.method == *method
                    || (*method == Method::HEAD && binding.method == Method::GET)
                {
                    return Lookup::Found(binding, variables);
                }
                if !allowed.contains(&binding.method) {
                    allowed.push(binding.method.clone());
                }
            }
        }
        if allowed.is_empty() {
            Lookup::NotFound
        } else {
            Lookup::WrongMethod(allowed)
        }
    }

    /// `METHOD TEMPLATE` of each binding, for a 404 that says what this route serves.
    pub fn served(&self) -> Vec<String> {
        self.bindings
            .iter()
            .map(|b| format!("{} {}", b.method, b.pattern))
            .collect()
    }

    /// The streaming format for a request with this `Accept` header.
    pub fn stream_format_for(&self, accept: Option<&str>) -> StreamFormat {
        let accept = accept.unwrap_or("").to_ascii_lowercase();
        if accept.contains("text/event-stream") {
            StreamFormat::Sse
        } else if accept.contains("application/x-ndjson") {
            StreamFormat::Ndjson
        } else {
            self.stream_format
        }
    }
}
