//! Config decoding and checking: any text parses or yields diagnostics, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = wasmgate::config::Config::parse(std::path::Path::new("fuzz.toml"), text);
});
