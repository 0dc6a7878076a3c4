//! Path normalization: never panics, and a normal path is a fixed point with no dot
//! segments, for every policy.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmgate::normalize::{EscapedSlashes, PathPolicy, normalize};

fuzz_target!(|input: (u8, &str)| {
    let (choice, path) = input;
    let policy = PathPolicy {
        escaped_slashes: match choice % 3 {
            0 => EscapedSlashes::Reject,
            1 => EscapedSlashes::Keep,
            _ => EscapedSlashes::Decode,
        },
        merge_slashes: choice & 4 != 0,
    };
    if let Ok(normal) = normalize(path, &policy) {
        if path.starts_with('/') {
            assert!(normal.starts_with('/'));
            assert!(!normal.split('/').any(|s| s == "." || s == ".."));
            let again = normalize(&normal, &policy).expect("a normal path stays valid");
            assert_eq!(again, normal);
        }
    }
});
