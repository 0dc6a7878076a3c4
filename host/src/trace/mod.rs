//! Distributed tracing: the W3C trace context in (`traceparent`, `tracestate`) and out, a
//! span per request, per stage call and per upstream attempt, exported over OTLP/HTTP.
//!
//! A request joins the trace its client sent (or starts one). Whether it is recorded is
//! decided here from `tracing.sampling-ratio`, unless `tracing.trust-incoming-sampled` lets
//! the client's sampled flag decide. Unrecorded requests still carry a valid context to
//! every upstream, so the services behind see one trace either way.

mod export;

use std::borrow::Cow;

use http::HeaderMap;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider,
};

use crate::body::BodyHook;
use crate::config::TracingConfig;

pub use opentelemetry::trace::SpanKind as Kind;

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the OTLP exporter: {0}")]
pub struct SetupError(String);

/// The process's tracer and its exporter.
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
}

impl std::fmt::Debug for Tracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracing").finish_non_exhaustive()
    }
}

impl Tracing {
    /// Starts exporting to `config.endpoint`. Exports run on `handle` (the control plane's
    /// runtime), so request threads never wait on the collector.
    pub fn start(
        config: &TracingConfig,
        handle: tokio::runtime::Handle,
    ) -> Result<Self, SetupError> {
        use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(export::Client::new(handle, config.export_timeout))
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(config.endpoint.to_string())
            .with_timeout(config.export_timeout)
            .build()
            .map_err(|e| SetupError(e.to_string()))?;
        let batch = BatchConfigBuilder::default()
            .with_scheduled_delay(config.export_interval)
            .build();
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batch)
            .build();
        let ratio = Sampler::TraceIdRatioBased(config.sampling_ratio);
        let sampler = if config.trust_incoming_sampled {
            Sampler::ParentBased(Box::new(ratio))
        } else {
            ratio
        };
        let resource = opentelemetry_sdk::Resource::builder_empty()
            .with_service_name(config.service_name.clone())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(sampler)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("wasmgate");
        Ok(Self {
            provider,
            tracer,
            propagator: TraceContextPropagator::new(),
        })
    }

    /// The server span of a request with `headers`: a child of the client's trace context
    /// when it sent a valid one, else the root of a new trace. Named `METHOD` until
    /// [`Trace::name_route`] gives it its route.
    pub fn request(&self, method: &http::Method, headers: &HeaderMap) -> Trace {
        let parent = self.propagator.extract(&HeaderExtractor(headers));
        let span = self
            .tracer
            .span_builder(method.as_str().to_string())
            .with_kind(SpanKind::Server)
            .start_with_context(&self.tracer, &parent);
        Trace {
            tracer: self.tracer.clone(),
            cx: parent.with_span(span),
        }
    }

    /// Exports what is left and stops. Blocks: call it off the runtime's threads.
    pub fn shutdown(&self) {
        if let Err(error) = self.provider.shutdown() {
            tracing::warn!(%error, "trace export did not finish cleanly");
        }
    }
}

/// A span in progress and the context its children and outgoing calls inherit.
#[derive(Clone)]
pub struct Trace {
    tracer: SdkTracer,
    cx: Context,
}

impl std::fmt::Debug for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trace")
            .field("trace_id", &self.trace_id())
            .finish_non_exhaustive()
    }
}

impl Trace {
    /// A child span `name` of this one.
    pub fn child(&self, name: impl Into<Cow<'static, str>>, kind: Kind) -> Trace {
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .start_with_context(&self.tracer, &self.cx);
        Trace {
            tracer: self.tracer.clone(),
            cx: self.cx.with_span(span),
        }
    }

    /// Whether the span is recorded (and exported).
    pub fn is_recording(&self) -> bool {
        self.cx.span().is_recording()
    }

    /// Whether the trace is sampled.
    pub fn is_sampled(&self) -> bool {
        self.cx.span().span_context().is_sampled()
    }

    /// The trace id.
    pub fn id(&self) -> opentelemetry::trace::TraceId {
        self.cx.span().span_context().trace_id()
    }

    /// The trace id, 32 lower-case hex digits.
    pub fn trace_id(&self) -> String {
        self.cx.span().span_context().trace_id().to_string()
    }

    /// The span id, 16 lower-case hex digits.
    pub fn span_id(&self) -> String {
        self.cx.span().span_context().span_id().to_string()
    }

    /// Sets an attribute (nothing happens when the span is not recorded).
    pub fn set(&self, attribute: KeyValue) {
        self.cx.span().set_attribute(attribute);
    }

    /// Sets several attributes at once (one lock of the span, not one each).
    pub fn set_all(&self, attributes: impl IntoIterator<Item = KeyValue>) {
        self.cx.span().set_attributes(attributes);
    }

    /// Sets the request span's name to `METHOD route` and its `http.route`.
    pub fn name_route(&self, method: &http::Method, route: &str) {
        if self.is_recording() {
            let span = self.cx.span();
            span.update_name(format!("{method} {route}"));
            span.set_attribute(KeyValue::new("http.route", route.to_string()));
        }
    }

    /// Marks the span failed with `message`.
    pub fn fail(&self, message: impl Into<Cow<'static, str>>) {
        self.cx.span().set_status(Status::error(message));
    }

    /// Writes this span's context into `headers` (`traceparent`, `tracestate`), replacing
    /// whatever the client sent.
    pub fn inject(&self, headers: &mut HeaderMap) {
        TraceContextPropagator::new().inject_context(&self.cx, &mut HeaderInjector(headers));
    }

    /// Ends the span now.
    pub fn end(&self) {
        self.cx.span().end();
    }
}

/// Ends a request's span when its response body ends (a [`BodyHook`]); a body that broke
/// off marks the span failed.
pub struct EndWithBody(pub Trace);

impl BodyHook for EndWithBody {
    fn on_end(&mut self, clean: bool) {
        if !clean {
            self.0.fail("the response body broke off");
        }
        self.0.end();
    }
}
