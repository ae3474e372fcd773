#!/usr/bin/env python3
"""Report for scripts/bench.sh: the table on stdout, BENCHMARKS.md and two PNG
charts (drawn by gnuplot) in the output directory.

Input: the TSV that bench.sh writes, one row per measured run:
scenario, path, messages, seconds, msg/s, relay CPU us/msg, sink CPU us/msg,
relay peak RSS KiB, lost. Every ratio is against the `direct` row of the same
scenario in the same run.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys

PATHS = ["direct", "postern", "postfix"]
LABEL = {"direct": "direct to the sink", "postern": "through postern", "postfix": "through Postfix"}


def load(path):
    rows = []
    with open(path) as f:
        for line in f:
            sc, p, n, secs, rate, relay_us, sink_us, client_us, hwm, lost = line.rstrip("\n").split("\t")
            rows.append({
                "scenario": sc, "path": p, "n": int(n), "secs": float(secs), "rate": float(rate),
                "relay_us": None if relay_us == "-" else int(relay_us),
                "sink_us": int(sink_us), "client_us": int(client_us), "hwm": None if hwm == "-" else int(hwm), "lost": int(lost),
            })
    return rows


def scenarios(rows):
    seen = []
    for r in rows:
        if r["scenario"] not in seen:
            seen.append(r["scenario"])
    return seen


def direct_of(rows, sc):
    return next((r for r in rows if r["scenario"] == sc and r["path"] == "direct"), None)


def table(rows):
    head = ["scenario", "path", "messages", "msg/s", "ratio to direct", "relay CPU µs/msg",
            "sink CPU µs/msg", "client CPU µs/msg", "relay peak RSS", "lost"]
    out = [head]
    for r in rows:
        d = direct_of(rows, r["scenario"])
        ratio = r["rate"] / d["rate"] if d and d["rate"] > 0 else 0.0
        out.append([
            r["scenario"], r["path"], str(r["n"]), f"{r['rate']:.0f}", f"{ratio:.2f}×",
            "—" if r["relay_us"] is None else str(r["relay_us"]), str(r["sink_us"]), str(r["client_us"]),
            "—" if r["hwm"] is None else f"{r['hwm'] / 1024:.1f} MiB", str(r["lost"]),
        ])
    return out


def cpu_lines(rows):
    """postern's CPU per message against the sink doing both halves of the work.
    Plain scenarios only: in the tls+auth one the sink does no TLS."""
    lines = []
    for sc in scenarios(rows):
        if not sc.startswith("plain"):
            continue
        d = direct_of(rows, sc)
        p = next((r for r in rows if r["scenario"] == sc and r["path"] == "postern"), None)
        if not d or not p or p["relay_us"] is None:
            continue
        halves = d["sink_us"] + p["sink_us"]
        if halves > 0:
            lines.append(
                f"{sc}: postern {p['relay_us']} µs/msg against the sink's {d['sink_us']} (a whole session, "
                f"direct) + {p['sink_us']} (a transaction behind postern) = {halves} µs: "
                f"{p['relay_us'] / halves:.2f}× the sink's cost for the same two halves")
    return lines


def load_latency(path):
    """Rows of latency.tsv: scenario, path, clients, round trip ms, median, mean, p90 ms,
    and (since the delay line counts them) the round trips per message it saw."""
    rows = []
    if not path or not os.path.exists(path):
        return rows
    with open(path) as f:
        for line in f:
            sc, p, c, rtt, med, mean, p90, *counted = line.rstrip("\n").split("\t")
            rows.append({"scenario": sc, "path": p, "clients": int(c), "rtt": float(rtt),
                         "median": float(med), "mean": float(mean), "p90": float(p90),
                         "counted": float(counted[0]) if counted else None})
    return rows


def latency_table(lat):
    head = ["scenario", "path", "clients", "session latency median", "mean", "p90", "median to direct",
            "provider round trips per message (median / round trip)", "(counted on the wire)"]
    out = [head]
    for r in lat:
        trips = r["median"] / r["rtt"] if r["rtt"] > 0 else 0.0
        d = next((x for x in lat if x["scenario"] == r["scenario"] and x["path"] == "direct"), None)
        ratio = f"{r['median'] / d['median']:.2f}×" if d and d["median"] > 0 else "—"
        counted = "—" if r["counted"] is None else f"{r['counted']:.2f}"
        out.append([r["scenario"], r["path"], str(r["clients"]), f"{r['median']:.1f} ms",
                    f"{r['mean']:.1f} ms", f"{r['p90']:.1f} ms", ratio, f"{trips:.2f}", counted])
    return out


def load_rounds(path):
    """Lines of rounds.tsv (scripts/bench/rounds.py): round, path first, direct and postern
    msg/s, ratio, postern CPU us/msg, the sink's us/msg direct and behind postern, CPU factor,
    and 1 on the round the table shows."""
    out = []
    if not path or not os.path.exists(path):
        return out
    with open(path) as f:
        for line in f:
            r, first, d, p, ratio, p_us, d_sink, p_sink, cpu, shown = line.rstrip("\n").split("\t")
            out.append({"round": int(r), "first": first, "direct": float(d), "postern": float(p),
                        "ratio": float(ratio), "postern_us": int(p_us), "direct_sink": int(d_sink),
                        "postern_sink": int(p_sink), "cpu": float(cpu), "shown": shown == "1"})
    return out


def median(values):
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def rounds_summary(rounds):
    """One line: the medians and ranges over the rounds, and which round the table shows."""
    ratios = [r["ratio"] for r in rounds]
    cpus = [r["cpu"] for r in rounds]
    shown = next((r["round"] for r in rounds if r["shown"]), "?")
    return (f"plain 2KB x20 over {len(rounds)} rounds (direct and postern on one sink, which goes first "
            f"alternating): ratio to direct median {median(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f}); "
            f"postern's CPU median {median(cpus):.2f}× the sink's two halves ({min(cpus):.2f}–{max(cpus):.2f}); "
            f"the table shows round {shown}, the median by ratio")


def rounds_table(rounds):
    out = [["round", "first", "direct msg/s", "postern msg/s", "ratio", "postern CPU µs/msg",
            "sink µs/msg direct", "sink µs/msg behind postern", "postern ÷ the sink's two halves"]]
    for r in rounds:
        out.append([str(r["round"]), r["first"], f"{r['direct']:.0f}", f"{r['postern']:.0f}", f"{r['ratio']:.2f}×",
                    str(r["postern_us"]), str(r["direct_sink"]), str(r["postern_sink"]), f"{r['cpu']:.2f}×"])
    return out


def markdown_table(t):
    lines = ["| " + " | ".join(t[0]) + " |", "|" + "|".join(" --- " for _ in t[0]) + "|"]
    for row in t[1:]:
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def text_table(t):
    widths = [max(len(row[i]) for row in t) for i in range(len(t[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in t)


def charts(rows, outdir):
    """Two clustered bar charts: throughput ratio to direct, and CPU µs/msg."""
    gnuplot = shutil.which("gnuplot")
    if not gnuplot:
        print("report: gnuplot not found; no charts", file=sys.stderr)
        return []
    chart_dir = os.path.join(outdir, "docs", "bench")
    os.makedirs(chart_dir, exist_ok=True)
    scs = scenarios(rows)
    data = os.path.join(chart_dir, ".bench.dat")

    def val(sc, p, key):
        r = next((r for r in rows if r["scenario"] == sc and r["path"] == p), None)
        if r is None:
            return "NaN"
        if key == "ratio":
            d = direct_of(rows, sc)
            return f"{r['rate'] / d['rate']:.3f}" if d and d["rate"] > 0 else "NaN"
        v = r[key]
        return "NaN" if v is None else str(v)

    with open(data, "w") as f:
        f.write("# scenario " + " ".join(PATHS) + " postern_cpu postfix_cpu sink_direct sink_postern sink_postfix\n")
        for sc in scs:
            f.write('"' + sc + '" ' + " ".join(val(sc, p, "ratio") for p in PATHS) + " "
                    + val(sc, "postern", "relay_us") + " " + val(sc, "postfix", "relay_us") + " "
                    + " ".join(val(sc, p, "sink_us") for p in PATHS) + "\n")
    common = """
