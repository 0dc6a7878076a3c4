#!/usr/bin/env bash
# Builds the bundled plugins as WebAssembly components and drops each one into
# this directory as <name>.wasm, which is where the gateway looks by default.
#
#   plugins/build.sh                 build all of them
#   plugins/build.sh -p jwt-auth     build one (extra arguments go to cargo)
#
# Each file is written under a temporary name and renamed into place, so a
# running gateway that watches this directory never sees a half-written
# plugin; a plugin whose bytes did not change is not touched at all.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$here/target}"

# rust-toolchain targets are not installed on demand on every machine.
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi

cargo build --release --target wasm32-wasip2 --manifest-path "$here/Cargo.toml" "$@"

out="$CARGO_TARGET_DIR/wasm32-wasip2/release"
for manifest in "$here"/*/Cargo.toml; do
    name="$(basename "$(dirname "$manifest")")"
    built="$out/${name//-/_}.wasm"
    [ -f "$built" ] || continue
    dest="$here/$name.wasm"
    if [ -f "$dest" ] && cmp -s "$built" "$dest"; then
        echo "unchanged $name.wasm"
        continue
    fi
    cp "$built" "$here/.$name.wasm.tmp"
    mv -f "$here/.$name.wasm.tmp" "$dest"
    echo "wrote     $name.wasm ($(wc -c <"$dest") bytes)"
done
