#!/usr/bin/env bash
# bench/grpc.sh — what the gateway costs a gRPC unary call, and what transcoding (HTTP/JSON in,
# gRPC to the upstream) costs over passing the same gRPC call through.
#
# Starts, all on 127.0.0.1 with free ports, on the server CPU:
#   greeter   target/release/wasmgate-demo --greeter (a gRPC service over h2c)
#   gateway   target/release/wasmgate, one worker thread, an h2c upstream to the greeter, a
#             gRPC route (/demo.greeter.v1.Greeter) and a transcoding route (/v1/hello/{name},
#             config/protos/greeter.proto)
#   nginx     the peer: one worker, `grpc_pass` to the greeter over kept-alive h2c
# and drives each path with h2load (Debian nghttp2-client; HTTP/2, BENCH_CLIENTS connections
# with BENCH_STREAMS streams each, BENCH_DURATION per run, BENCH_ROUNDS rounds):
#
#   direct      gRPC SayHello straight to the greeter
#   nginx       the same call through nginx's grpc_pass
#   grpc        the same call through the gateway
#   transcoded  GET /v1/hello/world through the gateway (JSON answer)
#
# For each: calls/s, p50 and p99 (from h2load's per-request log), failed calls, the proxy's
# CPU time (utime+stime from /proc) per call and the greeter's. Medians over rounds; the
# gateway's CPU per call over nginx's is the ratio to watch.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly ROOT
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

BENCH_DURATION=${BENCH_DURATION:-5s}
BENCH_ROUNDS=${BENCH_ROUNDS:-3}
BENCH_CLIENTS=${BENCH_CLIENTS:-4}
BENCH_STREAMS=${BENCH_STREAMS:-8}
BENCH_LOAD_CPU=${BENCH_LOAD_CPU:-0}
BENCH_SERVER_CPU=${BENCH_SERVER_CPU:-1}
BENCH_SKIP_BUILD=${BENCH_SKIP_BUILD:-0}
BENCH_SKIP_INSTALL=${BENCH_SKIP_INSTALL:-0}
BENCH_RESULTS=${BENCH_RESULTS:-$ROOT/bench/results/grpc-$(date +%Y%m%d-%H%M%S)}
BENCH_GATEWAY_LOG=${BENCH_GATEWAY_LOG:-warn}
BENCH_NOISE_LIMIT=${BENCH_NOISE_LIMIT:-5}

# `HelloRequest { name: "world" }` as one gRPC frame.
write_request() { printf '\x00\x00\x00\x00\x07\x0a\x05world' >"$1"; }

# Runs h2load against $1 (a gRPC call when $2 names a request body file, a GET otherwise) and
# prints a RESULT line from its per-request log: calls, seconds, p50/p99 in µs, failures
# (transport errors and non-2xx answers; gRPC statuses are checked separately).
h2load_run() {
    local url=$1 body=${2:-} raw=$WORK/h2load.out logfile=$WORK/h2load.tsv
    local args=(-c "$BENCH_CLIENTS" -m "$BENCH_STREAMS" -t 1 -D "$(seconds_of "$BENCH_DURATION")" --log-file "$logfile")
    [[ -n $body ]] && args+=(-d "$body" -H 'content-type: application/grpc' -H 'te: trailers')
    rm -f "$logfile"
    taskset -c "$BENCH_LOAD_CPU" h2load "${args[@]}" "$url" >"$raw" 2>&1 || die "h2load failed against $url (see $raw)"
    local seconds failed
    seconds=$(sed -n 's/^finished in \([0-9.]*\)s.*/\1/p' "$raw")
    failed=$(sed -n 's/^requests: .* \([0-9]*\) failed, .* \([0-9]*\) errored.*/\1 \2/p' "$raw" | awk '{ print $1 + $2 }')
    sort -t$'\t' -k3,3n "$logfile" | awk -F'\t' -v s="$seconds" -v f="${failed:-0}" '
        { d[NR] = $3; if ($2 < 200 || $2 > 299) bad++ }
        END { if (NR == 0) { print "RESULT requests=0"; exit }
              printf "RESULT requests=%d seconds=%s p50_us=%d p99_us=%d errors=%d\n",
                  NR, s, d[int(NR * 0.5) + 1], d[int(NR * 0.99) + 1], bad + f }'
}

