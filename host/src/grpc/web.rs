//! gRPC-Web to gRPC for an HTTP/2 upstream, and back. Requests keep their frames (the
//! base64 `-text` form is decoded); a response's trailers, which a browser cannot read,
//! become the body's last frame (flag `0x80`, then `name: value\r\n` lines). `-text`
//! answers are base64, each body chunk encoded on its own (padded), so a streamed message
//! is never held back waiting for the bytes that would complete a base64 group.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use http::Response;
use http::header::{self, HeaderMap, HeaderValue};
use http_body::Frame;

use crate::body::{Body, BoxError, boxed};

/// How a gRPC-Web client encodes its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Binary frames, as in gRPC (`application/grpc-web`).
    Binary,
    /// Base64 text (`application/grpc-web-text`).
    Text,
}

/// A `-text` body that is not valid base64.
#[derive(Debug, thiserror::Error)]
#[error("the gRPC-Web text body is not valid base64: {0}")]
pub struct TextError(String);

/// The codec suffix of a gRPC content type (`+proto`), or none.
fn codec(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .and_then(|media| media.split_once('+'))
        .map(|(_, codec)| format!("+{}", codec.trim().to_ascii_lowercase()))
        .unwrap_or_default()
}

/// Rewrites a gRPC-Web request for a gRPC upstream: its content type, `TE: trailers`, and
/// a decoded body for `-text`.
pub fn request(headers: &mut HeaderMap, body: Body, encoding: Encoding) -> Body {
    let content_type = format!("application/grpc{}", codec(headers));
    if let Ok(value) = HeaderValue::from_str(&content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    headers.remove(header::CONTENT_LENGTH);
    match encoding {
        Encoding::Binary => body,
        Encoding::Text => boxed(TextDecoder {
            inner: body,
            pending: BytesMut::new(),
        }),
    }
}

/// Turns a gRPC upstream's answer into gRPC-Web; anything else passes unchanged.
pub fn response(response: Response<Body>, encoding: Encoding) -> Response<Body> {
    if !super::is_grpc_response(response.headers()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let base = match encoding {
        Encoding::Binary => "application/grpc-web",
        Encoding::Text => "application/grpc-web-text",
    };
    let content_type = format!("{base}{}", codec(&parts.headers));
    if let Ok(value) = HeaderValue::from_str(&content_type) {
        parts.headers.insert(header::CONTENT_TYPE, value);
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(
        parts,
        boxed(WebBody {
            inner: body,
            encoding,
        }),
    )
}

/// The frame that carries trailers in a gRPC-Web body.
fn trailer_frame(trailers: &HeaderMap) -> Bytes {
    let mut block = Vec::new();
    for (name, value) in trailers {
        block.extend_from_slice(name.as_str().as_bytes());
        block.extend_from_slice(b": ");
        block.extend_from_slice(value.as_bytes());
        block.extend_from_slice(b"\r\n");
    }
    let mut frame = BytesMut::with_capacity(5 + block.len());
    frame.put_u8(0x80);
    frame.put_u32(block.len() as u32);
    frame.extend_from_slice(&block);
    frame.freeze()
}

pin_project_lite::pin_project! {
    /// A gRPC response body as gRPC-Web.
    struct WebBody {
        #[pin]
        inner: Body,
        encoding: Encoding,
    }
}

impl http_body::Body for WebBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let bytes = match ready!(this.inner.poll_frame(cx)) {
            None => return Poll::Ready(None),
            Some(Err(error)) => return Poll::Ready(Some(Err(error))),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => trailer_frame(&trailers),
                    Err(_) => Bytes::new(),
                },
            },
        };
        let bytes = match this.encoding {
            Encoding::Binary => bytes,
            Encoding::Text => Bytes::from(STANDARD.encode(&bytes)),
        };
        Poll::Ready(Some(Ok(Frame::data(bytes))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

pin_project_lite::pin_project! {
    /// A `-text` request body, decoded as its base64 groups arrive (padded segments may
    /// follow one another).
    struct TextDecoder {
        #[pin]
        inner: Body,
        pending: BytesMut,
    }
}

impl TextDecoder {
    /// Decodes every complete group of four characters held, segment by segment.
    fn decode_groups(pending: &mut BytesMut) -> Result<Bytes, TextError> {
        let usable = pending.len() / 4 * 4;
        let mut decoded = Vec::with_capacity(usable / 4 * 3);
        let mut start = 0;
        while start < usable {
            // A segment ends with the first group that holds padding.
            let end = pending[start..usable]
                .chunks(4)
                .position(|group| group.contains(&b'='))
                .map_or(usable, |index| start + (index + 1) * 4);
            STANDARD
                .decode_vec(&pending[start..end], &mut decoded)
                .map_err(|e| TextError(e.to_string()))?;
            start = end;
        }
        pending.advance(usable);
        Ok(decoded.into())
    }
}

impl http_body::Body for TextDecoder {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        loop {
            match ready!(this.inner.as_mut().poll_frame(cx)) {
                None if this.pending.is_empty() => return Poll::Ready(None),
                None => {
                    let error = TextError(format!("{} bytes left over", this.pending.len()));
                    this.pending.clear();
                    return Poll::Ready(Some(Err(error.into())));
                }
                Some(Err(error)) => return Poll::Ready(Some(Err(error))),
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    this.pending
                        .extend(data.iter().filter(|b| !b.is_ascii_whitespace()));
                    let decoded = Self::decode_groups(this.pending)?;
                    if !decoded.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(decoded))));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_segments_decode_across_chunks_and_padding() {
        let mut pending = BytesMut::from(&b"AAEC"[..]);
        assert_eq!(
            TextDecoder::decode_groups(&mut pending).unwrap(),
            &[0, 1, 2][..]
        );
        // Two padded segments back to back, then half a group.
        pending.extend_from_slice(b"AQ==Ag==AA");
        assert_eq!(
            TextDecoder::decode_groups(&mut pending).unwrap(),
            &[1, 2][..]
        );
        assert_eq!(&pending[..], b"AA");
        pending.extend_from_slice(b"AA");
        assert_eq!(
            TextDecoder::decode_groups(&mut pending).unwrap(),
            &[0, 0, 0][..]
        );
        pending.extend_from_slice(b"!!!!");
        assert!(TextDecoder::decode_groups(&mut pending).is_err());
    }

    #[test]
    fn trailers_become_the_last_frame() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let frame = trailer_frame(&trailers);
        assert_eq!(frame[0], 0x80);
        assert_eq!(&frame[1..5], &16u32.to_be_bytes());
        assert_eq!(&frame[5..], b"grpc-status: 0\r\n");
    }
}
