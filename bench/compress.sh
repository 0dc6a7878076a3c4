#!/usr/bin/env bash
# bench/compress.sh — what response compression costs per request: one JSON answer of about
# 20 KB (BENCH_BODY_BYTES) through the gateway uncompressed, with gzip (level 6), brotli (level
# 4) and zstd (level 3), next to nginx uncompressed and with `gzip on; gzip_comp_level 6;`, all
# in the same run.
#
# Starts, all on 127.0.0.1 with free ports:
#   upstream  nginx serving the JSON file (master_process off: one process), server CPU
#   nginx     the peer reverse proxy, as in run.sh: /plain/ (gzip off) and /gzip/ (gzip on,
#             BENCH_GZIP_LEVEL), 1 worker, upstream keepalive, server CPU
#   gateway   target/release/wasmgate, WASMGATE_WORKER_THREADS=1, server CPU, with routes
#             /plain/ (no compress), /gzip/, /br/, /zstd/ (compress with that coding only)
# checks every target once with curl (the expected Content-Encoding, and the body decodes to the
# file), then drives each target in turn from the load CPU with wrk (closed loop,
# BENCH_CONNECTIONS connections, `Accept-Encoding: br, zstd, gzip` on every request) for
# BENCH_DURATION, over BENCH_ROUNDS rounds (the order reversed every other round).
#
# For each run it reads the proxy's CPU time from /proc (utime+stime; nginx: master + workers)
# and divides it by the requests served: CPU µs per request. The compression's own cost is a
# compressing target's CPU µs/req minus that of the same proxy's /plain/ target in the same
# round; the table shows medians over rounds, the bytes of one answer, and the gateway's cost
# over nginx's for gzip at the same level. Raw output is kept under
# bench/results/compress-<timestamp>/.
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
BENCH_TARGETS=${BENCH_TARGETS:-nginx-plain nginx-gzip gateway-plain gateway-gzip gateway-br gateway-zstd}
BENCH_BODY_BYTES=${BENCH_BODY_BYTES:-20000}     # size of the JSON answer (about)
BENCH_GZIP_LEVEL=${BENCH_GZIP_LEVEL:-6}         # nginx gzip_comp_level and the gateway's gzip level
BENCH_BROTLI_LEVEL=${BENCH_BROTLI_LEVEL:-4}
BENCH_ZSTD_LEVEL=${BENCH_ZSTD_LEVEL:-3}
BENCH_ACCEPT_ENCODING=${BENCH_ACCEPT_ENCODING:-br, zstd, gzip}
BENCH_LOAD_CPU=${BENCH_LOAD_CPU:-0}             # CPU for the load generator
BENCH_SERVER_CPU=${BENCH_SERVER_CPU:-1}         # CPU for the upstream and the proxies
BENCH_SKIP_INSTALL=${BENCH_SKIP_INSTALL:-0}     # 1: use wrk/nginx/curl already on PATH
BENCH_SKIP_BUILD=${BENCH_SKIP_BUILD:-0}         # 1: use the existing target/release/wasmgate
BENCH_RESULTS=${BENCH_RESULTS:-$ROOT/bench/results/compress-$(date +%Y%m%d-%H%M%S)}
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
  BENCH_TARGETS ["nginx-plain nginx-gzip gateway-plain gateway-gzip gateway-br gateway-zstd"]
  BENCH_BODY_BYTES [20000] BENCH_GZIP_LEVEL [6] BENCH_BROTLI_LEVEL [4] BENCH_ZSTD_LEVEL [3]
  BENCH_ACCEPT_ENCODING ["br, zstd, gzip"]
  BENCH_LOAD_CPU [0]       BENCH_SERVER_CPU [1]
  BENCH_SKIP_INSTALL [0]   BENCH_SKIP_BUILD [0]
  BENCH_RESULTS [bench/results/compress-<timestamp>]
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

# The proxy nginx: /plain/ and /gzip/ in front of the upstream.
start_nginx() {
    NGINX_PORT=$(free_port)
    local dir=$WORK/nginx user_line=""
    ((EUID == 0)) && user_line="user $(id -un);"
    mkdir -p "$dir"
    cat >"$dir/nginx.conf" <<EOF
# Generated by bench/compress.sh: the peer proxy.
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
        location /gzip/ {
            gzip on;
            gzip_comp_level $BENCH_GZIP_LEVEL;
            gzip_types application/json;
            gzip_min_length 1024;
            gzip_proxied any;
            gzip_vary on;
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
# Generated by bench/compress.sh.
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
name = "gzip"
prefix = "/gzip"
strip-prefix = "/gzip"
upstream = "body"
compress = { encodings = ["gzip"], level = { gzip = $BENCH_GZIP_LEVEL } }

[[routes]]
name = "br"
prefix = "/br"
strip-prefix = "/br"
upstream = "body"
compress = { encodings = ["br"], level = { br = $BENCH_BROTLI_LEVEL } }

[[routes]]
name = "zstd"
prefix = "/zstd"
strip-prefix = "/zstd"
upstream = "body"
compress = { encodings = ["zstd"], level = { zstd = $BENCH_ZSTD_LEVEL } }
EOF
    launch_gateway "$dir/gateway.toml" "http://127.0.0.1:$GATEWAY_PORT/plain/body.json"
}

# ----------------------------------------------------------------------------- targets

target_url() {
    case $1 in
        nginx-plain) echo "http://127.0.0.1:$NGINX_PORT/plain/body.json" ;;
        nginx-gzip) echo "http://127.0.0.1:$NGINX_PORT/gzip/body.json" ;;
        gateway-plain) echo "http://127.0.0.1:$GATEWAY_PORT/plain/body.json" ;;
        gateway-gzip) echo "http://127.0.0.1:$GATEWAY_PORT/gzip/body.json" ;;
        gateway-br) echo "http://127.0.0.1:$GATEWAY_PORT/br/body.json" ;;
        gateway-zstd) echo "http://127.0.0.1:$GATEWAY_PORT/zstd/body.json" ;;
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