set terminal pngcairo size 1000,620 font "sans,11" background rgb "white"
set xtics rotate by -35 font "sans,10"
set bmargin 12
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set key outside bottom center horizontal
set grid ytics
set yrange [0:*]
set datafile missing "NaN"
"""
    ratio_png = os.path.join(chart_dir, "throughput.png")
    cpu_png = os.path.join(chart_dir, "cpu.png")
    common += f"set xrange [-0.5:{len(scs) - 0.5}]\n"
    script = common + f"""
set output "{ratio_png}"
set title "Messages per second, as a ratio to direct (same run)"
set ylabel "ratio to direct"
plot "{data}" using 2:xtic(1) title "{LABEL['direct']}" lc rgb "#999999", \\
     "" using 3 title "{LABEL['postern']}" lc rgb "#2b6cb0", \\
     "" using 4 title "{LABEL['postfix']}" lc rgb "#c05621"
set output "{cpu_png}"
set title "CPU per message (µs, utime+stime)"
set ylabel "µs per message"
set logscale y
set yrange [1:*]
plot "{data}" using 5:xtic(1) title "postern" lc rgb "#2b6cb0", \\
     "" using 6 title "Postfix (all daemons)" lc rgb "#c05621", \\
     "" using 7 title "sink, direct" lc rgb "#999999", \\
     "" using 8 title "sink, behind postern" lc rgb "#63b3ed"
