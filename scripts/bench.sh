#!/usr/bin/env bash
# Side-by-side benchmark: the same load sent straight to a counting sink
# (the baseline), through postern, and through a private Postfix relay, all in
# one run on this machine, so the ratios compare like with like.
#
#   bash scripts/bench.sh              # the full run (a few minutes); writes BENCHMARKS.md and docs/bench/*.png
#   bash scripts/bench.sh --quick      # small counts, a minute or two (CI runs this with --out DIR)
#   options: --quick  --debug (use the debug build)  --out DIR (where BENCHMARKS.md and the charts go)
#            --no-postfix (skip the Postfix relay rows)  --messages N (2 KB runs)  --idle N (idle connections)
#            --only LIST (comma-separated, of: small,large,tls,devices,latency,flood,idle; default all)
#            --delay-ms N (one-way delay of the latency scenario's provider; default 25)
#            --perf (record postern's rows with `perf record`; the top symbols go to docs/bench/perf-*.txt)
#            --resume (tls scenario: every client is a returning device that offers its last TLS session)
#            --bin PATH (run this postern binary instead of building one: before/after comparisons)
#            --server 'KEY = VALUE; ...' (extra [server] settings for postern, `;` between them)
#            --rounds N (plain 2 KB: N rounds of direct and postern, alternating which goes first;
#                        the table shows the median round; default 5, 3 with --quick)
#
# Tools, installed from Debian when missing: postfix (smtp-source, smtp-sink,
# and the Postfix daemons for the relay rows), sasl2-bin (the Postfix SASL
# database), gnuplot-nox (charts), openssl, python3. Postfix is installed with
# "No configuration": no system MTA is configured or started. The Postfix
# relay here is a private instance: its config, queue and data directories are
# under a temporary directory, it listens on free loopback ports only, and it
# is stopped by its master's PID at the end.
#
# Scenarios (every path ends in the same smtp-sink):
#   plain 2 KB  x 20 clients, 1 MiB x 5 clients: Postfix's smtp-source, a new
#     session per message, no TLS, no AUTH (postern trusts 127.0.0.1 as a
#     `networks` user; Postfix relays for mynetworks).
#   tls+auth 2 KB x 10 clients: Python smtplib (scripts/bench/sessions.py), a
#     new session per message with STARTTLS and AUTH PLAIN, the device case.
#     smtp-source cannot do STARTTLS or AUTH. The direct row is the same client
#     without TLS (smtp-sink has none) but with AUTH.
#   tls+auth 2 KB x 10 clients, returning devices: the same sessions from
#     examples/devices.rs (Rust, rustls, TCP_NODELAY, one thread), cheap
#     enough that the server is what is measured; every STARTTLS after a
#     device's first resumes its TLS session from a ticket.
#   provider 50 ms away, 2 KB x 5 clients: a delay line (scripts/bench/delay.py,
#     25 ms each way, a 50 ms round trip) in front of the sink (PIPELINING, no
#     CHUNKING: postern relays with DATA) or, unless --no-postfix, of the
#     private Postfix instance's AUTH listener (its smtpd offers CHUNKING and
#     PIPELINING, checked by an EHLO: postern relays with BDAT, AUTHing as the
#     SASL user demo; Postfix relays on to the sink). smtplib (AUTH PLAIN, a
#     new session per message, no TLS) talks to that distant "provider"
#     directly, or to postern on loopback, which relays over its warm pool; as
#     smtplib is (a reply awaited per command) and pipelining MAIL, RCPT, DATA
#     (sessions.py --pipelining). Reported: the session latency a device sees,
#     how many provider round trips that is, and the round trips the delay
#     line counted on the wire.
#   AUTH flood: 200 concurrent connections AUTHing as random unknown users
#     (STARTTLS, AUTH PLAIN, again) while a device authenticated before the
#     flood sends on its session (scripts/bench/authflood.py): its message
#     latency alone and during the flood, and how the flood was answered.
#   idle: N connections held open against postern, VmRSS before and after.
#
# Measured per row: messages per second from the start of the load until the
# sink has counted every message (a store-and-forward relay is not done when the
# client is), the ratio to the direct row of the same scenario in this run,
# CPU microseconds per message of the relay (postern, or every Postfix daemon)
# and of the sink (utime+stime from /proc/PID/stat), the relay's peak RSS
# (VmHWM), and lost messages (sent minus counted by the sink; must be 0).
#
# Loopback only; every loop is bounded; it stops only the processes it started,
# by their PIDs. Exits non-zero if a message was lost or a run failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

QUICK=0
PROFILE=release
OUT="$ROOT"
POSTFIX_ROWS=1
MSG_SMALL=""
ROUNDS=""
IDLE_N=""
ONLY=",small,large,tls,devices,latency,flood,idle,"
DELAY_MS=25
PERF=0
PREBUILT=""
RESUME=()
SERVER_EXTRA=""
while (( $# > 0 )); do
    case "$1" in
        --quick) QUICK=1 ;;
        --debug) PROFILE=debug ;;
        --out) OUT="$2"; shift ;;
        --no-postfix) POSTFIX_ROWS=0 ;;
        --messages) MSG_SMALL="$2"; shift ;;
        --rounds) ROUNDS="$2"; shift ;;
        --idle) IDLE_N="$2"; shift ;;
        --only) ONLY=",$2,"; shift ;;
        --perf) PERF=1 ;;
        --delay-ms) DELAY_MS="$2"; shift ;;
        --bin) PREBUILT="$2"; shift ;;
        --resume) RESUME=(--resume) ;;
        --server) SERVER_EXTRA="$2"; shift ;;
        -h|--help) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed -E 's/^# ?//'; exit 0 ;;
        *) echo "bench: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
