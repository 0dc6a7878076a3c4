#!/usr/bin/env bash
# bench/plugins.sh — the per-request cost of every bundled plugin, in every language, through the
# real gateway: each plugin as the only stage of its own route, next to a plain passthrough route
# measured in the same run, once with fresh instances (the default: a new sandbox per call) and
# once with instance reuse (limits = { reuse = { max-calls = 1000 } }).
#
# Starts, all on 127.0.0.1 with free ports:
#   upstream  the `fast` demo upstream (wasmgate-demo --fast), pinned to the server CPU
#   gateway   target/release/wasmgate with WASMGATE_WORKER_THREADS=1, server CPU, one config
#             holding every route: /passthrough, /fresh/PLUGIN, /reuse/PLUGIN
# and drives each route in turn from the load CPU with wrk, closed loop, few connections
# (BENCH_CONNECTIONS, default 4), for BENCH_DURATION after a short warm-up, over BENCH_ROUNDS
# rounds (the order reversed every other round, so slow drift of the machine does not favour the
# routes measured first). The passthrough route is measured at the start of every round and again
# after every BENCH_BASELINE_EVERY plugin routes, so the baseline of a round spans its whole
# length. Each request is one under which the plugin does its real work: a
# correctly signed or authenticated request for auth stages, an allowed Origin for cors, a JSON
# body for json-guard, a JSON answer to wrap for response-envelope; every route is checked once
# with curl before measuring (2xx plus a sign that the stage ran), and wrk counts every non-2xx.
#
# For each run it reads the gateway's CPU time from /proc (utime+stime, all threads) and divides
# it by the requests served: CPU µs per request. The table shows medians over rounds, and the
# CPU a plugin adds over the passthrough route (over the median passthrough of the same round,
# then the median over rounds). A transform stage
# makes two calls per request (on-request, on-response), an aggregate two (plan, merge), auth and
# rate-limit one. Raw output is kept under bench/results/plugins-<timestamp>/. See
# bench/README.md for the knobs (BENCH_* environment variables).
set -euo pipefail

# ----------------------------------------------------------------------------- settings

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
BENCH_ROUNDS=${BENCH_ROUNDS:-2}                 # rounds over all routes
BENCH_WARMUP=${BENCH_WARMUP:-1s}                # before every measured run (refills reuse pools)
BENCH_CONNECTIONS=${BENCH_CONNECTIONS:-4}       # wrk connections (closed loop)
BENCH_BASELINE_EVERY=${BENCH_BASELINE_EVERY:-6} # passthrough again after this many routes (0: once a round)
# Plugins to measure (default: all bundled ones) and modes (fresh, reuse or both).
BENCH_PLUGINS=${BENCH_PLUGINS:-transform rate-limit jwt-auth api-key-auth aggregate-json hmac-auth cors ip-filter request-rewrite server-timing json-guard response-envelope response-envelope-qjs}
BENCH_MODES=${BENCH_MODES:-fresh reuse}
BENCH_REUSE_MAX_CALLS=${BENCH_REUSE_MAX_CALLS:-1000}
BENCH_LOAD_CPU=${BENCH_LOAD_CPU:-0}             # CPU for the load generator
BENCH_SERVER_CPU=${BENCH_SERVER_CPU:-1}         # CPU for the upstream and the gateway
BENCH_SKIP_INSTALL=${BENCH_SKIP_INSTALL:-0}     # 1: use wrk/curl/openssl already on PATH
BENCH_SKIP_BUILD=${BENCH_SKIP_BUILD:-0}         # 1: never build; missing binaries or plugins are errors
# How long the gateway may take to listen (it loads the plugins `wasmgate check` compiled).
BENCH_START_TIMEOUT=${BENCH_START_TIMEOUT:-300}
BENCH_RESULTS=${BENCH_RESULTS:-$ROOT/bench/results/plugins-$(date +%Y%m%d-%H%M%S)}
BENCH_GATEWAY_LOG=${BENCH_GATEWAY_LOG:-warn}    # no access log, like run.sh
BENCH_NOISE_LIMIT=${BENCH_NOISE_LIMIT:-5}

ADMIN_PORT=""

