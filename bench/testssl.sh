#!/usr/bin/env bash
# bench/testssl.sh — an outside check of the gateway's TLS listener with testssl.sh (Debian
# package `testssl.sh`, installed with apt-get when missing).
#
# Starts target/release/wasmgate (BENCH_GATEWAY_BIN overrides) with one TLS listener on a free
# loopback port and a certificate made here (ECDSA P-256 for localhost, signed by a private CA
# that testssl is told to trust), runs testssl.sh against it and prints the verdict:
#
#   PASS  no finding about protocols, ciphers or known vulnerabilities above LOW
#   FAIL  otherwise (each such finding is listed)
#
# Findings about the certificate's own content (no OCSP/CRL URI, no CAA record, short
# validity, …) are listed too but do not decide the verdict: the certificate is a test one made
# here, not part of what the gateway does. testssl also grades the HTTP answer's security
# headers; the route it is served sets HSTS, CSP and friends (route config, not TLS). The JSON report is kept under
# bench/results/testssl-<timestamp>/.
#
# Environment: BENCH_GATEWAY_BIN [target/release/wasmgate], BENCH_SKIP_INSTALL [0],
# TESTSSL_ARGS (extra arguments for testssl.sh, e.g. "--fast").
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly ROOT
PATH=$PATH:/usr/sbin:/sbin
BENCH_SERVER_CPU=${BENCH_SERVER_CPU:-1}
BENCH_LOAD_CPU=${BENCH_LOAD_CPU:-0}
BENCH_SKIP_INSTALL=${BENCH_SKIP_INSTALL:-0}
BENCH_GATEWAY_LOG=${BENCH_GATEWAY_LOG:-warn}
BENCH_RESULTS=${BENCH_RESULTS:-$ROOT/bench/results/testssl-$(date +%Y%m%d-%H%M%S)}
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

main() {
    [[ ${1:-} == -h || ${1:-} == --help ]] && { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0; }
    local missing=()
    command -v testssl >/dev/null || command -v testssl.sh >/dev/null || missing+=(testssl.sh)
    for tool in curl jq openssl; do command -v "$tool" >/dev/null || missing+=("$tool"); done
    install_packages "${missing[@]}"
    local testssl
    testssl=$(command -v testssl || command -v testssl.sh)
    [[ -x $GATEWAY_BIN ]] || die "no gateway binary at $GATEWAY_BIN (cargo build --release -p wasmgate)"
    mkdir -p "$BENCH_RESULTS"
    make_work_dir wasmgate-testssl

    # A private CA and a server certificate for localhost signed by it.
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
        -subj "/CN=wasmgate testssl CA" -keyout "$WORK/ca-key.pem" -out "$WORK/ca.pem" 2>/dev/null
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
        -keyout "$WORK/ecdsa-key.pem" -out "$WORK/ecdsa.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n' \
        >"$WORK/ecdsa.ext"
    openssl x509 -req -in "$WORK/ecdsa.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca-key.pem" \
        -CAcreateserial -days 365 -extfile "$WORK/ecdsa.ext" -out "$WORK/ecdsa.pem" 2>/dev/null

    GATEWAY_PORT=$(free_port)
    mkdir -p "$WORK/plugins"
    cat >"$WORK/gateway.toml" <<EOF
[server]
listen = []

[plugins]
dir = "$WORK/plugins"
watch = false

[[listeners]]
address = "127.0.0.1:$GATEWAY_PORT"

[[listeners.certificates]]
cert = "$WORK/ecdsa.pem"
key = "$WORK/ecdsa-key.pem"

# testssl.sh also reads the HTTP answer's security headers: a route sets them.
[[routes]]
name = "ok"
prefix = "/"
respond = { body = "ok", headers = { "strict-transport-security" = "max-age=31536000", "x-content-type-options" = "nosniff", "x-frame-options" = "DENY", "content-security-policy" = "default-src 'none'", "referrer-policy" = "no-referrer" } }
EOF
    RUST_LOG=$BENCH_GATEWAY_LOG start_pinned "$WORK/gateway.log" "$GATEWAY_BIN" run --config "$WORK/gateway.toml"
    GATEWAY_PID=$LAST_PID
    for _ in $(seq 100); do
        curl -fsS -o /dev/null --cacert "$WORK/ca.pem" --max-time 1 "https://localhost:$GATEWAY_PORT/" 2>/dev/null && break
        kill -0 "$GATEWAY_PID" 2>/dev/null || die "the gateway exited (see $WORK/gateway.log)"
        sleep 0.1
    done
    log "gateway pid $GATEWAY_PID https://localhost:$GATEWAY_PORT/; running $testssl (a few minutes)"

    local report=$BENCH_RESULTS/testssl.json
    # shellcheck disable=SC2086  # TESTSSL_ARGS is a list of arguments
    "$testssl" --quiet --color 0 --warnings off --add-ca "$WORK/ca.pem" \
        --jsonfile "$report" ${TESTSSL_ARGS:-} "localhost:$GATEWAY_PORT" >"$BENCH_RESULTS/testssl.txt" 2>&1 || true
    [[ -s $report ]] || die "testssl.sh wrote no report (see $BENCH_RESULTS/testssl.txt)"

    # Certificate-content findings: about the test certificate, not the gateway.
    local cert_ids='^(cert_|chain_of_trust|DNS_CAArecord|OCSP_stapling|certificate_transparency|intermediate_cert)'
    echo "$("$testssl" --version 2>/dev/null | sed 's/\x1b\[[0-9;]*m//g' | grep -o 'testssl[.a-z]* *[0-9][^ ]*' | head -n1) against wasmgate $("$GATEWAY_BIN" --version | awk '{print $2}')"
    echo
    echo "protocols offered:"
    jq -r '.[] | select(.id | test("^(SSLv2|SSLv3|TLS1|TLS1_1|TLS1_2|TLS1_3)$")) | "  \(.id): \(.finding)"' "$report"
    echo
    local above cert_above
    above=$(jq -r --arg cert "$cert_ids" '.[] | select(.severity | test("MEDIUM|HIGH|CRITICAL"))
        | select(.id | test($cert) | not) | "  \(.severity) \(.id): \(.finding)"' "$report")
    cert_above=$(jq -r --arg cert "$cert_ids" '.[] | select(.severity | test("MEDIUM|HIGH|CRITICAL"))
        | select(.id | test($cert)) | "  \(.severity) \(.id): \(.finding)"' "$report")
    echo "LOW findings (for the record):"
    jq -r '.[] | select(.severity == "LOW") | "  \(.id): \(.finding)"' "$report"
    if [[ -n $cert_above ]]; then
        echo
        echo "about the test certificate (not counted):"
        echo "$cert_above"
    fi
    echo
    if [[ -n $above ]]; then
        echo "findings above LOW:"
        echo "$above"
        echo
        echo "verdict: FAIL"
        return 1
    fi
    echo "verdict: PASS (no protocol, cipher or vulnerability finding above LOW)"
    echo "(report in $BENCH_RESULTS)"
}

main "$@"