"""
    res = subprocess.run([gnuplot], input=script, text=True, capture_output=True)
    os.remove(data)
    if res.returncode != 0:
        print("report: gnuplot failed:\n" + res.stderr, file=sys.stderr)
        return []
    return ["docs/bench/throughput.png", "docs/bench/cpu.png"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("outdir")
    ap.add_argument("--started", default="")
    ap.add_argument("--load-before", default="")
    ap.add_argument("--load-after", default="")
    ap.add_argument("--profile", default="release")
    ap.add_argument("--quick", default="0")
    ap.add_argument("--idle", default="")
    ap.add_argument("--resumed", default="", help="PATH:RESUMED/SESSIONS,... of the returning-devices rows")
    ap.add_argument("--latency", default="")
    ap.add_argument("--flood", default="", help="authflood.py's JSON output file")
    ap.add_argument("--rounds", default="", help="rounds.py's rounds.tsv of the plain 2 KB scenario")
    a = ap.parse_args()

    rows = load(a.results)
    t = table(rows)
    print()
    print(text_table(t))
    cpu = cpu_lines(rows)
    for line in cpu:
        print(line)
    rounds = load_rounds(a.rounds)
    rounds_md = ""
    if rounds:
        summary = rounds_summary(rounds)
        print(summary)
        rounds_md = summary + ":\n\n" + markdown_table(rounds_table(rounds)) + "\n\n"
    idle_md = ""
    if a.idle:
        n, before, after, hwm, asked, limit = (int(x) for x in a.idle.split(","))
        per = (after - before) / n if n else 0.0
        line = (f"idle: {n} connections held open: VmRSS {before / 1024:.1f} → {after / 1024:.1f} MiB "
                f"(+{(after - before) / 1024:.1f} MiB, {per:.1f} KiB per connection), VmHWM {hwm / 1024:.1f} MiB")
        print(line)
        idle_md = (f"| idle connections | VmRSS before | VmRSS after | per connection | VmHWM |\n"
                   f"| --- | --- | --- | --- | --- |\n"
                   f"| {n} | {before / 1024:.1f} MiB | {after / 1024:.1f} MiB | {per:.1f} KiB | {hwm / 1024:.1f} MiB |\n")
        if asked > n:
            idle_md += (f"\n{asked} were asked for; this machine's file limit (open files, as far as the "
                        f"bench could raise it: {limit}) let {n} open.\n")

    lat = load_latency(a.latency)
    lat_md = ""
    if lat:
        lt = latency_table(lat)
        print(text_table(lt))
        rtt = lat[0]["rtt"]
        lat_md = (f"A provider {rtt:.0f} ms of round trip away (`scripts/bench/delay.py` in front of it, "
                  f"{rtt / 2:.0f} ms each way): what one device session (connect, EHLO, AUTH PLAIN, MAIL, RCPT, "
                  f"DATA, QUIT with smtplib, a new session per message) takes, straight to the provider or through "
                  f"postern on the local network, which relays each message over a connection its pool keeps warm. "
                  f"The provider is Postfix's `smtp-sink` (PIPELINING, no CHUNKING: postern relays with DATA) or a "
                  f"private Postfix `smtpd` with SASL AUTH (CHUNKING and PIPELINING: postern relays with BDAT, "
                  f"MAIL, RCPT and `BDAT n LAST` in one flight when the device's one RCPT and DATA are answered at "
                  f"once), which relays on to the sink. \"device waits\" is smtplib as it is, one command and its "
                  f"reply at a time; \"device pipelines\" writes MAIL, RCPT and DATA together (RFC 2920). Round "
                  f"trips are the median latency over the round trip time (the provider's own processing, such as "
                  f"Postfix's queue-file write, and the local hops included), and the round trips the delay line "
                  f"counted on the wire over the row, per message (a client's data after the server's).\n\n"
                  + markdown_table(lt) + "\n\n")

    flood_md = ""
    if a.flood:
        with open(a.flood) as f:
            fl = json.load(f)
        b, fm, d, n = fl["baseline_ms"], fl["flood_ms"], fl["delay_ms"], fl["flood_auths"]
        line = (f"AUTH flood: an authenticated device's message takes {b.get('median')} ms median, "
                f"{b.get('max')} ms max alone; {fm.get('median')} / {fm.get('p99')} / {fm.get('max')} ms "
                f"(median / p99 / max) during the flood: delay {d.get('median')} / {d.get('p99')} / "
                f"{d.get('max')} ms; flood AUTHs answered 535: {n.get('535', 0)}, 454: {n.get('454', 0)}")
        print(line)
        flood_md = (
            f"A cold AUTH flood (`scripts/bench/authflood.py`): {fl.get('flood', 200)} concurrent connections, "
            "each STARTTLS then AUTH PLAIN as a random unknown user, again and again, while a device that "
            "AUTHed before the flood sends a 2 KB message on its session every 50 ms. Latency is from MAIL "
            "to the end-of-data reply, postern relaying to the sink.\n\n"
            "| device message latency | median | p90 | p99 | max |\n| --- | --- | --- | --- | --- |\n"
            + "".join(f"| {name} | {x.get('median')} ms | {x.get('p90')} ms | {x.get('p99')} ms | "
                      f"{x.get('max')} ms |\n" for name, x in (("alone", b), ("during the flood", fm)))
            + f"\nFlood AUTHs answered: 535 (checked, refused) {n.get('535', 0)}, 454 (queue full, not "
            f"checked) {n.get('454', 0)}, other {n.get('other', 0)}, connection errors {n.get('errors', 0)}; "
            f"a flood AUTH's reply took {fl['flood_auth_ms'].get('median')} ms median, "
            f"{fl['flood_auth_ms'].get('max')} ms max.\n\n")

    pictures = charts(rows, a.outdir)
    resumed = "; ".join(
        f"{path}: {pair.split('/')[0]} of {pair.split('/')[1]} handshakes resumed"
        for path, pair in (item.split(":", 1) for item in a.resumed.split(",") if item)
    ) or "not run"
    quick = " (`--quick`: small counts, for CI; not figures to quote)" if a.quick == "1" else ""
    md = f"""# Benchmarks

