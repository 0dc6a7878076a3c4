#!/usr/bin/env bash
# bench/soak.sh — soak test: SOAK_DURATION (default 30 minutes) of mixed traffic through one
# gateway on every bundled plugin at once, while plugins and the config are reloaded every few
# seconds and hostile plugins (an endless loop, a memory bomb, a trap) fail on their own routes.
# Passes when no request got an answer it should not have (or none at all) and the gateway's RSS
# stayed flat.
#
#   bench/soak.sh                          30 minutes
#   SOAK_DURATION=60s bench/soak.sh        a quick check of the script and the build
#   SOAK_DURATION=2h SOAK_RELOAD_EVERY=1s bench/soak.sh
#
# Needs the release binaries and the plugins; it builds nothing:
#   cargo build --release -p wasmgate -p wasmgate-demo    target/release/wasmgate, wasmgate-demo
#   plugins/build.sh                                      the Rust plugins (required)
#   scripts/build-polyglot.sh                             the C, C++, Zig, Go, AssemblyScript,
#                                                         Python and JavaScript plugins (optional:
#                                                         flows whose plugin is missing are skipped)
#   cargo build -p wasmgate-fixtures                      the hostile fixtures (optional, skipped
#                                                         when missing; see "Fixtures" below)
#
# Starts, all on 127.0.0.1 with free ports: the `fast` demo upstream and the gateway
# (SOAK_WORKERS worker threads) on the server CPU, with a generated config (kept in the results)
# that has one route per plugin or chain; then one wrk process per flow (a flow is one kind of
# request on one route, e.g. "jwt with a valid token" or "jwt without a token") on the load CPU,
# all at once for the whole run, each counting its answers by status (bench/soak.lua). Before
# the load, every flow is checked once with curl.
#
# Every SOAK_RELOAD_EVERY the reloader takes the next plugin (round robin over every plugin the
# gateway has) and either rewrites its file with the same bytes (the gateway must notice nothing
# changed) or swaps in its other build; half a period later it rewrites the config, flipping a
# harmless setting (route passthrough's timeout, a header value of route transform). Every write
# is an atomic rename. The "other build" of a plugin is the same component plus a custom section
# (different bytes and hash, same behaviour); route `swap` alternates between two real builds,
# the fx-version-a and fx-version-b fixtures, and a request that ran on-request on one version
# and on-response on the other counts as unexpected. Both builds of every plugin are compiled
# into the run's cache before the load starts (`wasmgate check`, on all CPUs), so swaps under
# load load from the compiled-artifact cache.
#
# Expected answers per flow: 200 for good requests; 401 for the flows sending no or a wrong
# credential; 200 or 429 on route rate-limited (20 requests/s per client); 504 from the endless
# loop (deadline 100ms), 500 from the memory bomb (16 MiB cap) and the trap, 200 from the trap
# behind on-error = "fail-open". Anything else, a mixed-version answer, and every wrk socket
# error or timeout (SOAK_TIMEOUT) is an unexpected error. Reloads the gateway rejects, a gateway
# that exits, and a reloader that stops early fail the run too.
#
# The gateway's RSS (VmRSS of /proc/PID/status), with its threads and open file descriptors,
# goes into rss.csv at "start" (after SOAK_WARMUP), "middle", "end" (3 s before the load
# stops), every SOAK_SAMPLE_EVERY, and once more "after" the load. The run fails when RSS grew by
# more than SOAK_RSS_GROWTH_LIMIT % from middle to end (start to middle is warm-up: caches,
# pools, compiled code). Exit status: 0 pass, 1 fail.
#
# Fixtures: tests/fixtures/build.rs compiles tests/fixtures/guests/* for wasm32-wasip2 with a
# nested cargo whose target dir is $OUT_DIR/wasm-guests, i.e.
#   ${CARGO_TARGET_DIR:-target}/<profile>/build/wasmgate-fixtures-<hash>/out/wasm-guests/wasm32-wasip2/release/fx_loop.wasm
# and writes their absolute paths into .../out/fixtures.rs (`pub const FX_LOOP: &str = "...";`).
# This script reads the newest fixtures.rs whose paths exist (any profile), then falls back to
# globbing that directory; `cargo test` or `cargo build -p wasmgate-fixtures` (debug is fine)
# produces them. SOAK_FIXTURES_DIR=DIR uses DIR/fx_loop.wasm (or fx-loop.wasm) etc. instead.
# The same build also compiles the bundled Rust plugins (constants PLUGIN_*, in
# .../out/wasm-plugins/...): they are used when plugins/NAME.wasm is missing.
#
# Results go to bench/results/soak-<timestamp>/: summary.txt (what is printed), flows.tsv,
# rss.csv, reloads.tsv, verify.txt, status.json (admin API at the end), environment.txt,
# config/, raw/ (wrk output and status counts per flow), logs/ (gateway, upstream). See
# bench/README.md; `bench/soak.sh --help` lists the knobs.
set -euo pipefail

# ----------------------------------------------------------------------------- settings

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly ROOT
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

SOAK_DURATION=${SOAK_DURATION:-30m}              # 60s, 30m, 2h or seconds
SOAK_RELOAD_EVERY=${SOAK_RELOAD_EVERY:-3s}       # one plugin action, then half a period later a config rewrite
SOAK_RSS_GROWTH_LIMIT=${SOAK_RSS_GROWTH_LIMIT:-20}   # % RSS may grow from middle to end
SOAK_WARMUP=${SOAK_WARMUP:-}                     # when the "start" RSS is taken (default: a tenth of the run, 5s to 60s)
SOAK_SAMPLE_EVERY=${SOAK_SAMPLE_EVERY:-}         # RSS into rss.csv (default 60s; a tenth of the run if under 10 min)
SOAK_CONNECTIONS=${SOAK_CONNECTIONS:-2}          # wrk connections per well-behaved flow
SOAK_HOSTILE_CONNECTIONS=${SOAK_HOSTILE_CONNECTIONS:-1}
SOAK_HOSTILE_DELAY_MS=${SOAK_HOSTILE_DELAY_MS:-50}   # pause between requests of a hostile flow (keeps the log small)
SOAK_TIMEOUT=${SOAK_TIMEOUT:-5s}                 # wrk: an answer slower than this is a timeout (unexpected); whole seconds
SOAK_WORKERS=${SOAK_WORKERS:-2}                  # gateway worker threads
SOAK_FLOWS=${SOAK_FLOWS:-}                       # flows to run (default: every flow whose plugins exist)
SOAK_RELOAD_PLUGINS=${SOAK_RELOAD_PLUGINS:-}     # plugins the reloader cycles through (default: all)
SOAK_FIXTURES_DIR=${SOAK_FIXTURES_DIR:-}         # where fx_loop.wasm & co. are (default: found in the target dir)
SOAK_START_TIMEOUT=${SOAK_START_TIMEOUT:-300}     # seconds the gateway may take to listen
SOAK_GATEWAY_LOG=${SOAK_GATEWAY_LOG:-warn,wasmgate::reload=info}
SOAK_RESULTS=${SOAK_RESULTS:-$ROOT/bench/results/soak-$(date +%Y%m%d-%H%M%S)}

