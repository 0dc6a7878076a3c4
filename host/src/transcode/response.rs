//! Turns the upstream's gRPC response into the HTTP/JSON answer: one JSON message for a
//! unary call, NDJSON or SSE message by message for a server-streaming one, and a
//! `google.rpc.Status` JSON body with the mapped HTTP status for an error.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use prost_reflect::{DynamicMessage, Value};
use serde_json::Value as Json;

use super::rules::Binding;
use super::wire::{self, Deframer, Status};
use super::{Api, StreamFormat};
use crate::body::{Body, BoxError, full};

/// The answer to a call whose upstream response (head and body) is `response`.
pub async fn answer(
    api: &Arc<Api>,
    binding: &Binding,
    response: Response<Body>,
    format: StreamFormat,
) -> Response<Body> {
    let (head, body) = response.into_parts();
    if head.status != StatusCode::OK {
        return status_answer(api, &Status::from_http(head.status));
    }
    let mut call = match Status::from_headers(&head.headers) {
        // Trailers-only: the whole call is its status.
        Some(status) => Call::ended(status),
        None if !is_grpc(&head.headers) => {
            return status_answer(
                api,
                &Status::new(wire::UNKNOWN, "the upstream did not answer with gRPC"),
            );
        }
        None => Call::new(body),
    };
    // Nothing is sent before the first message or the end, so an error before any
    // message still gets its own HTTP status.
    let first = call.next().await;
    let mut response = match (first, binding.rpc.is_server_streaming()) {
        (Event::End(status), _) if status.code != wire::OK => return status_answer(api, &status),
        (Event::End(_), false) => {
            let status = Status::new(wire::INTERNAL, "the upstream answered without a message");
            return status_answer(api, &status);
        }
        (Event::End(_), true) => stream_answer(api, binding, call, None, format),
        (Event::Message(message), true) => stream_answer(api, binding, call, Some(message), format),
        (Event::Message(message), false) => match call.next().await {
            Event::End(status) if status.code != wire::OK => return status_answer(api, &status),
            Event::End(_) => match render(api, binding, &message) {
                Ok(json) => json_answer(StatusCode::OK, wire::OK, json),
                Err(status) => return status_answer(api, &status),
            },
            Event::Message(_) => {
                let status = Status::new(
                    wire::INTERNAL,
                    "the upstream sent more than one message for a unary call",
                );
                return status_answer(api, &status);
            }
        },
    };
    pass_metadata(&head.headers, response.headers_mut());
    response
}

/// Whether a response head says gRPC.
fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// Copies the upstream's response metadata (its own header fields) to the answer; gRPC's
/// fields and the body's framing stay behind.
fn pass_metadata(from: &http::HeaderMap, to: &mut http::HeaderMap) {
    for (name, value) in from {
        let framing = matches!(
            name.as_str(),
            "content-type"
                | "content-length"
                | "content-encoding"
                | "te"
                | "trailer"
                | "transfer-encoding"
                | "connection"
                | "keep-alive"
                | "date"
        );
        if !framing && !name.as_str().starts_with("grpc-") && !to.contains_key(name) {
            to.append(name.clone(), value.clone());
        }
    }
}

/// What reading a call yields next.
enum Event {
    /// A message.
    Message(Bytes),
    /// The call's end, with its status (one the gateway gives it when the upstream's
    /// response broke off, ended without a status or held a broken frame).
    End(Status),
}

/// Reads a call's messages and final status off the upstream's response body.
struct Call {
    body: Option<Body>,
    deframer: Deframer,
    /// The status, once read (from the trailers, or the head of a trailers-only answer).
    status: Option<Status>,
}

impl Call {
    fn new(body: Body) -> Self {
        Self {
            body: Some(body),
            deframer: Deframer::default(),
            status: None,
        }
    }

    fn ended(status: Status) -> Self {
        Self {
            body: None,
            deframer: Deframer::default(),
            status: Some(status),
        }
    }

    /// The next message, or the end; after the end, the end again.
    async fn next(&mut self) -> Event {
        loop {
            match self.deframer.next_message() {
                Ok(Some(message)) => return Event::Message(message),
                Ok(None) => {}
                Err(error) => {
                    self.body = None;
                    self.deframer = Deframer::default();
                    return Event::End(Status::new(wire::INTERNAL, error.to_string()));
                }
            }
            let frame = match self.body.as_mut() {
                Some(body) => body.frame().await,
                None => None,
            };
            match frame {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.deframer.push(&data),
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            self.status = Status::from_headers(&trailers);
                        }
                    }
                },
                Some(Err(error)) => {
                    self.body = None;
                    return Event::End(Status::new(
                        wire::UNAVAILABLE,
                        format!(
                            "the upstream's response broke off: {}",
                            crate::proxy::error_chain(&*error)
                        ),
                    ));
                }
                None => {
                    self.body = None;
                    let truncated = self.deframer.finish();
                    self.deframer = Deframer::default();
                    return Event::End(match (truncated, self.status.clone()) {
                        (Err(error), _) => Status::new(wire::INTERNAL, error.to_string()),
                        (Ok(()), Some(status)) => status,
                        (Ok(()), None) => Status::new(
                            wire::INTERNAL,
                            "the upstream ended the call without a status",
                        ),
                    });
                }
            }
        }
    }
}

