# shellcheck shell=bash
# bench/lib.sh — shell helpers shared by the benchmark scripts (run.sh, plugins.sh, soak.sh). Sourced, not run.
#
# The including script sets, before calling the helpers that use them:
#   ROOT                 the repository root
#   BENCH_SERVER_CPU     CPU the upstream and the gateway are pinned to (start_pinned)
#   BENCH_LOAD_CPU       CPU the load generator is pinned to (load_closed)
#   BENCH_DURATION       length of a measured run (load_closed)
#   BENCH_RESULTS        output directory (cleanup copies the logs there)
#   BENCH_SKIP_INSTALL   1: never apt-get (install_packages)
#   BENCH_NOISE_LIMIT    % of the server CPU other work may take (warn_if_noisy)
#   BENCH_GATEWAY_LOG    the gateway's log filter (launch_gateway)
#   BENCH_GATEWAY_WORKERS  optional: the gateway's worker threads (launch_gateway; default 1)
# and this file owns the binaries' paths and the process bookkeeping below (WORK,
# STARTED_PIDS, the ports handed out).

RELEASE_DIR=${CARGO_TARGET_DIR:-$ROOT/target}/release
GATEWAY_BIN=${BENCH_GATEWAY_BIN:-$RELEASE_DIR/wasmgate}   # launch_gateway
DEMO_BIN=$RELEASE_DIR/wasmgate-demo                      # start_upstream

WORK=""                 # temp dir for configs, pids, logs; removed on exit
STARTED_PIDS=()         # every process we started, stopped by cleanup
LAST_PID=""             # the process start_pinned started last
UPSTREAM_PORT="" UPSTREAM_PID=""
GATEWAY_PORT="" GATEWAY_PID=""
CLK_TCK=$(getconf CLK_TCK)
MEASURED=""             # the last measurement of `measure` (tab-separated)

# ----------------------------------------------------------------------------- small helpers

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

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

# Value of key $2 in a RESULT line $1.
field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<" $1"; }

# Dies unless the machine has the load and server CPUs.
check_cpus() {
    (($(nproc) > BENCH_LOAD_CPU && $(nproc) > BENCH_SERVER_CPU)) \
        || die "needs CPUs $BENCH_LOAD_CPU and $BENCH_SERVER_CPU (set BENCH_LOAD_CPU/BENCH_SERVER_CPU)"
}

# ----------------------------------------------------------------------------- processes

# Prints a TCP port on 127.0.0.1 that nothing listens on and we have not handed out yet, below
# Linux's ephemeral range (32768-60999), where outgoing connections take their local ports.
declare -A PORTS_TAKEN=()
free_port() {
    local port
    for _ in $(seq 200); do
        port=$((20000 + RANDOM % 12000))
        [[ -n ${PORTS_TAKEN[$port]:-} ]] && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            PORTS_TAKEN[$port]=1
            echo "$port"
            return
        fi
    done
    die "no free port found on 127.0.0.1"
}

# Waits until URL answers 2xx, failing early if PID has exited. $4: how long, in seconds (10).
wait_http() {
    local url=$1 pid=$2 what=$3 seconds=${4:-10}
    for _ in $(seq $((seconds * 10))); do
        kill -0 "$pid" 2>/dev/null || die "$what exited during start-up (logs in $WORK)"
        curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null && return
        sleep 0.1
    done
    die "$what did not answer $url within ${seconds}s (logs in $WORK)"
}

# Starts a command in the background on the server CPU; records its PID in STARTED_PIDS and LAST_PID.
start_pinned() {
    local logfile=$1
    shift
    taskset -c "$BENCH_SERVER_CPU" "$@" >"$logfile" 2>&1 &
    LAST_PID=$!
    STARTED_PIDS+=("$LAST_PID")
}