# Credentials the auth stages are configured with and the load generator presents. Test values:
# everything stays on loopback.
JWT_SECRET=wasmgate-bench-jwt-secret-of-32-bytes-or-more
API_KEY=wasmgate-bench-api-key
HMAC_SECRET=6f1c0e9d2b7a48e3a5c4d1f0b9e8a7c6
ORIGIN=https://app.example.com
JSON_BODY='{"user":{"id":42,"name":"Ada"},"password":"hunter2","items":[1,2,3]}'

# ----------------------------------------------------------------------------- plugins

# One line per bundled plugin: name|language|world|calls per request|runtime. "runtime" plugins
# carry a language runtime (Go, CPython, SpiderMonkey, QuickJS): they get 64 MiB of linear
# memory and a 5 s deadline, since starting the runtime in a fresh instance takes milliseconds
# and CPython alone needs 13 MiB (the defaults are 32 MiB and 200 ms).
plugin_info() {
    local line
    while IFS= read -r line; do
        [[ ${line%%|*} == "$1" ]] && { echo "$line"; return; }
    done <<'EOF'
transform|Rust|transform|2|0
rate-limit|Rust|rate-limit|1|0
jwt-auth|Rust|auth|1|0
api-key-auth|Rust|auth|1|0
aggregate-json|Rust|aggregate|2|0
hmac-auth|C|auth|1|0
cors|C++|transform|2|0
ip-filter|Zig|auth|1|0
request-rewrite|Go|transform|2|1
server-timing|AssemblyScript|transform|2|0
json-guard|Python|transform|2|1
response-envelope|JavaScript (SpiderMonkey)|transform|2|1
response-envelope-qjs|JavaScript (QuickJS)|transform|2|1
EOF
    die "unknown plugin $1"
}
info_field() { plugin_info "$1" | cut -d'|' -f"$2"; }

# The stage's keys other than `limits`: a config under which a request passes through the stage
# doing its real work (see each plugin's README).
stage_keys() {
    case $1 in
        transform) echo 'plugin = "transform", config = { request = { headers = { set = { "x-bench" = "{route}" } } }, response = { headers = { set = { "x-bench-transform" = "on" } } } }' ;;
        # A limit no benchmark reaches, keyed by client IP: one counter update per request.
        rate-limit) echo 'plugin = "rate-limit", config = { key = "ip", limits = [{ requests = 1000000000, window = "1s" }] }' ;;
        jwt-auth) echo "plugin = \"jwt-auth\", config = { keys = [{ secret = \"$JWT_SECRET\" }], forward-claims = [\"tenant\"] }" ;;
        api-key-auth) echo "plugin = \"api-key-auth\", config = { keys = [{ name = \"bench\", sha256 = \"$(printf %s "$API_KEY" | sha256sum | cut -d' ' -f1)\" }] }" ;;
        # One call to the same upstream the passthrough route proxies to, merged under a key.
        aggregate-json) echo 'plugin = "aggregate-json", upstreams = ["fast"], config = { calls = [{ name = "upstream", upstream = "fast", uri = "/" }] }' ;;
        # max-skew 1h: the signature computed at the start of each run stays valid.
        hmac-auth) echo "plugin = \"hmac-auth\", config = { keys = [{ id = \"bench\", secret = \"$HMAC_SECRET\" }], max-skew = \"1h\" }" ;;
        cors) echo "plugin = \"cors\", config = { allow-origins = [\"$ORIGIN\"], expose-headers = [\"x-request-id\"] }" ;;
        ip-filter) echo 'plugin = "ip-filter", config = { allow = ["127.0.0.1/32"] }' ;;
        request-rewrite) echo 'plugin = "request-rewrite", config = { query = { set = { source = "gateway" } }, request-headers = { set = { x-route = "{route}" } }, response-headers = { set = { x-original-uri = "{var.rewrite.original-uri}" } } }' ;;
        server-timing) echo 'plugin = "server-timing", config = { metric = "gw" }' ;;
        json-guard) echo 'plugin = "json-guard", config = { redact = ["password"], require = ["user.id"] }, body = { buffer = true }' ;;
        response-envelope | response-envelope-qjs) echo "plugin = \"$1\", config = { meta = { version = \"v1\" } }, body = { buffer = true }" ;;
        *) die "no stage config for $1" ;;
    esac
}