# The Content-Encoding a target answers with ("" for none).
target_coding() {
    case $1 in
        *-plain) echo "" ;;
        *-gzip) echo gzip ;;
        *-br) echo br ;;
        *-zstd) echo zstd ;;
    esac
}

# The uncompressed target of the same proxy.
plain_of() { echo "${1%%-*}-plain"; }

# Fetches every target once: the expected Content-Encoding, a body that decodes to the file.
# Writes "target<TAB>bytes" lines to BENCH_RESULTS/sizes.tsv.
check_targets() {
    local target url coding got raw decoded
    printf 'target\tbytes\n' >"$BENCH_RESULTS/sizes.tsv"
    for target in $BENCH_TARGETS; do
        url=$(target_url "$target")
        coding=$(target_coding "$target")
        raw=$WORK/check-$target.raw
        decoded=$WORK/check-$target.json
        got=$(curl -fsS -H "Accept-Encoding: $BENCH_ACCEPT_ENCODING" -o "$raw" \
            -w '%header{content-encoding}' "$url") || die "$target: $url failed"
        [[ $got == "$coding" ]] || die "$target: Content-Encoding '$got', expected '$coding'"
        curl -fsS --compressed -H "Accept-Encoding: $BENCH_ACCEPT_ENCODING" -o "$decoded" "$url" \
            || die "$target: $url failed (decoding)"
        cmp -s "$decoded" "$BODY_FILE" || die "$target: the decoded body differs from the upstream's"
        printf '%s\t%s\n' "$target" "$(wc -c <"$raw")" >>"$BENCH_RESULTS/sizes.tsv"
        log "$target: ${got:-identity}, $(wc -c <"$raw") bytes"
    done
}

write_wrk_script() {
    {
        printf 'wrk.headers["Accept-Encoding"] = "%s"\n' "$BENCH_ACCEPT_ENCODING"
        wrk_report_lua
    } >"$WORK/report.lua"
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

# Medians over rounds per target, and each compressing target's CPU over its proxy's plain
# target in the same round.
report() {
    local tsv=$BENCH_RESULTS/results.tsv target
    declare -A cost=()
    {
        printf '\nwasmgate compress bench — %s JSON bytes, rounds: %s, %s per run, %s connections; medians over rounds\n' \
            "$(wc -c <"$BODY_FILE")" "$BENCH_ROUNDS" "$BENCH_DURATION" "$BENCH_CONNECTIONS"
        printf 'levels: gzip %s (nginx and gateway), br %s, zstd %s; compress µs/req = CPU µs/req - the same proxy'"'"'s plain CPU µs/req (same round)\n\n' \
            "$BENCH_GZIP_LEVEL" "$BENCH_BROTLI_LEVEL" "$BENCH_ZSTD_LEVEL"
        printf '%-14s  %10s  %9s  %7s  %12s  %16s  %9s\n' target req/s "p99 ms" errors "CPU µs/req" "compress µs/req" bytes
        for target in $BENCH_TARGETS; do
            local rps p99 cpu errors bytes plain
            rps=$(awk -F'\t' -v t="$target" '$2 == t { print $4 }' "$tsv" | median)
            p99=$(awk -F'\t' -v t="$target" '$2 == t { print $6 }' "$tsv" | median)
            cpu=$(awk -F'\t' -v t="$target" '$2 == t && $8 != "-" { print $8 }' "$tsv" | median)
            errors=$(awk -F'\t' -v t="$target" '$2 == t { e += $7 } END { print e + 0 }' "$tsv")
            bytes=$(awk -F'\t' -v t="$target" '$1 == t { print $2 }' "$BENCH_RESULTS/sizes.tsv")
            plain=$(plain_of "$target")
            cost[$target]=-
            if [[ $target != "$plain" && " $BENCH_TARGETS " == *" $plain "* ]]; then
                cost[$target]=$(awk -F'\t' -v t="$target" -v p="$plain" '
                    $2 == t { mine[$1] = $8 } $2 == p { base[$1] = $8 }
                    END { for (r in mine) if (r in base) printf "%.2f\n", mine[r] - base[r] }' "$tsv" | median)
            fi
            printf '%-14s  %10s  %9s  %7s  %12s  %16s  %9s\n' "$target" "$rps" "$p99" "$errors" "$cpu" "${cost[$target]}" "${bytes:--}"
        done
        noise_summary "$tsv" 10 11
        if [[ -n ${cost[gateway-gzip]:-} && -n ${cost[nginx-gzip]:-} ]]; then
            printf '\ngzip level %s, compress µs/req gateway/nginx: %s\n' "$BENCH_GZIP_LEVEL" \
                "$(ratio "${cost[gateway-gzip]}" "${cost[nginx-gzip]}")"
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
            "connections=$BENCH_CONNECTIONS body_bytes=$BENCH_BODY_BYTES gzip=$BENCH_GZIP_LEVEL" \
            "br=$BENCH_BROTLI_LEVEL zstd=$BENCH_ZSTD_LEVEL accept_encoding='$BENCH_ACCEPT_ENCODING'" \
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
    make_work_dir wasmgate-bench-compress
    write_environment
    write_wrk_script
    printf 'round\ttarget\trequests\treq_per_s\tp50_ms\tp99_ms\terrors\tproxy_cpu_us_per_req\tupstream_cpu_us_per_req\tforeign_pct\tsteal_pct\n' \
        >"$BENCH_RESULTS/results.tsv"

    start_upstream_nginx ""
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