Generated by `bash scripts/bench.sh` on {a.started}{quick}; every figure below
comes from that one run. Do not edit by hand: run the script again.

The same load goes straight to Postfix's counting sink (`smtp-sink`, the
baseline), through postern ({a.profile} build), and through a private Postfix
instance relaying to the same sink. Each message is a new SMTP session, as
devices send. A row is timed from the start of the load until the sink has
counted every message, so a store-and-forward relay (Postfix) is timed to its
last delivery. CPU is utime+stime from `/proc/PID/stat`: postern's process,
every Postfix daemon (the master, its children and those it reaped), the
sink's process. Ratios are to the `direct` row of the same scenario in this
run; the absolute numbers are this machine's (2 cores, shared: load average
{a.load_before} before the run, {a.load_after} after) and move from run to run.

- **plain**: `smtp-source` (no TLS, no AUTH; postern trusts 127.0.0.1 as a
  `networks` user, Postfix relays for `mynetworks`).
- **tls+auth**: Python `smtplib` (`scripts/bench/sessions.py`), STARTTLS then
  AUTH PLAIN on every session, the device path: a TLS handshake and a password
  check (postern: argon2id from `postern hash-password`; Postfix: Cyrus SASL
  over a `sasldb`, a plaintext comparison) per message. `smtp-source` cannot do
  STARTTLS or AUTH. The `direct` row is the same client without TLS (the sink
  has none) but with AUTH.
- **tls+auth, returning devices**: the same sessions from
  `examples/devices.rs` (Rust on one thread, rustls, `TCP_NODELAY`): a
  fraction of smtplib's CPU, so the relay is what is measured. One command and
  its reply at a time, as smtplib; every device returning, its TLS session
  resumed from a ticket an earlier session got ({resumed}), and its password
  checked again by the relay (postern answers a repeated one from its
  verified-credential cache).
- **provider**: a delay line in front of the sink (DATA) or of a private
  Postfix `smtpd` (BDAT), as a distant provider; see the latency table below.

{markdown_table(t)}

"""
    if cpu:
        md += "CPU per message against the sink doing both halves of postern's work:\n\n"
        md += "".join(f"- {line}\n" for line in cpu) + "\n"
    if rounds_md:
        md += rounds_md
    if lat_md:
        md += lat_md
    if flood_md:
        md += flood_md
    if idle_md:
        md += "Memory of idle client connections (each has had its greeting), postern:\n\n" + idle_md + "\n"
    for pic in pictures:
        md += f"![{os.path.basename(pic)}]({pic})\n\n"
    bench_dir = os.path.join(a.outdir, "docs", "bench")
    perf = sorted(f for f in os.listdir(bench_dir) if f.startswith("perf-")) if os.path.isdir(bench_dir) else []
    if perf:
        md += ("Profiles of postern (`bash scripts/bench.sh --perf`; each file's first line names its run, "
               "which may be an earlier one than this table's):\n\n")
        md += "".join(f"- [docs/bench/{f}](docs/bench/{f})\n" for f in perf) + "\n"
    with open(os.path.join(a.outdir, "BENCHMARKS.md"), "w") as f:
        f.write(md)
    print(f"report: wrote {os.path.join(a.outdir, 'BENCHMARKS.md')}" + (f" and {len(pictures)} charts" if pictures else ""))


if __name__ == "__main__":
    main()
