//! Response compression, a native stage on the one [`Stage`] seam, and the content codings
//! the gateway decodes for stages that read request bodies.
//!
//! A route's `compress` key adds this stage ahead of its configured stages, so its response
//! hook runs last, on what transforms left. The request hook picks a coding from
//! `Accept-Encoding` (RFC 9110 §12.5.3: q-values, `*`, `identity;q=0`; the route's list
//! breaks ties, `br`, `zstd`, `gzip` by default); the response hook compresses when the
//! response is worth it:
//!
//! - it may have a body (not 1xx, 204, 304, nor a 206 range), is not an answer to `HEAD`,
//!   and is not encoded already (`Content-Encoding`);
//! - it does not say `Cache-Control: no-transform`;
//! - its `Content-Type` is in the route's `types`;
//! - its body is not known to be smaller than `min-bytes` (a body of unknown length is
//!   compressed).
//!
//! Such a response gets `Vary: Accept-Encoding` whatever the client accepts (caches must
//! tell the two representations apart). A compressed one loses `Content-Length` (the host
//! frames it from the body, whose length is unknown until the end) and `Accept-Ranges`,
//! gets `Content-Encoding`, and a strong `ETag` becomes weak (`"x"` → `W/"x"`): the bytes
//! differ from the identity representation's.
//!
//! The body streams through the encoder and is never held whole: a chunk is compressed as
//! it arrives, and memory per response is the encoder's window. Flush policy: whenever the
//! upstream has nothing more to give yet (its body is pending), the encoder flushes what it
//! has compressed so far (a sync flush: the stream stays one stream). A body that arrives
//! at once is compressed as one run; one that trickles (server-sent events, long polls)
//! reaches the client chunk by chunk, never held back waiting for more input. Trailers of
//! a compressed body are dropped.

use std::io;
use std::pin::Pin;

use async_compression::Level;
use async_compression::tokio::bufread::{
    BrotliDecoder, BrotliEncoder, GzipDecoder, GzipEncoder, ZstdDecoder, ZstdEncoder,
};
use bytes::Bytes;
use futures_util::TryStreamExt;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body::{Body as _, Frame};
use http_body_util::{BodyExt, StreamBody};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::io::{ReaderStream, StreamReader};

use super::Flow;
use super::stage::{Decision, RequestParts, Stage, StageFuture, StageInfo};
use crate::body::Body;
use crate::config::{CompressConfig, CompressLevels, ContentCoding, RouteConfig};
use crate::rescue::GatewayError;

/// Brotli's window (`lgwin`): 512 KiB, as nginx's brotli module, instead of the library's
/// 4 MiB. It bounds what every compressed response holds in memory.
const BROTLI_WINDOW_LOG: i32 = 19;
/// zstd's window: 1 MiB, within the 8 MiB every HTTP decoder must accept (RFC 9659).
const ZSTD_WINDOW_LOG: u32 = 20;
/// Largest chunk of compressed output sent at once.
const OUTPUT_CHUNK_BYTES: usize = 16 << 10;

/// The `compress` stage of a route.
pub struct CompressStage {
    config: CompressConfig,
}

/// The coding negotiated for a request, carried from the request hook to the response hook.
#[derive(Debug, Clone, Copy)]
struct Negotiated(Option<ContentCoding>);

impl CompressStage {
    /// The stage a route's `compress` key asks for, if any.
    pub fn for_route(route: &RouteConfig) -> Option<Box<dyn Stage>> {
        let config = route.compress.clone()?;
        Some(Box::new(Self { config }))
    }

    /// Whether `response` is one to compress (or to mark `Vary: Accept-Encoding`).
    fn worth_compressing(&self, response: &Response<Body>) -> bool {
        let status = response.status();
        let headers = response.headers();
        let bodiless = status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        if bodiless || status == StatusCode::PARTIAL_CONTENT {
            return false;
        }
        if headers.contains_key(header::CONTENT_ENCODING)
            || headers.contains_key(header::CONTENT_RANGE)
            || has_no_transform(headers)
        {
            return false;
        }
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok());
        if !content_type.is_some_and(|ct| self.config.compresses_type(ct)) {
            return false;
        }
        let body = response.body();
        let small = body
            .size_hint()
            .upper()
            .is_some_and(|upper| upper < self.config.min_bytes);
        !(body.is_end_stream() || small)
    }
}

