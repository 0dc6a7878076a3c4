#!/usr/bin/env bash
# bench/cache-conformance.sh — runs the HTTP caching test suite (npm `http-cache-tests`,
# https://cache-tests.fyi) against the gateway's cache and against nginx's `proxy_cache`,
# both in front of the suite's own origin server, and prints each one's score.
#
#   bench/cache-conformance.sh [--only gateway|nginx] [--min N] [--keep DIR]
#
# --only      run one of the two (default: both)
# --min N     exit 1 if the gateway passes fewer than N tests (scripts/test.sh uses this, so
#             the score cannot drop unnoticed)
# --keep DIR  write each run's JSON results there
#
# The suite is installed (once, with npm) into ${WASMGATE_TOOLS:-~/.cache/wasmgate-tools}/
# http-cache-tests. The gateway binary is $WASMGATE_BIN, else target/debug/wasmgate under
# $CARGO_TARGET_DIR (build it first). A test passes when the suite records `true` for it;
# the suite's optional checks count the same way for both proxies. Needs node, npm, nginx.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SUITE_VERSION=0.4.5
ONLY="" MIN="" KEEP=""
while [ $# -gt 0 ]; do
    case $1 in
        --only) ONLY=$2; shift 2 ;;
        --min) MIN=$2; shift 2 ;;
        --keep) KEEP=$2; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
PATH=$PATH:/usr/sbin
tools="${WASMGATE_TOOLS:-$HOME/.cache/wasmgate-tools}"
suite_dir="$tools/http-cache-tests"
suite="$suite_dir/node_modules/http-cache-tests"
gateway_bin="${WASMGATE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/wasmgate}"

say() { printf '[cache-conformance] %s\n' "$*" >&2; }

# The suite, from npm, in its own directory (its package.json is written here).
manifest='{ "name": "wasmgate-http-cache-tests", "private": true, "dependencies": { "http-cache-tests": "'$SUITE_VERSION'" } }'
installed=$(node -p "require('$suite/package.json').version" 2>/dev/null || true)
if [ "$installed" != "$SUITE_VERSION" ]; then
    say "installing http-cache-tests@$SUITE_VERSION into $suite_dir"
    mkdir -p "$suite_dir"
    printf '%s\n' "$manifest" >"$suite_dir/package.json"
    (cd "$suite_dir" && npm install --no-audit --no-fund --loglevel=error)
fi

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# A port nothing listens on, below Linux's ephemeral range (32768-60999): a port in that range
# may be the local end of any outgoing connection, and a wildcard listen on it then fails.
free_port() {
    local port
    for _ in $(seq 200); do
        port=$((20000 + RANDOM % 12000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port"; return; fi
    done
    echo "no free port" >&2; exit 1
}

wait_port() { # PORT WHAT LOG
    for _ in $(seq 3000); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return; fi
        sleep 0.02
    done
    say "$2 did not listen on $1 within a minute:"; cat "$3" >&2; exit 1
}

# Runs the suite against http://127.0.0.1:PORT and prints the number of passes.
run_suite() { # PORT NAME
    local out="$work/$2.json"
    (cd "$suite" && npm_config_base="http://127.0.0.1:$1" npm_config_id="" npm_package_config_id="" \
        node --no-warnings cli.mjs >"$out")
    [ -z "$KEEP" ] || { mkdir -p "$KEEP"; cp "$out" "$KEEP/$2.json"; }
    node -e 'const r = require(process.argv[1]); const v = Object.values(r);
        console.log(v.filter(x => x === true).length + " " + v.length)' "$out"
}

origin_port=$(free_port)
(cd "$suite" && exec env npm_config_protocol=http npm_config_port="$origin_port" \
    npm_config_pidfile="$work/origin.pid" node server/server.mjs >"$work/origin.log" 2>&1) &
pids+=($!)
wait_port "$origin_port" "the suite's origin server" "$work/origin.log"

gateway_score="" nginx_score=""
if [ "$ONLY" != nginx ]; then
    [ -x "$gateway_bin" ] || { say "no gateway binary at $gateway_bin (cargo build -p wasmgate)"; exit 1; }
    port=$(free_port)
    mkdir -p "$work/plugins"
    cat >"$work/gateway.toml" <<TOML
[server]
listen = ["127.0.0.1:$port"]
[plugins]
dir = "$work/plugins"
watch = false
[upstreams.origin]
targets = ["127.0.0.1:$origin_port"]
[[routes]]
name = "suite"
prefix = "/"
upstream = "origin"
preserve-host = true
cache = true
TOML
    RUST_LOG=warn "$gateway_bin" run --config "$work/gateway.toml" >"$work/gateway.log" 2>&1 &
    pids+=($!)
    wait_port "$port" "the gateway" "$work/gateway.log"
    gateway_score=$(run_suite "$port" gateway)
    say "gateway: ${gateway_score% *} of ${gateway_score#* } passed"
fi

if [ "$ONLY" != gateway ]; then
    port=$(free_port)
    mkdir -p "$work/nginx/cache" "$work/nginx/tmp"
    cat >"$work/nginx/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $work/nginx/tmp/body;
    proxy_temp_path $work/nginx/tmp/proxy;
    fastcgi_temp_path $work/nginx/tmp/fastcgi;
    uwsgi_temp_path $work/nginx/tmp/uwsgi;
    scgi_temp_path $work/nginx/tmp/scgi;
    proxy_cache_path $work/nginx/cache levels=1:2 keys_zone=suite:10m max_size=256m;
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://127.0.0.1:$origin_port;
            proxy_http_version 1.1;
            proxy_set_header Host \$http_host;
            proxy_set_header Connection "";
            proxy_cache suite;
            proxy_cache_revalidate on;
            add_header Cache-Status \$upstream_cache_status;
        }
    }
}
CONF
    nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" >"$work/nginx.log" 2>&1 &
    pids+=($!)
    wait_port "$port" "nginx" "$work/nginx.log"
    nginx_score=$(run_suite "$port" nginx)
    say "nginx $(nginx -v 2>&1 | sed 's|.*/||') proxy_cache: ${nginx_score% *} of ${nginx_score#* } passed"
fi

printf 'suite http-cache-tests %s\n' "$SUITE_VERSION"
[ -z "$gateway_score" ] || printf 'gateway %s/%s\n' "${gateway_score% *}" "${gateway_score#* }"
[ -z "$nginx_score" ] || printf 'nginx   %s/%s\n' "${nginx_score% *}" "${nginx_score#* }"
if [ -n "$MIN" ] && [ -n "$gateway_score" ] && [ "${gateway_score% *}" -lt "$MIN" ]; then
    say "the gateway passed ${gateway_score% *}, fewer than the $MIN it reached before"
    exit 1
fi