# What lib.sh reads.
BENCH_LOAD_CPU=${BENCH_LOAD_CPU:-0}              # wrk
BENCH_SERVER_CPU=${BENCH_SERVER_CPU:-1}          # upstream and gateway
BENCH_SKIP_INSTALL=${BENCH_SKIP_INSTALL:-0}
BENCH_RESULTS=$SOAK_RESULTS
BENCH_GATEWAY_LOG=$SOAK_GATEWAY_LOG
BENCH_GATEWAY_WORKERS=$SOAK_WORKERS

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
ADMIN_PORT=""
DURATION_S="" RELOAD_MS="" WARMUP_S="" SAMPLE_S="" TIMEOUT_S=""
T0=""                   # when the load started (date +%s)

# Credentials the auth stages are configured with and the flows present. Test values: everything
# stays on loopback.
JWT_SECRET=wasmgate-soak-jwt-secret-of-32-bytes-or-more
API_KEY=wasmgate-soak-api-key
HMAC_SECRET=6f1c0e9d2b7a48e3a5c4d1f0b9e8a7c6
HMAC_TS=""              # the signed timestamp: start + 3500 s, valid (max-skew 1h) for ~2 h
ORIGIN=https://app.example.com
JSON_BODY='{"user":{"id":42,"name":"Ada"},"password":"hunter2","items":[1,2,3]}'

RUST_PLUGINS="jwt-auth api-key-auth rate-limit transform aggregate-json"
POLYGLOT_PLUGINS="hmac-auth cors ip-filter request-rewrite server-timing json-guard response-envelope response-envelope-qjs"
RUNTIME_PLUGINS="request-rewrite json-guard response-envelope response-envelope-qjs"   # carry a language runtime
HOSTILE_FIXTURES="fx-loop fx-membomb fx-trap"

# ----------------------------------------------------------------------------- flows

# One line per flow: name, request path (its first segment names the route), expected statuses,
# hostile (1: fewer connections, a pause between requests), plugins it needs ("swap": the
# alternating plugin of route swap).
FLOW_TABLE='
passthrough      /passthrough/soak     200      0  -
transform        /transform/soak       200      0  transform
transform-reuse  /transform-reuse/soak 200      0  transform
jwt              /jwt/soak             200      0  jwt-auth transform
jwt-denied       /jwt/denied           401      0  jwt-auth transform
apikey           /apikey/soak          200      0  api-key-auth rate-limit transform
apikey-denied    /apikey/denied        401      0  api-key-auth rate-limit transform
rate-limited     /rate-limited/soak    200,429  0  rate-limit
aggregate        /aggregate/42         200      0  aggregate-json
swap             /swap/soak            200      0  swap
hmac-auth        /hmac-auth/soak       200      0  hmac-auth
cors             /cors/soak            200      0  cors
ip-filter        /ip-filter/soak       200      0  ip-filter
request-rewrite  /request-rewrite/soak 200      0  request-rewrite
server-timing    /server-timing/soak   200      0  server-timing
json-guard       /json-guard/soak      200      0  json-guard
response-envelope /response-envelope/soak 200   0  response-envelope
response-envelope-qjs /response-envelope-qjs/soak 200 0 response-envelope-qjs
loop             /loop/soak            504      1  fx-loop
membomb          /membomb/soak         500      1  fx-membomb
trap             /trap/soak            500      1  fx-trap
trap-open        /trap-open/soak       200      1  fx-trap
'

declare -A FLOW_PATH=() FLOW_EXPECT=() FLOW_HOSTILE=() FLOW_NEEDS=()
FLOWS=()                # the flows that run, in table order
ROUTES=()               # their routes, in order, each once
SKIPPED=()              # "what: why" lines for the summary

# Plugins the gateway gets: NAME → the file of build "a" and of build "b".
declare -A PLUGIN_A=() PLUGIN_B=() PLUGIN_FROM=()

route_of() { local path=${FLOW_PATH[$1]#/}; echo "${path%%/*}"; }

# ----------------------------------------------------------------------------- small helpers

# Seconds of a duration: 90, 90s, 30m, 2h (lib.sh's seconds_of knows ms, s, m).
secs_of() {
    local d=$1
    [[ $d =~ ^[0-9]+(ms|s|m|h)?$ ]] || die "not a duration: '$d' (e.g. 60s, 30m, 2h)"
    case $d in
        *h) echo $((${d%h} * 3600)) ;;
        *) seconds_of "$d" ;;
    esac
}

# Milliseconds of a duration: 500ms, 3s, 3.
millis_of() {
    local d=$1
    [[ $d =~ ^[0-9]+(ms|s)?$ ]] || die "not a duration: '$d' (e.g. 3s, 500ms)"
    case $d in
        *ms) echo "${d%ms}" ;;
        *s) echo $((${d%s} * 1000)) ;;
        *) echo $((d * 1000)) ;;
    esac
}

now() { date +%s; }
elapsed() { echo $(($(now) - T0)); }

# base64url without padding, of stdin.
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

# An HS256 JWT for jwt-auth (subject soak, expires in 2100).
make_jwt() {
    local head body sig
    head=$(printf '%s' '{"alg":"HS256","typ":"JWT"}' | b64url)
    body=$(printf '%s' '{"sub":"soak","tenant":"acme","exp":4102444800}' | b64url)
    sig=$(printf '%s' "$head.$body" | openssl dgst -sha256 -hmac "$JWT_SECRET" -binary | b64url)
    echo "$head.$body.$sig"
}

# ----------------------------------------------------------------------------- plugins

# The cargo target directories to look for test fixtures in: CARGO_TARGET_DIR, then target/.
target_dirs() {
    [[ -d $TARGET_DIR ]] && echo "$TARGET_DIR"
    [[ $TARGET_DIR -ef $ROOT/target || ! -d $ROOT/target ]] || echo "$ROOT/target"
}

# Prints the path of test fixture constant $1 (FX_LOOP, PLUGIN_JWT_AUTH, ...) as the newest
# fixtures.rs written by tests/fixtures/build.rs names it, if that file exists.
fixture_const() {
    local const=$1 dir rs path
    while IFS= read -r dir; do
        while IFS= read -r rs; do
            path=$(sed -n "s/^pub const $const: &str = \"\(.*\)\";\$/\1/p" "$rs")
            [[ -n $path && -f $path ]] && { echo "$path"; return 0; }
        done < <(find "$dir" -maxdepth 6 -path '*/build/wasmgate-fixtures-*/out/fixtures.rs' \
            -printf '%T@ %p\n' 2>/dev/null | sort -rn | cut -d' ' -f2-)
    done < <(target_dirs)
    return 1
}

