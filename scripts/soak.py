#!/usr/bin/env python3
"""Soak test for postern: mixed hostile and normal load on loopback for a fixed time.

Run through scripts/soak.sh, which builds postern and passes its path:

    soak.py BINARY DURATION_SECONDS WORKDIR

It starts, all on 127.0.0.1 (the provider, the client and the scenarios are
in soak_load.py):
  * a recording fake provider that answers most messages 250 and injects 451,
    554 and dropped connections at end-of-data (seeded, so runs compare);
  * postern, relaying to it through its pool, from a config written to WORKDIR;
  * load workers: relays, AUTH failures, oversize bodies, slow (trickling)
    clients, abrupt disconnects mid-DATA;
  * SIGHUP to postern every few seconds (the config reloads in place);
  * a probe: a normal client (greeting, EHLO, NOOP, QUIT) once a second, which
    must be served within 1 s;
  * a sampler: postern's RSS, open file descriptors, threads and active
    connections once a second.

It fails (exit 1) when a message postern acknowledged with 250 did not reach
the provider exactly once (lost or duplicated), when the probe was not served
within 1 s, or when RSS or open file descriptors keep growing: a line fitted to
the samples of the second half must not project more than the allowed growth
over that half. Every loop stops at the deadline and is capped in count; every
socket operation has a timeout. Nothing but loopback is ever addressed.
"""

import asyncio
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time

from soak_load import HOST, MAX_SIZE, OP_TIMEOUT, PASSWORD, Client, Provider, Stats, Unexpected, worker

WORKERS = 8
HUP_EVERY = 3.0
PROBE_LIMIT = 1.0
# Growth over the second half that fails the run: the fitted slope times the
# half's span must exceed this AND the slope must be clearly above its noise
# (more than 3 standard errors), so a flat but noisy series never fails.
RSS_GROWTH_MIB = 16.0
RSS_GROWTH_FRACTION = 0.10
FD_GROWTH = 16
# The soak measures the allocator as shipped (glibc's defaults). Argon2's
# 19 MiB working memory and the dummy hash are process-wide, so neither AUTH
# checks nor reloads leave freed blocks in malloc arenas any more (with them per
# policy, RSS grew ~21 MiB per SIGHUP here). SOAK_MALLOC_FIXED=1 pins glibc's
# mmap threshold instead, which makes RSS track live memory exactly, for
# telling a leak from arena growth.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "1048576"}


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind((HOST, 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


# --------------------------------------------------------------------------------------
# Probe, sampler, SIGHUP


async def probe(port, stats, deadline):
    for _ in range(1_000_000):
        if time.monotonic() >= deadline:
            return
        start = time.monotonic()
        try:
            c = await asyncio.wait_for(Client.connect(port), PROBE_LIMIT * 5)
            await c.cmd("EHLO probe.soak", "250")
            await c.cmd("NOOP", "250")
            await c.cmd("QUIT", "221")
            await c.close()
            took = time.monotonic() - start
            stats.probes.append(took)
            if took > PROBE_LIMIT:
                stats.probe_failures.append(f"probe took {took:.3f} s")
        except Exception as e:  # noqa: BLE001 - any failure of the probe counts
            stats.probe_failures.append(f"probe failed: {type(e).__name__} {e}")
        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - start)))


def proc_status(pid):
    rss = threads = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss, fds, threads


async def scrape(metrics_port, name):
    r, w = await asyncio.wait_for(asyncio.open_connection(HOST, metrics_port), 5)
    w.write(f"GET /metrics HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
    await w.drain()
    text = (await asyncio.wait_for(r.read(), 5)).decode("utf-8", "replace")
    w.close()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def sampler(pid, metrics_port, stats, start, deadline):
    for _ in range(1_000_000):
        now = time.monotonic()
        if now >= deadline:
            return
        rss, fds, threads = proc_status(pid)
        try:
            active = await scrape(metrics_port, "postern_connections_active")
        except (ConnectionError, asyncio.TimeoutError, ValueError):
            active = -1
        stats.samples.append((now - start, rss, fds, threads, active))
        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - now)))


async def hupper(pid, stats, deadline):
    for _ in range(1_000_000):
        await asyncio.sleep(HUP_EVERY)
        if time.monotonic() >= deadline:
            return
        os.kill(pid, signal.SIGHUP)
        stats.inc("sighup")


# --------------------------------------------------------------------------------------


def slope(points):
    """Least-squares slope of (x, y) points and its standard error."""
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    if not den or len(points) < 3:
        return 0.0, 0.0
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den
    resid = sum((y - (my + b * (x - mx))) ** 2 for x, y in zip(xs, ys))
    return b, (resid / (len(points) - 2) / den) ** 0.5


