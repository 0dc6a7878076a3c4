#!/usr/bin/env bash
# Builds everything needed and starts the gateway with the demo upstreams (users :9101,
# orders :9102, inventory :9103, the gRPC greeter :9104). Ctrl-C stops both.
#
#   scripts/run-demo.sh              config/gateway.toml: the Rust plugins
#   scripts/run-demo.sh --polyglot   config/polyglot.toml: the C, C++, Zig, Go, AssemblyScript,
#                                    Python and JavaScript plugins (installs their toolchains
#                                    first: about 7 minutes the first time, then cached)
set -euo pipefail
cd "$(dirname "$0")/.."
config=config/gateway.toml
case "${1:-}" in
    "") ;;
    --polyglot) config=config/polyglot.toml; scripts/build-polyglot.sh ;;
    *) echo "usage: $0 [--polyglot]" >&2; exit 2 ;;
esac
plugins/build.sh
cargo build --release -p wasmgate -p wasmgate-demo
bin="${CARGO_TARGET_DIR:-target}/release"
"$bin/wasmgate-demo" &
demo=$!
trap 'kill $demo 2>/dev/null || true' EXIT INT TERM
"$bin/wasmgate" check --config "$config"
"$bin/wasmgate" run --config "$config"
