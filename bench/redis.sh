#!/usr/bin/env bash
# bench/redis.sh — what shared state in Redis costs a rate-limited request, and whether two
# gateways sharing one Redis serve twice what one does.
#
# Starts, all on 127.0.0.1 with free ports:
#   redis     redis-server (Debian package redis-server), pinned to the load CPU
#   gateway   target/release/wasmgate with WASMGATE_WORKER_THREADS=1 on the server CPU, one
#             route per algorithm (/fixed, /gcra) behind the bundled rate-limit plugin with a
#             limit no run reaches (every request is counted, none refused)
# and measures, with oha (closed loop, BENCH_CONNECTIONS connections, BENCH_DURATION per run,
# BENCH_ROUNDS rounds alternating the two backends):
#
#   1. cost: the same gateway config with `[state]` local (in-process) and with Redis; for each
#      run the gateway's CPU time (utime+stime from /proc) per request, req/s, p50 and p99, and
#      Redis' own CPU per request. "added" is Redis minus local, medians over rounds.
#   2. scale: one gateway, then two gateways, each held to BENCH_GATEWAY_QUOTA of a CPU by a cgroup
#      (so that two gateways, the load generator and Redis all fit on a 2-core machine without
#      competing), both counting in one Redis; req/s of two together over one.
#   3. outage: one gateway with `timeout = "50ms"` and `on-unavailable = "local"` under load
#      while Redis is paused (CLIENT PAUSE) for most of the run: p50, p99 and the slowest
#      request, which the timeout (and then the breaker) must bound.
#
# Prints the tables; raw oha output is kept under bench/results/redis-<timestamp>/.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly ROOT
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

BENCH_QUICK=${BENCH_QUICK:-0}
if [[ $BENCH_QUICK == 1 ]]; then
    BENCH_DURATION=${BENCH_DURATION:-2s}
    BENCH_ROUNDS=${BENCH_ROUNDS:-1}
fi
BENCH_DURATION=${BENCH_DURATION:-5s}            # length of each measured run
BENCH_ROUNDS=${BENCH_ROUNDS:-3}                 # rounds (local and Redis alternate)
BENCH_WARMUP=${BENCH_WARMUP:-1s}                # before every measured run
BENCH_CONNECTIONS=${BENCH_CONNECTIONS:-16}      # oha connections (closed loop) per gateway
BENCH_GATEWAY_QUOTA=${BENCH_GATEWAY_QUOTA:-0.3} # CPUs each gateway may use in the scale runs
BENCH_SCENARIOS=${BENCH_SCENARIOS:-cost scale outage} # which of the three to run
BENCH_OUTAGE_DURATION=${BENCH_OUTAGE_DURATION:-3s} # the outage run
BENCH_PAUSE_MS=${BENCH_PAUSE_MS:-2500}          # how long Redis is paused in it
BENCH_LOAD_CPU=${BENCH_LOAD_CPU:-0}             # CPU for oha and redis-server
BENCH_SERVER_CPU=${BENCH_SERVER_CPU:-1}         # CPU for the gateways
BENCH_SKIP_BUILD=${BENCH_SKIP_BUILD:-0}         # 1: use the existing release binary and plugin
BENCH_SKIP_INSTALL=${BENCH_SKIP_INSTALL:-0}     # 1: never apt-get
BENCH_CACHE=${BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wasmgate-bench}
BENCH_RESULTS=${BENCH_RESULTS:-$ROOT/bench/results/redis-$(date +%Y%m%d-%H%M%S)}
BENCH_GATEWAY_LOG=${BENCH_GATEWAY_LOG:-warn}
BENCH_NOISE_LIMIT=${BENCH_NOISE_LIMIT:-5}

OHA=$BENCH_CACHE/bin/oha
PLUGIN=$ROOT/plugins/rate-limit.wasm
REDIS_PORT="" REDIS_PID=""
CGROUPS=()              # cgroups this script made (removed on exit)

# ----------------------------------------------------------------------------- set-up