if (( QUICK )); then
    MSG_SMALL="${MSG_SMALL:-500}"; ROUNDS="${ROUNDS:-3}"; MSG_LARGE=25; MSG_TLS=60; MSG_DEVICES=200; MSG_LATENCY=20; MSG_FLOOD=20; IDLE_N="${IDLE_N:-1000}"
else
    MSG_SMALL="${MSG_SMALL:-5000}"; ROUNDS="${ROUNDS:-5}"; MSG_LARGE=200; MSG_TLS=400; MSG_DEVICES=3000; MSG_LATENCY=100; MSG_FLOOD=100; IDLE_N="${IDLE_N:-10000}"
fi
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

# --- tools ------------------------------------------------------------------

POSTFIX_MASTER=/usr/lib/postfix/sbin/master
need=()
command -v smtp-source >/dev/null 2>&1 || need+=(postfix)
command -v smtp-sink >/dev/null 2>&1 || need+=(postfix)
[[ -x "$POSTFIX_MASTER" ]] || need+=(postfix)
command -v saslpasswd2 >/dev/null 2>&1 || need+=(sasl2-bin)
command -v gnuplot >/dev/null 2>&1 || need+=(gnuplot-nox)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v python3 >/dev/null 2>&1 || need+=(python3)
if (( PERF )); then command -v perf >/dev/null 2>&1 || need+=(linux-perf); fi
if (( ${#need[@]} > 0 )); then
    mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
    echo "bench: installing ${need[*]} from Debian"
    SUDO=()
    if [[ "$(id -u)" -ne 0 ]]; then SUDO=(sudo); fi
    # Masters running before the install are not ours; one that the install
    # started (it should not, with "No configuration") is stopped by its PID.
    masters_before="$(pgrep -x master || true)"
    echo "postfix postfix/main_mailer_type select No configuration" | "${SUDO[@]}" debconf-set-selections
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    for pid in $(pgrep -x master || true); do
        if ! grep -qx "$pid" <<<"$masters_before"; then
            echo "bench: the install started a Postfix master (pid $pid); stopping it"
            "${SUDO[@]}" kill -TERM "$pid" || true
        fi
    done
fi

if [[ -n "$PREBUILT" ]]; then
    BIN="$PREBUILT"
    echo "bench: using $BIN (not built here)"
else
    echo "bench: building postern ($PROFILE)"
    if [[ "$PROFILE" == release ]]; then
        cargo build --quiet --release --bin postern
    else
        cargo build --quiet --bin postern
    fi
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE/postern"
fi
[[ -x "$BIN" ]] || { echo "bench: $BIN was not built" >&2; exit 2; }
# The returning-devices load generator (examples/devices.rs), built here even
# with --bin: it is the client, not the server under test.
if [[ "$ONLY" == *",devices,"* ]]; then
    if [[ "$PROFILE" == release ]]; then
        cargo build --quiet --release --example devices
    else
        cargo build --quiet --example devices
    fi
    DEVICES="${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE/examples/devices"
fi

# --- processes we start, and cleanup ------------------------------------------

TMP="$(mktemp -d)"
chmod 755 "$TMP"   # the Postfix daemons (user postfix) read their config below it
PIDS=()            # everything started here; stopped by PID at exit

stop_pid() {
    local pid="$1" i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$? pid
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    if (( rc != 0 )); then
        for f in "$TMP"/*.log "$TMP"/pf/maillog; do
            [[ -f "$f" ]] || continue
            echo "bench: --- $f (last lines) ---" >&2
            sed 's/\x1b\[[0-9;]*m//g' "$f" | tail -n 15 >&2
        done
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT

# free_ports N: N distinct free loopback ports, held together while chosen.
# They are taken below the ephemeral range: a run leaves thousands of client
# ports there in TIME_WAIT, and a listener cannot bind one of those.
free_ports() {
    python3 - "$1" <<'PY'
import random, socket, sys
low = 20000
try:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        eph = int(f.read().split()[0])
except OSError:
    eph = 32768
high = max(low + 1000, eph - 1)
socks = []
for port in random.sample(range(low, high), min(500, high - low)):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        s.close()
        continue
    socks.append(s)
    if len(socks) == int(sys.argv[1]):
        break
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

wait_port() { # wait_port PORT PID: until PORT accepts, at most 30 s, while PID lives
    local port="$1" pid="$2" deadline=$((SECONDS + 30))
    until python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1).close()" "$port" 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || { echo "bench: pid $pid exited before port $port opened" >&2; return 1; }
        (( SECONDS < deadline )) || { echo "bench: port $port not open within 30 s" >&2; return 1; }
        sleep 0.1
    done
}

CLK_TCK="$(getconf CLK_TCK)"
# cpu_ticks PID: utime+stime of PID.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# tree_ticks PID: utime+stime of PID, of its live children, and of the children
# it has reaped (cutime+cstime): the whole of a Postfix instance under its master.
tree_ticks() {
    local master="$1"
    # cat, not awk over the files: a daemon that exits between the glob and
    # its read is skipped (mawk would stop at the missing file, print nothing
    # and fail). The pid is a stat line's first field.
    { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v m="$master" '
        {
            pid = $1
            # the fields after the command name, which is in parentheses
            line = $0; sub(/^.*\) /, "", line); n = split(line, f, " ")
            # f[1] = state, f[2] = ppid; utime = f[12], stime = f[13], cutime = f[14], cstime = f[15]
            if (pid == m) total += f[12] + f[13] + f[14] + f[15]
            else if (f[2] == m) total += f[12] + f[13]
        }
        END { print total + 0 }'
}
# child_us FILE: user+sys microseconds of the reaped children in the output of
# `times` (its second line). `times` must run in the measuring shell itself
# (not in a $(...) subshell, whose counters start at zero).
child_us() {
    awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, a, "m"); sub(/s$/, "", a[2]); t += a[1] * 60 + a[2] }
                   printf "%.0f", t * 1e6 }' "$1"
}
hwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }
now() { date +%s.%N; }

# --- the sink -------------------------------------------------------------------

SINK_PID=""
SINK_PORT=""
start_sink() {
    read -r SINK_PORT <<<"$(free_ports 1)"
    # -c: running counters on stdout; as root smtp-sink must drop to a user (-u).
    smtp-sink -c -u nobody "127.0.0.1:$SINK_PORT" 1024 > "$TMP/sink.out" 2> "$TMP/sink.log" &
    SINK_PID=$!
    PIDS+=("$SINK_PID")
    wait_port "$SINK_PORT" "$SINK_PID"
}
stop_sink() { stop_pid "$SINK_PID"; SINK_PID=""; }
# The sink's message counter (its last "mesg=N").
sink_count() {
    local n
    n="$(tail -c 200 "$TMP/sink.out" | tr '\r' '\n' | grep -o 'mesg=[0-9]*' | tail -n 1 | cut -d= -f2)"
    echo "${n:-0}"
}
# wait_sink N SECONDS: until the sink has counted N messages; bounded. One
# process that polls the counter file itself, so waiting costs the machine
# (2 shared cores) next to nothing while a relay is still delivering.
wait_sink() {
    python3 - "$TMP/sink.out" "$1" "$2" <<'PY'
import re, sys, time
path, want, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
deadline = time.monotonic() + limit
pat = re.compile(rb"mesg=(\d+)")
while time.monotonic() < deadline:
    with open(path, "rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - 200))
        found = pat.findall(f.read())
    if found and int(found[-1]) >= want:
        break
    time.sleep(0.01)
PY
}

# --- postern ----------------------------------------------------------------------

POSTERN_PID=""
POSTERN_PORT=""
POSTERN_TLS_PORT=""
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=bench.localhost" \
    -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null
chmod 644 "$TMP/key.pem"   # the private Postfix smtpd (user postfix) reads it too
DEMO_PASSWORD="bench-password"
DEMO_HASH="$(printf '%s\n' "$DEMO_PASSWORD" | "$BIN" hash-password)"

# start_postern [UPSTREAM_PORT [UPSTREAM_USER]]: relaying to the sink, or to
# UPSTREAM_PORT (the delay line); with UPSTREAM_USER, postern AUTHs there as
# that user with $DEMO_PASSWORD (the Postfix provider's SASL account).
start_postern() {
    local metrics upstream_port="${1:-$SINK_PORT}" upstream_auth=""
    if [[ -n "${2:-}" ]]; then
        upstream_auth="username = \"$2\""$'\n'"password_env = \"BENCH_PROVIDER_PASSWORD\""
    fi
    local server_lines="${SERVER_EXTRA//;/$'\n'}"
    read -r POSTERN_PORT POSTERN_TLS_PORT metrics <<<"$(free_ports 3)"
    cat > "$TMP/postern.toml" <<EOF
[server]
hostname = "postern.bench"
$server_lines
[[listener]]
name = "plain"
addr = "127.0.0.1:$POSTERN_PORT"
tls = "none"
auth = "optional"          # smtp-source cannot AUTH: 127.0.0.1 is user "device"'s network
[[listener]]
name = "submission"
addr = "127.0.0.1:$POSTERN_TLS_PORT"
tls = "starttls"
auth = "required"
allow_plaintext_auth = false
[tls]
cert = "$TMP/cert.pem"
key = "$TMP/key.pem"
[metrics]
addr = "127.0.0.1:$metrics"
[limits]                   # the bench measures throughput, not the limits
max_message_size = "8MiB"
messages_per_minute = 100000000
recipients_per_hour = 100000000
max_connections_per_user = 100000
max_connections_per_ip = 200000
max_connections = 200000
auth_failures_per_ip_per_minute = 100000000   # the AUTH flood stands for many addresses
[[upstream]]
name = "sink"
kind = "smtp"
addr = "127.0.0.1:$upstream_port"
tls = "none"
max_connections = 20
health_check_interval = "0s"
$upstream_auth
[[user]]
name = "device"
networks = ["127.0.0.1/32"]
upstream = "sink"
allowed_senders = ["*"]
[[user]]
name = "demo"
password_hash = "$DEMO_HASH"
upstream = "sink"
allowed_senders = ["*"]
EOF
    # Idle probe: the file limit must cover the idle connections.
    ( ulimit -n 262144 2>/dev/null || ulimit -n "$(ulimit -Hn)"
      BENCH_PROVIDER_PASSWORD="$DEMO_PASSWORD" exec "$BIN" run --config "$TMP/postern.toml" ) \
        > "$TMP/postern.log" 2>&1 &
    POSTERN_PID=$!
    PIDS+=("$POSTERN_PID")
    wait_port "$POSTERN_PORT" "$POSTERN_PID"
}
stop_postern() { stop_pid "$POSTERN_PID"; POSTERN_PID=""; }

# --- the delay line (a distant provider) -------------------------------------------

DELAY_PID=""
DELAY_PORT=""
start_delay() { # start_delay [PORT]: in front of PORT (default: the sink)
    read -r DELAY_PORT <<<"$(free_ports 1)"
    python3 "$ROOT/scripts/bench/delay.py" --listen "$DELAY_PORT" --to "${1:-$SINK_PORT}" --delay-ms "$DELAY_MS" \
        > "$TMP/delay.out" 2> "$TMP/delay.log" &
    DELAY_PID=$!
    PIDS+=("$DELAY_PID")
    wait_port "$DELAY_PORT" "$DELAY_PID"
}
stop_delay() { stop_pid "$DELAY_PID"; DELAY_PID=""; }
# The delay line's count of round trips so far (its last "turns=N").
delay_turns() {
    local n
    n="$(grep -o 'turns=[0-9]*' "$TMP/delay.out" | tail -n 1 | cut -d= -f2)"
    echo "${n:-0}"
}

# --- a private Postfix relay ----------------------------------------------------

PF_PID=""
PF_PORT=""
PF_TLS_PORT=""
PF_PROVIDER_PORT=""
start_postfix() {
    local pf="$TMP/pf"
    read -r PF_PORT PF_TLS_PORT PF_PROVIDER_PORT <<<"$(free_ports 3)"
    rm -rf "$pf"
    mkdir -p "$pf/conf/sasl" "$pf/queue" "$pf/data"
    chown postfix "$pf/data"
    cat > "$pf/conf/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $pf/queue
data_directory = $pf/data
mail_owner = postfix
setgid_group = postdrop
maillog_file_prefixes = $pf
maillog_file = $pf/maillog
myhostname = bench.localhost
mydomain = localhost
myorigin = \$myhostname
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:$SINK_PORT
smtpd_relay_restrictions = permit_mynetworks, reject
smtputf8_enable = no
biff = no
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
smtpd_sasl_local_domain = bench.localhost
EOF
    cat > "$pf/conf/sasl/smtpd.conf" <<EOF
pwcheck_method: auxprop
auxprop_plugin: sasldb
mech_list: PLAIN LOGIN
sasldb_path: $pf/sasldb2
EOF
    printf '%s' "$DEMO_PASSWORD" | saslpasswd2 -p -c -f "$pf/sasldb2" -u bench.localhost demo
    chown postfix "$pf/sasldb2"
    # No chroot; every daemon Postfix needs to relay, nothing for local delivery.
    cat > "$pf/conf/master.cf" <<EOF
127.0.0.1:$PF_PORT inet n - n - - smtpd
127.0.0.1:$PF_TLS_PORT inet n - n - - smtpd
  -o smtpd_tls_security_level=encrypt
  -o smtpd_tls_cert_file=$TMP/cert.pem
  -o smtpd_tls_key_file=$TMP/key.pem
  -o smtpd_tls_auth_only=yes
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
127.0.0.1:$PF_PROVIDER_PORT inet n - n - - smtpd
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
  -o smtpd_peername_lookup=no
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
EOF
    postfix -c "$pf/conf" check >/dev/null 2>&1 || true   # creates the queue directories
    # -d: stay in the foreground, so $! is the master and it is stopped by that PID.
    "$POSTFIX_MASTER" -c "$pf/conf" -d > "$TMP/postfix-master.log" 2>&1 &
    PF_PID=$!
    PIDS+=("$PF_PID")
    wait_port "$PF_PORT" "$PF_PID"
}
stop_postfix() {
    local i kids
    kids="$(pgrep -P "$PF_PID" || true)"
    stop_pid "$PF_PID"
    # Its daemons notice that their master is gone and exit; wait for them (bounded).
    for i in $(seq 50); do
        local alive=0 k
        for k in $kids; do   # a zombie (state Z) has exited
            [[ -r "/proc/$k/stat" ]] && [[ "$(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$k/stat" 2>/dev/null)" != Z ]] && alive=1
        done
        (( alive )) || break
        sleep 0.1
    done
    PF_PID=""
}

# --- one measured row ------------------------------------------------------------

RESULTS="$TMP/results.tsv"
: > "$RESULTS"
failures=0

# run_row SCENARIO PATH RELAY_PID(or "") SINK_WAIT_S -- CLIENT COMMAND...
# The client command sends $N messages; the row is timed from its start until
# the sink has counted all of them.
run_row() {
    local scenario="$1" path="$2" relay="$3" limit="$4"; shift 5
    local base t0 t1 c0 c1 r0=0 r1=0 s0 s1 rc=0 got lost secs rate relay_us sink_us client_us hwm="-"
    base="$(sink_count)"
    s0="$(cpu_ticks "$SINK_PID")"
    if [[ -n "$relay" ]]; then
        if [[ "$path" == postfix* ]]; then r0="$(tree_ticks "$relay")"; else r0="$(cpu_ticks "$relay")"; fi
    fi
    local perf_pid=""
    if (( PERF )) && [[ "$path" == postern ]]; then
        perf record -q -F 997 -g -o "$TMP/perf.data" -p "$relay" 2> "$TMP/perf.log" &
        perf_pid=$!
        sleep 0.5   # perf attaches
    fi
    times > "$TMP/times.0"
    t0="$(now)"
    "$@" > "$TMP/client.out" 2> "$TMP/client.log" || rc=$?
    times > "$TMP/times.1"
    wait_sink $(( base + N )) "$limit"
    t1="$(now)"
    if [[ -n "$perf_pid" ]]; then
        kill -INT "$perf_pid" 2>/dev/null || true
        wait "$perf_pid" 2>/dev/null || true
        local slug
        slug="$(tr -c 'a-zA-Z0-9\n' '-' <<<"$scenario" | tr -s '-')"
        mkdir -p "$OUT/docs/bench"
        {
            echo "# perf record -F 997 -g -p <postern> over the row \"$scenario\" ($N messages), $(date -u '+%Y-%m-%d %H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
            echo "# (postern's figures in a --perf run pay the profiler's overhead.) Where the samples fell, by object, then the top symbols:"
            perf report -i "$TMP/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null | grep -E '^ +[0-9]' | head -n 8
            echo "# top symbols ([k] kernel, [.] user space)"
            perf report -i "$TMP/perf.data" --no-children --sort dso,symbol --stdio -g none 2>/dev/null | grep -E '^ +[0-9]' | head -n 40
        } | sed -E "s/( +- +-)? *$//" > "$OUT/docs/bench/perf-$slug.txt" || true
        echo "bench: perf profile of postern in $OUT/docs/bench/perf-$slug.txt"
    fi
    s1="$(cpu_ticks "$SINK_PID")"
    if [[ -n "$relay" ]]; then
        if [[ "$path" == postfix* ]]; then r1="$(tree_ticks "$relay")"; else r1="$(cpu_ticks "$relay")"; fi
        [[ "$path" == postfix* ]] || hwm="$(hwm_kib "$relay")"
    fi
    got=$(( $(sink_count) - base ))
    lost=$(( N - got ))
    secs="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')"
    rate="$(awk -v n="$got" -v s="$secs" 'BEGIN { printf "%.1f", (s > 0 ? n / s : 0) }')"
    sink_us="$(awk -v t=$((s1 - s0)) -v k="$CLK_TCK" -v n="$got" 'BEGIN { printf "%.0f", (n > 0 ? t * 1e6 / k / n : 0) }')"
    c0="$(child_us "$TMP/times.0")"; c1="$(child_us "$TMP/times.1")"
    client_us="$(awk -v t="$((c1 - c0))" -v n="$got" 'BEGIN { printf "%.0f", (n > 0 ? t / n : 0) }')"
    if [[ -n "$relay" ]]; then
        relay_us="$(awk -v t=$((r1 - r0)) -v k="$CLK_TCK" -v n="$got" 'BEGIN { printf "%.0f", (n > 0 ? t * 1e6 / k / n : 0) }')"
    else
        relay_us="-"
    fi
    if (( rc != 0 || lost != 0 )); then
        failures=$((failures + 1))
        echo "bench: $scenario/$path: client exit $rc, $lost of $N lost" >&2
        tail -n 5 "$TMP/client.log" "$TMP/client.out" >&2 || true
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$scenario" "$path" "$N" "$secs" "$rate" "$relay_us" "$sink_us" "$client_us" "$hwm" "$lost" >> "${ROW_OUT:-$RESULTS}"
    printf 'bench: %-16s %-8s %6d msgs %7s s %8s msg/s  relay %6s  sink %5s  client %5s us/msg  lost %d\n' \
        "$scenario" "$path" "$N" "$secs" "$rate" "$relay_us" "$sink_us" "$client_us" "$lost"
}

# smtp_source CLIENTS SIZE PORT: N messages, a session each (no -d).
smtp_source() {
    smtp-source -s "$1" -l "$2" -m "$N" -f bench@example.com -t sink@example.net -M bench.client "127.0.0.1:$3"
}
# sessions CLIENTS SIZE PORT [sessions.py options]: N messages over smtplib.
sessions() {
    local c="$1" size="$2" port="$3"; shift 3
    python3 "$ROOT/scripts/bench/sessions.py" --port "$port" --clients "$c" --size "$size" --messages "$N" "$@" \
        > "$TMP/sessions.json" || return 1
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r); sys.exit(1 if r["failed"] else 0)' "$TMP/sessions.json"
}

# devices CLIENTS SIZE PORT [devices options]: N messages from returning devices (examples/devices.rs).
devices() {
    local c="$1" size="$2" port="$3"; shift 3
    "$DEVICES" --port "$port" --clients "$c" --size "$size" --messages "$N" "$@" > "$TMP/sessions.json" || return 1
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r); sys.exit(1 if r["failed"] else 0)' "$TMP/sessions.json"
}

# plain_scenario NAME CLIENTS SIZE COUNT [ROUNDS]
# With ROUNDS > 1, direct and postern share one sink (postern's pool keeps its
# connections to it open through the direct rows) and run ROUNDS times each,
# which of the two goes first alternating from round to round: on two shared
# cores the same binary's ratio moves by a third between runs, and a drift in
# the machine then falls on both paths alike. scripts/bench/rounds.py writes
# every round to rounds.tsv and puts the median round (by ratio) in the table.
ROUNDS_TSV="$TMP/rounds.tsv"
plain_scenario() {
    local name="$1" c="$2" size="$3" rounds="${5:-1}"
    if (( rounds > 1 )); then
        local r path base
        start_sink; start_postern
        N=20; smtp_source "$c" "$size" "$SINK_PORT" >/dev/null 2>&1 || true
        base="$(sink_count)"
        N=20; smtp_source "$c" "$size" "$POSTERN_PORT" >/dev/null 2>&1 || true; wait_sink $((base + 20)) 10
        : > "$TMP/rounds.raw"
        for r in $(seq "$rounds"); do
            local order=(direct postern)
            (( r % 2 == 0 )) && order=(postern direct)
            for path in "${order[@]}"; do
                N="$4"
                if [[ "$path" == direct ]]; then
                    ROW_OUT="$TMP/rounds.raw" run_row "$name" direct "" 60 -- smtp_source "$c" "$size" "$SINK_PORT"
                else
                    ROW_OUT="$TMP/rounds.raw" run_row "$name" postern "$POSTERN_PID" 60 -- smtp_source "$c" "$size" "$POSTERN_PORT"
                fi
            done
        done
        python3 "$ROOT/scripts/bench/rounds.py" "$TMP/rounds.raw" "$ROUNDS_TSV" >> "$RESULTS"
        stop_postern; stop_sink
    else
        N=20   # warm-up: first connections, page faults, the pool's first dial
        start_sink
        smtp_source "$c" "$size" "$SINK_PORT" >/dev/null 2>&1 || true
        N="$4"; run_row "$name" direct "" 60 -- smtp_source "$c" "$size" "$SINK_PORT"
        stop_sink

        start_sink; start_postern
        N=20; smtp_source "$c" "$size" "$POSTERN_PORT" >/dev/null 2>&1 || true; wait_sink 20 10
        N="$4"; run_row "$name" postern "$POSTERN_PID" 60 -- smtp_source "$c" "$size" "$POSTERN_PORT"
        stop_postern; stop_sink
    fi

    if (( POSTFIX_ROWS )); then
        start_sink; start_postfix
        N=20; smtp_source "$c" "$size" "$PF_PORT" >/dev/null 2>&1 || true; wait_sink 20 30
        N="$4"; run_row "$name" postfix "$PF_PID" 300 -- smtp_source "$c" "$size" "$PF_PORT"
        stop_postfix; stop_sink
    fi
}

# The latency of each session-per-message row, from sessions.py's JSON.
LATENCY="$TMP/latency.tsv"
: > "$LATENCY"
record_latency() { # record_latency SCENARIO PATH CLIENTS TURNS (counted at the delay line over the row)
    python3 -c 'import json, sys
r = json.load(open(sys.argv[1])); l = r.get("latency_ms") or {}
turns = int(sys.argv[6]) / r["ok"] if r.get("ok") else 0
print("\t".join([sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]] + [str(l.get(k, 0)) for k in ("median", "mean", "p90")]
                + [f"{turns:.2f}"]))' \
        "$TMP/sessions.json" "$1" "$2" "$3" "$(awk -v d="$DELAY_MS" 'BEGIN { print 2 * d }')" "$4" >> "$LATENCY"
}

# offers PORT KEYWORD...: the EHLO reply of the server on PORT names every KEYWORD.
offers() {
    python3 - "$@" <<'PY'
import smtplib, sys
port, want = int(sys.argv[1]), [k.lower() for k in sys.argv[2:]]
with smtplib.SMTP("127.0.0.1", port, local_hostname="bench.client", timeout=30) as s:
    code, text = s.ehlo("bench.client")
    missing = [k for k in want if not s.has_extn(k)]
    print(text.decode(errors="replace").replace("\n", " "))
sys.exit(1 if code != 250 or missing else 0)
PY
}

# latency_scenario NAME CLIENTS SIZE COUNT PROVIDER DEVICE...: a provider
# 2 x DELAY_MS of round trip away. PROVIDER "sink" is smtp-sink (PIPELINING, no
# CHUNKING: postern relays with DATA); "postfix" is the private Postfix
# instance's AUTH listener (its smtpd offers CHUNKING and PIPELINING: postern
# relays with BDAT), which relays on to the sink, where the messages are
# counted. One provider, delay line and postern serve every DEVICE ("waits":
# smtplib as it is; "pipelines": sessions.py --pipelining), each going to the
# provider directly, then through postern's warm pool: a scenario "NAME, device
# DEVICE" of two rows.
latency_scenario() {
    local name="$1" c="$2" size="$3" count="$4" provider="$5"; shift 5
    local auth=(--user demo --password "$DEMO_PASSWORD")
    local target upstream_user="" wait_s=60 device opts turns base sc
    start_sink
    if [[ "$provider" == postfix ]]; then
        start_postfix
        target="$PF_PROVIDER_PORT" upstream_user=demo wait_s=300
        local ehlo
        if ! ehlo="$(offers "$target" CHUNKING PIPELINING AUTH)"; then
            echo "bench: $name: the Postfix provider does not offer CHUNKING, PIPELINING and AUTH: $ehlo" >&2
            failures=$((failures + 1))
            stop_postfix; stop_sink
            return 0
        fi
        echo "bench: $name: the provider's EHLO: $ehlo"
    else
        target="$SINK_PORT"
    fi
    start_delay "$target"
    start_postern "$DELAY_PORT" "$upstream_user"
    N=5; sessions "$c" "$size" "$DELAY_PORT" "${auth[@]}" >/dev/null 2>&1 || true; wait_sink 5 "$wait_s"
    for device in "$@"; do
        opts=()
        [[ "$device" == pipelines ]] && opts=(--pipelining)
        sc="$name, device $device"
        turns="$(delay_turns)"
        N="$count"; run_row "$sc" direct "" "$wait_s" -- sessions "$c" "$size" "$DELAY_PORT" "${auth[@]}" "${opts[@]}"
        record_latency "$sc" direct "$c" $(( $(delay_turns) - turns ))
        # Warm-up: the pool's connections open (and AUTH's first argon2 check
        # runs) before the clock; again before each row, as the direct row may
        # have outlasted the pool's idle_timeout.
        base="$(sink_count)"
        N=10; sessions "$c" "$size" "$POSTERN_PORT" "${auth[@]}" >/dev/null 2>&1 || true
        wait_sink $((base + 10)) "$wait_s"
        turns="$(delay_turns)"
        N="$count"; run_row "$sc" postern "$POSTERN_PID" "$wait_s" -- sessions "$c" "$size" "$POSTERN_PORT" "${auth[@]}" "${opts[@]}"
        record_latency "$sc" postern "$c" $(( $(delay_turns) - turns ))
    done
    stop_postern; stop_delay
    if [[ "$provider" == postfix ]]; then stop_postfix; fi
    stop_sink
}

# note_resumed PATH: how many of the last devices row's TLS handshakes were resumed.
RESUMED_ARG=""
note_resumed() {
    local pair
    pair="$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("%d/%d" % (r["resumed"], r["ok"]))' "$TMP/sessions.json" 2>/dev/null)" || return 0
    echo "bench: returning devices, $1: $pair TLS handshakes resumed"
    RESUMED_ARG+="${RESUMED_ARG:+,}$1:$pair"
}

# tls_scenario NAME CLIENTS SIZE COUNT CLIENT WARMUP [CLIENT OPTIONS]: STARTTLS
# and AUTH PLAIN on every session (the direct row: AUTH, no TLS), from CLIENT:
# `sessions` (smtplib) or `devices` (examples/devices.rs: a Rust client on
# rustls that costs a fraction of smtplib's CPU, every device returning, its
# TLS session resumed from a ticket an earlier session got; the resumed
# handshakes are counted). WARMUP messages go before each row's clock.
tls_scenario() {
    local name="$1" c="$2" size="$3" count="$4" client="$5" warm="$6"; shift 6
    local auth=(--user demo --password "$DEMO_PASSWORD" "$@")
    start_sink
    N="$warm"; "$client" "$c" "$size" "$SINK_PORT" "${auth[@]}" >/dev/null 2>&1 || true
    N="$count"; run_row "$name" direct "" 60 -- "$client" "$c" "$size" "$SINK_PORT" "${auth[@]}"
    stop_sink

    start_sink; start_postern
    N="$warm"; "$client" "$c" "$size" "$POSTERN_TLS_PORT" --starttls "${auth[@]}" >/dev/null 2>&1 || true; wait_sink "$warm" 10
    N="$count"; run_row "$name" postern "$POSTERN_PID" 60 -- "$client" "$c" "$size" "$POSTERN_TLS_PORT" --starttls "${auth[@]}"
    if [[ "$client" == devices ]]; then note_resumed postern; fi
    stop_postern; stop_sink

    if (( POSTFIX_ROWS )); then
        start_sink; start_postfix
        N="$warm"; "$client" "$c" "$size" "$PF_TLS_PORT" --starttls "${auth[@]}" >/dev/null 2>&1 || true; wait_sink "$warm" 30
        N="$count"; run_row "$name" postfix "$PF_PID" 300 -- "$client" "$c" "$size" "$PF_TLS_PORT" --starttls "${auth[@]}"
        if [[ "$client" == devices ]]; then note_resumed postfix; fi
        stop_postfix; stop_sink
    fi
}

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
STARTED="$(date -u '+%Y-%m-%d %H:%M UTC')"
echo "bench: load average before: $LOAD_BEFORE (2 cores shared with whatever else runs here)"

want() { [[ "$ONLY" == *",$1,"* ]]; }
if want small; then plain_scenario "plain 2KB x20" 20 2048 "$MSG_SMALL" "$ROUNDS"; fi
if want large; then plain_scenario "plain 1MiB x5" 5 1048576 "$MSG_LARGE"; fi
if want tls; then tls_scenario "tls+auth 2KB x10" 10 2048 "$MSG_TLS" sessions 10 "${RESUME[@]}"; fi
if want devices; then tls_scenario "tls+auth 2KB x10, returning devices" 10 2048 "$MSG_DEVICES" devices 20; fi
if want latency; then
    # Toward smtp-sink (DATA upstream) and, with Postfix, Postfix's smtpd
    # (CHUNKING: BDAT upstream); a device that waits for each reply
    # (smtplib's own way) and one that pipelines MAIL, RCPT and DATA. --quick
    # keeps the pipelining device only (the one the BDAT path is for).
    devices=(waits pipelines)
    (( QUICK )) && devices=(pipelines)
    latency_scenario "provider $((2 * DELAY_MS))ms DATA" 5 2048 "$MSG_LATENCY" sink "${devices[@]}"
    if (( POSTFIX_ROWS )); then
        latency_scenario "provider $((2 * DELAY_MS))ms BDAT" 5 2048 "$MSG_LATENCY" postfix "${devices[@]}"
    fi
fi

# --- AUTH flood -------------------------------------------------------------------
FLOOD_ARG=()
if want flood; then
    start_sink; start_postern
    N=5; sessions 1 2048 "$POSTERN_TLS_PORT" --starttls --user demo --password "$DEMO_PASSWORD" >/dev/null 2>&1 || true
    if python3 "$ROOT/scripts/bench/authflood.py" --port "$POSTERN_TLS_PORT" --user demo \
        --password "$DEMO_PASSWORD" --flood 200 --messages "$MSG_FLOOD" > "$TMP/flood.json"; then
        cat "$TMP/flood.json"
        FLOOD_ARG=(--flood "$TMP/flood.json")
        mkdir -p "$OUT/docs/bench"; cp "$TMP/flood.json" "$OUT/docs/bench/flood.json"
        if python3 -c 'import json,sys; sys.exit(1 if json.load(open(sys.argv[1]))["failed"] else 0)' "$TMP/flood.json"; then :; else
            echo "bench: AUTH flood: the device's messages failed" >&2; failures=$((failures + 1))
        fi
    else
        echo "bench: AUTH flood run failed" >&2; failures=$((failures + 1))
    fi
    stop_postern; stop_sink
fi

# --- idle connections -------------------------------------------------------------
IDLE_ARG=""
if want idle; then
    # postern and the probe each hold one descriptor per connection: as many
    # as the file limit (raised as far as this user may) allows, less some
    # for postern's own files. Past it postern could not accept, and each
    # connection over would wait out the probe's timeout.
    IDLE_LIMIT="$( (ulimit -n 262144 2>/dev/null || ulimit -n "$(ulimit -Hn)"; ulimit -n) )"
    IDLE_ASKED="$IDLE_N"
    if (( IDLE_N > IDLE_LIMIT - 200 )); then
        IDLE_N=$((IDLE_LIMIT - 200))
        echo "bench: idle: the file limit here is $IDLE_LIMIT: $IDLE_N connections, not $IDLE_ASKED"
    fi
    start_sink; start_postern
    IDLE_JSON="$( (ulimit -n 262144 2>/dev/null || ulimit -n "$(ulimit -Hn)"; \
        python3 "$ROOT/scripts/bench/idle.py" 127.0.0.1 "$POSTERN_PORT" "$IDLE_N" "$POSTERN_PID") )"
    stop_postern; stop_sink
    read -r IDLE_OPEN IDLE_FAILED IDLE_BEFORE IDLE_AFTER IDLE_HWM < <(python3 -c 'import json, sys
r = json.loads(sys.argv[1])
print(r["open"], r["failed"], r["rss_before_kib"], r["rss_after_kib"], r["hwm_kib"])' "$IDLE_JSON")
    IDLE_PER="$(awk -v a="$IDLE_AFTER" -v b="$IDLE_BEFORE" -v n="$IDLE_OPEN" 'BEGIN { printf "%.1f", (n > 0 ? (a - b) / n : 0) }')"
    echo "bench: idle: $IDLE_OPEN connections open ($IDLE_FAILED failed): VmRSS $IDLE_BEFORE -> $IDLE_AFTER KiB, $IDLE_PER KiB per connection"
    (( IDLE_FAILED == 0 )) || failures=$((failures + 1))
    IDLE_ARG="$IDLE_OPEN,$IDLE_BEFORE,$IDLE_AFTER,$IDLE_HWM,$IDLE_ASKED,$IDLE_LIMIT"
fi

LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"

# --- report -----------------------------------------------------------------------

mkdir -p "$OUT/docs/bench"
cp "$RESULTS" "$OUT/docs/bench/results.tsv"   # the raw rows the report is made from
cp "$LATENCY" "$OUT/docs/bench/latency.tsv"
ROUNDS_ARG=()
if [[ -s "$ROUNDS_TSV" ]]; then
    cp "$ROUNDS_TSV" "$OUT/docs/bench/rounds.tsv"
    ROUNDS_ARG=(--rounds "$ROUNDS_TSV")
fi
python3 "$ROOT/scripts/bench/report.py" "$RESULTS" "$OUT" \
    --started "$STARTED" --load-before "$LOAD_BEFORE" --load-after "$LOAD_AFTER" \
    --profile "$PROFILE" --quick "$QUICK" \
    --idle "$IDLE_ARG" --resumed "$RESUMED_ARG" --latency "$LATENCY" "${FLOOD_ARG[@]}" "${ROUNDS_ARG[@]}"

if (( failures > 0 )); then
    echo "bench: $failures run(s) failed or lost messages" >&2
    exit 1
fi
echo "bench: ok, 0 messages lost"
