#!/usr/bin/env bash
# Builds the hmac-auth plugin (C) into a WebAssembly component:
#
#   plugins/c/hmac-auth/build.sh OUT_WASM
#
# 1. wit-bindgen c    generates the bindings for world `auth` from <repo>/wit
#                     into $WASMGATE_TOOLS/build/hmac-auth/gen (never into the repo)
# 2. zig cc           compiles the plugin and the bindings to a core module
#                     (wasm32-wasi, reactor: no main, exports `_initialize`)
# 3. wasm-tools       wraps the core module into a component and validates it
#
# Tools come from ${WASMGATE_TOOLS:-$HOME/.cache/wasmgate-tools}: cargo/bin/wit-bindgen,
# cargo/bin/wasm-tools, and venv/bin/python with the `ziglang` wheel (zig cc).
# Nothing is installed here; scripts/build-polyglot.sh installs them.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
tools="${WASMGATE_TOOLS:-$HOME/.cache/wasmgate-tools}"

die() { printf 'hmac-auth build: %s\n' "$*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: $0 OUT_WASM"
out="$1"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac

wit_bindgen="$tools/cargo/bin/wit-bindgen"
wasm_tools="$tools/cargo/bin/wasm-tools"
python="$tools/venv/bin/python"
[ -x "$wit_bindgen" ] || die "wit-bindgen is missing at $wit_bindgen (cargo install --locked --root $tools/cargo wit-bindgen-cli@0.63.0)"
[ -x "$wasm_tools" ] || die "wasm-tools is missing at $wasm_tools (cargo install --locked --root $tools/cargo wasm-tools@1.263.0)"
[ -x "$python" ] || die "the tools venv is missing at $tools/venv (python3 -m venv $tools/venv)"
"$python" -m ziglang version >/dev/null 2>&1 \
    || die "zig is missing from $tools/venv ($python -m pip install ziglang==0.17.0)"
[ -f "$root/wit/plugin.wit" ] || die "no WIT at $root/wit/plugin.wit"

scratch="$tools/build/hmac-auth"
rm -rf "$scratch"
mkdir -p "$scratch/gen" "$(dirname "$out")"
# zig's cache (its wasi libc, built on first use) is shared with the other zig-built plugins.
export ZIG_GLOBAL_CACHE_DIR="$tools/zig-cache" ZIG_LOCAL_CACHE_DIR="$tools/zig-cache"

log="$("$wit_bindgen" c "$root/wit" --world auth --out-dir "$scratch/gen" 2>&1)" \
    || die "wit-bindgen failed: $log"

# -Os: small code. reactor: a library-style module (exports, no _start). --strip-all: no
# names or debug info in the output. stack-size: zig's default 16 MiB stack would make a
# 16 MiB initial memory; 128 KiB is plenty (the deepest path is the JSON parser, 32 levels).
# No stdio is used, so libc adds malloc and memcpy and nothing that needs WASI imports.
"$python" -m ziglang cc --target=wasm32-wasi -Os -mexec-model=reactor \
    -Wl,--strip-all -Wl,-z,stack-size=131072 \
    -std=c11 -Wall -Wextra -I "$scratch/gen" -I "$here" \
    "$here/plugin.c" "$here/hmac_auth.c" "$here/json.c" "$here/sha256.c" "$here/strbuf.c" \
    "$scratch/gen/auth.c" "$scratch/gen/auth_component_type.o" \
    -o "$scratch/core.wasm"

"$wasm_tools" component new "$scratch/core.wasm" -o "$scratch/hmac-auth.wasm"
"$wasm_tools" validate --features component-model "$scratch/hmac-auth.wasm"

# The component may import only the gateway's interfaces (host, and types for the
# records): a WASI import would mean libc pulled in something the gateway does not provide.
imports="$("$wasm_tools" component wit "$scratch/hmac-auth.wasm" | grep -E '^\s*import ' || true)"
if printf '%s\n' "$imports" | grep -Ev 'wasmgate:plugin/(host|types)@' | grep -q .; then
    die "unexpected imports in the component: $imports"
fi

cp "$scratch/hmac-auth.wasm" "$out.tmp.$$"
mv -f "$out.tmp.$$" "$out"
printf 'wrote %s (%s bytes)\n' "$out" "$(stat -c %s "$out")"