# Prints the path of the guest fixture component $1 (e.g. fx-loop), or fails.
fixture_path() {
    local name=$1 file=${1//-/_}.wasm candidate
    if [[ -n $SOAK_FIXTURES_DIR ]]; then
        for candidate in "$SOAK_FIXTURES_DIR/$file" "$SOAK_FIXTURES_DIR/$name.wasm"; do
            [[ -f $candidate ]] && { echo "$candidate"; return 0; }
        done
        return 1
    fi
    local const=${name^^}
    fixture_const "${const//-/_}" && return 0
    # No fixtures.rs (or it names other paths): where build.rs puts them.
    candidate=$(target_dirs | xargs -r -I{} find {} -maxdepth 9 -path "*/build/wasmgate-fixtures-*/out/wasm-guests/wasm32-wasip2/release/$file" \
        -printf '%T@ %p\n' 2>/dev/null | sort -rn | head -n1 | cut -d' ' -f2- || true)
    [[ -n $candidate ]] && { echo "$candidate"; return 0; }
    return 1
}

# Writes build "b" of plugin $1 to $2: build "a" plus a custom section, so different bytes (a
# new content hash: the gateway loads it) with the same behaviour. A custom section is id 0,
# its size, then a name (length-prefixed) and any payload; all lengths here fit one LEB128 byte.
make_variant() {
    { cat "${PLUGIN_A[$1]}"; printf '\x00\x0f\x0dwasmgate-soakb'; } >"$2"
}

# Fills PLUGIN_A/PLUGIN_B/PLUGIN_FROM with every plugin available; records what is missing.
resolve_plugins() {
    local name src missing=()
    for name in $RUST_PLUGINS; do
        src=$ROOT/plugins/$name.wasm
        if [[ -f $src ]]; then
            PLUGIN_FROM[$name]="plugins/$name.wasm"
        else
            local const=PLUGIN_${name^^}
            src=$(fixture_const "${const//-/_}") || { missing+=("$name"); continue; }
            PLUGIN_FROM[$name]="$src (built by tests/fixtures/build.rs; plugins/$name.wasm is missing)"
        fi
        PLUGIN_A[$name]=$src
    done
    ((${#missing[@]} == 0)) || die "missing Rust plugins: ${missing[*]}; build them with plugins/build.sh"

    missing=()
    for name in $POLYGLOT_PLUGINS; do
        src=$ROOT/plugins/$name.wasm
        if [[ -f $src ]]; then
            PLUGIN_A[$name]=$src
            PLUGIN_FROM[$name]="plugins/$name.wasm"
        else
            missing+=("$name")
        fi
    done
    ((${#missing[@]} == 0)) || SKIPPED+=("polyglot plugins ${missing[*]}: no plugins/NAME.wasm (scripts/build-polyglot.sh builds them); their flows are skipped")

    missing=()
    for name in $HOSTILE_FIXTURES; do
        if src=$(fixture_path "$name"); then
            PLUGIN_A[$name]=$src
            PLUGIN_FROM[$name]=$src
        else
            missing+=("$name")
        fi
    done
    ((${#missing[@]} == 0)) || SKIPPED+=("hostile fixtures ${missing[*]}: not found (cargo build -p wasmgate-fixtures builds them, or set SOAK_FIXTURES_DIR); their flows are skipped")

    # Route swap: two real builds if the reload fixtures exist, else transform and its variant.
    local version_a version_b
    if version_a=$(fixture_path fx-version-a) && version_b=$(fixture_path fx-version-b); then
        PLUGIN_A[swap]=$version_a
        PLUGIN_B[swap]=$version_b
        PLUGIN_FROM[swap]="fx-version-a / fx-version-b: $version_a, $version_b"
    else
        PLUGIN_A[swap]=${PLUGIN_A[transform]}
        PLUGIN_FROM[swap]="transform, and transform plus a custom section (fx-version-a/b fixtures not found)"
        SKIPPED+=("fx-version-a/b fixtures: not found; route swap alternates transform and a copy with a custom section instead")
    fi
}

# Reads FLOW_TABLE, keeps the flows whose plugins are all there (and that SOAK_FLOWS names).
select_flows() {
    local name path expect hostile needs known=() wanted=" ${SOAK_FLOWS} "
    while read -r name path expect hostile needs; do
        [[ -n $name ]] || continue
        known+=("$name")
        FLOW_PATH[$name]=$path FLOW_EXPECT[$name]=$expect FLOW_HOSTILE[$name]=$hostile FLOW_NEEDS[$name]=$needs
    done <<<"$FLOW_TABLE"
    local flow
    for flow in $SOAK_FLOWS; do
        [[ -n ${FLOW_PATH[$flow]:-} ]] || die "unknown flow $flow in SOAK_FLOWS (known: ${known[*]})"
    done
    local plugin ok route
    # Route passthrough is always there: the gateway's readiness is checked on it.
    declare -A seen=([passthrough]=1)
    ROUTES=(passthrough)
    for flow in "${known[@]}"; do
        [[ -z $SOAK_FLOWS || $wanted == *" $flow "* ]] || continue
        ok=1
        for plugin in ${FLOW_NEEDS[$flow]}; do
            [[ $plugin == - || -n ${PLUGIN_A[$plugin]:-} ]] || ok=0
        done
        ((ok)) || continue
        if [[ $flow == hmac-auth ]] && ((DURATION_S > 6900)); then
            SKIPPED+=("flow hmac-auth: its signed timestamp stays within max-skew (1h max) for under 2 h only")
            continue
        fi
        FLOWS+=("$flow")
        route=$(route_of "$flow")
        [[ -n ${seen[$route]:-} ]] || { seen[$route]=1; ROUTES+=("$route"); }
    done
    ((${#FLOWS[@]})) || die "no flow to run"
    # Only the plugins some route uses go into the plugin directory.
    local used=" "
    for flow in "${FLOWS[@]}"; do used+="${FLOW_NEEDS[$flow]} "; done
    for plugin in "${!PLUGIN_A[@]}"; do
        [[ $used == *" $plugin "* ]] || unset "PLUGIN_A[$plugin]"
    done
}

# ----------------------------------------------------------------------------- config

# The TOML of route $1; $2 (0 or 1) is the harmless setting config reloads flip.
route_toml() {
    local route=$1 toggle=$2 match upstream='upstream = "fast"' extra="" stages=""
    local ab=a
    ((toggle)) && ab=b
    match="prefix = \"/$route\""
    case $route in
        passthrough) extra="timeout = \"$((5 + toggle))s\"" ;;
        transform) stages="{ plugin = \"transform\", config = { request = { headers = { set = { \"x-soak\" = \"{route}\" } } }, response = { headers = { set = { \"x-soak-config\" = \"$ab\" } } } } }" ;;
        transform-reuse) stages='{ plugin = "transform", config = { request = { headers = { set = { "x-soak" = "{route}" } } }, response = { headers = { set = { "x-soak-transform" = "on" } } } }, limits = { reuse = { max-calls = 1000 } } }' ;;
        jwt) stages="{ plugin = \"jwt-auth\", config = { keys = [{ secret = \"$JWT_SECRET\" }], forward-claims = [\"tenant\"] } },
  { plugin = \"transform\", config = { request = { headers = { set = { \"x-user\" = \"{identity.subject}\" } } }, response = { headers = { set = { \"x-served-via\" = \"wasmgate\" } } } } }" ;;
        apikey) stages="{ plugin = \"api-key-auth\", config = { keys = [{ name = \"soak\", sha256 = \"$(printf %s "$API_KEY" | sha256sum | cut -d' ' -f1)\" }] } },
  { plugin = \"rate-limit\", config = { key = \"subject\", limits = [{ requests = 1000000000, window = \"1s\" }] } },
  { plugin = \"transform\", config = { request = { headers = { set = { \"x-user\" = \"{identity.subject}\" } } } }, limits = { reuse = { max-calls = 1000 } } }" ;;
        rate-limited) stages='{ plugin = "rate-limit", config = { key = "ip", limits = [{ requests = 20, window = "1s" }] } }' ;;
        aggregate)
            match='path = "/aggregate/{id}"'
            upstream=""
            stages='{ plugin = "aggregate-json", upstreams = ["fast"], config = { calls = [{ name = "user", upstream = "fast", uri = "/users/{id}" }, { name = "orders", upstream = "fast", uri = "/orders?user={id}" }], on-error = "fail", timeout-ms = 2000 } }'
            ;;
        swap) stages='{ plugin = "swap", config = { response = { headers = { set = { "x-soak-swap" = "on" } } } } }' ;;
        hmac-auth) stages="{ plugin = \"hmac-auth\", config = { keys = [{ id = \"soak\", secret = \"$HMAC_SECRET\" }], max-skew = \"1h\" } }" ;;
        cors) stages="{ plugin = \"cors\", config = { allow-origins = [\"$ORIGIN\"], expose-headers = [\"x-request-id\"] } }" ;;
        ip-filter) stages='{ plugin = "ip-filter", config = { allow = ["127.0.0.1/32"] } }' ;;
        request-rewrite) stages='{ plugin = "request-rewrite", config = { query = { set = { source = "gateway" } }, request-headers = { set = { x-route = "{route}" } }, response-headers = { set = { x-original-uri = "{var.rewrite.original-uri}" } } } }' ;;
        server-timing) stages='{ plugin = "server-timing", config = { metric = "gw" } }' ;;
        json-guard) stages='{ plugin = "json-guard", config = { redact = ["password"], require = ["user.id"] }, body = { buffer = true } }' ;;
        response-envelope | response-envelope-qjs) stages="{ plugin = \"$route\", config = { meta = { version = \"v1\" } }, body = { buffer = true } }" ;;
        loop) stages='{ plugin = "fx-loop", limits = { deadline = "100ms" } }' ;;
        membomb) stages='{ plugin = "fx-membomb", limits = { memory = "16MiB", deadline = "5s" } }' ;;
        trap) stages='{ plugin = "fx-trap" }' ;;
        trap-open) stages='{ plugin = "fx-trap", on-error = "fail-open" }' ;;
        *) die "no route $route" ;;
    esac
    printf '\n[[routes]]\nname = "%s"\n%s\n' "$route" "$match"
    [[ -z $upstream ]] || echo "$upstream"
    [[ -z $extra ]] || echo "$extra"
    [[ -z $stages ]] || printf 'stages = [\n  %s,\n]\n' "$stages"
}

