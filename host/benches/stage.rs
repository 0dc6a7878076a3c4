//! The per-stage cost: a fresh `Store`, instantiation from the pre-linked component and one
//! export call, for each kind of stage, measured through the public runtime API with the
//! real compiled fixtures.
//!
//! ```text
//! cargo bench -p wasmgate --bench stage -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! The target is at most 10 µs per Rust stage at the median. `store_only` is the floor the
//! host pays before any guest code runs; `transform_on_request_reused` is the same call on a
//! kept instance (opt-in reuse), i.e. the cost of the call alone.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use wasmgate::config::{ReusePolicy, StageLimits};
use wasmgate::pipeline::auth::AuthWorld;
use wasmgate::pipeline::rate_limit::RateLimitWorld;
use wasmgate::pipeline::transform::TransformWorld;
use wasmgate::runtime::bindings::types::{Context, Request, Response};
use wasmgate::runtime::{
    Call, InstancePool, LocalState, Plugin, PluginPre, Runtime, RuntimeSettings, World,
};

/// A runtime sized like a small gateway, without the on-disk cache.
fn runtime() -> Runtime {
    let settings = RuntimeSettings {
        max_instances: 64,
        cache_dir: None,
        metrics: None,
    };
    Runtime::new(&settings, Arc::new(LocalState::default())).expect("runtime starts")
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

/// One stage's fixed inputs, for a plugin of world `W`.
struct Stage<W: World> {
    plugin: Arc<Plugin>,
    pre: W::Pre,
    route: Arc<str>,
    config: Arc<str>,
    limits: StageLimits,
    pool: Option<InstancePool<W::Instance>>,
}

impl<W: World> Stage<W> {
    fn new(plugin: Arc<Plugin>, pre: W::Pre, config: &str) -> Self {
        Self {
            plugin,
            pre,
            route: "bench".into(),
            config: config.into(),
            limits: StageLimits::default(),
            pool: None,
        }
    }

    /// The same stage with instance reuse (`limits.reuse`) at its defaults.
    fn reusing(plugin: Arc<Plugin>, pre: W::Pre, config: &str) -> Self {
        let policy = ReusePolicy {
            max_calls: 1000,
            max_memory: None,
            max_idle: 8,
            idle_timeout: std::time::Duration::from_secs(60),
        };
        let limits = StageLimits {
            reuse: Some(policy),
            ..StageLimits::default()
        };
        Self {
            limits,
            pool: Some(InstancePool::new(policy)),
            ..Self::new(plugin, pre, config)
        }
    }

    fn call(&self) -> Call<'_, W> {
        Call {
            tls: None,
            plugin: &self.plugin,
            pre: &self.pre,
            route: &self.route,
            config_json: &self.config,
            limits: self.limits,
            vars: Vec::new(),
            pool: self.pool.as_ref(),
            metrics: None,
            span: None,
        }
    }
}

fn stages(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let runtime = runtime();
    let transform_plugin = load(&runtime, "fx-transform", wasmgate_fixtures::FX_TRANSFORM);
    let PluginPre::Transform(transform_pre) = &transform_plugin.pre else {
        panic!("fx-transform is a transform");
    };
    let transform = Stage::<TransformWorld>::new(
        transform_plugin.clone(),
        transform_pre.clone(),
        r#"{"tag":"bench"}"#,
    );
    let auth_plugin = load(
        &runtime,
        "fx-auth-header",
        wasmgate_fixtures::FX_AUTH_HEADER,
    );
    let PluginPre::Auth(auth_pre) = &auth_plugin.pre else {
        panic!("fx-auth-header is an auth plugin");
    };
    let auth = Stage::<AuthWorld>::new(auth_plugin.clone(), auth_pre.clone(), "{}");
    // A limit that is never reached, so every call takes the "allowed" path.
    let ratelimit_plugin = load(&runtime, "fx-ratelimit", wasmgate_fixtures::FX_RATELIMIT);
    let PluginPre::RateLimit(ratelimit_pre) = &ratelimit_plugin.pre else {
        panic!("fx-ratelimit is a rate-limit plugin");
    };
    let ratelimit = Stage::<RateLimitWorld>::new(
        ratelimit_plugin.clone(),
        ratelimit_pre.clone(),
        r#"{"limit":18446744073709551615,"window_ms":3600000}"#,
    );
    let transform_reused = Stage::<TransformWorld>::reusing(
        transform_plugin.clone(),
        transform_pre.clone(),
        r#"{"tag":"bench"}"#,
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
                .run(transform.call(), async |store, i| {
                    i.call_on_request(store, &req, &ctx).await
                })
                .await
                .expect("on-request runs");
            assert!(answer.is_ok());
            black_box(vars)
        });
    });

    // The same call on a kept instance (opt-in `limits.reuse`): no instantiation.
    group.bench_function("transform_on_request_reused", |b| {
        b.to_async(&rt).iter(|| async {
            let (answer, vars) = runtime
                .run(transform_reused.call(), async |store, i| {
                    i.call_on_request(store, &req, &ctx).await
                })
                .await
                .expect("on-request runs");
            assert!(answer.is_ok());
            black_box(vars)
        });
    });

    group.bench_function("transform_on_response", |b| {
        b.to_async(&rt).iter(|| async {
            let (answer, _) = runtime
                .run(transform.call(), async |store, i| {
                    i.call_on_response(store, &resp, &ctx).await
                })
                .await
                .expect("on-response runs");
            black_box(answer)
        });
    });

    group.bench_function("auth_authenticate", |b| {
        b.to_async(&rt).iter(|| async {
            let (answer, _) = runtime
                .run(auth.call(), async |store, i| {
                    i.call_authenticate(store, &req, &ctx).await
                })
                .await
                .expect("authenticate runs");
            assert!(answer.is_ok());
            black_box(answer)
        });
    });

    group.bench_function("ratelimit_check", |b| {
        b.to_async(&rt).iter(|| async {
            let (answer, _) = runtime
                .run(ratelimit.call(), async |store, i| {
                    i.call_check(store, &req, &ctx).await
                })
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
