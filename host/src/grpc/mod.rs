//! gRPC clients: telling them apart, their deadline (`grpc-timeout`), and answering them in
//! their own protocol when the gateway, a stage or a non-gRPC upstream answers instead of a
//! gRPC server: a trailers-only response (HTTP 200, `grpc-status` and `grpc-message` in the
//! head, no body), never a JSON error a gRPC client cannot read.

pub mod frame;
pub mod web;

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body::Body as _;

use crate::body::{Body, empty};
use crate::rescue::GatewayError;

/// `grpc-status`.
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// `grpc-message`.
pub const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// The largest gateway or stage answer whose JSON `message` is read into `grpc-message`.
const MESSAGE_BODY_LIMIT: u64 = 8 * 1024;

/// How a gRPC client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// gRPC over HTTP/2 (`application/grpc[+codec]`).
    Grpc,
    /// gRPC-Web (`application/grpc-web[+codec]` or `application/grpc-web-text[+codec]`).
    Web(web::Encoding),
}

impl Client {
    /// The client's protocol, from the request's `Content-Type`; `None` for other clients.
    pub fn of(headers: &HeaderMap) -> Option<Self> {
        let content_type = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
        let media = content_type.split(';').next()?.trim();
        let base = media.split('+').next()?;
        [
            ("application/grpc", Self::Grpc),
            ("application/grpc-web", Self::Web(web::Encoding::Binary)),
            ("application/grpc-web-text", Self::Web(web::Encoding::Text)),
        ]
        .into_iter()
        .find_map(|(name, client)| base.eq_ignore_ascii_case(name).then_some(client))
    }

    /// The `Content-Type` of answers to this client.
    fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Self::Grpc => "application/grpc",
            Self::Web(web::Encoding::Binary) => "application/grpc-web+proto",
            Self::Web(web::Encoding::Text) => "application/grpc-web-text+proto",
        })
    }
}

/// Whether a response is already in gRPC (or gRPC-Web) form.
pub fn is_grpc_response(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .get(..16)
                .is_some_and(|start| start.eq_ignore_ascii_case("application/grpc"))
        })
}

/// The deadline a gRPC client set with `grpc-timeout` (at most 8 digits and a unit: `H`,
/// `M`, `S`, `m`, `u` or `n`); `None` when absent or malformed.
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(GRPC_TIMEOUT)?.as_bytes();
    let (unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(amount * 3600),
        b'M' => Duration::from_secs(amount * 60),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// gRPC status codes (the ones the gateway answers with).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    /// 2
    Unknown = 2,
    /// 3
    InvalidArgument = 3,
    /// 4
    DeadlineExceeded = 4,
    /// 7
    PermissionDenied = 7,
    /// 8
    ResourceExhausted = 8,
    /// 12
    Unimplemented = 12,
    /// 13
    Internal = 13,
    /// 14
    Unavailable = 14,
    /// 16
    Unauthenticated = 16,
}

impl Code {
    /// The code a gRPC client reads from an HTTP status (gRPC's "HTTP to gRPC status code
    /// mapping"), for answers that are not gRPC: a stage's refusal, a non-gRPC upstream.
    pub fn from_http(status: StatusCode) -> Self {
        match status.as_u16() {
            400 => Self::Internal,
            401 => Self::Unauthenticated,
            403 => Self::PermissionDenied,
            404 => Self::Unimplemented,
            429 | 502 | 503 | 504 => Self::Unavailable,
            _ => Self::Unknown,
        }
    }

    /// The code for an error the gateway answers itself, by its stable error code (the
    /// JSON body's `error`): more precise than its HTTP status.
    pub fn from_error_code(code: &str) -> Option<Self> {
        Some(match code {
            "no_route" | "method_not_allowed" => Self::Unimplemented,
            "bad_request" | "unsupported_content_encoding" => Self::InvalidArgument,
            "headers_too_large" | "body_too_large" | "upstream_response_too_large" => {
                Self::ResourceExhausted
            }
            "upstream_timeout" | "stage_timeout" => Self::DeadlineExceeded,
            "upstream_unreachable"
            | "upstream_breaker_open"
            | "upstream_no_target"
            | "plugin_unavailable"
            | "overloaded"
            | "misdirected_request" => Self::Unavailable,
            "stage_failed" => Self::Internal,
            _ => return None,
        })
    }
}

/// A trailers-only answer: HTTP 200 with `grpc-status` and `grpc-message` in the head.
pub fn trailers_only(client: Client, code: Code, message: &str) -> Response<Body> {
    let mut response = Response::new(empty());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, client.content_type());
    headers.insert(GRPC_STATUS, HeaderValue::from(u16::from(code as u8)));
    if let Ok(value) = HeaderValue::from_str(&percent_encode(message)) {
        headers.insert(GRPC_MESSAGE, value);
    }
    response
}

