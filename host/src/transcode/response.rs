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
    let (head, mut body) = response.into_parts();
    if head.status != StatusCode::OK {
        return status_answer(api, &Status::from_http(head.status));
    }
    if let Some(status) = Status::from_headers(&head.headers) {
        // Trailers-only: the whole call is its status.
        if status.code != wire::OK || !binding.rpc.is_server_streaming() {
            let status = if status.code == wire::OK {
                Status::new(wire::INTERNAL, "the upstream answered without a message")
            } else {
                status
            };
            return status_answer(api, &status);
        }
        return stream_answer(api, binding, body, format, Some(status));
    }
    let grpc = head
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if !grpc {
        return status_answer(
            api,
            &Status::new(wire::UNKNOWN, "the upstream did not answer with gRPC"),
        );
    }
    if binding.rpc.is_server_streaming() {
        return stream_answer(api, binding, body, format, None);
    }
    let mut deframer = Deframer::default();
    let mut messages = Vec::new();
    let mut status = None;
    loop {
        match body.frame().await {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    deframer.push(&data);
                    loop {
                        match deframer.next_message() {
                            Ok(Some(message)) => messages.push(message),
                            Ok(None) => break,
                            Err(error) => {
                                return status_answer(
                                    api,
                                    &Status::new(wire::INTERNAL, error.to_string()),
                                );
                            }
                        }
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        status = Status::from_headers(&trailers);
                    }
                }
            },
            Some(Err(error)) => {
                return status_answer(
                    api,
                    &Status::new(
                        wire::UNAVAILABLE,
                        format!(
                            "the upstream's response broke off: {}",
                            crate::proxy::error_chain(&*error)
                        ),
                    ),
                );
            }
            None => break,
        }
    }
    let status = match (status, deframer.finish()) {
        (_, Err(error)) => Status::new(wire::INTERNAL, error.to_string()),
        (Some(status), Ok(())) => status,
        (None, Ok(())) => Status::new(
            wire::INTERNAL,
            "the upstream ended the call without a status",
        ),
    };
    if status.code != wire::OK {
        return status_answer(api, &status);
    }
    let [message] = messages.as_slice() else {
        return status_answer(
            api,
            &Status::new(
                wire::INTERNAL,
                format!(
                    "the upstream sent {} messages for a unary call",
                    messages.len()
                ),
            ),
        );
    };
    match render(api, binding, message) {
        Ok(json) => json_answer(StatusCode::OK, wire::OK, json),
        Err(status) => status_answer(api, &status),
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
    let json: Json = match &binding.response_body {
        None => decoded
            .serialize_with_options(serde_json::value::Serializer, &options)
            .map_err(fail)?,
        Some(field) => match decoded.get_field(field).into_owned() {
            Value::Message(inner) if !field.is_list() && !field.is_map() => inner
                .serialize_with_options(serde_json::value::Serializer, &options)
                .map_err(fail)?,
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
                whole.get(key).cloned().unwrap_or(Json::Null)
            }
        },
    };
    serde_json::to_vec(&json).map_err(fail)
}

/// What the streaming body still has to read.
struct Streaming {
    body: Option<Body>,
    deframer: Deframer,
    /// A status known before the body ends (trailers-only, or trailers just read).
    status: Option<Status>,
    done: bool,
}

/// A server-streaming call: 200 at once, then each message as it arrives, as an NDJSON line
/// or an SSE `data:` event; an error status after the first message ends the stream with an
/// `{"error": …}` line or an `event: error`.
fn stream_answer(
    api: &Arc<Api>,
    binding: &Binding,
    body: Body,
    format: StreamFormat,
    status: Option<Status>,
) -> Response<Body> {
    let api = api.clone();
    let binding = binding.clone();
    let state = Streaming {
        body: if status.is_some() { None } else { Some(body) },
        deframer: Deframer::default(),
        status,
        done: false,
    };
    let stream = futures_util::stream::unfold(state, move |mut state| {
        let (api, binding) = (api.clone(), binding.clone());
        async move {
            if state.done {
                return None;
            }
            loop {
                match state.deframer.next_message() {
                    Ok(Some(message)) => {
                        let event = match render(&api, &binding, &message) {
                            Ok(json) => format.message(&json),
                            Err(status) => {
                                state.done = true;
                                format.error(&api, &status)
                            }
                        };
                        return Some((Ok::<_, BoxError>(Frame::data(event)), state));
                    }
                    Ok(None) => {}
                    Err(error) => {
                        state.done = true;
                        let status = Status::new(wire::INTERNAL, error.to_string());
                        return Some((Ok(Frame::data(format.error(&api, &status))), state));
                    }
                }
                let next = match state.body.as_mut() {
                    Some(body) => body.frame().await,
                    None => None,
                };
                match next {
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => state.deframer.push(&data),
                        Err(frame) => {
                            if let Ok(trailers) = frame.into_trailers() {
                                state.status = Status::from_headers(&trailers);
                            }
                        }
                    },
                    Some(Err(error)) => {
                        state.done = true;
                        let status = Status::new(
                            wire::UNAVAILABLE,
                            format!(
                                "the upstream's response broke off: {}",
                                crate::proxy::error_chain(&*error)
                            ),
                        );
                        return Some((Ok(Frame::data(format.error(&api, &status))), state));
                    }
                    None => {
                        state.done = true;
                        let status = match (state.status.take(), state.deframer.finish()) {
                            (_, Err(error)) => Status::new(wire::INTERNAL, error.to_string()),
                            (Some(status), Ok(())) => status,
                            (None, Ok(())) => Status::new(
                                wire::INTERNAL,
                                "the upstream ended the call without a status",
                            ),
                        };
                        if status.code == wire::OK {
                            return None;
                        }
                        return Some((Ok(Frame::data(format.error(&api, &status))), state));
                    }
                }
            }
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
