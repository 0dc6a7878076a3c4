#!/usr/bin/env bash
# bench/cache.sh — what a cache hit costs: one JSON answer of about 20 KB (BENCH_BODY_BYTES,
# `Cache-Control: max-age=3600`) through the gateway with `cache = true` and through nginx
# with `proxy_cache`, both answering from their cache, next to both proxying without a
# cache, all in the same run.
#
# Starts, all on 127.0.0.1 with free ports:
#   upstream  nginx serving the JSON file with Cache-Control: max-age=3600 (one process),
#             server CPU
#   nginx     the peer reverse proxy, 1 worker, upstream keepalive, server CPU: /plain/ (no
#             cache) and /cached/ (proxy_cache, its files under the work dir: the page
#             cache keeps them in memory)
#   gateway   target/release/wasmgate, WASMGATE_WORKER_THREADS=1, server CPU: /plain/ and
#             /cached/ (cache = true)
# checks every target once with curl (the body is the file; the cached targets answer a
# second request from their cache: `Cache-Status: wasmgate; hit` / `HIT`), then drives each
# target in turn from the load CPU with wrk (closed loop, BENCH_CONNECTIONS connections) for
# BENCH_DURATION, over BENCH_ROUNDS rounds (the order reversed every other round).
#
# For each run it reads the proxy's CPU time from /proc (utime+stime; nginx: master + workers)
# and divides it by the requests served: CPU µs per request, and the upstream's (about 0 for
# the cached targets: every request is a hit). The table shows medians over rounds and the
# gateway's hit cost and p99 over nginx's. Raw output is kept under
# bench/results/cache-<timestamp>/.
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
    BENCH_DURATION=${BENCH_DURATION:-2s}
    BENCH_ROUNDS=${BENCH_ROUNDS:-1}
    BENCH_WARMUP=${BENCH_WARMUP:-1s}
fi
BENCH_DURATION=${BENCH_DURATION:-5s}            # length of each measured run
BENCH_ROUNDS=${BENCH_ROUNDS:-3}                 # rounds over all targets
BENCH_WARMUP=${BENCH_WARMUP:-1s}                # per target, once, before round 1
BENCH_CONNECTIONS=${BENCH_CONNECTIONS:-16}      # wrk connections (closed loop)
BENCH_TARGETS=${BENCH_TARGETS:-nginx-plain nginx-cached gateway-plain gateway-cached}
BENCH_BODY_BYTES=${BENCH_BODY_BYTES:-20000}     # size of the JSON answer (about)
BENCH_LOAD_CPU=${BENCH_LOAD_CPU:-0}             # CPU for the load generator
BENCH_SERVER_CPU=${BENCH_SERVER_CPU:-1}         # CPU for the upstream and the proxies
BENCH_SKIP_INSTALL=${BENCH_SKIP_INSTALL:-0}     # 1: use wrk/nginx/curl already on PATH
BENCH_SKIP_BUILD=${BENCH_SKIP_BUILD:-0}         # 1: use the existing target/release/wasmgate
BENCH_RESULTS=${BENCH_RESULTS:-$ROOT/bench/results/cache-$(date +%Y%m%d-%H%M%S)}
BENCH_GATEWAY_LOG=${BENCH_GATEWAY_LOG:-warn}    # no access log, like nginx
BENCH_NOISE_LIMIT=${BENCH_NOISE_LIMIT:-5}

NGINX_PORT="" NGINX_PID=""   # the proxy nginx (upstream and gateway: see lib.sh)
BODY_FILE=""                 # the JSON answer, as the upstream serves it

# ----------------------------------------------------------------------------- helpers

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
    cat <<'EOF'

Environment (defaults in brackets):
  BENCH_QUICK=1            smoke test: 2s runs, 1 round, 1s warm-up
  BENCH_DURATION [5s]      BENCH_ROUNDS [3]     BENCH_WARMUP [1s]     BENCH_CONNECTIONS [16]
  BENCH_TARGETS ["nginx-plain nginx-cached gateway-plain gateway-cached"]
  BENCH_BODY_BYTES [20000]
  BENCH_LOAD_CPU [0]       BENCH_SERVER_CPU [1]
  BENCH_SKIP_INSTALL [0]   BENCH_SKIP_BUILD [0]
  BENCH_RESULTS [bench/results/cache-<timestamp>]
  BENCH_GATEWAY_BIN [target/release/wasmgate]   BENCH_GATEWAY_LOG [warn]   BENCH_NOISE_LIMIT [5]