# The gateway config; $1 as in route_toml.
gateway_config() {
    local toggle=$1 plugin route
    cat <<EOF
# Generated by bench/soak.sh. Config reloads rewrite this file, flipping route passthrough's
# timeout (5s / 6s) and the x-soak-config header of route transform (a / b).
[server]
listen = ["127.0.0.1:$GATEWAY_PORT"]

[plugins]
dir = "plugins"
# Both builds of every plugin are compiled in here before the load (wasmgate check).
cache-dir = "$WORK/cache"
watch = true

[limits]
memory = "32MiB"
deadline = "200ms"

[admin]
listen = "127.0.0.1:$ADMIN_PORT"

[upstreams.fast]
targets = ["127.0.0.1:$UPSTREAM_PORT"]
timeout = "5s"
EOF
    # The language runtimes need room, and keep instances between calls (as config/polyglot.toml).
    for plugin in $RUNTIME_PLUGINS; do
        [[ -n ${PLUGIN_A[$plugin]:-} ]] || continue
        printf '\n[plugins.limits.%s]\nmemory = "64MiB"\ndeadline = "5s"\nreuse = { max-calls = 1000 }\n' "$plugin"
    done
    for route in "${ROUTES[@]}"; do
        route_toml "$route" "$toggle"
    done
}

# Writes file $1 to $2 by an atomic rename through WORK/stage (same file system as the target).
install_file() {
    local staged
    staged=$WORK/stage/$(basename "$2")
    cp "$1" "$staged"
    mv -f "$staged" "$2"
}

write_config() {
    gateway_config "$1" >"$WORK/stage/gateway.toml"
    mv -f "$WORK/stage/gateway.toml" "$WORK/gateway/gateway.toml"
}

# Lays out WORK/gateway (config, plugins: build a) and WORK/check-b (the same with build b and
# the other config setting), and compiles both into the shared cache-dir with `wasmgate check`.
prepare_gateway() {
    GATEWAY_PORT=$(free_port)
    ADMIN_PORT=$(free_port)
    mkdir -p "$WORK/gateway/plugins" "$WORK/check-b/plugins" "$WORK/cache" "$WORK/stage" "$WORK/variants" \
        "$SOAK_RESULTS/config"
    # The gateway uses a cache directory only if no one else may write to it.
    chmod 700 "$WORK/cache"
    local plugin
    for plugin in "${!PLUGIN_A[@]}"; do
        cp "${PLUGIN_A[$plugin]}" "$WORK/variants/$plugin.a.wasm"
        if [[ -n ${PLUGIN_B[$plugin]:-} ]]; then
            cp "${PLUGIN_B[$plugin]}" "$WORK/variants/$plugin.b.wasm"
        else
            make_variant "$plugin" "$WORK/variants/$plugin.b.wasm"
        fi
        cp "$WORK/variants/$plugin.a.wasm" "$WORK/gateway/plugins/$plugin.wasm"
        cp "$WORK/variants/$plugin.b.wasm" "$WORK/check-b/plugins/$plugin.wasm"
    done
    gateway_config 0 >"$WORK/gateway/gateway.toml"
    gateway_config 1 >"$WORK/check-b/gateway.toml"
    cp "$WORK/gateway/gateway.toml" "$SOAK_RESULTS/config/gateway.toml"
    cp "$WORK/check-b/gateway.toml" "$SOAK_RESULTS/config/gateway-toggled.toml"

    local started=$SECONDS dir
    log "wasmgate check: compiling ${#PLUGIN_A[@]} plugins, two builds each, into the run's cache"
    for dir in gateway check-b; do
        "$GATEWAY_BIN" check --config "$WORK/$dir/gateway.toml" >"$WORK/check-$dir.log" 2>&1 \
            || die "wasmgate check refused the generated config ($dir): $(cat "$WORK/check-$dir.log")"
    done
    log "compiled in $((SECONDS - started))s"
}

# ----------------------------------------------------------------------------- requests

