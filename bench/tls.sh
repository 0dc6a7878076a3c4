#!/usr/bin/env bash
# bench/tls.sh — the cost of TLS termination: wasmgate side by side with nginx, both serving
# the same certificate and the same small static answer ({"ok":true}), so TLS and HTTP framing
# are all that is measured (no upstream, no plugins).
#
# Starts, all on 127.0.0.1 with free ports and pinned to the server CPU:
#   nginx     1 worker, access_log off, `listen … ssl http2`, default session settings
#   gateway   target/release/wasmgate with one worker thread, a TLS listener and a plain one
# and drives each with oha (pinned to the load CPU) in these scenarios:
#   plain-h1   plain HTTP/1.1, kept-alive connections (the baseline without TLS)
#   tls-h1     HTTPS, HTTP/1.1, kept-alive connections
#   tls-h2     HTTPS, HTTP/2 (ALPN h2), kept-alive connections
#   handshake  HTTPS, HTTP/1.1, a new connection (and TLS handshake) per request (oha; its
#              client resumes TLS sessions where the server offers it, and both do by default)
#   full-handshake  `openssl s_time -new`: one connection after another, each a full TLS 1.3
#              handshake (no resumption) and a `GET /` over HTTP/1.0
# Requests still in flight when a run's time is up ("aborted due to deadline") are not errors.
# For each run it reads the server's own CPU time from /proc (utime+stime; nginx: master +
# worker) and divides it by the requests answered: CPU µs per request. In the handshake
# scenario that is the CPU per new TLS connection. The certificate is ECDSA P-256 (openssl);
# both servers negotiate TLS 1.3 with oha; session resumption is left at each server's
# default (oha's client may resume sessions with either).
#
# Prints a table of medians over rounds and the ratio gateway/nginx; raw oha JSON is kept under
# bench/results/tls-<timestamp>/.
#
# Environment (defaults in brackets):
#   BENCH_QUICK=1               3s runs, 1 round
#   BENCH_DURATION [10s]  BENCH_ROUNDS [3]  BENCH_CONNECTIONS [32]
#   BENCH_HANDSHAKE_CONNECTIONS [8]   concurrent clients in the handshake scenario
#   BENCH_SCENARIOS ["plain-h1 tls-h1 tls-h2 handshake full-handshake"]
#   BENCH_LOAD_CPU [0]  BENCH_SERVER_CPU [1]
#   BENCH_SKIP_BUILD [0]  BENCH_GATEWAY_BIN [target/release/wasmgate]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly ROOT
PATH=$PATH:/usr/sbin:/sbin
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

BENCH_QUICK=${BENCH_QUICK:-0}
if [[ $BENCH_QUICK == 1 ]]; then
    BENCH_DURATION=${BENCH_DURATION:-3s}
    BENCH_ROUNDS=${BENCH_ROUNDS:-1}
fi
BENCH_DURATION=${BENCH_DURATION:-10s}
BENCH_ROUNDS=${BENCH_ROUNDS:-3}
BENCH_CONNECTIONS=${BENCH_CONNECTIONS:-32}
BENCH_HANDSHAKE_CONNECTIONS=${BENCH_HANDSHAKE_CONNECTIONS:-8}
BENCH_SCENARIOS=${BENCH_SCENARIOS:-plain-h1 tls-h1 tls-h2 handshake full-handshake}
BENCH_LOAD_CPU=${BENCH_LOAD_CPU:-0}
BENCH_SERVER_CPU=${BENCH_SERVER_CPU:-1}
BENCH_SKIP_BUILD=${BENCH_SKIP_BUILD:-0}
BENCH_SKIP_INSTALL=${BENCH_SKIP_INSTALL:-0}
BENCH_CACHE=${BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wasmgate-bench}
BENCH_RESULTS=${BENCH_RESULTS:-$ROOT/bench/results/tls-$(date +%Y%m%d-%H%M%S)}
BENCH_GATEWAY_LOG=${BENCH_GATEWAY_LOG:-warn}
OHA=$BENCH_CACHE/bin/oha

NGINX_TLS_PORT="" NGINX_PLAIN_PORT="" NGINX_PIDS=()
GATEWAY_TLS_PORT=""

# Generates the certificate both servers use: ECDSA P-256 for localhost, signed by a private
# CA that oha trusts (a self-signed leaf would be refused by oha's rustls as a CA certificate).
make_certificate() {
    {
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
            -subj "/CN=wasmgate bench CA" -keyout "$WORK/ca-key.pem" -out "$WORK/ca.pem"
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
            -keyout "$WORK/key.pem" -out "$WORK/cert.csr"
        printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n' \
            >"$WORK/cert.ext"
        openssl x509 -req -in "$WORK/cert.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca-key.pem" \
            -CAcreateserial -days 2 -extfile "$WORK/cert.ext" -out "$WORK/cert.pem"
    } 2>/dev/null || die "openssl could not make the certificates"
}

