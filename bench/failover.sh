#!/usr/bin/env bash
# bench/failover.sh — one of three upstream targets is killed under a steady load and brought
# back, in front of the gateway and of HAProxy (Debian `haproxy`: `check` + `observe layer7` +
# `retry-on`), on the same upstreams and the same load; prints failed requests and latency
# during the kill and during the recovery.
#
# Starts, all on 127.0.0.1 with free ports: three `wasmgate-demo --fast` targets, HAProxy and
# target/release/wasmgate (one worker each), then for each proxy in turn: oha at
# BENCH_RATE req/s for BENCH_PHASE seconds with all three up ("steady"), kills target 2 with
# SIGKILL and loads BENCH_PHASE more seconds ("kill"), restarts it on the same port and loads
# BENCH_PHASE more ("recovery"). Both proxies check targets actively every second (2 failures
# out, 2 passes back in) and retry failed idempotent requests on another target. Each phase
# also times, from the kill (or the restart), how long the proxy takes to take the target out
# of rotation (or put it back), as the proxy itself reports it: HAProxy's stats page, the
# gateway's admin `/status`.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly ROOT
PATH=$PATH:/usr/sbin:/sbin
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

BENCH_RATE=${BENCH_RATE:-2000}
BENCH_PHASE=${BENCH_PHASE:-5}
BENCH_CONNECTIONS=${BENCH_CONNECTIONS:-32}
BENCH_SERVER_CPU=${BENCH_SERVER_CPU:-1}
BENCH_LOAD_CPU=${BENCH_LOAD_CPU:-0}
BENCH_GATEWAY_LOG=${BENCH_GATEWAY_LOG:-warn}
BENCH_RESULTS=${BENCH_RESULTS:-$ROOT/bench/results/failover-$(date +%Y%m%d-%H%M%S)}
OHA=${OHA:-${XDG_CACHE_HOME:-$HOME/.cache}/wasmgate-bench/bin/oha}

command -v haproxy >/dev/null || die "haproxy is missing: apt-get install haproxy"
[[ -x $OHA ]] || die "oha is missing at $OHA (bench/run.sh installs it)"
[[ -x $GATEWAY_BIN && -x $DEMO_BIN ]] || die "build first: cargo build --release -p wasmgate -p wasmgate-demo"
mkdir -p "$BENCH_RESULTS"
make_work_dir wasmgate-failover

PORTS=("$(free_port)" "$(free_port)" "$(free_port)")
declare -A TARGET_PID=()
start_target() {
    start_pinned "$WORK/target-$1.log" "$DEMO_BIN" --fast "127.0.0.1:${PORTS[$1]}"
    TARGET_PID[$1]=$LAST_PID
    wait_http "http://127.0.0.1:${PORTS[$1]}/" "$LAST_PID" "target $1"
}
for i in 0 1 2; do start_target "$i"; done

HAPROXY_PORT=$(free_port)
STATS_PORT=$(free_port)
cat >"$WORK/haproxy.cfg" <<EOF
global
    maxconn 4096
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout 502 503 504
frontend front
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend targets
frontend stats
    bind 127.0.0.1:$STATS_PORT
    stats enable
    stats uri /stats
backend targets
    balance leastconn
    option httpchk GET /health
    default-server check inter 1s fall 2 rise 2 observe layer7 error-limit 3 on-error mark-down
    server t0 127.0.0.1:${PORTS[0]}
    server t1 127.0.0.1:${PORTS[1]}
    server t2 127.0.0.1:${PORTS[2]}
EOF
haproxy -c -q -f "$WORK/haproxy.cfg" || die "haproxy rejected its config"
start_pinned "$WORK/haproxy.log" haproxy -f "$WORK/haproxy.cfg"
HAPROXY_PID=$LAST_PID
wait_http "http://127.0.0.1:$HAPROXY_PORT/" "$HAPROXY_PID" haproxy

GATEWAY_PORT=$(free_port)
ADMIN_PORT=$(free_port)
mkdir -p "$WORK/gateway/plugins"
cat >"$WORK/gateway/gateway.toml" <<EOF
[server]
listen = ["127.0.0.1:$GATEWAY_PORT"]
[plugins]
dir = "plugins"
[admin]
listen = "127.0.0.1:$ADMIN_PORT"
metrics = false
[upstreams.targets]
targets = ["127.0.0.1:${PORTS[0]}", "127.0.0.1:${PORTS[1]}", "127.0.0.1:${PORTS[2]}"]
health-check = { path = "/health", interval = "1s", timeout = "500ms", healthy-threshold = 2, unhealthy-threshold = 2 }
outlier = { consecutive-failures = 3, base-ejection = "2s" }
[[routes]]
name = "all"
prefix = "/"
upstream = "targets"
EOF
launch_gateway "$WORK/gateway/gateway.toml" "http://127.0.0.1:$GATEWAY_PORT/"

