#!/usr/bin/env bash
# bench/reload.sh — hot reload under load: wrk drives a route with a WASM transform stage while
# the plugin file is replaced every second (atomic rename of a new build of it). Reports wrk's
# errors and non-2xx answers (must be 0) and the latency from file write to the new version
# serving (the admin API's hash for the plugin changed), p50/p99.
#
#   bench/reload.sh                      30 s of load, one swap per second
#   RELOAD_DURATION=10 bench/reload.sh   shorter
#
# Each swap writes a distinct file (the plugin plus a custom section holding a counter), so every
# swap is a real load: content hash, compile, world check, validate-config, swap. With
# RELOAD_VARIANTS=2 the swaps alternate between two files, so after the first two every swap is
# served from the compiled-artifact cache (the common "roll back / roll forward" case).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RELEASE_DIR=${CARGO_TARGET_DIR:-$ROOT/target}/release
DURATION=${RELOAD_DURATION:-30}
VARIANTS=${RELOAD_VARIANTS:-0}
CONNECTIONS=${RELOAD_CONNECTIONS:-32}
RESULTS=${RELOAD_RESULTS:-$ROOT/bench/results/reload-$(date +%Y%m%d-%H%M%S)}
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

command -v wrk >/dev/null || { sudo -n true 2>/dev/null && SUDO=sudo || SUDO=; $SUDO apt-get update -qq && $SUDO apt-get install -y -qq wrk >/dev/null; }
if [[ ${RELOAD_SKIP_BUILD:-0} != 1 ]]; then
    "$ROOT/plugins/build.sh" -p transform >/dev/null
    cargo build --release -q -p wasmgate -p wasmgate-demo --manifest-path "$ROOT/Cargo.toml"
fi

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(port); GW=$(port); ADMIN=$(port)
mkdir -p "$WORK/plugins" "$RESULTS"
cp "$ROOT/plugins/transform.wasm" "$WORK/plugins/transform.wasm"
cat >"$WORK/gateway.toml" <<TOML
[server]
listen = ["127.0.0.1:$GW"]
[plugins]
dir = "plugins"
[admin]
listen = "127.0.0.1:$ADMIN"
[upstreams.fast]
targets = ["127.0.0.1:$UP"]
[[routes]]
name = "reloaded"
prefix = "/"
upstream = "fast"
stages = [{ plugin = "transform", config = { request = { headers = { set = { "x-stage" = "on" } } } } }]
TOML

taskset -c 1 "$RELEASE_DIR/wasmgate-demo" --fast "127.0.0.1:$UP" >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)
RUST_LOG=warn,wasmgate::reload=info WASMGATE_WORKER_THREADS=1 taskset -c 1 \
    "$RELEASE_DIR/wasmgate" run --config "$WORK/gateway.toml" >"$WORK/gateway.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 200); do curl -fs "http://127.0.0.1:$GW/" >/dev/null 2>&1 && break; sleep 0.1; done

taskset -c 0 wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "http://127.0.0.1:$GW/" >"$RESULTS/wrk.txt" 2>&1 &
WRK=$!
python3 - "$WORK/plugins" "$ROOT/plugins/transform.wasm" "$ADMIN" "$DURATION" "$VARIANTS" >"$RESULTS/swaps.txt" <<'PY'
import hashlib, json, os, sys, time, urllib.request
plugins, source, admin, duration = sys.argv[1], open(sys.argv[2], "rb").read(), sys.argv[3], int(sys.argv[4])
variants = int(sys.argv[5])

def custom_section(n):
    name, payload = b"wasmgate-bench", str(n).encode()
    body = bytes([len(name)]) + name + payload
    return b"\x00" + bytes([len(body)]) + body   # both lengths < 128: one-byte LEB128

def live_hash():
    status = json.load(urllib.request.urlopen(f"http://127.0.0.1:{admin}/status", timeout=2))
    return next(p["hash"] for p in status["plugins"] if p["name"] == "transform")

latencies, end = [], time.time() + duration - 1
n = 0
while time.time() < end:
    n += 1
    data = source + custom_section(n % variants if variants else n)
    want = hashlib.sha256(data).hexdigest()
    tmp = os.path.join(plugins, ".transform.wasm.tmp")
    open(tmp, "wb").write(data)
    written = time.perf_counter()
    os.rename(tmp, os.path.join(plugins, "transform.wasm"))
    while live_hash() != want:
        if time.perf_counter() - written > 10:
            sys.exit(f"swap {n} not live after 10 s")
        time.sleep(0.005)
    latencies.append((time.perf_counter() - written) * 1000)
    time.sleep(max(0.0, 1.0 - (time.perf_counter() - written)))
latencies.sort()
pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]
print(f"swaps {len(latencies)}  write-to-live p50 {pick(0.5):.1f} ms  p99 {pick(0.99):.1f} ms  max {latencies[-1]:.1f} ms")
PY
wait "$WRK"
requests=$(awk '/requests in/ {print $1}' "$RESULTS/wrk.txt")
errors=$(awk '/Socket errors/ {gsub(",", ""); s=0; for (i=4;i<=NF;i+=2) s+=$i; print s}' "$RESULTS/wrk.txt")
non2xx=$(awk '/Non-2xx/ {print $NF}' "$RESULTS/wrk.txt")
echo "reload under load: ${DURATION}s, ${CONNECTIONS} connections, one swap per second, variants ${VARIANTS} (0: every swap new)"
echo "requests ${requests:-?}  socket errors ${errors:-0}  non-2xx ${non2xx:-0}"
cat "$RESULTS/swaps.txt"
grep -c "plugin loaded" "$WORK/gateway.log" | sed 's/^/plugin loads logged: /'
cp "$WORK/gateway.log" "$RESULTS/"
[[ ${errors:-0} == 0 && ${non2xx:-0} == 0 ]] || { echo "FAILED: requests failed during reloads"; exit 1; }
