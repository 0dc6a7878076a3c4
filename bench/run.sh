#!/usr/bin/env bash
# bench/run.sh — wasmgate's passthrough proxy side by side with nginx and the direct path.
#
# Starts, all on 127.0.0.1 with free ports:
#   upstream  the `fast` demo upstream (wasmgate-demo --fast), pinned to the server CPU
#   nginx     a peer reverse proxy: 1 worker, upstream keepalive, access_log off, server CPU
#   gateway   target/release/wasmgate with WASMGATE_WORKER_THREADS=1, server CPU
# and drives each target in alternating rounds from the load CPU with
#   wrk  closed loop at each of BENCH_CONNECTIONS connections, and
#   oha  open loop at a fixed rate (latency at a rate all targets sustain).
# For each run it also reads the proxy's own CPU time from /proc (utime+stime; nginx: master +
# workers) and divides it by the requests served: CPU µs per request.
#
# Prints a table of medians over rounds and the ratios gateway/nginx; raw output is kept under
# bench/results/<timestamp>/. See bench/README.md for the knobs (BENCH_* environment variables).
#
# Adding a scenario later: a target is a name mapped to a URL and to the PIDs whose CPU it costs
# (target_url, target_pids). A gateway target with WASM stages is a route added to the gateway
# config through gateway_routes (extra TOML ahead of the catch-all route) plus one line in each of
# those two functions; then list it in BENCH_TARGETS.
set -euo pipefail

# ----------------------------------------------------------------------------- settings

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly ROOT
# nginx lives in /usr/sbin, which is not on every user's PATH.
PATH=$PATH:/usr/sbin:/sbin

BENCH_QUICK=${BENCH_QUICK:-0}
if [[ $BENCH_QUICK == 1 ]]; then
    BENCH_DURATION=${BENCH_DURATION:-3s}
    BENCH_ROUNDS=${BENCH_ROUNDS:-1}
    BENCH_WARMUP=${BENCH_WARMUP:-1s}
fi
BENCH_DURATION=${BENCH_DURATION:-10s}           # length of each measured run
BENCH_ROUNDS=${BENCH_ROUNDS:-3}                 # alternating rounds over all targets
BENCH_WARMUP=${BENCH_WARMUP:-2s}                # per target, once, before round 1
BENCH_TARGETS=${BENCH_TARGETS:-direct nginx gateway}
BENCH_CONNECTIONS=${BENCH_CONNECTIONS:-32 64}   # closed-loop (wrk) connection counts
BENCH_RATE=${BENCH_RATE:-auto}                  # open-loop req/s, or auto (see pick_rate)
BENCH_RATE_FRACTION=${BENCH_RATE_FRACTION:-0.5} # auto rate = this × slowest closed-loop req/s
BENCH_OPEN_CONNECTIONS=${BENCH_OPEN_CONNECTIONS:-32}
BENCH_LOAD_CPU=${BENCH_LOAD_CPU:-0}             # CPU for the load generator
BENCH_SERVER_CPU=${BENCH_SERVER_CPU:-1}         # CPU for the upstream and the proxies
BENCH_SKIP_INSTALL=${BENCH_SKIP_INSTALL:-0}     # 1: use wrk/nginx/oha already on PATH or cached
BENCH_SKIP_BUILD=${BENCH_SKIP_BUILD:-0}         # 1: use the existing target/release binaries
BENCH_CACHE=${BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wasmgate-bench}
BENCH_RESULTS=${BENCH_RESULTS:-$ROOT/bench/results/$(date +%Y%m%d-%H%M%S)}
# The gateway logs each request at INFO on target wasmgate::access; nginx runs with access_log off.
BENCH_GATEWAY_LOG=${BENCH_GATEWAY_LOG:-warn}
# Warn when other processes or the hypervisor took more than this % of the server CPU in a run.
BENCH_NOISE_LIMIT=${BENCH_NOISE_LIMIT:-5}

GATEWAY_BIN=${BENCH_GATEWAY_BIN:-$ROOT/target/release/wasmgate}
DEMO_BIN=$ROOT/target/release/wasmgate-demo
OHA=$BENCH_CACHE/bin/oha

WORK=""                 # temp dir for configs, pids, logs; removed on exit
STARTED_PIDS=()         # every process we started, stopped by cleanup
UPSTREAM_PORT="" NGINX_PORT="" GATEWAY_PORT=""
UPSTREAM_PID="" NGINX_PID="" GATEWAY_PID=""
CLK_TCK=$(getconf CLK_TCK)
RATE=""                 # the open-loop rate in use (fixed, or picked after round 1's closed loops)

