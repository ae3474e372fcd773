#!/usr/bin/env bash
# What [cluster] costs per message: the same load through one postern without
# and with [cluster] (a private redis-server on loopback), in one run, into
# one smtp-sink. Each round runs both rows, the order alternating from round
# to round (so neither row always runs first, on a warmer or a quieter
# machine). Prints per round messages/s, the CPU time per message of postern
# and of redis-server (from /proc: less sensitive to other load than the
# rate; perf on this VM has no instruction counter) and the Redis requests
# per message (INFO commandstats before and after the row: the commands
# postern sends, and apart those its scripts run inside Redis; before the
# decisions of a command were one script, the lease release was a ZREM sent
# alone, listed among the latter; with the script's mean time inside Redis
# per call, from the same stats), then the median of the rounds' ratios
# (goal: with/without >= 0.85).
#
#   bash scripts/bench-cluster.sh [--debug] [--messages N] [--rounds R] [--binary PATH (no build)]
#
# Load: Postfix's smtp-source, 2 KB messages, 20 clients, a new session per
# message; postern trusts 127.0.0.1 as user "device" (no AUTH), so each
# message costs the shared decisions of a session: the user's connection
# lease (taken and released), messages_per_minute and recipients_per_hour.
# Needs smtp-source and smtp-sink (postfix), redis-server and redis-cli;
# installs none. postern answers 250 only once the sink has, so the client's
# time is the row's time. Loopback only; stops what it started by PID.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PROFILE=release; N=3000; ROUNDS=6; BIN=
while (( $# > 0 )); do
    case "$1" in
        --debug) PROFILE=debug ;;
        --messages) N="$2"; shift ;;
        --rounds) ROUNDS="$2"; shift ;;
        --binary) BIN="$2"; PROFILE="given"; shift ;;
        *) echo "bench-cluster: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
for tool in smtp-source smtp-sink redis-server redis-cli python3; do
    command -v "$tool" >/dev/null 2>&1 || { echo "bench-cluster: $tool is missing" >&2; exit 2; }
done
if [[ -z "$BIN" ]]; then
    if [[ "$PROFILE" == release ]]; then cargo build --quiet --release --bin postern; else cargo build --quiet --bin postern; fi
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE/postern"
fi

TMP="$(mktemp -d)"
PIDS=()
stop_pid() {
    kill -0 "$1" 2>/dev/null || return 0
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
cleanup() { local rc=$?; for p in "${PIDS[@]}"; do stop_pid "$p"; done; rm -rf "$TMP"; exit "$rc"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    local deadline=$((SECONDS + 30))
    until python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1).close()" "$1" 2>/dev/null; do
        (( SECONDS < deadline )) || { echo "bench-cluster: port $1 did not open" >&2; return 1; }
        sleep 0.1
    done
}

SINK_PORT="$(free_port)"
smtp-sink -c -u nobody "127.0.0.1:$SINK_PORT" 1000 > "$TMP/sink.out" 2>&1 &
PIDS+=($!)
wait_port "$SINK_PORT"
REDIS_PORT="$(free_port)"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$TMP" > "$TMP/redis.log" 2>&1 &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
wait_port "$REDIS_PORT"

config() { # config PORT CLUSTER(0|1)
    cat <<TOML
[[listener]]
name = "plain"
addr = "127.0.0.1:$1"
auth = "optional"
[limits]
messages_per_minute = 100000000
recipients_per_hour = 100000000
max_connections_per_user = 100000
max_connections_per_ip = 100000
max_connections = 100000
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
allowed_senders = ["*"]
TOML
    if [[ "$2" == 1 ]]; then
        printf '[cluster]\nredis = "redis://127.0.0.1:%s/0"\nreplicas = 1\n' "$REDIS_PORT"
    fi
}

cpu_ticks() { # cpu_ticks PID -> user+system clock ticks so far
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}

redis_calls() { # redis_calls -> "command calls µs" lines, every command but INFO
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" INFO commandstats | tr -d '\r' |
        awk -F'[:,=]' '/^cmdstat_/ { sub("cmdstat_", "", $1); if ($1 != "info") print $1, $3, $5 }'
}