prepare() {
    check_cpus
    local missing=()
    command -v redis-server >/dev/null || missing+=(redis-server)
    command -v jq >/dev/null || missing+=(jq)
    command -v taskset >/dev/null || missing+=(taskset)
    install_packages "${missing[@]}"
    [[ -x $OHA ]] || OHA=$(command -v oha) || die "oha not found (bench/run.sh installs it into $BENCH_CACHE)"
    if [[ $BENCH_SKIP_BUILD != 1 ]]; then
        (cd "$ROOT" && cargo build --release -p wasmgate >&2)
        "$ROOT/plugins/build.sh" -p rate-limit >&2
    fi
    [[ -x $GATEWAY_BIN ]] || die "no gateway binary at $GATEWAY_BIN"
    [[ -f $PLUGIN ]] || die "no $PLUGIN (plugins/build.sh -p rate-limit)"
    make_work_dir wasmgate-redis-bench
    trap finish EXIT
    mkdir -p "$BENCH_RESULTS" "$WORK/plugins"
    cp "$PLUGIN" "$WORK/plugins/"
}

start_redis() {
    local attempt
    for attempt in 1 2 3; do
        REDIS_PORT=$(free_port)
        taskset -c "$BENCH_LOAD_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 \
            --save '' --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
        REDIS_PID=$!
        STARTED_PIDS+=("$REDIS_PID")
        for _ in $(seq 100); do
            kill -0 "$REDIS_PID" 2>/dev/null || break
            if redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
                log "redis     pid $REDIS_PID  :$REDIS_PORT  ($(redis-server --version | cut -d' ' -f3))"
                return
            fi
            sleep 0.05
        done
        log "redis-server did not start on :$REDIS_PORT (attempt $attempt): $(tail -1 "$WORK/redis.log")"
    done
    die "cannot start redis-server"
}

# Writes a gateway config for `state` (local or redis) listening on port $2 to stdout.
gateway_config() {
    local state=$1 port=$2
    cat <<EOF
[server]
listen = ["127.0.0.1:$port"]

[plugins]
dir = "$WORK/plugins"
cache-dir = "$WORK/cache"
watch = false

EOF
    if [[ $state == redis* ]]; then
        printf '[state]\nbackend = "redis"\nurl = "redis://127.0.0.1:%s"\n' "$REDIS_PORT"
        [[ $state == redis-outage ]] && printf 'timeout = "50ms"\non-unavailable = "local"\n'
        echo
    fi
    cat <<'EOF'
[[routes]]
name = "fixed"
path = "/fixed"
respond = { status = 200, body = "ok" }
stages = [{ plugin = "rate-limit", config = { limits = [{ requests = 1000000000, window = "1s" }] } }]

[[routes]]
name = "gcra"
path = "/gcra"
respond = { status = 200, body = "ok" }
stages = [{ plugin = "rate-limit", config = { algorithm = "gcra", limits = [{ requests = 1000000, window = "1s" }] } }]
EOF
}

# Starts a gateway with `state` on the server CPU; sets GW_PID and GW_PORT.
GW_PID="" GW_PORT=""
start_gateway() {
    local state=$1 name=$2
    GW_PORT=$(free_port)
    gateway_config "$state" "$GW_PORT" >"$WORK/$name.toml"
    RUST_LOG=$BENCH_GATEWAY_LOG WASMGATE_WORKER_THREADS=1 \
        start_pinned "$WORK/$name.log" "$GATEWAY_BIN" run --config "$WORK/$name.toml"
    GW_PID=$LAST_PID
    wait_http "http://127.0.0.1:$GW_PORT/fixed" "$GW_PID" "$name" 60
}

