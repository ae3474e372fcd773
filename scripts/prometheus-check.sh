#!/usr/bin/env bash
# The dashboard and the alert rules against a real Prometheus (Debian's 2.42).
#
# Starts, all on free loopback ports and for at most CHECK_TIMEOUT seconds
# (default 180): a scripted SMTP provider (scripts/fake-provider.py), postern
# with a plain and a STARTTLS listener (a certificate valid for 2 days), three
# upstreams (the provider, one that is down, the outbox) and four users, and a
# Prometheus that scrapes postern every second with contrib/prometheus/alerts.yml.
# Sends a traffic mix (successes, TLS, a wrong password burst, a refused
# sender, provider 4xx and 5xx, a rate limit, a refused recipient, an
# unreachable provider, a provider password change, a good and a failed
# reload), then through Prometheus's HTTP API:
#   - evaluates every dashboard query: no data fails the run;
#   - compares counters with the traffic that was sent;
#   - evaluates every alert expression: it must return data exactly when the
#     mix makes it true.
# Also runs `promtool check metrics` on a scrape. Stops exactly the processes
# it started, by PID. Prints "prometheus-check: N passed, M failed".
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
for tool in cargo swaks curl python3 openssl prometheus promtool; do
    command -v "$tool" >/dev/null || { echo "prometheus-check: $tool is required" >&2; exit 2; }
done
deadline=$((SECONDS + ${CHECK_TIMEOUT:-180}))

cargo build --quiet --locked --bin postern
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/postern"

