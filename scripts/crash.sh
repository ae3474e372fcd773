#!/usr/bin/env bash
# Crash test of the spool (issue 12): provider down, concurrent clients,
# kill -9 of postern after N acknowledgements, restart on the same spool,
# provider up: every acknowledged message delivered, none twice.
# See scripts/crash_test.py; CRASH_ACKS, CRASH_CLIENTS, CRASH_TIMEOUT tune it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
command -v python3 >/dev/null || { echo "crash: python3 is required" >&2; exit 2; }
cargo build --quiet --bin postern
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/postern"
exec python3 scripts/crash_test.py "$BIN"
