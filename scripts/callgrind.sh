#!/usr/bin/env bash
# Instructions per message of postern (release build) under callgrind: N plain
# 2 KB sessions from smtp-source (trusted by network, no TLS, no AUTH),
# relayed to smtp-sink. Callgrind counts instructions, not time, so the figure
# repeats whatever else the machine does; compare two builds with it.
#   bash scripts/callgrind.sh [N]   (default 2000, and a run of N/10 to take start
#   and stop out; needs valgrind and postfix)
# Prints the total and the per-message figure, and leaves the profile for
# callgrind_annotate in $OUT (default target/callgrind.out).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
N="${1:-2000}"
OUT="${OUT:-$ROOT/target/callgrind.out}"
for tool in valgrind smtp-sink smtp-source callgrind_annotate; do
    command -v "$tool" >/dev/null || { echo "callgrind: $tool is required" >&2; exit 2; }
done
cargo build --release --quiet --bin postern
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/postern"
TMP="$(mktemp -d)"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 1 600); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "callgrind: nothing listens on $1" >&2
    exit 1
}
SINK_PORT="$(free_port)"
PORT="$(free_port)"
sink_user=(); [[ "$(id -u)" == 0 ]] && sink_user=(-u nobody)   # as root it must drop to a user
smtp-sink "${sink_user[@]}" "127.0.0.1:$SINK_PORT" 256 &
PIDS+=("$!")
wait_port "$SINK_PORT"
cat > "$TMP/postern.toml" <<EOF
[server]
hostname = "postern.callgrind"
[[listener]]
name = "plain"
addr = "127.0.0.1:$PORT"
tls = "none"
auth = "optional"
[limits]
messages_per_minute = 100000000
recipients_per_hour = 100000000
max_connections_per_user = 100000
[[upstream]]
name = "sink"
kind = "smtp"
addr = "127.0.0.1:$SINK_PORT"
tls = "none"
max_connections = 20
health_check_interval = "0s"
[[user]]
name = "device"
networks = ["127.0.0.1/32"]
upstream = "sink"
allowed_senders = ["*"]
EOF
# One run of $1 messages; prints the program's total instructions.
run() {
    valgrind --tool=callgrind --callgrind-out-file="$OUT" "$BIN" run --config "$TMP/postern.toml" \
        > "$TMP/postern.log" 2>&1 &
    local postern=$!
    PIDS+=("$postern")
    wait_port "$PORT"
    smtp-source -s 5 -l 2048 -m "$1" -f bench@example.com -t sink@example.net -M callgrind.client "127.0.0.1:$PORT"
    kill -TERM "$postern"
    wait "$postern" || true
    callgrind_annotate "$OUT" 2>/dev/null | awk '/PROGRAM TOTALS/ && !t {gsub(",", "", $1); t = $1} END {print t}'
}
# Start and stop cost the same in both runs: the difference is the messages'.
FEW=$((N / 10))
few="$(run "$FEW")"
all="$(run "$N")"
echo "callgrind: $FEW messages $few instructions, $N messages $all; $(((all - few) / (N - FEW))) per message"