# The request of flow $1: sets REQ_METHOD, REQ_BODY_FILE ("-": none) and REQ_HEADERS.
REQ_METHOD="" REQ_BODY_FILE="" REQ_HEADERS=()
request_for() {
    REQ_METHOD=GET REQ_BODY_FILE=- REQ_HEADERS=()
    case $1 in
        jwt) REQ_HEADERS=("authorization: Bearer $(make_jwt)") ;;
        apikey) REQ_HEADERS=("x-api-key: $API_KEY") ;;
        apikey-denied) REQ_HEADERS=("x-api-key: not-$API_KEY") ;;
        hmac-auth)
            local sig
            sig=$(printf 'GET\n%s\n%s' "${FLOW_PATH[$1]}" "$HMAC_TS" | openssl dgst -sha256 -hmac "$HMAC_SECRET" -r | cut -d' ' -f1)
            REQ_HEADERS=("x-key-id: soak" "x-timestamp: $HMAC_TS" "x-signature: $sig")
            ;;
        cors) REQ_HEADERS=("origin: $ORIGIN") ;;
        json-guard)
            REQ_METHOD=POST REQ_BODY_FILE=$WORK/body.json
            REQ_HEADERS=("content-type: application/json")
            ;;
    esac
}

flow_url() { echo "http://127.0.0.1:$GATEWAY_PORT${FLOW_PATH[$1]}"; }

# Is status $2 among flow $1's expected ones?
expected() { [[ ,${FLOW_EXPECT[$1]}, == *,$2,* ]]; }

# One request per flow with curl: dies with the answer unless its status is expected.
verify_flows() {
    local flow out status args header
    for flow in "${FLOWS[@]}"; do
        request_for "$flow"
        args=()
        for header in "${REQ_HEADERS[@]}"; do args+=(-H "$header"); done
        [[ $REQ_BODY_FILE == - ]] || args+=(--data-binary "@$REQ_BODY_FILE")
        out=$(curl -sS -i --max-time 10 -X "$REQ_METHOD" "${args[@]}" "$(flow_url "$flow")" 2>&1) \
            || die "flow $flow: curl failed: $out"
        status=$(sed -n '1s/^HTTP\/[0-9.]* \([0-9]*\).*/\1/p' <<<"$out")
        printf '== %s: %s %s → %s (expected %s)\n%s\n\n' "$flow" "$REQ_METHOD" "$(flow_url "$flow")" \
            "${status:-nothing}" "${FLOW_EXPECT[$flow]}" "$out" >>"$SOAK_RESULTS/verify.txt"
        expected "$flow" "${status:-none}" \
            || die "flow $flow: answered ${status:-nothing}, expected ${FLOW_EXPECT[$flow]}:
$out"
    done
    log "every flow answers as expected once (answers in $SOAK_RESULTS/verify.txt)"
}

# ----------------------------------------------------------------------------- load

WRK_PIDS=()
declare -A WRK_PID_OF=()

start_load() {
    local flow conns delay
    mkdir -p "$SOAK_RESULTS/raw"
    for flow in "${FLOWS[@]}"; do
        request_for "$flow"
        conns=$SOAK_CONNECTIONS delay=0
        if [[ ${FLOW_HOSTILE[$flow]} == 1 ]]; then
            conns=$SOAK_HOSTILE_CONNECTIONS delay=$SOAK_HOSTILE_DELAY_MS
        fi
        : >"$SOAK_RESULTS/raw/$flow.statuses.tsv"
        taskset -c "$BENCH_LOAD_CPU" timeout $((DURATION_S + 60)) \
            wrk -t1 -c"$conns" -d"${DURATION_S}s" --timeout "${TIMEOUT_S}s" --latency \
            -s "$ROOT/bench/soak.lua" "$(flow_url "$flow")" -- \
            "$flow" "$SOAK_RESULTS/raw/$flow.statuses.tsv" "${FLOW_EXPECT[$flow]}" "$delay" \
            "$REQ_METHOD" "$REQ_BODY_FILE" "${REQ_HEADERS[@]}" \
            >"$SOAK_RESULTS/raw/$flow.txt" 2>&1 &
        WRK_PIDS+=("$!")
        WRK_PID_OF[$flow]=$!
        STARTED_PIDS+=("$!")
    done
    log "load: ${#FLOWS[@]} flows (wrk -t1 -c$SOAK_CONNECTIONS each, hostile ones -c$SOAK_HOSTILE_CONNECTIONS with ${SOAK_HOSTILE_DELAY_MS}ms pauses) for ${DURATION_S}s"
}