impl Stage for CompressStage {
    fn on_request<'s, 'f: 's>(
        &'s self,
        flow: &'s mut Flow<'f>,
        request: &'s mut RequestParts,
    ) -> StageFuture<'s, Decision> {
        // An answer to HEAD has no body: it is left as the upstream sent it.
        let decision = if request.parts.method == Method::HEAD {
            Decision::Skip
        } else {
            let coding = negotiate(&request.parts.headers, &self.config.encodings);
            flow.extensions.insert(Negotiated(coding));
            Decision::Continue
        };
        Box::pin(std::future::ready(Ok(decision)))
    }

    fn on_response<'s, 'f: 's>(
        &'s self,
        flow: &'s mut Flow<'f>,
        mut response: Response<Body>,
    ) -> StageFuture<'s, Response<Body>> {
        if self.worth_compressing(&response) {
            add_vary(response.headers_mut());
            let coding = flow.extensions.get::<Negotiated>().and_then(|n| n.0);
            if let Some(coding) = coding {
                let (mut parts, body) = response.into_parts();
                let headers = &mut parts.headers;
                headers.remove(header::CONTENT_LENGTH);
                headers.remove(header::ACCEPT_RANGES);
                headers.insert(
                    header::CONTENT_ENCODING,
                    HeaderValue::from_static(coding.token()),
                );
                weaken_etag(headers);
                response = Response::from_parts(parts, encode(body, coding, self.config.levels));
            }
        }
        Box::pin(std::future::ready(Ok(response)))
    }

    fn info(&self) -> StageInfo<'_> {
        StageInfo {
            kind: "compress",
            plugin: None,
            pool: None,
            position: None,
        }
    }
}

// === Negotiation ===

/// The coding to answer with, given the request's `Accept-Encoding` and the codings
/// `offered` in order of preference; `None` is identity (no coding).
///
/// Per RFC 9110 §12.5.3: a coding's weight is its own q-value, else that of `*`, else 0; the
/// heaviest offered coding wins, the earlier in `offered` on a tie. Identity wins over it
/// only when the client lists `identity` with a greater weight (identity is always
/// acceptable, but unlisted it is the fallback, not a rival: `br;q=0.9, gzip;q=0.8` asks for
/// brotli). No `Accept-Encoding` at all is taken as identity, as nginx and Envoy do:
/// clients that decode say so. When nothing is acceptable, identity it is.
pub fn negotiate(headers: &HeaderMap, offered: &[ContentCoding]) -> Option<ContentCoding> {
    let fields = headers.get_all(header::ACCEPT_ENCODING);
    // No field at all: identity.
    fields.iter().next()?;
    let mut star: Option<u16> = None;
    let mut identity: Option<u16> = None;
    let mut weights: Vec<(ContentCoding, u16)> = Vec::new();
    let elements = fields
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|text| text.split(','));
    for element in elements {
        let mut pieces = element.split(';');
        let name = pieces.next().unwrap_or_default().trim();
        if name.is_empty() {
            continue;
        }
        let mut weight = Some(1000);
        for parameter in pieces {
            if let Some((key, value)) = parameter.split_once('=')
                && key.trim().eq_ignore_ascii_case("q")
            {
                weight = parse_qvalue(value.trim());
            }
        }
        // An element whose weight cannot be read is left out, as if not sent.
        let Some(weight) = weight else { continue };
        let keep_heaviest =
            |slot: &mut Option<u16>| *slot = Some(slot.map_or(weight, |w| w.max(weight)));
        if name == "*" {
            keep_heaviest(&mut star);
        } else if name.eq_ignore_ascii_case("identity") {
            keep_heaviest(&mut identity);
        } else if let Some(coding) = ContentCoding::from_token(name) {
            match weights.iter_mut().find(|(c, _)| *c == coding) {
                Some((_, w)) => *w = (*w).max(weight),
                None => weights.push((coding, weight)),
            }
        }
    }
    let weight_of = |coding: ContentCoding| {
        weights
            .iter()
            .find(|(c, _)| *c == coding)
            .map(|(_, w)| *w)
            .or(star)
            .unwrap_or(0)
    };
    let (best, weight) = offered
        .iter()
        .map(|&coding| (coding, weight_of(coding)))
        .fold(
            None,
            |best: Option<(ContentCoding, u16)>, (coding, weight)| match best {
                Some((_, best_weight)) if best_weight >= weight => best,
                _ => Some((coding, weight)),
            },
        )?;
    (weight > 0 && weight >= identity.unwrap_or(0)).then_some(best)
}