start_nginx() {
    NGINX_TLS_PORT=$(free_port)
    NGINX_PLAIN_PORT=$(free_port)
    mkdir -p "$WORK/nginx"
    cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx; proxy_temp_path $WORK/nginx;
    fastcgi_temp_path $WORK/nginx; uwsgi_temp_path $WORK/nginx; scgi_temp_path $WORK/nginx;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$NGINX_PLAIN_PORT;
        listen 127.0.0.1:$NGINX_TLS_PORT ssl http2;
        ssl_certificate $WORK/cert.pem;
        ssl_certificate_key $WORK/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / { default_type application/json; return 200 '{"ok":true}'; }
    }
}
EOF
    taskset -c "$BENCH_SERVER_CPU" nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" >"$WORK/nginx.log" 2>&1 \
        || die "nginx did not start (see $WORK/nginx.log)"
    for _ in $(seq 50); do
        [[ -s $WORK/nginx/nginx.pid ]] && break
        sleep 0.1
    done
    local master
    master=$(<"$WORK/nginx/nginx.pid")
    STARTED_PIDS+=("$master")
    wait_https "https://127.0.0.1:$NGINX_TLS_PORT/" "$master" nginx
    mapfile -t NGINX_PIDS < <(echo "$master"; pgrep -P "$master")
    log "nginx     pids ${NGINX_PIDS[*]}  https://127.0.0.1:$NGINX_TLS_PORT/"
}

start_gateway() {
    GATEWAY_PORT=$(free_port)
    GATEWAY_TLS_PORT=$(free_port)
    mkdir -p "$WORK/plugins"
    cat >"$WORK/gateway.toml" <<EOF
# Generated by bench/tls.sh.
[server]
listen = ["127.0.0.1:$GATEWAY_PORT"]

[plugins]
dir = "$WORK/plugins"
watch = false

[[listeners]]
address = "127.0.0.1:$GATEWAY_TLS_PORT"

[[listeners.certificates]]
cert = "$WORK/cert.pem"
key = "$WORK/key.pem"

[[routes]]
name = "ok"
prefix = "/"
respond = { status = 200, headers = { "content-type" = "application/json" }, body = '{"ok":true}' }
EOF
    RUST_LOG=$BENCH_GATEWAY_LOG WASMGATE_WORKER_THREADS=1 \
        start_pinned "$WORK/gateway.log" "$GATEWAY_BIN" run --config "$WORK/gateway.toml"
    GATEWAY_PID=$LAST_PID
    wait_https "https://127.0.0.1:$GATEWAY_TLS_PORT/" "$GATEWAY_PID" gateway
    log "gateway   pid $GATEWAY_PID  https://127.0.0.1:$GATEWAY_TLS_PORT/  ($("$GATEWAY_BIN" --version))"
}

# Waits until URL answers 2xx over TLS (certificate not checked), failing early if PID exited.
wait_https() {
    local url=$1 pid=$2 what=$3
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || die "$what exited during start-up (logs in $WORK)"
        curl -kfsS -o /dev/null --max-time 1 "$url" 2>/dev/null && return
        sleep 0.1
    done
    die "$what did not answer $url within 10s (logs in $WORK)"
}

# URL and oha flags of scenario $1 against target $2 (nginx or gateway).
scenario_args() {
    local scenario=$1 target=$2 tls_port plain_port
    if [[ $target == nginx ]]; then
        tls_port=$NGINX_TLS_PORT plain_port=$NGINX_PLAIN_PORT
    else
        tls_port=$GATEWAY_TLS_PORT plain_port=$GATEWAY_PORT
    fi
    case $scenario in
        plain-h1) echo "http://127.0.0.1:$plain_port/ -c $BENCH_CONNECTIONS" ;;
        tls-h1) echo "https://localhost:$tls_port/ -c $BENCH_CONNECTIONS --http-version 1.1" ;;
        tls-h2) echo "https://localhost:$tls_port/ -c $BENCH_CONNECTIONS --http2" ;;
        handshake) echo "https://localhost:$tls_port/ -c $BENCH_HANDSHAKE_CONNECTIONS --http-version 1.1 --disable-keepalive" ;;
        full-handshake) echo "localhost:$tls_port" ;;
        *) die "unknown scenario $scenario" ;;
    esac
}

