#!/usr/bin/env bash
# Runs hmac-auth's native tests (test.c: SHA-256/HMAC vectors, JSON, config, verdicts)
# with the host's C compiler: $CC, else cc, else zig cc from the tools venv.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tools="${WASMGATE_TOOLS:-$HOME/.cache/wasmgate-tools}"
if [ -n "${CC:-}" ]; then
    cc=($CC)
elif command -v cc >/dev/null; then
    cc=(cc)
elif [ -x "$tools/venv/bin/python" ]; then
    cc=("$tools/venv/bin/python" -m ziglang cc)
else
    echo "test.sh: no C compiler (set CC, install cc, or the ziglang wheel in $tools/venv)" >&2
    exit 1
fi
bin="$(mktemp -d)/hmac-auth-test"
trap 'rm -rf "$(dirname "$bin")"' EXIT
"${cc[@]}" -std=c11 -O1 -g -Wall -Wextra -Werror -I "$here" ${CFLAGS:-} \
    "$here/test.c" "$here/hmac_auth.c" "$here/json.c" "$here/sha256.c" "$here/strbuf.c" -o "$bin"
"$bin"
