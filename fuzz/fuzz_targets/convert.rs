//! WIT → HTTP conversions of plugin output: anything converts to a valid, bounded message
//! part or fails the stage; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmgate::config::OutputLimits;
use wasmgate::pipeline::convert;

const LIMITS: OutputLimits = OutputLimits {
    header_fields: 100,
    header_bytes: 16 << 10,
    aggregate_calls: 32,
    aggregate_bytes: 16 << 20,
    aggregate_bytes_total: 256 << 20,
};

fuzz_target!(|input: (Vec<(String, Vec<u8>)>, u16, &str, &str)| {
    let (fields, status, method, uri) = input;
    if let Ok(headers) = convert::headers_from_wit(&fields, &LIMITS) {
        assert!(headers.len() <= LIMITS.header_fields);
        assert!(!headers.contains_key(http::header::CONTENT_LENGTH));
        assert!(!headers.contains_key(http::header::TRANSFER_ENCODING));
    }
    if let Ok(code) = convert::status_from_wit(status) {
        assert!((200..=599).contains(&code.as_u16()));
    }
    let _ = convert::method_from_wit(method);
    if let Ok(path) = convert::path_from_wit(uri) {
        assert!(path.as_str().starts_with('/'));
    }
});
