#!/usr/bin/env bash
# Builds the server-timing plugin (AssemblyScript) into a wasmgate component.
#
#   plugins/assemblyscript/server-timing/build.sh OUT_WASM
#
# Tools, from ${WASMGATE_TOOLS:-$HOME/.cache/wasmgate-tools} (nothing is installed here):
#   js/node_modules/.bin/asc   AssemblyScript 0.28.20  (npm install assemblyscript@0.28.20)
#   cargo/bin/wasm-tools       wasm-tools 1.263.0      (cargo install --locked wasm-tools@1.263.0)
#   node                       on PATH (asc runs on it)
# Intermediate files go to $WASMGATE_TOOLS/build/server-timing, outside the repository.
set -euo pipefail

die() { printf 'server-timing build: %s\n' "$*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: $0 OUT_WASM"
out="$1"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
wit="$root/wit"
tools="${WASMGATE_TOOLS:-$HOME/.cache/wasmgate-tools}"
asc="$tools/js/node_modules/.bin/asc"
wasm_tools="$tools/cargo/bin/wasm-tools"
scratch="$tools/build/server-timing"

command -v node >/dev/null || die "node is not installed (AssemblyScript's compiler runs on Node.js)"
[ -x "$asc" ] || die "AssemblyScript compiler not found at $asc (cd $tools/js && npm install assemblyscript@0.28.20)"
[ -x "$wasm_tools" ] || die "wasm-tools not found at $wasm_tools (cargo install --locked wasm-tools@1.263.0 --root $tools/cargo)"
[ -f "$wit/plugin.wit" ] || die "WIT not found at $wit/plugin.wit"

rm -rf "$scratch"
mkdir -p "$scratch"

# 1. Core module. --runtime stub: a bump allocator, no GC (every call gets a fresh
#    instance). --use abort=: no `env.abort` import (an abort becomes `unreachable`).
#    -Oz: optimise for size. --noAssert: drop the runtime's internal assertions.
(cd "$here" && "$asc" plugin.ts --runtime stub -Oz --noAssert --use abort= -o "$scratch/core.wasm")

# 2. Export names. The component model wants `on-request`, `on-response`,
#    `<interface>#validate-config` and `cabi_post_<that>`; AssemblyScript identifiers
#    cannot spell them, so the exports are renamed in the text format.
check="wasmgate:plugin/config-check@0.1.0#validate-config"
"$wasm_tools" print "$scratch/core.wasm" -o "$scratch/core.wat"
sed -e 's/(export "on_request" /(export "on-request" /' \
    -e 's/(export "on_response" /(export "on-response" /' \
    -e "s|(export \"validate_config\" |(export \"$check\" |" \
    -e 's/(export "post_on_request" /(export "cabi_post_on-request" /' \
    -e 's/(export "post_on_response" /(export "cabi_post_on-response" /' \
    -e "s|(export \"post_validate_config\" |(export \"cabi_post_$check\" |" \
    "$scratch/core.wat" >"$scratch/renamed.wat"
for name in on-request on-response "$check" cabi_post_on-request cabi_post_on-response \
    "cabi_post_$check" cabi_realloc memory; do
    grep -qF "(export \"$name\" " "$scratch/renamed.wat" || die "the core module does not export \`$name\`"
done
"$wasm_tools" parse "$scratch/renamed.wat" -o "$scratch/renamed.wasm"

# The host imports and nothing else: no WASI, no env.abort.
if grep -E '^\s*\(import ' "$scratch/renamed.wat" | grep -vqF '(import "wasmgate:plugin/host@0.1.0" '; then
    grep -E '^\s*\(import ' "$scratch/renamed.wat" >&2
    die "the core module imports more than wasmgate:plugin/host (above)"
fi

# 3. Component: embed the world's type information (this also checks every export's and
#    import's core signature against the WIT), then wrap the module into a component.
"$wasm_tools" component embed "$wit" --world transform "$scratch/renamed.wasm" -o "$scratch/embed.wasm"
"$wasm_tools" component new "$scratch/embed.wasm" -o "$scratch/server-timing.wasm"
"$wasm_tools" validate "$scratch/server-timing.wasm"

mkdir -p "$(dirname "$out")"
cp "$scratch/server-timing.wasm" "$out.tmp"
mv -f "$out.tmp" "$out"
printf 'wrote %s (%s bytes)\n' "$out" "$(stat -c %s "$out")"