TMP="$(mktemp -d)"
PIDS=()
passed=0
failed=0
cleanup() {
    local rc=$?
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if (( rc != 0 )) && [[ -f "$TMP/postern.log" ]]; then
        echo "prometheus-check: --- postern log (tail) ---" >&2
        tail -n 30 "$TMP/postern.log" >&2
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
pass() { passed=$((passed + 1)); echo "ok   - $1"; }
fail() { failed=$((failed + 1)); echo "FAIL - $1" >&2; }
in_time() { (( SECONDS < deadline )) || { echo "prometheus-check: out of time" >&2; exit 1; }; }

read -r SMTP TLSPORT METRICS PROVIDER DEAD PROM < <(python3 - <<'PY'
import socket
socks = [socket.socket() for _ in range(6)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
PY
)

# A certificate that expires in 2 days: both certificate alerts must fire.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=localhost" \
    -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null
echo "provider-secret-1" > "$TMP/provider-expects"
echo "provider-secret-1" > "$TMP/postern-secret"
echo "unused" > "$TMP/dead-secret"
HASH="$(echo "device-password" | "$BIN" hash-password)"

write_config() {  # $1: extra line at the end (used to break the file)
    cat > "$TMP/postern.toml" <<EOF
[server]
hostname = "postern.test"

[[listener]]
name = "local"
addr = "127.0.0.1:$SMTP"
tls = "none"

[[listener]]
name = "tls"
addr = "127.0.0.1:$TLSPORT"
tls = "starttls"

[tls]
cert = "$TMP/cert.pem"
key = "$TMP/key.pem"

[metrics]
addr = "127.0.0.1:$METRICS"

[limits]
auth_failures_per_ip_per_minute = 10

[[upstream]]
name = "provider"
kind = "smtp"
addr = "127.0.0.1:$PROVIDER"
tls = "none"
username = "relay@example.com"
password_file = "$TMP/postern-secret"
health_check_interval = "1s"
idle_timeout = "4s"

[[upstream]]
name = "down"
kind = "smtp"
addr = "127.0.0.1:$DEAD"
tls = "none"
username = "relay@example.com"
password_file = "$TMP/dead-secret"
health_check_interval = "1s"
idle_timeout = "4s"
pool_wait = "1s"

[[upstream]]
name = "outbox"
kind = "outbox"
dir = "$TMP/outbox"

# Used by no user: its spool workers and its fallback give the spool and
# failover panels their (zero) series.
[[upstream]]
name = "spooled"
kind = "smtp"
addr = "127.0.0.1:$PROVIDER"
tls = "none"
username = "relay@example.com"
password_file = "$TMP/postern-secret"
delivery = "spool"
fallback = ["provider"]
health_check_interval = "0s"

[spool]
dir = "$TMP/spool"

[[user]]
name = "scanner"
password_hash = "$HASH"
upstream = "provider"
allowed_senders = ["*@example.com"]

[[user]]
name = "printer"
password_hash = "$HASH"
upstream = "provider"
allowed_senders = ["*@example.com"]
[user.limits]
messages_per_minute = 2

[[user]]
name = "camera"
password_hash = "$HASH"
upstream = "down"
allowed_senders = ["*@example.com"]

[[user]]
name = "demo"
password_hash = "$HASH"
upstream = "outbox"
allowed_senders = ["*@example.com"]
$1
EOF
}
write_config ""
"$BIN" check --config "$TMP/postern.toml" > /dev/null

python3 scripts/fake-provider.py "$PROVIDER" "$TMP/provider-expects" &
PIDS+=($!)
"$BIN" run --config "$TMP/postern.toml" > "$TMP/postern.log" 2>&1 &
POSTERN=$!
PIDS+=("$POSTERN")
until curl -fsS -o /dev/null "http://127.0.0.1:$METRICS/healthz" 2>/dev/null; do
    in_time; sleep 0.2
done

cat > "$TMP/prometheus.yml" <<EOF
global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: ["$ROOT/contrib/prometheus/alerts.yml"]
scrape_configs:
  - job_name: postern
    static_configs: [{targets: ["127.0.0.1:$METRICS"]}]
EOF
prometheus --config.file="$TMP/prometheus.yml" --storage.tsdb.path="$TMP/tsdb" \
    --web.listen-address="127.0.0.1:$PROM" --log.level=warn > "$TMP/prometheus.log" 2>&1 &
PIDS+=($!)
until curl -fsS -o /dev/null "http://127.0.0.1:$PROM/-/ready" 2>/dev/null; do
    in_time; sleep 0.2
done
# Traffic only after Prometheus has scraped the series at 0 twice: increase()
# and rate() measure from the first sample they see.
until python3 - "$PROM" <<'PY'
import json, sys, urllib.parse, urllib.request
q = 'count_over_time(postern_build_info[1m])'
url = f"http://127.0.0.1:{sys.argv[1]}/api/v1/query?" + urllib.parse.urlencode({"query": q})
r = json.load(urllib.request.urlopen(url, timeout=5))["data"]["result"]
sys.exit(0 if r and float(r[0]["value"][1]) >= 2 else 1)
PY
do in_time; sleep 0.5; done
echo "prometheus-check: postern 127.0.0.1:$SMTP/$TLSPORT metrics :$METRICS, provider :$PROVIDER, prometheus :$PROM"

# --- traffic ----------------------------------------------------------------------
# send USER FROM TO [HEADER] [extra swaks args...]: one message; prints swaks' transcript.
send() {
    local user="$1" from="$2" to="$3" header="${4:-X-Verdict: none}"
    shift 4 || shift $#
    timeout 30 swaks --server "127.0.0.1:$SMTP" --auth PLAIN --auth-user "$user" \
        --auth-password device-password --from "$from" --to "$to" \
        --header "$header" --body "monitoring check" "$@" 2>&1 || true
}
expect() {  # expect NAME PATTERN OUTPUT
    if grep -qE "$2" <<<"$3"; then pass "$1"; else fail "$1"; echo "$3" | tail -n 5 >&2; fi
}
for i in 1 2; do
    expect "scanner message $i: 250" '^<-  250 2.0.0' "$(send scanner scanner@example.com you@example.net)"
done
expect "scanner over STARTTLS: 250" '^<~  250 2.0.0' \
    "$(send scanner scanner@example.com you@example.net "X-Verdict: none" --server "127.0.0.1:$TLSPORT" --tls)"
expect "provider 4xx after the dot" '^<\*\* 451 4.3.0' \
    "$(send scanner scanner@example.com you@example.net "X-Verdict: tempfail")"
expect "provider 5xx after the dot" '^<\*\* 554 5.6.0' \
    "$(send scanner scanner@example.com you@example.net "X-Verdict: reject")"
expect "refused sender: 550 5.7.1" '^<\*\* 550 5.7.1' "$(send scanner x@elsewhere.org you@example.net)"
expect "refused recipient: 550 5.1.1" '^<\*\* 550 5.1.1' "$(send scanner scanner@example.com reject@example.net)"
for i in 1 2; do
    expect "printer message $i: 250" '^<-  250 2.0.0' "$(send printer printer@example.com you@example.net)"
done
expect "printer over its rate: 450 4.7.1" '^<\*\* 450 4.7.1' "$(send printer printer@example.com you@example.net)"
for i in 1 2 3; do
    expect "camera, provider down: 451 4.4.1" '^<\*\* 451 4.4.1' "$(send camera camera@example.com you@example.net)"
done
expect "outbox message: 250" '^<-  250 2.0.0' "$(send demo demo@example.com you@example.net)"
# A password-guessing burst from another loopback address: 10 failures, then throttled.
for i in $(seq 1 12); do
    timeout 10 swaks --server "127.0.0.1:$SMTP" --local-interface 127.0.0.2 --auth PLAIN \
        --auth-user scanner --auth-password "guess-$i" --from a@example.com --to b@example.net \
        --quit-after AUTH > "$TMP/guess.out" 2>&1 || true
done
expect "the 12th guess is throttled: 454 4.7.0" '^<\*\* 454 4.7.0' "$(cat "$TMP/guess.out")"

# The provider's password changes: probes fail at AUTH, /readyz says why.
echo "provider-secret-2" > "$TMP/provider-expects"
ready=""
until [[ "$ready" == *"upstream provider down"* ]]; do
    in_time; sleep 0.5
    ready="$(curl -s "http://127.0.0.1:$METRICS/readyz" || true)"
done
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$METRICS/readyz")
[[ "$code" == 503 ]] && pass "/readyz 503: ${ready//$'\n'/; }" || fail "/readyz answered $code"
# A good reload with the new secret, then a reload of a broken file.
echo "provider-secret-2" > "$TMP/postern-secret"
kill -HUP "$POSTERN"
until grep -q "configuration reloaded" "$TMP/postern.log"; do in_time; sleep 0.2; done
pass "reload with the new provider password"
write_config "this is not toml"
kill -HUP "$POSTERN"
until grep -q "reload failed" "$TMP/postern.log"; do in_time; sleep 0.2; done
pass "a broken file is refused"
expect "after the reload the provider takes mail again" '^<-  250 2.0.0' \
    "$(send scanner scanner@example.com you@example.net)"

code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$METRICS/nope")
[[ "$code" == 404 ]] && pass "the metrics listener answers 404 elsewhere" || fail "/nope answered $code"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$METRICS/healthz")
[[ "$code" == 200 ]] && pass "/healthz 200 while a user's upstream is down" || fail "/healthz answered $code"
curl -s "http://127.0.0.1:$METRICS/metrics" > "$TMP/scrape.txt"
if promtool check metrics < "$TMP/scrape.txt" > "$TMP/promtool.out" 2>&1; then
    pass "promtool check metrics on a scrape"
else
    fail "promtool check metrics"; cat "$TMP/promtool.out" >&2
fi

# --- through Prometheus --------------------------------------------------------------
# Wait until Prometheus has scraped the last message.
until python3 - "$PROM" <<'PY'
import json, sys, urllib.parse, urllib.request
q = 'postern_messages_total{user="scanner",result="accepted"}'
url = f"http://127.0.0.1:{sys.argv[1]}/api/v1/query?" + urllib.parse.urlencode({"query": q})
r = json.load(urllib.request.urlopen(url, timeout=5))["data"]["result"]
sys.exit(0 if r and float(r[0]["value"][1]) == 4 else 1)
PY
do in_time; sleep 0.5; done
sleep 3  # a few more scrapes, so rate() has points after the last event

set +e
python3 - "$PROM" "$ROOT" <<'PY'
import json, sys, urllib.parse, urllib.request
prom, root = sys.argv[1], sys.argv[2]
bad = 0

def query(q):
    url = f"http://127.0.0.1:{prom}/api/v1/query?" + urllib.parse.urlencode({"query": q})
    body = json.load(urllib.request.urlopen(url, timeout=10))
    if body.get("status") != "success":
        raise RuntimeError(body)
    return body["data"]["result"]

def report(ok, what):
    global bad
    print(("ok   - " if ok else "FAIL - ") + what, file=sys.stdout if ok else sys.stderr)
    bad += 0 if ok else 1

dash = json.load(open(f"{root}/grafana/postern-dashboard.json"))
for panel in dash["panels"]:
    for t in panel["targets"]:
        q = (t["expr"].replace("$user", ".*").replace("$upstream", ".*")
             .replace("$listener", ".*").replace("$__range", "10m"))
        try:
            n = len(query(q))
        except Exception as e:  # a query Prometheus refuses is a failure too
            report(False, f"panel {panel['title']!r} {t['refId']}: {e}")
            continue
        report(n > 0, f"panel {panel['title']!r} {t['refId']}: returned data ({n} series)"
               if n else f"panel {panel['title']!r} {t['refId']}: no data: {q}")

def value(q):
    r = query(q)
    return sum(float(s["value"][1]) for s in r) if r else None

expected = {
    'postern_messages_total{user="scanner",result="accepted"}': 4,
    'postern_messages_total{user="scanner",result="upstream_tempfail"}': 1,
    'postern_messages_total{user="scanner",result="upstream_rejected"}': 1,
    'postern_messages_total{user="scanner",result="rejected_sender"}': 1,
    'postern_messages_total{user="scanner",result="rejected_no_recipients"}': 1,
    'postern_messages_total{user="printer",result="accepted"}': 2,
    'postern_messages_total{user="printer",result="rejected_rate"}': 1,
    'postern_messages_total{user="camera",result="upstream_unavailable"}': 3,
    'postern_messages_total{user="demo",result="accepted"}': 1,
    'sum(postern_messages_total)': 15,
    'postern_recipients_total{user="scanner",result="upstream_rejected"}': 1,
    'postern_limit_hits_total{limit="messages_per_minute",user="printer"}': 1,
    'sum(postern_auth_attempts_total{result=~"fail|throttled"})': 12,
    'sum(postern_tls_sessions_total{listener="tls"})': 1,
    'postern_config_reloads_total{result="ok"}': 1,
    'postern_config_reloads_total{result="error"}': 1,
    'postern_config_last_reload_success': 0,
    'postern_upstream_up{upstream="provider"}': 1,
    'postern_upstream_up{upstream="down"}': 0,
    'sum(postern_upstream_replies_total{upstream="provider",command="DATA_END"})': 8,
    'postern_message_relay_duration_seconds_count{upstream="provider"}': 8,
}
for q, want in expected.items():
    got = value(q)
    report(got == want, f"{q} = {got}, value as expected" if got == want else f"{q} = {got}, expected {want}")
throttled = value('sum(postern_auth_attempts_total{result="throttled"})')
hits = value('postern_limit_hits_total{limit="auth_failures"}')
report(bool(throttled) and hits == throttled,
       f"the last guesses were throttled ({throttled}), each a limit hit ({hits})")
got = value('postern_upstream_health_checks_total{upstream="provider",result="auth"}')
report(bool(got and got >= 1), f"probes saw the provider refuse the old password ({got})")

# Every alert expression: data exactly when the mix makes it true.
expect_firing = {
    "PosternDown": False,
    "PosternProviderCredentialsFailing": True,
    "PosternProviderUnreachable": True,
    "PosternProviderRejectRatio": True,
    "PosternDeviceFailing": True,
    "PosternPoolSaturated": False,
    "PosternPoolTimeouts": False,
    "PosternConfigReloadFailed": True,
    "PosternAuthBruteForce": True,
    "PosternCertificateExpiringSoon": True,
    "PosternCertificateExpiring": True,
    "PosternCertificateReloadRefused": False,
}
rules = json.load(urllib.request.urlopen(f"http://127.0.0.1:{prom}/api/v1/rules", timeout=10))
seen = set()
for group in rules["data"]["groups"]:
    for rule in group["rules"]:
        name = rule["name"]
        seen.add(name)
        r = query(rule["query"])
        want = expect_firing.get(name)
        labels = ", ".join(sorted({v for s in r for k, v in s["metric"].items() if k in ("upstream", "user", "listener")}))
        if want is None:
            report(False, f"alert {name}: not in this script's table")
        elif want:
            report(bool(r), f"alert {name}: returned data ({labels or 'no labels'})" if r else f"alert {name}: no data")
        else:
            report(not r, f"alert {name}: no data, as the mix does not cause it" if not r else f"alert {name}: unexpected data {r}")
report(seen == set(expect_firing), f"every alert was evaluated ({len(seen)})")
sys.exit(1 if bad else 0)
PY
rc=$?
set -e
if (( rc == 0 )); then pass "dashboard, counters and alerts through Prometheus"; else fail "dashboard, counters and alerts through Prometheus"; fi

echo "prometheus-check: $passed passed, $failed failed"
(( failed == 0 ))