def config(smtp_port, metrics_port, provider_port, password_hash):
    return f"""# written by scripts/soak.py
[server]
hostname = "postern.soak"
shutdown_grace = "5s"

[[listener]]
name = "soak"
addr = "{HOST}:{smtp_port}"
tls = "none"
auth = "required"

[metrics]
addr = "{HOST}:{metrics_port}"

[limits]
max_message_size = {MAX_SIZE}
messages_per_minute = 1000000
recipients_per_hour = 100000000
max_connections_per_user = 1000
max_connections_per_ip = 1000
max_connections = 1000
auth_failures_per_ip_per_minute = 1000000
idle_timeout = "60s"

[[upstream]]
name = "provider"
kind = "smtp"
addr = "{HOST}:{provider_port}"
tls = "none"
username = "provider-user"
password = "provider-secret"
max_connections = 4
pool = true
pool_wait = "10s"
health_check_interval = "0s"

[[user]]
name = "soak"
password_hash = "{password_hash}"
upstream = "provider"
allowed_senders = ["*@example.com"]
"""


async def wait_listening(port, proc, limit=60):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"soak: postern exited early with {proc.returncode}")
        try:
            c = await Client.connect(port)
            await c.cmd("QUIT", "221")
            await c.close()
            return
        except (ConnectionError, OSError, asyncio.TimeoutError, Unexpected):
            await asyncio.sleep(0.2)
    raise SystemExit("soak: postern did not start listening")


async def main(binary, duration, workdir):
    seed = int(os.environ.get("SOAK_SEED", "9"))
    stats = Stats()
    provider = Provider(stats, seed)
    provider_port = await provider.start()
    smtp_port, metrics_port = free_ports(2)
    password_hash = subprocess.run(
        [binary, "hash-password"], input=PASSWORD + "\n", capture_output=True, text=True, check=True
    ).stdout.strip()
    conf = os.path.join(workdir, "postern.toml")
    with open(conf, "w") as f:
        f.write(config(smtp_port, metrics_port, provider_port, password_hash))
    log = open(os.path.join(workdir, "postern.log"), "w")
    env = dict(os.environ, RUST_LOG=os.environ.get("SOAK_RUST_LOG", "warn"))
    malloc = MALLOC_ENV if os.environ.get("SOAK_MALLOC_FIXED") == "1" else {}
    env.update(malloc)
    proc = subprocess.Popen([binary, "run", "--config", conf], stdout=log, stderr=log, env=env)
    try:
        await wait_listening(smtp_port, proc)
        start = time.monotonic()
        deadline = start + duration
        print(
            f"soak: postern pid {proc.pid} on {HOST}:{smtp_port}, provider on {HOST}:{provider_port}, "
            f"{WORKERS} workers for {duration:.0f} s (seed {seed}); "
            f"allocator: {' '.join(f'{k}={v}' for k, v in malloc.items()) or 'glibc defaults'}",
            flush=True,
        )
        tasks = [worker(n, smtp_port, stats, deadline, seed) for n in range(WORKERS)]
        tasks += [
            probe(smtp_port, stats, deadline),
            sampler(proc.pid, metrics_port, stats, start, deadline),
            hupper(proc.pid, stats, deadline),
        ]
        await asyncio.wait_for(asyncio.gather(*tasks), duration + 4 * OP_TIMEOUT)
        # Let the last acknowledged messages' records settle (they are recorded before the 250).
        await asyncio.sleep(0.5)
        reloads = await scrape(metrics_port, 'postern_config_reloads_total{result="ok"}')
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        provider.server.close()
        log.close()
    return report(stats, duration, reloads, rc, workdir)