EOF
}

install_tools() {
    local missing=()
    command -v wrk >/dev/null || missing+=(wrk)
    command -v nginx >/dev/null || missing+=(nginx-light)
    for tool in curl taskset; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    install_packages "${missing[@]}"
}

# Writes a JSON array of API-like records (the shape tests/compress.rs uses) of at least
# BENCH_BODY_BYTES bytes to $1.
write_body() {
    awk -v want="$BENCH_BODY_BYTES" 'BEGIN {
        split("free pro team enterprise", plans, " ")
        out = "["
        for (i = 0; length(out) < want - 1; i++) {
            if (i > 0) out = out ","
            out = out sprintf("{\"id\":%d,\"name\":\"user-%d\",\"email\":\"user%d@example.com\",\"plan\":\"%s\",\"score\":%d,\"active\":%s,\"created\":\"2026-%02d-%02dT%02d:%02d:00Z\"}",
                i, i, i, plans[i % 4 + 1], (i * 7919) % 1000, (i % 3 == 0) ? "true" : "false",
                1 + i % 12, 1 + (i * 7) % 28, (i * 13) % 24, (i * 17) % 60)
        }
        printf "%s]", out
    }' >"$1"
}

# The upstream: nginx serving WORK/www/body.json, one process (its PID is UPSTREAM_PID).
start_upstream_nginx() {
    UPSTREAM_PORT=$(free_port)
    local dir=$WORK/upstream
    mkdir -p "$dir" "$WORK/www"
    BODY_FILE=$WORK/www/body.json
    write_body "$BODY_FILE"
    cat >"$dir/nginx.conf" <<EOF
# Generated by bench/cache.sh: the upstream.
daemon off;
master_process off;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_requests 1000000;
    types { application/json json; }
    server {
        listen 127.0.0.1:$UPSTREAM_PORT;
        root $WORK/www;
        add_header Cache-Control "max-age=3600";
    }
}
EOF
    start_pinned "$WORK/upstream.log" nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf"
    UPSTREAM_PID=$LAST_PID
    wait_http "http://127.0.0.1:$UPSTREAM_PORT/body.json" "$UPSTREAM_PID" "upstream (nginx, static)"
    log "upstream  pid $UPSTREAM_PID  http://127.0.0.1:$UPSTREAM_PORT/body.json  ($(wc -c <"$BODY_FILE") bytes of JSON)"
}

# The proxy nginx: /plain/ and /cached/ (proxy_cache) in front of the upstream.
start_nginx() {
    NGINX_PORT=$(free_port)
    local dir=$WORK/nginx user_line=""
    ((EUID == 0)) && user_line="user $(id -un);"
    mkdir -p "$dir/cache"
    cat >"$dir/nginx.conf" <<EOF
# Generated by bench/cache.sh: the peer proxy.
$user_line
daemon off;
master_process on;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_requests 1000000;
    proxy_cache_path $dir/cache levels=1:2 keys_zone=bench:10m max_size=256m;

    upstream body {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 128;
    }

    server {
        listen 127.0.0.1:$NGINX_PORT;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        proxy_set_header X-Request-Id \$request_id;
        location /plain/ {
            proxy_pass http://body/;
        }
        location /cached/ {
            proxy_cache bench;
            proxy_cache_revalidate on;
            add_header Cache-Status \$upstream_cache_status;
            proxy_pass http://body/;
        }
    }
}
EOF
    nginx -t -q -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" \
        || die "nginx rejected $dir/nginx.conf"
    start_pinned "$WORK/nginx.log" nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf"
    NGINX_PID=$LAST_PID
    wait_http "http://127.0.0.1:$NGINX_PORT/plain/body.json" "$NGINX_PID" nginx
    log "nginx     pid $NGINX_PID  http://127.0.0.1:$NGINX_PORT/  ($(nginx -v 2>&1 | sed 's/.*: //'))"
}