/// An error the gateway answers a gRPC client with.
pub fn error_response(client: Client, error: &GatewayError) -> Response<Body> {
    let code = Code::from_error_code(error.status_and_code().1).unwrap_or(Code::Unknown);
    trailers_only(client, code, &error.to_string())
}

/// Turns an answer that is not gRPC (a stage's refusal, a non-gRPC upstream's error page)
/// into a trailers-only one, keeping its headers but the framing ones. The code is the
/// gateway's own error's when the body is one of its JSON errors, else it comes from the
/// HTTP status; the message from a small JSON body's `message` (or `error`) field, else
/// the status text.
pub async fn translate(client: Client, response: Response<Body>) -> Response<Body> {
    let (parts, body) = response.into_parts();
    let small = body
        .size_hint()
        .exact()
        .is_some_and(|len| len <= MESSAGE_BODY_LIMIT);
    let json = if small {
        http_body_util::BodyExt::collect(body)
            .await
            .ok()
            .and_then(|collected| {
                serde_json::from_slice::<serde_json::Value>(&collected.to_bytes()).ok()
            })
    } else {
        None
    };
    let text = |key: &str| Some(json.as_ref()?.get(key)?.as_str()?.to_string());
    let code = text("error")
        .and_then(|error| Code::from_error_code(&error))
        .unwrap_or_else(|| Code::from_http(parts.status));
    let from_body = text("message").or_else(|| text("error"));
    let message = from_body.unwrap_or_else(|| {
        format!(
            "HTTP {} {}",
            parts.status.as_u16(),
            parts.status.canonical_reason().unwrap_or("")
        )
        .trim_end()
        .to_string()
    });
    let mut answer = trailers_only(client, code, &message);
    for (name, value) in &parts.headers {
        if !matches!(
            *name,
            header::CONTENT_TYPE
                | header::CONTENT_LENGTH
                | header::CONTENT_ENCODING
                | header::TRANSFER_ENCODING
        ) && !answer.headers().contains_key(name)
        {
            answer.headers_mut().append(name, value.clone());
        }
    }
    answer
}

/// `grpc-message` encoding: bytes outside printable ASCII, and `%`, as `%XX`.
fn percent_encode(message: &str) -> String {
    let mut encoded = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..0x7f).contains(&byte) && byte != b'%' {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn clients_are_told_apart_by_content_type() {
        let of = |ct| Client::of(&headers(&[("content-type", ct)]));
        assert_eq!(of("application/grpc"), Some(Client::Grpc));
        assert_eq!(of("application/grpc+proto"), Some(Client::Grpc));
        assert_eq!(
            of("application/grpc-web+proto"),
            Some(Client::Web(web::Encoding::Binary))
        );
        assert_eq!(
            of("Application/gRPC-Web-Text"),
            Some(Client::Web(web::Encoding::Text))
        );
        assert_eq!(of("application/json"), None);
        assert_eq!(of("application/grpcx"), None);
    }

    #[test]
    fn grpc_timeout_units() {
        let of = |value| timeout(&headers(&[("grpc-timeout", value)]));
        assert_eq!(of("250m"), Some(Duration::from_millis(250)));
        assert_eq!(of("2S"), Some(Duration::from_secs(2)));
        assert_eq!(of("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(of("7u"), Some(Duration::from_micros(7)));
        assert_eq!(of("123456789m"), None, "more than 8 digits");
        assert_eq!(of("m"), None);
        assert_eq!(of("10x"), None);
        assert_eq!(of("-1S"), None);
    }

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(percent_encode("upstream 100% down"), "upstream 100%25 down");
        assert_eq!(percent_encode("line\nbreak é"), "line%0Abreak %C3%A9");
    }

    #[test]
    fn http_statuses_map_as_grpc_says() {
        assert_eq!(
            Code::from_http(StatusCode::UNAUTHORIZED),
            Code::Unauthenticated
        );
        assert_eq!(
            Code::from_http(StatusCode::FORBIDDEN),
            Code::PermissionDenied
        );
        assert_eq!(Code::from_http(StatusCode::NOT_FOUND), Code::Unimplemented);
        assert_eq!(
            Code::from_http(StatusCode::TOO_MANY_REQUESTS),
            Code::Unavailable
        );
        assert_eq!(Code::from_http(StatusCode::IM_A_TEAPOT), Code::Unknown);
    }
}
