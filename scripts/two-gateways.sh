#!/usr/bin/env bash
# Two gateways, one Redis, one global limit — shown with curl.
#
# Builds the gateway (release) and the bundled rate-limit plugin, starts a redis-server and
# two `wasmgate run` processes on free loopback ports with the same config (one route,
# `/hello`, limited for everyone to 5 requests per minute with GCRA: a burst of 5, then one
# every 12 s; state in Redis), then sends 10 requests with curl, alternating between the
# gateways: 5 pass, 5 get 429, whichever gateway they hit. Everything it started is stopped
# on exit.
#
#   scripts/two-gateways.sh                  start its own redis-server (package redis-server)
#   REDIS_URL=redis://host:6379 scripts/two-gateways.sh    use a running Redis instead
#   WASMGATE_BIN=path/to/wasmgate ...        skip the gateway build
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
target="${CARGO_TARGET_DIR:-$root/target}"

if [ -z "${WASMGATE_BIN:-}" ]; then
    cargo build --release -p wasmgate
    WASMGATE_BIN="$target/release/wasmgate"
fi
plugins/build.sh -p rate-limit >/dev/null

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

# A TCP port on 127.0.0.1 that nothing listens on, below the ephemeral range (32768-60999).
free_port() {
    local port
    while :; do
        port=$((20000 + RANDOM % 12000))
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
    done
}

# Waits until 127.0.0.1:$1 accepts connections.
wait_port() {
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return
        sleep 0.05
    done
    echo "nothing listens on port $1; see $work" >&2
    exit 1
}

if [ -z "${REDIS_URL:-}" ]; then
    command -v redis-server >/dev/null || {
        echo "redis-server is missing: apt-get install redis-server (or set REDIS_URL)" >&2
        exit 1
    }
    redis_port=$(free_port)
    redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$work" >"$work/redis.log" 2>&1 &
    pids+=($!)
    wait_port "$redis_port"
    REDIS_URL="redis://127.0.0.1:$redis_port"
fi

mkdir -p "$work/plugins"
cp plugins/rate-limit.wasm "$work/plugins/"
ports=()
for n in 1 2; do
    port=$(free_port)
    ports+=("$port")
    cat >"$work/gateway-$n.toml" <<TOML
[server]
listen = ["127.0.0.1:$port"]

[state]
backend = "redis"
url = "$REDIS_URL"

[[routes]]
name = "hello"
path = "/hello"
respond = { status = 200, body = "hello\n" }
stages = [
  { plugin = "rate-limit", config = { key = "route", algorithm = "gcra", limits = [{ requests = 5, window = "1m" }] } },
]
TOML
    "$WASMGATE_BIN" run --config "$work/gateway-$n.toml" >"$work/gateway-$n.log" 2>&1 &
    pids+=($!)
done
for port in "${ports[@]}"; do wait_port "$port"; done

echo "two gateways on :${ports[0]} and :${ports[1]}, state in Redis; limit: 5 per minute for everyone (burst 5)"
for i in $(seq 10); do
    port=${ports[$(((i - 1) % 2))]}
    curl -s -o /dev/null \
        -w "request $i via :$port -> %{http_code}  ratelimit-remaining: %header{ratelimit-remaining}\n" \
        "http://127.0.0.1:$port/hello"
done
