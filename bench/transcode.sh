#!/usr/bin/env bash
# bench/transcode.sh — the cost of HTTP/JSON → gRPC transcoding: the same unary call
# (Bookstore.GetShelf of tests/transcode/, served by grpcio) made through the gateway
#   - as gRPC, passed through (HTTP/2 client → `upstream` route → h2c upstream), and
#   - as HTTP/JSON, transcoded (HTTP/1.1 client → `transcode` route → h2c upstream),
# each by oha in a closed loop. Reports requests/s, p50/p99 and the gateway's CPU time per call
# (utime+stime of its process over the run / calls). The Python server is the throughput
# bound; the gateway's CPU per call is the number to compare.
#
#   bench/transcode.sh                          20 000 calls each, 16 connections
#   TRANSCODE_CALLS=5000 bench/transcode.sh     shorter
#
# Needs a release build (`cargo build --release -p wasmgate`), oha (bench/run.sh installs it
# into ~/.cache/wasmgate-bench/bin), and grpcio in the tools venv (scripts/test.sh installs it).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH_SERVER_CPU=${BENCH_SERVER_CPU:-1}
BENCH_LOAD_CPU=${BENCH_LOAD_CPU:-0}
BENCH_RESULTS=${BENCH_RESULTS:-$ROOT/bench/results/transcode-$(date +%Y%m%d-%H%M%S)}
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
CALLS=${TRANSCODE_CALLS:-20000}
CONNECTIONS=${TRANSCODE_CONNECTIONS:-16}
OHA=${OHA:-$HOME/.cache/wasmgate-bench/bin/oha}
PYTHON=${WASMGATE_TOOLS:-$HOME/.cache/wasmgate-tools}/venv/bin/python

[[ -x $GATEWAY_BIN ]] || die "$GATEWAY_BIN is missing: cargo build --release -p wasmgate"
[[ -x $OHA ]] || die "oha is missing: run bench/run.sh once (it installs oha), or set OHA"
"$PYTHON" -c 'import grpc, grpc_tools, grpc_status' 2>/dev/null \
    || die "grpcio is missing from $PYTHON: run scripts/test.sh"
make_work_dir wasmgate-transcode
mkdir -p "$BENCH_RESULTS"

peer_port=$(free_port)
start_pinned "$WORK/peer.log" "$PYTHON" "$ROOT/tests/transcode/peer.py" "$ROOT/tests/transcode" "$peer_port"
UPSTREAM_PID=$LAST_PID
for _ in $(seq 100); do grep -q '^PORT ' "$WORK/peer.log" && break; sleep 0.1; done
grep -q '^PORT ' "$WORK/peer.log" || die "the bookstore peer did not start (see $WORK/peer.log)"

GATEWAY_PORT=$(free_port)
cat >"$WORK/gateway.toml" <<TOML
[server]
listen = ["127.0.0.1:$GATEWAY_PORT"]

[upstreams.bookstore]
targets = ["127.0.0.1:$peer_port"]
protocol = "h2c"

[[routes]]
name = "grpc"
prefix = "/wasmgate.bookstore.v1.Bookstore"
upstream = "bookstore"

[[routes]]
name = "json"
prefix = "/v1"
transcode = { upstream = "bookstore", protos = ["$ROOT/tests/transcode/bookstore.proto"] }
TOML
WASMGATE_WORKER_THREADS=1 RUST_LOG=warn start_pinned "$WORK/gateway.log" \
    "$GATEWAY_BIN" run --config "$WORK/gateway.toml"
GATEWAY_PID=$LAST_PID
wait_http "http://127.0.0.1:$GATEWAY_PORT/v1/shelves/1" "$GATEWAY_PID" gateway

# GetShelfRequest { shelf: 1 } as one gRPC frame: uncompressed, length 2, field 1 = 1.
printf '\x00\x00\x00\x00\x02\x08\x01' >"$WORK/get-shelf.grpc"

# run NAME OHA-ARGS...: one closed-loop run; prints a table row.
run() {
    local name=$1
    shift
    local before after
    before=$(cpu_ticks "$GATEWAY_PID")
    taskset -c "$BENCH_LOAD_CPU" "$OHA" --no-tui --output-format json -n "$CALLS" -c "$CONNECTIONS" "$@" \
        >"$BENCH_RESULTS/$name.json"
    after=$(cpu_ticks "$GATEWAY_PID")
    python3 - "$BENCH_RESULTS/$name.json" "$name" "$((after - before))" "$CLK_TCK" "$CALLS" <<'PY'
import json, sys
path, name, ticks, tck, calls = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
r = json.load(open(path))
ok = r["statusCodeDistribution"].get("200", 0)
pct = r["latencyPercentiles"]
print(f"| {name} | {r['summary']['requestsPerSec']:.0f} | {pct['p50'] * 1000:.2f} | {pct['p99'] * 1000:.2f} | {ticks / tck * 1e6 / calls:.1f} | {calls - ok} |")
PY
}

{
    environment_common
    echo
    echo "| call | req/s | p50 ms | p99 ms | gateway CPU µs/call | non-200 |"
    echo "|---|---|---|---|---|---|"
    # Warm both paths (connections, pools) before measuring.
    "$OHA" --no-tui --output-format quiet -n 500 -c "$CONNECTIONS" "http://127.0.0.1:$GATEWAY_PORT/v1/shelves/1"
    "$OHA" --no-tui --output-format quiet -n 500 -c "$CONNECTIONS" --http2 -m POST \
        -H 'content-type: application/grpc' -H 'te: trailers' -D "$WORK/get-shelf.grpc" \
        "http://127.0.0.1:$GATEWAY_PORT/wasmgate.bookstore.v1.Bookstore/GetShelf"
    run grpc-passthrough --http2 -m POST -H 'content-type: application/grpc' -H 'te: trailers' \
        -D "$WORK/get-shelf.grpc" "http://127.0.0.1:$GATEWAY_PORT/wasmgate.bookstore.v1.Bookstore/GetShelf"
    run json-transcoded "http://127.0.0.1:$GATEWAY_PORT/v1/shelves/1"
} | tee "$BENCH_RESULTS/summary.md"