# ----------------------------------------------------------------------------- helpers

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
    cat <<'EOF'

Environment (defaults in brackets):
  BENCH_QUICK=1            smoke test: 3s runs, 1 round, 1s warm-up
  BENCH_DURATION [10s]     BENCH_ROUNDS [3]     BENCH_WARMUP [2s]
  BENCH_TARGETS ["direct nginx gateway"]
  BENCH_CONNECTIONS ["32 64"]   BENCH_OPEN_CONNECTIONS [32]
  BENCH_RATE [auto]        BENCH_RATE_FRACTION [0.5]
  BENCH_LOAD_CPU [0]       BENCH_SERVER_CPU [1]
  BENCH_SKIP_INSTALL [0]   BENCH_SKIP_BUILD [0]
  BENCH_CACHE [~/.cache/wasmgate-bench]   BENCH_RESULTS [bench/results/<timestamp>]
  BENCH_GATEWAY_BIN [target/release/wasmgate]   BENCH_GATEWAY_LOG [warn]   BENCH_NOISE_LIMIT [5]
EOF
}

# Converts a duration like 10s, 500ms or 2m to whole seconds (at least 1), for timeouts.
seconds_of() {
    local d=$1
    case $d in
        *ms) echo $(((${d%ms} + 999) / 1000)) ;;
        *s) echo "${d%s}" ;;
        *m) echo $((${d%m} * 60)) ;;
        *) echo "$d" ;;
    esac
}

# Prints the median of the numbers on stdin ("-" when there are none).
median() {
    sort -g | awk '{ v[NR] = $1 }
        END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2];
              else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# Prints a / b with 2 decimals, or "-" if either is missing or b is zero.
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-";
        else printf "%.2f\n", a / b }'
}

# Prints a TCP port on 127.0.0.1 that nothing listens on and we have not handed out yet.
declare -A PORTS_TAKEN=()
free_port() {
    local port
    for _ in $(seq 200); do
        port=$((20000 + RANDOM % 40000))
        [[ -n ${PORTS_TAKEN[$port]:-} ]] && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            PORTS_TAKEN[$port]=1
            echo "$port"
            return
        fi
    done
    die "no free port found on 127.0.0.1"
}

# Waits until URL answers 2xx, failing early if PID has exited.
wait_http() {
    local url=$1 pid=$2 what=$3
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || die "$what exited during start-up (logs in $WORK)"
        curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null && return
        sleep 0.1
    done
    die "$what did not answer $url within 10s (logs in $WORK)"
}

# Starts a command in the background on the server CPU; records its PID in STARTED_PIDS and LAST_PID.
LAST_PID=""
start_pinned() {
    local logfile=$1
    shift
    taskset -c "$BENCH_SERVER_CPU" "$@" >"$logfile" 2>&1 &
    LAST_PID=$!
    STARTED_PIDS+=("$LAST_PID")
}

