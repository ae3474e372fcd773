#!/usr/bin/env python3
"""Cold-AUTH-flood probe for scripts/bench.sh: does a flood of AUTHs delay mail
from a device that is already authenticated?

One authenticated client (its own process, Python smtplib) opens a STARTTLS
session, AUTHs once, and then sends --messages messages on that session, one
every --interval seconds, timing each from MAIL until the end-of-data reply.
It does so twice: alone (the baseline), then while --flood concurrent
connections (a second process, asyncio) each loop: connect, EHLO, STARTTLS,
EHLO, then AUTH PLAIN as a random unknown user with a random password until the
server closes the session (or answers 454), and again. Nothing of the flood is
in any cache: every AUTH is a cold check.

Prints one JSON object:
  {"baseline_ms": {...}, "flood_ms": {...}, "delay_ms": {"p50": D, "p99": D, "max": D},
   "flood_auths": {"535": N, "454": N, "other": N, "errors": N}, "flood_auth_ms": {...},
   "failed": N, "error": "..."}
the *_ms objects having median, p90, p99 and max of the per-message (or
per-AUTH) latency, delay_ms being the flood's figure minus the baseline's.

The server must not lock the flood out by address (the bench config raises
`auth_failures_per_ip_per_minute`): a real flood comes from many addresses.
"""

import argparse
import asyncio
import base64
import json
import multiprocessing as mp
import os
import smtplib
import ssl
import sys
import time


def message(size: int, mail_from: str, rcpt: str) -> bytes:
    head = f"From: {mail_from}\r\nTo: {rcpt}\r\nSubject: postern flood bench\r\n\r\n".encode()
    line = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/ABCDEFGHIJKL\r\n"
    body = bytearray(head)
    while len(body) < size:
        body += line
    return bytes(body)


def stats(xs):
    if not xs:
        return {}
    xs = sorted(xs)
    pick = lambda q: round(xs[min(len(xs) - 1, int(len(xs) * q))], 2)
    return {"n": len(xs), "median": pick(0.5), "p90": pick(0.9), "p99": pick(0.99),
            "max": round(xs[-1], 2)}


def client_ctx():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # the bench's self-signed loopback certificate
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def device(args, go, results):
    """The authenticated device: one session, messages on it, timed."""
    msg = message(args.size, args.mail_from, args.rcpt)
    token = base64.b64encode(f"\0{args.user}\0{args.password}".encode()).decode()
    lats, failed, error = [], 0, ""
    try:
        with smtplib.SMTP(args.host, args.port, local_hostname="bench.device", timeout=60) as s:
            s.ehlo("bench.device")
            s.starttls(context=client_ctx())
            s.ehlo("bench.device")
            code, resp = s.docmd("AUTH", "PLAIN " + token)
            if code != 235:
                raise smtplib.SMTPAuthenticationError(code, resp)
            results.put(("ready", None))
            go.wait()
            for _ in range(args.messages):
                t0 = time.monotonic()
                try:
                    s.sendmail(args.mail_from, [args.rcpt], msg)
                    lats.append((time.monotonic() - t0) * 1000.0)
                except smtplib.SMTPException as e:
                    failed += 1
                    error = repr(e)
                time.sleep(args.interval)
    except Exception as e:  # reported, not raised
        failed += 1
        error = repr(e)
        results.put(("ready", None))
    results.put(("done", (lats, failed, error)))


async def read_reply(reader):
    """One SMTP reply: (code, text of its last line)."""
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed")
        if line[3:4] != b"-":
            return int(line[:3]), line


async def flooder(args, stop, counts, auth_lats):
    ctx = client_ctx()
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(args.host, args.port)
            try:
                await read_reply(reader)
                writer.write(b"EHLO flood.client\r\n")
                await read_reply(reader)
                writer.write(b"STARTTLS\r\n")
                code, _ = await read_reply(reader)
                if code != 220:
                    raise ConnectionError("STARTTLS refused")
                await writer.start_tls(ctx)
                writer.write(b"EHLO flood.client\r\n")
                await read_reply(reader)
                while not stop.is_set():
                    name = "nobody-" + os.urandom(6).hex()
                    token = base64.b64encode(f"\0{name}\0{os.urandom(8).hex()}".encode())
                    t0 = time.monotonic()
                    writer.write(b"AUTH PLAIN " + token + b"\r\n")
                    code, _ = await read_reply(reader)
                    auth_lats.append((time.monotonic() - t0) * 1000.0)
                    key = str(code) if code in (535, 454) else "other"
                    counts[key] = counts.get(key, 0) + 1
                    if code != 535:
                        break  # 454 (busy or locked out), 421: start again
            finally:
                writer.close()
        except (OSError, ConnectionError, ssl.SSLError, ValueError):
            counts["errors"] = counts.get("errors", 0) + 1
            await asyncio.sleep(0.01)


def flood(args, started, stop_evt, results):
    async def run():
        stop = asyncio.Event()
        counts, auth_lats = {}, []
        tasks = [asyncio.create_task(flooder(args, stop, counts, auth_lats))
                 for _ in range(args.flood)]
        # Steady state: every flooder has had time to connect and queue an AUTH.
        await asyncio.sleep(args.ramp)
        started.set()
        while not stop_evt.is_set():
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait(tasks, timeout=30)
        return counts, auth_lats
    counts, auth_lats = asyncio.run(run())
    results.put(("flood", (counts, stats(auth_lats))))


def measure(args, with_flood):
    results = mp.Queue()
    go = mp.Event()
    dev = mp.Process(target=device, args=(args, go, results))
    dev.start()
    kind, _ = results.get(timeout=60)
    fl = None
    started, stop = mp.Event(), mp.Event()
    if with_flood:
        fl = mp.Process(target=flood, args=(args, started, stop, results))
        fl.start()
        started.wait(timeout=120)
    go.set()
    out = {}
    while "done" not in out:
        kind, value = results.get(timeout=600)
        out[kind] = value
    stop.set()
    if fl:
        while "flood" not in out:
            kind, value = results.get(timeout=120)
            out[kind] = value
        fl.join(timeout=30)
    dev.join(timeout=30)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True, help="a STARTTLS listener with AUTH")
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--flood", type=int, default=200, help="concurrent unknown-user AUTH connections")
    p.add_argument("--messages", type=int, default=50)
    p.add_argument("--interval", type=float, default=0.05, help="seconds between the device's messages")
    p.add_argument("--ramp", type=float, default=2.0, help="seconds of flood before the device starts")
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--mail-from", default="bench@example.com")
    p.add_argument("--rcpt", default="sink@example.net")
    args = p.parse_args()

    base = measure(args, with_flood=False)
    flooded = measure(args, with_flood=True)
    b_lats, b_failed, b_err = base["done"]
    f_lats, f_failed, f_err = flooded["done"]
    counts, auth_stats = flooded["flood"]
    b, f = stats(b_lats), stats(f_lats)
    delay = {k: round(f[k] - b[k], 2) for k in ("median", "p99", "max") if k in b and k in f}
    json.dump({"flood": args.flood, "baseline_ms": b, "flood_ms": f, "delay_ms": delay, "flood_auths": counts,
               "flood_auth_ms": auth_stats, "failed": b_failed + f_failed,
               "error": f_err or b_err}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