# The stage's `limits` table for mode $2 (fresh or reuse), or nothing.
stage_limits() {
    local parts=()
    [[ $(info_field "$1" 5) == 1 ]] && parts+=('memory = "64MiB"' 'deadline = "5s"')
    [[ $2 == reuse ]] && parts+=("reuse = { max-calls = $BENCH_REUSE_MAX_CALLS }")
    ((${#parts[@]})) || return 0
    local joined
    joined=$(printf ', %s' "${parts[@]}")
    echo ", limits = { ${joined#, } }"
}

# base64url without padding, of stdin.
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

# An HS256 JWT for jwt-auth (subject bench, expires in 2100).
make_jwt() {
    local head body sig
    head=$(printf '%s' '{"alg":"HS256","typ":"JWT"}' | b64url)
    body=$(printf '%s' '{"sub":"bench","tenant":"acme","exp":4102444800}' | b64url)
    sig=$(printf '%s' "$head.$body" | openssl dgst -sha256 -hmac "$JWT_SECRET" -binary | b64url)
    echo "$head.$body.$sig"
}

# The request a route gets: sets REQ_METHOD, REQ_HEADERS (array of "name: value"), REQ_BODY and
# EXPECT (an extended regex that curl -i's output must match, case-insensitively: a sign that the
# stage ran, beyond the 2xx). $1: plugin (or passthrough), $2: the request path.
REQ_METHOD="" REQ_BODY="" EXPECT="" REQ_HEADERS=()
request_for() {
    local plugin=$1 path=$2
    REQ_METHOD=GET REQ_BODY="" EXPECT="" REQ_HEADERS=()
    case $plugin in
        passthrough) EXPECT='x-served-by: fast' ;;
        transform) EXPECT='x-bench-transform: on' ;;
        rate-limit) EXPECT='ratelimit-limit: 1000000000' ;;
        jwt-auth) REQ_HEADERS=("authorization: Bearer $(make_jwt)") ;;
        api-key-auth) REQ_HEADERS=("x-api-key: $API_KEY") ;;
        aggregate-json) EXPECT='"upstream": ?\{"ok": ?true\}' ;;
        hmac-auth)
            local ts sig
            ts=$(date +%s)
            sig=$(printf 'GET\n%s\n%s' "$path" "$ts" | openssl dgst -sha256 -hmac "$HMAC_SECRET" -r | cut -d' ' -f1)
            REQ_HEADERS=("x-key-id: bench" "x-timestamp: $ts" "x-signature: $sig")
            ;;
        cors)
            REQ_HEADERS=("origin: $ORIGIN")
            EXPECT="access-control-allow-origin: $ORIGIN"
            ;;
        ip-filter) ;;
        request-rewrite) EXPECT="x-original-uri: $path" ;;
        server-timing) EXPECT='server-timing: gw;dur=' ;;
        json-guard)
            REQ_METHOD=POST REQ_BODY=$JSON_BODY
            REQ_HEADERS=("content-type: application/json")
            EXPECT='x-audit: 1'
            ;;
        response-envelope | response-envelope-qjs) EXPECT='"data": ?\{"ok": ?true\}' ;;
        *) die "no request for $plugin" ;;
    esac
}

# ----------------------------------------------------------------------------- routes

# Routes are "passthrough" and MODE/PLUGIN; each has a path prefix and a request path.
route_plugin() { [[ $1 == passthrough ]] && echo passthrough || echo "${1#*/}"; }
route_mode() { [[ $1 == passthrough ]] && echo - || echo "${1%%/*}"; }
route_path() { echo "/$1/bench"; }
route_url() { echo "http://127.0.0.1:$GATEWAY_PORT$(route_path "$1")"; }

ROUTES=()
list_routes() {
    local plugin mode
    ROUTES=(passthrough)
    for plugin in $BENCH_PLUGINS; do
        plugin_info "$plugin" >/dev/null
        for mode in $BENCH_MODES; do
            [[ $mode == fresh || $mode == reuse ]] || die "unknown mode $mode (fresh, reuse)"
            ROUTES+=("$mode/$plugin")
        done
    done
}

