//! The export macros, one per world.
//!
//! Each macro generates that world's bindings *in the plugin crate* (from the
//! SDK's copy-free path to `wit/`), so the component exports exactly that
//! world: `authenticate`, `check`, `on-request` + `on-response`, or `plan` +
//! `merge`, plus `wasmgate:plugin/config-check`. The shared interfaces
//! (`types`, `host`, `counters`) come from the SDK's own bindings, so every
//! world uses the same types. Use one export macro per plugin crate.
//!
//! The generated bindings name the SDK by its crate name, so depend on it as
//! `wasmgate-plugin-sdk` (do not rename the dependency).

/// Exports an [`Auth`](crate::Auth) implementation as the plugin's `auth` world.
///
/// ```ignore
/// struct ApiGuard;
/// impl wasmgate_plugin_sdk::Auth for ApiGuard { /* ... */ }
/// wasmgate_plugin_sdk::export_auth!(ApiGuard);
/// ```
#[macro_export]
macro_rules! export_auth {
    ($plugin:ty) => {
        #[doc(hidden)]
        type __WasmgatePlugin = $plugin;

        #[doc(hidden)]
        mod __wasmgate_export {
            $crate::__wasmgate_generate_world!("auth");

            struct Export;

            impl Guest for Export {
                fn authenticate(
                    req: $crate::__private::raw::types::Request,
                    ctx: $crate::__private::raw::types::Context,
                ) -> ::core::result::Result<
                    $crate::__private::raw::types::Identity,
                    $crate::__private::raw::types::Response,
                > {
                    $crate::__private::authenticate::<super::__WasmgatePlugin>(req, ctx)
                }
            }

            impl exports::wasmgate::plugin::config_check::Guest for Export {
                fn validate_config(
                    config: ::std::string::String,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__private::validate_auth::<super::__WasmgatePlugin>(&config)
                }
            }

            export!(Export);
        }
    };
}

/// Exports a [`RateLimit`](crate::RateLimit) implementation as the plugin's
/// `rate-limit` world (the only world that imports
/// [`counters`](crate::counters)).
///
/// ```ignore
/// struct PerClient;
/// impl wasmgate_plugin_sdk::RateLimit for PerClient { /* ... */ }
/// wasmgate_plugin_sdk::export_rate_limit!(PerClient);
/// ```
#[macro_export]
macro_rules! export_rate_limit {
    ($plugin:ty) => {
        #[doc(hidden)]
        type __WasmgatePlugin = $plugin;

        #[doc(hidden)]
        mod __wasmgate_export {
            $crate::__wasmgate_generate_world!(
                "rate-limit",
                "wasmgate:plugin/counters@0.1.0": ::wasmgate_plugin_sdk::__private::raw::counters,
                "wasmgate:plugin/limiter@0.1.0": ::wasmgate_plugin_sdk::__private::raw::limiter,
                "wasmgate:plugin/kv@0.1.0": ::wasmgate_plugin_sdk::__private::raw::kv
            );

            struct Export;

            impl Guest for Export {
                fn check(
                    req: $crate::__private::raw::types::Request,
                    ctx: $crate::__private::raw::types::Context,
                ) -> ::core::result::Result<
                    ::std::vec::Vec<(::std::string::String, ::std::vec::Vec<u8>)>,
                    $crate::__private::raw::types::Response,
                > {
                    $crate::__private::check::<super::__WasmgatePlugin>(req, ctx)
                }
            }

            impl exports::wasmgate::plugin::config_check::Guest for Export {
                fn validate_config(
                    config: ::std::string::String,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__private::validate_rate_limit::<super::__WasmgatePlugin>(&config)
                }
            }

            export!(Export);
        }
    };
}