/// A q-value (`0`, `0.5`, `1.000`) in thousandths; `None` if it is not one.
fn parse_qvalue(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits_ok = fraction.len() <= 3 && fraction.bytes().all(|b| b.is_ascii_digit());
    let thousandths = match whole {
        "0" if digits_ok => format!("{fraction:0<3}").parse::<u16>().ok()?,
        "1" if digits_ok && fraction.bytes().all(|b| b == b'0') => 1000,
        _ => return None,
    };
    Some(thousandths)
}

// === Response headers ===

/// Whether `Cache-Control` forbids intermediaries to transform the content.
fn has_no_transform(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|text| text.split(','))
        .any(|directive| directive.trim().eq_ignore_ascii_case("no-transform"))
}

/// Adds `Accept-Encoding` to `Vary`, unless it is there already (or `Vary: *`).
fn add_vary(headers: &mut HeaderMap) {
    let covered = headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|text| text.split(','))
        .map(str::trim)
        .any(|name| name == "*" || name.eq_ignore_ascii_case("accept-encoding"));
    if !covered {
        headers.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

/// Makes a strong `ETag` weak: a compressed body is not byte-for-byte the one it tags.
fn weaken_etag(headers: &mut HeaderMap) {
    let Some(etag) = headers.get(header::ETAG) else {
        return;
    };
    if etag.as_bytes().first() == Some(&b'"') {
        let weak = [b"W/", etag.as_bytes()].concat();
        if let Ok(value) = HeaderValue::from_bytes(&weak) {
            headers.insert(header::ETAG, value);
        }
    }
}

// === Codecs ===

/// A body's bytes as an [`AsyncRead`] source for the codecs.
fn reader(body: Body) -> impl tokio::io::AsyncBufRead + Send + Sync {
    StreamReader::new(body.into_data_stream().map_err(io::Error::other))
}

/// `body`, compressed with `coding` as it streams (see the module docs for when it flushes).
/// Its length is unknown, so the host frames it chunked (HTTP/1.1) or by frames (HTTP/2).
fn encode(body: Body, coding: ContentCoding, levels: CompressLevels) -> Body {
    let input = reader(body);
    let encoder: Pin<Box<dyn AsyncRead + Send + Sync>> = match coding {
        ContentCoding::Gzip => Box::pin(GzipEncoder::with_quality(
            input,
            Level::Precise(levels.gzip as i32),
        )),
        ContentCoding::Brotli => {
            let params = async_compression::brotli::EncoderParams::default()
                .quality(Level::Precise(levels.br as i32))
                .window_size(BROTLI_WINDOW_LOG);
            Box::pin(BrotliEncoder::with_params(input, params))
        }
        ContentCoding::Zstd => Box::pin(ZstdEncoder::with_quality_and_params(
            input,
            Level::Precise(levels.zstd),
            &[async_compression::zstd::CParameter::window_log(
                ZSTD_WINDOW_LOG,
            )],
        )),
    };
    let output = ReaderStream::with_capacity(encoder, OUTPUT_CHUNK_BYTES);
    crate::body::boxed(StreamBody::new(output.map_ok(Frame::data)))
}

/// The coding of a request body per its `Content-Encoding`: `None` for identity, an error
/// for a coding the gateway cannot decode or for several stacked.
pub fn request_coding(headers: &HeaderMap) -> Result<Option<ContentCoding>, GatewayError> {
    let mut tokens = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .flat_map(|value| value.to_str().unwrap_or("?").split(','))
        .map(str::trim)
        .filter(|token| !token.is_empty() && !token.eq_ignore_ascii_case("identity"));
    let Some(first) = tokens.next() else {
        return Ok(None);
    };
    match (ContentCoding::from_token(first), tokens.next()) {
        (Some(coding), None) => Ok(Some(coding)),
        _ => Err(GatewayError::UnsupportedEncoding {
            coding: crate::text::untrusted(
                &headers
                    .get_all(header::CONTENT_ENCODING)
                    .iter()
                    .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
        }),
    }
}

/// Reads `body` whole, decoding `coding`, refusing (413) more than `limit` decoded bytes.
/// The cap applies while decoding: a small body that inflates to gigabytes (a
/// decompression bomb) stops at `limit + 1` bytes.
pub async fn decode_request_body(
    body: Body,
    coding: ContentCoding,
    limit: u64,
) -> Result<Bytes, GatewayError> {
    let input = reader(body);
    let decoder: Pin<Box<dyn AsyncRead + Send>> = match coding {
        ContentCoding::Gzip => {
            let mut decoder = GzipDecoder::new(input);
            decoder.multiple_members(true);
            Box::pin(decoder)
        }
        ContentCoding::Brotli => Box::pin(BrotliDecoder::new(input)),
        // A window of at most 8 MiB, as RFC 9659 asks of HTTP decoders.
        ContentCoding::Zstd => Box::pin(ZstdDecoder::new_for_http(input)),
    };
    let mut decoded = Vec::new();
    let read = decoder
        .take(limit.saturating_add(1))
        .read_to_end(&mut decoded)
        .await;
    match read {
        Ok(_) if decoded.len() as u64 > limit => Err(GatewayError::BodyTooLarge { limit }),
        Ok(_) => Ok(Bytes::from(decoded)),
        Err(error) => {
            // The route's own cap on the body as sent.
            if let Some(inner) = error.get_ref()
                && let Some(exceeded) = inner.downcast_ref::<crate::proxy::BodyLimitExceeded>()
            {
                return Err(GatewayError::BodyTooLarge {
                    limit: exceeded.limit,
                });
            }
            Err(GatewayError::BadRequest(format!(
                "could not decode the {coding} request body: {error}"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: [ContentCoding; 3] = ContentCoding::ALL;

    fn pick(accept: &[&str]) -> Option<&'static str> {
        pick_from(accept, &DEFAULT)
    }

    fn pick_from(accept: &[&str], offered: &[ContentCoding]) -> Option<&'static str> {
        let mut headers = HeaderMap::new();
        for value in accept {
            headers.append(
                header::ACCEPT_ENCODING,
                HeaderValue::from_str(value).unwrap(),
            );
        }
        negotiate(&headers, offered).map(ContentCoding::token)
    }

    #[test]
    fn the_heaviest_coding_wins_and_the_route_order_breaks_ties() {
        assert_eq!(pick(&["gzip, deflate, br, zstd"]), Some("br"));
        assert_eq!(pick(&["gzip, zstd"]), Some("zstd"));
        assert_eq!(pick(&["gzip;q=1.0, br;q=0.8"]), Some("gzip"));
        assert_eq!(pick(&["br;q=0.5", "gzip;q=0.6"]), Some("gzip"));
        assert_eq!(pick(&["GZIP"]), Some("gzip"));
        assert_eq!(pick(&["x-gzip"]), Some("gzip"));
        let gzip_first = [ContentCoding::Gzip, ContentCoding::Brotli];
        assert_eq!(pick_from(&["br, gzip, zstd"], &gzip_first), Some("gzip"));
        assert_eq!(pick_from(&["zstd"], &gzip_first), None);
    }

    #[test]
    fn star_and_identity() {
        assert_eq!(pick(&["*"]), Some("br"));
        assert_eq!(pick(&["*;q=0.5, gzip"]), Some("gzip"));
        assert_eq!(pick(&["br;q=0, *"]), Some("zstd"));
        assert_eq!(pick(&["identity"]), None);
        assert_eq!(
            pick(&["gzip;q=0.5, identity"]),
            None,
            "identity weighs more"
        );
        assert_eq!(pick(&["gzip;q=0.5, identity;q=0.5"]), Some("gzip"));
        assert_eq!(pick(&["gzip;q=0.5, *;q=0"]), Some("gzip"));
        assert_eq!(pick(&["gzip;q=0.5, *;q=0.8"]), Some("br"));
        assert_eq!(pick(&["identity;q=0, deflate"]), None, "nothing acceptable");
        assert_eq!(pick(&["gzip;q=0, br;q=0"]), None);
    }

    #[test]
    fn absent_empty_and_odd_fields() {
        assert_eq!(pick(&[]), None);
        assert_eq!(pick(&[""]), None);
        assert_eq!(pick(&[" , ,gzip ,"]), Some("gzip"));
        assert_eq!(
            pick(&["gzip;q=2"]),
            None,
            "an unreadable weight drops the element"
        );
        assert_eq!(pick(&["gzip;q=0.0001, br;q=x"]), None);
        assert_eq!(pick(&["gzip ; Q=0.3 , zstd;q=0.2"]), Some("gzip"));
    }

    #[test]
    fn qvalues() {
        assert_eq!(parse_qvalue("0"), Some(0));
        assert_eq!(parse_qvalue("0.5"), Some(500));
        assert_eq!(parse_qvalue("0.125"), Some(125));
        assert_eq!(parse_qvalue("1"), Some(1000));
        assert_eq!(parse_qvalue("1.000"), Some(1000));
        for bad in ["1.5", "2", "-0", "0.1234", ".5", "", "0.x", "1.001"] {
            assert_eq!(parse_qvalue(bad), None, "{bad}");
        }
    }

    #[test]
    fn vary_and_etag() {
        let mut headers = HeaderMap::new();
        headers.insert(header::VARY, HeaderValue::from_static("origin"));
        add_vary(&mut headers);
        add_vary(&mut headers);
        let vary: Vec<_> = headers.get_all(header::VARY).iter().collect();
        assert_eq!(vary, ["origin", "Accept-Encoding"]);
        let mut star = HeaderMap::new();
        star.insert(header::VARY, HeaderValue::from_static("*"));
        add_vary(&mut star);
        assert_eq!(star.get_all(header::VARY).iter().count(), 1);

        headers.insert(header::ETAG, HeaderValue::from_static("\"abc\""));
        weaken_etag(&mut headers);
        assert_eq!(headers[header::ETAG], "W/\"abc\"");
        weaken_etag(&mut headers);
        assert_eq!(headers[header::ETAG], "W/\"abc\"");
    }

    #[test]
    fn no_transform_is_found_among_directives() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=60, No-Transform"),
        );
        assert!(has_no_transform(&headers));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        assert!(!has_no_transform(&headers));
    }

    #[test]
    fn request_codings() {
        let coding = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append(
                    header::CONTENT_ENCODING,
                    HeaderValue::from_str(value).unwrap(),
                );
            }
            request_coding(&headers).map(|c| c.map(ContentCoding::token))
        };
        assert_eq!(coding(&[]).unwrap(), None);
        assert_eq!(coding(&["identity"]).unwrap(), None);
        assert_eq!(coding(&["GZIP"]).unwrap(), Some("gzip"));
        assert_eq!(coding(&["br"]).unwrap(), Some("br"));
        assert!(coding(&["deflate"]).is_err());
        assert!(coding(&["gzip, br"]).is_err());
        assert!(coding(&["gzip", "gzip"]).is_err());
    }

    async fn roundtrip(coding: ContentCoding, input: &'static [u8]) -> Bytes {
        let compressed = encode(crate::body::full(input), coding, CompressLevels::default())
            .collect()
            .await
            .unwrap()
            .to_bytes();
        assert_ne!(&compressed[..], input);
        decode_request_body(crate::body::full(compressed), coding, 1 << 20)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn every_coding_decodes_to_what_was_encoded() {
        let input: &'static [u8] = b"hello hello hello hello hello hello, compressed world";
        for coding in ContentCoding::ALL {
            assert_eq!(roundtrip(coding, input).await, input, "{coding}");
        }
    }

    #[tokio::test]
    async fn decoding_stops_at_the_cap() {
        let zeros = Bytes::from(vec![0u8; 1 << 20]);
        for coding in ContentCoding::ALL {
            let compressed = encode(
                crate::body::full(zeros.clone()),
                coding,
                CompressLevels::default(),
            )
            .collect()
            .await
            .unwrap()
            .to_bytes();
            let refused = decode_request_body(crate::body::full(compressed), coding, 1000).await;
            assert!(
                matches!(refused, Err(GatewayError::BodyTooLarge { limit: 1000 })),
                "{coding}: {refused:?}"
            );
        }
    }
}