gateway_config() {
    cat <<EOF
# Generated by bench/plugins.sh.
[server]
listen = ["127.0.0.1:$GATEWAY_PORT"]

[plugins]
dir = "plugins"
# Compiled components go here (the default would be plugins/.cache): compiled once per run.
cache-dir = "cache"

[admin]
listen = "127.0.0.1:$ADMIN_PORT"

[upstreams.fast]
targets = ["127.0.0.1:$UPSTREAM_PORT"]

[[routes]]
name = "passthrough"
prefix = "/passthrough"
upstream = "fast"
EOF
    local route plugin mode
    for route in "${ROUTES[@]:1}"; do
        plugin=$(route_plugin "$route") mode=$(route_mode "$route")
        printf '\n[[routes]]\nname = "%s-%s"\nprefix = "/%s"\n' "$plugin" "$mode" "$route"
        # An aggregate stage answers the request itself: its route has no upstream.
        [[ $(info_field "$plugin" 3) == aggregate ]] || echo 'upstream = "fast"'
        echo "stages = [{ $(stage_keys "$plugin")$(stage_limits "$plugin" "$mode") }]"
    done
}

# Makes sure plugins/NAME.wasm exists for every plugin measured: builds the missing ones with
# the plugin's build script (plugins/build.sh for Rust, scripts/build-polyglot.sh for the rest).
ensure_plugins() {
    local plugin
    for plugin in $BENCH_PLUGINS; do
        [[ -f $ROOT/plugins/$plugin.wasm ]] && continue
        [[ $BENCH_SKIP_BUILD == 1 ]] && die "plugins/$plugin.wasm is missing (BENCH_SKIP_BUILD=1)"
        log "building missing plugins/$plugin.wasm"
        if [[ $(info_field "$plugin" 2) == Rust ]]; then
            "$ROOT/plugins/build.sh" -p "$plugin" >/dev/null
        else
            "$ROOT/scripts/build-polyglot.sh" "$plugin" >/dev/null
        fi
        [[ -f $ROOT/plugins/$plugin.wasm ]] || die "building plugins/$plugin.wasm did not produce it"
    done
}

start_gateway() {
    [[ -x $GATEWAY_BIN ]] || die "$GATEWAY_BIN is missing"
    GATEWAY_PORT=$(free_port)
    ADMIN_PORT=$(free_port)
    local dir=$WORK/gateway plugin
    mkdir -p "$dir/plugins" "$dir/cache"
    # A copy: a plugin rebuilt in plugins/ during the run must not reload into the measurement.
    for plugin in $BENCH_PLUGINS; do
        cp "$ROOT/plugins/$plugin.wasm" "$dir/plugins/"
    done
    gateway_config >"$dir/gateway.toml"
    mkdir -p "$BENCH_RESULTS/config"
    cp "$dir/gateway.toml" "$BENCH_RESULTS/config/"
    # `check` validates every stage's config and compiles every plugin into the cache-dir, on all
    # CPUs (the big Python and JavaScript components take tens of seconds); the gateway, pinned to
    # one CPU, then loads them from the cache.
    local started=$SECONDS
    log "wasmgate check: compiling $(wc -w <<<"$BENCH_PLUGINS") plugins"
    "$GATEWAY_BIN" check --config "$dir/gateway.toml" >"$WORK/check.log" 2>&1 \
        || die "wasmgate check refused the generated config: $(cat "$WORK/check.log")"
    log "compiled in $((SECONDS - started))s"
    launch_gateway "$dir/gateway.toml" "$(route_url passthrough)" "$BENCH_START_TIMEOUT"
}

# ----------------------------------------------------------------------------- load

# Writes the wrk script for route $1 (the request of request_for plus the RESULT line) to $2.
# Written before every run, so hmac-auth's timestamp is fresh.
write_route_lua() {
    local route=$1 out=$2 header
    request_for "$(route_plugin "$route")" "$(route_path "$route")"
    {
        printf 'wrk.method = "%s"\n' "$REQ_METHOD"
        [[ -n $REQ_BODY ]] && printf 'wrk.body = [==[%s]==]\n' "$REQ_BODY"
        for header in "${REQ_HEADERS[@]}"; do
            printf 'wrk.headers[ [==[%s]==] ] = [==[%s]==]\n' "${header%%: *}" "${header#*: }"
        done
        wrk_report_lua
    } >"$out"
}

