#!/usr/bin/env bash
# The whole test suite: formatting, lints, host unit + black-box integration tests (real
# gateway process, real loopback upstreams, WASM plugins compiled from source), and the
# plugins' own unit tests. Toolchains for non-Rust plugins are installed from PyPI and npm
# into ~/.cache/wasmgate-tools (override with WASMGATE_TOOLS).
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip2 >/dev/null
rustup component add rustfmt clippy >/dev/null 2>&1 || true
host_target=$(rustc -vV | sed -n 's/^host: //p')

echo "== format"
cargo fmt --all --check
cargo fmt --manifest-path plugins/Cargo.toml --all --check

echo "== lints"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy --manifest-path plugins/Cargo.toml --target wasm32-wasip2 -- -D warnings

echo "== plugin SDK and bundled Rust plugins: unit tests (native)"
cargo test --manifest-path plugin-sdk/Cargo.toml --target "$host_target"
cargo test --manifest-path plugins/Cargo.toml --target "$host_target"

echo "== Python and JavaScript plugins: toolchains, builds, unit tests"
scripts/build-polyglot.sh
python3 -m unittest discover -s plugins/python/json-guard
node --test plugins/js/response-envelope/

echo "== gateway: unit and integration tests"
cargo test --workspace
