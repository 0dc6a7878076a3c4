//! The gRPC wire side of transcoding: length-prefixed message frames, the call's status
//! (from trailers, or from the headers of a trailers-only answer), and the status as HTTP
//! with its details as JSON. (Answering gRPC clients in gRPC is [`crate::grpc`]'s job.)

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions, Value};
use serde_json::{Map, Value as Json};

use super::template::percent_decode;
pub use crate::grpc::frame::{Deframer, FrameError, MAX_MESSAGE_BYTES, frame};

/// `grpc-status` `OK`.
pub const OK: i32 = 0;
/// `grpc-status` `UNKNOWN`.
pub const UNKNOWN: i32 = 2;
/// `grpc-status` `INTERNAL`.
pub const INTERNAL: i32 = 13;
/// `grpc-status` `UNAVAILABLE`.
pub const UNAVAILABLE: i32 = 14;

/// A call's final status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The gRPC status code.
    pub code: i32,
    /// `grpc-message`, percent-decoded.
    pub message: String,
    /// `grpc-status-details-bin`, decoded from base64: an encoded `google.rpc.Status`.
    pub details: Option<Bytes>,
}

impl Status {
    /// A status the gateway itself gives the call.
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: None,
        }
    }

    /// The status in a header map (trailers, or the headers of a trailers-only answer).
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let code = headers.get(crate::grpc::GRPC_STATUS)?;
        let code = code
            .to_str()
            .ok()
            .and_then(|c| c.trim().parse::<i32>().ok())
            .unwrap_or(UNKNOWN);
        let message = headers
            .get(crate::grpc::GRPC_MESSAGE)
            .map(|m| percent_decode(&String::from_utf8_lossy(m.as_bytes()), true))
            .unwrap_or_default();
        let engine = GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
        );
        let details = headers
            .get("grpc-status-details-bin")
            .and_then(|d| engine.decode(d.as_bytes()).ok())
            .map(Bytes::from);
        Some(Self {
            code,
            message,
            details,
        })
    }

    /// The status a non-200 HTTP answer stands for (the gRPC spec's mapping).
    pub fn from_http(status: StatusCode) -> Self {
        Self::new(
            crate::grpc::Code::from_http(status) as i32,
            format!("the upstream answered HTTP {status} instead of a gRPC response"),
        )
    }

    /// The HTTP status this gRPC status maps to.
    pub fn http_status(&self) -> StatusCode {
        let code = match self.code {
            0 => 200,
            1 => 499,
            3 | 9 | 11 => 400,
            4 => 504,
            5 => 404,
            6 | 10 => 409,
            7 => 403,
            8 => 429,
            12 => 501,
            14 => 503,
            16 => 401,
            _ => 500,
        };
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The status as a JSON `google.rpc.Status`: `code`, `message` and `details`, each detail
    /// rendered as JSON with its `@type` when the type is known, else as base64 `value`.
    pub fn to_json(&self, pool: &DescriptorPool, options: &SerializeOptions) -> Json {
        let mut out = Map::new();
        out.insert("code".into(), Json::from(self.code));
        out.insert("message".into(), Json::from(self.message.clone()));
        let details = self
            .details
            .as_ref()
            .and_then(|bytes| {
                let status = pool.get_message_by_name("google.rpc.Status")?;
                DynamicMessage::decode(status, bytes.clone()).ok()
            })
            .and_then(
                |status| match status.get_field_by_name("details")?.into_owned() {
                    Value::List(list) => Some(list),
                    _ => None,
                },
            )
            .unwrap_or_default();
        let details: Vec<Json> = details
            .iter()
            .filter_map(Value::as_message)
            .map(|any| any_to_json(pool, any, options))
            .collect();
        out.insert("details".into(), Json::Array(details));
        Json::Object(out)
    }
}

/// A `google.protobuf.Any` as JSON: its message's fields and `@type`.
fn any_to_json(pool: &DescriptorPool, any: &DynamicMessage, options: &SerializeOptions) -> Json {
    let type_url = any
        .get_field_by_name("type_url")
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let value = match any.get_field_by_name("value").map(|v| v.into_owned()) {
        Some(Value::Bytes(bytes)) => bytes,
        _ => Bytes::new(),
    };
    let name = type_url.rsplit('/').next().unwrap_or_default();
    let decoded = pool
        .get_message_by_name(name)
        .and_then(|descriptor| DynamicMessage::decode(descriptor, value.clone()).ok())
        .and_then(|message| {
            message
                .serialize_with_options(serde_json::value::Serializer, options)
                .ok()
        });
    let mut out = Map::new();
    out.insert("@type".into(), Json::from(type_url));
    match decoded {
        Some(Json::Object(fields)) => out.extend(fields),
        Some(other) => {
            out.insert("value".into(), other);
        }
        None => {
            out.insert(
                "value".into(),
                Json::from(base64::engine::general_purpose::STANDARD.encode(&value)),
            );
        }
    }
    Json::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_across_chunk_boundaries() {
        let mut wire = Vec::new();
        wire.extend_from_slice(&frame(b"hello"));
        wire.extend_from_slice(&frame(b""));
        wire.extend_from_slice(&frame(b"world!"));
        let mut deframer = Deframer::default();
        let mut got = Vec::new();
        for chunk in wire.chunks(3) {
            deframer.push(chunk);
            while let Some(message) = deframer.next_message().expect("valid frames") {
                got.push(message);
            }
        }
        assert_eq!(
            got,
            vec![Bytes::from("hello"), Bytes::new(), Bytes::from("world!")]
        );
        deframer.finish().expect("nothing left");
    }

    #[test]
    fn compressed_oversized_and_truncated_frames_are_errors() {
        let mut deframer = Deframer::default();
        deframer.push(&[1, 0, 0, 0, 1, 7]);
        assert_eq!(deframer.next_message(), Err(FrameError::Compressed));
        let mut deframer = Deframer::default();
        deframer.push(&[0, 0xff, 0, 0, 0]);
        assert!(matches!(
            deframer.next_message(),
            Err(FrameError::TooLarge(_))
        ));
        let mut deframer = Deframer::default();
        deframer.push(&[0, 0, 0, 0, 9, 1]);
        assert_eq!(deframer.next_message(), Ok(None));
        assert_eq!(deframer.finish(), Err(FrameError::Truncated));
    }

    #[test]
    fn codes_map_to_the_standard_http_statuses() {
        let http = |code| Status::new(code, "").http_status().as_u16();
        assert_eq!(
            [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16].map(http),
            [
                200, 499, 500, 400, 504, 404, 409, 403, 429, 400, 409, 400, 501, 500, 503, 500, 401
            ]
        );
    }

    #[test]
    fn the_status_is_read_from_headers_with_its_message_decoded() {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", "5".parse().expect("value"));
        headers.insert(
            "grpc-message",
            "no%20shelf%20%E2%9C%93".parse().expect("value"),
        );
        let status = Status::from_headers(&headers).expect("a status");
        assert_eq!(status.code, 5);
        assert_eq!(status.message, "no shelf ✓");
        assert!(Status::from_headers(&HeaderMap::new()).is_none());
    }
}
