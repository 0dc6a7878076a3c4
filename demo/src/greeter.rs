//! The `greeter` demo service: gRPC over HTTP/2 without TLS (h2c), for the gateway's gRPC,
//! gRPC-Web and transcoding routes. Its contract is `config/protos/greeter.proto`:
//!
//! - `demo.greeter.v1.Greeter/SayHello` (unary): `Hello, NAME!`, or INVALID_ARGUMENT
//!   without a name;
//! - `demo.greeter.v1.Greeter/Countdown` (server streaming): ticks from `from` down to 1,
//!   one every 100 ms;
//! - `grpc.health.v1.Health/Check`: SERVING.
//!
//! Messages are encoded with prost's derive (no generated code).

use std::convert::Infallible;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::{Request, Response};
use prost::Message;

/// The body of every greeter response.
pub type Body = BoxBody<Bytes, Infallible>;

/// Largest request message accepted.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Most ticks a countdown sends.
const MAX_COUNTDOWN: i32 = 100;

#[derive(Clone, PartialEq, Message)]
struct HelloRequest {
    #[prost(string, tag = "1")]
    name: String,
}

#[derive(Clone, PartialEq, Message)]
struct HelloReply {
    #[prost(string, tag = "1")]
    message: String,
}

#[derive(Clone, PartialEq, Message)]
struct CountdownRequest {
    #[prost(int32, tag = "1")]
    from: i32,
}

#[derive(Clone, PartialEq, Message)]
struct Tick {
    #[prost(int32, tag = "1")]
    remaining: i32,
}

#[derive(Clone, PartialEq, Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

/// gRPC status codes the service answers with.
const OK: u16 = 0;
const INVALID_ARGUMENT: u16 = 3;
const UNIMPLEMENTED: u16 = 12;

/// Handles one gRPC call.
pub async fn handle(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let response = match path.as_str() {
        "/demo.greeter.v1.Greeter/SayHello" => match read::<HelloRequest>(req).await {
            Some(hello) if !hello.name.is_empty() => unary(&HelloReply {
                message: format!("Hello, {}!", hello.name),
            }),
            Some(_) => status_only(INVALID_ARGUMENT, "name is required"),
            None => status_only(INVALID_ARGUMENT, "not one HelloRequest message"),
        },
        "/demo.greeter.v1.Greeter/Countdown" => match read::<CountdownRequest>(req).await {
            Some(countdown) => countdown_stream(countdown.from.clamp(0, MAX_COUNTDOWN)),
            None => status_only(INVALID_ARGUMENT, "not one CountdownRequest message"),
        },
        "/grpc.health.v1.Health/Check" => unary(&HealthCheckResponse { status: 1 }),
        _ => status_only(UNIMPLEMENTED, "no such method"),
    };
    Ok(response)
}

/// The one message of a unary request body, if it is one well-formed message.
async fn read<M: Message + Default>(req: Request<Incoming>) -> Option<M> {
    let body = Limited::new(req.into_body(), MAX_MESSAGE_BYTES + 5)
        .collect()
        .await
        .ok()?
        .to_bytes();
    let (header, message) = body.split_at_checked(5)?;
    let len = u32::from_be_bytes(header[1..5].try_into().ok()?) as usize;
    (header[0] == 0 && message.len() == len)
        .then(|| M::decode(message).ok())
        .flatten()
}

/// A length-prefixed, uncompressed gRPC frame.
fn frame(message: &impl Message) -> Bytes {
    let mut framed = BytesMut::with_capacity(5 + message.encoded_len());
    framed.put_u8(0);
    framed.put_u32(message.encoded_len() as u32);
    message
        .encode(&mut framed)
        .expect("the buffer has room for the message");
    framed.freeze()
}

fn grpc_head(response: &mut Response<Body>) {
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
}

fn ok_trailers() -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(OK));
    trailers
}

/// One message, then `grpc-status: 0` in the trailers.
fn unary(message: &impl Message) -> Response<Body> {
    let body = Full::new(frame(message))
        .with_trailers(std::future::ready(Some(Ok(ok_trailers()))))
        .boxed();
    let mut response = Response::new(body);
    grpc_head(&mut response);
    response
}

/// A trailers-only answer: the status in the head, no body.
fn status_only(code: u16, message: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::new()).boxed());
    grpc_head(&mut response);
    let headers = response.headers_mut();
    headers.insert("grpc-status", HeaderValue::from(code));
    headers.insert("grpc-message", HeaderValue::from_static(message));
    response
}

/// Ticks from `from` down to 1, 100 ms apart, then the OK trailers.
fn countdown_stream(from: i32) -> Response<Body> {
    let (mut sender, body) = http_body_util::channel::Channel::<Bytes, Infallible>::new(1);
    tokio::spawn(async move {
        for remaining in (1..=from).rev() {
            if sender.send_data(frame(&Tick { remaining })).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = sender.send_trailers(ok_trailers()).await;
    });
    let mut response = Response::new(body.boxed());
    grpc_head(&mut response);
    response
}