/// A JSON body with `status`; `grpc-status` says how the call ended (for the access log,
/// and clients that care).
fn json_answer(status: StatusCode, code: i32, mut json: Vec<u8>) -> Response<Body> {
    json.push(b'\n');
    let mut response = Response::new(full(json));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
        .headers_mut()
        .insert(crate::grpc::GRPC_STATUS, HeaderValue::from(code));
    response
}

/// A failed call: its `google.rpc.Status` as JSON, with the mapped HTTP status.
pub fn status_answer(api: &Api, status: &Status) -> Response<Body> {
    let json = status.to_json(&api.pool, &api.json.serialize_options());
    json_answer(
        status.http_status(),
        status.code,
        serde_json::to_vec(&json).unwrap_or_default(),
    )
}

/// A response message as JSON text: the whole message, or its `response_body` field.
fn render(api: &Api, binding: &Binding, message: &Bytes) -> Result<Vec<u8>, Status> {
    let decoded = DynamicMessage::decode(binding.rpc.output(), message.clone()).map_err(|e| {
        Status::new(
            wire::INTERNAL,
            format!(
                "the upstream's message does not decode as `{}`: {e}",
                binding.rpc.output().full_name()
            ),
        )
    })?;
    let options = api.json.serialize_options();
    let fail = |e: serde_json::Error| {
        Status::new(
            wire::INTERNAL,
            format!("cannot render the response as JSON: {e}"),
        )
    };
    // Straight to text, except a scalar or repeated `response_body` field: that one is
    // picked out of the whole message's JSON.
    let to_text = |message: &DynamicMessage| {
        let mut out = Vec::new();
        message
            .serialize_with_options(&mut serde_json::Serializer::new(&mut out), &options)
            .map(|()| out)
            .map_err(fail)
    };
    match &binding.response_body {
        None => to_text(&decoded),
        Some(field) => match decoded.get_field(field).into_owned() {
            Value::Message(inner) if !field.is_list() && !field.is_map() => to_text(&inner),
            _ => {
                let whole = decoded
                    .serialize_with_options(
                        serde_json::value::Serializer,
                        &options.clone().skip_default_fields(false),
                    )
                    .map_err(fail)?;
                let key = if api.json.proto_field_names {
                    field.name()
                } else {
                    field.json_name()
                };
                serde_json::to_vec(&whole.get(key).cloned().unwrap_or(Json::Null)).map_err(fail)
            }
        },
    }
}

/// A server-streaming call: 200, then `first` and each further message as it arrives, as an
/// NDJSON line or an SSE `data:` event; an error status ends the stream with an
/// `{"error": …}` line or an `event: error`.
fn stream_answer(
    api: &Arc<Api>,
    binding: &Binding,
    call: Call,
    first: Option<Bytes>,
    format: StreamFormat,
) -> Response<Body> {
    let (api, binding) = (api.clone(), binding.clone());
    let state = (call, first, false);
    let stream = futures_util::stream::unfold(state, move |(mut call, first, done)| {
        let (api, binding) = (api.clone(), binding.clone());
        async move {
            if done {
                return None;
            }
            let event = match first {
                Some(message) => Event::Message(message),
                None => call.next().await,
            };
            let (bytes, done) = match event {
                Event::Message(message) => match render(&api, &binding, &message) {
                    Ok(json) => (format.message(&json), false),
                    Err(status) => (format.error(&api, &status), true),
                },
                Event::End(status) if status.code == wire::OK => return None,
                Event::End(status) => (format.error(&api, &status), true),
            };
            Some((Ok::<_, BoxError>(Frame::data(bytes)), (call, None, done)))
        }
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    response
}

impl StreamFormat {
    /// The media type of the stream.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Ndjson => "application/x-ndjson",
            Self::Sse => "text/event-stream",
        }
    }

    fn message(self, json: &[u8]) -> Bytes {
        match self {
            Self::Ndjson => [json, b"\n"].concat().into(),
            Self::Sse => [b"data: ".as_slice(), json, b"\n\n"].concat().into(),
        }
    }

    fn error(self, api: &Api, status: &Status) -> Bytes {
        let json = status.to_json(&api.pool, &api.json.serialize_options());
        match self {
            Self::Ndjson => {
                let wrapped = serde_json::json!({ "error": json });
                [
                    serde_json::to_vec(&wrapped).unwrap_or_default().as_slice(),
                    b"\n",
                ]
                .concat()
                .into()
            }
            Self::Sse => [
                b"event: error\ndata: ".as_slice(),
                serde_json::to_vec(&json).unwrap_or_default().as_slice(),
                b"\n\n",
            ]
            .concat()
            .into(),
        }
    }
}