# nginx in front of the greeter: grpc_pass over kept-alive h2c, one worker, no logs.
start_nginx_grpc() {
    NGINX_PORT=$(free_port)
    local dir=$WORK/nginx
    mkdir -p "$dir"
    {
        nginx_prelude "$dir"
        cat <<EOF
    http2_max_requests 1000000;
    upstream greeter {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 32;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT http2;
        location / { grpc_pass grpc://greeter; }
    }
}
EOF
    } >"$dir/nginx.conf"
    local nginx
    nginx=$(command -v nginx || echo /usr/sbin/nginx)
    start_pinned "$WORK/nginx.log" "$nginx" -c "$dir/nginx.conf"
    NGINX_PID=$LAST_PID
    for _ in $(seq 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$NGINX_PORT") 2>/dev/null && break
        sleep 0.1
    done
    log "nginx     pid $NGINX_PID  http://127.0.0.1:$NGINX_PORT/ ($("$nginx" -v 2>&1))"
}

main() {
    BENCH_RESULTS=$BENCH_RESULTS
    check_cpus
    local missing=()
    command -v h2load >/dev/null || missing+=(nghttp2-client)
    command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
    command -v taskset >/dev/null || missing+=(taskset)
    install_packages "${missing[@]}"
    ((BENCH_SKIP_BUILD)) || cargo_build -p wasmgate -p wasmgate-demo
    make_work_dir wasmgate-bench-grpc
    mkdir -p "$BENCH_RESULTS"

    UPSTREAM_PORT=$(free_port)
    start_pinned "$WORK/greeter.log" "$DEMO_BIN" --greeter "127.0.0.1:$UPSTREAM_PORT"
    UPSTREAM_PID=$LAST_PID
    GATEWAY_PORT=$(free_port)
    cat >"$WORK/gateway.toml" <<EOF
[server]
listen = ["127.0.0.1:$GATEWAY_PORT"]

[plugins]
dir = "$WORK/plugins"
watch = false

[upstreams.greeter]
targets = ["127.0.0.1:$UPSTREAM_PORT"]
protocol = "h2c"

[[routes]]
name = "ready"
path = "/ready"
respond = { status = 200, body = "ok" }

[[routes]]
name = "grpc"
prefix = "/demo.greeter.v1.Greeter"
upstream = "greeter"

[[routes]]
name = "transcoded"
prefix = "/v1"
transcode = { upstream = "greeter", protos = ["$ROOT/config/protos/greeter.proto"] }
EOF
    mkdir -p "$WORK/plugins"
    launch_gateway "$WORK/gateway.toml" "http://127.0.0.1:$GATEWAY_PORT/ready"
    start_nginx_grpc
    write_request "$WORK/hello.bin"

    # Each path answers as it should before it is measured.
    curl -sf "http://127.0.0.1:$GATEWAY_PORT/v1/hello/world" | grep -q 'Hello, world!' \
        || die "the transcoded route does not answer Hello, world!"
    curl -sf --http2-prior-knowledge -o /dev/null -D "$WORK/grpc-head.txt" -H 'content-type: application/grpc' \
        -H 'te: trailers' --data-binary @"$WORK/hello.bin" "http://127.0.0.1:$GATEWAY_PORT/demo.greeter.v1.Greeter/SayHello" \
        || die "the gRPC route does not answer"

    {
        echo "# gRPC through the gateway — $(date -Is)"
        echo "h2load: $(h2load --version | head -n1); $BENCH_CLIENTS connections × $BENCH_STREAMS streams, $BENCH_DURATION per run, $BENCH_ROUNDS rounds"
        echo "cpu: $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n1) × $(nproc); git $(git -C "$ROOT" rev-parse --short HEAD)"
    } | tee "$BENCH_RESULTS/summary.txt"
    local table=$WORK/runs.tsv
    printf 'path\tround\tcalls\tcalls_s\tp50_ms\tp99_ms\tfailed\tproxy_cpu_us\tgreeter_cpu_us\tforeign_pct\tsteal_pct\n' >"$table"
    local round
    for round in $(seq "$BENCH_ROUNDS"); do
        measure -- h2load_run "http://127.0.0.1:$UPSTREAM_PORT/demo.greeter.v1.Greeter/SayHello" "$WORK/hello.bin"
        printf 'direct\t%s\t%s\n' "$round" "$MEASURED" >>"$table"
        measure "$NGINX_PID" -- h2load_run "http://127.0.0.1:$NGINX_PORT/demo.greeter.v1.Greeter/SayHello" "$WORK/hello.bin"
        printf 'nginx\t%s\t%s\n' "$round" "$MEASURED" >>"$table"
        measure "$GATEWAY_PID" -- h2load_run "http://127.0.0.1:$GATEWAY_PORT/demo.greeter.v1.Greeter/SayHello" "$WORK/hello.bin"
        printf 'grpc\t%s\t%s\n' "$round" "$MEASURED" >>"$table"
        measure "$GATEWAY_PID" -- h2load_run "http://127.0.0.1:$GATEWAY_PORT/v1/hello/world"
        printf 'transcoded\t%s\t%s\n' "$round" "$MEASURED" >>"$table"
    done
    cp "$table" "$BENCH_RESULTS/runs.tsv"
    {
        echo
        printf '%-11s %9s %8s %8s %7s %13s %15s\n' path calls/s p50_ms p99_ms failed proxy_us/call greeter_us/call
        local path
        for path in direct nginx grpc transcoded; do
            awk -F'\t' -v p="$path" '$1 == p' "$table" >"$WORK/$path.tsv"
            local col values=()
            for col in 4 5 6 7 8 9; do
                values+=("$(cut -f"$col" "$WORK/$path.tsv" | median)")
            done
            printf '%-11s %9s %8s %8s %7s %13s %15s\n' "$path" "${values[@]}"
        done
        local nginx_cpu grpc_cpu transcoded_cpu
        nginx_cpu=$(cut -f8 "$WORK/nginx.tsv" | median)
        grpc_cpu=$(cut -f8 "$WORK/grpc.tsv" | median)
        transcoded_cpu=$(cut -f8 "$WORK/transcoded.tsv" | median)
        echo
        echo "gateway / nginx CPU per gRPC call: $(ratio "$grpc_cpu" "$nginx_cpu")"
        echo "transcoded / grpc gateway CPU per call: $(ratio "$transcoded_cpu" "$grpc_cpu")"
        noise_summary "$table" 10 11
    } | tee -a "$BENCH_RESULTS/summary.txt"
}

main "$@"