start_gateway() {
    [[ -x $GATEWAY_BIN ]] || die "$GATEWAY_BIN is missing; build it or leave the gateway targets out"
    GATEWAY_PORT=$(free_port)
    local dir=$WORK/gateway
    mkdir -p "$dir/plugins"
    cat >"$dir/gateway.toml" <<EOF
# Generated by bench/cache.sh.
[server]
listen = ["127.0.0.1:$GATEWAY_PORT"]

[plugins]
dir = "plugins"
watch = false

[upstreams.body]
targets = ["127.0.0.1:$UPSTREAM_PORT"]

[[routes]]
name = "plain"
prefix = "/plain"
strip-prefix = "/plain"
upstream = "body"

[[routes]]
name = "cached"
prefix = "/cached"
strip-prefix = "/cached"
upstream = "body"
cache = true
EOF
    launch_gateway "$dir/gateway.toml" "http://127.0.0.1:$GATEWAY_PORT/plain/body.json"
}

# ----------------------------------------------------------------------------- targets

target_url() {
    case $1 in
        nginx-plain) echo "http://127.0.0.1:$NGINX_PORT/plain/body.json" ;;
        nginx-cached) echo "http://127.0.0.1:$NGINX_PORT/cached/body.json" ;;
        gateway-plain) echo "http://127.0.0.1:$GATEWAY_PORT/plain/body.json" ;;
        gateway-cached) echo "http://127.0.0.1:$GATEWAY_PORT/cached/body.json" ;;
        *) die "unknown target $1" ;;
    esac
}

target_pids() {
    case $1 in
        nginx-*) echo "$NGINX_PID" "$(pgrep -d ' ' -P "$NGINX_PID")" ;;
        gateway-*) echo "$GATEWAY_PID" ;;
        *) die "unknown target $1" ;;
    esac
}

# What a second request to a cached target must show: a cache hit.
target_hit() {
    case $1 in
        nginx-cached) echo HIT ;;
        gateway-cached) echo "wasmgate; hit" ;;
        *) echo "" ;;
    esac
}

# Fetches every target twice: the body is the file, and a cached target's second answer is a hit.
check_targets() {
    local target url hit got body
    for target in $BENCH_TARGETS; do
        url=$(target_url "$target")
        hit=$(target_hit "$target")
        body=$WORK/check-$target.json
        curl -fsS -o "$body" "$url" || die "$target: $url failed"
        cmp -s "$body" "$BODY_FILE" || die "$target: the body differs from the upstream's"
        got=$(curl -fsS -o "$body" -w '%header{cache-status}' "$url") || die "$target: $url failed"
        cmp -s "$body" "$BODY_FILE" || die "$target: the cached body differs from the upstream's"
        [[ -z $hit || $got == "$hit"* ]] || die "$target: Cache-Status '$got', expected '$hit…'"
        log "$target: ${got:-no cache}"
    done
}

write_wrk_script() {
    wrk_report_lua >"$WORK/report.lua"
}

warm_up() {
    local target
    for target in $BENCH_TARGETS; do
        taskset -c "$BENCH_LOAD_CPU" wrk -t1 -c"$BENCH_CONNECTIONS" -d"$BENCH_WARMUP" \
            -s "$WORK/report.lua" "$(target_url "$target")" >/dev/null 2>&1 \
            || die "warm-up against $target failed"
    done
}

run_one() {
    local round=$1 target=$2 url raw pids=()
    url=$(target_url "$target")
    read -r -a pids <<<"$(target_pids "$target")"
    raw=$BENCH_RESULTS/raw/r$round-$target.txt
    measure "${pids[@]}" -- load_closed "$url" "$BENCH_CONNECTIONS" "$raw"
    printf '%s\t%s\t%s\n' "$round" "$target" "$MEASURED" >>"$BENCH_RESULTS/results.tsv"
    local row
    row=$(tail -n1 "$BENCH_RESULTS/results.tsv")
    log "$(awk -F'\t' '{ printf "round %s %-14s %8s req/s  p99 %8s ms  errors %s  cpu %s µs/req  foreign %s%%  steal %s%%", $1, $2, $4, $6, $7, $8, $10, $11 }' <<<"$row")"
    warn_if_noisy "$(cut -f10 <<<"$row")" "$(cut -f11 <<<"$row")"
}

