//! The per-stage cost: a fresh `Store`, instantiation from the pre-linked component and one
//! export call, for each kind of stage, measured through the public runtime API with the
//! real compiled fixtures.
//!
//! ```text
//! cargo bench -p wasmgate --bench stage -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! The target is at most 10 µs per Rust stage at the median. `store_only` is the floor the
//! host pays before any guest code runs.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use wasmgate::config::StageLimits;
use wasmgate::runtime::bindings::types::{Context, Request, Response};
use wasmgate::runtime::{Call, MemoryCounters, Plugin, Runtime, RuntimeSettings};

/// A runtime sized like a small gateway, without the on-disk cache.
fn runtime() -> Runtime {
    let settings = RuntimeSettings {
        max_instances: 64,
        cache_dir: None,
    };
    Runtime::new(&settings, Arc::new(MemoryCounters::default())).expect("runtime starts")
}

fn load(runtime: &Runtime, name: &str, path: &str) -> Arc<Plugin> {
    Arc::new(
        runtime
            .load_file(name, path.as_ref())
            .unwrap_or_else(|e| panic!("{name}: {e}")),
    )
}

/// A typical small request: two headers, no body.
fn request() -> Request {
    Request {
        method: "GET".into(),
        uri: "/users/42?verbose=1".into(),
        headers: vec![
            ("host".into(), b"api.example.com".to_vec()),
            ("x-user".into(), b"alice".to_vec()),
        ],
        body: None,
    }
}

fn context() -> Context {
    Context {
        route: "bench".into(),
        client_ip: "127.0.0.1".into(),
        request_id: "0123456789abcdef0123456789abcdef".into(),
        identity: None,
        params: vec![("id".into(), "42".into())],
        vars: Vec::new(),
    }
}

/// One stage's fixed inputs.
struct Stage {
    plugin: Arc<Plugin>,
    route: Arc<str>,
    config: Arc<str>,
}

impl Stage {
    fn new(plugin: Arc<Plugin>, config: &str) -> Self {
        Self {
            plugin,
            route: "bench".into(),
            config: config.into(),
        }
    }

    fn call(&self) -> Call<'_> {
        Call {
            plugin: &self.plugin,
            route: &self.route,
            config_json: &self.config,
            limits: StageLimits::default(),
            vars: Vec::new(),
        }
    }
}

fn stages(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let runtime = runtime();
    let transform = Stage::new(
        load(&runtime, "fx-transform", wasmgate_fixtures::FX_TRANSFORM),
        r#"{"tag":"bench"}"#,
    );
    let auth = Stage::new(
        load(
            &runtime,
            "fx-auth-header",
            wasmgate_fixtures::FX_AUTH_HEADER,
        ),
        "{}",
    );
    // A limit that is never reached, so every call takes the "allowed" path.
    let ratelimit = Stage::new(
        load(&runtime, "fx-ratelimit", wasmgate_fixtures::FX_RATELIMIT),
        r#"{"limit":18446744073709551615,"window_ms":3600000}"#,
    );
    let (req, ctx) = (request(), context());
    let resp = Response {
        status: 200,
        headers: vec![("content-type".into(), b"application/json".to_vec())],
        body: None,
    };

    let mut group = c.benchmark_group("stage");

    // The floor: a Store with the same limits the runtime sets, and no instance.
    group.bench_function("store_only", |b| {
        let engine = runtime.engine();
        b.iter(|| {
            let mut store = wasmtime::Store::new(engine, ());
            store.set_fuel(u64::MAX).expect("fuel is enabled");
            store.set_epoch_deadline(1);
            store.epoch_deadline_callback(|_| Ok(wasmtime::UpdateDeadline::Yield(1)));
            black_box(store)
        });
    });

    group.bench_function("transform_on_request", |b| {
        b.to_async(&rt).iter(|| async {
            let (answer, vars) = runtime
                .on_request(transform.call(), &req, &ctx)
                .await
                .expect("on-request runs");
            assert!(answer.is_ok());
            black_box(vars)
        });
    });

    group.bench_function("transform_on_response", |b| {
        b.to_async(&rt).iter(|| async {
            let (answer, _) = runtime
                .on_response(transform.call(), &resp, &ctx)
                .await
                .expect("on-response runs");
            black_box(answer)
        });
    });

    group.bench_function("auth_authenticate", |b| {
        b.to_async(&rt).iter(|| async {
            let (answer, _) = runtime
                .authenticate(auth.call(), &req, &ctx)
                .await
                .expect("authenticate runs");
            assert!(answer.is_ok());
            black_box(answer)
        });
    });

    group.bench_function("ratelimit_check", |b| {
        b.to_async(&rt).iter(|| async {
            let (answer, _) = runtime
                .check_rate(ratelimit.call(), &req, &ctx)
                .await
                .expect("check runs");
            assert!(answer.is_ok());
            black_box(answer)
        });
    });

    group.bench_function("validate_config", |b| {
        b.to_async(&rt).iter(|| async {
            let (answer, _) = runtime
                .validate_config(transform.call())
                .await
                .expect("validate-config runs");
            assert!(answer.is_ok());
            black_box(answer)
        });
    });

    group.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
