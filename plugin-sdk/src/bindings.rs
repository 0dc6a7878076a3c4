//! The raw bindings of the imports every world shares (`types`, `host`,
//! `counters`), generated once from `../wit`.
//!
//! `pub_export_macro` matters here even though nothing is exported from this
//! crate: with it, the custom section this crate leaves in every plugin
//! describes the world's *imports only*. Unused imports are dropped when the
//! component is made, so a plugin that never calls `counters` does not import
//! it, and no world's exports leak into a plugin of another world. Each
//! plugin generates its own world's exports through the export macros.

wit_bindgen::generate!({
    path: "../wit",
    world: "rate-limit",
    pub_export_macro: true,
    export_macro_name: "__wasmgate_unused_rate_limit_export",
    generate_unused_types: true,
});