# One request with curl: dies with the answer unless it is 2xx and matches EXPECT.
verify_route() {
    local route=$1 url out args=()
    url=$(route_url "$route")
    request_for "$(route_plugin "$route")" "$(route_path "$route")"
    local header
    for header in "${REQ_HEADERS[@]}"; do args+=(-H "$header"); done
    [[ -n $REQ_BODY ]] && args+=(--data-binary "$REQ_BODY")
    out=$(curl -sS -i --max-time 10 -X "$REQ_METHOD" "${args[@]}" "$url" 2>&1) \
        || die "$route: curl $url failed: $out"
    local status
    status=$(sed -n '1s/^HTTP\/[0-9.]* \([0-9]*\).*/\1/p' <<<"$out")
    [[ $status == 2?? ]] || die "$route: $REQ_METHOD $url answered ${status:-nothing}, not 2xx:
$out"
    [[ -z $EXPECT ]] || grep -qiE -- "$EXPECT" <<<"$out" \
        || die "$route: the answer lacks /$EXPECT/, so the stage did not do its work:
$out"
    printf '%s\n%s\n\n' "== $route: $REQ_METHOD $url" "$out" >>"$BENCH_RESULTS/verify.txt"
}

# Runs one measurement of route $3 (run $2 of round $1) and appends a row to results.tsv.
run_route() {
    local round=$1 seq=$2 route=$3 url lua raw
    url=$(route_url "$route")
    lua=$WORK/lua/${route//\//-}.lua
    raw=$BENCH_RESULTS/raw/r$round-$(printf %02d "$seq")-${route//\//-}.txt
    write_route_lua "$route" "$lua"
    # Warm-up: connections open, reuse pools (dropped after 60 s idle) filled, caches warm.
    taskset -c "$BENCH_LOAD_CPU" timeout $(($(seconds_of "$BENCH_WARMUP") + 30)) \
        wrk -t1 -c"$BENCH_CONNECTIONS" -d"$BENCH_WARMUP" -s "$lua" "$url" >"$raw.warmup" 2>&1 \
        || die "warm-up against $route failed (see $raw.warmup)"
    rm -f "$raw.warmup"
    measure "$GATEWAY_PID" -- load_closed "$url" "$BENCH_CONNECTIONS" "$raw" "$lua"
    printf '%s\t%s\t%s\t%s\t%s\n' "$round" "$route" "$(route_plugin "$route")" "$(route_mode "$route")" \
        "$MEASURED" >>"$BENCH_RESULTS/results.tsv"

    local row
    row=$(tail -n1 "$BENCH_RESULTS/results.tsv")
    log "$(awk -F'\t' '{ printf "round %s %-28s %7s req/s  p50 %7s ms  p99 %7s ms  errors %s  gateway %8s µs/req  foreign %s%%  steal %s%%", $1, $2, $6, $7, $8, $9, $10, $12, $13 }' <<<"$row")"
    warn_if_noisy "$(cut -f12 <<<"$row")" "$(cut -f13 <<<"$row")"
    [[ $(cut -f9 <<<"$row") == 0 ]] || log "warning: $route had failed requests (see $raw)"
}

# ----------------------------------------------------------------------------- report

# Size of file $1 in kB / MB (decimal, like the READMEs).
human_size() {
    awk -v b="$(wc -c <"$1")" 'BEGIN { if (b >= 1e6) printf "%.1f MB\n", b / 1e6; else printf "%.0f kB\n", b / 1e3 }'
}

# Median over rounds of column $2 of route $1 in results.tsv.
med() {
    awk -F'\t' -v r="$1" -v c="$2" '$2 == r && $c != "-" { print $c }' "$BENCH_RESULTS/results.tsv" | median
}

# Median over rounds of (gateway µs/req of route $1 − the median of the passthrough runs of the
# same round).
added() {
    local round base
    for round in $(seq "$BENCH_ROUNDS"); do
        base=$(awk -F'\t' -v n="$round" '$1 == n && $2 == "passthrough" { print $10 }' \
            "$BENCH_RESULTS/results.tsv" | median)
        awk -F'\t' -v n="$round" -v r="$1" -v base="$base" \
            '$1 == n && $2 == r && base != "-" { printf "%.1f\n", $10 - base }' "$BENCH_RESULTS/results.tsv"
    done | median
}

# Rounds a number to $2 decimals ("-" stays).
fmt() { awk -v v="$1" -v d="${2:-0}" 'BEGIN { if (v == "-") print "-"; else printf "%.*f\n", d, v }'; }

# Prints the markdown table of medians, the reuse pools' counters and the interference summary.
report() {
    local tsv=$BENCH_RESULTS/results.tsv plugin errors
    errors=$(awk -F'\t' 'NR > 1 && $9 != 0 { printf " %s (round %s: %s)", $2, $1, $9 }' "$tsv")
    curl -fsS --max-time 5 "http://127.0.0.1:$ADMIN_PORT/status" >"$BENCH_RESULTS/status.json" 2>/dev/null || true
    {
        printf '\nwasmgate plugin bench — %s round(s), %s per run after %s warm-up, wrk -c%s; medians over rounds\n' \
            "$BENCH_ROUNDS" "$BENCH_DURATION" "$BENCH_WARMUP" "$BENCH_CONNECTIONS"
        printf 'load on CPU %s, upstream and gateway (1 worker thread) on CPU %s; CPU µs/req = gateway process time / requests;\n' \
            "$BENCH_LOAD_CPU" "$BENCH_SERVER_CPU"
        printf '+µs = that minus the median passthrough run of the same round; reuse = limits.reuse.max-calls %s\n' \
            "$BENCH_REUSE_MAX_CALLS"
        awk -F'\t' '$2 == "passthrough" { n++; if (!min || $10 < min) min = $10; if ($10 > max) max = $10 }
            END { printf "passthrough runs: %d, gateway CPU %.1f to %.1f µs/req (the noise floor of +µs)\n\n", n, min, max }' "$tsv"
        echo '| plugin | language | world | calls/req | size | fresh CPU µs/req | fresh +µs | reuse CPU µs/req | reuse +µs | fresh req/s | reuse req/s | fresh p50 ms | reuse p50 ms |'
        echo '|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|'
        printf '| passthrough | – | – | 0 | – | %s | 0 | %s | 0 | %s | %s | %s | %s |\n' \
            "$(fmt "$(med passthrough 10)" 1)" "$(fmt "$(med passthrough 10)" 1)" \
            "$(fmt "$(med passthrough 6)")" "$(fmt "$(med passthrough 6)")" \
            "$(fmt "$(med passthrough 7)" 3)" "$(fmt "$(med passthrough 7)" 3)"
        for plugin in $BENCH_PLUGINS; do
            local cells=() mode
            for mode in fresh reuse; do
                if [[ " $BENCH_MODES " == *" $mode "* ]]; then
                    cells+=("$(fmt "$(med "$mode/$plugin" 10)" 1)" "$(fmt "$(added "$mode/$plugin")" 1)")
                else
                    cells+=(- -)
                fi
            done
            for mode in fresh reuse; do
                cells+=("$(fmt "$(med "$mode/$plugin" 6)")")
            done
            for mode in fresh reuse; do
                cells+=("$(fmt "$(med "$mode/$plugin" 7)" 3)")
            done
            printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$plugin" \
                "$(info_field "$plugin" 2)" "$(info_field "$plugin" 3)" "$(info_field "$plugin" 4)" \
                "$(human_size "$ROOT/plugins/$plugin.wasm")" "${cells[@]}"
        done
        if [[ -s $BENCH_RESULTS/status.json ]] && command -v jq >/dev/null; then
            printf '\nreuse pools at the end (calls served by a kept instance, instances recycled):\n'
            jq -r '.reuse_pools[] | "  \(.route): \(.reused_calls) reused calls, \(.recycled) recycled, \(.idle) idle"' \
                "$BENCH_RESULTS/status.json"
        fi
        printf '\nfailed requests (socket errors, timeouts, status >= 400):%s\n' "${errors:- none}"
        noise_summary "$tsv" 12 13
        printf '\nraw output: %s\n' "$BENCH_RESULTS"
    } | tee "$BENCH_RESULTS/summary.md"
    [[ -z $errors ]] || die "some requests failed; the table is not to be trusted"
}

write_environment() {
    {
        environment_common
        echo "wasmgate: $("$GATEWAY_BIN" --version 2>&1)"
        local plugin
        for plugin in $BENCH_PLUGINS; do
            echo "plugin $plugin: $(wc -c <"$ROOT/plugins/$plugin.wasm") bytes, sha256 $(sha256sum "$ROOT/plugins/$plugin.wasm" | cut -c1-16)"
        done
        echo "settings: duration=$BENCH_DURATION rounds=$BENCH_ROUNDS warmup=$BENCH_WARMUP baseline_every=$BENCH_BASELINE_EVERY" \
            "connections=$BENCH_CONNECTIONS modes='$BENCH_MODES' reuse_max_calls=$BENCH_REUSE_MAX_CALLS" \
            "load_cpu=$BENCH_LOAD_CPU server_cpu=$BENCH_SERVER_CPU"
    } >"$BENCH_RESULTS/environment.txt"
}

# ----------------------------------------------------------------------------- main

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
    cat <<'EOF'

Environment (defaults in brackets):
  BENCH_QUICK=1            smoke test: 2s runs, 1 round
  BENCH_DURATION [5s]      BENCH_ROUNDS [2]     BENCH_WARMUP [1s]     BENCH_CONNECTIONS [4]
  BENCH_BASELINE_EVERY [6]
  BENCH_PLUGINS [all bundled]   BENCH_MODES ["fresh reuse"]   BENCH_REUSE_MAX_CALLS [1000]
  BENCH_LOAD_CPU [0]       BENCH_SERVER_CPU [1]
  BENCH_SKIP_INSTALL [0]   BENCH_SKIP_BUILD [0]   BENCH_START_TIMEOUT [300]
  BENCH_RESULTS [bench/results/plugins-<timestamp>]
  BENCH_GATEWAY_BIN [target/release/wasmgate]   BENCH_GATEWAY_LOG [warn]   BENCH_NOISE_LIMIT [5]
EOF
}

main() {
    case ${1:-} in
        -h | --help) usage; exit 0 ;;
        "") ;;
        *) usage >&2; exit 2 ;;
    esac
    check_cpus

    local missing=() tool
    for tool in wrk curl taskset openssl jq; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    install_packages "${missing[@]}"
    # Build the binaries only when missing: an existing build is what gets measured.
    if [[ ! -x $GATEWAY_BIN || ! -x $DEMO_BIN ]]; then
        [[ $BENCH_SKIP_BUILD == 1 ]] && die "$GATEWAY_BIN or $DEMO_BIN is missing (BENCH_SKIP_BUILD=1)"
        cargo_build -p wasmgate -p wasmgate-demo
    fi
    list_routes
    ensure_plugins

    mkdir -p "$BENCH_RESULTS/raw"
    make_work_dir wasmgate-bench-plugins
    mkdir -p "$WORK/lua"
    write_environment
    printf 'round\troute\tplugin\tmode\trequests\treq_per_s\tp50_ms\tp99_ms\terrors\tgateway_cpu_us_per_req\tupstream_cpu_us_per_req\tforeign_pct\tsteal_pct\n' \
        >"$BENCH_RESULTS/results.tsv"

    start_upstream
    start_gateway
    local route
    for route in "${ROUTES[@]}"; do
        verify_route "$route"
    done
    log "every route answers 2xx and shows its stage's work (answers in $BENCH_RESULTS/verify.txt)"

    local round order=("${ROUTES[@]:1}") i
    for round in $(seq "$BENCH_ROUNDS"); do
        local seq=0 since=0
        run_route "$round" $((++seq)) passthrough
        for route in "${order[@]}"; do
            run_route "$round" $((++seq)) "$route"
            if ((BENCH_BASELINE_EVERY > 0 && ++since % BENCH_BASELINE_EVERY == 0)); then
                run_route "$round" $((++seq)) passthrough
            fi
        done
        # The next round takes the plugin routes in the reverse order.
        local reversed=()
        for ((i = ${#order[@]} - 1; i >= 0; i--)); do reversed+=("${order[i]}"); done
        order=("${reversed[@]}")
    done

    report
}

main "$@"
