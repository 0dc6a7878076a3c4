//! The HTTP client the OTLP exporter posts span batches with: one short HTTP/1.1 exchange
//! per batch, run on the control plane's runtime (the exporter's own thread only waits).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use opentelemetry_http::{HttpClient, HttpError};

/// Largest collector answer read (OTLP answers are a few bytes).
const MAX_ANSWER: usize = 64 << 10;

/// Posts export requests from any thread by running them on a tokio runtime.
#[derive(Debug)]
pub struct Client {
    handle: tokio::runtime::Handle,
    timeout: Duration,
}

impl Client {
    /// A client running its exchanges on `handle`, each bounded by `timeout`.
    pub fn new(handle: tokio::runtime::Handle, timeout: Duration) -> Self {
        Self { handle, timeout }
    }
}

impl HttpClient for Client {
    fn send_bytes<'a, 'b>(
        &'a self,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        let timeout = self.timeout;
        let exchange = self
            .handle
            .spawn(async move { tokio::time::timeout(timeout, post(request)).await });
        Box::pin(async move {
            match exchange.await? {
                Ok(answer) => answer,
                Err(_) => Err(format!("no answer within {}ms", timeout.as_millis()).into()),
            }
        })
    }
}

async fn post(request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
    let authority = request
        .uri()
        .authority()
        .ok_or("the endpoint has no host")?
        .clone();
    let port = authority.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((authority.host(), port)).await?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let (mut parts, body) = request.into_parts();
    parts.uri = parts
        .uri
        .path_and_query()
        .map_or_else(|| http::Uri::from_static("/"), |p| p.clone().into());
    let host = http::HeaderValue::from_str(authority.as_str())?;
    parts.headers.insert(http::header::HOST, host);
    let response = sender
        .send_request(Request::from_parts(parts, Full::new(body)))
        .await?;
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, MAX_ANSWER).collect().await?.to_bytes();
    Ok(Response::from_parts(parts, body))
}
