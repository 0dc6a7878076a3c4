//! Snapshot tests of config errors: `wasmgate check` on each broken `tests/config_errors/NAME.toml`
//! must fail and print exactly `tests/config_errors/NAME.err` on stderr.
//!
//! The config is checked from a temporary directory (with `NAME.proto` next to it when the
//! case has one); its path in the output is replaced by the bare file name, so snapshots
//! read `NAME.toml:LINE:COLUMN: KEY: message`.
//! Run with `BLESS=1` to rewrite the snapshots from the current output (then review the diff).

mod common;

use std::path::{Path, PathBuf};

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/config_errors")
}

/// `wasmgate check` output for case `name`, with the temporary path normalised.
fn check_case(name: &str) -> (Option<i32>, String) {
    let file_name = format!("{name}.toml");
    let source = std::fs::read_to_string(cases_dir().join(&file_name)).expect("reading the case");
    // A case's `.proto` file, if it has one, goes next to it (for `transcode` routes).
    let proto_name = format!("{name}.proto");
    let proto = std::fs::read_to_string(cases_dir().join(&proto_name)).ok();
    let files: Vec<(&str, &str)> = proto
        .as_deref()
        .map(|text| (proto_name.as_str(), text))
        .into_iter()
        .collect();
    let output = common::check_with_files(&file_name, &source, &[], &files);
    assert!(
        output.stdout.is_empty(),
        "{name}: nothing on stdout, got {:?}",
        output.stdout
    );
    let full_path = output.path.display().to_string();
    let dir = output
        .path
        .parent()
        .expect("a parent dir")
        .display()
        .to_string();
    let stderr = output
        .stderr
        .replace(&full_path, &file_name)
        .replace(&format!("{dir}/"), "");
    (output.code, stderr)
}

fn snapshot(name: &str) {
    let (code, stderr) = check_case(name);
    assert_eq!(
        code,
        Some(1),
        "{name}: `wasmgate check` must fail; stderr:\n{stderr}"
    );
    let snapshot = cases_dir().join(format!("{name}.err"));
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(&snapshot, &stderr).expect("writing the snapshot");
        return;
    }
    let expected = std::fs::read_to_string(&snapshot).unwrap_or_else(|_| {
        panic!(
            "{} is missing; run with BLESS=1 to create it",
            snapshot.display()
        )
    });
    assert!(
        stderr == expected,
        "{name}: stderr differs from {}\n--- expected\n{expected}\n--- actual\n{stderr}\n(run with BLESS=1 to accept)",
        snapshot.display()
    );
}

macro_rules! snapshot_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                snapshot(stringify!($name));
            }
        )*

        const CASES: &[&str] = &[$(stringify!($name)),*];
    };
}

snapshot_tests! {
    unknown_key,
    tls_errors,
    protocol_errors,
    bad_duration,
    unknown_upstream,
    duplicate_route_names,
    conflicting_paths,
    rewrite_unknown_capture,
    bad_listen_address,
    path_and_prefix,
    no_path,
    bad_method,
    several_errors,
    unknown_keys_everywhere,
    wrong_types,
    decode_and_check_errors,
    bad_names,
    respond_and_upstream,
    compress_errors,
    state_errors,
    state_backend,
    state_no_url,
    cache_errors,
    transcode_errors,
    upgrade_errors,
}

/// A Redis password in `state.url` never reaches the output, even in an error about the URL.
#[test]
fn redis_passwords_are_not_printed() {
    let (_, stderr) = check_case("state_errors");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert!(
        stderr.contains("rediss://:***@cache.internal:6380/0"),
        "{stderr}"
    );
}

/// Every `.toml` in the cases directory has a test (and a snapshot), and nothing is stale.
#[test]
fn every_case_file_has_a_test() {
    let mut on_disk: Vec<String> = std::fs::read_dir(cases_dir())
        .expect("reading the cases dir")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".toml") || name.ends_with(".err"))
        .collect();
    on_disk.sort();
    let mut expected: Vec<String> = CASES
        .iter()
        .flat_map(|case| [format!("{case}.err"), format!("{case}.toml")])
        .collect();
    expected.sort();
    assert_eq!(
        on_disk, expected,
        "add the case to `snapshot_tests!` (and BLESS its snapshot), or delete stale files"
    );
}

/// Each diagnostic starts `error: FILE:LINE:COLUMN: KEY: message`, with a key that is not empty
/// (FILE is the config, or a `.proto` file a `transcode` route compiles).
///
/// Every message names file, line, column and key — including errors found while
/// deserializing (an unknown key, a bad duration), whose key path comes from the span.
#[test]
fn every_error_names_file_line_column_and_key() {
    let mut unlocated = Vec::new();
    for case in CASES {
        let (_, stderr) = check_case(case);
        // A `.proto` problem is located in the `.proto` file.
        let (file, proto) = (format!("{case}.toml:"), format!("{case}.proto:"));
        for line in stderr.lines().filter(|line| line.starts_with("error: ")) {
            let rest = &line["error: ".len()..];
            let in_file = rest
                .strip_prefix(&file)
                .or_else(|| rest.strip_prefix(&proto));
            let located = in_file.and_then(|rest| {
                let mut parts = rest.splitn(4, ':');
                let line_no = parts.next()?.parse::<u32>().ok()?;
                let column = parts.next()?.parse::<u32>().ok()?;
                let key = parts.next()?.trim();
                let message = parts.next()?.trim();
                (line_no > 0
                    && column > 0
                    && !key.is_empty()
                    && !key.contains(' ')
                    && !message.is_empty())
                .then_some(())
            });
            if located.is_none() {
                unlocated.push(format!("{case}: {line}"));
            }
        }
    }
    assert!(
        unlocated.is_empty(),
        "diagnostics without FILE:LINE:COLUMN: KEY:\n{}",
        unlocated.join("\n")
    );
}
