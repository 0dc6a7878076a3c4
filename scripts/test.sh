#!/usr/bin/env bash
# The whole test suite: formatting, lints, host unit + black-box integration tests (real
# gateway process, real loopback upstreams, WASM plugins compiled from source), and the
# plugins' own unit tests. Toolchains for non-Rust plugins are installed from PyPI, npm and
# crates.io into ~/.cache/wasmgate-tools (override with WASMGATE_TOOLS).
set -euo pipefail
cd "$(dirname "$0")/.."
# One target directory for the three workspaces (host, plugin SDK, plugins), so shared
# dependencies are built and stored once, and no incremental caches: a from-empty run
# (CI) gains nothing from them and they were the largest part of the disk it used.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
rustup target add wasm32-wasip2 >/dev/null
rustup component add rustfmt clippy >/dev/null 2>&1 || true
host_target=$(rustc -vV | sed -n 's/^host: //p')

echo "== test peers (Debian packages)"
# nginx is the reference the path-normalization test compares the gateway with (and the
# cache conformance script runs the suite against its proxy_cache); promtool
# (package `prometheus`) checks the metrics exposition; redis-server (which brings
# redis-cli) is the shared state backend tests/redis.rs starts on free ports.
packages=()
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
    packages+=(nginx-light)
fi
if ! command -v promtool >/dev/null; then
    packages+=(prometheus)
fi
# openssl (the CLI): tests/tls.rs offers TLS 1.1 with `openssl s_client`, which rustls cannot.
if ! command -v openssl >/dev/null; then
    packages+=(openssl)
fi
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    packages+=(redis-server)
fi
if [ ${#packages[@]} -gt 0 ]; then
    sudo=(); [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

echo "== format"
cargo fmt --all --check
cargo fmt --manifest-path plugins/Cargo.toml --all --check

echo "== lints"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy --manifest-path plugins/Cargo.toml --target wasm32-wasip2 -- -D warnings

echo "== plugin SDK and bundled Rust plugins: unit tests (native)"
cargo test --manifest-path plugin-sdk/Cargo.toml --target "$host_target"
cargo test --manifest-path plugins/Cargo.toml --target "$host_target"

echo "== non-Rust plugins: toolchains, builds"
scripts/build-polyglot.sh
tools_venv="${WASMGATE_TOOLS:-$HOME/.cache/wasmgate-tools}/venv"

echo "== test peers (PyPI, into the tools venv)"
# tests/grpc.rs drives a grpcio server and client (grpcio-tools generates their stubs: protoc
# for the test side only) and sonora's gRPC-Web client; tests/transcode.rs serves its
# bookstore with grpcio, with rich error details from grpcio-status; tests/websocket.rs uses
# the `websockets` library as both the upstream and the clients.
"$tools_venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    grpcio==1.76.0 grpcio-tools==1.76.0 grpcio-status==1.76.0 grpcio-health-checking==1.76.0 \
    sonora==0.2.3 websockets==17.4

echo "== non-Rust plugins: unit tests (native)"
tools="${WASMGATE_TOOLS:-$HOME/.cache/wasmgate-tools}"
plugins/c/hmac-auth/test.sh
plugins/cpp/cors/test.sh
ZIG_GLOBAL_CACHE_DIR="$tools/zig-cache" "$tools/venv/bin/python" -m ziglang test plugins/zig/ip-filter/src/filter.zig
(cd plugins/go/request-rewrite && GOTOOLCHAIN=local GOPROXY=off GOFLAGS=-mod=mod GOEXPERIMENT=nojsonv2 \
    GOCACHE="$tools/go/cache" GOPATH="$tools/go/path" "$tools/venv/bin/go" test ./...)
plugins/assemblyscript/server-timing/test/run.sh
python3 -m unittest discover -s plugins/python/json-guard
node --test plugins/js/response-envelope/

echo "== gateway: unit and integration tests"
cargo test --workspace

echo "== response cache: HTTP caching test suite (http-cache-tests, npm)"
# The gateway's score may not drop below what it reached (README, Caching); nginx's
# proxy_cache on the same suite: bench/cache-conformance.sh without --only.
WASMGATE_BIN="$CARGO_TARGET_DIR/debug/wasmgate" bench/cache-conformance.sh --only gateway --min 261
