#!/usr/bin/env bash
# End-to-end check of the postern binary with real clients (swaks, curl).
#
# Builds postern, runs it from a copy of config/postern.toml with the SMTP
# listener and the metrics endpoint on free loopback ports and the outbox in a
# temporary directory, sends two messages (swaks with PIPELINING, curl), checks
# the outbox and /metrics, then stops exactly the process it started with
# SIGTERM and expects exit 0. Needs: cargo, swaks, curl, python3.
#
# Prints "e2e: N passed, M failed" and exits non-zero if anything failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

for tool in cargo swaks curl python3; do
    command -v "$tool" >/dev/null || { echo "e2e: $tool is required" >&2; exit 2; }
done

echo "e2e: building postern"
cargo build --quiet --bin postern
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/postern"
[[ -x "$BIN" ]] || { echo "e2e: $BIN was not built" >&2; exit 2; }

TMP="$(mktemp -d)"
PID=""
passed=0
failed=0

cleanup() {
    local rc=$?
    if [[ -n "$PID" ]] && kill -0 "$PID" 2>/dev/null; then
        kill -TERM "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    if (( rc != 0 )) && [[ -f "$TMP/postern.log" ]]; then
        echo "e2e: --- postern log ---" >&2
        sed 's/\x1b\[[0-9;]*m//g' "$TMP/postern.log" | tail -n 50 >&2
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT

pass() { passed=$((passed + 1)); echo "ok   - $1"; }
fail() { failed=$((failed + 1)); echo "FAIL - $1" >&2; }
# check NAME COMMAND...: runs COMMAND, counts a pass or a failure.
check() {
    local name="$1"; shift
    if "$@"; then pass "$name"; else fail "$name"; fi
}

# Two distinct free ports, held together while chosen so they differ.
read -r SMTP_PORT METRICS_PORT < <(python3 - <<'PY'
import socket
a, b = socket.socket(), socket.socket()
a.bind(("127.0.0.1", 0)); b.bind(("127.0.0.1", 0))
print(a.getsockname()[1], b.getsockname()[1])
PY
)

OUTBOX="$TMP/outbox"
CONFIG="$TMP/postern.toml"
sed -e "s|127\.0\.0\.1:2525|127.0.0.1:$SMTP_PORT|g" \
    -e "s|127\.0\.0\.1:9465|127.0.0.1:$METRICS_PORT|g" \
    -e "s|^dir = \"\.\./var/outbox\".*|dir = \"$OUTBOX\"|" \
    config/postern.toml > "$CONFIG"
for want in "addr = \"127.0.0.1:$SMTP_PORT\"" "addr = \"127.0.0.1:$METRICS_PORT\"" "dir = \"$OUTBOX\""; do
    grep -qF "$want" "$CONFIG" || { echo "e2e: config/postern.toml changed shape: no $want after rewriting" >&2; exit 1; }
done

"$BIN" check --config "$CONFIG" > "$TMP/check.out"
"$BIN" run --config "$CONFIG" > "$TMP/postern.log" 2>&1 &
PID=$!
echo "e2e: postern pid $PID, smtp 127.0.0.1:$SMTP_PORT, metrics 127.0.0.1:$METRICS_PORT"

METRICS="http://127.0.0.1:$METRICS_PORT"
deadline=$((SECONDS + 30))
until curl -fsS -o /dev/null "$METRICS/readyz" 2>/dev/null; do
    kill -0 "$PID" 2>/dev/null || { echo "e2e: postern exited before it was ready" >&2; PID=""; exit 1; }
    (( SECONDS < deadline )) || { echo "e2e: /readyz not 200 within 30 s" >&2; exit 1; }
    sleep 0.1
done
pass "/readyz answers 200"

SWAKS=(timeout 30 swaks --server "127.0.0.1:$SMTP_PORT" --auth-user demo --auth-password demo-password
       --to you@example.net --hide-informational)

# 1. swaks with PIPELINING.
swaks_ok() {
    "${SWAKS[@]}" --pipeline --from demo@example.com \
        --header "Subject: e2e via swaks" --body "hello from swaks" > "$TMP/swaks.out" 2>&1 &&
        grep -q '^<-  250 2.0.0' "$TMP/swaks.out"
}
check "swaks --pipeline: AUTH as demo, 250 2.0.0 after DATA" swaks_ok

# 2. curl smtp://
printf 'From: demo@example.com\r\nTo: you@example.net\r\nSubject: e2e via curl\r\n\r\nhello from curl\r\n' > "$TMP/mail.txt"
curl_ok() {
    timeout 30 curl -sS "smtp://127.0.0.1:$SMTP_PORT" --user demo:demo-password \
        --mail-from demo@example.com --mail-rcpt you@example.net --upload-file "$TMP/mail.txt"
}
check "curl smtp:// delivers" curl_ok

# 3. Refusals that must not produce a message.
wrong_password() {
    ! timeout 30 swaks --server "127.0.0.1:$SMTP_PORT" --auth-user demo --auth-password wrong \
        --from demo@example.com --to you@example.net > "$TMP/wrong.out" 2>&1 &&
        grep -q '535 5.7.8' "$TMP/wrong.out"
}
check "wrong password: 535 5.7.8" wrong_password
sender_refused() {
    ! "${SWAKS[@]}" --from someone@elsewhere.test > "$TMP/sender.out" 2>&1 &&
        grep -q '550 5.7.1' "$TMP/sender.out"
}
check "sender outside allowed_senders: 550 5.7.1" sender_refused
no_auth() {
    ! timeout 30 swaks --server "127.0.0.1:$SMTP_PORT" --from demo@example.com \
        --to you@example.net > "$TMP/noauth.out" 2>&1 &&
        grep -q '530 5.7.0' "$TMP/noauth.out"
}
check "MAIL without AUTH: 530 5.7.0" no_auth

# 4. The outbox holds exactly the two messages.
shopt -s nullglob
emls=("$OUTBOX"/*.eml)
jsons=("$OUTBOX"/*.json)
check "two .eml files in the outbox" test "${#emls[@]}" -eq 2
check "two .json envelopes in the outbox" test "${#jsons[@]}" -eq 2
check ".eml from swaks has its subject and body" \
    bash -c 'grep -lq "^Subject: e2e via swaks" "$@" && grep -l "^Subject: e2e via swaks" "$@" | xargs grep -q "hello from swaks"' _ "${emls[@]}"
check ".eml from curl is byte-for-byte the uploaded message" \
    bash -c 'for f in "$@"; do cmp -s "$f" "'"$TMP/mail.txt"'" && exit 0; done; exit 1' _ "${emls[@]}"
check "envelopes name user demo and you@example.net" \
    bash -c 'for f in "$@"; do grep -q "\"user\": \"demo\"" "$f" && grep -q "you@example.net" "$f" || exit 1; done' _ "${jsons[@]}"

# 5. Metrics.
curl -fsS "$METRICS/metrics" > "$TMP/metrics.txt"
check 'postern_messages_total{result="accepted",user="demo"} 2' \
    grep -qxF 'postern_messages_total{result="accepted",user="demo"} 2' "$TMP/metrics.txt"
check "failed AUTH is counted" grep -qE '^postern_auth_attempts_total\{mechanism="(plain|login)",result="fail"\} [1-9]' "$TMP/metrics.txt"
check "successful AUTH is counted" grep -qE '^postern_auth_attempts_total\{mechanism="(plain|login)",result="ok"\} [1-9]' "$TMP/metrics.txt"
check "/healthz answers 200" curl -fsS -o /dev/null "$METRICS/healthz"

# 6. SIGTERM: exit 0 within 15 s.
kill -TERM "$PID"
deadline=$((SECONDS + 15))
while kill -0 "$PID" 2>/dev/null && (( SECONDS < deadline )); do sleep 0.1; done
if kill -0 "$PID" 2>/dev/null; then
    fail "postern stops within 15 s of SIGTERM"
else
    rc=0
    wait "$PID" || rc=$?
    PID=""
    check "postern exits 0 on SIGTERM (exit $rc)" test "$rc" -eq 0
fi

echo "e2e: $passed passed, $failed failed"
(( failed == 0 ))
