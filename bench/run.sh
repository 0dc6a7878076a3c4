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
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

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

OHA=$BENCH_CACHE/bin/oha

NGINX_PORT="" NGINX_PID=""   # (upstream and gateway: see lib.sh)
RATE=""                 # the open-loop rate in use (fixed, or picked after round 1's closed loops)

# ----------------------------------------------------------------------------- helpers

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

# ----------------------------------------------------------------------------- setup

install_tools() {
    local missing=()
    command -v wrk >/dev/null || missing+=(wrk)
    command -v nginx >/dev/null || missing+=(nginx-light)
    for tool in curl jq taskset; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    install_packages "${missing[@]}"
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
    cargo_build "${packages[@]}"
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
# transform: five instances); /r1/ and /r3/ are the same with instance reuse. All proxy to
# the same upstream as passthrough.
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

[[routes]]
name = "one-stage-reuse"
prefix = "/r1"
strip-prefix = "/r1"
upstream = "fast"
stages = [{ plugin = "transform", config = { request = { headers = { set = { "x-stage" = "1" } } } }, limits = { reuse = { max-calls = 1000 } } }]

[[routes]]
name = "three-stages-reuse"
prefix = "/r3"
strip-prefix = "/r3"
upstream = "fast"
stages = [
  { plugin = "rate-limit", config = { key = "route", limits = [{ requests = 1000000000, window = "1s" }] }, limits = { reuse = { max-calls = 1000 } } },
  { plugin = "transform", config = { request = { headers = { set = { "x-stage" = "2" } } } }, limits = { reuse = { max-calls = 1000 } } },
  { plugin = "transform", config = { response = { headers = { set = { "x-stage" = "3" } } } }, limits = { reuse = { max-calls = 1000 } } },
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

# Passthrough gateways that differ from `gateway` (metrics off: no admin listener) only in what
# they observe: gateway-metrics serves /metrics; gateway-traced also records every request as a
# trace (sampling-ratio 1.0), exported over OTLP to the demo upstream (which answers 200).
declare -A VARIANT_PORT=() VARIANT_PID=()
variant_toml() {
    case $1 in
        gateway-metrics) printf '[admin]\nlisten = "127.0.0.1:%s"\n' "$(free_port)" ;;
        gateway-traced)
            printf '[admin]\nlisten = "127.0.0.1:%s"\n\n[tracing]\nendpoint = "http://127.0.0.1:%s/v1/traces"\nsampling-ratio = 1.0\n' \
                "$(free_port)" "$UPSTREAM_PORT"
            ;;
        *) die "unknown gateway variant $1" ;;
    esac
}

start_variant() {
    local name=$1 saved_port=$GATEWAY_PORT saved_pid=$GATEWAY_PID
    GATEWAY_PORT=$(free_port)
    local dir=$WORK/$name
    mkdir -p "$dir/plugins"
    { gateway_config; printf '\n'; variant_toml "$name"; } >"$dir/gateway.toml"
    launch_gateway "$dir/gateway.toml" "http://127.0.0.1:$GATEWAY_PORT/"
    VARIANT_PORT[$name]=$GATEWAY_PORT
    VARIANT_PID[$name]=$GATEWAY_PID
    GATEWAY_PORT=$saved_port GATEWAY_PID=$saved_pid
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
    launch_gateway "$dir/gateway.toml" "http://127.0.0.1:$GATEWAY_PORT/"
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
        gateway-1stage-reuse) echo "http://127.0.0.1:$GATEWAY_PORT/r1/" ;;
        gateway-3stage-reuse) echo "http://127.0.0.1:$GATEWAY_PORT/r3/" ;;
        gateway-metrics | gateway-traced) echo "http://127.0.0.1:${VARIANT_PORT[$1]}/" ;;
        *) die "unknown target $1" ;;
    esac
}

# The PIDs whose CPU time is the target's own cost (none for the direct path).
target_pids() {
    case $1 in
        direct) ;;
        nginx) echo "$NGINX_PID" "$(pgrep -d ' ' -P "$NGINX_PID")" ;;
        gateway | gateway-*stage*) echo "$GATEWAY_PID" ;;
        gateway-metrics | gateway-traced) echo "${VARIANT_PID[$1]}" ;;
        *) die "unknown target $1" ;;
    esac
}

# ----------------------------------------------------------------------------- load

# Writes the wrk script that prints one machine-readable line when the run is done.
write_wrk_script() {
    wrk_report_lua >"$WORK/report.lua"
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

# Runs one measurement and appends a row to results.tsv. Besides the load generator's numbers it
# records CPU ticks of the upstream and the proxy, and how much of the server CPU went to other
# processes ("foreign") or to the hypervisor ("steal") meanwhile: both should stay near 0.
run_one() {
    local round=$1 scenario=$2 target=$3
    local url raw label=$scenario pids=() load=()
    url=$(target_url "$target")
    read -r -a pids <<<"$(target_pids "$target")"
    [[ $scenario == open ]] && label=open@$RATE
    raw=$BENCH_RESULTS/raw/r$round-$label-$target.txt

    case $scenario in
        c*) load=(load_closed "$url" "${scenario#c}" "$raw") ;;
        open) load=(load_open "$url" "$RATE" "$raw") ;;
        *) die "unknown scenario $scenario" ;;
    esac
    measure "${pids[@]}" -- "${load[@]}"
    printf '%s\t%s\t%s\t%s\n' "$round" "$label" "$target" "$MEASURED" >>"$BENCH_RESULTS/results.tsv"

    local row
    row=$(tail -n1 "$BENCH_RESULTS/results.tsv")
    log "$(awk -F'\t' '{ printf "round %s %-10s %-8s %8s req/s  p50 %8s ms  p99 %8s ms  errors %s  cpu %s µs/req  foreign %s%%  steal %s%%", $1, $2, $3, $5, $6, $7, $8, $9, $11, $12 }' <<<"$row")"
    warn_if_noisy "$(cut -f11 <<<"$row")" "$(cut -f12 <<<"$row")"
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
        noise_summary "$tsv" 11 12
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
        environment_common
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
    check_cpus

    install_tools
    [[ $BENCH_SKIP_BUILD == 1 ]] || build
    [[ -x $DEMO_BIN ]] || die "$DEMO_BIN is missing"

    mkdir -p "$BENCH_RESULTS/raw"
    make_work_dir wasmgate-bench
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
            gateway | gateway-[13]stage | gateway-[13]stage-reuse) [[ -n ${GATEWAY_PID:-} ]] || start_gateway ;;
            gateway-metrics | gateway-traced) start_variant "$target" ;;
            *) die "unknown target $target (known: direct nginx gateway gateway-1stage gateway-3stage gateway-1stage-reuse gateway-3stage-reuse gateway-metrics gateway-traced)" ;;
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
