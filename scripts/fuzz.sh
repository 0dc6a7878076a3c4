#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a set time each and prints executions and
# findings. Needs the nightly toolchain (rustup) and installs cargo-fuzz from crates.io
# when it is missing.
#
#   scripts/fuzz.sh                 # 600 s per target, one target per core at a time
#   FUZZ_SECONDS=60 scripts/fuzz.sh normalize router
#
# Crashes are kept under fuzz/artifacts/TARGET/, the corpus under fuzz/corpus/TARGET/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-600}
jobs=${FUZZ_JOBS:-$(nproc)}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(normalize config router convert)
rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# One shared target dir for the fuzz build (it differs from the normal one: nightly,
# sanitizer flags), kept between runs.
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$PWD/target/fuzz}
(cd fuzz && cargo +nightly fuzz build -O)
results=$(mktemp -d)
run() {
    local target=$1
    mkdir -p "fuzz/corpus/$target"
    (cd fuzz && cargo +nightly fuzz run -O "$target" -- -max_total_time="$seconds" \
        -print_final_stats=1 >"$results/$target.log" 2>&1) && echo ok >"$results/$target.status" \
        || echo FAILED >"$results/$target.status"
}
running=0
for target in "${targets[@]}"; do
    run "$target" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then wait -n; running=$((running - 1)); fi
done
wait
failed=0
printf '%-10s %-8s %14s %10s %s\n' target result executions exec/s corpus
for target in "${targets[@]}"; do
    log=$results/$target.log
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    corpus=$(find "fuzz/corpus/$target" -type f | wc -l)
    status=$(cat "$results/$target.status")
    printf '%-10s %-8s %14s %10s %s\n' "$target" "$status" "${execs:--}" "${rate:--}" "$corpus"
    if [ "$status" != ok ]; then
        failed=1
        grep -E "panicked|ERROR: libFuzzer|SUMMARY" "$log" | head -5
    fi
done
exit "$failed"
