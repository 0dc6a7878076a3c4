#!/usr/bin/env bash
# Builds the C++ `cors` plugin (world `transform`) into a WebAssembly component:
#
#   plugins/cpp/cors/build.sh OUT_WASM
#
# Tools, from ${WASMGATE_TOOLS:-$HOME/.cache/wasmgate-tools} (nothing is installed here):
#   cargo/bin/wit-bindgen   0.63.0   C++ bindings for wit/plugin.wit
#   cargo/bin/wasm-tools    1.263.0  core module → component
#   venv/bin/python -m ziglang 0.17.0   `zig c++`: clang + libc++ + wasi-libc for wasm32-wasi
# Generated bindings and objects go to $WASMGATE_TOOLS/build/cpp-cors (outside the repo);
# Zig's cache (libc++ is compiled there on first use, ~1 min) to $WASMGATE_TOOLS/zig-cache.
set -euo pipefail

WIT_BINDGEN_VERSION=0.63.0
ZIG_VERSION=0.17.0

die() { printf 'cors build: %s\n' "$*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: $0 OUT_WASM"
out="$1"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac

src="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$src/../../.." && pwd)"
wit="$root/wit"
tools="${WASMGATE_TOOLS:-$HOME/.cache/wasmgate-tools}"
wit_bindgen="$tools/cargo/bin/wit-bindgen"
wasm_tools="$tools/cargo/bin/wasm-tools"
python="$tools/venv/bin/python"

[ -f "$wit/plugin.wit" ] || die "no WIT at $wit/plugin.wit"
[ -x "$wit_bindgen" ] || die "wit-bindgen is missing at $wit_bindgen (cargo install --locked --root $tools/cargo wit-bindgen-cli@$WIT_BINDGEN_VERSION)"
[ -x "$wasm_tools" ] || die "wasm-tools is missing at $wasm_tools (cargo install --locked --root $tools/cargo wasm-tools@1.263.0)"
[ -x "$python" ] && "$python" -m ziglang version >/dev/null 2>&1 \
    || die "zig is missing: $python -m ziglang does not run ($tools/venv/bin/pip install ziglang==$ZIG_VERSION)"

have="$("$wit_bindgen" --version | awk '{print $2}')"
[ "$have" = "$WIT_BINDGEN_VERSION" ] \
    || die "wit-bindgen $have found, $WIT_BINDGEN_VERSION needed (the patches below are for its output)"
have="$("$python" -m ziglang version)"
[ "$have" = "$ZIG_VERSION" ] || die "zig $have found, $ZIG_VERSION needed"

work="$tools/build/cpp-cors"
rm -rf "$work"
mkdir -p "$work"
cd "$work"

# 1. Bindings: gen/transform_cpp.h (types, imports, exports to implement), gen/transform.cpp
#    (canonical-ABI glue), gen/wit.h (wit::string, wit::vector), and the component-type
#    object that carries the world into the core module.
"$wit_bindgen" cpp "$wit" --world transform --out-dir gen >bindgen.log 2>&1 \
    || { cat bindgen.log >&2; die "wit-bindgen cpp failed"; }

# 2. Two fixes to wit-bindgen 0.63's C++ output:
#  - the post-return functions are exported as `cabi_post_on_request` / `..._on_response`
#    (underscores); `wasm-tools component new` silently ignores them, so nothing returned
#    would ever be freed. The canonical names use the export's own name: `on-request`.
#  - `std::move(result).value()` on `std::expected<request, response>`: Zig's libc++
#    (LLVM 20+) requires a copyable error type for value() (LWG 3843) and `response` holds
#    move-only wit::vector. `*std::move(result)` is the same access without the check.
sed -i \
    -e 's/__export_name__("cabi_post_on_request")/__export_name__("cabi_post_on-request")/' \
    -e 's/__export_name__("cabi_post_on_response")/__export_name__("cabi_post_on-response")/' \
    -e 's/std::move(\(result[0-9]*\))\.value()/*std::move(\1)/g' \
    gen/transform.cpp
grep -q '"cabi_post_on-request"' gen/transform.cpp && grep -q '"cabi_post_on-response"' gen/transform.cpp \
    || die "patching gen/transform.cpp failed: post-return exports not found"

# 3. Compile to a core module. -mexec-model=reactor: a library with `_initialize`, no main.
#    -flto: 12% smaller. -fno-exceptions -fno-rtti: no unwinder or type info.
#    -DNDEBUG: assert() would pull in stdio (WASI fd_write). stack-size: Zig's default
#    stack is 16 MiB, which would make every instance start with 16 MiB of linear memory;
#    the deepest recursion here is the JSON reader's, capped at 32 levels.
export ZIG_GLOBAL_CACHE_DIR="$tools/zig-cache"
"$python" -m ziglang c++ --target=wasm32-wasi -std=c++23 -Os -flto -fno-exceptions -fno-rtti \
    -DNDEBUG -mexec-model=reactor -Wl,--strip-all -Wl,-z,stack-size=1048576 -Wall -Wextra -Werror=return-type \
    -I gen -I "$src" \
    "$src/plugin.cpp" "$src/cors.cpp" gen/transform.cpp gen/transform_component_type.o \
    -o core.wasm

# The component must import nothing but the host interface: no WASI.
if "$wasm_tools" print core.wasm | grep -q '(import "wasi'; then
    "$wasm_tools" print core.wasm | grep '(import ' >&2
    die "core.wasm imports WASI functions (above); the gateway provides none"
fi

# 4. Core module → component (the world comes from the component-type object).
"$wasm_tools" component new core.wasm -o component.wasm
"$wasm_tools" validate --features component-model component.wasm

mkdir -p "$(dirname "$out")"
cp component.wasm "$out.tmp"
mv "$out.tmp" "$out"
printf 'cors build: %s (%s bytes)\n' "$out" "$(wc -c <"$out" | tr -d ' ')"
