#!/usr/bin/env bash
# Builds every cargo-fuzz target and runs each for a bounded time over its
# checked-in seed corpus (fuzz/corpus/<target>/, only read: new inputs go to a
# scratch directory). A crash, panic or failed invariant fails the run; the
# input that did it is kept in fuzz/artifacts/<target>/ and should be added to
# fuzz/corpus/<target>/ as a regression seed once fixed.
#
#   bash fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     (default 30 s, all targets)
#
# Needs the nightly toolchain; installs cargo-fuzz when it is missing. Built
# without a sanitizer (`-s none`): postern forbids unsafe code, and on 2 cores
# the time goes further on inputs than on AddressSanitizer's checks.
# Prints one line per target: "fuzz: <target>: N runs in S s, 0 crashes".
set -euo pipefail

FUZZ="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$FUZZ"

seconds="${1:-30}"
shift || true
[[ "$seconds" =~ ^[0-9]+$ ]] || { echo "fuzz: SECONDS must be a number" >&2; exit 2; }

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz: installing the nightly toolchain"
    rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked --quiet
fi

FLAGS=(--sanitizer none)
echo "fuzz: building the targets"
cargo +nightly fuzz build "${FLAGS[@]}" 2>&1 | grep -Ev '^\s+(Compiling|Downloaded|Downloading)' || true
# grep hides the build's progress; the build's own status decides.
cargo +nightly fuzz build "${FLAGS[@]}" >/dev/null 2>&1

if (( $# > 0 )); then targets=("$@"); else mapfile -t targets < <(cargo +nightly fuzz list); fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
failed=0
total=0
for t in "${targets[@]}"; do
    mkdir -p "$WORK/$t" "artifacts/$t"
    seeds="corpus/$t"
    [[ -d "$seeds" ]] || { echo "fuzz: $t has no seed corpus in fuzz/$seeds" >&2; failed=$((failed + 1)); continue; }
    log="$WORK/$t.log"
    set +e
    cargo +nightly fuzz run "${FLAGS[@]}" "$t" "$WORK/$t" "$seeds" -- \
        -max_total_time="$seconds" -print_final_stats=1 -rss_limit_mb=2048 \
        -artifact_prefix="artifacts/$t/" >"$log" 2>&1
    rc=$?
    set -e
    # The last "Done N runs" / number_of_executed_units line; 0 if the run never got there.
    runs=$( { grep -Eo 'number_of_executed_units: *[0-9]+|Done [0-9]+ runs' "$log" || true; } \
        | grep -Eo '[0-9]+' | tail -n 1)
    runs="${runs:-0}"
    if (( rc == 0 )) && (( runs > 0 )); then
        echo "fuzz: $t: $runs runs in $seconds s, 0 crashes"
        total=$((total + runs))
    else
        failed=$((failed + 1))
        echo "fuzz: $t: FAILED after $runs runs (exit $rc); input kept in fuzz/artifacts/$t/" >&2
        grep -E 'panicked|ERROR|SUMMARY|assert' "$log" | head -n 10 >&2 || true
        tail -n 20 "$log" >&2
    fi
done
echo "fuzz: ${#targets[@]} targets, $total runs, $failed failed"
(( failed == 0 ))
