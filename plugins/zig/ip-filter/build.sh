#!/usr/bin/env bash
# Builds the ip-filter plugin (Zig, world `auth`) from source into a component.
#
#   plugins/zig/ip-filter/build.sh OUT_WASM
#
# Tools, none installed by this script (see docs/plugins/zig.md):
#
#   ${WASMGATE_TOOLS:-$HOME/.cache/wasmgate-tools}/venv/bin/python -m ziglang   Zig 0.17.0 (PyPI ziglang)
#   ${WASMGATE_TOOLS:-$HOME/.cache/wasmgate-tools}/cargo/bin/wit-bindgen        0.63.0 (C generator)
#   ${WASMGATE_TOOLS:-$HOME/.cache/wasmgate-tools}/cargo/bin/wasm-tools         1.263.0
#
# Generated bindings, the core module and Zig's caches go under
# $WASMGATE_TOOLS/build/ip-filter and $WASMGATE_TOOLS/zig-cache, never into the
# repository. The first build takes about two minutes (Zig translates the C
# header and builds its wasi libc once); later builds take a second or two.
set -euo pipefail

ZIG_VERSION=0.17.0
WIT_BINDGEN_VERSION=0.63.0
WASM_TOOLS_VERSION=1.263.0
WORLD=auth

die() { printf 'ip-filter build: %s\n' "$*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: $0 OUT_WASM"
out="$1"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
wit="$root/wit"
tools="${WASMGATE_TOOLS:-$HOME/.cache/wasmgate-tools}"
python="$tools/venv/bin/python"
wit_bindgen="$tools/cargo/bin/wit-bindgen"
wasm_tools="$tools/cargo/bin/wasm-tools"

[ -f "$wit/plugin.wit" ] || die "no WIT at $wit/plugin.wit"
[ -x "$python" ] || die "missing $python: create the venv and 'pip install ziglang==$ZIG_VERSION' (docs/plugins/zig.md)"
zig_version="$("$python" -m ziglang version 2>/dev/null)" ||
    die "Zig is not installed in $tools/venv: '$python -m pip install ziglang==$ZIG_VERSION'"
[ "$zig_version" = "$ZIG_VERSION" ] ||
    die "Zig $zig_version found, $ZIG_VERSION needed: '$python -m pip install ziglang==$ZIG_VERSION'"
[ -x "$wit_bindgen" ] ||
    die "missing $wit_bindgen: 'cargo install --locked --root $tools/cargo wit-bindgen-cli@$WIT_BINDGEN_VERSION'"
case "$("$wit_bindgen" --version)" in
    *" $WIT_BINDGEN_VERSION"*) ;;
    *) die "wit-bindgen $WIT_BINDGEN_VERSION needed, found: $("$wit_bindgen" --version)" ;;
esac
[ -x "$wasm_tools" ] ||
    die "missing $wasm_tools: 'cargo install --locked --root $tools/cargo wasm-tools@$WASM_TOOLS_VERSION'"
case "$("$wasm_tools" --version)" in
    *" $WASM_TOOLS_VERSION"*) ;;
    *) die "wasm-tools $WASM_TOOLS_VERSION needed, found: $("$wasm_tools" --version)" ;;
esac

zig() { "$python" -m ziglang "$@"; }
export ZIG_GLOBAL_CACHE_DIR="$tools/zig-cache" ZIG_LOCAL_CACHE_DIR="$tools/zig-cache"

build="$tools/build/ip-filter"
rm -rf "$build"
mkdir -p "$build/gen"
cd "$build"

# 1. C bindings for the world: gen/auth.h (types, imports, exports to
#    implement) and gen/auth.c (canonical-ABI glue, cabi_realloc, post-return
#    functions that free what we return).
quiet() { local log; log="$("$@" 2>&1)" || { printf '%s\n' "$log" >&2; die "failed: $*"; }; }
quiet "$wit_bindgen" c "$wit" --world "$WORLD" --no-object-file --out-dir gen

# 2. Zig 0.17 has no @cImport: translate the header once into a Zig module.
zig translate-c gen/auth.h -lc -target wasm32-wasi >auth_c.zig

# 3. gen/auth.c calls this to force-link the component-type object, which
#    --no-object-file leaves out: `component embed` adds the type instead.
printf 'void __component_type_object_force_link_%s(void) {}\n' "$WORLD" >force_link_stub.c

# 4. The core module: a WASI reactor with no entry point, linking libc for
#    malloc/free (the generated glue frees returned memory with free). A 1 MiB
#    stack keeps the initial memory small (the default is 16 MiB).
zig build-exe -fno-entry -mexec-model=reactor --stack 1048576 -lc --name ip-filter -femit-bin=core.wasm \
    -target wasm32-wasi -O ReleaseSmall -fstrip -Igen gen/auth.c force_link_stub.c \
    --dep auth_c -Mroot="$here/src/plugin.zig" \
    -target wasm32-wasi -O ReleaseSmall -fstrip -Mauth_c=auth_c.zig

# 5. Attach the world's type information, then wrap the module as a component.
"$wasm_tools" component embed "$wit" --world "$WORLD" core.wasm -o embed.wasm
"$wasm_tools" component new embed.wasm -o component.wasm
"$wasm_tools" validate component.wasm

# Only the host interface may be imported (no WASI).
imports="$("$wasm_tools" component wit component.wasm | grep -E '^\s*import ' | grep -v 'wasmgate:plugin/' || true)"
[ -z "$imports" ] || die "unexpected imports in the component: $imports"

mkdir -p "$(dirname "$out")"
cp component.wasm "$out.tmp"
mv "$out.tmp" "$out"
printf 'ip-filter: %s (%s bytes)\n' "$out" "$(wc -c <"$out" | tr -d ' ')"
