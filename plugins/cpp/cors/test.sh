#!/usr/bin/env bash
# Runs the native unit tests of the CORS logic (cors_test.cpp), compiled with `zig c++` for
# this machine. The first run compiles libc++ for the host target (about a minute).
set -euo pipefail

src="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tools="${WASMGATE_TOOLS:-$HOME/.cache/wasmgate-tools}"
python="$tools/venv/bin/python"
"$python" -m ziglang version >/dev/null 2>&1 \
    || { echo "cors test: zig is missing ($tools/venv/bin/pip install ziglang==0.17.0)" >&2; exit 1; }

out="$tools/build/cpp-cors-test"
mkdir -p "$out"
export ZIG_GLOBAL_CACHE_DIR="$tools/zig-cache"
"$python" -m ziglang c++ -std=c++23 -O1 -g -Wall -Wextra -fsanitize=undefined \
    -I "$src" "$src/cors_test.cpp" "$src/cors.cpp" -o "$out/cors_test"
"$out/cors_test"