stop_pid() {
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# Puts process $1 in a new cgroup limited to BENCH_GATEWAY_QUOTA CPUs; false if cgroups are
# not writable here.
limit_cpu() {
    local pid=$1 dir period=10000 quota
    quota=$(awk -v q="$BENCH_GATEWAY_QUOTA" -v p=$period 'BEGIN { printf "%d", q * p }')
    if [[ -w /sys/fs/cgroup/cgroup.subtree_control ]]; then
        dir=/sys/fs/cgroup/wasmgate-bench-$pid
        mkdir "$dir" 2>/dev/null || return 1
        CGROUPS+=("$dir")
        echo "$quota $period" >"$dir/cpu.max" && echo "$pid" >"$dir/cgroup.procs"
    elif [[ -w /sys/fs/cgroup/cpu ]]; then
        dir=/sys/fs/cgroup/cpu/wasmgate-bench-$pid
        mkdir "$dir" 2>/dev/null || return 1
        CGROUPS+=("$dir")
        echo $period >"$dir/cpu.cfs_period_us" && echo "$quota" >"$dir/cpu.cfs_quota_us" \
            && for task in /proc/"$pid"/task/*; do echo "${task##*/}" >"$dir/tasks"; done
    else
        return 1
    fi
}

# The EXIT trap: stops what we started, removes our cgroups (only empty ones can go), then
# lib.sh's cleanup (which keeps the logs and exits with this script's status).
finish() {
    local status=$? pid
    for pid in "${STARTED_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${STARTED_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    remove_cgroups
    (exit "$status")
    cleanup
}

remove_cgroups() {
    local dir
    for dir in "${CGROUPS[@]}"; do
        rmdir "$dir" 2>/dev/null || true
    done
}

# ----------------------------------------------------------------------------- load

