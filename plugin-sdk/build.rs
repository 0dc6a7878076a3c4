//! Bakes the absolute path of the WIT package into the export macros.
//!
//! A plugin's bindings are generated in the plugin crate itself (one world per
//! plugin, so a component exports exactly its world), and `wit_bindgen::generate!`
//! resolves a relative `path` against the *plugin's* manifest directory. The
//! export macros therefore need the SDK's own `../wit` as an absolute path,
//! which only a build script can know.

use std::{env, fs, path::PathBuf};

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let wit_dir = manifest_dir.join("../wit");
    let wit_dir = wit_dir
        .canonicalize()
        .unwrap_or_else(|err| panic!("the WIT package {} is missing: {err}", wit_dir.display()));
    println!("cargo:rerun-if-changed={}", wit_dir.display());
    println!("cargo:rerun-if-changed=build.rs");

    let wit_dir = wit_dir
        .to_str()
        .expect("the path of the WIT package is not UTF-8");
    let generated = format!(
        r#"/// Generates the bindings of one world in the calling crate. Internal.
#[doc(hidden)]
#[macro_export]
macro_rules! __wasmgate_generate_world {{
    ($world:tt $(, $extra_key:tt: $extra_path:path)* $(,)?) => {{
        ::wasmgate_plugin_sdk::__private::wit_bindgen::generate!({{
            path: {wit_dir:?},
            world: $world,
            runtime_path: "::wasmgate_plugin_sdk::__private::wit_bindgen::rt",
            with: {{
                "wasmgate:plugin/types@0.1.0": ::wasmgate_plugin_sdk::__private::raw::types,
                "wasmgate:plugin/host@0.1.0": ::wasmgate_plugin_sdk::__private::raw::host,
                $($extra_key: $extra_path,)*
            }},
        }});
    }};
}}
"#
    );
    let out =
        PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo")).join("generate_world.rs");
    fs::write(&out, generated).unwrap_or_else(|err| panic!("writing {}: {err}", out.display()));
}