def growth_failures(samples):
    """Fails on RSS or fds that grow over the second half of `samples`
    ((t, rss_kib, fds, ...)). Returns (failures, (rss slope, its se, fd slope, its se))."""
    failures = []
    half = samples[len(samples) // 2 :]
    if len(half) < 5:
        return [f"only {len(samples)} samples"], (0.0, 0.0, 0.0, 0.0)
    span = half[-1][0] - half[0][0]
    rss_slope, rss_se = slope([(s[0], s[1]) for s in half])  # KiB/s
    fd_slope, fd_se = slope([(s[0], s[2]) for s in half])
    rss_median = statistics.median(s[1] for s in half)
    rss_allowed = max(RSS_GROWTH_MIB * 1024, RSS_GROWTH_FRACTION * rss_median)
    if rss_slope * span > rss_allowed and rss_slope > 3 * rss_se:
        failures.append(
            f"RSS grows: {rss_slope:.1f} ± {rss_se:.1f} KiB/s over the last {span:.0f} s "
            f"({rss_slope * span / 1024:.1f} MiB, allowed {rss_allowed / 1024:.1f} MiB)"
        )
    if fd_slope * span > FD_GROWTH and fd_slope > 3 * fd_se:
        failures.append(f"open fds grow: {fd_slope:.3f}/s over the last {span:.0f} s")
    return failures, (rss_slope, rss_se, fd_slope, fd_se)


def self_test():
    """The growth check on synthetic series: flat and noisy passes, a leak fails."""
    rng = random.Random(1)
    n = 120
    flat = [(t, 60_000 + rng.gauss(0, 12_000), 20 + rng.choice((-2, 0, 2)), 8) for t in range(n)]
    rss_leak = [(t, 60_000 + 600 * t + rng.gauss(0, 12_000), 20, 8) for t in range(n)]
    fd_leak = [(t, 60_000, 20 + t // 2, 8) for t in range(n)]
    plateau = [(t, min(580_000, 14_000 + 200_000 * t), 20, 8) for t in range(n)]
    cases = [("flat, noisy", flat, 0), ("RSS leak", rss_leak, 1), ("fd leak", fd_leak, 1),
             ("early plateau", plateau, 0)]
    bad = 0
    for name, samples, want in cases:
        got = len(growth_failures(samples)[0])
        ok = got == want
        bad += not ok
        print(f"soak self-test: {name}: {got} failures, want {want}: {'ok' if ok else 'WRONG'}")
    return 1 if bad else 0


def report(stats, duration, reloads, rc, workdir):
    failures = []
    with open(os.path.join(workdir, "samples.csv"), "w") as f:
        f.write("t,rss_kib,fds,threads,active_connections\n")
        for s in stats.samples:
            f.write(",".join(f"{v:.1f}" if isinstance(v, float) else str(v) for v in s) + "\n")
    growth, (rss_slope, rss_se, fd_slope, fd_se) = growth_failures(stats.samples)
    failures += growth
    lost = sorted(stats.acked - set(stats.delivered))
    duplicated = sorted(k for k, n in stats.delivered.items() if n > 1)
    unacked = sorted(set(stats.delivered) - stats.acked)
    if lost:
        failures.append(f"{len(lost)} acknowledged messages lost, e.g. {lost[:3]}")
    if duplicated:
        failures.append(f"{len(duplicated)} messages duplicated, e.g. {duplicated[:3]}")
    failures += stats.probe_failures[:5]
    if len(stats.probe_failures) > 5:
        failures.append(f"... {len(stats.probe_failures)} probe failures in all")
    if not stats.probes:
        failures.append("the probe never succeeded")
    if stats.count.get("acked", 0) == 0:
        failures.append("no message was acknowledged")
    if rc != 0:
        failures.append(f"postern exited {rc} on SIGTERM")

    c = stats.count
    rss = [s[1] for s in stats.samples]
    fds = [s[2] for s in stats.samples]
    threads = [s[3] for s in stats.samples]
    active = [s[4] for s in stats.samples]
    print(f"soak: ran {duration:.0f} s, {len(stats.samples)} samples (in {workdir}/samples.csv)")
    print(
        f"soak: messages sent {c.get('sent', 0)}, accepted {c.get('acked', 0)}, "
        f"delivered {len(stats.delivered)}, lost {len(lost)}, duplicated {len(duplicated)}, "
        f"delivered without 250 to the client {len(unacked)}"
    )
    print(
        f"soak: refused or deferred: tempfail {c.get('tempfail', 0)}, refused {c.get('refused', 0)}; "
        f"provider injected 451 {c.get('provider_451', 0)}, 554 {c.get('provider_554', 0)}, "
        f"dropped {c.get('provider_dropped', 0)}; provider connections {c.get('provider_connections', 0)}"
    )
    print(
        f"soak: hostile: auth failures {c.get('auth_failed', 0)}, oversize refused {c.get('oversize_refused', 0)}, "
        f"slow clients {c.get('slow', 0)}, aborted mid-DATA {c.get('aborted_mid_data', 0)}; "
        f"SIGHUP sent {c.get('sighup', 0)}, reloads ok {reloads:.0f}"
    )
    odd = {k: v for k, v in c.items() if k.startswith(("unexpected_", "error_"))}
    if odd:
        print(f"soak: client-side surprises (not failures by themselves): {odd}")
    if rss:
        print(
            f"soak: RSS {min(rss) / 1024:.1f}..{max(rss) / 1024:.1f} MiB, slope over the last half "
            f"{rss_slope:+.2f} ± {rss_se:.2f} KiB/s; fds {min(fds)}..{max(fds)}, "
            f"slope {fd_slope:+.4f} ± {fd_se:.4f}/s; "
            f"threads {min(threads)}..{max(threads)}; active connections {min(active):.0f}..{max(active):.0f}"
        )
    if stats.probes:
        print(
            f"soak: probe served {len(stats.probes)} times, median {statistics.median(stats.probes) * 1000:.1f} ms, "
            f"max {max(stats.probes) * 1000:.1f} ms (limit {PROBE_LIMIT * 1000:.0f} ms)"
        )
    for f in failures:
        print(f"soak: FAIL: {f}")
    print(f"soak: {'FAILED' if failures else 'passed'}")
    return 1 if failures else 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        sys.exit(self_test())
    if len(sys.argv) != 4:
        raise SystemExit("usage: soak.py BINARY DURATION_SECONDS WORKDIR")
    sys.exit(asyncio.run(main(sys.argv[1], float(sys.argv[2]), sys.argv[3])))
