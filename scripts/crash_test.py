#!/usr/bin/env python3
"""Crash test of the spool: nothing acknowledged is lost by kill -9.

Runs postern (the binary given as argv[1]) with delivery = "spool" toward a
provider on loopback that is down at first. Several concurrent clients send
numbered messages; after N acknowledgements (250 Queued as ...) postern is
killed with SIGKILL, mid-traffic. Then postern is started again on the same
spool and the provider comes up. Every acknowledged message must arrive at
the provider; duplicates are counted and printed (expected 0).

Environment: CRASH_ACKS (default 300), CRASH_CLIENTS (default 8),
CRASH_TIMEOUT seconds to wait for delivery (default 120).
Prints one summary line; exits 1 if anything acknowledged was lost or
delivered twice. Kills only the processes it started, by PID.
"""

import os
import signal
import smtplib
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time

BIN = sys.argv[1]
ACKS = int(os.environ.get("CRASH_ACKS", "300"))
CLIENTS = int(os.environ.get("CRASH_CLIENTS", "8"))
TIMEOUT = float(os.environ.get("CRASH_TIMEOUT", "120"))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Provider(socketserver.ThreadingTCPServer):
    """A minimal SMTP provider that records the X-Seq header of each message."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, port):
        self.lock = threading.Lock()
        self.delivered = []
        super().__init__(("127.0.0.1", port), ProviderHandler)


class ProviderHandler(socketserver.StreamRequestHandler):
    def reply(self, line):
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self):
        self.reply("220 provider ESMTP")
        while True:
            line = self.rfile.readline()
            if not line:
                return
            cmd = line.strip().upper()
            if cmd.startswith(b"EHLO"):
                self.wfile.write(b"250-provider\r\n250-PIPELINING\r\n250 AUTH PLAIN LOGIN\r\n")
            elif cmd.startswith(b"AUTH"):
                self.reply("235 2.7.0 ok")
            elif cmd == b"DATA":
                self.reply("354 go ahead")
                seq = None
                while True:
                    body = self.rfile.readline()
                    if not body:
                        return
                    if body == b".\r\n":
                        break
                    if body.lower().startswith(b"x-seq:"):
                        seq = body.split(b":", 1)[1].strip().decode()
                with self.server.lock:
                    self.server.delivered.append(seq)
                self.reply("250 2.0.0 ok")
            elif cmd == b"QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("250 ok")


def start_postern(config, log):
    return subprocess.Popen(
        [BIN, "run", "--config", config],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


def wait_port(port, proc, limit=30):
    deadline = time.time() + limit
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"crash: postern exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("crash: postern did not listen")


def main():
    tmp = tempfile.mkdtemp(prefix="postern-crash-")
    smtp_port, provider_port = free_port(), free_port()
    password = "crash-password"
    hashed = subprocess.run(
        [BIN, "hash-password"], input=password + "\n", capture_output=True, text=True, check=True
    ).stdout.strip()
    config = os.path.join(tmp, "postern.toml")
    with open(config, "w") as f:
        f.write(
            f"""
[server]
hostname = "crash.test"
shutdown_grace = "1s"

[[listener]]
name = "local"
addr = "127.0.0.1:{smtp_port}"

[limits]
messages_per_minute = 1000000
recipients_per_hour = 1000000
max_connections_per_user = 1000

[spool]
dir = "{tmp}/spool"
retry_initial = "1s"
retry_max = "2s"

[[upstream]]
name = "provider"
kind = "smtp"
addr = "127.0.0.1:{provider_port}"
tls = "none"
username = "relay"
password = "provider-secret"
delivery = "spool"
max_connections = 4
health_check_interval = "0s"

[[user]]
name = "dev"
password_hash = "{hashed}"
allowed_senders = ["*@example.com"]
"""
        )
    log = open(os.path.join(tmp, "postern.log"), "ab")
    proc = start_postern(config, log)
    wait_port(smtp_port, proc)

    acked = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(i):
        j = 0
        try:
            s = smtplib.SMTP("127.0.0.1", smtp_port, timeout=30)
            s.login("dev", password)
            while not stop.is_set():
                seq = f"c{i}-{j}"
                j += 1
                msg = (
                    f"From: dev@example.com\r\nTo: you@example.net\r\nX-Seq: {seq}\r\n"
                    f"Subject: crash {seq}\r\n\r\n" + ("scan data line\r\n" * 100)
                )
                s.sendmail("dev@example.com", ["you@example.net"], msg)
                with lock:
                    acked.append(seq)
        except (smtplib.SMTPException, OSError):
            return

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    started = time.time()
    while True:
        with lock:
            n = len(acked)
        if n >= ACKS:
            break
        if time.time() - started > 60:
            raise SystemExit(f"crash: only {n} acknowledgements in 60 s")
        time.sleep(0.001)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stop.set()
    for t in threads:
        t.join(timeout=10)
    with lock:
        acked_set = set(acked)
    print(f"crash: killed postern (pid {proc.pid}) with SIGKILL after {len(acked_set)} acknowledgements")

    provider = Provider(provider_port)
    threading.Thread(target=provider.serve_forever, daemon=True).start()
    restart = time.time()
    proc = start_postern(config, log)
    wait_port(smtp_port, proc)
    recovered = time.time() - restart
    deadline = time.time() + TIMEOUT
    while time.time() < deadline:
        with provider.lock:
            got = set(provider.delivered)
        if acked_set <= got:
            break
        time.sleep(0.2)
    time.sleep(3)  # anything delivered twice would show up now
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)
    provider.shutdown()
    with provider.lock:
        delivered = list(provider.delivered)
    got = set(delivered)
    lost = sorted(acked_set - got)
    duplicates = len(delivered) - len(got)
    unacked = len(got - acked_set)
    print(
        f"crash: acknowledged {len(acked_set)}, delivered {len(got)} distinct "
        f"({len(delivered)} in all), lost {len(lost)}, duplicates {duplicates}, "
        f"delivered without acknowledgement {unacked}, restart to listening {recovered:.2f} s"
    )
    if lost:
        print(f"crash: lost: {lost[:20]}")
        print(f"crash: log in {tmp}/postern.log")
        return 1
    if duplicates:
        return 1
    subprocess.run(["rm", "-rf", tmp], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