# ----------------------------------------------------------------------------- report

# Medians over rounds per target, and the gateway's cached target over nginx's.
report() {
    local tsv=$BENCH_RESULTS/results.tsv target
    declare -A cpu=() p99=()
    {
        printf '\nwasmgate cache bench — %s JSON bytes (max-age=3600), rounds: %s, %s per run, %s connections; medians over rounds\n\n' \
            "$(wc -c <"$BODY_FILE")" "$BENCH_ROUNDS" "$BENCH_DURATION" "$BENCH_CONNECTIONS"
        printf '%-15s  %10s  %9s  %7s  %12s  %15s\n' target req/s "p99 ms" errors "CPU µs/req" "upstream µs/req"
        for target in $BENCH_TARGETS; do
            local rps errors up
            rps=$(awk -F'\t' -v t="$target" '$2 == t { print $4 }' "$tsv" | median)
            p99[$target]=$(awk -F'\t' -v t="$target" '$2 == t { print $6 }' "$tsv" | median)
            cpu[$target]=$(awk -F'\t' -v t="$target" '$2 == t && $8 != "-" { print $8 }' "$tsv" | median)
            up=$(awk -F'\t' -v t="$target" '$2 == t { print $9 }' "$tsv" | median)
            errors=$(awk -F'\t' -v t="$target" '$2 == t { e += $7 } END { print e + 0 }' "$tsv")
            printf '%-15s  %10s  %9s  %7s  %12s  %15s\n' "$target" "$rps" "${p99[$target]}" "$errors" "${cpu[$target]}" "$up"
        done
        noise_summary "$tsv" 10 11
        if [[ -n ${cpu[gateway-cached]:-} && -n ${cpu[nginx-cached]:-} ]]; then
            printf '\ncache hit, gateway/nginx: CPU µs/req %s, p99 %s\n' \
                "$(ratio "${cpu[gateway-cached]}" "${cpu[nginx-cached]}")" \
                "$(ratio "${p99[gateway-cached]}" "${p99[nginx-cached]}")"
        fi
        printf '\nraw output: %s\n' "$BENCH_RESULTS"
    } | tee "$BENCH_RESULTS/summary.txt"
}

write_environment() {
    {
        environment_common
        echo "nginx: $(nginx -v 2>&1)"
        [[ -x $GATEWAY_BIN ]] && echo "wasmgate: $("$GATEWAY_BIN" --version 2>&1)"
        echo "settings: duration=$BENCH_DURATION rounds=$BENCH_ROUNDS targets='$BENCH_TARGETS'" \
            "connections=$BENCH_CONNECTIONS body_bytes=$BENCH_BODY_BYTES" \
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
    if [[ $BENCH_SKIP_BUILD != 1 && " $BENCH_TARGETS " == *" gateway-"* ]]; then
        cargo_build -p wasmgate
    fi

    mkdir -p "$BENCH_RESULTS/raw"
    make_work_dir wasmgate-bench-cache
    write_environment
    write_wrk_script
    printf 'round\ttarget\trequests\treq_per_s\tp50_ms\tp99_ms\terrors\tproxy_cpu_us_per_req\tupstream_cpu_us_per_req\tforeign_pct\tsteal_pct\n' \
        >"$BENCH_RESULTS/results.tsv"

    start_upstream_nginx
    if [[ " $BENCH_TARGETS " == *" nginx-"* ]]; then start_nginx; fi
    if [[ " $BENCH_TARGETS " == *" gateway-"* ]]; then start_gateway; fi
    mkdir -p "$BENCH_RESULTS/config"
    cp "$WORK"/nginx/nginx.conf "$WORK"/gateway/gateway.toml "$BENCH_RESULTS/config/" 2>/dev/null || true
    cp "$BODY_FILE" "$BENCH_RESULTS/config/"

    check_targets
    log "warming up"
    warm_up

    local round target targets
    for round in $(seq "$BENCH_ROUNDS"); do
        targets=$BENCH_TARGETS
        ((round % 2 == 0)) && targets=$(tr ' ' '\n' <<<"$BENCH_TARGETS" | tac | tr '\n' ' ')
        for target in $targets; do
            run_one "$round" "$target"
        done
    done

    report
}

main "$@"
