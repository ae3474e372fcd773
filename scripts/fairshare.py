"""Fair share of provider connections under abuse (issue 12, item 10).

One trusted client (a networks-only user) opens transactions as fast as it can
pace them (about 100 a second) and drops each one mid-DATA, beside ten normal
devices that authenticate and send one message per session, all through one
provider account with max_connections = 4. Before the per-user share, the
abuser held every provider slot and deliveries stopped; now it holds at most
its share (half, 2) and the normal devices' mail keeps flowing.

Usage: python3 scripts/fairshare.py POSTERN_BINARY SECONDS WORKDIR
Passes when: every normal message is acknowledged and delivered exactly once,
no gap between two normal acknowledgements exceeds MAX_GAP seconds, and no
dropped transaction reaches the provider. Loopback only; postern is started
here and stopped by its PID.
"""

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from soak import free_ports, scrape, wait_listening  # noqa: E402
from soak_load import HOST, PASSWORD, Client, Provider, Stats, logged_in, message, open_data  # noqa: E402

NORMAL = 10
ABUSERS = 8
ABUSE_RATE = 100.0  # transactions per second, all abusers together
MAX_GAP = 5.0


class NoFaults:
    """The provider's fault dice, always landing on "deliver"."""

    def random(self):
        return 0.99


def config(smtp_port, metrics_port, provider_port, password_hash):
    return f"""# written by scripts/fairshare.py
[server]
hostname = "postern.fairshare"
shutdown_grace = "5s"

[[listener]]
name = "fair"
addr = "{HOST}:{smtp_port}"
tls = "none"
auth = "optional"

[metrics]
addr = "{HOST}:{metrics_port}"

[limits]
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

[[user]]
name = "abuser"
networks = ["{HOST}/32"]
upstream = "provider"
allowed_senders = ["*@example.com"]
"""


async def normal(port, stats, acks, deadline):
    while time.monotonic() < deadline:
        soak_id = "normal-" + str(uuid.uuid4())
        try:
            c = await logged_in(port)
            await open_data(c)
            await c.send(message(soak_id, 20).replace(b"\r\n.", b"\r\n..") + b".\r\n")
            r = await c.reply()
            stats.inc("normal_sent")
            if r.startswith("250"):
                stats.acked.add(soak_id)
                acks.append(time.monotonic())
            else:
                stats.inc("normal_refused")
                if stats.count["normal_refused"] <= 5:
                    print(f"fairshare: normal message refused: {r}", flush=True)
            await c.cmd("QUIT", "221")
            await c.close()
        except Exception as e:  # counted and shown: any failure of a normal device fails the run
            stats.inc("normal_errors")
            if stats.count["normal_errors"] <= 5:
                print(f"fairshare: normal client: {type(e).__name__} {e}", flush=True)
            await asyncio.sleep(0.1)


async def abuser(port, stats, deadline):
    interval = ABUSERS / ABUSE_RATE
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            c = await Client.connect(port)
            await c.cmd("EHLO abuser", "250")
            await open_data(c)
            data = message("abuse-" + str(uuid.uuid4()), 50)
            await c.send(data[: len(data) // 2])
            c.abort()
            stats.inc("abuse_dropped")
        except Exception:
            # 451 at MAIL when its share is taken: what the share is for.
            stats.inc("abuse_refused")
            try:
                c.abort()
            except Exception:
                pass
        await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))


async def main(binary, duration, workdir):
    stats = Stats()
    provider = Provider(stats, 0)
    provider.rng = NoFaults()
    provider_port = await provider.start()
    smtp_port, metrics_port = free_ports(2)
    password_hash = subprocess.run(
        [binary, "hash-password"], input=PASSWORD + "\n", capture_output=True, text=True, check=True
    ).stdout.strip()
    conf = os.path.join(workdir, "postern.toml")
    with open(conf, "w") as f:
        f.write(config(smtp_port, metrics_port, provider_port, password_hash))
    log = open(os.path.join(workdir, "postern.log"), "w")
    env = dict(os.environ, RUST_LOG=os.environ.get("FAIRSHARE_RUST_LOG", "warn"))
    proc = subprocess.Popen([binary, "run", "--config", conf], stdout=log, stderr=log, env=env)
    acks = []
    try:
        await wait_listening(smtp_port, proc)
        start = time.monotonic()
        deadline = start + duration
        print(
            f"fairshare: postern pid {proc.pid}; {NORMAL} normal devices, {ABUSERS} abusers at "
            f"~{ABUSE_RATE:.0f} dropped transactions/s, max_connections = 4, for {duration:.0f} s",
            flush=True,
        )
        tasks = [normal(smtp_port, stats, acks, deadline) for _ in range(NORMAL)]
        tasks += [abuser(smtp_port, stats, deadline) for _ in range(ABUSERS)]
        await asyncio.wait_for(asyncio.gather(*tasks), duration + 120)
        await asyncio.sleep(0.5)
        hits = await scrape(
            metrics_port,
            'postern_limit_hits_total{limit="upstream_connections_per_user",upstream="provider",user="abuser"}',
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        provider.server.close()
        log.close()

    points = [start] + sorted(acks) + [deadline]
    gap = max(b - a for a, b in zip(points, points[1:]))
    normal_delivered = {k: v for k, v in stats.delivered.items() if k.startswith("normal-")}
    lost = [i for i in stats.acked if i not in normal_delivered]
    dup = [i for i, n in normal_delivered.items() if n > 1]
    smuggled = [i for i in stats.delivered if i.startswith("abuse-")]
    c = stats.count
    print(
        f"fairshare: normal sent {c.get('normal_sent', 0)}, acked {len(stats.acked)}, "
        f"refused {c.get('normal_refused', 0)}, errors {c.get('normal_errors', 0)}, "
        f"lost {len(lost)}, duplicated {len(dup)}; longest gap between acks {gap:.2f} s "
        f"(limit {MAX_GAP:.0f}); abuser dropped {c.get('abuse_dropped', 0)}, "
        f"refused {c.get('abuse_refused', 0)}, share hits {hits:.0f}, reached the provider "
        f"{len(smuggled)}; provider connections {c.get('provider_connections', 0)}; "
        f"postern exit {rc}",
        flush=True,
    )
    failures = []
    if not stats.acked:
        failures.append("no normal message was acknowledged")
    if c.get("normal_refused", 0) or c.get("normal_errors", 0):
        failures.append("normal devices were refused or failed")
    if lost or dup:
        failures.append("normal messages lost or duplicated")
    if gap > MAX_GAP:
        failures.append(f"normal deliveries stalled for {gap:.1f} s")
    if smuggled:
        failures.append("a dropped transaction reached the provider")
    if rc != 0:
        failures.append(f"postern exited with {rc}")
    for f in failures:
        print(f"fairshare: FAIL: {f}", flush=True)
    print(f"fairshare: {0 if failures else 1} passed, {len(failures)} failed", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: fairshare.py POSTERN_BINARY SECONDS WORKDIR")
    sys.exit(asyncio.run(main(sys.argv[1], float(sys.argv[2]), sys.argv[3])))