/// Exports a [`Transform`](crate::Transform) implementation as the plugin's
/// `transform` world.
///
/// ```ignore
/// struct AddHeaders;
/// impl wasmgate_plugin_sdk::Transform for AddHeaders { /* ... */ }
/// wasmgate_plugin_sdk::export_transform!(AddHeaders);
/// ```
#[macro_export]
macro_rules! export_transform {
    ($plugin:ty) => {
        #[doc(hidden)]
        type __WasmgatePlugin = $plugin;

        #[doc(hidden)]
        mod __wasmgate_export {
            $crate::__wasmgate_generate_world!("transform");

            struct Export;

            impl Guest for Export {
                fn on_request(
                    req: $crate::__private::raw::types::Request,
                    ctx: $crate::__private::raw::types::Context,
                ) -> ::core::result::Result<
                    $crate::__private::raw::types::Request,
                    $crate::__private::raw::types::Response,
                > {
                    $crate::__private::on_request::<super::__WasmgatePlugin>(req, ctx)
                }

                fn on_response(
                    resp: $crate::__private::raw::types::Response,
                    ctx: $crate::__private::raw::types::Context,
                ) -> $crate::__private::raw::types::Response {
                    $crate::__private::on_response::<super::__WasmgatePlugin>(resp, ctx)
                }
            }

            impl exports::wasmgate::plugin::config_check::Guest for Export {
                fn validate_config(
                    config: ::std::string::String,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__private::validate_transform::<super::__WasmgatePlugin>(&config)
                }
            }

            export!(Export);
        }
    };
}

/// Exports an [`Aggregate`](crate::Aggregate) implementation as the plugin's
/// `aggregate` world.
///
/// ```ignore
/// struct Dashboard;
/// impl wasmgate_plugin_sdk::Aggregate for Dashboard { /* ... */ }
/// wasmgate_plugin_sdk::export_aggregate!(Dashboard);
/// ```
#[macro_export]
macro_rules! export_aggregate {
    ($plugin:ty) => {
        #[doc(hidden)]
        type __WasmgatePlugin = $plugin;

        #[doc(hidden)]
        mod __wasmgate_export {
            $crate::__wasmgate_generate_world!("aggregate");

            struct Export;

            impl Guest for Export {
                fn plan(
                    req: $crate::__private::raw::types::Request,
                    ctx: $crate::__private::raw::types::Context,
                ) -> ::std::vec::Vec<$crate::__private::raw::types::BackendCall> {
                    $crate::__private::plan::<super::__WasmgatePlugin>(req, ctx)
                }

                fn merge(
                    req: $crate::__private::raw::types::Request,
                    ctx: $crate::__private::raw::types::Context,
                    results: ::std::vec::Vec<$crate::__private::raw::types::BackendResult>,
                ) -> $crate::__private::raw::types::Response {
                    $crate::__private::merge::<super::__WasmgatePlugin>(req, ctx, results)
                }
            }

            impl exports::wasmgate::plugin::config_check::Guest for Export {
                fn validate_config(
                    config: ::std::string::String,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__private::validate_aggregate::<super::__WasmgatePlugin>(&config)
                }
            }

            export!(Export);
        }
    };
}

/// Logs a formatted line at [`Level::Trace`](crate::Level::Trace).
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => { $crate::log($crate::Level::Trace, &::std::format!($($arg)+)) };
}

/// Logs a formatted line at [`Level::Debug`](crate::Level::Debug).
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::log($crate::Level::Debug, &::std::format!($($arg)+)) };
}

/// Logs a formatted line at [`Level::Info`](crate::Level::Info).
///
/// ```
/// wasmgate_plugin_sdk::info!("{} keys loaded", 3);
/// ```
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::log($crate::Level::Info, &::std::format!($($arg)+)) };
}

/// Logs a formatted line at [`Level::Warn`](crate::Level::Warn).
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::log($crate::Level::Warn, &::std::format!($($arg)+)) };
}

/// Logs a formatted line at [`Level::Error`](crate::Level::Error).
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::log($crate::Level::Error, &::std::format!($($arg)+)) };
}