# Stops every process we started: SIGTERM, up to 5s grace, then SIGKILL. Keeps logs in results.
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    local pid
    for pid in "${STARTED_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for _ in $(seq 50); do
        local alive=0
        for pid in "${STARTED_PIDS[@]}"; do
            kill -0 "$pid" 2>/dev/null && alive=1
        done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "${STARTED_PIDS[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
    done
    if [[ -n $WORK && -d $WORK ]]; then
        mkdir -p "$BENCH_RESULTS/logs"
        cp "$WORK"/*.log "$BENCH_RESULTS/logs/" 2>/dev/null || true
        cp "$WORK/nginx/error.log" "$BENCH_RESULTS/logs/nginx-error.log" 2>/dev/null || true
        rm -rf "$WORK"
    fi
    exit "$status"
}

# Sum of utime+stime, in clock ticks, over the given PIDs (fields 14 and 15 of /proc/PID/stat).
cpu_ticks() {
    local total=0 pid stat fields
    for pid in "$@"; do
        stat=$(<"/proc/$pid/stat") || die "process $pid is gone"
        # Field 2 (comm) may contain spaces; the fields after its closing ')' start at field 3.
        read -r -a fields <<<"${stat##*) }"
        total=$((total + fields[11] + fields[12]))
    done
    echo "$total"
}

# ----------------------------------------------------------------------------- setup

# apt_install [sudo] PACKAGE...: quiet, non-interactive apt-get install.
apt_install() {
    local sudo=()
    [[ $1 == sudo ]] && { sudo=(sudo); shift; }
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

install_tools() {
    local missing=()
    command -v wrk >/dev/null || missing+=(wrk)
    command -v nginx >/dev/null || missing+=(nginx-light)
    for tool in curl jq taskset; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    if ((${#missing[@]})); then
        [[ $BENCH_SKIP_INSTALL == 1 ]] && die "missing tools: ${missing[*]}"
        local sudo=()
        ((EUID == 0)) || sudo=(sudo)
        # taskset lives in util-linux.
        missing=("${missing[@]/taskset/util-linux}")
        log "installing ${missing[*]} with apt-get"
        "${sudo[@]}" apt-get update -qq
        # nginx-light is enough (and what Debian/Ubuntu call the small build); else plain nginx.
        apt_install "${sudo[@]}" "${missing[@]}" \
            || apt_install "${sudo[@]}" "${missing[@]/nginx-light/nginx}" \
            || die "apt-get install ${missing[*]} failed"
    fi
    if [[ ! -x $OHA ]] && command -v oha >/dev/null; then
        OHA=$(command -v oha)
    fi
    if [[ ! -x $OHA ]]; then
        [[ $BENCH_SKIP_INSTALL == 1 ]] && die "oha not found at $OHA or on PATH"
        log "building oha (open-loop load generator) into $BENCH_CACHE; this happens once"
        cargo install --locked --quiet --root "$BENCH_CACHE" oha
    fi
}

build() {
    local packages=(-p wasmgate-demo)
    [[ " $BENCH_TARGETS " == *" gateway"* ]] && packages+=(-p wasmgate)
    log "cargo build --release ${packages[*]}"
    (cd "$ROOT" && cargo build --release --quiet "${packages[@]}")
}

# The gateway config: one upstream, one catch-all passthrough route, and $1 (extra TOML: more
# upstreams or [[routes]], placed ahead of the catch-all). Plugins come from $2 (default: an
# empty directory next to the config).
gateway_config() {
    local extra=${1:-} plugins=${2:-plugins}
    cat <<EOF
# Generated by bench/run.sh.
[server]
listen = ["127.0.0.1:$GATEWAY_PORT"]

[plugins]
dir = "$plugins"

[upstreams.fast]
targets = ["127.0.0.1:$UPSTREAM_PORT"]
$extra
[[routes]]
name = "bench"
prefix = "/"
upstream = "fast"
EOF
}

# Extra gateway routes for the stage scenarios: /s1/ runs one WASM stage (a transform: two
# fresh instances, on-request and on-response), /s3/ runs three (rate-limit, transform,
# transform: five instances). Both proxy to the same upstream as passthrough.
gateway_routes() {
    cat <<'EOF2'
[[routes]]
name = "one-stage"
prefix = "/s1"
strip-prefix = "/s1"
upstream = "fast"
stages = [{ plugin = "transform", config = { request = { headers = { set = { "x-stage" = "1" } } } } }]

[[routes]]
name = "three-stages"
prefix = "/s3"
strip-prefix = "/s3"
upstream = "fast"
stages = [
  { plugin = "rate-limit", config = { key = "route", limits = [{ requests = 1000000000, window = "1s" }] } },
  { plugin = "transform", config = { request = { headers = { set = { "x-stage" = "2" } } } } },
  { plugin = "transform", config = { response = { headers = { set = { "x-stage" = "3" } } } } },
]
EOF2
}

# A reverse proxy doing what the gateway does on passthrough: keep-alive to the upstream,
# X-Forwarded-For and a request id added, no access log.
nginx_config() {
    local dir=$1 user_line=""
    ((EUID == 0)) && user_line="user $(id -un);"
    cat <<EOF
# Generated by bench/run.sh.
$user_line
daemon off;
master_process on;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;

events {
    worker_connections 4096;
}

http {
    access_log off;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_requests 1000000;

    upstream fast {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 128;
    }

    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://fast;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Request-Id \$request_id;
        }
    }
}
EOF
}

start_upstream() {
    UPSTREAM_PORT=$(free_port)
    start_pinned "$WORK/upstream.log" "$DEMO_BIN" --fast "127.0.0.1:$UPSTREAM_PORT"
    UPSTREAM_PID=$LAST_PID
    wait_http "http://127.0.0.1:$UPSTREAM_PORT/" "$UPSTREAM_PID" "upstream (wasmgate-demo --fast)"
    log "upstream  pid $UPSTREAM_PID  http://127.0.0.1:$UPSTREAM_PORT/"
}

start_nginx() {
    NGINX_PORT=$(free_port)
    local dir=$WORK/nginx
    mkdir -p "$dir"
    nginx_config "$dir" >"$dir/nginx.conf"
    nginx -t -q -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" \
        || die "nginx rejected $dir/nginx.conf"
    start_pinned "$WORK/nginx.log" nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf"
    NGINX_PID=$LAST_PID
    wait_http "http://127.0.0.1:$NGINX_PORT/" "$NGINX_PID" nginx
    log "nginx     pid $NGINX_PID  http://127.0.0.1:$NGINX_PORT/  ($(nginx -v 2>&1 | sed 's/.*: //'))"
}

start_gateway() {
    [[ -x $GATEWAY_BIN ]] || die "$GATEWAY_BIN is missing; build it or leave gateway out of BENCH_TARGETS"
    GATEWAY_PORT=$(free_port)
    local dir=$WORK/gateway
    mkdir -p "$dir/plugins"
    if [[ ! -f $ROOT/plugins/transform.wasm || ! -f $ROOT/plugins/rate-limit.wasm ]]; then
        "$ROOT/plugins/build.sh" >/dev/null
    fi
    cp "$ROOT/plugins/transform.wasm" "$ROOT/plugins/rate-limit.wasm" "$dir/plugins/"
    gateway_config "$(gateway_routes)" >"$dir/gateway.toml"
    RUST_LOG=$BENCH_GATEWAY_LOG WASMGATE_WORKER_THREADS=1 \
        start_pinned "$WORK/gateway.log" "$GATEWAY_BIN" run --config "$dir/gateway.toml"
    GATEWAY_PID=$LAST_PID
    wait_http "http://127.0.0.1:$GATEWAY_PORT/" "$GATEWAY_PID" gateway
    log "gateway   pid $GATEWAY_PID  http://127.0.0.1:$GATEWAY_PORT/  ($("$GATEWAY_BIN" --version))"
}

# ----------------------------------------------------------------------------- targets

# The URL load is sent to for a target.
target_url() {
    case $1 in
        direct) echo "http://127.0.0.1:$UPSTREAM_PORT/" ;;
        nginx) echo "http://127.0.0.1:$NGINX_PORT/" ;;
        gateway) echo "http://127.0.0.1:$GATEWAY_PORT/" ;;
        gateway-1stage) echo "http://127.0.0.1:$GATEWAY_PORT/s1/" ;;
        gateway-3stage) echo "http://127.0.0.1:$GATEWAY_PORT/s3/" ;;
        *) die "unknown target $1" ;;
    esac
}

# The PIDs whose CPU time is the target's own cost (none for the direct path).
target_pids() {
    case $1 in
        direct) ;;
        nginx) echo "$NGINX_PID" "$(pgrep -d ' ' -P "$NGINX_PID")" ;;
        gateway | gateway-1stage | gateway-3stage) echo "$GATEWAY_PID" ;;
        *) die "unknown target $1" ;;
    esac
}

# ----------------------------------------------------------------------------- load

# Writes the wrk script that prints one machine-readable line when the run is done.
write_wrk_script() {
    cat >"$WORK/report.lua" <<'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d seconds=%.6f p50_us=%d p99_us=%d errors=%d\n",
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
EOF
}

# Closed loop: wrk with $2 connections against $1. Raw output to $3; prints the RESULT line.
load_closed() {
    local url=$1 conns=$2 raw=$3
    taskset -c "$BENCH_LOAD_CPU" timeout $(($(seconds_of "$BENCH_DURATION") + 30)) \
        wrk -t1 -c"$conns" -d"$BENCH_DURATION" --latency -s "$WORK/report.lua" "$url" >"$raw" 2>&1 \
        || die "wrk failed against $url (see $raw)"
    grep '^RESULT ' "$raw" | tail -n1
}

# Open loop: oha at a fixed $2 req/s against $1, latency measured from the intended send time.
# Raw JSON to $3; prints the RESULT line.
load_open() {
    local url=$1 rate=$2 raw=$3
    taskset -c "$BENCH_LOAD_CPU" timeout $(($(seconds_of "$BENCH_DURATION") + 30)) \
        "$OHA" --no-tui --output-format json -z "$BENCH_DURATION" -q "$rate" --latency-correction -w \
        -c "$BENCH_OPEN_CONNECTIONS" "$url" >"$raw" 2>"$raw.stderr" \
        || die "oha failed against $url (see $raw.stderr)"
    [[ -s $raw.stderr ]] || rm -f "$raw.stderr"
    jq -r '
        (.statusCodeDistribution // {}) as $codes
        | ([$codes | to_entries[] | select(.key | test("^2")) | .value] | add // 0) as $ok
        | (([$codes | to_entries[] | select(.key | test("^2") | not) | .value] | add // 0)
           + ([(.errorDistribution // {}) | to_entries[] | .value] | add // 0)) as $errors
        | "RESULT requests=\($ok) seconds=\(.summary.total) p50_us=\((.latencyPercentiles.p50 // 0) * 1e6 | floor) p99_us=\((.latencyPercentiles.p99 // 0) * 1e6 | floor) errors=\($errors)"
    ' "$raw"
}

# Value of key $2 in a RESULT line $1.
field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<" $1"; }

# Prints "busy steal total" clock ticks of CPU $1 from /proc/stat: busy is user+nice+system.
cpu_stat() {
    awk -v cpu="cpu$1" '$1 == cpu { print $2 + $3 + $4, $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat
}

# Runs one measurement and appends a row to results.tsv. Besides the load generator's numbers it
# records CPU ticks of the upstream and the proxy, and how much of the server CPU went to other
# processes ("foreign") or to the hypervisor ("steal") meanwhile: both should stay near 0.
run_one() {
    local round=$1 scenario=$2 target=$3
    local url raw label=$scenario pids=() result
    url=$(target_url "$target")
    read -r -a pids <<<"$(target_pids "$target")"
    [[ $scenario == open ]] && label=open@$RATE
    raw=$BENCH_RESULTS/raw/r$round-$label-$target.txt

    local upstream_before proxy_before=0 cpu_before
    upstream_before=$(cpu_ticks "$UPSTREAM_PID")
    ((${#pids[@]})) && proxy_before=$(cpu_ticks "${pids[@]}")
    cpu_before=$(cpu_stat "$BENCH_SERVER_CPU")

    case $scenario in
        c*) result=$(load_closed "$url" "${scenario#c}" "$raw") ;;
        open) result=$(load_open "$url" "$RATE" "$raw") ;;
        *) die "unknown scenario $scenario" ;;
    esac

    local upstream_ticks proxy_ticks=- cpu_after
    cpu_after=$(cpu_stat "$BENCH_SERVER_CPU")
    upstream_ticks=$(($(cpu_ticks "$UPSTREAM_PID") - upstream_before))
    ((${#pids[@]})) && proxy_ticks=$(($(cpu_ticks "${pids[@]}") - proxy_before))

    [[ -n $(field "$result" requests) ]] || die "no result from $raw"
    awk -v OFS='\t' -v round="$round" -v sc="$label" -v t="$target" -v tck="$CLK_TCK" \
        -v n="$(field "$result" requests)" -v s="$(field "$result" seconds)" \
        -v p50="$(field "$result" p50_us)" -v p99="$(field "$result" p99_us)" \
        -v err="$(field "$result" errors)" -v pt="$proxy_ticks" -v ut="$upstream_ticks" \
        -v before="$cpu_before" -v after="$cpu_after" 'BEGIN {
            split(before, b, " "); split(after, a, " ")
            elapsed = a[3] - b[3]
            ours = ut + (pt == "-" ? 0 : pt)
            foreign = elapsed > 0 ? (a[1] - b[1] - ours) * 100 / elapsed : 0
            steal = elapsed > 0 ? (a[2] - b[2]) * 100 / elapsed : 0
            proxy = (pt == "-" || n == 0) ? "-" : sprintf("%.2f", pt / tck * 1e6 / n)
            up = n == 0 ? "-" : sprintf("%.2f", ut / tck * 1e6 / n)
            print round, sc, t, n, sprintf("%.0f", n / s), sprintf("%.3f", p50 / 1000),
                sprintf("%.3f", p99 / 1000), err, proxy, up,
                sprintf("%.1f", foreign < 0 ? 0 : foreign), sprintf("%.1f", steal)
        }' >>"$BENCH_RESULTS/results.tsv"

    local row
    row=$(tail -n1 "$BENCH_RESULTS/results.tsv")
    log "$(awk -F'\t' '{ printf "round %s %-10s %-8s %8s req/s  p50 %8s ms  p99 %8s ms  errors %s  cpu %s µs/req  foreign %s%%  steal %s%%", $1, $2, $3, $5, $6, $7, $8, $9, $11, $12 }' <<<"$row")"
    awk -F'\t' -v limit="$BENCH_NOISE_LIMIT" '$11 > limit || $12 > limit { exit 1 }' <<<"$row" \
        || log "warning: other work used the server CPU during this run; its numbers are suspect"
    if [[ $scenario == open ]]; then
        awk -F'\t' -v rate="$RATE" '$5 < 0.95 * rate { exit 1 }' <<<"$row" \
            || log "warning: $target did not sustain $RATE req/s"
    fi
}

# Picks the open-loop rate: BENCH_RATE if fixed, else BENCH_RATE_FRACTION of the closed-loop
# throughput of the slowest target (each target counted at its best connection count, so one
# disturbed run does not drag the rate down), rounded down to 100.
pick_rate() {
    if [[ $BENCH_RATE != auto ]]; then
        RATE=$BENCH_RATE
        return
    fi
    RATE=$(awk -F'\t' -v f="$BENCH_RATE_FRACTION" '
        NR > 1 && $2 ~ /^c[0-9]+$/ && $5 > best[$3] { best[$3] = $5 }
        END {
            slowest = -1
            for (t in best) if (slowest < 0 || best[t] < slowest) slowest = best[t]
            if (slowest < 0) { print 1000; exit }
            r = int(slowest * f / 100) * 100
            print (r < 100 ? 100 : r)
        }' "$BENCH_RESULTS/results.tsv")
    log "open-loop rate: $RATE req/s"
}

warm_up() {
    local target
    for target in $BENCH_TARGETS; do
        taskset -c "$BENCH_LOAD_CPU" wrk -t1 -c64 -d"$BENCH_WARMUP" "$(target_url "$target")" >/dev/null 2>&1 \
            || die "warm-up against $target failed"
    done
}

# ----------------------------------------------------------------------------- report

# Prints the table of medians over rounds and the gateway/nginx ratios.
report() {
    local tsv=$BENCH_RESULTS/results.tsv scenarios scenario target
    scenarios=$(awk -F'\t' 'NR > 1 && !seen[$2]++ { print $2 }' "$tsv")
    declare -A med=()
    {
        printf '\nwasmgate bench — rounds: %s, %s per run; medians over rounds\n' "$BENCH_ROUNDS" "$BENCH_DURATION"
        printf 'load on CPU %s, upstream and proxies on CPU %s; CPU µs/req = proxy process time / requests\n\n' \
            "$BENCH_LOAD_CPU" "$BENCH_SERVER_CPU"
        printf '%-8s  %-10s  %10s  %9s  %9s  %7s  %12s  %15s\n' \
            target scenario req/s "p50 ms" "p99 ms" errors "CPU µs/req" "upstream µs/req"
        for scenario in $scenarios; do
            for target in $BENCH_TARGETS; do
                local col key values=()
                for col in 5 6 7 9 10; do
                    key=$target/$scenario/$col
                    med[$key]=$(awk -F'\t' -v s="$scenario" -v t="$target" -v c="$col" \
                        '$2 == s && $3 == t && $c != "-" { print $c }' "$tsv" | median)
                    values+=("${med[$key]}")
                done
                local errors
                errors=$(awk -F'\t' -v s="$scenario" -v t="$target" '$2 == s && $3 == t { e += $8 } END { print e + 0 }' "$tsv")
                printf '%-8s  %-10s  %10s  %9s  %9s  %7s  %12s  %15s\n' "$target" "$scenario" \
                    "${values[0]}" "${values[1]}" "${values[2]}" "$errors" "${values[3]}" "${values[4]}"
            done
        done
        awk -F'\t' -v limit="$BENCH_NOISE_LIMIT" 'NR > 1 {
                runs++; if ($11 > f) f = $11; if ($12 > st) st = $12
                if ($11 > limit || $12 > limit) noisy++ }
            END { printf "\nserver CPU taken by other work: up to %.1f%% (other processes), %.1f%% (steal); %d of %d runs above %s%%%s\n",
                f, st, noisy, runs, limit, noisy ? " — rerun on a quiet machine" : "" }' "$tsv"
        if [[ " $BENCH_TARGETS " == *" gateway "* && " $BENCH_TARGETS " == *" nginx "* ]]; then
            printf '\nratios gateway/nginx (req/s: higher is better; p99 and CPU/req: lower is better)\n\n'
            printf '%-10s  %8s  %8s  %10s  %16s\n' scenario req/s p99 "CPU/req" "req/s vs direct"
            for scenario in $scenarios; do
                printf '%-10s  %8s  %8s  %10s  %16s\n' "$scenario" \
                    "$(ratio "${med[gateway/$scenario/5]}" "${med[nginx/$scenario/5]}")" \
                    "$(ratio "${med[gateway/$scenario/7]}" "${med[nginx/$scenario/7]}")" \
                    "$(ratio "${med[gateway/$scenario/9]}" "${med[nginx/$scenario/9]}")" \
                    "$(ratio "${med[gateway/$scenario/5]}" "${med[direct/$scenario/5]:--}")"
            done
        fi
        printf '\nraw output: %s\n' "$BENCH_RESULTS"
    } | tee "$BENCH_RESULTS/summary.txt"
}

# Records the machine and tool versions next to the results.
write_environment() {
    {
        echo "date: $(date -Is)"
        echo "git: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (dirty)')"
        echo "kernel: $(uname -sr)"
        echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
        echo "cpu: $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n1) × $(nproc)"
        echo "wrk: $(wrk -v 2>&1 | head -n1)"
        echo "oha: $("$OHA" --version)"
        echo "nginx: $(nginx -v 2>&1)"
        [[ -x $GATEWAY_BIN ]] && echo "wasmgate: $("$GATEWAY_BIN" --version 2>&1)"
        echo "settings: duration=$BENCH_DURATION rounds=$BENCH_ROUNDS targets='$BENCH_TARGETS'" \
            "connections='$BENCH_CONNECTIONS' rate=$BENCH_RATE open_connections=$BENCH_OPEN_CONNECTIONS" \
            "load_cpu=$BENCH_LOAD_CPU server_cpu=$BENCH_SERVER_CPU"
    } >"$BENCH_RESULTS/environment.txt"
}

# ----------------------------------------------------------------------------- main

main() {
    case ${1:-} in
        -h | --help) usage; exit 0 ;;
        "") ;;
        *) usage >&2; exit 2 ;;
    esac
    (($(nproc) > BENCH_LOAD_CPU && $(nproc) > BENCH_SERVER_CPU)) \
        || die "needs CPUs $BENCH_LOAD_CPU and $BENCH_SERVER_CPU (set BENCH_LOAD_CPU/BENCH_SERVER_CPU)"

    install_tools
    [[ $BENCH_SKIP_BUILD == 1 ]] || build
    [[ -x $DEMO_BIN ]] || die "$DEMO_BIN is missing"

    mkdir -p "$BENCH_RESULTS/raw"
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/wasmgate-bench.XXXXXX")
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    write_environment
    write_wrk_script
    printf 'round\tscenario\ttarget\trequests\treq_per_s\tp50_ms\tp99_ms\terrors\tproxy_cpu_us_per_req\tupstream_cpu_us_per_req\tforeign_pct\tsteal_pct\n' \
        >"$BENCH_RESULTS/results.tsv"

    start_upstream
    local target
    for target in $BENCH_TARGETS; do
        case $target in
            direct) ;;
            nginx) start_nginx ;;
            gateway | gateway-1stage | gateway-3stage) [[ -n ${GATEWAY_PID:-} ]] || start_gateway ;;
            *) die "unknown target $target (known: direct nginx gateway gateway-1stage gateway-3stage)" ;;
        esac
    done
    mkdir -p "$BENCH_RESULTS/config"
    cp "$WORK"/nginx/nginx.conf "$WORK"/gateway/gateway.toml "$BENCH_RESULTS/config/" 2>/dev/null || true

    log "warming up"
    warm_up

    local round conns
    for round in $(seq "$BENCH_ROUNDS"); do
        for conns in $BENCH_CONNECTIONS; do
            for target in $BENCH_TARGETS; do
                run_one "$round" "c$conns" "$target"
            done
        done
        [[ -n $RATE ]] || pick_rate
        for target in $BENCH_TARGETS; do
            run_one "$round" open "$target"
        done
    done

    report
}

main "$@"