# One run: prints "requests req_per_s p50_ms errors cpu_us_per_req".
run_one() {
    local scenario=$1 target=$2 raw=$3 pids=()
    if [[ $target == nginx ]]; then pids=("${NGINX_PIDS[@]}"); else pids=("$GATEWAY_PID"); fi
    local args before after
    read -r -a args <<<"$(scenario_args "$scenario" "$target")"
    if [[ $scenario == full-handshake ]]; then
        full_handshakes "${args[0]}" "$raw" "${pids[@]}"
        return
    fi
    before=$(cpu_ticks "${pids[@]}")
    taskset -c "$BENCH_LOAD_CPU" "$OHA" --no-tui --output-format json --cacert "$WORK/ca.pem" \
        -z "$BENCH_DURATION" "${args[@]}" >"$raw" 2>"$raw.err" || die "oha failed (see $raw.err)"
    after=$(cpu_ticks "${pids[@]}")
    jq -r --argjson ticks "$((after - before))" --argjson tck "$CLK_TCK" '
        ([.statusCodeDistribution | to_entries[] | select(.key == "200") | .value] | add // 0) as $ok
        | ([.errorDistribution | to_entries[] | select(.key != "aborted due to deadline") | .value] | add // 0) as $errors
        | [$ok, (.summary.requestsPerSec | floor),
           ((.latencyPercentiles.p50 // 0) * 1000 | . * 1000 | round / 1000),
           $errors,
           (if $ok > 0 then ($ticks / $tck * 1e6 / $ok * 100 | round / 100) else "-" end)]
        | @tsv' "$raw"
}

# Full handshakes with `openssl s_time -new` against $1 (HOST:PORT) for BENCH_DURATION; raw
# output to $2; CPU of the PIDs after that. Prints the same fields as run_one.
full_handshakes() {
    local target=$1 raw=$2 before after
    shift 2
    before=$(cpu_ticks "$@")
    taskset -c "$BENCH_LOAD_CPU" openssl s_time -connect "$target" -new -www / \
        -CAfile "$WORK/ca.pem" -time "$(seconds_of "$BENCH_DURATION")" >"$raw" 2>&1 || die "openssl s_time failed (see $raw)"
    after=$(cpu_ticks "$@")
    awk -v ticks="$((after - before))" -v tck="$CLK_TCK" '
        / connections in [0-9.]+ real seconds/ && !n { n = $1; secs = $4 }
        END { if (n > 0) printf "%d\t%d\t-\t0\t%.2f\n", n, n / secs, ticks / tck * 1e6 / n;
              else print "0\t0\t-\t1\t-" }' "$raw"
}

main() {
    [[ ${1:-} == -h || ${1:-} == --help ]] && { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0; }
    check_cpus
    local missing=()
    command -v nginx >/dev/null || missing+=(nginx-light)
    for tool in curl jq taskset openssl; do command -v "$tool" >/dev/null || missing+=("$tool"); done
    install_packages "${missing[@]}"
    [[ -x $OHA ]] || OHA=$(command -v oha || true)
    [[ -x $OHA ]] || die "oha not found (bench/run.sh installs it into $BENCH_CACHE)"
    [[ $BENCH_SKIP_BUILD == 1 ]] || cargo_build -p wasmgate
    mkdir -p "$BENCH_RESULTS"
    make_work_dir wasmgate-tls-bench
    make_certificate
    start_nginx
    start_gateway
    {
        environment_common 2>/dev/null || true
        echo "oha: $("$OHA" --version)"
        echo "nginx: $(nginx -v 2>&1)"
        echo "duration: $BENCH_DURATION × $BENCH_ROUNDS rounds; connections: $BENCH_CONNECTIONS (handshake: $BENCH_HANDSHAKE_CONNECTIONS)"
    } >"$BENCH_RESULTS/environment.txt"
    local results=$BENCH_RESULTS/results.tsv
    printf 'round\tscenario\ttarget\trequests\treq_per_s\tp50_ms\terrors\tcpu_us_per_req\n' >"$results"
    local round scenario target
    for round in $(seq "$BENCH_ROUNDS"); do
        for scenario in $BENCH_SCENARIOS; do
            for target in nginx gateway; do
                local line
                line=$(run_one "$scenario" "$target" "$BENCH_RESULTS/$round-$scenario-$target.json")
                printf '%s\t%s\t%s\t%s\n' "$round" "$scenario" "$target" "$line" >>"$results"
                log "round $round  $scenario  $target  $(tr '\t' ' ' <<<"$line")"
            done
        done
    done
    echo
    echo "CPU µs per request (median of $BENCH_ROUNDS × $BENCH_DURATION; handshake: per new TLS connection)"
    printf '%-10s  %12s  %12s  %8s  %12s  %12s  %6s\n' scenario nginx_cpu_us gateway_cpu_us ratio nginx_req_s gateway_req_s errors
    for scenario in $BENCH_SCENARIOS; do
        local n g nr gr errors
        n=$(awk -F'\t' -v s="$scenario" '$2 == s && $3 == "nginx" { print $8 }' "$results" | median)
        g=$(awk -F'\t' -v s="$scenario" '$2 == s && $3 == "gateway" { print $8 }' "$results" | median)
        nr=$(awk -F'\t' -v s="$scenario" '$2 == s && $3 == "nginx" { print $5 }' "$results" | median)
        gr=$(awk -F'\t' -v s="$scenario" '$2 == s && $3 == "gateway" { print $5 }' "$results" | median)
        errors=$(awk -F'\t' -v s="$scenario" '$2 == s { e += $7 } END { print e + 0 }' "$results")
        printf '%-10s  %12s  %12s  %8s  %12s  %12s  %6s\n' "$scenario" "$n" "$g" "$(ratio "$g" "$n")" "$nr" "$gr" "$errors"
    done | tee "$BENCH_RESULTS/summary.txt"
    echo "(raw results in $BENCH_RESULTS)"
}

main "$@"