# Runs in the background for the whole load: every SOAK_RELOAD_EVERY one plugin action (the next
# plugin, round robin; same bytes and the other build in turn), half a period later a config
# rewrite with the setting flipped. One line per action in reloads.tsv.
reloader() {
    local plugins=() tick=0 plugin toggle=0 half_s
    read -r -a plugins <<<"$RELOAD_PLUGIN_LIST"
    declare -A current=()
    for plugin in "${plugins[@]}"; do current[$plugin]=a; done
    half_s=$(awk -v ms="$RELOAD_MS" 'BEGIN { printf "%.3f", ms / 2000 }')
    local stop=$((T0 + DURATION_S - 2))
    printf 'elapsed_s\taction\ttarget\tbuild\n' >"$SOAK_RESULTS/reloads.tsv"
    while (($(now) + 1 < stop)); do
        plugin=${plugins[(tick / 2) % ${#plugins[@]}]}
        if ((tick % 2 == 0)); then
            install_file "$WORK/variants/$plugin.${current[$plugin]}.wasm" "$WORK/gateway/plugins/$plugin.wasm"
            printf '%s\tsame-bytes\t%s\t%s\n' "$(elapsed)" "$plugin" "${current[$plugin]}" >>"$SOAK_RESULTS/reloads.tsv"
        else
            if [[ ${current[$plugin]} == a ]]; then current[$plugin]=b; else current[$plugin]=a; fi
            install_file "$WORK/variants/$plugin.${current[$plugin]}.wasm" "$WORK/gateway/plugins/$plugin.wasm"
            printf '%s\tswap\t%s\t%s\n' "$(elapsed)" "$plugin" "${current[$plugin]}" >>"$SOAK_RESULTS/reloads.tsv"
        fi
        tick=$((tick + 1))
        sleep "$half_s"
        (($(now) + 1 < stop)) || break
        toggle=$((1 - toggle))
        write_config "$toggle"
        printf '%s\tconfig\tgateway.toml\t%s\n' "$(elapsed)" "$toggle" >>"$SOAK_RESULTS/reloads.tsv"
        sleep "$half_s"
    done
    echo "done" >"$WORK/reloader.done"
}

# Appends one line to rss.csv: elapsed, label, VmRSS, VmHWM (KiB), threads, open fds.
sample_rss() {
    local label=$1 fds
    [[ -r /proc/$GATEWAY_PID/status ]] || return 0
    fds=$(find "/proc/$GATEWAY_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
    awk -v t="$(elapsed)" -v label="$label" -v fds="$fds" '
        /^VmRSS:/ { rss = $2 } /^VmHWM:/ { hwm = $2 } /^Threads:/ { threads = $2 }
        END { printf "%s,%s,%s,%s,%s,%s\n", t, label, rss, hwm, threads, fds }' \
        "/proc/$GATEWAY_PID/status" >>"$SOAK_RESULTS/rss.csv"
}

# Stops the load early: the wrk processes (SIGINT, forwarded by timeout: wrk then reports what
# it has) and the reloader.
stop_load() {
    local pid
    for pid in "${WRK_PIDS[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
    kill "$RELOADER_PID" 2>/dev/null || true
}

# In the foreground during the load: RSS samples on schedule, and a watch on the gateway and
# the reloader (either one ending early stops the load). Sets GATEWAY_DIED / RELOADER_DIED.
GATEWAY_DIED=0 RELOADER_DIED=0 WRK_DIED=0
watch_run() {
    local schedule at label last_minute=-1
    schedule=$(
        for ((at = SAMPLE_S; at < DURATION_S - 3; at += SAMPLE_S)); do echo "$at periodic"; done
        echo "$WARMUP_S start"
        echo "$((DURATION_S / 2)) middle"
        echo "$((DURATION_S - 3)) end"
    )
    echo "elapsed_s,label,rss_kib,hwm_kib,threads,fds" >"$SOAK_RESULTS/rss.csv"
    sample_rss load-start
    while read -r at label; do
        while (($(elapsed) < at)); do
            if ! kill -0 "$GATEWAY_PID" 2>/dev/null; then
                GATEWAY_DIED=1
                log "error: the gateway exited after $(elapsed)s (log: $SOAK_RESULTS/logs/gateway.log); stopping"
                stop_load
                return
            fi
            local flow
            for flow in "${FLOWS[@]}"; do
                if ((WRK_DIED == 0 && $(elapsed) < DURATION_S - 5)) && ! kill -0 "${WRK_PID_OF[$flow]}" 2>/dev/null; then
                    WRK_DIED=1
                    log "error: wrk for flow $flow exited after $(elapsed)s (see $SOAK_RESULTS/raw/$flow.txt); stopping"
                    stop_load
                    return
                fi
            done
            if ! kill -0 "$RELOADER_PID" 2>/dev/null && [[ ! -f $WORK/reloader.done ]]; then
                RELOADER_DIED=1
                log "error: the reloader stopped after $(elapsed)s (see $SOAK_RESULTS/logs/reloader.log); stopping"
                stop_load
                return
            fi
            if (($(elapsed) / 60 != last_minute)) && (($(elapsed) >= 60)); then
                last_minute=$(($(elapsed) / 60))
                log "$(elapsed)s of ${DURATION_S}s: $(($(wc -l <"$SOAK_RESULTS/reloads.tsv") - 1)) reload actions, RSS $(awk '/^VmRSS:/ { printf "%.1f MiB", $2 / 1024 }' "/proc/$GATEWAY_PID/status")"
            fi
            sleep 0.5
        done
        sample_rss "$label"
        [[ $label == periodic ]] || log "RSS $label: $(tail -n1 "$SOAK_RESULTS/rss.csv" | cut -d, -f3) KiB"
    done < <(sort -n -s -k1,1 <<<"$schedule")
}

# ----------------------------------------------------------------------------- report

FAILURES=()

# The RSS (KiB) of sample $1 in rss.csv.
rss_at() { awk -F, -v l="$1" '$2 == l { v = $3 } END { print v }' "$SOAK_RESULTS/rss.csv"; }
fds_at() { awk -F, -v l="$1" '$2 == l { v = $6 } END { print v == "" ? "-" : v }' "$SOAK_RESULTS/rss.csv"; }
mib() { awk -v k="$1" 'BEGIN { if (k == "") print "-"; else printf "%.1f MiB", k / 1024 }'; }
growth() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || a == 0) print "-"; else printf "%+.1f", (b - a) * 100 / a }'; }

report() {
    local flow tsv=$SOAK_RESULTS/flows.tsv raw result unexpected_total=0 socket_total=0 requests_total=0
    printf 'flow\troute\texpected\trequests\tstatuses\tsocket_errors\tunexpected\tp99_ms\n' >"$tsv"
    for flow in "${FLOWS[@]}"; do
        raw=$SOAK_RESULTS/raw/$flow.txt
        result=$(grep '^RESULT ' "$raw" | tail -n1 || true)
        local requests statuses bad socket p99
        if [[ -z $result ]]; then
            FAILURES+=("flow $flow: wrk gave no result (see raw/$flow.txt)")
            socket=-
            p99=-
        else
            socket=$(($(field "$result" connect) + $(field "$result" read) + $(field "$result" write) + $(field "$result" timeout)))
            p99=$(awk -v us="$(field "$result" p99_us)" 'BEGIN { printf "%.1f", us / 1000 }')
        fi
        requests=$(awk -F'\t' '{ n += $3 } END { print n + 0 }' "$SOAK_RESULTS/raw/$flow.statuses.tsv")
        statuses=$(sort -t$'\t' -k2,2 "$SOAK_RESULTS/raw/$flow.statuses.tsv" \
            | awk -F'\t' '{ printf "%s%s×%d", sep, $2, $3; sep = " " }')
        bad=$(awk -F'\t' -v want=",${FLOW_EXPECT[$flow]}," '{ status = $2; sub(/\/v.*/, "", status) } index(want, "," status ",") == 0 { n += $3 } END { print n + 0 }' \
            "$SOAK_RESULTS/raw/$flow.statuses.tsv")
        [[ $socket == - ]] || bad=$((bad + socket))
        ((requests > 0)) || FAILURES+=("flow $flow: no answer at all")
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$flow" "$(route_of "$flow")" "${FLOW_EXPECT[$flow]}" \
            "$requests" "${statuses:--}" "$socket" "$bad" "$p99" >>"$tsv"
        unexpected_total=$((unexpected_total + bad))
        [[ $socket == - ]] || socket_total=$((socket_total + socket))
        requests_total=$((requests_total + requests))
    done
    ((unexpected_total == 0)) || FAILURES+=("$unexpected_total unexpected errors (statuses not expected, socket errors, timeouts)")

    # Reloads: what the reloader did, what the gateway made of it.
    local same swaps configs generation="-" rejected=0 config_error="" loaded=0 reloaded=0 clean_log
    same=$(awk -F'\t' '$2 == "same-bytes"' "$SOAK_RESULTS/reloads.tsv" | wc -l)
    swaps=$(awk -F'\t' '$2 == "swap"' "$SOAK_RESULTS/reloads.tsv" | wc -l)
    configs=$(awk -F'\t' '$2 == "config"' "$SOAK_RESULTS/reloads.tsv" | wc -l)
    if curl -fsS --max-time 5 "http://127.0.0.1:$ADMIN_PORT/status" >"$SOAK_RESULTS/status.json" 2>/dev/null; then
        generation=$(jq -r '.generation' "$SOAK_RESULTS/status.json")
        config_error=$(jq -r '.config_error // empty' "$SOAK_RESULTS/status.json")
        local plugin_errors
        plugin_errors=$(jq -r '.plugins[] | select(.last_error != null) | "\(.name): \(.last_error)"' "$SOAK_RESULTS/status.json")
        [[ -z $plugin_errors ]] || FAILURES+=("plugins the gateway rejected: $plugin_errors")
    else
        FAILURES+=("the admin API did not answer at the end")
    fi
    [[ -z $config_error ]] || FAILURES+=("the gateway rejected a config rewrite: $config_error")
    clean_log=$WORK/gateway-log.txt
    sed 's/\x1b\[[0-9;]*m//g' "$WORK/gateway.log" >"$clean_log"
    rejected=$(grep -cE 'plugin rejected|config rejected' "$clean_log" || true)
    loaded=$(grep -c 'wasmgate::reload: plugin loaded' "$clean_log" || true)
    reloaded=$(grep -c 'wasmgate::reload: config reloaded' "$clean_log" || true)
    ((rejected == 0)) || FAILURES+=("$rejected reload rejections in the gateway log")
    if ((swaps + configs > 0)) && [[ $generation == 0 ]]; then
        FAILURES+=("the gateway never swapped its state although the files changed $((swaps + configs)) times")
    fi
    ((GATEWAY_DIED == 0)) || FAILURES+=("the gateway exited during the run")
    ((RELOADER_DIED == 0)) || FAILURES+=("the reloader stopped early")
    ((WRK_DIED == 0)) || FAILURES+=("a wrk process exited early; the load was stopped")

    # Log lines at ERROR/WARN, split by whether a hostile fixture caused them.
    local hostile_re errors_hostile errors_other warns_hostile warns_other
    hostile_re='fx-(loop|membomb|trap)'
    errors_hostile=$(grep -E ' ERROR ' "$clean_log" | grep -cE "$hostile_re" || true)
    errors_other=$(grep -E ' ERROR ' "$clean_log" | grep -vcE "$hostile_re" || true)
    warns_hostile=$(grep -E ' WARN ' "$clean_log" | grep -cE "$hostile_re" || true)
    warns_other=$(grep -E ' WARN ' "$clean_log" | grep -vcE "$hostile_re" || true)

    # RSS.
    local rss_start rss_mid rss_end rss_after growth_mid_end growth_start_end
    rss_start=$(rss_at start) rss_mid=$(rss_at middle) rss_end=$(rss_at end) rss_after=$(rss_at after)
    growth_mid_end=$(growth "$rss_mid" "$rss_end")
    growth_start_end=$(growth "$rss_start" "$rss_end")
    if [[ $growth_mid_end == - ]]; then
        FAILURES+=("no middle or end RSS sample")
    elif awk -v g="$growth_mid_end" -v l="$SOAK_RSS_GROWTH_LIMIT" 'BEGIN { exit !(g > l) }'; then
        FAILURES+=("gateway RSS grew ${growth_mid_end}% from middle to end (limit ${SOAK_RSS_GROWTH_LIMIT}%)")
    fi

    {
        printf '\nwasmgate soak — %ss of mixed traffic on %d flows (%d routes), a reload action every %sms; gateway %s worker thread(s) on CPU %s, wrk on CPU %s\n\n' \
            "$DURATION_S" "${#FLOWS[@]}" "${#ROUTES[@]}" "$((RELOAD_MS / 2))" "$SOAK_WORKERS" "$BENCH_SERVER_CPU" "$BENCH_LOAD_CPU"
        awk -F'\t' 'NR == 1 { printf "%-22s %-22s %-8s %10s  %-9s %8s %8s  %s\n", "flow", "route", "expected", "requests", "socket_err", "p99 ms", "UNEXPECTED", "statuses"; next }
            { printf "%-22s %-22s %-8s %10s  %-9s %8s %8s  %s\n", $1, $2, $3, $4, $6, $8, $7, $5 }' "$tsv"
        printf '%-22s %-22s %-8s %10s  %-9s %8s %8s\n' total "" "" "$requests_total" "$socket_total" "" "$unexpected_total"
        printf '\nunexpected errors: %s (answers with a status the flow does not expect, mixed-version answers, wrk socket errors and timeouts over %s)\n' \
            "$unexpected_total" "$SOAK_TIMEOUT"
        printf 'reloads: %s rewrites with the same bytes, %s swaps to the other build, %s config rewrites; gateway state swaps (generation): %s; logged: %s plugin loads, %s config reloads, %s rejections\n' \
            "$same" "$swaps" "$configs" "$generation" "$loaded" "$reloaded" "$rejected"
        printf 'gateway log: ERROR lines: %s from the hostile plugins (expected), %s others; WARN lines: %s from the hostile plugins, %s others\n' \
            "$errors_hostile" "$errors_other" "$warns_hostile" "$warns_other"
        if ((errors_other + warns_other > 0)); then
            grep -E ' (ERROR|WARN) ' "$clean_log" | grep -vE "$hostile_re" | head -n5 | cut -c1-300 | sed 's/^/    /'
        fi
        printf 'gateway RSS: start %s (at %ss), middle %s (at %ss), end %s (at %ss): %s%% middle→end (limit %s%%), %s%% start→end; %s after the load\n' \
            "$(mib "$rss_start")" "$WARMUP_S" "$(mib "$rss_mid")" "$((DURATION_S / 2))" "$(mib "$rss_end")" "$((DURATION_S - 3))" \
            "$growth_mid_end" "$SOAK_RSS_GROWTH_LIMIT" "$growth_start_end" "$(mib "$rss_after")"
        printf 'gateway open fds: start %s, middle %s, end %s, after %s\n' \
            "$(fds_at start)" "$(fds_at middle)" "$(fds_at end)" "$(fds_at after)"
        if ((${#SKIPPED[@]})); then
            printf '\nskipped:\n'
            printf '  %s\n' "${SKIPPED[@]}"
        fi
        printf '\nresults: %s\n' "$SOAK_RESULTS"
        if ((${#FAILURES[@]})); then
            printf '\nFAIL:\n'
            printf '  %s\n' "${FAILURES[@]}"
        else
            printf '\nPASS: 0 unexpected errors, RSS flat (%s%% middle→end)\n' "$growth_mid_end"
        fi
    } | tee "$SOAK_RESULTS/summary.txt"
    ((${#FAILURES[@]} == 0))
}

write_environment() {
    {
        environment_common
        echo "wasmgate: $("$GATEWAY_BIN" --version 2>&1)"
        local plugin
        for plugin in $(printf '%s\n' "${!PLUGIN_A[@]}" | sort); do
            echo "plugin $plugin: $(wc -c <"${PLUGIN_A[$plugin]}") bytes, sha256 $(sha256sum "${PLUGIN_A[$plugin]}" | cut -c1-16), from ${PLUGIN_FROM[$plugin]}"
        done
        echo "flows: ${FLOWS[*]}"
        echo "reloaded plugins: $RELOAD_PLUGIN_LIST"
        printf 'skipped: %s\n' "${SKIPPED[@]}"
        echo "settings: duration=${DURATION_S}s reload_every=${RELOAD_MS}ms warmup=${WARMUP_S}s sample_every=${SAMPLE_S}s" \
            "connections=$SOAK_CONNECTIONS hostile_connections=$SOAK_HOSTILE_CONNECTIONS hostile_delay=${SOAK_HOSTILE_DELAY_MS}ms" \
            "timeout=$SOAK_TIMEOUT workers=$SOAK_WORKERS rss_growth_limit=$SOAK_RSS_GROWTH_LIMIT%" \
            "load_cpu=$BENCH_LOAD_CPU server_cpu=$BENCH_SERVER_CPU log='$SOAK_GATEWAY_LOG'"
    } >"$SOAK_RESULTS/environment.txt"
}

# ----------------------------------------------------------------------------- main

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
    cat <<'EOF'

Environment (defaults in brackets):
  SOAK_DURATION [30m]          60s, 30m, 2h or seconds (at least 30s)
  SOAK_RELOAD_EVERY [3s]       a plugin action, and half a period later a config rewrite
  SOAK_RSS_GROWTH_LIMIT [20]   % the gateway's RSS may grow from middle to end
  SOAK_WARMUP [a tenth, 5s..60s]   when the "start" RSS sample is taken
  SOAK_SAMPLE_EVERY [60s; a tenth of the run under 10 min]   RSS samples into rss.csv
  SOAK_CONNECTIONS [2]         wrk connections per flow; SOAK_HOSTILE_CONNECTIONS [1] for hostile flows
  SOAK_HOSTILE_DELAY_MS [50]   pause before each request of a hostile flow
  SOAK_TIMEOUT [5s]            wrk timeout; a slower answer is an unexpected error
  SOAK_WORKERS [2]             gateway worker threads
  SOAK_FLOWS [all available]   e.g. "passthrough jwt loop"
  SOAK_RELOAD_PLUGINS [all]    plugins the reloader cycles through, e.g. "transform swap"
  SOAK_FIXTURES_DIR            directory holding fx_loop.wasm, fx_membomb.wasm, fx_trap.wasm,
                               fx_version_a.wasm, fx_version_b.wasm (default: found in the target dir)
  SOAK_START_TIMEOUT [300]     SOAK_GATEWAY_LOG [warn,wasmgate::reload=info]
  SOAK_RESULTS [bench/results/soak-<timestamp>]
  BENCH_LOAD_CPU [0]  BENCH_SERVER_CPU [1]  BENCH_SKIP_INSTALL [0]  BENCH_GATEWAY_BIN [target/release/wasmgate]
EOF
}

RELOAD_PLUGIN_LIST=""
RELOADER_PID=""

main() {
    case ${1:-} in
        -h | --help) usage; exit 0 ;;
        "") ;;
        *) usage >&2; exit 2 ;;
    esac

    DURATION_S=$(secs_of "$SOAK_DURATION")
    ((DURATION_S >= 30)) || die "SOAK_DURATION must be at least 30s"
    RELOAD_MS=$(millis_of "$SOAK_RELOAD_EVERY")
    ((RELOAD_MS >= 200)) || die "SOAK_RELOAD_EVERY must be at least 200ms (the gateway debounces for 150ms)"
    if [[ -n $SOAK_WARMUP ]]; then
        WARMUP_S=$(secs_of "$SOAK_WARMUP")
    else
        WARMUP_S=$((DURATION_S / 10))
        ((WARMUP_S >= 5)) || WARMUP_S=5
        ((WARMUP_S <= 60)) || WARMUP_S=60
    fi
    ((WARMUP_S < DURATION_S / 2)) || die "SOAK_WARMUP must be under half of SOAK_DURATION"
    if [[ -n $SOAK_SAMPLE_EVERY ]]; then
        SAMPLE_S=$(secs_of "$SOAK_SAMPLE_EVERY")
    elif ((DURATION_S < 600)); then
        SAMPLE_S=$((DURATION_S / 10))
    else
        SAMPLE_S=60
    fi
    ((SAMPLE_S >= 1)) || SAMPLE_S=1
    [[ $SOAK_TIMEOUT =~ ^[0-9]+(s|m)?$ ]] || die "SOAK_TIMEOUT must be whole seconds or minutes (wrk's resolution), e.g. 5s"
    TIMEOUT_S=$(secs_of "$SOAK_TIMEOUT")
    ((TIMEOUT_S >= 1)) || die "SOAK_TIMEOUT must be at least 1s"
    [[ $SOAK_RSS_GROWTH_LIMIT =~ ^[0-9]+([.][0-9]+)?$ ]] || die "SOAK_RSS_GROWTH_LIMIT must be a number (percent)"

    if [[ ! -x $GATEWAY_BIN || ! -x $DEMO_BIN ]]; then
        die "$GATEWAY_BIN or $DEMO_BIN is missing: run \`cargo build --release -p wasmgate -p wasmgate-demo\` first (this script builds nothing)"
    fi
    check_cpus
    local missing=() tool
    for tool in wrk curl taskset openssl jq; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    install_packages "${missing[@]}"

    resolve_plugins
    select_flows
    if [[ -n $SOAK_RELOAD_PLUGINS ]]; then
        local plugin
        for plugin in $SOAK_RELOAD_PLUGINS; do
            [[ -n ${PLUGIN_A[$plugin]:-} ]] || die "SOAK_RELOAD_PLUGINS: $plugin is not among the gateway's plugins (${!PLUGIN_A[*]})"
        done
        RELOAD_PLUGIN_LIST=$SOAK_RELOAD_PLUGINS
    else
        # swap first: its two builds really differ, so short runs see it swapped too.
        RELOAD_PLUGIN_LIST=$(printf '%s\n' "${!PLUGIN_A[@]}" | sort | awk '$0 == "swap" { print; next } { rest = rest $0 " " } END { print rest }' | tr '\n' ' ')
    fi

    mkdir -p "$SOAK_RESULTS"
    make_work_dir wasmgate-soak
    printf '%s' "$JSON_BODY" >"$WORK/body.json"
    local skip
    for skip in "${SKIPPED[@]}"; do log "skipping $skip"; done
    log "flows: ${FLOWS[*]}"

    start_upstream
    prepare_gateway
    write_environment
    launch_gateway "$WORK/gateway/gateway.toml" "http://127.0.0.1:$GATEWAY_PORT/passthrough/ready" "$SOAK_START_TIMEOUT"
    HMAC_TS=$(($(now) + 3500))
    verify_flows

    T0=$(now)
    start_load
    reloader >"$WORK/reloader.log" 2>&1 &
    RELOADER_PID=$!
    STARTED_PIDS+=("$RELOADER_PID")
    log "reloader: every ${RELOAD_MS}ms over: $RELOAD_PLUGIN_LIST"
    watch_run

    local flow status
    for flow in "${FLOWS[@]}"; do
        status=0
        wait "${WRK_PID_OF[$flow]}" || status=$?
        ((status == 0)) || FAILURES+=("wrk for flow $flow exited with status $status (see raw/$flow.txt)")
    done
    wait "$RELOADER_PID" 2>/dev/null || true
    if ((GATEWAY_DIED == 0)) && kill -0 "$GATEWAY_PID" 2>/dev/null; then
        sleep 2
        sample_rss after
    fi
    cp "$WORK/gateway/gateway.toml" "$SOAK_RESULTS/config/gateway-final.toml"
    report
}

main "$@"