# Creates WORK (prefix $1) and arranges for cleanup to run however the script ends.
make_work_dir() {
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# Stops every process we started: SIGTERM, up to 5s grace, then SIGKILL. Keeps logs in results:
# WORK/*.log as they are, WORK/DIR/error.log (nginx) as DIR-error.log.
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
        local error_log
        for error_log in "$WORK"/*/error.log; do
            [[ -f $error_log ]] || continue
            cp "$error_log" "$BENCH_RESULTS/logs/$(basename "$(dirname "$error_log")")-error.log" || true
        done
        rm -rf "$WORK"
    fi
    exit "$status"
}

# Starts the `fast` demo upstream (answers {"ok":true} to everything) on the server CPU.
start_upstream() {
    UPSTREAM_PORT=$(free_port)
    start_pinned "$WORK/upstream.log" "$DEMO_BIN" --fast "127.0.0.1:$UPSTREAM_PORT"
    UPSTREAM_PID=$LAST_PID
    wait_http "http://127.0.0.1:$UPSTREAM_PORT/" "$UPSTREAM_PID" "upstream (wasmgate-demo --fast)"
    log "upstream  pid $UPSTREAM_PID  http://127.0.0.1:$UPSTREAM_PORT/"
}

# Starts the gateway on config $1 on the server CPU with one worker thread (like nginx's single
# worker; BENCH_GATEWAY_WORKERS sets another number) and BENCH_GATEWAY_LOG as RUST_LOG, and waits
# until $2 answers 2xx (for up to $3 s: a config with big plugins compiles them first).
# GATEWAY_PORT is the caller's to pick and put in the config.
launch_gateway() {
    local config=$1 ready_url=$2 seconds=${3:-10}
    RUST_LOG=$BENCH_GATEWAY_LOG WASMGATE_WORKER_THREADS=${BENCH_GATEWAY_WORKERS:-1} \
        start_pinned "$WORK/gateway.log" "$GATEWAY_BIN" run --config "$config"
    GATEWAY_PID=$LAST_PID
    wait_http "$ready_url" "$GATEWAY_PID" gateway "$seconds"
    log "gateway   pid $GATEWAY_PID  http://127.0.0.1:$GATEWAY_PORT/  ($("$GATEWAY_BIN" --version))"
}

# ----------------------------------------------------------------------------- setup

# apt_install [sudo] PACKAGE...: quiet, non-interactive apt-get install.
apt_install() {
    local sudo=()
    [[ $1 == sudo ]] && { sudo=(sudo); shift; }
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# Installs the Debian packages named (commands found missing) with apt-get, unless
# BENCH_SKIP_INSTALL=1 (then dies naming them). No arguments: nothing to do.
install_packages() {
    local missing=("$@")
    ((${#missing[@]})) || return 0
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
}

# cargo build --release of the packages given (-p NAME ...), in the repository.
cargo_build() {
    log "cargo build --release $*"
    (cd "$ROOT" && cargo build --release --quiet "$@")
}

# Environment lines common to every benchmark: date, commit, kernel, load, CPU, wrk.
environment_common() {
    echo "date: $(date -Is)"
    echo "git: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (dirty)')"
    echo "kernel: $(uname -sr)"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "cpu: $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n1) × $(nproc)"
    echo "wrk: $(wrk -v 2>&1 | head -n1)"
}

# ----------------------------------------------------------------------------- measuring

# Sum of utime+stime, in clock ticks, over the given PIDs (fields 14 and 15 of /proc/PID/stat;
# a process's line covers all its threads).
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

# Prints "busy steal total" clock ticks of CPU $1 from /proc/stat: busy is user+nice+system.
cpu_stat() {
    awk -v cpu="cpu$1" '$1 == cpu { print $2 + $3 + $4, $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat
}

# Prints the wrk script part that prints one machine-readable line when the run is done. wrk
# counts answers with status >= 400 under errors.status, so errors=0 means no failed request.
wrk_report_lua() {
    cat <<'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d seconds=%.6f p50_us=%d p99_us=%d errors=%d\n",
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
EOF
}

# Closed loop: wrk with $2 connections against $1 for BENCH_DURATION, with the wrk script $4
# (default WORK/report.lua). Raw output to $3; prints the RESULT line.
load_closed() {
    local url=$1 conns=$2 raw=$3 script=${4:-$WORK/report.lua}
    taskset -c "$BENCH_LOAD_CPU" timeout $(($(seconds_of "$BENCH_DURATION") + 30)) \
        wrk -t1 -c"$conns" -d"$BENCH_DURATION" --latency -s "$script" "$url" >"$raw" 2>&1 \
        || die "wrk failed against $url (see $raw)"
    grep '^RESULT ' "$raw" | tail -n1
}

# measure [PID...] -- COMMAND...: runs COMMAND, a load generator that prints a RESULT line, and
# samples around it the CPU ticks of the upstream (UPSTREAM_PID) and of the PIDs given (the
# proxy; none for the direct path), and how much of the server CPU went to other processes
# ("foreign") or to the hypervisor ("steal") meanwhile: both should stay near 0. Sets MEASURED to
# the tab-separated fields
#   requests  req/s  p50_ms  p99_ms  errors  proxy_cpu_us_per_req  upstream_cpu_us_per_req  foreign_pct  steal_pct
# (proxy CPU "-" without PIDs). Not to be called in $(...): MEASURED would be lost.
# shellcheck disable=SC2034  # MEASURED is read by the including scripts
measure() {
    local pids=()
    while (($#)) && [[ $1 != -- ]]; do
        pids+=("$1")
        shift
    done
    [[ ${1:-} == -- ]] || die "measure: missing -- before the command"
    shift

    local upstream_before proxy_before=0 cpu_before result
    upstream_before=$(cpu_ticks "$UPSTREAM_PID")
    ((${#pids[@]})) && proxy_before=$(cpu_ticks "${pids[@]}")
    cpu_before=$(cpu_stat "$BENCH_SERVER_CPU")

    result=$("$@")

    local upstream_ticks proxy_ticks=- cpu_after
    cpu_after=$(cpu_stat "$BENCH_SERVER_CPU")
    upstream_ticks=$(($(cpu_ticks "$UPSTREAM_PID") - upstream_before))
    ((${#pids[@]})) && proxy_ticks=$(($(cpu_ticks "${pids[@]}") - proxy_before))

    [[ -n $(field "$result" requests) ]] || die "no result from $*"
    MEASURED=$(awk -v OFS='\t' -v tck="$CLK_TCK" \
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
            print n, sprintf("%.0f", n / s), sprintf("%.3f", p50 / 1000),
                sprintf("%.3f", p99 / 1000), err, proxy, up,
                sprintf("%.1f", foreign < 0 ? 0 : foreign), sprintf("%.1f", steal)
        }')
}

# Logs a warning if a run's foreign ($1) or steal ($2) % of the server CPU is above BENCH_NOISE_LIMIT.
warn_if_noisy() {
    awk -v f="$1" -v s="$2" -v limit="$BENCH_NOISE_LIMIT" 'BEGIN { exit (f > limit || s > limit) }' \
        || log "warning: other work used the server CPU during this run; its numbers are suspect"
}

# Prints the interference summary of results file $1, whose columns $2 and $3 hold the foreign
# and steal % of each run (first line: header).
noise_summary() {
    awk -F'\t' -v fc="$2" -v sc="$3" -v limit="$BENCH_NOISE_LIMIT" 'NR > 1 {
            runs++; if ($fc > f) f = $fc; if ($sc > st) st = $sc
            if ($fc > limit || $sc > limit) noisy++ }
        END { printf "\nserver CPU taken by other work: up to %.1f%% (other processes), %.1f%% (steal); %d of %d runs above %s%%%s\n",
            f, st, noisy, runs, limit, noisy ? " — rerun on a quiet machine" : "" }' "$1"
}

# ----------------------------------------------------------------------------- file upstream

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

# The upstream of the compression and cache benches: nginx serving WORK/www/body.json (see
# write_body), one process (its PID is UPSTREAM_PID). $1: extra `server` directives.
# Prints the first lines of an nginx.conf for a one-worker, foreground nginx whose pid, logs
# and temp files live in $1, up to the open `http {` block (access log off, keep-alive
# connections reused without limit).
nginx_prelude() {
    local dir=$1
    cat <<EOF
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
EOF
}

start_upstream_nginx() {
    local extra=${1:-}
    UPSTREAM_PORT=$(free_port)
    local dir=$WORK/upstream
    mkdir -p "$dir" "$WORK/www"
    BODY_FILE=$WORK/www/body.json
    write_body "$BODY_FILE"
    {
        echo "# Generated by bench/lib.sh: the upstream."
        nginx_prelude "$dir"
        cat <<EOF
    types { application/json json; }
    server {
        listen 127.0.0.1:$UPSTREAM_PORT;
        root $WORK/www;
        $extra
    }
}
EOF
    } >"$dir/nginx.conf"
    start_pinned "$WORK/upstream.log" nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf"
    UPSTREAM_PID=$LAST_PID
    wait_http "http://127.0.0.1:$UPSTREAM_PORT/body.json" "$UPSTREAM_PID" "upstream (nginx, static)"
    log "upstream  pid $UPSTREAM_PID  http://127.0.0.1:$UPSTREAM_PORT/body.json  ($(wc -c <"$BODY_FILE") bytes of JSON)"
}