run() { # run CLUSTER(0|1) -> "messages/s postern-CPU-µs/msg redis-CPU-µs/msg redis-commands/msg breakdown"
    local port pid t0 t1 c0 c1 r0 r1
    # Each row starts from an empty Redis: no slot or window of the row before.
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" FLUSHALL > /dev/null
    port="$(free_port)"
    config "$port" "$1" > "$TMP/postern.toml"
    "$BIN" run --config "$TMP/postern.toml" > "$TMP/postern.log" 2>&1 &
    pid=$!
    wait_port "$port"
    smtp-source -s 20 -l 2048 -m 200 -f b@example.com -t s@example.net "127.0.0.1:$port" >/dev/null 2>&1 # warm-up
    redis_calls > "$TMP/calls.before"
    c0="$(cpu_ticks "$pid")"; r0="$(cpu_ticks "$REDIS_PID")"
    t0="$(date +%s.%N)"
    smtp-source -s 20 -l 2048 -m "$N" -f b@example.com -t s@example.net "127.0.0.1:$port" > "$TMP/src.log" 2>&1
    t1="$(date +%s.%N)"
    c1="$(cpu_ticks "$pid")"; r1="$(cpu_ticks "$REDIS_PID")"
    redis_calls > "$TMP/calls.after"
    if grep -qiE "error|fatal" "$TMP/src.log"; then echo "bench-cluster: smtp-source reported errors" >&2; cat "$TMP/src.log" >&2; stop_pid "$pid"; return 1; fi
    stop_pid "$pid"
    awk -v n="$N" -v a="$t0" -v b="$t1" -v c="$((c1 - c0))" -v r="$((r1 - r0))" -v hz="$HZ" \
        'BEGIN { printf "%.1f %.0f %.0f ", n / (b - a), c * 1e6 / hz / n, r * 1e6 / hz / n }'
    # Requests are what postern sends (EVALSHA and the odd GETDEL, PING);
    # the commands its scripts run inside Redis are listed apart.
    awk -v n="$N" -v inner=" time get set del zremrangebyscore zscore zcard zadd pexpire zrem " \
        'NR == FNR { before[$1] = $2; usec[$1] = $3; next }
        { d = $2 - before[$1]; if (d <= 0) next
          if ($1 == "evalsha") script = sprintf(" (%.1f µs each inside Redis)", ($3 - usec[$1]) / d)
          if (index(inner, " " $1 " ")) { inside = inside sprintf(" %s=%.2f", $1, d / n) }
          else { total += d; direct = direct sprintf(" %s=%.2f", $1, d / n) } }
        END { printf "%.2f%s%s;%s", total / n, (direct == "" ? " none" : direct), script, (inside == "" ? " none" : inside) }' \
        "$TMP/calls.before" "$TMP/calls.after"
}
HZ="$(getconf CLK_TCK)"

echo "bench-cluster: $PROFILE build, $N messages of 2 KB x 20 clients per run, $ROUNDS rounds, load before $(cut -d' ' -f1-3 /proc/loadavg)"
without=(); with=(); ratios=(); cpu_without=(); cpu_with=(); cpu_redis=(); commands=()
for r in $(seq "$ROUNDS"); do
    # Odd rounds run the row without [cluster] first, even rounds second.
    if (( r % 2 )); then out0="$(run 0)"; out1="$(run 1)"; order="without first"
    else out1="$(run 1)"; out0="$(run 0)"; order="with first"; fi
    read -r a ca _ <<< "$out0"; read -r b cb rb k calls <<< "$out1"
    without+=("$a"); with+=("$b"); cpu_without+=("$ca"); cpu_with+=("$cb"); cpu_redis+=("$rb"); commands+=("$k")
    ratio="$(awk -v w="$a" -v c="$b" 'BEGIN { printf "%.3f", c / w }')"; ratios+=("$ratio")
    echo "bench-cluster: round $r ($order): without [cluster] $a msg/s ($ca µs postern CPU/msg), with [cluster] $b msg/s ($cb µs postern + $rb µs redis CPU/msg, $k Redis requests/msg:${calls%%;*}, inside scripts:${calls#*;}): ratio $ratio"
done
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
mw="$(median "${without[@]}")"; mc="$(median "${with[@]}")"
awk -v w="$mw" -v c="$mc" -v m="$(median "${ratios[@]}")" \
    'BEGIN { printf "bench-cluster: median without %.1f msg/s, with %.1f msg/s; median of the rounds'"'"' ratios %.2f (goal >= 0.85)\n", w, c, m }'
echo "bench-cluster: median CPU per message: postern without $(median "${cpu_without[@]}") µs, with $(median "${cpu_with[@]}") µs; redis-server $(median "${cpu_redis[@]}") µs; Redis requests per message $(median "${commands[@]}")"
echo "bench-cluster: load after $(cut -d' ' -f1-3 /proc/loadavg)"
