#!/usr/bin/env bash
# Builds the bundled plugins that are not written in Rust, from source, into
# plugins/<name>.wasm (the gateway's default plugin directory):
#
#   plugins/python/json-guard/         → plugins/json-guard.wasm             (componentize-py)
#   plugins/js/response-envelope/      → plugins/response-envelope.wasm      (componentize-js, SpiderMonkey)
#                                      → plugins/response-envelope-qjs.wasm  (componentize-qjs, QuickJS)
#
#   scripts/build-polyglot.sh            install the toolchains if needed, build what changed
#   scripts/build-polyglot.sh --force    rebuild everything
#   scripts/build-polyglot.sh NAME...    only these outputs (e.g. json-guard)
#
# The toolchains come from PyPI and npm, pinned, into a cache outside the repository
# (reused on the next run):
#
#   ${WASMGATE_TOOLS:-$HOME/.cache/wasmgate-tools}/venv   python venv with componentize-py
#   ${WASMGATE_TOOLS:-$HOME/.cache/wasmgate-tools}/js     npm packages componentize-js, componentize-qjs
#
# Needs python3 with venv, and node with npm (used here: Python 3.11, Node 20). A build is
# skipped when its inputs (sources, wit/, toolchain versions, build command) and its output
# are the ones the last build recorded; every output is written under a temporary name and
# renamed into place, so a gateway watching plugins/ never sees a half-written file.
set -euo pipefail

COMPONENTIZE_PY_VERSION=0.25.1
COMPONENTIZE_JS_VERSION=0.23.0
COMPONENTIZE_QJS_VERSION=0.4.5

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="${WASMGATE_TOOLS:-$HOME/.cache/wasmgate-tools}"
wit="$root/wit"
out_dir="$root/plugins"

force=0
only=()
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        -*) echo "unknown option $arg (see --help)" >&2; exit 2 ;;
        *) only+=("$arg") ;;
    esac
done

now_ms() { date +%s%3N; }
say() { printf '%s\n' "$*"; }
die() { printf 'build-polyglot: %s\n' "$*" >&2; exit 1; }

# === Toolchains ===

need() { command -v "$1" >/dev/null || die "$1 is not installed ($2)"; }

install_python_tools() {
    need python3 "install Python 3 with the venv module"
    local venv="$tools/venv" have=""
    if [ -x "$venv/bin/componentize-py" ]; then
        have="$("$venv/bin/componentize-py" --version 2>/dev/null | awk '{print $2}')"
    fi
    if [ "$have" = "$COMPONENTIZE_PY_VERSION" ]; then
        say "toolchain componentize-py $have (cached in $venv)"
        return
    fi
    local started; started=$(now_ms)
    say "installing componentize-py==$COMPONENTIZE_PY_VERSION into $venv"
    mkdir -p "$tools"
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "componentize-py==$COMPONENTIZE_PY_VERSION"
    say "  installed in $(( $(now_ms) - started )) ms"
}

js_version() { # package dir → version, or nothing
    local manifest="$tools/js/node_modules/$1/package.json"
    if [ -f "$manifest" ]; then
        node -p "require('$manifest').version" 2>/dev/null || true
    fi
}

install_js_tools() {
    need node "install Node.js with npm"
    need npm "install npm"
    local js="$tools/js"
    if [ "$(js_version @bytecodealliance/componentize-js)" = "$COMPONENTIZE_JS_VERSION" ] \
        && [ "$(js_version componentize-qjs)" = "$COMPONENTIZE_QJS_VERSION" ]; then
        say "toolchain componentize-js $COMPONENTIZE_JS_VERSION, componentize-qjs $COMPONENTIZE_QJS_VERSION (cached in $js)"
        return
    fi
    local started; started=$(now_ms)
    say "installing componentize-js@$COMPONENTIZE_JS_VERSION and componentize-qjs@$COMPONENTIZE_QJS_VERSION into $js"
    mkdir -p "$js"
    cat >"$js/package.json" <<EOF
{
  "name": "wasmgate-js-tools",
  "private": true,
  "description": "Toolchains for wasmgate's JavaScript plugins (written by scripts/build-polyglot.sh)",
  "dependencies": {
    "@bytecodealliance/componentize-js": "$COMPONENTIZE_JS_VERSION",
    "componentize-qjs": "$COMPONENTIZE_QJS_VERSION"
  }
}
EOF
    (cd "$js" && npm install --no-audit --no-fund --loglevel=error)
    say "  installed in $(( $(now_ms) - started )) ms"
}

# === Builds ===

# Hash of everything a build depends on: the files of its source folder, the WIT, the
# tool version and the build command.
inputs_hash() {
    local src="$1"; shift
    {
        printf '%s\n' "$*"
        (cd "$src" && find . -type f \( -name '*.py' -o -name '*.js' -o -name '*.mjs' -o -name '*.json' \) \
            ! -path '*/__pycache__/*' ! -path '*/node_modules/*' -print0 | sort -z | xargs -0 sha256sum)
        (cd "$wit" && find . -type f -name '*.wit' -print0 | sort -z | xargs -0 sha256sum)
    } | sha256sum | cut -d' ' -f1
}

file_hash() { sha256sum "$1" | cut -d' ' -f1; }

wanted() {
    [ ${#only[@]} -eq 0 ] && return 0
    local name
    for name in "${only[@]}"; do [ "$name" = "$1" ] && return 0; done
    return 1
}

summary=()

# build NAME SOURCE_DIR TOOL_VERSION -- COMMAND...: runs COMMAND in SOURCE_DIR, which must
# write the component to plugins/.NAME.wasm.tmp; that file is then renamed to NAME.wasm.
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

needs_python=0 needs_js=0
wanted json-guard && needs_python=1
{ wanted response-envelope || wanted response-envelope-qjs; } && needs_js=1
[ $needs_python = 1 ] && install_python_tools
[ $needs_js = 1 ] && install_js_tools

py="$tools/venv/bin/componentize-py"
cjs="$tools/js/node_modules/@bytecodealliance/componentize-js/src/cli.js"
qjs="$tools/js/node_modules/componentize-qjs/cli.mjs"

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