# Loads URL for a phase; prints "requests failed p50_ms p99_ms". Failed: answers other than 2xx
# and transport errors; requests still in flight when the phase ends are not failures.
phase() {
    local url=$1 raw=$2
    taskset -c "$BENCH_LOAD_CPU" "$OHA" --no-tui --output-format json -z "${BENCH_PHASE}s" \
        -q "$BENCH_RATE" -c "$BENCH_CONNECTIONS" "$url" >"$raw" 2>/dev/null || true
    jq -r '
        (.statusCodeDistribution // {}) as $codes
        | ([$codes | to_entries[] | .value] | add // 0) as $answered
        | (([$codes | to_entries[] | select(.key | test("^2") | not) | .value] | add // 0)
           + ([(.errorDistribution // {}) | to_entries[]
               | select(.key != "aborted due to deadline") | .value] | add // 0)) as $failed
        | "\($answered) \($failed) \((.latencyPercentiles.p50 // 0) * 1000 | . * 100 | round / 100) \((.latencyPercentiles.p99 // 0) * 1000 | . * 100 | round / 100)"
    ' "$raw"
}

# Whether the proxy has target 1 in rotation now: "up" or "down" (as the proxy reports it).
target_state() {
    case $1 in
        haproxy) curl -s "http://127.0.0.1:$STATS_PORT/stats;csv" \
            | awk -F, '$1 == "targets" && $2 == "t1" { print ($18 ~ /^UP/) ? "up" : "down" }' ;;
        gateway) curl -s "http://127.0.0.1:$ADMIN_PORT/status" \
            | jq -r '.upstreams[0].targets[1].usable | if . then "up" else "down" end' ;;
    esac
}

# Writes to $3 the milliseconds until proxy $1 reports target 1 $2, polling every 20 ms from
# now (the kill or the restart), or "-" after 30 s.
time_until() {
    local proxy=$1 want=$2 out=$3 start now
    start=$(date +%s%N)
    for _ in $(seq 1500); do
        if [[ $(target_state "$proxy") == "$want" ]]; then
            now=$(date +%s%N)
            echo $(((now - start) / 1000000)) >"$out"
            return
        fi
        sleep 0.02
    done
    echo - >"$out"
}

printf 'proxy\tphase\trequests\tfailed\tp50_ms\tp99_ms\tdetected_ms\n' >"$BENCH_RESULTS/results.tsv"
for proxy in haproxy gateway; do
    case $proxy in
        haproxy) url="http://127.0.0.1:$HAPROXY_PORT/" ;;
        gateway) url="http://127.0.0.1:$GATEWAY_PORT/" ;;
    esac
    log "$proxy: steady"
    printf '%s\tsteady\t%s\t-\n' "$proxy" "$(phase "$url" "$BENCH_RESULTS/$proxy-steady.json" | tr ' ' '\t')" >>"$BENCH_RESULTS/results.tsv"
    log "$proxy: killing target 1 under load"
    (sleep 0.5; kill -KILL "${TARGET_PID[1]}"; time_until "$proxy" down "$WORK/$proxy-out.ms") &
    local_job=$!
    kill_phase=$(phase "$url" "$BENCH_RESULTS/$proxy-kill.json" | tr ' ' '\t')
    wait "$local_job"
    printf '%s\tkill\t%s\t%s\n' "$proxy" "$kill_phase" "$(cat "$WORK/$proxy-out.ms")" >>"$BENCH_RESULTS/results.tsv"
    log "$proxy: restarting target 1 under load"
    (
        sleep 0.5
        taskset -c "$BENCH_SERVER_CPU" "$DEMO_BIN" --fast "127.0.0.1:${PORTS[1]}" >"$WORK/target-1-again.log" 2>&1 &
        time_until "$proxy" up "$WORK/$proxy-back.ms"
    ) &
    local_job=$!
    recovery_phase=$(phase "$url" "$BENCH_RESULTS/$proxy-recovery.json" | tr ' ' '\t')
    wait "$local_job"
    printf '%s\trecovery\t%s\t%s\n' "$proxy" "$recovery_phase" "$(cat "$WORK/$proxy-back.ms")" >>"$BENCH_RESULTS/results.tsv"
    # start_target ran in a subshell: find the new target process by its port.
    TARGET_PID[1]=$(pgrep -f "wasmgate-demo --fast 127.0.0.1:${PORTS[1]}" | head -1)
    STARTED_PIDS+=("${TARGET_PID[1]}")
done
column -t -s $'\t' "$BENCH_RESULTS/results.tsv"
log "results in $BENCH_RESULTS"