# oha closed loop against $1 for $2; raw JSON to $3; prints "requests seconds p50_ms p99_ms bad"
# (requests cut off by the end of the run are not counted as bad).
oha_run() {
    local url=$1 duration=$2 raw=$3
    taskset -c "$BENCH_LOAD_CPU" "$OHA" --no-tui --output-format json -z "$duration" \
        -c "$BENCH_CONNECTIONS" "$url" >"$raw" 2>"$raw.stderr" || die "oha failed (see $raw.stderr)"
    jq -r '
        (.statusCodeDistribution // {}) as $codes
        | ([$codes | to_entries[] | select(.key == "200") | .value] | add // 0) as $ok
        | (([$codes | to_entries[] | select(.key != "200") | .value] | add // 0)
           + ([(.errorDistribution // {}) | to_entries[]
               | select(.key != "aborted due to deadline") | .value] | add // 0)) as $bad
        | "\($ok) \(.summary.total) \((.latencyPercentiles.p50 // 0) * 1000) \((.latencyPercentiles.p99 // 0) * 1000) \($bad)"
    ' "$raw"
}

# One cost run: gateway pid $1, url $2, label $3; appends a row to cost.tsv.
cost_run() {
    local pid=$1 url=$2 label=$3 round=$4 g0 r0 result
    oha_run "$url" "$BENCH_WARMUP" "$WORK/warmup.json" >/dev/null
    g0=$(cpu_ticks "$pid")
    r0=$(cpu_ticks "$REDIS_PID")
    result=$(oha_run "$url" "$BENCH_DURATION" "$BENCH_RESULTS/$label-$round.json")
    local g1 r1
    g1=$(cpu_ticks "$pid")
    r1=$(cpu_ticks "$REDIS_PID")
    read -r n s p50 p99 bad <<<"$result"
    ((bad == 0)) || log "warning: $bad non-200 answers in $label"
    awk -v OFS='\t' -v l="$label" -v n="$n" -v s="$s" -v p50="$p50" -v p99="$p99" \
        -v g=$((g1 - g0)) -v r=$((r1 - r0)) -v tck="$CLK_TCK" 'BEGIN {
            print l, sprintf("%.0f", n / s), sprintf("%.3f", p50), sprintf("%.3f", p99),
                sprintf("%.1f", g / tck * 1e6 / n), sprintf("%.1f", r / tck * 1e6 / n)
        }' >>"$BENCH_RESULTS/cost.tsv"
    log "$label round $round: $(tail -1 "$BENCH_RESULTS/cost.tsv" | tr '\t' ' ')"
}

# Median of column $2 over the rows of cost.tsv labelled $1.
cost_median() {
    awk -F'\t' -v l="$1" -v c="$2" '$1 == l { print $c }' "$BENCH_RESULTS/cost.tsv" | median
}

# ----------------------------------------------------------------------------- scenarios

measure_cost() {
    local local_pid local_port redis_pid redis_port
    start_gateway local gateway-local
    local_pid=$GW_PID local_port=$GW_PORT
    start_gateway redis gateway-redis
    redis_pid=$GW_PID redis_port=$GW_PORT
    log "gateways  local pid $local_pid :$local_port, redis pid $redis_pid :$redis_port"
    : >"$BENCH_RESULTS/cost.tsv"
    for round in $(seq "$BENCH_ROUNDS"); do
        for algorithm in fixed gcra; do
            local first=local second=redis
            ((round % 2 == 0)) && first=redis second=local
            for state in $first $second; do
                local pid=$local_pid port=$local_port
                [[ $state == redis ]] && pid=$redis_pid port=$redis_port
                cost_run "$pid" "http://127.0.0.1:$port/$algorithm" "$algorithm-$state" "$round"
            done
        done
    done
    stop_pid "$local_pid"
    stop_pid "$redis_pid"
}

# req/s of `count` gateways (each CPU-limited), all counting in Redis, loaded at once; sets
# SCALED.
SCALED=""
scale_run() {
    local count=$1 pids=() ports=() i pid
    for i in $(seq "$count"); do
        start_gateway redis "scale-$count-$i"
        limit_cpu "$GW_PID" || die "cannot limit the gateway's CPU with a cgroup here"
        pids+=("$GW_PID")
        ports+=("$GW_PORT")
    done
    local total=0 loads=()
    for i in $(seq "$count"); do
        oha_run "http://127.0.0.1:${ports[$((i - 1))]}/fixed" "$BENCH_WARMUP" "$WORK/warm-$i.json" >/dev/null &
        loads+=($!)
    done
    wait "${loads[@]}"
    loads=()
    for i in $(seq "$count"); do
        oha_run "http://127.0.0.1:${ports[$((i - 1))]}/fixed" "$BENCH_DURATION" \
            "$BENCH_RESULTS/scale-$count-$i.json" >"$WORK/scale-$count-$i.out" &
        loads+=($!)
    done
    wait "${loads[@]}"
    for i in $(seq "$count"); do
        read -r n s _ _ bad <"$WORK/scale-$count-$i.out"
        ((bad == 0)) || log "warning: $bad non-200 answers from gateway $i of $count"
        total=$(awk -v t="$total" -v n="$n" -v s="$s" 'BEGIN { printf "%.0f", t + n / s }')
    done
    for pid in "${pids[@]}"; do stop_pid "$pid"; done
    remove_cgroups
    CGROUPS=()
    SCALED=$total
}

measure_scale() {
    local one=() two=()
    for round in $(seq "$BENCH_ROUNDS"); do
        scale_run 1
        one+=("$SCALED")
        scale_run 2
        two+=("$SCALED")
        log "scale round $round: one gateway ${one[-1]} req/s, two gateways ${two[-1]} req/s"
    done
    ONE=$(printf '%s\n' "${one[@]}" | median)
    TWO=$(printf '%s\n' "${two[@]}" | median)
}

# One gateway under load while Redis is paused for BENCH_PAUSE_MS of the run; sets OUTAGE.
OUTAGE=""
measure_outage() {
    start_gateway redis-outage gateway-outage
    local pid=$GW_PID port=$GW_PORT load
    oha_run "http://127.0.0.1:$port/fixed" "$BENCH_WARMUP" "$WORK/warm-outage.json" >/dev/null
    taskset -c "$BENCH_LOAD_CPU" "$OHA" --no-tui --output-format json -z "$BENCH_OUTAGE_DURATION" \
        -c "$BENCH_CONNECTIONS" "http://127.0.0.1:$port/fixed" >"$BENCH_RESULTS/outage.json" \
        2>"$WORK/outage.stderr" &
    load=$!
    sleep 0.2
    redis-cli -p "$REDIS_PORT" CLIENT PAUSE "$BENCH_PAUSE_MS" ALL >/dev/null
    wait "$load" || die "oha failed in the outage run"
    OUTAGE=$(jq -r '"\(.summary.requestsPerSec | floor) | \(.latencyPercentiles.p50 * 1000 | . * 1000 | round / 1000) | \(.latencyPercentiles.p99 * 1000 | . * 1000 | round / 1000) | \(.summary.slowest * 1000 | . * 1000 | round / 1000) | \(.statusCodeDistribution | to_entries | map("\(.key): \(.value)") | join(", "))"' \
        "$BENCH_RESULTS/outage.json")
    log "outage: $OUTAGE"
    stop_pid "$pid"
}

report() {
    {
        [[ " $BENCH_SCENARIOS " == *" cost "* ]] && report_cost
        [[ " $BENCH_SCENARIOS " == *" scale "* ]] && report_scale
        [[ " $BENCH_SCENARIOS " == *" outage "* ]] && report_outage
        true
    } | tee "$BENCH_RESULTS/summary.md"
}

report_cost() {
    {
        echo
        echo "## Cost of Redis per rate-limited request (medians of $BENCH_ROUNDS rounds, $BENCH_DURATION each, oha -c $BENCH_CONNECTIONS, 1 worker thread)"
        echo
        echo "| algorithm | state | req/s | p50 ms | p99 ms | gateway CPU µs/req | Redis CPU µs/req |"
        echo "|---|---|--:|--:|--:|--:|--:|"
        for algorithm in fixed gcra; do
            for state in local redis; do
                local l=$algorithm-$state
                echo "| $algorithm | $state | $(cost_median "$l" 2) | $(cost_median "$l" 3) | $(cost_median "$l" 4) | $(cost_median "$l" 5) | $(cost_median "$l" 6) |"
            done
        done
        echo
        echo "| algorithm | added gateway CPU µs/req (Redis − local) | added p99 ms |"
        echo "|---|--:|--:|"
        for algorithm in fixed gcra; do
            echo "| $algorithm | $(awk -v a="$(cost_median "$algorithm-redis" 5)" -v b="$(cost_median "$algorithm-local" 5)" 'BEGIN { printf "%.1f", a - b }') | $(awk -v a="$(cost_median "$algorithm-redis" 4)" -v b="$(cost_median "$algorithm-local" 4)" 'BEGIN { printf "%.3f", a - b }') |"
        done
    }
}

report_scale() {
    {
        echo
        echo "## Two gateways against one Redis (each gateway held to $BENCH_GATEWAY_QUOTA CPU, fixed window, medians of $BENCH_ROUNDS rounds)"
        echo
        echo "| gateways | req/s together | vs one |"
        echo "|--:|--:|--:|"
        echo "| 1 | $ONE | 1.00 |"
        echo "| 2 | $TWO | $(ratio "$TWO" "$ONE") |"
    }
}

report_outage() {
    {
        echo
        echo "## Redis paused for ${BENCH_PAUSE_MS} ms of a ${BENCH_OUTAGE_DURATION} run (timeout 50 ms, on-unavailable = local, breaker defaults)"
        echo
        echo "| req/s | p50 ms | p99 ms | slowest ms | answers |"
        echo "|--:|--:|--:|--:|---|"
        echo "| $OUTAGE |"
    }
}

main() {
    [[ ${1:-} == -h || ${1:-} == --help ]] && { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; exit 0; }
    prepare
    start_redis
    local scenario
    for scenario in $BENCH_SCENARIOS; do
        case $scenario in
            cost) measure_cost ;;
            scale) measure_scale ;;
            outage) measure_outage ;;
            *) die "unknown scenario $scenario (cost, scale, outage)" ;;
        esac
    done
    report
}

main "$@"
