#!/usr/bin/env bash
# Unit tests of timing.ts under Node: compiles test/entry.ts (timing.ts plus string
# helpers) with JS bindings into a scratch directory, then runs timing.test.mjs.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tools="${WASMGATE_TOOLS:-$HOME/.cache/wasmgate-tools}"
asc="$tools/js/node_modules/.bin/asc"
[ -x "$asc" ] || { echo "run.sh: AssemblyScript not found at $asc (npm install assemblyscript@0.28.20 in $tools/js)" >&2; exit 1; }
command -v node >/dev/null || { echo "run.sh: node is not installed" >&2; exit 1; }
out="$tools/build/server-timing-test"
mkdir -p "$out"
"$asc" "$here/entry.ts" --bindings esm --exportRuntime -O1 -o "$out/timing.wasm"
SERVER_TIMING_MODULE="$out/timing.js" node --test "$here/timing.test.mjs"
