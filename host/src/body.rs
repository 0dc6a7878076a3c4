//! The body type the gateway sends and receives, and small body helpers.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};

/// Any error a body can fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streaming body: the client's request, the upstream's response, or one the gateway built.
pub type Body = BoxBody<Bytes, BoxError>;

/// A body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// Wraps any body whose errors convert to [`BoxError`].
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}

/// What a [`Hooked`] body tells its hook.
pub trait BodyHook: Send + Sync + 'static {
    /// Sees the length of each data frame as it passes; an error ends the body with it.
    fn on_data(&mut self, _len: usize) -> Result<(), BoxError> {
        Ok(())
    }

    /// Sees each data frame itself as it passes (a tee); by default only its length, through
    /// [`on_data`](Self::on_data).
    fn on_bytes(&mut self, data: &Bytes) -> Result<(), BoxError> {
        self.on_data(data.len())
    }

    /// Sees the trailers, if the body ends with them.
    fn on_trailers(&mut self, _trailers: &http::HeaderMap) {}

    /// Called once, when the body has ended: `clean` after its last frame, not after an
    /// error.
    fn on_end(&mut self, _clean: bool) {}
}

/// No hook: nothing happens.
impl<H: BodyHook> BodyHook for Option<H> {
    fn on_data(&mut self, len: usize) -> Result<(), BoxError> {
        self.as_mut().map_or(Ok(()), |hook| hook.on_data(len))
    }

    fn on_bytes(&mut self, data: &Bytes) -> Result<(), BoxError> {
        self.as_mut().map_or(Ok(()), |hook| hook.on_bytes(data))
    }

    fn on_trailers(&mut self, trailers: &http::HeaderMap) {
        if let Some(hook) = self {
            hook.on_trailers(trailers);
        }
    }

    fn on_end(&mut self, clean: bool) {
        if let Some(hook) = self {
            hook.on_end(clean);
        }
    }
}

/// Two hooks on one body, in order (one wrapper instead of two).
impl<A: BodyHook, B: BodyHook> BodyHook for (A, B) {
    fn on_data(&mut self, len: usize) -> Result<(), BoxError> {
        self.0.on_data(len)?;
        self.1.on_data(len)
    }

    fn on_bytes(&mut self, data: &Bytes) -> Result<(), BoxError> {
        self.0.on_bytes(data)?;
        self.1.on_bytes(data)
    }

    fn on_trailers(&mut self, trailers: &http::HeaderMap) {
        self.0.on_trailers(trailers);
        self.1.on_trailers(trailers);
    }

    fn on_end(&mut self, clean: bool) {
        self.0.on_end(clean);
        self.1.on_end(clean);
    }
}

pin_project_lite::pin_project! {
    /// A body that passes its frames through and tells `hook` about them: the one wrapper
    /// behind size limits, the access log, in-flight accounting and end-of-body signals.
    pub struct Hooked<B, H> {
        #[pin]
        inner: B,
        hook: H,
        ended: bool,
    }
}

impl<B, H> Hooked<B, H> {
    /// Wraps `inner`.
    pub fn new(inner: B, hook: H) -> Self {
        Self {
            inner,
            hook,
            ended: false,
        }
    }
}

impl<B, H> http_body::Body for Hooked<B, H>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
    H: BodyHook,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let frame = std::task::ready!(this.inner.as_mut().poll_frame(cx));
        let (frame, end) = match frame {
            Some(Ok(frame)) => match frame.data_ref().map(|data| this.hook.on_bytes(data)) {
                None => {
                    if let Some(trailers) = frame.trailers_ref() {
                        this.hook.on_trailers(trailers);
                    }
                    (Some(Ok(frame)), this.inner.is_end_stream().then_some(true))
                }
                Some(Err(error)) => (Some(Err(error)), Some(false)),
                // The end is known as soon as the last frame is out: hooks act early (a
                // pooled connection goes back before the final poll).
                _ => (Some(Ok(frame)), this.inner.is_end_stream().then_some(true)),
            },
            Some(Err(error)) => (Some(Err(error.into())), Some(false)),
            None => (None, Some(true)),
        };
        if let Some(clean) = end
            && !*this.ended
        {
            *this.ended = true;
            this.hook.on_end(clean);
        }
        std::task::Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
