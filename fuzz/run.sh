#!/usr/bin/env bash
# Runs every fuzz target (or those named) one after another, SECONDS each (default 600).
# Usage: fuzz/run.sh [SECONDS] [TARGET...]    (see docs/fuzzing.md)
# Stable toolchain: no sanitizer (ASan needs nightly); debug assertions and overflow checks on.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-600}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(form validator jwks checkpoint proof)
target_dir="${CARGO_TARGET_DIR:-target}"
mkdir -p logs
status=0
for t in "${targets[@]}"; do
    mkdir -p "runs/$t"
    extra=()
    # Long kids and claims must be reachable for the detail-length check.
    [ "$t" = validator ] && extra+=(-max_len=16384)
    echo "== $t: ${seconds}s, log in fuzz/logs/$t.log"
    if ! nice -n 15 cargo fuzz run --sanitizer none --target-dir "$target_dir" "$t" \
        "runs/$t" "corpus/$t" -- -max_total_time="$seconds" -print_final_stats=1 \
        -timeout=10 "${extra[@]}" >"logs/$t.log" 2>&1; then
        echo "!! $t failed: see fuzz/logs/$t.log and fuzz/artifacts/$t/"
        status=1
    fi
    grep -E '^(Done|stat::)|#[0-9]+ *DONE' "logs/$t.log" | tail -4 || true
done
exit "$status"
