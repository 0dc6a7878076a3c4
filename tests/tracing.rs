//! Traces through the real binary: a small OTLP/HTTP receiver decodes what the gateway
//! exports (protobuf, `opentelemetry-proto`) and the tests check the span tree — the request
//! joins the client's trace, stage spans and the terminal's are its children, each upstream
//! attempt (and each call of an aggregate fan-out) is a child of the span that made it, and
//! the `traceparent` the upstream receives names that attempt. Plugins read the same
//! context through the WIT `trace` interface; latency histograms carry the trace id as an
//! exemplar; sampling follows the ratio, or the client's flag when trusted.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{TestGateway, TestUpstream, client, empty, eventually, handler, request, send};
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use wasmgate_fixtures as fx;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// One exported span, ids in hex.
#[derive(Debug, Clone)]
struct Span {
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
    kind: i32,
    attributes: HashMap<String, String>,
}

/// An OTLP/HTTP receiver: every span it was sent.
struct Collector {
    upstream: TestUpstream,
    spans: Arc<Mutex<Vec<Span>>>,
}

impl Collector {
    fn start() -> Self {
        let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
        let received = spans.clone();
        let upstream = TestUpstream::start(move |request: http::Request<_>| {
            let received = received.clone();
            async move {
                assert_eq!(request.uri().path(), "/v1/traces");
                assert_eq!(request.headers()["content-type"], "application/x-protobuf");
                let body = request.into_body().collect().await.unwrap().to_bytes();
                let export = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                let mut received = received.lock().unwrap();
                for resource in export.resource_spans {
                    let service = resource
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|kv| kv.key == "service.name")
                        .map(|kv| text(kv.value.as_ref().and_then(|v| v.value.as_ref())));
                    assert_eq!(service.as_deref(), Some("wasmgate-test"));
                    for scope in resource.scope_spans {
                        received.extend(scope.spans.into_iter().map(|span| {
                            Span {
                                trace_id: hex(&span.trace_id),
                                span_id: hex(&span.span_id),
                                parent: hex(&span.parent_span_id),
                                name: span.name,
                                kind: span.kind,
                                attributes: span
                                    .attributes
                                    .into_iter()
                                    .map(|kv| {
                                        let value =
                                            text(kv.value.as_ref().and_then(|v| v.value.as_ref()));
                                        (kv.key, value)
                                    })
                                    .collect(),
                            }
                        }));
                    }
                }
                Response::new(common::full(Vec::new()))
            }
        });
        Self { upstream, spans }
    }

    fn endpoint(&self) -> String {
        format!("{}/v1/traces", self.upstream.url())
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }

    /// The spans of trace `trace_id`, once `count` of them arrived (within 20 s).
    async fn trace(&self, trace_id: &str, count: usize) -> Vec<Span> {
        let arrived = eventually(Duration::from_secs(20), || {
            self.spans()
                .iter()
                .filter(|s| s.trace_id == trace_id)
                .count()
                >= count
        })
        .await;
        let spans: Vec<Span> = self
            .spans()
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect();
        assert!(
            arrived,
            "expected {count} spans of {trace_id}, got {spans:#?}"
        );
        spans
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: Option<&Value>) -> String {
    match value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

fn named<'a>(spans: &'a [Span], name: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn one<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    let found = named(spans, name);
    assert_eq!(found.len(), 1, "one `{name}` span in {spans:#?}");
    found[0]
}

