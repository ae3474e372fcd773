#!/usr/bin/env bash
# Fair share of provider connections under abuse (scripts/fairshare.py):
# a trusted client dropping ~100 transactions a second mid-DATA beside ten
# normal devices, through one provider account with max_connections = 4.
# Fails if a normal device is refused, a normal message is lost or
# duplicated, normal deliveries stall for more than 5 s, or a dropped
# transaction reaches the provider.
#
#   bash scripts/fairshare.sh [SECONDS]     (default 180; CI runs 30)
#
# Loopback only; it starts postern and the fake provider itself and stops
# exactly those. FAIRSHARE_KEEP=1 keeps the work dir (config and log).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
seconds="${1:-180}"
[[ "$seconds" =~ ^[0-9]+$ ]] && (( seconds >= 5 && seconds <= 86400 )) || {
    echo "fairshare: SECONDS must be between 5 and 86400" >&2; exit 2; }

echo "fairshare: building postern"
cargo build --quiet --bin postern
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/postern"

WORK="$(mktemp -d)"
cleanup() {
    local rc=$?
    if (( rc != 0 )) && [[ -f "$WORK/postern.log" ]]; then
        echo "fairshare: --- last lines of the postern log ---" >&2
        sed 's/\x1b\[[0-9;]*m//g' "$WORK/postern.log" | tail -n 20 >&2
    fi
    if [[ "${FAIRSHARE_KEEP:-0}" == 1 ]]; then echo "fairshare: kept $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT

timeout --signal=TERM $(( seconds + 240 )) python3 scripts/fairshare.py "$BIN" "$seconds" "$WORK"
