#!/usr/bin/env bash
# Builds the bundled Rust plugins (plugins/*) for wasm32-wasip2 and copies each
# <name>.wasm into plugins/, the gateway's default plugin directory.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip2 >/dev/null
cargo build --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml
for crate in plugins/*/Cargo.toml; do
    name=$(basename "$(dirname "$crate")")
    cp "plugins/target/wasm32-wasip2/release/${name//-/_}.wasm" "plugins/$name.wasm"
    echo "built plugins/$name.wasm ($(stat -c %s "plugins/$name.wasm") bytes)"
done
