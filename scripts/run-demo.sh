#!/usr/bin/env bash
# Builds everything needed and starts the gateway on config/gateway.toml with the demo
# upstreams (users :9101, orders :9102, inventory :9103). Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
plugins/build.sh
cargo build --release -p wasmgate -p wasmgate-demo
target/release/wasmgate-demo &
demo=$!
trap 'kill $demo 2>/dev/null || true' EXIT INT TERM
target/release/wasmgate check --config config/gateway.toml
target/release/wasmgate run --config config/gateway.toml
