//! `GET /ws` on every demo service: a WebSocket echo (RFC 6455), so the gateway's
//! WebSocket pass-through can be tried against the demo. Each data frame comes back as it
//! came (fragments as fragments), pings are answered with pongs, and a close is echoed
//! before the connection ends. Messages up to 16 MiB.

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONNECTION, HeaderValue, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::services::{Body, error};

/// The GUID the handshake's accept key is derived with (RFC 6455 §1.3).
const HANDSHAKE_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// The largest frame echoed; a larger one closes with 1009 (message too big).
const MAX_FRAME: u64 = 16 << 20;

/// Answers a WebSocket handshake with `101` and echoes on the upgraded connection; any
/// other request to `/ws` gets a 426.
pub fn accept(service: &'static str, mut req: Request<Incoming>) -> Response<Body> {
    let asks = |name, token: &str| {
        req.headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|v| v.trim().eq_ignore_ascii_case(token))
    };
    let key = req.headers().get("sec-websocket-key").cloned();
    let (true, true, Some(key)) = (asks(CONNECTION, "upgrade"), asks(UPGRADE, "websocket"), key)
    else {
        let mut resp = error(
            StatusCode::UPGRADE_REQUIRED,
            "this is a WebSocket echo: connect with a WebSocket client",
        );
        resp.headers_mut()
            .insert(UPGRADE, HeaderValue::from_static("websocket"));
        return resp;
    };
    let mut digest = sha1_smol::Sha1::new();
    digest.update(key.as_bytes());
    digest.update(HANDSHAKE_GUID.as_bytes());
    let accept = base64::engine::general_purpose::STANDARD.encode(digest.digest().bytes());
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                if let Err(e) = echo(TokioIo::new(upgraded)).await {
                    eprintln!("{service}: websocket ended: {e}");
                }
            }
            Err(e) => eprintln!("{service}: websocket upgrade failed: {e}"),
        }
    });
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = resp.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(value) = HeaderValue::from_str(&accept) {
        headers.insert("sec-websocket-accept", value);
    }
    resp
}

/// Echoes frames until the client closes.
async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut io: S) -> std::io::Result<()> {
    loop {
        let mut head = [0u8; 2];
        io.read_exact(&mut head).await?;
        let opcode = head[0] & 0x0f;
        let len = match head[1] & 0x7f {
            126 => u64::from(io.read_u16().await?),
            127 => io.read_u64().await?,
            short => u64::from(short),
        };
        if len > MAX_FRAME {
            return send(&mut io, 0x88, &1009u16.to_be_bytes()).await;
        }
        let mut mask = [0u8; 4];
        if head[1] & 0x80 != 0 {
            io.read_exact(&mut mask).await?;
        }
        let mut payload = vec![0u8; len as usize];
        io.read_exact(&mut payload).await?;
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte ^= mask[i % 4];
        }
        match opcode {
            // Close: echo it, and end.
            0x8 => return send(&mut io, 0x88, &payload).await,
            // Ping: pong with its data.
            0x9 => send(&mut io, 0x8a, &payload).await?,
            // Pong: nothing to answer.
            0xa => {}
            // Data and continuation frames: back as they came (FIN bit and opcode kept).
            _ => send(&mut io, head[0], &payload).await?,
        }
    }
}

/// Writes one unmasked frame (server frames are never masked).
async fn send<S: AsyncWrite + Unpin>(io: &mut S, first: u8, payload: &[u8]) -> std::io::Result<()> {
    let mut frame = Vec::with_capacity(payload.len() + 10);
    frame.push(first);
    match payload.len() {
        len @ 0..=125 => frame.push(len as u8),
        len @ 126..=0xffff => {
            frame.push(126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            frame.push(127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    io.write_all(&frame).await?;
    io.flush().await
}