/// `traceparent` parsed: (trace id, parent span id, flags).
fn traceparent(value: &str) -> (String, String, String) {
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent {value}");
    assert_eq!(parts[0], "00");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

fn gateway(collector: &Collector, tracing: &str, routes: &str) -> TestGateway {
    let cache = concat!(env!("CARGO_TARGET_TMPDIR"), "/tracing-plugin-cache");
    let config = format!(
        r#"
[plugins]
cache-dir = {cache:?}
watch = false

[admin]
listen = "127.0.0.1:0"

[tracing]
endpoint = "{endpoint}"
service-name = "wasmgate-test"
export-interval = "50ms"
{tracing}

{routes}
"#,
        endpoint = collector.endpoint(),
    );
    TestGateway::start_with_plugins(
        &config,
        &[
            ("observe", Path::new(fx::FX_OBSERVE)),
            ("fanout", Path::new(fx::FX_AGGREGATE)),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_joins_the_client_trace_and_every_stage_and_attempt_is_a_linked_span() {
    let collector = Collector::start();
    let echo = TestUpstream::start(handler::echo);
    let routes = format!(
        r#"
[upstreams.api]
targets = ["{echo}"]

[[routes]]
name = "traced"
prefix = "/traced"
upstream = "api"
stages = [{{ plugin = "observe" }}]

[[routes]]
name = "fan"
path = "/fan"
stages = [{{ plugin = "fanout", upstreams = ["api"], config = {{ calls = [
    {{ name = "a", upstream = "api", uri = "/a" }},
    {{ name = "b", upstream = "api", uri = "/b" }},
] }} }}]
"#,
        echo = echo.addr()
    );
    // Blocking start on a multi-thread runtime, as the other black-box tests do.
    let gateway = gateway(&collector, "", &routes);
    let client = client();

    // A request inside the client's (sampled) trace, through a transform stage.
    let incoming = format!("00-{TRACE_ID}-{CLIENT_SPAN}-01");
    let reply = send(
        &client,
        request(
            "GET",
            &gateway.url("/traced/x"),
            &[("traceparent", &incoming), ("tracestate", "vendor=abc")],
            empty(),
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let seen = reply.json()["headers"].clone();
    let (trace_id, attempt_id, flags) = traceparent(seen["traceparent"].as_str().unwrap());
    assert_eq!((trace_id.as_str(), flags.as_str()), (TRACE_ID, "01"));
    assert_eq!(seen["tracestate"], "vendor=abc", "tracestate travels on");
    let plugin_saw: Vec<String> = seen["x-seen-trace"]
        .as_str()
        .unwrap()
        .split('/')
        .map(str::to_string)
        .collect();

    let spans = collector.trace(TRACE_ID, 4).await;
    let server = one(&spans, "GET traced");
    assert_eq!(server.kind, SpanKind::Server as i32);
    assert_eq!(server.parent, CLIENT_SPAN, "joins the client's trace");
    assert_eq!(server.attributes["http.route"], "traced");
    assert_eq!(server.attributes["http.response.status_code"], "200");
    let stage = one(&spans, "transform observe");
    assert_eq!(stage.parent, server.span_id);
    assert_eq!(
        plugin_saw,
        [TRACE_ID.to_string(), stage.span_id.clone(), "true".into()],
        "the plugin reads its own stage span from the trace interface"
    );
    assert_eq!(
        one(&spans, "transform observe response").parent,
        server.span_id
    );
    // A proxying terminal is no span of its own: the attempt is the request's child.
    assert!(named(&spans, "upstream").is_empty());
    let attempt = one(&spans, "upstream api");
    assert_eq!(attempt.kind, SpanKind::Client as i32);
    assert_eq!(attempt.parent, server.span_id);
    assert_eq!(
        attempt.span_id, attempt_id,
        "the upstream's parent is the attempt"
    );
    assert_eq!(attempt.attributes["wasmgate.attempt"], "1");
    assert_eq!(
        attempt.attributes["server.address"],
        echo.addr().to_string()
    );

    // The access line names the trace, the client, the attempt's target and the times.
    let request_id = reply.header("x-request-id").unwrap().to_string();
    let found = eventually(Duration::from_secs(10), || {
        gateway
            .log_records()
            .iter()
            .any(|r| r["target"] == "wasmgate::access" && r["request_id"] == request_id.as_str())
    })
    .await;
    assert!(
        found,
        "an access line for {request_id}:\n{}",
        gateway.logs()
    );
    let records = gateway.log_records();
    let line = records
        .iter()
        .find(|r| r["target"] == "wasmgate::access" && r["request_id"] == request_id.as_str())
        .unwrap();
    assert_eq!(line["trace_id"], TRACE_ID, "{line}");
    assert_eq!(line["client_ip"], "127.0.0.1", "{line}");
    assert_eq!(line["protocol"], "HTTP/1.1", "{line}");
    assert_eq!(line["upstream_target"], echo.addr().to_string(), "{line}");
    assert_eq!(line["upstream_attempts"], 1, "{line}");
    assert!(line["upstream_ms"].as_f64().is_some(), "{line}");
    let stages = line["stages"].as_str().unwrap();
    assert!(
        stages.starts_with("observe=") && stages[8..].parse::<f64>().is_ok(),
        "{line}"
    );

    // A request without a trace starts one; each aggregate call is a child of the
    // aggregate's span and carries its own context to the upstream.
    let reply = send(&client, request("GET", &gateway.url("/fan"), &[], empty())).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let merged = reply.json();
    let sent: Vec<(String, String, String)> = ["a", "b"]
        .iter()
        .map(|call| traceparent(merged[call]["headers"]["traceparent"].as_str().unwrap()))
        .collect();
    let trace_id = sent[0].0.clone();
    assert_ne!(trace_id, TRACE_ID);
    assert_eq!(
        sent[1].0, trace_id,
        "both calls belong to the request's trace"
    );
    let spans = collector.trace(&trace_id, 4).await;
    let server = one(&spans, "GET fan");
    assert_eq!(server.parent, "", "a new trace has a root span");
    let aggregate = one(&spans, "aggregate fanout");
    assert_eq!(aggregate.parent, server.span_id);
    let calls = named(&spans, "upstream api");
    assert_eq!(calls.len(), 2, "{spans:#?}");
    for call in calls {
        assert_eq!(call.parent, aggregate.span_id);
        assert!(
            sent.iter().any(|(_, parent, _)| *parent == call.span_id),
            "the upstream saw the context of call span {}",
            call.span_id
        );
    }

    // The latency histograms carry the trace as an exemplar (OpenMetrics only).
    let exposition = send(
        &client,
        request(
            "GET",
            &format!("http://{}/metrics", gateway.admin_addr()),
            &[("accept", "application/openmetrics-text; version=1.0.0")],
            empty(),
        ),
    )
    .await
    .text();
    // A bucket keeps its latest exemplar: one of the two traces made above.
    let exemplars = [TRACE_ID, trace_id.as_str()].map(|id| format!("# {{trace_id=\"{id}\"}}"));
    for histogram in [
        "wasmgate_request_duration_seconds_bucket",
        "wasmgate_upstream_duration_seconds_bucket",
        "wasmgate_plugin_call_duration_seconds_bucket",
    ] {
        assert!(
            exposition
                .lines()
                .any(|l| l.starts_with(histogram)
                    && exemplars.iter().any(|e| l.contains(e.as_str()))),
            "{histogram} has an exemplar of {exemplars:?}:\n{exposition}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_follows_the_ratio_unless_the_client_flag_is_trusted() {
    let collector = Collector::start();
    let echo = TestUpstream::start(handler::echo);
    let routes = format!(
        r#"
[upstreams.api]
targets = ["{echo}"]

[[routes]]
name = "traced"
prefix = "/traced"
upstream = "api"
stages = [{{ plugin = "observe" }}]
"#,
        echo = echo.addr()
    );
    let client = client();
    let call = async |gateway: &TestGateway, flags: &str| {
        let incoming = format!("00-{TRACE_ID}-{CLIENT_SPAN}-{flags}");
        let reply = send(
            &client,
            request(
                "GET",
                &gateway.url("/traced/s"),
                &[("traceparent", &incoming)],
                empty(),
            ),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let seen = reply.json()["headers"].clone();
        let (trace_id, _, flags) = traceparent(seen["traceparent"].as_str().unwrap());
        assert_eq!(trace_id, TRACE_ID, "the trace is joined either way");
        let plugin = seen["x-seen-trace"].as_str().unwrap().to_string();
        (flags, plugin.ends_with("/true"))
    };

    // At the edge (the default), the client's sampled flag does not decide: ratio 0
    // records nothing, and the upstream is told so.
    let edge = gateway(&collector, "sampling-ratio = 0.0", &routes);
    assert_eq!(call(&edge, "01").await, ("00".to_string(), false));

    // Trusted, the flag decides both ways.
    let trusting = gateway(
        &collector,
        "sampling-ratio = 0.0\ntrust-incoming-sampled = true",
        &routes,
    );
    assert_eq!(call(&trusting, "00").await, ("00".to_string(), false));
    assert_eq!(call(&trusting, "01").await, ("01".to_string(), true));
    // Only the trusted, sampled request was exported: its spans (request, the stage's two
    // hooks, attempt) and nothing from the two unsampled ones.
    let spans = collector.trace(TRACE_ID, 4).await;
    assert_eq!(named(&spans, "GET traced").len(), 1, "{spans:#?}");
}

#[test]
fn a_bad_tracing_section_is_a_config_error() {
    let output = common::check(
        r#"
[tracing]
endpoint = "ftp://collector"
sampling-ratio = 2.0
"#,
    );
    assert_ne!(output.code, Some(0), "{}", output.stderr);
    assert!(
        output.stderr.contains("tracing.endpoint"),
        "{}",
        output.stderr
    );
    assert!(
        output.stderr.contains("tracing.sampling-ratio"),
        "{}",
        output.stderr
    );
}
