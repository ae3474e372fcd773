#!/usr/bin/env python3
"""Idle-connection memory probe for scripts/bench.sh.

Reads VmRSS of the server process PID, opens N client connections to
HOST:PORT and reads each one's greeting (so the server has accepted and set up
every session), waits a moment, reads VmRSS and VmHWM again, closes them all.
Prints one JSON object with the sizes in KiB and the connections that failed.

One source address has about 28,000 ephemeral ports toward one server
address, so the connections come from 127.0.0.1, then 127.0.0.2 and so on,
PER_SOURCE each (all of 127.0.0.0/8 is loopback on Linux).
"""

import json
import socket
import sys
import time

PER_SOURCE = 20000


def status(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def main():
    host, port, n, pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    before = status(pid)
    socks = []
    failed = 0
    deadline = time.monotonic() + 300
    for i in range(n):
        if time.monotonic() > deadline:
            failed += 1
            continue
        try:
            source = f"127.0.0.{1 + i // PER_SOURCE}"
            s = socket.create_connection((host, port), timeout=30, source_address=(source, 0))
            buf = b""
            while not buf.endswith(b"\r\n"):
                chunk = s.recv(512)
                if not chunk:
                    raise ConnectionError("closed before the greeting")
                buf += chunk
            if not buf.startswith(b"220"):
                raise ConnectionError(buf.decode(errors="replace").strip())
            socks.append(s)
        except OSError:
            failed += 1
    time.sleep(1.0)
    after = status(pid)
    for s in socks:
        s.close()
    json.dump({"open": len(socks), "failed": failed, "rss_before_kib": before["VmRSS"],
               "rss_after_kib": after["VmRSS"], "hwm_kib": after["VmHWM"]}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
