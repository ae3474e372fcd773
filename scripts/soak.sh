#!/usr/bin/env bash
# Soak test: postern under mixed load on loopback for DURATION (e.g. 120, 2m, 30m).
#
#   bash scripts/soak.sh 2m
#
# Builds postern (debug, as the tests do) and runs scripts/soak.py: relays,
# AUTH failures, oversize bodies, slow clients, abrupt disconnects mid-DATA,
# SIGHUP every few seconds, and a fake provider that injects 4xx/5xx/drops,
# while it samples RSS, open fds, threads and connections each second.
# It fails if an acknowledged message is lost or duplicated at the provider,
# if a normal client is not served within 1 s, or if RSS or fds keep growing.
# Everything listens on and talks to 127.0.0.1 only; it stops by itself.
# SOAK_SEED picks the provider's fault pattern; SOAK_KEEP=1 keeps the work dir
# (postern.toml, postern.log, samples.csv); SOAK_MALLOC_FIXED=1 pins glibc's
# mmap threshold (see MALLOC_ENV in soak.py).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

arg="${1:-}"
case "$arg" in
    *[0-9]m) seconds=$(( ${arg%m} * 60 )) ;;
    *[0-9]s) seconds=${arg%s} ;;
    [0-9]*) seconds=$arg ;;
    *) echo "usage: scripts/soak.sh DURATION   (seconds, or e.g. 2m, 30m)" >&2; exit 2 ;;
esac
[[ "$seconds" =~ ^[0-9]+$ ]] && (( seconds >= 10 && seconds <= 86400 )) || {
    echo "soak: DURATION must be between 10 s and 24 h" >&2; exit 2; }

for tool in cargo python3; do
    command -v "$tool" >/dev/null || { echo "soak: $tool is required" >&2; exit 2; }
done

echo "soak: building postern"
cargo build --quiet --bin postern
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/postern"

WORK="$(mktemp -d)"
cleanup() {
    local rc=$?
    if (( rc != 0 )) && [[ -f "$WORK/postern.log" ]]; then
        echo "soak: --- last lines of the postern log ---" >&2
        sed 's/\x1b\[[0-9;]*m//g' "$WORK/postern.log" | tail -n 30 >&2
    fi
    if [[ "${SOAK_KEEP:-0}" == 1 ]]; then echo "soak: kept $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT

# The growth check itself, on synthetic series (a flat one passes, leaks fail).
python3 scripts/soak.py --self-test

# soak.py starts postern itself and stops exactly that process (by its PID).
timeout --signal=TERM $(( seconds + 300 )) python3 scripts/soak.py "$BIN" "$seconds" "$WORK"
