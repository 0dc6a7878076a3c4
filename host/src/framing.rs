//! The host owns HTTP framing. `Content-Length`, `Transfer-Encoding` and the hop-by-hop
//! fields that plugins set are dropped (see [`drop_plugin_framing`]), and every message
//! the gateway sends is framed from its actual body:
//!
//! - outbound requests carry no `Content-Length` or `Transfer-Encoding` of their own; the
//!   HTTP client frames them from the body's exact size (or chunks a stream);
//! - responses to clients get their `Content-Length` from the body ([`frame_response`]);
//!   1xx, 204 and 304 answers carry neither body nor `Content-Length`, and answers to
//!   `HEAD` carry no body (their `Content-Length` is the one the upstream sent, or the
//!   size of the body a plugin would have answered a `GET` with).

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body::Body as _;

use crate::body::{Body, empty};
use crate::proxy::strip_hop_by_hop;

/// Removes the fields that frame a message or concern one connection: `Content-Length`,
/// `Transfer-Encoding`, and every hop-by-hop field (with those `Connection` names).
pub fn drop_plugin_framing(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    headers.remove(header::CONTENT_LENGTH);
}

/// Whether a field is one only the host may set on its own: framing or hop-by-hop by name
/// (fields a `Connection` value names are caught when a whole message is checked).
pub fn is_host_owned(name: &http::HeaderName) -> bool {
    *name == header::CONTENT_LENGTH || crate::proxy::is_hop_by_hop(name)
}

/// Removes the fields that would let anything but the body decide an outbound request's
/// framing.
pub fn unframe_request(headers: &mut HeaderMap) {
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::TRANSFER_ENCODING);
}

/// Frames a response to a request with `method` from its body.
pub fn frame_response(method: &Method, response: Response<Body>) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    parts.headers.remove(header::TRANSFER_ENCODING);
    let bodiless = parts.status.is_informational()
        || parts.status == StatusCode::NO_CONTENT
        || parts.status == StatusCode::NOT_MODIFIED;
    if bodiless {
        parts.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(parts, empty());
    }
    let exact = body.size_hint().exact();
    if *method == Method::HEAD {
        // An upstream's HEAD answer has an empty body and the length a GET would have;
        // a plugin's answer has the body a GET would have had.
        let upstream_length = parts.headers.contains_key(header::CONTENT_LENGTH);
        if !upstream_length && let Some(len) = exact.filter(|&len| len > 0) {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
        return Response::from_parts(parts, empty());
    }
    match exact {
        Some(len) => {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
        None => {
            parts.headers.remove(header::CONTENT_LENGTH);
        }
    }
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::full;

    fn response(status: u16, headers: &[(&str, &str)], body: &'static str) -> Response<Body> {
        let mut response = Response::new(full(body));
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        for (name, value) in headers {
            response.headers_mut().append(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        response
    }

    #[test]
    fn the_length_comes_from_the_body() {
        let framed = frame_response(
            &Method::GET,
            response(
                200,
                &[("content-length", "999"), ("transfer-encoding", "chunked")],
                "short",
            ),
        );
        assert_eq!(framed.headers()["content-length"], "5");
        assert!(!framed.headers().contains_key("transfer-encoding"));
    }

    #[test]
    fn no_body_and_no_length_on_204_and_304() {
        for status in [204, 304] {
            let framed = frame_response(
                &Method::GET,
                response(status, &[("content-length", "10")], "abc"),
            );
            assert!(!framed.headers().contains_key("content-length"));
            assert!(framed.body().is_end_stream());
        }
    }

    #[test]
    fn head_answers_keep_the_upstream_length_and_drop_the_body() {
        let mut upstream = response(200, &[("content-length", "1234")], "");
        *upstream.body_mut() = empty();
        let framed = frame_response(&Method::HEAD, upstream);
        assert_eq!(framed.headers()["content-length"], "1234");
        let plugin = frame_response(&Method::HEAD, response(200, &[], "hello"));
        assert_eq!(plugin.headers()["content-length"], "5");
        assert!(plugin.body().is_end_stream());
    }

    #[test]
    fn plugin_framing_and_hop_by_hop_fields_are_dropped() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("content-length", "3"),
            ("transfer-encoding", "chunked"),
            ("connection", "close, x-secret"),
            ("x-secret", "1"),
            ("upgrade", "websocket"),
            ("x-kept", "1"),
        ] {
            headers.append(
                header::HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        drop_plugin_framing(&mut headers);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert!(headers.contains_key("x-kept"));
    }
}
